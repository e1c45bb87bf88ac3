"""Bulkheads: cap how many calls into one domain or dependency run at once.

A slow dependency then ties up at most ``max_concurrent`` threads or tasks
instead of all of them (resilience4j's SemaphoreBulkhead; Nygard, *Release
It!*, "Bulkheads").
"""
from __future__ import annotations

import collections
import functools
import inspect
import math
import threading
from typing import TYPE_CHECKING, Any, Awaitable, Callable, TypeVar

from faultkit.errors import BulkheadFullError

if TYPE_CHECKING:  # asyncio is imported where a coroutine needs it, so import faultkit stays cheap
    import asyncio

__all__ = ["Bulkhead", "BulkheadFullError"]

T = TypeVar("T")

_WAITING, _GRANTED, _ABANDONED = 0, 1, 2


class _Waiter:
    """One blocked caller: a thread (``lock`` is released to wake it) or a task
    (``future`` is resolved on its loop).  ``state`` changes only under the
    bulkhead's lock, so a slot handed over and a timeout cannot both win."""

    __slots__ = ("state", "lock", "future", "loop")

    def __init__(self, lock=None, future=None, loop=None):
        self.state = _WAITING
        self.lock = lock
        self.future = future
        self.loop = loop


def _resolve(future: asyncio.Future) -> None:
    if not future.done():
        future.set_result(None)


class Bulkhead:
    """At most ``max_concurrent`` calls in flight; the next waits up to ``max_wait`` seconds.

    ``max_wait`` defaults to 0.0 (resilience4j's maxWaitDuration: refuse at
    once); ``math.inf`` waits as long as it takes.  A refused call raises
    ``BulkheadFullError``.  Waiters are served first come, first served: a
    finishing call hands its slot straight to the oldest waiter, so newcomers
    cannot barge in.  One bulkhead serves threads and asyncio tasks (on any
    loop) together; the internal lock is held only to count, never while a
    call runs, and an asyncio waiter never blocks its loop.

    Use ``bulkhead.call(fn, *args, **kwargs)`` (``await`` it for an ``async``
    function), as a decorator, or as ``with bulkhead:`` / ``async with bulkhead:``.
    """

    def __init__(self, max_concurrent: int, max_wait: float = 0.0) -> None:
        if isinstance(max_concurrent, bool) or not isinstance(max_concurrent, int):
            raise TypeError(
                f"max_concurrent must be an int, not {type(max_concurrent).__name__}")
        if max_concurrent < 1:
            raise ValueError(f"max_concurrent must be >= 1, got {max_concurrent!r}")
        if isinstance(max_wait, bool) or not isinstance(max_wait, (int, float)):
            raise TypeError(f"max_wait must be a number, not {type(max_wait).__name__}")
        if not max_wait >= 0:  # also refuses NaN
            raise ValueError(f"max_wait must be >= 0 seconds (or math.inf), got {max_wait!r}")
        self._max = max_concurrent
        self._max_wait = float(max_wait)
        self._lock = threading.Lock()
        self._in_flight = 0
        self._waiters: collections.deque[_Waiter] = collections.deque()
        self._refused = 0

    # -- state --------------------------------------------------------------
    @property
    def max_concurrent(self) -> int:
        """The cap on calls in flight."""
        return self._max

    @property
    def max_wait(self) -> float:
        """Seconds a call waits for a slot before ``BulkheadFullError``."""
        return self._max_wait

    @property
    def in_flight(self) -> int:
        """Calls holding a slot now."""
        return self._in_flight

    @property
    def available(self) -> int:
        """Free slots now."""
        return self._max - self._in_flight

    @property
    def waiting(self) -> int:
        """Callers waiting for a slot now."""
        with self._lock:
            return sum(1 for w in self._waiters if w.state == _WAITING)

    @property
    def refused(self) -> int:
        """Calls refused with ``BulkheadFullError`` so far."""
        return self._refused

    def __repr__(self) -> str:
        return (f"Bulkhead(max_concurrent={self._max}, max_wait={self._max_wait}, "
                f"in_flight={self._in_flight})")

    # -- slots --------------------------------------------------------------
    def _try_take(self, waiter: _Waiter | None) -> bool:
        # Under self._lock.  Queue the waiter if there is no free slot (or
        # others are queued first: no barging).
        if self._in_flight < self._max and not self._has_waiters():
            self._in_flight += 1
            return True
        if waiter is not None:
            self._waiters.append(waiter)
        return False

    def _has_waiters(self) -> bool:
        while self._waiters and self._waiters[0].state != _WAITING:
            self._waiters.popleft()
        return bool(self._waiters)

    def _full(self) -> BulkheadFullError:
        self._refused += 1
        waited = f" after waiting {self._max_wait:g} s" if self._max_wait > 0 else ""
        return BulkheadFullError(
            f"bulkhead full: {self._in_flight} of {self._max} calls in flight{waited}")

    def acquire(self) -> None:
        """Take a slot for the calling thread, waiting up to ``max_wait``; ``BulkheadFullError`` if none."""
        with self._lock:
            if self._max_wait == 0:
                if self._try_take(None):
                    return
                raise self._full()
            lock = threading.Lock()
            lock.acquire()
            waiter = _Waiter(lock=lock)
            if self._try_take(waiter):
                return
        try:
            got = lock.acquire(timeout=-1 if math.isinf(self._max_wait) else self._max_wait)
        except BaseException:  # e.g. KeyboardInterrupt while blocked: leave no slot behind
            with self._lock:
                granted = waiter.state == _GRANTED
                waiter.state = _ABANDONED
            if granted:
                self.release()
            raise
        with self._lock:
            if waiter.state == _GRANTED:
                return
            waiter.state = _ABANDONED
            if not got:
                raise self._full()
        raise AssertionError("bulkhead waiter woken without a slot")  # pragma: no cover

    async def acquire_async(self) -> None:
        """Take a slot for the current task, waiting up to ``max_wait`` without blocking the loop."""
        import asyncio

        loop = asyncio.get_running_loop()
        with self._lock:
            if self._max_wait == 0:
                if self._try_take(None):
                    return
                raise self._full()
            waiter = _Waiter(future=loop.create_future(), loop=loop)
            if self._try_take(waiter):
                return
        timeout = None if math.isinf(self._max_wait) else self._max_wait
        try:
            await asyncio.wait_for(waiter.future, timeout)
        except BaseException as exc:  # timeout or cancellation
            with self._lock:
                granted = waiter.state == _GRANTED
                if not granted:
                    waiter.state = _ABANDONED
            if granted and not isinstance(exc, asyncio.TimeoutError):
                self.release()  # cancelled just as a slot arrived: pass it on
                raise
            if not granted:
                if isinstance(exc, asyncio.TimeoutError):
                    with self._lock:
                        raise self._full() from None
                raise
            # Timed out just as a slot arrived: keep it.

    def release(self) -> None:
        """Give a slot back: to the oldest waiter if any, else to the pool."""
        with self._lock:
            if self._in_flight <= 0:
                raise RuntimeError("Bulkhead.release() without a matching acquire()")
            while self._waiters:
                waiter = self._waiters.popleft()
                if waiter.state == _WAITING:
                    waiter.state = _GRANTED  # the slot moves to it: in_flight unchanged
                    break
            else:
                self._in_flight -= 1
                return
        if waiter.lock is not None:
            waiter.lock.release()
        else:
            try:
                waiter.loop.call_soon_threadsafe(_resolve, waiter.future)
            except RuntimeError:  # its loop has closed: nobody will take the slot
                with self._lock:  # nor give it back when its coroutine is closed
                    waiter.state = _ABANDONED
                self.release()

    # -- ways to use it -----------------------------------------------------
    def call(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
        """Run ``fn(*args, **kwargs)`` holding a slot.  For an ``async def`` function,
        return an awaitable that takes the slot asynchronously."""
        if inspect.iscoroutinefunction(fn):
            return self.call_async(fn, *args, **kwargs)  # type: ignore[return-value]
        self.acquire()
        try:
            return fn(*args, **kwargs)
        finally:
            self.release()

    async def call_async(self, fn: Callable[..., Awaitable[T]], /, *args: Any,
                         **kwargs: Any) -> T:
        """Await ``fn(*args, **kwargs)`` holding a slot."""
        await self.acquire_async()
        try:
            return await fn(*args, **kwargs)
        finally:
            self.release()

    def __call__(self, fn: Callable[..., T]) -> Callable[..., T]:
        """Decorate a plain or ``async def`` function so each call holds a slot."""
        if not callable(fn):
            raise TypeError(f"the bulkhead decorates callables, not {type(fn).__name__}")
        if inspect.iscoroutinefunction(fn):
            @functools.wraps(fn)
            async def guarded_async(*args, **kwargs):
                return await self.call_async(fn, *args, **kwargs)
            return guarded_async  # type: ignore[return-value]

        @functools.wraps(fn)
        def guarded(*args, **kwargs):
            self.acquire()
            try:
                return fn(*args, **kwargs)
            finally:
                self.release()
        return guarded

    def __enter__(self) -> "Bulkhead":
        self.acquire()
        return self

    def __exit__(self, *exc: Any) -> bool:
        self.release()
        return False

    async def __aenter__(self) -> "Bulkhead":
        await self.acquire_async()
        return self

    async def __aexit__(self, *exc: Any) -> bool:
        self.release()
        return False
