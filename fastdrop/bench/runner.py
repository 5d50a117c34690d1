"""A whole benchmark run: the arrays to time and their peers, the memory they need, the order of
the work and its progress, and the `Results`."""
from __future__ import annotations

import dataclasses
from typing import Callable, List, Optional, Sequence, Tuple

import numpy as np

from . import bandwidth as stream
from .formatting import format_bytes, format_shape
from .noise import CpuLoad
from .peers import (CHANNEL_DTYPE, CHANNEL_PEERS, DTYPES, PEERS, Peer, Workspace,
                    available_peers, as_shape, elements)
from .records import Record, make_records
from .timing import REPEAT_SECONDS, measure_group

# What `fastdrop bench` times unless told otherwise (the targets are for these two).
DEFAULT_DTYPES = tuple(name for name in ("float32", "float64") if name in DTYPES)
DEFAULT_SIZES = (10**4, 10**6, 64 * 10**6)
DEFAULT_KEEP_PROB = 0.8

# For the progress estimate only: a peer costs its time budget plus about this much per byte
# of its array (its refills, warm-ups and slow calls), and the bandwidth this much per byte it
# streams.
PEER_SECONDS_PER_BYTE = 2e-9
STREAM_SECONDS_PER_BYTE = 1e-10


@dataclasses.dataclass(frozen=True)
class Group:
    """One array of a benchmark plan and the peers timed on it (the memory floor first).

    Attributes
    ----------
    shape : tuple of int
    dtype : str
    peers : tuple of Peer
    """

    shape: Tuple[int, ...]
    dtype: str
    peers: Tuple[Peer, ...]

    @property
    def nbytes(self) -> int:
        """Bytes of the array."""
        return elements(self.shape) * np.dtype(self.dtype).itemsize

    def memory_needed(self) -> int:
        """Bytes the group holds at its peak: the input and its working copy, and the largest
        scratch of its peers."""
        itemsize = np.dtype(self.dtype).itemsize
        scratch = max((peer.scratch_bytes(itemsize) for peer in self.peers), default=0.0)
        return int(elements(self.shape) * (2 * itemsize + scratch))


# ``progress(done, total, label)``: `done` and `total` in estimated seconds of work.
Progress = Callable[[float, float, str], None]


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
    bandwidth : list of fastdrop.bench.bandwidth.Bandwidth
        The machine's streaming bandwidth (empty when skipped).
    busy_share : float or None
        The share of the CPUs that other processes kept busy over the whole timing.
    """

    keep_prob: float
    records: List[Record]
    channel_shape: Optional[Tuple[int, ...]] = None
    channel_records: List[Record] = dataclasses.field(default_factory=list)
    bandwidth: List[stream.Bandwidth] = dataclasses.field(default_factory=list)
    busy_share: Optional[float] = None


class SizeRefused(ValueError):
    """The arrays asked for cannot fit in the memory available."""


def plan(sizes: Sequence[int], dtypes: Sequence[str],
         channel_shape: Optional[Sequence[int]] = None) -> List[Group]:
    """The arrays of a run and the available peers that take each one's dtype.

    Parameters
    ----------
    sizes : sequence of int
    dtypes : sequence of str
    channel_shape : sequence of int, optional
        Adds the channel scenario's array last.

    Returns
    -------
    list of Group
    """
    def peers(candidates, dtype):
        return tuple(peer for peer in available_peers(candidates) if peer.supports(dtype))

    groups = [Group((size,), name, peers(PEERS, name)) for size in sizes for name in dtypes]
    if channel_shape is not None:
        groups.append(Group(as_shape(channel_shape), CHANNEL_DTYPE,
                            peers(CHANNEL_PEERS, CHANNEL_DTYPE)))
    return groups


def check_memory(groups: Sequence[Group], available: Optional[int]) -> None:
    """Refuse a run whose largest array, with what its peers allocate, cannot fit.

    Parameters
    ----------
    groups : sequence of Group
    available : int or None
        Bytes available (`fastdrop.bench.machine.available_memory`); None skips the check.

    Raises
    ------
    SizeRefused
        Saying which array needs how much, and how much is available.
    """
    if available is None:
        return
    for group in groups:
        needed = group.memory_needed()
        if needed > available:
            raise SizeRefused(
                f"{format_shape(group.shape)} {group.dtype} elements need about "
                f"{format_bytes(needed)} (the input, its working copy and the peers' scratch), "
                f"but only {format_bytes(available)} of memory is available; choose smaller "
                "--sizes")


def run_groups(groups: Sequence[Group], keep_prob: float = DEFAULT_KEEP_PROB,
               repeats: Optional[int] = None, progress: Optional[Progress] = None,
               done: float = 0.0, total: Optional[float] = None,
               load: Optional[CpuLoad] = None) -> Tuple[List[List[Record]], Optional[float]]:
    """Time each group's peers on one array of its shape and dtype, at the current thread count.

    Arrays are allocated once per group and freed before the next.

    Parameters
    ----------
    groups : sequence of Group
        Each with the memory floor among its peers.
    keep_prob : float, optional
        Probability that a unit is kept.
    repeats : int, optional
        Timed calls per peer; None lets the timing choose them per peer.
    progress : callable, optional
        ``progress(done, total, label)`` before each pass of each peer, `label` naming the peer,
        array and pass.
    done, total : float, optional
        Where this work starts in the progress count, and the count's end (default: this
        work's own estimate, `work`).
    load : CpuLoad, optional
        Measures the others' load per group (a new one by default).

    Returns
    -------
    (list of list of Record, float or None)
        One list per group, in the order of its peers; and the share of the CPUs other
        processes kept busy over all the groups.
    """
    load = CpuLoad() if load is None else load
    total = done + sum(work(group) for group in groups) if total is None else total
    results = []
    first = load.snapshot()
    for group in groups:
        dtype = np.dtype(group.dtype)
        ws = Workspace.create(group.shape, dtype, keep_prob)
        def step(share, peer, what, start=done, cost=work(group)):
            progress(start + share * cost, total,
                     f"{peer.name} {dtype.name} {format_shape(group.shape)} {what}")

        before = load.snapshot()
        timings = measure_group(group.peers, ws, repeats, None if progress is None else step)
        busy = load.busy_share(before, load.snapshot())
        done += work(group)
        del ws
        results.append(make_records(elements(group.shape), dtype, list(zip(group.peers, timings)),
                                    busy))
    return results, load.busy_share(first, load.snapshot())


def work(group: Group) -> float:
    """The progress estimate's seconds for timing `group`."""
    return len(group.peers) * (REPEAT_SECONDS + PEER_SECONDS_PER_BYTE * group.nbytes)


def bandwidth_work(nbytes: int) -> float:
    """The progress estimate's seconds for the bandwidth measurement on arrays of `nbytes`."""
    runs = len(stream.KERNELS) * len(stream.thread_counts()) * (stream.BANDWIDTH_REPEATS + 1)
    return STREAM_SECONDS_PER_BYTE * 2 * nbytes * runs


def run(sizes: Sequence[int] = DEFAULT_SIZES, dtypes: Sequence[str] = DEFAULT_DTYPES,
        keep_prob: float = DEFAULT_KEEP_PROB, repeats: Optional[int] = None,
        progress: Optional[Progress] = None,
        channel_shape: Optional[Sequence[int]] = None,
        bandwidth_bytes: Optional[int] = None) -> Results:
    """Time every available peer on every (size, dtype) it supports, optionally channel dropout
    and the machine's bandwidth, at the current thread count.

    Parameters
    ----------
    sizes : sequence of int
        Elements per array, each at least 1.
    dtypes : sequence of str
        Names from `DTYPES`.
    keep_prob : float, optional
        Probability that a unit is kept.
    repeats : int, optional
        Timed calls per peer; None lets the timing choose them per peer.
    progress : callable, optional
        As for `run_groups`, counting the bandwidth and both scenarios; called once more at the
        end with done == total and an empty label.
    channel_shape : sequence of int, optional
        Also time `CHANNEL_PEERS` on a `CHANNEL_DTYPE` array of this (N, C, H, W) shape
        (`CHANNEL_SHAPE` in ``fastdrop bench``); None skips the channel scenario.
    bandwidth_bytes : int, optional
        Also measure the machine's streaming bandwidth on two arrays of this many bytes
        (`fastdrop.bench.bandwidth.BANDWIDTH_BYTES` in ``fastdrop bench``); None skips it.

    Returns
    -------
    Results
    """
    groups = plan(sizes, dtypes, channel_shape)
    first = 0.0 if bandwidth_bytes is None else bandwidth_work(bandwidth_bytes)
    total = first + sum(work(group) for group in groups)
    measured_bandwidth = []
    if bandwidth_bytes is not None:
        if progress is not None:
            progress(0.0, total, "machine bandwidth")
        measured_bandwidth = stream.measure(bandwidth_bytes)
    measured, busy = run_groups(groups, keep_prob, repeats, progress, first, total)
    if progress is not None:
        progress(total, total, "")
    main = measured[:len(sizes) * len(dtypes)]
    channel = measured[len(main):]
    return Results(keep_prob=keep_prob, records=[r for group in main for r in group],
                   channel_shape=None if channel_shape is None else as_shape(channel_shape),
                   channel_records=[r for group in channel for r in group],
                   bandwidth=measured_bandwidth, busy_share=busy)
