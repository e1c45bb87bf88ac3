"""Hedge (driven by an injected async sleep and events) and the policy stack."""
import asyncio

import pytest

import faultkit as fk
from faultkit.contain import Bulkhead, Hedge, stack


class Gate:
    """An async sleep the test releases by hand."""

    def __init__(self):
        self.sleeps, self.events = [], []

    async def sleep(self, seconds):
        ev = asyncio.Event()
        self.sleeps.append(seconds)
        self.events.append(ev)
        await ev.wait()


class Replicas:
    def __init__(self, behaviour):
        self.behaviour = behaviour          # replica -> "ok" | "hang" | "fail"
        self.started, self.cancelled = [], []
        self.hang = asyncio.Event()

    async def __call__(self, replica, x):
        self.started.append(replica)
        what = self.behaviour[replica]
        try:
            if what == "hang":
                await self.hang.wait()
            await asyncio.sleep(0)
        except asyncio.CancelledError:
            self.cancelled.append(replica)
            raise
        if what == "fail":
            raise ConnectionError(replica)
        return (replica, x)


async def _settle():
    for _ in range(5):
        await asyncio.sleep(0)


def test_slow_primary_is_hedged_and_the_loser_cancelled():
    async def main():
        gate = Gate()
        h = Hedge(0.05, async_sleep=gate.sleep)
        r = Replicas({"a": "hang", "b": "ok"})
        task = asyncio.ensure_future(h.call(r, ["a", "b"], 1))
        await _settle()
        assert r.started == ["a"] and gate.sleeps == [0.05]
        gate.events[0].set()                     # the hedge delay passes
        assert await task == ("b", 1)
        await _settle()
        assert r.cancelled == ["a"]
        assert h.metrics()["hedges"] == 1 and h.metrics()["hedge_wins"] == 1
    asyncio.run(main())


def test_fast_primary_needs_no_hedge():
    async def main():
        gate = Gate()
        h = Hedge(0.05, async_sleep=gate.sleep)
        r = Replicas({"a": "ok", "b": "ok"})
        assert await h.call(r, ["a", "b"], 2) == ("a", 2)
        assert r.started == ["a"] and h.metrics()["hedges"] == 0
    asyncio.run(main())


def test_a_failed_primary_hedges_at_once_and_all_failing_raises_the_first():
    async def main():
        gate = Gate()
        h = Hedge(10.0, async_sleep=gate.sleep)
        r = Replicas({"a": "fail", "b": "ok"})
        assert await h.call(r, ["a", "b"], 3) == ("b", 3)
        r = Replicas({"a": "fail", "b": "fail"})
        with pytest.raises(ConnectionError, match="a"):
            await h.call(r, ["a", "b"], 3)
    asyncio.run(main())


def test_the_budget_bounds_hedges():
    async def main():
        gate = Gate()
        budget = fk.RetryBudget(ratio=0.0, min_per_second=0.0)
        h = Hedge(0.05, budget=budget, async_sleep=gate.sleep)
        r = Replicas({"a": "hang", "b": "ok"})
        task = asyncio.ensure_future(h.call(r, ["a", "b"], 1))
        await _settle()
        gate.events[0].set()
        await _settle()
        assert r.started == ["a"] and h.metrics()["refused"] == 1
        r.hang.set()
        assert await task == ("a", 1)
    asyncio.run(main())


def test_the_delay_follows_the_observed_quantile():
    class Clock:
        t = 0.0

        def __call__(self):
            return self.t

    clock = Clock()
    h = Hedge(quantile=0.9, min_samples=10, min_delay=0.001, max_delay=5.0, clock=clock)
    assert h.current_delay() == 5.0
    for i in range(1, 101):
        h._observe(i / 100)
    assert h.current_delay() == pytest.approx(0.90)


def test_the_callers_cancel_cancels_every_attempt():
    async def main():
        gate = Gate()
        h = Hedge(0.05, async_sleep=gate.sleep)
        r = Replicas({"a": "hang", "b": "hang"})
        task = asyncio.ensure_future(h.call(r, ["a", "b"], 1))
        await _settle()
        gate.events[0].set()
        await _settle()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await _settle()
        assert sorted(r.cancelled) == ["a", "b"]
    asyncio.run(main())


def test_hedge_bad_arguments():
    with pytest.raises(ValueError, match="delay must be a finite"):
        Hedge(-1)
    with pytest.raises(ValueError, match="quantile must be in"):
        Hedge(quantile=1.0)
    with pytest.raises(ValueError, match="max_attempts must be in"):
        Hedge(max_attempts=1)
    with pytest.raises(ValueError, match="min_delay .* exceeds max_delay"):
        Hedge(min_delay=2, max_delay=1)
    with pytest.raises(TypeError, match="budget must be a RetryBudget"):
        Hedge(budget=3)

    async def main():
        with pytest.raises(ValueError, match="replicas is empty"):
            await Hedge().call(lambda r: r, [])
    asyncio.run(main())


def test_stack_order_retry_stops_at_the_open_breaker():
    calls = []

    def down():
        calls.append(1)
        raise ConnectionError("down")

    s = stack(retry=fk.Retry(5, backoff=0.0, retry_on=ConnectionError),
              breaker=fk.CircuitBreaker(minimum_calls=2, window_size=2),
              rate_limiter=fk.RateLimiter(10**6),
              time_limiter=fk.TimeLimiter(60),
              bulkhead=Bulkhead(2))
    with pytest.raises(fk.CircuitOpenError):
        s.call(down)
    # Two attempts reached the call and opened the breaker; the third was refused
    # by it (CircuitOpenError is not retried by retry_on=ConnectionError).
    assert len(calls) == 2
    m = s.metrics()
    assert set(m) == {"retry", "breaker", "rate_limiter", "time_limiter", "bulkhead"}
    assert m["breaker"]["state"] == "open" and m["retry"]["retries"] == 2
    assert m["rate_limiter"]["allowed"] == 2 and m["bulkhead"]["in_flight"] == 0


def test_stack_async_time_limit_counts_in_the_breaker_and_decorator():
    s = stack(breaker=fk.CircuitBreaker(minimum_calls=1, window_size=1),
              time_limiter=fk.TimeLimiter(0.01))

    @s
    async def hang():
        await asyncio.Event().wait()

    async def main():
        with pytest.raises(TimeoutError):
            await hang()
    asyncio.run(main())
    assert s.metrics()["breaker"]["state"] == "open"
    assert s.metrics()["time_limiter"]["timeouts"] == 1
    assert stack(retry=fk.Retry())(lambda: 5)() == 5
    with pytest.raises(TypeError, match="breaker must be a CircuitBreaker"):
        stack(breaker=3)


def test_hedge_default_min_samples_and_delay_bounds():
    """Kills: the documented ``min_samples`` default 20 -> 21; ``min_delay``/``max_delay``
    of 0 refused (``value >= 0`` -> ``> 0``); a bool taken for a number of seconds
    (``isinstance(value, bool) or ...`` -> ``and``)."""
    h = Hedge(max_delay=5.0)
    for _ in range(19):
        h._observe(0.5)
    assert h.current_delay() == 5.0          # 19 samples: not yet
    h._observe(0.5)
    assert h.current_delay() == 0.5          # the 20th: the quantile takes over
    assert Hedge(min_delay=0, max_delay=0).current_delay() == 0
    for name in ("min_delay", "max_delay"):
        with pytest.raises(TypeError, match=f"{name} must be a number of seconds, not bool"):
            Hedge(**{name: True})


def test_hedge_int_option_bounds():
    """Kills: ``window``/``min_samples`` lower bound 1 -> 2 (1 refused) and a bool taken for
    an int (``isinstance(value, bool) or ...`` -> ``and``)."""
    h = Hedge(window=1, min_samples=1, max_delay=5.0)
    h._observe(0.25)
    assert h.current_delay() == 0.25
    for name in ("window", "min_samples", "max_attempts"):
        with pytest.raises(TypeError, match=f"{name} must be an int, not bool"):
            Hedge(**{name: True})


def test_hedge_quantile_is_recomputed_every_32_samples():
    """Kills: the cached quantile dropped on every sample but each 32nd (``% 32 == 0`` ->
    ``!= 0`` in ``_observe``): the delay is a cache refreshed once per 32 latencies."""
    h = Hedge(max_delay=5.0)
    for _ in range(20):
        h._observe(0.5)
    assert h.current_delay() == 0.5
    for _ in range(11):
        h._observe(2.0)
    assert h.current_delay() == 0.5              # 31 samples: the cached value
    h._observe(2.0)
    assert h.current_delay() == 2.0              # the 32nd refreshes it


def test_a_failed_hedge_does_not_skip_the_next_delay():
    """Kills: ``timer is not None and timer in done`` -> ``or`` in ``call``: a hedge that
    fails while the primary still runs must not launch the third attempt before its delay."""
    async def main():
        gate = Gate()
        h = Hedge(0.05, max_attempts=3, async_sleep=gate.sleep,
                  budget=fk.RetryBudget(ratio=1.0, min_per_second=100.0))
        r = Replicas({"a": "hang", "b": "fail", "c": "ok"})
        task = asyncio.ensure_future(h.call(r, ["a", "b", "c"], 1))
        await _settle()
        gate.events[0].set()                     # first delay: b starts and fails
        for _ in range(10):                      # long enough for the hedge loop to see it
            await _settle()
        assert "b" in r.started and r.started == ["a", "b"] and len(gate.sleeps) == 2
        gate.events[1].set()                     # second delay: now c
        assert await task == ("c", 1)
        assert r.started == ["a", "b", "c"]
    asyncio.run(main())


def test_hedge_high_quantile_takes_the_largest_sample_and_default_budget():
    """Kills: ``min(len(ordered) - 1, ...)`` -> ``len(ordered) - 2`` in ``current_delay`` (a
    quantile above (n-1)/n must take the largest latency), and the documented default
    budget's ``min_per_second=1`` -> 2."""
    h = Hedge(quantile=0.99, max_delay=5.0)
    for _ in range(19):
        h._observe(0.1)
    h._observe(0.9)
    assert h.current_delay() == 0.9

    class Frozen:
        def __call__(self):
            return 100.0
    clock = Frozen()
    mine = fk.RetryBudget(ratio=0.1, min_per_second=1.0, clock=clock)
    default = Hedge(clock=clock).budget
    assert sum(default.try_retry() for _ in range(100)) == sum(mine.try_retry() for _ in range(100)) > 0


def test_time_limiter_refuses_a_bool_timeout():
    """Kills: ``isinstance(value, bool) or ...`` -> ``and`` in timelimit's ``_seconds``."""
    with pytest.raises(TypeError, match="timeout must be a number of seconds, not bool"):
        fk.TimeLimiter(True)
    assert fk.TimeLimiter(0.5).timeout == 0.5


def test_an_expired_limit_lets_another_exception_through():
    """Kills: ``left <= self._cancelling and exc_type is CancelledError`` -> ``or`` in
    ``_Limit.__aexit__``: a body that turns the cancel into its own error keeps that error."""
    async def main():
        limiter = fk.TimeLimiter(0.01)
        async with limiter.limit():
            try:
                await asyncio.Event().wait()
            except asyncio.CancelledError:
                raise ValueError("cleanup failed") from None

    with pytest.raises(ValueError, match="cleanup failed"):
        asyncio.run(main())


def test_time_limiter_executor_argument():
    """Kills: ``not isinstance(executor, Executor)`` -> ``isinstance`` in ``TimeLimiter``
    (a real executor refused, anything else accepted)."""
    import concurrent.futures
    with pytest.raises(TypeError, match="executor must be a concurrent.futures.Executor or None, not int"):
        fk.TimeLimiter(1.0, executor=3)
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        assert fk.TimeLimiter(1.0, executor=pool).timeout == 1.0


def test_time_limiter_default_pool_has_eight_threads_and_a_repr():
    """Kills: the documented default pool of 8 threads -> 9, and ``__repr__`` returning None."""
    import threading
    limiter = fk.TimeLimiter(5.0)
    assert repr(limiter) == "TimeLimiter(timeout=5.0)"
    go = threading.Event()
    futures = [limiter._pool().submit(go.wait, 30) for _ in range(9)]
    try:
        threads = limiter._pool()._threads           # this limiter's own workers only
        assert len(threads) == 8 and all(t.name.startswith("faultkit-timelimit") for t in threads)
    finally:
        go.set()
        assert all(f.result(30) for f in futures)
        limiter._pool().shutdown()


def test_time_limiter_counts_only_its_own_timeouts():
    """Kills: ``timeout > 0`` -> ``>= 0`` (0 accepted); a limit starting out ``_expired``
    (``False -> True``: the callee's own TimeoutError counted as the limiter's); a
    ``call_sync`` timeout counted twice (``+= 1`` -> ``+= 2``)."""
    import threading
    with pytest.raises(ValueError, match="timeout must be a finite number of seconds > 0, got 0"):
        fk.TimeLimiter(0)
    limiter = fk.TimeLimiter(30.0)

    async def own_timeout():
        raise TimeoutError("the callee's own")

    with pytest.raises(TimeoutError, match="the callee's own"):
        asyncio.run(limiter.call(own_timeout))
    assert limiter.timeouts == 0
    quick = fk.TimeLimiter(0.05)
    go = threading.Event()
    with pytest.raises(TimeoutError, match="time limit of 0.05 s exceeded"):
        quick.call_sync(go.wait, 30)
    go.set()
    assert quick.timeouts == 1
    quick._pool().shutdown()
