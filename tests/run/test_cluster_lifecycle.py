"""Cluster: member lifecycle, replicas across live domains, outlier ejection, agreeing states.

Times are replayed (explicit ``now``, a TimeoutDetector); nothing sleeps.
"""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import faultkit as fk
from faultkit.cluster import Cluster

KEYS = [f"key-{i}" for i in range(3000)]


def fleet(zones=2, racks=3, hosts=4):
    return {f"n{z}{r}{h}": f"eu/z{z}/r{r}/h{h}"
            for z in range(zones) for r in range(racks) for h in range(hosts)}


def cluster(nodes, **kw):
    det = fk.TimeoutDetector(timeout=5.0, suspect_after=2.0, clock=lambda: 0.0,
                             wall_clock=lambda: 0.0)
    return Cluster(nodes, detector=det, clock=lambda: 0.0, **kw)


def beat(c, t, *, skip=(), incarnation=None):
    for n in c.nodes:
        if n not in skip:
            c.heartbeat(n, t, incarnation=incarnation)


def rack_of(nodes, n):
    return nodes[n].rsplit("/", 1)[0]


# ---- lifecycle -----------------------------------------------------------------

def test_on_join_fires_for_the_clusters_nodes_and_a_late_joiner():
    joined = []
    c = cluster(["a", "b", "c"], on_join=lambda e: joined.append((e.name, e.old)))
    assert [c.state(n) for n in "abc"] == ["joining"] * 3 and c.unroutable() == []
    c.heartbeat("a", 1.0)
    c.heartbeat("b", 1.0)
    c.tick(1.0)
    assert joined == [("a", "joining"), ("b", "joining")]
    # c never heard within the join timeout (the detector's timeout, 5 s): dead, out of routing
    c.heartbeat("a", 5.0)
    c.heartbeat("b", 5.0)
    evs = c.tick(5.0)
    assert [(e.name, e.old, e.new) for e in evs] == [("c", "joining", "dead")]
    assert c.unroutable() == ["c"] and "c" not in {c.route(k) for k in KEYS[:300]}
    c.heartbeat("c", 6.0)  # starts late: it joins now
    c.tick(6.0)
    assert joined[-1] == ("c", "dead") and c.is_routable("c")


def test_a_cluster_reports_only_its_own_nodes():
    det = fk.TimeoutDetector(5.0, clock=lambda: 0.0)
    det.add("stranger", 0.0)
    c = Cluster(["a", "b"], detector=det, clock=lambda: 0.0)
    seen = []
    c.add_listener(seen.append)
    det.heartbeat("stranger", 0.0)
    c.heartbeat("a", 0.0)
    evs = c.tick(100.0)
    assert {e.name for e in evs} == {"a", "b"} and evs == seen
    assert "stranger" not in c


def test_a_fast_restart_calls_on_restart_and_can_hold_the_node_until_it_resyncs():
    restarts = []
    c = cluster(["a", "b", "c"], hold_restarted=True, on_restart=restarts.append)
    beat(c, 0.0, incarnation=1)
    c.tick(0.0)
    beat(c, 1.0, incarnation=1)
    c.heartbeat("b", 1.5, incarnation=2)  # killed and restarted within the interval
    evs = c.tick(1.5)
    assert [(e.name, e.old, e.new, e.old_incarnation, e.incarnation) for e in evs] == \
        [("b", "alive", "restarted", 1, 2)]
    assert restarts == evs
    assert c.state("b") == "alive" and not c.is_routable("b") and c.held == ["b"]
    assert c.why_unroutable("b") == ["held"]
    assert "b" not in {c.route(k) for k in KEYS[:500]}
    c.release("b")  # the application re-synced it
    assert c.is_routable("b") and c.held == []


def test_leave_takes_a_node_out_at_once_and_never_isolates_its_rack():
    nodes = fleet()
    c = cluster(nodes)
    beat(c, 0.0, incarnation=1)
    c.tick(0.0)
    rack = sorted(n for n in nodes if rack_of(nodes, n) == "eu/z0/r1")
    # a rolling restart: two nodes of one rack stop gracefully
    for n in rack[:2]:
        assert c.leave(n, 1, now=0.5)
    evs = c.tick(0.5)
    assert sorted((e.name, e.new) for e in evs) == [(rack[0], "left"), (rack[1], "left")]
    assert sorted(c.unroutable()) == rack[:2] and c.domains.isolated == []
    for t in np.arange(1.0, 10.0):
        beat(c, float(t), skip=set(rack[:2]))
        c.tick(float(t))
    assert c.domains.isolated == [] and [c.state(n) for n in rack[:2]] == ["left", "left"]
    # the same two dying instead isolate it
    c2 = cluster(nodes)
    beat(c2, 0.0)
    for t in np.arange(1.0, 10.0):
        beat(c2, float(t), skip=set(rack[:2]))
        c2.tick(float(t))
    assert c2.domains.isolated == ["eu/z0/r1"]
    with pytest.raises(KeyError, match=r"'zz'"):
        c.leave("zz")


@pytest.mark.parametrize("avoid", [False, True])
def test_isolation_and_routing_count_the_same_states(avoid):
    nodes = fleet()
    c = cluster(nodes, avoid_suspect=avoid)
    assert c.policy.failed_states == frozenset(c.failed_states)
    beat(c, 0.0)
    rack = sorted(n for n in nodes if rack_of(nodes, n) == "eu/z1/r2")
    beat(c, 1.0, skip=set(rack[:2]))
    c.tick(2.5)  # two suspects in one rack, 1.5 s apart
    assert [c.state(n) for n in rack[:2]] == ["suspect", "suspect"]
    if avoid:  # both act on suspect
        assert c.domains.isolated == ["eu/z1/r2"] and not any(c.is_routable(n) for n in rack)
    else:      # neither does: the rack keeps serving, suspects included
        assert c.domains.isolated == [] and all(c.is_routable(n) for n in rack)
    d = fk.FailureDomains()
    for n, p in nodes.items():
        d.assign(n, p)
    with pytest.raises(ValueError, match="failed_states"):
        Cluster(nodes=list(nodes), domains=d, policy=fk.IsolationPolicy(d), avoid_suspect=False)
    Cluster(list(nodes), domains=d, policy=fk.IsolationPolicy(d), avoid_suspect=True)


# ---- replicas across live domains --------------------------------------------------

def test_replicas_equal_placement_while_everything_is_up():
    nodes = fleet(zones=2, racks=4, hosts=3)
    c = cluster(nodes)
    assert all(c.replicas(k, 3) == c.placement(k, 3) for k in KEYS[:1000])
    assert all(c.replicas(k, 2, None) == c.balancer.get_n(k, 2) for k in KEYS[:100])


def test_one_node_dying_moves_only_the_replicas_it_held():
    nodes = fleet()
    c = cluster(nodes)
    beat(c, 0.0)
    c.tick(0.0)
    before = {k: c.replicas(k, 3) for k in KEYS}
    victim = "n012"
    beat(c, 4.0, skip={victim})
    c.tick(6.0)  # the victim is dead (silent 6 s); the others suspect, still routed
    assert c.unroutable() == [victim] and c.domains.isolated == []
    after = {k: c.replicas(k, 3) for k in KEYS}
    for k in KEYS:
        if victim in before[k]:
            i = before[k].index(victim)
            # the same domains, the same order; only the victim's slot changed, within its rack
            assert [x for j, x in enumerate(after[k]) if j != i] == \
                [x for j, x in enumerate(before[k]) if j != i]
            assert rack_of(nodes, after[k][i]) == rack_of(nodes, victim) != after[k][i]
        else:
            assert after[k] == before[k]
    assert sum(victim in r for r in before.values()) > 0


def test_one_rack_dying_moves_only_the_keys_that_had_a_replica_there():
    nodes = fleet()
    c = cluster(nodes, policy=False)
    beat(c, 0.0)
    c.tick(0.0)
    before = {k: c.replicas(k, 3) for k in KEYS}
    rack = "eu/z1/r0"
    c.domains.isolate(rack)
    after = {k: c.replicas(k, 3) for k in KEYS}
    moved = 0
    for k in KEYS:
        racks_before = [rack_of(nodes, n) for n in before[k]]
        if rack in racks_before:
            moved += 1
            kept = [n for n in before[k] if rack_of(nodes, n) != rack]
            assert [n for n in after[k] if n in kept] == kept and len(after[k]) == 3
            assert len({rack_of(nodes, n) for n in after[k]}) == 3 and rack not in \
                {rack_of(nodes, n) for n in after[k]}
        else:
            assert after[k] == before[k]
    assert 0 < moved < len(KEYS)
    c.domains.restore(rack)
    assert {k: c.replicas(k, 3) for k in KEYS} == before


def test_fewer_live_domains_than_replicas_fills_from_used_domains_in_order():
    nodes = fleet(zones=1, racks=3, hosts=4)
    c = cluster(nodes, policy=False)
    beat(c, 0.0)
    c.tick(0.0)
    c.domains.isolate("eu/z0/r0")
    c.domains.isolate("eu/z0/r1")
    live = sorted(n for n in nodes if rack_of(nodes, n) == "eu/z0/r2")
    for k in KEYS[:200]:
        got = c.replicas(k, 3)
        # the rack's own rendezvous order: what placement would pick there, then the next
        order = sorted(live, key=lambda n: fk.hash64(fk.hash64(k) ^ fk.hash64(n, 0x5EC71CE5)),
                       reverse=True)
        assert got == order[:3]
        assert c.replicas(k, 10) == order  # only 4 routable nodes: 4 come back
    c.domains.isolate("eu/z0/r2")
    with pytest.raises(fk.NoLiveNodeError):
        c.replicas("k", 3)
    assert c.replicas("k", 0) == []
    with pytest.raises(ValueError, match=r"n must be >= 0, got -1"):
        c.replicas("k", -1)
    with pytest.raises(TypeError, match=r"n must be an int, not float"):
        c.replicas("k", 2.0)
    with pytest.raises(RuntimeError, match="domains"):
        cluster(["a", "b"]).replicas("k", 2, "rack")


@settings(max_examples=40, deadline=None)
@given(racks=st.integers(1, 7), hosts=st.integers(1, 4), n=st.integers(1, 5),
       down=st.sets(st.integers(0, 27), max_size=20), down_racks=st.sets(st.integers(0, 6), max_size=4),
       seed=st.integers(0, 1000))
def test_replicas_are_routable_and_in_distinct_domains_whenever_possible(racks, hosts, n, down,
                                                                          down_racks, seed):
    nodes = {f"n{r}-{h}": f"eu/z0/r{r}/h{h}" for r in range(racks) for h in range(hosts)}
    c = cluster(nodes, policy=False)
    names = list(nodes)
    for i in down:
        if i < len(names):
            c.eject(names[i], now=0.0) if len(c.outliers.ejected) < 1 else c.hold(names[i])
    for r in down_racks:
        if r < racks:
            c.domains.isolate(f"eu/z0/r{r}")
    routable = [x for x in names if c.is_routable(x)]
    live_racks = {rack_of(nodes, x) for x in routable}
    keys = [f"k{seed}-{i}" for i in range(30)]
    for k in keys:
        if not routable:
            with pytest.raises(fk.NoLiveNodeError):
                c.replicas(k, n)
            continue
        got = c.replicas(k, n)
        assert len(got) == min(n, len(routable)) and len(set(got)) == len(got)
        assert all(c.is_routable(x) for x in got)
        spread = [rack_of(nodes, x) for x in got]
        d = min(n, len(live_racks))
        assert len(set(spread[:d])) == d  # the first ones cover distinct live racks
        assert set(spread) <= live_racks


# ---- outlier ejection through routing ----------------------------------------------------

def test_ejection_reaches_routing_at_once_and_trial_traffic_comes_back_on_tick():
    c = cluster([f"n{i}" for i in range(20)])
    beat(c, 0.0)
    c.tick(0.0)
    owned = [k for k in KEYS if c.route(k) == "n7"]
    for _ in range(4):
        assert c.report("n7", False, 0.2, now=1.0) is None
    assert c.is_routable("n7")
    e = c.report("n7", False, now=1.0)
    assert (e.action, e.reason, e.until) == ("eject", "consecutive_errors", 31.0)
    assert c.why_unroutable("n7") == ["ejected"]
    assert all(c.route(k) != "n7" for k in owned)  # before any tick
    beat(c, 30.0)
    c.tick(30.9)
    assert not c.is_routable("n7")
    c.tick(31.0)  # time is up: back in routing with no request needed
    assert c.is_routable("n7") and all(c.route(k) == "n7" for k in owned)
    for _ in range(5):
        c.report("n7", False, now=32.0)
    assert c.outliers.ejected_until("n7") == 32.0 + 60.0  # the second ejection: twice as long


def test_an_ejected_node_that_dies_stays_out_when_its_ejection_ends():
    c = cluster(["a", "b", "c"])
    beat(c, 0.0)
    c.tick(0.0)
    for _ in range(5):
        c.report("a", False, now=0.0)
    beat(c, 4.0, skip={"a"})
    c.tick(29.0)
    assert c.why_unroutable("a") == ["down", "ejected"]
    beat(c, 30.0, skip={"a"})
    c.tick(30.0)
    assert c.why_unroutable("a") == ["down"] and c.unroutable() == ["a"]
    with pytest.raises(RuntimeError, match="outlier"):
        cluster(["a"], outliers=False).report("a", False)
    with pytest.raises(KeyError, match=r"'zz'"):
        c.report("zz", True)
    with pytest.raises(TypeError, match="outliers"):
        cluster(["a"], outliers=3)


def test_membership_changes_keep_every_mask():
    nodes = fleet(zones=1, racks=3, hosts=2)
    c = cluster(nodes, policy=False)
    beat(c, 0.0)
    c.tick(0.0)
    c.hold("n000")
    c.eject("n010", now=0.0)
    c.add_node("new", "eu/z0/r2/h9", now=0.0)
    assert c.state("new") == "joining" and c.is_routable("new")
    assert c.why_unroutable("n000") == ["held"] and c.why_unroutable("n010") == ["ejected"]
    assert "new" in c.outliers
    c.remove_node("new")
    assert "new" not in c.outliers and "new" not in c.detector
    assert len(c) == 6


@settings(max_examples=30, deadline=None)
@given(racks=st.integers(4, 8), hosts=st.integers(1, 4), n=st.integers(1, 3),
       victim=st.integers(0, 31), whole_rack=st.booleans(), seed=st.integers(0, 1000))
def test_minimal_movement_when_a_node_or_a_rack_goes(racks, hosts, n, victim, whole_rack, seed):
    """With at least n + 1 racks live after the loss, only replicas on what went move."""
    nodes = {f"n{r}-{h}": f"eu/z0/r{r}/h{h}" for r in range(racks) for h in range(hosts)}
    c = cluster(nodes, policy=False)
    names = list(nodes)
    gone_node = names[victim % len(names)]
    keys = [f"k{seed}-{i}" for i in range(200)]
    before = {k: c.replicas(k, n) for k in keys}
    if whole_rack:
        c.domains.isolate(rack_of(nodes, gone_node))
        gone = {x for x in names if rack_of(nodes, x) == rack_of(nodes, gone_node)}
    else:
        c.hold(gone_node)
        gone = {gone_node}
    for k in keys:
        after = c.replicas(k, n)
        kept = [x for x in before[k] if x not in gone]
        assert [x for x in after if x in kept] == kept  # survivors stay, in order
        if len(kept) == len(before[k]):
            assert after == before[k]                   # keys with nothing there never move
        assert len(after) == n and len({rack_of(nodes, x) for x in after}) == n


def test_reports_from_request_threads_and_ticks_never_lose_a_routing_update():
    from concurrency import race

    c = cluster([f"n{i}" for i in range(40)],
                outliers=fk.OutlierDetector(consecutive_errors=1, max_ejection_percent=100.0,
                                            base_ejection_time=1.0, max_ejection_time=1.0))
    beat(c, 0.0)
    c.tick(0.0)
    state = {"i": 0, "t": 0.0}

    def report():  # request threads: a failure ejects its node for 1 s
        i = state["i"] = (state["i"] + 1) % 40
        c.report(f"n{i}", False, now=state["t"])
        try:
            c.route(f"k{i}")
        except fk.NoLiveNodeError:
            pass

    def control(round_):  # the control thread: heartbeats, a hold and a release, ticks
        state["t"] = t = round_ + 1.0
        beat(c, t)
        n = f"n{round_ % 40}"
        c.hold(n)
        c.tick(t)  # every ejection older than 1 s ends here
        c.release(n)

    race(report, control, readers=3, min_changes=200, min_reads=400, max_changes=2000)
    assert c.outliers.events and any(e.action == "return" for e in c.outliers.events)
    # whatever the interleaving, the balancer's mask is exactly the cluster's reasons
    expected = np.array([c.is_routable(n) for n in c.nodes])
    assert (c.balancer.alive_mask() == expected).all()
    assert set(c.unroutable()) == set(c.outliers.ejected)


def test_a_cluster_fed_by_a_receiver_sees_a_stop_as_left_and_a_new_life_as_a_restart():
    import asyncio

    from faultkit.transport import HeartbeatReceiver, HeartbeatSender

    key = bytes(range(32))
    restarts, events = [], []

    async def wait_for(cond):
        for _ in range(1000):  # bounded: 10 s at most
            events.extend(c.tick())
            if cond():
                return
            await asyncio.sleep(0.01)
        raise AssertionError(f"condition not met; events {events}")

    async def main():
        async with HeartbeatReceiver(c.detector, "127.0.0.1:0", key=key) as rx:
            target = "%s:%d" % rx.address
            first = HeartbeatSender("a", target, 0.05, key=key, incarnation=10)
            await first.start()
            await wait_for(lambda: c.state("a") == "alive")
            await first.stop()  # a graceful stop: the signed leave
            await wait_for(lambda: c.state("a") == "left")
            assert not c.is_routable("a")
            second = HeartbeatSender("a", target, 0.05, key=key, incarnation=11)
            await second.start()
            await wait_for(lambda: restarts)
            second.close()
            return rx.stats

    c = Cluster(["a", "b"], detector=fk.TimeoutDetector(60.0), on_restart=restarts.append)
    stats = asyncio.run(main())
    assert [(e.name, e.old, e.new) for e in events if e.name == "a"] == \
        [("a", "joining", "alive"), ("a", "alive", "left"), ("a", "left", "restarted")]
    assert (restarts[0].old_incarnation, restarts[0].incarnation) == (10, 11)
    assert c.is_routable("a") and stats["leaves"] == 1 and stats["unknown"] == 0


def test_manual_ejection_reaches_routing_at_once():
    """Kills: ``e is not None`` -> ``is None`` in ``Cluster.eject`` (the ejection recorded by
    the detector but never applied to routing; a refused one applied as ``None``)."""
    c = cluster([f"n{i}" for i in range(20)])
    beat(c, 0.0)
    c.tick(0.0)
    owned = [k for k in KEYS if c.route(k) == "n7"]
    assert owned
    e = c.eject("n7", now=1.0)
    assert (e.host, e.action, e.reason) == ("n7", "eject", "manual")
    assert not c.is_routable("n7") and all(c.route(k) != "n7" for k in owned)  # before any tick
    assert c.eject("n7", now=2.0) is None                # already ejected: nothing to apply
    assert not c.is_routable("n7")


def test_on_join_fires_once_per_node_and_only_for_a_node_heard():
    """Kills the mutant ``ev.new in (ALIVE, RESTARTED) and ev.name not in self._heard`` ->
    ``or`` in ``tick``: a node that dies without ever being heard does not join, and a node
    that comes back after being suspected does not join twice."""
    joined = []
    c = cluster(["a", "b"], on_join=lambda e: joined.append((e.name, e.old, e.new)))
    c.heartbeat("a", 1.0)
    c.tick(1.0)
    c.heartbeat("a", 4.0)
    evs = c.tick(5.0)                 # b never heard: dead at the join timeout
    assert ("b", "joining", "dead") in [(e.name, e.old, e.new) for e in evs]
    c.tick(7.0)                       # a silent since 4: suspect (suspect_after=2 s)
    assert c.state("a") == "suspect"
    c.heartbeat("a", 7.5)
    c.tick(7.5)                       # back alive: not a second join
    assert c.state("a") == "alive"
    assert joined == [("a", "joining", "alive")]


def test_hold_takes_a_node_out_of_routing_until_release():
    """Kills the mutants ``if not self._held[i]`` (drop ``not``) and ``self._held[i] = True``
    -> ``False`` in ``hold``: a held node is unroutable at once, and routable after release."""
    c = cluster(["a", "b", "c"])
    beat(c, 1.0)
    c.tick(1.0)
    assert c.unroutable() == []
    c.hold("b")
    assert c.unroutable() == ["b"] and not c.is_routable("b")
    assert "b" not in {c.route(k) for k in KEYS[:300]}
    c.release("b")
    assert c.unroutable() == [] and c.is_routable("b")


def test_add_node_joins_at_its_own_time_refuses_a_taken_service_and_places_it_at_once():
    """Kills the mutants ``self.clock() if now is None else now`` (``is`` -> ``is not``: the
    join timeout counts from ``now``), ``assign(node, path, strict=True)`` -> ``False`` (a
    service the domains already place elsewhere is not silently moved) and ``cached[0] is p``
    -> ``is not p`` in ``_placement_table`` (replicas see a node added after the first call)."""
    nodes = fleet()
    c = cluster(nodes)
    beat(c, 1.0)
    c.tick(1.0)
    before = [c.replicas(k, 3) for k in KEYS[:500]]
    assert all("new" not in r for r in before)
    c.add_node("new", "eu/z9/r0/h0", now=100.0)
    beat(c, 104.0, skip=("new",))
    c.tick(104.0)
    assert c.state("new") == "joining"        # 4 s after it was added, within the join timeout
    after = [c.replicas(k, 3) for k in KEYS[:500]]
    assert any("new" in r for r in after)     # a rack of its own: often among 3 racks
    c.domains.assign("outsider", "eu/z0/r0/h9")  # a service of the domains, no node
    with pytest.raises(ValueError, match="already assigned"):
        c.add_node("outsider", "eu/z9/r1/h0")
    assert "outsider" not in c and c.domains.domain_of("outsider", "host") == "eu/z0/r0/h9"


@pytest.mark.parametrize("balancer", [fk.HashRing, fk.Maglev, fk.Rendezvous])
def test_a_cluster_can_start_empty_grow_and_shrink_back_to_nothing(balancer):
    """A service that learns its peers later (etcd, a receiver) starts with none; the
    routing-change meter counts every key as moved when the first node comes or the last goes."""
    c = Cluster([], balancer=balancer([]), clock=lambda: 0.0)
    assert c.nodes == [] and c.routing_stats["measured"] == 0
    with pytest.raises(LookupError, match="empty|no points"):
        c.route("k")
    c.add_node("a", now=0.0)
    assert c.route("k") == "a" and c.routing_stats["last_moved_keyspace"] == 1.0
    c.add_node("b", now=0.0)
    assert 0.0 < c.routing_stats["last_moved_keyspace"] < 1.0
    c.remove_node("a")
    c.remove_node("b")
    assert c.nodes == [] and c.routing_stats["last_moved_keyspace"] == 1.0
    assert c.routing_stats["measured"] == 4


def test_a_cluster_with_domains_and_no_node_left_has_no_replica():
    c = cluster({"a": "eu/z0/r0/h0"})
    c.remove_node("a")
    with pytest.raises(fk.NoLiveNodeError, match="no routable node"):
        c.replicas("k", 1)


def test_blast_radius_through_a_cluster_is_the_share_its_balancer_routes_to_the_domain_now():
    nodes = fleet(zones=2, racks=2, hosts=2)
    c = cluster(nodes, policy=False)
    beat(c, 0.0)
    c.tick(0.0)
    dist = c.balancer.distribution()
    z0 = c.domains.blast_radius("eu/z0")
    assert z0.share == pytest.approx(sum(v for n, v in dist.items() if nodes[n].startswith("eu/z0/")))
    assert 0.3 < z0.share < 0.7
    c.domains.isolate("eu/z0/r0")
    assert c.domains.blast_radius("eu/z0/r0").share == 0.0
    assert c.domains.blast_radius("eu").share == pytest.approx(1.0)


def test_replicas_follow_a_node_the_domains_move_to_another_rack():
    """Kills ``cached[0] is p`` -> ``is not p`` in ``_placement_table``: the cluster's table
    is rebuilt when the domains' placement changes without a membership change."""
    nodes = {f"n{r}{h}": f"eu/z0/r{r}/h{h}" for r in range(4) for h in range(2)}
    c = cluster(nodes)
    beat(c, 0.0)
    c.tick(0.0)
    before = {k: c.replicas(k, 4) for k in KEYS[:300]}
    assert all(len({nodes[n].rsplit("/", 1)[0] for n in r}) == 4 for r in before.values())
    c.domains.assign("n01", "eu/z0/r9/h1")   # a fifth rack, of one node
    after = {k: c.replicas(k, 4) for k in KEYS[:300]}
    assert after == {k: c.placement(k, 4) for k in KEYS[:300]}
    assert any("n01" in r and "n00" in r for r in after.values())  # no longer rack-mates
