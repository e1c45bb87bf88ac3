from typing import Optional, Sequence, Union

import numpy as np
import numpy.typing as npt

Key = Union[str, bytes, bytearray, memoryview, int]

def hash64(data: Key, seed: int = 0) -> int: ...
def hash64_many(
    keys: Union[Sequence[Key], npt.NDArray[np.uint64], npt.NDArray[np.int64]],
    seed: int = 0,
    *,
    out: Optional[npt.NDArray[np.uint64]] = None,
) -> npt.NDArray[np.uint64]: ...
def _hash64_paths() -> list[str]: ...
def _hash64_path(data: Union[bytes, bytearray, memoryview], seed: int, path: str) -> int: ...
def _hash64_ints_path(values: npt.NDArray[np.uint64], seed: int, path: str) -> npt.NDArray[np.uint64]: ...
