"""fk.HashRing: bit-for-bit against the reference ring in tests/ring_ref.py,
incremental membership, failover, balance, concurrency and bad input."""
import math
import threading

import numpy as np
import pytest
import xxhash
from hypothesis import given, settings, strategies as st

import faultkit as fk
from faultkit.balance._ring import _hash_points
from concurrency import race
from ring_ref import MASK64, RefRing, key_hash

node_names = st.one_of(st.text(min_size=1, max_size=12), st.binary(min_size=1, max_size=12))
keys = st.one_of(st.text(max_size=20), st.binary(max_size=20),
                 st.integers(min_value=-(2**63), max_value=2**64 - 1))
NODES100 = [f"node-{i}" for i in range(100)]


def sample_hashes(n, seed=0):
    return np.random.default_rng(seed).integers(0, 2**64 - 1, n, dtype=np.uint64, endpoint=True)


@given(st.lists(node_names, min_size=1, max_size=8, unique=True),
       st.lists(st.floats(min_value=0.01, max_value=3.0), min_size=8, max_size=8),
       st.integers(min_value=1, max_value=40),
       st.integers(min_value=0, max_value=2**64 - 1),
       st.lists(keys, max_size=30))
@settings(max_examples=150, deadline=None)
def test_matches_reference(nodes, weights, vnodes, seed, key_list):
    weights = weights[:len(nodes)]
    ring = fk.HashRing(nodes, vnodes=vnodes, weights=weights, seed=seed)
    ref = RefRing(nodes, weights, vnodes=vnodes, seed=seed)
    assert ring.num_points == len(ref.points)
    for key in key_list:
        assert ring.get(key) == ref.get(key)
    got = ring.get_many(key_list)
    assert got.dtype == np.int32
    assert [ring.nodes[i] for i in got] == [ref.get(k) for k in key_list]
    hashes = np.array([key_hash(k, seed) for k in key_list], dtype=np.uint64)
    assert (ring.get_many(hashes) == got).all()


@given(st.integers(min_value=0, max_value=2**64 - 1), st.integers(min_value=0, max_value=70),
       st.one_of(st.integers(min_value=0, max_value=300),
                 st.integers(min_value=2**64 - 80, max_value=2**64 - 1)))
@settings(max_examples=200, deadline=None)
def test_point_kernels_match_xxhash(node_seed, count, first):
    # Point j of a node is xxh3_64 of j's 8 little-endian bytes seeded with
    # the node's seed; the eight-lane kernel (where the CPU has AVX-512) and
    # the portable one both give exactly that, counters wrapping at 2**64.
    expect = [xxhash.xxh3_64_intdigest(((first + t) & MASK64).to_bytes(8, "little"), node_seed)
              for t in range(count)]
    portable, used = _hash_points(node_seed, count, first, simd=False)
    assert portable.tolist() == expect and not used
    fast, used = _hash_points(node_seed, count, first)
    assert fast.tolist() == expect
    assert used == (count >= 8 and _hash_points(0, 8)[1])


@pytest.mark.parametrize("vnodes", [1, 13, 160])
def test_vector_and_portable_builds_give_the_reference_ring(vnodes):
    # A fresh build hashes and sorts with AVX-512 kernels where the CPU has
    # them; _set_simd(False) makes a ring build with the portable ones only.
    nodes = [f"10.3.{i // 200}.{i % 200}:11211" for i in range(300)]
    weights = [0.25 + (i % 9) / 4 for i in range(300)]
    ref = RefRing(nodes, weights, vnodes=vnodes, seed=5)
    for simd in (False, True):
        ring = fk.HashRing(vnodes=vnodes, seed=5)
        ring._set_simd(simd)
        ring.add_many(nodes, weights)
        got_points, got_owners = ring.points()
        assert got_points.tolist() == ref.points and got_owners.tolist() == ref.owners
        h = np.concatenate([sample_hashes(20_000, seed=vnodes), got_points,
                            got_points + np.uint64(1)])
        expect = got_owners[np.searchsorted(got_points, h, side="left") % len(got_points)]
        assert (ring.get_many(h) == expect).all()


def test_edges_of_the_hash_space():
    ring = fk.HashRing(NODES100[:10], vnodes=20, seed=3)
    ref = RefRing(NODES100[:10], vnodes=20, seed=3)
    probes = [0, 1, MASK64, MASK64 - 1]
    for p in ref.points[:5] + ref.points[-5:]:
        probes += [p, (p + 1) & MASK64, p - 1]
    for h in probes:
        assert ring.get_hash(h) == ref.nodes[ref.get_index(h)], h
    arr = np.array(probes, dtype=np.uint64)
    assert ring.get_many(arr).tolist() == [ref.get_index(h) for h in probes]
    # a hash above the last point wraps to the first point's owner
    assert ring.get_hash(MASK64) == ref.nodes[ref.owners[0]] or ref.points[-1] == MASK64


def test_many_hashes_against_reference_on_a_large_ring():
    # 1000 nodes x 160 points: buckets of every occupancy the index sees.
    nodes = [f"10.1.{i // 250}.{i % 250}:11211" for i in range(1000)]
    ring = fk.HashRing(nodes)
    ref = RefRing(nodes)
    points = np.array(ref.points, dtype=np.uint64)
    owners = np.array(ref.owners, dtype=np.int32)
    got_points, got_owners = ring.points()
    assert (got_points == points).all() and (got_owners == owners).all()
    h = np.concatenate([sample_hashes(200_000), points, points + np.uint64(1), points - np.uint64(1)])
    expect = owners[np.searchsorted(points, h, side="left") % len(points)]
    assert (ring.get_many(h) == expect).all()


def test_get_n_distinct_in_ring_order():
    ring = fk.HashRing(NODES100[:20], vnodes=8)
    ref = RefRing(NODES100[:20], vnodes=8)
    for i in range(300):
        k = f"k{i}"
        got = ring.get_n(k, 5)
        assert got == ref.get_n(k, 5)
        assert len(set(got)) == 5 and got[0] == ring.get(k)
    assert sorted(ring.get_n("x", 20)) == sorted(NODES100[:20])  # n > 8 uses the scratch path
    assert ring.get_n("x", 20) == ref.get_n("x", 20)
    assert ring.get_n("x", 0) == []
    with pytest.raises(ValueError, match="21"):
        ring.get_n("x", 21)
    ring.mark_down_many(NODES100[:5])
    ref.alive[:5] = [False] * 5
    assert ring.get_n("y", 15) == ref.get_n("y", 15)
    with pytest.raises(ValueError, match=r"\[0, 15\]"):
        ring.get_n("y", 16)


def test_get_many_forms_agree():
    ring = fk.HashRing(NODES100)
    ks = [f"user:{i}" for i in range(5000)] + [b"raw", 7, -1]
    idx = ring.get_many(ks)
    assert [ring.nodes[i] for i in idx] == [ring.get(k) for k in ks]
    assert (ring.get_many(tuple(ks)) == idx).all()
    assert (ring.get_many(fk.hash64_many(ks)) == idx).all()
    out = np.full(len(ks), -7, dtype=np.int32)
    assert ring.get_many(ks, out=out) is out and (out == idx).all()
    assert ring.get_many([]).shape == (0,)


def test_add_and_remove_equal_a_fresh_build():
    ring = fk.HashRing(NODES100[:50], weights={"node-3": 2.5})
    ring.add("node-50", 0.5)
    ring.add_many(NODES100[51:60], weights=[1.5] * 9)
    w = [2.5 if n == "node-3" else 1.0 for n in NODES100[:50]] + [0.5] + [1.5] * 9
    fresh = fk.HashRing(NODES100[:60], weights=w)
    h = sample_hashes(100_000)
    assert ring.nodes == fresh.nodes and ring.weights == fresh.weights
    assert (ring.get_many(h) == fresh.get_many(h)).all()
    ring.remove("node-3")
    ring.remove_many(["node-0", "node-59"])
    keep = [n for n in NODES100[:60] if n not in ("node-0", "node-3", "node-59")]
    fresh = fk.HashRing(keep, weights=[ring.weights[n] for n in keep])
    assert ring.nodes == keep
    assert (ring.get_many(h) == fresh.get_many(h)).all()


@pytest.mark.parametrize("n", [10, 100])
def test_movement_on_add_and_remove_near_ideal(n):
    nodes = NODES100[:n]
    ring = fk.HashRing(nodes)
    h = sample_hashes(200_000)
    before = ring.get_many(h)
    ring.add("newcomer")
    after = ring.get_many(h)
    moved = before != after
    assert (after[moved] == n).all()  # keys move only to the new node
    assert moved.mean() <= 1.2 / (n + 1)
    ring.remove("newcomer")
    assert (ring.get_many(h) == before).all()  # and back, exactly
    ring.remove(nodes[0])
    gone = ring.get_many(h)
    moved = before != gone + 1  # indices above 0 shift down by one
    assert (before[moved] == 0).all()  # only the removed node's keys move
    assert moved.mean() <= 1.2 / n


def test_failover_moves_only_the_down_nodes_keys():
    ring = fk.HashRing(NODES100)
    ref = RefRing(NODES100)
    h = sample_hashes(100_000)
    before = ring.get_many(h)
    ring.mark_down("node-7")
    assert not ring.is_up("node-7") and ring.is_up("node-8")
    after = ring.get_many(h)
    moved = before != after
    assert (before[moved] == 7).all() and (after != 7).all()
    ref.alive[7] = False
    sample = h[:2000].tolist()
    assert after[:2000].tolist() == [ref.get_index(x) for x in sample]
    ring.mark_up("node-7")
    assert (ring.get_many(h) == before).all()


def test_alive_mask_bulk_and_all_down():
    ring = fk.HashRing(NODES100[:10])
    mask = np.ones(10, dtype=bool)
    mask[[1, 4, 9]] = False
    ring.set_alive(mask)
    assert (ring.alive_mask() == mask).all()
    assert set(ring.get_many(sample_hashes(20_000)).tolist()) == set(range(10)) - {1, 4, 9}
    ring.mark_up_many(["node-1", "node-4"])
    assert ring.alive_mask().sum() == 9
    ring.mark_down_many(NODES100[:10])
    with pytest.raises(fk.NoLiveNodeError):
        ring.get("k")
    with pytest.raises(fk.NoLiveNodeError):
        ring.get_many(["k"])
    with pytest.raises(fk.NoLiveNodeError):
        ring.get_n("k", 1)
    assert set(ring.distribution().values()) == {0.0}
    ring.set_alive(np.ones(10, dtype=bool))
    assert ring.get("k") in NODES100[:10]
    # a mask survives membership changes, aligned with the new node list
    ring.mark_down("node-5")
    ring.remove("node-2")
    ring.add("node-x")
    assert ring.alive_mask().tolist() == [True] * 4 + [False] + [True] * 5
    assert not ring.is_up("node-5")


def test_distribution_matches_the_keys():
    ring = fk.HashRing(NODES100[:20], weights={"node-0": 3.0})
    ring.mark_down("node-1")
    share = ring.distribution()
    assert math.isclose(sum(share.values()), 1.0, rel_tol=1e-9)
    assert share["node-1"] == 0.0
    counts = np.bincount(ring.get_many(sample_hashes(1_000_000)), minlength=20) / 1e6
    for i, node in enumerate(ring.nodes):
        assert abs(counts[i] - share[node]) < 0.003, node
    assert share["node-0"] > 2 * max(v for k, v in share.items() if k != "node-0") * 0.6


def test_balance_100_nodes_1m_keys():
    # 160 independent points per node give each node's share a coefficient of
    # variation of 1/sqrt(160) ~ 7.9%, so max/mean over 100 nodes is ~1.2 but
    # depends on the names and seed: this ring (seed 1) has 1.16; over random
    # seeds the median is ~1.21 and about one ring in six exceeds 1.25.
    ring = fk.HashRing(NODES100, seed=1)
    keys = [f"{v:016x}" for v in np.random.default_rng(5).integers(0, 2**63, 1_000_000).tolist()]
    load = np.bincount(ring.get_many(keys), minlength=100)
    assert load.sum() == 1_000_000
    assert load.max() / load.mean() <= 1.25
    spread = [max(fk.HashRing(NODES100, seed=s).distribution().values()) * 100 for s in range(20)]
    assert np.median(spread) <= 1.25 and max(spread) <= 1.4


def test_concurrent_lookups_see_old_or_new_ring():
    ring = fk.HashRing(NODES100[:30])
    ks = [f"key-{i}" for i in range(3000)]
    h = fk.hash64_many(ks)
    # The writer cycles through four states; "flapper" is index 30 whenever it
    # is present, so an index names the same node in all of them.
    states = [ring.get_many(h)]
    ring.mark_down("node-3")
    states.append(ring.get_many(h))
    ring.mark_up("node-3")
    ring.add("flapper")
    states.append(ring.get_many(h))
    ring.mark_down("node-3")
    states.append(ring.get_many(h))
    ring.mark_up("node-3")
    names = ring.nodes
    allowed = [set(col) for col in np.stack(states).T.tolist()]
    errors = []

    def read():
        for i in range(0, 3000, 7):
            if names.index(ring.get(ks[i])) not in allowed[i]:
                errors.append(("get", i))
        got = ring.get_many(h).tolist()  # GIL released during the lookup
        errors.extend(("get_many", i) for i in range(len(got)) if got[i] not in allowed[i])

    def cycle(_):
        ring.remove("flapper")
        ring.mark_down("node-3")
        ring.mark_up("node-3")
        ring.add("flapper")
        ring.mark_down_many(["node-3"])
        ring.set_alive(np.ones(31, dtype=bool))

    race(read, cycle, readers=3, min_changes=300, min_reads=6)
    assert not errors, errors[:5]


def test_empty_ring_and_repr():
    ring = fk.HashRing()
    assert len(ring) == 0 and ring.nodes == [] and ring.distribution() == {}
    with pytest.raises(fk.EmptyRingError):
        ring.get("k")
    with pytest.raises(fk.EmptyRingError):
        ring.get_many(np.zeros(3, dtype=np.uint64))
    assert ring.get_many([]).shape == (0,)
    ring.add("a")
    assert ring.get("k") == "a" and "a" in ring and "b" not in ring and [1] not in ring
    assert "1 nodes" in repr(ring)
    ring.remove("a")
    with pytest.raises(fk.EmptyRingError):
        ring.get("k")


@pytest.mark.parametrize("bad", [0, -1.0, float("nan"), float("inf"), -float("inf")])
def test_bad_weights(bad):
    with pytest.raises(ValueError, match="weight"):
        fk.HashRing(["a"], weights=[bad])
    ring = fk.HashRing(["a"])
    with pytest.raises(ValueError, match="weight"):
        ring.add("b", bad)
    assert ring.nodes == ["a"]


def test_bad_input():
    with pytest.raises(ValueError, match="'a'"):
        fk.HashRing(["a", "a"])
    ring = fk.HashRing(["a", "b"])
    with pytest.raises(ValueError, match="already"):
        ring.add("a")
    with pytest.raises(ValueError, match="already"):
        ring.add_many(["c", "c"])
    assert ring.nodes == ["a", "b"]
    with pytest.raises(TypeError, match="str or bytes"):
        ring.add(3)
    with pytest.raises(TypeError, match="single str"):
        fk.HashRing("abc")
    with pytest.raises(TypeError, match="number"):
        ring.add("c", "heavy")
    with pytest.raises(TypeError, match="key must be"):
        ring.get(1.5)
    with pytest.raises(TypeError, match="key must be"):
        ring.get_many(["a", None])
    with pytest.raises(TypeError, match="uint64"):
        ring.get_many(np.zeros(3, dtype=np.int64))
    with pytest.raises(TypeError, match=r"keys must be a list, tuple or numpy uint64 array, not str"):
        ring.get_many("abc")
    with pytest.raises(ValueError, match="length"):
        ring.get_many(["a"], out=np.zeros(2, dtype=np.int32))
    with pytest.raises(KeyError, match="'zz'"):
        ring.remove("zz")
    with pytest.raises(KeyError, match="'zz'"):
        ring.mark_down("zz")
    with pytest.raises(KeyError, match=r"node 'zz' is not on the ring"):
        ring.mark_down_many(["a", "zz"])
    assert ring.is_up("a")  # all-or-nothing
    with pytest.raises(KeyError, match=r"'node \[\] is not on the ring'"):
        ring.is_up([])
    with pytest.raises(ValueError, match="3 entries for 2"):
        ring.set_alive(np.ones(3, dtype=bool))
    with pytest.raises(TypeError, match="bool"):
        ring.set_alive(np.ones(2, dtype=np.int8))
    with pytest.raises(ValueError, match="vnodes"):
        fk.HashRing(["a"], vnodes=0)
    with pytest.raises(TypeError, match="vnodes"):
        fk.HashRing(["a"], vnodes=1.5)
    with pytest.raises(ValueError, match="seed"):
        fk.HashRing(["a"], seed=-1)
    with pytest.raises(KeyError, match="unknown"):
        fk.HashRing(["a"], weights={"b": 2.0})
    with pytest.raises(ValueError, match="2 weights for 1"):
        fk.HashRing(["a"], weights=[1.0, 2.0])
    with pytest.raises(ValueError, match="points"):
        fk.HashRing(["a"], weights=[1e12])
    with pytest.raises(TypeError, match="n must be"):
        ring.get_n("k", 1.0)
    with pytest.raises(ValueError, match=r"n must be in \[0, 2\] \(live nodes\), got -1"):
        ring.get_n("k", -1)
    with pytest.raises(OverflowError, match=r"int key 18446744073709551616 is outside the 64-bit range \[-2\*\*63, 2\*\*64 - 1\]"):
        ring.get(2**64)


ops = st.lists(st.tuples(st.sampled_from(["add", "add_many", "remove", "down", "up", "mask"]),
                         st.integers(0, 30), st.floats(0.2, 3.0)), max_size=25)


@given(ops, st.integers(min_value=0, max_value=2**64 - 1))
@settings(max_examples=60, deadline=None)
def test_any_sequence_of_changes_equals_a_fresh_ring(seq, seed):
    # Incremental merges, filters and marks must leave exactly the ring a
    # fresh build of the same members would be, with the same routing.
    ring = fk.HashRing(["n0", "n1"], vnodes=12, seed=seed)
    weights = {"n0": 1.0, "n1": 1.0}
    alive = {"n0": True, "n1": True}
    h = sample_hashes(300, seed=seed & 0xFFFF).tolist()
    rng = np.random.default_rng(seed & 0xFFFF)
    for op, k, w in seq:
        name = f"n{k}"
        if op == "add" and name not in weights:
            ring.add(name, w)
            weights[name], alive[name] = w, True
        elif op == "add_many":
            new = [f"m{k}-{j}" for j in range(3) if f"m{k}-{j}" not in weights]
            ring.add_many(new, weights=[w] * len(new))
            for n in new:
                weights[n], alive[n] = w, True
        elif op == "remove" and name in weights:
            ring.remove(name)
            del weights[name], alive[name]
        elif op in ("down", "up") and name in weights:
            (ring.mark_down if op == "down" else ring.mark_up)(name)
            alive[name] = op == "up"
        elif op == "mask" and weights:
            mask = rng.random(len(weights)) < 0.7
            ring.set_alive(mask)
            alive.update(zip(ring.nodes, mask.tolist()))
        assert ring.nodes == list(weights)
        ref = RefRing(list(weights), list(weights.values()), vnodes=12, seed=seed)
        ref.alive = [alive[n] for n in ref.nodes]
        assert ring.alive_mask().tolist() == ref.alive
        if any(ref.alive):
            got = ring.get_many(np.array(h, dtype=np.uint64)).tolist()
            assert got == [ref.get_index(x) for x in h]


@pytest.mark.parametrize("change", ["add", "remove"])
def test_a_change_from_inside_a_change_is_refused_not_deadlocked(change):
    # A node name's __hash__ runs inside add/remove (dict lookups); if it
    # changes the same ring, that nested change must raise, not wait forever
    # on the ring's write lock (nor interleave with the outer change).
    ring = fk.HashRing(["a", "b", "c"])

    class Nested(str):
        def __hash__(self):
            ring.remove("c")
            return str.__hash__(self)

        def __eq__(self, other):
            return str.__eq__(self, other)

    result = {}

    def run():
        try:
            getattr(ring, change)(Nested("a" if change == "remove" else "d"))
        except RuntimeError as e:
            result["error"] = e

    t = threading.Thread(target=run, daemon=True)
    t.start()
    t.join(10)
    assert not t.is_alive(), "nested ring change deadlocked"
    assert "inside" in str(result.get("error"))
    assert sorted(ring.nodes) == ["a", "b", "c"]
    ring.remove("c")  # the lock was released
    assert sorted(ring.nodes) == ["a", "b"]


def test_points_reads_one_snapshot_even_if_a_gc_callback_changes_the_ring():
    # points() allocates its arrays after taking the snapshot's size: a
    # collection there (gc.callbacks, finalizers) can change the ring and
    # drop that snapshot, which points() must still be holding.  Where the
    # collection fires depends on every allocation before it (a tracer such as
    # coverage's allocates too), so the result may be the ring before the
    # change or after it, never a mix of the two.
    import gc
    ring = fk.HashRing([f"n{i}" for i in range(50)])
    want_points, want_owners = fk.HashRing(ring.nodes).points()
    fired = []

    def callback(phase, info):
        if phase == "start" and not fired:
            fired.append(1)
            ring.add_many([f"x{i}" for i in range(100)])  # a fresh build

    old = gc.get_threshold()
    gc.callbacks.append(callback)
    gc.set_threshold(1, 1, 1)
    try:
        pts, own = ring.points()
    finally:
        gc.set_threshold(*old)
        gc.callbacks.remove(callback)
    assert fired and len(ring) == 150
    new_points, new_owners = fk.HashRing(ring.nodes).points()
    old = (pts.shape == want_points.shape and (pts == want_points).all() and (own == want_owners).all())
    new = (pts.shape == new_points.shape and (pts == new_points).all() and (own == new_owners).all())
    assert old or new, "points() mixed two versions of the ring"
