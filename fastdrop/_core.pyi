"""Type stubs for the compiled module (fastdrop/_core.pyx): the C core's entry points, which
trust their callers, and the front end, which checks every argument."""
from typing import Any, Callable, Dict, List, Optional, Tuple

import numpy as np
import numpy.typing as npt

from fastdrop._stream import DropoutMask, Stream

def openmp_enabled() -> bool: ...
def default_num_threads() -> int: ...
def simd_paths() -> List[str]: ...
def simd_path() -> str: ...
def set_simd_path(name: str) -> None: ...
def set_num_threads(n: int) -> None: ...
def get_num_threads() -> int: ...
def philox_words(
    seed: int, high: int, first_block: int, nblocks: int
) -> npt.NDArray[np.uint32]: ...
def mask_generate(
    shape: Tuple[int, ...],
    shared_axes: Tuple[int, ...],
    seed: int,
    subsequence: int,
    start: int,
    threshold: int,
    keep_all: bool,
    nbytes: int,
) -> npt.NDArray[np.uint8]: ...
DTYPE_F16: int
DTYPE_BF16: int
DTYPE_F32: int
DTYPE_F64: int

def apply(
    forward: bool,
    x: np.ndarray,
    out: np.ndarray,
    shared_axes: Tuple[int, ...],
    seed: int,
    subsequence: int,
    start: int,
    threshold: int,
    keep_all: bool,
    op: Tuple[float, float, float, bool],
    dtype: int,
    bits: Optional[npt.NDArray[np.uint8]],
) -> None: ...

# The front end shared by fastdrop's functions and fastdrop.reference.
Engine = Callable[
    [bool, np.ndarray, np.ndarray, DropoutMask, Tuple[float, float, float, bool]], None
]

STORAGE_TYPES: Dict[np.dtype, int]
STORES: Tuple[str, ...]

def check_array(name: str, a: Any) -> int: ...
def check_out(out: Any, like: np.ndarray, like_name: str) -> int: ...
def check_keep_prob(keep_prob: Any) -> float: ...
def check_choice(name: str, value: Any, choices: Tuple[str, ...]) -> str: ...
def check_flag(name: str, value: Any) -> bool: ...
def check_shared_axes(shared_axes: Any, ndim: int) -> Tuple[int, ...]: ...
def forward(
    engine: Optional[Engine],
    x: Any,
    keep_prob: Any,
    training: Any,
    mode: Any,
    shared_axes: Any,
    seed: Any,
    stream: Optional[Stream],
    out: Optional[np.ndarray],
    store: Any,
) -> Tuple[np.ndarray, DropoutMask]: ...
def backward(
    engine: Optional[Engine], dy: Any, mask: Any, out: Optional[np.ndarray]
) -> np.ndarray: ...
