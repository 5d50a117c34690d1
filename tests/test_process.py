"""The process around a call (SPEC §8, issue 13 items 5 and 6).

- Fork safety: a child made by fork() after the parent started the OpenMP runtime's thread pool
  (a threaded fastdrop call, or PyTorch work) completes its threaded-size calls, on one thread
  until it calls set_num_threads and on threads of its own after, with the parent's results.
  Each scenario runs in a fresh interpreter, in a session of its own that is killed when it
  outlives TIMEOUT: on a build that is not fork-safe the child hangs, and the test fails rather
  than blocks the suite.
- The floating-point environment: every thread of a call runs with the caller's flush-to-zero,
  denormals-are-zero and rounding mode, whatever the pool threads were created with, so float
  denormal inputs give the same bits for 1, 2 and 4 threads, equal to fastdrop.reference computed
  in the same mode.  The modes are set on a thread of the test's own, which then starts its own
  pool: the pool threads are created in the other mode for certain, and the suite's threads keep
  theirs.
"""
from __future__ import annotations

import concurrent.futures
import ctypes
import ctypes.util
import os
import pathlib
import platform
import signal
import subprocess
import sys
import tempfile

import numpy as np
import pytest

import fastdrop
from fastdrop import _core, reference

PACKAGE_PARENT = str(pathlib.Path(fastdrop.__file__).resolve().parents[1])
TIMEOUT = 120  # seconds; a fork-safe run takes a few, most of it importing torch
KEEP = 0.7
SEED = 20240613
# Past the size at which calls are split across threads (FD_PARALLEL_MIN_ELEMENTS = 65536), and
# enough tiles that every thread of 4 gets some.
SIZE = 1 << 20
THREAD_COUNTS = (1, 2, 4)


def _run_isolated(code: str, tmp_path) -> None:
    """Runs `code` in a fresh interpreter importing this fastdrop, in a session of its own whose
    every process is killed if it is not done within TIMEOUT."""
    env = dict(os.environ, PYTHONPATH=PACKAGE_PARENT, FASTDROP_RESULTS=str(tmp_path))
    process = subprocess.Popen([sys.executable, "-c", code], env=env, cwd=tempfile.gettempdir(),
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                               start_new_session=True)
    try:
        output, _ = process.communicate(timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        output, _ = process.communicate()
        pytest.fail(f"not done after {TIMEOUT} s: a forked child hangs\n{output[-4000:]}")
    assert process.returncode == 0, output[-4000:]


def _expected(seed: int) -> np.ndarray:
    return reference.dropout(np.linspace(-1, 1, SIZE, dtype=np.float32), KEEP, seed=seed)[0]


FORK_CHILD = f"""
import multiprocessing, os
import numpy as np
import fastdrop

fastdrop.set_num_threads(2)
x = np.linspace(-1, 1, {SIZE}, dtype=np.float32)
parent, _ = fastdrop.dropout(x, {KEEP}, seed={SEED})  # threaded: the pool is started

def child(send):
    threads_after_fork = fastdrop.get_num_threads()
    one_thread, _ = fastdrop.dropout(x, {KEEP}, seed={SEED})
    fastdrop.set_num_threads(3)
    threaded, _ = fastdrop.dropout(x, {KEEP}, seed={SEED})
    send.send((threads_after_fork, fastdrop.get_num_threads(), one_thread, threaded))

context = multiprocessing.get_context("fork")
receive, send = context.Pipe(duplex=False)
process = context.Process(target=child, args=(send,))
process.start()
threads_after_fork, threads_after_set, one_thread, threaded = receive.recv()
process.join()
np.savez(os.path.join(os.environ["FASTDROP_RESULTS"], "fork.npz"), parent=parent,
         one_thread=one_thread, threaded=threaded,
         threads=[threads_after_fork, threads_after_set, fastdrop.get_num_threads()])
"""


def test_forked_child_completes_threaded_calls(tmp_path):
    """After a threaded call in the parent, a child of the "fork" start method completes a
    threaded-size call (on one thread: get_num_threads says 1) and, after set_num_threads(3),
    one on threads of its own; both give the parent's bits, which are the reference's.  The
    parent's thread count is untouched."""
    _run_isolated(FORK_CHILD, tmp_path)
    results = np.load(tmp_path / "fork.npz")
    want = _expected(SEED)
    np.testing.assert_array_equal(results["parent"], want)
    np.testing.assert_array_equal(results["one_thread"], want)
    np.testing.assert_array_equal(results["threaded"], want)
    if _core.openmp_enabled():  # a single-threaded build reports what was set
        assert list(results["threads"]) == [1, 3, 2]


DATALOADER = f"""
import os
import numpy as np
import torch
import fastdrop
from torch.utils.data import DataLoader, Dataset

torch.set_num_threads(2)
torch.ones(1 << 22).mul_(2).sum()  # PyTorch starts the OpenMP pool; fastdrop shares the runtime
fastdrop.set_num_threads(2)

class Dropped(Dataset):
    def __len__(self):
        return 4

    def __getitem__(self, i):
        x = np.linspace(-1, 1, {SIZE}, dtype=np.float32)
        return fastdrop.dropout(x, {KEEP}, seed={SEED} + i)[0]

loader = DataLoader(Dropped(), batch_size=None, num_workers=2, multiprocessing_context="fork")
items = [item.numpy() for item in loader]
np.save(os.path.join(os.environ["FASTDROP_RESULTS"], "loader.npy"), np.stack(items))
"""


def test_dataloader_workers_complete_calls_after_torch_work(tmp_path):
    """A DataLoader with two forked workers whose Dataset calls fastdrop on threaded-size arrays,
    after PyTorch work in the parent: every item arrives, equal to the reference."""
    pytest.importorskip("torch", reason="the DataLoader scenario needs torch")
    _run_isolated(DATALOADER, tmp_path)
    items = np.load(tmp_path / "loader.npy")
    assert items.shape[0] == 4
    for i, item in enumerate(items):
        np.testing.assert_array_equal(item, _expected(SEED + i))


# ---------------------------------------------------------------------------------------------
# The floating-point environment
# ---------------------------------------------------------------------------------------------

def _denormals(dtype) -> np.ndarray:
    """SIZE subnormal numbers of both signs spread over the whole subnormal range, a tenth of them
    normal numbers just above it."""
    info = np.finfo(dtype)
    rng = np.random.default_rng(7)
    values = rng.uniform(0.0, float(info.smallest_normal), SIZE) * rng.choice([-1.0, 1.0], SIZE)
    values[::10] *= 3.0
    return values.astype(dtype)


def _on_a_new_thread(scenario):
    """The result of scenario() run on a new thread (with an OpenMP pool of its own)."""
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as executor:
        return executor.submit(scenario).result()


def _results_in_mode(x, set_mode, pool_mode, caller_mode):
    """On a new thread: starts the pool threads in `pool_mode` (threaded calls of 2 and 4
    threads), switches to `caller_mode`, and returns fastdrop's results for THREAD_COUNTS and
    the reference's, all computed in `caller_mode`."""
    def scenario():
        set_mode(pool_mode)
        for threads in THREAD_COUNTS[1:]:
            fastdrop.set_num_threads(threads)
            fastdrop.dropout(x, KEEP, seed=SEED)
        set_mode(caller_mode)
        results = {}
        for threads in THREAD_COUNTS:
            fastdrop.set_num_threads(threads)
            results[threads] = fastdrop.dropout(x, KEEP, seed=SEED)[0]
        return results, reference.dropout(x, KEEP, seed=SEED)[0]

    return _on_a_new_thread(scenario)


def _flush_denormals_or_skip():
    torch = pytest.importorskip("torch", reason="torch.set_flush_denormal sets FTZ/DAZ here")
    if not _on_a_new_thread(lambda: torch.set_flush_denormal(False)):
        pytest.skip("this CPU has no flush-to-zero mode torch can set")
    return torch.set_flush_denormal


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("pool_mode,caller_mode", [(True, False), (False, True)],
                         ids=["flush-off-after-pool-on", "flush-on-after-pool-off"])
def test_every_thread_flushes_denormals_as_the_caller_does(restore_threads, dtype, pool_mode,
                                                           caller_mode):
    set_flush_denormal = _flush_denormals_or_skip()
    x = _denormals(dtype)
    results, want = _results_in_mode(x, set_flush_denormal, pool_mode, caller_mode)
    for threads in THREAD_COUNTS:
        np.testing.assert_array_equal(results[threads], want, err_msg=f"{threads} threads")
    kept_subnormals = (want != 0) & (np.abs(x) < np.finfo(dtype).smallest_normal)
    assert kept_subnormals.any() == (not caller_mode)  # the mode shows in the result


# <fenv.h>'s rounding-mode values of glibc on x86-64.
FE_TONEAREST, FE_UPWARD = 0x000, 0x800


def _set_rounding_or_skip():
    if not (sys.platform.startswith("linux") and platform.machine() in ("x86_64", "AMD64")):
        pytest.skip("the rounding-mode constants used here are glibc's on x86-64")
    libm = ctypes.CDLL(ctypes.util.find_library("m"))

    def set_rounding(upward):
        assert libm.fesetround(FE_UPWARD if upward else FE_TONEAREST) == 0

    return set_rounding


@pytest.mark.parametrize("pool_mode,caller_mode", [(True, False), (False, True)],
                         ids=["nearest-after-pool-upward", "upward-after-pool-nearest"])
def test_every_thread_rounds_as_the_caller_does(restore_threads, pool_mode, caller_mode):
    set_rounding = _set_rounding_or_skip()
    x = np.random.default_rng(3).standard_normal(SIZE).astype(np.float32)
    results, want = _results_in_mode(x, set_rounding, pool_mode, caller_mode)
    for threads in THREAD_COUNTS:
        np.testing.assert_array_equal(results[threads], want, err_msg=f"{threads} threads")
    nearest = (x.astype(np.float64) * np.float64(np.float32(1 / KEEP))).astype(np.float32)
    assert np.any((want != nearest) & (want != 0)) == caller_mode  # the mode shows in the result
