"""The C core under AddressSanitizer, UndefinedBehaviorSanitizer and LeakSanitizer (issue 7
items 1 and 2).

src_c/tests/test_kernels.c links the C core directly (no Python) and checks the Random123 known
answers, fd_mask_generate and every kernel on edge cases (tails, odd and negative strides, shared
axes, every dtype, 1 and 3 OpenMP threads, every SIMD path the CPU supports against the scalar
path), each array inside a guard zone and once more in an allocation of exactly its size.  Here
it is compiled with `cc` into a temporary directory and run:

- with -fsanitize=address,undefined (no recovery: any finding fails the run), LeakSanitizer on
  (ASan's default on Linux), which must report nothing;
- without sanitizers at -O3, the optimisation level the extension is built with.

Both builds run twice: as the extension is built, and with -DFD_AVX512_EMULATED=1, which
compiles the AVX-512 path against src_c/tests/emulated_avx512.h (a portable C model of its
intrinsics) and counts it as supported, so that the path is compared with the scalar path, and
its vector loads and stores are watched by AddressSanitizer, on machines without AVX-512 too.

Skipped, with the reason shown, only where no C compiler or no sanitizer runtime is available.
"""
from __future__ import annotations

import os
import pathlib
import platform
import shutil
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
SRC = ROOT / "src_c"
HARNESS = SRC / "tests" / "test_kernels.c"
COMPILER = os.environ.get("CC", "cc")


def _compiler_or_skip():
    if not HARNESS.exists():
        pytest.skip(f"{HARNESS} is not here (tests run outside the source tree)")
    if shutil.which(COMPILER) is None:
        pytest.skip(f"no C compiler ({COMPILER!r} not found)")
    if not sys.platform.startswith("linux"):
        pytest.skip("the sanitizer build is set up for Linux compilers")


def _build(tmp_path, name, flags):
    """Compiles the harness with `flags`, with OpenMP when the compiler has it.  Returns the
    executable, or (None, the compiler's complaint)."""
    sources = [str(HARNESS)] + sorted(str(p) for p in SRC.glob("fd_*.c"))
    exe = tmp_path / name
    error = ""
    for openmp in (["-fopenmp"], []):
        command = [COMPILER, "-std=c11", "-g", "-ffp-contract=off", *flags, *openmp,
                   f"-I{SRC}", *sources, "-o", str(exe), "-lm"]
        result = subprocess.run(command, capture_output=True, text=True)
        if result.returncode == 0:
            return exe, ""
        error = result.stderr[-2000:]
    return None, error


def _run(exe, env_extra):
    env = dict(os.environ, **env_extra)
    result = subprocess.run([str(exe)], capture_output=True, text=True, env=env, timeout=300)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-6000:]
    assert "0 failures" in result.stdout, output[-6000:]
    return output


# The harness built as the extension is, then with the AVX-512 path emulated (see above).
BUILDS = [pytest.param([], id="native"),
          pytest.param(["-DFD_AVX512_EMULATED=1"], id="avx512-emulated")]


def _check_emulated(flags, output):
    """An emulated build must have run the AVX-512 path, which exists on x86-64 only."""
    if flags and platform.machine().lower() in ("x86_64", "amd64"):
        assert "path avx512" in output, output[-6000:]


@pytest.mark.parametrize("build", BUILDS)
def test_kernels_under_address_and_undefined_behaviour_sanitizers(tmp_path, build):
    _compiler_or_skip()
    # Can this compiler link the sanitizer runtimes at all?
    probe = tmp_path / "probe.c"
    probe.write_text("int main(void) { return 0; }\n")
    check = subprocess.run([COMPILER, "-fsanitize=address,undefined", str(probe), "-o",
                            str(tmp_path / "probe")], capture_output=True, text=True)
    if check.returncode != 0:
        pytest.skip(f"{COMPILER} cannot build with -fsanitize=address,undefined: "
                    f"{check.stderr.strip()[-300:]}")
    # FD_PREFETCH_MIN_BYTES=0: the harness's small contiguous calls take the path of large ones
    # (prefetching ahead, smaller tiles), which the -O3 build below leaves to the large calls.
    # FD_TIES_MAX=520: a decide call resolves its ties whenever more than 8 wait, not once per
    # tile, so the passes in the middle of a call and the list's bound run here too.
    exe, error = _build(tmp_path, "test_kernels_asan",
                        ["-O1", "-fno-omit-frame-pointer", "-fsanitize=address,undefined",
                         "-fno-sanitize-recover=all", "-DFD_PREFETCH_MIN_BYTES=0",
                         "-DFD_TIES_MAX=520", *build])
    assert exe is not None, error
    output = _run(exe, {"ASAN_OPTIONS": "detect_leaks=1:halt_on_error=1:detect_stack_use_after_return=1",
                        "UBSAN_OPTIONS": "print_stacktrace=1:halt_on_error=1"})
    assert "Sanitizer" not in output, output[-6000:]
    assert "runtime error" not in output, output[-6000:]
    _check_emulated(build, output)
    print(output.strip().splitlines()[-1])


@pytest.mark.parametrize("build", BUILDS)
def test_kernels_optimised_build(tmp_path, build):
    """The same checks at -O3 (what setup.py builds), where vectorising compilers might turn an
    edge case differently."""
    _compiler_or_skip()
    exe, error = _build(tmp_path, "test_kernels_o3", ["-O3", "-Wall", "-Wextra", *build])
    assert exe is not None, error
    output = _run(exe, {})
    _check_emulated(build, output)
    print(output.strip().splitlines()[-1])


VALGRIND_SCRIPT = """
import numpy as np, fastdrop
x = np.linspace(-1, 1, 1003, dtype=np.float32).reshape(17, 59)
s = fastdrop.Stream(1)
for i in range(100):
    y, m = fastdrop.dropout(x, 0.5, stream=s, store="bits" if i % 2 else "seed",
                            shared_axes=0 if i % 3 == 0 else None)
    fastdrop.dropout_backward(y, m)
    fastdrop.dropout_backward(x[:, ::-2].astype(np.float64), fastdrop.dropout(x[:, ::-2], 0.3)[1])
"""


def _fastdrop_findings(log: str):
    """The valgrind error and definitely-lost records with a frame in fastdrop's extension (the
    interpreter's and NumPy's own records, e.g. glibc's word-wise strncmp, are not ours)."""
    records, current = [], []
    for line in log.splitlines():
        body = line.split("== ", 1)[1] if "== " in line else ""
        if not body.strip():
            if current:
                records.append(current)
            current = []
        else:
            current.append(body)
    if current:
        records.append(current)
    ours = ("_core.cpython", "fd_dropout", "fd_kernels", "fd_mask", "/fastdrop/")
    return ["\n".join(r) for r in records
            if any(word in r[0] for word in ("Invalid", "uninitialised", "definitely lost",
                                             "Mismatched", "overlap", "Syscall param"))
            and any(tag in frame for frame in r for tag in ours)]


def test_extension_under_valgrind(tmp_path):
    """Optional: the compiled extension under valgrind --leak-check=full on a small Python run
    (every SIMD path the machine has in turn is not needed: valgrind emulates the CPU, so the
    scalar path is run).  No error or definite leak may have a frame in fastdrop.  Skipped where
    valgrind is not installed (it is not on the CI machine)."""
    import fastdrop

    valgrind = shutil.which("valgrind")
    if valgrind is None:
        pytest.skip("valgrind is not installed")
    script = tmp_path / "run.py"
    script.write_text(VALGRIND_SCRIPT)
    env = dict(os.environ, PYTHONMALLOC="malloc", FASTDROP_SIMD="scalar",
               PYTHONPATH=str(pathlib.Path(fastdrop.__file__).resolve().parents[1]))
    result = subprocess.run([valgrind, "--leak-check=full", "--show-leak-kinds=definite",
                             "--num-callers=30", sys.executable, str(script)],
                            capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-4000:]
    assert "ERROR SUMMARY" in result.stderr, result.stderr[-4000:]
    findings = _fastdrop_findings(result.stderr)
    assert not findings, "\n\n".join(findings[:5])
