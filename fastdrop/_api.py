"""fastdrop's public functions and the Dropout layer.

The work of a call (checking every argument, the stream bookkeeping, the kernel call) is done
by the front end in the compiled module (fastdrop._core.forward / backward), which
fastdrop.reference shares with its own NumPy arithmetic, so that the two differ only where they
are meant to.
"""
from __future__ import annotations

import numbers
import os
import time
import warnings
from typing import Callable, Optional, Tuple

import numpy as np

from fastdrop import _core
from fastdrop._core import (DEFAULT_STREAM, STORAGE_TYPES, STORES, DropoutMask, Stream,
                            check_choice, check_flag, check_keep_prob, layer_stream,
                            packed_nbytes)
from fastdrop._stream import MODES

SUPPORTED_DTYPES = tuple(STORAGE_TYPES)


def dropout(x: np.ndarray, keep_prob: float, *, training: bool = True, mode: str = "inverted",
            shared_axes=None, seed: Optional[int] = None, stream: Optional[Stream] = None,
            out: Optional[np.ndarray] = None,
            store: str = "seed") -> Tuple[np.ndarray, DropoutMask]:
    """Dropout forward: keep each unit with probability keep_prob, zero the rest.

    One pass over memory in compiled code: the random decisions, the select and the scaling
    are fused, with no temporary array of the input's size.

    Parameters
    ----------
    x : numpy.ndarray
        float16, bfloat16 (ml_dtypes), float32 or float64, any shape (0-d and empty included)
        and any strides.  float16 and bfloat16 are computed in float32 and rounded once.
    keep_prob : float
        Probability q that a unit is kept, in (0, 1] (at least 2**-32).  The 2014 paper calls
        it p; PyTorch's p is the drop probability 1 - q.
    training : bool, optional
        False is evaluation mode: nothing is drawn and the stream does not move.
    mode : {"inverted", "classic", "alpha"}, optional
        "inverted" (default): y = m * x / q in training, y = x in evaluation.
        "classic" (the 2014 paper): y = m * x in training, y = q * x in evaluation.
        "alpha" (for SELU networks): y = a * (m * x + (1 - m) * alpha') + b in training, so
        that zero-mean unit-variance input keeps its mean and variance; y = x in evaluation.
    shared_axes : int or tuple of int, optional
        Axes along which one decision is broadcast: ``0`` shares one mask across the batch of
        an (N, D) array, ``(2, 3)`` drops whole channels of an (N, C, H, W) array, the time
        axis gives the same mask at every step.  Only the mask's own elements are drawn.
    seed : int, optional
        Stateless call: start at block 0 of this 64-bit seed, so the same seed and shape always
        give the same mask.  Excludes `stream`.
    stream : Stream, optional
        Draw from this stream and advance it.  With neither seed nor stream, the module's
        default stream (see `manual_seed`) is used.
    out : numpy.ndarray, optional
        Where to write y: same shape and dtype as x; ``out=x`` works in place.
    store : {"seed", "bits"}, optional
        "seed" (default) keeps only the stream coordinates in the mask, and backward
        regenerates the decisions; "bits" also stores them packed one bit each.

    Returns
    -------
    y : numpy.ndarray
        The output (`out` when given).  When nothing is dropped (evaluation with "inverted",
        or keep_prob = 1) and `out` is None, y is x itself, not a copy.
    mask : DropoutMask
        What `dropout_backward` needs.

    Raises
    ------
    TypeError, ValueError
        For any invalid argument; nothing is written and the stream does not move.
    OverflowError
        When the stream has too few blocks left.

    Examples
    --------
    >>> import numpy as np, fastdrop
    >>> a = np.ones((2, 4), dtype=np.float32)
    >>> y, mask = fastdrop.dropout(a, 0.5, seed=0)
    >>> sorted(set(y.ravel().tolist())) in ([0.0, 2.0], [2.0], [0.0])
    True
    >>> dy = fastdrop.dropout_backward(np.ones_like(a), mask)
    >>> bool(np.array_equal(dy, y))
    True
    """
    return _core.forward(None, x, keep_prob, training, mode, shared_axes, seed, stream, out,
                         store)


def dropout_backward(dy: np.ndarray, mask: DropoutMask, *,
                     out: Optional[np.ndarray] = None) -> np.ndarray:
    """Dropout backward: the gradient through the forward call that returned `mask`.

    dx = m * dy / q (inverted), m * dy (classic) or a * m * dy (alpha), with the decisions
    regenerated from the mask's stream coordinates or read from its stored bits.

    Parameters
    ----------
    dy : numpy.ndarray
        Gradient of the loss with respect to the forward output: the forward's shape, any
        supported dtype (it need not match the forward's), any strides.
    mask : DropoutMask
        The mask returned by `dropout`.
    out : numpy.ndarray, optional
        Where to write dx; ``out=dy`` works in place.

    Returns
    -------
    numpy.ndarray
        dx (`out` when given; dy itself when the forward dropped nothing and `out` is None).
    """
    return _core.backward(None, dy, mask, out)


# ---------------------------------------------------------------------------------------------
# Module state: the default stream and the thread count
# ---------------------------------------------------------------------------------------------

def default_stream() -> Stream:
    """The stream used by calls given neither seed= nor stream=."""
    return DEFAULT_STREAM


def manual_seed(seed: int) -> None:
    """Restart the default stream at block 0 of `seed` (subsequence 0)."""
    DEFAULT_STREAM.manual_seed(seed)


def set_num_threads(n: int) -> None:
    """Set how many threads the kernels may use for large arrays (small ones use one).

    Results are bit-identical for every thread count.  In a child process made by ``fork()``
    (multiprocessing's "fork" start method, a PyTorch ``DataLoader`` worker on Linux) calls run
    on one thread until this is called there: the OpenMP thread pool inherited from the parent
    has lost its threads and would hang.  After it, each threaded call in the child starts
    threads of its own, which costs their creation (tens of microseconds) on every call.

    Parameters
    ----------
    n : int
        The most threads a call may use, in [1, 4096].
    """
    if isinstance(n, (bool, np.bool_)) or not isinstance(n, (numbers.Integral, np.integer)):
        raise TypeError(f"n must be a positive int, got {n!r}")
    if not 1 <= n <= 4096:
        raise ValueError(f"n must be in [1, 4096], got {n}")
    _core.set_num_threads(int(n))


def get_num_threads() -> int:
    """The number of threads the kernels may use: 1 in a child made by ``fork()`` until
    `set_num_threads` is called there."""
    return _core.get_num_threads()


def _threads_from_environment() -> None:
    value = os.environ.get("FASTDROP_NUM_THREADS")
    if not value:
        return
    try:
        set_num_threads(int(value))
    except (TypeError, ValueError) as error:
        warnings.warn(f"ignoring FASTDROP_NUM_THREADS={value!r}: {error}", stacklevel=2)


_threads_from_environment()


def simd_path() -> str:
    """The instruction-set path the kernels use: "scalar", "avx2" or "avx512"."""
    return _core.simd_path()


def _agrees_with_scalar(path: str) -> bool:
    """Whether `path` reproduces the scalar path's bits on a probe that reaches every branch of a
    kernel: every dtype, both kinds of operation, stored bits, a tie (h == T_hi) needing a
    refinement draw, rows that start and end inside a byte of decisions, tails shorter than a
    vector, values that round."""
    words = _core.philox_words(1, 0, 0, 8)
    tie_threshold = (int(words[0]) & 0xFF) << 24 | 0x800000  # T_hi is the first byte
    values = np.linspace(-3, 3, 21 * 77).reshape(21, 77)[:, 3:] * np.pi
    results = []
    for name in ("scalar", path):
        _core.set_simd_path(name)
        for dtype, index in STORAGE_TYPES.items():
            x = values.astype(dtype)
            for threshold in (tie_threshold, 3 << 30):
                for op in ((1.25, 0.0, 0.0, False), (1.5, 0.25, -0.75, True)):
                    out = np.empty_like(x)
                    bits = np.empty(packed_nbytes(x.size), dtype=np.uint8)
                    _core.apply(True, x, out, (), 1, 0, 0, threshold, False, op, index, bits)
                    results.append((out.tobytes(), bits.tobytes()))
    half = len(results) // 2
    return results[:half] == results[half:]


# The paths are timed at import on a forward call over this many float32 elements, in and out
# together 512 KiB: in the L2 cache of current x86 cores, where a call is bound by its decisions
# rather than by memory, so the timing tells the paths' compute apart.  About 0.1 ms per path and
# round.
PATH_TIMING_ELEMENTS = 1 << 16
PATH_TIMING_ROUNDS = 5
# A narrower path replaces a wider one only when its best time is shorter by more than this
# fraction: the wider path is the better guess (it is at least as fast on every CPU whose
# figures we know), and a busy machine can make two equal paths look 5 % apart.
NARROWER_PATH_MARGIN = 0.10

# ns per element of each path that passed the probe, as measured at import (empty when
# FASTDROP_SIMD chose the path); `fastdrop info` shows them.
simd_path_timings: dict = {}


def _time_paths(paths) -> dict:
    """The best of PATH_TIMING_ROUNDS interleaved one-thread timings of each path, in ns per
    element.  Interleaving the paths round by round spreads a burst of load over all of them;
    the minimum is the run least disturbed."""
    x = np.linspace(-1, 1, PATH_TIMING_ELEMENTS, dtype=np.float32)
    out = np.empty_like(x)
    keep_prob = 0.9
    op = (1 / keep_prob, 0.0, 0.0, False)
    threshold = _core.threshold_for(keep_prob)
    best = dict.fromkeys(paths, float("inf"))
    threads = _core.get_num_threads()
    _core.set_num_threads(1)
    try:
        for _ in range(PATH_TIMING_ROUNDS):
            for path in paths:
                _core.set_simd_path(path)
                began = time.perf_counter_ns()
                _core.apply(True, x, out, (), 1, 0, 0, threshold, False, op,
                            STORAGE_TYPES[np.dtype(np.float32)], None)
                best[path] = min(best[path], time.perf_counter_ns() - began)
    finally:
        _core.set_num_threads(threads)
    return {path: elapsed / PATH_TIMING_ELEMENTS for path, elapsed in best.items()}


def _fastest_path(timings: dict) -> str:
    """The path to use given `timings` (ns per element, paths from the narrowest to the widest):
    the widest, unless a narrower one is faster than it by more than NARROWER_PATH_MARGIN."""
    paths = list(timings)
    chosen = paths[-1]
    for path in reversed(paths[:-1]):
        if timings[path] < (1 - NARROWER_PATH_MARGIN) * timings[chosen]:
            chosen = path
    return chosen


def _select_simd_path() -> None:
    """The path named by FASTDROP_SIMD when set, else, of the paths that agree with the scalar
    one on a probe (a wrong vector kernel must never be used silently), the fastest as measured
    here: whether AVX-512 beats AVX2 depends on the core (Zen 4 splits 512-bit instructions in
    two), so the choice is measured on the CPU at hand rather than assumed."""
    requested = os.environ.get("FASTDROP_SIMD")
    if requested:
        try:
            _core.set_simd_path(requested)
        except ValueError as error:
            warnings.warn(f"ignoring FASTDROP_SIMD={requested!r}: {error}", stacklevel=2)
        else:
            return
    agreeing = []
    for path in _core.simd_paths():
        if path == "scalar" or _agrees_with_scalar(path):
            agreeing.append(path)
        else:
            warnings.warn(f"fastdrop's {path} kernels disagree with its scalar kernels on this "
                          "CPU; not using them (please report this)", RuntimeWarning,
                          stacklevel=2)
    simd_path_timings.update(_time_paths(agreeing))
    _core.set_simd_path(_fastest_path(simd_path_timings))


_select_simd_path()


class Dropout:
    """A dropout layer in the style of course code: ``forward``/``__call__``, ``backward``,
    ``train()``/``eval()``.

    Parameters
    ----------
    keep_prob : float
        Probability that a unit is kept, in (0, 1].
    mode, shared_axes, store
        As for `dropout`.
    seed : int, optional
        Seed of the layer's own stream.  None spawns the layer's stream from the default
        stream, so ``fastdrop.manual_seed(s)`` before building a network makes it reproducible.
    subsequence : int, optional
        Subsequence of the layer's stream (e.g. the process rank).
    mc : bool, optional
        Monte-Carlo dropout: keep drawing masks in evaluation mode too, so that repeated
        predictions sample the ensemble of thinned networks (see `mc_predict`).  Settable later
        as ``layer.mc``.

    Examples
    --------
    >>> import numpy as np, fastdrop
    >>> layer = fastdrop.Dropout(0.8, seed=1)
    >>> a = np.ones((3, 5))
    >>> y = layer(a)               # training: a random 20 % of units zeroed, the rest / 0.8
    >>> dx = layer.backward(np.ones_like(a))
    >>> bool(np.array_equal(dx, y))
    True
    >>> bool(np.array_equal(layer.eval()(a), a))
    True
    """

    def __init__(self, keep_prob: float, *, mode: str = "inverted", shared_axes=None,
                 seed: Optional[int] = None, subsequence: int = 0, store: str = "seed",
                 mc: bool = False) -> None:
        self.keep_prob = check_keep_prob(keep_prob)
        self.mode = check_choice("mode", mode, MODES)
        self.store = check_choice("store", store, STORES)
        self.shared_axes = shared_axes
        self.stream = layer_stream(seed, subsequence)
        self.training = True
        self.mc = check_flag("mc", mc)
        self.mask: Optional[DropoutMask] = None

    def forward(self, x: np.ndarray, out: Optional[np.ndarray] = None) -> np.ndarray:
        """y for x; keeps the mask for `backward`."""
        y, self.mask = dropout(x, self.keep_prob, training=self.training or self.mc, mode=self.mode,
                               shared_axes=self.shared_axes, stream=self.stream, out=out,
                               store=self.store)
        return y

    __call__ = forward

    def backward(self, dy: np.ndarray, out: Optional[np.ndarray] = None) -> np.ndarray:
        """dx for the last forward call."""
        if self.mask is None:
            raise RuntimeError("backward called before any forward call")
        return dropout_backward(dy, self.mask, out=out)

    def train(self, mode: bool = True) -> "Dropout":
        """Switch to training (mode=True) or evaluation; returns the layer."""
        self.training = check_flag("training", mode)
        return self

    def eval(self) -> "Dropout":
        """Switch to evaluation mode: y = x (inverted, alpha) or q * x (classic), unless `mc`."""
        return self.train(False)

    def __repr__(self) -> str:
        return (f"Dropout(keep_prob={self.keep_prob}, mode={self.mode!r}, "
                f"shared_axes={self.shared_axes!r}, store={self.store!r}, "
                f"training={self.training}, mc={self.mc}, stream={self.stream!r})")


def mc_predict(forward: Callable[[np.ndarray], np.ndarray], x, n: int = 100):
    """Monte-Carlo dropout (Gal and Ghahramani 2016): the mean and standard deviation of n
    predictions, each with fresh dropout masks.

    Dropout is normally off at test time; kept on, each forward pass samples one thinned
    network, and the spread of the predictions estimates the model's uncertainty.  `forward`
    must draw fresh masks on every call: use `Dropout` layers with ``mc=True`` (or in training
    mode), or call `dropout` with a `Stream` inside it.

    Parameters
    ----------
    forward : callable
        ``forward(x)`` returns one prediction (an array, the same shape every call).
    x : object
        Passed to `forward` unchanged.
    n : int, optional
        Number of predictions, at least 1.

    Returns
    -------
    mean, std : numpy.ndarray
        Element-wise mean and (population) standard deviation of the predictions, float64,
        accumulated in one pass (Welford) without storing the n predictions.

    Examples
    --------
    >>> import numpy as np, fastdrop
    >>> layer = fastdrop.Dropout(0.5, seed=0, mc=True).eval()
    >>> mean, std = fastdrop.mc_predict(layer, np.ones(4), n=2000)
    >>> bool(np.allclose(mean, 1, atol=0.1)), bool(np.allclose(std, 1, atol=0.1))
    (True, True)
    """
    if isinstance(n, (bool, np.bool_)) or not isinstance(n, (numbers.Integral, np.integer)):
        raise TypeError(f"n must be a positive int, got {n!r}")
    if n < 1:
        raise ValueError(f"n must be at least 1, got {n}")
    mean = np.array(forward(x), dtype=np.float64)
    squares = np.zeros_like(mean)
    for count in range(2, int(n) + 1):
        prediction = np.asarray(forward(x), dtype=np.float64)
        if prediction.shape != mean.shape:
            raise ValueError(f"forward returned shape {prediction.shape} after {mean.shape}")
        delta = prediction - mean
        mean += delta / count
        squares += delta * (prediction - mean)
    return mean, np.sqrt(squares / n)
