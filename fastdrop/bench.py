"""fastdrop's benchmark: time dropout implementations on the same arrays in one process (SPEC §7).

Every figure is a ratio against baselines measured in the same run, on the same array:

- the *floor*, ``np.multiply(x, 1, out=x)``: the memory traffic any in-place dropout must do;
- the *seed* thread's NumPy code, ``D = np.random.rand(*A.shape) < keep_prob; A = A * D;
  A = A / keep_prob``;
- the *best* plain NumPy: float32 ``Generator.random`` into a reused buffer and in-place ops.

The implementations compared ("peers") are entries of `PEERS` (element dropout on 1-d arrays of
several sizes) and `CHANNEL_PEERS` (channel dropout on one (N, C, H, W) array of shape
`CHANNEL_SHAPE`); adding one is one `Peer` there.  `run` times them and returns a `Results`;
`format_report`, `report` and `plot` turn that into text, JSON-ready data and a PNG, and the
command line (``fastdrop bench``) only wires these together.
"""
from __future__ import annotations

import dataclasses
import functools
import math
import numbers
import platform
import time
from contextlib import contextmanager
from typing import (Callable, ContextManager, Dict, Iterator, List, Optional, Sequence, Tuple,
                    Union)

import numpy as np

import fastdrop
from fastdrop import _core
from fastdrop._api import SUPPORTED_DTYPES

DTYPES = tuple(dtype.name for dtype in SUPPORTED_DTYPES)
# What `fastdrop bench` times unless told otherwise (the issue's targets are for these two).
DEFAULT_DTYPES = tuple(name for name in ("float32", "float64") if name in DTYPES)
DEFAULT_SIZES = (10**4, 10**6, 64 * 10**6)
DEFAULT_KEEP_PROB = 0.8

# The channel-dropout scenario: a ResNet-sized batch of activations, (N, C, H, W), one decision
# per (sample, channel) broadcast over the spatial axes (12.8 million float32 elements, 51 MB).
CHANNEL_SHAPE = (64, 64, 56, 56)
CHANNEL_SHARED_AXES = (2, 3)
CHANNEL_DTYPE = "float32"

# How a peer is timed (`plan_timing`, `measure_group`).  The host is noisy, and every figure is a
# ratio between peers of one group (one array), so the group's peers are timed in PASSES passes
# interleaved across them: a slow spell of the host then hits every peer, not just the one timed
# during it.  Each peer gets about REPEAT_SECONDS of wall time (refills and warm-ups included),
# with at least one warm-up call and one timed call whatever they cost, and MIN_REPEATS to
# MAX_REPEATS timed calls.  Calls shorter than BATCH_SECONDS are timed in batches of consecutive
# calls (refill, then the batch in one timed region), so that the timer, the refill's Python code
# and its cache and branch-predictor disturbance do not weigh on a call of a few microseconds.
# Consecutive in-place dropout multiplies the kept values by 1/keep_prob and zeroes the others at
# each call, so a batch holds at most MAX_BATCH calls and at most as many as keep
# (1/keep_prob)**calls <= BATCH_GROWTH: the data stay below 1.5 * 16 = 24 (finite even in
# float16) and about 1/16 of them or more stay non-zero (12 calls at keep_prob 0.8).
REPEAT_SECONDS = 0.3
MIN_REPEATS = 1
MAX_REPEATS = 1000
PASSES = 3
BATCH_SECONDS = 1e-3
MAX_BATCH = 16
BATCH_GROWTH = 16.0
STATISTIC = (f"minimum over the timed calls, taken in up to {PASSES} passes interleaved across "
             "the peers of each array, each pass after a warm-up call; calls under "
             f"{BATCH_SECONDS * 1e3:g} ms timed in batches of up to {MAX_BATCH} consecutive calls "
             f"(fewer where (1/keep_prob)**calls > {BATCH_GROWTH:g}), time per call = batch time "
             "/ calls; input refilled before each batch")

FLOOR = "floor"
SEED = "seed numpy"
BEST_NUMPY = "best numpy"
FORWARD = "fastdrop forward"
FORWARD_1_THREAD = "fastdrop forward 1 thread"
BACKWARD = "fastdrop backward"
TORCH_1_THREAD = "torch dropout 1 thread"
TORCH_ALL_THREADS = "torch dropout all threads"
CHANNEL = "fastdrop channel"
FASTDROP_MODULE = "fastdrop.torch module"
TORCH_MODULE = "torch.nn.Dropout module"

# The summary after the main table: FORWARD's speed-up over each of these, per (size, dtype).
SUMMARY_BASELINES = (SEED, BEST_NUMPY, TORCH_1_THREAD, TORCH_ALL_THREADS)
SUMMARY_LABELS = {SEED: "seed", BEST_NUMPY: "best numpy", TORCH_1_THREAD: "torch 1 thread",
                  TORCH_ALL_THREADS: "torch all threads"}
TARGETS = ("forward <= 1.3x floor (float32), <= 1.2x (float64); 1 thread <= 2.0x floor "
           "(float32); >= 25x seed, >= 10x best numpy, >= 30x torch; torch module >= 10x")
CHANNEL_TARGET = "fastdrop channel <= 1.1x floor"
# The half-precision comparison (`half_precision_summary`): these dtypes against float32.
HALF_DTYPES = ("float16", "bfloat16")
HALF_TARGET = ("float16 and bfloat16 forward and backward >= 20x seed (on the same array), "
               "float32's GB/s <= 1.5x theirs")


# ---------------------------------------------------------------------------------------------
# The machine
# ---------------------------------------------------------------------------------------------

def simd_path() -> str:
    """The SIMD code path of the compiled core, e.g. ``"scalar"``.

    Returns
    -------
    str
        What ``fastdrop._core.simd_path()`` reports, or ``"scalar"`` for a core without one.
    """
    return getattr(_core, "simd_path", lambda: "scalar")()


def cpu_model() -> str:
    """The CPU's model name, from /proc/cpuinfo where there is one.

    Returns
    -------
    str
        The first "model name" of /proc/cpuinfo, else `platform.processor()`, else "unknown".
    """
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as cpuinfo:
            for line in cpuinfo:
                key, _, value = line.partition(":")
                if key.strip() == "model name" and value.strip():
                    return value.strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


@functools.lru_cache(maxsize=None)
def torch_module():
    """PyTorch when it imports, else None (its peers are then left out).

    Returns
    -------
    module or None
    """
    try:
        import torch
    except (ImportError, OSError):
        return None
    return torch


def machine_info() -> dict:
    """What a benchmark result depends on besides the code: CPU, build, threads, versions.

    Returns
    -------
    dict
        Keys ``cpu``, ``simd_path``, ``openmp``, ``threads``, ``default_threads``, ``python``,
        ``numpy``, ``fastdrop`` and ``torch`` (its version, or None when it does not import).
    """
    torch = torch_module()
    return {
        "cpu": cpu_model(),
        "simd_path": simd_path(),
        "openmp": _core.openmp_enabled(),
        "threads": fastdrop.get_num_threads(),
        "default_threads": _core.default_num_threads(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "fastdrop": fastdrop.__version__,
        "torch": None if torch is None else torch.__version__,
    }


# ---------------------------------------------------------------------------------------------
# The arrays and the peers
# ---------------------------------------------------------------------------------------------

Shape = Union[int, Sequence[int]]


@dataclasses.dataclass
class Workspace:
    """The arrays of one (shape, dtype): a pristine input and the working copy peers act on.

    Build it with `Workspace.create`.  Peers work on `x` (in place where they can); `refill`
    restores it from `source` before every batch of timed calls, outside the timed region, so
    repeated in-place dropout never drives the values to zero, subnormals or infinity (see
    `max_batch`).
    """

    keep_prob: float
    source: np.ndarray
    x: np.ndarray
    stream: fastdrop.Stream

    @classmethod
    def create(cls, shape: Shape, dtype, keep_prob: float) -> "Workspace":
        """A workspace of `shape` (an element count for a 1-d array) of `dtype`, values uniform
        in [0.5, 1.5).

        Parameters
        ----------
        shape : int or sequence of int
            Number of elements of a 1-d array, or the array's shape.
        dtype : str or numpy.dtype
            Element type, one of `DTYPES`.
        keep_prob : float
            Probability that a unit is kept, in (0, 1].

        Returns
        -------
        Workspace
        """
        shape = _as_shape(shape)
        values = np.random.default_rng(0).random(_elements(shape), dtype=np.float32)
        values += np.float32(0.5)
        source = values.astype(dtype, copy=False).reshape(shape)
        return cls(keep_prob, source, source.copy(), fastdrop.Stream(seed=0))

    def refill(self) -> None:
        """Copy the pristine input back into `x`."""
        np.copyto(self.x, self.source)


def _as_shape(shape: Shape) -> Tuple[int, ...]:
    if isinstance(shape, (numbers.Integral, np.integer)):
        return (int(shape),)
    return tuple(int(n) for n in shape)


def _elements(shape: Sequence[int]) -> int:
    return int(np.prod(shape, dtype=np.int64))


Prepare = Callable[[Workspace], ContextManager[Callable[[], object]]]


@dataclasses.dataclass(frozen=True)
class Peer:
    """One implementation in the comparison.

    Attributes
    ----------
    name : str
        Its row label.
    code : str
        The call that is timed, as shown in the table's legend.
    prepare : callable
        ``prepare(workspace)`` is a context manager that allocates what the peer needs and
        yields the zero-argument call to time; it frees that (and restores any setting it
        changed) on exit.
    mask_bytes : float
        Bytes per element moved besides reading and writing the data once (a stored bit mask).
    available : callable
        Returns False when the peer cannot run here (PyTorch not installed).
    dtypes : tuple of str or None
        The dtype names it accepts; None for all of `DTYPES`.
    """

    name: str
    code: str
    prepare: Prepare
    mask_bytes: float = 0.0
    available: Callable[[], bool] = lambda: True
    dtypes: Optional[Tuple[str, ...]] = None

    def supports(self, dtype) -> bool:
        """Whether it can run on arrays of `dtype` (a name or a numpy.dtype)."""
        return self.dtypes is None or np.dtype(dtype).name in self.dtypes


def seed_numpy_dropout(A: np.ndarray, keep_prob: float) -> np.ndarray:
    """The seed thread's forward dropout, verbatim (inverted dropout in plain NumPy).

    Parameters
    ----------
    A : numpy.ndarray
        Activations.
    keep_prob : float
        Probability that a unit is kept.

    Returns
    -------
    numpy.ndarray
        A new array: A with the dropped units zeroed and the kept ones divided by keep_prob.
    """
    D = np.random.rand(*A.shape) < keep_prob
    A = A * D
    A = A / keep_prob
    return A


@contextmanager
def _floor(ws: Workspace) -> Iterator[Callable[[], object]]:
    one = ws.x.dtype.type(1)
    yield lambda: np.multiply(ws.x, one, out=ws.x)


@contextmanager
def _seed_numpy(ws: Workspace) -> Iterator[Callable[[], object]]:
    yield lambda: seed_numpy_dropout(ws.x, ws.keep_prob)


@contextmanager
def _best_numpy(ws: Workspace) -> Iterator[Callable[[], object]]:
    """The fastest inverted dropout plain NumPy gives: float32 uniforms drawn into a reused
    buffer, then in-place compare and multiplies, no temporaries."""
    rng = np.random.default_rng(0)
    uniforms = np.empty(ws.x.shape, dtype=np.float32)
    keep = np.empty(ws.x.shape, dtype=bool)
    threshold = np.float32(ws.keep_prob)
    scale = ws.x.dtype.type(1 / ws.keep_prob)

    def call():
        rng.random(dtype=np.float32, out=uniforms)
        np.less(uniforms, threshold, out=keep)
        np.multiply(ws.x, keep, out=ws.x)
        np.multiply(ws.x, scale, out=ws.x)

    yield call


@contextmanager
def _fastdrop_threads(threads: Optional[int]) -> Iterator[None]:
    """fastdrop's thread count set to `threads` (None: left as it is), restored on exit."""
    previous = fastdrop.get_num_threads()
    if threads is not None:
        fastdrop.set_num_threads(threads)
    try:
        yield
    finally:
        fastdrop.set_num_threads(previous)


@contextmanager
def _fastdrop_forward(ws: Workspace, in_place: bool = True, store: str = "seed",
                      threads: Optional[int] = None,
                      shared_axes: Optional[Tuple[int, ...]] = None
                      ) -> Iterator[Callable[[], object]]:
    out = ws.x if in_place else np.empty_like(ws.x)
    options = {} if shared_axes is None else {"shared_axes": shared_axes}
    with _fastdrop_threads(threads):
        yield lambda: fastdrop.dropout(ws.x, ws.keep_prob, out=out, stream=ws.stream,
                                       store=store, **options)


@contextmanager
def _fastdrop_backward(ws: Workspace, store: str) -> Iterator[Callable[[], object]]:
    _, mask = fastdrop.dropout(ws.x, ws.keep_prob, out=ws.x, stream=ws.stream, store=store)
    yield lambda: fastdrop.dropout_backward(ws.x, mask, out=ws.x)


@contextmanager
def _torch_dropout(ws: Workspace, single_thread: bool,
                   function: str = "dropout") -> Iterator[Callable[[], object]]:
    """``torch.nn.functional.<function>(t, 1 - q, training=True, inplace=True)`` on a tensor
    sharing ws.x's memory, with torch's thread count 1 or fastdrop's, restored on exit."""
    torch = torch_module()
    dropout = getattr(torch.nn.functional, function)
    previous = torch.get_num_threads()
    torch.set_num_threads(1 if single_thread else fastdrop.get_num_threads())
    tensor = torch.from_numpy(ws.x)
    p = 1.0 - ws.keep_prob
    try:
        yield lambda: dropout(tensor, p, training=True, inplace=True)
    finally:
        torch.set_num_threads(previous)


@contextmanager
def _torch_module(ws: Workspace, fastdrop_layer: bool) -> Iterator[Callable[[], object]]:
    """Forward and backward of a dropout layer as a PyTorch model runs it: a new output and a new
    gradient per step, autograd in between; fastdrop.torch.Dropout or torch.nn.Dropout, on
    fastdrop's thread count."""
    torch = torch_module()
    import fastdrop.torch as fastdrop_torch

    previous = torch.get_num_threads()
    torch.set_num_threads(fastdrop.get_num_threads())
    p = 1.0 - ws.keep_prob
    layer = fastdrop_torch.Dropout(p) if fastdrop_layer else torch.nn.Dropout(p)
    x = torch.from_numpy(ws.x).requires_grad_()
    gradient = torch.ones_like(x)

    def step():
        layer(x).backward(gradient)
        x.grad = None

    try:
        yield step
    finally:
        torch.set_num_threads(previous)


def _has_torch() -> bool:
    return torch_module() is not None


# What torch.from_numpy accepts among fastdrop's dtypes (not ml_dtypes' bfloat16).
TORCH_DTYPES = ("float16", "float32", "float64")


FLOOR_PEER = Peer(FLOOR, "np.multiply(x, 1, out=x)", _floor)

PEERS: List[Peer] = [
    FLOOR_PEER,
    Peer(SEED, "D = np.random.rand(*A.shape) < q; A = A * D; A = A / q", _seed_numpy),
    Peer(BEST_NUMPY, "rng.random(dtype=float32, out=u); less(u, q, out=k); x *= k; x *= 1/q",
         _best_numpy),
    Peer(FORWARD, "fastdrop.dropout(x, q, out=x, stream=s)", _fastdrop_forward),
    Peer(FORWARD_1_THREAD, "fastdrop.dropout(x, q, out=x, stream=s), fastdrop.set_num_threads(1)",
         functools.partial(_fastdrop_forward, threads=1)),
    Peer("fastdrop forward out=", "fastdrop.dropout(x, q, out=y, stream=s)",
         functools.partial(_fastdrop_forward, in_place=False)),
    Peer("fastdrop forward bits", 'fastdrop.dropout(x, q, out=x, stream=s, store="bits")',
         functools.partial(_fastdrop_forward, store="bits"), mask_bytes=1 / 8),
    Peer(BACKWARD, "fastdrop.dropout_backward(dy, mask, out=dy), mask regenerated",
         functools.partial(_fastdrop_backward, store="seed")),
    Peer("fastdrop backward bits", "fastdrop.dropout_backward(dy, mask, out=dy), stored bits",
         functools.partial(_fastdrop_backward, store="bits"), mask_bytes=1 / 8),
    Peer(TORCH_1_THREAD, "F.dropout(t, 1 - q, inplace=True), 1 thread",
         functools.partial(_torch_dropout, single_thread=True), available=_has_torch,
         dtypes=TORCH_DTYPES),
    Peer(TORCH_ALL_THREADS, "F.dropout(t, 1 - q, inplace=True), the bench's threads",
         functools.partial(_torch_dropout, single_thread=False), available=_has_torch,
         dtypes=TORCH_DTYPES),
    # float32 only, as the PyTorch issue measures it: torch's module takes over a second per
    # step at 6.4e7 elements, and the default run must stay under a minute.
    Peer(FASTDROP_MODULE, "fastdrop.torch.Dropout(1 - q)(t).backward(g): forward + backward",
         functools.partial(_torch_module, fastdrop_layer=True), available=_has_torch,
         dtypes=("float32",)),
    Peer(TORCH_MODULE, "torch.nn.Dropout(1 - q)(t).backward(g): forward + backward",
         functools.partial(_torch_module, fastdrop_layer=False), available=_has_torch,
         dtypes=("float32",)),
]

CHANNEL_PEERS: List[Peer] = [
    FLOOR_PEER,
    Peer(CHANNEL, f"fastdrop.dropout(x, q, shared_axes={CHANNEL_SHARED_AXES}, out=x, stream=s)",
         functools.partial(_fastdrop_forward, shared_axes=CHANNEL_SHARED_AXES)),
    Peer("torch dropout2d 1 thread", "F.dropout2d(t, 1 - q, inplace=True), 1 thread",
         functools.partial(_torch_dropout, single_thread=True, function="dropout2d"),
         available=_has_torch, dtypes=TORCH_DTYPES),
    Peer("torch dropout2d all threads", "F.dropout2d(t, 1 - q, inplace=True), the bench's threads",
         functools.partial(_torch_dropout, single_thread=False, function="dropout2d"),
         available=_has_torch, dtypes=TORCH_DTYPES),
]


def available_peers(peers: Optional[Sequence[Peer]] = None) -> List[Peer]:
    """The entries of `peers` (default `PEERS`) that can run here.

    Parameters
    ----------
    peers : sequence of Peer, optional
        `PEERS` when None; `CHANNEL_PEERS` for the channel scenario.

    Returns
    -------
    list of Peer
    """
    return [peer for peer in (PEERS if peers is None else peers) if peer.available()]


# ---------------------------------------------------------------------------------------------
# Timing
# ---------------------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Record:
    """One measurement: a peer on one (size, dtype), with its ratios to the baselines.

    Attributes
    ----------
    size : int
        Elements.
    dtype : str
    peer : str
        The peer's name.
    seconds : float
        Minimum time per call: over the timed batches, a batch's time over its calls (see
        `STATISTIC`).
    ns_per_element : float
    gb_per_s : float
        Bytes read and written per second, in 10**9 bytes: 2 * itemsize per element (what an
        in-place pass moves, counted the same for every peer) plus the peer's mask bytes.
    ratio_to_floor : float
        seconds / the floor's seconds (same array and run).
    speedup_over_seed : float or None
        The seed code's seconds / seconds; None where the seed code was not timed (the channel
        scenario).
    repeats : int
        Timed calls taken, all batches and passes together.
    """

    size: int
    dtype: str
    peer: str
    seconds: float
    ns_per_element: float
    gb_per_s: float
    ratio_to_floor: float
    speedup_over_seed: Optional[float]
    repeats: int


def max_batch(keep_prob: float) -> int:
    """The most consecutive calls a batch may hold at `keep_prob`.

    In-place dropout multiplies the kept values by 1/keep_prob at each call, so a batch holds at
    most as many calls as keep ``(1 / keep_prob) ** calls <= BATCH_GROWTH``, and at most
    `MAX_BATCH`.

    Parameters
    ----------
    keep_prob : float
        Probability that a unit is kept, in (0, 1].

    Returns
    -------
    int
        Between 1 and `MAX_BATCH` (12 at keep_prob 0.8, 4 at 0.5).
    """
    if keep_prob >= 1:
        return MAX_BATCH
    # The small slack keeps an exact power, e.g. 0.5**4 == 1/16, from rounding down.
    calls = math.floor(math.log(BATCH_GROWTH) / -math.log(keep_prob) + 1e-9)
    return max(1, min(MAX_BATCH, calls))


@dataclasses.dataclass(frozen=True)
class TimingPlan:
    """How a peer's timed calls are grouped: batches (one timed region each) in passes.

    Attributes
    ----------
    passes : tuple of tuple of int
        Per pass, the number of calls in each of its batches.
    """

    passes: Tuple[Tuple[int, ...], ...]

    @property
    def calls(self) -> int:
        """Timed calls in all."""
        return sum(sum(batches) for batches in self.passes)


def plan_timing(call_seconds: float, refill_seconds: float, keep_prob: float,
                repeats: Optional[int] = None) -> TimingPlan:
    """Batches and passes for a peer whose call takes `call_seconds`.

    A call under `BATCH_SECONDS` is timed in batches of ``ceil(BATCH_SECONDS / call_seconds)``
    calls, at most `max_batch` (a longer one alone), whatever the peer, so that the peers of a
    group follow one rule.  Without `repeats`, the batches fill about `REPEAT_SECONDS` with their
    refills and a warm-up call per pass, between `MIN_REPEATS` and `MAX_REPEATS` calls, in as
    many passes (up to `PASSES`) as that budget pays a warm-up call and a batch for: a peer whose
    call is slow gets few calls and passes (one warm-up and one timed call, in one pass, where a
    call alone exceeds the budget) rather than a multiple of its cost.  With `repeats`, exactly
    that many calls, the last batch taking the remainder, in up to `PASSES` passes.  The batches
    are dealt over the passes, the earlier ones taking one more where they do not divide evenly.

    Parameters
    ----------
    call_seconds : float
        Time of one call, after its one-off costs (see `measure_group`).
    refill_seconds : float
        Time of one `Workspace.refill`.
    keep_prob : float
        Probability that a unit is kept (it bounds the batch, see `max_batch`).
    repeats : int, optional
        Timed calls; None chooses them.

    Returns
    -------
    TimingPlan
    """
    call_seconds = max(call_seconds, 1e-9)
    batch = min(max_batch(keep_prob), max(1, math.ceil(BATCH_SECONDS / call_seconds)))
    if repeats is not None:
        batch = min(batch, repeats)
        sizes = [batch] * (repeats // batch) + ([repeats % batch] if repeats % batch else [])
        passes = min(PASSES, len(sizes))
    else:
        batch_seconds = refill_seconds + batch * call_seconds
        passes = min(PASSES, max(1, int(REPEAT_SECONDS // (call_seconds + batch_seconds))))
        wanted = round((REPEAT_SECONDS - passes * call_seconds) / batch_seconds)
        count = max(passes, wanted, math.ceil(MIN_REPEATS / batch))
        count = min(count, max(1, MAX_REPEATS // batch))
        passes = min(passes, count)
        sizes = [batch] * count
    return TimingPlan(tuple(tuple(sizes[k::passes]) for k in range(passes)))


def _time_batch(ws: Workspace, call: Callable[[], object], calls: int) -> float:
    """Refill, then time `calls` consecutive calls; seconds per call."""
    ws.refill()
    start = time.perf_counter()
    for _ in range(calls):
        call()
    return (time.perf_counter() - start) / calls


def measure_group(peers: Sequence[Peer], ws: Workspace, repeats: Optional[int] = None,
                  progress: Optional[Callable[[int, Peer, int], None]] = None
                  ) -> List[Tuple[float, int]]:
    """Time `peers` on `ws`, in passes interleaved across them.

    Pass 1 takes each peer in turn: inside its `Peer.prepare` context, a warm-up call (it pays
    one-off costs: first-use initialisation, page faults of buffers the context allocated), a
    refill (timed, for the plan) and a probe call, then `plan_timing` from the faster of the two
    (so a warm-up slowed by one-off costs does not cut the repeats) and the pass's batches.  The probe counts as the first timed
    call where the plan times calls one at a time; otherwise it is a second warm-up.  Each later
    pass takes the peers that planned that many passes, in the same order, each in its own
    context again, a warm-up call first (the context may have allocated new buffers), then its
    batches.  Every timed batch starts from a refilled input.

    Parameters
    ----------
    peers : sequence of Peer
    ws : Workspace
    repeats : int, optional
        Timed calls per peer; None lets `plan_timing` choose them.
    progress : callable, optional
        ``progress(finished, peer, number)`` before pass `number` (from 1) of `peer`, with
        `finished` the number of `peers` whose passes are all done.

    Returns
    -------
    list of (float, int)
        Per peer, in order: the fastest batch's time per call and the number of timed calls.
    """
    plans: List[Optional[TimingPlan]] = [None] * len(peers)
    fastest = [math.inf] * len(peers)
    finished = 0
    for index in range(PASSES):
        for k, peer in enumerate(peers):
            plan = plans[k]
            if plan is not None and index >= len(plan.passes):
                continue
            if progress is not None:
                progress(finished, peer, index + 1)
            with peer.prepare(ws) as call:
                # The warm-up is not refilled first: it runs on what the last batch left (at
                # most max_batch calls deep, so one more keeps the values finite) and is not
                # timed, and skipping its refill halves what a pass costs on large arrays.
                start = time.perf_counter()
                call()
                warmup = time.perf_counter() - start
                if plan is None:
                    start = time.perf_counter()
                    ws.refill()
                    refilled = time.perf_counter()
                    call()
                    probe = time.perf_counter() - refilled
                    refill = refilled - start
                    plan = plans[k] = plan_timing(min(warmup, probe), refill, ws.keep_prob,
                                                  repeats)
                batches = plan.passes[index]
                if index == 0 and batches[0] == 1:
                    fastest[k] = probe
                    batches = batches[1:]
                for calls in batches:
                    fastest[k] = min(fastest[k], _time_batch(ws, call, calls))
            if index == len(plan.passes) - 1:
                finished += 1
    return [(seconds, plan.calls) for seconds, plan in zip(fastest, plans)]


def format_size(size: int) -> str:
    """`size` compactly: ``10000`` as "1e4", ``64000000`` as "6.4e7", ``1234`` as "1234".

    Parameters
    ----------
    size : int

    Returns
    -------
    str
    """
    mantissa, _, exponent = f"{size:.3g}".partition("e")
    if not exponent or float(f"{size:.3g}") != size:
        return str(size)
    return f"{mantissa}e{int(exponent)}"


def format_shape(shape: Sequence[int]) -> str:
    """`shape` as "64x64x56x56" (a 1-d shape as its `format_size`)."""
    shape = _as_shape(shape)
    return format_size(shape[0]) if len(shape) == 1 else "x".join(str(n) for n in shape)


def _records(size: int, dtype: np.dtype, timings: Sequence[tuple]) -> List[Record]:
    seconds_of = {peer.name: seconds for peer, seconds, _ in timings}
    seed = seconds_of.get(SEED)
    records = []
    for peer, seconds, repeats in timings:
        bytes_moved = size * (2 * dtype.itemsize + peer.mask_bytes)
        records.append(Record(
            size=size, dtype=dtype.name, peer=peer.name, seconds=seconds,
            ns_per_element=seconds * 1e9 / size, gb_per_s=bytes_moved / seconds / 1e9,
            ratio_to_floor=seconds / seconds_of[FLOOR],
            speedup_over_seed=None if seed is None else seed / seconds, repeats=repeats))
    return records


@dataclasses.dataclass(frozen=True)
class Group:
    """One array of a benchmark plan and the peers timed on it (the floor first).

    Attributes
    ----------
    shape : tuple of int
    dtype : str
    peers : tuple of Peer
    """

    shape: Tuple[int, ...]
    dtype: str
    peers: Tuple[Peer, ...]


Progress = Callable[[int, int, str], None]


def run_groups(groups: Sequence[Group], keep_prob: float = DEFAULT_KEEP_PROB,
               repeats: Optional[int] = None,
               progress: Optional[Progress] = None) -> List[List[Record]]:
    """Time each group's peers on one array of its shape and dtype, at the current thread count.

    Arrays are allocated once per group and freed before the next.

    Parameters
    ----------
    groups : sequence of Group
        Each with the floor among its peers.
    keep_prob : float, optional
        Probability that a unit is kept.
    repeats : int, optional
        Timed calls per peer; None lets `plan_timing` choose them per peer.
    progress : callable, optional
        ``progress(done, total, label)`` is called before each pass of each peer, with `done`
        the peers whose passes are all done and `label` naming the peer, array and pass, and
        once at the end with done == total and an empty label.

    Returns
    -------
    list of list of Record
        One list per group, in the order of its peers.
    """
    total = sum(len(group.peers) for group in groups)
    done = 0
    results = []
    for group in groups:
        dtype = np.dtype(group.dtype)
        ws = Workspace.create(group.shape, dtype, keep_prob)

        def step(finished, peer, number):
            progress(done + finished, total,
                     f"{peer.name} {dtype.name} {format_shape(group.shape)} pass {number}")

        timings = measure_group(group.peers, ws, repeats, None if progress is None else step)
        done += len(group.peers)
        del ws
        results.append(_records(_elements(group.shape), dtype,
                                [(peer, *timing) for peer, timing in zip(group.peers, timings)]))
    if progress is not None:
        progress(done, total, "")
    return results


@dataclasses.dataclass(frozen=True)
class Results:
    """What `run` measured.

    Attributes
    ----------
    keep_prob : float
    records : list of Record
        The main table: the available peers of `PEERS` on every (size, dtype), ordered by
        size, dtype, then the order of `PEERS`.
    channel_shape : tuple of int or None
        The channel scenario's shape, None when it was skipped.
    channel_records : list of Record
        The channel table: the available `CHANNEL_PEERS` on a `CHANNEL_DTYPE` array of
        `channel_shape` (empty when skipped).
    """

    keep_prob: float
    records: List[Record]
    channel_shape: Optional[Tuple[int, ...]] = None
    channel_records: List[Record] = dataclasses.field(default_factory=list)


def run(sizes: Sequence[int] = DEFAULT_SIZES, dtypes: Sequence[str] = DEFAULT_DTYPES,
        keep_prob: float = DEFAULT_KEEP_PROB, repeats: Optional[int] = None,
        progress: Optional[Progress] = None,
        channel_shape: Optional[Sequence[int]] = None) -> Results:
    """Time every available peer on every (size, dtype) it supports, and optionally channel
    dropout, at the current thread count.

    Parameters
    ----------
    sizes : sequence of int
        Elements per array, each at least 1.
    dtypes : sequence of str
        Names from `DTYPES`.
    keep_prob : float, optional
        Probability that a unit is kept.
    repeats : int, optional
        Timed calls per peer; None lets `plan_timing` choose them per peer.
    progress : callable, optional
        As for `run_groups`, counting both scenarios.
    channel_shape : sequence of int, optional
        Also time `CHANNEL_PEERS` on a `CHANNEL_DTYPE` array of this (N, C, H, W) shape
        (`CHANNEL_SHAPE` in ``fastdrop bench``); None skips the channel scenario.

    Returns
    -------
    Results
    """
    def peers(candidates, dtype):
        return tuple(peer for peer in available_peers(candidates) if peer.supports(dtype))

    groups = [Group((size,), name, peers(PEERS, name)) for size in sizes for name in dtypes]
    if channel_shape is not None:
        channel_shape = _as_shape(channel_shape)
        groups.append(Group(channel_shape, CHANNEL_DTYPE, peers(CHANNEL_PEERS, CHANNEL_DTYPE)))
    measured = run_groups(groups, keep_prob, repeats, progress)
    main = measured[:len(sizes) * len(dtypes)]
    channel = measured[len(main):]
    return Results(keep_prob=keep_prob, records=[r for group in main for r in group],
                   channel_shape=channel_shape,
                   channel_records=[r for group in channel for r in group])


# ---------------------------------------------------------------------------------------------
# Reporting
# ---------------------------------------------------------------------------------------------

def _number(value: float) -> str:
    """Three significant digits, without an exponent."""
    if value >= 100:
        return f"{value:.0f}"
    if value >= 10:
        return f"{value:.1f}"
    if value >= 1:
        return f"{value:.2f}"
    return f"{value:.3f}"


def machine_line(machine: dict) -> str:
    """`machine_info` on one line.

    Parameters
    ----------
    machine : dict
        As returned by `machine_info`.

    Returns
    -------
    str
    """
    torch = "not installed" if machine["torch"] is None else machine["torch"]
    return (f"CPU {machine['cpu']} | threads {machine['threads']} "
            f"(default {machine['default_threads']}) | SIMD {machine['simd_path']} | "
            f"OpenMP {'on' if machine['openmp'] else 'off'} | python {machine['python']} | "
            f"numpy {machine['numpy']} | fastdrop {machine['fastdrop']} | torch {torch}")


def _align(header: Sequence[str], rows: Sequence[Sequence[str]], left: int,
           groups: Optional[Sequence[object]] = None) -> List[str]:
    """`header` and `rows` in columns two spaces apart: the first `left` columns left-aligned,
    the others right-aligned; a blank line wherever `groups` (one key per row) changes."""
    widths = [max(len(row[k]) for row in [header, *rows]) for k in range(len(header))]

    def line(row):
        cells = [cell.ljust(w) if k < left else cell.rjust(w)
                 for k, (cell, w) in enumerate(zip(row, widths))]
        return "  ".join(cells).rstrip()

    lines = [line(header)]
    previous = None
    for k, row in enumerate(rows):
        key = None if groups is None else groups[k]
        if k and key != previous:
            lines.append("")
        previous = key
        lines.append(line(row))
    return lines


def format_records(records: Sequence[Record], seed_column: bool = True,
                   shape: Optional[Sequence[int]] = None) -> List[str]:
    """A table of `records`, one row each, a blank line between (size, dtype) groups.

    Parameters
    ----------
    records : sequence of Record
    seed_column : bool, optional
        Include "speed-up over seed" (False for records without a seed baseline).
    shape : sequence of int, optional
        The records' common array shape, shown in a first column "shape" instead of "size".

    Returns
    -------
    list of str
        The header line, then the rows.
    """
    header = ["size" if shape is None else "shape", "dtype", "peer", "ns/element", "GB/s",
              "ratio to floor"]
    if seed_column:
        header.append("speed-up over seed")
    header.append("repeats")
    rows = []
    for r in records:
        where = format_size(r.size) if shape is None else format_shape(shape)
        row = [where, r.dtype, r.peer, f"{_number(r.ns_per_element)} ns",
               f"{_number(r.gb_per_s)} GB/s", f"{_number(r.ratio_to_floor)}x floor"]
        if seed_column:
            row.append("-" if r.speedup_over_seed is None
                       else f"{_number(r.speedup_over_seed)}x seed")
        row.append(str(r.repeats))
        rows.append(row)
    return _align(header, rows, left=3, groups=[(r.size, r.dtype) for r in records])


def _by_array(records: Sequence[Record]) -> Dict[tuple, Dict[str, Record]]:
    """The records per (size, dtype), in their order, each a dict from peer name to record."""
    by_group: Dict[tuple, Dict[str, Record]] = {}
    for record in records:
        by_group.setdefault((record.size, record.dtype), {})[record.peer] = record
    return by_group


def summary(records: Sequence[Record]) -> List[dict]:
    """Per (size, dtype), fastdrop forward against the targets' baselines.

    Parameters
    ----------
    records : sequence of Record
        The main table, as in `Results.records`.

    Returns
    -------
    list of dict
        One per (size, dtype) where "fastdrop forward" was timed, in the records' order:
        ``size``, ``dtype``, ``ratio_to_floor`` (of "fastdrop forward"),
        ``ratio_to_floor_1_thread`` (of "fastdrop forward 1 thread", None when absent) and
        ``speedup_over``, a dict from each `SUMMARY_BASELINES` peer that was timed to its
        seconds / fastdrop forward's seconds, and ``module_speedup``, torch.nn.Dropout's
        forward + backward time over fastdrop.torch.Dropout's (None without torch).
    """
    by_group = _by_array(records)
    rows = []
    for (size, dtype), peers in by_group.items():
        forward = peers.get(FORWARD)
        if forward is None:
            continue
        single = peers.get(FORWARD_1_THREAD)
        rows.append({
            "size": size,
            "dtype": dtype,
            "ratio_to_floor": forward.ratio_to_floor,
            "ratio_to_floor_1_thread": None if single is None else single.ratio_to_floor,
            "speedup_over": {name: peers[name].seconds / forward.seconds
                             for name in SUMMARY_BASELINES if name in peers},
            "module_speedup": (peers[TORCH_MODULE].seconds / peers[FASTDROP_MODULE].seconds
                               if FASTDROP_MODULE in peers and TORCH_MODULE in peers else None),
        })
    return rows


def format_summary(records: Sequence[Record]) -> List[str]:
    """`summary` as a table: the ratios to the floor of fastdrop forward (on the bench's threads
    and on 1), then its speed-up over each baseline that was timed.

    Parameters
    ----------
    records : sequence of Record

    Returns
    -------
    list of str
        A title line and the table; empty when there is nothing to summarise.
    """
    rows = summary(records)
    if not rows:
        return []
    baselines = [name for name in SUMMARY_BASELINES
                 if any(name in row["speedup_over"] for row in rows)]
    modules = any(row["module_speedup"] is not None for row in rows)
    header = ["size", "dtype", "x floor", "1 thread x floor",
              *(f"over {SUMMARY_LABELS[name]}" for name in baselines),
              *(["module over torch.nn"] if modules else [])]
    cells = []
    for row in rows:
        single = row["ratio_to_floor_1_thread"]
        speedups = row["speedup_over"]
        module = row["module_speedup"]
        cells.append([format_size(row["size"]), row["dtype"], f"{_number(row['ratio_to_floor'])}x",
                      "-" if single is None else f"{_number(single)}x",
                      *("-" if name not in speedups else f"{_number(speedups[name])}x"
                        for name in baselines),
                      *([("-" if module is None else f"{_number(module)}x")] if modules else [])])
    return [f"summary of {FORWARD}: ratio to the floor (lower is better), speed-up over the "
            "peers (higher is better)",
            f"targets at 6.4e7: {TARGETS}", "",
            *_align(header, cells, left=2)]


def half_precision_summary(records: Sequence[Record]) -> List[dict]:
    """Per size, float16 and bfloat16 forward and backward against float32's at the same size.

    Parameters
    ----------
    records : sequence of Record
        The main table, as in `Results.records`.

    Returns
    -------
    list of dict
        One per (size, dtype of `HALF_DTYPES`) where float32 ran at the same size, in the
        records' order.  For ``direction`` in "forward" and "backward" (`FORWARD` and `BACKWARD`):
        ``{direction}_gb_per_s``, ``{direction}_float32_gb_per_s`` and
        ``{direction}_float32_ratio``, float32's GB/s over this dtype's (lower is better), and
        ``{direction}_speedup_over_seed``; each None where its peer was not timed.
    """
    by_group = _by_array(records)
    rows = []
    for (size, dtype), peers in by_group.items():
        float32 = by_group.get((size, "float32"))
        if dtype not in HALF_DTYPES or float32 is None:
            continue
        row: dict = {"size": size, "dtype": dtype}
        for direction, peer in (("forward", FORWARD), ("backward", BACKWARD)):
            half, single = peers.get(peer), float32.get(peer)
            row[f"{direction}_gb_per_s"] = None if half is None else half.gb_per_s
            row[f"{direction}_float32_gb_per_s"] = None if single is None else single.gb_per_s
            row[f"{direction}_float32_ratio"] = (None if half is None or single is None
                                                 else single.gb_per_s / half.gb_per_s)
            row[f"{direction}_speedup_over_seed"] = None if half is None else half.speedup_over_seed
        rows.append(row)
    return rows


def format_half_precision_summary(records: Sequence[Record]) -> List[str]:
    """`half_precision_summary` as a table.

    Parameters
    ----------
    records : sequence of Record

    Returns
    -------
    list of str
        A title line and the table; empty when no float16 or bfloat16 size ran beside float32.
    """
    rows = half_precision_summary(records)
    if not rows:
        return []

    def cell(value, unit):
        return "-" if value is None else f"{_number(value)}{unit}"

    header = ["size", "dtype"]
    for direction in ("forward", "backward"):
        header += [f"{direction} GB/s", f"float32 {direction} GB/s", "float32 / this"]
    header += ["forward over seed", "backward over seed"]
    cells = []
    for row in rows:
        line = [format_size(row["size"]), row["dtype"]]
        for direction in ("forward", "backward"):
            line += [cell(row[f"{direction}_gb_per_s"], ""),
                     cell(row[f"{direction}_float32_gb_per_s"], ""),
                     cell(row[f"{direction}_float32_ratio"], "x")]
        line += [cell(row["forward_speedup_over_seed"], "x"),
                 cell(row["backward_speedup_over_seed"], "x")]
        cells.append(line)
    return ["half precision: float16 and bfloat16 against float32 at the same size; "
            f"targets: {HALF_TARGET}", "", *_align(header, cells, left=2)]


def format_report(results: Results, machine: dict) -> str:
    """The benchmark's report: a header, the main table, its summary, the channel table and a
    legend of the peers.

    Parameters
    ----------
    results : Results
        As returned by `run`.
    machine : dict
        As returned by `machine_info`.

    Returns
    -------
    str
        Lines joined by newlines, with no trailing newline.
    """
    lines = [
        f"fastdrop bench: {machine_line(machine)}",
        f"keep_prob {results.keep_prob}; time per call: {STATISTIC}; GB/s counts bytes read + "
        "written (2 x itemsize per element, + 1/8 byte for a bit mask)",
    ]
    if machine["torch"] is None:
        lines.append("note: torch is not installed; its rows are skipped")
    lines += ["", *format_records(results.records)]
    for section in (format_summary(results.records),
                    format_half_precision_summary(results.records)):
        if section:
            lines += ["", *section]
    if results.channel_shape is not None:
        shape = results.channel_shape
        lines += ["", f"channel dropout: {CHANNEL_DTYPE} x of shape {format_shape(shape)} "
                      f"({format_size(_elements(shape))} elements), shared_axes="
                      f"{CHANNEL_SHARED_AXES}, one decision per (sample, channel); target: "
                      f"{CHANNEL_TARGET}", ""]
        lines += format_records(results.channel_records, seed_column=False, shape=shape)
    names = {record.peer for record in [*results.records, *results.channel_records]}
    peers = list({peer.name: peer for peer in [*PEERS, *CHANNEL_PEERS]
                  if peer.name in names}.values())
    name_width = max((len(peer.name) for peer in peers), default=0)
    lines += ["", "peers (x: the input, q: keep_prob, s: a fastdrop.Stream):"]
    lines += [f"  {peer.name.ljust(name_width)}  {peer.code}" for peer in peers]
    return "\n".join(lines)


def report(results: Results, machine: dict) -> dict:
    """The benchmark's results as JSON-ready data.

    Parameters
    ----------
    results : Results
        As returned by `run`.
    machine : dict
        As returned by `machine_info`.

    Returns
    -------
    dict
        Keys ``machine``, ``keep_prob``, ``statistic``, ``records`` (a list of dicts with the
        fields of `Record`), ``summary`` (as returned by `summary`), ``half_precision`` (as
        returned by `half_precision_summary`) and ``channel``: None when
        the channel scenario was skipped, else a dict with ``shape``, ``shared_axes``,
        ``dtype`` and ``records``.
    """
    channel = None
    if results.channel_shape is not None:
        channel = {
            "shape": list(results.channel_shape),
            "shared_axes": list(CHANNEL_SHARED_AXES),
            "dtype": CHANNEL_DTYPE,
            "records": [dataclasses.asdict(record) for record in results.channel_records],
        }
    return {
        "machine": machine,
        "keep_prob": results.keep_prob,
        "statistic": STATISTIC,
        "records": [dataclasses.asdict(record) for record in results.records],
        "summary": summary(results.records),
        "half_precision": half_precision_summary(results.records),
        "channel": channel,
    }


# ---------------------------------------------------------------------------------------------
# The plot (matplotlib: the optional extra fastdropout[plot])
# ---------------------------------------------------------------------------------------------

PLOT_INSTALL_HINT = 'pip install "fastdropout[plot]"'


def plot_available() -> Optional[str]:
    """Whether `plot` can draw here.

    Returns
    -------
    str or None
        None when matplotlib and its Agg backend import, else why not.
    """
    try:
        import matplotlib  # noqa: F401
        from matplotlib.backends.backend_agg import FigureCanvasAgg  # noqa: F401
        from matplotlib.figure import Figure  # noqa: F401
    except ImportError as error:
        return f"matplotlib is not importable ({error})"
    return None


def plot(records: Sequence[Record], path: str, title: str = "") -> None:
    """Draw throughput against size, one line per peer, one subplot per dtype, as a PNG.

    Uses matplotlib's Agg canvas directly, without pyplot, so the global backend is untouched.

    Parameters
    ----------
    records : sequence of Record
        The main table, as in `Results.records`.
    path : str
        Where to write the PNG.
    title : str, optional
        The figure's title (e.g. the machine line).

    Raises
    ------
    ImportError
        When matplotlib is not installed (``pip install "fastdropout[plot]"``).
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    dtypes = list(dict.fromkeys(record.dtype for record in records))
    names = list(dict.fromkeys(record.peer for record in records))
    figure = Figure(figsize=(6.5 * max(len(dtypes), 1), 6.5), layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.subplots(1, max(len(dtypes), 1), sharey=True, squeeze=False)[0]
    colors = [f"C{k}" for k in range(10)]
    markers = "osD^v<>ph*"
    for ax, dtype in zip(axes, dtypes):
        for k, name in enumerate(names):
            points = sorted((r.size, r.gb_per_s) for r in records
                            if r.dtype == dtype and r.peer == name)
            if not points:
                continue
            style = {"color": "black", "linestyle": "--", "marker": "s"} if name == FLOOR else {
                "color": colors[k % len(colors)], "marker": markers[k % len(markers)],
                "linestyle": "-" if name.startswith("fastdrop") else ":"}
            ax.plot([p[0] for p in points], [p[1] for p in points], label=name, linewidth=1.6,
                    markersize=5, **style)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_title(dtype)
        ax.set_xlabel("elements per array")
        ax.grid(True, which="major", alpha=0.4)
        ax.grid(True, which="minor", alpha=0.15)
    axes[0].set_ylabel("throughput, GB/s (bytes read + written)")
    handles, labels = axes[0].get_legend_handles_labels()
    figure.legend(handles, labels, loc="outside lower center", ncol=4, fontsize="small")
    if title:
        figure.suptitle(title, fontsize="small")
    figure.savefig(path, format="png", dpi=100)
