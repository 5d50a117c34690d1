"""One Keras backend's run for test_keras.py (not a test module itself): Keras fixes its backend
when it is imported, so each backend runs in a process of its own.

Usage: KERAS_BACKEND=jax|torch [FASTDROP_JAX_ROUTE=ffi|callback] python _keras_worker.py OUTPUT.npz

Records every call of fastdrop.dropout (the NumPy kernel that the torch backend's path and the
jax backend's pure_callback route end in; the jax backend's FFI route calls the C core from XLA)
by its seed, then: (1) one eager training call of fastdrop.keras.Dropout, with the SeedGenerator's
words before it; (2) a call with a noise_shape; (3) one with rate 1, which Keras's own
layer serves; (4) model.fit of a small MLP with the layer.
Writes inputs, outputs, words, seeds, losses and step counts to OUTPUT.npz for the parent test.
"""
import sys

import numpy as np

import fastdrop

SEED_OF_LAYER = 5
STEPS_PER_EPOCH, EPOCHS, BATCH = 4, 6, 16
RATE = 0.3


def main() -> None:
    output = sys.argv[1]
    calls = []
    kernel = fastdrop.dropout

    def recording_dropout(*args, **kwargs):
        stream = kwargs.get("stream")
        calls.append(kwargs["seed"] if stream is None else stream.seed)
        return kernel(*args, **kwargs)

    fastdrop.dropout = recording_dropout
    import keras  # here: importing this module (as test_keras.py does) must change nothing

    import fastdrop.keras as fdk

    def words(layer):
        return keras.ops.convert_to_numpy(layer.seed_generator.state.value)

    rng = np.random.default_rng(0)
    x = rng.standard_normal((6, 40)).astype("float32")

    layer = fdk.Dropout(RATE, seed=123)
    eager_words = words(layer)
    eager = keras.ops.convert_to_numpy(layer(x, training=True))
    evaluation = keras.ops.convert_to_numpy(layer(x, training=False))

    shared = fdk.Dropout(RATE, noise_shape=(1, 40), seed=9)
    shared_words = words(shared)
    shared_out = keras.ops.convert_to_numpy(shared(x, training=True))

    calls_before_rate_one = len(calls)  # rate 1: Keras's own layer (zeros), not fastdrop's
    rate_one = keras.ops.convert_to_numpy(fdk.Dropout(1.0)(x, training=True))
    # Keep probabilities finer than fastdrop's decisions resolve (2**-32) are Keras's too.
    fdk.Dropout(1 - 2.0**-40)(x, training=True)
    rate_one_calls = len(calls) - calls_before_rate_one

    keras.utils.set_random_seed(1)
    inputs = rng.standard_normal((STEPS_PER_EPOCH * BATCH, 8)).astype("float32")
    targets = inputs @ np.linspace(-1, 1, 8, dtype="float32")[:, None]
    model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(64, activation="relu"),
                              fdk.Dropout(0.2, seed=SEED_OF_LAYER), keras.layers.Dense(1)])
    model.compile(optimizer=keras.optimizers.SGD(0.05), loss="mse")
    calls_before_fit = len(calls)
    history = model.fit(inputs, targets, batch_size=BATCH, epochs=EPOCHS, verbose=0,
                        shuffle=False)
    dropout_layer, = (layer for layer in model.layers if isinstance(layer, fdk.Dropout))
    route = (sys.modules["fastdrop.jax"]._route() if keras.backend.backend() == "jax"
             else "none")
    np.savez(output, backend=keras.backend.backend(), route=route,
             words_after_fit=words(dropout_layer), x=x, eager=eager, eager_words=eager_words,
             evaluation=evaluation, rate_one=rate_one,
             rate_one_calls=rate_one_calls, shared=shared_out, shared_words=shared_words,
             fit_seeds=np.array(calls[calls_before_fit:], dtype=np.uint64),
             losses=np.array(history.history["loss"]))


if __name__ == "__main__":
    main()
