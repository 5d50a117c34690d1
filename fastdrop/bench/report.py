"""The bench's report: the text ``fastdrop bench`` prints and the data ``--json`` writes.

The text reads top to bottom: the machine, the legend, the machine's bandwidth, the main table,
its summary, the half-precision and channel tables, the targets with their verdicts, and one
closing line on how noisy the run was.
"""
from __future__ import annotations

import dataclasses
import math
from typing import List, Optional, Sequence

import numpy as np

from . import noise, targets
from .bandwidth import SCALE, Bandwidth
from .formatting import align, format_bytes, format_shape, format_size, number
from .peers import (BACKWARD, CHANNEL_DTYPE, CHANNEL_SHARED_AXES, FAMILIES, FASTDROP_MODULE,
                    FORWARD, FORWARD_1_THREAD, MEMORY_FLOOR, MEMORY_FLOOR_1_THREAD, TORCH_MODULE,
                    Peer, elements, registry)
from .records import Record, by_array
from .runner import Results
from .timing import STATISTIC

NOTES = {"noisy": "its repeats still disagree after a re-measure",
         "re-measured": "its repeats disagreed, so it had one more pass, and now agree"}


def machine_line(machine: dict) -> str:
    """`fastdrop.bench.machine.machine_info` on one line.

    Parameters
    ----------
    machine : dict

    Returns
    -------
    str
    """
    frameworks = " | ".join(f"{name} {machine[name] or 'not installed'}"
                            for name in ("torch", "jax"))
    return (f"CPU {machine['cpu']} ({machine['cpus']} logical CPUs) | threads "
            f"{machine['threads']} (default {machine['default_threads']}) | SIMD "
            f"{machine['simd_path']} | OpenMP {'on' if machine['openmp'] else 'off'} | python "
            f"{machine['python']} | numpy {machine['numpy']} | fastdrop {machine['fastdrop']} | "
            f"{frameworks}")


def _note(record: Record) -> str:
    return "noisy" if record.noisy else "re-measured" if record.remeasured else ""


def _percent(value: float) -> str:
    return f"{value:.0%}"


def _spread(value: float) -> str:
    return ">+999%" if value > 9.99 else f"+{value:.0%}"


def _bound(value: float) -> str:
    """One end of a verdict's range."""
    if math.isinf(value):
        return "no bound"
    return "0x" if value == 0 else f"{number(value)}x"


def _json_ready(value):
    """`value` with every non-finite float (an unbounded uncertainty or range) as None, which
    JSON can hold."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: _json_ready(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_ready(item) for item in value]
    return value


def format_records(records: Sequence[Record], shape: Optional[Sequence[int]] = None
                   ) -> List[str]:
    """A table of `records`, one row each, a blank line between (size, dtype) groups.

    Parameters
    ----------
    records : sequence of Record
    shape : sequence of int, optional
        The records' common array shape, shown in a first column "shape" instead of "size";
        the column "over textbook" is then left out (the channel table has no textbook peer).

    Returns
    -------
    list of str
        The header line, then the rows.
    """
    textbook = shape is None
    header = ["size" if shape is None else "shape", "dtype", "peer", "ns/element", "median",
              "spread", "CPU ns", "GB/s", "x floor", "x multiply",
              *(["over textbook"] if textbook else []), "calls", "note"]
    rows = []
    for r in records:
        cpu = r.cpu_ns_per_element
        rows.append([
            format_size(r.size) if shape is None else format_shape(shape), r.dtype, r.peer,
            number(r.ns_per_element), number(r.median_seconds * 1e9 / r.size),
            _spread(r.spread), "-" if cpu is None else number(cpu), number(r.gb_per_s),
            f"{number(r.ratio_to_floor)}x",
            "-" if r.ratio_to_multiply is None else f"{number(r.ratio_to_multiply)}x",
            *([("-" if r.speedup_over_textbook is None
                else f"{number(r.speedup_over_textbook)}x")] if textbook else []),
            str(r.repeats), _note(r)])
    return align(header, rows, left=3, groups=[(r.size, r.dtype) for r in records])


def _summary_peers(records: Sequence[Record]) -> List[Peer]:
    """The peers with a summary column that have a record, in registry order."""
    names = {record.peer for record in records}
    return [peer for peer in registry().values()
            if peer.summary_label is not None and peer.name in names]


def summary(records: Sequence[Record]) -> List[dict]:
    """Per (size, dtype), fastdrop forward against the peers that have a summary column.

    Parameters
    ----------
    records : sequence of Record
        The main table, as in `Results.records`.

    Returns
    -------
    list of dict
        One per (size, dtype) where "fastdrop forward" was timed, in the records' order:
        ``size``, ``dtype``, ``ratio_to_floor`` (of "fastdrop forward"),
        ``ratio_to_floor_1_thread`` (of "fastdrop forward 1 thread", None when absent),
        ``speedup_over``, a dict from each such peer that was timed to its seconds / fastdrop
        forward's seconds, and ``module_speedup``, PyTorch's nn.Dropout forward + backward time
        over fastdrop.torch.Dropout's (None without PyTorch).
    """
    compared = [peer.name for peer in _summary_peers(records)]
    rows = []
    for (size, dtype), peers in by_array(records).items():
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
                             for name in compared if name in peers},
            "module_speedup": (peers[TORCH_MODULE].seconds / peers[FASTDROP_MODULE].seconds
                               if FASTDROP_MODULE in peers and TORCH_MODULE in peers else None),
        })
    return rows


def format_summary(records: Sequence[Record]) -> List[str]:
    """`summary` as a table.

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
    compared = [peer for peer in _summary_peers(records)
                if any(peer.name in row["speedup_over"] for row in rows)]
    modules = any(row["module_speedup"] is not None for row in rows)
    header = ["size", "dtype", "x floor", "1 thread x floor",
              *(f"over {peer.summary_label}" for peer in compared),
              *(["module over nn.Dropout"] if modules else [])]
    cells = []
    for row in rows:
        single = row["ratio_to_floor_1_thread"]
        speedups = row["speedup_over"]
        module = row["module_speedup"]
        cells.append([format_size(row["size"]), row["dtype"], f"{number(row['ratio_to_floor'])}x",
                      "-" if single is None else f"{number(single)}x",
                      *("-" if peer.name not in speedups else f"{number(speedups[peer.name])}x"
                        for peer in compared),
                      *([("-" if module is None else f"{number(module)}x")] if modules else [])])
    return [f"summary of {FORWARD}: ratio to the memory floor on as many threads (lower is "
            "better), speed-up over the peers (higher is better)", "",
            *align(header, cells, left=2)]


def half_precision_summary(records: Sequence[Record]) -> List[dict]:
    """Per size, float16 and bfloat16 forward and backward against float32's at the same size.

    Parameters
    ----------
    records : sequence of Record
        The main table, as in `Results.records`.

    Returns
    -------
    list of dict
        One per (size, dtype of `targets.HALF_DTYPES`) where float32 ran at the same size, in
        the records' order.  For ``direction`` in "forward" and "backward": ``{direction}_gb_per_s``,
        ``{direction}_float32_gb_per_s``, ``{direction}_float32_ratio`` (float32's GB/s over this
        dtype's, lower is better), ``{direction}_ratio_to_floor`` (to this dtype's own memory
        floor) and ``{direction}_speedup_over_textbook``; each None where its peer was not
        timed.
    """
    arrays = by_array(records)
    rows = []
    for (size, dtype), peers in arrays.items():
        float32 = arrays.get((size, "float32"))
        if dtype not in targets.HALF_DTYPES or float32 is None:
            continue
        row: dict = {"size": size, "dtype": dtype}
        for direction, peer in (("forward", FORWARD), ("backward", BACKWARD)):
            half, single = peers.get(peer), float32.get(peer)
            row[f"{direction}_gb_per_s"] = None if half is None else half.gb_per_s
            row[f"{direction}_float32_gb_per_s"] = None if single is None else single.gb_per_s
            row[f"{direction}_float32_ratio"] = (None if half is None or single is None
                                                 else single.gb_per_s / half.gb_per_s)
            row[f"{direction}_ratio_to_floor"] = None if half is None else half.ratio_to_floor
            row[f"{direction}_speedup_over_textbook"] = (None if half is None
                                                         else half.speedup_over_textbook)
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
        return "-" if value is None else f"{number(value)}{unit}"

    header = ["size", "dtype"]
    for direction in ("forward", "backward"):
        header += [f"{direction} GB/s", f"float32 {direction} GB/s", "float32 / this",
                   "x own floor"]
    header += ["forward over textbook", "backward over textbook"]
    cells = []
    for row in rows:
        line = [format_size(row["size"]), row["dtype"]]
        for direction in ("forward", "backward"):
            line += [cell(row[f"{direction}_gb_per_s"], ""),
                     cell(row[f"{direction}_float32_gb_per_s"], ""),
                     cell(row[f"{direction}_float32_ratio"], "x"),
                     cell(row[f"{direction}_ratio_to_floor"], "x")]
        line += [cell(row["forward_speedup_over_textbook"], "x"),
                 cell(row["backward_speedup_over_textbook"], "x")]
        cells.append(line)
    return ["half precision: float16 and bfloat16 against float32 at the same size, and against "
            "their own memory floor", "", *align(header, cells, left=2)]


def format_bandwidth(bandwidth: Sequence[Bandwidth], records: Sequence[Record],
                     cache: Optional[int] = None) -> List[str]:
    """The machine's streaming bandwidth, and the memory floor of the largest arrays beside it.

    Parameters
    ----------
    bandwidth : sequence of Bandwidth
    records : sequence of Record
        The main table (its memory floor rows at the largest size are set beside the copy).
    cache : int, optional
        The last-level cache's bytes: a floor row whose array it holds says so.

    Returns
    -------
    list of str
        Empty when the bandwidth was not measured.
    """
    if not bandwidth:
        return []
    counts = sorted({b.threads for b in bandwidth})
    of = {(b.kernel, b.threads): b for b in bandwidth}
    header = ["kernel", *(f"{n} thread{'s' if n > 1 else ''}" for n in counts)]
    rows = [[kernel, *(f"{number(of[kernel, n].gb_per_s)} GB/s (median "
                       f"{number(of[kernel, n].median_gb_per_s)})" for n in counts)]
            for kernel in dict.fromkeys(b.kernel for b in bandwidth)]
    lines = [f"machine streaming bandwidth, STREAM-like in C: copy b = a and scale b = {SCALE:g} a "
             f"over two float64 arrays of {format_bytes(bandwidth[0].nbytes)}, best of "
             f"{bandwidth[0].repeats}; GB/s counts bytes read + written", "",
             *align(header, rows, left=1)]
    largest = max((r.size for r in records), default=None)
    floor_threads = {MEMORY_FLOOR: max(counts), MEMORY_FLOOR_1_THREAD: 1}
    for r in records:
        if r.size != largest or r.peer not in floor_threads:
            continue
        copy = of["copy", floor_threads[r.peer]]
        line = (f"{r.peer} at {format_size(r.size)} {r.dtype}: {number(r.gb_per_s)} GB/s, "
                f"{_percent(r.gb_per_s / copy.gb_per_s)} of the copy's on as many threads")
        if cache is not None and r.size * np.dtype(r.dtype).itemsize <= cache:
            line += (f" (the {format_bytes(cache)} last-level cache holds this array: its floor "
                     "is the cache's, not the memory's)")
        lines.append(line)
    return lines


def format_legend(records: Sequence[Record]) -> List[str]:
    """The peers of `records`, grouped by family, and what the columns mean.

    Parameters
    ----------
    records : sequence of Record

    Returns
    -------
    list of str
    """
    names = {record.peer for record in records}
    peers = [peer for peer in registry().values() if peer.name in names]
    families = [*FAMILIES, *dict.fromkeys(p.family for p in peers if p.family not in FAMILIES)]
    rows = []
    for family in families:
        members = [peer for peer in peers if peer.family == family]
        for k, peer in enumerate(members):
            rows.append([family if k == 0 else "", peer.name, peer.code])
    lines = ["legend (x: the input, q: keep_prob, s: a fastdrop.Stream; \"1 thread\" peers run on "
             "the calling thread alone):"]
    lines += ["  " + line for line in align(["family", "peer", "what is timed"], rows, left=3)]
    lines += [
        "columns: ns/element and median, the fastest and the median timed batch per element; "
        "spread, median / fastest - 1; CPU ns, the thread's CPU time per element (1-thread "
        "peers: well under ns/element means it was descheduled); GB/s, bytes read + written "
        "(2 x itemsize per element, + 1/8 byte for a bit mask); x floor, the time over the "
        "memory floor's on as many threads; x multiply, over NumPy's in-place multiply; over "
        "textbook, the textbook NumPy's time over this one; calls, timed calls; note: "
        + "; ".join(f"{key}, {text}" for key, text in NOTES.items())]
    return lines


def format_verdicts(verdicts: Sequence[targets.Verdict], records: Sequence[Record]) -> List[str]:
    """The targets with their measured values, ranges and verdicts.

    Parameters
    ----------
    verdicts : sequence of Verdict
    records : sequence of Record
        The main table (for the size the targets were judged at).

    Returns
    -------
    list of str
        Empty when no target's array ran.
    """
    if not verdicts:
        return []
    size = targets.judged_size(records)
    where = (f"at {format_size(size)}" if size == targets.TARGET_SIZE else
             f"at {format_size(size)}, the run's largest size (they are set for "
             f"{format_size(targets.TARGET_SIZE)}; add it to --sizes to judge them there)")
    rows = []
    for v in verdicts:
        measured = "-" if v.value is None else f"{number(v.value)}x"
        within = "-" if v.low is None else f"{_bound(v.low)} to {_bound(v.high)}"
        rows.append([v.target, v.dtype, format_size(v.size), measured, within, v.verdict])
    return [f"targets, {where} unless the size column says otherwise; the range allows for both "
            "rows' uncertainty (a verdict needs all of it on one side):", "",
            *align(["target", "dtype", "size", "measured", "quiet range", "verdict"], rows,
                   left=3)]


def run_noise(results: Results, verdicts: Sequence[targets.Verdict]) -> noise.RunNoise:
    """The run's noise from its rows and verdicts (see `fastdrop.bench.noise.run_noise`)."""
    rows = [*results.records, *results.channel_records]
    judged = [v for v in verdicts if v.verdict != targets.NOT_MEASURED]
    return noise.run_noise([r.uncertainty for r in rows], sum(r.remeasured for r in rows),
                           sum(r.noisy for r in rows), results.busy_share,
                           sum(v.verdict == targets.UNDECIDED for v in judged), len(judged))


def format_report(results: Results, machine: dict) -> str:
    """The benchmark's report, as ``fastdrop bench`` prints it.

    Parameters
    ----------
    results : Results
        As returned by `fastdrop.bench.run`.
    machine : dict
        As returned by `fastdrop.bench.machine_info`.

    Returns
    -------
    str
        Lines joined by newlines, with no trailing newline; the last one is the noise line.
    """
    verdicts = targets.evaluate(results.records, results.channel_records)
    lines = [f"fastdrop bench: {machine_line(machine)}",
             f"keep_prob {results.keep_prob}; each time: {STATISTIC}"]
    for key, framework in (("torch", "PyTorch"), ("jax", "JAX")):
        if machine[key] is None:
            lines.append(f"note: {framework} is not installed; its rows are skipped (pip "
                         f'install "fastdropout[{key}]" adds them)')
    lines += ["", *format_legend([*results.records, *results.channel_records])]
    sections = [format_bandwidth(results.bandwidth, results.records,
                                 machine.get("last_level_cache")),
                format_records(results.records),
                format_summary(results.records),
                format_half_precision_summary(results.records)]
    if results.channel_shape is not None:
        shape = results.channel_shape
        sections.append([f"channel dropout: {CHANNEL_DTYPE} x of shape {format_shape(shape)} "
                         f"({format_size(elements(shape))} elements), shared_axes="
                         f"{CHANNEL_SHARED_AXES}, one decision per (sample, channel)", "",
                         *format_records(results.channel_records, shape=shape)])
    sections.append(format_verdicts(verdicts, results.records))
    for section in sections:
        if section:
            lines += ["", *section]
    lines += ["", run_noise(results, verdicts).line(machine["cpus"] or 1)]
    return "\n".join(lines)


def report(results: Results, machine: dict) -> dict:
    """The benchmark's results as JSON-ready data.

    Parameters
    ----------
    results : Results
        As returned by `fastdrop.bench.run`.
    machine : dict
        As returned by `fastdrop.bench.machine_info`.

    Returns
    -------
    dict
        Keys ``machine``, ``keep_prob``, ``statistic``, ``records`` (a list of dicts with the
        fields of `Record`), ``summary`` (as `summary` gives), ``half_precision`` (as
        `half_precision_summary` gives), ``channel`` (None when the channel scenario was
        skipped, else a dict with ``shape``, ``shared_axes``, ``dtype`` and ``records``),
        ``bandwidth`` (a list of dicts with the fields of `Bandwidth`), ``targets`` (a list of
        dicts with the fields of `fastdrop.bench.targets.Verdict`) and ``noise`` (the fields of
        `fastdrop.bench.noise.RunNoise`, and ``line``).  An unbounded uncertainty, or end of a
        verdict's range, is None.
    """
    verdicts = targets.evaluate(results.records, results.channel_records)
    channel = None
    if results.channel_shape is not None:
        channel = {
            "shape": list(results.channel_shape),
            "shared_axes": list(CHANNEL_SHARED_AXES),
            "dtype": CHANNEL_DTYPE,
            "records": [dataclasses.asdict(record) for record in results.channel_records],
        }
    run = run_noise(results, verdicts)
    return _json_ready({
        "machine": machine,
        "keep_prob": results.keep_prob,
        "statistic": STATISTIC,
        "records": [dataclasses.asdict(record) for record in results.records],
        "summary": summary(results.records),
        "half_precision": half_precision_summary(results.records),
        "channel": channel,
        "bandwidth": [dataclasses.asdict(b) for b in results.bandwidth],
        "targets": [dataclasses.asdict(v) for v in verdicts],
        "noise": {**dataclasses.asdict(run), "line": run.line(machine["cpus"] or 1)},
    })
