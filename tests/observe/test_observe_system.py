"""Observing the system: keys moved per routing change, isolation and ejection counts,
a Node's time to route around a failure, the live view's domain and routing columns,
and `faultkit monitor --domains` isolating a rack whose sender is SIGKILLed."""
import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time

import cli_procs
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from node_procs import free_udp_port

import faultkit as fk
from faultkit.balance import moved_fraction
from faultkit.balance.moves import MoveMeter
from faultkit.observe import Registry, decision_record

WAIT = 20.0  # the longest any poll waits (a bound, never asserted)


def samples(reg, name):
    return {m.name: dict(m.samples) for m in reg.collect()}.get(name, {})


class Clock:
    def __init__(self):
        self.t = 0.0

    def __call__(self):
        return self.t


# ---- MoveMeter --------------------------------------------------------------------------
BALANCERS = {"ring": fk.HashRing, "ketama": fk.HashRing.ketama, "maglev": fk.Maglev,
             "rendezvous": fk.Rendezvous}


@settings(max_examples=40, deadline=None)
@given(kind=st.sampled_from(sorted(BALANCERS)), n=st.integers(2, 40),
       changes=st.lists(st.tuples(st.sampled_from(["down", "up", "add", "remove"]),
                                  st.integers(0, 10**6)), min_size=1, max_size=6))
def test_move_meter_equals_moved_fraction_over_its_probe_keys(kind, n, changes):
    """Reference: bounded.moved_fraction between a copy of the balancer before and after
    each change, over the same probe hashes, must give exactly the meter's figure."""
    make = BALANCERS[kind]
    names = [f"n{i}" for i in range(n)]
    live = make(names)
    meter = MoveMeter(live, probes=512)
    assert meter.measure(live.nodes) is None
    fresh = n
    for op, pick in changes:
        before = make(live.nodes)
        before.set_alive(live.alive_mask())
        nodes = live.nodes
        node = nodes[pick % len(nodes)]
        if op == "down":
            live.mark_down(node)
        elif op == "up":
            live.mark_up(node)
        elif op == "add":
            live.add(f"n{fresh}")
            fresh += 1
        elif len(nodes) > 1:
            live.remove(node)
        if not live.alive_mask().any():  # moved_fraction needs a live node on both sides
            live.mark_up(live.nodes[0])
        got = meter.measure(live.nodes)
        assert got == moved_fraction(before, live, meter._keys)


def test_move_meter_estimates_a_nodes_exact_share_of_the_ring():
    """Marking one node down moves exactly its share of the key space (the ring's
    distribution); the estimate is within 4 standard errors of it."""
    ring = fk.HashRing([f"n{i}" for i in range(50)])
    meter = MoveMeter(ring)
    meter.measure(ring.nodes)
    for node in ("n3", "n17", "n42"):
        share = ring.distribution()[node]
        ring.mark_down(node)
        got = meter.measure(ring.nodes)
        se = (share * (1 - share) / meter.probes) ** 0.5
        assert abs(got - share) <= 4 * se, (node, got, share)
        ring.mark_up(node)
        assert abs(meter.measure(ring.nodes) - share) <= 4 * se


def test_move_meter_counts_keys_left_without_a_node():
    ring = fk.HashRing(["a", "b", "c"])
    meter = MoveMeter(ring, probes=64)
    meter.measure(ring.nodes)
    ring.mark_down_many(["a", "b", "c"])
    assert meter.measure(ring.nodes) == 1.0   # every key lost its node
    assert meter.measure(ring.nodes) == 0.0   # still none: nothing moved
    ring.mark_up("c")                         # "no node" is no node index, not even the last
    assert meter.measure(ring.nodes) == 1.0
    ring = fk.HashRing(["a", "b"])
    meter = MoveMeter(ring, probes=64)
    ring.mark_down("b")
    meter.measure(ring.nodes)                 # every key on a
    ring.remove("a")                          # a's keys have no node left: all moved
    assert meter.measure(ring.nodes) == 1.0


def test_move_meter_probes_are_the_golden_ratio_sequence():
    """Knuth's multiplicative spacing over 64 bits; its top 32 bits for a ketama ring (whose
    keys hash to 32 bits); one probe is enough to measure; the Cluster's default is 4,096."""
    golden = 0x9E3779B97F4A7C15
    want = [i * golden % 2**64 for i in range(5)]
    assert MoveMeter(fk.HashRing(["a"]), probes=5)._keys.tolist() == want
    assert MoveMeter(fk.HashRing.ketama(["a"]), probes=5)._keys.tolist() == [k >> 32 for k in want]
    one = MoveMeter(fk.HashRing(["a", "b"]), probes=1)
    assert one.measure(["a", "b"]) is None and one.measure(["a", "b"]) == 0.0
    assert fk.Cluster(["a"]).move_probes == 4096


@pytest.mark.parametrize("kw, exc, match", [
    ({"probes": 0}, ValueError, "probes must be an int >= 1, got 0"),
    ({"probes": True}, ValueError, "probes must be an int >= 1, got True"),
    ({"probes": 2.0}, ValueError, "probes must be an int >= 1, got 2.0"),
])
def test_move_meter_bad_arguments(kw, exc, match):
    with pytest.raises(exc, match=match):
        MoveMeter(fk.HashRing(["a"]), **kw)


def test_move_meter_needs_get_many():
    with pytest.raises(TypeError, match="balancer needs get_many; object has none"):
        MoveMeter(object())


# ---- Cluster: routing changes, isolation decisions, ejections ---------------------------
def test_cluster_counts_routing_changes_moved_keys_isolations_and_ejections():
    clock = Clock()
    paths = {f"n{i}": f"eu/az1/r{i % 5}/h{i}" for i in range(10)}
    c = fk.Cluster(paths, detector=fk.TimeoutDetector(timeout=1.0, clock=clock), clock=clock)
    reg = Registry(clock=clock)
    reg.add(c, "kv")
    c.heartbeat_many(list(paths), np.zeros(10))
    c.tick(0.0)
    assert c.routing_stats["changes"] == 0           # nothing left the routable set
    share = c.balancer.distribution()["n4"]
    c.hold("n4")                                     # counted now, measured at the next tick
    assert c.routing_stats == {"changes": 1, "measured": 0, "moved_keyspace": 0.0,
                               "last_moved_keyspace": None}
    c.tick()
    st_ = c.routing_stats
    assert st_["measured"] == 1
    assert abs(st_["last_moved_keyspace"] - share) <= 4 * (share / c.move_probes) ** 0.5
    c.hold("n4")                                     # no change: not counted
    c.tick()
    assert (c.routing_stats["changes"], c.routing_stats["measured"]) == (1, 1)
    c.release("n4")
    c.tick()
    got = samples(reg, "faultkit_cluster_routing_changes_total")
    assert got == {("kv",): 2.0}
    assert samples(reg, "faultkit_cluster_move_measurements_total") == {("kv",): 2.0}
    moved = samples(reg, "faultkit_cluster_moved_keyspace_ratio_total")[("kv",)]
    assert moved == pytest.approx(2 * share, abs=8 * (share / c.move_probes) ** 0.5)
    c.hold("n4")                                     # two changes between ticks: one
    c.release("n4")                                  # measurement, of their net effect
    c.tick()
    assert (c.routing_stats["changes"], c.routing_stats["measured"]) == (4, 3)
    assert c.routing_stats["last_moved_keyspace"] == 0.0

    # Two nodes of rack r1 fail together: the policy isolates the rack (one decision).
    others = [n for n in paths if n not in ("n1", "n6")]
    clock.t = 0.9
    c.heartbeat_many(others, np.full(len(others), 0.9))
    clock.t = 1.5
    c.tick()
    assert c.domains.isolated == ["eu/az1/r1"]
    decisions = samples(reg, "faultkit_cluster_isolation_decisions_total")
    assert decisions == {("kv", "isolate"): 1.0, ("kv", "restore"): 0.0, ("kv", "refuse"): 0.0}
    assert samples(reg, "faultkit_cluster_routing_changes_total") == {("kv",): 5.0}

    # Five failed requests in a row eject a node (Envoy's consecutive_5xx).
    for _ in range(5):
        c.report("n2", False)
    c.tick()
    assert not c.is_routable("n2")
    assert samples(reg, "faultkit_cluster_outlier_events_total") == {("kv", "eject"): 1.0,
                                                                    ("kv", "return"): 0.0}
    assert samples(reg, "faultkit_cluster_unroutable")[("kv", "ejected")] == 1.0


def test_cluster_move_probes_option():
    c = fk.Cluster(["a", "b"], move_probes=0)
    c.hold("a")
    c.tick()
    assert c.move_probes == 0
    assert c.routing_stats == {"changes": 1, "measured": 0, "moved_keyspace": 0.0,
                               "last_moved_keyspace": None}
    reg = Registry()
    reg.add(c, "kv")
    assert "faultkit_cluster_moved_keyspace_ratio_total" not in {m.name for m in reg.collect()}
    c = fk.Cluster(["a", "b", "c"])
    c.add_node("d")                                  # membership changes measure at once
    assert c.routing_stats["measured"] == 1
    assert 0.1 < c.routing_stats["last_moved_keyspace"] < 0.45   # about a quarter moved to d
    with pytest.raises(ValueError, match="move_probes must be an int >= 0, got -1"):
        fk.Cluster(["a"], move_probes=-1)
    for bad in (True, 1.5, "4096", None):
        with pytest.raises(TypeError, match=f"move_probes must be an int, not {type(bad).__name__}"):
            fk.Cluster(["a"], move_probes=bad)


def test_decision_records_and_logged_decisions(caplog):
    import logging

    from faultkit.observe import log_events

    domains = fk.FailureDomains()
    for i, rack in enumerate(["r1", "r1", "r2", "r3", "r4"]):
        domains.assign(f"s{i}", f"eu/az1/{rack}/h{i}")
    policy = fk.IsolationPolicy(domains, clock=lambda: 0.0)
    log_events(policy, "kv")
    with caplog.at_level(logging.INFO, logger="faultkit.events"):
        for s in ("s0", "s1"):
            policy.on_event(fk.Event(s, "alive", "dead", 1.0))
    (rec,) = [r for r in caplog.records if hasattr(r, "faultkit")]
    assert rec.getMessage() == "kv isolate eu/az1/r1: 2 services failed within 10 s: s0, s1"
    assert {k: rec.faultkit[k] for k in ("source", "action", "domain", "services", "at")} == {
        "source": "kv", "action": "isolate", "domain": "eu/az1/r1", "services": ["s0", "s1"], "at": 1.0}
    ej = fk.OutlierDetector(["h"], clock=lambda: 5.0).eject("h")
    got = decision_record("edge", ej, wall=1.0, monotonic=2.0)
    assert got == {"source": "edge", "action": "eject", "reason": "manual", "at": 5.0, "member": "h",
                   "wall": 1.0, "monotonic": 2.0}


# ---- Node: time to route around a failure, membership state ------------------------------
def test_node_metrics_count_detections_and_their_time():
    key = b"k" * 32
    members = {f"m{i}": f"127.0.0.1:{free_udp_port()}" for i in range(3)}

    async def main():
        nodes = [fk.Node(n, key=key, membership=members, interval=0.05) for n in members]
        for n in nodes:
            await n.start()
        a = nodes[0]
        reg = Registry()
        reg.add(a, "a")
        seen = []
        a.add_listener(seen.append)
        end = asyncio.get_running_loop().time() + WAIT
        while not all(s == "alive" for s in a.view().values()):
            assert asyncio.get_running_loop().time() < end, a.view()
            await asyncio.sleep(0.02)
        assert samples(reg, "faultkit_node_detections_total") == {("a",): 0.0}
        await nodes[2].stop(leave=False)           # silent, as a crash is
        while a.view()["m2"] != "dead":
            assert asyncio.get_running_loop().time() < end, a.view()
            await asyncio.sleep(0.02)
        (dead,) = [e for e in seen if e.name == "m2" and e.new == "dead"]
        took = dead.at - a.detector.last_heartbeat("m2")
        assert samples(reg, "faultkit_node_detections_total") == {("a",): 1.0}
        assert samples(reg, "faultkit_node_detection_seconds_total")[("a",)] == pytest.approx(took)
        assert a.stats["last_detection_seconds"] == pytest.approx(took) and took > 0
        assert samples(reg, "faultkit_node_membership_healthy") == {("a",): 1.0}
        assert samples(reg, "faultkit_node_partitioned") == {("a",): 0.0}
        assert samples(reg, "faultkit_node_heartbeats_sent_total")[("a",)] >= 1
        # m2's share moved away from it: one routing change, counted for the node's cluster
        assert samples(reg, "faultkit_cluster_routing_changes_total")[("a",)] >= 1
        assert "faultkit_node_lease_remaining_seconds" not in {m.name for m in reg.collect()}
        for n in nodes[:2]:
            await n.stop()

    asyncio.run(main())


# ---- the live view and the monitor with domains -----------------------------------------
def test_live_view_shows_domain_and_routing_columns():
    pytest.importorskip("rich")
    from rich.console import Console

    from faultkit.observe.live import LiveView

    clock = Clock()
    det = fk.TimeoutDetector(timeout=1.0, clock=clock)
    paths = {"a": "eu/az1/r1/h1", "b": "eu/az1/r1/h2", "c": "eu/az1/r2/h3", "d": "eu/az1/r3/h4",
             "e": "eu/az1/r3/h5"}
    c = fk.Cluster(paths, detector=det, outliers=False, clock=clock)
    det.add("stranger")
    view = LiveView(det, cluster=c, title="t")
    c.policy.add_listener(view.decision)
    c.heartbeat_many(list(paths) + ["stranger"], np.zeros(6))
    clock.t = 0.9
    c.heartbeat_many(["c", "d", "e", "stranger"], np.full(4, 0.9))
    clock.t = 1.5
    c.tick()
    console = Console(record=True, width=160)
    console.print(view.render(clock.t))
    text = console.export_text()
    rows = {ln.split("│")[1].strip(): ln for ln in text.splitlines() if ln.count("│") > 3}
    assert "eu/az1/r1" in rows["a"] and "down, isolated" in rows["a"]
    assert "eu/az1/r2" in rows["c"] and "routable" in rows["c"]
    assert rows["stranger"].count(" - ") >= 2             # not a cluster member: no domain
    assert "isolate eu/az1/r1: 2 services failed within 10 s: a, b" in text
    with pytest.raises(ValueError, match="cluster must be built over the view's detector"):
        LiveView(fk.TimeoutDetector(1.0), cluster=c)


def test_monitor_with_domains_isolates_the_rack_of_a_killed_sender(tmp_path):
    """Real processes: two `faultkit beat` senders (rack r1: a, b; the rest: c, d, e) and
    `faultkit monitor --domains --json`; SIGKILL the r1 sender, the rack is isolated."""
    key = tmp_path / "key"
    key.write_text(os.urandom(32).hex())
    domains = tmp_path / "domains.json"
    domains.write_text(json.dumps({"a": "eu/az1/r1/h1", "b": "eu/az1/r1/h2", "c": "eu/az1/r2/h3",
                                   "d": "eu/az1/r3/h4", "e": "eu/az1/r4/h5"}))
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    target = f"127.0.0.1:{port}"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))

    def beat(*names):
        args = [a for n in names for a in ("--name", n)]
        return cli_procs.spawn("beat", *args, "--target", target, "--key-file", str(key),
                               "--interval", "0.05", env=env, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)

    procs = [beat("a", "b"), beat("c", "d", "e")]
    mon = cli_procs.spawn("monitor", "--bind", target, "--key-file", str(key), "--timeout", "2",
                          "--scan-interval", "0.02", "--domains", str(domains), "--json", env=env)
    procs.append(mon)
    lines = []

    def read():  # the monitor's JSON lines, as they come
        for line in mon.stdout:
            if line.startswith("{"):
                lines.append(json.loads(line))

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        def until(pred, what):
            end = time.monotonic() + WAIT
            while time.monotonic() < end:
                if pred():
                    return
                assert mon.poll() is None, mon.stderr.read()
                time.sleep(0.05)
            raise AssertionError(f"never saw {what}: {lines}")

        alive = lambda: {r["member"] for r in lines if r.get("new") == "alive"}
        until(lambda: alive() >= {"a", "b", "c", "d", "e"}, "all alive")
        procs[0].send_signal(signal.SIGKILL)
        procs[0].wait(timeout=10)
        until(lambda: any(r.get("action") == "isolate" for r in lines), "the isolation")
        (iso,) = [r for r in lines if r.get("action") == "isolate"]
        assert iso["domain"] == "eu/az1/r1" and iso["services"] == ["a", "b"]
        assert {r["member"] for r in lines if r.get("new") == "dead"} == {"a", "b"}
    finally:
        for p in procs:
            cli_procs.stop(p)
        reader.join(timeout=10)


def test_monitor_rejects_a_bad_domains_file(tmp_path):
    key = tmp_path / "key"
    key.write_text(os.urandom(32).hex())
    for content, msg in [("[1, 2]", "expected a JSON object"), ("{oops", "not JSON"),
                         ('{"a": 3}', "domain paths must be strings, got 3"),
                         ('{"a": "eu/az1"}', "it needs 4 (region/zone/rack/host)")]:
        f = tmp_path / "d.json"
        f.write_text(content)
        out = subprocess.run([sys.executable, "-m", "faultkit", "monitor", "--bind", "127.0.0.1:0",
                              "--key-file", str(key), "--domains", str(f)], capture_output=True,
                             text=True, timeout=60)
        assert out.returncode == 2, out
        assert out.stderr.startswith("faultkit monitor: ") and msg in out.stderr
