"""Cluster: tick, live replicas across racks and ejection-to-routing, against the plain ring lookup.

Configuration (recorded in docs/benchmarks.md with the figures):
- 48 nodes: 2 zones x 6 racks x 4 hosts (12 racks), HashRing (160 vnodes), the default
  PhiAccrualDetector (Akka's defaults), default IsolationPolicy and OutlierDetector;
  every node heartbeated, nothing failing (the steady state).
- Lookups: 1,000 fixed 16-character str keys per round, one call per key:
  ``ring.get(key)`` (the plain ring lookup, the baseline), ``ring.get_n(key, 3)`` (3 distinct
  nodes, domains ignored), ``domains.place(key, 3)`` (3 racks, liveness ignored) and
  ``cluster.replicas(key, 3, spread="rack")`` (3 live nodes in 3 distinct racks).
- ``Cluster.tick(now)`` with nothing due (48 and 10,000 nodes), against the detector's own
  ``scan`` (what tick adds: event filtering, the outlier detector's tick, the policy's tick).
- Ejection to routing: the ``cluster.report(node, False)`` that makes the 5th error in a row
  plus one ``cluster.route(key)`` of a key that node owned, which must already avoid it.

Compare within a group: ``pytest benchmarks/test_cluster.py --benchmark-group-by=group``.
"""
import pytest

import faultkit as fk
from faultkit.cluster import Cluster

from conftest import make_keys

KEYS = make_keys(1000, seed=7)


def fleet(zones, racks, hosts):
    return {f"n{z}-{r}-{h}": f"eu/z{z}/r{r}/h{h}"
            for z in range(zones) for r in range(racks) for h in range(hosts)}


class Clock:
    def __init__(self):
        self.t = 0.0

    def __call__(self):
        return self.t


def live_cluster(zones=2, racks=6, hosts=4):
    clock = Clock()
    c = Cluster(fleet(zones, racks, hosts), clock=clock)
    for t in (0.0, 1.0, 2.0):
        c.heartbeat_many(c.nodes, [t] * len(c))
    c.tick(2.0)
    return c, clock


@pytest.fixture(scope="module")
def c48():
    return live_cluster()


@pytest.mark.benchmark(group="lookup x1000")
def test_ring_get(benchmark, c48):
    ring = fk.HashRing(c48[0].nodes)
    benchmark(lambda: [ring.get(k) for k in KEYS])


@pytest.mark.benchmark(group="lookup x1000")
def test_ring_get_n3(benchmark, c48):
    ring = fk.HashRing(c48[0].nodes)
    benchmark(lambda: [ring.get_n(k, 3) for k in KEYS])


@pytest.mark.benchmark(group="lookup x1000")
def test_cluster_route(benchmark, c48):
    c = c48[0]
    benchmark(lambda: [c.route(k) for k in KEYS])


@pytest.mark.benchmark(group="lookup x1000")
def test_domains_place3(benchmark, c48):
    d = c48[0].domains
    benchmark(lambda: [d.place(k, 3, spread="rack") for k in KEYS])


@pytest.mark.benchmark(group="lookup x1000")
def test_cluster_replicas3_rack(benchmark, c48):
    c = c48[0]
    got = benchmark(lambda: [c.replicas(k, 3, spread="rack") for k in KEYS])
    assert all(len({c.domains.domain_of(n, "rack") for n in r}) == 3 for r in got)


@pytest.mark.benchmark(group="lookup x1000")
def test_cluster_replicas3_rack_one_rack_down(benchmark):
    c, _ = live_cluster()
    c.domains.isolate("eu/z0/r1")
    benchmark(lambda: [c.replicas(k, 3, spread="rack") for k in KEYS])


@pytest.mark.benchmark(group="tick, nothing due")
@pytest.mark.parametrize("shape", [(2, 6, 4), (10, 50, 20)], ids=["48 nodes", "10000 nodes"])
def test_cluster_tick(benchmark, shape):
    c, clock = live_cluster(*shape)
    clock.t = 2.5
    assert benchmark(c.tick, 2.5) == []


@pytest.mark.benchmark(group="tick, nothing due")
@pytest.mark.parametrize("shape", [(2, 6, 4), (10, 50, 20)], ids=["48 nodes", "10000 nodes"])
def test_detector_scan(benchmark, shape):
    c, _ = live_cluster(*shape)
    assert benchmark(c.detector.scan, 2.5) == []


@pytest.mark.benchmark(group="ejection to routing")
def test_ejection_to_routing(benchmark):
    c, _ = live_cluster()
    node = c.nodes[5]
    key = next(k for k in KEYS if c.route(k) == node)
    state = {"t": 10.0}
    everyone = c.nodes

    def setup():
        state["t"] += 400.0  # past any ejection (max_ejection_time 300 s)
        c.heartbeat_many(everyone, [state["t"]] * len(everyone))
        c.tick(state["t"])   # the node comes back for trial traffic
        assert c.route(key) == node
        for _ in range(4):
            c.report(node, False, now=state["t"])
        return (), {}

    def eject_and_route():
        c.report(node, False, now=state["t"])
        return c.route(key)

    assert benchmark.pedantic(eject_and_route, setup=setup, rounds=300) != node
