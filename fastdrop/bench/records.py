"""The rows of the bench's tables: one `Record` per peer and array, with its statistics, its
ratios to the baselines timed on the same array, and how far it can be trusted."""
from __future__ import annotations

import dataclasses
import statistics
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from . import noise
from .peers import MEMORY_FLOOR, NUMPY_MULTIPLY, TEXTBOOK, Peer, floor_of
from .timing import Timing


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
        Minimum time per call over the timed batches (a batch's time over its calls).
    median_seconds : float
        Median of the same.
    spread : float
        median_seconds / seconds - 1.
    cpu_seconds : float or None
        For a single-thread peer, the least CPU time its thread took per call (a batch's CPU time
        over its calls); None for the others.
    descheduled : float or None
        For a single-thread peer, its fastest batch's wall time over that batch's CPU time, less 1
        (see `fastdrop.bench.noise.descheduled`).
    ns_per_element : float
    gb_per_s : float
        Bytes read and written per second, in 10**9 bytes: 2 * itemsize per element (what an
        in-place pass moves, counted the same for every peer) plus the peer's mask bytes.
    floor : str
        The memory floor its ratio is to: the one on as many threads (see
        `fastdrop.bench.peers.floor_of`).
    ratio_to_floor : float
        seconds / that floor's seconds (same array and run).
    ratio_to_multiply : float or None
        seconds / NumPy's in-place multiply's seconds, None where it was not timed.
    speedup_over_textbook : float or None
        The textbook NumPy code's seconds / seconds; None where it was not timed (the channel
        scenario).
    repeats : int
        Timed calls, all batches and passes together.
    batches : int
        Timed batches (the samples of the statistics).
    remeasured : bool
        Whether its repeats disagreed after the passes, so that it had one more.
    noisy : bool
        Whether they still disagree (`fastdrop.bench.noise.disagrees`).
    busy_share : float or None
        The share of the CPUs that other processes kept busy while its array was timed.
    uncertainty : float
        The fraction by which `seconds` may still be inflated by noise
        (`fastdrop.bench.noise.uncertainty`); infinity where nothing bounds it.
    """

    size: int
    dtype: str
    peer: str
    seconds: float
    median_seconds: float
    spread: float
    cpu_seconds: Optional[float]
    descheduled: Optional[float]
    ns_per_element: float
    gb_per_s: float
    floor: str
    ratio_to_floor: float
    ratio_to_multiply: Optional[float]
    speedup_over_textbook: Optional[float]
    repeats: int
    batches: int
    remeasured: bool
    noisy: bool
    busy_share: Optional[float]
    uncertainty: float

    @property
    def cpu_ns_per_element(self) -> Optional[float]:
        """`cpu_seconds` per element in nanoseconds, None where not measured."""
        return None if self.cpu_seconds is None else self.cpu_seconds * 1e9 / self.size


def make_records(size: int, dtype, timed: Sequence[Tuple[Peer, Timing]],
                 busy_share: Optional[float] = None) -> List[Record]:
    """The records of one array's peers, from their timings.

    Parameters
    ----------
    size : int
        Elements of the array.
    dtype : str or numpy.dtype
    timed : sequence of (Peer, Timing)
        The array's peers and their timings; `MEMORY_FLOOR` among them.
    busy_share : float or None, optional
        Others' share of the CPUs while the array was timed.

    Returns
    -------
    list of Record
        In the order of `timed`.
    """
    dtype = np.dtype(dtype)
    seconds_of = {peer.name: timing.seconds for peer, timing in timed}
    textbook = seconds_of.get(TEXTBOOK)
    multiply = seconds_of.get(NUMPY_MULTIPLY)
    records = []
    for peer, timing in timed:
        seconds = timing.seconds
        floor = floor_of(peer) if floor_of(peer) in seconds_of else MEMORY_FLOOR
        spread = noise.spread(timing.wall)
        descheduled = noise.descheduled(timing.wall, timing.cpu)
        bytes_moved = size * (2 * dtype.itemsize + peer.mask_bytes)
        records.append(Record(
            size=size, dtype=dtype.name, peer=peer.name, seconds=seconds,
            median_seconds=statistics.median(timing.wall), spread=spread,
            cpu_seconds=None if timing.cpu is None else min(timing.cpu),
            descheduled=descheduled,
            ns_per_element=seconds * 1e9 / size, gb_per_s=bytes_moved / seconds / 1e9,
            floor=floor, ratio_to_floor=seconds / seconds_of[floor],
            ratio_to_multiply=None if multiply is None else seconds / multiply,
            speedup_over_textbook=None if textbook is None else textbook / seconds,
            repeats=timing.calls, batches=len(timing.wall), remeasured=timing.remeasured,
            noisy=noise.disagrees(timing.wall, timing.cpu), busy_share=busy_share,
            uncertainty=noise.uncertainty(spread, descheduled, busy_share,
                                          peer.single_thread, len(timing.wall))))
    return records


def by_array(records: Sequence[Record]) -> Dict[Tuple[int, str], Dict[str, Record]]:
    """The records per (size, dtype), in their order, each a dict from peer name to record.

    Parameters
    ----------
    records : sequence of Record

    Returns
    -------
    dict
    """
    arrays: Dict[Tuple[int, str], Dict[str, Record]] = {}
    for record in records:
        arrays.setdefault((record.size, record.dtype), {})[record.peer] = record
    return arrays
