"""fastdrop: fast, reproducible dropout for NumPy on the CPU.

One compiled pass over memory draws the keep/drop decisions (counter-based Philox4x32-10),
applies them and scales the kept values; backward masks the gradient the same way, regenerating
the decisions from three integers instead of storing a mask.  The user guide (docs/guide/)
states the contract: the semantics, the random stream, mask storage.
"""
from fastdrop._api import (Dropout, default_stream, dropout, dropout_backward, get_num_threads,
                           manual_seed, mc_predict, set_num_threads, simd_path)
from fastdrop._core import DropoutMask, Stream

__version__ = "0.1.0"

__all__ = [
    "Dropout",
    "DropoutMask",
    "Stream",
    "default_stream",
    "dropout",
    "dropout_backward",
    "get_num_threads",
    "manual_seed",
    "mc_predict",
    "set_num_threads",
    "simd_path",
]
