"""Time limits for calls: :class:`TimeLimiter` (resilience4j's TimeLimiter).

A coroutine that overruns its limit is cancelled with the message
``TIME_LIMIT_MESSAGE``: a :class:`~faultkit.CircuitBreaker` around it reads the
message and counts the call as timed out (a failure, by default), while a
cancellation without it (the caller's own) counts as nothing.  The caller of
the limiter gets ``TimeoutError``.
"""

import asyncio
import concurrent.futures
import functools
import inspect
import math
import threading
from typing import Optional

__all__ = ["TimeLimiter", "TIME_LIMIT_MESSAGE"]

#: The message a TimeLimiter cancels an overrunning coroutine with (read by CircuitBreaker).
TIME_LIMIT_MESSAGE = "faultkit: time limit exceeded"


def _seconds(value, name):
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number of seconds, not {type(value).__name__}")
    if not (value > 0 and math.isfinite(value)):
        raise ValueError(f"{name} must be a finite number of seconds > 0, got {value!r}")
    return float(value)


class _Limit:
    """One armed limit on the current task (``async with limiter.limit():``)."""

    __slots__ = ("_timeout", "_task", "_handle", "_expired", "_cancelling")

    def __init__(self, timeout):
        self._timeout = timeout
        self._task = None
        self._handle = None
        self._expired = False

    def _fire(self):
        self._expired = True
        self._task.cancel(TIME_LIMIT_MESSAGE)

    async def __aenter__(self):
        task = asyncio.current_task()
        if task is None:
            raise RuntimeError("TimeLimiter needs a running asyncio task")
        self._task = task
        # Task.cancelling/uncancel are 3.11+; before, an expired limit owns the cancel.
        self._cancelling = task.cancelling() if hasattr(task, "cancelling") else 0
        self._handle = asyncio.get_running_loop().call_later(self._timeout, self._fire)
        return self

    async def __aexit__(self, exc_type, exc, tb):
        self._handle.cancel()
        if self._expired:
            # Take our cancel request back (as asyncio.timeout does); the
            # CancelledError is ours unless the caller cancelled too.
            left = self._task.uncancel() if hasattr(self._task, "uncancel") else 0
            if left <= self._cancelling and exc_type is asyncio.CancelledError:
                raise TimeoutError(f"time limit of {self._timeout} s exceeded") from exc
        return False


class TimeLimiter:
    """Limit how long a call may take (resilience4j's TimeLimiter).

    ``timeout`` is in seconds (finite, > 0).  A coroutine that overruns it is
    cancelled with the message :data:`TIME_LIMIT_MESSAGE`, and the caller gets
    ``TimeoutError``; a :class:`~faultkit.CircuitBreaker` inside the limiter sees
    that cancellation and counts the call as timed out, while a cancellation
    of the caller's own (no message) propagates unchanged and the breaker
    counts nothing.  Forms: ``await limiter.call(async_fn, *args)``,
    ``async with limiter.limit():`` (a limit on the block:
    use it around a retry loop for a total limit), the decorator ``@limiter``
    (``async def`` functions),
    and ``limiter.call_sync(fn, *args)``, which runs a plain function in
    ``executor`` (default: a shared 8-thread pool owned by the limiter) and
    raises ``TimeoutError`` when it overruns; Python cannot stop a running
    thread, so the call finishes in the background and its result is dropped.
    """

    def __init__(self, timeout: float, *, executor: "Optional[concurrent.futures.Executor]" = None) -> None:
        self.timeout = _seconds(timeout, "timeout")
        if executor is not None and not isinstance(executor, concurrent.futures.Executor):
            raise TypeError(f"executor must be a concurrent.futures.Executor or None, "
                            f"not {type(executor).__name__}")
        self._executor = executor
        self._lock = threading.Lock()
        self.timeouts = 0  # calls cut off, over the limiter's lifetime

    def limit(self):
        """An ``async with`` block limit: ``async with limiter.limit(): ...``."""
        return _Limit(self.timeout)

    async def call(self, fn, /, *args, **kwargs):
        """Await ``fn(*args, **kwargs)`` (a coroutine function) within the limit."""
        if not callable(fn):
            raise TypeError(f"fn must be callable, not {type(fn).__name__}")
        limit = _Limit(self.timeout)
        try:
            async with limit:
                return await fn(*args, **kwargs)
        except TimeoutError:
            if limit._expired:
                self.timeouts += 1
            raise

    def call_sync(self, fn, /, *args, **kwargs):
        """Run ``fn(*args, **kwargs)`` in the executor; ``TimeoutError`` past the limit."""
        if not callable(fn):
            raise TypeError(f"fn must be callable, not {type(fn).__name__}")
        future = self._pool().submit(fn, *args, **kwargs)
        try:
            return future.result(self.timeout)
        except concurrent.futures.TimeoutError:
            future.cancel()
            self.timeouts += 1
            raise TimeoutError(f"time limit of {self.timeout} s exceeded") from None

    def _pool(self):
        if self._executor is None:
            with self._lock:
                if self._executor is None:
                    self._executor = concurrent.futures.ThreadPoolExecutor(
                        8, thread_name_prefix="faultkit-timelimit")
        return self._executor

    def __call__(self, fn):
        """Decorate an ``async def`` function so every call runs within the limit."""
        if not inspect.iscoroutinefunction(fn):
            raise TypeError("TimeLimiter decorates async def functions; use call_sync for others")
        call = self.call

        @functools.wraps(fn)
        async def limited(*args, **kwargs):
            return await call(fn, *args, **kwargs)
        return limited

    def __repr__(self):
        return f"TimeLimiter(timeout={self.timeout})"
