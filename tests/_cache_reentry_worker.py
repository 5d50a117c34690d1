"""The re-entry test of fastdrop.torch's output cache, run by test_torch.py in a process of its
own (not a test module itself), because a failure is a deadlock.

Usage: python _cache_reentry_worker.py TIMEOUT_SECONDS

Each of the cache's operations (an output taken, one given back, set_cache_limit, empty_cache)
is interrupted at every line the cache's code runs, in turn, by a SIGUSR1 handler that uses the
cache itself.  A trace function raises the signal there: signal.raise_signal runs the handler
at once, on the main thread, inside the cache, as a signal arriving at that moment would.
After each interrupted operation the outputs still alive are checked (right values, no two of
them sharing memory), and the cache (its byte count agrees with its blocks, and the release
that the handler asked for was done).  Prints
"interrupted N times" and exits 0, or exits non-zero on a failed check; after TIMEOUT_SECONDS
(a deadlock) faulthandler prints every thread's stack and exits non-zero.
"""
import faulthandler
import inspect
import itertools
import signal
import sys

import numpy as np
import torch

import fastdrop
import fastdrop.torch as fdt

# The cache serves outputs of 64 KiB here instead of 32 MiB: its code is the same for any size,
# and the hundreds of interrupted operations take a second instead of a minute.
fdt._CACHED_MIN_BYTES = 1 << 16
# The smallest float32 output the cache serves, and the same seed and p everywhere, so that
# every output must equal EXPECTED.
SHAPE = (16, fdt._CACHED_MIN_BYTES // 4 // 16)
NBYTES = fdt._CACHED_MIN_BYTES
X = torch.randn(SHAPE, generator=torch.Generator().manual_seed(3))
EXPECTED = fastdrop.dropout(X.numpy(), 0.7, seed=11)[0].view(np.uint32)

# The code that runs with the cache's lock held, or on the way to and from it.
CACHE_CODE = {function.__code__ for cache_class in (fdt._OutputCache, fdt._Loan)
              for function in vars(cache_class).values() if inspect.isfunction(function)}


def cached_output():
    return fdt.dropout(X, 0.3, seed=11)


# What the handler does: each uses the cache, and whatever it leaves alive is checked after,
# with the bytes the cache may hold once the interrupted operation has ended.
alive = []


def take_and_give_back():
    alive.append(cached_output())
    gone = cached_output()
    gone.fill_(float("nan"))  # poison: a block lent twice would show it
    del gone


def empty_cache():
    fdt.empty_cache()


def lower_the_limit():
    fdt.set_cache_limit(NBYTES)


def count():
    alive.append(fdt.cached_bytes())


HANDLERS = [(take_and_give_back, 1 << 30), (empty_cache, 0), (lower_the_limit, NBYTES),
            (count, 1 << 30)]


# The interrupted operations: each gets the cache holding two blocks (so that its loops run)
# and one output alive.
def take(output):
    alive.append(cached_output())


def give_back(output):
    output.clear()  # drops the last reference: the loan dies and returns its block


def set_cache_limit(output):
    fdt.set_cache_limit(0)


def clear(output):
    fdt.empty_cache()


OPERATIONS = [take, give_back, set_cache_limit, clear]


def interrupt_at(point, handler):
    """A trace function that raises SIGUSR1, handled by `handler`, at the `point`-th line run
    by the cache's code (counting from 0); `lines` counts them."""
    lines = [0]

    def on_line(frame, event, arg):
        if event == "line":
            if lines[0] == point:
                signal.signal(signal.SIGUSR1, lambda signum, frame: handler())
                signal.raise_signal(signal.SIGUSR1)
            lines[0] += 1
        return on_line

    def on_call(frame, event, arg):
        return on_line if frame.f_code in CACHE_CODE else None

    return on_call, lines


def check(most_held):
    """The outputs alive are right and distinct, the cache's count is its blocks', and they are
    at most `most_held` bytes."""
    outputs = [item for item in alive if isinstance(item, torch.Tensor)]
    for output in outputs:
        assert np.array_equal(output.numpy().view(np.uint32), EXPECTED), "wrong output"
    for index, output in enumerate(outputs):
        for other in outputs[:index]:
            assert not np.shares_memory(output.numpy(), other.numpy()), "a block lent twice"
    cache = fdt._OUTPUT_CACHE
    assert fdt.cached_bytes() == sum(block.nbytes for block in cache._blocks), "count drifted"
    assert fdt.cached_bytes() <= most_held, "a release that the handler asked for was lost"


def main() -> None:
    faulthandler.dump_traceback_later(float(sys.argv[1]), exit=True)
    interruptions = 0
    for operation in OPERATIONS:
        for handler, most_held in HANDLERS:
            # The block given back may be returned after the handler has run.
            most_held += NBYTES if operation is give_back else 0
            for point in itertools.count():
                fdt.set_cache_limit(1 << 30)
                fdt.empty_cache()
                output = [cached_output()]
                spare = [cached_output(), cached_output()]
                spare.clear()  # the cache holds two blocks
                tracer, lines = interrupt_at(point, handler)
                sys.settrace(tracer)
                try:
                    operation(output)
                finally:
                    sys.settrace(None)
                if lines[0] <= point:  # every line the operation runs has been interrupted
                    break
                alive.extend(output)
                check(most_held)
                alive.clear()
                output.clear()
                interruptions += 1
            alive.clear()
            assert point > 0, f"{operation.__name__} ran none of the cache's code"
    print(f"interrupted {interruptions} times")


if __name__ == "__main__":
    main()
