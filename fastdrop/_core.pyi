"""Type stubs for the compiled core (fastdrop/_core.pyx); private: callers validate arguments."""
from typing import List, Optional, Tuple

import numpy as np
import numpy.typing as npt

def openmp_enabled() -> bool: ...
def default_num_threads() -> int: ...
def simd_paths() -> List[str]: ...
def simd_path() -> str: ...
def set_simd_path(name: str) -> None: ...
def set_num_threads(n: int) -> None: ...
def get_num_threads() -> int: ...
def philox_words(seed: int, high: int, first_block: int, nblocks: int) -> npt.NDArray[np.uint32]: ...
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
