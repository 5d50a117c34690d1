"""Keras 3 adapter: `Dropout`, ``keras.layers.Dropout`` with fastdrop's kernels on the CPU.

On the jax backend the layer calls `fastdrop.jax.dropout`, on the torch backend the kernels of
`fastdrop.torch`, for CPU inputs of the dtypes fastdrop serves; anywhere else (another backend, a
GPU, another dtype, a `noise_shape` that is not a pattern of shared axes, rate 1) it is
Keras's own layer.  Either way, a training call draws one seed from the layer's
``SeedGenerator``, so ``keras.utils.set_random_seed`` and the layer's `seed` govern the masks as
they govern Keras's: the draw, words (seed, counter), masks as
``fastdrop.dropout(x, 1 - rate, seed=seed << 32 | counter)``.

Importing this module needs Keras 3 (``pip install "fastdropout[keras]"``) and the backend's
framework; the backend is Keras's (``KERAS_BACKEND``), fixed when Keras is imported.
"""
from __future__ import annotations

from typing import Optional, Tuple

try:
    import keras
except ImportError as error:
    if error.name not in (None, "keras"):
        # Keras is there but its backend is not: Keras imports the backend's framework first.
        raise ImportError(f"Keras's backend needs {error.name!r}, which is not installed: set "
                          "KERAS_BACKEND to jax or torch (the backends fastdrop serves) before "
                          "importing Keras, or install that framework") from error
    raise ImportError("fastdrop.keras needs Keras 3, which is not installed: "
                      "pip install \"fastdropout[keras]\"") from error

from fastdrop._stream import KEEP_PROB_RESOLUTION, seeds_from_key_words

__all__ = ["Dropout"]

_BACKEND = keras.backend.backend()
if _BACKEND == "jax":
    import fastdrop.jax as _fastdrop_jax
elif _BACKEND == "torch":
    import fastdrop.torch as _fastdrop_torch


def _shared_axes(noise_shape: Optional[tuple], shape: tuple) -> Optional[Tuple[int, ...]]:
    """Keras's `noise_shape` for an input of `shape` as fastdrop's shared axes (those of size 1
    where the input's is not), or None where it is not such a pattern."""
    if noise_shape is None:
        return ()
    if len(noise_shape) != len(shape):
        return None
    axes = []
    for axis, (noise, size) in enumerate(zip(noise_shape, shape)):
        if noise is None or noise == size:
            continue
        if noise != 1:
            return None
        axes.append(axis)
    return tuple(axes)


class Dropout(keras.layers.Dropout):
    """Drop-in for ``keras.layers.Dropout`` (`rate`, `noise_shape`, `seed`) that masks with
    fastdrop's kernels on the jax and torch backends, for CPU inputs of dtype float16,
    bfloat16, float32 or float64, and is Keras's own layer otherwise.

    Each training call draws the next seed of the layer's SeedGenerator, the words (seed,
    counter), and masks as ``fastdrop.dropout(x, 1 - rate, seed=seed << 32 | counter,
    shared_axes=...)``, the axes where `noise_shape` is 1: the same masks on both backends.

    Examples
    --------
    >>> import numpy as np, keras, fastdrop.keras as fdk
    >>> layer = fdk.Dropout(0.5, seed=7)
    >>> y = keras.ops.convert_to_numpy(layer(np.ones((2, 4), "float32"), training=True))
    >>> sorted(set(y.ravel().tolist())) <= [0.0, 2.0]
    True
    """

    def call(self, inputs, training=False):
        if not training or self.rate == 0:
            return inputs
        axes = _shared_axes(self.noise_shape, tuple(inputs.shape))
        # A keep probability finer than the decisions resolve (rate 1 included) is Keras's.
        if 1 - self.rate < KEEP_PROB_RESOLUTION or axes is None or not self._served(inputs):
            return super().call(inputs, training=training)
        words = self.seed_generator.next()
        if _BACKEND == "jax":
            return _fastdrop_jax.dropout(inputs, self.rate, words, shared_axes=axes)
        seed = int(seeds_from_key_words(words.cpu().numpy()))
        return _fastdrop_torch._dropout(inputs, float(self.rate), True, False, "inverted", axes,
                                        seed, 0, None)

    @staticmethod
    def _served(inputs) -> bool:
        """Whether fastdrop's kernels take `inputs` on this backend."""
        if _BACKEND == "jax":
            return _fastdrop_jax._refusal(inputs) is None
        if _BACKEND == "torch":
            return _fastdrop_torch._serves(inputs)
        return False
