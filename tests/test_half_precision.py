"""float16 and bfloat16 (SPEC §2, §6; issue 4 item 1 and 5): computed in float32, rounded once to
the storage type (round to nearest even), with the same mask as float32 for the same stream.

Every float16 and every bfloat16 bit pattern goes through each kernel path and is compared bit
for bit with fastdrop.reference, and the kept values are also checked against a one-line NumPy
formula that does not use the reference's engine: (x as float32 * scale as float32) rounded to
the storage type.  Outputs are compared as uint16, so -0.0, NaN payloads and subnormals count.
bfloat16 comes from the optional ml_dtypes package; its tests skip, saying so, without it.
"""
from __future__ import annotations

import copy
import re

import numpy as np
import pytest

import fastdrop
from fastdrop import reference
from fastdrop._stream import alpha_constants, kernel_op, scale_for

# Every SIMD path the machine supports must reproduce these results bit for bit.
pytestmark = pytest.mark.usefixtures("every_simd_path")

HALF_DTYPES = ["float16", "bfloat16"]
# (keep_prob, mode): q = 0.7 and 0.3 give scales 1/q that are not powers of two, so almost every
# product must be rounded; classic keeps x unchanged; alpha is an affine map of kept units.
TRAINING_CASES = [(0.7, "inverted"), (0.3, "inverted"), (0.7, "classic"), (0.7, "alpha"),
                  (0.3, "alpha")]


def half_dtype(name: str) -> np.dtype:
    """The numpy dtype called `name`; bfloat16 skips the test when ml_dtypes is missing."""
    if name == "bfloat16":
        ml_dtypes = pytest.importorskip(
            "ml_dtypes", reason="bfloat16 needs the optional ml_dtypes package")
        return np.dtype(ml_dtypes.bfloat16)
    return np.dtype(name)


def all_patterns(dtype: np.dtype) -> np.ndarray:
    """All 65536 values of a 16-bit float type, in bit-pattern order (NaNs, infinities,
    subnormals, both zeros included)."""
    return np.arange(65536, dtype=np.uint16).view(dtype)


def bits(a: np.ndarray) -> np.ndarray:
    return np.asarray(a).view(np.uint16)


def assert_same_bits(a: np.ndarray, b: np.ndarray) -> None:
    assert a.dtype == b.dtype and a.shape == b.shape
    np.testing.assert_array_equal(bits(a), bits(b))


def without_bits(mask):
    regenerated = copy.copy(mask)
    regenerated.bits = None
    return regenerated


def expected_kept(x: np.ndarray, keep_prob: float, mode: str, forward: bool = True) -> np.ndarray:
    """What a kept unit becomes, from SPEC §2 alone: the float32 operation rounded once to the
    storage type (NumPy's float32 -> float16 / bfloat16 casts round to nearest even)."""
    x32 = x.astype(np.float32)
    with np.errstate(all="ignore"):
        if mode == "inverted":
            value = x32 * np.float32(1 / keep_prob)
        elif mode == "classic":
            value = x32
        else:
            a, b, _ = alpha_constants(keep_prob, x.dtype)
            value = x32 * np.float32(a) + np.float32(b) if forward else x32 * np.float32(a)
        return value.astype(x.dtype)


def dropped_value(keep_prob: float, mode: str, dtype: np.dtype) -> np.ndarray:
    """What a dropped unit becomes, as a 0-d array of dtype: +0.0, or alpha's constant."""
    if mode == "alpha":
        # alpha_constants gives it in the compute precision (float32 for 16-bit types).
        return np.asarray(alpha_constants(keep_prob, dtype)[2]).astype(dtype)
    return np.zeros((), dtype=dtype)


# ---------------------------------------------------------------------------------------------
# Every bit pattern
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", HALF_DTYPES)
@pytest.mark.parametrize("keep_prob,mode", TRAINING_CASES)
def test_every_bit_pattern_matches_reference(name, keep_prob, mode):
    """All 65536 patterns as x (and as dy): forward and backward (from stored bits and
    regenerated) equal the reference bit for bit, and the masks agree."""
    dtype = half_dtype(name)
    x = all_patterns(dtype)
    y_f, mask_f = fastdrop.dropout(x, keep_prob, mode=mode, seed=2024, store="bits")
    y_r, mask_r = reference.dropout(x, keep_prob, mode=mode, seed=2024, store="bits")
    assert_same_bits(y_f, y_r)
    assert mask_f == mask_r
    np.testing.assert_array_equal(mask_f.to_bool(), reference.mask_to_bool(mask_f))
    keep = mask_f.to_bool()
    assert 0.2 < keep.mean() < 0.8  # both branches are exercised on every kind of value

    dy = all_patterns(dtype)[::-1]  # each dy meets a different x than in the forward
    dx_r = reference.dropout_backward(dy, mask_r)
    for mask in (mask_f, without_bits(mask_f)):
        assert_same_bits(fastdrop.dropout_backward(dy, mask), dx_r)
    dy_in_place = dy.copy()
    fastdrop.dropout_backward(dy_in_place, mask_f, out=dy_in_place)
    assert_same_bits(dy_in_place, dx_r)


@pytest.mark.parametrize("name", HALF_DTYPES)
@pytest.mark.parametrize("keep_prob,mode", TRAINING_CASES)
def test_kept_values_are_float32_results_rounded_once(name, keep_prob, mode):
    """Independently of the reference: kept units are (float32(x) * float32 scale [+ b])
    rounded to the storage type, dropped ones +0.0 (or alpha's constant), for every pattern.
    The check is sharp: with the scale rounded to the storage type instead of float32, some
    patterns would get other bits."""
    dtype = half_dtype(name)
    x = all_patterns(dtype)
    y, mask = fastdrop.dropout(x, keep_prob, mode=mode, seed=99)
    keep = mask.to_bool()
    expected = np.where(keep, expected_kept(x, keep_prob, mode), dropped_value(keep_prob, mode,
                                                                               dtype))
    finite = np.isfinite(x.astype(np.float32))
    assert_same_bits(y[finite], expected[finite])
    # NaN: a kept NaN stays NaN, a dropped one is +0.0 bits (or alpha's constant), not NaN.
    nan = np.isnan(x.astype(np.float32))
    assert nan.sum() > 100
    assert np.all(np.isnan(y[nan & keep].astype(np.float32)))
    np.testing.assert_array_equal(bits(y[nan & ~keep]), bits(dropped_value(keep_prob, mode,
                                                                           dtype)))
    if mode != "alpha":
        assert np.all(bits(y[~keep]) == 0x0000)
    # Infinities: kept ones stay infinite with their sign (every scale here is positive).
    inf = np.isinf(x.astype(np.float32))
    np.testing.assert_array_equal(y[inf & keep].astype(np.float32), x[inf & keep].astype(
        np.float32))

    # The formula is not vacuous: a scale rounded to the storage type changes some results.
    if mode == "inverted":
        with np.errstate(all="ignore"):
            coarse_scale = np.float32(np.asarray(np.float32(1 / keep_prob)).astype(dtype))
            in_storage_type = (x.astype(np.float32) * coarse_scale).astype(dtype)
        sel = keep & finite
        assert np.any(bits(in_storage_type[sel]) != bits(expected[sel]))


@pytest.mark.parametrize("name", HALF_DTYPES)
@pytest.mark.parametrize("keep_prob,mode", TRAINING_CASES)
def test_backward_is_float32_result_rounded_once(name, keep_prob, mode):
    """dx = m * dy * scale (alpha: m * dy * a) in float32 rounded once, +0.0 where dropped (also
    for alpha: the gradient of a constant is zero)."""
    dtype = half_dtype(name)
    dy = all_patterns(dtype)
    _, mask = fastdrop.dropout(np.ones(65536, dtype), keep_prob, mode=mode, seed=5)
    keep = mask.to_bool()
    dx = fastdrop.dropout_backward(dy, mask)
    expected = np.where(keep, expected_kept(dy, keep_prob, mode, forward=False),
                        np.zeros((), dtype))
    finite = np.isfinite(dy.astype(np.float32))
    assert_same_bits(dx[finite], expected[finite])
    assert np.all(bits(dx[~keep]) == 0)
    assert np.all(np.isnan(dx[keep & ~finite & np.isnan(dy.astype(np.float32))].astype(
        np.float32)))


@pytest.mark.parametrize("name", HALF_DTYPES)
@pytest.mark.parametrize("keep_prob", [0.7, 0.3, 0.9])
def test_classic_evaluation_is_keep_prob_times_x_rounded_once(name, keep_prob):
    """Classic evaluation (forward and backward) is float32(q) * float32(x) rounded once, for
    every pattern; the stream does not move."""
    dtype = half_dtype(name)
    x = all_patterns(dtype)
    with np.errstate(all="ignore"):
        expected = (x.astype(np.float32) * np.float32(keep_prob)).astype(dtype)
    stream = fastdrop.Stream(3)
    y, mask = fastdrop.dropout(x, keep_prob, mode="classic", training=False, stream=stream)
    assert y is not x and stream.position == 0
    finite = ~np.isnan(x.astype(np.float32))
    assert_same_bits(y[finite], expected[finite])
    assert np.all(np.isnan(y[~finite].astype(np.float32)))
    assert_same_bits(y, reference.dropout(x, keep_prob, mode="classic", training=False)[0])
    dx = fastdrop.dropout_backward(x, mask)
    assert_same_bits(dx[finite], expected[finite])
    # With q rounded to the storage type first, some products would differ.
    with np.errstate(all="ignore"):
        coarse_q = np.float32(np.asarray(np.float32(keep_prob)).astype(dtype))
        coarse = (x.astype(np.float32) * coarse_q).astype(dtype)
    assert np.any(bits(coarse[finite]) != bits(expected[finite]))


@pytest.mark.parametrize("name", HALF_DTYPES)
def test_kernel_constants_are_float32(name):
    """The kernel's scale and alpha constants for 16-bit types are the float32 ones."""
    dtype = half_dtype(name)
    for q in (0.7, 0.3, 0.9):
        assert scale_for(q, "inverted", dtype) == scale_for(q, "inverted", np.dtype(np.float32))
        assert np.float32(scale_for(q, "inverted", dtype)) == np.float32(1 / q)
        for forward in (True, False):
            assert kernel_op(q, "alpha", dtype, forward) == kernel_op(q, "alpha",
                                                                      np.dtype(np.float32),
                                                                      forward)


# ---------------------------------------------------------------------------------------------
# The mask does not depend on the dtype
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("shape,shared_axes", [((37, 211), None), ((37, 211), 0),
                                               ((6, 5, 40, 9), (2, 3)), ((300, 7), (1,)),
                                               ((8, 1, 33), (-1,))])
@pytest.mark.parametrize("mode", ["inverted", "alpha"])
def test_mask_is_the_same_for_every_dtype(shape, shared_axes, mode):
    """float16, bfloat16, float32 and float64 with the same seed or stream position and shape:
    the same decisions (to_bool, stored bits, and where y differs from the dropped value)."""
    names = ["float16", "float32", "float64"]
    try:
        import ml_dtypes  # noqa: F401
        names.append("bfloat16")
    except ImportError:
        pass
    positive = np.random.default_rng(1).uniform(1, 4, shape)
    results = {}
    for name in names:
        dtype = half_dtype(name)
        x = positive.astype(dtype)
        stream = fastdrop.Stream(77, 3)
        stream.reserve(2**32 - 5)
        y, mask = fastdrop.dropout(x, 0.55, mode=mode, shared_axes=shared_axes, stream=stream,
                                   store="bits")
        y_seed, mask_seed = fastdrop.dropout(x, 0.55, mode=mode, shared_axes=shared_axes,
                                             seed=77)
        dropped = dropped_value(0.55, mode, dtype)
        applied = np.asarray(y != dropped)
        results[name] = (mask.to_bool(), mask.bits, applied, mask_seed.to_bool(),
                         np.asarray(y_seed != dropped))
    first = results[names[0]]
    keep = np.broadcast_to(first[0], shape)
    np.testing.assert_array_equal(first[2], keep)
    if first[0].size >= 20:
        assert 0 < first[0].sum() < first[0].size  # both outcomes occur
    for name in names[1:]:
        for a, b in zip(first, results[name]):
            np.testing.assert_array_equal(a, b, err_msg=name)


# ---------------------------------------------------------------------------------------------
# Layouts, threads, in place
# ---------------------------------------------------------------------------------------------

def half_values(shape, dtype, seed):
    """Normal values spanning many binades, with NaN, infinities, zeros and subnormals."""
    rng = np.random.default_rng(seed)
    vals = rng.standard_normal(shape) * 2.0 ** rng.integers(-20, 12, shape)
    specials = np.array([np.nan, np.inf, -np.inf, 0.0, -0.0, 1e-7, -3e-6, 6e4])
    where = rng.random(shape) < 0.05
    return np.where(where, rng.choice(specials, shape), vals).astype(dtype)


def layout_view(layout: str, dtype, seed: int):
    """A view of about 2.4e5 elements in the given layout, filled with half_values, and the
    whole buffer it lives in (to check nothing outside the view is written)."""
    if layout == "c":
        buffer = half_values((480, 500), dtype, seed)
        return buffer, buffer
    if layout == "transposed":
        buffer = half_values((500, 480), dtype, seed)
        return buffer, buffer.T
    if layout == "negative":
        buffer = half_values((482, 1001), dtype, seed)
        return buffer, buffer[480:0:-1, ::-2]
    if layout == "sliced_transposed":
        buffer = half_values((3, 1000, 483), dtype, seed)
        return buffer, buffer[1, ::2, 1:].T[::-1]
    raise AssertionError(layout)


LAYOUTS = ["c", "transposed", "negative", "sliced_transposed"]


@pytest.mark.parametrize("name", HALF_DTYPES)
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("threads", [1, 2, 3, 4])
def test_views_in_place_and_out_of_place_on_threads(name, layout, threads, restore_threads):
    """Strided, transposed and negative-stride views of 2.4e5 elements, store="bits", 1 to 4
    threads: in place, out of place and into a strided out=, fastdrop equals the reference bit
    for bit, forward and backward, and writes nothing outside the view."""
    dtype = half_dtype(name)
    fastdrop.set_num_threads(threads)
    mode = ("inverted", "alpha", "classic", "inverted")[threads - 1]
    q = (0.8, 0.6, 0.3, 0.95)[threads - 1]
    buffer, x = layout_view(layout, dtype, seed=threads)
    assert x.size >= 2 * 10**5
    x_before = x.copy()
    kwargs = dict(mode=mode, seed=123 + threads, store="bits")
    y_r, mask_r = reference.dropout(x_before, q, **kwargs)

    # Out of place: x is not modified.
    y, mask = fastdrop.dropout(x, q, **kwargs)
    assert_same_bits(y, y_r)
    assert mask == mask_r
    assert_same_bits(x, x_before)

    # Into an out= with its own strides, inside a larger buffer.
    out_buffer = np.full((x.shape[0] + 2, 2 * x.shape[1] + 1), 7, dtype=dtype)
    out = out_buffer[-2:0:-1, 1::2]
    y, mask = fastdrop.dropout(x, q, out=out, **kwargs)
    assert y is out
    assert_same_bits(out, y_r)
    outside = np.ones(out_buffer.shape, bool)
    outside[-2:0:-1, 1::2] = False
    assert np.all(bits(out_buffer[outside]) == bits(np.asarray(7, dtype)))

    # In place.
    buffer_before = buffer.copy()
    y, mask = fastdrop.dropout(x, q, out=x, **kwargs)
    assert y is x
    assert_same_bits(x, y_r)
    assert mask == mask_r
    untouched = np.ones(buffer.shape, bool)
    if layout == "negative":
        untouched[480:0:-1, ::-2] = False
    elif layout == "sliced_transposed":
        untouched[1, ::2, 1:] = False
    else:
        untouched[...] = False
    assert_same_bits(buffer[untouched], buffer_before[untouched])

    # Backward, from stored bits and regenerated, in place on a strided dy.
    dy = layout_view(layout, dtype, seed=100 + threads)[1]
    dx_r = reference.dropout_backward(dy, mask_r)
    for m in (mask, without_bits(mask)):
        assert_same_bits(fastdrop.dropout_backward(dy, m), dx_r)
    fastdrop.dropout_backward(dy, mask, out=dy)
    assert_same_bits(dy, dx_r)


# ---------------------------------------------------------------------------------------------
# Byte order (issue 4 item 5): refused, naming the argument, nothing written
# ---------------------------------------------------------------------------------------------

def swapped(a: np.ndarray) -> np.ndarray:
    """The same values stored in the non-native byte order."""
    return a.astype(a.dtype.newbyteorder("S"))


SWAPPABLE = ["float16", "bfloat16", "float32", "float64"]


def assert_refused_nothing_written(exc_types, name, call, *arrays, stream=None):
    """call() raises one of exc_types naming `name`; arrays and streams are as they were."""
    before = [a.tobytes() for a in arrays]
    streams = [fastdrop.default_stream()] + ([stream] if stream is not None else [])
    positions = [(s.seed, s.subsequence, s.position) for s in streams]
    with pytest.raises(exc_types) as info:
        call()
    assert re.search(rf"\b{name}\b", str(info.value)), str(info.value)
    assert [a.tobytes() for a in arrays] == before
    assert [(s.seed, s.subsequence, s.position) for s in streams] == positions
    return info.value


@pytest.mark.parametrize("name", SWAPPABLE)
def test_byte_swapped_x_and_dy_refused(name):
    """A byte-swapped x or dy raises ValueError naming it and its byte order; x, out, dy and
    the streams are unchanged (a kernel reading swapped bytes would be silently wrong)."""
    dtype = half_dtype(name)
    native = np.linspace(-2, 2, 24).reshape(4, 6).astype(dtype)
    x = swapped(native)
    assert not x.dtype.isnative
    np.testing.assert_array_equal(x.astype(np.float64), native.astype(np.float64))
    out = np.zeros_like(native)
    stream = fastdrop.Stream(5)
    error = assert_refused_nothing_written(
        ValueError, "x", lambda: fastdrop.dropout(x, 0.5, stream=stream, out=out), x, out,
        stream=stream)
    assert "byte order" in str(error)
    assert_refused_nothing_written(ValueError, "x", lambda: fastdrop.dropout(x, 0.5), x)
    assert_refused_nothing_written(ValueError, "x",
                                   lambda: reference.dropout(x, 0.5, stream=stream), x,
                                   stream=stream)
    _, mask = fastdrop.dropout(native, 0.5, seed=1)
    dy = swapped(native)
    error = assert_refused_nothing_written(
        ValueError, "dy", lambda: fastdrop.dropout_backward(dy, mask, out=out), dy, out)
    assert "byte order" in str(error)
    assert_refused_nothing_written(ValueError, "dy",
                                   lambda: fastdrop.dropout_backward(dy, mask, out=dy), dy)


@pytest.mark.parametrize("name", SWAPPABLE)
def test_byte_swapped_out_refused(name):
    """A byte-swapped out= (for a native x or dy) is refused naming out; nothing is written to
    it and the stream does not move."""
    dtype = half_dtype(name)
    x = np.linspace(-2, 2, 24).reshape(4, 6).astype(dtype)
    out = swapped(np.full_like(x, 3))
    stream = fastdrop.Stream(5)
    assert_refused_nothing_written((TypeError, ValueError), "out",
                                   lambda: fastdrop.dropout(x, 0.5, stream=stream, out=out),
                                   x, out, stream=stream)
    _, mask = fastdrop.dropout(x, 0.5, seed=1)
    assert_refused_nothing_written((TypeError, ValueError), "out",
                                   lambda: fastdrop.dropout_backward(x, mask, out=out), x, out)


def test_byte_swapped_out_refused_like_x():
    """A byte-swapped out= gets the same kind of error as a byte-swapped x: ValueError that
    names out and says the byte order is the problem."""
    x = np.ones(8, np.float16)
    out = swapped(np.zeros(8, np.float16))
    with pytest.raises(ValueError, match=r"\bout\b.*byte order"):
        fastdrop.dropout(x, 0.5, seed=1, out=out)
