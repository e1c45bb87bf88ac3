"""Metrics on and off (issue #19): the registry reads objects when scraped, so a registered
breaker or ring should cost nothing per call.  Same objects, same rounds, one run; a
scrape runs between rounds on the "on" side, as a Prometheus server would."""
import pytest

import faultkit as fk
from conftest import make_keys
from faultkit.observe import Registry

ROUNDS = dict(rounds=200, warmup_rounds=5, iterations=1)
KEYS = make_keys(1000, seed=3)


def _scraper(reg):
    def scrape():
        reg.collect()  # setup must return None
    return scrape


def _calls(br):
    call, fn = br.call, (lambda: None)

    def run():
        for _ in range(1000):
            call(fn)
    return run


@pytest.mark.parametrize("metrics", ["off", "on"])
@pytest.mark.benchmark(group="observe: breaker.call x 1,000, metrics on/off")
def test_breaker_call(benchmark, metrics):
    br = fk.CircuitBreaker()
    if metrics == "on":
        reg = Registry()
        reg.add(br, "b")
        benchmark.pedantic(_calls(br), setup=_scraper(reg), **ROUNDS)
    else:
        benchmark.pedantic(_calls(br), **ROUNDS)


@pytest.mark.parametrize("metrics", ["off", "on"])
@pytest.mark.benchmark(group="observe: HashRing.get x 1,000, metrics on/off")
def test_ring_get(benchmark, metrics):
    ring = fk.HashRing([f"n{i}" for i in range(100)])
    cluster = fk.Cluster([f"n{i}" for i in range(100)])
    get = ring.get

    def run():
        for k in KEYS:
            get(k)
    if metrics == "on":
        reg = Registry()
        reg.add(cluster, "c")  # rings are observed through the Cluster that owns them
        benchmark.pedantic(run, setup=_scraper(reg), **ROUNDS)
    else:
        benchmark.pedantic(run, **ROUNDS)
