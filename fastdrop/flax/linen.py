"""``flax.linen.Dropout`` with fastdrop's kernels (see `fastdrop.flax`)."""
from __future__ import annotations

from typing import Optional

try:
    import flax.linen as nn
except ImportError as error:  # pragma: no cover - exercised only where flax is missing
    raise ImportError("fastdrop.flax.linen needs Flax, which is not installed: "
                      "pip install \"fastdropout[flax]\"") from error
import jax
import jax.numpy as jnp

import fastdrop.jax

__all__ = ["Dropout"]


class Dropout(nn.Dropout):
    """Drop-in for ``flax.linen.Dropout``: the same attributes (`rate`, `broadcast_dims`,
    `deterministic`, `rng_collection`) and call, masks drawn by fastdrop.

    A training call takes one key from the `rng_collection` stream (``make_rng``), as Flax's
    does, or the `rng` given, and drops with ``fastdrop.jax.dropout(inputs, rate, key,
    shared_axes=broadcast_dims)``.  ``rate == 1`` gives zeros and ``rate == 0`` or
    ``deterministic`` the inputs, as in Flax.

    Examples
    --------
    >>> import jax, jax.numpy as jnp, fastdrop.flax.linen as fdnn
    >>> layer = fdnn.Dropout(0.5)
    >>> x = jnp.ones((2, 4))
    >>> y = layer.apply({}, x, deterministic=False, rngs={"dropout": jax.random.key(0)})
    >>> sorted(set(y.ravel().tolist())) <= [0.0, 2.0]
    True
    """

    @nn.compact
    def __call__(self, inputs: jax.Array, deterministic: Optional[bool] = None,
                 rng: Optional[jax.Array] = None) -> jax.Array:
        deterministic = nn.merge_param("deterministic", self.deterministic, deterministic)
        if self.rate == 0.0 or deterministic:
            return inputs
        if self.rate == 1.0:
            return jnp.zeros_like(inputs)
        if rng is None:
            rng = self.make_rng(self.rng_collection)
        return fastdrop.jax.dropout(inputs, self.rate, rng, shared_axes=self.broadcast_dims)
