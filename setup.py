"""Builds fastdrop's compiled core: the Cython wrapper fastdrop/_core.pyx and the C kernels in
src_c/, with OpenMP when the compiler has it (FASTDROP_OPENMP=0 builds without), and without
debug information (FASTDROP_DEBUG_INFO=1 keeps it)."""
import glob
import os
import sys
import tempfile

import numpy
from Cython.Build import cythonize
from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

OPENMP_PROBE = """
#include <omp.h>
int main(void) { return omp_get_max_threads() > 0 ? 0 : 1; }
"""


def openmp_flags(compiler):
    """The compile and link flags that give this compiler OpenMP, or None when it has none."""
    if os.environ.get("FASTDROP_OPENMP", "1") == "0":
        return None
    flag = "/openmp" if compiler.compiler_type == "msvc" else "-fopenmp"
    with tempfile.TemporaryDirectory() as tmp:
        source = os.path.join(tmp, "probe.c")
        with open(source, "w") as f:
            f.write(OPENMP_PROBE)
        try:
            objects = compiler.compile([source], output_dir=tmp, extra_postargs=[flag])
            compiler.link_executable(objects, "probe", output_dir=tmp, extra_postargs=[flag])
        except Exception:  # any compile or link failure means: no usable OpenMP
            return None
    return flag


def release_flags(compiler):
    """The compile and link flags that leave debug information out of the extension.

    Python's own compile flags ask GCC and clang for it (-g): several times the size of the code.
    -g0, last on the command line, takes that back; -s drops the symbol table as well, except on
    macOS, whose linker ignores it.  MSVC writes debug information only when asked (/Zi)."""
    if compiler.compiler_type == "msvc" or os.environ.get("FASTDROP_DEBUG_INFO", "0") == "1":
        return [], []
    return ["-g0"], ([] if sys.platform == "darwin" else ["-s"])


class BuildExt(build_ext):
    def build_extensions(self):
        flag = openmp_flags(self.compiler)
        if flag is None:
            print("fastdrop: building without OpenMP (single-threaded kernels)", file=sys.stderr)
        compile_flags, link_flags = release_flags(self.compiler)
        for ext in self.extensions:
            if flag is not None:
                ext.extra_compile_args.append(flag)
                if self.compiler.compiler_type != "msvc":
                    ext.extra_link_args.append(flag)
            ext.extra_compile_args.extend(compile_flags)
            ext.extra_link_args.extend(link_flags)
        super().build_extensions()


# No contraction of a * x + b into a fused multiply-add: every SIMD path and the NumPy reference
# must round the multiply and the add separately to give the same bits.
optimize = ["/O2", "/fp:precise"] if sys.platform == "win32" else ["-O3", "-ffp-contract=off"]

extensions = [
    Extension(
        "fastdrop._core",
        sources=["fastdrop/_core.pyx"] + sorted(glob.glob("src_c/*.c")),
        include_dirs=[numpy.get_include(), "src_c"],
        define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")],
        extra_compile_args=list(optimize),
    )
]

setup(
    ext_modules=cythonize(extensions, compiler_directives={"language_level": "3"}),
    cmdclass={"build_ext": BuildExt},
)
