"""The machine's streaming bandwidth, in the manner of the STREAM benchmark: its copy (b = a) and
scale (b = 3 a) kernels over two float64 arrays, on one thread and on the bench's threads, run in
C (src_c/fd_memory.c).  It is the physical limit beside the memory floor: the floor is an
in-place pass over the array at hand, this is what the memory system gives a plain stream."""
from __future__ import annotations

import dataclasses
import statistics
import time
from typing import List, Optional, Sequence

import numpy as np

import fastdrop
from fastdrop import _core

# Each of the two arrays: at least 256 MiB, the size of the float32 array the targets are set for,
# and, as STREAM asks, at least 4 times the last-level cache (`array_bytes`), so that the figure
# is the memory's and not a cache's.
BANDWIDTH_BYTES = 256 * 2**20
CACHE_MULTIPLE = 4
BANDWIDTH_REPEATS = 4
SCALE = 3.0
KERNELS = ("copy", "scale")


@dataclasses.dataclass(frozen=True)
class Bandwidth:
    """One kernel on one thread count.

    Attributes
    ----------
    kernel : str
        "copy" or "scale".
    threads : int
    gb_per_s : float
        Bytes read and written per second (16 per float64 element), in 10**9 bytes, from its
        fastest repeat.
    median_gb_per_s : float
        The same from the median repeat.
    nbytes : int
        Bytes of each array.
    repeats : int
    """

    kernel: str
    threads: int
    gb_per_s: float
    median_gb_per_s: float
    nbytes: int
    repeats: int


def array_bytes(least: int = BANDWIDTH_BYTES, cache: Optional[int] = None) -> int:
    """Bytes of each array: `least`, or `CACHE_MULTIPLE` times the last-level cache if more.

    Parameters
    ----------
    least : int, optional
    cache : int, optional
        The last-level cache's bytes (`fastdrop.bench.machine.last_level_cache`); None where
        unknown.

    Returns
    -------
    int
    """
    return max(least, CACHE_MULTIPLE * (cache or 0))


def thread_counts() -> List[int]:
    """1 and the bench's thread count (once where that is 1)."""
    return sorted({1, fastdrop.get_num_threads()})


def measure(nbytes: Optional[int] = None, repeats: Optional[int] = None,
            threads: Optional[Sequence[int]] = None) -> List[Bandwidth]:
    """Time copy and scale on each thread count, the kernels and counts interleaved per repeat.

    Each (kernel, threads) runs once untimed first (page faults, thread start-up), then
    `repeats` times.

    Parameters
    ----------
    nbytes : int, optional
        Bytes of each array, rounded down to whole float64 (`BANDWIDTH_BYTES` by default;
        ``fastdrop bench`` passes `array_bytes`).
    repeats : int, optional
        Timed runs of each (`BANDWIDTH_REPEATS` by default).
    threads : sequence of int, optional
        The thread counts (`thread_counts()` by default).

    Returns
    -------
    list of Bandwidth
        Per kernel of `KERNELS`, per thread count in the order given.
    """
    nbytes = BANDWIDTH_BYTES if nbytes is None else nbytes
    repeats = BANDWIDTH_REPEATS if repeats is None else repeats
    threads = thread_counts() if threads is None else list(threads)
    count = max(1, nbytes // 8)
    a = np.ones(count, dtype=np.float64)
    b = np.zeros(count, dtype=np.float64)
    runs = {
        "copy": lambda n: _core.memory_copy(a, b, n),
        "scale": lambda n: _core.memory_scale(a, b, SCALE, n),
    }
    cases = [(kernel, n) for kernel in KERNELS for n in threads]
    seconds = {case: [] for case in cases}
    for repeat in range(repeats + 1):
        for kernel, n in cases:
            start = time.perf_counter()
            runs[kernel](n)
            elapsed = time.perf_counter() - start
            if repeat:
                seconds[kernel, n].append(elapsed)
    moved = 2 * count * 8
    return [Bandwidth(kernel, n, moved / min(seconds[kernel, n]) / 1e9,
                      moved / statistics.median(seconds[kernel, n]) / 1e9, count * 8, repeats)
            for kernel, n in cases]
