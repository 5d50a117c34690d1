"""The ``fastdrop`` command line: ``bench`` (time dropout against its baselines), ``info``
(the build, the threads and the machine) and ``explain`` (the inverted-dropout questions of the
seed thread, answered by live experiments)."""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Callable, Optional, Sequence, TextIO

import fastdrop
from fastdrop import _api, bench, explain

BAR_WIDTH = 20
# Off a terminal, the progress bar writes a line each time this share of the work is done.
LOG_STEP = 0.05


def _size(text: str) -> int:
    """An element count such as "1000", "1e6" or "6.4e7"."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not (value >= 1 and value.is_integer()):
        raise argparse.ArgumentTypeError(f"must be a whole number of elements >= 1, got {text!r}")
    return int(value)


def _keep_prob(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not 0.0 < value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be in (0, 1], got {text!r}")
    return value


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {text!r}")
    return value


def _repeats(text: str) -> int:
    """A ``--repeats`` count: at least `bench.MIN_REPEATS`, so that every row has a spread."""
    value = _positive_int(text)
    if value < bench.MIN_REPEATS:
        raise argparse.ArgumentTypeError(
            f"must be at least {bench.MIN_REPEATS}, so that every row's repeats show how far "
            f"they spread, got {text!r}")
    return value


def _dtype_name(text: str) -> str:
    """A ``--dtypes`` entry; bfloat16 where ml_dtypes is missing gets the command that installs
    it rather than argparse's list of valid choices, which leaves it out."""
    if text == "bfloat16" and text not in bench.DTYPES:
        raise argparse.ArgumentTypeError(
            'bfloat16 needs the ml_dtypes package: pip install "fastdropout[bfloat16]"')
    return text


def _json_path(text: str) -> str:
    """A file path whose directory exists, checked before the benchmark spends its minute."""
    directory = os.path.dirname(os.path.abspath(text))
    if not os.path.isdir(directory):
        raise argparse.ArgumentTypeError(f"directory {directory!r} does not exist")
    if os.path.isdir(text):
        raise argparse.ArgumentTypeError(f"{text!r} is a directory")
    # "" and "name/" pass the checks above (abspath drops the slash) but open no file.
    if not os.path.basename(text):
        raise argparse.ArgumentTypeError(f"{text!r} names no file")
    return text


def _require_matplotlib() -> None:
    """Refuse a ``--plot`` option, at parse time, where matplotlib cannot draw."""
    missing = bench.plot_available()
    if missing is not None:
        raise argparse.ArgumentTypeError(
            f"{missing}; --plot needs matplotlib: {bench.PLOT_INSTALL_HINT}")


def _plot_path(text: str) -> str:
    """A PNG path for ``--plot``: checked, with matplotlib's presence, before the benchmark runs."""
    path = _json_path(text)
    _require_matplotlib()
    return path


def _plot_directory(text: str) -> str:
    """A directory for ``explain --plot``: its parent must exist, and matplotlib must import,
    both checked before the experiments run."""
    parent = os.path.dirname(os.path.abspath(text))
    if not os.path.isdir(parent):
        raise argparse.ArgumentTypeError(f"directory {parent!r} does not exist")
    if os.path.exists(text) and not os.path.isdir(text):
        raise argparse.ArgumentTypeError(f"{text!r} exists and is not a directory")
    _require_matplotlib()
    return text


def _duration(seconds: float) -> str:
    """Seconds as "45 s" or "3 min 20 s"."""
    seconds = int(round(seconds))
    return f"{seconds} s" if seconds < 60 else f"{seconds // 60} min {seconds % 60:02d} s"


def progress_bar(stream: TextIO, clock: Callable[[], float] = time.monotonic) -> bench.Progress:
    """A `bench.run` progress callback drawing "[####......] 40% about 25 s left  label" on
    `stream`.

    The fraction done and the time left come from the run's estimate of each step's cost, scaled
    by the time the steps done so far really took.  On a terminal the bar redraws one line in
    place; elsewhere (a log, a pipe) it writes a line each `LOG_STEP` of the work, and the last.

    Parameters
    ----------
    stream : file-like
        Where to draw, normally sys.stderr.
    clock : callable, optional
        The clock the time left is measured on.

    Returns
    -------
    callable
        ``progress(done, total, label)``.
    """
    interactive = stream.isatty()
    start = clock()
    logged = [-LOG_STEP]

    def progress(done: float, total: float, label: str) -> None:
        fraction = min(1.0, done / total) if total > 0 else 1.0
        # Only the run's closing call, without a label, is the end: the re-measures of the last
        # array come after the estimate's work is all done.
        finished = fraction >= 1.0 and not label
        if not interactive:
            if not finished and fraction - logged[0] < LOG_STEP:
                return
            logged[0] = fraction
        filled = int(BAR_WIDTH * fraction)
        elapsed = clock() - start
        if finished:
            left = f"done in {_duration(elapsed)}"
        elif fraction >= 1.0:
            left = "finishing"
        elif fraction > 0:
            left = f"about {_duration(elapsed * (1 - fraction) / fraction)} left"
        else:
            left = "estimating the time left"
        text = (f"[{'#' * filled}{'.' * (BAR_WIDTH - filled)}] {fraction:4.0%} {left}  "
                f"{label}").rstrip()
        if interactive:
            stream.write(f"\r\033[K{text}" + ("\n" if finished else ""))
        else:
            stream.write(text + "\n")
        stream.flush()

    return progress


def cmd_bench(args: argparse.Namespace) -> int:
    """Run the benchmark: progress on stderr, the tables on stdout, JSON to ``--json``, a PNG
    to ``--plot``.  Arrays that cannot fit in memory are refused before anything runs."""
    channel_shape = None if args.no_channel else bench.CHANNEL_SHAPE
    bandwidth_bytes = (None if args.no_bandwidth else
                       bench.bandwidth.array_bytes(bench.BANDWIDTH_BYTES,
                                                   bench.machine.last_level_cache()))
    available = bench.available_memory()
    if bandwidth_bytes is not None and available is not None and 2 * bandwidth_bytes > available:
        # The bandwidth is context beside the tables, not what the user asked to time: a cache
        # so large that its arrays cannot fit costs that line, not the run.
        print(f"fastdrop bench: note: the machine's bandwidth is skipped: its two arrays of "
              f"{bench.formatting.format_bytes(bandwidth_bytes)} need more than the "
              f"{bench.formatting.format_bytes(available)} of memory available",
              file=sys.stderr)
        bandwidth_bytes = None
    previous = fastdrop.get_num_threads()
    if args.threads is not None:
        fastdrop.set_num_threads(args.threads)
    try:
        try:
            bench.check_memory(bench.plan(args.sizes, args.dtypes, channel_shape), available)
        except bench.SizeRefused as refusal:
            print(f"fastdrop bench: error: {refusal}", file=sys.stderr)
            return 2
        try:
            results = bench.run(args.sizes, args.dtypes, args.keep_prob, args.repeats,
                                progress=progress_bar(sys.stderr), channel_shape=channel_shape,
                                bandwidth_bytes=bandwidth_bytes)
        except MemoryError as error:
            # Where the OS does not say how much memory is free, the check above cannot refuse.
            print(f"\nfastdrop bench: error: out of memory ({error}); choose smaller --sizes",
                  file=sys.stderr)
            return 2
        machine = bench.machine_info()
    finally:
        fastdrop.set_num_threads(previous)
    print(bench.format_report(results, machine))
    if args.json is not None:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(bench.report(results, machine), f, indent=2)
            f.write("\n")
    if args.plot is not None:
        title = f"fastdrop bench, keep_prob {args.keep_prob}: {bench.machine_line(machine)}"
        bench.plot(results.records, args.plot, title=title)
        print(f"\nplot written to {args.plot}")
    return 0


def _path_timings_note() -> str:
    """How the SIMD path was chosen: the import's timings of each path, or the environment."""
    timings = _api.simd_path_timings
    if not timings:  # the import times the paths unless FASTDROP_SIMD named one
        return " (set by FASTDROP_SIMD)"
    measured = ", ".join(f"{path} {ns:.3f}" for path, ns in timings.items())
    return f" (the fastest at import, ns per float32 element on one thread: {measured})"


def cmd_info(args: argparse.Namespace) -> int:
    """Print the versions, the build (OpenMP, SIMD path), the threads and the CPU."""
    machine = bench.machine_info()
    print(f"fastdrop {machine['fastdrop']}")
    print(f"numpy {machine['numpy']}")
    print(f"python {machine['python']}")
    print(f"torch {machine['torch'] or 'not installed'}")
    print(f"jax {machine['jax'] or 'not installed'}")
    print(f"OpenMP: {'on' if machine['openmp'] else 'off'}")
    print(f"threads: {machine['threads']} (default {machine['default_threads']})")
    print(f"SIMD path: {machine['simd_path']}{_path_timings_note()}")
    print(f"CPU: {machine['cpu']}")
    return 0


def cmd_explain(args: argparse.Namespace) -> int:
    """Run the experiments of `fastdrop.explain`, print them in words, draw them to ``--plot``."""
    report = explain.run(quick=args.quick)
    print(explain.format_report(report))
    if args.plot is not None:
        paths = explain.plot(report, args.plot)
        print(f"\nplots written to {args.plot}: "
              + ", ".join(os.path.basename(path) for path in paths))
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``fastdrop`` command.

    Returns
    -------
    argparse.ArgumentParser
    """
    parser = argparse.ArgumentParser(prog="fastdrop",
                                     description="Fast, reproducible dropout for NumPy.")
    parser.add_argument("--version", action="version", version=f"fastdrop {fastdrop.__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    run = commands.add_parser(
        "bench",
        help="time fastdrop against the memory floor, textbook and best NumPy, PyTorch and JAX",
        description="Time dropout implementations on the same arrays in one process: "
                    "ns/element (fastest and median), GB/s, the ratio to the memory floor (a C "
                    "pass over the same bytes) and to NumPy's in-place multiply, the speed-up "
                    "over the textbook NumPy code, beside the machine's streaming bandwidth; "
                    "then a summary, a channel-dropout table, each target with its verdict "
                    "(met, missed, too noisy to tell) and how noisy the run was.")
    run.add_argument("--sizes", type=_size, nargs="+", default=list(bench.DEFAULT_SIZES),
                     metavar="N", help="elements per array (default: 1e4 1e6 6.4e7)")
    run.add_argument("--dtypes", nargs="+", type=_dtype_name, choices=bench.DTYPES,
                     default=list(bench.DEFAULT_DTYPES), metavar="DTYPE",
                     help=f"from {', '.join(bench.DTYPES)} (default: "
                          f"{' '.join(bench.DEFAULT_DTYPES)})")
    run.add_argument("--keep-prob", type=_keep_prob, default=bench.DEFAULT_KEEP_PROB,
                     metavar="Q", help="probability that a unit is kept (default: %(default)s)")
    run.add_argument("--threads", type=_positive_int, metavar="N",
                     help="fastdrop's thread count, fastdrop.set_num_threads(N) (default: "
                          "the current one)")
    run.add_argument("--repeats", type=_repeats, metavar="N",
                     help="timed calls per measurement (default: about "
                          f"{bench.REPEAT_SECONDS} s worth, {bench.MIN_REPEATS} to "
                          f"{bench.MAX_REPEATS})")
    run.add_argument("--json", type=_json_path, metavar="PATH",
                     help="also write every record and the machine description to PATH")
    run.add_argument("--plot", type=_plot_path, metavar="PATH",
                     help="also draw throughput against size, one subplot per dtype, as a PNG "
                          f"at PATH (needs matplotlib: {bench.PLOT_INSTALL_HINT})")
    run.add_argument("--no-bandwidth", action="store_true",
                     help="skip the machine's streaming bandwidth (STREAM-like copy and scale "
                          f"over two arrays of {bench.BANDWIDTH_BYTES // 2**20} MiB or "
                          f"{bench.bandwidth.CACHE_MULTIPLE} times the last-level cache, "
                          "whichever is more)")
    run.add_argument("--no-channel", action="store_true",
                     help="skip the channel-dropout table (a float32 array of shape "
                          f"{bench.format_shape(bench.CHANNEL_SHAPE)}, shared_axes="
                          f"{bench.CHANNEL_SHARED_AXES})")
    run.set_defaults(handler=cmd_bench)

    info = commands.add_parser("info", help="versions, build, threads and CPU",
                               description="Print fastdrop's build and the machine it runs on.")
    info.set_defaults(handler=cmd_info)

    why = commands.add_parser(
        "explain", help="why inverted dropout divides by keep_prob, answered by experiments",
        description="Answer the seed thread's questions about inverted dropout with small "
                    "experiments run live on fastdrop: why divide by keep_prob, the expected "
                    "output, per-sample against shared masks, the paper's classic dropout "
                    "against inverted dropout, regularisation and Monte-Carlo dropout.")
    why.add_argument("--plot", type=_plot_directory, metavar="DIR",
                     help="also draw the experiments as PNG files in DIR (created if missing; "
                          f"needs matplotlib: {bench.PLOT_INSTALL_HINT})")
    why.add_argument("--quick", action="store_true",
                     help="train the networks for fewer steps (a few seconds instead of about "
                          "ten); the conclusions hold either way")
    why.set_defaults(handler=cmd_explain)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point of the ``fastdrop`` command.

    Parameters
    ----------
    argv : sequence of str, optional
        The arguments after the program name; None reads sys.argv.

    Returns
    -------
    int
        The exit status: 0, or 2 for arrays too large for the memory (argparse exits with
        status 2 on a bad command line).  Without a command it prints the help.
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    return args.handler(args)


if __name__ == "__main__":
    sys.exit(main())
