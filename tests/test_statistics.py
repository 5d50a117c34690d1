"""Statistical behaviour of the masks, with explicit tolerances.

Every bound is 5 standard deviations of the statistic under the spec's model (independent
decisions, each a keep with probability q), so a correct implementation fails with probability
below about 1e-6 per check; all seeds are fixed, so the outcome is deterministic.  A generator
with a biased threshold, reused or overlapping blocks, correlated neighbours or dependent
streams moves the statistic by far more than that.
"""
import math

import numpy as np
import pytest

import fastdrop

SIGMAS = 5.0


def assert_binomial(count: int, n: int, p: float, what: str = "count") -> None:
    """count is within 5 binomial sigmas of n * p."""
    sigma = math.sqrt(n * p * (1 - p))
    assert abs(count - n * p) <= SIGMAS * sigma, (
        f"{what}: {count}, expected {n * p:.1f} +- {SIGMAS} * {sigma:.2f}")


def correlation(a: np.ndarray, b: np.ndarray) -> float:
    """Pearson correlation of two boolean arrays, from counts."""
    n = a.size
    pa, pb = np.count_nonzero(a) / n, np.count_nonzero(b) / n
    pab = np.count_nonzero(a & b) / n
    return (pab - pa * pb) / math.sqrt(pa * (1 - pa) * pb * (1 - pb))


def decisions(size: int, keep_prob: float, **kwargs) -> np.ndarray:
    """The flat decisions of one call on an array of ones."""
    y, _ = fastdrop.dropout(np.ones(size, dtype=np.float32), keep_prob, **kwargs)
    return y != 0


# ---------------------------------------------------------------------------------------------
# Keep rate
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("keep_prob", [0.01, 0.5, 0.8, 0.99])
def test_kept_fraction_within_5_sigma(keep_prob):
    """Over 2**22 decisions the kept count is n q +- 5 sqrt(n q (1 - q)), i.e. +- 0.12 % at
    q = 0.5; a rule that ignored T_lo (keeping 2/256 at q = 0.01) would be 45 sigma off."""
    n = 2**22
    kept = np.count_nonzero(decisions(n, keep_prob, seed=1234))
    assert_binomial(kept, n, keep_prob, f"kept at q={keep_prob}")


def test_drop_count_at_keep_prob_one_minus_2_pow_20():
    """q = 1 - 2**-20 (T = 2**32 - 2**12, T_hi = 0xff, T_lo = 0xfff000: every drop is an
    h == 0xff whose refinement draw g >= 0xfff000): 8 calls of 2**24 float32 elements, 2**27
    decisions, drop 128 +- 5 * 11.3.  Ignoring g would drop ~524288 or 0."""
    q = 1 - 2**-20
    stream = fastdrop.Stream(seed=0x5EED, subsequence=1)
    x = np.empty(2**24, dtype=np.float32)
    dropped = 0
    calls = 8
    for _ in range(calls):
        x.fill(1.0)
        fastdrop.dropout(x, q, stream=stream, out=x)
        dropped += x.size - np.count_nonzero(x)
    assert stream.position == calls * 2**20
    assert_binomial(dropped, calls * x.size, 2**-20, "dropped")


# ---------------------------------------------------------------------------------------------
# Inverted dropout is unbiased
# ---------------------------------------------------------------------------------------------

def test_mean_of_inverted_forwards_tends_to_x():
    """E[m x / q] = x and Var = x**2 (1 - q) / q: over N = 2000 calls of a fixed x the mean of each
    element is within 5 sigma_i = 5 |x_i| sqrt((1 - q) / (q N)) of x_i (|error| <= ~4.4 % of x at
    q = 0.8), the pooled z-score is within 5, and the mean squared z is 1 +- 5 sqrt(2 / n)
    (which a stream that repeats or correlates its masks fails)."""
    q, calls = 0.8, 2000
    rng = np.random.default_rng(5)
    x = rng.uniform(-2.0, 2.0, size=512)
    x[np.abs(x) < 0.1] = 0.5
    stream = fastdrop.Stream(seed=2718, subsequence=0)
    total = np.zeros_like(x)
    for _ in range(calls):
        y, _ = fastdrop.dropout(x, q, stream=stream)
        total += y
    mean = total / calls
    sigma = np.abs(x) * math.sqrt((1 - q) / (q * calls))
    z = (mean - x) / sigma
    assert np.all(np.abs(z) <= SIGMAS), float(np.abs(z).max())
    assert abs(z.sum() / math.sqrt(z.size)) <= SIGMAS
    assert abs(np.mean(z**2) - 1.0) <= SIGMAS * math.sqrt(2.0 / z.size)


# ---------------------------------------------------------------------------------------------
# Independence
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("keep_prob", [0.5, 0.8])
def test_no_correlation_between_nearby_decisions(keep_prob):
    """Decisions j and j + lag are uncorrelated: |corr| < 5 / sqrt(n) for lag 1 (neighbouring
    bytes of a word), 4 (neighbouring words), 8, 15, 16 (the same byte of the next block) and
    64."""
    m = decisions(2**22, keep_prob, seed=4321)
    for lag in (1, 4, 8, 15, 16, 64):
        n = m.size - lag
        assert abs(correlation(m[:-lag], m[lag:])) < SIGMAS / math.sqrt(n), lag


def test_successive_stream_calls_give_fresh_masks():
    """Each call moves the stream by ceil(n / 16) blocks and its mask is independent of the previous
    one: agreement q**2 + (1 - q)**2 within 5 sigma, not 1 (a stream that does not move) and not a
    shifted copy."""
    q, n = 0.5, 100_003
    stream = fastdrop.Stream(seed=42)
    masks = []
    for call in range(1, 6):
        y, mask = fastdrop.dropout(np.ones(n), q, stream=stream)
        assert mask.start == (call - 1) * math.ceil(n / 16)
        assert stream.position == call * math.ceil(n / 16)
        masks.append(y != 0)
    p_agree = q**2 + (1 - q) ** 2
    for a in range(len(masks)):
        for b in range(a + 1, len(masks)):
            assert_binomial(np.count_nonzero(masks[a] == masks[b]), n, p_agree, f"agree {a},{b}")


def test_default_stream_advances_like_an_explicit_stream():
    """manual_seed(s) then calls without seed=/stream= equal calls on Stream(s)."""
    default = fastdrop.default_stream()
    saved = (default.seed, default.subsequence, default.position)
    try:
        fastdrop.manual_seed(99)
        own = fastdrop.Stream(99)
        for n in (10, 1000, 17):
            a = decisions(n, 0.5)
            b = decisions(n, 0.5, stream=own)
            np.testing.assert_array_equal(a, b)
            assert not a.all() or n < 20
        assert default.position == own.position == 1 + 63 + 2
    finally:
        default.manual_seed(saved[0], saved[1])
        default.reserve(saved[2])


@pytest.mark.parametrize("a, b", [
    ((7, 0), (7, 1)),
    ((7, 0), (7, 2**62)),
    ((7, 3), (7, 2**63 - 1)),
    ((0, 0), (1, 0)),
    ((1, 0), (2**32 + 1, 0)),        # seeds differ only in the high key word
    ((5, 0), (2**63 + 5, 0)),
])
def test_different_subsequences_and_seeds_are_independent(a, b):
    """Two streams (seed, subsequence) that differ in either give masks whose agreement is
    q**2 + (1 - q)**2 within 5 sigma and whose correlation is below 5 / sqrt(n)."""
    q, n = 0.7, 2**20
    ma = decisions(n, q, stream=fastdrop.Stream(*a))
    mb = decisions(n, q, stream=fastdrop.Stream(*b))
    assert_binomial(np.count_nonzero(ma == mb), n, q**2 + (1 - q) ** 2, "agreement")
    assert abs(correlation(ma, mb)) < SIGMAS / math.sqrt(n)
    assert_binomial(np.count_nonzero(ma), n, q, "kept a")
    assert_binomial(np.count_nonzero(mb), n, q, "kept b")


def test_neighbouring_stream_positions_are_independent():
    """Blocks shifted by one (start s vs s + 1) are not copies of each other."""
    q, n = 0.5, 2**20
    s1 = fastdrop.Stream(11)
    s2 = fastdrop.Stream(11)
    s2.reserve(1)
    ma, mb = decisions(n, q, stream=s1), decisions(n, q, stream=s2)
    assert_binomial(np.count_nonzero(ma == mb), n, 0.5, "agreement")


# ---------------------------------------------------------------------------------------------
# Shared axes
# ---------------------------------------------------------------------------------------------

def test_shared_axis_0_gives_every_row_the_same_mask():
    """shared_axes=0 on (N, D): all N rows carry one mask, whose keep rate over D columns is q
    within 5 sigma; only ceil(D / 16) blocks are drawn."""
    n_rows, d, q = 16, 50_000, 0.6
    rng = np.random.default_rng(3)
    x = rng.uniform(0.5, 1.5, size=(n_rows, d))
    stream = fastdrop.Stream(8)
    y, mask = fastdrop.dropout(x, q, shared_axes=0, stream=stream)
    assert mask.mask_shape == (1, d)
    keep = y != 0
    assert np.all(keep == keep[0])
    np.testing.assert_array_equal(keep[0], mask.to_bool()[0])
    assert_binomial(np.count_nonzero(keep[0]), d, q, "kept columns")
    scale = float(1 / np.float64(q))
    np.testing.assert_array_equal(y[keep], x[keep] * scale)
    assert stream.position == math.ceil(d / 16)


def test_channel_dropout_zeroes_or_scales_whole_planes():
    """shared_axes=(2, 3) on (N, C, H, W): each (n, c) plane is all +0.0 or all x / q, and the
    fraction of kept planes is q within 5 sigma; only ceil(N C / 16) blocks are drawn."""
    n, c, h, w, q = 64, 256, 5, 7, 0.75
    rng = np.random.default_rng(4)
    x = rng.uniform(0.5, 1.5, size=(n, c, h, w)).astype(np.float32)
    stream = fastdrop.Stream(9, 1)
    y, mask = fastdrop.dropout(x, q, shared_axes=(2, 3), stream=stream)
    assert mask.mask_shape == (n, c, 1, 1)
    keep = (y != 0).reshape(n, c, h * w)
    plane_kept = keep.all(axis=2)
    plane_dropped = ~keep.any(axis=2)
    assert np.all(plane_kept | plane_dropped)
    np.testing.assert_array_equal(plane_kept, mask.to_bool()[:, :, 0, 0])
    scale = np.float32(1 / q)
    np.testing.assert_array_equal(y[plane_kept], x[plane_kept] * scale)
    assert np.all(np.signbit(y[plane_dropped]) == False)  # noqa: E712  (+0.0, not -0.0)
    assert_binomial(np.count_nonzero(plane_kept), n * c, q, "kept planes")
    assert stream.position == math.ceil(n * c / 16)
