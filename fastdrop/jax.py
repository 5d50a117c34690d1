"""JAX adapter: fastdrop's kernels as a JAX function on CPU arrays, under ``jit``, ``grad`` and
``vmap``.

``dropout(x, rate, key)`` takes JAX's conventions (``rate`` is the probability that a unit is
*dropped*, as in Flax and Keras; the mask comes from a PRNG key) and gives exactly
``fastdrop.dropout(np.asarray(x), 1 - rate, seed=key_to_seed(key))``: the key's two 32-bit words
are the seed's high and low halves, so ``jax.random.key(s)`` masks as ``seed=s`` does.

The kernels run as an XLA custom call (``jax.ffi.ffi_call``): the C core's XLA FFI handler
reads the input's buffer and writes the result straight into the one XLA allocated for it, with
no Python on the way.  The handler is registered with XLA's CPU backend at the first call; where
XLA refuses it (an FFI API version this build does not follow, or a JAX without ``jax.ffi``), or
where the environment variable ``FASTDROP_JAX_ROUTE`` is ``callback``, the kernels run through
``jax.pure_callback`` instead, with the same results: that route hands them the input's buffer
as a read-only NumPy view and copies their result into JAX's buffer.  The gradient is a
``jax.custom_vjp`` whose only residual is the key: backward regenerates the decisions from it
(fastdrop's backward kernel), so nothing of the input's size is kept between the passes.

Importing this module needs JAX (``pip install "fastdropout[jax]"``); ``import fastdrop`` does
not.
"""
from __future__ import annotations

import functools
import math
import numbers
import os
from typing import Optional, Sequence, Tuple, Union

import numpy as np

try:
    import jax
    import jax.numpy as jnp
except ImportError as error:  # pragma: no cover - exercised only where jax is missing
    raise ImportError(
        "fastdrop.jax needs JAX, which is not installed: pip install \"fastdropout[jax]\"") \
        from error

import fastdrop
from fastdrop._api import SUPPORTED_DTYPES
from fastdrop._core import (DropoutMask, check_choice, check_shared_axes, threshold_for,
                            xla_ffi_handler)
from fastdrop._stream import KEEP_PROB_RESOLUTION, MODES, kernel_op, seeds_from_key_words

__all__ = ["dropout", "key_to_seed"]

_SERVED = ", ".join(dtype.name for dtype in SUPPORTED_DTYPES)


def _key_words(key) -> jax.Array:
    """The uint32 words (high, low) of a single threefry key, typed (``jax.random.key``) or raw
    (``jax.random.PRNGKey``, Keras's seeds), or a clear error."""
    if isinstance(key, (jax.Array, np.ndarray)) and jnp.issubdtype(key.dtype,
                                                                   jax.dtypes.prng_key):
        impl = jax.random.key_impl(key)
        words = jax.random.key_data(key)
        if words.shape[-1:] != (2,):
            raise TypeError(f"fastdrop.jax takes keys of JAX's default implementation, "
                            f"threefry2x32 (two 32-bit words); this key's is {impl}")
    else:
        words = key
    if getattr(words, "dtype", None) != np.uint32 or getattr(words, "shape", None) != (2,):
        raise TypeError(
            "key must be one JAX PRNG key: jax.random.key(seed), or a raw key (a uint32 "
            f"array of shape (2,), as jax.random.PRNGKey gives); got {_describe(key)}")
    return words


def _describe(value) -> str:
    if hasattr(value, "dtype") and hasattr(value, "shape"):
        return f"{type(value).__name__} of dtype {value.dtype} and shape {tuple(value.shape)}"
    return repr(value)


def key_to_seed(key) -> int:
    """The 64-bit seed with which fastdrop masks for a JAX key.

    ``dropout(x, rate, key)`` equals ``fastdrop.dropout(np.asarray(x), 1 - rate,
    seed=key_to_seed(key))``.  The key's words (high, low) are the seed's halves, so
    ``key_to_seed(jax.random.key(s)) == s`` for s in [0, 2**32), and in [0, 2**63) with
    ``jax_enable_x64`` (without it, JAX keeps a seed's low 32 bits); distinct keys give distinct
    seeds.

    Parameters
    ----------
    key : jax.Array
        One key: typed (``jax.random.key``, threefry2x32) or raw (a uint32 array of shape (2,),
        ``jax.random.PRNGKey``).  It must be concrete: under ``jit`` pass the key itself to
        `dropout`.

    Returns
    -------
    int
        The seed, in [0, 2**64).

    Raises
    ------
    TypeError
        Not a single threefry key, or a traced one.

    Examples
    --------
    >>> import jax, fastdrop.jax as fdj
    >>> fdj.key_to_seed(jax.random.key(42))
    42
    >>> fdj.key_to_seed(jax.random.PRNGKey(42))
    42
    """
    words = _key_words(key)
    if isinstance(words, jax.core.Tracer):
        raise TypeError("key_to_seed needs a concrete key (it returns a Python int), got a "
                        "traced one: under jit, pass the key itself to fastdrop.jax.dropout")
    return int(seeds_from_key_words(np.asarray(words)))


def _keep_prob(rate) -> float:
    """1 - rate for a concrete rate in [0, 1) whose 1 - rate the decisions can resolve, or an
    error in the caller's terms."""
    if isinstance(rate, jax.core.Tracer):
        raise TypeError("rate must be a concrete Python float, not a traced value: it decides "
                        "the threshold the kernels are called with")
    if isinstance(rate, (bool, np.bool_)) or not isinstance(rate, numbers.Real):
        raise TypeError(f"rate must be a real number in [0, 1), got {rate!r}")
    rate = float(rate)
    if not 0.0 <= rate < 1.0:  # NaN fails too
        raise ValueError(f"rate (the drop probability) must be in [0, 1), got {rate}")
    keep_prob = 1.0 - rate
    if keep_prob < KEEP_PROB_RESOLUTION:
        raise ValueError(f"fastdrop.jax needs 1 - rate at least 2**-32 (the resolution of its "
                         f"decisions), got rate = {rate!r}")
    return keep_prob


def _refusal(x) -> Optional[Exception]:
    """The error for an array the kernels cannot serve (a dtype they lack, or a device that is
    not the host's), None for one they serve.  A traced array has no device yet: the platform
    it will run on is that of the default device (``jax.default_device``) where one is set, as
    ``jit`` places the computation there, else JAX's default backend."""
    if x.dtype not in SUPPORTED_DTYPES:
        hint = (" (bfloat16 needs the ml_dtypes package)" if x.dtype.name == "bfloat16" else "")
        return TypeError(f"fastdrop.jax serves {_SERVED} arrays; x has dtype {x.dtype}{hint}")
    if isinstance(x, jax.core.Tracer) or not isinstance(x, jax.Array):
        device = jax.config.jax_default_device  # a Device, a platform's name, or None
        if device is None:
            platforms = {jax.default_backend()}
        else:
            platforms = {device if isinstance(device, str) else device.platform}
    else:
        platforms = {device.platform for device in x.devices()}
    if platforms != {"cpu"}:
        return ValueError(
            f"fastdrop.jax runs on the CPU; x is on {', '.join(sorted(platforms))}. Move it with "
            "jax.device_put(x, jax.devices('cpu')[0]) (under jit, make the CPU the default with "
            "jax.default_device), or use jax.random.bernoulli there")
    return None


# ---------------------------------------------------------------------------------------------
# The kernels, on the host
# ---------------------------------------------------------------------------------------------

def _host_kernel(forward: bool, member_ndim: int, keep_prob: float, mode: str,
                 axes: Tuple[int, ...], array, words) -> np.ndarray:
    """The dropout (forward) or its gradient of `array` under the key `words`, in NumPy.

    Under ``vmap`` (pure_callback's "expand_dims" method) both arrive with the same number of
    leading batch axes, each either full or of size 1 (an argument not batched at that level).
    Each key of the batch masks its own members; along a batch axis where the key is not
    batched, its mask is shared, so every member gets the mask of a call on that member alone.
    """
    array, words = np.asarray(array), np.asarray(words)
    batch_ndim = array.ndim - member_ndim
    seeds = seeds_from_key_words(words)
    out_shape = np.broadcast_shapes(array.shape[:batch_ndim], seeds.shape) + \
        array.shape[batch_ndim:]
    out = np.empty(out_shape, dtype=array.dtype)
    array = np.broadcast_to(array, out_shape)  # (zero strides, read only)
    shared_batch = tuple(axis for axis in range(batch_ndim) if seeds.shape[axis] == 1)
    region_axes = tuple(range(len(shared_batch))) + tuple(len(shared_batch) + axis
                                                          for axis in axes)
    for index in np.ndindex(seeds.shape):
        region = tuple(slice(None) if axis in shared_batch else position
                       for axis, position in enumerate(index))
        seed = int(seeds[index])
        if forward:
            fastdrop.dropout(array[region], keep_prob, mode=mode, shared_axes=region_axes,
                             seed=seed, out=out[region])
        else:
            mask = DropoutMask(array[region].shape, region_axes, keep_prob, mode, True, seed, 0,
                               0)
            fastdrop.dropout_backward(array[region], mask, out=out[region])
    return out


_FFI_TARGET = "fastdrop_dropout"
# The route that the kernels take: "ffi" where XLA takes the C core's handler, else "callback".
# FASTDROP_JAX_ROUTE=callback keeps them on the pure_callback route.
_ROUTES = ("ffi", "callback")
_preferred_route = os.environ.get("FASTDROP_JAX_ROUTE", "ffi")


@functools.lru_cache(maxsize=None)
def _ffi_registered() -> bool:
    """Registers the C core's XLA FFI handler with XLA's CPU backend (once); whether XLA took it.

    The CPU backend is started first: XLA checks a handler's FFI API version when it registers
    it with a running backend, which raises here, but a handler registered before the backend
    starts is checked as it starts, and a refusal then would fail the whole backend."""
    try:
        jax.devices("cpu")
        jax.ffi.register_ffi_target(_FFI_TARGET, xla_ffi_handler(), platform="cpu",
                                    api_version=1)
    except Exception:  # any refusal (or a JAX without jax.ffi) means: no FFI route
        return False
    return True


def _route() -> str:
    """The route that the kernels take from now on: "ffi" or "callback"."""
    if _preferred_route not in _ROUTES:
        raise ValueError(f"FASTDROP_JAX_ROUTE must be one of {', '.join(_ROUTES)}; got "
                         f"{_preferred_route!r}")
    return "ffi" if _preferred_route == "ffi" and _ffi_registered() else "callback"


def _kernel_call(forward: bool, array: jax.Array, words: jax.Array,
                 config: Tuple[float, str, Tuple[int, ...]]) -> jax.Array:
    """The kernel as a JAX operation of the result's shape and dtype, on the route `_route`
    gives.  Both batch under ``vmap`` the same way, by "expand_dims": one call for a whole
    vmapped batch, which the kernel splits by key ("sequential" would cost one call per member,
    "broadcast_all" would tile the unbatched input in memory)."""
    result = jax.ShapeDtypeStruct(array.shape, array.dtype)
    if _route() == "callback":
        callback = functools.partial(_host_kernel, forward, array.ndim, *config)
        return jax.pure_callback(callback, result, array, words, vmap_method="expand_dims")
    keep_prob, mode, axes = config
    scale, shift, dropped, affine = kernel_op(keep_prob, mode, np.dtype(array.dtype), forward)
    call = jax.ffi.ffi_call(_FFI_TARGET, result, vmap_method="expand_dims")
    return call(array, words, forward=np.int32(forward),
                threshold=np.uint32(threshold_for(keep_prob)), scale=np.float64(scale),
                shift=np.float64(shift), dropped=np.float64(dropped), affine=np.int32(affine),
                shared_axes=np.uint64(sum(1 << axis for axis in axes)))


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def _masked(x: jax.Array, words: jax.Array, config) -> jax.Array:
    return _kernel_call(True, x, words, config)


def _masked_forward(x, words, config):
    return _kernel_call(True, x, words, config), words  # the residual: two words, not a mask


def _masked_backward(config, words, dy):
    return _kernel_call(False, dy, words, config), None  # (the key has no gradient)


_masked.defvjp(_masked_forward, _masked_backward)


def dropout(x, rate: float, key, *, shared_axes: Union[None, int, Sequence[int]] = None,
            mode: str = "inverted") -> jax.Array:
    """Drop each unit of `x` with probability `rate`, with fastdrop's kernels and a JAX key.

    Parameters
    ----------
    x : jax.Array
        On the CPU; float16, bfloat16, float32 or float64 (float64 needs ``jax_enable_x64``),
        any shape.  Read in place by the kernels.
    rate : float
        The drop probability, in [0, 1) (Flax's and Keras's `rate`; fastdrop's keep_prob is
        1 - rate), a concrete Python number even under ``jit``.  0 returns `x`.
    key : jax.Array
        One PRNG key: ``jax.random.key(s)`` (threefry2x32) or a raw uint32 key of shape (2,).
        The mask is a function of the key: the same key, shape and rate give the same mask.
    shared_axes : int or sequence of int, optional
        Axes along which one decision is broadcast, as in `fastdrop.dropout` (Flax's
        ``broadcast_dims``): e.g. ``(1,)`` gives every time step of a (batch, time, features)
        array the same mask.
    mode : {"inverted", "classic", "alpha"}, optional
        The training forward of `fastdrop.dropout`'s mode; this function has no evaluation
        mode (simply do not call it, or, for "classic", multiply by 1 - rate).

    Returns
    -------
    jax.Array
        ``fastdrop.dropout(np.asarray(x), 1 - rate, seed=key_to_seed(key), ...)``'s output.
        Its gradient (``jax.grad``, ``jax.vjp``) is fastdrop's backward with the decisions
        regenerated from the key.  Under ``jax.vmap`` a batched key gives each member its own
        mask, the mask of a call on that member with its key; an unbatched key gives every
        member the same mask.  Forward-mode derivatives (``jax.jvp``) are not defined.

    Raises
    ------
    TypeError
        A dtype other than the four, a traced `rate`, or a `key` that is not one threefry key.
    ValueError
        `rate` outside [0, 1), an unknown `mode`, bad `shared_axes`, or `x` on a device other
        than the CPU (or, under ``jit``, a default backend other than the CPU).

    Examples
    --------
    >>> import jax, jax.numpy as jnp, numpy as np, fastdrop, fastdrop.jax as fdj
    >>> x = jnp.ones((2, 8))
    >>> y = jax.jit(fdj.dropout, static_argnums=1)(x, 0.5, jax.random.key(3))
    >>> expected, _ = fastdrop.dropout(np.asarray(x), 0.5, seed=3)
    >>> bool(np.array_equal(y, expected))
    True
    >>> g = jax.grad(lambda x: fdj.dropout(x, 0.5, jax.random.key(3)).sum())(x)
    >>> bool(np.array_equal(g, expected))
    True
    """
    keep_prob = _keep_prob(rate)
    mode = check_choice("mode", mode, MODES)
    if not isinstance(x, jax.Array):
        x = jnp.asarray(x)
    refusal = _refusal(x)
    if refusal is not None:
        raise refusal
    axes = check_shared_axes(shared_axes, x.ndim)
    words = _key_words(key)
    if keep_prob == 1.0 or math.prod(x.shape) == 0:
        return x  # nothing to drop (fastdrop.dropout also returns x itself for keep_prob 1)
    return _masked(x, words, (keep_prob, mode, axes))
