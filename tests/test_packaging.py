"""The installed package as a wheel delivers it (issue 17): the distribution's name, version and
extras, what the package directory holds, and an extension without debug information.

The checks of the package directory and of the extension are about a release build installed
from a wheel (as .ci/run installs it); they skip, saying so, where fastdrop is imported from its
source tree.
"""
import importlib.metadata
import pathlib
import re
import shutil
import subprocess
import sys

import pytest

import fastdrop
from fastdrop import _core

DISTRIBUTION = "fastdropout"
PACKAGE_DIR = pathlib.Path(fastdrop.__file__).resolve().parent
README = pathlib.Path(__file__).resolve().parents[1] / "README.md"
# An install hint: a quoted or back-quoted requirement with extras, "NAME[EXTRA,...]".
EXTRAS_HINT = re.compile(r'[`"](?P<name>[A-Za-z0-9_.-]+)\[(?P<extras>[a-z0-9_,-]+)\]\\?[`"]')


def _installed_or_skip():
    if (PACKAGE_DIR.parent / "setup.py").exists():
        pytest.skip(f"fastdrop is imported from its source tree ({PACKAGE_DIR}), not installed")


def test_the_distribution_is_fastdropout_and_carries_the_version():
    """One version, fastdrop.__version__, which the build writes into the metadata."""
    assert importlib.metadata.version(DISTRIBUTION) == fastdrop.__version__
    assert importlib.metadata.metadata(DISTRIBUTION)["License-Expression"] == "BSD-3-Clause"


def test_install_hints_name_the_distribution_and_its_extras():
    """Every `"NAME[EXTRA]"` that the package's messages and docstrings or the README show
    names this distribution, or "." (the source tree), and extras it declares (the package
    index's "fastdrop" is another project)."""
    declared = set(importlib.metadata.metadata(DISTRIBUTION).get_all("Provides-Extra"))
    texts = {str(path.relative_to(PACKAGE_DIR)): path.read_text(encoding="utf-8")
             for path in PACKAGE_DIR.rglob("*.py")}
    if README.exists():
        texts["README.md"] = README.read_text(encoding="utf-8")
    hints = [(name, m["name"], set(m["extras"].split(",")))
             for name, text in texts.items() for m in EXTRAS_HINT.finditer(text)]
    assert hints, "no install hint found: has their format changed?"
    wrong = [(where, f"{package}[{','.join(sorted(extras))}]") for where, package, extras in hints
             if package not in (DISTRIBUTION, ".") or not extras <= declared]
    assert not wrong, wrong


def test_the_installed_package_holds_no_build_sources():
    """The wheel ships the modules, the compiled core, its type stubs and py.typed: not the
    Cython source or the C generated from it."""
    _installed_or_skip()
    names = {path.name for path in PACKAGE_DIR.iterdir()}
    assert {"_core.pyi", "py.typed"} <= names
    assert pathlib.Path(_core.__file__).parent == PACKAGE_DIR
    sources = sorted(name for name in names if name.endswith((".c", ".pyx", ".h")))
    assert not sources, sources


def test_the_extension_has_no_debug_information():
    """Python's compile flags ask for debug information, several times the size of the code;
    setup.py leaves it out (FASTDROP_DEBUG_INFO=1 keeps it)."""
    _installed_or_skip()
    if not sys.platform.startswith("linux"):
        pytest.skip("checked on Linux (ELF sections)")
    readelf = shutil.which("readelf")
    if readelf is None:
        pytest.skip("readelf (binutils) is not installed")
    sections = subprocess.run([readelf, "-S", "-W", _core.__file__], capture_output=True,
                              text=True, check=True).stdout
    debug = sorted(set(re.findall(r"\.debug_\w+", sections)))
    assert not debug, debug
