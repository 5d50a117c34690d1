"""The arithmetic of fastdrop's streams and masks (docs/guide/semantics.rst and stream.rst):
argument checks, limits and the constants each mode applies.  The Stream and DropoutMask
classes themselves are compiled, in fastdrop._core."""
from __future__ import annotations

import operator
from fractions import Fraction
from functools import lru_cache

import numpy as np

SEED_LIMIT = 2**64
SUBSEQUENCE_LIMIT = 2**63
BLOCK_LIMIT = 2**64
DECISIONS_PER_BLOCK = 16  # one byte each (version 2 of the stream)
MODES = ("inverted", "classic", "alpha")
# The finest keep probability the decisions resolve: a unit is kept when its 32-bit draw is below
# floor(keep_prob * 2**32).
KEEP_PROB_RESOLUTION = 2.0**-32
# -lambda * alpha of SELU (Klambauer et al. 2017): the value alpha dropout gives dropped units
# before its affine correction, the limit of SELU for large negative inputs.
ALPHA_PRIME = -1.0507009873554804934193349852946 * 1.6732632423543772848170429916717


def check_integer(name: str, value, limit: int) -> int:
    """`value` as a Python int in [0, limit), or a clear error naming the argument."""
    if isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be an integer in [0, {_power(limit)}), got {value!r}")
    try:
        number = operator.index(value)
    except TypeError:
        raise TypeError(
            f"{name} must be an integer in [0, {_power(limit)}), got {type(value).__name__}"
        ) from None
    if not 0 <= number < limit:
        raise ValueError(f"{name} must be in [0, {_power(limit)}), got {number}")
    return number


def _power(limit: int) -> str:
    return f"2**{limit.bit_length() - 1}"


def check_seed(seed) -> int:
    return check_integer("seed", seed, SEED_LIMIT)


def check_subsequence(subsequence) -> int:
    return check_integer("subsequence", subsequence, SUBSEQUENCE_LIMIT)


def seeds_from_key_words(words) -> np.ndarray:
    """The 64-bit seeds (uint64, of shape ``words.shape[:-1]``) of keys held as pairs of 32-bit
    words (high, low) along the last axis; signed words are read as their 32 bits.

    The framework adapters' one mapping from a key to a seed: a JAX threefry key made by
    ``jax.random.key(s)`` holds (s >> 32, s & 0xffffffff), so it gives seed s; a Keras
    SeedGenerator draw, (seed, counter), gives seed << 32 | counter, distinct for each draw.
    """
    words = np.asarray(words)
    if words.ndim < 1 or words.shape[-1] != 2:
        raise ValueError(f"key words must have shape (..., 2), got {words.shape}")
    high, low = (words[..., k].astype(np.uint32).astype(np.uint64) for k in (0, 1))
    return high << np.uint64(32) | low


def mask_shape(shape: tuple, shared_axes: tuple) -> tuple:
    """`shape` with the shared axes set to 1."""
    if not shared_axes:
        return shape
    return tuple(1 if k in shared_axes else n for k, n in enumerate(shape))


def compute_dtype(dtype: np.dtype) -> np.dtype:
    """The precision a dtype is computed in: float64 for float64, float32 for the rest."""
    return np.dtype(np.float64) if dtype == np.float64 else np.dtype(np.float32)


@lru_cache(maxsize=256)
def scale_for(keep_prob: float, mode: str, dtype: np.dtype) -> float:
    """The factor applied to kept values of an inverted or classic call: 1/keep_prob (inverted)
    or 1 (classic), rounded once to the dtype's compute precision.  Going through float64 first
    could round twice, so the nearest representable value is chosen against the exact rational
    1/keep_prob."""
    if mode == "classic":
        return 1.0
    exact = 1 / Fraction(keep_prob)
    dtype = compute_dtype(dtype)
    ftype = dtype.type
    guess = ftype(float(exact))
    candidates = (np.nextafter(guess, ftype(-np.inf)), guess, np.nextafter(guess, ftype(np.inf)))
    uint = np.dtype(f"u{dtype.itemsize}").type
    best = min(candidates, key=lambda c: (abs(Fraction(float(c)) - exact),
                                          int(np.array(c).view(uint)) & 1))
    return float(best)


def alpha_constants(keep_prob: float, dtype: np.dtype) -> tuple:
    """(a, b, dropped) of alpha dropout in the dtype's compute precision: kept units become
    a * x + b and dropped ones a * ALPHA_PRIME + b, so that zero-mean, unit-variance input keeps
    mean 0 and variance 1 (Klambauer et al. 2017):
    a = (q + ALPHA_PRIME**2 q (1 - q))**-1/2, b = -a (1 - q) ALPHA_PRIME."""
    q = keep_prob
    ctype = compute_dtype(dtype).type
    a = ctype((q + ALPHA_PRIME**2 * q * (1 - q)) ** -0.5)
    b = ctype(-float(a) * (1 - q) * ALPHA_PRIME)
    return a, b, a * ctype(ALPHA_PRIME) + b


@lru_cache(maxsize=256)
def kernel_op(keep_prob: float, mode: str, dtype: np.dtype, forward: bool) -> tuple:
    """What a training call does to each element, as the C core takes it:
    (scale, shift, dropped, affine): kept x becomes x * scale, + shift when affine; dropped
    units become `dropped`.  All in the dtype's compute precision."""
    if mode != "alpha":
        return (scale_for(keep_prob, mode, dtype), 0.0, 0.0, False)
    a, b, dropped = alpha_constants(keep_prob, dtype)
    if not forward:  # dx = a * m * dy
        return (float(a), 0.0, 0.0, False)
    return (float(a), float(b), float(dropped), True)
