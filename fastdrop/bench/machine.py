"""The machine a benchmark runs on: CPU, build, threads, versions and the memory available."""
from __future__ import annotations

import functools
import glob
import importlib
import os
import platform
from typing import Optional

import numpy as np

import fastdrop
from fastdrop import _core


def simd_path() -> str:
    """The SIMD code path of the compiled core, e.g. ``"scalar"``.

    Returns
    -------
    str
        What ``fastdrop._core.simd_path()`` reports, or ``"scalar"`` for a core without one.
    """
    return getattr(_core, "simd_path", lambda: "scalar")()


def cpu_model() -> str:
    """The CPU's model name, from /proc/cpuinfo where there is one.

    Returns
    -------
    str
        The first "model name" of /proc/cpuinfo, else `platform.processor()`, else "unknown".
    """
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as cpuinfo:
            for line in cpuinfo:
                key, _, value = line.partition(":")
                if key.strip() == "model name" and value.strip():
                    return value.strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


@functools.lru_cache(maxsize=None)
def _framework(name: str):
    """The framework module `name` when it imports, else None (its peers are then left out)."""
    try:
        return importlib.import_module(name)
    except (ImportError, OSError):
        return None


def torch_module():
    """PyTorch when it imports, else None.

    Returns
    -------
    module or None
    """
    return _framework("torch")


def has_torch() -> bool:
    """Whether PyTorch imports here."""
    return torch_module() is not None


def jax_module():
    """JAX when it imports, else None.

    Returns
    -------
    module or None
    """
    return _framework("jax")


def has_jax() -> bool:
    """Whether JAX imports here."""
    return jax_module() is not None


def available_memory() -> Optional[int]:
    """Bytes of memory that new allocations can take without swapping, where the OS says.

    Returns
    -------
    int or None
        MemAvailable of /proc/meminfo (Linux), else the free physical pages times the page
        size (other POSIX systems), else all the physical memory (macOS, which does not count
        its free pages), else None (the size check is then skipped).
    """
    try:
        with open("/proc/meminfo", encoding="ascii", errors="replace") as meminfo:
            for line in meminfo:
                key, _, value = line.partition(":")
                if key == "MemAvailable":
                    return int(value.split()[0]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    for pages in ("SC_AVPHYS_PAGES", "SC_PHYS_PAGES"):
        try:
            count, page = os.sysconf(pages), os.sysconf("SC_PAGE_SIZE")
        except (AttributeError, ValueError, OSError):
            continue
        if count > 0 and page > 0:
            return count * page
    return None


def last_level_cache() -> Optional[int]:
    """Bytes of the CPU's largest cache, where Linux's sysfs tells.

    Returns
    -------
    int or None
        The size of the highest-level data or unified cache of CPU 0, None where unknown.
    """
    best = None
    for index in sorted(glob.glob("/sys/devices/system/cpu/cpu0/cache/index*")):
        try:
            with open(os.path.join(index, "level"), encoding="ascii") as f:
                level = int(f.read())
            with open(os.path.join(index, "type"), encoding="ascii") as f:
                kind = f.read().strip()
            with open(os.path.join(index, "size"), encoding="ascii") as f:
                text = f.read().strip()
        except (OSError, ValueError):
            continue
        if kind == "Instruction" or not text:
            continue
        scale = {"K": 2**10, "M": 2**20, "G": 2**30}.get(text[-1], 1)
        try:
            size = int(text.rstrip("KMG")) * scale
        except ValueError:
            continue
        if best is None or level > best[0]:
            best = (level, size)
    return None if best is None else best[1]


def machine_info() -> dict:
    """What a benchmark result depends on besides the code: CPU, build, threads, versions.

    Returns
    -------
    dict
        Keys ``cpu``, ``cpus`` (logical CPUs the OS reports), ``last_level_cache`` (bytes,
        None where unknown), ``simd_path``, ``openmp``,
        ``threads``, ``default_threads``, ``python``, ``numpy``, ``fastdrop`` and ``torch`` (its
        version, or None when it does not import).
    """
    torch, jax = torch_module(), jax_module()
    return {
        "cpu": cpu_model(),
        "cpus": os.cpu_count(),
        "last_level_cache": last_level_cache(),
        "simd_path": simd_path(),
        "openmp": _core.openmp_enabled(),
        "threads": fastdrop.get_num_threads(),
        "default_threads": _core.default_num_threads(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "fastdrop": fastdrop.__version__,
        "torch": None if torch is None else torch.__version__,
        "jax": None if jax is None else jax.__version__,
    }
