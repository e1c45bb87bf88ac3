"""fk.HashRing's segmented table (docs/ring.md): segment boundaries, wrap-around
past empty segments, exact points, tiny rings, changes inside one segment, and
how many segments a change rewrites (a complexity check, not a timing)."""
import numpy as np
import pytest
import xxhash

import faultkit as fk
from concurrency import race
from ring_ref import MASK64, RefRing


def node_points(name, count=1, seed=0):
    """The ring's points of a node (the rule RefRing documents)."""
    node_seed = xxhash.xxh3_64_intdigest(name.encode(), seed)
    return [xxhash.xxh3_64_intdigest(j.to_bytes(8, "little"), node_seed) for j in range(count)]


def names_where(pred, count, prefix="n"):
    """The first `count` names f"{prefix}{i}" whose single point satisfies pred."""
    out = []
    i = 0
    while len(out) < count:
        name = f"{prefix}{i}"
        if pred(node_points(name)[0]):
            out.append(name)
        i += 1
    return out


def dir_bits(ring):
    segments = ring._segment_stats()[0]
    bits = segments.bit_length() - 1
    assert segments == 1 << bits
    return bits


def check_probes(ring, ref, probes):
    probes = [p & MASK64 for p in probes]
    expect = [ref.get_index(p) for p in probes]
    assert ring.get_many(np.array(probes, dtype=np.uint64)).tolist() == expect
    assert [ring.index(ring.get_hash(p)) for p in probes] == expect


def test_segment_boundaries_exact_points_and_neighbours():
    nodes = [f"10.2.0.{i}:6379" for i in range(50)]
    ring = fk.HashRing(nodes, seed=9)
    ref = RefRing(nodes, seed=9)
    bits = dir_bits(ring)
    assert 2 ** bits < len(ref.points)  # several points a segment
    edges = [b << (64 - bits) for b in range(2 ** bits)]
    probes = [e + d for e in edges for d in (-1, 0, 1)]
    probes += [p + d for p in ref.points for d in (-1, 0, 1)]  # exactly at a point, and beside it
    probes += [0, 1, MASK64, MASK64 - 1]
    check_probes(ring, ref, probes)
    got_points, got_owners = ring.points()
    assert got_points.tolist() == ref.points and got_owners.tolist() == ref.owners


def test_empty_segments_at_the_end_wrap_to_the_first_point():
    # 100 single-point nodes, every point in the lowest quarter of the hash
    # space: the ring has 4 segments, the top three empty, so keys above the
    # last point cross a run of empty segments and wrap to the first point.
    nodes = names_where(lambda p: p < 1 << 62, 100)
    ring = fk.HashRing(nodes, vnodes=1)
    ref = RefRing(nodes, vnodes=1)
    assert dir_bits(ring) == 2 and ref.points[-1] < 1 << 62
    first_owner = ref.owners[0]
    tops = [ref.points[-1] + 1, 1 << 62, (1 << 62) + 5, 1 << 63, 3 << 62, MASK64]
    assert set(ring.get_many(np.array(tops, dtype=np.uint64)).tolist()) == {first_owner}
    check_probes(ring, ref, tops + [0, ref.points[0], ref.points[-1]])
    # failover walks cross the empty run too
    ring.mark_down(nodes[first_owner])
    ref.alive[first_owner] = False
    check_probes(ring, ref, tops)
    assert ring.get_n(b"k", 3) == ref.get_n(b"k", 3)


def test_a_crowded_segment_and_bucket_in_a_fresh_build():
    # 300 single-point nodes all in the lowest of the ring's 8 segments (a
    # segment of more than 256 points, past the build's stack buffer), 40 of
    # them in its lowest local bucket (a bucket sorted at once, not by
    # insertion): the build still equals the reference, point for point.
    crowd = names_where(lambda p: p < 1 << 54, 40, prefix="q")
    rest = names_where(lambda p: 1 << 54 <= p < 1 << 61, 260, prefix="r")
    nodes = crowd + rest
    ring = fk.HashRing(nodes, vnodes=1)
    ref = RefRing(nodes, vnodes=1)
    assert dir_bits(ring) == 3 and ref.points[-1] < 1 << 61
    got_points, got_owners = ring.points()
    assert got_points.tolist() == ref.points and got_owners.tolist() == ref.owners
    check_probes(ring, ref, [p + d for p in ref.points for d in (-1, 0, 1)] + [0, MASK64])


@pytest.mark.parametrize("crowded", [255, 256])
def test_a_full_segment_at_the_byte_counter_limit(crowded):
    # The build counts a segment's buckets in bytes up to 255 points and
    # takes the general path above: one segment of 255 (then 256) points, 40
    # of them in one local bucket (sorted at once), 5 in the next (insertion
    # sort) and the rest spread out, with 45 points in the other segments.
    crowd = names_where(lambda p: p < 1 << 54, 40, prefix="c")
    five = names_where(lambda p: 1 << 54 <= p < 1 << 55, 5, prefix="f")
    spread = names_where(lambda p: 1 << 55 <= p < 1 << 61, crowded - 45, prefix="s")
    rest = names_where(lambda p: p >= 1 << 61, 45, prefix="t")
    nodes = crowd + five + spread + rest
    ring = fk.HashRing(nodes, vnodes=1)
    ref = RefRing(nodes, vnodes=1)
    assert dir_bits(ring) == 3 and sum(p < 1 << 61 for p in ref.points) == crowded
    got_points, got_owners = ring.points()
    assert got_points.tolist() == ref.points and got_owners.tolist() == ref.owners
    check_probes(ring, ref, [p + d for p in ref.points for d in (-1, 0, 1)] + [0, MASK64])


@pytest.mark.parametrize("crowded", [64, 65])
def test_a_segment_all_in_one_bucket_at_the_vector_sort_limit(crowded):
    # Fresh builds sort segments of at most 64 points with AVX-512 where the
    # CPU has it, and larger ones with byte counters: a segment of 64 (then
    # 65) points all in its lowest local bucket (sorted at once), built with
    # and without the vector kernels, equals the reference.
    crowd = names_where(lambda p: p < 1 << 54, crowded, prefix="b")
    rest = names_where(lambda p: p >= 1 << 61, 45, prefix="t")
    nodes = crowd + rest
    ref = RefRing(nodes, vnodes=1)
    for simd in (False, True):
        ring = fk.HashRing(vnodes=1)
        ring._set_simd(simd)
        ring.add_many(nodes)
        assert dir_bits(ring) == 2  # segment 0 holds the crowd and nothing else
        got_points, got_owners = ring.points()
        assert got_points.tolist() == ref.points and got_owners.tolist() == ref.owners
        check_probes(ring, ref, [p + d for p in ref.points for d in (-1, 0, 1)] + [0, MASK64])


def test_a_ring_of_one_point():
    ring = fk.HashRing(["solo"], vnodes=1)
    assert ring.num_points == 1 and len(ring) == 1
    (p,), _ = ring.points()
    p = int(p)
    for h in (0, p - 1, p, p + 1, MASK64):
        assert ring.get_hash(h & MASK64) == "solo"
    assert ring.get("any key") == "solo" and ring.get_n("k", 1) == ["solo"]
    assert ring.distribution() == {"solo": 1.0}
    ring.mark_down("solo")
    with pytest.raises(fk.NoLiveNodeError):
        ring.get("k")
    ring.mark_up("solo")
    ring.remove("solo")
    with pytest.raises(fk.EmptyRingError):
        ring.get("k")
    ring.add("again")
    assert ring.get("k") == "again"


def test_changes_inside_one_segment():
    # Nodes whose single points share a segment with the first node's point:
    # adding and removing them rewrites that segment alone, and the ring stays
    # equal to a fresh build of the same members.
    base = [f"b{i}" for i in range(200)]
    ring = fk.HashRing(base, vnodes=1)
    bits = dir_bits(ring)
    seg = node_points(base[0])[0] >> (64 - bits)
    crowd = names_where(lambda p: p >> (64 - bits) == seg, 6, prefix="c")
    members = list(base)
    for name in crowd:
        ring.add(name)
        members.append(name)
        assert 1 <= ring._segment_stats()[1] <= 2  # that segment (and its predecessor's sentinel)
        ref = RefRing(members, vnodes=1)
        check_probes(ring, ref, [p + d for p in ref.points for d in (-1, 0, 1)])
    for name in crowd[::2] + [base[0]]:
        ring.remove(name)
        members.remove(name)
        assert ring._segment_stats()[1] <= 2
        ref = RefRing(members, vnodes=1)
        check_probes(ring, ref, [p + d for p in ref.points for d in (-1, 0, 1)] + [0, MASK64])
    assert ring.nodes == members


def expected_writes(old_points, new_points, bits):
    """Segments a one-node change writes: those its points land in, plus the
    previous nonempty segment of each whose first point changes (its
    sentinel names the owner of that first point), unless written anyway."""
    seg = lambda p: p >> (64 - bits)
    touched = {seg(p) for p in new_points}
    nonempty = sorted({seg(p) for p in old_points} | touched)
    first_old = {}
    for p in sorted(old_points, reverse=True):
        first_old[seg(p)] = p
    extra = set()
    for t in touched:
        if t in first_old and min(p for p in new_points if seg(p) == t) > first_old[t]:
            continue  # its first point stays
        prev = nonempty[nonempty.index(t) - 1]  # wraps to the last one
        if prev not in touched:
            extra.add(prev)
    return len(touched) + len(extra)


def test_one_node_change_rewrites_only_its_segments():
    nodes = [f"10.3.{i // 250}.{i % 250}:11211" for i in range(300)]
    ring = fk.HashRing(nodes)
    segments = ring._segment_stats()[0]
    bits = dir_bits(ring)
    assert segments >= 1024
    old = ring.points()[0].tolist()
    new = node_points("newcomer", 160)
    want = expected_writes(old, new, bits)
    assert len({p >> (64 - bits) for p in new}) <= want < 200  # of >= 1024 segments
    ring.add("newcomer")
    assert ring._segment_stats()[:2] == (segments, want)
    ring.remove("newcomer")
    assert ring._segment_stats()[:2] == (segments, want)
    fresh = fk.HashRing(nodes)
    h = np.random.default_rng(3).integers(0, 2**64 - 1, 50_000, dtype=np.uint64, endpoint=True)
    assert (ring.get_many(h) == fresh.get_many(h)).all()


def test_slots_are_renumbered_after_many_changes():
    # Each add issues a new slot; once dead slots outnumber live ones the
    # ring renumbers them, and routing is unchanged throughout.
    nodes = [f"s{i}" for i in range(20)]
    ring = fk.HashRing(nodes, vnodes=40)
    fresh = fk.HashRing(nodes, vnodes=40)
    h = np.random.default_rng(4).integers(0, 2**64 - 1, 20_000, dtype=np.uint64, endpoint=True)
    want = fresh.get_many(h)
    most = 0
    for i in range(150):
        ring.add(f"t{i}")
        ring.remove(f"t{i}")
        most = max(most, ring._segment_stats()[2])
    assert most <= 2 * 20 + 64 + 1
    assert ring.nodes == nodes and (ring.get_many(h) == want).all()
    ring.remove("s0")
    ring.add("s0")  # back at the end of the node list, with a new slot
    assert ring.nodes == nodes[1:] + ["s0"]
    assert [ring.nodes[i] for i in ring.get_many(h)] == [nodes[i] for i in want]


def test_growing_and_shrinking_reshape_the_directory():
    ring = fk.HashRing(["g0"], vnodes=100)
    small = ring._segment_stats()[0]
    names = [f"g{i}" for i in range(1, 400)]
    for name in names:
        ring.add(name)
    big = ring._segment_stats()[0]
    assert big > small
    fresh = fk.HashRing(["g0"] + names, vnodes=100)
    h = np.random.default_rng(5).integers(0, 2**64 - 1, 20_000, dtype=np.uint64, endpoint=True)
    assert (ring.get_many(h) == fresh.get_many(h)).all()
    ring.remove_many(names[:390])
    assert ring._segment_stats()[0] < big
    fresh = fk.HashRing(["g0"] + names[390:], vnodes=100)
    assert (ring.get_many(h) == fresh.get_many(h)).all()


def test_gil_free_lookups_during_changes_on_a_large_ring():
    # get_many releases the GIL; meanwhile the writer adds and removes a node,
    # retiring ~160 segments a change.  Every result is the ring with or
    # without that node, and the reader's snapshot keeps its segments alive.
    nodes = [f"10.4.{i // 250}.{i % 250}:11211" for i in range(300)]
    ring = fk.HashRing(nodes)
    h = np.random.default_rng(6).integers(0, 2**64 - 1, 100_000, dtype=np.uint64, endpoint=True)
    without = ring.get_many(h)
    ring.add("flapper")
    with_it = ring.get_many(h)
    ring.remove("flapper")
    assert (with_it != without).any()
    bad = []

    def read():
        got = ring.get_many(h)
        if not ((got == without) | (got == with_it)).all():
            bad.append(1)
        if not ((got == without).all() or (got == with_it).all()):
            bad.append(2)  # a mix of the two rings: torn

    def flap(_):
        ring.add("flapper")
        ring.remove("flapper")

    race(read, flap, min_changes=50, min_reads=6, max_changes=20_000)
    assert not bad
    assert (ring.get_many(h) == without).all()
