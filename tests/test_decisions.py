"""The keep/drop decisions of SPEC §3 (version 2 of the stream), checked against an independent
oracle.

The oracle below is written from the spec alone, on randomgen's Philox words (not on
fastdrop.reference): decision j of a call at stream block `start` reads byte j % 16 (the bytes of
x0 from the lowest, then of x1, x2, x3) of block start + j // 16; it keeps iff h < T >> 24, or
h == T >> 24 and g < T & 0xffffff, where g is the low 24 bits of word d % 4 of block d // 4 of
subsequence 2**63 + subsequence, d = 16 * start + j, and T = floor(q * 2**32).  The C path
(fastdrop.dropout, mask.to_bool(), stored bits) on every SIMD path and fastdrop.reference must
all agree with it exactly.
"""
from fractions import Fraction
from functools import lru_cache

import numpy as np
import pytest
import randomgen

import fastdrop
from fastdrop import _core, reference

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


def oracle_bytes(seed: int, subsequence: int, start: int, size: int) -> np.ndarray:
    """h_0 .. h_{size-1} of a call at block `start`."""
    nblocks = -(-size // 16)
    words = randomgen_words(seed, subsequence, start, nblocks)
    h = np.empty(4 * words.size, dtype=np.uint32)
    for k in range(4):
        h[k::4] = (words >> (8 * k)) & 0xFF
    return h[:size]


def oracle_g(seed: int, subsequence: int, start: int, j: int) -> int:
    """The refinement draw g_d, d = 16 * start + j."""
    d = 16 * start + j
    return int(randomgen_words(seed, 2**63 + subsequence, d // 4, 1)[d % 4]) & 0xFFFFFF


def oracle_decisions(seed: int, subsequence: int, start: int, size: int,
                     keep_prob: float) -> np.ndarray:
    """The flat boolean decisions of SPEC §3, slowly and from randomgen words."""
    if keep_prob == 1.0:
        return np.ones(size, dtype=bool)
    t = threshold(keep_prob)
    t_hi, t_lo = t >> 24, t & 0xFFFFFF
    h = oracle_bytes(seed, subsequence, start, size)
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
    """Self-check of the oracle on block 0 of seed 0 (the first Random123 vector): byte order,
    threshold split and refinement are those of the spec."""
    words = [0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8]
    h = [0xD5, 0xE8, 0x27, 0x66, 0x8D, 0xC5, 0x69, 0xE1,
         0x4C, 0xAC, 0x57, 0xBC, 0xD8, 0xDB, 0x00, 0x9B]
    assert h == [w >> s & 0xFF for w in words for s in (0, 8, 16, 24)]
    np.testing.assert_array_equal(oracle_bytes(0, 0, 0, 16), h)
    # T_hi equal to h_1 = 0xE8 forces decision 1 through the refinement draw, the low 24 bits
    # of word 1 of block 0 of subsequence 2**63.
    g = oracle_g(0, 0, 0, 1)
    assert g == int(randomgen_words(0, 2**63, 0, 1)[1]) & 0xFFFFFF and g < 0xFFFFFF
    assert oracle_decisions(0, 0, 0, 16, ((0xE8 << 24) | (g + 1)) / 2**32)[1]
    assert not oracle_decisions(0, 0, 0, 16, ((0xE8 << 24) | g) / 2**32)[1]
    # Decision 17 is byte 1 of block 1; its draw is word 1 of refinement block 4.
    assert oracle_g(0, 0, 0, 17) == int(randomgen_words(0, 2**63, 4, 1)[1]) & 0xFFFFFF


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
    """Each call on a Stream reads the blocks after the previous call's (sizes not multiples of 16
    included), on the stream's subsequence."""
    stream = fastdrop.Stream(seed, subsequence)
    position = 0
    for size, q in [(13, 0.5), (1000, 0.3), (8, 0.75), (4099, 0.9), (1, 0.5), (77, 0.2),
                    (16, 0.6), (4097, 0.99)]:
        x = np.full(size, 3.0)
        y, mask = fastdrop.dropout(x, q, stream=stream)
        assert mask.start == position
        expected = oracle_decisions(seed, subsequence, position, size, q)
        np.testing.assert_array_equal(kept(y), expected)
        np.testing.assert_array_equal(mask.to_bool(), expected)
        np.testing.assert_array_equal(reference.decisions(seed, subsequence, position, size, q),
                                      expected)
        position += -(-size // 16)
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
    size = 16 * blocks_left - 3
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
    1), broadcast over the shared axes, and only ceil(prod(mask shape) / 16) blocks are used."""
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
    assert stream.position == 12345 + -(-size // 16)


# ---------------------------------------------------------------------------------------------
# The refinement path: h == T_hi, decided by g
# ---------------------------------------------------------------------------------------------

def _refinement_site(seed, subsequence, start, size, first):
    """A position p >= first with h_p = v > 0 and g_p < 0xffffff, the call's bytes h and v, g."""
    h = oracle_bytes(seed, subsequence, start, size)
    for p in range(first, size):
        v = int(h[p])
        if v == 0:
            continue
        g = oracle_g(seed, subsequence, start, p)
        if g < 0xFFFFFF:
            return p, h, v, g
    raise AssertionError("no usable position")  # pragma: no cover


REFINEMENT_CASES = [
    # (seed, subsequence, start, size, first position to try)
    pytest.param(12345, 0, 0, 2**20, 2**19 + 17, id="seeded-2**20"),
    pytest.param(2**63 + 7, 3, 1000003, 2**17, 70001, id="stream-offset"),
    pytest.param(99, 0, 2**62 + 5, 4096, 2049, id="start-2**62-quadrupling-overflows"),
    pytest.param(4242, 2**63 - 1, 2**64 - 2**12, 2**15, 20000, id="end-of-last-subsequence"),
]


def _call(seed, subsequence, start, size, q):
    """A float32 call of `size` ones at stream block `start` (a seeded call when start is 0)."""
    if start == 0 and subsequence == 0:
        return fastdrop.dropout(np.ones(size, dtype=np.float32), q, seed=seed)
    stream = fastdrop.Stream(seed, subsequence)
    stream.reserve(start)
    return fastdrop.dropout(np.ones(size, dtype=np.float32), q, stream=stream)


@pytest.mark.parametrize("seed, subsequence, start, size, first", REFINEMENT_CASES)
def test_refinement_draw_decides_ties_in_c_path(seed, subsequence, start, size, first):
    """Choose T with T_hi == h_p: decision p keeps for T_lo = g_p + 1 and drops for T_lo = g_p, and
    between the two thresholds exactly the positions with (h, g) == (h_p, g_p) change.  A core
    that ignores g, reads the wrong refinement word/block/subsequence, or compares with <= fails.
    """
    p, h, v, g = _refinement_site(seed, subsequence, start, size, first)
    ties = np.flatnonzero(h == v)
    assert p in ties
    q_keep = ((v << 24) | (g + 1)) / 2**32
    q_drop = ((v << 24) | g) / 2**32
    results = {}
    for q in (q_keep, q_drop):
        y, mask = _call(seed, subsequence, start, size, q)
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
    assert reference.refinement_draw(seed, subsequence, 16 * start + p) == g
    window = slice(p - (p % 16), p - (p % 16) + 32)  # a short call starting at p's block
    block = start + p // 16
    for q, keep in [(((v << 24) | (g + 1)) / 2**32, True), (((v << 24) | g) / 2**32, False)]:
        ref = reference.decisions(seed, subsequence, block, 32, q)
        assert bool(ref[p % 16]) is keep
        np.testing.assert_array_equal(ref, oracle_decisions(seed, subsequence, block, 32, q))
        assert np.array_equal(h[window][: ref.size] < v, ref & (h[window] != v))


def test_refinement_uses_decision_index_d_not_position_in_call():
    """g depends on d = 16 * start + j: the same stream position reached by a call starting one
    block earlier gives the same decision (the mask depends on the absolute position only)."""
    seed, subsequence = 555, 9
    size = 2**16
    p, h, v, g = _refinement_site(seed, subsequence, 100, size, 16)
    q = ((v << 24) | (g + 1)) / 2**32
    whole = reference.decisions(seed, subsequence, 100, size, q)
    later = fastdrop.Stream(seed, subsequence)
    later.reserve(100 + p // 16)
    y, _ = fastdrop.dropout(np.ones(16), q, stream=later)
    np.testing.assert_array_equal(kept(y), whole[p - p % 16: p - p % 16 + 16])
    assert kept(y)[p % 16]


def _most_frequent_byte(h):
    return int(np.argmax(np.bincount(h, minlength=256)))


@pytest.mark.parametrize("t_lo", [0, 1, 0x800000, 0xFFFFFF])
@pytest.mark.parametrize("seed, subsequence, start, size", [
    pytest.param(2024, 0, 0, 2**16 + 5, id="seeded"),
    pytest.param(7, 11, 3, 4096 * 3 + 1, id="stream-tiles"),
    pytest.param(31, 2**63 - 1, 2**64 - 2**10, 2**14 - 9, id="end-of-stream"),
])
def test_forced_ties_match_oracle(seed, subsequence, start, size, t_lo):
    """T_hi set to the call's most frequent byte (a few hundred ties, in every tile and both
    bytes of a block), with T_lo = 0 (ties drop without a draw), 1, 2**23 and 0xffffff (ties
    all but always drop, or keep): every path, stored bits and the reference equal the oracle."""
    h = oracle_bytes(seed, subsequence, start, size)
    t_hi = _most_frequent_byte(h)
    ties = np.flatnonzero(h == t_hi)
    assert ties.size > size / 256
    q = ((t_hi << 24) | t_lo) / 2**32
    expected = oracle_decisions(seed, subsequence, start, size, q)
    y, mask = _call(seed, subsequence, start, size, q)
    np.testing.assert_array_equal(kept(y), expected)
    np.testing.assert_array_equal(mask.to_bool(), expected)
    np.testing.assert_array_equal(reference.decisions(seed, subsequence, start, size, q),
                                  expected)
    if t_lo == 0:
        assert not expected[ties].any()
    elif t_lo == 0x800000:
        assert 0 < np.count_nonzero(expected[ties]) < ties.size


# ---------------------------------------------------------------------------------------------
# The keep rule and thresholds
# ---------------------------------------------------------------------------------------------

def _exhaustive_keep_count(t: int) -> int:
    """Number of (h, g) pairs, over all 2**8 * 2**24, that reference.keep_rule keeps: the rule
    evaluated on every g against each h in turn (broadcast)."""
    g = np.arange(2**24, dtype=np.uint32)
    return sum(int(np.count_nonzero(reference.keep_rule(np.full(1, h, np.uint32), g, t)))
               for h in range(256))


@pytest.mark.parametrize("t", [0x9E3779B9, 0x00000001, 0xFFFFFFFF])
def test_keep_rule_keeps_exactly_t_of_all_2_32_pairs(t, every_simd_path):
    """Over every (h, g) pair the rule keeps exactly T: the keep probability is T / 2**32, not
    T_hi / 2**8 or (T + 1) / 2**32."""
    if every_simd_path != _core.simd_paths()[0]:
        pytest.skip("reference.keep_rule is pure NumPy: one SIMD path checks it")
    assert _exhaustive_keep_count(t) == t


@pytest.mark.parametrize("t", [0x80000000, 0x12000000, 0x12FFFFFF, 0xFF000001, 0x9E3779B9])
def test_keep_rule_count_per_h(t):
    """Per value of h, over all 2**24 g: 2**24 keeps below T_hi, T_lo at T_hi, none above."""
    g = np.arange(2**24, dtype=np.uint32)
    t_hi, t_lo = t >> 24, t & 0xFFFFFF
    for h in sorted({0, t_hi - 1, t_hi, t_hi + 1, 0xFF} & set(range(256))):
        count = int(np.count_nonzero(reference.keep_rule(np.full(2**24, h, np.uint32), g, t)))
        assert count == (2**24 if h < t_hi else t_lo if h == t_hi else 0), h


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
    ceil(n / 16) so the next call's mask is the same as if the call had had q < 1."""
    stream = fastdrop.Stream(77, 4)
    x = np.arange(1.0, 1002.0)
    y, mask = fastdrop.dropout(x, 1.0, stream=stream, store="bits")
    np.testing.assert_array_equal(y, x)
    assert mask.to_bool().all() and mask.to_bool().shape == (1001,)
    np.testing.assert_array_equal(mask.bits, np.packbits(np.ones(1001, bool), bitorder="little"))
    assert stream.position == 63
    y2, mask2 = fastdrop.dropout(np.ones(500), 0.5, stream=stream)
    assert mask2.start == 63
    np.testing.assert_array_equal(kept(y2), oracle_decisions(77, 4, 63, 500, 0.5))
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
