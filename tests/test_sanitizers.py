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

Builds beyond this machine's default (issue 17 item 6), each where its tools are installed:
the harness built with clang, built without OpenMP, and cross-compiled for aarch64 (the portable
path) and run under qemu-user; and the C core compiled for an MSVC target.

Skipped, with the reason shown, only where no C compiler or no sanitizer runtime is available
(and, for the builds above, where clang, the cross compiler or qemu-user is not installed).
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


def _build(tmp_path, name, flags, compiler=COMPILER, openmp=True):
    """Compiles the harness with `compiler` and `flags`, with OpenMP when `openmp` is true and
    the compiler has it.  Returns the executable, or (None, the compiler's complaint)."""
    sources = [str(HARNESS)] + sorted(str(p) for p in SRC.glob("fd_*.c"))
    exe = tmp_path / name
    error = ""
    for openmp_flags in (["-fopenmp"], []) if openmp else ([],):
        command = [compiler, "-std=c11", "-g", "-ffp-contract=off", *flags, *openmp_flags,
                   f"-I{SRC}", *sources, "-o", str(exe), "-lm"]
        result = subprocess.run(command, capture_output=True, text=True)
        if result.returncode == 0:
            return exe, ""
        error = result.stderr[-2000:]
    return None, error


def _run(exe, env_extra, launcher=()):
    env = dict(os.environ, **env_extra)
    result = subprocess.run([*launcher, str(exe)], capture_output=True, text=True, env=env,
                            timeout=300)
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


def _tool_or_skip(name, why):
    path = shutil.which(name)
    if path is None:
        pytest.skip(f"{name} is not installed ({why})")
    return path


@pytest.mark.parametrize("build", BUILDS)
def test_kernels_built_with_clang(tmp_path, build):
    """The C core builds with clang as well as GCC (the macOS wheels are built with Apple's
    clang), with OpenMP where clang finds it, and passes the same checks at -O3.  Before issue 17
    clang 14 refused the AVX2 path's CPU check, __builtin_cpu_supports("f16c")."""
    _compiler_or_skip()
    clang = _tool_or_skip("clang", "the clang build of the C core")
    exe, error = _build(tmp_path, "test_kernels_clang", ["-O3", "-Wall", "-Wextra", *build],
                        compiler=clang)
    assert exe is not None, error
    output = _run(exe, {})
    _check_emulated(build, output)
    print(output.strip().splitlines()[-1])


def test_kernels_built_without_openmp(tmp_path):
    """What setup.py builds where the compiler has no OpenMP (Apple's clang) or with
    FASTDROP_OPENMP=0: a single-threaded core that passes the same checks."""
    _compiler_or_skip()
    exe, error = _build(tmp_path, "test_kernels_serial", ["-O3", "-Wall", "-Wextra"],
                        openmp=False)
    assert exe is not None, error
    output = _run(exe, {})
    assert "OpenMP off" in output, output[-6000:]
    print(output.strip().splitlines()[-1])


def test_kernels_on_aarch64_under_qemu(tmp_path):
    """The portable path, cross-compiled for aarch64 (the Linux aarch64 wheels) and run under
    qemu-user: the known answers and the kernels' checks, threaded calls and the caller's FPCR
    included.  Built without the fork handler (FD_FORK_HANDLERS=0), which leaves out the
    harness's fork check: qemu-user itself aborts (an assertion in its CPU loop) when a child
    forked from a threaded process starts threads."""
    _compiler_or_skip()
    cross = _tool_or_skip("aarch64-linux-gnu-gcc", "Debian's gcc-aarch64-linux-gnu")
    qemu = _tool_or_skip("qemu-aarch64", "Debian's qemu-user")
    sysroot = pathlib.Path("/usr/aarch64-linux-gnu")
    if not (sysroot / "lib").is_dir():
        pytest.skip(f"no aarch64 C library at {sysroot} (Debian's libc6-dev-arm64-cross)")
    exe, error = _build(tmp_path, "test_kernels_aarch64", ["-O3", "-DFD_FORK_HANDLERS=0"],
                        compiler=cross)
    assert exe is not None, error
    output = _run(exe, {"QEMU_LD_PREFIX": str(sysroot)}, launcher=[qemu])
    assert "1 SIMD paths" in output, output[-6000:]
    print(output.strip().splitlines()[-1])


# The C library headers the C core includes, as far as a syntax check for another platform
# needs them: what clang's own headers do not provide for an MSVC target.
MSVC_STUB_HEADERS = {
    "string.h": "#include <stddef.h>\nvoid *memcpy(void *, const void *, size_t);\n"
                "void *memmove(void *, const void *, size_t);\n"
                "void *memset(void *, int, size_t);\n"
                "int memcmp(const void *, const void *, size_t);\n"
                "size_t strlen(const char *);\n",
    "stdlib.h": "#include <stddef.h>\nvoid *malloc(size_t);\nvoid free(void *);\n",
    "malloc.h": "#include <stddef.h>\nvoid *_aligned_malloc(size_t, size_t);\n"
                "void _aligned_free(void *);\n",
    "setjmp.h": "typedef int jmp_buf[16];\n",
}


def test_core_compiles_for_msvc(tmp_path):
    """The C core as MSVC sees it (x86-64 Windows, _MSC_VER, neither __GNUC__ nor __clang__),
    compiled by clang for that target: the AVX2 and AVX-512 paths are built, with no GNU
    attribute, and the CPU check reads CPUID and XCR0 through MSVC's intrinsics.  The -m flags
    stand for MSVC emitting any intrinsic in any function.  Only a compilation: nothing runs."""
    clang = _tool_or_skip("clang", "the MSVC-target compilation of the C core")
    stubs = tmp_path / "include"
    stubs.mkdir()
    for name, text in MSVC_STUB_HEADERS.items():
        (stubs / name).write_text("#pragma once\n" + text)
    for source in sorted(SRC.glob("fd_*.c")):
        obj = tmp_path / (source.stem + ".obj")
        result = subprocess.run(
            [clang, "--target=x86_64-pc-windows-msvc", "-fms-compatibility-version=19.40",
             "-U__clang__", "-Wno-builtin-macro-redefined", "-std=c11", "-O1", "-Wall",
             "-Werror=vla", "-Werror=implicit-function-declaration", "-mavx2", "-mf16c",
             "-mavx512f", "-mavx512bw", "-mxsave", "-isystem", str(stubs), f"-I{SRC}", "-c",
             str(source), "-o", str(obj)], capture_output=True, text=True)
        if result.returncode != 0 and "unknown target" in result.stderr:
            pytest.skip(f"{clang} cannot target x86_64-pc-windows-msvc")
        assert result.returncode == 0, f"{source.name}:\n{result.stderr[-4000:]}"
    # The paths' tables are defined symbols: names in the objects' string tables, each ending in
    # a NUL (the source file names, fd_kernels_avx2.c and the like, are there too).
    objects = b"".join(obj.read_bytes() for obj in tmp_path.glob("*.obj"))
    for table in ("fd_kernels_avx2", "fd_kernels_avx512"):
        assert table.encode() + b"\0" in objects, f"{table} is not built for MSVC"


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
