"""Hedged requests ("The Tail at Scale"): :class:`Hedge`."""
import asyncio
import math
import time
from collections import deque

from faultkit.contain._retry import RetryBudget

__all__ = ["Hedge"]


class Hedge:
    """Send an idempotent async call to a second replica when the first is slow.

    ``await hedge.call(fn, replicas, *args, **kwargs)`` awaits
    ``fn(replicas[0], *args, **kwargs)``; if it has not finished after the
    hedge delay, it also starts ``fn(replicas[1], ...)`` (and so on, up to
    ``max_attempts``, default 2, attempts in flight).  The first attempt to
    succeed wins and the others are cancelled; an attempt that fails starts
    the next at once; when all fail, the first failure is raised.  Only for
    idempotent calls: a loser may already have had its effect.

    The delay is ``delay`` seconds, or, when ``delay`` is None (default), the
    ``quantile`` (default 0.95) of the last ``window`` (default 1000)
    successful attempt latencies, clamped to [``min_delay``, ``max_delay``]
    (defaults 0.001 and 1.0 s; ``max_delay`` until ``min_samples``, default
    20, latencies are known).  ``budget`` (a :class:`~faultkit.RetryBudget`;
    default ``RetryBudget(ratio=0.1, min_per_second=1)``) bounds hedges, as a
    share of calls, so hedging cannot double the load.  ``clock`` (default
    ``time.monotonic``) and ``async_sleep`` (``asyncio.sleep``) are injectable.
    """

    def __init__(self, delay=None, *, quantile=0.95, window=1000, min_samples=20,
                 min_delay=0.001, max_delay=1.0, max_attempts=2, budget=None,
                 clock=time.monotonic, async_sleep=asyncio.sleep):
        for name, value in (("min_delay", min_delay), ("max_delay", max_delay)):
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise TypeError(f"{name} must be a number of seconds, not {type(value).__name__}")
            if not (value >= 0 and math.isfinite(value)):
                raise ValueError(f"{name} must be a finite number of seconds >= 0, got {value!r}")
        if min_delay > max_delay:
            raise ValueError(f"min_delay {min_delay!r} exceeds max_delay {max_delay!r}")
        if delay is not None:
            if isinstance(delay, bool) or not isinstance(delay, (int, float)):
                raise TypeError(f"delay must be a number of seconds or None, not {type(delay).__name__}")
            if not (delay >= 0 and math.isfinite(delay)):
                raise ValueError(f"delay must be a finite number of seconds >= 0, got {delay!r}")
        if isinstance(quantile, bool) or not isinstance(quantile, (int, float)) \
                or not 0 < quantile < 1:
            raise ValueError(f"quantile must be in (0, 1), got {quantile!r}")
        for name, value, lo in (("window", window, 1), ("min_samples", min_samples, 1),
                                ("max_attempts", max_attempts, 2)):
            if isinstance(value, bool) or not isinstance(value, int):
                raise TypeError(f"{name} must be an int, not {type(value).__name__}")
            if not lo <= value <= 1_000_000:
                raise ValueError(f"{name} must be in [{lo}, 1000000], got {value!r}")
        if budget is None:
            budget = RetryBudget(ratio=0.1, min_per_second=1.0, clock=clock)
        elif not isinstance(budget, RetryBudget):
            raise TypeError(f"budget must be a RetryBudget or None, not {type(budget).__name__}")
        for name, fn in (("clock", clock), ("async_sleep", async_sleep)):
            if not callable(fn):
                raise TypeError(f"{name} must be callable, not {type(fn).__name__}")
        self.delay = None if delay is None else float(delay)
        self.quantile = float(quantile)
        self.min_samples = min_samples
        self.min_delay = float(min_delay)
        self.max_delay = float(max_delay)
        self.max_attempts = max_attempts
        self.budget = budget
        self.clock = clock
        self.async_sleep = async_sleep
        self._latencies = deque(maxlen=window)
        self._cached = None       # the observed delay, recomputed every 32 samples
        self.calls = 0
        self.hedges = 0           # extra attempts started
        self.hedge_wins = 0       # calls won by an extra attempt
        self.refused = 0          # hedges the budget refused

    def current_delay(self):
        """The hedge delay in seconds now (fixed, or the observed quantile, clamped)."""
        if self.delay is not None:
            return self.delay
        if len(self._latencies) < self.min_samples:
            return self.max_delay
        if self._cached is None:
            ordered = sorted(self._latencies)
            q = ordered[min(len(ordered) - 1, int(math.ceil(self.quantile * len(ordered))) - 1)]
            self._cached = min(self.max_delay, max(self.min_delay, q))
        return self._cached

    def _observe(self, latency):
        self._latencies.append(latency)
        if len(self._latencies) % 32 == 0 or self._cached is None:
            self._cached = None

    async def call(self, fn, replicas, /, *args, **kwargs):
        """Await ``fn(replica, *args, **kwargs)`` on ``replicas[0]``, hedged to the next ones."""
        if not callable(fn):
            raise TypeError(f"fn must be callable, not {type(fn).__name__}")
        replicas = list(replicas)
        if not replicas:
            raise ValueError("replicas is empty")
        self.calls += 1
        self.budget.record_request()
        delay = self.current_delay()
        tasks, starts = [], {}
        first_exc = None

        def launch():
            replica = replicas[len(tasks)]
            task = asyncio.ensure_future(fn(replica, *args, **kwargs))
            starts[task] = self.clock()
            tasks.append(task)

        def can_hedge():
            return len(tasks) < min(self.max_attempts, len(replicas))

        launch()
        timer = asyncio.ensure_future(self.async_sleep(delay)) if can_hedge() else None
        try:
            while True:
                waiting = {t for t in tasks if not t.done()}
                if timer is not None:
                    waiting.add(timer)
                done, _ = await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
                for task in tasks:
                    if task in done:
                        exc = task.exception()
                        if exc is None:
                            self._observe(self.clock() - starts[task])
                            if task is not tasks[0]:
                                self.hedge_wins += 1
                            return task.result()
                        if first_exc is None:
                            first_exc = exc
                all_failed = all(t.done() for t in tasks)
                if (timer is not None and timer in done) or (all_failed and can_hedge()):
                    if timer is not None and not timer.done():
                        timer.cancel()
                    timer = None
                    if can_hedge():
                        if self.budget.try_retry():
                            self.hedges += 1
                            launch()
                            if can_hedge():
                                timer = asyncio.ensure_future(self.async_sleep(delay))
                        else:
                            self.refused += 1
                if all(t.done() for t in tasks) and (timer is None or not can_hedge()):
                    raise first_exc
        finally:
            if timer is not None and not timer.done():
                timer.cancel()
            for task in tasks:
                if not task.done():
                    task.cancel()

    def metrics(self):
        """A dict: ``calls``, ``hedges`` (extra attempts), ``hedge_wins``,
        ``refused`` (hedges the budget refused), ``delay`` (the current delay, s)."""
        return {"calls": self.calls, "hedges": self.hedges, "hedge_wins": self.hedge_wins,
                "refused": self.refused, "delay": self.current_delay()}

    def __repr__(self):
        return f"Hedge(delay={self.delay}, quantile={self.quantile}, max_attempts={self.max_attempts})"
