"""The keep/drop decisions of SPEC §3, checked against an independent oracle.

The oracle below is written from the spec alone, on randomgen's Philox words (not on
fastdrop.reference): decision j of a call at stream block `start` reads half j % 8 (low(x0),
high(x0), low(x1), ...) of block start + j // 8; it keeps iff h < T >> 16, or h == T >> 16 and
g < T & 0xffff, where g is the low 16 bits of word d % 4 of block d // 4 of subsequence
2**63 + subsequence, d = 8 * start + j, and T = floor(q * 2**32).  The C path (fastdrop.dropout,
mask.to_bool(), stored bits) and fastdrop.reference must both agree with it exactly.
"""
from fractions import Fraction
from functools import lru_cache

import numpy as np
import pytest
import randomgen

import fastdrop
from fastdrop import reference

# Every SIMD path the machine supports must reproduce these results bit for bit.
pytestmark = pytest.mark.usefixtures("every_simd_path")


# ---------------------------------------------------------------------------------------------
# The oracle
# ---------------------------------------------------------------------------------------------

def randomgen_words(seed: int, subsequence: int, first_block: int, nblocks: int) -> np.ndarray:
    """Words of blocks first_block, ... of counter first_block + 2**64 * subsequence (mod 2**128)."""
    counter = (first_block + 2**64 * subsequence) % 2**128
    gen = randomgen.Philox(key=seed, counter=(counter - 1) % 2**128, number=4, width=32)
    return gen.random_raw(4 * nblocks).astype(np.uint32)


def threshold(keep_prob: float) -> int:
    """T = floor(q * 2**32), computed exactly."""
    return int(Fraction(keep_prob) * 2**32)


def oracle_halves(seed: int, subsequence: int, start: int, size: int) -> np.ndarray:
    """h_0 .. h_{size-1} of a call at block `start`."""
    nblocks = -(-size // 8)
    words = randomgen_words(seed, subsequence, start, nblocks)
    halves = np.empty(2 * words.size, dtype=np.uint32)
    halves[0::2] = words & 0xFFFF
    halves[1::2] = words >> 16
    return halves[:size]


def oracle_g(seed: int, subsequence: int, start: int, j: int) -> int:
    """The refinement draw g_d, d = 8 * start + j."""
    d = 8 * start + j
    return int(randomgen_words(seed, 2**63 + subsequence, d // 4, 1)[d % 4]) & 0xFFFF


def oracle_decisions(seed: int, subsequence: int, start: int, size: int,
                     keep_prob: float) -> np.ndarray:
    """The flat boolean decisions of SPEC §3, slowly and from randomgen words."""
    if keep_prob == 1.0:
        return np.ones(size, dtype=bool)
    t = threshold(keep_prob)
    t_hi, t_lo = t >> 16, t & 0xFFFF
    h = oracle_halves(seed, subsequence, start, size)
    keep = h < t_hi
    for j in np.flatnonzero(h == t_hi):
        keep[j] = oracle_g(seed, subsequence, start, int(j)) < t_lo
    return keep


@lru_cache(maxsize=None)
def _cached_oracle(seed, subsequence, start, size, keep_prob):
    out = oracle_decisions(seed, subsequence, start, size, keep_prob)
    out.flags.writeable = False
    return out


def kept(y: np.ndarray) -> np.ndarray:
    """Which elements survived, for an input with no zeros."""
    return y != 0


@pytest.fixture
def restore_threads():
    old = fastdrop.get_num_threads()
    yield
    fastdrop.set_num_threads(old)


def test_oracle_agrees_with_hand_computed_decisions():
    """Self-check of the oracle on block 0 of seed 0 (the first Random123 vector): half order,
    threshold split and refinement are those of the spec."""
    words = [0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8]
    halves = [w >> s & 0xFFFF for w in words for s in (0, 16)]
    np.testing.assert_array_equal(oracle_halves(0, 0, 0, 8), halves)
    # T_hi equal to h_1 = 0x6627 forces decision 1 through the refinement draw.
    g = oracle_g(0, 0, 0, 1)
    assert oracle_decisions(0, 0, 0, 8, ((0x6627 << 16) | (g + 1)) / 2**32)[1]
    assert not oracle_decisions(0, 0, 0, 8, ((0x6627 << 16) | g) / 2**32)[1]
    assert g == int(randomgen_words(0, 2**63, 0, 1)[1]) & 0xFFFF


# ---------------------------------------------------------------------------------------------
# Seeded and stream calls against the oracle
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("seed", [0, 1, 2**64 - 1, 0x0123456789ABCDEF])
@pytest.mark.parametrize("keep_prob", [0.5, 0.1, 0.9, 1 / 3, 0.999, 2**-10])
@pytest.mark.parametrize("shape", [(37,), (8, 125), (3, 5, 7, 11)])
def test_seeded_call_matches_oracle(seed, keep_prob, shape):
    """dropout(seed=s) reads block 0 of subsequence 0 in C order: the applied mask, to_bool() and
    the reference all equal the oracle."""
    size = int(np.prod(shape))
    expected = _cached_oracle(seed, 0, 0, size, keep_prob).reshape(shape)
    x = np.ones(shape, dtype=np.float32)
    y, mask = fastdrop.dropout(x, keep_prob, seed=seed)
    assert (mask.seed, mask.subsequence, mask.start) == (seed, 0, 0)
    np.testing.assert_array_equal(kept(y), expected)
    np.testing.assert_array_equal(mask.to_bool(), expected)
    np.testing.assert_array_equal(reference.decisions(seed, 0, 0, size, keep_prob),
                                  expected.reshape(-1))


@pytest.mark.parametrize("seed, subsequence", [(7, 0), (7, 1), (2**63 + 12345, 2**62 + 3),
                                               (2**64 - 1, 2**63 - 1)])
def test_successive_stream_calls_match_oracle(seed, subsequence):
    """Each call on a Stream reads the blocks after the previous call's (sizes not multiples of 8
    included), on the stream's subsequence."""
    stream = fastdrop.Stream(seed, subsequence)
    position = 0
    for size, q in [(13, 0.5), (1000, 0.3), (8, 0.75), (4099, 0.9), (1, 0.5), (77, 0.2)]:
        x = np.full(size, 3.0)
        y, mask = fastdrop.dropout(x, q, stream=stream)
        assert mask.start == position
        expected = oracle_decisions(seed, subsequence, position, size, q)
        np.testing.assert_array_equal(kept(y), expected)
        np.testing.assert_array_equal(mask.to_bool(), expected)
        np.testing.assert_array_equal(reference.decisions(seed, subsequence, position, size, q),
                                      expected)
        position += -(-size // 8)
        assert stream.position == position


@pytest.mark.parametrize("subsequence", [0, 5, 2**63 - 1])
@pytest.mark.parametrize("blocks_left", [1, 3, 1000])
def test_call_ending_at_last_block_of_stream(subsequence, blocks_left):
    """A call whose blocks end exactly at block 2**64 - 1 (reached through Stream.reserve) reads
    those blocks; its refinement counters pass 2**64 and carry into the high words."""
    seed = 0xFEEDFACE12345678
    stream = fastdrop.Stream(seed, subsequence)
    start = stream.reserve(2**64 - blocks_left)
    assert start == 0 and stream.position == 2**64 - blocks_left
    size = 8 * blocks_left - 3
    expected = oracle_decisions(seed, subsequence, 2**64 - blocks_left, size, 0.6)
    y, mask = fastdrop.dropout(np.ones(size), 0.6, stream=stream)
    assert mask.start == 2**64 - blocks_left and stream.position == 2**64
    np.testing.assert_array_equal(kept(y), expected)
    np.testing.assert_array_equal(mask.to_bool(), expected)
    np.testing.assert_array_equal(reference.mask_to_bool(mask), expected)
    with pytest.raises(OverflowError):
        fastdrop.dropout(np.ones(1), 0.6, stream=stream)
    assert stream.position == 2**64


def test_large_array_matches_oracle_and_kept_count():
    """A multithreaded-size call (2**18 + 5 decisions) equals the oracle everywhere, so its kept
    count is the oracle's count."""
    size = 2**18 + 5
    q = 0.37
    expected = _cached_oracle(99, 0, 0, size, q)
    y, mask = fastdrop.dropout(np.ones(size, dtype=np.float32), q, seed=99)
    assert np.count_nonzero(y) == np.count_nonzero(expected)
    np.testing.assert_array_equal(kept(y), expected)
    np.testing.assert_array_equal(reference.decisions(99, 0, 0, size, q), expected)


@pytest.mark.parametrize("shape, axes", [((6, 50, 4, 3), (2, 3)), ((20, 33), 0),
                                         ((5, 7, 9), (0, 2)), ((4, 4), (0, 1))])
def test_shared_axes_draw_decisions_of_the_mask_shape(shape, axes):
    """With shared axes, decision j is the C-order index into the mask shape (shared axes set to
    1), broadcast over the shared axes, and only ceil(prod(mask shape) / 8) blocks are used."""
    axes_t = (axes,) if isinstance(axes, int) else axes
    mask_shape = tuple(1 if k in axes_t else n for k, n in enumerate(shape))
    size = int(np.prod(mask_shape))
    stream = fastdrop.Stream(31337, 2)
    stream.reserve(12345)
    y, mask = fastdrop.dropout(np.ones(shape), 0.5, shared_axes=axes, stream=stream)
    expected = oracle_decisions(31337, 2, 12345, size, 0.5).reshape(mask_shape)
    assert mask.mask_shape == mask_shape
    np.testing.assert_array_equal(mask.to_bool(), expected)
    np.testing.assert_array_equal(kept(y), np.broadcast_to(expected, shape))
    assert stream.position == 12345 + -(-size // 8)


# ---------------------------------------------------------------------------------------------
# The refinement path: h == T_hi, decided by g
# ---------------------------------------------------------------------------------------------

def _refinement_site(seed, subsequence, start, size, first):
    """A position p >= first with h_p = v > 0 and g_p < 0xffff, its h halves and v, g."""
    h = oracle_halves(seed, subsequence, start, size)
    for p in range(first, size):
        v = int(h[p])
        if v == 0:
            continue
        g = oracle_g(seed, subsequence, start, p)
        if g < 0xFFFF:
            return p, h, v, g
    raise AssertionError("no usable position")  # pragma: no cover


REFINEMENT_CASES = [
    # (seed, subsequence, start, size, first position to try)
    pytest.param(12345, 0, 0, 2**20, 2**19 + 17, id="seeded-2**20"),
    pytest.param(2**63 + 7, 3, 1000003, 2**17, 70001, id="stream-offset"),
    pytest.param(99, 0, 2**63 + 5, 4096, 2049, id="start-2**63-doubling-overflows"),
    pytest.param(4242, 2**63 - 1, 2**64 - 2**12, 2**15, 20000, id="end-of-last-subsequence"),
]


@pytest.mark.parametrize("seed, subsequence, start, size, first", REFINEMENT_CASES)
def test_refinement_draw_decides_ties_in_c_path(seed, subsequence, start, size, first):
    """Choose T with T_hi == h_p: decision p keeps for T_lo = g_p + 1 and drops for T_lo = g_p, and
    between the two thresholds exactly the positions with (h, g) == (h_p, g_p) change.  A core
    that ignores g, reads the wrong refinement word/block/subsequence, or compares with <= fails.
    """
    p, h, v, g = _refinement_site(seed, subsequence, start, size, first)
    ties = np.flatnonzero(h == v)
    assert p in ties
    q_keep = ((v << 16) | (g + 1)) / 2**32
    q_drop = ((v << 16) | g) / 2**32
    results = {}
    for q in (q_keep, q_drop):
        if start == 0:
            x = np.ones(size, dtype=np.float32)
            y, mask = fastdrop.dropout(x, q, seed=seed)
        else:
            stream = fastdrop.Stream(seed, subsequence)
            stream.reserve(start)
            y, mask = fastdrop.dropout(np.ones(size, dtype=np.float32), q, stream=stream)
        assert mask.start == start
        results[q] = kept(y)
        np.testing.assert_array_equal(kept(y), oracle_decisions(seed, subsequence, start, size, q))
        np.testing.assert_array_equal(mask.to_bool(), kept(y))
    assert results[q_keep][p] and not results[q_drop][p]
    flipped = np.flatnonzero(results[q_keep] != results[q_drop])
    same_g = [j for j in ties if oracle_g(seed, subsequence, start, int(j)) == g]
    np.testing.assert_array_equal(flipped, same_g)


@pytest.mark.parametrize("seed, subsequence, start, size, first", REFINEMENT_CASES)
def test_refinement_draw_decides_ties_in_reference(seed, subsequence, start, size, first):
    """The same flip in fastdrop.reference, and its refinement_draw equals the oracle's g."""
    p, h, v, g = _refinement_site(seed, subsequence, start, size, first)
    assert reference.refinement_draw(seed, subsequence, 8 * start + p) == g
    window = slice(p - (p % 8), p - (p % 8) + 16)  # a short call starting at p's block
    block = start + p // 8
    for q, keep in [(((v << 16) | (g + 1)) / 2**32, True), (((v << 16) | g) / 2**32, False)]:
        ref = reference.decisions(seed, subsequence, block, 16, q)
        assert bool(ref[p % 8]) is keep
        np.testing.assert_array_equal(ref, oracle_decisions(seed, subsequence, block, 16, q))
        assert np.array_equal(h[window][: ref.size] < v, ref & (h[window] != v))


def test_refinement_uses_decision_index_d_not_position_in_call():
    """g depends on d = 8 * start + j: the same stream position reached by a call starting one
    block earlier gives the same decision (the mask depends on the absolute position only)."""
    seed, subsequence = 555, 9
    size = 2**16
    p, h, v, g = _refinement_site(seed, subsequence, 100, size, 8)
    q = ((v << 16) | (g + 1)) / 2**32
    whole = reference.decisions(seed, subsequence, 100, size, q)
    later = fastdrop.Stream(seed, subsequence)
    later.reserve(100 + p // 8)
    y, _ = fastdrop.dropout(np.ones(8), q, stream=later)
    np.testing.assert_array_equal(kept(y), whole[p - p % 8: p - p % 8 + 8])
    assert kept(y)[p % 8]


# ---------------------------------------------------------------------------------------------
# The keep rule and thresholds
# ---------------------------------------------------------------------------------------------

def _exhaustive_keep_count(t: int) -> int:
    """Number of (h, g) pairs, over all 2**32, that reference.keep_rule keeps."""
    rows = 4
    g = np.tile(np.arange(65536, dtype=np.uint32), rows)
    h_all = np.arange(65536, dtype=np.uint32)
    total = 0
    for i in range(0, 65536, rows):
        h = np.repeat(h_all[i:i + rows], 65536)
        total += int(np.count_nonzero(reference.keep_rule(h, g, t)))
    return total


@pytest.mark.parametrize("t", [0x9E3779B9, 0x00000001, 0xFFFFFFFF])
def test_keep_rule_keeps_exactly_t_of_all_2_32_pairs(t):
    """Over every (h, g) pair the rule keeps exactly T: the keep probability is T / 2**32, not
    T_hi / 2**16 or (T + 1) / 2**32."""
    assert _exhaustive_keep_count(t) == t


@pytest.mark.parametrize("t", [0x80000000, 0x12340000, 0x1234FFFF, 0xFFFF0001])
def test_keep_rule_count_per_h(t):
    """Per value of h, over all 65536 g: 65536 keeps below T_hi, T_lo at T_hi, none above."""
    g = np.arange(65536, dtype=np.uint32)
    t_hi, t_lo = t >> 16, t & 0xFFFF
    for h in sorted({0, t_hi - 1, t_hi, t_hi + 1, 0xFFFF} & set(range(65536))):
        count = int(np.count_nonzero(reference.keep_rule(np.full(65536, h, np.uint32), g, t)))
        assert count == (65536 if h < t_hi else t_lo if h == t_hi else 0), h


@pytest.mark.parametrize("keep_prob, t", [(0.5, 2**31), (0.1, 429496729), (1 - 2**-32, 2**32 - 1),
                                          (2**-32, 1), (0.75, 3 * 2**30), (1 / 3, 1431655765)])
def test_threshold_is_floor_of_q_times_2_32(keep_prob, t):
    """The mask's keep_prob maps to T = floor(q * 2**32): a decision-by-decision comparison
    with the oracle built on that T."""
    assert threshold(keep_prob) == t
    size = 4000
    y, mask = fastdrop.dropout(np.ones(size), keep_prob, seed=2024)
    np.testing.assert_array_equal(kept(y), oracle_decisions(2024, 0, 0, size, keep_prob))


def test_keep_prob_one_keeps_everything_and_advances_stream():
    """q = 1 keeps all (y is x, unscaled), stores all-ones bits, yet still moves the stream by
    ceil(n / 8) so the next call's mask is the same as if the call had had q < 1."""
    stream = fastdrop.Stream(77, 4)
    x = np.arange(1.0, 1002.0)
    y, mask = fastdrop.dropout(x, 1.0, stream=stream, store="bits")
    np.testing.assert_array_equal(y, x)
    assert mask.to_bool().all() and mask.to_bool().shape == (1001,)
    np.testing.assert_array_equal(mask.bits, np.packbits(np.ones(1001, bool), bitorder="little"))
    assert stream.position == 126
    y2, mask2 = fastdrop.dropout(np.ones(500), 0.5, stream=stream)
    assert mask2.start == 126
    np.testing.assert_array_equal(kept(y2), oracle_decisions(77, 4, 126, 500, 0.5))
    y3, _ = fastdrop.dropout(np.ones(2**18, np.float32), 1.0, seed=3)
    assert np.all(y3 == 1)


# ---------------------------------------------------------------------------------------------
# What the decisions must not depend on (SPEC §3 "Consequence")
# ---------------------------------------------------------------------------------------------

SHAPE = (401, 503)          # 201703 elements: above the multithreading threshold
SEED = 0xC0FFEE
Q = 0.55


def _expected_mask(shape=SHAPE):
    return _cached_oracle(SEED, 0, 0, int(np.prod(shape)), Q).reshape(shape)


def _positive(shape, dtype, order="C"):
    rng = np.random.default_rng(8)
    return np.asarray(rng.uniform(0.5, 2.0, size=shape), dtype=dtype, order=order)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("layout", ["C", "F", "reversed", "transposed", "sliced"])
def test_decisions_independent_of_dtype_and_layout(dtype, layout):
    """The applied mask is the C-order oracle of the *logical* shape, whatever the dtype, memory
    order or strides; the kept values are x times the scale rounded to the dtype."""
    if layout == "C":
        x = _positive(SHAPE, dtype)
    elif layout == "F":
        x = _positive(SHAPE, dtype, order="F")
    elif layout == "reversed":
        x = _positive(SHAPE, dtype)[::-1, ::-1]
    elif layout == "transposed":
        x = _positive(SHAPE[::-1], dtype).T
    else:
        x = _positive((SHAPE[0] * 2, SHAPE[1] * 3), dtype)[1::2, ::3]
    assert x.shape == SHAPE
    before = x.copy()
    y, mask = fastdrop.dropout(x, Q, seed=SEED)
    expected = _expected_mask()
    np.testing.assert_array_equal(kept(y), expected)
    np.testing.assert_array_equal(mask.to_bool(), expected)
    np.testing.assert_array_equal(x, before)
    scale = dtype(float(1 / Fraction(Q)))  # 1/q rounded once (no float64 tie for this q)
    np.testing.assert_array_equal(y[expected], before[expected] * scale)


def test_decisions_of_transposed_view_follow_its_own_c_order():
    """A transposed input's decision j is the C-order index of the transposed shape, not of the
    memory order: same memory, transposed view, transposed oracle."""
    base = _positive((503, 401), np.float64)
    y, _ = fastdrop.dropout(base.T, Q, seed=SEED)
    np.testing.assert_array_equal(kept(y), _expected_mask())
    y_base, _ = fastdrop.dropout(base, Q, seed=SEED)
    np.testing.assert_array_equal(kept(y_base), _expected_mask((503, 401)))
    assert not np.array_equal(kept(y_base), kept(y).T)


@pytest.mark.parametrize("target", ["in-place", "out-C", "out-F", "out-reversed"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_decisions_independent_of_output(target, dtype):
    """In place (out=x) and out-of-place into buffers of any layout give the same mask."""
    x = _positive(SHAPE, dtype)
    if target == "in-place":
        out = x
    elif target == "out-C":
        out = np.empty(SHAPE, dtype)
    elif target == "out-F":
        out = np.empty(SHAPE, dtype, order="F")
    else:
        out = np.empty(SHAPE, dtype)[::-1, ::-1]
    y, _ = fastdrop.dropout(x, Q, seed=SEED, out=out)
    assert y is out
    np.testing.assert_array_equal(kept(out), _expected_mask())


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_stored_bits_equal_seed_mask(dtype):
    """store="bits" packs exactly the oracle's decisions (np.packbits little), and its output
    equals the store="seed" call's output."""
    x = _positive(SHAPE, dtype, order="F")
    y_bits, m_bits = fastdrop.dropout(x, Q, seed=SEED, store="bits")
    y_seed, m_seed = fastdrop.dropout(x, Q, seed=SEED, store="seed")
    expected = _expected_mask()
    np.testing.assert_array_equal(m_bits.bits, np.packbits(expected.reshape(-1), bitorder="little"))
    np.testing.assert_array_equal(m_bits.to_bool(), expected)
    np.testing.assert_array_equal(m_seed.to_bool(), expected)
    np.testing.assert_array_equal(y_bits, y_seed)


@pytest.mark.parametrize("threads", [1, 2, 3, 4])
@pytest.mark.parametrize("layout", ["C", "F"])
def test_decisions_independent_of_thread_count(threads, layout, restore_threads):
    """Any thread count gives the oracle's mask (forward, stored bits and regenerated mask)."""
    fastdrop.set_num_threads(threads)
    assert fastdrop.get_num_threads() == threads
    x = _positive(SHAPE, np.float32, order=layout)
    y, mask = fastdrop.dropout(x, Q, seed=SEED, store="bits")
    expected = _expected_mask()
    np.testing.assert_array_equal(kept(y), expected)
    np.testing.assert_array_equal(mask.bits, np.packbits(expected.reshape(-1), bitorder="little"))
    _, mask_seed = fastdrop.dropout(x, Q, seed=SEED)
    np.testing.assert_array_equal(mask_seed.to_bool(), expected)
    dx = fastdrop.dropout_backward(np.ones(SHAPE, np.float32), mask_seed)
    np.testing.assert_array_equal(kept(dx), expected)
