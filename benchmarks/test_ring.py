"""Balance: faultkit's balancers against uhashring, numpy and the jump package, in one run.

Groups (compare within a group; ``faultkit bench -k ring``):
- per-call ``get(str)`` on a 100-node ring, 1,000 keys a round: faultkit, uhashring
  (default and ketama modes), and ``xxhash.xxh3_64_intdigest(key.encode())`` alone;
- ``get_many`` on 1M str keys against ``fk.hash64_many`` of the same keys;
- ``get_many`` on 1M pre-computed uint64 hashes against ``np.searchsorted`` over the
  ring's own sorted points (a binary search per key);
- build a 1,000-node x 160-vnode ring, and add + remove one node on it, against uhashring;
- ``jump_hash`` on a 1M-key array against the jump package called per key;
- rendezvous and Maglev bulk lookups, for scale.
"""
import jump
import numpy as np
import pytest
import uhashring
import xxhash

import faultkit as fk
from conftest import BULK

NODES100 = [f"10.0.{i // 250}.{i % 250}:11211" for i in range(100)]
NODES1000 = [f"10.1.{i // 250}.{i % 250}:11211" for i in range(1000)]
xxh3 = xxhash.xxh3_64_intdigest


@pytest.fixture(scope="module")
def ring100():
    return fk.HashRing(NODES100)


@pytest.fixture(scope="module")
def hashes_1m(keys_1m):
    return fk.hash64_many(keys_1m)


# -- per call ------------------------------------------------------------------

G_GET = "ring: get(str), 100 nodes, 1,000 keys a round"


@pytest.mark.benchmark(group=G_GET)
def test_faultkit_ring_get(benchmark, ring100, keys_small):
    get = ring100.get

    def run():
        for k in keys_small:
            get(k)

    benchmark(run)


@pytest.mark.benchmark(group=G_GET)
def test_faultkit_ketama_get(benchmark, keys_small):
    get = fk.HashRing.ketama(NODES100).get

    def run():
        for k in keys_small:
            get(k)

    benchmark(run)


@pytest.mark.benchmark(group=G_GET)
def test_xxhash_encode_then_hash_alone(benchmark, keys_small):
    def run():
        for k in keys_small:
            xxh3(k.encode())

    benchmark(run)


@pytest.mark.benchmark(group=G_GET)
def test_uhashring_get_node(benchmark, keys_small):
    get = uhashring.HashRing(NODES100).get_node

    def run():
        for k in keys_small:
            get(k)

    benchmark(run)


@pytest.mark.benchmark(group=G_GET)
def test_uhashring_ketama_get_node(benchmark, keys_small):
    get = uhashring.HashRing(NODES100, hash_fn="ketama").get_node

    def run():
        for k in keys_small:
            get(k)

    benchmark(run)


# -- bulk ----------------------------------------------------------------------

G_STR = "ring: 1M str keys, bulk"


@pytest.mark.benchmark(group=G_STR)
def test_faultkit_ring_get_many_str(benchmark, ring100, keys_1m):
    out = benchmark(ring100.get_many, keys_1m)
    assert out.shape == (len(keys_1m),)


@pytest.mark.benchmark(group=G_STR)
def test_faultkit_hash64_many_same_keys(benchmark, keys_1m):
    benchmark(fk.hash64_many, keys_1m)


G_U64 = "ring: 1M uint64 hashes, bulk"


@pytest.mark.benchmark(group=G_U64)
def test_faultkit_ring_get_many_hashes(benchmark, ring100, hashes_1m):
    out = benchmark.pedantic(ring100.get_many, (hashes_1m,), **BULK)
    points, owners = ring100.points()
    assert (out == owners[np.searchsorted(points, hashes_1m) % len(points)]).all()


@pytest.mark.benchmark(group=G_U64)
def test_numpy_searchsorted_ring_points(benchmark, ring100, hashes_1m):
    points, _ = ring100.points()
    benchmark.pedantic(np.searchsorted, (points, hashes_1m), **BULK)


@pytest.mark.benchmark(group=G_U64)
def test_faultkit_maglev_get_many_hashes(benchmark, hashes_1m):
    benchmark.pedantic(fk.Maglev(NODES100).get_many, (hashes_1m,), **BULK)


@pytest.mark.benchmark(group=G_U64)
def test_faultkit_maglev_get_many_hashes_one_down(benchmark, hashes_1m):
    # 1 node of 100 down: its ~1% of keys walk on to the next live slot.
    ml = fk.Maglev(NODES100)
    before = ml.get_many(hashes_1m)
    ml.mark_down(NODES100[0])
    out = benchmark.pedantic(ml.get_many, (hashes_1m,), **BULK)
    assert (out[before != 0] == before[before != 0]).all() and (out != 0).all()


@pytest.mark.benchmark(group=G_U64)
def test_faultkit_rendezvous_get_many_hashes(benchmark, hashes_1m):
    r = fk.Rendezvous(NODES100)
    benchmark.pedantic(r.get_many, (hashes_1m,), **BULK)


# -- membership ------------------------------------------------------------------

G_BUILD = "ring: build 1,000 nodes x 160 vnodes"


@pytest.mark.benchmark(group=G_BUILD)
def test_faultkit_ring_build_1000(benchmark):
    ring = benchmark.pedantic(fk.HashRing, (NODES1000,), **BULK)
    assert ring.num_points == 160_000


@pytest.mark.benchmark(group=G_BUILD)
def test_uhashring_build_1000(benchmark):
    benchmark.pedantic(uhashring.HashRing, (NODES1000,), **BULK)


G_ADD = "ring: add + remove one node on a 1,000-node ring"


@pytest.mark.benchmark(group=G_ADD)
def test_faultkit_ring_add_remove(benchmark):
    ring = fk.HashRing(NODES1000)

    def run():
        ring.add("10.9.9.9:11211")
        ring.remove("10.9.9.9:11211")

    benchmark.pedantic(run, **BULK)
    assert len(ring) == 1000


@pytest.mark.benchmark(group=G_ADD)
def test_uhashring_add_remove(benchmark):
    ring = uhashring.HashRing(NODES1000)

    def run():
        ring.add_node("10.9.9.9:11211")
        ring.remove_node("10.9.9.9:11211")

    benchmark.pedantic(run, **BULK)


G_JUMP = "jump: 1M uint64 keys, 1,000 buckets"


@pytest.mark.benchmark(group=G_JUMP)
def test_faultkit_jump_hash_array(benchmark, hashes_1m):
    benchmark.pedantic(fk.jump_hash, (hashes_1m, 1000), **BULK)


@pytest.mark.benchmark(group=G_JUMP)
def test_jump_package_per_key(benchmark, hashes_1m):
    keys = hashes_1m.tolist()
    h = jump.hash
    # A Python loop over the package's per-key call: mostly interpreter overhead, which is
    # what a user of the package pays for a batch (it has no array call); not kernel speed.
    benchmark.pedantic(lambda: [h(k, 1000) for k in keys], **BULK)
