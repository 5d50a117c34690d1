"""Flax modules that drop with fastdrop's kernels: `fastdrop.flax.linen.Dropout` for
``flax.linen.Dropout`` and `fastdrop.flax.nnx.Dropout` for ``flax.nnx.Dropout``.

Each is a subclass of Flax's own, with its attributes and call signature, and masks with
`fastdrop.jax.dropout` from the key Flax would have given its own dropout: the mask is
``fastdrop.dropout``'s for ``seed=fastdrop.jax.key_to_seed(key)``.  CPU arrays only (see
`fastdrop.jax`).  Importing them needs Flax (``pip install "fastdropout[flax]"``).
"""
