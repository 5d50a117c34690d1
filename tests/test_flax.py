"""The Flax layers, fastdrop.flax.linen.Dropout and fastdrop.flax.nnx.Dropout: Flax's interface,
the key Flax's own layer would take, fastdrop.dropout's mask for it, and an MLP that trains."""
import doctest

import numpy as np
import pytest

pytest.importorskip("flax", reason="flax is not installed: pip install \"fastdropout[flax]\" "
                                   "to test the Flax layers")
import flax.linen as nn  # noqa: E402
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
from flax import nnx  # noqa: E402

import fastdrop  # noqa: E402
import fastdrop.flax.linen as fdnn  # noqa: E402
import fastdrop.flax.nnx as fdnnx  # noqa: E402
import fastdrop.jax as fdj  # noqa: E402

RATE = 0.25


@pytest.fixture
def keys_taken(monkeypatch):
    """The keys the layers hand to fastdrop.jax.dropout, in order (eager calls only)."""
    taken = []
    dropout = fdj.dropout

    def recording(x, rate, key, **kwargs):
        taken.append(key)
        return dropout(x, rate, key, **kwargs)

    monkeypatch.setattr(fdj, "dropout", recording)
    return taken


def fastdrop_output(x, key, **kwargs):
    return fastdrop.dropout(np.asarray(x), 1 - RATE, seed=fdj.key_to_seed(key), **kwargs)[0]


def bernoulli_kept(key, shape):
    """The decisions Flax's own Dropout draws from `key`."""
    return np.asarray(jax.random.bernoulli(key, 1 - RATE, shape))


X = jax.random.normal(jax.random.key(0), (8, 32))


# ---------------------------------------------------------------------------------------------
# linen
# ---------------------------------------------------------------------------------------------

class Block(nn.Module):
    dropout: type

    @nn.compact
    def __call__(self, x, train: bool):
        return self.dropout(RATE, broadcast_dims=(0,), deterministic=not train)(x)


def test_linen_is_flax_dropout_with_fastdrop_masks(keys_taken):
    layer = fdnn.Dropout(RATE, broadcast_dims=(0,))
    assert isinstance(layer, nn.Dropout)
    key = jax.random.key(4)
    y = layer.apply({}, X, deterministic=False, rng=key)
    assert np.array_equal(y, fastdrop_output(X, key, shared_axes=0))
    assert layer.apply({}, X, deterministic=True) is X


def test_linen_takes_the_key_flax_takes(keys_taken):
    rngs = {"dropout": jax.random.key(21)}
    ours = Block(fdnn.Dropout).apply({}, X, train=True, rngs=rngs)
    (key,) = keys_taken
    assert np.array_equal(ours, fastdrop_output(X, key, shared_axes=0))
    flax_own = np.asarray(Block(nn.Dropout).apply({}, X, train=True, rngs=rngs))
    assert np.array_equal(flax_own != 0, np.broadcast_to(bernoulli_kept(key, (1, 32)), X.shape))


def test_linen_rate_one_gives_zeros_and_zero_the_input():
    key = jax.random.key(0)
    assert not np.asarray(fdnn.Dropout(1.0).apply({}, X, deterministic=False, rng=key)).any()
    assert fdnn.Dropout(0.0).apply({}, X, deterministic=False, rng=key) is X


class MLP(nn.Module):
    @nn.compact
    def __call__(self, x, train: bool):
        x = nn.relu(nn.Dense(64)(x))
        x = fdnn.Dropout(0.2, deterministic=not train)(x)
        return nn.Dense(1)(x)


def test_linen_mlp_trains_with_dropout():
    inputs = jax.random.normal(jax.random.key(1), (128, 8))
    targets = inputs @ jnp.linspace(-1.0, 1.0, 8)[:, None]
    model = MLP()
    params = model.init(jax.random.key(2), inputs, train=False)

    def loss(params, key):
        predictions = model.apply(params, inputs, train=True, rngs={"dropout": key})
        return jnp.mean((predictions - targets) ** 2)

    @jax.jit
    def step(params, key):
        value, grads = jax.value_and_grad(loss)(params, key)
        return jax.tree.map(lambda p, g: p - 0.05 * g, params, grads), value

    keys = jax.random.split(jax.random.key(3), 300)
    losses = []
    for key in keys:
        params, value = step(params, key)
        losses.append(float(value))
    assert np.mean(losses[-20:]) < 0.25 * losses[0]
    # Dropout was active: two keys, two different outputs; evaluation is deterministic.
    first, second = (model.apply(params, inputs, train=True, rngs={"dropout": key})
                     for key in keys[:2])
    assert not np.array_equal(first, second)
    assert np.array_equal(model.apply(params, inputs, train=False),
                          model.apply(params, inputs, train=False))


# ---------------------------------------------------------------------------------------------
# nnx
# ---------------------------------------------------------------------------------------------

def test_nnx_is_flax_dropout_with_fastdrop_masks(keys_taken):
    layer = fdnnx.Dropout(RATE, broadcast_dims=(1,), rngs=nnx.Rngs(dropout=5))
    assert isinstance(layer, nnx.Dropout)
    ours = layer(X)
    (key,) = keys_taken
    assert np.array_equal(ours, fastdrop_output(X, key, shared_axes=1))
    flax_own = np.asarray(nnx.Dropout(RATE, broadcast_dims=(1,), rngs=nnx.Rngs(dropout=5))(X))
    assert np.array_equal(flax_own != 0, np.broadcast_to(bernoulli_kept(key, (8, 1)), X.shape))
    explicit = jax.random.key(77)
    assert np.array_equal(layer(X, rngs=explicit), fastdrop_output(X, explicit, shared_axes=1))


def test_nnx_modes_and_missing_rngs():
    layer = fdnnx.Dropout(RATE, rngs=nnx.Rngs(dropout=0))
    layer.eval()
    assert layer(X) is X
    layer.train()
    assert not np.array_equal(layer(X), X)
    with pytest.raises(ValueError, match="rngs"):
        fdnnx.Dropout(RATE)(X)
    with pytest.raises(ValueError, match="deterministic"):
        fdnnx.Dropout(RATE, deterministic=None, rngs=nnx.Rngs(0))(X)


@pytest.mark.parametrize("module", [fdnn, fdnnx], ids=lambda m: m.__name__)
def test_docstring_examples(module):
    results = doctest.testmod(module)
    assert results.attempted > 0 and results.failed == 0
