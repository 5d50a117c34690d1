"""Refused inputs (SPEC §6): the right exception, a message naming the argument, nothing written.

"Nothing written" means x, dy and out= hold the same bits as before, and neither the given
stream nor the default stream has moved.  The reference shares fastdrop's front end, so each
forward refusal is checked on both.
"""
from __future__ import annotations

import re

import numpy as np
import pytest

import fastdrop
from fastdrop import reference

IMPLEMENTATIONS = [pytest.param(fastdrop, id="fastdrop"), pytest.param(reference, id="reference")]


def as_uint(a: np.ndarray) -> np.ndarray:
    return a.view(np.dtype(f"u{a.dtype.itemsize}"))


class Guard:
    """Snapshots arrays and streams, then checks they are exactly as they were."""

    def __init__(self, *things):
        self.arrays = [(a, a.copy()) for a in things if isinstance(a, np.ndarray)]
        self.streams = [s for s in things if isinstance(s, fastdrop.Stream)]
        self.streams.append(fastdrop.default_stream())
        self.positions = [(s.seed, s.subsequence, s.position) for s in self.streams]
        self.threads = fastdrop.get_num_threads()

    def check(self):
        for a, before in self.arrays:
            assert a.dtype == before.dtype and a.shape == before.shape
            assert a.tobytes() == before.tobytes()
        assert [(s.seed, s.subsequence, s.position) for s in self.streams] == self.positions
        assert fastdrop.get_num_threads() == self.threads


def assert_refused(exc_type, name, call, *watched):
    """call() raises exc_type whose message names `name`; the watched things are unchanged."""
    guard = Guard(*watched)
    with pytest.raises(exc_type) as info:
        call()
    assert re.search(rf"\b{re.escape(name)}\b", str(info.value)), (
        f"message does not name {name!r}: {info.value}")
    guard.check()
    return info.value


@pytest.fixture
def x():
    a = np.random.default_rng(0).standard_normal((4, 6)).astype(np.float32)
    a[0, 0] = np.nan
    a[1, 1] = -0.0
    return a


@pytest.fixture
def stream():
    s = fastdrop.Stream(seed=11, subsequence=2)
    s.reserve(3)
    return s


@pytest.fixture
def out(x):
    return np.full_like(x, 7.0)


# ---------------------------------------------------------------------------------------------
# x
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("impl", IMPLEMENTATIONS)
@pytest.mark.parametrize("bad_x", [
    [[1.0, 2.0], [3.0, 4.0]],
    1.5,
    np.float32(1.5),
    None,
], ids=["list", "float", "numpy_scalar", "None"])
def test_x_not_an_ndarray(impl, bad_x, stream):
    """A non-array x is refused (TypeError naming x) instead of being silently converted."""
    assert_refused(TypeError, "x", lambda: impl.dropout(bad_x, 0.5, stream=stream), stream)


@pytest.mark.parametrize("impl", IMPLEMENTATIONS)
@pytest.mark.parametrize("dtype", [np.int8, np.int32, np.int64, np.uint16, np.bool_,
                                   np.complex64, np.complex128, np.longdouble, object])
def test_x_unsupported_dtype(impl, dtype, stream):
    """Non-float, complex and unsupported float dtypes (long double) raise TypeError naming x,
    and neither x nor the stream moves."""
    if np.dtype(dtype) == np.dtype(np.float64):
        pytest.skip("longdouble is float64 on this platform")
    bad = np.arange(12).reshape(3, 4).astype(dtype)
    assert_refused(TypeError, "x", lambda: impl.dropout(bad, 0.5, stream=stream), bad, stream)


TORCH_POINTER = "use fastdrop.torch"


class TensorLookalike:
    """Stands for a tensor of a framework fastdrop cannot import here: only its class's module
    says it comes from torch, which is all the refusal may go by."""

    __module__ = "torch"


class TensorLookalikeSubclass(TensorLookalike):
    __module__ = "someones.model"


@pytest.mark.parametrize("impl", IMPLEMENTATIONS)
@pytest.mark.parametrize("tensor_type", [TensorLookalike, TensorLookalikeSubclass])
def test_a_torch_tensor_is_pointed_to_fastdrop_torch(impl, tensor_type, x, out, stream):
    """A tensor of torch (or of a subclass defined elsewhere) as x, as dy or as out= is refused
    with the module that serves it named, and nothing written."""
    tensor = tensor_type()
    error = assert_refused(TypeError, "x", lambda: impl.dropout(tensor, 0.5, stream=stream),
                           stream)
    assert TORCH_POINTER in str(error)
    error = assert_refused(TypeError, "out",
                           lambda: impl.dropout(x, 0.5, stream=stream, out=tensor), x, stream)
    assert TORCH_POINTER in str(error)
    _, mask = fastdrop.dropout(x, 0.5, seed=3)
    error = assert_refused(TypeError, "dy", lambda: impl.dropout_backward(tensor, mask))
    assert TORCH_POINTER in str(error)
    error = assert_refused(TypeError, "out",
                           lambda: impl.dropout_backward(out, mask, out=tensor), out)
    assert TORCH_POINTER in str(error)


def test_a_real_torch_tensor_is_pointed_to_fastdrop_torch(stream):
    torch = pytest.importorskip("torch", reason='needs torch: pip install "fastdropout[torch]"')
    for tensor in (torch.ones(3), torch.nn.Parameter(torch.ones(3))):
        error = assert_refused(TypeError, "x", lambda: fastdrop.dropout(tensor, 0.5), stream)
        assert TORCH_POINTER in str(error)
        with pytest.raises(TypeError, match=TORCH_POINTER):
            fastdrop.Dropout(0.5)(tensor)


@pytest.mark.parametrize("not_an_array", [[1.0, 2.0], None, object()], ids=["list", "None",
                                                                             "object"])
def test_other_non_arrays_get_no_torch_pointer(not_an_array, stream):
    error = assert_refused(TypeError, "x", lambda: fastdrop.dropout(not_an_array, 0.5), stream)
    assert "torch" not in str(error)


@pytest.mark.parametrize("impl", IMPLEMENTATIONS)
@pytest.mark.parametrize("dtype", [">f4", ">f8"])
def test_x_non_native_byte_order(impl, dtype, x, stream):
    """Byte-swapped float arrays are refused (ValueError naming x), never read as garbage."""
    bad = x.astype(dtype)
    assert_refused(ValueError, "x", lambda: impl.dropout(bad, 0.5, stream=stream), bad, stream)


def test_x_unaligned_is_served_exactly_or_refused(stream):
    """An unaligned float32 view is either refused naming x, or gives the aligned result."""
    raw = np.zeros(4 * 24 + 1, dtype=np.uint8)
    bad = raw[1:].view(np.float32).reshape(4, 6)
    bad[...] = np.arange(24, dtype=np.float32).reshape(4, 6)
    if bad.flags.aligned:
        pytest.skip("the allocator gave an aligned view")
    try:
        y, _ = fastdrop.dropout(bad, 0.5, seed=3)
    except ValueError as exc:
        assert re.search(r"\bx\b", str(exc))
        return
    expected, _ = fastdrop.dropout(np.ascontiguousarray(bad), 0.5, seed=3)
    np.testing.assert_array_equal(y, expected)


# ---------------------------------------------------------------------------------------------
# keep_prob
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("impl", IMPLEMENTATIONS)
@pytest.mark.parametrize("keep_prob,exc", [
    (0, ValueError), (0.0, ValueError), (-0.0, ValueError), (-0.5, ValueError),
    (1.0000001, ValueError), (2, ValueError), (float("nan"), ValueError),
    (np.float32("nan"), ValueError), (float("inf"), ValueError), (float("-inf"), ValueError),
    (1e-12, ValueError), (2.0**-33, ValueError),
    (None, TypeError), ("0.5", TypeError), (True, TypeError), (np.bool_(True), TypeError),
    (0.5j, TypeError), ([0.5], TypeError),
])
def test_keep_prob_refused(impl, keep_prob, exc, x, out, stream):
    """keep_prob outside (0, 1], NaN, below 2**-32 or non-numeric: refused naming keep_prob,
    with x, out= and the stream untouched."""
    assert_refused(exc, "keep_prob",
                   lambda: impl.dropout(x, keep_prob, stream=stream, out=out), x, out, stream)


def test_keep_prob_huge_int_names_the_argument(x, stream):
    """An int too large for a float is still a keep_prob outside (0, 1] and must say so."""
    try:
        fastdrop.dropout(x, 10**400, stream=stream)
    except (TypeError, ValueError, OverflowError) as exc:
        assert "keep_prob" in str(exc), str(exc)
    else:  # pragma: no cover
        pytest.fail("accepted keep_prob=10**400")


def test_smallest_keep_prob_is_accepted():
    """keep_prob = 2**-32 (T = 1) is the smallest allowed value and must not be refused."""
    y, mask = fastdrop.dropout(np.ones(64), 2.0**-32, seed=0)
    assert mask.keep_prob == 2.0**-32
    assert set(np.unique(y)) <= {0.0, 2.0**32}


# ---------------------------------------------------------------------------------------------
# seed, subsequence, stream
# ---------------------------------------------------------------------------------------------

BAD_SEEDS = [(-1, ValueError), (2**64, ValueError), (np.int64(-1), ValueError),
             (1.5, TypeError), (np.float64(3.0), TypeError), ("3", TypeError),
             (True, TypeError), (np.bool_(False), TypeError)]


@pytest.mark.parametrize("impl", IMPLEMENTATIONS)
@pytest.mark.parametrize("seed,exc", BAD_SEEDS)
def test_seed_refused(impl, seed, exc, x, out):
    """A seed outside [0, 2**64) or not an integer is refused naming seed; the default stream
    does not move."""
    assert_refused(exc, "seed", lambda: impl.dropout(x, 0.5, seed=seed, out=out), x, out)


@pytest.mark.parametrize("seed,exc", BAD_SEEDS)
def test_stream_seed_refused(seed, exc):
    """Stream(seed=...), manual_seed and the Dropout layer refuse the same seeds."""
    assert_refused(exc, "seed", lambda: fastdrop.Stream(seed))
    assert_refused(exc, "seed", lambda: fastdrop.manual_seed(seed))
    assert_refused(exc, "seed", lambda: fastdrop.Dropout(0.5, seed=seed))
    existing = fastdrop.Stream(5)
    existing.reserve(9)
    assert_refused(exc, "seed", lambda: existing.manual_seed(seed), existing)


@pytest.mark.parametrize("subsequence,exc", [
    (-1, ValueError), (2**63, ValueError), (2**64, ValueError), (1.5, TypeError),
    ("0", TypeError), (True, TypeError), (None, TypeError)])
def test_subsequence_refused(subsequence, exc):
    """A subsequence outside [0, 2**63) or not an integer is refused naming subsequence
    (2**63 and up are the refinement draws' subsequences)."""
    assert_refused(exc, "subsequence", lambda: fastdrop.Stream(1, subsequence))
    assert_refused(exc, "subsequence", lambda: fastdrop.Dropout(0.5, seed=1,
                                                                subsequence=subsequence))
    parent = fastdrop.Stream(1)
    assert_refused(exc, "subsequence", lambda: parent.spawn(subsequence), parent)
    assert_refused(exc, "subsequence", lambda: parent.manual_seed(2, subsequence), parent)


def test_largest_seed_and_subsequence_accepted():
    """The top of both ranges is valid: a range check off by one would refuse them."""
    stream = fastdrop.Stream(2**64 - 1, 2**63 - 1)
    y, mask = fastdrop.dropout(np.ones(10), 0.5, stream=stream)
    assert (mask.seed, mask.subsequence, stream.position) == (2**64 - 1, 2**63 - 1, 1)
    _, mask = fastdrop.dropout(np.ones(10), 0.5, seed=2**64 - 1)
    assert mask.seed == 2**64 - 1


@pytest.mark.parametrize("impl", IMPLEMENTATIONS)
def test_seed_and_stream_together_refused(impl, x, out, stream):
    """seed= (stateless) and stream= (advancing) contradict each other: ValueError naming both."""
    exc = assert_refused(ValueError, "seed",
                         lambda: impl.dropout(x, 0.5, seed=1, stream=stream, out=out),
                         x, out, stream)
    assert "stream" in str(exc)


@pytest.mark.parametrize("impl", IMPLEMENTATIONS)
@pytest.mark.parametrize("bad_stream", [42, "stream", np.random.default_rng(0), object()],
                         ids=["int", "str", "numpy_generator", "object"])
def test_stream_not_a_stream(impl, bad_stream, x, out):
    """stream= must be a fastdrop.Stream: TypeError naming stream."""
    assert_refused(TypeError, "stream", lambda: impl.dropout(x, 0.5, stream=bad_stream, out=out),
                   x, out)


# ---------------------------------------------------------------------------------------------
# mode, store, training, shared_axes
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("impl", IMPLEMENTATIONS)
@pytest.mark.parametrize("mode", ["Inverted", "bogus", "", None, 1])
def test_mode_refused(impl, mode, x, out, stream):
    """An unknown mode is refused naming mode (not silently treated as inverted)."""
    assert_refused(ValueError, "mode",
                   lambda: impl.dropout(x, 0.5, mode=mode, stream=stream, out=out),
                   x, out, stream)
    assert_refused(ValueError, "mode", lambda: fastdrop.Dropout(0.5, mode=mode))


@pytest.mark.parametrize("impl", IMPLEMENTATIONS)
@pytest.mark.parametrize("store", ["bit", "Seed", None, True])
def test_store_refused(impl, store, x, out, stream):
    """An unknown store is refused naming store."""
    assert_refused(ValueError, "store",
                   lambda: impl.dropout(x, 0.5, store=store, stream=stream, out=out),
                   x, out, stream)
    assert_refused(ValueError, "store", lambda: fastdrop.Dropout(0.5, store=store))


@pytest.mark.parametrize("impl", IMPLEMENTATIONS)
@pytest.mark.parametrize("training", [1, 0, "True", None, np.int64(1), 1.0])
def test_training_refused(impl, training, x, out, stream):
    """training must be a bool: 0/1, strings and None are refused naming training."""
    assert_refused(TypeError, "training",
                   lambda: impl.dropout(x, 0.5, training=training, stream=stream, out=out),
                   x, out, stream)


def test_layer_train_refuses_non_bool():
    """Dropout.train(mode) refuses non-bools and keeps its mode."""
    layer = fastdrop.Dropout(0.5, seed=0).eval()
    assert_refused(TypeError, "training", lambda: layer.train("yes"))
    assert layer.training is False


@pytest.mark.parametrize("impl", IMPLEMENTATIONS)
@pytest.mark.parametrize("shared_axes,exc", [
    (2, ValueError), (-3, ValueError), ((0, 2), ValueError), (2**100, ValueError),
    ((0, 0), ValueError), ((1, -1), ValueError), ((-2, 0), ValueError), ([1, 1], ValueError),
    ((1.0,), TypeError), (("0",), TypeError), ((None,), TypeError), ((True,), TypeError),
    ((np.bool_(False),), TypeError), (True, TypeError), (1.5, TypeError), ((0, 0.0), TypeError),
])
def test_shared_axes_refused(impl, shared_axes, exc, x, out, stream):
    """Out-of-range, repeated (1 and -1 are the same axis of a 2-D array) and non-int
    shared_axes are refused naming shared_axes."""
    assert_refused(exc, "shared_axes",
                   lambda: impl.dropout(x, 0.5, shared_axes=shared_axes, stream=stream, out=out),
                   x, out, stream)


def test_shared_axes_on_0d_refused(stream):
    """A 0-d array has no axis 0 to share."""
    x0 = np.asarray(np.float64(2.0))
    assert_refused(ValueError, "shared_axes",
                   lambda: fastdrop.dropout(x0, 0.5, shared_axes=0, stream=stream), x0, stream)


def test_layer_with_bad_shared_axes_refuses_at_forward(x):
    """A layer's bad shared_axes is refused at forward, without advancing the layer's stream."""
    layer = fastdrop.Dropout(0.5, seed=1, shared_axes=(0, 5))
    assert_refused(ValueError, "shared_axes", lambda: layer(x), x, layer.stream)
    assert layer.mask is None


# ---------------------------------------------------------------------------------------------
# out=
# ---------------------------------------------------------------------------------------------

def bad_outs(x):
    read_only = np.zeros_like(x)
    read_only.flags.writeable = False
    return {
        "wrong_shape": (np.zeros((6, 4), x.dtype), ValueError),
        "broadcastable_shape": (np.zeros((1, 6), x.dtype), ValueError),
        "extra_axis": (np.zeros((4, 6, 1), x.dtype), ValueError),
        "wrong_dtype": (np.zeros(x.shape, np.float64), TypeError),
        "int_dtype": (np.zeros(x.shape, np.int32), TypeError),
        "read_only": (read_only, ValueError),
        "list": (np.zeros(x.shape, x.dtype).tolist(), TypeError),
    }


@pytest.mark.parametrize("impl", IMPLEMENTATIONS)
@pytest.mark.parametrize("case", list(bad_outs(np.zeros((4, 6), np.float32))))
def test_out_refused(impl, case, x, stream):
    """out= of the wrong shape, dtype or type, or read-only, is refused naming out; neither x
    nor out is written and the stream does not move."""
    bad, exc = bad_outs(x)[case]
    assert_refused(exc, "out", lambda: impl.dropout(x, 0.5, stream=stream, out=bad),
                   x, bad, stream)


@pytest.mark.parametrize("impl", IMPLEMENTATIONS)
def test_out_partially_overlapping_x_refused(impl, stream):
    """out = buf[1:] with x = buf[:-1]: writing would corrupt x mid-pass, so it is refused."""
    buf = np.arange(25, dtype=np.float64)
    assert_refused(ValueError, "out",
                   lambda: impl.dropout(buf[:-1], 0.5, stream=stream, out=buf[1:]), buf, stream)


@pytest.mark.parametrize("impl", IMPLEMENTATIONS)
@pytest.mark.parametrize("view", ["transpose", "reversed", "shifted_rows"])
def test_out_other_view_of_x_refused(impl, view, stream):
    """out= another view of x's memory (transposed, reversed, shifted) is refused: only the
    same view (in place) may alias."""
    buf = np.arange(30, dtype=np.float32).reshape(5, 6)
    x5 = buf[:5, :5]
    other = {"transpose": x5.T, "reversed": x5[::-1], "shifted_rows": buf[:, 1:6]}[view]
    assert other.shape == x5.shape
    assert_refused(ValueError, "out", lambda: impl.dropout(x5, 0.5, stream=stream, out=other),
                   buf, stream)


@pytest.mark.parametrize("impl", IMPLEMENTATIONS)
def test_refused_in_evaluation_mode_too(impl, x, stream):
    """Evaluation calls check their arguments as strictly as training calls."""
    read_only = np.zeros_like(x)
    read_only.flags.writeable = False
    assert_refused(ValueError, "out",
                   lambda: impl.dropout(x, 0.5, training=False, out=read_only), x, read_only)
    assert_refused(ValueError, "keep_prob", lambda: impl.dropout(x, 0.0, training=False), x)
    assert_refused(TypeError, "x",
                   lambda: impl.dropout(np.zeros(x.shape, np.int32), 0.5, training=False), x)


# ---------------------------------------------------------------------------------------------
# Allowed aliasing
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("alias", ["x", "same_view"])
@pytest.mark.parametrize("layout", ["contiguous", "strided"])
def test_forward_in_place_aliases_allowed(alias, layout, x):
    """out=x and out=x[...] (same memory, a different object) work and equal the out-of-place
    result; an over-eager overlap check would refuse the second."""
    expected, mask_expected = fastdrop.dropout(x, 0.7, seed=4)
    buf = np.zeros((8, 6), dtype=x.dtype)
    target = x.copy() if layout == "contiguous" else buf[::2]
    target[...] = x
    out = target if alias == "x" else target[...]
    y, mask = fastdrop.dropout(target, 0.7, seed=4, out=out)
    assert y is out
    np.testing.assert_array_equal(as_uint(target), as_uint(expected))
    assert mask == mask_expected
    if layout == "strided":
        assert np.all(buf[1::2] == 0)


def test_forward_interleaved_views_allowed(x):
    """x = buf[::2] and out = buf[1::2] share a buffer but no element: allowed, and x is kept."""
    buf = np.zeros((8, 6), dtype=x.dtype)
    buf[::2] = x
    y, _ = fastdrop.dropout(buf[::2], 0.7, seed=4, out=buf[1::2])
    expected, _ = fastdrop.dropout(x, 0.7, seed=4)
    np.testing.assert_array_equal(as_uint(buf[1::2]), as_uint(expected))
    np.testing.assert_array_equal(as_uint(buf[::2]), as_uint(x))


@pytest.mark.parametrize("alias", ["dy", "same_view"])
def test_backward_in_place_aliases_allowed(alias, x):
    """dropout_backward(out=dy) and out=dy[...] work and equal the out-of-place result."""
    _, mask = fastdrop.dropout(x, 0.7, seed=4)
    dy = np.random.default_rng(1).standard_normal(x.shape).astype(np.float32)
    expected = fastdrop.dropout_backward(dy, mask)
    out = dy if alias == "dy" else dy[...]
    dx = fastdrop.dropout_backward(dy, mask, out=out)
    assert dx is out
    np.testing.assert_array_equal(as_uint(dy), as_uint(expected))


# ---------------------------------------------------------------------------------------------
# Backward
# ---------------------------------------------------------------------------------------------

@pytest.fixture(params=["seed", "bits", "eval"])
def mask(request, x):
    training = request.param != "eval"
    store = "bits" if request.param == "bits" else "seed"
    return fastdrop.dropout(x, 0.6, seed=5, training=training, store=store)[1]


@pytest.fixture
def dy(x):
    return np.random.default_rng(2).standard_normal(x.shape).astype(np.float32)


@pytest.mark.parametrize("impl", IMPLEMENTATIONS)
@pytest.mark.parametrize("shape", [(6, 4), (4, 5), (24,), (1, 6), (4, 6, 1), ()])
def test_backward_dy_shape_mismatch(impl, shape, mask):
    """dy whose shape is not the mask's (even a broadcastable one) is refused naming dy."""
    bad = np.ones(shape, dtype=np.float32)
    assert_refused(ValueError, "dy", lambda: impl.dropout_backward(bad, mask), bad)


@pytest.mark.parametrize("impl", IMPLEMENTATIONS)
@pytest.mark.parametrize("make_dy,exc", [
    (lambda dy: dy.tolist(), TypeError),
    (lambda dy: dy.astype(np.int32), TypeError),
    (lambda dy: dy.astype(np.uint16), TypeError),
    (lambda dy: dy.astype(np.complex64), TypeError),
    (lambda dy: dy.astype(">f8"), ValueError),
    (lambda dy: dy.astype(">f2"), ValueError),
], ids=["list", "int32", "uint16", "complex64", "big_endian", "big_endian_half"])
def test_backward_dy_refused(impl, make_dy, exc, dy, mask):
    """A dy that is not a native float array of a supported dtype is refused naming dy."""
    bad = make_dy(dy)
    watched = (bad,) if isinstance(bad, np.ndarray) else ()
    assert_refused(exc, "dy", lambda: impl.dropout_backward(bad, mask), *watched)


@pytest.mark.parametrize("impl", IMPLEMENTATIONS)
@pytest.mark.parametrize("bad_mask", [None, np.ones((4, 6), bool), {"seed": 5}, (5, 0, 0)],
                         ids=["None", "bool_array", "dict", "tuple"])
def test_backward_mask_not_a_dropout_mask(impl, bad_mask, dy):
    """mask must be a DropoutMask: TypeError naming mask, dy untouched."""
    assert_refused(TypeError, "mask", lambda: impl.dropout_backward(dy, bad_mask), dy)


# A hand-made DropoutMask: checked when built, so that backward never trusts a bad one.
GOOD_MASK = dict(shape=(4, 6), shared_axes=(), keep_prob=0.5, mode="inverted", training=True,
                 seed=1, subsequence=0, start=0)


@pytest.mark.parametrize("field,value,exc", [
    ("shape", (4, -6), ValueError), ("shape", (4, 6.0), ValueError),
    ("shared_axes", (2,), ValueError), ("shared_axes", (70,), ValueError),
    ("shared_axes", (0, 0), ValueError), ("keep_prob", 0.0, ValueError),
    ("keep_prob", "0.5", TypeError), ("mode", "gaussian", ValueError),
    ("training", 1, TypeError), ("seed", None, TypeError), ("seed", 2**64, ValueError),
    ("subsequence", 2**63, ValueError), ("start", -1, ValueError),
    ("start", 2**64, ValueError), ("bits", np.zeros(2, np.uint8), ValueError)])
def test_hand_made_mask_refused(field, value, exc):
    """DropoutMask(...) checks every field as dropout checks its arguments (an axis past the
    array's rank would otherwise reach the C core); the error names the field."""
    name = "shared_axes" if field == "shared_axes" else field
    assert_refused(exc, name, lambda: fastdrop.DropoutMask(**dict(GOOD_MASK, **{field: value})))


def test_hand_made_mask_equals_dropouts():
    """A mask built from the same fields as dropout's is equal to it and gives the same
    gradient; an evaluation mask has no stream coordinates."""
    dy = np.random.default_rng(2).standard_normal((4, 6)).astype(np.float32)
    _, made = fastdrop.dropout(dy, 0.5, seed=1, store="bits")
    built = fastdrop.DropoutMask(**GOOD_MASK, bits=made.bits.copy())
    assert built == made
    np.testing.assert_array_equal(fastdrop.dropout_backward(dy, built),
                                  fastdrop.dropout_backward(dy, made))
    assert_refused(ValueError, "evaluation",
                   lambda: fastdrop.DropoutMask((3,), (), 0.5, "inverted", False, seed=1))


@pytest.mark.parametrize("bits", [np.zeros(2, np.uint8), np.zeros(3, np.int8),
                                  np.zeros((1, 3), np.uint8), np.zeros(6, np.uint8)[::2],
                                  [0, 0, 0]],
                         ids=["short", "int8", "2-d", "strided", "list"])
def test_mask_bits_replacement_refused(bits):
    """bits may become None or another C-contiguous uint8 array of the right length, nothing
    else: backward reads it blindly."""
    _, mask = fastdrop.dropout(np.ones((4, 6), np.float32), 0.5, seed=1, store="bits")
    before = mask.bits

    def replace():
        mask.bits = bits

    assert_refused(ValueError, "bits", replace)
    assert mask.bits is before
    mask.bits = ~before
    np.testing.assert_array_equal(mask.to_bool().ravel(),
                                  ~np.unpackbits(before, bitorder="little").view(bool)[:24])
    _, evaluation = fastdrop.dropout(np.ones(3), 0.5, training=False)

    def give_bits():
        evaluation.bits = np.zeros(1, np.uint8)

    assert_refused(ValueError, "bits", give_bits)


@pytest.mark.parametrize("blocks,exc", [(-1, ValueError), (1.5, TypeError), ("1", TypeError)])
def test_reserve_refuses_bad_counts(blocks, exc):
    """Stream.reserve takes a non-negative int; the stream stays where it was."""
    s = fastdrop.Stream(1)
    s.reserve(3)
    with pytest.raises(exc):
        s.reserve(blocks)
    assert s.position == 3


def test_unpickled_stream_position_checked():
    """A pickled stream's position is checked on the way back in: past 2**64 is refused."""
    s = fastdrop.Stream(4)
    constructor, arguments, position = s.__reduce__()
    assert position == 0
    restored = constructor(*arguments)
    with pytest.raises(ValueError, match="position"):
        restored.__setstate__(2**64 + 1)
    restored.__setstate__(2**64)
    assert restored.position == 2**64

@pytest.mark.parametrize("impl", IMPLEMENTATIONS)
@pytest.mark.parametrize("case", list(bad_outs(np.zeros((4, 6), np.float32))))
def test_backward_out_refused(impl, case, dy, mask):
    """Backward's out= is checked like forward's, in training and evaluation masks alike."""
    bad, exc = bad_outs(dy)[case]
    assert_refused(exc, "out", lambda: impl.dropout_backward(dy, mask, out=bad), dy, bad)


@pytest.mark.parametrize("impl", IMPLEMENTATIONS)
def test_backward_out_overlapping_dy_refused(impl):
    """Backward out= partially overlapping dy is refused naming out."""
    buf = np.arange(25, dtype=np.float32)
    _, mask1d = fastdrop.dropout(np.ones(24, np.float32), 0.5, seed=1)
    assert_refused(ValueError, "out",
                   lambda: impl.dropout_backward(buf[:-1], mask1d, out=buf[1:]), buf)


# ---------------------------------------------------------------------------------------------
# Thread count
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("n,exc", [(0, ValueError), (-1, ValueError), (4097, ValueError),
                                   ("2", TypeError), (True, TypeError), (2.0, TypeError),
                                   (None, TypeError)])
def test_set_num_threads_refused(n, exc, restore_threads):
    """set_num_threads refuses non-positive, absurd and non-int counts, keeping the old one."""
    assert_refused(exc, "n", lambda: fastdrop.set_num_threads(n))


# ---------------------------------------------------------------------------------------------
# The end of a stream
# ---------------------------------------------------------------------------------------------

def stream_near_end(blocks_left: int) -> fastdrop.Stream:
    s = fastdrop.Stream(seed=77, subsequence=1)
    s.reserve(2**64 - blocks_left)
    return s


@pytest.mark.parametrize("impl", IMPLEMENTATIONS)
def test_call_past_end_of_stream_refused(impl, x, out):
    """A call needing more blocks than the stream has left raises OverflowError naming the
    stream, with x, out and the position unchanged; one that fits still works."""
    s = stream_near_end(1)
    x17 = np.ones(17, np.float32)  # 2 blocks, as x
    assert_refused(OverflowError, "stream", lambda: impl.dropout(x17, 0.5, stream=s), x17, s)
    assert_refused(OverflowError, "stream", lambda: impl.dropout(x, 0.5, stream=s, out=out),
                   x, out, s)
    assert_refused(OverflowError, "stream", lambda: impl.dropout(x, 1.0, stream=s, out=out),
                   x, out, s)
    y, mask = impl.dropout(np.ones(16, np.float32), 0.5, stream=s)  # exactly 1 block
    assert mask.start == 2**64 - 1 and s.position == 2**64
    assert_refused(OverflowError, "stream",
                   lambda: impl.dropout(np.ones(1, np.float32), 0.5, stream=s), s)
    # Evaluation draws nothing, so an exhausted stream still serves it.
    y, _ = impl.dropout(x, 0.5, stream=s, training=False)
    assert y is x and s.position == 2**64


def test_reserve_past_end_refused():
    """Stream.reserve itself refuses to run past 2**64 blocks and leaves the position."""
    s = stream_near_end(5)
    assert_refused(OverflowError, "stream", lambda: s.reserve(6), s)
    assert s.reserve(5) == 2**64 - 5 and s.position == 2**64


def test_last_blocks_match_reference():
    """The last blocks of a stream give the same decisions in fastdrop and the reference."""
    masks = []
    for impl in (fastdrop, reference):
        s = stream_near_end(3)
        masks.append(impl.dropout(np.ones(48), 0.5, stream=s, store="bits")[1])
    assert masks[0] == masks[1]
    np.testing.assert_array_equal(masks[0].to_bool(), reference.mask_to_bool(masks[0]))


@pytest.mark.parametrize("store", ["seed", "bits"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_empty_call_on_exhausted_stream(store, dtype):
    """An empty array needs 0 blocks, so an exhausted stream (position 2**64) still serves it,
    forward and backward, like the reference; an empty x with 5 shared-axis decisions does not."""
    shape = (0, 5)
    expected = reference.dropout(np.ones(shape, dtype), 0.5, stream=stream_near_end(0),
                                 store=store)
    s = stream_near_end(0)
    y, mask = fastdrop.dropout(np.ones(shape, dtype), 0.5, stream=s, store=store)
    assert y.shape == shape and y.dtype == dtype and mask == expected[1]
    assert mask.start == 2**64 and s.position == 2**64
    dx = fastdrop.dropout_backward(np.ones(shape, dtype), mask)
    assert dx.shape == shape
    x = np.ones(shape, dtype)
    assert_refused(OverflowError, "stream",
                   lambda: fastdrop.dropout(x, 0.5, stream=s, shared_axes=0), x, s)


def test_empty_mask_at_end_of_stream_to_bool():
    """to_bool() of a 0-decision mask made at position 2**64 is an empty boolean array (the
    reference's mask_to_bool gives one)."""
    _, mask = fastdrop.dropout(np.ones((0, 5)), 0.5, stream=stream_near_end(0))
    assert reference.mask_to_bool(mask).shape == (0, 5)
    assert mask.to_bool().shape == (0, 5)
