"""How far a run's timings can be trusted.

Three signs of noise, each measured, none guessed:

- the spread of a row's repeats: its median time over its minimum, less 1;
- for a single-thread peer, the wall time of its fastest batch over the CPU time its thread got
  in that batch, less 1: the share of the batch it spent descheduled;
- the share of the machine's CPUs that other processes kept busy while an array's peers were
  timed (from /proc/stat, where there is one): what the repeats cannot show when the load is
  steady, e.g. a second benchmark running beside this one.

A row's *uncertainty* is the fraction by which its time may still be inflated by noise, so a
ratio of two rows is only known within both rows' uncertainties (see `fastdrop.bench.targets`).
For a single-thread peer it is the larger of its spread and its descheduled share: its CPU clock
shows what the others' load took from it.  For a peer on several threads, whose helper threads
no clock here follows, it is the larger of its spread and the slow-down the others' load can
cause, share / (1 - share); under a load of `CONTENDED` or more it has no bound: each parallel
region waits for every one of its threads, so a thread kept off its CPU for a scheduler's time
slice (milliseconds) can stretch every call by orders of magnitude, steadily enough that the
repeats agree.  What the others' memory traffic takes from a single-thread peer is not measured;
the spread shows it where it varies.
"""
from __future__ import annotations

import dataclasses
import math
import os
import statistics
import time
from typing import Optional, Sequence

# Repeats further apart than this (median over minimum) disagree; such a row is re-measured.
SPREAD_LIMIT = 0.10
# A single-thread peer whose fastest batch took this much longer than its thread's CPU time lost
# its CPU during it.
DESCHEDULED_LIMIT = 0.10
# Other processes keeping this share of the CPUs busy make a run noisy ...
BUSY_LIMIT = 0.10
# ... and so do this share of the rows still disagreeing after their re-measure.
NOISY_ROWS = 0.25
# Under this load a peer on several threads has no bound on how much it is slowed.
CONTENDED = 2 * BUSY_LIMIT

QUIET = "quiet"
SOMEWHAT_NOISY = "somewhat noisy"
NOISY = "noisy"


def spread(samples: Sequence[float]) -> float:
    """Median over minimum, less 1: 0 when the repeats agree (and for a single repeat).

    Parameters
    ----------
    samples : sequence of float
        Seconds per call of each timed batch; not empty.

    Returns
    -------
    float
    """
    fastest = min(samples)
    return statistics.median(samples) / fastest - 1 if fastest > 0 else 0.0


def descheduled(wall: Sequence[float], cpu: Optional[Sequence[float]]) -> Optional[float]:
    """Wall time over the thread's CPU time in the fastest batch, less 1 (at least 0).

    Parameters
    ----------
    wall : sequence of float
        Seconds per call of each batch, wall clock.
    cpu : sequence of float or None
        The calling thread's CPU seconds per call of the same batches; None where they were not
        measured (a peer on several threads).

    Returns
    -------
    float or None
        None without CPU times or when the clock could not resolve the batch's CPU time.
    """
    if cpu is None:
        return None
    fastest = min(range(len(wall)), key=wall.__getitem__)
    if cpu[fastest] <= 0:
        return None
    return max(0.0, wall[fastest] / cpu[fastest] - 1)


def disagrees(wall: Sequence[float], cpu: Optional[Sequence[float]] = None) -> bool:
    """Whether a row's timings are suspect: repeats more than `SPREAD_LIMIT` apart, or a
    single-thread peer descheduled for more than `DESCHEDULED_LIMIT` of its fastest batch.

    Parameters
    ----------
    wall, cpu
        As for `descheduled`.

    Returns
    -------
    bool
    """
    lost = descheduled(wall, cpu)
    return spread(wall) > SPREAD_LIMIT or (lost is not None and lost > DESCHEDULED_LIMIT)


def slowdown(busy_share: Optional[float]) -> float:
    """How much other processes keeping `busy_share` of the CPUs can slow a peer: share / (1 -
    share), 0 when unknown.

    Parameters
    ----------
    busy_share : float or None

    Returns
    -------
    float
    """
    if busy_share is None:
        return 0.0
    share = min(max(busy_share, 0.0), 0.9)
    return share / (1 - share)


def uncertainty(spread_: float, descheduled_: Optional[float], busy_share: Optional[float],
                single_thread: bool, batches: int) -> float:
    """A row's uncertainty: the fraction by which its minimum may still be inflated by noise.

    Parameters
    ----------
    spread_ : float
        As `spread` gives.
    descheduled_ : float or None
        As `descheduled` gives.
    busy_share : float or None
        Others' share of the CPUs while the row's array was timed (`CpuLoad`).
    single_thread : bool
        Whether the peer runs on the calling thread alone.
    batches : int
        The row's timed batches.

    Returns
    -------
    float
        Infinity for a row of one batch, whose spread nothing measured.  For a single-thread peer, the larger of the spread and the descheduled share; for one on
        several threads, the larger of the spread and the load's `slowdown`, or infinity under a
        load of `CONTENDED` or more.
    """
    if batches < 2:
        return math.inf
    if single_thread:
        return max(spread_, descheduled_ or 0.0)
    if busy_share is not None and busy_share >= CONTENDED:
        return math.inf
    return max(spread_, slowdown(busy_share))


@dataclasses.dataclass(frozen=True)
class CpuSnapshot:
    """The clocks `CpuLoad` compares: wall time, the machine's busy CPU time, this process's."""

    wall: float
    machine_busy: float
    own: float


class CpuLoad:
    """The share of the machine's CPUs that other processes keep busy, between two snapshots.

    The machine's busy time is what /proc/stat counts as neither idle nor waiting for I/O (the
    hypervisor's steal included: a neighbour's work on a shared host is noise here too); this
    process's own CPU time, all threads, is taken off.  Where /proc/stat cannot be read, every
    snapshot is None and the share unknown.
    """

    def __init__(self, stat_path: str = "/proc/stat", cpus: Optional[int] = None):
        self.stat_path = stat_path
        self.cpus = cpus or os.cpu_count() or 1
        ticks = getattr(os, "sysconf", None)
        try:
            self.tick = 1.0 / ticks("SC_CLK_TCK") if ticks else 0.01
        except (ValueError, OSError):
            self.tick = 0.01

    def _machine_busy(self) -> Optional[float]:
        # A file that is not what Linux writes (an emulation's, a short one) leaves the load
        # unknown rather than stopping the run.
        try:
            with open(self.stat_path, encoding="ascii") as stat:
                fields = stat.readline().split()
            if not fields or fields[0] != "cpu" or len(fields) < 9:
                return None
            user, nice, system, _idle, _iowait, irq, softirq, steal = map(int, fields[1:9])
        except (OSError, ValueError):
            return None
        return (user + nice + system + irq + softirq + steal) * self.tick

    def snapshot(self) -> Optional[CpuSnapshot]:
        """The clocks now; None where the machine's busy time cannot be read.

        Returns
        -------
        CpuSnapshot or None
        """
        busy = self._machine_busy()
        if busy is None:
            return None
        own = os.times()
        return CpuSnapshot(time.perf_counter(), busy, own.user + own.system)

    def busy_share(self, before: Optional[CpuSnapshot],
                   after: Optional[CpuSnapshot]) -> Optional[float]:
        """Others' share of the CPUs between `before` and `after`, in [0, 1].

        Parameters
        ----------
        before, after : CpuSnapshot or None

        Returns
        -------
        float or None
            None where a snapshot is missing or no time passed.
        """
        if before is None or after is None or after.wall <= before.wall:
            return None
        others = (after.machine_busy - before.machine_busy) - (after.own - before.own)
        return min(1.0, max(0.0, others / (self.cpus * (after.wall - before.wall))))


def format_uncertainty(value: float) -> str:
    """An uncertainty as "12%", "over 999%" or "unbounded"."""
    if math.isinf(value):
        return "unbounded"
    return "over 999%" if value > 9.99 else f"{value:.0%}"


@dataclasses.dataclass(frozen=True)
class RunNoise:
    """The run's noise, in one word and one line.

    Attributes
    ----------
    level : str
        `QUIET`, `SOMEWHAT_NOISY` or `NOISY`.
    busy_share : float or None
        Others' share of the CPUs over the whole timing.
    rows, remeasured, noisy_rows : int
        Rows; rows re-measured; rows still disagreeing after that.
    typical, worst : float
        The median and the largest row uncertainty.
    undecided, verdicts : int
        Verdicts "too noisy to tell"; verdicts given or withheld (measured targets).
    """

    level: str
    busy_share: Optional[float]
    rows: int
    remeasured: int
    noisy_rows: int
    typical: float
    worst: float
    undecided: int
    verdicts: int

    def line(self, cpus: int) -> str:
        """The report's closing line: how noisy, and what that means for the ratios.

        Parameters
        ----------
        cpus : int
            The machine's logical CPUs.

        Returns
        -------
        str
        """
        busy = ("other processes' load unknown" if self.busy_share is None else
                f"other processes kept {self.busy_share:.0%} of the {cpus} CPUs busy")
        meaning = {
            QUIET: "the ratios stand as measured",
            SOMEWHAT_NOISY: "read each ratio within its rows' uncertainty, as the verdicts do",
            NOISY: "other work inflated the timings: trust only the verdicts given, and rerun "
                   "on a quiet machine before quoting a ratio",
        }[self.level]
        if self.level == NOISY and self.busy_share is not None and \
                self.busy_share < BUSY_LIMIT:
            meaning = ("the timings varied although the other processes here stayed nearly "
                       "idle, so the noise came from outside them (another tenant of a "
                       "virtual machine's host, the clock frequency): trust only the verdicts "
                       "given, and rerun before quoting a ratio")
        return (f"noise: {self.level}: {busy}; {self.noisy_rows} of {self.rows} rows still had "
                f"repeats apart after {self.remeasured} were re-measured; row uncertainty "
                f"{format_uncertainty(self.typical)} for the median row, "
                f"{format_uncertainty(self.worst)} for the worst, so {self.undecided} of "
                f"{self.verdicts} verdicts are too noisy to tell: {meaning}")


def run_noise(uncertainties: Sequence[float], remeasured: int, noisy_rows: int,
              busy_share: Optional[float], undecided: int, verdicts: int) -> RunNoise:
    """Classify a run from its rows and verdicts.

    Parameters
    ----------
    uncertainties : sequence of float
        Each row's `uncertainty`.
    remeasured, noisy_rows : int
        Rows re-measured, and rows whose repeats still disagree.
    busy_share : float or None
        Others' share of the CPUs over the whole timing.
    undecided, verdicts : int
        Verdicts "too noisy to tell", and verdicts in all (targets measured).

    Returns
    -------
    RunNoise
        `NOISY` when others kept 2 x `BUSY_LIMIT` of the CPUs busy or `NOISY_ROWS` of the rows
        still disagree; `QUIET` when others stayed under `BUSY_LIMIT` (or unknown) and no row
        disagrees; `SOMEWHAT_NOISY` in between.
    """
    rows = len(uncertainties)
    busy = busy_share or 0.0
    if busy >= 2 * BUSY_LIMIT or (rows and noisy_rows / rows >= NOISY_ROWS):
        level = NOISY
    elif busy < BUSY_LIMIT and noisy_rows == 0:
        level = QUIET
    else:
        level = SOMEWHAT_NOISY
    return RunNoise(level, busy_share, rows, remeasured, noisy_rows,
                    statistics.median(uncertainties) if rows else 0.0,
                    max(uncertainties, default=0.0), undecided, verdicts)
