"""Alpha dropout and Monte-Carlo dropout (SPEC §2; issue 4 items 2 and 3).

Alpha dropout (Klambauer et al. 2017, for self-normalising SELU networks) replaces a dropped unit
by SELU's negative saturation value alpha' = -lambda * alpha and then applies the affine map
y -> a * y + b chosen so that zero-mean, unit-variance input keeps mean 0 and variance 1:
a = (q + alpha'^2 q (1 - q))^(-1/2), b = -a (1 - q) alpha'.  The network inputs it is made for
are SELU-normalised activations; the issue asks for the check on standard-normal input, which
is what the statistical tests below use.

Monte-Carlo dropout (Gal and Ghahramani 2016) keeps dropout on at inference: a `Dropout` layer
with mc=True keeps drawing masks after .eval(), and `mc_predict` averages n predictions.

The bit-exactness of the alpha kernels on every SIMD path is checked in
test_reference_equality.py and test_half_precision.py; this file checks the semantics.
"""
from __future__ import annotations

import math
import re
from decimal import Decimal, getcontext

import numpy as np
import pytest

import fastdrop
from fastdrop import reference
from fastdrop._stream import ALPHA_PRIME, alpha_constants, kernel_op

SELU_LAMBDA = 1.0507009873554805
SELU_ALPHA = 1.6732632423543772
FLOAT_DTYPES = [np.float32, np.float64]
KEEP_PROBS = [0.5, 0.8, 0.95, 0.3, 0.1, 1 - 2**-20]


def as_uint(a: np.ndarray) -> np.ndarray:
    a = np.asarray(a)
    return a.view(np.dtype(f"u{a.dtype.itemsize}"))


# ---------------------------------------------------------------------------------------------
# The constants
# ---------------------------------------------------------------------------------------------

def test_alpha_prime_is_minus_lambda_alpha():
    """alpha' = -lambda * alpha of SELU = -1.7580993408473766."""
    assert abs(ALPHA_PRIME - (-SELU_LAMBDA * SELU_ALPHA)) <= 1e-15
    assert abs(ALPHA_PRIME - (-1.7580993408473766)) <= 1e-15


def exact_a(q: float) -> Decimal:
    """a = (q + alpha'^2 q (1 - q))^(-1/2) to 40 digits, alpha' and q taken as exact."""
    getcontext().prec = 40
    qd, ap = Decimal(q), Decimal(ALPHA_PRIME)
    return 1 / (qd + ap * ap * qd * (1 - qd)).sqrt()


@pytest.mark.parametrize("q", KEEP_PROBS)
def test_alpha_constants_float64(q):
    """In float64, (a, b, dropped) are the float64 arithmetic of the formulas, within an ulp or
    two of the exact values."""
    ap = ALPHA_PRIME
    a = (q + ap**2 * q * (1 - q)) ** -0.5
    b = -a * (1 - q) * ap
    dropped = a * ap + b
    got = alpha_constants(q, np.dtype(np.float64))
    assert all(type(v) is np.float64 for v in got)
    assert tuple(float(v) for v in got) == (a, b, dropped)
    assert abs(Decimal(a) - exact_a(q)) <= Decimal(4e-16) * exact_a(q)
    assert math.isclose(b, float(-exact_a(q) * (1 - Decimal(q)) * Decimal(ap)), rel_tol=1e-15)
    assert kernel_op(q, "alpha", np.dtype(np.float64), True) == (a, b, dropped, True)
    assert kernel_op(q, "alpha", np.dtype(np.float64), False) == (a, 0.0, 0.0, False)


@pytest.mark.parametrize("q", KEEP_PROBS)
@pytest.mark.parametrize("dtype", [np.float32, np.float16, "bfloat16"])
def test_alpha_constants_float32(q, dtype):
    """For float32 and the 16-bit types, a is float32(a), b is float32(-a (1 - q) alpha') from
    that rounded a (so that the affine map is centred for the a actually used), and the dropped
    value is a * float32(alpha') + b in float32 arithmetic."""
    if dtype == "bfloat16":
        dtype = pytest.importorskip("ml_dtypes", reason="bfloat16 needs ml_dtypes").bfloat16
    ap = ALPHA_PRIME
    a = np.float32((q + ap**2 * q * (1 - q)) ** -0.5)
    b = np.float32(-float(a) * (1 - q) * ap)
    dropped = a * np.float32(ap) + b
    got = alpha_constants(q, np.dtype(dtype))
    assert all(type(v) is np.float32 for v in got)
    assert got == (a, b, dropped)
    assert abs(float(a) - float(exact_a(q))) <= 2**-24 * float(a)
    assert kernel_op(q, "alpha", np.dtype(dtype), True) == (float(a), float(b), float(dropped),
                                                             True)
    assert kernel_op(q, "alpha", np.dtype(dtype), False) == (float(a), 0.0, 0.0, False)


@pytest.mark.parametrize("q", KEEP_PROBS)
@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
def test_constants_keep_mean_zero_and_variance_one(q, dtype):
    """With m ~ Bernoulli(q) and x of mean 0, variance 1: E[y] = a (1 - q) alpha' + b = 0 and
    Var[y] = a^2 (q + alpha'^2 q (1 - q)) = 1, to the constants' precision."""
    a, b, dropped = (float(v) for v in alpha_constants(q, np.dtype(dtype)))
    tol = 1e-6 if dtype == np.float32 else 1e-14
    assert abs(q * b + (1 - q) * dropped) <= tol  # kept units have mean a * 0 + b
    second_moment = q * (a * a + b * b) + (1 - q) * dropped**2
    assert abs(second_moment - 1) <= 4 * tol


@pytest.mark.parametrize("q", [0.5, 0.8, 0.95])
@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
def test_forward_is_the_affine_map_in_the_dtype(q, dtype):
    """y = x * a + b (one float multiply then one add, no fused multiply-add) where kept, the
    dropped constant where dropped, in the dtype's own arithmetic; NaN and Inf dropped become the
    constant too."""
    rng = np.random.default_rng(3)
    x = (rng.standard_normal(10_000) * 10.0 ** rng.integers(-3, 4, 10_000)).astype(dtype)
    x[:8] = [np.nan, np.inf, -np.inf, 0.0, -0.0, 1.0, -1.0, 1e30]
    a, b, dropped = alpha_constants(q, np.dtype(dtype))
    y, mask = fastdrop.dropout(x, q, mode="alpha", seed=17)
    keep = mask.to_bool()
    assert 0 < keep.sum() < keep.size
    with np.errstate(all="ignore"):
        kept_values = x * dtype(a) + dtype(b)
    np.testing.assert_array_equal(as_uint(y[keep]), as_uint(kept_values[keep]))
    assert np.all(as_uint(y[~keep]) == as_uint(np.asarray(dropped, dtype)))
    # Zero input makes kept units b and dropped ones a * alpha' + b.
    y0, _ = fastdrop.dropout(np.zeros(10_000, dtype), q, mode="alpha", seed=17)
    np.testing.assert_array_equal(y0, np.where(keep, dtype(b), dtype(dropped)))


# ---------------------------------------------------------------------------------------------
# What alpha dropout is for: mean and variance are kept
# ---------------------------------------------------------------------------------------------

N_STATS = 2 * 10**6


@pytest.fixture(scope="module")
def standard_normal():
    return np.random.default_rng(20170608).standard_normal(N_STATS)


def mean_var_and_errors(y: np.ndarray):
    """Sample mean, variance, and their standard errors sqrt(var / n) and
    sqrt((m4 - var^2) / n), m4 the fourth central moment estimated from the data."""
    y = y.astype(np.float64)
    n = y.size
    mean = y.mean()
    centred = y - mean
    var = np.mean(centred**2)
    m4 = np.mean(centred**4)
    return mean, var, math.sqrt(var / n), math.sqrt((m4 - var**2) / n)


@pytest.mark.parametrize("q", [0.5, 0.8, 0.95])
@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
def test_alpha_dropout_keeps_mean_and_variance(standard_normal, q, dtype):
    """On 2e6 standard-normal values, alpha dropout's output has mean 0 and variance 1 within 5
    standard errors, while inverted dropout's variance is about 1/q, more than 20 standard
    errors away from 1 (and classic dropout's mean is kept but its variance is q)."""
    x = standard_normal.astype(dtype)
    y, mask = fastdrop.dropout(x, q, mode="alpha", seed=int(q * 100))
    kept_fraction = mask.to_bool().mean()
    assert abs(kept_fraction - q) < 5 * math.sqrt(q * (1 - q) / N_STATS)
    mean, var, se_mean, se_var = mean_var_and_errors(y)
    assert abs(mean) < 5 * se_mean, (mean, se_mean)
    assert abs(var - 1) < 5 * se_var, (var, se_var)

    y_inv, _ = fastdrop.dropout(x, q, mode="inverted", seed=int(q * 100))
    mean_inv, var_inv, se_mean_inv, se_var_inv = mean_var_and_errors(y_inv)
    assert abs(mean_inv) < 5 * se_mean_inv  # inverted dropout keeps the mean...
    assert abs(var_inv - 1) > 20 * se_var_inv, (var_inv, se_var_inv)  # ...not the variance
    assert abs(var_inv - 1 / q) < 5 * se_var_inv


# ---------------------------------------------------------------------------------------------
# Backward, evaluation, keep_prob = 1
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
@pytest.mark.parametrize("store", ["seed", "bits"])
@pytest.mark.parametrize("shape,shared_axes", [((40, 25), None), ((6, 4, 5, 7), (2, 3)),
                                               ((300,), None)])
def test_backward_of_ones_is_a_where_kept(dtype, store, shape, shared_axes):
    """dx = a * m * dy: backward of ones is a where kept and +0.0 where dropped (the dropped
    output is a constant, so its gradient is zero), from stored and regenerated decisions, and
    equals the reference."""
    q = 0.7
    x = np.random.default_rng(0).standard_normal(shape).astype(dtype)
    _, mask = fastdrop.dropout(x, q, mode="alpha", shared_axes=shared_axes, seed=4, store=store)
    keep = np.broadcast_to(mask.to_bool(), shape)
    assert 0 < keep.sum() < keep.size
    a = alpha_constants(q, np.dtype(dtype))[0]
    ones = np.ones(shape, dtype)
    dx = fastdrop.dropout_backward(ones, mask)
    assert dx.dtype == dtype
    np.testing.assert_array_equal(as_uint(dx), as_uint(np.where(keep, dtype(a), dtype(0))))
    np.testing.assert_array_equal(as_uint(dx), as_uint(reference.dropout_backward(ones, mask)))
    dy = np.random.default_rng(1).standard_normal(shape).astype(dtype)
    expected = np.where(keep, dy * dtype(a), dtype(0))
    np.testing.assert_array_equal(as_uint(fastdrop.dropout_backward(dy, mask)), as_uint(expected))


def test_gradient_matches_finite_differences():
    """With a fixed seed, y(x) = alpha_dropout(x) is affine in x; the gradient of
    L(x) = sum(w * y(x)) from dropout_backward(w) equals central differences (float64), and is
    exactly zero at dropped units."""
    rng = np.random.default_rng(8)
    x = rng.standard_normal((6, 9))
    w = rng.standard_normal((6, 9))
    q, seed, eps = 0.75, 31, 1e-6

    def loss(v):
        return float(np.sum(w * fastdrop.dropout(v, q, mode="alpha", seed=seed)[0]))

    _, mask = fastdrop.dropout(x, q, mode="alpha", seed=seed)
    grad = fastdrop.dropout_backward(w, mask)
    numeric = np.empty_like(x)
    for i in np.ndindex(x.shape):
        plus, minus = x.copy(), x.copy()
        plus[i] += eps
        minus[i] -= eps
        numeric[i] = (loss(plus) - loss(minus)) / (2 * eps)
    keep = mask.to_bool()
    assert 0 < keep.sum() < keep.size
    np.testing.assert_allclose(grad, numeric, rtol=1e-6, atol=1e-8)
    assert np.all(numeric[~keep] == 0) and np.all(grad[~keep] == 0)


@pytest.mark.parametrize("dtype", FLOAT_DTYPES + [np.float16])
def test_alpha_evaluation_is_identity(dtype):
    """Evaluation: y is x itself (no copy, no stream advance) or a copy into out=; backward of
    an evaluation mask is dy itself."""
    x = np.random.default_rng(0).standard_normal((5, 6)).astype(dtype)
    stream = fastdrop.Stream(9)
    y, mask = fastdrop.dropout(x, 0.6, mode="alpha", training=False, stream=stream)
    assert y is x and stream.position == 0
    out = np.full_like(x, 7)
    y, _ = fastdrop.dropout(x, 0.6, mode="alpha", training=False, out=out)
    assert y is out
    np.testing.assert_array_equal(out, x)
    dy = np.ones_like(x)
    assert fastdrop.dropout_backward(dy, mask) is dy
    layer = fastdrop.Dropout(0.6, mode="alpha", seed=1).eval()
    assert layer(x) is x


@pytest.mark.parametrize("dtype", FLOAT_DTYPES + [np.float16])
def test_alpha_keep_prob_one_is_identity(dtype):
    """keep_prob = 1 keeps every unit unchanged (a = 1, b = 0): y is x, and the stream still
    advances by the call's blocks."""
    a, b, _ = alpha_constants(1.0, np.dtype(dtype))
    assert (a, b) == (1, 0)
    x = np.random.default_rng(0).standard_normal(20).astype(dtype)
    stream = fastdrop.Stream(4)
    y, mask = fastdrop.dropout(x, 1.0, mode="alpha", stream=stream)
    assert y is x and stream.position == 2 and mask.to_bool().all()
    dy = np.ones_like(x)
    assert fastdrop.dropout_backward(dy, mask) is dy
    out = np.zeros_like(x)
    y, _ = fastdrop.dropout(x, 1.0, mode="alpha", stream=stream, out=out)
    assert y is out and stream.position == 4
    np.testing.assert_array_equal(out, x)


# ---------------------------------------------------------------------------------------------
# Monte-Carlo dropout
# ---------------------------------------------------------------------------------------------

class MLP:
    """A 2-layer NumPy network with fixed random weights and a fastdrop.Dropout on the hidden
    layer: x -> relu(x W1 + b1) -> dropout -> (.) W2 + b2 (linear=True leaves out the relu)."""

    def __init__(self, dropout: fastdrop.Dropout, linear: bool = False):
        rng = np.random.default_rng(42)
        self.w1 = rng.standard_normal((10, 32)) / math.sqrt(10)
        self.b1 = rng.standard_normal(32) * 0.1
        self.w2 = rng.standard_normal((32, 3)) / math.sqrt(32)
        self.b2 = rng.standard_normal(3) * 0.1
        self.dropout = dropout
        self.linear = linear

    def hidden(self, x):
        h = x @ self.w1 + self.b1
        return h if self.linear else np.maximum(h, 0)

    def __call__(self, x):
        return self.dropout(self.hidden(x)) @ self.w2 + self.b2

    def without_dropout(self, x):
        return self.hidden(x) @ self.w2 + self.b2


@pytest.fixture
def inputs():
    return np.random.default_rng(7).standard_normal((5, 10))


def test_mc_layer_keeps_drawing_after_eval(inputs):
    """After .eval(), an mc=True layer still drops units (two predictions differ, and differ
    from the no-dropout prediction); an mc=False layer gives the same prediction every time,
    equal to the network without dropout."""
    net = MLP(fastdrop.Dropout(0.8, seed=11, mc=True))
    net.dropout.eval()
    assert net.dropout.mc and not net.dropout.training
    p1, p2 = net(inputs), net(inputs)
    assert not np.array_equal(p1, p2)
    assert not np.array_equal(p1, net.without_dropout(inputs))
    assert net.dropout.stream.position > 0

    plain = MLP(fastdrop.Dropout(0.8, seed=11))
    plain.dropout.eval()
    q1, q2 = plain(inputs), plain(inputs)
    np.testing.assert_array_equal(q1, q2)
    np.testing.assert_array_equal(q1, plain.without_dropout(inputs))
    assert plain.dropout.stream.position == 0


def test_mc_evaluation_draws_the_masks_training_would(inputs):
    """In evaluation an mc layer draws exactly what it would draw in training: the same stream
    positions, the same masks (mc changes nothing else)."""
    h = MLP(None).hidden(inputs)
    mc_layer = fastdrop.Dropout(0.8, seed=5, mc=True)
    train_layer = fastdrop.Dropout(0.8, seed=5)
    np.testing.assert_array_equal(mc_layer(h), train_layer(h))  # both training
    mc_layer.eval()
    for _ in range(3):
        np.testing.assert_array_equal(mc_layer(h), train_layer(h))
        assert mc_layer.mask == train_layer.mask
    assert mc_layer.stream.position == train_layer.stream.position
    mc_layer.mc = False
    assert mc_layer(h) is h  # switched off again: evaluation is the identity


@pytest.mark.parametrize("n", [1, 2, 37])
def test_mc_predict_shape_dtype_and_spread(inputs, n):
    """mean and std have the prediction's shape and dtype float64; std > 0 with an mc layer
    (n >= 2) and exactly 0 without, whose mean is the deterministic prediction."""
    net = MLP(fastdrop.Dropout(0.8, seed=3, mc=True))
    net.dropout.eval()
    mean, std = fastdrop.mc_predict(net, inputs, n)
    assert mean.shape == std.shape == (5, 3)
    assert mean.dtype == std.dtype == np.float64
    if n >= 2:
        assert np.all(std > 0)
    else:
        assert np.all(std == 0)

    plain = MLP(fastdrop.Dropout(0.8, seed=3))
    plain.dropout.eval()
    mean, std = fastdrop.mc_predict(plain, inputs, n)
    assert mean.dtype == std.dtype == np.float64
    assert np.all(std == 0)
    np.testing.assert_array_equal(mean, plain.without_dropout(inputs))


def test_mc_predict_equals_mean_and_std_of_reproduced_predictions(inputs):
    """mc_predict(forward, x, n) is the element-wise mean and population std of the n
    predictions that a re-created layer (same seed) gives when called n times by hand."""
    n = 25
    net = MLP(fastdrop.Dropout(0.7, seed=123, mc=True))
    net.dropout.eval()
    mean, std = fastdrop.mc_predict(net, inputs, n)

    again = MLP(fastdrop.Dropout(0.7, seed=123, mc=True))
    again.dropout.eval()
    predictions = np.stack([again(inputs) for _ in range(n)])
    np.testing.assert_allclose(mean, predictions.mean(axis=0), rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(std, predictions.std(axis=0), rtol=1e-10, atol=1e-14)
    assert net.dropout.stream.position == again.dropout.stream.position
    # float32 predictions are averaged in float64.
    again32 = fastdrop.Dropout(0.7, seed=123, mc=True).eval()
    h32 = MLP(None).hidden(inputs).astype(np.float32)
    mean32, std32 = fastdrop.mc_predict(again32, h32, n)
    assert mean32.dtype == std32.dtype == np.float64
    replay = fastdrop.Dropout(0.7, seed=123, mc=True).eval()
    by_hand = np.stack([replay(h32) for _ in range(n)]).astype(np.float64)
    np.testing.assert_allclose(mean32, by_hand.mean(axis=0), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(std32, by_hand.std(axis=0), rtol=1e-10, atol=1e-12)


def test_mc_predict_mean_converges_to_the_evaluation_prediction(inputs):
    """For a linear network with inverted dropout, E[prediction] is the no-dropout prediction
    (E[m / q] = 1): mc_predict's mean is within 5 std / sqrt(n) of it, and the spread does not
    vanish (it is the model's uncertainty, not a numerical error)."""
    n = 4000
    net = MLP(fastdrop.Dropout(0.8, seed=2016, mc=True), linear=True)
    net.dropout.eval()
    mean, std = fastdrop.mc_predict(net, inputs, n)
    target = net.without_dropout(inputs)
    assert np.all(std > 0.01)
    assert np.all(np.abs(mean - target) < 5 * std / math.sqrt(n))
    # And it is not trivially close: a single prediction is much further away.
    single = net(inputs)
    assert np.max(np.abs(single - target)) > 10 * np.max(np.abs(mean - target))


@pytest.mark.parametrize("n,exc", [(0, ValueError), (-1, ValueError), (1.5, TypeError),
                                   (True, TypeError), ("3", TypeError), (None, TypeError)])
def test_mc_predict_refuses_bad_n(inputs, n, exc):
    """n must be a positive int: otherwise TypeError/ValueError naming n, and forward is not
    called."""
    calls = []

    def forward(x):
        calls.append(1)
        return x

    with pytest.raises(exc) as info:
        fastdrop.mc_predict(forward, inputs, n)
    assert re.search(r"\bn\b", str(info.value)), str(info.value)
    assert calls == []


def test_mc_predict_accepts_numpy_integer_n(inputs):
    layer = fastdrop.Dropout(0.5, seed=1, mc=True).eval()
    mean, std = fastdrop.mc_predict(layer, inputs, np.int64(3))
    assert mean.shape == inputs.shape and layer.stream.position == 3 * -(-inputs.size // 16)


def test_mc_flag_refuses_non_bool():
    with pytest.raises(TypeError, match=r"\bmc\b"):
        fastdrop.Dropout(0.5, mc="yes")
