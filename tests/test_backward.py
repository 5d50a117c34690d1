"""dropout_backward: the gradient of the forward call (SPEC §2 table, §4 mask storage).

Checked against its definition (mask times scale), against the forward's Jacobian (an
adjoint identity), in evaluation mode and keep_prob = 1, and end to end with finite
differences through a small NumPy network.
"""
from __future__ import annotations

import copy

import numpy as np
import pytest

import fastdrop
from fastdrop import reference
from fastdrop._stream import scale_for

# Every SIMD path the machine supports must reproduce these results bit for bit.
pytestmark = pytest.mark.usefixtures("every_simd_path")

DTYPES = [np.float32, np.float64]
MODES = ["inverted", "classic"]
STORES = ["seed", "bits"]
CASES = [  # (shape, shared_axes)
    ((7, 13), None),
    ((4, 3, 5, 6), (2, 3)),
    ((50, 8), 0),
    ((3, 1, 9), (-1,)),
    ((), None),
    ((0, 4), None),
]


def without_bits(mask):
    regenerated = copy.copy(mask)
    regenerated.bits = None
    return regenerated


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("store", STORES)
@pytest.mark.parametrize("shape,shared_axes", CASES)
def test_backward_of_ones_is_mask_times_scale(dtype, mode, store, shape, shared_axes):
    """dropout_backward(ones) == to_bool() * scale broadcast to the shape, from stored bits and
    from regenerated decisions (a wrong scale, mode or bit order breaks it)."""
    x = np.ones(shape, dtype=dtype)
    _, mask = fastdrop.dropout(x, 0.6, mode=mode, shared_axes=shared_axes, seed=21, store=store)
    assert (mask.bits is not None) == (store == "bits")
    scale = dtype(scale_for(0.6, mode, np.dtype(dtype)))
    assert scale == (1 if mode == "classic" else dtype(1 / 0.6))
    expected = np.broadcast_to(mask.to_bool(), shape) * scale
    for m in (mask, without_bits(mask)):
        dx = fastdrop.dropout_backward(np.ones(shape, dtype=dtype), m)
        assert dx.dtype == dtype and dx.shape == shape
        np.testing.assert_array_equal(dx, expected)
    if np.prod(mask.mask_shape) >= 20:
        assert 0 < mask.to_bool().sum() < mask.to_bool().size  # both branches exercised


@pytest.mark.parametrize("dtype", DTYPES)
def test_backward_reads_stored_bits(dtype):
    """With store="bits", backward uses the stored bits: flipping them flips the result
    (an implementation that ignores them and regenerates would not notice)."""
    x = np.ones((5, 40), dtype=dtype)
    _, mask = fastdrop.dropout(x, 0.5, seed=8, store="bits")
    flipped = copy.copy(mask)
    flipped.bits = ~mask.bits
    keep = mask.to_bool()
    dx = fastdrop.dropout_backward(np.ones_like(x), flipped)
    np.testing.assert_array_equal(dx != 0, ~keep)
    np.testing.assert_array_equal(dx, reference.dropout_backward(np.ones_like(x), flipped))


@pytest.mark.parametrize("x_dtype", DTYPES)
@pytest.mark.parametrize("dy_dtype", DTYPES)
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("shape,shared_axes", CASES[:4])
def test_backward_is_the_adjoint_of_forward(x_dtype, dy_dtype, mode, shape, shared_axes):
    """<dy, dropout(x)> == <dropout_backward(dy), x>: backward is the forward's
    Jacobian-transpose product, including for dy of the other dtype."""
    rng = np.random.default_rng(3)
    x = rng.standard_normal(shape).astype(x_dtype)
    dy = rng.standard_normal(shape).astype(dy_dtype)
    y, mask = fastdrop.dropout(x, 0.7, mode=mode, shared_axes=shared_axes, seed=1)
    dx = fastdrop.dropout_backward(dy, mask)
    assert dx.dtype == dy_dtype
    lhs = np.sum(dy.astype(np.float64) * y.astype(np.float64))
    rhs = np.sum(dx.astype(np.float64) * x.astype(np.float64))
    tol = 1e-12 if x_dtype == dy_dtype == np.float64 else 1e-5
    scale = np.sum(np.abs(dy.astype(np.float64) * x.astype(np.float64))) / 0.7
    assert abs(lhs - rhs) <= tol * scale
    # The identity is not vacuous: dropping differs from the identity map here.
    assert not np.allclose(y, x * (1 / 0.7 if mode == "inverted" else 1))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("store", STORES)
def test_inverted_eval_backward_returns_dy(dtype, store):
    """An evaluation-mode inverted mask passes dy through: dy itself when out is None, a copy
    into out= otherwise."""
    x = np.arange(12, dtype=dtype).reshape(3, 4)
    y, mask = fastdrop.dropout(x, 0.3, training=False, store=store)
    assert y is x and not mask.training
    dy = np.random.default_rng(0).standard_normal((3, 4)).astype(dtype)
    before = dy.copy()
    assert fastdrop.dropout_backward(dy, mask) is dy
    out = np.full_like(dy, np.nan)
    assert fastdrop.dropout_backward(dy, mask, out=out) is out
    np.testing.assert_array_equal(out, before)
    np.testing.assert_array_equal(dy, before)


@pytest.mark.parametrize("x_dtype", DTYPES)
@pytest.mark.parametrize("dy_dtype", DTYPES)
def test_classic_eval_backward_scales_by_keep_prob(x_dtype, dy_dtype):
    """An evaluation-mode classic mask gives keep_prob * dy, rounded in dy's dtype; in place
    too."""
    q = 0.3
    _, mask = fastdrop.dropout(np.ones((3, 4), x_dtype), q, training=False, mode="classic")
    dy = np.random.default_rng(0).standard_normal((3, 4)).astype(dy_dtype)
    expected = dy * dy_dtype(q)
    dx = fastdrop.dropout_backward(dy, mask)
    assert dx is not dy and dx.dtype == dy_dtype
    np.testing.assert_array_equal(dx, expected)
    fastdrop.dropout_backward(dy, mask, out=dy)
    np.testing.assert_array_equal(dy, expected)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("store", STORES)
def test_keep_prob_one_backward_passes_dy(mode, store):
    """keep_prob = 1 drops nothing and scales by 1: backward returns dy itself (or a copy into
    out=), and the stored bits are all ones."""
    x = np.ones((5, 3))
    _, mask = fastdrop.dropout(x, 1.0, mode=mode, seed=2, store=store)
    assert mask.training and mask.to_bool().all()
    if store == "bits":
        np.testing.assert_array_equal(mask.bits, np.packbits(np.ones(15, bool), bitorder="little"))
    dy = np.random.default_rng(1).standard_normal((5, 3))
    assert fastdrop.dropout_backward(dy, mask) is dy
    out = np.zeros_like(dy)
    assert fastdrop.dropout_backward(dy, mask, out=out) is out
    np.testing.assert_array_equal(out, dy)


def test_backward_does_not_touch_dy_out_of_place():
    """An out-of-place backward leaves dy as it was."""
    _, mask = fastdrop.dropout(np.ones((6, 7)), 0.5, seed=1)
    dy = np.random.default_rng(2).standard_normal((6, 7))
    before = dy.copy()
    dx = fastdrop.dropout_backward(dy, mask)
    np.testing.assert_array_equal(dy, before)
    assert dx is not dy and (dx == 0).any()


def test_backward_from_layer_matches_function():
    """Dropout.backward equals dropout_backward with the mask of the layer's last forward."""
    layer = fastdrop.Dropout(0.6, seed=3, shared_axes=1)
    x = np.random.default_rng(0).standard_normal((4, 5, 6))
    layer(x)
    layer(x)  # a second forward: backward must use the newest mask
    dy = np.random.default_rng(1).standard_normal(x.shape)
    np.testing.assert_array_equal(layer.backward(dy), fastdrop.dropout_backward(dy, layer.mask))
    assert layer.mask.start == 2 and layer.mask.mask_shape == (4, 1, 6)


# ---------------------------------------------------------------------------------------------
# Finite differences through a two-layer network
# ---------------------------------------------------------------------------------------------

KEEP = 0.7
SEED = 1234


def make_problem():
    rng = np.random.default_rng(42)
    X = rng.standard_normal((5, 4))
    W1 = rng.standard_normal((4, 6))
    W2 = rng.standard_normal((6, 3))
    T = rng.standard_normal((5, 3))
    return X, W1, W2, T


def dropout_by_function(**kwargs):
    """forward(A) -> (D, backward); the same seed every call, so the mask is held fixed."""
    def forward(A):
        D, mask = fastdrop.dropout(A, KEEP, seed=SEED, **kwargs)
        return D, lambda dD: fastdrop.dropout_backward(dD, mask)
    return forward


def dropout_by_layer(**kwargs):
    """The same with a fresh Dropout layer of the same seed for every forward."""
    def forward(A):
        layer = fastdrop.Dropout(KEEP, seed=SEED, **kwargs)
        return layer(A), layer.backward
    return forward


def loss_and_grads(X, W1, W2, T, drop):
    H = X @ W1
    A = np.maximum(H, 0)
    D, drop_backward = drop(A)
    Y = D @ W2
    loss = 0.5 * np.sum((Y - T) ** 2)
    dY = Y - T
    dW2 = D.T @ dY
    dA = drop_backward(dY @ W2.T)
    dW1 = X.T @ (dA * (H > 0))
    return loss, dW1, dW2, D, A


def numerical_grad(f, W, h=1e-6):
    grad = np.zeros_like(W)
    for index in np.ndindex(W.shape):
        saved = W[index]
        W[index] = saved + h
        plus = f()
        W[index] = saved - h
        minus = f()
        W[index] = saved
        grad[index] = (plus - minus) / (2 * h)
    return grad


def relative_error(a, b):
    return np.linalg.norm(a - b) / max(np.linalg.norm(a), np.linalg.norm(b))


@pytest.mark.parametrize("drop", [
    pytest.param(dropout_by_function(), id="function"),
    pytest.param(dropout_by_function(store="bits"), id="function_bits"),
    pytest.param(dropout_by_function(mode="classic"), id="function_classic"),
    pytest.param(dropout_by_function(shared_axes=0), id="function_shared_batch"),
    pytest.param(dropout_by_layer(), id="layer"),
    pytest.param(dropout_by_layer(shared_axes=0), id="layer_shared_batch"),
])
def test_gradients_match_finite_differences(drop):
    """Analytic W1/W2 gradients through dropout_backward match central differences to 1e-6
    (a backward with the wrong mask, scale or broadcast gives a visibly different gradient)."""
    X, W1, W2, T = make_problem()
    loss, dW1, dW2, D, A = loss_and_grads(X, W1, W2, T, drop)
    dropped = (D == 0) & (A > 0)
    assert dropped.any() and (D != 0).any(), "the mask must drop some live units"
    f = lambda: loss_and_grads(X, W1, W2, T, drop)[0]  # noqa: E731
    assert relative_error(dW2, numerical_grad(f, W2)) < 1e-6
    assert relative_error(dW1, numerical_grad(f, W1)) < 1e-6
    # Sanity of the check itself: ignoring dropout in backward gives a wrong dW1.
    _, wrong_dW1, _, _, _ = loss_and_grads(
        X, W1, W2, T, lambda a: (drop(a)[0], lambda dD: dD))
    assert relative_error(wrong_dW1, numerical_grad(f, W1)) > 1e-3
