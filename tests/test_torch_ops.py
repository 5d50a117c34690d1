"""fastdrop.torch as PyTorch operators, tested after PyTorch's own dropout tests
(test/nn/test_dropout.py) and the OpInfo checks: masks governed by torch's generator
(manual_seed, fork_rng, RNG state, checkpointing, deep copies), forward-mode AD, torch.func.vmap's
randomness modes, torch.library.opcheck, torch.compile, torch.export and torch.jit."""
import copy
import subprocess
import sys

import pytest

torch = pytest.importorskip(
    "torch", reason="torch is not installed: pip install \"fastdropout[torch]\" to test the "
                    "PyTorch adapter")

import torch.autograd.forward_ad as fwAD  # noqa: E402
from torch.utils._python_dispatch import TorchDispatchMode  # noqa: E402
from torch.utils.checkpoint import checkpoint  # noqa: E402

import fastdrop  # noqa: E402
import fastdrop.torch as fdt  # noqa: E402

F = torch.nn.functional
KEY_WORDS = 2**32


@pytest.fixture(autouse=True)
def restore_torch_rng():
    """Every test here seeds or draws from torch's default generator; none leaks it."""
    with torch.random.fork_rng():
        yield


def next_seeds(count=1, generator=None):
    """The 64-bit seeds the next `count` training calls draw, read without moving the generator
    (a call draws the key words (low, high) with one torch.randint)."""
    state = (torch.get_rng_state() if generator is None else generator.get_state())
    words = torch.randint(KEY_WORDS, (count, 2), generator=generator).tolist()
    if generator is None:
        torch.set_rng_state(state)
    else:
        generator.set_state(state)
    return [low | high << 32 for low, high in words]


def reference(x, p, seed, **kwargs):
    """fastdrop.dropout's output for the tensor x, as a tensor."""
    y, _ = fastdrop.dropout(x.detach().numpy(), 1 - p, seed=seed, **kwargs)
    return torch.from_numpy(y)


# ---------------------------------------------------------------------------------------------
# Masks from torch's generator
# ---------------------------------------------------------------------------------------------

def test_a_training_call_masks_with_the_seed_it_draws_from_torchs_generator():
    """The mask of a call without seed= is fastdrop.dropout's with the seed torch.randint draws
    next from the default generator (or from generator=), whatever the variant."""
    x = torch.randn(6, 5, 4, 3, dtype=torch.float64)
    torch.manual_seed(11)
    (seed,) = next_seeds()
    assert torch.equal(fdt.dropout(x, 0.3), reference(x, 0.3, seed))
    (seed,) = next_seeds()
    assert torch.equal(fdt.dropout2d(x, 0.3), reference(x, 0.3, seed, shared_axes=(2, 3)))
    (seed,) = next_seeds()
    assert torch.equal(fdt.AlphaDropout(0.3)(x), reference(x, 0.3, seed, mode="alpha"))
    generator = torch.Generator().manual_seed(3)
    (seed,) = next_seeds(generator=generator)
    assert torch.equal(fdt.dropout(x, 0.3, generator=generator), reference(x, 0.3, seed))


def test_manual_seed_fork_rng_and_rng_state_make_masks_reproducible():
    """As with torch.nn.Dropout: the same torch.manual_seed gives the same masks, draws inside
    torch.random.fork_rng leave the masks after it unchanged, and set_rng_state replays them."""
    x = torch.ones(4, 100)
    model = torch.nn.Sequential(fdt.Dropout(0.5), fdt.Dropout2d(0.5), fdt.AlphaDropout(0.5))

    def run():
        return [model[:k + 1](x.view(4, 10, 10)) for k in range(3)]

    torch.manual_seed(0)
    first = run()
    torch.manual_seed(0)
    assert all(torch.equal(a, b) for a, b in zip(first, run()))

    torch.manual_seed(1)
    with torch.random.fork_rng():
        fdt.dropout(x, 0.5)
    after_fork = fdt.dropout(x, 0.5)
    torch.manual_seed(1)
    assert torch.equal(fdt.dropout(x, 0.5), after_fork)

    state = torch.get_rng_state()
    masks = [fdt.dropout(x, 0.5) for _ in range(3)]
    torch.set_rng_state(state)
    assert all(torch.equal(fdt.dropout(x, 0.5), mask) for mask in masks)
    assert not torch.equal(masks[0], masks[1])


@pytest.mark.parametrize("use_reentrant", [True, False])
def test_checkpointing_recomputes_the_same_masks(use_reentrant):
    """Activation checkpointing restores the RNG state before recomputing the forward, so the
    gradients are those without checkpointing, as with torch.nn.Dropout (both modes)."""
    def gradients(checkpointed):
        torch.manual_seed(0)
        block = torch.nn.Sequential(torch.nn.Linear(8, 16), fdt.Dropout(0.5), torch.nn.Tanh(),
                                    torch.nn.Linear(16, 16))
        x = torch.randn(32, 8, requires_grad=True)

        def forward(t):
            return fdt.dropout2d(block(t).view(32, 4, 2, 2), 0.5).sum(dim=(2, 3))

        torch.manual_seed(1)
        y = checkpoint(forward, x, use_reentrant=use_reentrant) if checkpointed else forward(x)
        y.square().sum().backward()
        return [x.grad] + [p.grad for p in block.parameters()]

    assert all(torch.equal(a, b) for a, b in zip(gradients(False), gradients(True)))


def test_deep_copies_draw_independent_masks():
    """Modules hold no random state: the deep copies nn.TransformerEncoder makes of its layer
    drop different units (torch's layers do too), and a copy draws what the layer would."""
    torch.manual_seed(0)
    layer = torch.nn.TransformerEncoderLayer(d_model=16, nhead=2, dim_feedforward=32,
                                             dropout=0.5, batch_first=True)
    layer.dropout, layer.dropout1, layer.dropout2 = (fdt.Dropout(0.5), fdt.Dropout(0.5),
                                                     fdt.Dropout(0.5))
    encoder = torch.nn.TransformerEncoder(layer, num_layers=3, enable_nested_tensor=False)
    masks = []
    for clone in encoder.layers:
        assert isinstance(clone.dropout, fdt.Dropout) and clone.dropout is not layer.dropout
        clone.dropout.register_forward_hook(
            lambda module, inputs, output: masks.append(output.eq(0) & inputs[0].ne(0)))
    encoder(torch.randn(4, 10, 16))
    assert len(masks) == 3 and masks[0].any()
    assert not torch.equal(masks[0], masks[1]) and not torch.equal(masks[1], masks[2])

    dropout = fdt.Dropout(0.5, subsequence=3)
    twin = copy.deepcopy(dropout)
    x = torch.ones(1000)
    torch.manual_seed(2)
    expected = dropout(x)
    torch.manual_seed(2)
    assert torch.equal(twin(x), expected) and not torch.equal(twin(x), dropout(x))


def test_a_default_device_elsewhere_leaves_the_key_on_the_cpu():
    """Under ``with torch.device(...)`` (or torch.set_default_device) a CPU input is masked as
    without it, as torch.nn.functional.dropout's is: the key is drawn from the CPU generator,
    the one checkpointing restores for CPU inputs, not made on the default device."""
    x = torch.randn(4, 25)
    torch.manual_seed(3)
    (seed,) = next_seeds()
    with torch.device("meta"):
        drawn = fdt.dropout(x, 0.5)
        explicit = fdt.dropout(x, 0.5, seed=9)
        zeroed = fdt.dropout(x, 1.0)
    assert torch.equal(drawn, reference(x, 0.5, seed))
    assert torch.equal(explicit, reference(x, 0.5, 9))
    assert torch.equal(zeroed, torch.zeros_like(x))


# ---------------------------------------------------------------------------------------------
# Forward-mode AD and torch.func
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("function,kwargs", [(fdt.dropout, {}), (fdt.dropout2d, {}),
                                             (fdt.alpha_dropout, {"training": True})],
                         ids=lambda v: getattr(v, "__name__", ""))
def test_forward_mode_ad_matches_finite_differences(function, kwargs):
    """The forward derivative (dual tensors, torch.func.jvp, jacfwd) is the mask and scale
    applied to the tangent: it matches central differences of the stateless (seed=) function,
    and reverse mode (jacrev)."""
    x = torch.randn(2, 3, 4, 4, dtype=torch.float64)
    tangent = torch.randn_like(x)

    def f(t):
        return function(t, 0.4, seed=9, **kwargs)

    step = 1e-6
    finite = (f(x + step * tangent) - f(x - step * tangent)) / (2 * step)
    with fwAD.dual_level():
        dual_out = fwAD.unpack_dual(f(fwAD.make_dual(x, tangent))).tangent
    _, jvp_out = torch.func.jvp(f, (x,), (tangent,))
    assert dual_out is not None and torch.equal(dual_out, jvp_out)
    torch.testing.assert_close(jvp_out, finite, rtol=1e-7, atol=1e-7)
    small = x[0, 0, 0]
    assert torch.equal(torch.func.jacfwd(f)(small.view(1, 1, 1, 4)),
                       torch.func.jacrev(f)(small.view(1, 1, 1, 4)))


class PlainSubclass(torch.Tensor):
    """A tensor subclass that only inherits torch's __torch_function__."""


class PassThroughMode(TorchDispatchMode):
    """A dispatch mode that runs every operation unchanged (as loggers and counters do)."""

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        return func(*args, **(kwargs or {}))


def test_forward_mode_ad_through_subclasses_and_dispatch_modes():
    """Where the call goes to the operator (a tensor subclass, a dispatch mode), forward-mode AD
    still carries the tangent, masked and scaled as the primal is; torch.library gives the
    operator no forward formula, and it dropped the tangent (None, or zeros under jvp)."""
    x, tangent = torch.randn(4, 25, dtype=torch.float64), torch.randn(4, 25, dtype=torch.float64)
    expected = fdt.dropout(tangent, 0.5, seed=7)
    subclass = x.as_subclass(PlainSubclass)
    with fwAD.dual_level():
        out = fdt.dropout(fwAD.make_dual(subclass, tangent), 0.5, seed=7)
        assert torch.equal(fwAD.unpack_dual(out).tangent, expected)
        with PassThroughMode():
            out = fdt.dropout(fwAD.make_dual(x, tangent), 0.5, seed=7)
        assert torch.equal(fwAD.unpack_dual(out).tangent, expected)
    _, jvp_out = torch.func.jvp(lambda t: fdt.dropout(t, 0.5, seed=7), (subclass,), (tangent,))
    assert torch.equal(jvp_out, expected)


def test_functionalize():
    """torch.func.functionalize, which has no rule for autograd.Functions, gets the operator:
    out of place and in place, the mask eager gives for the same torch seed."""
    x = torch.randn(4, 25)
    torch.manual_seed(4)
    expected = fdt.dropout(x, 0.5)
    for inplace in (False, True):
        torch.manual_seed(4)
        out = torch.func.functionalize(lambda t: fdt.dropout(t * 1, 0.5, inplace=inplace))(x)
        assert torch.equal(out, expected)


def test_vmap_randomness_error_refuses_as_pytorch_does():
    """randomness="error" (the default) refuses a random dropout with PyTorch's message, and
    lets through what draws nothing: evaluation, p = 0, p = 1 and an explicit seed."""
    x = torch.ones(3, 8)
    for dropout in (F.dropout, fdt.dropout):
        with pytest.raises(RuntimeError, match="called random operation while in randomness "
                                               "error mode"):
            torch.func.vmap(lambda t: dropout(t, 0.5))(x)
        for p, training in ((0.5, False), (0.0, True), (1.0, True)):
            out = torch.func.vmap(lambda t: dropout(t, p, training))(x)
            assert torch.equal(out, x if p < 1 else torch.zeros_like(x))
    same = torch.func.vmap(lambda t: fdt.dropout(t, 0.5, seed=4))(torch.ones(3, 50))
    assert torch.equal(same, reference(torch.ones(50), 0.5, 4).expand(3, 50))


def test_vmap_randomness_same_and_different():
    """randomness="same": every member gets the one mask the unbatched call would draw;
    "different": member b gets the mask of the b-th seed drawn.  Also along another in_dims,
    for channel dropout (shared over the member's spatial axes), nested as torch nests them,
    and for per-sample gradients."""
    x = torch.randn(4, 3, 5, 6)
    torch.manual_seed(5)
    (seed,) = next_seeds()
    same = torch.func.vmap(lambda t: fdt.dropout(t, 0.5), randomness="same")(x)
    for member in range(4):
        assert torch.equal(same[member], reference(x[member], 0.5, seed))

    seeds = next_seeds(2)
    images = x.view(2, 2, 3, 5, 6)  # two members of (N, C, H, W) = (2, 3, 5, 6)
    different = torch.func.vmap(lambda t: fdt.dropout2d(t, 0.5), in_dims=1,
                                randomness="different")(images.transpose(0, 1))
    for member, seed in enumerate(seeds):
        assert torch.equal(different[member],
                           reference(images[member], 0.5, seed, shared_axes=(2, 3)))

    # Nested: distinct masks as torch's own dropout gives them.
    ones = torch.ones(2, 3, 64)
    for inner, outer in (("different", "different"), ("same", "different"),
                         ("different", "same")):
        def nested(dropout):
            return torch.func.vmap(torch.func.vmap(lambda t: dropout(t, 0.5), randomness=inner),
                                   randomness=outer)(ones)
        ours, theirs = nested(fdt.dropout), nested(F.dropout)
        distinct = {tuple(row.tolist()) for row in ours.reshape(6, 64)}
        assert len(distinct) == len({tuple(row.tolist()) for row in theirs.reshape(6, 64)})

    # Per-sample gradients: each member's own mask, scaled.
    torch.manual_seed(6)
    seeds = next_seeds(4)
    grads = torch.func.vmap(torch.func.grad(lambda t: fdt.dropout(t, 0.5).sum()),
                            randomness="different")(x)
    for member, seed in enumerate(seeds):
        assert torch.equal(grads[member], reference(torch.ones(3, 5, 6), 0.5, seed))


# ---------------------------------------------------------------------------------------------
# The registered operators
# ---------------------------------------------------------------------------------------------

def key_of(seed):
    return torch.tensor([seed % KEY_WORDS, seed // KEY_WORDS])


@pytest.mark.parametrize("operator", ["dropout", "dropout_backward"])
def test_opcheck(operator):
    """torch.library.opcheck (schema, autograd registration, fake tensors, AOT dispatch with
    dynamic shapes) on both operators: dtypes, layouts, alpha mode, shared axes, a
    subsequence, and a batched key (one per leading index, as vmap makes)."""
    op = getattr(torch.ops.fastdrop, operator).default
    samples = [
        (torch.randn(3, 4, requires_grad=True), key_of(5), 0.3, "inverted", [], 0),
        (torch.randn(2, 3, 4, dtype=torch.float64).transpose(0, 2).requires_grad_(),
         key_of(2**64 - 1), 0.6, "alpha", [1], 7),
        (torch.randn(2, 3, 4, 5).to(memory_format=torch.channels_last), key_of(1), 0.5,
         "inverted", [2, 3], 0),
        (torch.randn(3, 4, 5, requires_grad=True), torch.randint(KEY_WORDS, (3, 2)), 0.5,
         "inverted", [2], 0),
        (torch.randn(6, dtype=torch.float16), key_of(3), 1.0, "inverted", [], 0),
    ]
    for sample in samples:
        torch.library.opcheck(op, sample)


def test_operators_check_their_arguments():
    """Called directly, the operators refuse a malformed key, a p outside [0, 1] or an unknown
    mode with a clear error."""
    x = torch.ones(3, 4)
    op = torch.ops.fastdrop.dropout
    with pytest.raises(ValueError, match=r"key must be an int64 tensor of shape S \+ \(2,\)"):
        op(x, torch.tensor([1, 2, 3]), 0.5, "inverted", [], 0)
    with pytest.raises(ValueError, match="key must be"):
        op(x, torch.zeros(4, 2, dtype=torch.int64), 0.5, "inverted", [], 0)
    with pytest.raises(ValueError, match=r"key words must be in \[0, 2\*\*32\)"):
        op(x, torch.tensor([-1, 0]), 0.5, "inverted", [], 0)
    with pytest.raises(ValueError, match="between 0 and 1"):
        op(x, key_of(1), 1.5, "inverted", [], 0)
    with pytest.raises(ValueError, match="mode must be one of"):
        op(x, key_of(1), 0.5, "classic", [], 0)


@pytest.mark.filterwarnings("ignore:torch.tensor results are registered as constants")
def test_every_route_gives_the_same_bits():
    """A call is computed by the registered operator (under tracers), an autograd.Function
    (where autograd or a transform records it) or the kernel straight (otherwise): forward and
    gradient bits are the same on every route, and the operator's."""
    x = torch.randn(5, 6, 7)
    dy = torch.randn(5, 6, 7)
    key = key_of(77)
    expected = torch.ops.fastdrop.dropout(x, key, 0.3, "alpha", [2], 2)
    expected_dx = torch.ops.fastdrop.dropout_backward(dy, key, 0.3, "alpha", [2], 2)

    def call(t):
        return fdt.feature_alpha_dropout(t, 0.3, True, seed=77, subsequence=2)

    with torch.no_grad():
        assert torch.equal(call(x), expected)  # the kernel
    leaf = x.clone().requires_grad_()
    y = call(leaf)  # autograd
    assert torch.equal(y.detach(), expected)
    assert torch.equal(torch.autograd.grad(y, leaf, dy)[0], expected_dx)
    y, vjp = torch.func.vjp(call, x)  # a transform
    assert torch.equal(y, expected) and torch.equal(vjp(dy)[0], expected_dx)
    with pytest.warns(DeprecationWarning, match="torch.jit.trace` is deprecated"):
        traced = torch.jit.trace(call, (x,), check_trace=False)  # a tracer
    assert torch.equal(traced(x), expected)


def test_fake_tensors_get_the_kernels_layout():
    """Under FakeTensorMode (as compile and export trace) a training call returns a fake tensor
    with the real result's shape, dtype and strides, channels-last included."""
    from torch._subclasses.fake_tensor import FakeTensorMode

    real = torch.randn(2, 3, 4, 5).to(memory_format=torch.channels_last)
    expected = fdt.dropout(real, 0.5)
    with FakeTensorMode() as mode:
        fake = fdt.dropout(mode.from_tensor(real), 0.5)
    assert isinstance(fake, torch._subclasses.fake_tensor.FakeTensor)
    assert (fake.shape, fake.dtype, fake.stride()) == (expected.shape, expected.dtype,
                                                        expected.stride())


def test_make_fx_records_the_operator_under_grad_and_jvp():
    """make_fx of torch.func.grad and jvp records fastdrop::dropout, not a constant: the traced
    program draws a new mask each call, and its gradient and tangent follow the mask it draws
    (the tangent was dropped, zeros, and the gradient refused)."""
    from torch.fx.experimental.proxy_tensor import make_fx

    x = torch.ones(4, 50)
    for transformed in (torch.func.grad(lambda t: fdt.dropout(t, 0.5).sum()),
                        lambda t: torch.func.jvp(lambda u: fdt.dropout(u, 0.5), (t,), (t,))[1]):
        traced = make_fx(transformed)(x)
        assert "fastdrop.dropout" in traced.code
        first, second = traced(x), traced(x)
        assert not torch.equal(first, second)
        assert set(first.unique().tolist()) == {0.0, 2.0}


# ---------------------------------------------------------------------------------------------
# Compilers, export and TorchScript
# ---------------------------------------------------------------------------------------------

class Block(torch.nn.Module):
    """The modules (one in place) and the functional forms in one small model."""

    def __init__(self):
        super().__init__()
        self.linear = torch.nn.Linear(12, 12)
        self.dropout = fdt.Dropout(0.3, inplace=True)
        self.alpha = fdt.AlphaDropout(0.2)

    def forward(self, x):
        h = torch.tanh(self.dropout(self.linear(x)))
        h = fdt.dropout2d(h.view(-1, 3, 2, 2), 0.25, self.training).view(-1, 12)
        return self.alpha(h)


def train_steps(model, steps=2):
    """Outputs, and parameters after each SGD step, on fixed data and torch seeds."""
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    x = torch.randn(8, 12, generator=torch.Generator().manual_seed(1))
    outputs = []
    for step in range(steps):
        torch.manual_seed(100 + step)
        y = model(x)
        optimizer.zero_grad()
        y.square().mean().backward()
        optimizer.step()
        outputs.append(y.detach())
        outputs.extend(p.detach().clone() for p in model.parameters())
    return outputs


def fresh_block():
    torch.manual_seed(0)
    return Block()


def test_compile_fullgraph_train_steps_match_eager():
    """torch.compile(fullgraph=True) captures the modules and the functional forms, forward
    and backward, without a graph break: through AOTAutograd alone the training steps are
    eager's bit for bit; with Inductor and fallback_random (torch's random ops as in eager) the
    masks are eager's too, the arithmetic around them Inductor's own."""
    eager = train_steps(fresh_block())
    compiled = train_steps(torch.compile(fresh_block(), fullgraph=True, backend="aot_eager"))
    assert all(torch.equal(a, b) for a, b in zip(eager, compiled))

    import torch._inductor.config as inductor_config

    with inductor_config.patch(fallback_random=True):
        inductor = train_steps(torch.compile(fresh_block(), fullgraph=True))
    for a, b in zip(eager, inductor):
        torch.testing.assert_close(a, b)
        assert torch.equal(a == 0, b == 0)  # the same units dropped

    def functional(t):
        return fdt.dropout(t, 0.5)

    x = torch.randn(1000)
    torch.manual_seed(3)
    expected = functional(x)
    with inductor_config.patch(fallback_random=True):
        torch.manual_seed(3)
        assert torch.equal(torch.compile(functional, fullgraph=True)(x), expected)


@pytest.mark.parametrize("training", [True, False])
def test_export_round_trip(training, tmp_path):
    """torch.export.export records the seed's draw and fastdrop::dropout in training (nothing
    in evaluation); the exported program, saved and loaded again, gives eager's output for the
    same torch seed."""
    model = fresh_block().train(training)
    x = torch.randn(8, 12)
    program = torch.export.export(model, (x,))
    code = program.graph_module.code
    assert ("torch.ops.fastdrop.dropout.default" in code) == training
    assert ("aten.randint" in code) == training
    path = tmp_path / "block.pt2"
    torch.export.save(program, path)
    loaded = torch.export.load(path)
    torch.manual_seed(4)
    expected = model(x)
    for runnable in (program.module(), loaded.module()):
        torch.manual_seed(4)
        assert torch.equal(runnable(x), expected)


@pytest.mark.filterwarnings("ignore:`torch.jit.*` is deprecated:DeprecationWarning")
def test_jit_trace_records_the_operators_and_script_is_refused():
    """torch.jit.trace records the seed's draw and the operator, not a constant: the trace
    draws new masks every call and eager's for the same torch seed.  torch.jit.script refuses
    the modules with a message that names what to use instead."""
    model = fresh_block()
    x = torch.randn(8, 12)
    traced = torch.jit.trace(model, (x,), check_trace=False)
    assert "fastdrop::dropout" in str(traced.inlined_graph)
    assert not torch.equal(traced(x), traced(x))
    torch.manual_seed(5)
    expected = model(x)
    torch.manual_seed(5)
    assert torch.equal(traced(x), expected)
    with pytest.raises(RuntimeError, match="does not support TorchScript.*torch.compile"):
        torch.jit.script(torch.nn.Sequential(torch.nn.Linear(3, 3), fdt.Dropout()))


def test_a_torch_without_what_the_adapter_needs_is_refused_at_import(tmp_path):
    """A torch lacking one of the private functions the routing relies on gets a clear
    ImportError that names it, instead of an AttributeError in a training step."""
    script = ("import torch, pytest\n"
              "del torch._C._len_torch_dispatch_stack\n"
              "with pytest.raises(ImportError, match=r'lacks torch\\._C\\._len_torch_dispatch_stack'):\n"
              "    import fastdrop.torch\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=300, cwd=tmp_path)  # not the source tree's fastdrop/
    assert done.returncode == 0, done.stdout + done.stderr
