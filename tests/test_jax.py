"""The JAX adapter, fastdrop.jax: the same bits as fastdrop.dropout for the key's seed, eager
and under jit, grad (the key the only residual) and vmap; key_to_seed; shared axes, modes,
dtypes and refusals."""
import doctest

import numpy as np
import pytest

jax = pytest.importorskip(
    "jax", reason="jax is not installed: pip install \"fastdropout[jax]\" to test the JAX adapter")
import jax.numpy as jnp  # noqa: E402

import fastdrop  # noqa: E402
import fastdrop.jax as fdj  # noqa: E402
from fastdrop._api import SUPPORTED_DTYPES  # noqa: E402

DTYPES = [dtype.name for dtype in SUPPORTED_DTYPES]
RATE = 0.3


def bits(array) -> bytes:
    """The bytes of an array, so that +0.0 and -0.0 (or two NaNs) are told apart."""
    array = np.asarray(array)
    return array.dtype.name.encode() + str(array.shape).encode() + array.tobytes()


def expected(x, rate, key, **kwargs):
    return fastdrop.dropout(np.asarray(x), 1 - rate, seed=fdj.key_to_seed(key), **kwargs)


def normal(shape, dtype="float32", seed=0):
    return jax.random.normal(jax.random.key(seed), shape, dtype=jnp.float32).astype(dtype)


@pytest.fixture
def x64():
    with jax.enable_x64(True):
        yield


# ---------------------------------------------------------------------------------------------
# The same output as fastdrop.dropout
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", DTYPES)
def test_eager_and_jit_equal_fastdrop(dtype, x64):
    x, key = normal((5, 7, 3), dtype), jax.random.key(11)
    y, _ = expected(x, RATE, key)
    assert bits(fdj.dropout(x, RATE, key)) == bits(y)
    jitted = jax.jit(fdj.dropout, static_argnums=1)
    assert bits(jitted(x, RATE, key)) == bits(y)
    assert 0 < np.count_nonzero(y) < y.size


@pytest.mark.parametrize("mode", ["inverted", "classic", "alpha"])
def test_modes_equal_fastdrop(mode):
    x, key = normal((64, 9)), jax.random.key(3)
    y, _ = expected(x, RATE, key, mode=mode)
    run = jax.jit(lambda x, key: fdj.dropout(x, RATE, key, mode=mode))
    assert bits(run(x, key)) == bits(y)


@pytest.mark.parametrize("axes", [0, (1,), (-1,), (0, 2), (-3, -1)])
def test_shared_axes_equal_fastdrop(axes):
    x, key = normal((6, 5, 4)), jax.random.key(5)
    y, mask = expected(x, RATE, key, shared_axes=axes)
    out = jax.jit(lambda x, key: fdj.dropout(x, RATE, key, shared_axes=axes))(x, key)
    assert bits(out) == bits(y)
    kept = np.asarray(out) != 0
    for axis in np.atleast_1d(axes):  # the decisions are constant along each shared axis
        assert np.array_equal(kept, np.broadcast_to(kept.any(axis=int(axis), keepdims=True),
                                                    kept.shape))


def test_typed_and_raw_keys_give_the_same_mask():
    x = normal((100,))
    typed, raw = jax.random.key(2024), jax.random.PRNGKey(2024)
    assert fdj.key_to_seed(typed) == fdj.key_to_seed(raw) == 2024
    assert bits(fdj.dropout(x, RATE, typed)) == bits(fdj.dropout(x, RATE, raw))


def test_rate_zero_and_empty_arrays_are_returned_as_they_are():
    x, key = normal((4, 4)), jax.random.key(0)
    assert fdj.dropout(x, 0.0, key) is x
    empty = jnp.zeros((0, 3))
    assert fdj.dropout(empty, RATE, key).shape == (0, 3)


# ---------------------------------------------------------------------------------------------
# Gradients
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("mode", ["inverted", "classic", "alpha"])
def test_grad_is_the_mask_scaled_upstream_gradient(mode):
    x, key = normal((32, 16)), jax.random.key(8)
    upstream = normal((32, 16), seed=1)
    _, mask = expected(x, RATE, key, mode=mode)

    def loss(x):
        return jnp.sum(fdj.dropout(x, RATE, key, mode=mode) * upstream)

    for grad in (jax.grad(loss), jax.jit(jax.grad(loss))):
        gradient = np.asarray(grad(x))
        assert bits(gradient) == bits(fastdrop.dropout_backward(np.asarray(upstream), mask))
    # Independently of fastdrop's backward: the kept units' upstream gradient, scaled.
    scale = {"inverted": 1 / (1 - RATE), "classic": 1.0}.get(mode)
    if scale is not None:
        keep = mask.to_bool()
        np.testing.assert_allclose(gradient, np.where(keep, np.asarray(upstream) * scale, 0),
                                   rtol=1e-6)


def test_backward_keeps_the_key_not_a_mask():
    x, key = normal((256, 256)), jax.random.key(1)
    y, pullback = jax.vjp(lambda x: fdj.dropout(x, RATE, key), x)
    residuals = jax.tree_util.tree_leaves(pullback)
    assert residuals and max(np.size(leaf) for leaf in residuals) <= 2
    _, mask = expected(x, RATE, key)
    ones = np.ones(x.shape, np.float32)
    assert bits(pullback(jnp.asarray(ones))[0]) == bits(fastdrop.dropout_backward(ones, mask))


# ---------------------------------------------------------------------------------------------
# vmap: a batch of keys gives each member the mask of a call on that member with its key
# ---------------------------------------------------------------------------------------------

def loop(function, *columns):
    return np.stack([np.asarray(function(*members)) for members in zip(*columns)])


def test_vmap_over_keys_and_inputs_equals_a_loop():
    x = normal((4, 6, 5))
    keys = jax.random.split(jax.random.key(9), 4)

    def drop(x, key):
        return fdj.dropout(x, RATE, key, shared_axes=-1)

    assert bits(jax.jit(jax.vmap(drop))(x, keys)) == bits(loop(drop, x, keys))
    raw_keys = jax.random.key_data(keys)
    assert bits(jax.vmap(drop)(x, raw_keys)) == bits(loop(drop, x, keys))


def test_vmap_over_keys_of_one_input_equals_a_loop():
    x = normal((6, 5))
    keys = jax.random.split(jax.random.key(4), 3)
    batched = jax.vmap(lambda key: fdj.dropout(x, RATE, key))(keys)
    assert bits(batched) == bits(loop(lambda key: fdj.dropout(x, RATE, key), keys))
    assert len({bits(member) for member in np.asarray(batched)}) == 3


def test_vmap_with_one_key_gives_every_member_its_mask():
    x = normal((3, 40))
    key = jax.random.key(6)
    batched = np.asarray(jax.vmap(lambda x: fdj.dropout(x, RATE, key))(x))
    assert bits(batched) == bits(loop(lambda x: fdj.dropout(x, RATE, key), x))
    kept = batched != 0
    assert (kept == kept[0]).all()


def test_nested_vmap_with_keys_batched_on_the_outer_axis():
    x = normal((3, 4, 8))
    keys = jax.random.split(jax.random.key(12), 3)

    def drop(x, key):
        return fdj.dropout(x, RATE, key)

    nested = jax.vmap(jax.vmap(drop, in_axes=(0, None)), in_axes=(0, 0))(x, keys)
    looped = np.stack([loop(lambda row: drop(row, keys[i]), x[i]) for i in range(3)])
    assert bits(nested) == bits(looped)


def test_vmap_of_grad_equals_a_loop():
    x, upstream = normal((5, 12)), normal((5, 12), seed=2)
    keys = jax.random.split(jax.random.key(13), 5)

    def gradient(x, upstream, key):
        return jax.grad(lambda x: jnp.sum(fdj.dropout(x, RATE, key) * upstream))(x)

    assert bits(jax.jit(jax.vmap(gradient))(x, upstream, keys)) == \
        bits(loop(gradient, x, upstream, keys))


# ---------------------------------------------------------------------------------------------
# key_to_seed
# ---------------------------------------------------------------------------------------------

def test_key_to_seed_is_the_seed_of_jax_random_key(x64):
    for seed in (0, 1, 2**32 - 1, 2**32, 2**63 - 1):
        assert fdj.key_to_seed(jax.random.key(seed)) == seed
    assert fdj.key_to_seed(jax.random.key(-1)) == 2**64 - 1  # (JAX takes -1 as 2**64 - 1)


def test_key_to_seed_is_deterministic_and_distinct():
    keys = jax.random.split(jax.random.key(0), 2000)
    seeds = [fdj.key_to_seed(key) for key in keys]
    assert seeds == [fdj.key_to_seed(key) for key in keys]
    assert len(set(seeds)) == len(seeds)
    assert len({fdj.key_to_seed(jax.random.fold_in(keys[0], i)) for i in range(100)}) == 100


def test_key_to_seed_refuses_traced_and_foreign_keys():
    with pytest.raises(TypeError, match="concrete key"):
        jax.jit(fdj.key_to_seed)(jax.random.key(0))
    with pytest.raises(TypeError, match="threefry2x32"):
        fdj.key_to_seed(jax.random.key(0, impl="rbg"))
    for key in (jnp.zeros(3, jnp.uint32), jnp.zeros(2, jnp.int32), 7,
                jax.random.split(jax.random.key(0), 2)):
        with pytest.raises(TypeError, match="key must be one JAX PRNG key"):
            fdj.key_to_seed(key)


# ---------------------------------------------------------------------------------------------
# Refusals
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("rate", [-0.1, 1.0, 1.5, float("nan"), 1 - 2**-40])
def test_bad_rates(rate):
    with pytest.raises(ValueError, match="rate"):
        fdj.dropout(normal((4,)), rate, jax.random.key(0))


def test_rate_must_be_a_concrete_number():
    x, key = normal((4,)), jax.random.key(0)
    with pytest.raises(TypeError, match="rate"):
        fdj.dropout(x, True, key)
    with pytest.raises(TypeError, match="concrete"):
        jax.jit(fdj.dropout)(x, 0.5, key)


@pytest.mark.parametrize("dtype", ["int32", "uint8", "bool", "complex64"])
def test_bad_dtypes(dtype):
    with pytest.raises(TypeError, match=f"x has dtype {dtype}"):
        fdj.dropout(jnp.zeros(4, dtype), 0.5, jax.random.key(0))


def test_bad_mode_axes_and_key():
    x, key = normal((4, 3)), jax.random.key(0)
    with pytest.raises(ValueError, match="mode"):
        fdj.dropout(x, 0.5, key, mode="gaussian")
    with pytest.raises(ValueError, match="shared_axes"):
        fdj.dropout(x, 0.5, key, shared_axes=2)
    with pytest.raises(ValueError, match="more than once"):
        fdj.dropout(x, 0.5, key, shared_axes=(0, -2))
    with pytest.raises(TypeError, match="key must be one JAX PRNG key"):
        fdj.dropout(x, 0.5, jax.random.split(key, 2))


def test_other_platforms_are_refused(monkeypatch):
    """Under tracing the array has no device: the default backend is where it will run."""
    monkeypatch.setattr(jax, "default_backend", lambda: "gpu")
    with pytest.raises(ValueError, match="runs on the CPU; x is on gpu"):
        jax.make_jaxpr(lambda x: fdj.dropout(x, 0.5, jax.random.key(0)))(normal((4,)))


def test_docstring_examples():
    results = doctest.testmod(fdj)
    assert results.attempted > 0 and results.failed == 0
