"""Contain: the circuit breaker against pybreaker and circuitbreaker; isolation against a rebuild.

Groups (compare within a group; ``faultkit bench -k contain``):
- 1,000 successful calls of a no-op function a round: bare, through
  ``fk.CircuitBreaker.call``, through its decorator, through the plain-Python
  ring-buffer breaker of ``tests/breaker_model.py`` (what a pure-Python
  implementation costs), ``pybreaker.CircuitBreaker.call`` and the
  ``circuitbreaker`` package's decorator.  Overhead per call = (round - bare
  round) / 1,000.
- the breaker's three forms (call, decorator, ``with``) against ``with
  threading.Lock():`` (the cheapest C-level context manager), pybreaker,
  circuitbreaker and purgatory; async forms against aiobreaker and
  ``async with asyncio.Lock()``.
- Retry's success path against tenacity and stamina; RateLimiter.try_acquire
  against pyrate-limiter and limits (sync) and aiolimiter (async), and the
  bulk try_acquire_many; TimeLimiter against asyncio.wait_for.
- a rack of 1,000 services on a 100,000-service ``HashRing`` (160 vnodes):
  ``isolate`` + ``restore`` of the rack through ``FailureDomains.attach``,
  against building the ring anew without the rack.
- ``place_many`` of 10,000 keys, 3 replicas in distinct racks of 1,000 services
  (no peer; for scale: rendezvous within a rack is linear in its size).
"""
import asyncio
import pathlib
import sys
import threading

import aiobreaker
import aiolimiter
import circuitbreaker
import limits
import numpy as np
import purgatory
import pybreaker
import pyrate_limiter
import pytest
import stamina
import tenacity

import faultkit as fk
from faultkit.contain import FailureDomains
from conftest import BULK

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent / "tests" / "support"))
from breaker_model import PlainBreaker

CALLS = range(1000)


def noop():
    return 1


G_BREAKER = "contain: 1,000 successful calls a round"


@pytest.mark.benchmark(group=G_BREAKER)
def test_bare_calls(benchmark):
    def run():
        for _ in CALLS:
            noop()
    benchmark(run)


@pytest.mark.benchmark(group=G_BREAKER)
def test_faultkit_breaker_call(benchmark):
    call = fk.CircuitBreaker().call

    def run():
        for _ in CALLS:
            call(noop)
    benchmark(run)


@pytest.mark.benchmark(group=G_BREAKER)
def test_faultkit_breaker_decorator(benchmark):
    guarded = fk.CircuitBreaker()(noop)

    def run():
        for _ in CALLS:
            guarded()
    benchmark(run)


@pytest.mark.benchmark(group=G_BREAKER)
def test_plain_python_breaker_call(benchmark):
    import time
    call = PlainBreaker(time.monotonic).call

    def run():
        for _ in CALLS:
            call(noop)
    benchmark(run)


@pytest.mark.benchmark(group=G_BREAKER)
def test_pybreaker_call(benchmark):
    call = pybreaker.CircuitBreaker().call

    def run():
        for _ in CALLS:
            call(noop)
    benchmark(run)


@pytest.mark.benchmark(group=G_BREAKER)
def test_circuitbreaker_decorator(benchmark):
    guarded = circuitbreaker.CircuitBreaker()(noop)

    def run():
        for _ in CALLS:
            guarded()
    benchmark(run)


@pytest.mark.benchmark(group=G_BREAKER)
def test_faultkit_breaker_with(benchmark):
    b = fk.CircuitBreaker()

    def run():
        for _ in CALLS:
            with b:
                noop()
    benchmark(run)


@pytest.mark.benchmark(group=G_BREAKER)
def test_threading_lock_with(benchmark):
    lock = threading.Lock()

    def run():
        for _ in CALLS:
            with lock:
                noop()
    benchmark(run)


@pytest.mark.benchmark(group=G_BREAKER)
def test_pybreaker_decorator(benchmark):
    guarded = pybreaker.CircuitBreaker()(noop)

    def run():
        for _ in CALLS:
            guarded()
    benchmark(run)


@pytest.mark.benchmark(group=G_BREAKER)
def test_pybreaker_with(benchmark):
    b = pybreaker.CircuitBreaker()

    def run():
        for _ in CALLS:
            with b.calling():
                noop()
    benchmark(run)


@pytest.mark.benchmark(group=G_BREAKER)
def test_circuitbreaker_with(benchmark):
    b = circuitbreaker.CircuitBreaker()

    def run():
        for _ in CALLS:
            with b:
                noop()
    benchmark(run)


@pytest.mark.benchmark(group=G_BREAKER)
def test_purgatory_decorator(benchmark):
    guarded = purgatory.SyncCircuitBreakerFactory()("bench")(noop)

    def run():
        for _ in CALLS:
            guarded()
    benchmark(run)


@pytest.mark.benchmark(group=G_BREAKER)
def test_purgatory_with(benchmark):
    b = purgatory.SyncCircuitBreakerFactory().get_breaker("bench")

    def run():
        for _ in CALLS:
            with b:
                noop()
    benchmark(run)


# -- async forms: 1,000 awaits a round in one event loop ------------------------------

G_ABREAKER = "contain: 1,000 successful awaited calls a round"


async def anoop():
    return 1


def _async_bench(benchmark, body):
    loop = asyncio.new_event_loop()
    try:
        benchmark(lambda: loop.run_until_complete(body()))
    finally:
        loop.close()


@pytest.mark.benchmark(group=G_ABREAKER)
def test_bare_awaits(benchmark):
    async def body():
        for _ in CALLS:
            await anoop()
    _async_bench(benchmark, body)


@pytest.mark.benchmark(group=G_ABREAKER)
def test_faultkit_breaker_await_call(benchmark):
    call = fk.CircuitBreaker().call

    async def body():
        for _ in CALLS:
            await call(anoop)
    _async_bench(benchmark, body)


@pytest.mark.benchmark(group=G_ABREAKER)
def test_faultkit_breaker_async_decorator(benchmark):
    guarded = fk.CircuitBreaker()(anoop)

    async def body():
        for _ in CALLS:
            await guarded()
    _async_bench(benchmark, body)


@pytest.mark.benchmark(group=G_ABREAKER)
def test_faultkit_breaker_async_with(benchmark):
    b = fk.CircuitBreaker()

    async def body():
        for _ in CALLS:
            async with b:
                await anoop()
    _async_bench(benchmark, body)


@pytest.mark.benchmark(group=G_ABREAKER)
def test_asyncio_lock_async_with(benchmark):
    lock = asyncio.Lock()

    async def body():
        for _ in CALLS:
            async with lock:
                await anoop()
    _async_bench(benchmark, body)


@pytest.mark.benchmark(group=G_ABREAKER)
def test_aiobreaker_call_async(benchmark):
    b = aiobreaker.CircuitBreaker()

    async def body():
        for _ in CALLS:
            await b.call_async(anoop)
    _async_bench(benchmark, body)


@pytest.mark.benchmark(group=G_ABREAKER)
def test_aiobreaker_decorator(benchmark):
    guarded = aiobreaker.CircuitBreaker()(anoop)

    async def body():
        for _ in CALLS:
            await guarded()
    _async_bench(benchmark, body)


# -- Retry: the success path ----------------------------------------------------------

G_RETRY = "contain: 1,000 successful calls through a retry policy a round"


@pytest.mark.benchmark(group=G_RETRY)
def test_faultkit_retry_call(benchmark):
    call = fk.Retry(3).call

    def run():
        for _ in CALLS:
            call(noop)
    benchmark(run)


@pytest.mark.benchmark(group=G_RETRY)
def test_faultkit_retry_decorator(benchmark):
    guarded = fk.Retry(3)(noop)

    def run():
        for _ in CALLS:
            guarded()
    benchmark(run)


@pytest.mark.benchmark(group=G_RETRY)
def test_faultkit_retry_deadline_and_budget(benchmark):
    guarded = fk.Retry(3, deadline=10.0, budget=fk.RetryBudget())(noop)

    def run():
        for _ in CALLS:
            guarded()
    benchmark(run)


@pytest.mark.benchmark(group=G_RETRY)
def test_tenacity_decorator(benchmark):
    guarded = tenacity.retry(stop=tenacity.stop_after_attempt(3))(noop)

    def run():
        for _ in CALLS:
            guarded()
    benchmark(run)


@pytest.mark.benchmark(group=G_RETRY)
def test_stamina_decorator(benchmark):
    guarded = stamina.retry(on=Exception, attempts=3)(noop)

    def run():
        for _ in CALLS:
            guarded()
    benchmark(run)


# -- RateLimiter -------------------------------------------------------------------

G_RATE = "contain: 1,000 rate-limit decisions a round (always allowed)"
BIG = 10**9


@pytest.mark.benchmark(group=G_RATE)
def test_faultkit_rate_try_acquire(benchmark):
    try_acquire = fk.RateLimiter(BIG).try_acquire

    def run():
        for _ in CALLS:
            try_acquire()
    benchmark(run)


@pytest.mark.benchmark(group=G_RATE)
def test_faultkit_rate_try_acquire_key(benchmark):
    try_acquire = fk.RateLimiter(BIG).try_acquire

    def run():
        for _ in CALLS:
            try_acquire("client-1")
    benchmark(run)


@pytest.mark.benchmark(group=G_RATE)
def test_pyrate_limiter_try_acquire(benchmark):
    limiter = pyrate_limiter.Limiter(pyrate_limiter.Rate(BIG, pyrate_limiter.Duration.SECOND))

    def run():
        for _ in CALLS:
            limiter.try_acquire("client-1", blocking=False)
    benchmark(run)


@pytest.mark.benchmark(group=G_RATE)
def test_limits_moving_window_hit(benchmark):
    strategy = limits.strategies.MovingWindowRateLimiter(limits.storage.MemoryStorage())
    item = limits.parse(f"{BIG}/second")

    def run():
        for _ in CALLS:
            strategy.hit(item, "client-1")
    benchmark(run)


@pytest.mark.benchmark(group=G_RATE)
def test_limits_fixed_window_hit(benchmark):
    strategy = limits.strategies.FixedWindowRateLimiter(limits.storage.MemoryStorage())
    item = limits.parse(f"{BIG}/second")

    def run():
        for _ in CALLS:
            strategy.hit(item, "client-1")
    benchmark(run)


G_ARATE = "contain: 1,000 async rate-limit acquisitions a round (always allowed)"


@pytest.mark.benchmark(group=G_ARATE)
def test_faultkit_rate_async_with(benchmark):
    limiter = fk.RateLimiter(BIG)

    async def body():
        for _ in CALLS:
            async with limiter:
                pass
    _async_bench(benchmark, body)


@pytest.mark.benchmark(group=G_ARATE)
def test_aiolimiter_async_with(benchmark):
    limiter = aiolimiter.AsyncLimiter(BIG, 1)

    async def body():
        for _ in CALLS:
            async with limiter:
                pass
    _async_bench(benchmark, body)


@pytest.mark.benchmark(group="contain: try_acquire_many, 1,000,000 decisions over 50,000 keys")
def test_faultkit_rate_bulk(benchmark):
    limiter = fk.RateLimiter(BIG, keys=1 << 17)
    ids = (np.arange(1_000_000, dtype=np.uint64) * np.uint64(2654435761)) % np.uint64(50_000)
    out = np.empty(len(ids), dtype=np.uint8)
    benchmark.pedantic(limiter.try_acquire_many, args=(ids, 1000.0), kwargs={"out": out},
                       rounds=10, iterations=1)


# -- TimeLimiter ------------------------------------------------------------------

G_TIMELIMIT = "contain: 1,000 awaited calls under a time limit a round"


@pytest.mark.benchmark(group=G_TIMELIMIT)
def test_faultkit_time_limiter(benchmark):
    call = fk.TimeLimiter(10.0).call

    async def body():
        for _ in CALLS:
            await call(anoop)
    _async_bench(benchmark, body)


@pytest.mark.benchmark(group=G_TIMELIMIT)
def test_asyncio_wait_for(benchmark):
    async def body():
        for _ in CALLS:
            await asyncio.wait_for(anoop(), 10.0)
    _async_bench(benchmark, body)


# -- isolation against a rebuild ---------------------------------------------------

N_SERVICES = 100_000
RACK = 1_000
G_ISOLATE = "contain: a rack of 1,000 on a 100,000-service ring"


@pytest.fixture(scope="module")
def fleet():
    services = [f"svc-{i:06d}" for i in range(N_SERVICES)]
    domains = FailureDomains()
    for i, s in enumerate(services):
        rack = i // RACK
        domains.assign(s, f"eu/az{rack % 3}/r{rack:03d}/{s}")
    ring = fk.HashRing(services)
    domains.attach(ring)
    return services, domains, ring


@pytest.mark.benchmark(group=G_ISOLATE)
def test_isolate_and_restore_rack(benchmark, fleet):
    services, domains, ring = fleet
    rack = domains.domain_of(services[0], "rack")

    def run():
        domains.isolate(rack)
        domains.restore(rack)
    benchmark.pedantic(run, **BULK)
    assert ring.alive_mask().all()


@pytest.mark.benchmark(group=G_ISOLATE)
def test_mark_down_and_up_rack(benchmark, fleet):
    """The baseline a user would reach for: the ring's own bulk mark down/up of the rack."""
    services, domains, ring = fleet
    members = domains.members(domains.domain_of(services[0], "rack"))

    def run():
        ring.mark_down_many(members)
        ring.mark_up_many(members)
    benchmark.pedantic(run, **BULK)
    assert ring.alive_mask().all()


@pytest.mark.benchmark(group=G_ISOLATE)
def test_rebuild_ring_without_rack(benchmark, fleet):
    services, domains, ring = fleet
    rest = services[RACK:]
    rebuilt = benchmark.pedantic(fk.HashRing, args=(rest,), **BULK)
    assert len(rebuilt) == N_SERVICES - RACK


@pytest.mark.benchmark(group="contain: place_many, 10,000 keys, 3 racks of 1,000 each")
def test_place_many(benchmark, fleet, keys_1m):
    _, domains, _ = fleet
    keys = keys_1m[:10_000]
    placed = benchmark.pedantic(domains.place_many, args=(keys, 3), **BULK)
    assert len(placed) == len(keys)
