from typing import Any, Awaitable, Callable, Optional

import numpy as np
import numpy.typing as npt

class RateLimiter:
    rate: float
    per: float
    burst: int
    timeout: float
    clock: Callable[[], float]
    sleep: Callable[[float], Any]
    async_sleep: Callable[[float], Awaitable[Any]]
    allowed: int
    refused: int
    def __init__(
        self,
        rate: float,
        per: float = 1.0,
        *,
        burst: Optional[int] = None,
        keys: int = 4096,
        timeout: float = 0.0,
        clock: Callable[[], float] = ...,
        sleep: Callable[[float], Any] = ...,
        async_sleep: Callable[[float], Awaitable[Any]] = ...,
    ) -> None: ...
    def try_acquire(self, key: Any = None, cost: int = 1) -> bool: ...
    def retry_after(self, key: Any = None, cost: int = 1) -> float: ...
    def acquire(self, key: Any = None, cost: int = 1, *, timeout: Optional[float] = None) -> None: ...
    async def acquire_async(self, key: Any = None, cost: int = 1, *, timeout: Optional[float] = None) -> None: ...
    def __enter__(self) -> "RateLimiter": ...
    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> bool: ...
    async def __aenter__(self) -> "RateLimiter": ...
    async def __aexit__(self, exc_type: Any, exc: Any, tb: Any) -> bool: ...
    def key_id(self, key: Any) -> int: ...
    def try_acquire_many(
        self, ids: npt.ArrayLike, now: Any = None, *, out: Optional[npt.NDArray[np.uint8]] = None
    ) -> npt.NDArray[np.uint8]: ...
    def metrics(self) -> dict[str, Any]: ...
