"""Cluster: heartbeats -> detector -> routing and isolation -> balancer, end to end.

Times are replayed (TimeoutDetector with explicit ``now``); nothing sleeps.
"""

import numpy as np
import pytest

import faultkit as fk
from concurrency import race
from faultkit.cluster import Cluster

KEYS = [f"key-{i}" for i in range(20_000)]


def rack_nodes(zones=2, racks=3, hosts=4):
    """{node: path}: zones x racks x hosts nodes in region eu."""
    return {f"n{z}{r}{h}": f"eu/z{z}/r{r}/h{h}"
            for z in range(zones) for r in range(racks) for h in range(hosts)}


def timeout_cluster(nodes, **kw):
    det = fk.TimeoutDetector(timeout=5.0, suspect_after=2.0, clock=lambda: 0.0)
    return Cluster(nodes, detector=det, clock=lambda: 0.0, **kw)


def beat_all(c, t, *, skip=()):
    for n in c.nodes:
        if n not in skip:
            c.heartbeat(n, t)


def owners(c):
    nodes = c.nodes
    return np.array(nodes, dtype=object)[c.route_many(KEYS)]


def test_dead_node_is_routed_around_and_only_its_keys_move():
    c = timeout_cluster([f"n{i}" for i in range(20)])
    beat_all(c, 0.0)
    before = owners(c)
    for t in (1.0, 2.0, 3.0, 4.0, 5.0, 6.0):
        beat_all(c, t, skip={"n3"})
        c.tick(t)
    assert c.state("n3") == "dead" and not c.is_routable("n3")
    after = owners(c)
    moved = before != after
    assert moved.any() and set(before[moved]) == {"n3"}
    assert "n3" not in set(after)
    # n3 comes back: every key goes home
    c.heartbeat("n3", 7.0)
    events = c.tick(7.0)
    assert [(e.name, e.new) for e in events] == [("n3", "alive")]
    assert (owners(c) == before).all()


def test_suspect_still_serves_unless_avoid_suspect():
    for avoid in (False, True):
        c = timeout_cluster(["a", "b", "c"], avoid_suspect=avoid)
        beat_all(c, 0.0)
        beat_all(c, 2.5, skip={"a"})
        c.tick(2.5)
        assert c.state("a") == "suspect"
        assert c.is_routable("a") is (not avoid)


def test_correlated_failures_isolate_the_rack_and_other_racks_never_move():
    nodes = rack_nodes()
    c = timeout_cluster(nodes)
    beat_all(c, 0.0)
    before = owners(c)
    rack = [n for n, p in nodes.items() if p.startswith("eu/z0/r1/")]
    dying = rack[:2]
    for t in np.arange(1.0, 7.0):
        beat_all(c, t, skip=set(dying))
        c.tick(t)
    # two deaths in rack eu/z0/r1 within the policy's window: the rack is out
    assert c.domains.isolated == ["eu/z0/r1"]
    assert sorted(c.unroutable()) == sorted(rack)
    after = owners(c)
    moved = before != after
    assert set(before[moved]) <= set(rack)
    assert not set(after) & set(rack)


def test_restore_keeps_a_still_dead_node_out_and_recovery_inside_isolation_stays_out():
    nodes = rack_nodes()
    c = timeout_cluster(nodes, policy=False)
    beat_all(c, 0.0)
    rack = sorted(n for n, p in nodes.items() if p.startswith("eu/z1/r2/"))
    for t in np.arange(1.0, 7.0):
        beat_all(c, t, skip={rack[0]})
        c.tick(t)
    assert c.state(rack[0]) == "dead"
    c.domains.isolate("eu/z1/r2")
    assert all(not c.is_routable(n) for n in rack)
    c.domains.restore("eu/z1/r2")
    assert not c.is_routable(rack[0])          # still dead
    assert all(c.is_routable(n) for n in rack[1:])
    c.domains.isolate("eu/z1/r2")
    c.heartbeat(rack[0], 8.0)
    c.tick(8.0)
    assert c.state(rack[0]) == "alive"
    assert not c.is_routable(rack[0])          # recovered, but its rack is isolated
    c.domains.restore("eu/z1/r2")
    assert c.unroutable() == []


def test_placement_spreads_over_racks_and_survives_losing_a_rack():
    nodes = rack_nodes(zones=2, racks=4, hosts=3)
    c = timeout_cluster(nodes)
    for key in KEYS[:2000]:
        reps = c.placement(key, 3)
        racks = {nodes[n].rsplit("/", 1)[0] for n in reps}
        assert len(racks) == 3
    assert len(c.replicas("k", 4)) == 4


def test_add_and_remove_node_move_about_one_nth_of_the_keys():
    c = timeout_cluster([f"n{i}" for i in range(20)])
    before = owners(c)
    c.add_node("n20")
    after = owners(c)
    moved = (before != after).mean()
    assert 0 < moved < 1.5 / 21 and set(after[before != after]) == {"n20"}
    c.remove_node("n20")
    assert (owners(c) == before).all()
    assert "n20" not in c and len(c) == 20
    with pytest.raises(KeyError, match=r"'n20'"):
        c.remove_node("n20")


def test_add_node_with_domains_needs_a_path():
    c = timeout_cluster(rack_nodes())
    with pytest.raises(ValueError, match="path"):
        c.add_node("new")
    c.add_node("new", "eu/z0/r0/h9")
    assert c.domains.domain_of("new") == "eu/z0/r0/h9"
    with pytest.raises(ValueError, match="already"):
        c.add_node("new", "eu/z0/r0/h9")


def test_works_with_maglev_and_rendezvous():
    for bal in (fk.Maglev(["a", "b", "c"]), fk.Rendezvous(["a", "b", "c"])):
        c = timeout_cluster(["a", "b", "c"], balancer=bal)
        beat_all(c, 0.0)
        for t in (1.0, 3.0, 6.0):
            c.heartbeat("a", t)
            c.heartbeat("b", t)
            c.tick(t)
        assert c.unroutable() == ["c"]
        assert "c" not in {c.route(k) for k in KEYS[:500]}
        if isinstance(bal, fk.Maglev):
            with pytest.raises(TypeError, match="get_n"):
                c.replicas("k", 2)


def test_listeners_get_every_event():
    c = timeout_cluster(["a", "b"])
    seen = []
    c.add_listener(seen.append)
    beat_all(c, 0.0)
    assert c.tick(6.0) == seen and {(e.name, e.new) for e in seen} >= {("a", "dead"), ("b", "dead")}
    with pytest.raises(TypeError, match=r"listener must be callable, not int"):
        c.add_listener(3)


def test_all_dead_raises_no_live_node():
    c = timeout_cluster(["a", "b"])
    beat_all(c, 0.0)
    c.tick(10.0)
    with pytest.raises(fk.NoLiveNodeError):
        c.route("k")


def test_save_and_recover_through_the_checkpointer(tmp_path):
    c = timeout_cluster(["a"], checkpointer=fk.Checkpointer(tmp_path, fsync=False))
    state = {"owned": np.arange(10), "epoch": 3}
    c.save(state)
    got = c.recover()
    assert got["epoch"] == 3 and (got["owned"] == state["owned"]).all()
    with pytest.raises(RuntimeError, match="checkpointer"):
        timeout_cluster(["a"]).recover()


def test_bad_input():
    with pytest.raises(TypeError, match=r"nodes must be a collection of node names, not a single str"):
        Cluster("abc")
    with pytest.raises(ValueError, match="twice"):
        Cluster(["a", "a"])
    with pytest.raises(ValueError, match="exactly"):
        Cluster(["a", "b"], balancer=fk.HashRing(["a"]))
    with pytest.raises(TypeError, match="balancer"):
        Cluster(["a"], balancer=object())
    d = fk.FailureDomains()
    d.assign("a", "eu/z/r/h")
    with pytest.raises(ValueError, match="without a failure domain"):
        Cluster(["a", "b"], domains=d)
    ring = fk.HashRing(["a"])
    d.attach(ring)
    with pytest.raises(ValueError, match="attached"):
        Cluster(["a"], domains=d, balancer=ring)
    with pytest.raises(ValueError, match="domains"):
        Cluster(["a"], policy=fk.IsolationPolicy(d))
    with pytest.raises(ValueError, match=r"unknown level 'nosuch'; levels are \('region', 'zone', 'rack', 'host'\)"):
        Cluster({"a": "eu/z/r/h"}, spread="nosuch")
    c = Cluster(["a"])
    with pytest.raises(KeyError, match=r"'zz'"):
        c.state("zz")
    with pytest.raises(KeyError, match=r"'zz'"):
        c.is_routable("zz")
    with pytest.raises(RuntimeError, match="domains"):
        c.placement("k", 1)


def test_lookups_in_threads_during_ticks_see_only_cluster_nodes():
    c = timeout_cluster([f"n{i}" for i in range(30)])
    nodes = set(c.nodes)

    def read():
        try:
            got = c.route_many(KEYS[:2000])
            assert got.min() >= 0 and got.max() < 30
            assert c.route("x") in nodes
        except fk.NoLiveNodeError:
            pass

    t = [0.0]

    def fail_some(round_):
        t[0] += 1.0
        beat_all(c, t[0], skip={f"n{j}" for j in range(round_ % 30)})
        c.tick(t[0] + 5.5)
        t[0] += 5.5

    race(read, fail_some, readers=3, min_changes=40, max_changes=40)


def test_demo_story_reports_what_the_library_computed():
    from faultkit.tour import cluster_story

    lines = []
    cluster_story(lines.append, keys=20_000)
    text = "\n".join(lines)
    assert "policy: isolate eu/az1/r2" in text
    assert "all of them from rack eu/az1/r2: True" in text
    assert "keeps >= 2 reachable replicas" in text
    assert "bit-exact: True" in text


def test_add_node_rolls_back_the_domains_when_the_balancer_refuses_it():
    """Kills: ``Cluster.add_node`` no longer rolling back the domains when it fails (the
    ``self._domains.remove(node)`` after a failed ``balancer.add``): the node would stay
    assigned, so it could be neither added again nor placed around."""
    c = timeout_cluster(rack_nodes())
    before = (sorted(c.domains.services), c.domains.members("eu/z0/r0"), c.nodes)
    for weight, error, match in ((-1.0, ValueError, "-1"), ("heavy", TypeError, "str")):
        with pytest.raises(error, match=match):
            c.add_node("new", "eu/z0/r0/h9", weight=weight)
        assert "new" not in c.domains and "new" not in c and "new" not in c.detector
        assert (sorted(c.domains.services), c.domains.members("eu/z0/r0"), c.nodes) == before
    c.add_node("new", "eu/z0/r0/h9", weight=2.0)   # the path is free again
    assert "new" in c and c.domains.domain_of("new", "rack") == "eu/z0/r0"


def test_heartbeat_many_is_heartbeat_in_order_and_all_or_nothing():
    nodes = rack_nodes()
    bulk, one = timeout_cluster(nodes), timeout_cluster(nodes)
    names = sorted(nodes)
    rng = np.random.default_rng(5)
    for t in range(1, 12):
        # A random subset at random times, some nodes twice (the later one counts: in order).
        picked = list(rng.choice(names, size=10))
        times = np.sort(rng.uniform(t - 1, t, size=10))
        bulk.heartbeat_many(picked, times)
        for n, at in zip(picked, times):
            one.heartbeat(n, float(at))
        def strip(events):  # all but `wall` (when the scan ran, by the wall clock)
            return [(e.name, e.old, e.new, e.at, e.incarnation) for e in events]

        assert strip(bulk.tick(float(t))) == strip(one.tick(float(t)))
        assert {n: bulk.state(n) for n in names} == {n: one.state(n) for n in names}
        assert list(owners(bulk)) == list(owners(one))
    before = {n: (bulk.state(n), bulk.detector.last_heartbeat(n)) for n in names}
    for args, error, match in (
        ((["n000", "nope"], [20.0, 20.0]), KeyError, "nope"),
        ((["n000", "n001"], [20.0]), ValueError, "ids has 2 entries but times has 1"),
        ((["n000"], [float("nan")]), ValueError, r"times\[0\] = nan .*nothing was recorded"),
        ((["n000"], [[20.0]]), TypeError, "times must be a 1-D float array, not 2-D"),
        (((n for n in ["n000"]), [20.0]), TypeError, "generator"),
    ):
        with pytest.raises(error, match=match):
            bulk.heartbeat_many(*args)
        assert {n: (bulk.state(n), bulk.detector.last_heartbeat(n)) for n in names} == before


# ---------------------------------------------------------------- mutants of a full run (docs/mutation.md)

def test_constructor_messages_name_the_culprits_and_the_policy_must_share_the_domains():
    """Kills the mutants ``names.count(n) > 1`` -> ``>= 1`` (the duplicate is named, not the
    first node), ``missing[:5]`` -> ``[:6]`` (at most five missing nodes are listed) and
    ``domains is None or policy.domains is not domains`` -> ``and`` (a policy over other
    domains is refused)."""
    with pytest.raises(ValueError, match=r"^node 'b' is listed twice$"):
        Cluster(["a", "b", "c", "b"])
    d = fk.FailureDomains()
    d.assign("a", "eu/z0/r0/h0")
    with pytest.raises(ValueError, match=r"^nodes without a failure domain: \['m0', 'm1', 'm2', 'm3', 'm4'\]$"):
        Cluster(["a"] + [f"m{i}" for i in range(6)], domains=d)
    other = fk.FailureDomains()
    other.assign("a", "eu/z0/r0/h0")
    with pytest.raises(ValueError, match="policy must be built over the cluster's domains"):
        Cluster(["a"], domains=d, policy=fk.IsolationPolicy(other))


def test_membership_listener_registration_and_repr():
    """Kills the mutants ``add_listener`` -> ``return None`` (it returns ``fn``, so it works as
    a decorator), ``__contains__``'s ``return False`` -> ``True`` for an unhashable value, and
    ``__repr__`` -> ``return None``."""
    c = timeout_cluster(["a", "b", "c"])

    @c.add_listener
    def seen(ev):
        pass

    assert seen is not None and callable(seen)
    assert [] not in c and "a" in c and "z" not in c
    assert repr(c) == "Cluster(3 nodes, 0 unroutable, balancer=HashRing, detector=TimeoutDetector)"
