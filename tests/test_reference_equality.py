"""fastdrop's compiled kernels against the pure-NumPy reference, bit for bit (SPEC §2, §3, §4).

The reference shares the argument checks and stream bookkeeping with fastdrop and differs only in
the arithmetic, so any difference here is a kernel bug: a wrong decision index under some
layout, a tile or thread boundary, a refinement draw, a select that multiplies, a stored-bit
layout.  Every comparison is exact: float outputs are compared as unsigned integers so -0.0 and
NaN payloads count.
"""
from __future__ import annotations

import copy
import itertools
from dataclasses import dataclass

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from randomgen import Philox

import fastdrop
from fastdrop import reference
from fastdrop._core import threshold_for
from fastdrop._stream import compute_dtype, kernel_op

try:  # bfloat16 comes with the optional ml_dtypes package
    import ml_dtypes
    HALF_DTYPES = (np.dtype(np.float16), np.dtype(ml_dtypes.bfloat16))
    finfo = ml_dtypes.finfo
except ImportError:  # pragma: no cover - ml_dtypes is a test dependency
    HALF_DTYPES = (np.dtype(np.float16),)
    finfo = np.finfo

# Every SIMD path the machine supports must reproduce these results bit for bit.
pytestmark = pytest.mark.usefixtures("every_simd_path")

DTYPES = (np.dtype(np.float32), np.dtype(np.float64)) + HALF_DTYPES
MODES = ("inverted", "classic", "alpha")
SPECIAL_KEEP_PROBS = (0.5, 0.8, 1.0, 1 - 2**-20, 2**-20)
SENTINEL = 1234.5
USES_FIXTURE = settings(suppress_health_check=[HealthCheck.function_scoped_fixture])
# The main property tests are cheap per example: run several times the profile's count.
USES_FIXTURE_MORE_EXAMPLES = settings(USES_FIXTURE,
                                      max_examples=4 * settings.default.max_examples)


# ---------------------------------------------------------------------------------------------
# Exact comparisons
# ---------------------------------------------------------------------------------------------

def as_uint(a: np.ndarray) -> np.ndarray:
    """The array's bits as unsigned integers of its item size (exact for -0.0 and NaN)."""
    a = np.asarray(a)
    return a.view(np.dtype(f"u{a.dtype.itemsize}"))


def assert_same_bits(a: np.ndarray, b: np.ndarray) -> None:
    assert a.dtype == b.dtype
    assert a.shape == b.shape
    np.testing.assert_array_equal(as_uint(a), as_uint(b))


def assert_same_mask(mask_f, mask_r) -> None:
    """Equal masks, equal decisions, and the compiled decisions equal the reference's."""
    assert mask_f == mask_r
    decided = mask_f.to_bool()
    assert decided.shape == mask_f.mask_shape
    np.testing.assert_array_equal(decided, reference.mask_to_bool(mask_f))
    np.testing.assert_array_equal(mask_r.to_bool(), reference.mask_to_bool(mask_r))
    if mask_f.bits is not None:
        np.testing.assert_array_equal(mask_f.bits, mask_r.bits)
        # The stored bits are the little-endian packing of the decisions (SPEC §4).
        packed = np.packbits(reference.mask_to_bool(mask_r).ravel(), bitorder="little")
        np.testing.assert_array_equal(mask_f.bits, packed)


# ---------------------------------------------------------------------------------------------
# Arrays with many layouts, rebuilt identically on demand
# ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Recipe:
    """Everything needed to build the same array (values and memory layout) again."""
    shape: tuple
    dtype: np.dtype
    kind: str          # "c", "f", "strided", "permuted", "broadcast"
    steps: tuple       # per axis, for "strided"
    offsets: tuple     # per axis, for "strided"
    perm: tuple        # for "permuted"
    values_seed: int
    specials: bool     # sprinkle NaN, +-Inf, -0.0, subnormals and huge values


def values_for(recipe: Recipe) -> np.ndarray:
    rng = np.random.default_rng(recipe.values_seed)
    vals = rng.standard_normal(recipe.shape) * 10.0 ** rng.integers(-3, 4, recipe.shape)
    if recipe.specials and vals.size:
        tiny = float(finfo(recipe.dtype).smallest_subnormal)
        big = float(finfo(recipe.dtype).max)
        pool = np.array([np.nan, np.inf, -np.inf, -0.0, 0.0, tiny, -tiny, big, -big])
        where = rng.random(recipe.shape) < 0.3
        vals = np.where(where, rng.choice(pool, recipe.shape), vals)
    return np.asarray(vals).astype(recipe.dtype)


def strided_slices(recipe: Recipe, buffer_shape: tuple):
    """Slices taking a view with recipe.shape out of a buffer, with the recipe's steps."""
    index = []
    for n, step, off in zip(recipe.shape, recipe.steps, recipe.offsets):
        if n == 0:
            index.append(slice(off, off))
        elif step > 0:
            index.append(slice(off, off + step * (n - 1) + 1, step))
        else:
            first = off + (-step) * (n - 1)
            stop = first + step * n
            index.append(slice(first, stop if stop >= 0 else None, step))
    return tuple(index)


class Built:
    """An array built from a recipe, plus a check that nothing outside it was written."""

    def __init__(self, recipe: Recipe):
        self.recipe = recipe
        vals = values_for(recipe)
        self.buffer = None
        self.region = None
        kind = recipe.kind
        if vals.ndim == 0 and kind in ("c", "f"):  # np.asarray(scalar): a fresh 0-d array
            self.array = np.asarray(recipe.dtype.type(vals[()]))
        elif kind == "c":
            self.array = np.ascontiguousarray(vals)
        elif kind == "f":
            self.array = np.asfortranarray(vals)
        elif kind == "permuted":
            base = np.empty(tuple(recipe.shape[p] for p in recipe.perm), dtype=recipe.dtype)
            self.array = base.transpose(np.argsort(recipe.perm))
            self.array[...] = vals
        elif kind == "broadcast":
            small = vals[tuple(slice(0, 1) if k % 2 == 0 else slice(None)
                               for k in range(vals.ndim))]
            self.array = np.broadcast_to(small, recipe.shape)
        elif kind == "strided":
            if vals.ndim == 0:
                self.buffer = np.full(5, SENTINEL, dtype=recipe.dtype)
                index = (2, Ellipsis)
            else:
                buffer_shape = tuple(off + abs(step) * max(n, 1) + 1 for n, step, off in
                                     zip(recipe.shape, recipe.steps, recipe.offsets))
                self.buffer = np.full(buffer_shape, SENTINEL, dtype=recipe.dtype)
                index = strided_slices(recipe, buffer_shape)
            self.array = self.buffer[index]
            self.region = np.zeros(self.buffer.shape, dtype=bool)
            self.region[index] = True
            self.array[...] = vals
        else:  # pragma: no cover - a typo in a strategy
            raise AssertionError(kind)
        assert self.array.shape == recipe.shape and self.array.dtype == recipe.dtype
        if kind != "broadcast":
            np.testing.assert_array_equal(as_uint(self.array), as_uint(vals))

    def assert_outside_untouched(self) -> None:
        if self.buffer is not None:
            sentinel = self.recipe.dtype.type(SENTINEL)  # as rounded by np.full
            assert np.all(self.buffer[~self.region] == sentinel), "wrote outside the view"


@st.composite
def shapes(draw, max_ndim=5):
    ndim = draw(st.integers(0, max_ndim))
    big = {0: 1, 1: 9000, 2: 120, 3: 20}.get(ndim, 7)
    # Mostly extents of 2 or more: extent-1 axes vanish from the kernel's layout.
    shape = [draw(st.integers(1, big) if draw(st.integers(0, 3)) == 0 else
                  st.sampled_from([2, 3, 4, 5, 6, 7, 1]))
             for _ in range(ndim)]
    if ndim and draw(st.integers(0, 7)) == 0:
        shape[draw(st.integers(0, ndim - 1))] = 0
    return tuple(shape)


@st.composite
def recipes(draw, shape=None, dtype=None, writeable=False):
    shape = draw(shapes()) if shape is None else shape
    dtype = draw(st.sampled_from(DTYPES)) if dtype is None else dtype
    kinds = ["c", "f", "strided", "permuted"] + ([] if writeable else ["broadcast"])
    ndim = len(shape)
    return Recipe(
        shape=shape,
        dtype=dtype,
        kind=draw(st.sampled_from(kinds)),
        steps=tuple(draw(st.sampled_from([1, 2, 3, -1, -2, -3])) for _ in range(ndim)),
        offsets=tuple(draw(st.integers(0, 2)) for _ in range(ndim)),
        perm=tuple(draw(st.permutations(range(ndim)))),
        values_seed=draw(st.integers(0, 2**32 - 1)),
        specials=draw(st.booleans()),
    )


@st.composite
def shared_axes_for(draw, ndim: int):
    """None, an int, or a tuple/list of distinct axes (some written as negative numbers)."""
    form = draw(st.sampled_from(["none", "subset", "all", "int"]))
    if form == "none":
        return None
    if ndim == 0:
        return draw(st.sampled_from([(), []]))
    if form == "all":
        axes = list(range(ndim))
    else:
        axes = draw(st.lists(st.integers(0, ndim - 1), unique=True,
                             min_size=1 if form == "int" else 0))
    axes = [a - ndim if draw(st.booleans()) else a for a in axes]
    if form == "int":
        return axes[0]
    return draw(st.sampled_from([tuple, list]))(axes)


keep_probs = st.one_of(
    st.sampled_from(SPECIAL_KEEP_PROBS),
    st.floats(2**-32, 1.0, exclude_min=True),
    st.floats(0.05, 0.999),
    st.floats(0.2, 0.9),  # both outcomes common: a misplaced decision shows
)
seeds = st.one_of(st.integers(0, 2**64 - 1), st.sampled_from([0, 1, 2**32 - 1, 2**32, 2**64 - 1]))
subsequences = st.one_of(st.integers(0, 2**63 - 1), st.sampled_from([0, 1, 2**63 - 1]))
positions = st.one_of(st.integers(0, 10**6), st.integers(0, 2**64 - 2**20),
                      st.sampled_from([0, 2**63 - 1, 2**63, 2**64 - 2**20]))


def stream_at(seed: int, subsequence: int, position: int) -> fastdrop.Stream:
    stream = fastdrop.Stream(seed, subsequence)
    stream.reserve(position)
    return stream


# ---------------------------------------------------------------------------------------------
# One forward call on both implementations
# ---------------------------------------------------------------------------------------------

def run_forward(x_recipe: Recipe, call_kwargs: dict, out_mode: str, out_recipe=None):
    """Runs fastdrop.dropout and reference.dropout on identical fresh inputs; checks they agree.

    call_kwargs may hold ("stream", (seed, subsequence, position)): each side gets its own
    stream at that position.  Returns the fastdrop result and the streams.
    """
    results, streams = [], []
    for impl in (fastdrop, reference):
        x_built = Built(x_recipe)
        x = x_built.array
        x_before = x.copy()
        kwargs = dict(call_kwargs)
        if "stream" in kwargs:
            kwargs["stream"] = stream_at(*kwargs["stream"])
            streams.append(kwargs["stream"])
        out_built = None
        if out_mode == "inplace":
            kwargs["out"] = x
        elif out_mode == "same_view":
            kwargs["out"] = x[...]
        elif out_mode == "out":
            out_built = Built(out_recipe)
            kwargs["out"] = out_built.array
        y, mask = impl.dropout(x, **kwargs)
        if out_mode == "new":
            assert_same_bits(x, x_before)  # the input is never modified out of place
        if "out" in kwargs:
            assert y is kwargs["out"]
        x_built.assert_outside_untouched()
        if out_built is not None:
            out_built.assert_outside_untouched()
        results.append((x, y, mask))

    (x_f, y_f, mask_f), (x_r, y_r, mask_r) = results
    assert_same_bits(y_f, y_r)
    assert (y_f is x_f) == (y_r is x_r)
    assert_same_mask(mask_f, mask_r)
    if streams:
        assert streams[0].position == streams[1].position
    return x_f, y_f, mask_f, streams


def expected_passthrough(kwargs: dict) -> bool:
    """Whether y must be x itself: nothing dropped and no scaling, and no out=."""
    q = kwargs["keep_prob"]
    if "out" in kwargs:
        return False
    if not kwargs.get("training", True):
        return kwargs.get("mode", "inverted") in ("inverted", "alpha")
    return q == 1.0


def call_options(draw, ndim, **extra):
    """The keyword arguments of a dropout call, drawn: keep_prob, mode, store, shared_axes and
    training (mostly training), plus `extra`."""
    return dict(
        keep_prob=draw(keep_probs, label="keep_prob"),
        mode=draw(st.sampled_from(MODES), label="mode"),
        store=draw(st.sampled_from(["seed", "bits"]), label="store"),
        shared_axes=draw(shared_axes_for(ndim), label="shared_axes"),
        training=draw(st.sampled_from([True, True, True, False]), label="training"),
        **extra,
    )


@given(data=st.data())
@USES_FIXTURE_MORE_EXAMPLES
def test_forward_matches_reference(data, restore_threads):
    """Any layout, dtype, shared axes, q, seed, mode, store, out= and thread count: same bits
    and same mask as the reference (a wrong index, stride, tail or select breaks it)."""
    draw = data.draw
    fastdrop.set_num_threads(draw(st.integers(1, 4), label="threads"))
    out_mode = draw(st.sampled_from(["new", "inplace", "same_view", "out"]), label="out_mode")
    x_recipe = draw(recipes(writeable=out_mode in ("inplace", "same_view")), label="x")
    out_recipe = None
    if out_mode == "out":
        out_recipe = draw(recipes(shape=x_recipe.shape, dtype=x_recipe.dtype, writeable=True),
                          label="out")
    kwargs = call_options(draw, len(x_recipe.shape))
    if draw(st.booleans(), label="use_seed"):
        kwargs["seed"] = draw(seeds, label="seed")
    else:
        kwargs["stream"] = (draw(seeds, label="seed"), draw(subsequences, label="subsequence"),
                            draw(positions, label="position"))
    x_f, y_f, mask_f, streams = run_forward(x_recipe, kwargs, out_mode, out_recipe)
    if out_mode == "new":
        assert (y_f is x_f) == expected_passthrough(kwargs)
    if streams:
        start = kwargs["stream"][2]
        moved = -(-mask_f.size // 16) if kwargs["training"] else 0
        assert streams[0].position == start + moved
        if kwargs["training"]:
            assert mask_f.start == start


@given(data=st.data())
def test_successive_stream_calls_match_reference(data):
    """Several calls in a row on one stream: same masks, outputs and positions as the reference
    (a wrong advance or a start offset ignored breaks the second call on)."""
    draw = data.draw
    seed, subsequence, position = draw(seeds), draw(subsequences), draw(positions)
    streams = [stream_at(seed, subsequence, position) for _ in range(2)]
    for _ in range(draw(st.integers(2, 4), label="calls")):
        recipe = draw(recipes(), label="x")
        kwargs = dict(keep_prob=draw(keep_probs), mode=draw(st.sampled_from(MODES)),
                      shared_axes=draw(shared_axes_for(len(recipe.shape))),
                      training=draw(st.sampled_from([True, True, False])),
                      store=draw(st.sampled_from(["seed", "bits"])))
        outputs = []
        for impl, stream in zip((fastdrop, reference), streams):
            before = stream.position
            y, mask = impl.dropout(Built(recipe).array, stream=stream, **kwargs)
            if kwargs["training"]:
                assert mask.start == before
                assert stream.position == before + -(-mask.size // 16)
            else:
                assert stream.position == before
            outputs.append((y, mask))
        assert_same_bits(outputs[0][0], outputs[1][0])
        assert_same_mask(outputs[0][1], outputs[1][1])
        assert streams[0].position == streams[1].position


def test_default_stream_matches_reference(restore_default_stream):
    """Calls with neither seed nor stream read the default stream like the reference does."""
    x = np.linspace(-3, 3, 1000).reshape(10, 100)
    fastdrop.manual_seed(99)
    fastdrop.default_stream().reserve(5)
    y_f, mask_f = fastdrop.dropout(x, 0.6)
    after_f = fastdrop.default_stream().position
    fastdrop.manual_seed(99)
    fastdrop.default_stream().reserve(5)
    y_r, mask_r = reference.dropout(x, 0.6)
    assert fastdrop.default_stream().position == after_f == 5 + 63
    assert mask_f.start == 5 and mask_f.seed == 99
    assert_same_bits(y_f, y_r)
    assert_same_mask(mask_f, mask_r)


SWEEP_LAYOUTS = ["c", "f", "permuted", "strided"]


@pytest.mark.parametrize("shape", [(3, 4, 5, 6), (9, 35, 40)])
@pytest.mark.parametrize("kind", SWEEP_LAYOUTS)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_every_shared_axes_subset(shape, kind, dtype):
    """Every subset of shared axes of a 3-D/4-D array (the larger spanning several tiles), in
    C, Fortran, permuted and reversed-strided layouts: same bits and masks as the reference
    (a wrong decision index along a shared inner axis or across tiles breaks it)."""
    ndim = len(shape)
    recipe = Recipe(shape=shape, dtype=dtype, kind=kind, steps=(-2, 1, -1, 3)[:ndim],
                    offsets=(1, 0, 2, 1)[:ndim], perm=(2, 0, 3, 1) if ndim == 4 else (1, 2, 0),
                    values_seed=ndim, specials=False)
    for r in range(ndim + 1):
        for axes in itertools.combinations(range(ndim), r):
            kwargs = dict(keep_prob=0.6, shared_axes=axes, seed=31 + len(axes),
                          store="bits" if len(axes) % 2 else "seed")
            run_forward(recipe, kwargs, "out", out_recipe=Recipe(
                shape=shape, dtype=dtype, kind="strided", steps=(1, -1, 2, -3)[:ndim],
                offsets=(0, 1, 0, 2)[:ndim], perm=(), values_seed=0, specials=False))


# ---------------------------------------------------------------------------------------------
# Backward
# ---------------------------------------------------------------------------------------------

def without_bits(mask):
    """The same mask with the stored bits removed, so that backward must regenerate them."""
    regenerated = copy.copy(mask)
    regenerated.bits = None
    return regenerated


@given(data=st.data())
@USES_FIXTURE_MORE_EXAMPLES
def test_backward_matches_reference(data, restore_threads):
    """dropout_backward from stored or regenerated decisions, any dy dtype/layout, in place or
    not: same bits as the reference (and as the forward's own decisions)."""
    draw = data.draw
    fastdrop.set_num_threads(draw(st.integers(1, 4), label="threads"))
    x_recipe = draw(recipes(), label="x")
    kwargs = call_options(draw, len(x_recipe.shape), seed=draw(seeds, label="seed"))
    _, _, mask_f = run_forward(x_recipe, kwargs, "new")[:3]
    mask_r = copy.deepcopy(mask_f)
    out_mode = draw(st.sampled_from(["new", "inplace", "out"]), label="out_mode")
    dy_dtype = draw(st.sampled_from(DTYPES), label="dy_dtype")
    dy_recipe = draw(recipes(shape=x_recipe.shape, dtype=dy_dtype,
                             writeable=out_mode == "inplace"), label="dy")
    out_recipe = draw(recipes(shape=x_recipe.shape, dtype=dy_dtype, writeable=True),
                      label="out")

    results = []
    masks = [(fastdrop, mask_f), (reference, mask_r)]
    if mask_f.bits is not None:
        masks += [(fastdrop, without_bits(mask_f)), (reference, without_bits(mask_r))]
    for impl, mask in masks:
        dy_built = Built(dy_recipe)
        dy = dy_built.array
        dy_before = dy.copy()
        out_built = None
        if out_mode == "inplace":
            out = dy
        elif out_mode == "out":
            out_built = Built(out_recipe)
            out = out_built.array
        else:
            out = None
        dx = impl.dropout_backward(dy, mask, out=out)
        if out is not None:
            assert dx is out
        else:
            assert_same_bits(dy, dy_before)
            assert (dx is dy) == (not mask.draws and not (mask.mode == "classic"
                                                           and not mask.training))
        dy_built.assert_outside_untouched()
        if out_built is not None:
            out_built.assert_outside_untouched()
        results.append((dx, dy_before))
    for dx, _ in results[1:]:
        assert_same_bits(results[0][0], dx)
    # And directly: dx is the select of SPEC §2 with the scale (alpha: a) rounded to dy's
    # compute precision, the product rounded once to dy's dtype.
    dx, dy = results[0]
    if mask_f.draws:
        keep = np.broadcast_to(reference.mask_to_bool(mask_f), dy.shape)
        ctype = compute_dtype(dy.dtype).type
        scale = ctype(kernel_op(mask_f.keep_prob, mask_f.mode, dy.dtype, False)[0])
        with np.errstate(all="ignore"):
            expected = np.where(keep, (dy.astype(ctype) * scale).astype(dy.dtype),
                                dy.dtype.type(0))
        assert_same_bits(dx, expected)


# ---------------------------------------------------------------------------------------------
# The refinement draw (h == T_hi), forced
# ---------------------------------------------------------------------------------------------

def randomgen_words(seed: int, counter: int, nblocks: int) -> np.ndarray:
    """Independent oracle: the Philox4x32-10 words of blocks counter, counter + 1, ..."""
    gen = Philox(key=seed, counter=(counter - 1) % 2**128, number=4, width=32)
    return np.asarray(gen.random_raw(4 * nblocks), dtype=np.uint64) & 0xFFFFFFFF


def check_forced_refinement(seed, subsequence, position, size, j, t_lo, dtype):
    """Runs calls whose decision j needs the refinement draw g_d (T_hi is set to that
    decision's byte) and checks them against randomgen and the reference.  Besides the given
    T_lo, T_lo = g_d and g_d + 1 are tried: decision j must flip from drop to keep exactly
    there, which pins g_d down to its exact value."""
    nblocks = -(-size // 16)
    words = randomgen_words(seed, position + 2**64 * subsequence, nblocks)
    np.testing.assert_array_equal(reference.philox_words(seed, subsequence, position, nblocks),
                                  words)
    h = np.stack([(words >> (8 * k)) & 0xFF for k in range(4)], axis=1).reshape(-1)[:size]
    t_hi = int(h[j])

    # g_d from randomgen: the low 24 bits of word d % 4 of block d // 4 of subsequence + 2**63.
    d = 16 * position + j
    refinement_block = (d // 4 + 2**64 * (subsequence + 2**63)) % 2**128
    g = int(randomgen_words(seed, refinement_block, 1)[d % 4]) & 0xFFFFFF
    assert g == reference.refinement_draw(seed, subsequence, d)

    x = np.arange(1, size + 1).astype(dtype)
    for low in sorted({t_lo, g, min(g + 1, 0xFFFFFF)}):
        threshold = (t_hi << 24) | low
        if threshold == 0:
            continue
        keep_prob = threshold / 2**32
        assert threshold_for(keep_prob) == threshold
        streams = [stream_at(seed, subsequence, position) for _ in range(2)]
        y_f, mask_f = fastdrop.dropout(x, keep_prob, stream=streams[0], store="bits")
        y_r, mask_r = reference.dropout(x, keep_prob, stream=streams[1], store="bits")
        assert_same_bits(y_f, y_r)
        assert_same_mask(mask_f, mask_r)
        assert bool(mask_f.to_bool()[j]) == (g < low)
        assert (y_f[j] != 0) == (g < low)
        dx = fastdrop.dropout_backward(np.ones(size, dtype=dtype), without_bits(mask_f))
        assert (dx[j] != 0) == (g < low)


@given(seed=seeds, subsequence=subsequences,
       position=st.one_of(positions, st.integers(2**63, 2**64 - 64)),
       size=st.integers(1, 200), pick=st.integers(0, 199), t_lo=st.integers(0, 0xFFFFFF),
       dtype=st.sampled_from(DTYPES))
def test_refinement_draws_match_reference(seed, subsequence, position, size, pick, t_lo, dtype):
    """keep_prob chosen so that T_hi equals a drawn byte: that decision needs the refinement
    draw g_d, checked against randomgen (a wrong refinement subsequence, d or word breaks it)."""
    check_forced_refinement(seed, subsequence, position, size, pick % size, t_lo, dtype)


@pytest.mark.parametrize("position,j", [
    (2**62 - 1, 16), (2**62 - 1, 31), (2**62 - 2, 47), (2**62, 0), (2**63 - 1, 20),
    (2**63, 5), (2**64 - 3, 40), (2**64 - 1, 4), (2**64 - 1, 0), (2**64 - 1, 15),
])
@pytest.mark.parametrize("subsequence", [0, 5, 2**63 - 1])
def test_refinement_draw_counter_carries(position, j, subsequence):
    """Where d // 4 = 4 * start + j // 4 passes a multiple of 2**64, the refinement counter
    carries into its high words (and wraps at 2**128 for the last subsequence)."""
    size = 16 * (2**64 - position) if position > 2**64 - 4 else 48
    check_forced_refinement(2**40 + 7, subsequence, position, min(size, 48), j, 1,
                            np.dtype(np.float32))


# ---------------------------------------------------------------------------------------------
# Larger fixed cases: the multithreaded path (>= 65536 elements) and natural refinement draws
# ---------------------------------------------------------------------------------------------

def big_array(shape, dtype, layout, seed=0):
    rng = np.random.default_rng(seed)
    vals = rng.standard_normal(shape).astype(dtype)
    if layout == "c":
        return vals
    if layout == "fortran":
        return np.asfortranarray(vals)
    if layout == "reversed_strided":
        buf = np.zeros(tuple(2 * n for n in shape), dtype=dtype)
        view = buf[tuple(slice(None, None, -2) for _ in shape)]
        view[...] = vals
        return view
    raise AssertionError(layout)


BIG_CASES = [
    # (shape, shared_axes, layout, dtype, mode, store, threads)
    ((300_000,), None, "c", np.float32, "inverted", "seed", 1),
    ((300_000,), None, "c", np.float64, "classic", "bits", 2),
    ((600, 500), None, "fortran", np.float32, "inverted", "bits", 3),
    ((600, 500), 0, "reversed_strided", np.float64, "inverted", "seed", 4),
    ((600, 500), (0,), "c", np.float32, "classic", "seed", 2),
    ((8, 16, 48, 50), (2, 3), "c", np.float32, "inverted", "bits", 4),
    ((8, 16, 48, 50), (-1, -2), "fortran", np.float64, "classic", "seed", 3),
    ((8, 16, 48, 50), (0, 2), "reversed_strided", np.float32, "inverted", "seed", 2),
    ((30, 100, 100), (1,), "c", np.float64, "inverted", "bits", 1),
    ((3, 65536 + 13), None, "reversed_strided", np.float32, "classic", "bits", 4),
]


@pytest.mark.parametrize("shape,shared_axes,layout,dtype,mode,store,threads", BIG_CASES)
def test_large_arrays_match_reference(shape, shared_axes, layout, dtype, mode, store, threads,
                                      restore_threads):
    """Arrays past the parallel threshold, channel (N,C,H,W axes (2,3)) and batch-shared
    ((N,D) axis 0) dropout, on several threads: same bits as the reference, forward and back."""
    fastdrop.set_num_threads(threads)
    keep_prob = 0.8
    x = big_array(shape, dtype, layout)
    streams = [stream_at(2024, 3, 77) for _ in range(2)]
    y_f, mask_f = fastdrop.dropout(x, keep_prob, mode=mode, shared_axes=shared_axes,
                                   stream=streams[0], store=store)
    y_r, mask_r = reference.dropout(x, keep_prob, mode=mode, shared_axes=shared_axes,
                                    stream=streams[1], store=store)
    assert_same_bits(y_f, y_r)
    assert_same_mask(mask_f, mask_r)
    assert streams[0].position == streams[1].position == 77 + -(-mask_f.size // 16)

    dy = big_array(shape, np.float64 if dtype == np.float32 else np.float32, "c", seed=1)
    dx_f = fastdrop.dropout_backward(dy, mask_f)
    dx_r = reference.dropout_backward(dy, mask_r)
    assert_same_bits(dx_f, dx_r)
    dx_regen = fastdrop.dropout_backward(dy.copy(), without_bits(mask_f), out=None)
    assert_same_bits(dx_f, dx_regen)
    fastdrop.dropout_backward(dy, mask_f, out=dy)  # in place
    assert_same_bits(dy, dx_r)


@pytest.mark.parametrize("keep_prob", [0.8, 0.5, 1 - 2**-20])
def test_large_array_exercises_refinement(keep_prob, restore_threads):
    """3*10**5 decisions include about a thousand bytes equal to T_hi; their decisions (made by
    the refinement draw) agree with the reference, on 1 and 4 threads, in place."""
    seed, n = 12345, 300_000
    threshold = threshold_for(keep_prob)
    ties = np.flatnonzero(reference.decision_bytes(seed, 0, 0, n) == threshold >> 24)
    assert ties.size > n / 512, "pick another seed: few refinement draws in this call"
    x = np.random.default_rng(5).standard_normal(n).astype(np.float32)
    y_r, mask_r = reference.dropout(x, keep_prob, seed=seed)
    expected_ties = reference.refinement_draws(seed, 0, ties) < (threshold & 0xFFFFFF)
    np.testing.assert_array_equal(mask_r.to_bool()[ties], expected_ties)
    for threads in (1, 4):
        fastdrop.set_num_threads(threads)
        x_in_place = x.copy()
        y_f, mask_f = fastdrop.dropout(x_in_place, keep_prob, seed=seed, out=x_in_place)
        assert_same_bits(y_f, y_r)
        assert_same_mask(mask_f, mask_r)
