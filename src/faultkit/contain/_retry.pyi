import random
from typing import Any, Awaitable, Callable, Iterable, Optional, Type, TypeVar, Union

T = TypeVar("T")
ExcTypes = Union[Type[BaseException], Iterable[Type[BaseException]]]

class RetryBudget:
    ratio: float
    min_per_second: float
    window: int
    clock: Callable[[], float]
    refused: int
    def __init__(
        self,
        *,
        ratio: float = 0.2,
        min_per_second: float = 10.0,
        window: int = 10,
        clock: Callable[[], float] = ...,
    ) -> None: ...
    def record_request(self) -> None: ...
    def try_retry(self) -> bool: ...
    def metrics(self) -> dict[str, int]: ...

class Retry:
    attempts: int
    backoff: float
    multiplier: float
    max_backoff: float
    jitter: str
    retry_on: tuple[Type[BaseException], ...]
    retry_if_result: Optional[Callable[[Any], Any]]
    deadline: float
    budget: Optional[RetryBudget]
    clock: Callable[[], float]
    sleep: Callable[[float], Any]
    async_sleep: Callable[[float], Awaitable[Any]]
    rng: random.Random
    calls: int
    retries: int
    gave_up: int
    def __init__(
        self,
        attempts: int = 3,
        *,
        backoff: float = 0.1,
        multiplier: float = 2.0,
        max_backoff: float = 10.0,
        jitter: str = "full",
        retry_on: ExcTypes = ...,
        retry_if_result: Optional[Callable[[Any], Any]] = None,
        deadline: Optional[float] = None,
        budget: Optional[RetryBudget] = None,
        clock: Callable[[], float] = ...,
        sleep: Callable[[float], Any] = ...,
        async_sleep: Callable[[float], Awaitable[Any]] = ...,
        rng: Optional[random.Random] = None,
    ) -> None: ...
    def call(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> T: ...
    def __call__(self, fn: Callable[..., T]) -> Callable[..., T]: ...
    def metrics(self) -> dict[str, int]: ...
