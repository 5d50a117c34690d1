"""Reliability (issue 7 items 2, 3, 5): threads sharing one Stream, memory growth over many calls,
and a long call that returns.

- Concurrency: 8 Python threads call fastdrop.dropout on arrays of their own while sharing one
  Stream.  Every call's mask (read back from y, and from the stored bits) equals
  fastdrop.reference.decisions for the blocks that call reserved, and the reserved ranges
  [start, start + ceil(n / 16)) never overlap and tile the stream from 0 to its final position.
- Leaks: 10**5 small forward + backward calls (every dtype, both stores, out=, shared axes, the
  layer, refused calls) grow neither the Python heap (tracemalloc) nor the resident set size
  (/proc/self/statm) past a small bound after warm-up.
- Long calls: one call on 6.4 * 10**7 elements returns (a hang guard, not a timing test).
"""
from __future__ import annotations

import math
import os
import sys
import threading
import time
import tracemalloc

import numpy as np
import pytest

import fastdrop
from fastdrop import reference
from fastdrop._core import STORAGE_TYPES

THREADS = 8
CALLS_PER_THREAD = 40


# ---------------------------------------------------------------------------------------------
# Concurrency
# ---------------------------------------------------------------------------------------------

def _sizes(rng, count):
    """Mostly small sizes with tails of every length mod 8, a few large enough for the kernel's
    own OpenMP threads."""
    sizes = [int(rng.integers(1, 3000)) for _ in range(count)]
    sizes[::13] = [int(rng.integers(70_000, 140_000)) for _ in sizes[::13]]
    return sizes


@pytest.mark.parametrize("num_threads", [1, 2])
def test_threads_sharing_one_stream(num_threads, restore_threads):
    """8 threads, one Stream: masks equal the reference for each call's own blocks, and the
    reserved block ranges are disjoint and tile [0, stream.position)."""
    fastdrop.set_num_threads(num_threads)
    stream = fastdrop.Stream(seed=0x1234_5678_9ABC_DEF0, subsequence=3)
    keep_prob = 0.7
    barrier = threading.Barrier(THREADS)
    results = [[] for _ in range(THREADS)]
    errors = []

    def work(k):
        try:
            rng = np.random.default_rng(k)
            sizes = _sizes(rng, CALLS_PER_THREAD)
            dtype = list(STORAGE_TYPES)[k % len(STORAGE_TYPES)]
            barrier.wait()
            for i, n in enumerate(sizes):
                x = np.ones(n, dtype=dtype)  # kept units become 1/q != 0, dropped ones 0
                store = "bits" if i % 2 else "seed"
                y, mask = fastdrop.dropout(x, keep_prob, stream=stream, store=store)
                results[k].append((n, mask, y != 0))
        except BaseException as error:  # reported in the main thread
            errors.append(error)

    threads = [threading.Thread(target=work, args=(k,)) for k in range(THREADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors

    calls = [call for per_thread in results for call in per_thread]
    assert len(calls) == THREADS * CALLS_PER_THREAD
    ranges = sorted((mask.start, mask.start + math.ceil(n / 16)) for n, mask, _ in calls)
    position = 0
    for start, end in ranges:
        assert start == position, "reserved block ranges overlap or leave a gap"
        position = end
    assert position == stream.position

    for n, mask, kept in calls:
        assert (mask.seed, mask.subsequence) == (stream.seed, stream.subsequence)
        expected = reference.decisions(mask.seed, mask.subsequence, mask.start, n, keep_prob)
        np.testing.assert_array_equal(kept, expected)
        if mask.bits is not None:
            np.testing.assert_array_equal(
                mask.bits, np.packbits(expected, bitorder="little"))


def test_threads_sharing_one_layer_stream_and_separate_layers():
    """Dropout layers built in several threads and calls on separate layers do not disturb each
    other: each layer's masks are those of its own stream run alone."""
    x = np.ones((37, 11), dtype=np.float32)

    def run(seed):
        layer = fastdrop.Dropout(0.6, seed=seed)
        return [layer(x).copy() for _ in range(30)]

    alone = {seed: run(seed) for seed in range(THREADS)}
    together = {}

    def work(seed):
        together[seed] = run(seed)

    threads = [threading.Thread(target=work, args=(seed,)) for seed in range(THREADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for seed in range(THREADS):
        for a, b in zip(alone[seed], together[seed]):
            np.testing.assert_array_equal(a, b)


def test_readers_of_one_array_from_two_threads():
    """What the README documents as safe: several threads reading the same x (each writing its
    own out=) get exactly the single-threaded results."""
    x = np.linspace(-1, 1, 50_001, dtype=np.float64)
    expected, _ = fastdrop.dropout(x, 0.5, seed=9)
    outs = [np.empty_like(x) for _ in range(4)]

    def work(k):
        for _ in range(20):
            fastdrop.dropout(x, 0.5, seed=9, out=outs[k])

    threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for out in outs:
        np.testing.assert_array_equal(out, expected)


# ---------------------------------------------------------------------------------------------
# Leaks
# ---------------------------------------------------------------------------------------------

CALLS = 10**5
TRACEMALLOC_BOUND = 256 * 1024     # bytes of net Python-heap growth allowed over CALLS calls
RSS_BOUND = 8 * 1024 * 1024        # bytes of resident-set growth allowed over CALLS calls


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _workload():
    """A closure running one round of small calls over most of the code paths: every dtype,
    both stores, out= and in place, shared axes, evaluation, classic and alpha, the layer, and
    refused calls (their exceptions must not leak either)."""
    dtypes = list(STORAGE_TYPES)
    xs = [np.linspace(-2, 2, 3 * 7, dtype=d).reshape(3, 7) for d in dtypes]
    outs = [np.empty_like(x) for x in xs]
    stream = fastdrop.Stream(seed=5)
    layer = fastdrop.Dropout(0.75, seed=2, store="bits")
    modes = ("inverted", "classic", "alpha")

    def one(i):
        k = i % len(xs)
        x, out = xs[k], outs[k]
        mode = modes[i % 3]
        store = "bits" if i & 1 else "seed"
        y, mask = fastdrop.dropout(x, 0.5, stream=stream, mode=mode, store=store,
                                   shared_axes=0 if i % 5 == 0 else None)
        fastdrop.dropout_backward(y, mask)
        fastdrop.dropout_backward(x, mask, out=out)
        if i % 7 == 0:
            fastdrop.dropout(x, 0.9, seed=i, out=out, training=bool(i & 2))
            layer.backward(layer(x))
        if i % 11 == 0:
            try:
                fastdrop.dropout(x, 1.5)
            except ValueError:
                pass
            try:
                fastdrop.dropout_backward(x[:1], mask)
            except ValueError:
                pass

    return one


def test_no_growth_over_many_calls_tracemalloc():
    """Net Python-heap growth over 25 000 rounds (more than 10**5 forward/backward calls: a round
    makes 3 to 8) stays below TRACEMALLOC_BOUND (a leak of one object per call would be several
    MB)."""
    one = _workload()
    for i in range(2000):  # warm-up: caches (lru_cache of kernel_op), interned objects
        one(i)
    tracemalloc.start()
    try:
        before = tracemalloc.take_snapshot()
        for i in range(CALLS // 4):
            one(i)
        after = tracemalloc.take_snapshot()
    finally:
        tracemalloc.stop()
    growth = sum(stat.size_diff for stat in after.compare_to(before, "filename"))
    assert growth < TRACEMALLOC_BOUND, (
        growth, after.compare_to(before, "lineno")[:10])


def test_no_growth_over_many_calls_rss():
    """The resident set size grows less than RSS_BOUND over 10**5 rounds after a warm-up (a
    leak of the C core's buffers or of the arrays' data, even 100 bytes a call, would exceed
    it)."""
    if not os.path.exists("/proc/self/statm"):
        pytest.skip("no /proc/self/statm on this platform")
    one = _workload()
    for i in range(5000):
        one(i)
    before = _rss_bytes()
    for i in range(CALLS):
        one(i)
    growth = _rss_bytes() - before
    assert growth < RSS_BOUND, f"resident set grew by {growth} bytes over {CALLS} rounds"


# ---------------------------------------------------------------------------------------------
# Long calls
# ---------------------------------------------------------------------------------------------

LONG_SIZE = 64_000_000


def test_long_call_returns():
    """A call on 6.4 * 10**7 float32 elements (in place, 256 MB) returns; the bound is a hang
    guard only.  The kernel runs with the GIL released and cannot be interrupted: Ctrl-C is
    seen once it returns (README, "Reliability")."""
    try:
        x = np.ones(LONG_SIZE, dtype=np.float32)
    except MemoryError:
        pytest.skip("not enough memory for 256 MB")
    t0 = time.perf_counter()
    y, mask = fastdrop.dropout(x, 0.5, seed=1, out=x)
    dx = fastdrop.dropout_backward(y, mask, out=y)
    elapsed = time.perf_counter() - t0
    assert elapsed < 10, f"forward + backward on {LONG_SIZE} elements took {elapsed:.1f} s"
    # y = m / q, then dx = m * y / q: 4 where kept; check the ends and a sample.
    head = reference.decisions(1, 0, 0, 4096, 0.5)
    np.testing.assert_array_equal(dx[:4096], np.where(head, 4.0, 0.0).astype(np.float32))
    tail_start = LONG_SIZE - 4096  # a multiple of 16: blocks start there
    tail = reference.decisions(1, 0, tail_start // 16, 4096, 0.5)
    np.testing.assert_array_equal(dx[tail_start:], np.where(tail, 4.0, 0.0).astype(np.float32))
    assert 0.49 < np.count_nonzero(dx[::997]) / dx[::997].size < 0.51


def test_python_threads_run_during_a_long_call(restore_threads):
    """The GIL is released inside the kernel: another Python thread keeps running meanwhile.
    (The kernel runs on one thread here, so that a core is left for the other thread.)"""
    fastdrop.set_num_threads(1)
    x = np.ones(LONG_SIZE, dtype=np.float32)
    ticks = []
    done = threading.Event()

    def ticker():
        while not done.is_set():
            ticks.append(time.perf_counter())
            time.sleep(0.001)

    t = threading.Thread(target=ticker)
    old = sys.getswitchinterval()
    sys.setswitchinterval(0.0005)
    try:
        t.start()
        time.sleep(0.01)
        calls = []
        for _ in range(5):
            start = time.perf_counter()
            fastdrop.dropout(x, 0.5, seed=3, out=x)
            calls.append((start, time.perf_counter()))
    finally:
        done.set()
        t.join()
        sys.setswitchinterval(old)
    during = [tick for tick in ticks if any(a < tick < b for a, b in calls)]
    print(f"{len(during)} ticks during {sum(b - a for a, b in calls):.3f} s of kernel calls")
    if sum(b - a for a, b in calls) > 0.1:  # long enough for the other thread to be seen
        assert during, "no Python thread ran while the kernel did: the GIL was held"
