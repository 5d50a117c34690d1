"""The PyTorch adapter, fastdrop.torch: PyTorch's semantics, autograd without a stored mask,
zero-copy tensors of every served dtype, the same masks as fastdrop.dropout, seeds from torch's
generator, errors, and training under DistributedDataParallel.  Compilers, export, tracing,
torch.func's transforms and checkpointing: test_torch_ops.py."""
import doctest
import gc
import math
import os
import pathlib
import pickle
import signal
import socket
import subprocess
import sys
import tempfile
import warnings

import numpy as np
import pytest

torch = pytest.importorskip(
    "torch", reason="torch is not installed: pip install \"fastdropout[torch]\" to test the "
                    "PyTorch adapter")

import fastdrop  # noqa: E402
import fastdrop.torch as fdt  # noqa: E402
from fastdrop._api import SUPPORTED_DTYPES  # noqa: E402

F = torch.nn.functional
PACKAGE_PARENT = str(pathlib.Path(fastdrop.__file__).resolve().parents[1])
HAS_BFLOAT16 = any(dtype.name == "bfloat16" for dtype in SUPPORTED_DTYPES)
DTYPES = [torch.float16, torch.float32, torch.float64] + ([torch.bfloat16] if HAS_BFLOAT16
                                                         else [])
# torch's AlphaDropout constant (aten/src/ATen/native/Dropout.cpp): SELU's lambda * alpha.
TORCH_ALPHA = 1.7580993408473766


def numpy_of(tensor):
    """The tensor's memory as a NumPy array, written independently of the adapter's helper."""
    if tensor.dtype is torch.bfloat16:
        import ml_dtypes

        return tensor.detach().view(torch.int16).numpy().view(ml_dtypes.bfloat16)
    return tensor.detach().numpy()


def as_uint(array):
    """The array's values as unsigned integers of their width, in C order: exact comparisons,
    -0.0 and NaN included."""
    array = np.ascontiguousarray(array)
    return array.view(np.dtype(f"u{array.dtype.itemsize}"))


def bits_of(tensor):
    return as_uint(numpy_of(tensor))


def layouts(dtype):
    """(name, tensor) pairs of one dtype: contiguous, transposed, sliced, channels-last."""
    generator = torch.Generator().manual_seed(0)
    base = torch.randn(6, 10, 7, generator=generator, dtype=torch.float64).to(dtype)
    four = torch.randn(2, 3, 5, 4, generator=generator, dtype=torch.float64).to(dtype)
    return [("contiguous", base), ("transposed", base.transpose(0, 2)),
            ("sliced", base[1:5, ::3, 2:]), ("channels_last",
                                             four.contiguous(memory_format=torch.channels_last)),
            ("0-d", base[0, 0, 0]), ("empty", base[:, :0])]


@pytest.fixture(autouse=True)
def restore_torch_rng():
    """Every test here may seed or draw from torch's default generator; none leaks it."""
    with torch.random.fork_rng():
        yield


def generator_moves(call):
    """How many keys (torch.randint(2**32, (2,)) draws) `call` takes from torch's default
    generator, judged by the next draw: 0 or 1 (2 would fail the assert)."""
    state = torch.get_rng_state()
    draws = [torch.randint(2**32, (2,)) for _ in range(2)]
    torch.set_rng_state(state)
    call()
    after = torch.randint(2**32, (2,))
    moves = [k for k, draw in enumerate(draws) if torch.equal(after, draw)]
    assert moves, "the generator moved by more than one key"
    return moves[0]


def spatially_constant_axes(output):
    """The axes along which `output` never varies (the axes a channel dropout shares)."""
    a = output.detach().double().numpy()
    return tuple(k for k in range(a.ndim)
                 if a.shape[k] > 1 and np.array_equal(a, np.take(a, [0], axis=k).repeat(
                     a.shape[k], axis=k)))


# ---------------------------------------------------------------------------------------------
# The same masks as fastdrop.dropout; dtypes, strides, zero copy
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("p", [0.2, 0.5, 0.9])
def test_same_seed_same_output_as_fastdrop_on_the_numpy_view(dtype, p):
    """fastdrop.torch.dropout(t, p, seed=s) is fastdrop.dropout(t.numpy(), 1 - p, seed=s), bit
    for bit, for every served dtype and layout; backward matches dropout_backward."""
    for name, t in layouts(dtype):
        y = fdt.dropout(t, p, seed=7)
        expected, mask = fastdrop.dropout(numpy_of(t), 1 - p, seed=7)
        assert y.shape == t.shape and y.dtype == t.dtype, name
        np.testing.assert_array_equal(bits_of(y), as_uint(expected), err_msg=name)
        if dtype is torch.float32 and t.dim():
            assert torch.equal(y, torch.from_numpy(expected)), name  # the issue's own words

        leaf = t.clone().requires_grad_()
        dy = torch.randn(t.shape, dtype=torch.float64).to(dtype)
        (dx,) = torch.autograd.grad(fdt.dropout(leaf, p, seed=7), leaf, dy)
        np.testing.assert_array_equal(
            bits_of(dx), as_uint(fastdrop.dropout_backward(numpy_of(dy), mask)), err_msg=name)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_zero_copy_views_and_in_place_keeps_the_storage(dtype):
    """The adapter works on the tensors' own memory: its NumPy views share the data pointer and
    strides, in place writes into the input (same data_ptr, same object), out of place leaves
    the input untouched."""
    for name, t in layouts(dtype):
        view = fdt._as_numpy(t, "t")
        if t.numel():  # an empty tensor has data_ptr() 0, and NumPy normalises its strides
            assert view.__array_interface__["data"][0] == t.data_ptr(), name
            assert view.strides == tuple(s * t.element_size() for s in t.stride()), name

        before = t.clone()
        y = fdt.dropout(t, 0.5, seed=3)
        assert torch.equal(t, before) and (y.numel() == 0 or y.data_ptr() != t.data_ptr()), name

        pointer, strides = t.data_ptr(), t.stride()
        out = fdt.dropout(t, 0.5, inplace=True, seed=3)
        assert out is t and t.data_ptr() == pointer and t.stride() == strides, name
        np.testing.assert_array_equal(bits_of(t), bits_of(y), err_msg=name)


def test_output_keeps_the_memory_format():
    """As torch's dropout, the output of a channels-last input is channels-last."""
    x = torch.randn(2, 3, 4, 5).contiguous(memory_format=torch.channels_last)
    assert fdt.dropout(x, 0.3, seed=1).is_contiguous(memory_format=torch.channels_last)
    assert fdt.dropout2d(x, 0.3, seed=1).is_contiguous(memory_format=torch.channels_last)


# ---------------------------------------------------------------------------------------------
# PyTorch's semantics
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("p", [0.1, 0.5, 0.8])
def test_dropout_values_and_rate(p):
    """In training: every element is 0 or x / (1 - p), and a fraction p of them is zeroed (to
    within 5 standard deviations)."""
    n = 200_000
    x = torch.rand(n, dtype=torch.float64) + 0.5
    y = fdt.dropout(x, p, seed=11)
    dropped = y == 0
    assert torch.equal(y[~dropped], x[~dropped] * (1 / (1 - p)))
    assert abs(dropped.double().mean().item() - p) < 5 * math.sqrt(p * (1 - p) / n)


def test_module_is_a_torch_dropout_and_follows_train_and_eval():
    """fastdrop's modules are torch's classes (isinstance holds), take p, inplace and
    subsequence, draw one key from torch's generator per training call, and are the identity in
    evaluation (the input itself, nothing drawn)."""
    cases = [(fdt.Dropout, torch.nn.Dropout, (7,)), (fdt.Dropout1d, torch.nn.Dropout1d, (2, 3, 4)),
             (fdt.Dropout2d, torch.nn.Dropout2d, (2, 3, 4, 5)),
             (fdt.Dropout3d, torch.nn.Dropout3d, (2, 3, 4, 5, 6)),
             (fdt.AlphaDropout, torch.nn.AlphaDropout, (7,)),
             (fdt.FeatureAlphaDropout, torch.nn.FeatureAlphaDropout, (2, 3, 4, 5))]
    for ours, theirs, shape in cases:
        x = torch.randn(shape)
        layer = ours(0.3)
        assert isinstance(layer, theirs) and layer.p == 0.3 and layer.inplace is False
        assert repr(layer) == repr(theirs(0.3)).replace(theirs.__name__, ours.__name__)
        assert "subsequence=4" in repr(ours(0.3, subsequence=4))
        assert generator_moves(lambda: layer(x)) == 1
        layer.eval()
        assert generator_moves(lambda: layer(x)) == 0 and layer(x) is x
        with pytest.raises(ValueError, match="between 0 and 1, but got 1.5"):
            ours(1.5)
        with pytest.raises(ValueError, match="subsequence must be in"):
            ours(0.5, subsequence=-1)


def test_p_zero_is_identity_and_p_one_zeroes_everything():
    """p = 0 returns the input itself, p = 1 zeroes the output and the gradient, as PyTorch
    does; like PyTorch's, neither draws from the generator (nothing is random), and any other p
    draws one key, whatever the tensor's size."""
    x = torch.randn(5, 7, requires_grad=True)
    for p in (0.0, 0.5, 1.0):
        y = fdt.dropout(x, p)
        (dx,) = torch.autograd.grad(y.sum(), x)
        if p == 0.0:
            assert y is x and torch.equal(dx, torch.ones_like(x))
        if p == 1.0:
            assert torch.equal(y, torch.zeros_like(x)) and torch.equal(dx, torch.zeros_like(x))
            assert torch.equal(y, F.dropout(x, 1.0))
        assert generator_moves(lambda: fdt.dropout(x, p)) == (p == 0.5)
    assert generator_moves(lambda: fdt.dropout(torch.ones(100_000), 0.5)) == 1

    # In place, under autograd and without it.
    h = x * 1
    assert fdt.dropout(h, 1.0, inplace=True) is h and not h.any()
    h.sum().backward()
    assert torch.equal(x.grad, torch.zeros_like(x))
    with torch.no_grad():
        z = torch.randn(4)
        assert fdt.dropout(z, 1.0, inplace=True) is z and not z.any()
    assert fdt.alpha_dropout(torch.randn(4), 1.0, True).eq(0).all()  # as torch's alpha_dropout


@pytest.mark.parametrize("p", [-0.1, 1.5, float("nan")])
def test_p_outside_0_1_is_refused(p):
    with pytest.raises(ValueError, match="dropout probability has to be between 0 and 1"):
        fdt.dropout(torch.ones(3), p)


def test_p_closer_to_1_than_the_resolution_is_refused_in_pytorchs_terms():
    """1 - p below 2**-32, which PyTorch takes, is refused naming p, not the core's keep_prob,
    before the seed is drawn; in evaluation it is taken, as PyTorch does."""
    p = 1 - 2**-40
    x = torch.ones(3)
    with pytest.raises(ValueError, match=r"p = 1 or 1 - p at least 2\*\*-32.*p = 0\.9999"):
        fdt.dropout(x, p)
    assert generator_moves(lambda: pytest.raises(ValueError, fdt.Dropout(p), x)) == 0
    assert fdt.dropout(x, p, training=False) is x


def test_seeds_subsequences_and_generators():
    """seed= gives a stateless mask, fastdrop's with that seed (with a subsequence,
    Stream(seed, subsequence)'s); subsequences give other masks; generator= draws from that
    generator and leaves the default one alone; the modules hold no random state, so a pickled
    layer is the layer."""
    x = torch.ones(1000)
    assert torch.equal(fdt.dropout(x, 0.5, seed=3), fdt.dropout(x, 0.5, seed=3))
    for subsequence in (1, 2**63 - 1):
        expected, _ = fastdrop.dropout(x.numpy(), 0.5,
                                       stream=fastdrop.Stream(3, subsequence=subsequence))
        assert torch.equal(fdt.dropout(x, 0.5, seed=3, subsequence=subsequence),
                           torch.from_numpy(expected))
    assert not torch.equal(fdt.dropout(x, 0.5, seed=3), fdt.dropout(x, 0.5, seed=3,
                                                                     subsequence=1))

    generator = torch.Generator().manual_seed(5)
    state = torch.get_rng_state()
    first = fdt.dropout(x, 0.5, generator=generator)
    second = fdt.dropout(x, 0.5, generator=generator.manual_seed(5))
    assert torch.equal(first, second) and torch.equal(torch.get_rng_state(), state)
    key = torch.randint(2**32, (2,), generator=generator.manual_seed(5)).tolist()
    assert torch.equal(first, fdt.dropout(x, 0.5, seed=key[0] | key[1] << 32))

    with pytest.raises(ValueError, match="not both"):
        fdt.dropout(x, 0.5, seed=1, generator=generator)
    for bad, error in ((-1, ValueError), (2**64, ValueError), (1.5, TypeError)):
        with pytest.raises(error, match="seed"):
            fdt.dropout(x, 0.5, seed=bad)
    for bad, error in ((-1, ValueError), (2**63, ValueError), (1.5, TypeError)):
        with pytest.raises(error, match="subsequence"):
            fdt.dropout(x, 0.5, subsequence=bad)
    assert generator_moves(lambda: pytest.raises(ValueError, fdt.dropout, x, 0.5,
                                                 subsequence=-1)) == 0

    layer = fdt.Dropout(0.5, subsequence=2)
    clone = pickle.loads(pickle.dumps(layer))
    assert clone.subsequence == 2 and not hasattr(clone, "stream")
    torch.manual_seed(4)
    expected = layer(x)
    torch.manual_seed(4)
    assert torch.equal(clone(x), expected)


# ---------------------------------------------------------------------------------------------
# Channel dropout
# ---------------------------------------------------------------------------------------------

# (function, torch's function, input shape, shared axes torch uses for that rank, warns)
# Sizes of the unshared axes make it vanishingly unlikely (< 2**-38) that torch's random output
# is constant along one of them by chance.
CHANNEL_CASES = [
    (fdt.dropout1d, F.dropout1d, (8, 8, 9), (2,), False),
    (fdt.dropout1d, F.dropout1d, (40, 9), (1,), False),  # unbatched (C, L)
    (fdt.dropout2d, F.dropout2d, (8, 8, 5, 3), (2, 3), False),
    (fdt.dropout2d, F.dropout2d, (8, 8, 9), (2,), True),  # 3-D: (N, C, L), with a warning
    (fdt.dropout2d, F.dropout2d, (8, 8, 2, 3, 5), (2, 3, 4), True),
    (fdt.dropout2d, F.dropout2d, (40, 60), (), True),
    (fdt.dropout3d, F.dropout3d, (8, 8, 2, 3, 5), (2, 3, 4), False),
    (fdt.dropout3d, F.dropout3d, (40, 2, 3, 5), (1, 2, 3), False),  # unbatched (C, D, H, W)
    (fdt.dropout3d, F.dropout3d, (40, 3, 5), (1, 2), True),
    (fdt.feature_alpha_dropout, F.feature_alpha_dropout, (8, 8, 5, 3), (2, 3), False),
]


@pytest.mark.parametrize("ours,theirs,shape,axes,warns", CHANNEL_CASES,
                         ids=lambda v: getattr(v, "__name__", str(v)))
def test_channel_dropout_shares_the_axes_torch_shares(ours, theirs, shape, axes, warns):
    """Each channel variant draws one decision per (sample, channel), shared over the axes
    PyTorch shares for that input rank (batched and unbatched), with PyTorch's warnings; the
    output is fastdrop.dropout's with those shared_axes."""
    x = torch.ones(shape, dtype=torch.float64)  # so that shared decisions show as constants
    training = {"training": True}
    with warnings.catch_warnings(record=True) as ours_warned:
        warnings.simplefilter("always")
        y = ours(x, 0.5, seed=4, **training)
    with warnings.catch_warnings(record=True) as theirs_warned:
        warnings.simplefilter("always")
        reference = theirs(x, 0.5, **training)
    assert spatially_constant_axes(y) == axes == spatially_constant_axes(reference)
    assert bool(ours_warned) == warns == bool(theirs_warned)
    assert [str(w.message) for w in ours_warned] == [str(w.message) for w in theirs_warned]
    mode = "alpha" if ours is fdt.feature_alpha_dropout else "inverted"
    expected, mask = fastdrop.dropout(x.numpy(), 0.5, shared_axes=axes, mode=mode, seed=4)
    assert torch.equal(y, torch.from_numpy(expected))
    assert mask.size == math.prod(n for k, n in enumerate(shape) if k not in axes)


def test_channel_dropout_rank_errors():
    """PyTorch's errors: dropout1d takes 2-D or 3-D inputs; feature dropout in training needs
    two dimensions (after adding the batch axis to an unbatched input)."""
    with pytest.raises(RuntimeError, match="dropout1d: Expected 2D or 3D input"):
        fdt.Dropout1d()(torch.ones(2, 3, 4, 5))
    with pytest.warns(UserWarning, match="Received a 1-D input to dropout2d"):
        with pytest.raises(RuntimeError, match="Feature dropout requires at least 2 dimensions"):
            fdt.dropout2d(torch.ones(3), 0.5)
    with pytest.raises(RuntimeError, match="Feature dropout requires at least 2 dimensions"):
        fdt.feature_alpha_dropout(torch.ones(3), 0.5, True)
    with pytest.warns(UserWarning, match="Received a 1-D input to dropout3d"):
        assert fdt.dropout3d(torch.ones(9), 0.5, seed=1).shape == (9,)  # unbatched (C,)
    with pytest.warns(UserWarning):
        assert fdt.dropout2d(torch.ones(3), 0.5, training=False).shape == (3,)  # as torch


# ---------------------------------------------------------------------------------------------
# Alpha dropout
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("p", [0.05, 0.2, 0.5])
def test_alpha_dropout_has_torchs_constants_and_distribution(p):
    """Kept units become a x + b and dropped ones a alpha' + b with PyTorch's formula
    (a = ((alpha**2 p + 1)(1 - p))**-1/2, b = alpha a p, alpha' = -alpha); PyTorch's output
    takes the same two forms, and both keep mean 0 and variance 1 on standard normal input."""
    n = 400_000
    torch.manual_seed(0)  # for torch's own draws
    x = torch.randn(n, dtype=torch.float64)
    a = 1 / math.sqrt((TORCH_ALPHA**2 * p + 1) * (1 - p))
    b = TORCH_ALPHA * a * p
    dropped_value = -TORCH_ALPHA * a + b
    y = fdt.alpha_dropout(x, p, training=True, seed=2)
    reference = F.alpha_dropout(x, p, training=True)
    for out in (y, reference):
        kept = torch.isclose(out, a * x + b, rtol=1e-12, atol=1e-12)
        dropped = torch.isclose(out, torch.full_like(out, dropped_value), rtol=1e-12,
                                atol=1e-12)
        assert bool((kept | dropped).all())
        assert abs((~kept).double().mean().item() - p) < 5 * math.sqrt(p * (1 - p) / n)
        assert abs(out.mean().item()) < 0.01 and abs(out.var().item() - 1) < 0.02

    leaf = x.clone().requires_grad_()
    out = fdt.alpha_dropout(leaf, p, training=True, seed=2)
    (dx,) = torch.autograd.grad(out, leaf, torch.ones_like(x))
    kept = torch.isclose(out.detach(), a * x + b, rtol=1e-12, atol=1e-12)
    assert torch.allclose(dx, a * kept.double(), rtol=1e-12, atol=0)
    assert fdt.alpha_dropout(x, p) is x  # training defaults to False, as in torch


# ---------------------------------------------------------------------------------------------
# Autograd
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("function,kwargs,shape", [
    (fdt.dropout, {"p": 0.3}, (4, 5)),
    (fdt.dropout, {"p": 1.0}, (4, 5)),
    (fdt.dropout2d, {"p": 0.5}, (2, 3, 2, 2)),
    (fdt.alpha_dropout, {"p": 0.3, "training": True}, (4, 5)),
    (fdt.feature_alpha_dropout, {"p": 0.3, "training": True}, (2, 3, 4)),
], ids=lambda v: getattr(v, "__name__", str(v)))
def test_gradcheck_and_gradgradcheck_float64(function, kwargs, shape):
    """gradcheck in float64 (seed= makes every evaluation draw the same mask), with batched
    gradients (vmap over the backward) and forward-mode AD, batched too, as PyTorch's OpInfo
    checks run them; and the second derivative, reverse over reverse and forward over reverse,
    through the backward's own derivatives."""
    x = torch.randn(shape, dtype=torch.float64, requires_grad=True)
    def f(t):
        return function(t, seed=123, **kwargs)
    assert torch.autograd.gradcheck(f, (x,), check_batched_grad=True, check_forward_ad=True,
                                    check_batched_forward_grad=True)
    assert torch.autograd.gradgradcheck(f, (x,), check_batched_grad=True,
                                        check_fwd_over_rev=True)


def test_no_tensor_of_the_input_size_is_saved_for_backward():
    """The pack hook of saved_tensors_hooks sees no tensor as large as the input: only the mask's
    integers are kept.  torch.nn.Dropout, the control, saves one."""
    x = torch.randn(8, 16, 8, 8, requires_grad=True)

    def saved_numels(layer):
        numels = []
        def pack(tensor):
            numels.append(tensor.numel())
            return tensor
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
            y = layer(x * 2)  # a non-leaf input, as inside a network
        y.sum().backward()
        return numels

    assert not [n for n in saved_numels(fdt.Dropout(0.5)) if n >= x.numel()]
    assert not [n for n in saved_numels(fdt.Dropout2d(0.5)) if n >= x.numel()]
    assert not [n for n in saved_numels(fdt.AlphaDropout(0.5)) if n >= x.numel()]
    assert [n for n in saved_numels(torch.nn.Dropout(0.5)) if n >= x.numel()]  # the control


def test_backward_with_strided_and_expanded_gradients():
    """Gradients that are expanded (stride 0, from a sum) or transposed go through the same
    masks."""
    x = torch.randn(6, 8, dtype=torch.float64, requires_grad=True)
    y = fdt.dropout(x, 0.4, seed=5)
    kept = (y != 0).double() / 0.6
    (dx,) = torch.autograd.grad(y.sum(), x, retain_graph=True)
    assert torch.equal(dx, kept)
    g = torch.randn(8, 6, dtype=torch.float64).t()
    (dx,) = torch.autograd.grad(y, x, g)
    assert torch.equal(dx, g * kept)


def test_no_grad_inference_mode_and_eval():
    """Under no_grad and inference_mode the output does not require grad and equals the autograd
    path's; model.eval() is the identity and draws nothing from the generator."""
    x = torch.randn(10, 10, requires_grad=True)
    with_grad = fdt.dropout(x, 0.5, seed=8)
    assert with_grad.requires_grad and with_grad.grad_fn is not None
    with torch.no_grad():
        without = fdt.dropout(x, 0.5, seed=8)
    with torch.inference_mode():
        inference = fdt.dropout(x.detach(), 0.5, seed=8)
        z = torch.randn(3)
        fdt.dropout(z, 0.5, inplace=True, seed=8)  # inference tensors have no version counter
    assert not without.requires_grad and torch.equal(without, with_grad.detach())
    assert torch.equal(inference, without)

    model = torch.nn.Sequential(torch.nn.Linear(10, 10), fdt.Dropout(0.5))
    model.eval()
    assert generator_moves(lambda: model(x)) == 0 and torch.equal(model(x), model[0](x))
    model.train()
    assert generator_moves(lambda: model(x)) == 1


# ---------------------------------------------------------------------------------------------
# In place
# ---------------------------------------------------------------------------------------------

def test_in_place_follows_pytorchs_rules():
    """In place is refused as by torch, before anything is drawn or written: on a leaf that
    requires grad and on a view of one, on an inference tensor outside inference mode, on a
    view made under no_grad and written with grad on, on a tensor whose elements share memory.
    Allowed under no_grad and inference mode; on a non-leaf it writes into the tensor, bumps
    its version and backpropagates through the same mask."""
    leaf = torch.randn(4, 5, requires_grad=True)
    base = leaf * 1

    def inference_tensor():
        with torch.inference_mode():
            return torch.randn(3)

    def view_made_without_grad():
        with torch.no_grad():
            return base[1:]

    refusals = [(lambda: leaf, "a leaf Variable that requires grad is being used in an "
                               "in-place operation"),
                (lambda: leaf[1:], "a view of a leaf Variable that requires grad"),
                (inference_tensor, "Inplace update to inference tensor outside InferenceMode"),
                (view_made_without_grad, "A view was created in no_grad mode and is being "
                                         "modified inplace with grad mode enabled")]
    for make, message in refusals:
        with pytest.raises(RuntimeError, match=message):
            F.dropout(make(), 0.5, inplace=True)  # (torch writes an inference tensor first)
        tensor = make()
        before = tensor.detach().clone()
        with pytest.raises(RuntimeError, match=message):
            fdt.dropout(tensor, 0.5, inplace=True, seed=1)
        assert generator_moves(lambda: pytest.raises(RuntimeError, fdt.dropout, tensor, 0.5,
                                                     inplace=True)) == 0
        assert torch.equal(tensor.detach(), before)
    with pytest.raises(RuntimeError, match="more than one element of the written-to tensor"):
        fdt.dropout(torch.ones(1, 3).expand(4, 3), 0.5, inplace=True)

    with torch.no_grad():
        assert fdt.dropout(leaf, 0.5, inplace=True, seed=1) is leaf
        view = view_made_without_grad()
        assert fdt.dropout(view, 0.5, inplace=True, seed=1) is view
    inference = inference_tensor()
    with torch.inference_mode():
        assert fdt.dropout(inference, 0.5, inplace=True, seed=1) is inference

    x = torch.randn(4, 5, dtype=torch.float64, requires_grad=True)
    h = x * 1
    version, pointer = h._version, h.data_ptr()
    out = fdt.Dropout(0.5, inplace=True)(h)
    assert out is h and h.data_ptr() == pointer and h._version > version
    (dx,) = torch.autograd.grad(h.sum(), x)
    assert torch.equal(dx, (h != 0).double() * 2)

    free = torch.randn(3)
    version = free._version
    fdt.dropout(free, 0.5, inplace=True, seed=2)  # the path without autograd bumps it too
    assert free._version > version


def test_in_place_on_a_tensor_saved_for_backward_is_detected():
    """Like torch's dropout_, an in-place dropout of a tensor another op saved for backward
    makes that backward fail, thanks to the version counter."""
    for dropout in (F.dropout, fdt.dropout):
        x = torch.randn(5, requires_grad=True)
        h = torch.sigmoid(x)  # saves its output
        dropout(h, 0.5, inplace=True)
        with pytest.raises(RuntimeError, match="modified by an inplace operation"):
            h.sum().backward()


# ---------------------------------------------------------------------------------------------
# The cache of large outputs
# ---------------------------------------------------------------------------------------------

# The smallest output the cache serves, float32: 32 MiB.
CACHED_SHAPE = (2048, fdt._CACHED_MIN_BYTES // 4 // 2048)
CACHED_NBYTES = fdt._CACHED_MIN_BYTES


@pytest.fixture
def fresh_cache():
    """An empty cache at its default limit, and the limit restored and the cache emptied after."""
    fdt.empty_cache()
    previous = fdt.set_cache_limit(1 << 30)
    yield
    fdt.set_cache_limit(previous)
    fdt.empty_cache()


@pytest.fixture(scope="module")
def large_input():
    """A float32 tensor of CACHED_SHAPE and its dropout with seed 11, p = 0.3, computed by
    fastdrop.dropout on its NumPy view (memory the cache never lends)."""
    x = torch.randn(CACHED_SHAPE, generator=torch.Generator().manual_seed(3))
    expected, _ = fastdrop.dropout(x.numpy(), 0.7, seed=11)
    return x, as_uint(expected)


def test_freed_large_outputs_are_reused_and_written_whole(fresh_cache, large_input):
    """A freed 32 MiB output's memory serves the next output of that size, which is again
    written whole (poison left in it does not survive); outputs alive together never share
    memory."""
    x, expected = large_input
    y = fdt.dropout(x, 0.3, seed=11)
    assert np.array_equal(bits_of(y), expected)
    address = y.data_ptr()
    y.fill_(float("nan"))
    del y
    assert fdt.cached_bytes() == CACHED_NBYTES
    again = fdt.dropout(x, 0.3, seed=11)
    assert again.data_ptr() == address and fdt.cached_bytes() == 0
    assert np.array_equal(bits_of(again), expected)
    other = fdt.dropout(x, 0.3, seed=11)
    assert not np.shares_memory(numpy_of(again), numpy_of(other))
    assert np.array_equal(bits_of(other), expected)


def test_gradients_come_from_the_cache_and_are_right(fresh_cache, large_input):
    """Forward and backward of a training step reuse the two blocks the previous step freed,
    and the gradient is still the mask applied to dy."""
    x, _ = large_input
    x = x.clone().requires_grad_()
    dy = torch.randn(CACHED_SHAPE, generator=torch.Generator().manual_seed(4))
    expected, _ = fastdrop.dropout(dy.numpy(), 0.7, seed=11)
    addresses = []
    for _ in range(3):
        y = fdt.dropout(x, 0.3, seed=11)
        y.backward(dy)
        assert np.array_equal(bits_of(x.grad), as_uint(expected))
        addresses.append({y.data_ptr(), x.grad.data_ptr()})
        del y
        x.grad = None
        assert fdt.cached_bytes() == 2 * CACHED_NBYTES
    assert addresses[0] == addresses[1] == addresses[2] and len(addresses[0]) == 2


def test_cache_limit_and_empty_cache(fresh_cache, large_input):
    """The limit caps what is kept, releasing the oldest first; 0 keeps nothing; empty_cache
    releases everything; a refused limit changes nothing."""
    x, _ = large_input
    assert fdt.set_cache_limit(CACHED_NBYTES) == 1 << 30
    older, newer = fdt.dropout(x, 0.3, seed=1), fdt.dropout(x, 0.3, seed=2)
    newest_address = newer.data_ptr()
    del older, newer
    assert fdt.cached_bytes() == CACHED_NBYTES
    reused = fdt.dropout(x, 0.3, seed=3)
    assert reused.data_ptr() == newest_address
    del reused
    assert fdt.cached_bytes() == CACHED_NBYTES
    fdt.empty_cache()
    assert fdt.cached_bytes() == 0

    assert fdt.set_cache_limit(0) == CACHED_NBYTES
    del x  # the module fixture keeps the tensor; this drops only the local name
    y = fdt.dropout(large_input[0], 0.3, seed=1)
    del y
    assert fdt.cached_bytes() == 0

    for bad, error in ((-1, ValueError), (1.5, TypeError), (True, TypeError), ("1", TypeError)):
        with pytest.raises(error, match="nbytes"):
            fdt.set_cache_limit(bad)
    assert fdt.set_cache_limit(np.int64(5)) == 0 and fdt.set_cache_limit(0) == 5


def test_small_and_non_contiguous_outputs_bypass_the_cache(fresh_cache, large_input):
    """Outputs under 32 MiB, and outputs of non-C-contiguous inputs (which keep the input's
    memory order, as np.empty_like does), are not lent from the cache nor kept in it."""
    x, _ = large_input
    small = fdt.dropout(x[:100], 0.3, seed=11)
    transposed = fdt.dropout(x.t(), 0.3, seed=11)
    assert transposed.stride() == x.t().stride()
    # Decisions follow the logical (row-major) order of the transposed view.
    assert np.array_equal(bits_of(transposed), as_uint(fastdrop.dropout(x.t().numpy(), 0.7,
                                                                         seed=11)[0]))
    del small, transposed
    assert fdt.cached_bytes() == 0


def test_a_loan_dying_while_the_cache_is_busy_frees_its_block(fresh_cache, large_input):
    """An output freed while the cache's lock is held (by another thread, or by the cache's own
    code when a collection runs a finaliser inside it) does not wait: its block is released,
    and the cache is unchanged."""
    import threading

    x, _ = large_input
    y = fdt.dropout(x, 0.3, seed=11)
    box = [y]
    del y
    freer = threading.Thread(target=box.clear)  # drops the last reference to the output
    with fdt._OUTPUT_CACHE._lock:
        freer.start()
        freer.join(timeout=10)
        returned = not freer.is_alive()
    freer.join()
    assert returned and fdt.cached_bytes() == 0


def test_threads_share_the_cache(fresh_cache, large_input):
    """Threads taking and returning blocks at once get whole, right outputs and never a block
    another thread is using."""
    import threading

    x, expected = large_input
    errors = []

    def work():
        try:
            for _ in range(4):
                y = fdt.dropout(x, 0.3, seed=11)
                # A block lent twice would be overwritten by the other thread's poison.
                if not np.array_equal(bits_of(y), expected):
                    errors.append("wrong output")
                y.fill_(float("nan"))
                del y
        except Exception as error:  # pragma: no cover - reported by the assert below
            errors.append(repr(error))

    threads = [threading.Thread(target=work) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert 0 < fdt.cached_bytes() <= 3 * CACHED_NBYTES


@pytest.mark.skipif(not hasattr(signal, "SIGUSR1"), reason="needs SIGUSR1")
def test_the_cache_serves_code_that_interrupts_it():
    """A signal handler run while its thread is inside the cache (holding its lock) can take
    outputs from the cache, give them back, empty it, cap it and count it: no deadlock, every
    output right, no block lent twice, no release lost.  tests/_cache_reentry_worker.py
    interrupts each of the cache's operations at every line of its code in turn, in a process
    of its own, so that a deadlock fails this test (after faulthandler's stack dump) instead of
    hanging the suite."""
    worker = pathlib.Path(__file__).with_name("_cache_reentry_worker.py")
    env = dict(os.environ, PYTHONPATH=PACKAGE_PARENT)
    done = subprocess.run([sys.executable, str(worker), "240"], env=env,
                          cwd=tempfile.gettempdir(), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.startswith("interrupted ")


@pytest.mark.parametrize("arguments", [
    lambda cache: (bytearray(CACHED_NBYTES), cache),  # not an array: fails in __init__
    lambda cache: (np.empty(CACHED_NBYTES, np.uint8),),  # no cache: fails before __init__
], ids=["not-an-array", "no-cache"])
def test_a_loan_whose_construction_failed_dies_quietly(monkeypatch, arguments):
    """A loan whose construction failed part way gives nothing back when it dies: its
    finaliser raises nothing (no "Exception ignored in"), and the cache holds nothing new and
    still lends."""
    reported = []
    monkeypatch.setattr(sys, "unraisablehook", reported.append)
    cache = fdt._OutputCache(1 << 30)
    with pytest.raises((AttributeError, TypeError)):
        fdt._Loan(*arguments(cache))
    gc.collect()
    assert reported == []
    assert cache.held() == 0 and cache.take(CACHED_NBYTES).nbytes == CACHED_NBYTES


# ---------------------------------------------------------------------------------------------
# Refused tensors
# ---------------------------------------------------------------------------------------------

def test_unsupported_tensors_get_clear_errors_in_training():
    """In training, a tensor on another device says so (a NotImplementedError, which is a
    RuntimeError as in torch); integer, complex and sparse tensors get a TypeError naming what
    is served.  Nothing is drawn from the generator."""
    with pytest.raises(NotImplementedError, match="CPU tensors only.*device 'meta'"):
        fdt.dropout(torch.ones(3, device="meta"), 0.5)
    with pytest.raises(RuntimeError, match="device 'meta'"):
        fdt.Dropout2d()(torch.ones(2, 3, 4, 5, device="meta"))
    for tensor in (torch.arange(4), torch.ones(2, dtype=torch.complex64),
                   torch.ones(2, dtype=torch.bool)):
        with pytest.raises(TypeError, match=f"serves .*float32.*has dtype {tensor.dtype}"):
            fdt.dropout(tensor, 0.5)
        assert generator_moves(lambda: pytest.raises(TypeError, fdt.dropout, tensor, 0.5)) == 0
    with pytest.raises(TypeError, match="strided.*has layout torch.sparse_coo"):
        fdt.dropout(torch.eye(3).to_sparse(), 0.5)
    for layout in (torch.strided, torch.jagged):
        nested = torch.nested.nested_tensor([torch.ones(2), torch.ones(3)], layout=layout)
        with pytest.raises(TypeError, match="strided.*is a nested tensor"):
            fdt.dropout(nested, 0.5)


def test_evaluation_and_p_zero_return_any_tensor_itself():
    """As PyTorch does, training=False and p = 0 return the input itself whatever its device,
    dtype or layout (the kernels are not involved), and so does an empty tensor in training."""
    tensors = [torch.arange(4), torch.ones(2, dtype=torch.complex64), torch.ones(3, device="meta"),
               torch.eye(3).to_sparse(), torch.ones(2, 0)]
    for tensor in tensors:
        for function in (fdt.dropout, fdt.alpha_dropout, fdt.feature_alpha_dropout):
            assert function(tensor, 0.5, training=False) is tensor
        assert fdt.dropout(tensor, 0.0) is tensor
    for layer in (fdt.Dropout(), fdt.AlphaDropout(), fdt.Dropout1d()):
        meta = torch.ones(2, 3, device="meta")
        assert layer.eval()(meta) is meta
    empty = torch.ones(2, 0, dtype=torch.int64)
    assert fdt.dropout(empty, 0.5) is empty and F.dropout(empty, 0.5) is empty


def run_python(code, *path, timeout=120):
    """Runs code in a fresh interpreter importing this fastdrop, from a neutral directory, with
    `path` ahead of it on PYTHONPATH."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([*map(str, path), PACKAGE_PARENT]))
    return subprocess.run([sys.executable, "-c", code], env=env, cwd=tempfile.gettempdir(),
                          capture_output=True, text=True, timeout=timeout)


def test_import_without_torch():
    """import fastdrop does not import torch; import fastdrop.torch without torch says how to
    install it."""
    code = ("import sys\n"
            "import fastdrop\n"
            "assert 'torch' not in sys.modules, 'import fastdrop imported torch'\n"
            "sys.modules['torch'] = None  # as if torch were not installed\n"
            "try:\n"
            "    import fastdrop.torch\n"
            "except ImportError as error:\n"
            "    print(error)\n")
    done = run_python(code)
    assert done.returncode == 0, done.stderr
    assert "fastdrop.torch needs PyTorch" in done.stdout and "fastdropout[torch]" in done.stdout


def test_bfloat16_without_ml_dtypes_says_what_is_missing(tmp_path):
    """Without ml_dtypes (here a stand-in package whose import fails) bfloat16 tensors are
    refused with a TypeError that names the missing package."""
    (tmp_path / "ml_dtypes").mkdir()
    (tmp_path / "ml_dtypes" / "__init__.py").write_text("raise ImportError('not installed')\n")
    code = ("import torch, fastdrop.torch as fdt\n"
            "try:\n"
            "    fdt.dropout(torch.ones(3, dtype=torch.bfloat16), 0.5)\n"
            "except TypeError as error:\n"
            "    print(error)\n")
    done = run_python(code, tmp_path)
    assert done.returncode == 0, done.stderr
    assert "ml_dtypes" in done.stdout and "torch.bfloat16" in done.stdout


def test_docstring_examples():
    results = doctest.testmod(fdt)
    assert results.attempted > 0 and results.failed == 0


# ---------------------------------------------------------------------------------------------
# Distributed
# ---------------------------------------------------------------------------------------------

def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def train_distributed(directory, world_size=2, timeout=120):
    """Runs tests/_ddp_worker.py as `world_size` processes on loopback; returns their outputs."""
    worker = pathlib.Path(__file__).with_name("_ddp_worker.py")
    port = free_port()
    env = dict(os.environ, PYTHONPATH=PACKAGE_PARENT, OMP_NUM_THREADS="1")
    outputs = [directory / f"rank{rank}.npz" for rank in range(world_size)]
    processes = [subprocess.Popen([sys.executable, str(worker), str(rank), str(world_size),
                                   str(port), str(output)], env=env, cwd=directory,
                                  stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
                 for rank, output in enumerate(outputs)]
    try:
        logs = [process.communicate(timeout=timeout)[0] for process in processes]
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.wait()
    for process, log in zip(processes, logs):
        assert process.returncode == 0, log
    return [dict(np.load(output)) for output in outputs]


def test_distributed_data_parallel(tmp_path):
    """Two processes (gloo, loopback) train an MLP with fastdrop.torch.Dropout under
    DistributedDataParallel, seeded alike, each masking with subsequence = rank: the masks
    differ between the ranks and are those the same calls give here after the same
    torch.manual_seed, a second run repeats them exactly, and the parameters agree across the
    ranks after the steps."""
    sys.path.insert(0, str(pathlib.Path(__file__).parent))
    try:
        import _ddp_worker as worker
    finally:
        sys.path.pop(0)
    runs = []
    for run in range(2):
        directory = tmp_path / f"run{run}"
        directory.mkdir()
        runs.append(train_distributed(directory))
    first, second = runs
    ones = torch.ones(worker.BATCH, worker.HIDDEN)
    for rank, result in enumerate(first):
        masks = result["masks"]
        assert masks.shape == (worker.STEPS, worker.BATCH, worker.HIDDEN)
        torch.manual_seed(worker.SEED)
        for step in range(worker.STEPS):
            expected = fdt.dropout(ones, worker.P, subsequence=rank) != 0
            np.testing.assert_array_equal(masks[step], expected.numpy())
        for key in result:  # reproducible run to run, bit for bit
            np.testing.assert_array_equal(result[key], second[rank][key])
    assert not np.array_equal(first[0]["masks"], first[1]["masks"])
    np.testing.assert_array_equal(first[0]["parameters"], first[1]["parameters"])
