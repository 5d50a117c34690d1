"""fastdrop's speed targets (issues 3, 4, 5 and 18) and their verdicts: met, missed, or too noisy to
tell.

A target compares two rows of one run.  Each row's minimum may still be inflated by noise, by
up to its uncertainty u (`fastdrop.bench.noise.uncertainty`), so a row's quiet-machine time lies
between t / (1 + u) and t, and a ratio of two rows between the bounds those give.  A target is
*met* when the whole of that range is on its right side, *missed* when the whole of it is on the
wrong side, and *too noisy to tell* otherwise.
"""
from __future__ import annotations

import dataclasses
from typing import Dict, List, Optional, Sequence, Tuple

from .peers import (BACKWARD, BACKWARD_BITS, BEST_NUMPY, CHANNEL, FASTDROP_JAX,
                    FASTDROP_JAX_GRAD, FASTDROP_MODULE, FORWARD, FORWARD_1_THREAD, FORWARD_BITS,
                    JAX_DROPOUT, JAX_DROPOUT_GRAD, TEXTBOOK, TORCH_ALL_THREADS, TORCH_MODULE)
from .records import Record, by_array

# The size the targets are set for; a run without it is judged at its largest size.
TARGET_SIZE = 64 * 10**6
HALF_DTYPES = ("float16", "bfloat16")

# What a target bounds.
RATIO = "ratio"            # the peer's time over the baseline's, at most `bound`
SPEEDUP = "speed-up"       # the baseline's time over the peer's, at least `bound`
GBPS_RATIO = "GB/s ratio"  # the baseline's GB/s over the peer's, at most `bound`

MET = "met"
MISSED = "missed"
UNDECIDED = "too noisy to tell"
NOT_MEASURED = "not measured"


@dataclasses.dataclass(frozen=True)
class Target:
    """One speed target.

    Attributes
    ----------
    peer : str
        The row judged.
    kind : str
        `RATIO`, `SPEEDUP` or `GBPS_RATIO`.
    bound : float
    baseline : str or None
        The row it is compared with; None for the peer's own memory floor (`Record.floor`).
    dtypes : tuple of str
        The dtypes it is set for, each judged on its own.
    baseline_dtype : str or None
        The baseline's dtype where it is not the peer's (float32 for the half-precision GB/s).
    size : int or None
        The size it is set for; None for `TARGET_SIZE` (or the run's largest size).
    channel : bool
        Judged on the channel table rather than the main one.
    """

    peer: str
    kind: str
    bound: float
    baseline: Optional[str] = None
    dtypes: Tuple[str, ...] = ("float32",)
    baseline_dtype: Optional[str] = None
    size: Optional[int] = None
    channel: bool = False

    @property
    def text(self) -> str:
        """The target in words, e.g. "fastdrop forward <= 1.3x memory floor"."""
        baseline = "memory floor" if self.baseline is None else self.baseline
        if self.kind == SPEEDUP:
            return f"{self.peer} >= {self.bound:g}x faster than {baseline}"
        if self.kind == GBPS_RATIO:
            return f"{self.baseline_dtype} {baseline} GB/s <= {self.bound:g}x {self.peer}'s"
        return f"{self.peer} <= {self.bound:g}x {baseline}"


TARGETS: Tuple[Target, ...] = (
    Target(FORWARD, RATIO, 1.3, dtypes=("float32",)),
    Target(FORWARD, RATIO, 1.2, dtypes=("float64",)),
    Target(BACKWARD, RATIO, 1.3, dtypes=("float32",)),
    Target(BACKWARD, RATIO, 1.2, dtypes=("float64",)),
    Target(BACKWARD_BITS, RATIO, 1.15, dtypes=("float32", "float64")),
    Target(FORWARD_BITS, RATIO, 1.1, baseline=FORWARD, dtypes=("float32", "float64")),
    Target(FORWARD_1_THREAD, RATIO, 2.0, dtypes=("float32",)),
    Target(FORWARD, SPEEDUP, 25, baseline=TEXTBOOK, dtypes=("float32", "float64")),
    Target(FORWARD, SPEEDUP, 10, baseline=BEST_NUMPY, dtypes=("float32", "float64")),
    Target(FORWARD, SPEEDUP, 30, baseline=TORCH_ALL_THREADS, dtypes=("float32", "float64")),
    Target(FASTDROP_MODULE, SPEEDUP, 10, baseline=TORCH_MODULE, dtypes=("float32",)),
    Target(FASTDROP_JAX, SPEEDUP, 10, baseline=JAX_DROPOUT, dtypes=("float32",), size=10**6),
    Target(FASTDROP_JAX_GRAD, SPEEDUP, 10, baseline=JAX_DROPOUT_GRAD, dtypes=("float32",),
           size=10**6),
    Target(FORWARD, SPEEDUP, 8, baseline=TEXTBOOK, dtypes=("float32", "float64"), size=10**4),
    Target(FORWARD, SPEEDUP, 20, baseline=TEXTBOOK, dtypes=HALF_DTYPES),
    Target(BACKWARD, SPEEDUP, 20, baseline=TEXTBOOK, dtypes=HALF_DTYPES),
    Target(FORWARD, GBPS_RATIO, 1.5, baseline=FORWARD, dtypes=HALF_DTYPES,
           baseline_dtype="float32"),
    Target(BACKWARD, GBPS_RATIO, 1.5, baseline=BACKWARD, dtypes=HALF_DTYPES,
           baseline_dtype="float32"),
    Target(CHANNEL, RATIO, 1.1, channel=True),
)


@dataclasses.dataclass(frozen=True)
class Verdict:
    """A target judged on one run.

    Attributes
    ----------
    target : str
        `Target.text`.
    dtype : str
    size : int
        Elements of the array it was judged on.
    value : float or None
        The measured ratio or speed-up (None when not measured).
    low, high : float or None
        The range the quiet-machine value lies in, given both rows' uncertainties.
    verdict : str
        `MET`, `MISSED`, `UNDECIDED` or `NOT_MEASURED` (a row missing: PyTorch not installed).
    """

    target: str
    dtype: str
    size: int
    value: Optional[float]
    low: Optional[float]
    high: Optional[float]
    verdict: str


def judge(kind: str, value: float, bound: float, peer_uncertainty: float,
          baseline_uncertainty: float) -> Tuple[float, float, str]:
    """The range of a measured value and the verdict it gives.

    Parameters
    ----------
    kind : str
        `RATIO`, `SPEEDUP` or `GBPS_RATIO`.
    value : float
        As measured from the two rows' minimums.
    bound : float
    peer_uncertainty, baseline_uncertainty : float
        The rows' uncertainties.

    Returns
    -------
    (float, float, str)
        The low and high ends of the range, and `MET`, `MISSED` or `UNDECIDED`.
    """
    # The peer's time sits in the numerator of a ratio (of times or per-byte times) and in the
    # denominator of a speed-up; noise only ever made a time longer.
    if kind == SPEEDUP:
        low, high = value / (1 + baseline_uncertainty), value * (1 + peer_uncertainty)
        verdict = MET if low >= bound else MISSED if high < bound else UNDECIDED
    else:
        low, high = value / (1 + peer_uncertainty), value * (1 + baseline_uncertainty)
        verdict = MET if high <= bound else MISSED if low > bound else UNDECIDED
    return low, high, verdict


def _value(target: Target, peer: Record, baseline: Record) -> float:
    if target.kind == SPEEDUP:
        return baseline.seconds / peer.seconds
    if target.kind == GBPS_RATIO:
        return baseline.gb_per_s / peer.gb_per_s
    return peer.seconds / baseline.seconds


def judged_size(records: Sequence[Record]) -> Optional[int]:
    """The size the size-less targets are judged at: `TARGET_SIZE` when it ran, else the
    largest size of `records` (None when empty)."""
    sizes = {record.size for record in records}
    if not sizes:
        return None
    return TARGET_SIZE if TARGET_SIZE in sizes else max(sizes)


def evaluate(records: Sequence[Record], channel_records: Sequence[Record] = (),
             targets: Sequence[Target] = TARGETS) -> List[Verdict]:
    """Judge every target whose array ran.

    Parameters
    ----------
    records : sequence of Record
        The main table.
    channel_records : sequence of Record
        The channel table (its one array).
    targets : sequence of Target, optional

    Returns
    -------
    list of Verdict
        In the order of `targets`, then of their dtypes; a target whose (size, dtype) did not
        run is left out, one whose array ran without its peer or baseline is `NOT_MEASURED`.
    """
    main = by_array(records)
    channel = by_array(channel_records)
    default_size = judged_size(records)
    verdicts = []
    for target in targets:
        arrays: Dict = channel if target.channel else main
        for dtype in target.dtypes:
            if target.channel:
                size = next((s for s, d in arrays if d == dtype), None)
            else:
                size = target.size if target.size is not None else default_size
            rows = arrays.get((size, dtype))
            if rows is None:
                continue
            peer = rows.get(target.peer)
            baseline_rows = arrays.get((size, target.baseline_dtype or dtype), {})
            baseline = None
            if peer is not None:
                baseline = baseline_rows.get(peer.floor if target.baseline is None
                                             else target.baseline)
            if peer is None or baseline is None:
                verdicts.append(Verdict(target.text, dtype, size, None, None, None,
                                        NOT_MEASURED))
                continue
            value = _value(target, peer, baseline)
            low, high, verdict = judge(target.kind, value, target.bound, peer.uncertainty,
                                       baseline.uncertainty)
            verdicts.append(Verdict(target.text, dtype, size, value, low, high, verdict))
    return verdicts
