"""HashRing.ketama: bit-compatible with uhashring's ketama mode and with a
port of libketama's ketama.c (tests/ring_ref.py); MD5 against hashlib."""
import bisect
import hashlib

import numpy as np
import pytest
import uhashring
from hypothesis import given, settings, strategies as st

import faultkit as fk
from faultkit.balance._ring import _md5
from ring_ref import RefLibketama, ketama_hashi

names = st.text(alphabet=st.characters(min_codepoint=33, max_codepoint=0x2FF), min_size=1,
                max_size=20)


@given(st.binary(max_size=300))
@settings(max_examples=300)
def test_md5_matches_hashlib(data):
    assert _md5(data) == hashlib.md5(data).digest()


def test_md5_block_edges():
    buf = bytes(range(256)) * 3
    for n in range(300):
        assert _md5(buf[:n]) == hashlib.md5(buf[:n]).digest(), n


def uhash_ring(nodes, weights):
    return uhashring.HashRing({n: {"weight": w} for n, w in zip(nodes, weights)},
                              hash_fn="ketama")


@given(st.lists(names, min_size=1, max_size=30, unique=True), st.data())
@settings(max_examples=25, deadline=None)
def test_same_node_as_uhashring(nodes, data):
    weights = data.draw(st.lists(st.integers(1, 12), min_size=len(nodes), max_size=len(nodes)))
    u = uhash_ring(nodes, weights)
    ring = fk.HashRing.ketama(nodes, weights=weights, compat="uhashring")
    assert ring.num_points == len(u.runtime._keys)
    keys = [f"k{i}-{nodes[0]}" for i in range(2000)]
    assert [ring.nodes[i] for i in ring.get_many(keys)] == [u.get_node(k) for k in keys]


def test_100k_keys_random_nodes_and_weights_like_uhashring():
    rng = np.random.default_rng(11)
    nodes = [f"10.{a}.{b}.{c}:11211" for a, b, c in rng.integers(0, 256, (60, 3))]
    nodes = list(dict.fromkeys(nodes))
    weights = rng.integers(1, 20, len(nodes)).tolist()
    u = uhash_ring(nodes, weights)
    ring = fk.HashRing.ketama(nodes, weights=weights, compat="uhashring")
    keys = [f"{v:x}" for v in rng.integers(0, 2**62, 100_000).tolist()]
    expect = [u.get_node(k) for k in keys]
    got = ring.get_many(keys)
    assert [ring.nodes[i] for i in got] == expect
    assert all(ring.get(k) == e for k, e in zip(keys[:2000], expect))
    # Pre-hashed 32-bit keys, including every point itself and its neighbours:
    # uhashring takes the first point > hash (bisect_right), ties to the last writer.
    pts = u.runtime._keys
    hashes = [ketama_hashi(k.encode()) for k in keys[:1000]]
    hashes += pts[::7] + [p + 1 for p in pts[::7]] + [p - 1 for p in pts[::7]] + [0, 2**32 - 1]
    hashes = [h for h in hashes if 0 <= h < 2**32]
    expect = [u.runtime._ring[pts[bisect.bisect(pts, h) % len(pts)]] for h in hashes]
    got = ring.get_many(np.array(hashes, dtype=np.uint64))
    assert [ring.nodes[i] for i in got] == expect


def test_add_and_remove_track_uhashring():
    nodes = [f"cache-{i}" for i in range(12)]
    u = uhash_ring(nodes, [1] * 12)
    ring = fk.HashRing.ketama(nodes, compat="uhashring")
    keys = [f"user:{i}" for i in range(5000)]
    u.add_node("cache-new", {"weight": 3})
    ring.add("cache-new", 3)
    u.remove_node("cache-4")
    ring.remove("cache-4")
    assert [ring.nodes[i] for i in ring.get_many(keys)] == [u.get_node(k) for k in keys]


# Three pairs of servers with one equal 32-bit point each (found by search:
# MD5 of "tie-184-29" bytes 12..15 == of "tie-434-4" bytes 4..7, and so on).
TIED = ["tie-184", "tie-434", "tie-120", "tie-620", "tie-84", "tie-666"]


@pytest.mark.parametrize("order", [1, -1])
def test_equal_points_put_the_server_listed_last_first(order):
    nodes = TIED[::order]
    ref = RefLibketama([(n, 1) for n in nodes])
    assert len(ref.points) - len(set(ref.points)) == 3
    for compat in ("libketama", "uhashring"):
        ring = fk.HashRing.ketama(nodes, compat=compat)
        got_points, got_owners = ring.points()
        assert got_points.tolist() == [p << 32 for p in ref.points]
        assert [nodes[i] for i in got_owners.tolist()] == ref.servers
    portable = fk.HashRing.ketama(compat="uhashring")  # built without vector kernels
    portable._set_simd(False)
    portable.add_many(nodes)
    assert [nodes[i] for i in portable.points()[1].tolist()] == ref.servers
    ring = fk.HashRing.ketama(nodes)
    ties = [p for p, q in zip(ref.points, ref.points[1:]) if p == q]
    assert [ring.nodes[i] for i in ring.get_many(np.array(ties, dtype=np.uint64))] == [
        ref.get_server_hash(h) for h in ties]


@given(st.lists(names, min_size=1, max_size=25, unique=True), st.data())
@settings(max_examples=25, deadline=None)
def test_same_server_as_libketama(nodes, data):
    weights = data.draw(st.lists(st.integers(1, 2000), min_size=len(nodes), max_size=len(nodes)))
    ref = RefLibketama(list(zip(nodes, weights)))
    ring = fk.HashRing.ketama(nodes, weights=weights)
    assert ring.compat == "libketama" and ring.num_points == len(ref.points)
    keys = [f"{nodes[-1]}/{i}" for i in range(1500)]
    assert [ring.nodes[i] for i in ring.get_many(keys)] == [ref.get_server(k) for k in keys]
    if ref.points:
        probes = ref.points[::5] + [p + 1 for p in ref.points[::5]] + [0, 1, 2**32 - 1]
        probes = [h for h in probes if h < 2**32]
        got = ring.get_many(np.array(probes, dtype=np.uint64))
        assert [ring.nodes[i] for i in got] == [ref.get_server_hash(h) for h in probes]


def test_libketama_and_uhashring_formulas_differ_where_float32_rounds():
    # 20 servers, one of memory 21: libketama's float32 share gives it 419
    # MD5 hashes, uhashring's exact (40 * 20 * 21) // 40 gives 420.
    nodes = [f"s{i}" for i in range(20)]
    weights = [1] * 19 + [21]
    lib = fk.HashRing.ketama(nodes, weights=weights)
    uh = fk.HashRing.ketama(nodes, weights=weights, compat="uhashring")
    assert lib.num_points == len(RefLibketama(list(zip(nodes, weights))).points)
    assert uh.num_points == len(uhash_ring(nodes, weights).runtime._keys)
    assert uh.num_points - lib.num_points == 4


def test_ketama_failover_and_keys():
    nodes = [f"mc{i}:11211" for i in range(10)]
    ring = fk.HashRing.ketama(nodes)
    keys = [f"k{i}" for i in range(20_000)]
    before = ring.get_many(keys)
    ring.mark_down("mc3:11211")
    after = ring.get_many(keys)
    moved = before != after
    assert (before[moved] == 3).all() and (after != 3).all()
    assert ring.get_n("k1", 9) and "mc3:11211" not in ring.get_n("k1", 9)
    assert ring.get(12345) == ring.get("12345")  # ints hash as their decimal string
    assert ring.get(b"k1") == ring.get("k1") == ring.nodes[ring.get_many(["k1"])[0]]
    with pytest.raises(ValueError, match="32-bit"):
        ring.get_many(np.array([2**32], dtype=np.uint64))
    with pytest.raises(ValueError, match="compat"):
        fk.HashRing.ketama(nodes, compat="memcached")
    assert "ketama" in repr(ring)


def test_ketama_server_without_points():
    # libketama gives a server with a tiny share no points; it can get no keys.
    ring = fk.HashRing.ketama(["big", "tiny"], weights=[10_000, 1])
    assert ring.distribution()["tiny"] == 0.0
    ring.mark_down("big")
    with pytest.raises(fk.NoLiveNodeError):
        ring.get("k")
    with pytest.raises(fk.NoLiveNodeError):
        ring.get_many(["k"])
    with pytest.raises(ValueError, match="only 0 live"):
        ring.get_n("k", 1)
