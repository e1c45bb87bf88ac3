from typing import Dict, Iterable, List, Mapping, Optional, Sequence, Union, overload

import numpy as np
import numpy.typing as npt

from faultkit.balance._ring import _Balancer

Key = Union[str, bytes, bytearray, memoryview, int]
Node = Union[str, bytes]
Weights = Union[Mapping[Node, float], Sequence[float], None]

MAGLEV_TABLE_SIZE: int

@overload
def jump_hash(key: Key, num_buckets: int, *, seed: int = 0) -> int: ...
@overload
def jump_hash(
    key: Union[npt.NDArray[np.uint64], npt.NDArray[np.int64]], num_buckets: int, *, seed: int = 0
) -> npt.NDArray[np.int32]: ...

# Internal, for tests: the array kernels this CPU runs, and one kernel by name.
def _jump_hash_paths() -> List[str]: ...
def _jump_hash_path(key: npt.NDArray[np.uint64], num_buckets: int, path: str) -> npt.NDArray[np.int32]: ...

class _TableBalancer(_Balancer):
    @property
    def seed(self) -> int: ...

class Rendezvous(_TableBalancer):
    def get(self, key: Key, /) -> Node: ...
    def get_hash(self, h: int) -> Node: ...
    def get_many(
        self,
        keys: Union[Sequence[Key], npt.NDArray[np.uint64]],
        *,
        out: Optional[npt.NDArray[np.int32]] = None,
    ) -> npt.NDArray[np.int32]: ...
    def distribution(self) -> Dict[Node, float]: ...
    def __init__(self, nodes: Iterable[Node] = (), weights: Weights = None, *, seed: int = 0) -> None: ...
    def get_n(self, key: Key, n: int) -> List[Node]: ...

class Maglev(_TableBalancer):
    def get(self, key: Key, /) -> Node: ...
    def get_hash(self, h: int) -> Node: ...
    def get_many(
        self,
        keys: Union[Sequence[Key], npt.NDArray[np.uint64]],
        *,
        out: Optional[npt.NDArray[np.int32]] = None,
    ) -> npt.NDArray[np.int32]: ...
    def distribution(self) -> Dict[Node, float]: ...
    def __init__(
        self,
        nodes: Iterable[Node] = (),
        weights: Weights = None,
        *,
        table_size: int = 65537,
        seed: int = 0,
    ) -> None: ...
    def lookup_table(self) -> npt.NDArray[np.int32]: ...
    @property
    def table_size(self) -> int: ...
