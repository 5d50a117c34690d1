"""Guard zones, once per SIMD path (issue 7 item 1).

Every array a kernel touches (x, out, dy, the packed bits written by forward and read by
backward) is placed inside a larger buffer of random bytes; after every kernel call every byte
of every buffer that is not an element of the call's output is compared with its value before.
The cases reach the edges where an out-of-bounds access would hide: sizes 0 to 40 and around
multiples of every vector width (tails shorter than a vector), odd and negative strides,
transposed 2-D arrays, shared axes (broadcast decisions), in place, forward with stored bits,
backward from the bits and regenerated, every dtype, and a call large enough for the kernel's
OpenMP threads.  The results are also compared bit for bit with fastdrop.reference.
"""
from __future__ import annotations

import zlib

import numpy as np
import pytest

import fastdrop
from fastdrop import _core, reference
from fastdrop._core import STORAGE_TYPES
from fastdrop._core import packed_nbytes, threshold_for
from fastdrop._stream import kernel_op

pytestmark = pytest.mark.usefixtures("every_simd_path")

GUARD = 64  # bytes of random guard on each side of every array

SIZES = list(range(0, 41)) + [63, 64, 65, 127, 128, 129, 255, 256, 257, 1023, 1025, 4099]


class Guarded:
    """An array of `shape` and element `strides` (in items) inside a guard buffer of random
    bytes.  `changed_outside_array()` tells whether any byte that is not one of the array's
    elements changed since construction (or since `rearm()`)."""

    def __init__(self, rng, dtype, shape, strides, values=None):
        dtype = np.dtype(dtype)
        item = dtype.itemsize
        byte_strides = tuple(s * item for s in strides)
        empty = not all(shape)
        low = 0 if empty else sum((n - 1) * s for n, s in zip(shape, byte_strides) if s < 0)
        high = 0 if empty else sum((n - 1) * s for n, s in zip(shape, byte_strides) if s > 0)
        span = 0 if empty else high - low + item
        self.nbytes = 2 * GUARD + span
        self.buffer = np.frombuffer(bytearray(rng.bytes(self.nbytes) + b"\0" * 64), np.uint8)
        # Align the base like NumPy's allocator would (to 64 bytes), the array at GUARD.
        shift = (-self.buffer.ctypes.data) % 64
        self.buffer = self.buffer[shift:shift + self.nbytes]
        offset = GUARD - low
        self.array = np.ndarray(shape, dtype, buffer=self.buffer, offset=offset,
                                strides=byte_strides)
        if values is not None:
            self.array[...] = values
        allowed = np.zeros(self.nbytes, dtype=np.uint8)
        np.ndarray(shape + (item,), np.uint8, buffer=allowed, offset=offset,
                   strides=byte_strides + (1,))[...] = 1
        self.outside = allowed == 0
        self.rearm()

    def rearm(self):
        self.before = self.buffer.copy()

    def changed_outside_array(self) -> bool:
        return not np.array_equal(self.buffer[self.outside], self.before[self.outside])

    def changed_at_all(self) -> bool:
        return not np.array_equal(self.buffer, self.before)


def _layouts(n):
    """(shape, element strides, shared_axes) of several layouts of about n elements."""
    yield (n,), (1,), ()
    yield (n,), (3,), ()
    yield (n,), (-2,), ()
    rows = max(1, n // 7)
    cols = n // rows if n else 0
    yield (rows, cols), (1, rows), ()          # transposed (Fortran order)
    yield (rows, cols), (cols + 3, 1), (0,)    # padded rows, decision shared down the columns
    yield (rows, cols), (-(2 * cols + 1), 2), (1,)
    yield (2, rows, cols), (rows * cols, cols, 1), (0, 2)


def _other_strides(shape, strides):
    """A second layout for out: the same for 1-D, C order with the first axis reversed else."""
    if len(shape) == 1:
        return strides
    c_order = [1]
    for n in shape[:0:-1]:
        c_order.insert(0, c_order[0] * n)
    return (-c_order[0],) + tuple(c_order[1:])


def _same_bits(a, b):
    return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()


def _values(rng, dtype, shape):
    return (rng.standard_normal(shape) * 3).astype(dtype)


@pytest.mark.parametrize("dtype", list(STORAGE_TYPES), ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("mode", ["inverted", "alpha"])
def test_kernels_stay_inside_their_arrays(dtype, mode):
    rng = np.random.default_rng(zlib.crc32(f"{np.dtype(dtype).name} {mode}".encode()))
    index = STORAGE_TYPES[np.dtype(dtype)]
    keep_prob = 0.6
    threshold = threshold_for(keep_prob)
    forward_op = kernel_op(keep_prob, mode, np.dtype(dtype), True)
    backward_op = kernel_op(keep_prob, mode, np.dtype(dtype), False)
    for n in SIZES:
        for shape, strides, axes in _layouts(n):
            values = _values(rng, dtype, shape)
            seed, start = int(rng.integers(2**64, dtype=np.uint64)), int(rng.integers(2**40))
            mask_size = int(np.prod([1 if k in axes else s for k, s in enumerate(shape)]))
            nbits = packed_nbytes(mask_size)
            x = Guarded(rng, dtype, shape, strides, values)
            out = Guarded(rng, dtype, shape, _other_strides(shape, strides))
            bits = Guarded(rng, np.uint8, (nbits,), (1,))
            where = f"n={n} shape={shape} strides={strides} axes={axes}"

            # Forward, storing the bits.
            _core.apply(True, x.array, out.array, axes, seed, 0, start, threshold, False,
                        forward_op, index, bits.array)
            assert not x.changed_at_all(), f"forward wrote into its input ({where})"
            assert not out.changed_outside_array(), f"forward wrote outside out ({where})"
            assert not bits.changed_outside_array(), f"forward wrote outside bits ({where})"
            expected = reference.decisions(seed, 0, start, mask_size, keep_prob)
            assert bits.array.tobytes() == np.packbits(expected, bitorder="little").tobytes(), \
                where

            # Backward from the stored bits, then regenerated: the same result.
            bits.rearm()
            dy = Guarded(rng, dtype, shape, strides, values)
            dx = Guarded(rng, dtype, shape, strides)
            _core.apply(False, dy.array, dx.array, axes, seed, 0, start, threshold, False,
                        backward_op, index, bits.array)
            assert not dy.changed_at_all(), f"backward wrote into dy ({where})"
            assert not bits.changed_at_all(), f"backward wrote into the bits ({where})"
            assert not dx.changed_outside_array(), f"backward wrote outside out ({where})"
            from_bits = dx.array.copy()
            dx.rearm()
            _core.apply(False, dy.array, dx.array, axes, seed, 0, start, threshold, False,
                        backward_op, index, None)
            assert not dx.changed_outside_array(), f"regenerated backward overran ({where})"
            assert _same_bits(dx.array, from_bits), where

            # In place.
            x.rearm()
            _core.apply(True, x.array, x.array, axes, seed, 0, start, threshold, False,
                        forward_op, index, None)
            assert not x.changed_outside_array(), f"in-place forward overran ({where})"
            assert _same_bits(x.array, out.array), where


@pytest.mark.parametrize("dtype", list(STORAGE_TYPES), ids=lambda d: np.dtype(d).name)
def test_public_api_stays_inside_out_and_matches_reference(dtype):
    """fastdrop.dropout / dropout_backward with out= in a guard buffer, against the reference."""
    rng = np.random.default_rng(7)
    for n in SIZES[::3]:
        for shape, strides, axes in _layouts(n):
            values = _values(rng, dtype, shape)
            x = Guarded(rng, dtype, shape, strides, values)
            out = Guarded(rng, dtype, shape, strides)
            where = f"n={n} shape={shape} strides={strides} axes={axes}"
            y, mask = fastdrop.dropout(x.array, 0.3, seed=n, shared_axes=axes or None,
                                       out=out.array, store="bits", mode="classic")
            assert y is out.array
            assert not x.changed_at_all() and not out.changed_outside_array(), where
            y_ref, mask_ref = reference.dropout(values, 0.3, seed=n, shared_axes=axes or None,
                                                store="bits", mode="classic")
            assert _same_bits(out.array, y_ref), where
            assert mask == mask_ref
            dx = Guarded(rng, dtype, shape, strides)
            fastdrop.dropout_backward(x.array, mask, out=dx.array)
            assert not x.changed_at_all() and not dx.changed_outside_array(), where
            assert _same_bits(dx.array, reference.dropout_backward(values, mask_ref)), where


@pytest.mark.parametrize("threads", [1, 2, 3])
def test_threaded_call_stays_inside(threads, restore_threads):
    """A call past the parallel threshold (65536 elements) split across OpenMP threads, with an
    odd stride and a tail, in every dtype."""
    fastdrop.set_num_threads(threads)
    rng = np.random.default_rng(threads)
    for dtype in STORAGE_TYPES:
        shape, strides = (3, 23_459), (-23_459 * 2 - 1, 2)
        values = _values(rng, dtype, shape)
        x = Guarded(rng, dtype, shape, strides, values)
        out = Guarded(rng, dtype, shape, (1, 3))
        y, mask = fastdrop.dropout(x.array, 0.5, seed=5, out=out.array, store="bits")
        assert not x.changed_at_all() and not out.changed_outside_array()
        y_ref, _ = reference.dropout(values, 0.5, seed=5)
        assert _same_bits(out.array, y_ref)
        out.rearm()
        fastdrop.dropout_backward(x.array, mask, out=out.array)
        assert not x.changed_at_all() and not out.changed_outside_array()
