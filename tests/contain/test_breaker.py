"""CircuitBreaker: transitions replayed on an injected clock, the native core
against the plain-Python model (tests/breaker_model.py), async, threads, bad input."""
import asyncio
import logging
import threading

import pytest
from hypothesis import given, settings, strategies as st

import faultkit as fk
from faultkit.contain import CircuitBreaker

from breaker_model import BreakerModel


class Clock:
    """A clock the test moves by hand."""

    def __init__(self, t=1000.0):
        self.t = t

    def __call__(self):
        return self.t


class Boom(Exception):
    pass


class Ignored(Exception):
    pass


def ok():
    return "ok"


def boom():
    raise Boom("down")


def outcome(breaker, fn):
    try:
        return breaker.call(fn)
    except fk.CircuitOpenError:
        return "refused"
    except Boom:
        return "failed"


def test_trip_open_half_open_close_replayed():
    clock = Clock()
    seen = []
    b = CircuitBreaker(minimum_calls=4, window_size=10, reset_timeout=30.0,
                       half_open_calls=2, clock=clock)
    b.add_listener(lambda br, old, new: seen.append((clock.t, old, new)))
    # 3 calls: below minimum_calls, even though 2 of 3 failed.
    assert [outcome(b, f) for f in (boom, ok, boom)] == ["failed", "ok", "failed"]
    assert b.state == "closed" and b.metrics()["failure_rate"] is None
    clock.t += 1
    assert outcome(b, ok) == "ok"  # 4 calls, 2 failed: 0.5 >= 0.5 opens, on a success
    assert b.state == "open" and seen == [(1001.0, "closed", "open")]
    assert b.time_until_half_open == 30.0
    clock.t += 29.5
    assert b.time_until_half_open == pytest.approx(0.5)
    assert outcome(b, ok) == "refused"
    with pytest.raises(fk.CircuitOpenError, match="open; half-open in 0.500 s"):
        b.call(ok)
    clock.t += 0.5  # exactly reset_timeout after opening
    assert outcome(b, ok) == "ok"
    assert b.state == "half_open" and seen[-1] == (1031.0, "open", "half_open")
    assert outcome(b, boom) == "failed"  # 2 trials, 1 failed: 0.5 >= 0.5 reopens
    assert b.state == "open" and seen[-1] == (1031.0, "half_open", "open")
    clock.t += 30
    assert [outcome(b, ok), outcome(b, ok)] == ["ok", "ok"]
    assert b.state == "closed" and seen[-1] == (1061.0, "half_open", "closed")
    assert b.metrics()["calls"] == 0  # a fresh window
    assert b.metrics()["not_permitted"] == 2


def test_half_open_refuses_past_its_trial_permits():
    clock = Clock()
    b = CircuitBreaker(minimum_calls=1, reset_timeout=1.0, half_open_calls=2, clock=clock)
    outcome(b, boom)
    assert b.state == "open"
    clock.t += 1
    inside = []

    def trial():
        inside.append(outcome(b, ok))  # a third call while two trials are running
        return "ok"

    assert b.call(trial) == "ok"
    assert inside == ["ok"]
    # Both permits were taken by the nested calls; the second trial closed it.
    assert b.state == "closed"
    b.open()
    clock.t += 1
    with b:
        with b:
            with pytest.raises(fk.CircuitOpenError, match="all 2 trial calls are taken"):
                b.call(ok)


def test_count_window_forgets_the_oldest_outcomes():
    b = CircuitBreaker(minimum_calls=5, window_size=5, failure_rate=0.6, clock=Clock())
    for f in (boom, boom, ok, ok, ok):  # 2/5 failed
        outcome(b, f)
    assert b.metrics()["failure_rate"] == 0.4
    outcome(b, boom)  # the first boom leaves: still 2/5
    assert b.state == "closed" and b.metrics()["failed"] == 2
    outcome(b, boom)  # the second boom leaves: still 2/5
    assert b.state == "closed" and b.metrics()["failed"] == 2
    outcome(b, boom)  # an ok leaves: 3/5 opens
    assert b.state == "open"


def test_minimum_calls_is_capped_by_a_count_window():
    b = CircuitBreaker(minimum_calls=50, window_size=4, clock=Clock())
    for f in (boom, boom, ok, ok):
        outcome(b, f)
    assert b.state == "open"


def test_time_window_drops_buckets_older_than_window_size_seconds():
    clock = Clock(100.2)
    b = CircuitBreaker(window_type="time", window_size=10, minimum_calls=4, clock=clock)
    outcome(b, boom)
    outcome(b, boom)
    clock.t = 109.9  # second 109: the bucket of second 100 is still in (100..109)
    outcome(b, ok)
    assert b.metrics()["calls"] == 3
    clock.t = 110.0  # second 110: second 100 leaves
    outcome(b, ok)
    assert b.metrics() | {} == b.metrics()
    assert (b.metrics()["calls"], b.metrics()["failed"]) == (2, 0)
    clock.t = 500.0  # far ahead: everything leaves
    outcome(b, boom)
    assert (b.metrics()["calls"], b.metrics()["failed"]) == (1, 1)
    clock.t = 499.0  # a clock stepping back records into the newest bucket
    outcome(b, boom)
    assert (b.metrics()["calls"], b.metrics()["failed"]) == (2, 2)
    assert b.state == "closed"


def test_slow_calls_open_at_slow_call_rate():
    clock = Clock()
    b = CircuitBreaker(slow_call_duration=2.0, slow_call_rate=0.5, minimum_calls=2,
                       clock=clock)

    def takes(seconds):
        def fn():
            clock.t += seconds
            return "ok"
        return fn

    assert b.call(takes(2.0)) == "ok"  # exactly the threshold: not slow
    assert b.metrics()["slow"] == 0
    assert b.call(takes(2.5)) == "ok"  # slow: 1/2 >= 0.5
    assert b.state == "open"


def test_excluded_and_base_exceptions_count_as_nothing():
    clock = Clock()
    b = CircuitBreaker(minimum_calls=1, exclude=Ignored, half_open_calls=1,
                       reset_timeout=1.0, clock=clock)

    def ignored():
        raise Ignored()

    def interrupted():
        raise KeyboardInterrupt()

    with pytest.raises(Ignored):
        b.call(ignored)
    with pytest.raises(KeyboardInterrupt):
        b.call(interrupted)
    assert b.state == "closed" and b.metrics()["calls"] == 0
    b.open()
    clock.t += 1
    with pytest.raises(Ignored):
        b.call(ignored)  # the trial permit comes back
    assert b.state == "half_open"
    assert b.call(ok) == "ok"
    assert b.state == "closed"


def test_a_call_from_before_a_transition_does_not_count_after_it():
    clock = Clock()
    b = CircuitBreaker(minimum_calls=1, reset_timeout=1.0, half_open_calls=1, clock=clock)

    def slow_failure():
        b.open()            # meanwhile the breaker opens...
        clock.t += 1
        b.call(ok)          # ...and a trial call closes it
        raise Boom()

    with pytest.raises(Boom):
        b.call(slow_failure)
    assert b.state == "closed" and b.metrics()["calls"] == 0


def test_fallback_instead_of_raising():
    b = CircuitBreaker(minimum_calls=1, fallback=lambda *a, **k: ("fallback", a, k),
                       clock=Clock())
    outcome(b, boom)
    assert b.call(ok, 1, x=2) == ("fallback", (1,), {"x": 2})
    with pytest.raises(fk.CircuitOpenError):  # a with-block has nothing to fall back to
        with b:
            pass


def test_decorator_context_manager_and_kwargs():
    b = CircuitBreaker(minimum_calls=2, clock=Clock())

    @b
    def add(x, y=0):
        """Adds."""
        return x + y

    class Service:
        @b
        def get(self, key):
            return (self, key)

    assert add(1, y=2) == 3 and add.__name__ == "add" and add.__doc__ == "Adds."
    s = Service()
    assert s.get("k") == (s, "k")
    with pytest.raises(Boom):
        with b:
            raise Boom()
    assert b.metrics()["calls"] == 3 and b.metrics()["failed"] == 1
    with pytest.raises(RuntimeError, match="without a matching __enter__"):
        b.__exit__(None, None, None)


def test_async_call_decorator_and_async_with():
    clock = Clock()
    b = CircuitBreaker(minimum_calls=3, window_size=10, clock=clock,
                       fallback=lambda *args: "cached")

    async def fetch(x):
        await asyncio.sleep(0)
        return x

    async def broken():
        await asyncio.sleep(0)
        raise Boom()

    guarded = b(broken)

    async def main():
        assert await b.call(fetch, 7) == 7
        with pytest.raises(Boom):
            await guarded()
        async with b:
            await asyncio.sleep(0)
        assert b.metrics()["calls"] == 3 and b.metrics()["failed"] == 1
        with pytest.raises(Boom):
            async with b:
                raise Boom()
        assert b.state == "open"  # 2/4
        assert await b.call(fetch, 7) == "cached"  # sync fallback, awaited for an async fn
        return "done"

    assert asyncio.run(main()) == "done"


def test_concurrent_async_context_managers_keep_their_own_frames():
    clock = Clock()
    b = CircuitBreaker(slow_call_duration=5.0, slow_call_rate=1.0, minimum_calls=100,
                       clock=clock)

    async def task(i, gate):
        async with b:
            if i == 0:
                clock.t += 10  # task 0 takes 10 s; the others start after it began
            await gate.wait()

    async def main():
        gate = asyncio.Event()
        tasks = [asyncio.create_task(task(i, gate)) for i in range(3)]
        await asyncio.sleep(0)
        gate.set()
        await asyncio.gather(*tasks)

    asyncio.run(main())
    # Tasks 1 and 2 entered after the clock moved: only task 0 is slow.
    assert b.metrics()["slow"] == 1 and b.metrics()["calls"] == 3


def test_threads_do_not_corrupt_counts_and_are_not_serialized():
    b = CircuitBreaker(window_size=1_000_000, minimum_calls=1_000_000, failure_rate=1.0)
    n_threads, n_calls = 8, 2000
    barrier = threading.Barrier(n_threads, timeout=30)

    def wait_for_all():
        barrier.wait()  # every thread inside the protected call at once
        return "ok"

    def worker(t):
        b.call(wait_for_all)
        for i in range(n_calls - 1):
            outcome(b, boom if (i + t) % 3 == 0 else ok)

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(n_threads)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    expected_failed = sum(1 for t in range(n_threads) for i in range(n_calls - 1)
                          if (i + t) % 3 == 0)
    m = b.metrics()
    assert m["calls"] == n_threads * n_calls
    assert m["failed"] == expected_failed


def test_listener_errors_are_logged_not_raised(caplog):
    b = CircuitBreaker(minimum_calls=1, clock=Clock())

    def bad(*_):
        raise RuntimeError("listener bug")

    seen = []
    b.add_listener(bad)
    b.add_listener(lambda *a: seen.append(a[1:]))
    with caplog.at_level(logging.ERROR, logger="faultkit.contain"):
        assert outcome(b, boom) == "failed"
    assert seen == [("closed", "open")] and "listener" in caplog.text
    b.remove_listener(bad)
    with pytest.raises(ValueError, match=r"<function .*\.bad at 0x[0-9a-f]+> is not a listener of this breaker"):
        b.remove_listener(bad)
    b.reset()
    assert b.state == "closed" and seen[-1] == ("open", "closed")


@pytest.mark.parametrize("kwargs, error, match", [
    ({"failure_rate": 0}, ValueError, r"failure_rate must be in \(0, 1\], got 0$"),
    ({"failure_rate": 1.5}, ValueError, r"failure_rate must be in \(0, 1\], got 1\.5"),
    ({"failure_rate": float("nan")}, ValueError, r"failure_rate must be in \(0, 1\], got nan"),
    ({"failure_rate": "0.5"}, TypeError, r"failure_rate must be a number, not str"),
    ({"slow_call_rate": 0.0}, ValueError, r"slow_call_rate must be in \(0, 1\], got 0\.0"),
    ({"minimum_calls": 0}, ValueError, r"minimum_calls must be in \[1, \d+\], got 0"),
    ({"minimum_calls": 2.0}, TypeError, r"minimum_calls must be an int, not float"),
    ({"window_size": 0}, ValueError, r"window_size must be in \[1, 16777216\], got 0"),
    ({"window_size": 2**40}, ValueError, r"window_size must be in \[1, 16777216\], got 1099511627776"),
    ({"window_type": "sliding"}, ValueError, r"window_type must be \"count\" or \"time\", got 'sliding'"),
    ({"slow_call_duration": 0}, ValueError, r"slow_call_duration must be > 0 or None, got 0"),
    ({"slow_call_duration": -1}, ValueError, r"slow_call_duration must be > 0 or None, got -1"),
    ({"reset_timeout": -1}, ValueError, r"reset_timeout must be a finite number >= 0, got -1"),
    ({"reset_timeout": float("inf")}, ValueError, r"reset_timeout must be a finite number >= 0, got inf"),
    ({"half_open_calls": 0}, ValueError, r"half_open_calls must be in \[1, 1073741824\], got 0"),
    ({"half_open_calls": True}, TypeError, r"half_open_calls must be an int, not bool"),
    ({"exclude": (ValueError, 3)}, TypeError, r"exclude must hold exception classes, got 3"),
    ({"exclude": 3}, TypeError, r"exclude must be an exception class or an iterable of them, not int"),
    ({"fallback": 3}, TypeError, r"fallback must be callable or None, not int"),
    ({"clock": 3}, TypeError, r"clock must be callable, not int"),
])
def test_bad_arguments(kwargs, error, match):
    with pytest.raises(error, match=match):
        CircuitBreaker(**kwargs)


def test_bad_calls_and_clock():
    b = CircuitBreaker(window_type="time", clock=lambda: float("nan"))
    with pytest.raises(ValueError, match="NaN"):
        b.call(ok)
    with pytest.raises(TypeError, match="missing the function"):
        CircuitBreaker().call()
    with pytest.raises(TypeError, match=r"the breaker decorates callables, not int"):
        CircuitBreaker()(3)
    with pytest.raises(TypeError, match=r"the clock's value must be a number, not str"):
        CircuitBreaker(clock=lambda: "now").open()
    with pytest.raises(TypeError, match=r"descriptor 'call' for 'faultkit\.contain\._breaker\.CircuitBreaker' objects"):
        CircuitBreaker.call(3, ok)


# -- the native core against the plain-Python model, on random histories ----

configs = st.fixed_dictionaries({
    "failure_rate": st.sampled_from([0.2, 0.5, 1.0]),
    "minimum_calls": st.integers(1, 8),
    "window_size": st.integers(1, 8),
    "window_type": st.sampled_from(["count", "time"]),
    "slow_call_duration": st.sampled_from([None, 1.0]),
    "slow_call_rate": st.sampled_from([0.5, 1.0]),
    "reset_timeout": st.sampled_from([0.0, 2.0, 5.0]),
    "half_open_calls": st.integers(1, 4),
    "max_half_open_wait": st.sampled_from([None, 1.0, 4.0]),
})
events = st.lists(st.one_of(
    st.tuples(st.just("wait"), st.sampled_from([0.25, 0.5, 1.0, 3.0, 7.0])),
    st.tuples(st.sampled_from(["ok", "fail", "ignored"]), st.sampled_from([0.0, 0.5, 1.5])),
    st.tuples(st.just("open"), st.just(0.0)),
), max_size=80)


@settings(max_examples=300, deadline=None)
@given(configs, events)
def test_native_core_matches_the_model(config, history):
    clock = Clock(50.0)
    b = CircuitBreaker(exclude=Ignored, clock=clock, **config)
    m = BreakerModel(**config)
    for kind, arg in history:
        if kind == "wait":
            clock.t += arg
            continue
        if kind == "open":
            b.open()
            if m.state != "open":
                m._move("open", clock.t)
            continue
        start = clock.t
        permitted = m.acquire(start)
        gen = m.generation

        def fn():  # runs within this iteration, so the loop variables are current
            clock.t += arg  # noqa: B023
            if kind == "fail":  # noqa: B023
                raise Boom()
            if kind == "ignored":  # noqa: B023
                raise Ignored()
            return "ok"

        got = outcome(b, fn) if kind != "ignored" else _ignored(b, fn)
        if not permitted:
            assert got == "refused"
        else:
            assert got == {"ok": "ok", "fail": "failed", "ignored": "ignored"}[kind]
            if kind == "ignored":
                m.release(gen)
            else:
                m.record(gen, clock.t, kind == "fail", arg)
        metrics = b.metrics()  # a read applies the time-driven transitions
        m.advance(clock.t)
        assert metrics["state"] == m.state
        assert (metrics["calls"], metrics["failed"], metrics["slow"]) == m.counts()
        assert metrics["not_permitted"] == m.not_permitted
        if m.state == "open":
            assert b.time_until_half_open == pytest.approx(max(0.0, m.retry_at - clock.t))


def _ignored(b, fn):
    try:
        b.call(fn)
    except Ignored:
        return "ignored"
    except fk.CircuitOpenError:
        return "refused"
