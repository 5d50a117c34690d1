"""Memory safety of the front end and of hand-made masks (issue 13, items 2, 3, 4 and 10).

The C kernels trust the front end: what it passes (dimensions, strides, dtype, the length of the
stored bits) decides where they read and write.  These tests give it arrays that lie through the
attributes a subclass can override, masks initialised twice or with fields past the stream's end,
and check that every call either matches the reference on the array's real contents or is
refused.  Under the AddressSanitizer build (.ci/asan) a read or write outside an array fails the
run even where it would corrupt nothing visible here.
"""
from __future__ import annotations

import pickle
import tracemalloc

import numpy as np
import pytest

import fastdrop
from fastdrop import reference
from fastdrop._core import DropoutMask, blocks_for

N = 4096  # elements: 512 bytes of stored bits


class Liar(np.ndarray):
    """An array whose Python-level attributes describe one element of float64, contiguous: what
    a front end that trusted them would size its buffers and checks by."""

    @property
    def shape(self):
        return (1,)

    @property
    def ndim(self):
        return 1

    @property
    def size(self):
        return 1

    @property
    def dtype(self):
        return np.dtype(np.float64)

    @property
    def strides(self):
        return (8,)

    @property
    def flags(self):
        return np.ones(1).flags


def lying(a: np.ndarray) -> Liar:
    return a.view(Liar)


def data(shape=(N,), dtype=np.float32, seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype(dtype)


# ---------------------------------------------------------------------------------------------
# Item 2: everything the kernels rely on comes from the array itself
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("store", ["seed", "bits"])
def test_forward_sizes_the_mask_by_the_real_shape(store):
    """x's .shape says one element: the mask, its stored bits and the output follow the N real
    elements, and equal the reference's on the plain array."""
    x = data((64, 64))
    y, mask = fastdrop.dropout(lying(x), 0.5, seed=3, store=store)
    expected_y, expected_mask = reference.dropout(x, 0.5, seed=3, store=store)
    assert mask.shape == (64, 64) and mask.mask_shape == (64, 64)
    assert mask == expected_mask
    if store == "bits":
        assert mask.bits.nbytes == N // 8
    np.testing.assert_array_equal(np.asarray(y), expected_y)


def test_forward_in_place_on_a_liar():
    x = data((64, 64))
    expected, _ = reference.dropout(x, 0.5, seed=3)
    liar = lying(x)
    y, _ = fastdrop.dropout(liar, 0.5, seed=3, out=liar, store="bits")
    assert y is liar
    np.testing.assert_array_equal(x, expected)


def test_backward_compares_the_real_shape_with_the_mask():
    """A dy of N elements that claims the one-element shape of a mask is refused: reading N
    decisions from a one-byte mask would overrun it."""
    _, small = fastdrop.dropout(np.ones(1), 0.5, seed=1, store="bits")
    dy = data(dtype=np.float64)
    with pytest.raises(ValueError, match=r"dy has shape \(4096,\)"):
        fastdrop.dropout_backward(lying(dy), small)


def test_backward_of_a_liar_matches_the_reference():
    x = data((32, 128))
    _, mask = fastdrop.dropout(x, 0.3, seed=5, store="bits")
    dy = data((32, 128), seed=1)
    np.testing.assert_array_equal(np.asarray(fastdrop.dropout_backward(lying(dy), mask)),
                                  reference.dropout_backward(dy, mask))


def test_out_dtype_is_the_arrays_own():
    """A float16 out= that claims float64, for a float64 x, is refused: the kernel would write
    8-byte items into 2-byte slots, four times past its end."""
    x = data(dtype=np.float64)
    out = np.zeros(N, dtype=np.float16)
    with pytest.raises(TypeError, match="out must have the dtype of x"):
        fastdrop.dropout(x, 0.5, seed=1, out=lying(out))
    assert not out.any()


def test_bits_setter_reads_the_arrays_own_length():
    """Bits of one byte that claim to be a contiguous uint8 array of the right length (through
    a subclass's .shape, .dtype, .ndim and .flags) are refused."""

    class LyingBits(np.ndarray):
        shape = property(lambda self: (N // 8,))
        dtype = property(lambda self: np.dtype(np.uint8))
        ndim = property(lambda self: 1)
        flags = property(lambda self: np.zeros(1, np.uint8).flags)

    _, mask = fastdrop.dropout(data(), 0.5, seed=1, store="bits")
    before = mask.bits
    for bad in (np.zeros(1, np.uint8).view(LyingBits),
                np.zeros(N // 8, np.float32).view(LyingBits)):
        with pytest.raises(ValueError, match=f"C-contiguous uint8 array of {N // 8} bytes"):
            mask.bits = bad
        assert mask.bits is before
    with pytest.raises(ValueError, match="bits must be"):
        DropoutMask((N,), (), 0.5, "inverted", True, 1, 0, 0,
                    np.zeros(1, np.uint8).view(LyingBits))


def test_more_axes_than_the_kernels_serve():
    """A mask of 65 axes (one more than NumPy's limit and the C core's fixed buffers) is
    refused at construction, with the limit in the message."""
    with pytest.raises(ValueError, match="at most 64 axes"):
        DropoutMask((1,) * 65, (), 0.5, "inverted", True, 1, 0, 0)
    mask = DropoutMask((1,) * 64, (3, 60), 0.5, "inverted", True, 1, 0, 0)
    assert mask.to_bool().shape == (1,) * 64


# ---------------------------------------------------------------------------------------------
# Item 3: a mask is initialised once, and a failed initialisation changes nothing
# ---------------------------------------------------------------------------------------------

def fields(mask):
    return (mask.shape, mask.shared_axes, mask.keep_prob, mask.mode, mask.training, mask.seed,
            mask.subsequence, mask.start, mask.bits)


def test_second_init_is_refused_and_changes_nothing():
    """Re-initialising a one-element mask with a shape of 10**7 elements, valid or not, is
    refused and leaves every field as it was; a backward of that size is then refused."""
    _, mask = fastdrop.dropout(np.ones(5), 0.5, seed=1, store="bits")
    before = fields(mask)
    for start in (0, -1):
        with pytest.raises(TypeError, match="initialised once"):
            mask.__init__((10**7,), (), 0.5, "inverted", True, seed=0, subsequence=0,
                          start=start)
        assert fields(mask) == before
    with pytest.raises(ValueError, match="dy has shape"):
        fastdrop.dropout_backward(np.ones(10**7), mask)


def test_failed_first_init_leaves_the_fields_unset():
    """An initialisation that fails on its last check (start) has assigned nothing: the shape
    is not left describing 10**7 elements; a later valid one succeeds."""
    mask = DropoutMask.__new__(DropoutMask)
    with pytest.raises(ValueError, match="start"):
        mask.__init__((10**7,), (), 0.5, "inverted", True, seed=0, subsequence=0, start=-1)
    assert mask.shape is None and mask.bits is None
    mask.__init__((3,), (), 0.5, "inverted", True, seed=0, subsequence=0, start=0)
    assert mask == fastdrop.dropout(np.ones(3), 0.5, seed=0)[1]


# ---------------------------------------------------------------------------------------------
# Item 4: mask fields the kernels cannot serve
# ---------------------------------------------------------------------------------------------

def test_start_must_leave_room_for_the_masks_blocks():
    """N decisions take blocks_for(N) blocks, which must end by block 2**64 - 1: start up to
    2**64 - blocks_for(N) is served (and matches the reference), one more is refused with the
    valid range."""
    last = 2**64 - blocks_for(N)
    mask = DropoutMask((N,), (), 0.5, "inverted", True, seed=7, subsequence=1, start=last)
    dy = data(seed=2)
    np.testing.assert_array_equal(fastdrop.dropout_backward(dy, mask),
                                  reference.dropout_backward(dy, mask))
    for start in (last + 1, 2**64 - 1, 2**64, 2**64 + 1, -1):
        with pytest.raises(ValueError, match=rf"start must be in \[0, {last}\]"):
            DropoutMask((N,), (), 0.5, "inverted", True, seed=7, subsequence=1, start=start)
    with pytest.raises(TypeError, match="start"):
        DropoutMask((N,), (), 0.5, "inverted", True, seed=7, subsequence=1, start=1.0)


def test_mask_of_an_exhausted_stream_pickles():
    """An empty array drawn from a stream at its end (position 2**64) gives a mask with
    start = 2**64, which is valid (it has no blocks) and survives pickling."""
    stream = fastdrop.Stream(seed=4)
    stream.__setstate__(2**64)
    _, mask = fastdrop.dropout(np.empty((0, 3)), 0.5, stream=stream)
    assert mask.start == 2**64
    clone = pickle.loads(pickle.dumps(mask))
    assert clone == mask
    assert fastdrop.dropout_backward(np.empty((0, 3)), clone).shape == (0, 3)


# ---------------------------------------------------------------------------------------------
# Item 10: keep_prob = 1 with stored bits
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("n", [1, 13, 64, 1001])
def test_keep_all_bits(n):
    """keep_prob = 1 stores one set bit per decision and zero padding, as numpy.packbits does,
    and moves the stream by the call's blocks."""
    stream = fastdrop.Stream(seed=1)
    _, mask = fastdrop.dropout(np.ones(n, np.float32), 1.0, stream=stream, store="bits")
    np.testing.assert_array_equal(mask.bits,
                                  np.packbits(np.ones(n, bool), bitorder="little"))
    assert stream.position == blocks_for(n)


def test_keep_all_bits_allocate_only_the_bits():
    """keep_prob = 1 with store="bits" on 8 * 10**6 elements allocates the 10**6 bytes of bits
    and nothing else of the array's size (the input is returned as it is), where building them
    through a boolean array took nine times that."""
    x = np.ones(8 * 10**6, np.float32)
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        before = tracemalloc.get_traced_memory()[0]
        y, mask = fastdrop.dropout(x, 1.0, seed=1, store="bits")
        peak = tracemalloc.get_traced_memory()[1] - before
    finally:
        tracemalloc.stop()
    assert y is x and mask.bits.nbytes == 10**6
    assert peak < 10**6 + 64 * 1024, f"peak {peak} bytes"
