"""fastdrop's benchmark: time dropout implementations on the same arrays in one process (SPEC §7).

Every figure is a ratio against baselines measured in the same run, on the same array:

- the *floor*, ``np.multiply(x, 1, out=x)``: the memory traffic any in-place dropout must do;
- the *seed* thread's NumPy code, ``D = np.random.rand(*A.shape) < keep_prob; A = A * D;
  A = A / keep_prob``;
- the *best* plain NumPy: float32 ``Generator.random`` into a reused buffer and in-place ops.

The implementations compared ("peers") are entries of `PEERS`; adding one is one `Peer` there.
`run` returns the measurements as a list of `Record`; `format_table` and `report` turn them into
text and JSON-ready data, and the command line (``fastdrop bench``) only wires these together.
"""
from __future__ import annotations

import dataclasses
import functools
import platform
import time
from contextlib import contextmanager
from typing import Callable, ContextManager, Iterator, List, Optional, Sequence

import numpy as np

import fastdrop
from fastdrop import _core
from fastdrop._api import SUPPORTED_DTYPES

DTYPES = tuple(dtype.name for dtype in SUPPORTED_DTYPES)
DEFAULT_SIZES = (10**4, 10**6, 64 * 10**6)
DEFAULT_KEEP_PROB = 0.8

# Automatic repeats: enough timed calls to fill about REPEAT_SECONDS per peer, within bounds.
REPEAT_SECONDS = 0.25
MIN_REPEATS = 1
MAX_REPEATS = 100
STATISTIC = "minimum over the timed calls, after one warm-up call; input refilled before each"

FLOOR = "floor"
SEED = "seed numpy"
BEST_NUMPY = "best numpy"


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

@dataclasses.dataclass
class Workspace:
    """The arrays of one (size, dtype): a pristine input and the working copy peers act on.

    Build it with `Workspace.create`.  Peers work on `x` (in place where they can); `refill`
    restores it from `source` before every call, outside the timed region, so repeated in-place
    dropout never drives the values to zero, subnormals or infinity.
    """

    keep_prob: float
    source: np.ndarray
    x: np.ndarray
    stream: fastdrop.Stream

    @classmethod
    def create(cls, size: int, dtype, keep_prob: float) -> "Workspace":
        """A workspace of `size` elements of `dtype`, values uniform in [0.5, 1.5).

        Parameters
        ----------
        size : int
            Number of elements.
        dtype : str or numpy.dtype
            Element type, one of `DTYPES`.
        keep_prob : float
            Probability that a unit is kept, in (0, 1].

        Returns
        -------
        Workspace
        """
        values = np.random.default_rng(0).random(size, dtype=np.float32)
        values += np.float32(0.5)
        source = values.astype(dtype, copy=False)
        return cls(keep_prob, source, source.copy(), fastdrop.Stream(seed=0))

    def refill(self) -> None:
        """Copy the pristine input back into `x`."""
        np.copyto(self.x, self.source)


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
        yields the zero-argument call to time; it frees that on exit.
    mask_bytes : float
        Bytes per element moved besides reading and writing the data once (a stored bit mask).
    available : callable
        Returns False when the peer cannot run here (PyTorch not installed).
    """

    name: str
    code: str
    prepare: Prepare
    mask_bytes: float = 0.0
    available: Callable[[], bool] = lambda: True


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
def _fastdrop_forward(ws: Workspace, in_place: bool = True,
                      store: str = "seed") -> Iterator[Callable[[], object]]:
    out = ws.x if in_place else np.empty_like(ws.x)
    yield lambda: fastdrop.dropout(ws.x, ws.keep_prob, out=out, stream=ws.stream, store=store)


@contextmanager
def _fastdrop_backward(ws: Workspace, store: str) -> Iterator[Callable[[], object]]:
    _, mask = fastdrop.dropout(ws.x, ws.keep_prob, out=ws.x, stream=ws.stream, store=store)
    yield lambda: fastdrop.dropout_backward(ws.x, mask, out=ws.x)


@contextmanager
def _torch_dropout(ws: Workspace, single_thread: bool) -> Iterator[Callable[[], object]]:
    torch = torch_module()
    previous = torch.get_num_threads()
    torch.set_num_threads(1 if single_thread else fastdrop.get_num_threads())
    tensor = torch.from_numpy(ws.x)
    p = 1.0 - ws.keep_prob
    try:
        yield lambda: torch.nn.functional.dropout(tensor, p, training=True, inplace=True)
    finally:
        torch.set_num_threads(previous)


def _has_torch() -> bool:
    return torch_module() is not None


PEERS: List[Peer] = [
    Peer(FLOOR, "np.multiply(x, 1, out=x)", _floor),
    Peer(SEED, "D = np.random.rand(*A.shape) < q; A = A * D; A = A / q", _seed_numpy),
    Peer(BEST_NUMPY, "rng.random(dtype=float32, out=u); less(u, q, out=k); x *= k; x *= 1/q",
         _best_numpy),
    Peer("fastdrop forward", "fastdrop.dropout(x, q, out=x, stream=s)", _fastdrop_forward),
    Peer("fastdrop forward out=", "fastdrop.dropout(x, q, out=y, stream=s)",
         functools.partial(_fastdrop_forward, in_place=False)),
    Peer("fastdrop forward bits", 'fastdrop.dropout(x, q, out=x, stream=s, store="bits")',
         functools.partial(_fastdrop_forward, store="bits"), mask_bytes=1 / 8),
    Peer("fastdrop backward", "fastdrop.dropout_backward(dy, mask, out=dy), mask regenerated",
         functools.partial(_fastdrop_backward, store="seed")),
    Peer("fastdrop backward bits", "fastdrop.dropout_backward(dy, mask, out=dy), stored bits",
         functools.partial(_fastdrop_backward, store="bits"), mask_bytes=1 / 8),
    Peer("torch dropout 1 thread", "F.dropout(t, 1 - q, inplace=True), 1 thread",
         functools.partial(_torch_dropout, single_thread=True), available=_has_torch),
    Peer("torch dropout all threads", "F.dropout(t, 1 - q, inplace=True), the bench's threads",
         functools.partial(_torch_dropout, single_thread=False), available=_has_torch),
]


def available_peers() -> List[Peer]:
    """The entries of `PEERS` that can run here.

    Returns
    -------
    list of Peer
    """
    return [peer for peer in PEERS if peer.available()]


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
        Minimum time of one call.
    ns_per_element : float
    gb_per_s : float
        Bytes read and written per second, in 10**9 bytes: 2 * itemsize per element (what an
        in-place pass moves, counted the same for every peer) plus the peer's mask bytes.
    ratio_to_floor : float
        seconds / the floor's seconds (same size, dtype and run).
    speedup_over_seed : float
        The seed code's seconds / seconds.
    repeats : int
        Timed calls taken.
    """

    size: int
    dtype: str
    peer: str
    seconds: float
    ns_per_element: float
    gb_per_s: float
    ratio_to_floor: float
    speedup_over_seed: float
    repeats: int


def auto_repeats(warmup_seconds: float) -> int:
    """Timed calls for a peer whose warm-up call took `warmup_seconds`.

    Parameters
    ----------
    warmup_seconds : float

    Returns
    -------
    int
        About `REPEAT_SECONDS` worth of calls, between `MIN_REPEATS` and `MAX_REPEATS`.
    """
    wanted = REPEAT_SECONDS / max(warmup_seconds, 1e-9)
    return int(min(MAX_REPEATS, max(MIN_REPEATS, wanted)))


def _timed_call(ws: Workspace, call: Callable[[], object]) -> float:
    ws.refill()
    start = time.perf_counter()
    call()
    return time.perf_counter() - start


def measure(peer: Peer, ws: Workspace, repeats: Optional[int] = None) -> tuple:
    """Time `peer` on `ws`: one warm-up call, then `repeats` timed calls.

    Parameters
    ----------
    peer : Peer
    ws : Workspace
    repeats : int, optional
        Timed calls; None chooses them with `auto_repeats`.

    Returns
    -------
    seconds : float
        The fastest timed call.
    repeats : int
        The number of timed calls.
    """
    with peer.prepare(ws) as call:
        warmup = _timed_call(ws, call)
        repeats = repeats or auto_repeats(warmup)
        return min(_timed_call(ws, call) for _ in range(repeats)), repeats


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


def _records(size: int, dtype: np.dtype, timings: Sequence[tuple]) -> List[Record]:
    seconds_of = {peer.name: seconds for peer, seconds, _ in timings}
    records = []
    for peer, seconds, repeats in timings:
        bytes_moved = size * (2 * dtype.itemsize + peer.mask_bytes)
        records.append(Record(
            size=size, dtype=dtype.name, peer=peer.name, seconds=seconds,
            ns_per_element=seconds * 1e9 / size, gb_per_s=bytes_moved / seconds / 1e9,
            ratio_to_floor=seconds / seconds_of[FLOOR],
            speedup_over_seed=seconds_of[SEED] / seconds, repeats=repeats))
    return records


Progress = Callable[[int, int, str], None]


def run(sizes: Sequence[int] = DEFAULT_SIZES, dtypes: Sequence[str] = DTYPES,
        keep_prob: float = DEFAULT_KEEP_PROB, repeats: Optional[int] = None,
        progress: Optional[Progress] = None) -> List[Record]:
    """Time every available peer on every (size, dtype), at the current thread count.

    Arrays are allocated once per (size, dtype) and freed before the next.

    Parameters
    ----------
    sizes : sequence of int
        Elements per array, each at least 1.
    dtypes : sequence of str
        Names from `DTYPES`.
    keep_prob : float, optional
        Probability that a unit is kept.
    repeats : int, optional
        Timed calls per peer; None chooses them per peer with `auto_repeats`.
    progress : callable, optional
        ``progress(done, total, label)`` is called before each measurement, with `label`
        naming it, and once at the end with done == total and an empty label.

    Returns
    -------
    list of Record
        Ordered by size, dtype, then the order of `PEERS`.
    """
    peers = available_peers()
    total = len(sizes) * len(dtypes) * len(peers)
    done = 0
    records = []
    for size in sizes:
        for name in dtypes:
            dtype = np.dtype(name)
            ws = Workspace.create(size, dtype, keep_prob)
            timings = []
            for peer in peers:
                if progress is not None:
                    progress(done, total, f"{peer.name} {dtype.name} {format_size(size)}")
                timings.append((peer, *measure(peer, ws, repeats)))
                done += 1
            del ws
            records.extend(_records(size, dtype, timings))
    if progress is not None:
        progress(done, total, "")
    return records


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


def format_table(records: Sequence[Record], machine: dict, keep_prob: float) -> str:
    """The benchmark's report: a header, one row per record, and a legend of the peers.

    Parameters
    ----------
    records : sequence of Record
        As returned by `run`.
    machine : dict
        As returned by `machine_info`.
    keep_prob : float
        The keep probability the records were taken with.

    Returns
    -------
    str
        Lines joined by newlines, with no trailing newline.
    """
    header = ("size", "dtype", "peer", "ns/element", "GB/s", "ratio to floor",
              "speed-up over seed", "repeats")
    rows = [(format_size(r.size), r.dtype, r.peer, f"{_number(r.ns_per_element)} ns",
             f"{_number(r.gb_per_s)} GB/s", f"{_number(r.ratio_to_floor)}x floor",
             f"{_number(r.speedup_over_seed)}x seed", str(r.repeats)) for r in records]
    widths = [max(len(row[k]) for row in [header, *rows]) for k in range(len(header))]
    left = 3  # size, dtype and peer are left-aligned, the numbers right-aligned

    def line(row):
        cells = [cell.ljust(w) if k < left else cell.rjust(w)
                 for k, (cell, w) in enumerate(zip(row, widths))]
        return "  ".join(cells).rstrip()

    lines = [
        f"fastdrop bench: {machine_line(machine)}",
        f"keep_prob {keep_prob}; time per call: {STATISTIC}; GB/s counts bytes read + "
        "written (2 x itemsize per element, + 1/8 byte for a bit mask)",
    ]
    if machine["torch"] is None:
        lines.append("note: torch is not installed; its rows are skipped")
    lines += ["", line(header)]
    group = None
    for record, row in zip(records, rows):
        if group is not None and group != (record.size, record.dtype):
            lines.append("")
        group = (record.size, record.dtype)
        lines.append(line(row))
    names = {record.peer for record in records}
    peers = [peer for peer in PEERS if peer.name in names]
    name_width = max((len(peer.name) for peer in peers), default=0)
    lines += ["", "peers (x: the input, q: keep_prob, s: a fastdrop.Stream):"]
    lines += [f"  {peer.name.ljust(name_width)}  {peer.code}" for peer in peers]
    return "\n".join(lines)


def report(records: Sequence[Record], machine: dict, keep_prob: float) -> dict:
    """The benchmark's results as JSON-ready data.

    Parameters
    ----------
    records : sequence of Record
        As returned by `run`.
    machine : dict
        As returned by `machine_info`.
    keep_prob : float
        The keep probability the records were taken with.

    Returns
    -------
    dict
        Keys ``machine``, ``keep_prob``, ``statistic`` and ``records`` (a list of dicts with
        the fields of `Record`).
    """
    return {
        "machine": machine,
        "keep_prob": keep_prob,
        "statistic": STATISTIC,
        "records": [dataclasses.asdict(record) for record in records],
    }
