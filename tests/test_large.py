"""Indices past 2**31 and 2**32, and stream positions near 2**64 (issue 4 item 4).

Element indices, byte offsets, decision indices and bit-mask byte indices must stay right where
32-bit arithmetic would wrap; stream block counters must carry from one 32-bit counter word into
the next; a call that would run past the end of its stream must be refused.

What is feasible, and what each test reaches:

- A real float16 array of 2**31 + 2**20 + 3 elements (4 GiB + 2 MiB, plus a 256 MiB bit mask):
  element and decision indices past 2**31 (signed 32-bit), byte offsets past 2**32, bit-mask
  bytes past 2**28.  Runs everywhere (skipped, saying why, only on a machine with less than 6 GiB
  of free memory).  About 15 s, most of it the kernel's first touch of 4 GiB of pages.
- A real float16 array of 2**32 + 2**20 + 3 elements (8 GiB + 512 MiB of bits): decision indices
  past 2**32 (unsigned 32-bit) in one call.  No smaller input can reach them: the decisions of
  a call are the elements of its mask shape, which has at most x.size elements, and every
  element of out= must be real memory.  Skipped, with the reason, where less than 11 GiB is
  free; about 30 s.
- Views with byte strides and offsets past 2**32 into the 4 GiB buffer, in float16, bfloat16 and
  float32 (cheap: a few thousand elements each).
- Stream positions near the counter carry points (2**32, 2**63, 2**64 blocks) on small arrays of
  every dtype, against an independent randomgen oracle and the reference.  Refinement draws
  whose counters pass 2**64 are forced in test_decisions.py (REFINEMENT_CASES, start >= 2**62)
  and test_reference_equality.py (test_refinement_draw_counter_carries); here they are forced
  for the 16-bit types and alpha mode only.

Expected values on slices of the big arrays come from fastdrop.reference.decisions for the
slice's own blocks: decision j of a call at block `start` reads byte j % 16 of block
start + j // 16, so slices start at multiples of 16.
"""
from __future__ import annotations

import copy
import gc
import math
import mmap
import re
import time
from types import SimpleNamespace

import numpy as np
import pytest
import randomgen

import fastdrop
from fastdrop import _core, reference
from fastdrop._core import threshold_for
from fastdrop._stream import alpha_constants

GiB = 2**30
SEED = 7
KEEP_PROB = 0.8
PERIOD = 8191  # the fill pattern's period: 2**31 and 2**32 are not multiples of it
SLICE = 2**13


# ---------------------------------------------------------------------------------------------
# Big arrays, allocated and filled cheaply
# ---------------------------------------------------------------------------------------------

def available_memory() -> int:
    """MemAvailable in bytes (0 where /proc/meminfo is missing)."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


class BigArray:
    """A float16 array of n elements in anonymous memory, backed by huge pages where the kernel
    allows (first-touching 4 GiB of 4 KiB pages costs several seconds on some machines)."""

    def __init__(self, n: int):
        self.map = None
        if not hasattr(mmap, "MAP_ANONYMOUS"):  # not a POSIX system: plain NumPy memory
            self.array = np.empty(n, dtype=np.float16)
            return
        self.map = mmap.mmap(-1, 2 * n, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
        if hasattr(self.map, "madvise") and hasattr(mmap, "MADV_HUGEPAGE"):
            try:
                self.map.madvise(mmap.MADV_HUGEPAGE)
            except OSError:
                pass
        self.array = np.frombuffer(self.map, dtype=np.float16, count=n)
        assert self.array.flags.writeable and self.array.flags.aligned

    def close(self):
        self.array = None
        gc.collect()
        try:
            if self.map is not None:
                self.map.close()
        except BufferError:  # a view is still alive somewhere: the collector frees it later
            pass


def pattern_bits(start: int, length: int) -> np.ndarray:
    """The fill pattern's uint16 bits for elements start .. start + length - 1: 0x3C00 + i % 8191,
    float16 values from 1.0 to 255.75, all finite and non-zero."""
    return (0x3C00 + np.arange(start, start + length, dtype=np.int64) % PERIOD).astype(np.uint16)


def fill_pattern(x: np.ndarray) -> None:
    """x[i] = pattern(i), by doubling copies (memcpy speed)."""
    u = x.view(np.uint16)
    filled = min(u.size, PERIOD * 1024)
    u[:filled] = pattern_bits(0, filled)
    period_multiple = filled - filled % PERIOD
    while filled < u.size:
        count = min(period_multiple, u.size - filled)
        u[filled:filled + count] = u[:count]
        filled += count
        period_multiple = filled - filled % PERIOD


def expected_slice(j0: int, length: int, start_block: int = 0) -> np.ndarray:
    """uint16 bits of y (or dx) for elements j0 .. j0 + length - 1 of a pattern-filled array:
    float32(x) * float32(1 / 0.8) rounded to float16 where the reference keeps, +0.0 elsewhere."""
    assert j0 % 16 == 0
    keep = reference.decisions(SEED, 0, start_block + j0 // 16, length, KEEP_PROB)
    x = pattern_bits(j0, length).view(np.float16)
    kept = (x.astype(np.float32) * np.float32(1 / KEEP_PROB)).astype(np.float16)
    return np.where(keep, kept, np.float16(0)).view(np.uint16)


def slice_starts(n: int):
    """16-aligned slice starts (a block's decisions): the beginning, around 2**31 and 2**32
    (where inside the array), the middle of the part past them, and the end (a partial last
    byte of bits)."""
    starts = [0, 2**31 - SLICE // 2, 2**31 + 2**19, 2**32 - SLICE // 2, 2**32 + 2**19,
              (n - SLICE) // 16 * 16]
    return sorted({s for s in starts if 0 <= s < n})


def check_slices(y: np.ndarray, n: int):
    u = y.view(np.uint16)
    for j0 in slice_starts(n):
        length = min(SLICE, n - j0)
        expected = expected_slice(j0, length)
        got = u[j0:j0 + length]
        mismatches = np.flatnonzero(got != expected)
        assert mismatches.size == 0, (
            f"slice at {j0}: {mismatches.size} differences, first at index "
            f"{j0 + mismatches[0]}")
        assert 0 < np.count_nonzero(got) < length


def check_bits_everywhere(y: np.ndarray, bits: np.ndarray, chunk: int = 2**27):
    """The applied mask (y != 0) equals the stored bits over the whole array."""
    u = y.view(np.uint16)
    for i in range(0, u.size, chunk):
        packed = np.packbits(u[i:i + chunk] != 0, bitorder="little")
        stored = bits[i // 8:i // 8 + packed.size]
        if not np.array_equal(packed, stored):
            byte = i // 8 + int(np.flatnonzero(packed != stored)[0])
            raise AssertionError(f"stored bits differ from the applied mask at byte {byte}")


def popcount(bits: np.ndarray) -> int:
    if hasattr(np, "bitwise_count"):
        return int(np.bitwise_count(bits).sum(dtype=np.int64))
    table = np.array([bin(i).count("1") for i in range(256)], dtype=np.int64)
    return int(table[bits].sum())


def as_uint(a: np.ndarray) -> np.ndarray:
    """The array's bits as unsigned integers of its item size (any strides)."""
    return a.view(np.dtype(f"u{a.dtype.itemsize}"))


def without_bits(mask):
    regenerated = copy.copy(mask)
    regenerated.bits = None
    return regenerated


# ---------------------------------------------------------------------------------------------
# A real float16 array just past 2**31 elements
# ---------------------------------------------------------------------------------------------

N31 = 2**31 + 2**20 + 3


@pytest.fixture(scope="class")
def past_2_31():
    """The 4 GiB array, pattern-filled, after the in-place forward
    dropout(x, 0.8, out=x, seed=7, store="bits"); what the forward checks need is recorded here
    (slices and the whole-array bit comparison) before later tests reuse the buffer."""
    if available_memory() and available_memory() < 6 * GiB:
        pytest.skip(f"needs about 4.6 GiB of free memory, {available_memory() / GiB:.1f} GiB "
                    "available")
    timings = {}
    t0 = time.perf_counter()
    big = BigArray(N31)
    x = big.array
    fill_pattern(x)
    timings["allocate and fill"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    y, mask = fastdrop.dropout(x, KEEP_PROB, out=x, seed=SEED, store="bits")
    timings["forward"] = time.perf_counter() - t0
    assert y is x
    forward = {}
    u = x.view(np.uint16)
    for j0 in slice_starts(N31):
        forward[j0] = u[j0:j0 + SLICE].copy()
    try:
        check_bits_everywhere(x, mask.bits)
        forward["bits_everywhere"] = None
    except AssertionError as error:
        forward["bits_everywhere"] = str(error)
    forward["count"] = int(np.count_nonzero(u))
    del x, y, u
    state = SimpleNamespace(big=big, mask=mask, forward=forward, timings=timings)
    yield state
    state.big.close()


class TestFloat16Past2To31:
    """Issue 4: "a real array just over 2^31 elements (float16, about 4 GiB) in place, compared
    with the reference on slices"."""

    def test_forward_in_place_matches_reference_on_slices(self, past_2_31):
        """Kept values and zeros at the start, around 2**31, past it, and at the end equal the
        reference's decisions applied to the pattern (so neither a wrapped decision index nor a
        wrapped element offset can hide: the pattern's period does not divide 2**31)."""
        mask = past_2_31.mask
        assert (mask.seed, mask.subsequence, mask.start, mask.size) == (SEED, 0, 0, N31)
        for j0 in slice_starts(N31):
            length = min(SLICE, N31 - j0)
            np.testing.assert_array_equal(past_2_31.forward[j0][:length],
                                          expected_slice(j0, length), err_msg=f"slice at {j0}")

    def test_stored_bits_are_packed_reference_decisions_on_slices(self, past_2_31):
        bits = past_2_31.mask.bits
        assert bits.size == -(-N31 // 8)
        for j0 in slice_starts(N31):
            length = min(SLICE, N31 - j0)
            keep = reference.decisions(SEED, 0, j0 // 16, length, KEEP_PROB)
            np.testing.assert_array_equal(bits[j0 // 8:j0 // 8 + -(-length // 8)],
                                          np.packbits(keep, bitorder="little"),
                                          err_msg=f"bits at {j0}")
        # The last byte holds 3 decisions; its unused high bits are zero.
        assert bits[-1] >> 3 == 0

    def test_applied_mask_equals_stored_bits_everywhere(self, past_2_31):
        assert past_2_31.forward["bits_everywhere"] is None, past_2_31.forward["bits_everywhere"]
        kept = popcount(past_2_31.mask.bits)
        assert kept == past_2_31.forward["count"]
        assert abs(kept - KEEP_PROB * N31) < 5 * math.sqrt(N31 * KEEP_PROB * (1 - KEEP_PROB))

    @pytest.mark.parametrize("source", ["bits", "regenerated"])
    def test_backward_in_place(self, past_2_31, source):
        """dropout_backward(dy, mask, out=dy) on the pattern, from the stored bits and from
        regenerated decisions: the same values as the forward on the slices, and the applied
        mask equals the stored bits everywhere."""
        x = past_2_31.big.array
        fill_pattern(x)
        mask = past_2_31.mask if source == "bits" else without_bits(past_2_31.mask)
        t0 = time.perf_counter()
        dx = fastdrop.dropout_backward(x, mask, out=x)
        past_2_31.timings[f"backward ({source})"] = time.perf_counter() - t0
        assert dx is x
        check_slices(x, N31)
        check_bits_everywhere(x, past_2_31.mask.bits)

    @pytest.mark.parametrize("view", ["step", "3d", "3d_reversed", "transposed", "float32",
                                      "bfloat16"])
    def test_views_with_offsets_and_strides_past_2_32_bytes(self, past_2_31, view):
        """Views into the 4 GiB buffer whose byte offsets and strides pass 2**32 (float16, and
        the same memory seen as float32 and bfloat16): in place and out of place they equal the
        reference on a copy (the mask depends only on the shape), forward and backward."""
        x = past_2_31.big.array  # whatever earlier tests left there: the reference gets a copy
        el = 2**31 + 7  # an element step whose byte stride passes 2**32
        if view == "step":
            v = x[5::el]
        elif view in ("3d", "3d_reversed"):
            v = np.lib.stride_tricks.as_strided(x, shape=(2, 3, 1001),
                                                strides=(2 * el, 2 * (2**18 + 1), 2))
            v = v[::-1, ::-1, ::-1] if view == "3d_reversed" else v
        elif view == "transposed":
            v = x[2**31 + 4096:2**31 + 12288].reshape(64, 128).T[::-1]
        elif view == "float32":
            v = x[:N31 - 1].view(np.float32)[2**30 - 3000:2**30 + 3000][::-3]
        else:
            ml_dtypes = pytest.importorskip("ml_dtypes", reason="bfloat16 needs ml_dtypes")
            v = x.view(ml_dtypes.bfloat16)[2**31 + 3:2**31 - 6000:-2]
        assert np.shares_memory(v, x)
        offsets = [v.__array_interface__["data"][0] - x.__array_interface__["data"][0]]
        assert max(offsets) >= 2**32 or max(abs(s) for s in v.strides) >= 2**32
        before = v.copy()
        for mode in ("inverted", "alpha"):
            kwargs = dict(mode=mode, seed=2**40 + 1, store="bits")
            y_r, mask_r = reference.dropout(before, 0.6, **kwargs)
            y, mask = fastdrop.dropout(v, 0.6, **kwargs)
            np.testing.assert_array_equal(as_uint(y), as_uint(y_r))
            assert mask == mask_r
            np.testing.assert_array_equal(as_uint(v), as_uint(before))
            dx_r = reference.dropout_backward(before, mask_r)
            np.testing.assert_array_equal(as_uint(fastdrop.dropout_backward(v, without_bits(mask))),
                                          as_uint(dx_r))
        fastdrop.dropout(v, 0.6, out=v, mode="alpha", seed=2**40 + 1)
        np.testing.assert_array_equal(as_uint(v), as_uint(y_r))

    def test_report_timings(self, past_2_31, record_property):
        """Records how long the big calls took (shown with -rP / in the junit XML); the forward
        must not be pathologically slow."""
        for name, seconds in past_2_31.timings.items():
            record_property(name, round(seconds, 2))
        print({k: round(v, 2) for k, v in past_2_31.timings.items()})
        assert past_2_31.timings["forward"] < 120


# ---------------------------------------------------------------------------------------------
# Decision indices past 2**32 in one call
# ---------------------------------------------------------------------------------------------

N32 = 2**32 + 2**20 + 3


@pytest.mark.skipif(available_memory() < 11 * GiB,
                    reason=f"needs about 8.6 GiB of free memory for 2**32 + 2**20 + 3 float16 "
                           f"elements, {available_memory() / GiB:.1f} GiB available")
def test_float16_array_past_2_32_elements(record_property):
    """One in-place call with 2**32 + 2**20 + 3 decisions: the slices around and past 2**32
    equal the reference, the stored bits equal the applied mask everywhere, and backward
    regenerated from the seed (its decision indices past 2**32 too) gives the same values."""
    t0 = time.perf_counter()
    big = BigArray(N32)
    try:
        x = big.array
        fill_pattern(x)
        y, mask = fastdrop.dropout(x, KEEP_PROB, out=x, seed=SEED, store="bits")
        assert y is x and mask.size == N32 and mask.bits.size == -(-N32 // 8)
        check_slices(x, N32)
        check_bits_everywhere(x, mask.bits)
        for j0 in (2**32 - SLICE // 2, N32 - 3 - SLICE):
            keep = reference.decisions(SEED, 0, j0 // 16, SLICE, KEEP_PROB)
            np.testing.assert_array_equal(mask.bits[j0 // 8:(j0 + SLICE) // 8],
                                          np.packbits(keep, bitorder="little"))
        fill_pattern(x)
        fastdrop.dropout_backward(x, without_bits(mask), out=x)
        check_slices(x, N32)
        check_bits_everywhere(x, mask.bits)
    finally:
        del x, y
        big.close()
    record_property("seconds", round(time.perf_counter() - t0, 2))


# ---------------------------------------------------------------------------------------------
# Stream positions near the counter carry points, against randomgen
# ---------------------------------------------------------------------------------------------

def oracle_words(seed: int, counter: int, nblocks: int) -> np.ndarray:
    """randomgen's Philox4x32-10 words of blocks counter, counter + 1, ... (mod 2**128):
    random_raw adds 1 to the counter before each block."""
    gen = randomgen.Philox(key=seed, counter=(counter - 1) % 2**128, number=4, width=32)
    return np.asarray(gen.random_raw(4 * nblocks), dtype=np.uint64) & 0xFFFFFFFF


def oracle_bytes(seed, subsequence, start, size):
    words = oracle_words(seed, start + 2**64 * subsequence, -(-size // 16))
    return np.stack([(words >> (8 * k)) & 0xFF for k in range(4)], axis=1).reshape(-1)[:size]


def oracle_g(seed, subsequence, start, j):
    d = 16 * start + j
    word = oracle_words(seed, (d // 4 + 2**64 * (subsequence + 2**63)) % 2**128, 1)[d % 4]
    return int(word) & 0xFFFFFF


def oracle_decisions(seed, subsequence, start, size, keep_prob):
    """SPEC §3's decisions from randomgen's words, written from the spec alone."""
    t = threshold_for(keep_prob)
    h = oracle_bytes(seed, subsequence, start, size)
    keep = h < (t >> 24)
    for j in np.flatnonzero(h == t >> 24):
        keep[j] = oracle_g(seed, subsequence, start, int(j)) < (t & 0xFFFFFF)
    return keep


def dtype_named(name):
    if name == "bfloat16":
        return np.dtype(pytest.importorskip("ml_dtypes", reason="bfloat16 needs ml_dtypes")
                        .bfloat16)
    return np.dtype(name)


def on_every_simd_path(check):
    """Runs check() once per SIMD path, restoring the path chosen at import."""
    before = _core.simd_path()
    try:
        for path in _core.simd_paths():
            _core.set_simd_path(path)
            check(path)
    finally:
        _core.set_simd_path(before)


CARRY_POSITIONS = [
    pytest.param(2**32 - 5, 0, id="block-2**32-word0-carries"),
    pytest.param(2**33 - 3, 5, id="block-2**33"),
    pytest.param(2**63 - 4, 2**62 + 1, id="block-2**63"),
    pytest.param(2**64 - 13, 0, id="last-blocks-subsequence-0"),
    pytest.param(2**64 - 13, 2**63 - 1, id="last-blocks-last-subsequence"),
]


@pytest.mark.parametrize("position,subsequence", CARRY_POSITIONS)
@pytest.mark.parametrize("name", ["float16", "bfloat16", "float32", "float64"])
@pytest.mark.parametrize("mode", ["inverted", "alpha"])
def test_calls_across_counter_carries_match_randomgen(position, subsequence, name, mode):
    """A call of 200 decisions (13 blocks) whose blocks straddle a carry point (or end at the
    stream's last block, 2**64 - 1) reads randomgen's words there: applied mask, to_bool(),
    stored bits, reference, and backward agree with the oracle, on every SIMD path; the stream
    ends 13 blocks later."""
    dtype = dtype_named(name)
    seed, q, size = 0xC0FFEE123456789, 0.55, 200
    expected = oracle_decisions(seed, subsequence, position, size, q)
    assert 0 < expected.sum() < size
    x = np.linspace(0.5, 3, size).astype(dtype)
    dropped = 0 if mode == "inverted" else alpha_constants(q, dtype)[2]

    def check(path):
        stream = fastdrop.Stream(seed, subsequence)
        stream.reserve(position)
        y, mask = fastdrop.dropout(x, q, mode=mode, stream=stream, store="bits")
        assert mask.start == position and stream.position == position + 13
        np.testing.assert_array_equal(y != np.asarray(dropped).astype(dtype), expected,
                                      err_msg=path)
        np.testing.assert_array_equal(mask.to_bool(), expected)
        np.testing.assert_array_equal(mask.bits, np.packbits(expected, bitorder="little"))
        np.testing.assert_array_equal(reference.mask_to_bool(mask), expected)
        ref_stream = fastdrop.Stream(seed, subsequence)
        ref_stream.reserve(position)
        y_r, _ = reference.dropout(x, q, mode=mode, stream=ref_stream)
        np.testing.assert_array_equal(as_uint(y), as_uint(y_r))
        dx = fastdrop.dropout_backward(np.ones_like(x), without_bits(mask))
        np.testing.assert_array_equal(dx != 0, expected)

    on_every_simd_path(check)


@pytest.mark.parametrize("position", [2**31 - 1, 2**32 - 1, 2**63 - 1, 2**64 - 3])
@pytest.mark.parametrize("name", ["float16", "bfloat16"])
def test_forced_refinement_near_carries_for_16_bit_types(position, name):
    """T_hi is set to a drawn byte so that decision j needs its refinement draw g_d, whose
    counter d // 4 = 4 * start + j // 4 passes 2**33, 2**34, 2**65 and 2**66 (carrying into the
    subsequence words) near these positions: the decision flips exactly between T_lo = g and
    g + 1, in float16/bfloat16 and alpha mode, on every SIMD path."""
    dtype = dtype_named(name)
    seed, subsequence = 2**40 + 7, 3
    size = 16 * min(3, 2**64 - position)
    h = oracle_bytes(seed, subsequence, position, size)
    for j in range(16, size):  # a decision in the call's second block
        if h[j] > 0:
            break
    g = oracle_g(seed, subsequence, position, j)
    if g == 0xFFFFFF:  # pragma: no cover - T_lo = g + 1 would not fit
        pytest.skip("g is 0xffffff here")
    x = np.ones(size, dtype)

    def check(path):
        for low, kept in ((g, False), (g + 1, True)):
            q = ((int(h[j]) << 24) | low) / 2**32
            assert threshold_for(q) == (int(h[j]) << 24) | low
            stream = fastdrop.Stream(seed, subsequence)
            stream.reserve(position)
            y, mask = fastdrop.dropout(x, q, mode="alpha", stream=stream)
            keep = mask.to_bool()
            assert bool(keep[j]) is kept, path
            np.testing.assert_array_equal(keep, oracle_decisions(seed, subsequence, position,
                                                                 size, q))
            a, b, dropped = alpha_constants(q, dtype)
            expected = np.where(keep, np.asarray(np.float32(a) + np.float32(b)).astype(dtype),
                                np.asarray(dropped).astype(dtype))
            np.testing.assert_array_equal(y.view(np.uint16), expected.view(np.uint16))

    on_every_simd_path(check)


# ---------------------------------------------------------------------------------------------
# Refusing what would wrap the stream
# ---------------------------------------------------------------------------------------------

def stream_at(position: int, seed: int = 77, subsequence: int = 0) -> fastdrop.Stream:
    stream = fastdrop.Stream(seed, subsequence)
    stream.reserve(position)
    return stream


@pytest.mark.parametrize("name", ["float16", "bfloat16", "float32"])
@pytest.mark.parametrize("impl", [fastdrop, reference], ids=["fastdrop", "reference"])
def test_call_that_would_wrap_is_refused(name, impl):
    """With 2 blocks left, a 33-decision call (3 blocks) raises OverflowError saying how many
    blocks it needs and how many are left; x, out and the stream are unchanged.  A call that
    fits exactly ends at 2**64, after which any drawing call is refused but evaluation works."""
    dtype = dtype_named(name)
    stream = stream_at(2**64 - 2)
    x = np.linspace(1, 2, 33).astype(dtype)
    out = np.full_like(x, 5)
    x_bytes, out_bytes = x.tobytes(), out.tobytes()
    with pytest.raises(OverflowError) as info:
        impl.dropout(x, 0.5, stream=stream, out=out, mode="alpha", store="bits")
    message = str(info.value)
    assert re.search(r"\b3\b", message) and re.search(r"\b2 blocks\b", message), message
    assert "stream" in message
    assert stream.position == 2**64 - 2
    assert x.tobytes() == x_bytes and out.tobytes() == out_bytes

    y, mask = impl.dropout(x[:32], 0.5, stream=stream)
    assert mask.start == 2**64 - 2 and stream.position == 2**64
    with pytest.raises(OverflowError, match=r"\b1\b"):
        impl.dropout(x[:1], 0.5, stream=stream)
    assert stream.position == 2**64
    y, _ = impl.dropout(x, 0.5, stream=stream, training=False)
    assert y is x


def test_huge_logical_size_refused_before_allocating():
    """A call on a broadcast x of 2**40 elements (2**36 blocks) with 2**35 blocks left is refused
    with OverflowError naming the 68719476736 blocks it needs, before any output is allocated
    (which would need 2 TiB), and the stream does not move."""
    x = np.broadcast_to(np.float16(1), (2**20, 2**20))
    stream = stream_at(2**64 - 2**35)
    with pytest.raises(OverflowError, match=str(2**36)):
        fastdrop.dropout(x, 0.5, stream=stream, store="bits")
    assert stream.position == 2**64 - 2**35
    layer = fastdrop.Dropout(0.5, seed=1, mc=True).eval()
    layer.stream.reserve(2**64 - 1)
    with pytest.raises(OverflowError, match=r"\b2\b"):
        layer(np.ones(17, np.float16))  # Monte-Carlo evaluation draws, so it is refused too
    assert layer.stream.position == 2**64 - 1
