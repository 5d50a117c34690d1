"""The SIMD path is chosen at run time: checks of that choice (the kernels of every path are
compared with the reference in test_reference_equality.py, test_decisions.py and
test_backward.py, which run once per supported path)."""
import os
import pathlib
import platform
import subprocess
import sys
import tempfile

import pytest

import fastdrop
from fastdrop import _api, _core

PACKAGE_PARENT = str(pathlib.Path(fastdrop.__file__).resolve().parents[1])


def run_python(code, **env):
    """Runs `code` in a fresh interpreter that imports this fastdrop (from a neutral working
    directory, so that a source tree there cannot shadow it); returns the finished process."""
    environment = dict(os.environ, PYTHONPATH=PACKAGE_PARENT, **env)
    return subprocess.run([sys.executable, "-c", code], env=environment, cwd=tempfile.gettempdir(),
                          capture_output=True, text=True, check=True)


def test_scalar_path_is_always_available():
    """The portable path must exist everywhere: it is the fallback for every other one."""
    assert _core.simd_paths()[0] == "scalar"


def test_import_uses_the_path_its_timings_found_fastest():
    """Without FASTDROP_SIMD every path that passed the probe is timed at import, and the one
    the timings call fastest is in use."""
    timings = _api.simd_path_timings
    assert list(timings) == _core.simd_paths()
    assert all(0 < ns < float("inf") for ns in timings.values())
    assert fastdrop.simd_path() == _api._fastest_path(timings)


def test_the_widest_path_stays_unless_a_narrower_one_is_clearly_faster():
    """Timings within the margin keep the widest path; a narrower path must beat it by more than
    NARROWER_PATH_MARGIN, and the comparison is with the path chosen so far."""
    margin = _api.NARROWER_PATH_MARGIN
    assert _api._fastest_path({"scalar": 3.0, "avx2": 0.2, "avx512": 0.12}) == "avx512"
    assert _api._fastest_path({"scalar": 3.0, "avx2": 0.2 * (1 - margin / 2), "avx512": 0.2}) \
        == "avx512"
    assert _api._fastest_path({"scalar": 3.0, "avx2": 0.2 * (1 - 2 * margin), "avx512": 0.2}) \
        == "avx2"
    assert _api._fastest_path({"scalar": 0.1, "avx2": 0.2, "avx512": 0.3}) == "scalar"
    assert _api._fastest_path({"scalar": 1.0}) == "scalar"


def test_path_timing_leaves_the_threads_as_it_found_them():
    """The import's timer runs one thread (a path's kernels, not the thread count, are being
    compared) and gives the caller's thread count back."""
    before = (_core.simd_path(), _core.get_num_threads())
    try:
        _core.set_num_threads(2)
        timings = _api._time_paths(_core.simd_paths())
        assert _core.get_num_threads() == 2
    finally:
        _core.set_simd_path(before[0])
        _core.set_num_threads(before[1])
    assert list(timings) == _core.simd_paths()


@pytest.mark.parametrize("path", _core.simd_paths())
def test_every_supported_path_passes_the_import_probe(path):
    """The probe that guards the choice at import must accept a correct path."""
    before = _core.simd_path()
    try:
        assert _api._agrees_with_scalar(path)
    finally:
        _core.set_simd_path(before)


@pytest.mark.parametrize("path", _core.simd_paths())
def test_environment_variable_forces_a_path(path):
    """FASTDROP_SIMD selects the path, so a user or a test can run any of them."""
    result = run_python("import fastdrop; print(fastdrop.simd_path())", FASTDROP_SIMD=path)
    assert result.stdout.strip() == path


def test_unavailable_path_in_environment_warns_and_falls_back():
    """A path the machine cannot run is refused with a warning, never used."""
    result = run_python("import fastdrop; from fastdrop import _api; "
                        "print(fastdrop.simd_path() == _api._fastest_path(_api.simd_path_timings))",
                        FASTDROP_SIMD="sse9")
    assert result.stdout.strip() == "True"
    assert "FASTDROP_SIMD" in result.stderr and "sse9" in result.stderr


def test_set_simd_path_refuses_unknown_names():
    with pytest.raises(ValueError, match="not available"):
        _core.set_simd_path("sse9")
    assert fastdrop.simd_path() in _core.simd_paths()


def test_supported_paths_are_those_the_cpu_flags_allow():
    """The C core's CPU check (CPUID and XCR0, src_c/fd_dropout.c) agrees with the flags that
    Linux reports, which it clears where the operating system does not save a feature's
    registers: AVX2 with F16C for the AVX2 path, AVX-512 F and BW for the AVX-512 path."""
    if not sys.platform.startswith("linux") or platform.machine() != "x86_64":
        pytest.skip("checked against /proc/cpuinfo on x86-64 Linux")
    with open("/proc/cpuinfo", encoding="ascii", errors="replace") as cpuinfo:
        flags = next(line for line in cpuinfo if line.startswith("flags")).split(":")[1].split()
    expected = ["scalar"]
    if {"avx2", "f16c"} <= set(flags):
        expected.append("avx2")
    if {"avx512f", "avx512bw"} <= set(flags):
        expected.append("avx512")
    assert _core.simd_paths() == expected
