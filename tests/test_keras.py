"""The Keras 3 layer, fastdrop.keras.Dropout, on the jax and torch backends: fastdrop's kernel
called (not Keras's dropout), masks equal to fastdrop.dropout's for the seed its SeedGenerator
gave, shared axes from noise_shape, and a model that trains.  Keras fixes its backend at import,
so each backend runs tests/_keras_worker.py in a process of its own."""
import importlib.util
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest

# Found, not imported: importing Keras here would fix this process's backend (TensorFlow unless
# KERAS_BACKEND says otherwise).
if importlib.util.find_spec("keras") is None:
    pytest.skip("keras is not installed: pip install \"fastdropout[keras]\" to test the Keras "
                "layer", allow_module_level=True)

import fastdrop  # noqa: E402
from fastdrop._stream import seeds_from_key_words  # noqa: E402

WORKER = pathlib.Path(__file__).with_name("_keras_worker.py")
PACKAGE_PARENT = str(pathlib.Path(fastdrop.__file__).resolve().parents[1])


def run_worker(backend, directory, route):
    if importlib.util.find_spec(backend) is None:
        pytest.skip(f"{backend} is not installed: the Keras layer's {backend} backend is not "
                    "tested")
    sys.path.insert(0, str(WORKER.parent))
    try:
        import _keras_worker as worker
    finally:
        sys.path.pop(0)
    output = directory / "result.npz"
    env = dict(os.environ, KERAS_BACKEND=backend, PYTHONPATH=PACKAGE_PARENT, OMP_NUM_THREADS="1",
               FASTDROP_JAX_ROUTE=route if backend == "jax" else "ffi")
    done = subprocess.run([sys.executable, str(WORKER), str(output)], cwd=directory, env=env,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stdout
    with np.load(output) as result:
        return worker, dict(result)


@pytest.mark.parametrize("backend, route",
                         [("jax", "ffi"), ("jax", "callback"), ("torch", "none")])
def test_keras_layer_runs_fastdrop(backend, route, tmp_path):
    worker, result = run_worker(backend, tmp_path, route)
    assert str(result["backend"]) == backend
    assert str(result["route"]) == route
    x = result["x"]
    # An eager training call: fastdrop.dropout's output for the words the SeedGenerator gave.
    seed = int(seeds_from_key_words(result["eager_words"]))
    assert seed == 123 << 32  # a layer's first draw: (its seed, counter 0)
    expected, _ = fastdrop.dropout(x, 1 - worker.RATE, seed=seed)
    assert np.array_equal(result["eager"], expected)
    assert np.array_equal(result["evaluation"], x)
    # noise_shape (1, 40): one mask shared by the batch axis.
    seed = int(seeds_from_key_words(result["shared_words"]))
    expected, _ = fastdrop.dropout(x, 1 - worker.RATE, seed=seed, shared_axes=0)
    assert np.array_equal(result["shared"], expected)
    # Rate 1, and a rate whose keep probability is below 2**-32: Keras's own layer served them.
    assert not result["rate_one"].any() and result["rate_one_calls"] == 0
    # model.fit: fastdrop's kernel ran once per step, seeded by each draw of the layer's
    # generator in turn, (seed, step).
    steps = worker.STEPS_PER_EPOCH * worker.EPOCHS
    expected_seeds = [worker.SEED_OF_LAYER << 32 | step for step in range(steps)]
    # On the FFI route XLA calls the C core directly, where no Python sees the seeds; the
    # generator still gave one draw per step.
    assert result["fit_seeds"].tolist() == ([] if route == "ffi" else expected_seeds)
    assert result["words_after_fit"].tolist() == [worker.SEED_OF_LAYER, steps]
    losses = result["losses"]
    assert losses[-1] < 0.5 * losses[0]


def test_a_missing_backend_is_named_not_keras(tmp_path):
    """With KERAS_BACKEND naming a framework that is not installed, the error names the backend
    and how to choose another, not "Keras is not installed"."""
    env = dict(os.environ, KERAS_BACKEND="tensorflow", PYTHONPATH=PACKAGE_PARENT)
    if importlib.util.find_spec("tensorflow") is not None:
        pytest.skip("tensorflow is installed: its backend imports")
    done = subprocess.run([sys.executable, "-c", "import fastdrop.keras"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode != 0
    last_line = done.stderr.strip().splitlines()[-1]
    assert "'tensorflow'" in last_line and "KERAS_BACKEND" in last_line
    assert "not installed: pip install" not in last_line
