"""fastdrop's semantics in pure NumPy: the test oracle and the honest "pure numpy" baseline.

`dropout` and `dropout_backward` here take the same arguments, refuse the same inputs, move the
same streams and return the same bits as `fastdrop.dropout` / `fastdrop.dropout_backward`; only
the arithmetic differs.  It is written for clarity, not speed: Philox4x32-10 on uint64 arrays
(a 32x32-bit product fits in 64 bits), whole-array temporaries, np.where for the select.
"""
from __future__ import annotations

from typing import Optional, Tuple

import numpy as np

from fastdrop import _core
from fastdrop._core import DropoutMask, Stream, threshold_for
from fastdrop._stream import compute_dtype

__all__ = ["philox4x32_10", "philox_words", "keep_rule", "refinement_draws", "refinement_draw",
           "decision_bytes", "decisions", "mask_to_bool", "dropout", "dropout_backward"]

_MASK32 = np.uint64(0xFFFFFFFF)
_MULTIPLIERS = (np.uint64(0xD2511F53), np.uint64(0xCD9E8D57))
_WEYL = (0x9E3779B9, 0xBB67AE85)


def philox4x32_10(counters: np.ndarray, key: int) -> np.ndarray:
    """Philox4x32-10 of an (n, 4) array of 32-bit counter words (word 0 least significant) under
    a 64-bit key; returns the (n, 4) output words as uint64 holding 32-bit values."""
    c = [np.asarray(counters, dtype=np.uint64)[:, i].copy() for i in range(4)]
    k0, k1 = key & 0xFFFFFFFF, key >> 32
    for _ in range(10):
        p0 = _MULTIPLIERS[0] * c[0]
        p1 = _MULTIPLIERS[1] * c[2]
        c = [(p1 >> np.uint64(32)) ^ c[1] ^ np.uint64(k0), p1 & _MASK32,
             (p0 >> np.uint64(32)) ^ c[3] ^ np.uint64(k1), p0 & _MASK32]
        k0 = (k0 + _WEYL[0]) & 0xFFFFFFFF
        k1 = (k1 + _WEYL[1]) & 0xFFFFFFFF
    return np.stack(c, axis=1)


def _counter_words(counters) -> np.ndarray:
    """128-bit Python-int counters as an (n, 4) uint64 array of 32-bit words."""
    return np.array([[(c >> (32 * i)) & 0xFFFFFFFF for i in range(4)] for c in counters],
                    dtype=np.uint64).reshape(-1, 4)


def philox_words(seed: int, subsequence: int, first_block: int, nblocks: int) -> np.ndarray:
    """The 4 * nblocks words of blocks first_block, first_block + 1, ... of (seed, subsequence):
    counter = block + 2**64 * subsequence, taken modulo 2**128."""
    low = np.arange(nblocks, dtype=np.uint64) + np.uint64(first_block % 2**64)
    if first_block + nblocks <= 2**64:
        counters = np.empty((nblocks, 4), dtype=np.uint64)
        counters[:, 0] = low & _MASK32
        counters[:, 1] = low >> np.uint64(32)
        counters[:, 2] = subsequence & 0xFFFFFFFF
        counters[:, 3] = (subsequence >> 32) & 0xFFFFFFFF
    else:  # the block index carries into the subsequence words
        counters = _counter_words([(first_block + i + 2**64 * subsequence) % 2**128
                                   for i in range(nblocks)])
    return philox4x32_10(counters, seed).reshape(-1)


def keep_rule(h, g, threshold: int):
    """The keep decision of the stream contract from a byte h and a 24-bit refinement draw g:
    keep iff h < T_hi, or h == T_hi and g < T_lo (T_hi = T >> 24, T_lo = T & 0xffffff).  Over
    all 2**32 pairs (h, g) exactly `threshold` keep."""
    t_hi, t_lo = threshold >> 24, threshold & 0xFFFFFF
    return (h < t_hi) | ((h == t_hi) & (g < t_lo))


def refinement_draws(seed: int, subsequence: int, d) -> np.ndarray:
    """g_d for each d of a sequence: the low 24 bits of word d % 4 of block d // 4 of
    subsequence 2**63 + subsequence, as uint64."""
    d = [int(v) for v in d]
    counters = [(v // 4 + 2**64 * (subsequence + 2**63)) % 2**128 for v in d]
    words = philox4x32_10(_counter_words(counters), seed)
    return words[np.arange(len(d)), [v % 4 for v in d]] & np.uint64(0xFFFFFF)


def refinement_draw(seed: int, subsequence: int, d: int) -> int:
    """g_d of one decision index d (see refinement_draws)."""
    return int(refinement_draws(seed, subsequence, [d])[0])


def decision_bytes(seed: int, subsequence: int, start: int, size: int) -> np.ndarray:
    """h_0 .. h_{size-1} of a call at block `start`: byte j % 16 of block start + j // 16, byte k
    of a block being bits 8 (k % 4) .. 8 (k % 4) + 7 of its word k // 4."""
    words = philox_words(seed, subsequence, start, -(-size // 16))
    shifts = np.arange(0, 32, 8, dtype=np.uint64)
    return ((words[:, None] >> shifts) & np.uint64(0xFF)).reshape(-1)[:size]


def decisions(seed: int, subsequence: int, start: int, size: int, keep_prob: float) -> np.ndarray:
    """The `size` keep decisions of a call at block `start` of (seed, subsequence), as a flat
    boolean array."""
    if keep_prob == 1.0:
        return np.ones(size, dtype=bool)
    threshold = threshold_for(keep_prob)
    h = decision_bytes(seed, subsequence, start, size)
    # The refinement draw is needed only where h == T_hi; elsewhere any g gives the same answer.
    draws = np.zeros(size, dtype=np.uint64)
    ties = np.flatnonzero(h == threshold >> 24)
    if ties.size:
        draws[ties] = refinement_draws(seed, subsequence, [16 * start + int(j) for j in ties])
    return keep_rule(h, draws, threshold)


def mask_to_bool(mask: DropoutMask) -> np.ndarray:
    """The decisions of a mask, computed here rather than by the compiled core."""
    if not mask.draws:
        return np.ones(mask.mask_shape, dtype=bool)
    flat = decisions(mask.seed, mask.subsequence, mask.start, mask.size, mask.keep_prob)
    return flat.reshape(mask.mask_shape)


def _numpy_engine(forward: bool, src: np.ndarray, out: np.ndarray, mask: DropoutMask,
                  op: tuple) -> None:
    scale, shift, dropped, affine = op
    if not mask.draws:
        keep = np.ones(mask.mask_shape, dtype=bool)
    elif forward or mask.bits is None:
        keep = mask_to_bool(mask)
    else:
        keep = np.unpackbits(mask.bits, count=mask.size, bitorder="little").view(bool)
        keep = keep.reshape(mask.mask_shape)
    if forward and mask.bits is not None:
        mask.bits[:] = np.packbits(keep.reshape(-1), bitorder="little")
    ctype = compute_dtype(src.dtype).type
    with np.errstate(over="ignore", invalid="ignore"):  # inf and NaN are data, as in C
        value = src.astype(ctype) * ctype(scale)
        if affine:
            value = value + ctype(shift)
        out[...] = np.where(keep, value, ctype(dropped)).astype(src.dtype)


def dropout(x: np.ndarray, keep_prob: float, *, training: bool = True, mode: str = "inverted",
            shared_axes=None, seed: Optional[int] = None, stream: Optional[Stream] = None,
            out: Optional[np.ndarray] = None,
            store: str = "seed") -> Tuple[np.ndarray, DropoutMask]:
    """`fastdrop.dropout` computed in pure NumPy (same arguments, same result, same bits)."""
    return _core.forward(_numpy_engine, x, keep_prob, training, mode, shared_axes, seed, stream,
                        out, store)


def dropout_backward(dy: np.ndarray, mask: DropoutMask, *,
                     out: Optional[np.ndarray] = None) -> np.ndarray:
    """`fastdrop.dropout_backward` computed in pure NumPy."""
    return _core.backward(_numpy_engine, dy, mask, out)
