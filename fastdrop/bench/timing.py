"""How the peers of one array are timed: batches, passes interleaved across the peers, and a
re-measure of the rows whose repeats disagree.

The host is noisy, and every figure is a ratio between peers of one array, so the peers are
timed in `PASSES` passes interleaved across them: a slow spell of the host then hits every peer,
not just the one timed during it.  Each peer gets about `REPEAT_SECONDS` of wall time (refills and
warm-ups included), with at least one warm-up call and `MIN_REPEATS` timed calls whatever they
cost (two, so that every row has a spread), and at most `MAX_REPEATS`.  Calls shorter than
`BATCH_SECONDS` are timed in batches of consecutive calls (refill, then the batch in one timed
region), so that the timer, the refill's Python code and its cache and branch-predictor
disturbance do not weigh on a call of a few microseconds.  Consecutive in-place dropout
multiplies the kept values by 1/keep_prob and zeroes the others at each call, so a batch holds at
most `MAX_BATCH` calls and at most as many as keep (1/keep_prob)**calls <= `BATCH_GROWTH`: the
data stay below 1.5 * 16 = 24 (finite even in float16) and about 1/16 of them or more stay
non-zero (12 calls at keep_prob 0.8).

A single-thread peer's batches are also timed on its thread's CPU clock (`time.thread_time`):
wall time well above it means the thread was descheduled, which the minimum alone cannot tell.
After the passes, each row whose repeats disagree (`fastdrop.bench.noise.disagrees`) gets one
more pass, these peers again interleaved, and its statistics take both.
"""
from __future__ import annotations

import dataclasses
import math
import time
from typing import Callable, List, Optional, Sequence, Tuple

from . import noise
from .peers import Peer, Workspace

REPEAT_SECONDS = 0.3
MIN_REPEATS = 2
MAX_REPEATS = 1000
PASSES = 3
BATCH_SECONDS = 1e-3
MAX_BATCH = 16
BATCH_GROWTH = 16.0
STATISTIC = (f"minimum and median over a peer's timed batches (time per call = batch time / "
             f"calls), taken in up to {PASSES} passes interleaved across the peers of each "
             "array, each pass after a warm-up call; calls under "
             f"{BATCH_SECONDS * 1e3:g} ms timed in batches of up to {MAX_BATCH} consecutive calls "
             f"(fewer where (1/keep_prob)**calls > {BATCH_GROWTH:g}); input refilled before each "
             "batch; a row whose repeats disagree is re-measured in one more pass")


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
    call is slow gets few calls and passes (one warm-up and `MIN_REPEATS` timed calls, in one
    pass, where a call alone exceeds the budget) rather than a multiple of its cost.  With
    `repeats`, exactly that many calls, in at least `MIN_REPEATS` batches where `repeats` allows,
    the last batch taking the remainder, in up to `PASSES` passes.  The batches are dealt over the passes, the earlier ones taking one more where they
    do not divide evenly.

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
        # At least MIN_REPEATS batches where the count allows: one batch has no spread.
        batch = min(batch, max(1, math.ceil(repeats / MIN_REPEATS)))
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


@dataclasses.dataclass(frozen=True)
class Timing:
    """What the timing of one peer on one array gave.

    Attributes
    ----------
    wall : tuple of float
        Seconds per call of each timed batch, in the order they ran.
    cpu : tuple of float or None
        The calling thread's CPU seconds per call of the same batches, for a single-thread peer;
        None for the others.
    calls : int
        Timed calls, all batches together.
    remeasured : bool
        Whether its repeats disagreed after the passes, so that it had one more.
    """

    wall: Tuple[float, ...]
    cpu: Optional[Tuple[float, ...]]
    calls: int
    remeasured: bool = False

    @property
    def seconds(self) -> float:
        """The fastest batch's time per call."""
        return min(self.wall)


class _Samples:
    """The batches of one peer as they come in."""

    def __init__(self, single_thread: bool):
        self.wall: List[float] = []
        self.cpu: Optional[List[float]] = [] if single_thread else None
        self.calls = 0

    def time(self, ws: Workspace, call: Callable[[], object], calls: int) -> None:
        """Refill, then time `calls` consecutive calls."""
        ws.refill()
        cpu_start = time.thread_time() if self.cpu is not None else 0.0
        start = time.perf_counter()
        for _ in range(calls):
            call()
        self.add(time.perf_counter() - start, calls,
                 time.thread_time() - cpu_start if self.cpu is not None else None)

    def add(self, wall: float, calls: int, cpu: Optional[float]) -> None:
        self.wall.append(wall / calls)
        if self.cpu is not None:
            self.cpu.append(cpu / calls)
        self.calls += calls

    def timing(self, remeasured: bool) -> Timing:
        return Timing(tuple(self.wall), None if self.cpu is None else tuple(self.cpu),
                      self.calls, remeasured)


PeerProgress = Callable[[float, Peer, str], None]


def measure_group(peers: Sequence[Peer], ws: Workspace, repeats: Optional[int] = None,
                  progress: Optional[PeerProgress] = None) -> List[Timing]:
    """Time `peers` on `ws`, in passes interleaved across them, then re-measure the suspects.

    Pass 1 takes each peer in turn: inside its `Peer.prepare` context, a warm-up call (it pays
    one-off costs: first-use initialisation, page faults of buffers the context allocated), a
    refill (timed, for the plan) and a probe call, then `plan_timing` from the faster of the two
    (so a warm-up slowed by one-off costs does not cut the repeats) and the pass's batches.  The
    probe counts as the first timed call where the plan times calls one at a time; otherwise it
    is a second warm-up.  Each later pass takes the peers that planned that many passes, in the
    same order, each in its own context again, a warm-up call first (the context may have
    allocated new buffers), then its batches.  Every timed batch starts from a refilled input.
    Then, unless `repeats` fixed the count, each peer whose repeats disagree
    (`fastdrop.bench.noise.disagrees`) gets one more pass like its first, in the same order.

    Parameters
    ----------
    peers : sequence of Peer
    ws : Workspace
    repeats : int, optional
        Timed calls per peer, exactly (no re-measure); None lets `plan_timing` choose them.
    progress : callable, optional
        ``progress(done, peer, step)`` before each pass of `peer`, `step` saying which ("pass
        2", "re-measure"), with `done` the share of the passes done so far, in [0, 1]: each
        peer's passes done over its planned passes (`PASSES` before it is planned), averaged
        over the peers (re-measures not counted).

    Returns
    -------
    list of Timing
        Per peer, in order.
    """
    plans: List[Optional[TimingPlan]] = [None] * len(peers)
    samples = [_Samples(peer.single_thread) for peer in peers]
    passes_done = [0] * len(peers)

    def done() -> float:
        return sum(count / (PASSES if plan is None else len(plan.passes))
                   for count, plan in zip(passes_done, plans)) / max(len(peers), 1)

    for index in range(PASSES):
        for k, peer in enumerate(peers):
            plan = plans[k]
            if plan is not None and index >= len(plan.passes):
                continue
            if progress is not None:
                progress(done(), peer, f"pass {index + 1}")
            with peer.prepare(ws) as call:
                # The warm-up is not refilled first: it runs on what the last batch left (at
                # most max_batch calls deep, so one more keeps the values finite) and is not
                # timed, and skipping its refill halves what a pass costs on large arrays.
                start = time.perf_counter()
                call()
                warmup = time.perf_counter() - start
                if plan is not None:
                    batches = plan.passes[index]
                else:
                    start = time.perf_counter()
                    ws.refill()
                    refilled = time.perf_counter()
                    cpu_start = time.thread_time()
                    call()
                    probe = time.perf_counter() - refilled
                    probe_cpu = time.thread_time() - cpu_start
                    refill = refilled - start
                    plan = plans[k] = plan_timing(min(warmup, probe), refill, ws.keep_prob,
                                                  repeats)
                    batches = plan.passes[0]
                    if batches[0] == 1:
                        samples[k].add(probe, 1, probe_cpu)
                        batches = batches[1:]
                for calls in batches:
                    samples[k].time(ws, call, calls)
            passes_done[k] += 1
    remeasured = [False] * len(peers)
    if repeats is None:
        for k, peer in enumerate(peers):
            if not noise.disagrees(samples[k].wall, samples[k].cpu):
                continue
            remeasured[k] = True
            if progress is not None:
                progress(1.0, peer, "re-measure")
            with peer.prepare(ws) as call:
                call()
                for calls in plans[k].passes[0]:
                    samples[k].time(ws, call, calls)
    return [sample.timing(again) for sample, again in zip(samples, remeasured)]
