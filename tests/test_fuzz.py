"""Fuzzing the public API (issue 7 item 4): fastdrop.dropout, fastdrop.dropout_backward and the
Dropout layer, with hypothesis drawing shapes, strides, dtypes and arguments that are often
wrongly typed or out of range.

For every example:
- nothing crashes, and every refusal is a TypeError, ValueError or OverflowError;
- a refused call writes nothing and leaves its stream where it was;
- nothing is ever written outside out= (or outside x for out=x, or anywhere for out=None): every
  array lives inside a larger guard buffer of random bytes, and every byte of every buffer that
  is not an element of the call's output is compared before and after;
- a call given out= returns out.

FUZZ_EXAMPLES (10**4, overridable with the environment variable FASTDROP_FUZZ_EXAMPLES) runs in
CI: the arrays are tiny so that the examples take well under a minute.
"""
from __future__ import annotations

import os
from decimal import Decimal
from fractions import Fraction

import ml_dtypes
import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

import fastdrop

FUZZ_EXAMPLES = int(os.environ.get("FASTDROP_FUZZ_EXAMPLES", 10_000))
REFUSALS = (TypeError, ValueError, OverflowError)
PAD = 2  # guard elements on each side of every axis

GOOD_DTYPES = [np.dtype(np.float16), np.dtype(ml_dtypes.bfloat16), np.dtype(np.float32),
               np.dtype(np.float64)]
BAD_DTYPES = [np.dtype(t) for t in (np.int8, np.int32, np.uint16, np.int64, np.bool_,
                                    np.complex64, np.complex128, object, ">f4", ">f8",
                                    np.longdouble, "U2", "V4")]

class Draw:
    """A value drawn from the example's NumPy generator (cheaper for hypothesis than a nested
    strategy; the example stays reproducible from data_seed)."""

    def __init__(self, make):
        self.make = make


def resolve(value, rng):
    return value.make(rng) if isinstance(value, Draw) else value


def mostly(valid, invalid, weight=5):
    """One choice among `valid` (in all, weight times as likely as `invalid`) and `invalid`, so
    that most examples get far enough to run a kernel while every argument is still often
    wrong."""
    copies = max(1, round(weight * len(invalid) / len(valid)))
    return st.sampled_from(list(valid) * copies + list(invalid))


def _huge_int(rng):
    return int(rng.integers(-2**62, 2**62)) << int(rng.integers(0, 10))


dtypes = mostly(GOOD_DTYPES, BAD_DTYPES, weight=6)
shapes = st.lists(st.integers(0, 4), min_size=0, max_size=3).map(tuple)
layouts = st.tuples(st.lists(st.sampled_from([1, 1, 2, -1, -3]), min_size=3, max_size=3),
                    st.booleans())
keep_probs = mostly(
    [0.5, 0.9, 1.0, 0.25, 2.0**-32, np.float32(0.75), 1, Fraction(1, 3), np.float16(0.5),
     Draw(lambda rng: float(rng.uniform(2.0**-32, 1.0)))],
    [Draw(lambda rng: float(rng.standard_normal() * 4)), float("inf"), float("-inf"),
     float("nan"), 0.0, -0.0, 2, -1, 10**400, None, "0.5", b"x", 0.5j, True, np.bool_(False),
     Decimal("0.5"), np.float64("nan"), 2.0**-33, [0.5], np.array([0.5]), np.array(0.5),
     1.0000000000000002, np.float32("inf"), Fraction(3, 2)],
    weight=8,
)
seeds = mostly(
    [None, None, 0, np.uint64(2**64 - 1), 2**64 - 1, Draw(lambda rng: int(rng.integers(2**63)))],
    [Draw(_huge_int), 1.0, "1", True, np.int8(-1), [1], 2**64, -1, 2**200, np.float64(3)],
    weight=8,
)
streams = mostly(["none", "fresh", "near_end"], ["junk"], weight=8)
axes = mostly(
    [None, None, 0, -1, (0,), (1,), (0, 2), (-1, 0), [1], np.int64(0)],
    [Draw(lambda rng: int(rng.integers(-6, 6))),
     Draw(lambda rng: tuple(int(a) for a in rng.integers(-4, 4, size=rng.integers(0, 5)))),
     "0", 0.0, (True,), (0, 0), (np.int64(0), -1), {0: 1}, object(), (None,), np.array([0, 1]),
     2**70, (1.5,), [np.int32(0)], (0, -3)],
    weight=8,
)
modes = mostly(["inverted", "classic", "alpha"],
               ["INVERTED", "", None, 1, b"inverted", ("inverted",)], weight=8)
stores = mostly(["seed", "bits"], ["Bits", None, 0, b"seed"], weight=8)
flags = mostly([True, False, np.bool_(True), np.bool_(False)],
               [0, 1, None, "yes", np.int8(1), 1.0], weight=8)
out_kinds = mostly(["none", "inplace", "fresh", "same_buffer_view", "interleave"],
                   ["wrong_dtype", "wrong_shape", "readonly", "overlap", "overlap", "list"],
                   weight=1)


class Guarded:
    """An array inside a larger buffer of random bytes; `allowed` marks the buffer elements that
    belong to the array."""

    def __init__(self, dtype, shape, layout, rng, readonly=False, offset=0):
        steps, transpose = layout
        steps = (steps * 2)[:len(shape)]
        self.last_step = abs(steps[-1]) if steps else 1
        big_shape = (3,) + tuple(n * abs(s) + 2 * PAD for n, s in zip(shape, steps))
        values = rng.standard_normal(big_shape) * 4
        if dtype.kind in "USV":
            self.big = np.zeros(big_shape, dtype=dtype)
        else:
            self.big = values.astype(dtype)
        index = [1]
        for k, (n, s) in enumerate(zip(shape, steps)):
            shift = offset if k == len(shape) - 1 else 0
            if s > 0:
                index.append(slice(PAD + shift, PAD + shift + n * s, s))
            else:
                first = PAD + shift + n * -s - 1
                index.append(slice(first, first - n * -s, s))
        self.index = tuple(index)
        self.allowed = np.zeros(big_shape, dtype=bool)
        self.allowed[self.index] = True
        array = self.big[self.index + (Ellipsis,)]
        self.array = array.T if transpose else array
        if readonly:
            self.array.flags.writeable = False
        self.before = self.snapshot()

    def view_at(self, offset, layout):
        """Another view into the same buffer: `offset` elements along the last axis."""
        other = Guarded.__new__(Guarded)
        other.big, other.before = self.big, self.before
        other.index = tuple(
            slice(s.start + offset, s.stop + offset if s.stop is not None else None, s.step)
            if k == len(self.index) - 1 and k > 0 else s
            for k, s in enumerate(self.index))
        other.allowed = np.zeros(self.big.shape, dtype=bool)
        other.allowed[other.index] = True
        array = self.big[other.index + (Ellipsis,)]
        other.array = array.T if layout[1] else array
        return other

    def snapshot(self):
        if self.big.dtype == object:
            return self.big.copy()
        return self.big.view(np.uint8).reshape(self.big.shape + (-1,)).copy()

    def changed_outside(self, allowed):
        """Whether any buffer element outside `allowed` changed (byte for byte)."""
        now = self.snapshot()
        outside = ~allowed
        if self.big.dtype == object:
            return any(a is not b for a, b in zip(now[outside], self.before[outside]))
        return not np.array_equal(now[outside], self.before[outside])


def _stream(kind):
    if kind == "none":
        return None
    if kind == "junk":
        return 7
    stream = fastdrop.Stream(seed=11, subsequence=2)
    if kind == "near_end":
        stream.reserve(2**64 - 3)
    return stream


@pytest.fixture(scope="module", autouse=True)
def _restore_default_stream():
    stream = fastdrop.default_stream()
    state = stream.seed, stream.subsequence, stream.position
    yield
    stream.manual_seed(state[0], state[1])
    stream.reserve(state[2])


def _make_out(kind, x_guard, dtype, shape, layout, rng):
    """(out argument, the Guarded buffer it lives in or None)."""
    if kind == "none":
        return None, None
    if kind == "inplace":
        return x_guard.array, x_guard
    if kind == "list":
        return x_guard.array.tolist(), None
    if kind == "wrong_dtype":
        other = GOOD_DTYPES[(GOOD_DTYPES.index(dtype) + 1) % 4] if dtype in GOOD_DTYPES \
            else np.dtype(np.float32)
        g = Guarded(other, shape, layout, rng)
        return g.array, g
    if kind == "wrong_shape":
        g = Guarded(dtype, shape + (2,) if len(shape) < 3 else shape[1:], layout, rng)
        return g.array, g
    if kind in ("overlap", "interleave", "same_buffer_view"):
        if not shape or x_guard.big.dtype.kind in "USV":
            return None, None
        offset = {"overlap": x_guard.last_step, "interleave": 1, "same_buffer_view": 0}[kind]
        g = x_guard.view_at(offset, layout)
        if kind == "same_buffer_view":
            g.array = g.array[...]  # a new view object of the same memory
        return g.array, g
    g = Guarded(dtype, shape, layout, rng, readonly=(kind == "readonly"))
    return g.array, g


def _check_guards(guards, out_guard, out):
    for g in guards:
        allowed = out_guard.allowed if (out_guard is not None and g.big is out_guard.big
                                        and out is not None and isinstance(out, np.ndarray)
                                        and out.flags.writeable) \
            else np.zeros(g.big.shape, dtype=bool)
        assert not g.changed_outside(allowed), "a byte outside out= changed"


def _check_unchanged(guards):
    for g in guards:
        assert not g.changed_outside(np.zeros(g.big.shape, dtype=bool)), \
            "a refused call wrote into an array"


# This test's own profile (the suite's "ci" profile keeps the other property tests quick).
settings.register_profile("fuzz", max_examples=FUZZ_EXAMPLES, deadline=None, database=None,
                          suppress_health_check=list(HealthCheck), print_blob=True)


@settings(settings.get_profile("fuzz"))
@given(target=st.sampled_from(["dropout", "dropout", "backward", "backward", "layer"]),
       dtype=dtypes, shape=shapes, layout=layouts, out_kind=out_kinds,
       dy_dtype=dtypes, mask_shape_differs=st.booleans(),
       keep_prob=keep_probs, seed=seeds, stream_kind=streams, shared_axes=axes, mode=modes,
       store=stores, training=flags, data_seed=st.integers(0, 2**32 - 1))
def test_fuzz_public_api(target, dtype, shape, layout, out_kind, dy_dtype, mask_shape_differs,
                         keep_prob, seed, stream_kind, shared_axes, mode, store, training,
                         data_seed):
    rng = np.random.default_rng(data_seed)
    keep_prob, seed, shared_axes = (resolve(v, rng) for v in (keep_prob, seed, shared_axes))
    stream = _stream(stream_kind)
    position = stream.position if isinstance(stream, fastdrop.Stream) else None

    if target == "backward":
        # A valid mask from a forward call (sometimes for another shape), or junk.
        mask_shape = shape[::-1] + (1,) if mask_shape_differs else shape
        try:
            _, mask = fastdrop.dropout(np.ones(mask_shape, np.float32), 0.5 if
                                       isinstance(keep_prob, float) else 0.8, seed=3,
                                       store=store if store in ("seed", "bits") else "seed",
                                       mode=mode if mode in ("classic", "alpha") else "inverted",
                                       training=training is not False)
        except REFUSALS:
            mask = None
        if stream_kind == "junk":
            mask = "not a mask"
        dy_guard = Guarded(dy_dtype, shape, layout, rng)
        out, out_guard = _make_out(out_kind, dy_guard, dy_dtype, shape, layout, rng)
        guards = [dy_guard] + ([out_guard] if out_guard is not None and
                               out_guard.big is not dy_guard.big else [])
        try:
            dx = fastdrop.dropout_backward(dy_guard.array, mask, out=out)
        except REFUSALS as error:
            event(f"backward refused: {type(error).__name__}")
            _check_unchanged(guards)
            return
        event("backward ran")
        _check_guards(guards, out_guard, out)
        if out is not None:
            assert dx is out
        return

    x_guard = Guarded(dtype, shape, layout, rng)
    out, out_guard = _make_out(out_kind, x_guard, dtype, shape, layout, rng)
    guards = [x_guard] + ([out_guard] if out_guard is not None and
                          out_guard.big is not x_guard.big else [])

    if target == "dropout":
        try:
            y, mask = fastdrop.dropout(x_guard.array, keep_prob, training=training, mode=mode,
                                       shared_axes=shared_axes, seed=seed, stream=stream,
                                       out=out, store=store)
        except REFUSALS as error:
            event(f"dropout refused: {type(error).__name__} {str(error)[:30]}")
            _check_unchanged(guards)
            if position is not None:
                assert stream.position == position, "a refused call moved the stream"
            return
        event("dropout ran" + (" (training, drawing)" if mask.draws and x_guard.array.size else ""))
        _check_guards(guards, out_guard, out)
        if out is not None:
            assert y is out
        assert isinstance(mask, fastdrop.DropoutMask)
        # And the backward of what came out, into a fresh guarded array.
        dy_guard = Guarded(dtype, shape, layout, rng)
        back_guard = Guarded(dtype, shape, layout, rng)
        try:
            dx = fastdrop.dropout_backward(dy_guard.array, mask, out=back_guard.array)
        except REFUSALS as error:  # a valid forward's mask always serves its own shape
            raise AssertionError(f"backward refused the mask of a valid forward: {error}")
        assert dx is back_guard.array
        _check_guards([dy_guard], None, None)
        _check_guards([back_guard], back_guard, back_guard.array)
        return

    # The layer: construction, train/eval, forward, backward.
    try:
        layer = fastdrop.Dropout(keep_prob, mode=mode, shared_axes=shared_axes,
                                 seed=seed if seed is not None else None, store=store,
                                 mc=training if not isinstance(training, bool) else False)
        layer.train(training)
    except REFUSALS:
        event("layer refused at construction")
        return
    try:
        y = layer.forward(x_guard.array, out=out)
    except REFUSALS:
        event("layer forward refused")
        _check_unchanged(guards)
        return
    event("layer ran")
    _check_guards(guards, out_guard, out)
    dy_guard = Guarded(dtype, shape, layout, rng)
    try:
        layer.backward(dy_guard.array)
    except REFUSALS as error:
        raise AssertionError(f"backward refused the layer's own forward: {error}")
    _check_guards([dy_guard], None, None)
    assert y is out if out is not None else True
