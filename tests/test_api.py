"""The public surface: streams, masks, the layer, evaluation, special values, threads."""
from __future__ import annotations

import copy
import math
import os
import pickle
import subprocess
import sys
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import fastdrop
from fastdrop import reference
from fastdrop._core import threshold_for
from fastdrop._stream import scale_for

DTYPES = [np.float32, np.float64]


def as_uint(a):
    a = np.asarray(a)
    return a.view(np.dtype(f"u{a.dtype.itemsize}"))


def blocks(n):
    return math.ceil(n / 16)


# ---------------------------------------------------------------------------------------------
# Streams
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("shape,shared_axes,decisions", [
    ((), None, 1), ((1,), None, 1), ((7,), None, 7), ((8,), None, 8), ((9,), None, 9),
    ((3, 17), None, 51), ((1000,), None, 1000), ((0, 5), None, 0), ((0, 5), 0, 5),
    ((4, 6, 10), (0, 2), 6), ((4, 6, 10), (0, 1, 2), 1), ((5, 0), 1, 5),
])
def test_stream_advances_by_blocks_of_decisions(shape, shared_axes, decisions):
    """A training call moves its stream by ceil(mask size / 16) blocks (one per 16 decisions),
    from the position recorded as mask.start, for any q including 1."""
    s = fastdrop.Stream(seed=3, subsequence=4)
    s.reserve(10)
    for q in (0.5, 1.0):
        before = s.position
        _, mask = fastdrop.dropout(np.ones(shape), q, shared_axes=shared_axes, stream=s)
        assert mask.start == before and (mask.seed, mask.subsequence) == (3, 4)
        assert mask.size == decisions
        assert s.position == before + blocks(decisions)


def test_evaluation_does_not_advance(restore_default_stream):
    """training=False draws nothing: neither the given stream nor the default stream moves."""
    s = fastdrop.Stream(1)
    default_before = fastdrop.default_stream().position
    for mode in ("inverted", "classic"):
        fastdrop.dropout(np.ones(100), 0.5, training=False, mode=mode, stream=s)
        fastdrop.dropout(np.ones(100), 0.5, training=np.bool_(False), mode=mode)
    assert s.position == 0
    assert fastdrop.default_stream().position == default_before


def test_default_stream_is_used_and_advanced(restore_default_stream):
    """A call with neither seed nor stream draws from the default stream and moves it."""
    fastdrop.manual_seed(17)
    _, mask = fastdrop.dropout(np.ones(20), 0.5)
    assert (mask.seed, mask.subsequence, mask.start) == (17, 0, 0)
    assert fastdrop.default_stream().position == 2
    assert fastdrop.default_stream() is fastdrop.default_stream()


def test_seed_calls_are_stateless(restore_default_stream):
    """seed= always starts at block 0: same seed and shape give the same mask and output,
    whatever happened before, and no stream moves; another seed gives another mask."""
    x = np.random.default_rng(0).standard_normal((30, 40))
    default_before = fastdrop.default_stream().position
    y1, m1 = fastdrop.dropout(x, 0.5, seed=77)
    fastdrop.dropout(x, 0.5)  # moving the default stream changes nothing for seed= calls
    y2, m2 = fastdrop.dropout(x.astype(np.float32), 0.5, seed=77)
    assert m1 == m2 and m1.start == 0 and m1.seed == 77 and m1.subsequence == 0
    np.testing.assert_array_equal(y1 != 0, y2 != 0)
    assert fastdrop.default_stream().position == default_before + blocks(1200)
    _, m3 = fastdrop.dropout(x, 0.5, seed=78)
    assert not np.array_equal(m1.to_bool(), m3.to_bool())


def test_stream_calls_give_fresh_masks():
    """Consecutive calls on one stream use consecutive blocks, so their masks differ, and they
    equal stateless calls at the same start only for the first."""
    s = fastdrop.Stream(seed=77)
    x = np.ones((30, 40))
    _, m1 = fastdrop.dropout(x, 0.5, stream=s)
    _, m2 = fastdrop.dropout(x, 0.5, stream=s)
    assert (m1.start, m2.start) == (0, 75)
    assert not np.array_equal(m1.to_bool(), m2.to_bool())
    np.testing.assert_array_equal(m1.to_bool(), fastdrop.dropout(x, 0.5, seed=77)[1].to_bool())


def test_subsequences_are_independent_streams():
    """Different subsequences under one seed give different masks."""
    x = np.ones(500)
    a = fastdrop.dropout(x, 0.5, stream=fastdrop.Stream(9, 0))[1].to_bool()
    b = fastdrop.dropout(x, 0.5, stream=fastdrop.Stream(9, 1))[1].to_bool()
    assert not np.array_equal(a, b)


def test_manual_seed_makes_default_stream_reproducible(restore_default_stream):
    """manual_seed(s) restarts the default stream at block 0 of s: the same calls repeat."""
    x = np.random.default_rng(0).standard_normal((10, 10))
    runs = []
    for _ in range(2):
        fastdrop.manual_seed(2024)
        assert (fastdrop.default_stream().seed, fastdrop.default_stream().position) == (2024, 0)
        runs.append([fastdrop.dropout(x, 0.6)[0] for _ in range(3)])
    for a, b in zip(*runs):
        np.testing.assert_array_equal(as_uint(a), as_uint(b))
    assert not np.array_equal(runs[0][0], runs[0][1])


def test_stream_seed_none_draws_entropy():
    """Stream() without a seed gets a random 64-bit seed (two streams differ)."""
    a, b = fastdrop.Stream(), fastdrop.Stream()
    assert 0 <= a.seed < 2**64 and a.seed != b.seed and a.position == 0


@pytest.mark.parametrize("clone", [
    lambda s: pickle.loads(pickle.dumps(s)),
    copy.copy,
    copy.deepcopy,
], ids=["pickle", "copy", "deepcopy"])
def test_stream_pickles_and_copies_position(clone):
    """A pickled or copied stream keeps seed, subsequence and position and continues with the
    same masks as the original, independently of it."""
    s = fastdrop.Stream(seed=5, subsequence=6)
    fastdrop.dropout(np.ones(100), 0.5, stream=s)
    twin = clone(s)
    assert twin is not s
    assert (twin.seed, twin.subsequence, twin.position) == (5, 6, 7)
    m_original = fastdrop.dropout(np.ones(50), 0.5, stream=s)[1]
    m_twin = fastdrop.dropout(np.ones(50), 0.5, stream=twin)[1]
    assert m_original == m_twin
    assert s.position == twin.position == 7 + 4
    twin.reserve(1)
    assert s.position == 11  # they do not share state


def test_stream_spawn_is_reproducible(restore_default_stream):
    """spawn() draws a child seed from the parent's next block: the same children after the
    same manual_seed, different children in a row, and the parent moves one block."""
    def children():
        fastdrop.manual_seed(123)
        parent = fastdrop.default_stream()
        kids = [parent.spawn(), parent.spawn(subsequence=7)]
        assert parent.position == 2
        return kids

    first, second = children(), children()
    assert [(k.seed, k.subsequence, k.position) for k in first] == \
        [(k.seed, k.subsequence, k.position) for k in second]
    assert first[0].seed != first[1].seed
    assert (first[0].subsequence, first[1].subsequence) == (0, 7)
    words = reference.philox_words(123, 0, 0, 1)
    assert first[0].seed == int(words[0]) | int(words[1]) << 32


def test_compiled_classes_have_signatures():
    """Stream and DropoutMask are compiled classes; inspect (and so help() and IDEs) still sees
    their constructors' signatures, and their docstrings start with the summary."""
    import inspect

    assert str(inspect.signature(fastdrop.Stream)) == "(seed=None, subsequence=0)"
    assert list(inspect.signature(fastdrop.DropoutMask).parameters) == [
        "shape", "shared_axes", "keep_prob", "mode", "training", "seed", "subsequence", "start",
        "bits"]
    assert fastdrop.Stream.__doc__.startswith("A position in a Philox4x32-10 random stream")
    assert fastdrop.DropoutMask.__doc__.startswith("The record of one dropout call")


def test_reserve_returns_start_and_moves():
    """reserve(k) returns the old position and moves by k."""
    s = fastdrop.Stream(0)
    assert s.reserve(5) == 0 and s.reserve(0) == 5 and s.reserve(2) == 5 and s.position == 7


# ---------------------------------------------------------------------------------------------
# DropoutMask
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("store", ["seed", "bits"])
@pytest.mark.parametrize("training", [True, False])
def test_mask_pickles(store, training):
    """A mask survives pickling: equal, same bits, and backward from the copy equals backward
    from the original."""
    x = np.random.default_rng(0).standard_normal((6, 9)).astype(np.float32)
    _, mask = fastdrop.dropout(x, 0.55, mode="classic", shared_axes=1, seed=2**63 + 5,
                               store=store, training=training)
    clone = pickle.loads(pickle.dumps(mask))
    assert clone == mask and clone is not mask
    assert (clone.shape, clone.mask_shape, clone.keep_prob, clone.mode, clone.training,
            clone.seed, clone.subsequence, clone.start) == \
        ((6, 9), (6, 1), 0.55, "classic", training, mask.seed, mask.subsequence, mask.start)
    if store == "bits" and training:
        assert clone.bits is not mask.bits
        np.testing.assert_array_equal(clone.bits, mask.bits)
    dy = np.random.default_rng(1).standard_normal(x.shape).astype(np.float32)
    np.testing.assert_array_equal(fastdrop.dropout_backward(dy, clone),
                                  fastdrop.dropout_backward(dy, mask))
    np.testing.assert_array_equal(clone.to_bool(), mask.to_bool())


def test_mask_attributes():
    """A training mask records the call: shapes, q, mode, stream coordinates."""
    s = fastdrop.Stream(seed=9, subsequence=2)
    s.reserve(4)
    _, mask = fastdrop.dropout(np.ones((2, 3, 5)), 0.25, mode="classic", shared_axes=(-1, 0),
                               stream=s)
    assert (mask.shape, mask.mask_shape) == ((2, 3, 5), (1, 3, 1))
    assert (mask.keep_prob, mask.mode, mask.training) == (0.25, "classic", True)
    assert (mask.seed, mask.subsequence, mask.start, mask.bits) == (9, 2, 4, None)
    assert mask.to_bool().shape == (1, 3, 1) and mask.to_bool().dtype == bool


def test_masks_compare_by_content():
    """== compares every field: different seed, q, start or bits make masks unequal."""
    x = np.ones(40)
    base = fastdrop.dropout(x, 0.5, seed=1)[1]
    assert base == fastdrop.dropout(x, 0.5, seed=1)[1]
    assert base != fastdrop.dropout(x, 0.5, seed=2)[1]
    assert base != fastdrop.dropout(x, 0.6, seed=1)[1]
    assert base != fastdrop.dropout(x, 0.5, seed=1, mode="classic")[1]
    assert base != fastdrop.dropout(x, 0.5, seed=1, store="bits")[1]
    assert base != "not a mask"


def test_seed_mask_is_constant_size():
    """store="seed" keeps no per-element data: bits is None and the pickle stays under 1 KB
    for 10**6 elements."""
    x = np.zeros(10**6, dtype=np.float32)
    _, mask = fastdrop.dropout(x, 0.9, seed=1, out=x)
    assert mask.bits is None
    assert len(pickle.dumps(mask)) < 1024


@pytest.mark.parametrize("shape,shared_axes", [((10**6,), None), ((37, 11), None),
                                                ((8, 16, 5, 5), (2, 3)), ((3,), None)])
def test_bits_mask_is_packed_decisions(shape, shared_axes):
    """store="bits" holds ceil(n/8) bytes equal to packbits(to_bool, little) of the mask
    shape, and they match the regenerated decisions."""
    _, mask = fastdrop.dropout(np.zeros(shape, np.float32), 0.5, seed=3, shared_axes=shared_axes,
                               store="bits")
    n = mask.size
    assert mask.bits.dtype == np.uint8 and mask.bits.nbytes == math.ceil(n / 8)
    decided = mask.to_bool()
    assert decided.shape == mask.mask_shape
    np.testing.assert_array_equal(mask.bits, np.packbits(decided.ravel(), bitorder="little"))
    regenerated = copy.copy(mask)
    regenerated.bits = None
    np.testing.assert_array_equal(regenerated.to_bool(), decided)


def test_keep_fraction_matches_keep_prob():
    """Over 10**6 decisions the kept fraction is within 5 sigma of q (a wrong threshold or
    comparison shifts it)."""
    n = 10**6
    for q in (0.1, 0.5, 0.9):
        _, mask = fastdrop.dropout(np.zeros(n, np.float32), q, seed=7)
        kept = mask.to_bool().mean()
        assert abs(kept - q) < 5 * math.sqrt(q * (1 - q) / n)


# ---------------------------------------------------------------------------------------------
# Forward semantics
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("mode", ["inverted", "classic"])
@pytest.mark.parametrize("q", [0.5, 0.8, 0.3, 1 - 2**-20, 2**-20])
def test_kept_values_are_x_times_scale(dtype, mode, q):
    """Kept values are x * scale with the scale rounded once to the dtype; dropped ones +0.0."""
    x = np.random.default_rng(0).standard_normal(4000).astype(dtype)
    y, mask = fastdrop.dropout(x, q, mode=mode, seed=11)
    keep = mask.to_bool()
    scale = dtype(scale_for(q, mode, np.dtype(dtype)))
    np.testing.assert_array_equal(as_uint(y[keep]), as_uint(x[keep] * scale))
    assert np.all(as_uint(y[~keep]) == 0)


@given(q=st.floats(2**-32, 1.0, exclude_min=True), dtype=st.sampled_from(DTYPES))
def test_scale_is_correctly_rounded(q, dtype):
    """scale_for(q) is the dtype value nearest 1/q (ties to even), and the threshold is
    floor(q * 2**32)."""
    dtype = np.dtype(dtype)
    s = scale_for(q, "inverted", dtype)
    assert dtype.type(s) == s
    exact = 1 / Fraction(q)
    err = abs(Fraction(s) - exact)
    for neighbour in (np.nextafter(dtype.type(s), dtype.type(0)),
                      np.nextafter(dtype.type(s), dtype.type(np.inf))):
        assert err <= abs(Fraction(float(neighbour)) - exact)
    assert scale_for(q, "classic", dtype) == 1.0
    assert threshold_for(q) == math.floor(Fraction(q) * 2**32)


@pytest.mark.parametrize("dtype", DTYPES)
def test_inverted_evaluation_is_identity(dtype):
    """Inverted evaluation returns x itself (no copy) or a copy into out=."""
    x = np.random.default_rng(0).standard_normal((5, 6)).astype(dtype)
    y, mask = fastdrop.dropout(x, 0.4, training=False)
    assert y is x
    assert not mask.training and mask.to_bool().all() and mask.to_bool().shape == (5, 6)
    out = np.full_like(x, np.nan)
    y, _ = fastdrop.dropout(x, 0.4, training=False, out=out)
    assert y is out
    np.testing.assert_array_equal(out, x)


@pytest.mark.parametrize("dtype", DTYPES)
def test_classic_evaluation_scales_by_keep_prob(dtype):
    """Classic evaluation returns keep_prob * x rounded in the dtype (a new array), in place
    too."""
    x = np.random.default_rng(0).standard_normal((5, 6)).astype(dtype)
    expected = x * dtype(0.4)
    y, _ = fastdrop.dropout(x, 0.4, training=False, mode="classic")
    assert y is not x and y.dtype == dtype
    np.testing.assert_array_equal(y, expected)
    y, _ = fastdrop.dropout(x, 0.4, training=False, mode="classic", out=x)
    assert y is x
    np.testing.assert_array_equal(x, expected)


@pytest.mark.parametrize("mode", ["inverted", "classic"])
def test_keep_prob_one_is_identity_but_advances(mode):
    """keep_prob = 1 in training returns x itself (or a copy into out=) and still advances the
    stream, so other layers' masks do not shift when one layer's q changes."""
    s = fastdrop.Stream(4)
    x = np.random.default_rng(0).standard_normal(20)
    y, mask = fastdrop.dropout(x, 1.0, mode=mode, stream=s)
    assert y is x and s.position == 2 and mask.to_bool().all()
    out = np.zeros_like(x)
    y, _ = fastdrop.dropout(x, 1.0, mode=mode, stream=s, out=out)
    assert y is out and s.position == 4
    np.testing.assert_array_equal(out, x)


def test_x_is_not_modified_out_of_place():
    """An out-of-place call leaves x as it was (also with NaN and a strided view)."""
    buf = np.random.default_rng(0).standard_normal((20, 30))
    buf[::3, ::4] = np.nan
    x = buf[::-2, 1::3]
    before = buf.copy()
    y, _ = fastdrop.dropout(x, 0.5, seed=1)
    assert not np.shares_memory(y, buf)
    np.testing.assert_array_equal(as_uint(buf), as_uint(before))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf, -np.nan])
def test_dropped_non_finite_becomes_positive_zero(dtype, value):
    """Dropping is a select, not a multiply: a dropped NaN/Inf is exactly +0.0 (sign bit
    clear), a kept NaN stays NaN and a kept Inf stays Inf of the same sign."""
    x = np.full(2000, value, dtype=dtype)
    for mode in ("inverted", "classic"):
        y, mask = fastdrop.dropout(x, 0.5, mode=mode, seed=3)
        keep = mask.to_bool()
        assert 0 < keep.sum() < keep.size
        assert np.all(as_uint(y[~keep]) == 0)
        if np.isnan(value):
            assert np.all(np.isnan(y[keep]))
        else:
            assert np.all(y[keep] == value)
        dx = fastdrop.dropout_backward(x, mask)
        assert np.all(as_uint(dx[~keep]) == 0)


@pytest.mark.parametrize("dtype", DTYPES)
def test_kept_negative_zero_stays_negative(dtype):
    """A kept -0.0 stays -0.0 (sign bit set); a dropped one becomes +0.0."""
    x = np.full(1000, -0.0, dtype=dtype)
    y, mask = fastdrop.dropout(x, 0.5, seed=4)
    keep = mask.to_bool()
    sign = np.signbit(y)
    np.testing.assert_array_equal(sign, keep)
    assert np.all(y == 0)


# ---------------------------------------------------------------------------------------------
# The Dropout layer
# ---------------------------------------------------------------------------------------------

def test_layer_train_eval():
    """A layer drops in training and is the identity in evaluation; train()/eval() return the
    layer and switch back and forth."""
    x = np.random.default_rng(0).standard_normal((8, 10))
    layer = fastdrop.Dropout(0.5, seed=1)
    assert layer.training and layer.eval() is layer and not layer.training
    position = layer.stream.position
    assert layer(x) is x and layer.forward(x) is x
    assert layer.stream.position == position
    np.testing.assert_array_equal(layer.backward(np.ones_like(x)), np.ones_like(x))
    assert layer.train() is layer and layer.training
    y = layer(x)
    assert (y == 0).any() and layer.stream.position == position + 5
    assert layer.mask.training and layer.mask.start == position


def test_classic_layer_evaluation_scales():
    """A classic layer in evaluation returns keep_prob * x."""
    x = np.random.default_rng(0).standard_normal((4, 4))
    layer = fastdrop.Dropout(0.25, mode="classic", seed=0).eval()
    np.testing.assert_array_equal(layer(x), x * 0.25)


def test_layer_backward_before_forward():
    """backward without a forward has no mask to use: RuntimeError."""
    with pytest.raises(RuntimeError, match="forward"):
        fastdrop.Dropout(0.5, seed=0).backward(np.ones(3))


def test_layer_with_seed_is_reproducible():
    """Two layers with the same seed (and subsequence) give the same sequence of outputs;
    another subsequence gives another."""
    x = np.random.default_rng(0).standard_normal((16, 16)).astype(np.float32)
    a, b = fastdrop.Dropout(0.7, seed=5), fastdrop.Dropout(0.7, seed=5)
    c = fastdrop.Dropout(0.7, seed=5, subsequence=1)
    for _ in range(3):
        ya, yb, yc = a(x), b(x), c(x)
        np.testing.assert_array_equal(as_uint(ya), as_uint(yb))
        assert not np.array_equal(ya, yc)
    assert a.stream.position == 3 * 16 and a.mask == b.mask


def test_layer_out_and_store():
    """The layer forwards out= and store=: an in-place forward with stored bits."""
    x = np.random.default_rng(0).standard_normal((4, 9))
    expected = fastdrop.Dropout(0.5, seed=8)(x)
    layer = fastdrop.Dropout(0.5, seed=8, store="bits")
    y = layer(x, out=x)
    assert y is x and layer.mask.bits is not None
    np.testing.assert_array_equal(x, expected)
    dx = np.ones_like(x)
    assert layer.backward(dx, out=dx) is dx
    np.testing.assert_array_equal(dx, (expected != 0) * 2.0)


def test_layers_after_manual_seed(restore_default_stream):
    """Layers built without a seed spawn from the default stream: after manual_seed(0) two
    layers have different streams, and the same two again after another manual_seed(0)."""
    def build():
        fastdrop.manual_seed(0)
        return fastdrop.Dropout(0.5), fastdrop.Dropout(0.5)

    first, second = build(), build()
    assert first[0].stream.seed != first[1].stream.seed
    assert [l.stream.seed for l in first] == [l.stream.seed for l in second]
    x = np.ones((6, 6))
    for a, b in zip(first, second):
        np.testing.assert_array_equal(a(x), b(x))


def test_layer_repr_mentions_settings():
    """The layer's repr shows keep_prob and mode (for debugging networks)."""
    text = repr(fastdrop.Dropout(0.3, mode="classic", seed=1))
    assert "0.3" in text and "classic" in text


# ---------------------------------------------------------------------------------------------
# Threads
# ---------------------------------------------------------------------------------------------

def test_num_threads_round_trip(restore_threads):
    """set_num_threads(n) is what get_num_threads() returns, for numpy ints too."""
    for n in (1, 3, 2, np.int64(4)):
        fastdrop.set_num_threads(n)
        assert fastdrop.get_num_threads() == n
        assert type(fastdrop.get_num_threads()) is int


@pytest.mark.parametrize("shape,shared_axes", [((400, 500), None), ((8, 16, 40, 40), (2, 3)),
                                               ((300, 700), 0)])
def test_results_identical_across_thread_counts(shape, shared_axes, restore_threads):
    """Bit-identical output, stored bits and backward for 1..4 threads on arrays past the
    parallel threshold (SPEC §3)."""
    x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    dy = np.random.default_rng(1).standard_normal(shape)
    results = []
    for n in (1, 2, 3, 4):
        fastdrop.set_num_threads(n)
        y, mask = fastdrop.dropout(x, 0.8, shared_axes=shared_axes, seed=6, store="bits")
        regenerated = copy.copy(mask)
        regenerated.bits = None
        results.append((y, mask, fastdrop.dropout_backward(dy, regenerated)))
    for y, mask, dx in results[1:]:
        np.testing.assert_array_equal(as_uint(y), as_uint(results[0][0]))
        assert mask == results[0][1]
        np.testing.assert_array_equal(as_uint(dx), as_uint(results[0][2]))


def run_python(code, env_value, tmp_path):
    """Runs code in a fresh interpreter importing the same fastdrop, with the variable set."""
    env = dict(os.environ)
    package_parent = os.path.dirname(os.path.dirname(os.path.abspath(fastdrop.__file__)))
    env["PYTHONPATH"] = os.pathsep.join(p for p in (package_parent, env.get("PYTHONPATH")) if p)
    env.pop("FASTDROP_NUM_THREADS", None)
    if env_value is not None:
        env["FASTDROP_NUM_THREADS"] = env_value
    return subprocess.run([sys.executable, "-W", "always", "-c", code], env=env, cwd=tmp_path,
                          capture_output=True, text=True, timeout=60)


def test_environment_variable_sets_threads(tmp_path):
    """FASTDROP_NUM_THREADS=3 sets the thread count at import."""
    code = "import fastdrop; print(fastdrop.get_num_threads(), fastdrop.__file__)"
    done = run_python(code, "3", tmp_path)
    assert done.returncode == 0, done.stderr
    count, path = done.stdout.split()
    assert int(count) == 3
    assert os.path.samefile(path, fastdrop.__file__)


def test_environment_variable_invalid_is_ignored_with_warning(tmp_path):
    """An invalid FASTDROP_NUM_THREADS warns and keeps the default instead of failing import."""
    code = "import fastdrop; print(fastdrop.get_num_threads())"
    default = run_python(code, None, tmp_path)
    bad = run_python(code, "zero", tmp_path)
    assert default.returncode == 0 and bad.returncode == 0, bad.stderr
    assert bad.stdout == default.stdout
    assert "FASTDROP_NUM_THREADS" in bad.stderr
