"""The ``fastdrop`` command line: ``bench`` and ``info`` (timings themselves live in bench/; the
bench's modules alone are tested in test_bench.py)."""
import importlib.util
import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest

import fastdrop
from fastdrop import bench
from fastdrop.bench import runner
from fastdrop.bench.formatting import number
from fastdrop.bench.targets import HALF_DTYPES
from fastdrop.cli import build_parser, main

TINY = ["bench", "--sizes", "1000", "--repeats", "2"]
QUICK = ["--sizes", "1000", "--repeats", "2", "--dtypes", "float32", "--no-channel",
         "--no-bandwidth"]
SMALL_CHANNEL_SHAPE = (2, 3, 4, 5)
CHANNEL_SHAPE = bench.CHANNEL_SHAPE  # before the autouse fixture below replaces it
SMALL_BANDWIDTH_BYTES = 2**16
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
COLUMNS = ["size", "dtype", "peer", "ns/element", "median", "spread", "CPU ns", "GB/s", "x floor",
           "x multiply", "over textbook", "calls", "note"]
RECORD_KEYS = {"size", "dtype", "peer", "seconds", "median_seconds", "spread", "cpu_seconds",
               "descheduled", "ns_per_element", "gb_per_s", "floor", "ratio_to_floor",
               "ratio_to_multiply", "speedup_over_textbook", "repeats", "batches", "remeasured",
               "noisy", "busy_share", "uncertainty"}
MACHINE_KEYS = {"cpu", "cpus", "last_level_cache", "simd_path", "openmp", "threads", "default_threads", "python",
                "numpy", "fastdrop", "torch", "jax"}


SECTION_STARTS = ("summary", "targets", "half precision", "channel dropout", "legend",
                  "plot written", "noise:", "machine streaming")


@pytest.fixture(autouse=True)
def small_channel_shape_and_bandwidth(monkeypatch):
    """The channel scenario on a (2, 3, 4, 5) array instead of 51 MB, and the bandwidth on 64 kB
    arrays instead of 256 MiB or 4 times the last-level cache, to keep the tests quick
    (``fastdrop bench`` reads these from fastdrop.bench when it runs)."""
    monkeypatch.setattr(bench, "CHANNEL_SHAPE", SMALL_CHANNEL_SHAPE)
    monkeypatch.setattr(bench, "BANDWIDTH_BYTES", SMALL_BANDWIDTH_BYTES)
    monkeypatch.setattr(bench.machine, "last_level_cache", lambda: None)


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


def main_rows(out):
    """The main table's rows, each padded with an empty note."""
    return [row + [""] * (len(COLUMNS) - len(row)) for row in table_rows(out)]


def peer_names(dtype):
    """The main table's peers that run here on `dtype`, in table order."""
    return [peer.name for peer in bench.available_peers() if peer.supports(dtype)]


def channel_peers():
    return [peer.name for peer in bench.available_peers(bench.CHANNEL_PEERS)]


def test_bench_prints_a_row_per_peer_and_dtype(capsys):
    assert main(TINY) == 0
    out, err = capsys.readouterr()
    header_line = next(line for line in out.splitlines() if line.startswith("size"))
    assert cells(header_line) == COLUMNS
    rows = main_rows(out)
    assert bench.DEFAULT_DTYPES == ("float32", "float64")
    assert [(row[0], row[1], row[2]) for row in rows] == [
        ("1e3", dtype, peer) for dtype in bench.DEFAULT_DTYPES for peer in peer_names(dtype)]
    single = {peer.name for peer in bench.PEERS if peer.single_thread}
    for row in rows:
        ns, median, spread, cpu, gbs, floor, multiply, textbook, calls, note = row[3:]
        assert 0 < float(ns) <= float(median)
        assert spread.startswith("+") and spread.endswith("%")
        assert (cpu == "-") == (row[2] not in single)
        assert float(gbs) > 0
        assert floor.endswith("x") and multiply.endswith("x") and textbook.endswith("x")
        assert calls == "2"  # --repeats 2: exactly two timed calls, never re-measured
        assert note in ("", "noisy")
    by_peer = {(row[1], row[2]): row for row in rows}
    for dtype in bench.DEFAULT_DTYPES:
        assert by_peer[dtype, bench.MEMORY_FLOOR][8] == "1.00x"
        assert by_peer[dtype, bench.NUMPY_MULTIPLY][9] == "1.00x"
        assert by_peer[dtype, bench.TEXTBOOK][10] == "1.00x"
    # The header names the machine and build; progress went to stderr, not into the table.
    assert f"threads {fastdrop.get_num_threads()}" in out
    assert f"SIMD {bench.simd_path()}" in out
    assert f"fastdrop {fastdrop.__version__}" in out
    assert f"numpy {np.__version__}" in out
    assert "keep_prob 0.8" in out
    assert "100% done in" in err and "[####################]" in err
    assert "[#" not in out
    if bench.torch_module() is None:
        assert 'PyTorch is not installed; its rows are skipped (pip install "fastdropout[torch]"' \
            in out
    if bench.jax_module() is None:
        assert 'JAX is not installed; its rows are skipped (pip install "fastdropout[jax]"' in out


def test_the_report_reads_legend_bandwidth_table_targets_then_noise(capsys):
    """The legend comes before the tables, the bandwidth before the main table, the targets after
    every table, and the last line says how noisy the run was."""
    assert main(TINY + ["--sizes", "1e4"]) == 0
    lines = capsys.readouterr().out.splitlines()

    def first(prefix):
        return next(i for i, line in enumerate(lines) if line.startswith(prefix))

    order = [first("fastdrop bench:"), first("legend ("), first("machine streaming bandwidth"),
             first("size  dtype    peer"), first("summary of fastdrop forward"),
             first("channel dropout"), first("targets,"), len(lines) - 1]
    assert order == sorted(order)
    assert lines[-1].startswith("noise: ")
    assert any(level in lines[-1] for level in ("quiet:", "somewhat noisy:", "noisy:"))
    assert "verdicts are too noisy to tell" in lines[-1]
    # every peer of the tables is in the legend, under its family
    legend = lines[first("legend (") + 1:first("columns:")]
    named = {cells(line)[-2] for line in legend[1:]}
    assert set(peer_names("float32")) | set(channel_peers()) <= named
    families = [cells(line)[0] for line in legend[1:] if not line.startswith("   " * 4)]
    assert {"floor", "NumPy", "fastdrop"} <= set(families)


def test_bench_json_records(tmp_path, capsys):
    path = tmp_path / "bench.json"
    argv = ["bench", "--sizes", "1000", "2e3", "--dtypes", "float64", "--keep-prob", "0.5",
            "--repeats", "2", "--json", str(path)]
    assert main(argv) == 0
    capsys.readouterr()
    data = json.loads(path.read_text())
    size_of_channel = int(np.prod(SMALL_CHANNEL_SHAPE))
    assert set(data) == {"machine", "keep_prob", "statistic", "records", "summary",
                         "half_precision", "channel", "bandwidth", "targets", "noise"}
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
    jax = bench.jax_module()
    assert data["machine"]["jax"] == (None if jax is None else jax.__version__)
    records = data["records"]
    assert [(r["size"], r["dtype"], r["peer"]) for r in records] == [
        (size, "float64", peer) for size in (1000, 2000) for peer in peer_names("float64")]
    single = {peer.name for peer in bench.PEERS if peer.single_thread}
    for record in records:
        assert set(record) == RECORD_KEYS
        assert 0 < record["seconds"] <= record["median_seconds"]
        assert record["spread"] == pytest.approx(record["median_seconds"] / record["seconds"] - 1)
        assert record["ns_per_element"] == pytest.approx(record["seconds"] * 1e9 / record["size"])
        assert record["repeats"] == 2 and record["remeasured"] is False
        assert (record["cpu_seconds"] is None) == (record["peer"] not in single)
        assert record["uncertainty"] is None or record["uncertainty"] >= record["spread"]
    seconds = {(r["size"], r["peer"]): r["seconds"] for r in records}
    two_floors = bench.MEMORY_FLOOR_1_THREAD in peer_names("float64")
    for record in records:
        size = record["size"]
        floor = (bench.MEMORY_FLOOR_1_THREAD if record["peer"] in single and two_floors
                 else bench.MEMORY_FLOOR)
        assert record["floor"] == floor
        assert record["ratio_to_floor"] == pytest.approx(record["seconds"] / seconds[size, floor])
        assert record["ratio_to_multiply"] == pytest.approx(
            record["seconds"] / seconds[size, bench.NUMPY_MULTIPLY])
        assert record["speedup_over_textbook"] == pytest.approx(
            seconds[size, bench.TEXTBOOK] / record["seconds"])
    # The summary: fastdrop forward against the summary's peers, from the same seconds.
    assert [(row["size"], row["dtype"]) for row in data["summary"]] == [
        (1000, "float64"), (2000, "float64")]
    compared = {peer.name for peer in bench.PEERS if peer.summary_label is not None}
    for row in data["summary"]:
        forward = seconds[row["size"], bench.FORWARD]
        assert row["ratio_to_floor"] == pytest.approx(forward / seconds[row["size"],
                                                                        bench.MEMORY_FLOOR])
        assert set(row["speedup_over"]) == compared & set(peer_names("float64"))
        for name, speedup in row["speedup_over"].items():
            assert speedup == pytest.approx(seconds[row["size"], name] / forward)
    # The targets are judged at the largest size (2e3), none at 1e4 (not run), and the channel
    # target on the channel array.
    assert data["targets"] and {v["size"] for v in data["targets"]} == {2000, size_of_channel}
    for verdict in data["targets"]:
        assert verdict["verdict"] in ("met", "missed", "too noisy to tell", "not measured")
    assert data["noise"]["line"].startswith("noise: ")
    assert data["noise"]["rows"] == len(records) + len(data["channel"]["records"])
    # The bandwidth: copy and scale on 1 thread and on the bench's threads.
    counts = sorted({1, fastdrop.get_num_threads()})
    assert [(b["kernel"], b["threads"]) for b in data["bandwidth"]] == [
        (kernel, n) for kernel in ("copy", "scale") for n in counts]
    assert all(b["gb_per_s"] >= b["median_gb_per_s"] > 0 for b in data["bandwidth"])
    assert all(b["nbytes"] == SMALL_BANDWIDTH_BYTES for b in data["bandwidth"])
    # The channel scenario, under its own key.
    channel = data["channel"]
    assert channel["shape"] == list(SMALL_CHANNEL_SHAPE)
    assert channel["shared_axes"] == [2, 3] and channel["dtype"] == "float32"
    size = int(np.prod(SMALL_CHANNEL_SHAPE))
    assert [(r["size"], r["dtype"], r["peer"]) for r in channel["records"]] == [
        (size, "float32", peer) for peer in channel_peers()]
    floor = channel["records"][0]["seconds"]
    assert channel["records"][0]["peer"] == bench.MEMORY_FLOOR
    for record in channel["records"]:
        assert set(record) == RECORD_KEYS
        assert record["seconds"] > 0 and record["repeats"] == 2
        if record["floor"] == bench.MEMORY_FLOOR:
            assert record["ratio_to_floor"] == pytest.approx(record["seconds"] / floor)
        assert record["speedup_over_textbook"] is None  # no textbook peer on channels


def test_bench_single_thread_forward_row_and_summary(capsys):
    assert main(TINY + ["--sizes", "1000", "3e3"]) == 0
    out = capsys.readouterr().out
    rows = main_rows(out)
    by_peer = {(row[0], row[1], row[2]): row for row in rows}
    for size in ("1e3", "3e3"):
        for dtype in bench.DEFAULT_DTYPES:
            row = by_peer[size, dtype, bench.FORWARD_1_THREAD]
            assert float(row[8][:-1]) > 0 and float(row[6]) > 0  # x floor, CPU ns
    legend = out[out.index("\nlegend ("):].splitlines()
    assert ["fastdrop forward 1 thread",
            "fastdrop.dropout(x, q, out=x, stream=s), fastdrop.set_num_threads(1)"] \
        in [cells(line)[-2:] for line in legend]
    # The summary block: one row per (size, dtype), the forward's ratios copied from the table
    # and a speed-up column per summary peer that ran.
    assert "summary of fastdrop forward" in out
    header = next(line for line in out.splitlines() if line.startswith("size  dtype    x floor"))
    torch = bench.torch_module() is not None
    expected = ["size", "dtype", "x floor", "1 thread x floor", "over textbook",
                "over best NumPy"]
    if torch:
        expected += ["over PyTorch 1 thread", "over PyTorch all threads",
                     "module over nn.Dropout"]
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
        assert row[2] == table[8]
        assert row[3] == by_peer[row[0], row[1], bench.FORWARD_1_THREAD][8]
        assert row[4] == table[10]


def test_bench_targets_have_verdicts(tmp_path, capsys):
    path = tmp_path / "bench.json"
    assert main(TINY + ["--sizes", "1e4", "3e3", "--json", str(path)]) == 0
    out = capsys.readouterr().out
    data = json.loads(path.read_text())
    title = next(line for line in out.splitlines() if line.startswith("targets,"))
    assert "at 1e4, the run's largest size (they are set for 6.4e7" in title
    printed = table_rows(out, "target  ", after="targets,")
    assert len(printed) == len(data["targets"]) > 0
    for cells_, verdict in zip(printed, data["targets"]):
        assert cells_[0] == verdict["target"] and cells_[1] == verdict["dtype"]
        assert cells_[-1] == verdict["verdict"]
        if verdict["value"] is not None:
            assert cells_[3] == f"{number(verdict['value'])}x"


def test_bench_half_precision_summary(tmp_path, capsys):
    """float16 (and bfloat16 where ml_dtypes is installed) beside float32: the section holds
    the table's GB/s and seed speed-ups, and float32's GB/s over each half dtype's."""
    half = [name for name in HALF_DTYPES if name in bench.DTYPES]
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
            assert row[f"{direction}_speedup_over_textbook"] == own["speedup_over_textbook"]
            assert row[f"{direction}_ratio_to_floor"] == own["ratio_to_floor"]
            assert own["floor"] == bench.MEMORY_FLOOR
            assert cells_[2 + 4 * k:6 + 4 * k] == [number(own["gb_per_s"]),
                                                   number(single["gb_per_s"]),
                                                   f"{number(ratio)}x",
                                                   f"{number(own['ratio_to_floor'])}x"]
        assert cells_[10:] == [f"{number(row['forward_speedup_over_textbook'])}x",
                               f"{number(row['backward_speedup_over_textbook'])}x"]


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
    header = next(line for line in out.splitlines() if line.startswith("shape"))
    assert cells(header) == ["shape", *(column for column in COLUMNS[1:]
                                        if column != "over textbook")]
    rows = table_rows(out, "shape", after="channel dropout")
    assert [(row[0], row[1], row[2]) for row in rows] == [
        ("2x3x4x5", "float32", peer) for peer in channel_peers()]
    assert rows[0][8] == "1.00x" and rows[0][9] == "-"  # no NumPy multiply on channels
    for row in rows:
        assert float(row[3]) > 0 and float(row[7]) > 0
        assert row[10] == "2"
    verdict = next(line for line in out.splitlines()
                   if line.startswith("fastdrop channel <= 1.1x memory floor"))
    assert "2x3x4x5" not in verdict and cells(verdict)[1:3] == ["float32", "120"]
    legend = out[out.index("\nlegend ("):].splitlines()
    assert ["fastdrop channel", "fastdrop.dropout(x, q, shared_axes=(2, 3), out=x, stream=s)"] \
        in [cells(line)[-2:] for line in legend]


def test_bench_no_channel_skips_the_channel_table(tmp_path, capsys):
    path = tmp_path / "bench.json"
    assert main(TINY + ["--dtypes", "float32", "--no-channel", "--json", str(path)]) == 0
    out, err = capsys.readouterr()
    assert "channel dropout" not in out and "fastdrop channel" not in out
    assert "100% done" in err
    assert json.loads(path.read_text())["channel"] is None


def test_the_default_run_includes_the_channel_scenario():
    options = build_parser().parse_args(["bench"])
    assert options.no_channel is False and options.plot is None
    assert bench.CHANNEL_SHAPE == SMALL_CHANNEL_SHAPE  # the fixture's, for speed; the module's:
    assert CHANNEL_SHAPE == (64, 64, 56, 56)


@pytest.mark.parametrize("name", [bench.CHANNEL, "PyTorch dropout2d 1 thread",
                                  "PyTorch dropout2d all threads"])
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
    """A peer is one entry of the registry; it runs on the dtypes it takes."""
    only64 = bench.Peer("float64 only", "x", bench.PEERS[0].prepare, "NumPy", dtypes=("float64",))
    head = bench.PEERS[:3]
    monkeypatch.setattr(runner, "PEERS", [*head, only64])
    results = bench.run([100], ["float32", "float64"], repeats=1)
    names = [p.name for p in head if p.available()]
    assert [(r.dtype, r.peer) for r in results.records] == [
        (dtype, peer) for dtype in ("float32", "float64")
        for peer in names + (["float64 only"] if dtype == "float64" else [])]


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
    (["bench", "--repeats", "1"], "at least 2"),
    (["bench", "--json", "/nonexistent-dir/out.json"], "--json"),
    (["bench", "--plot", "/nonexistent-dir/out.png"], "--plot"),
    # quick options besides, so that a path accepted by mistake fails fast, after the run
    (["bench", "--json", "", *QUICK], "names no file"),
    (["bench", "--json", "no-such-dir/", *QUICK], "names no file"),
    (["bench", "--plot", "", *QUICK], "names no file"),
    (["bench", "--no-such-option"], "unrecognized arguments"),
    (["frobnicate"], "invalid choice"),
])
def test_bad_options_exit_nonzero_with_a_message(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code != 0
    out, err = capsys.readouterr()
    assert message in err
    assert "error" in err
    assert out == ""


def test_no_command_prints_the_help(capsys):
    assert main([]) == 0
    out, err = capsys.readouterr()
    assert out == build_parser().format_help() and err == ""
    assert "bench" in out and "info" in out and "explain" in out


def test_sizes_that_cannot_fit_are_refused_before_anything_runs(monkeypatch, capsys):
    class Ran(Exception):
        pass

    def run(*args, **kwargs):
        raise Ran

    monkeypatch.setattr(bench, "available_memory", lambda: 8 * 10**9)
    monkeypatch.setattr(bench, "run", run)
    assert main(["bench", "--sizes", "1e11"]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert "error" in err and "1e11 float32" in err and "8.0 GB" in err and "--sizes" in err
    # 1e8 float32 needs about 2.1 GB (x, its copy, the textbook code's float64 uniforms and
    # bool mask): refused with 2 GB, run with 3 GB
    monkeypatch.setattr(bench, "available_memory", lambda: 2 * 10**9)
    assert main(["bench", "--sizes", "1e8", "--dtypes", "float32", "--no-bandwidth",
                 "--no-channel"]) == 2
    monkeypatch.setattr(bench, "available_memory", lambda: 3 * 10**9)
    with pytest.raises(Ran):
        main(["bench", "--sizes", "1e8", "--dtypes", "float32", "--no-bandwidth",
              "--no-channel"])


def test_where_the_os_does_not_say_what_is_free_an_allocation_failure_is_an_error(monkeypatch,
                                                                                  capsys):
    monkeypatch.setattr(bench, "available_memory", lambda: None)
    assert main(["bench", "--sizes", "1e15", "--dtypes", "float32", "--no-bandwidth",
                 "--no-channel"]) == 2
    out, err = capsys.readouterr()
    assert out == "" and "error: out of memory" in err and "--sizes" in err
    assert "Traceback" not in err


def test_available_memory_without_proc_meminfo(monkeypatch):
    """Without /proc/meminfo: the free pages where the OS counts them, else (macOS) all the
    physical memory, else unknown."""
    real_open = open

    def no_proc(path, *args, **kwargs):
        if str(path).startswith("/proc/"):
            raise FileNotFoundError(path)
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr("builtins.open", no_proc)
    names = {"SC_AVPHYS_PAGES": 1000, "SC_PHYS_PAGES": 4000, "SC_PAGE_SIZE": 4096}

    def sysconf(name):
        if name not in names:
            raise ValueError(f"unrecognized configuration name {name!r}")
        return names[name]

    monkeypatch.setattr(os, "sysconf", sysconf)
    assert bench.available_memory() == 1000 * 4096
    del names["SC_AVPHYS_PAGES"]
    assert bench.available_memory() == 4000 * 4096
    monkeypatch.delattr(os, "sysconf")
    assert bench.available_memory() is None


def test_bandwidth_arrays_that_cannot_fit_skip_the_bandwidth_not_the_run(monkeypatch, capsys):
    """A last-level cache of 1 GiB asks for two 4 GiB arrays: with 3 GB available the bandwidth
    is left out with a note, and the arrays asked for still run."""
    ran = []
    monkeypatch.setattr(bench.machine, "last_level_cache", lambda: 2**30)
    monkeypatch.setattr(bench, "available_memory", lambda: 3 * 10**9)
    monkeypatch.setattr(bench, "run", lambda *args, **kwargs: ran.append(kwargs) or
                        bench.Results(0.8, []))
    assert main(["bench", "--sizes", "1000", "--no-channel"]) == 0
    err = capsys.readouterr().err
    assert [kwargs["bandwidth_bytes"] for kwargs in ran] == [None]
    assert "bandwidth is skipped" in err and "4.3 GB" in err and "3.0 GB" in err
    # where they fit, they are measured
    monkeypatch.setattr(bench, "available_memory", lambda: 9 * 10**9)
    assert main(["bench", "--sizes", "1000", "--no-channel"]) == 0
    assert ran[-1]["bandwidth_bytes"] == 4 * 2**30


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
    for name, module in (("torch", bench.torch_module()), ("jax", bench.jax_module())):
        assert f"{name} {'not installed' if module is None else module.__version__}" in lines
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
main(["bench", "--dtypes", "bfloat16", "--sizes", "1000", "--repeats", "2"])
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
