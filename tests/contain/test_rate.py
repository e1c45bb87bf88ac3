"""RateLimiter: GCRA against a plain-Python reference on an injected clock,
per-key buckets, reservations, async, bulk decisions, threads, bad input."""
import asyncio
import threading

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import faultkit as fk
from faultkit.contain import RateLimiter


class Clock:
    def __init__(self, t=1000.0):
        self.t = t

    def __call__(self):
        return self.t


class Gcra:
    """The reference: one theoretical arrival time, integer nanoseconds."""

    def __init__(self, rate, per, burst):
        self.interval = int(per / rate * 1e9)
        self.tolerance = self.interval * burst
        self.tat = None

    def decide(self, now_s, cost, max_wait_s=0.0):
        now = int(now_s * 1e9)
        base = now if self.tat is None or self.tat < now else self.tat
        nxt = base + cost * self.interval
        wait = nxt - self.tolerance - now
        if wait > int(max_wait_s * 1e9):
            return False, wait
        self.tat = nxt
        return True, max(wait, 0)


def test_burst_then_one_per_interval():
    clock = Clock()
    r = RateLimiter(10, 1.0, burst=3, clock=clock)
    assert [r.try_acquire() for _ in range(4)] == [True, True, True, False]
    assert r.retry_after() == pytest.approx(0.1)
    clock.t += 0.1
    assert [r.try_acquire(), r.try_acquire()] == [True, False]
    clock.t += 10                      # idle: the bucket is full again, not fuller
    assert [r.try_acquire() for _ in range(4)] == [True, True, True, False]
    assert r.metrics()["allowed"] == 7 and r.metrics()["refused"] == 3


def test_refusal_names_the_wait_and_acquire_reserves_in_order():
    clock = Clock()
    slept = []
    r = RateLimiter(2, 1.0, burst=1, clock=clock, sleep=slept.append)
    r.acquire()
    with pytest.raises(fk.RateLimitedError, match=r"retry after 0.500000 s") as info:
        r.acquire()
    assert info.value.retry_after == pytest.approx(0.5) and info.value.key is None
    r.acquire(timeout=0.5)             # reserved: the caller sleeps 0.5 s
    r.acquire(timeout=1.0)             # the next slot after that: 1.0 s
    assert slept == [pytest.approx(0.5), pytest.approx(1.0)]
    with pytest.raises(fk.RateLimitedError) as info:
        r.acquire(timeout=1.0)
    assert info.value.retry_after == pytest.approx(1.5)


def test_keys_have_their_own_buckets():
    clock = Clock()
    r = RateLimiter(1, 1.0, burst=1, clock=clock)
    assert r.try_acquire("a") and r.try_acquire("b") and r.try_acquire(7)
    assert not r.try_acquire("a") and not r.try_acquire(b"b" if False else "b")
    assert r.try_acquire()            # the own bucket is separate from every key
    with pytest.raises(fk.RateLimitedError, match="for key 'a'") as info:
        r.acquire("a")
    assert info.value.key == "a"
    clock.t += 1
    assert r.try_acquire("a")


def test_cost_takes_several_permits():
    clock = Clock()
    r = RateLimiter(10, 1.0, burst=5, clock=clock)
    assert r.try_acquire(cost=5) and not r.try_acquire(cost=1)
    clock.t += 0.3
    assert not r.try_acquire(cost=4) and r.try_acquire(cost=3)


@settings(max_examples=200, deadline=None)
@given(st.sampled_from([1, 3, 10, 1000]), st.sampled_from([0.5, 1.0, 60.0]),
       st.integers(1, 5),
       st.lists(st.tuples(st.sampled_from([0.0, 0.001, 0.1, 0.4, 3.0]), st.integers(1, 5),
                          st.sampled_from([0.0, 0.0, 0.2, 1.0])), max_size=60))
def test_matches_the_reference(rate, per, burst, events):
    clock = Clock(50.0)
    slept = []
    r = RateLimiter(rate, per, burst=burst, clock=clock, sleep=slept.append)
    ref = Gcra(rate, per, burst)
    for dt, cost, max_wait in events:
        clock.t += dt
        cost = min(cost, burst)
        ok, wait = ref.decide(clock.t, cost, max_wait)
        if max_wait == 0.0:
            assert r.try_acquire(cost=cost) == ok
        else:
            slept.clear()
            if ok:
                r.acquire(cost=cost, timeout=max_wait)
                assert sum(slept) == pytest.approx(wait / 1e9, abs=1e-9)
            else:
                with pytest.raises(fk.RateLimitedError) as info:
                    r.acquire(cost=cost, timeout=max_wait)
                assert info.value.retry_after == pytest.approx(wait / 1e9, abs=1e-9)


def test_bulk_equals_one_at_a_time():
    rng = np.random.default_rng(7)
    ids = rng.integers(0, 50, 5000).astype(np.uint64)
    now = np.sort(rng.uniform(0, 10, 5000))
    a = RateLimiter(3, 1.0, burst=2, clock=Clock())
    b = RateLimiter(3, 1.0, burst=2, clock=Clock())
    got = a.try_acquire_many(ids, now)
    clock = Clock()
    b2 = RateLimiter(3, 1.0, burst=2, clock=clock)
    want = []
    for i, t in zip(ids.tolist(), now.tolist()):
        clock.t = t
        want.append(b2.try_acquire_many(np.array([i], dtype=np.uint64), t)[0])
    assert got.tolist() == want and 0 < got.sum() < len(ids)
    one = b.try_acquire_many(np.array([5, 5, 5], dtype=np.int64), 1.0)
    assert one.tolist() == [1, 1, 0]
    # A string key and its id share the bucket.
    c = RateLimiter(1, 1.0, burst=1, clock=Clock())
    assert c.try_acquire("k")
    assert c.try_acquire_many(np.array([c.key_id("k")], dtype=np.uint64), 1000.0).tolist() == [0]
    bad = c.try_acquire_many(np.array([1, 2], dtype=np.uint64), np.array([np.nan, np.inf]))
    assert bad.tolist() == [0, 0]


def test_threads_never_over_grant():
    r = RateLimiter(1000, 3600.0, burst=1000)   # 1,000 permits, no refill to speak of
    granted = []
    start = threading.Barrier(4)

    kid = np.full(500, r.key_id("k"), dtype=np.uint64)

    def worker():
        start.wait()
        n = 0
        for _ in range(2000):
            n += r.try_acquire("k")
        granted.append(n)

    def bulk():            # decides with the GIL released, racing the others
        start.wait()
        n = 0
        for _ in range(4):
            n += int(r.try_acquire_many(kid).sum())
        granted.append(n)
    threads = [threading.Thread(target=worker) for _ in range(2)]
    threads += [threading.Thread(target=bulk) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(granted) == 1000


def test_async_forms():
    clock = Clock()
    slept = []

    async def fake_sleep(s):
        slept.append(s)

    r = RateLimiter(2, 1.0, burst=1, clock=clock, timeout=1.0, async_sleep=fake_sleep,
                    sleep=slept.append)

    async def main():
        async with r:
            pass
        await r.acquire_async()
        with pytest.raises(fk.RateLimitedError):
            await r.acquire_async(timeout=0.2)
    asyncio.run(main())
    assert slept == [pytest.approx(0.5)]
    with r:
        pass
    assert slept[-1] == pytest.approx(1.0)


@pytest.mark.parametrize("args, kwargs, error, match", [
    ((0,), {}, ValueError, "rate must be a finite number > 0"),
    (("1",), {}, TypeError, "rate must be a number"),
    ((1, 0), {}, ValueError, "per must be"),
    ((1,), {"burst": 0}, ValueError, "burst must be in"),
    ((1,), {"burst": 1.5}, TypeError, "burst must be an int"),
    ((1,), {"keys": 0}, ValueError, "keys must be in"),
    ((1,), {"timeout": -1}, ValueError, "timeout must be"),
    ((1,), {"clock": 3}, TypeError, "clock must be callable"),
    ((1e12,), {}, ValueError, "per / rate must be between"),
])
def test_bad_arguments(args, kwargs, error, match):
    with pytest.raises(error, match=match):
        RateLimiter(*args, **kwargs)


def test_bad_calls():
    r = RateLimiter(1, burst=2, clock=Clock())
    with pytest.raises(ValueError, match=r"cost must be in \[1, burst=2\]"):
        r.try_acquire(cost=3)
    with pytest.raises(TypeError, match="cost must be an int"):
        r.try_acquire(cost=1.0)
    with pytest.raises(TypeError, match="ids must be a 1-D int64"):
        r.try_acquire_many(np.zeros(3))
    with pytest.raises(ValueError, match="now has 2 times for 3 ids"):
        r.try_acquire_many(np.zeros(3, dtype=np.uint64), np.zeros(2))
    with pytest.raises(ValueError, match="out must be"):
        r.try_acquire_many(np.zeros(3, dtype=np.uint64), 1.0, out=np.zeros(2, dtype=np.uint8))
    bad = RateLimiter(1, clock=lambda: float("nan"))
    with pytest.raises(ValueError, match="the clock's value must be finite"):
        bad.try_acquire()


def test_extreme_times_and_bursts_do_not_overflow():
    clock = Clock(3.99e9)                          # a wall clock in 2096
    r = RateLimiter(1, 9e7, burst=25, clock=clock)   # tolerance near the int64 cap
    assert r.try_acquire(cost=25) and not r.try_acquire()
    assert r.retry_after() > 0
    clock.t = 4.0e9
    with pytest.raises(ValueError, match="below 4e9 s"):
        r.try_acquire()
