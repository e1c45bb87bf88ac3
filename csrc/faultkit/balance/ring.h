// The consistent-hash ring as a copy-on-write segmented table.  No Python.
//
// Layout.  A snapshot (RingSnapshot) is a directory of 2^bits entries indexed
// by the top `bits` bits of a hash; each entry points to an immutable segment
// (RingSegment) holding that hash range's sorted points, their owners and a
// small local index over the next bits of the hash, so a lookup is two table
// loads and (mostly) one compare: no binary search.  Owners are *slots*:
// stable node identities that never change while the node is on the ring,
// mapped to the node's current index by the snapshot's slot map, so adding or
// removing a node rewrites only the segments its points fall in (about one
// per point) plus a new directory, not the whole ring.  A key above the last
// point of its segment belongs to the first point of the next nonempty
// segment, wrapping at the top: each segment's sentinel record names that
// owner (an empty hash range has a stub segment holding just the sentinel).
//
// Publication.  A change (SegmentedRing's writer methods) builds new segments
// and a new snapshot, then swaps the writer's shared_ptr to it.  A reader
// copies that shared_ptr once (its only atomic operation) and uses only that
// snapshot, so it sees the old ring or the new one, never a mix.
//
// Reclamation.  Segments are not reference-counted (a change would otherwise
// pay an atomic increment per directory entry).  A segment replaced by change
// v+1 is referenced only by snapshots v and older, so it is put in the
// RetiredSegments link that snapshot v holds (snapshot v holds link v+1, which
// holds link v+2, ...).  A link, and the segments in it, is freed when the
// last snapshot of version < its own is gone, by whichever thread drops that
// snapshot.  The writer's current segments go into the last link when the
// writer is destroyed.  See docs/ring.md.
//
// Liveness is separate: `alive` is one byte per node index (nonzero = up), or
// null when every node is up.  A lookup that lands on a down node walks on to
// the next point whose node is up.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <vector>

namespace faultkit {

// A point to place on the ring: its position and the slot that owns it.
struct RingPoint {
    uint64_t point;
    int32_t owner;
};

// One hash range's points: immutable once published.  One allocation: this
// header; a local index of kBuckets + 1 uint16 bucket starts over the next
// kLocalBits bits of the hash; the records {point, owner} sorted; then a
// sentinel record {UINT64_MAX, owner of the first point after this segment,
// wrapping}.  Every offset is a constant, so a lookup needs no field of the
// segment before its index; a point and its owner share a cache line; and a
// key above the segment's last point reads the sentinel's owner, with no
// branch for the wrap.  An empty hash range has a segment of its own too
// (count 0: a zero index and the sentinel).
class RingSegment {
public:
    // Local index: 128 buckets, about half a point each when a segment holds
    // its target ~48 points (see ring_internal.h); a crowded bucket is scanned, and
    // above kMaxScan points bisected.
    static constexpr int kLocalBits = 7;
    static constexpr uint32_t kBuckets = uint32_t{1} << kLocalBits;
    static constexpr uint32_t kMaxScan = 16;
    // Points in one segment: index entries are uint16.
    static constexpr uint32_t kMaxPoints = 65535;
    static constexpr size_t kIndexOffset = 16;
    static constexpr size_t kRecordsOffset =
        kIndexOffset + (((kBuckets + 1) * sizeof(uint16_t) + 15) & ~size_t{15});

    uint32_t count() const noexcept { return count_; }
    const uint16_t* index() const noexcept {
        return reinterpret_cast<const uint16_t*>(reinterpret_cast<const char*>(this) +
                                                 kIndexOffset);
    }
    const RingPoint* records() const noexcept {
        return reinterpret_cast<const RingPoint*>(reinterpret_cast<const char*>(this) +
                                                  kRecordsOffset);
    }

    // First position i with records()[i].point >= h, or count() if none is;
    // b is h's local bucket.
    inline uint32_t position(uint32_t b, uint64_t h) const noexcept {
        const uint16_t* idx = index();
        const uint32_t lo = idx[b];
        const uint32_t n = uint32_t{idx[b + 1]} - lo;
        const RingPoint* p = records() + lo;
        // p[0] is the bucket's first point or, in an empty bucket, a later
        // one (or the sentinel), so one compare decides a bucket of 0 or 1.
        if (n <= 1) return lo + (p[0].point < h);
        if (n <= kMaxScan) {
            uint32_t k = 0;
            for (uint32_t j = 0; j < n; ++j) k += p[j].point < h;
            return lo + k;
        }
        return bisect(lo, lo + n, h);
    }

private:
    friend class SegmentBuilder;
    uint32_t bisect(uint32_t lo, uint32_t hi, uint64_t h) const noexcept;

    uint32_t count_;
    uint32_t unused_;
    struct Arena* arena_;  // the block it was built in with others, or null if alone
};
static_assert(sizeof(RingSegment) == RingSegment::kIndexOffset && sizeof(RingPoint) == 16,
              "segment layout");

// Segments retired by one change, freed with the last snapshot that can see
// them (see the top of this file).
struct RetiredSegments {
    std::vector<const RingSegment*> segs;
    std::shared_ptr<RetiredSegments> next;
    ~RetiredSegments();
};

// One immutable version of the ring.  Lookups are const and allocate nothing.
class RingSnapshot {
public:
    uint32_t size() const noexcept { return size_; }
    int bits() const noexcept { return bits_; }
    uint32_t segments() const noexcept { return uint32_t{1} << bits_; }
    const RingSegment* const* directory() const noexcept { return dir_.data(); }
    // Slots ever issued since the last renumbering (the slot map's length).
    int32_t slots() const noexcept { return static_cast<int32_t>(slot_index_.size()); }
    // Node index of a slot (-1 for a slot whose node was removed).
    int32_t slot_index(int32_t slot) const noexcept {
        return slot >= 0 && slot < slots() ? slot_index_[slot] : -1;
    }

    // The node index owning the first point >= h, wrapping.  Requires size() > 0.
    inline int32_t owner(uint64_t h) const noexcept {
        const uint64_t g = h >> gshift_;  // segment and local bucket
        const RingSegment* seg = dir_[g >> RingSegment::kLocalBits];
        const uint32_t b = static_cast<uint32_t>(g & (RingSegment::kBuckets - 1));
        const int32_t s = seg->records()[seg->position(b, h)].owner;
        if (identity_) return s;  // no node removed since slots were numbered
        return slot_index_[s];
    }

    // The first live node at or after h (-1 if none); alive null = all up.
    int32_t live_owner(uint64_t h, const uint8_t* alive) const noexcept;

    // Up to n distinct live nodes in ring order from the first point >= h,
    // written to out; returns how many were found.  `seen` is caller scratch
    // of one zeroed byte per node (restored to zero on return), or null to
    // check duplicates by scanning `out` (fine for small n).
    int32_t live_owners_n(uint64_t h, const uint8_t* alive, int32_t n, int32_t* out,
                          uint8_t* seen) const noexcept;

    // Owners of many hashes (-1 where no node is up or the ring is empty).
    void live_owner_many(const uint64_t* hashes, size_t count, const uint8_t* alive,
                         int32_t* out) const noexcept;

    // Share of the 2^64 keyspace each node serves, with down nodes' arcs
    // given to the live node that serves them; out has n_nodes entries.
    void distribution(const uint8_t* alive, int32_t n_nodes, double* out) const;

    // The sorted points and their owners' node indices, size() of each.
    void export_points(uint64_t* points, int32_t* owners) const noexcept;

private:
    friend class SegmentedRing;
    struct Cursor {
        uint32_t seg, pos;
    };
    Cursor locate(uint64_t h) const noexcept;
    // The first nonempty segment after i, wrapping (requires size() > 0).
    uint32_t next_nonempty(uint32_t i) const noexcept {
        const uint32_t mask = segments() - 1;
        do i = (i + 1) & mask;
        while (dir_[i]->count() == 0);
        return i;
    }
    int32_t slot_at(Cursor c) const noexcept { return dir_[c.seg]->records()[c.pos].owner; }
    void advance(Cursor& c) const noexcept {
        if (++c.pos == dir_[c.seg]->count()) c = {next_nonempty(c.seg), 0};
    }
    int32_t node_at(Cursor c) const noexcept { return slot_index(slot_at(c)); }

    void set_slot_index(std::vector<int32_t> m) noexcept {
        slot_index_ = std::move(m);
        identity_ = true;
        for (size_t s = 0; s < slot_index_.size(); ++s)
            identity_ &= slot_index_[s] == static_cast<int32_t>(s);
    }

    std::vector<const RingSegment*> dir_;
    std::vector<int32_t> slot_index_;
    bool identity_ = true;  // slot_index_[s] == s for every slot
    std::shared_ptr<RetiredSegments> retired_;  // what changes after this one retire
    uint32_t size_ = 0;
    int bits_ = 1;
    int shift_ = 63;  // segment = h >> shift_
    int gshift_ = 56;  // segment and local bucket = h >> gshift_ (shift_ - kLocalBits)
};

// The writer: builds snapshots and publishes them.  Writer methods take an
// internal mutex (one change at a time); snapshot() may be called from any
// thread.  Owners of points are slots in [0, slot_index.size()); every
// method gets the full new slot -> node index map (-1 = no node), published
// with the new points in one snapshot, and returns that snapshot.  Methods
// throw std::invalid_argument on a bad slot, std::overflow_error on too many
// points and std::bad_alloc on memory; the published ring is then unchanged.
class SegmentedRing {
public:
    SegmentedRing();
    ~SegmentedRing();
    SegmentedRing(const SegmentedRing&) = delete;
    SegmentedRing& operator=(const SegmentedRing&) = delete;

    std::shared_ptr<RingSnapshot> snapshot() const;

    // Replace the whole ring with `pts` (any order).  Equal points are
    // ordered by owner slot, ascending, or descending when high_owner_first
    // (ketama's "last node written wins"); later add()s use the same rule.
    std::shared_ptr<RingSnapshot> assign(std::vector<RingPoint>& pts, bool high_owner_first,
                                         std::vector<int32_t> slot_index);
    // assign() of the XXH3 ring's points of n nodes (ring_node_points of
    // names[k], name_lens[k] bytes, with counts[k] points owned by slot k),
    // hashed and counted here in one pass instead of handed over.
    std::shared_ptr<RingSnapshot> assign_xxh3(const char* const* names, const size_t* name_lens,
                                              const uint32_t* counts, size_t n, uint64_t seed,
                                              std::vector<int32_t> slot_index);
    // Add `pts` (any order) whose owners are slots above every slot on the
    // ring; at an equal point they go after the old points (before them when
    // high_owner_first).  Rewrites only the segments they fall in.
    std::shared_ptr<RingSnapshot> add(std::vector<RingPoint>& pts, std::vector<int32_t> slot_index);
    // Remove every point whose owner slot has drop[slot] != 0 (drop has
    // slots() entries of the current snapshot).  `hint` lists the points to
    // remove (any order); only their segments are rewritten, unless some
    // dropped owner has points the hint missed, which a full pass then finds.
    std::shared_ptr<RingSnapshot> remove(const std::vector<RingPoint>& hint, const uint8_t* drop,
                                         size_t drop_len, std::vector<int32_t> slot_index);
    // Rewrite every owner slot s as remap[s] (remap has slots() entries,
    // each >= 0 and order-preserving), e.g. to renumber slots densely.
    std::shared_ptr<RingSnapshot> renumber(const int32_t* remap, size_t remap_len,
                                           std::vector<int32_t> slot_index);

    // Segments the last change wrote (a complexity probe for tests).
    uint32_t last_written() const noexcept { return last_written_; }
    // Whether fresh builds may use the CPU's vector kernels (AVX-512 point
    // hashing and segment sorting; on by default).  Off runs the portable
    // ones, which give the same ring: for tests of both.
    void set_simd(bool on);

private:
    // A new snapshot sharing cur's directory (its segments) and shape, for a
    // change to edit before publishing it.
    static std::shared_ptr<RingSnapshot> successor(const RingSnapshot& cur);
    void publish(std::shared_ptr<RingSnapshot> next,
                 std::shared_ptr<RetiredSegments> link) noexcept;
    void rebuild_all(std::vector<RingPoint>& pts, std::vector<int32_t> slot_index, bool high_first);
    void rebuild_counted(const RingPoint* pts, size_t n_pts, int bits,
                         const std::vector<uint32_t>& fill, std::vector<uint32_t>& per_slot,
                         std::vector<int32_t> slot_index, bool high_first);
    void collect(const RingSnapshot& s, std::vector<RingPoint>& out) const;

    mutable std::mutex mu_;
    std::shared_ptr<RingSnapshot> cur_;
    std::shared_ptr<RetiredSegments> tail_;  // the link cur_ holds
    bool high_first_ = false;
    uint32_t last_written_ = 0;
    bool simd_ = true;
    std::vector<uint32_t> slot_points_;  // points per slot on the current ring
};

// Points of one node for the XXH3 ring: count points, point j being
// xxh3_64_u64(j, xxh3_64(name, seed)), appended to out with `owner`.
void ring_node_points(const char* name, size_t name_len, uint64_t seed, uint32_t count,
                      int32_t owner, std::vector<RingPoint>& out);

// Points of one node for a ketama (libketama-compatible) ring: for k in
// [0, hashes), MD5("<name>-<k>") gives four 32-bit points (digest bytes
// 4i..4i+3, little-endian), stored as point << 32 so 64-bit lookups keep
// ketama's order.  Appended to out with `owner`.
void ring_ketama_node_points(const char* name, size_t name_len, uint32_t hashes, int32_t owner,
                             std::vector<RingPoint>& out);

}  // namespace faultkit
