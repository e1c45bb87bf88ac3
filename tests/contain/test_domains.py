"""FailureDomains: the tree, isolation reaching a HashRing, placement across domains, faults."""
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import faultkit as fk
from faultkit.contain import FailureDomains
from faultkit.detect import TimeoutDetector


def fleet(zones=3, racks=4, hosts=5, region="eu"):
    """A FailureDomains of zones x racks x hosts services named z{z}r{r}h{h}."""
    d = FailureDomains()
    for z in range(zones):
        for r in range(racks):
            for h in range(hosts):
                d.assign(f"z{z}r{r}h{h}", f"{region}/az{z}/r{r}/h{h}")
    return d


def test_tree_members_and_domain_of():
    d = fleet()
    assert len(d) == 60
    assert d.domain_of("z1r2h3") == "eu/az1/r2/h3"
    assert d.domain_of("z1r2h3", "rack") == "eu/az1/r2"
    assert d.domain_of("z1r2h3", "region") == "eu"
    assert sorted(d.members("eu/az1/r2")) == [f"z1r2h{h}" for h in range(5)]
    assert len(d.members("eu/az1")) == 20 and len(d.members("eu")) == 60
    assert d.domains("zone") == ["eu/az0", "eu/az1", "eu/az2"]
    assert len(d.domains("rack")) == 12


def test_reassign_moves_and_strict_refuses():
    d = fleet(1, 2, 2)
    d.assign("z0r0h0", "eu/az0/r1/h9")
    assert d.domain_of("z0r0h0") == "eu/az0/r1/h9"
    assert "z0r0h0" not in d.members("eu/az0/r0")
    with pytest.raises(ValueError, match="already assigned to 'eu/az0/r1/h9'"):
        d.assign("z0r0h0", "eu/az0/r0/h0", strict=True)
    d.assign("z0r0h1", "eu/az0/r1/h8")  # rack r0 is now empty: it no longer exists
    with pytest.raises(KeyError, match="unknown domain 'eu/az0/r0'"):
        d.members("eu/az0/r0")
    d.remove("z0r0h1")
    assert "z0r0h1" not in d and len(d) == 3


@pytest.mark.parametrize("path, match", [
    ("", "domain path '' has an empty segment"),
    ("eu//r1/h1", "domain path 'eu//r1/h1' has an empty segment"),
    ("/eu/az1/r1", "domain path '/eu/az1/r1' has an empty segment"),
    ("eu/az1/r1/h1/", "domain path 'eu/az1/r1/h1/' has an empty segment"),
    ("eu/az1/r1", r"service path 'eu/az1/r1' has 3 levels; it needs 4 \(region/zone/rack/host\)"),
    ("eu/az1/r1/h1/x", r"domain path 'eu/az1/r1/h1/x' has 5 levels; at most 4 \(region/zone/rack/host\)"),
])
def test_malformed_paths(path, match):
    d = FailureDomains()
    with pytest.raises(ValueError, match=match):
        d.assign("s", path)


def test_bad_input_names_the_bad_value():
    d = fleet(1, 1, 1)
    with pytest.raises(KeyError, match="unknown service 'nope'"):
        d.domain_of("nope")
    with pytest.raises(KeyError, match="unknown service 'nope'"):
        d.is_isolated("nope")
    with pytest.raises(KeyError, match="unknown domain 'eu/az9'"):
        d.isolate("eu/az9")
    with pytest.raises(ValueError, match="empty segment"):
        d.isolate("eu//r0")
    with pytest.raises(ValueError, match="unknown level 'shelf'"):
        d.domain_of("z0r0h0", "shelf")
    with pytest.raises(TypeError, match=r"a domain path must be a str, not int"):
        d.assign("s", 3)
    with pytest.raises(TypeError, match=r"unhashable type: 'list'"):
        d.assign(["unhashable"], "eu/az0/r0/h0")
    with pytest.raises(ValueError, match=r"levels must name at least one level"):
        FailureDomains(levels=())
    with pytest.raises(ValueError, match=r"level names must be distinct, got \('a', 'a'\)"):
        FailureDomains(levels=("a", "a"))
    with pytest.raises(TypeError, match=r"levels must be a sequence of level names, not a str"):
        FailureDomains(levels="rack")
    with pytest.raises(TypeError, match="a balancer needs .nodes"):
        d.attach(object())
    with pytest.raises(ValueError, match="cannot place 2 replicas in distinct zone domains"):
        d.place("k", 2, spread="zone")
    with pytest.raises(TypeError, match=r"n must be an int, not float"):
        d.place("k", 1.0)
    d.assign(("a", "tuple"), "eu/az0/r0/h1")
    with pytest.raises(TypeError, match="must be str, bytes or int, not tuple"):
        d.place("k", 1)
    with pytest.raises(RuntimeError, match="needs a detector"):
        d.detect_fault("z0r0h0")


def test_isolate_restore_nested_domains():
    d = fleet(2, 2, 2)
    assert d.isolate("eu/az0/r1") == ["z0r1h0", "z0r1h1"]
    assert d.is_isolated("z0r1h0") and not d.is_isolated("z0r0h0")
    assert sorted(d.isolate("eu/az0")) == ["z0r0h0", "z0r0h1"]  # r1 was already out
    assert d.isolate("eu/az0") == []
    assert sorted(d.restore("eu/az0")) == ["z0r0h0", "z0r0h1"]  # r1 stays isolated
    assert d.is_isolated("z0r1h1") and d.isolated == ["eu/az0/r1"]
    assert d.isolated_fraction() == 0.25
    assert d.restore("eu/az0") == []


def test_isolation_reaches_the_ring_and_moves_only_that_domains_keys():
    d = fleet(3, 4, 5)
    ring = fk.HashRing(d.services, vnodes=100)
    other_ring = fk.HashRing(d.services[:40], vnodes=50)  # holds only zones 0 and 1
    d.attach(ring)
    d.attach(other_ring)
    keys = [f"key-{i}" for i in range(20000)]
    before = ring.get_many(keys)
    before_other = other_ring.get_many(keys)
    nodes = ring.nodes
    rack = set(d.members("eu/az1/r2"))
    d.isolate("eu/az1/r2")
    after = ring.get_many(keys)
    moved = before != after
    owners_before = {nodes[i] for i in before[moved].tolist()}
    assert moved.any() and owners_before <= rack  # only keys of the rack moved
    assert not {nodes[i] for i in after.tolist()} & rack  # and nothing routes there
    assert (before_other != other_ring.get_many(keys)).any()  # the second ring too
    d.restore("eu/az1/r2")
    assert (ring.get_many(keys) == before).all()
    assert (other_ring.get_many(keys) == before_other).all()
    # A ring attached after isolation is brought in line at once.
    d.isolate("eu/az2")
    late = fk.HashRing(d.services)
    d.attach(late)
    assert late.alive_mask().sum() == 40
    d.detach(late)
    with pytest.raises(ValueError, match=r"HashRing\(60 nodes, 9600 points, 20 down\) is not attached"):
        d.detach(late)


def test_reassigning_into_an_isolated_domain_marks_it_down():
    d = fleet(1, 2, 2)
    ring = fk.HashRing(d.services)
    d.attach(ring)
    d.isolate("eu/az0/r1")
    d.assign("z0r0h0", "eu/az0/r1/h5")
    assert d.is_isolated("z0r0h0") and not ring.is_up("z0r0h0")
    d.assign("z0r0h0", "eu/az0/r0/h0")
    assert ring.is_up("z0r0h0")


def test_blast_radius_share_on_a_ring():
    d = fleet(2, 2, 5)
    ring = fk.HashRing(d.services, vnodes=200)
    dist = ring.distribution()
    br = d.blast_radius("eu/az1", ring)
    assert br.domain == "eu/az1" and len(br.services) == 10
    assert br.share == pytest.approx(sum(dist[s] for s in br.services))
    assert 0.3 < br.share < 0.7
    assert d.blast_radius("eu/az1").share is None  # nothing attached, none given
    d.attach(ring)
    d.isolate("eu/az1")
    assert d.blast_radius("eu/az1").share == 0.0  # serves nothing now
    assert d.blast_radius("eu").share == pytest.approx(1.0)


def test_detect_fault_from_a_real_detector():
    d = fleet(1, 2, 3)
    det = TimeoutDetector(timeout=5.0)
    for s in d.services:
        det.add(s)
        det.heartbeat(s, now=0.0)
    d.detector = det
    for s in d.services:
        if s != "z0r0h1" and not s.startswith("z0r1"):
            det.heartbeat(s, now=4.0)
    det.scan(now=6.0)  # z0r0h1 and all of rack r1 are dead
    assert d.detect_fault("z0r0h0") == (False, "eu/az0/r0/h0")
    assert d.detect_fault("z0r0h1") == (True, "eu/az0/r0/h1")
    assert d.detect_fault("z0r1h2") == (True, "eu/az0/r1")


# -- placement ------------------------------------------------------------------


def _rack_rows(d, placed, level):
    index = {dom: i for i, dom in enumerate(d.domains(level))}
    return np.array([[index[d.domain_of(s, level)] for s in row] for row in placed])


@pytest.mark.parametrize("spread, n", [("rack", 3), ("zone", 2)])
def test_losing_any_one_domain_leaves_a_replica_of_every_key(spread, n):
    d = fleet(zones=3, racks=4, hosts=6)
    keys = [f"user:{i}" for i in range(100_000)]
    placed = d.place_many(keys, n, spread=spread)
    doms = _rack_rows(d, placed, spread)
    assert doms.shape == (100_000, n)
    assert (np.sort(doms, axis=1)[:, 1:] != np.sort(doms, axis=1)[:, :-1]).all()  # distinct
    for lost in range(len(d.domains(spread))):
        assert (doms != lost).any(axis=1).all(), f"losing domain {lost} loses a key"
    # Every domain gets its share of replicas (no domain is left out).
    counts = np.bincount(doms.ravel(), minlength=len(d.domains(spread)))
    assert counts.min() > 0.8 * counts.mean()
    # place() and place_many() agree.
    for i in range(0, 100_000, 4999):
        assert d.place(keys[i], n, spread=spread) == placed[i]


def test_placement_moves_minimally_when_membership_changes():
    d = fleet(2, 3, 4)
    keys = [f"k{i}" for i in range(5000)]
    before = d.place_many(keys, 3)
    d.assign("new-host", "eu/az0/r1/h9")  # one more host in one rack
    after = d.place_many(keys, 3)
    for b, a in zip(before, after):
        if b != a:  # only a replica in that rack moved, and onto the new host
            assert [x for x in a if x not in b] == ["new-host"]
            assert len(set(b) - set(a)) == 1
    d2 = fleet(2, 3, 4)
    for h in range(4):
        d2.remove(f"z1r2h{h}")  # a whole rack leaves
    gone = d2.place_many(keys, 3)
    for b, a in zip(before, gone):
        lost = set(b) - set(a)
        assert len(lost) <= 1 and all(s.startswith("z1r2") for s in lost)
        if not lost:
            assert a == b


def test_placement_is_deterministic_across_assignment_order():
    paths = [(f"s{i}", f"eu/az{i % 3}/r{i % 5}/h{i}") for i in range(60)]
    d1, d2 = FailureDomains(), FailureDomains()
    d1.assign_many(paths)
    d2.assign_many(reversed(paths))
    keys = [f"k{i}" for i in range(2000)] + [b"raw", 12345]
    assert d1.place_many(keys, 4) == d2.place_many(keys, 4)
    assert d1.place(12345, 4) == d2.place(12345, 4)


@settings(max_examples=50, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 3), st.integers(0, 3), st.integers(0, 3)),
                min_size=1, max_size=40, unique=True),
       st.integers(1, 4), st.text(max_size=8))
def test_place_returns_distinct_domains_or_value_error(cells, n, key):
    d = FailureDomains()
    for z, r, h in cells:
        d.assign(f"{z}.{r}.{h}", f"eu/z{z}/r{r}/h{h}")
    racks = len(d.domains("rack"))
    if n > racks:
        with pytest.raises(ValueError, match=f"cannot place {n} replicas in distinct rack domains: there are {racks}$"):
            d.place(key, n)
        return
    placed = d.place(key, n)
    assert len({d.domain_of(s, "rack") for s in placed}) == n
    assert placed == d.place_many([key], n)[0]


@pytest.mark.parametrize("make", [
    lambda nodes: fk.HashRing(nodes),
    lambda nodes: fk.Rendezvous(nodes),
    lambda nodes: fk.Maglev(nodes),
], ids=["HashRing", "Rendezvous", "Maglev"])
def test_isolation_moves_only_the_isolated_domains_keys_on_every_balancer(make):
    d = fleet(3, 4, 5)
    balancer = make(d.services)
    d.attach(balancer)
    keys = [f"key-{i}" for i in range(20000)]
    before = balancer.get_many(keys)
    nodes = balancer.nodes
    zone = {nodes.index(s) for s in d.members("eu/az2")}
    d.isolate("eu/az2")
    after = balancer.get_many(keys)
    moved = before != after
    in_zone = np.isin(before, sorted(zone))
    assert moved[in_zone].all()                          # every key of the zone moved
    assert not set(after.tolist()) & zone                # nothing routes into it
    assert not (moved & ~in_zone).any()                  # only the zone's keys moved
    assert balancer.alive_mask().sum() == 40
    d.restore("eu/az2")
    assert (balancer.get_many(keys) == before).all()
