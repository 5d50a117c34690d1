"""The ``fastdrop`` command line: ``bench`` and ``info`` (timings themselves live in bench/)."""
import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest

import fastdrop
from fastdrop import bench
from fastdrop.cli import main

TINY = ["bench", "--sizes", "1000", "--repeats", "1"]
COLUMNS = ("size", "dtype", "peer", "ns/element", "GB/s", "ratio to floor", "speed-up over seed",
           "repeats")
RECORD_KEYS = {"size", "dtype", "peer", "seconds", "ns_per_element", "gb_per_s",
               "ratio_to_floor", "speedup_over_seed", "repeats"}
MACHINE_KEYS = {"cpu", "simd_path", "openmp", "threads", "default_threads", "python", "numpy",
                "fastdrop", "torch"}


def table_rows(out):
    """The table's data rows, split into their cells (cells are separated by 2+ spaces)."""
    header = next(i for i, line in enumerate(out.splitlines()) if line.startswith("size"))
    rows = []
    for line in out.splitlines()[header + 1:]:
        if line.startswith("peers"):
            break
        if line:
            rows.append([cell.strip() for cell in line.split("  ") if cell.strip()])
    return rows


def test_bench_prints_a_row_per_peer_and_dtype(capsys):
    assert main(TINY) == 0
    out, err = capsys.readouterr()
    header_line = next(line for line in out.splitlines() if line.startswith("size"))
    for column in COLUMNS:
        assert column in header_line
    rows = table_rows(out)
    peers = [peer.name for peer in bench.available_peers()]
    assert [(row[0], row[1], row[2]) for row in rows] == [
        ("1e3", dtype, peer) for dtype in bench.DTYPES for peer in peers]
    for row in rows:
        ns, gbs, floor, seed, repeats = row[3:]
        assert ns.endswith(" ns") and float(ns[:-3]) > 0
        assert gbs.endswith(" GB/s") and float(gbs[:-5]) > 0
        assert floor.endswith("x floor") and seed.endswith("x seed")
        assert repeats == "1"
    by_peer = {(row[1], row[2]): row for row in rows}
    for dtype in bench.DTYPES:
        assert by_peer[dtype, bench.FLOOR][5] == "1.00x floor"
        assert by_peer[dtype, bench.SEED][6] == "1.00x seed"
    # The header names the machine and build; progress went to stderr, not into the table.
    assert f"threads {fastdrop.get_num_threads()}" in out
    assert f"SIMD {bench.simd_path()}" in out
    assert f"fastdrop {fastdrop.__version__}" in out
    assert f"numpy {np.__version__}" in out
    assert "keep_prob 0.8" in out
    assert f"{len(rows)}/{len(rows)}" in err and "[" in err
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
    peers = [peer.name for peer in bench.available_peers()]
    records = data["records"]
    assert [(r["size"], r["dtype"], r["peer"]) for r in records] == [
        (size, "float64", peer) for size in (1000, 2000) for peer in peers]
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
    assert f"SIMD path: {bench.simd_path()}" in lines
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
