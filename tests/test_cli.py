"""The ``fastdrop`` command line: ``bench`` and ``info`` (timings themselves live in bench/)."""
import importlib.util
import json
import os
import pathlib
import subprocess
import sys
from contextlib import contextmanager

import numpy as np
import pytest

import fastdrop
from fastdrop import bench
from fastdrop.cli import build_parser, main

TINY = ["bench", "--sizes", "1000", "--repeats", "1"]
SMALL_CHANNEL_SHAPE = (2, 3, 4, 5)
CHANNEL_SHAPE = bench.CHANNEL_SHAPE  # before the autouse fixture below replaces it
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
COLUMNS = ("size", "dtype", "peer", "ns/element", "GB/s", "ratio to floor", "speed-up over seed",
           "repeats")
RECORD_KEYS = {"size", "dtype", "peer", "seconds", "ns_per_element", "gb_per_s",
               "ratio_to_floor", "speedup_over_seed", "repeats"}
MACHINE_KEYS = {"cpu", "simd_path", "openmp", "threads", "default_threads", "python", "numpy",
                "fastdrop", "torch"}


SECTION_STARTS = ("summary", "targets", "half precision", "channel dropout", "peers",
                  "plot written")


@pytest.fixture(autouse=True)
def small_channel_shape(monkeypatch):
    """The channel scenario on a (2, 3, 4, 5) array instead of 51 MB, to keep the tests quick
    (``fastdrop bench`` reads bench.CHANNEL_SHAPE when it runs)."""
    monkeypatch.setattr(bench, "CHANNEL_SHAPE", SMALL_CHANNEL_SHAPE)


def cells(line):
    """A table line split into its cells (cells are separated by 2+ spaces)."""
    return [cell.strip() for cell in line.split("  ") if cell.strip()]


def table_rows(out, header_start="size", after=None):
    """The data rows of the first table whose header starts with `header_start` (after the line
    starting with `after`, when given), split into cells, up to the next section."""
    lines = out.splitlines()
    start = 0 if after is None else next(i for i, line in enumerate(lines)
                                         if line.startswith(after))
    header = next(i for i, line in enumerate(lines)
                  if i >= start and line.startswith(header_start))
    rows = []
    for line in lines[header + 1:]:
        if line.startswith(SECTION_STARTS):
            break
        if line:
            rows.append(cells(line))
    return rows


def peer_names(dtype):
    """The main table's peers that run here on `dtype`, in table order."""
    return [peer.name for peer in bench.available_peers() if peer.supports(dtype)]


def channel_peers():
    return [peer.name for peer in bench.available_peers(bench.CHANNEL_PEERS)]


def test_bench_prints_a_row_per_peer_and_dtype(capsys):
    assert main(TINY) == 0
    out, err = capsys.readouterr()
    header_line = next(line for line in out.splitlines() if line.startswith("size"))
    for column in COLUMNS:
        assert column in header_line
    rows = table_rows(out)
    assert bench.DEFAULT_DTYPES == ("float32", "float64")
    assert [(row[0], row[1], row[2]) for row in rows] == [
        ("1e3", dtype, peer) for dtype in bench.DEFAULT_DTYPES for peer in peer_names(dtype)]
    for row in rows:
        ns, gbs, floor, seed, repeats = row[3:]
        assert ns.endswith(" ns") and float(ns[:-3]) > 0
        assert gbs.endswith(" GB/s") and float(gbs[:-5]) > 0
        assert floor.endswith("x floor") and seed.endswith("x seed")
        assert repeats == "1"
    by_peer = {(row[1], row[2]): row for row in rows}
    for dtype in bench.DEFAULT_DTYPES:
        assert by_peer[dtype, bench.FLOOR][5] == "1.00x floor"
        assert by_peer[dtype, bench.SEED][6] == "1.00x seed"
    # The header names the machine and build; progress went to stderr, not into the table.
    assert f"threads {fastdrop.get_num_threads()}" in out
    assert f"SIMD {bench.simd_path()}" in out
    assert f"fastdrop {fastdrop.__version__}" in out
    assert f"numpy {np.__version__}" in out
    assert "keep_prob 0.8" in out
    total = len(rows) + len(channel_peers())  # the progress bar counts the channel table too
    assert f"{total}/{total}" in err and "[" in err
    assert "[#" not in out
    if bench.torch_module() is None:
        assert "torch is not installed" in out


def test_bench_json_records(tmp_path, capsys):
    path = tmp_path / "bench.json"
    argv = ["bench", "--sizes", "1000", "2e3", "--dtypes", "float64", "--keep-prob", "0.5",
            "--repeats", "2", "--json", str(path)]
    assert main(argv) == 0
    capsys.readouterr()
    data = json.loads(path.read_text())
    assert data["keep_prob"] == 0.5
    assert set(data["machine"]) == MACHINE_KEYS
    assert data["machine"]["fastdrop"] == fastdrop.__version__
    assert data["machine"]["threads"] == fastdrop.get_num_threads()
    assert data["machine"]["openmp"] == fastdrop._core.openmp_enabled()
    assert data["machine"]["simd_path"] == bench.simd_path()
    assert data["machine"]["cpu"] == bench.cpu_model() and data["machine"]["cpu"]
    assert data["machine"]["numpy"] == np.__version__
    torch = bench.torch_module()
    assert data["machine"]["torch"] == (None if torch is None else torch.__version__)
    records = data["records"]
    assert [(r["size"], r["dtype"], r["peer"]) for r in records] == [
        (size, "float64", peer) for size in (1000, 2000) for peer in peer_names("float64")]
    for record in records:
        assert set(record) == RECORD_KEYS
        assert record["seconds"] > 0 and record["ns_per_element"] > 0 and record["gb_per_s"] > 0
        assert record["ns_per_element"] == pytest.approx(record["seconds"] * 1e9 / record["size"])
        assert record["repeats"] == 2
    floors = {r["size"]: r["seconds"] for r in records if r["peer"] == bench.FLOOR}
    seeds = {r["size"]: r["seconds"] for r in records if r["peer"] == bench.SEED}
    for record in records:
        assert record["ratio_to_floor"] == pytest.approx(record["seconds"] / floors[record["size"]])
        assert record["speedup_over_seed"] == pytest.approx(seeds[record["size"]] /
                                                            record["seconds"])
    # The summary: fastdrop forward against the targets' baselines, from the same seconds.
    seconds = {(r["size"], r["peer"]): r["seconds"] for r in records}
    assert [(row["size"], row["dtype"]) for row in data["summary"]] == [
        (1000, "float64"), (2000, "float64")]
    for row in data["summary"]:
        forward = seconds[row["size"], bench.FORWARD]
        assert row["ratio_to_floor"] == pytest.approx(forward / floors[row["size"]])
        assert row["ratio_to_floor_1_thread"] == pytest.approx(
            seconds[row["size"], bench.FORWARD_1_THREAD] / floors[row["size"]])
        assert set(row["speedup_over"]) == {name for name in bench.SUMMARY_BASELINES
                                            if name in peer_names("float64")}
        for name, speedup in row["speedup_over"].items():
            assert speedup == pytest.approx(seconds[row["size"], name] / forward)
    # The channel scenario, under its own key.
    channel = data["channel"]
    assert channel["shape"] == list(SMALL_CHANNEL_SHAPE)
    assert channel["shared_axes"] == [2, 3] and channel["dtype"] == "float32"
    size = int(np.prod(SMALL_CHANNEL_SHAPE))
    assert [(r["size"], r["dtype"], r["peer"]) for r in channel["records"]] == [
        (size, "float32", peer) for peer in channel_peers()]
    floor = channel["records"][0]["seconds"]
    for record in channel["records"]:
        assert set(record) == RECORD_KEYS
        assert record["seconds"] > 0 and record["repeats"] == 2
        assert record["ratio_to_floor"] == pytest.approx(record["seconds"] / floor)
        assert record["speedup_over_seed"] is None  # the seed code is not a channel peer


def test_bench_single_thread_forward_row_and_summary(capsys):
    assert main(TINY + ["--sizes", "1000", "3e3"]) == 0
    out = capsys.readouterr().out
    rows = table_rows(out)
    by_peer = {(row[0], row[1], row[2]): row for row in rows}
    for size in ("1e3", "3e3"):
        for dtype in bench.DEFAULT_DTYPES:
            row = by_peer[size, dtype, bench.FORWARD_1_THREAD]
            assert row[5].endswith("x floor") and float(row[5][:-len("x floor")]) > 0
    legend = out[out.index("\npeers ("):].splitlines()
    assert ["fastdrop forward 1 thread",
            "fastdrop.dropout(x, q, out=x, stream=s), fastdrop.set_num_threads(1)"] \
        in [cells(line) for line in legend]
    # The summary block: one row per (size, dtype), the forward's ratios copied from the table
    # and a speed-up column per baseline that ran.
    assert "summary of fastdrop forward" in out
    assert "targets at 6.4e7:" in out and ">= 10x best numpy" in out and ">= 30x torch" in out
    header = next(line for line in out.splitlines() if line.startswith("size  dtype    x floor"))
    torch = bench.torch_module() is not None
    expected = ["size", "dtype", "x floor", "1 thread x floor", "over seed", "over best numpy"]
    if torch:
        expected += ["over torch 1 thread", "over torch all threads", "module over torch.nn"]
    assert cells(header) == expected
    summary = table_rows(out, "size  dtype    x floor")
    assert [(row[0], row[1]) for row in summary] == [
        (size, dtype) for size in ("1e3", "3e3") for dtype in bench.DEFAULT_DTYPES]
    for row in summary:
        assert len(row) == len(expected)
        # the module rows are timed in float32 only, so their column says "-" elsewhere
        ratios = row[2:-1] if torch and row[1] != "float32" else row[2:]
        assert all(cell.endswith("x") and float(cell[:-1]) > 0 for cell in ratios)
        assert not torch or row[1] == "float32" or row[-1] == "-"
        table = by_peer[row[0], row[1], bench.FORWARD]
        assert row[2] == table[5][:-len(" floor")]
        assert row[3] == by_peer[row[0], row[1], bench.FORWARD_1_THREAD][5][:-len(" floor")]
        assert row[4] == table[6][:-len(" seed")]


def test_bench_half_precision_summary(tmp_path, capsys):
    """float16 (and bfloat16 where ml_dtypes is installed) beside float32: the section holds
    the table's GB/s and seed speed-ups, and float32's GB/s over each half dtype's."""
    half = [name for name in bench.HALF_DTYPES if name in bench.DTYPES]
    path = tmp_path / "bench.json"
    assert main(TINY + ["--dtypes", *half, "float32", "--no-channel", "--json", str(path)]) == 0
    out = capsys.readouterr().out
    data = json.loads(path.read_text())
    records = {(r["dtype"], r["peer"]): r for r in data["records"]}
    assert [(row["size"], row["dtype"]) for row in data["half_precision"]] == [
        (1000, dtype) for dtype in half]
    printed = table_rows(out, "size", after="half precision")
    assert [row[:2] for row in printed] == [["1e3", dtype] for dtype in half]
    for row, cells_ in zip(data["half_precision"], printed):
        for k, (direction, peer) in enumerate((("forward", bench.FORWARD),
                                               ("backward", bench.BACKWARD))):
            own, single = records[row["dtype"], peer], records["float32", peer]
            ratio = single["gb_per_s"] / own["gb_per_s"]
            assert row[f"{direction}_gb_per_s"] == own["gb_per_s"]
            assert row[f"{direction}_float32_gb_per_s"] == single["gb_per_s"]
            assert row[f"{direction}_float32_ratio"] == pytest.approx(ratio)
            assert row[f"{direction}_speedup_over_seed"] == own["speedup_over_seed"]
            assert cells_[2 + 3 * k:5 + 3 * k] == [bench._number(own["gb_per_s"]),
                                                   bench._number(single["gb_per_s"]),
                                                   f"{bench._number(ratio)}x"]
        assert cells_[8:] == [f"{bench._number(row['forward_speedup_over_seed'])}x",
                              f"{bench._number(row['backward_speedup_over_seed'])}x"]


def test_bench_half_precision_summary_needs_float32(tmp_path, capsys):
    path = tmp_path / "bench.json"
    assert main(TINY + ["--dtypes", "float16", "--no-channel", "--json", str(path)]) == 0
    assert "half precision" not in capsys.readouterr().out
    assert json.loads(path.read_text())["half_precision"] == []


def test_single_thread_peer_runs_on_one_thread_and_restores_the_count(restore_threads):
    fastdrop.set_num_threads(2)
    peer = next(peer for peer in bench.PEERS if peer.name == bench.FORWARD_1_THREAD)
    ws = bench.Workspace.create(1000, "float32", 0.5)
    seen = []
    with peer.prepare(ws) as call:
        seen.append(fastdrop.get_num_threads())
        call()
    assert seen == [1]
    assert fastdrop.get_num_threads() == 2
    assert set(np.unique(ws.x / ws.source).tolist()) <= {0.0, 2.0}  # it did drop, in place
    assert 0 < np.count_nonzero(ws.x) < ws.x.size


def test_bench_channel_table(capsys):
    assert main(TINY + ["--dtypes", "float64"]) == 0
    out = capsys.readouterr().out
    title = next(line for line in out.splitlines() if line.startswith("channel dropout"))
    assert "float32 x of shape 2x3x4x5 (120 elements), shared_axes=(2, 3)" in title
    assert "fastdrop channel <= 1.1x floor" in title
    header = next(line for line in out.splitlines() if line.startswith("shape"))
    assert cells(header) == ["shape", "dtype", "peer", "ns/element", "GB/s", "ratio to floor",
                             "repeats"]
    rows = table_rows(out, "shape", after="channel dropout")
    assert [(row[0], row[1], row[2]) for row in rows] == [
        ("2x3x4x5", "float32", peer) for peer in channel_peers()]
    assert rows[0][5] == "1.00x floor"
    for row in rows:
        assert float(row[3][:-len(" ns")]) > 0 and float(row[4][:-len(" GB/s")]) > 0
        assert row[6] == "1"
    legend = out[out.index("\npeers ("):].splitlines()
    assert ["fastdrop channel", "fastdrop.dropout(x, q, shared_axes=(2, 3), out=x, stream=s)"] \
        in [cells(line) for line in legend]


def test_bench_no_channel_skips_the_channel_table(tmp_path, capsys):
    path = tmp_path / "bench.json"
    assert main(TINY + ["--dtypes", "float32", "--no-channel", "--json", str(path)]) == 0
    out, err = capsys.readouterr()
    assert "channel dropout" not in out and "fastdrop channel" not in out
    rows = table_rows(out)
    assert f"{len(rows)}/{len(rows)}" in err
    assert json.loads(path.read_text())["channel"] is None


def test_the_default_run_includes_the_channel_scenario():
    options = build_parser().parse_args(["bench"])
    assert options.no_channel is False and options.plot is None
    assert bench.CHANNEL_SHAPE == SMALL_CHANNEL_SHAPE  # the fixture's, for speed; the module's:
    assert CHANNEL_SHAPE == (64, 64, 56, 56)


@pytest.mark.parametrize("name", [bench.CHANNEL, "torch dropout2d 1 thread",
                                  "torch dropout2d all threads"])
def test_channel_peers_drop_whole_channels(name):
    peer = next(peer for peer in bench.CHANNEL_PEERS if peer.name == name)
    if not peer.available():
        pytest.skip(f"{name}: torch is not installed")
    ws = bench.Workspace.create((4, 8, 3, 5), "float32", 0.5)
    with peer.prepare(ws) as call:
        call()
    scale = (ws.x / ws.source).reshape(4 * 8, 3 * 5)
    kept = scale[:, 0] != 0
    np.testing.assert_allclose(scale[kept], 2.0, rtol=1e-6)
    assert np.all(scale[~kept] == 0)
    assert 0 < np.count_nonzero(kept) < kept.size


def test_run_returns_both_scenarios():
    results = bench.run([100], ["float32"], 0.8, repeats=1, channel_shape=(1, 2, 3, 3))
    assert [r.peer for r in results.records] == peer_names("float32")
    assert results.channel_shape == (1, 2, 3, 3)
    assert [(r.size, r.peer) for r in results.channel_records] == [
        (18, peer) for peer in channel_peers()]
    assert bench.run([100], ["float32"], repeats=1).channel_records == []


def test_peers_left_out_for_dtypes_they_do_not_take(monkeypatch):
    only64 = bench.Peer("float64 only", "x", bench._floor, dtypes=("float64",))
    monkeypatch.setattr(bench, "PEERS", [*bench.PEERS[:3], only64])
    results = bench.run([100], ["float32", "float64"], repeats=1)
    assert [(r.dtype, r.peer) for r in results.records] == [
        (dtype, peer) for dtype in ("float32", "float64")
        for peer in [p.name for p in bench.PEERS[:3]] + (["float64 only"] if dtype == "float64"
                                                          else [])]


@pytest.mark.skipif(importlib.util.find_spec("matplotlib") is None,
                    reason='matplotlib is not installed (pip install "fastdropout[plot]")')
def test_bench_plot_writes_a_png(tmp_path, capsys):
    path = tmp_path / "throughput.png"
    assert main(TINY + ["--sizes", "1000", "2e3", "--no-channel", "--plot", str(path)]) == 0
    out = capsys.readouterr().out
    assert f"plot written to {path}" in out
    data = path.read_bytes()
    assert data.startswith(PNG_MAGIC) and len(data) > 10_000


def test_bench_plot_without_matplotlib_fails_before_the_benchmark(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # makes `import matplotlib` fail
    ran = []
    monkeypatch.setattr(bench, "run", lambda *args, **kwargs: ran.append(1))
    path = tmp_path / "throughput.png"
    with pytest.raises(SystemExit) as exit_info:
        main(TINY + ["--plot", str(path)])
    assert exit_info.value.code == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert "--plot" in err and "matplotlib" in err and 'pip install "fastdropout[plot]"' in err
    assert ran == [] and not path.exists()


def test_bench_threads_option_applies_during_the_run_only(capsys):
    before = fastdrop.get_num_threads()
    assert main(TINY + ["--dtypes", "float32", "--threads", "1"]) == 0
    assert "threads 1 " in capsys.readouterr().out
    assert fastdrop.get_num_threads() == before


@pytest.mark.parametrize("argv, message", [
    (["bench", "--keep-prob", "0"], "--keep-prob"),
    (["bench", "--keep-prob", "1.5"], "--keep-prob"),
    (["bench", "--keep-prob", "nan"], "--keep-prob"),
    (["bench", "--sizes", "0"], "--sizes"),
    (["bench", "--sizes", "1.5"], "--sizes"),
    (["bench", "--sizes", "lots"], "--sizes"),
    (["bench", "--sizes", "inf"], "--sizes"),
    (["bench", "--dtypes", "int32"], "--dtypes"),
    (["bench", "--threads", "0"], "--threads"),
    (["bench", "--repeats", "-1"], "--repeats"),
    (["bench", "--json", "/nonexistent-dir/out.json"], "--json"),
    (["bench", "--plot", "/nonexistent-dir/out.png"], "--plot"),
    (["bench", "--no-such-option"], "unrecognized arguments"),
    (["frobnicate"], "invalid choice"),
    ([], "required"),
])
def test_bad_options_exit_nonzero_with_a_message(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code != 0
    out, err = capsys.readouterr()
    assert message in err
    assert "error" in err
    assert out == ""


def test_info(capsys):
    assert main(["info"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert f"fastdrop {fastdrop.__version__}" in lines
    assert f"numpy {np.__version__}" in lines
    assert (f"threads: {fastdrop.get_num_threads()} "
            f"(default {fastdrop._core.default_num_threads()})") in lines
    assert f"OpenMP: {'on' if fastdrop._core.openmp_enabled() else 'off'}" in lines
    timings = ", ".join(f"{path} {ns:.3f}" for path, ns in fastdrop._api.simd_path_timings.items())
    assert (f"SIMD path: {bench.simd_path()} (the fastest at import, ns per float32 element on "
            f"one thread: {timings})") in lines
    assert any(line.startswith("CPU: ") and len(line) > len("CPU: ") for line in lines)


def test_python_dash_m_fastdrop_info(tmp_path):
    """`python -m fastdrop` runs the CLI; run from elsewhere so that the fastdrop under test (the
    installed one in CI) is imported, not a source tree in the working directory."""
    package_parent = str(pathlib.Path(fastdrop.__file__).resolve().parents[1])
    env = dict(os.environ, FASTDROP_NUM_THREADS="1", PYTHONPATH=package_parent)
    result = subprocess.run([sys.executable, "-m", "fastdrop", "info"], env=env, cwd=tmp_path,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert f"fastdrop {fastdrop.__version__}" in result.stdout.splitlines()
    assert "threads: 1 (default" in result.stdout


# ---------------------------------------------------------------------------------------------
# The timing method, on fake peers and a fake clock: what is called, refilled and kept
# ---------------------------------------------------------------------------------------------

class FakeClock:
    """A `perf_counter` that only moves when a fake peer's call or a refill advances it."""

    def __init__(self):
        self.now = 0.0

    def perf_counter(self):
        return self.now


@pytest.fixture
def clock(monkeypatch):
    fake = FakeClock()
    monkeypatch.setattr(bench, "time", fake)
    return fake


REFILL_SECONDS = 1e-6


def logged_workspace(log, clock, size=100):
    """A float32 workspace whose refills are logged and take REFILL_SECONDS on `clock`."""
    ws = bench.Workspace.create(size, "float32", 0.8)
    refill = ws.refill

    def logged_refill():
        log.append("refill")
        clock.now += REFILL_SECONDS
        refill()

    ws.refill = logged_refill
    return ws


def fake_peer(name, log, clock, cost):
    """A peer whose call logs itself and takes ``cost(pass_number, call_number)`` seconds on
    `clock` (both counted from 1 for this peer); its context logs its entry and exit."""
    entries = []

    @contextmanager
    def prepare(ws):
        entries.append(name)
        log.append(("enter", name))
        calls = []

        def call():
            calls.append(1)
            clock.now += cost(len(entries), len(calls))
            log.append(name)

        try:
            yield call
        finally:
            log.append(("exit", name))

    return bench.Peer(name, "fake", prepare)


def contexts(log):
    """The log cut at each context: (peer name, the calls before its first refill, then the
    runs of consecutive calls after each refill), checking that contexts never nest and nothing is called outside one."""
    segments = []
    current = None
    for event in log:
        if isinstance(event, tuple):
            kind, name = event
            assert (kind == "enter") == (current is None), "contexts overlap"
            current = (name, [0]) if kind == "enter" else None
            if kind == "enter":
                segments.append(current)
        elif event == "refill":
            assert current is not None, "refill outside a context"
            current[1].append(0)
        else:
            assert current is not None and event == current[0], "call outside its context"
            current[1][-1] += 1
    assert current is None
    return segments


def constant(seconds):
    return lambda number, call: seconds


def test_max_batch_bounds_the_growth_of_in_place_dropout():
    assert bench.max_batch(0.8) == 12
    assert bench.max_batch(0.5) == 4
    assert bench.max_batch(1.0) == bench.MAX_BATCH == 16
    assert bench.max_batch(0.01) == 1
    for q in (0.05, 0.3, 0.5, 0.8, 0.9, 0.99):
        calls = bench.max_batch(q)
        assert calls == 1 or (1 / q) ** calls <= bench.BATCH_GROWTH * (1 + 1e-9)
        assert calls == bench.MAX_BATCH or (1 / q) ** (calls + 1) > bench.BATCH_GROWTH


def test_plan_timing():
    # Short calls: full batches (12 at keep_prob 0.8), up to MAX_REPEATS calls, three passes.
    plan = bench.plan_timing(1e-6, 1e-6, 0.8)
    sizes = [size for batches in plan.passes for size in batches]
    assert set(sizes) == {12} and len(plan.passes) == bench.PASSES
    assert plan.calls == 12 * (bench.MAX_REPEATS // 12)
    assert max(map(len, plan.passes)) - min(map(len, plan.passes)) <= 1
    # The batch lasts about BATCH_SECONDS: 0.4 ms calls go in threes, 1 ms calls alone.
    assert bench.plan_timing(4e-4, 0, 0.8).passes[0][0] == 3
    assert bench.plan_timing(1e-3, 0, 0.8).passes[0][0] == 1
    # The budget (0.3 s) counts the refills and a warm-up call per pass: 40 ms calls and 40 ms
    # refills fit two passes and three calls; a call longer than the budget gets one call.
    assert bench.REPEAT_SECONDS == 0.3
    assert bench.plan_timing(0.04, 0.04, 0.8).passes == ((1, 1), (1,))
    assert bench.plan_timing(5.0, 0.0, 0.8).passes == ((1,),)
    # An explicit count is exactly that many calls, in the same batches, the last shorter.
    assert bench.plan_timing(1e-6, 0, 0.8, repeats=30).passes == ((12,), (12,), (6,))
    assert bench.plan_timing(1e-6, 0, 0.5, repeats=10).passes == ((4,), (4,), (2,))
    assert bench.plan_timing(5.0, 0, 0.8, repeats=5).passes == ((1, 1), (1, 1), (1,))
    assert bench.plan_timing(1e-6, 0, 0.8, repeats=1).passes == ((1,),)


def test_short_calls_are_timed_in_batches_in_passes_interleaved_across_peers(clock):
    log = []
    ws = logged_workspace(log, clock)
    peers = [fake_peer(bench.FLOOR, log, clock, constant(1e-6)),
             fake_peer("slow", log, clock, constant(5.0)),
             fake_peer("fast", log, clock, constant(2e-6))]
    timings = bench.measure_group(peers, ws)
    segments = contexts(log)
    # Pass 1 takes every peer; the slow one (a call longer than the budget) is done then.
    assert [name for name, _ in segments] == [bench.FLOOR, "slow", "fast", bench.FLOOR, "fast",
                                              bench.FLOOR, "fast"]
    plans = {bench.FLOOR: bench.plan_timing(1e-6, REFILL_SECONDS, 0.8),
             "fast": bench.plan_timing(2e-6, REFILL_SECONDS, 0.8)}
    seen = {name: 0 for name in plans}
    for name, runs in segments:
        if name == "slow":
            assert runs == [1, 1]  # a warm-up call, then the one timed call
            continue
        # Every pass: a warm-up call; pass 1 also a refill and a probe call; then the pass's
        # batches, each refilled first.
        warmups = [1, 1] if seen[name] == 0 else [1]
        assert runs == warmups + list(plans[name].passes[seen[name]])
        assert all(calls <= bench.max_batch(0.8) for calls in runs)
        seen[name] += 1
    assert seen == {name: len(plan.passes) for name, plan in plans.items()}
    assert timings == [(pytest.approx(1e-6), plans[bench.FLOOR].calls), (5.0, 1),
                       (pytest.approx(2e-6), plans["fast"].calls)]


def test_explicit_repeats_are_exactly_that_many_timed_calls(clock):
    log = []
    ws = logged_workspace(log, clock)
    peers = [fake_peer(bench.FLOOR, log, clock, constant(1e-6)),
             fake_peer("slow", log, clock, constant(5.0))]
    assert bench.measure_group(peers, ws, repeats=30) == [(pytest.approx(1e-6), 30), (5.0, 30)]
    runs = {}
    for name, segment in contexts(log):
        runs.setdefault(name, []).append(segment)
    assert runs[bench.FLOOR] == [[1, 1, 12], [1, 12], [1, 6]]
    # A long call is timed alone, so the probe is the first of the 30 calls.
    assert runs["slow"] == [[1] + [1] * 10, [1] * 11, [1] * 11]


def test_a_slow_first_call_does_not_cut_the_repeats(clock):
    """fastdrop.torch's module pays its first-use initialisation in its first call: the plan
    comes from the faster of the warm-up and the probe."""
    log = []
    ws = logged_workspace(log, clock)
    first_use = fake_peer(bench.FLOOR, log, clock,
                          lambda number, call: 0.5 if (number, call) == (1, 1) else 1e-6)
    [(seconds, repeats)] = bench.measure_group([first_use], ws)
    assert seconds == pytest.approx(1e-6)
    assert repeats == bench.plan_timing(1e-6, REFILL_SECONDS, 0.8).calls > 100


def test_ratios_come_from_the_minimum_over_the_passes(clock, monkeypatch):
    """A slow spell of the host in pass 2 (everything 3x slower) leaves the minimums, and the
    ratios taken from them, as they are."""
    log = []

    def spell(seconds):
        return lambda number, call: seconds * (3 if number == 2 else 1)

    peers = (fake_peer(bench.FLOOR, log, clock, spell(1e-6)),
             fake_peer(bench.SEED, log, clock, spell(8e-6)),
             fake_peer("dropout", log, clock, spell(2e-6)))
    ws = logged_workspace(log, clock)
    monkeypatch.setattr(bench.Workspace, "create", lambda *args: ws)
    steps = []
    [records] = bench.run_groups([bench.Group((100,), "float32", peers)],
                                 progress=lambda *step: steps.append(step))
    by_peer = {record.peer: record for record in records}
    assert by_peer[bench.FLOOR].seconds == pytest.approx(1e-6)
    assert by_peer["dropout"].seconds == pytest.approx(2e-6)
    assert by_peer["dropout"].ratio_to_floor == pytest.approx(2.0)
    assert by_peer["dropout"].speedup_over_seed == pytest.approx(4.0)
    assert by_peer[bench.SEED].ratio_to_floor == pytest.approx(8.0)
    # Progress: every pass of every peer announced, the count of finished peers never going
    # back, and done == total at the end.
    assert [step[2] for step in steps[:-1]] == [
        f"{name} float32 100 pass {number}" for number in (1, 2, 3)
        for name in (bench.FLOOR, bench.SEED, "dropout")]
    assert [step[0] for step in steps] == sorted(step[0] for step in steps)
    assert steps[-1] == (3, 3, "")


# Without ml_dtypes, fastdrop serves no bfloat16, and `--dtypes bfloat16` says what to install.
WITHOUT_ML_DTYPES = """
import sys


class NotInstalled:  # makes `import ml_dtypes` fail as where it is not installed
    @staticmethod
    def find_spec(name, path=None, target=None):
        if name.partition(".")[0] == "ml_dtypes":
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)


sys.meta_path.insert(0, NotInstalled)
from fastdrop.cli import main
main(["bench", "--dtypes", "bfloat16", "--sizes", "1000", "--repeats", "1"])
"""


def test_bench_bfloat16_without_ml_dtypes_says_how_to_install_it(tmp_path):
    """A process of its own, since fastdrop reads which dtypes it serves when imported."""
    package_parent = str(pathlib.Path(fastdrop.__file__).resolve().parents[1])
    env = dict(os.environ, PYTHONPATH=package_parent)
    result = subprocess.run([sys.executable, "-c", WITHOUT_ML_DTYPES], env=env, cwd=tmp_path,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2, result.stderr
    assert 'bfloat16 needs the ml_dtypes package: pip install "fastdropout[bfloat16]"' in \
        result.stderr
