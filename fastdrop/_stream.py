"""Random streams and masks: the state that makes fastdrop's masks reproducible (SPEC §3, §4)."""
from __future__ import annotations

import math
import operator
import secrets
import threading
from fractions import Fraction
from functools import lru_cache

import numpy as np

SEED_LIMIT = 2**64
SUBSEQUENCE_LIMIT = 2**63
BLOCK_LIMIT = 2**64
DECISIONS_PER_BLOCK = 8
MODES = ("inverted", "classic", "alpha")
# -lambda * alpha of SELU (Klambauer et al. 2017): the value alpha dropout gives dropped units
# before its affine correction, the limit of SELU for large negative inputs.
ALPHA_PRIME = -1.0507009873554804934193349852946 * 1.6732632423543772848170429916717


def _integer(name: str, value, limit: int) -> int:
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
    return _integer("seed", seed, SEED_LIMIT)


def check_subsequence(subsequence) -> int:
    return _integer("subsequence", subsequence, SUBSEQUENCE_LIMIT)


def blocks_for(decisions: int) -> int:
    """Stream blocks that a call with this many decisions consumes."""
    return -(-decisions // DECISIONS_PER_BLOCK)


def packed_nbytes(decisions: int) -> int:
    """Bytes of a mask stored one bit per decision."""
    return -(-decisions // 8)


class Stream:
    """A position in a Philox4x32-10 random stream: (seed, subsequence, next block).

    Every training-mode call that draws from a stream reserves the blocks its decisions need and
    moves the stream past them, so successive calls get fresh masks while the whole sequence
    stays a pure function of the seed.  Reservations are atomic, so threads may share a stream.

    Parameters
    ----------
    seed : int, optional
        The 64-bit key, in [0, 2**64).  None draws one from the operating system's entropy.
    subsequence : int, optional
        In [0, 2**63): independent streams under one seed, e.g. one per process or rank.

    Examples
    --------
    >>> import fastdrop, numpy as np
    >>> s = fastdrop.Stream(seed=7)
    >>> y1, _ = fastdrop.dropout(np.ones(4), 0.5, stream=s)
    >>> s.position
    1
    """

    __slots__ = ("_seed", "_subsequence", "_position", "_lock")

    def __init__(self, seed: int | None = None, subsequence: int = 0) -> None:
        self._seed = secrets.randbits(64) if seed is None else check_seed(seed)
        self._subsequence = check_subsequence(subsequence)
        self._position = 0
        self._lock = threading.Lock()

    @property
    def seed(self) -> int:
        return self._seed

    @property
    def subsequence(self) -> int:
        return self._subsequence

    @property
    def position(self) -> int:
        """The next block a call will use."""
        return self._position

    def check_room(self, blocks: int) -> None:
        """Raises OverflowError when `blocks` more blocks would run past the last block of the
        subsequence (2**64 - 1)."""
        left = BLOCK_LIMIT - self._position
        if blocks > left:
            raise OverflowError(
                f"the stream (seed={self._seed}, subsequence={self._subsequence}) has {left} "
                f"blocks left, the call needs {blocks}; use another subsequence or seed")

    def reserve(self, blocks: int) -> int:
        """Reserves `blocks` consecutive blocks and returns the first.

        Raises OverflowError, leaving the stream unchanged, when they would run past the last
        block of the subsequence (see `check_room`).
        """
        with self._lock:
            self.check_room(blocks)
            start = self._position
            self._position = start + blocks
            return start

    def manual_seed(self, seed: int, subsequence: int = 0) -> None:
        """Restarts the stream at block 0 of (seed, subsequence)."""
        seed = check_seed(seed)
        subsequence = check_subsequence(subsequence)
        with self._lock:
            self._seed, self._subsequence, self._position = seed, subsequence, 0

    def spawn(self, subsequence: int = 0) -> "Stream":
        """A new stream on `subsequence` whose seed is the next block of this one: reproducible
        child streams, e.g. one per layer, that all follow from a single manual_seed."""
        from fastdrop import _core

        subsequence = check_subsequence(subsequence)
        words = _core.philox_words(self._seed, self._subsequence, self.reserve(1), 1)
        return Stream(int(words[0]) | int(words[1]) << 32, subsequence)

    def __getstate__(self):
        return (self._seed, self._subsequence, self._position)

    def __setstate__(self, state) -> None:
        self._seed, self._subsequence, self._position = state
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return (f"Stream(seed={self._seed}, subsequence={self._subsequence}, "
                f"position={self._position})")


def mask_shape(shape: tuple, shared_axes: tuple) -> tuple:
    """`shape` with the shared axes set to 1."""
    if not shared_axes:
        return shape
    return tuple(1 if k in shared_axes else n for k, n in enumerate(shape))


def threshold_for(keep_prob: float) -> int:
    """T = floor(keep_prob * 2**32) of SPEC §3 (exact: scaling by a power of two is exact)."""
    return int(keep_prob * 2.0**32)


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
    units become `dropped`.  All in the dtype's compute precision (SPEC §2)."""
    if mode != "alpha":
        return (scale_for(keep_prob, mode, dtype), 0.0, 0.0, False)
    a, b, dropped = alpha_constants(keep_prob, dtype)
    if not forward:  # dx = a * m * dy
        return (float(a), 0.0, 0.0, False)
    return (float(a), float(b), float(dropped), True)


class DropoutMask:
    """The record of one dropout call, everything backward needs to mask the gradient the same way.

    By default it holds only the stream coordinates (seed, subsequence, start block) and the
    shapes, a few dozen bytes whatever the array size; backward regenerates the decisions.  With
    ``store="bits"`` it also holds the decisions packed one bit each (`bits`, a uint8 array:
    bit j % 8 of byte j // 8 for decision j), which backward reads instead.

    Attributes
    ----------
    shape : tuple of int
        Shape of the array the mask was made for.
    shared_axes : tuple of int
        Axes along which one decision is broadcast, sorted.
    mask_shape : tuple of int
        ``shape`` with the shared axes set to 1: one decision per element of this shape.
    keep_prob : float
    mode : {"inverted", "classic", "alpha"}
    training : bool
        False for an evaluation-mode call, which draws nothing: every unit passes.
    seed, subsequence, start : int or None
        Where in the Philox stream the decisions were read (None in evaluation mode).
    bits : numpy.ndarray or None
        The packed decisions when stored.
    """

    __slots__ = ("shape", "shared_axes", "keep_prob", "mode", "training", "seed", "subsequence",
                 "start", "bits")

    def __init__(self, shape, shared_axes, keep_prob, mode, training, seed=None, subsequence=None,
                 start=None, bits=None):
        self.shape = shape
        self.shared_axes = shared_axes
        self.keep_prob = keep_prob
        self.mode = mode
        self.training = training
        self.seed = seed
        self.subsequence = subsequence
        self.start = start
        self.bits = bits

    @property
    def size(self) -> int:
        """Number of decisions."""
        return math.prod(self.mask_shape)

    @property
    def mask_shape(self) -> tuple:
        return mask_shape(self.shape, self.shared_axes)

    @property
    def draws(self) -> bool:
        """Whether some unit may be dropped: training with keep_prob < 1."""
        return self.training and self.keep_prob < 1.0

    def to_bool(self) -> np.ndarray:
        """The decisions as a boolean array of `mask_shape`, True where the unit is kept."""
        size = self.size
        if not self.draws or not size:
            return np.ones(self.mask_shape, dtype=bool)
        if self.bits is not None:
            bits = self.bits
        else:
            from fastdrop import _core

            bits = _core.mask_generate(self.mask_shape, (), self.seed, self.subsequence,
                                       self.start, threshold_for(self.keep_prob), False,
                                       packed_nbytes(size))
        flat = np.unpackbits(bits, count=size, bitorder="little").view(bool)
        return flat.reshape(self.mask_shape)

    def __eq__(self, other):
        if not isinstance(other, DropoutMask):
            return NotImplemented
        same_bits = (self.bits is None) == (other.bits is None) and (
            self.bits is None or np.array_equal(self.bits, other.bits))
        return same_bits and all(getattr(self, k) == getattr(other, k)
                                 for k in self.__slots__ if k != "bits")

    __hash__ = None  # type: ignore[assignment]  # masks are mutable records, compared by value

    def __repr__(self) -> str:
        where = (f"seed={self.seed}, subsequence={self.subsequence}, start={self.start}"
                 if self.training else "evaluation")
        stored = "" if self.bits is None else f", bits={self.bits.nbytes} bytes"
        return (f"DropoutMask(shape={self.shape}, mask_shape={self.mask_shape}, "
                f"keep_prob={self.keep_prob}, mode={self.mode!r}, {where}{stored})")


# The stream of calls given neither seed= nor stream=.
DEFAULT_STREAM = Stream()


def layer_stream(seed: int | None, subsequence: int) -> Stream:
    """The stream a layer owns: Stream(seed, subsequence), or, without a seed, one spawned from
    the default stream, so that fastdrop.manual_seed before building a network makes it
    reproducible."""
    return DEFAULT_STREAM.spawn(subsequence) if seed is None else Stream(seed, subsequence)
