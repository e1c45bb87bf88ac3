"""Contain: the circuit breaker against pybreaker and circuitbreaker; isolation against a rebuild.

Groups (compare within a group; ``faultkit bench -k contain``):
- 1,000 successful calls of a no-op function a round: bare, through
  ``fk.CircuitBreaker.call``, through its decorator, through the plain-Python
  ring-buffer breaker of ``tests/breaker_model.py`` (what a pure-Python
  implementation costs), ``pybreaker.CircuitBreaker.call`` and the
  ``circuitbreaker`` package's decorator.  Overhead per call = (round - bare
  round) / 1,000.
- a rack of 1,000 services on a 100,000-service ``HashRing`` (160 vnodes):
  ``isolate`` + ``restore`` of the rack through ``FailureDomains.attach``,
  against building the ring anew without the rack.
- ``place_many`` of 10,000 keys, 3 replicas in distinct racks of 1,000 services
  (no peer; for scale: rendezvous within a rack is linear in its size).
"""
import pathlib
import sys

import circuitbreaker
import pybreaker
import pytest

import faultkit as fk
from faultkit.contain import FailureDomains

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent / "tests"))
from breaker_model import PlainBreaker  # noqa: E402

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
    benchmark(run)
    assert ring.alive_mask().all()


@pytest.mark.benchmark(group=G_ISOLATE)
def test_rebuild_ring_without_rack(benchmark, fleet):
    services, domains, ring = fleet
    rest = services[RACK:]
    rebuilt = benchmark.pedantic(fk.HashRing, args=(rest,), rounds=3, iterations=1)
    assert len(rebuilt) == N_SERVICES - RACK


@pytest.mark.benchmark(group="contain: place_many, 10,000 keys, 3 racks of 1,000 each")
def test_place_many(benchmark, fleet, keys_1m):
    _, domains, _ = fleet
    keys = keys_1m[:10_000]
    placed = benchmark.pedantic(domains.place_many, args=(keys, 3), rounds=3, iterations=1)
    assert len(placed) == len(keys)
