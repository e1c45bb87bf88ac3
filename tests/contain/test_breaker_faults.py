"""The breaker faults of issue #17, each replayed on an injected clock:
stale half-open trials, open -> half-open without a call, time limits that
count, the decorator's cost path, lifetime counters."""
import asyncio
import sys

import pytest

import faultkit as fk
from faultkit.contain import CircuitBreaker
from faultkit.contain.timelimit import TIME_LIMIT_MESSAGE, TimeLimiter


class Clock:
    def __init__(self, t=1000.0):
        self.t = t

    def __call__(self):
        return self.t


class Boom(Exception):
    pass


def ok():
    return "ok"


def boom():
    raise Boom("down")


def outcome(b, fn):
    try:
        return b.call(fn)
    except fk.CircuitOpenError:
        return "refused"
    except Boom:
        return "failed"


def test_a_stale_half_open_trial_is_forgotten():
    clock = Clock()
    b = CircuitBreaker(minimum_calls=1, reset_timeout=10.0, half_open_calls=2,
                       max_half_open_wait=30.0, clock=clock)
    assert outcome(b, boom) == "failed" and b.state == "open"
    clock.t += 10
    assert outcome(b, boom) == "failed"      # one trial fails while the worker is dead
    assert b.state == "half_open"
    assert (b.metrics()["calls"], b.metrics()["failed"]) == (1, 1)  # trials only
    clock.t += 600                           # ten minutes later: the trial is stale
    assert b.state == "open"                 # max_half_open_wait passed: reopened
    assert (b.metrics()["calls"], b.metrics()["failed"]) == (1, 1)  # the trials that reopened it
    clock.t += 10
    assert b.state == "half_open" and b.metrics()["calls"] == 0  # a fresh trial window
    assert [outcome(b, ok), outcome(b, ok)] == ["ok", "ok"]
    assert b.state == "closed"


def test_half_open_wait_none_waits_forever():
    clock = Clock()
    b = CircuitBreaker(minimum_calls=1, reset_timeout=1.0, half_open_calls=2,
                       max_half_open_wait=None, clock=clock)
    outcome(b, boom)
    clock.t += 1
    outcome(b, ok)
    clock.t += 1e6
    assert b.state == "half_open"


def test_reopened_by_trials_reports_the_trial_window():
    clock = Clock()
    b = CircuitBreaker(minimum_calls=4, window_size=10, reset_timeout=5.0,
                       half_open_calls=2, clock=clock)
    for f in (boom, boom, boom, ok):
        outcome(b, f)
    assert b.state == "open" and (b.metrics()["calls"], b.metrics()["failed"]) == (4, 3)
    clock.t += 5
    outcome(b, ok)
    outcome(b, boom)
    assert b.state == "open" and (b.metrics()["calls"], b.metrics()["failed"]) == (2, 1)


def test_open_becomes_half_open_on_a_read_and_tells_the_listeners():
    clock = Clock()
    seen = []
    b = CircuitBreaker(minimum_calls=1, reset_timeout=30.0, clock=clock)
    b.add_listener(lambda br, old, new: seen.append((clock.t, old, new)))
    outcome(b, boom)
    clock.t += 29.0
    assert b.state == "open" and b.time_until_half_open == 1.0
    clock.t += 1.0
    assert seen[-1] == (1000.0, "closed", "open")
    assert b.state == "half_open"             # no call needed
    assert seen[-1] == (1030.0, "open", "half_open")
    assert b.time_until_half_open == 0.0


def test_reset_timeout_zero_with_a_stale_half_open_steps_twice_and_tells_both():
    clock = Clock()
    seen = []
    b = CircuitBreaker(minimum_calls=1, reset_timeout=0.0, max_half_open_wait=5.0, clock=clock)
    outcome(b, boom)
    b.add_listener(lambda br, old, new: seen.append((old, new)))
    assert b.state == "half_open"
    clock.t += 5
    assert b.state == "half_open"
    assert seen == [("open", "half_open"), ("half_open", "open"), ("open", "half_open")]


async def _hang():
    await asyncio.Event().wait()


def test_a_time_limit_counts_as_a_failure():
    b = CircuitBreaker(minimum_calls=2, window_size=2)
    limiter = TimeLimiter(0.01)

    async def main():
        for _ in range(2):
            with pytest.raises(TimeoutError):
                await limiter.call(b.call, _hang)
    asyncio.run(main())
    assert b.state == "open"
    assert b.metrics()["lifetime"]["failures"] == 2 and limiter.timeouts == 2


def test_a_time_limit_outside_the_breaker_counts_too():
    b = CircuitBreaker(minimum_calls=1, window_size=1)
    limiter = TimeLimiter(0.01)

    async def main():
        with pytest.raises(TimeoutError):
            await b.call(limiter.call, _hang)
    asyncio.run(main())
    assert b.state == "open"


def test_a_time_limit_can_count_as_slow_or_nothing():
    async def cut_off(b):
        with pytest.raises(TimeoutError):
            await TimeLimiter(0.01).call(b.call, _hang)

    slow = CircuitBreaker(minimum_calls=1, window_size=1, slow_call_rate=1.0,
                          failure_rate=1.0, timeout_outcome="slow")
    asyncio.run(cut_off(slow))
    assert slow.state == "open" and slow.metrics()["slow"] == 1 and slow.metrics()["failed"] == 0
    ignore = CircuitBreaker(minimum_calls=1, window_size=1, timeout_outcome="ignore")
    asyncio.run(cut_off(ignore))
    assert ignore.state == "closed" and ignore.metrics()["lifetime"]["ignored"] == 1


def test_the_callers_own_cancellation_counts_as_nothing():
    b = CircuitBreaker(minimum_calls=1, window_size=1)

    async def main():
        task = asyncio.ensure_future(b.call(_hang))
        await asyncio.sleep(0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        # Also inside a TimeLimiter that has not expired: the cancel goes on.
        task = asyncio.ensure_future(TimeLimiter(3600).call(b.call, _hang))
        await asyncio.sleep(0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    asyncio.run(main())
    assert b.state == "closed"
    life = b.metrics()["lifetime"]
    assert (life["calls"], life["ignored"], life["failures"]) == (2, 2, 0)


def test_a_cancel_with_the_time_limit_message_counts_even_without_a_limiter():
    b = CircuitBreaker(minimum_calls=1, window_size=1)

    async def main():
        task = asyncio.ensure_future(b.call(_hang))
        await asyncio.sleep(0)
        task.cancel(TIME_LIMIT_MESSAGE)
        with pytest.raises(asyncio.CancelledError):
            await task
    asyncio.run(main())
    assert b.state == "open"


def test_sync_time_limit_in_an_executor():
    import threading
    release = threading.Event()
    b = CircuitBreaker(minimum_calls=1, window_size=1)
    limiter = TimeLimiter(0.01)
    with pytest.raises(TimeoutError, match="time limit of 0.01 s"):
        b.call(limiter.call_sync, release.wait, 60)
    release.set()
    assert b.state == "open"
    assert TimeLimiter(60).call_sync(lambda x: x + 1, 1) == 2


def test_lifetime_counters_survive_reset():
    clock = Clock()
    b = CircuitBreaker(minimum_calls=2, window_size=2, reset_timeout=1.0, half_open_calls=1,
                       exclude=KeyError, clock=clock)
    outcome(b, ok)
    outcome(b, boom)                 # opens: 2 calls, 1 failed
    assert [outcome(b, ok), outcome(b, ok)] == ["refused", "refused"]
    clock.t += 1
    outcome(b, ok)                   # half-open trial closes it
    with pytest.raises(KeyError, match=r"'x'"):
        b.call(lambda: {}["x"])      # excluded: ignored
    b.reset()                        # closed already: not a transition
    assert b.metrics()["not_permitted"] == 0
    life = b.metrics()["lifetime"]
    assert life == {"calls": 4, "failures": 1, "slow": 0, "ignored": 1,
                    "rejections": 2, "transitions": 3}


def test_decorator_is_a_c_callable_that_keeps_the_name_and_binds():
    b = CircuitBreaker()

    @b
    def add(x, *, y=1):
        """Add."""
        return x + y

    assert add(1, y=2) == 3 and add.__name__ == "add" and add.__doc__ == "Add."
    assert add.__wrapped__(1) == 2

    class A:
        @b
        def m(self, v):
            return (self, v)

    a = A()
    assert a.m(5) == (a, 5)
    assert b.metrics()["calls"] == 2
    with pytest.raises(fk.CircuitOpenError):
        b.open()
        add(1)


@pytest.mark.parametrize("kwargs, error, match", [
    ({"max_half_open_wait": 0}, ValueError, "max_half_open_wait must be > 0"),
    ({"max_half_open_wait": "1"}, TypeError, "max_half_open_wait must be a number"),
    ({"timeout_outcome": "maybe"}, ValueError, "timeout_outcome must be"),
])
def test_bad_new_arguments(kwargs, error, match):
    with pytest.raises(error, match=match):
        CircuitBreaker(**kwargs)


def test_time_limiter_bad_arguments():
    with pytest.raises(ValueError, match="timeout must be a finite number"):
        TimeLimiter(0)
    with pytest.raises(TypeError, match="timeout must be a number"):
        TimeLimiter("1")
    with pytest.raises(TypeError, match="executor must be"):
        TimeLimiter(1, executor=3)
    with pytest.raises(TypeError, match="decorates async def"):
        TimeLimiter(1)(ok)


def test_untimed_with_blocks_that_straddle_a_transition_are_dropped():
    b = CircuitBreaker(minimum_calls=5)
    a = b.__enter__()                 # block A, entered in the first closed state
    b.open()
    b.reset()                         # a new closed state
    with b:                           # block B, entered after the transition
        with pytest.raises(Boom):
            with b:                   # block C, nested, also after it
                raise Boom()
        assert a.__exit__(Boom, Boom(), None) is False   # A straddled: dropped
    m = b.metrics()
    assert (m["calls"], m["failed"]) == (2, 1)   # B and C (one of them counted as A's slot)
    assert m["lifetime"]["calls"] == 3
    with pytest.raises(RuntimeError, match="without a matching __enter__"):
        b.__exit__(None, None, None)


def test_async_with_enters_with_the_breaker_and_counts():
    b = CircuitBreaker(minimum_calls=2, window_size=2)

    async def main():
        async with b as x:
            assert x is b
        with pytest.raises(Boom):
            async with b:
                raise Boom()
        with pytest.raises(fk.CircuitOpenError):
            async with b:
                pass
    asyncio.run(main())
    assert b.state == "open" and b.metrics()["lifetime"]["rejections"] == 1


def test_a_block_limit_bounds_a_whole_retry_loop():
    attempts = []

    async def flaky():
        attempts.append(1)
        raise ConnectionError("down")

    async def main():
        retry = fk.Retry(1000, backoff=0.0, jitter="none")
        limiter = TimeLimiter(0.05)
        with pytest.raises(TimeoutError):
            async with limiter.limit():
                while True:                     # a total limit around repeated attempts
                    try:
                        await retry.call(flaky)
                    except ConnectionError:
                        await asyncio.sleep(0.001)
        # The task is usable afterwards: no cancel request is left behind.
        await asyncio.sleep(0)
        if sys.version_info >= (3, 11):  # cancel requests are counted from 3.11
            assert asyncio.current_task().cancelling() == 0
    asyncio.run(main())
    assert len(attempts) >= 1000
