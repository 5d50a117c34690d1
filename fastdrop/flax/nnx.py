"""``flax.nnx.Dropout`` with fastdrop's kernels (see `fastdrop.flax`)."""
from __future__ import annotations

from typing import Optional, Union

try:
    from flax import nnx
except ImportError as error:  # pragma: no cover - exercised only where flax is missing
    raise ImportError("fastdrop.flax.nnx needs Flax, which is not installed: "
                      "pip install \"fastdropout[flax]\"") from error
import jax
import jax.numpy as jnp

import fastdrop.jax

__all__ = ["Dropout"]


class Dropout(nnx.Dropout):
    """Drop-in for ``flax.nnx.Dropout``: the same constructor (`rate`, `broadcast_dims`,
    `deterministic`, `rng_collection`, `rngs`) and call, masks drawn by fastdrop.

    A training call takes one key as Flax's does (from the call's `rngs`, else from the stream
    forked at construction) and drops with ``fastdrop.jax.dropout(inputs, rate, key,
    shared_axes=broadcast_dims)``.  ``rate == 1`` gives zeros and ``rate == 0`` or
    ``deterministic`` the inputs, as in Flax; ``model.train()`` and ``model.eval()`` set
    `deterministic` as for Flax's layer.

    Examples
    --------
    >>> import jax.numpy as jnp
    >>> from flax import nnx
    >>> import fastdrop.flax.nnx as fdnnx
    >>> layer = fdnnx.Dropout(0.5, rngs=nnx.Rngs(dropout=0))
    >>> y = layer(jnp.ones((2, 4)))
    >>> sorted(set(y.ravel().tolist())) <= [0.0, 2.0]
    True
    """

    def __call__(self, inputs: jax.Array, *, deterministic: Optional[bool] = None,
                 rngs: Union[nnx.Rngs, nnx.RngStream, jax.Array, None] = None) -> jax.Array:
        deterministic = deterministic if deterministic is not None else self.deterministic
        if deterministic is None:
            raise ValueError("No `deterministic` argument was given to Dropout: pass it to the "
                             "constructor or the call, or set it with model.train() / "
                             "model.eval()")
        if self.rate == 0.0 or deterministic:
            return inputs
        if self.rate == 1.0:
            return jnp.zeros_like(inputs)
        return fastdrop.jax.dropout(inputs, self.rate, self._key(rngs),
                                    shared_axes=self.broadcast_dims)

    def _key(self, rngs: Union[nnx.Rngs, nnx.RngStream, jax.Array, None]) -> jax.Array:
        """The key of a training call, where Flax's layer would take it."""
        rngs = rngs if rngs is not None else self.rngs
        if isinstance(rngs, nnx.Rngs):
            return rngs[self.rng_collection]()
        if isinstance(rngs, nnx.RngStream):
            return rngs()
        if isinstance(rngs, jax.Array):
            return rngs
        if rngs is None:
            raise ValueError("Dropout is in training mode (deterministic is False) but has no "
                             "rngs: pass rngs= to the constructor or the call")
        raise TypeError(f"rngs must be an nnx.Rngs, an nnx.RngStream or a key, got "
                        f"{type(rngs).__name__}")
