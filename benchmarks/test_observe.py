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


@pytest.mark.parametrize("probes", [0, 4096], ids=["meter off", "meter on"])
@pytest.mark.benchmark(group="observe: ejection by report (request thread), move meter on/off")
def test_ejection_by_report(benchmark, probes):
    """What a request thread pays when its failed request ejects a node: the meter only
    marks the change (it measures at the next tick, in the control thread)."""
    nodes = [f"n{i}" for i in range(48)]
    c = fk.Cluster(nodes, move_probes=probes, detector=fk.TimeoutDetector(5.0, clock=lambda: 0.0),
                   clock=lambda: 0.0)
    c.heartbeat_many(nodes, [0.0] * len(nodes))
    state = {"t": 0.0}

    def setup():
        state["t"] += 400.0  # past any ejection (max_ejection_time 300 s): the node is back
        c.tick(state["t"])
        for _ in range(4):
            c.report("n5", False, now=state["t"])

    def eject():
        c.report("n5", False, now=state["t"])
    benchmark.pedantic(eject, setup=setup, rounds=300, warmup_rounds=5, iterations=1)
    assert not c.is_routable("n5")


@pytest.mark.parametrize("probes", [0, 4096], ids=["meter off", "meter on"])
@pytest.mark.benchmark(group="observe: tick after a routing change, move meter on/off")
def test_tick_after_change(benchmark, probes):
    """The control thread's tick that measures the change (48-node ring, 4,096 probes)."""
    nodes = [f"n{i}" for i in range(48)]
    c = fk.Cluster(nodes, move_probes=probes, detector=fk.TimeoutDetector(5.0, clock=lambda: 0.0),
                   clock=lambda: 0.0)
    c.heartbeat_many(nodes, [0.0] * len(nodes))
    flip = {"held": False}

    def setup():
        (c.release if flip["held"] else c.hold)("n5")
        flip["held"] = not flip["held"]

    benchmark.pedantic(c.tick, args=(0.0,), setup=setup, rounds=300, warmup_rounds=5, iterations=1)
    assert c.routing_stats["measured"] == (300 + 5 if probes else 0)
