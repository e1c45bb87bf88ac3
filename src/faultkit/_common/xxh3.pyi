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
