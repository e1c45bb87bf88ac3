// The consistent-hash ring: sorted 64-bit points, each owned by a node index,
// plus an index over the top bits of the hash so a lookup is a table load
// and a short branch-free scan instead of a binary search.  No Python.
//
// A RingTable is immutable once built.  Membership changes build a new table
// (by merging or filtering the old one's arrays, never re-hashing the other
// nodes) and the owner swaps a shared_ptr, as Envoy's ring_hash does, so a
// reader holding the old table keeps a consistent view.
//
// Liveness is separate from the table: `alive` is an array of one byte per
// node (nonzero = up), or null when every node is up.  A lookup that lands on
// a down node walks on to the next point whose node is up.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

namespace faultkit {

// A point to place on the ring: its position and the node that owns it.
struct RingPoint {
    uint64_t point;
    int32_t owner;
};

class RingTable {
public:
    // Index buckets are the top `bits` bits of a hash; bits is chosen so a
    // bucket holds about half a point on average (2^bits >= 2P), capped so
    // the index never exceeds 4 MiB.
    static constexpr int kMaxIndexBits = 20;
    // Above this many points in one bucket (only on rings with more than
    // 2^19 points), a bucket is searched by bisection rather than a scan.
    static constexpr uint32_t kMaxScan = 16;

    RingTable() { finish(); }

    // Points sorted by (point, tie order); owners in [0, n_nodes).  The caller
    // guarantees the order (see ring_sort / ring_merge / ring_drop_node).
    RingTable(std::vector<uint64_t> points, std::vector<int32_t> owners)
        : points_(std::move(points)), owners_(std::move(owners)) {
        finish();
    }

    uint32_t size() const noexcept { return size_; }
    const uint64_t* points() const noexcept { return points_.data(); }
    const int32_t* owners() const noexcept { return owners_.data(); }
    int index_bits() const noexcept { return bits_; }
    uint32_t scan_length() const noexcept { return scan_; }

    // First position i with points[i] >= h, or size() when h is above every
    // point (the caller wraps to 0; owners()[size()] == owners()[0]).
    // Requires size() > 0.
    inline uint32_t position(uint64_t h) const noexcept {
        const uint64_t b = h >> shift_;
        const uint32_t lo = index_[b];
        const uint32_t count = index_[b + 1] - lo;
        const uint64_t* p = points_.data() + lo;
        // Most buckets hold 0 or 1 point (a bucket holds half a point on
        // average): one compare decides.  p[0] is the bucket's first point
        // or, in an empty bucket, a later one (>= the next bucket's start > h;
        // past the end it is the UINT64_MAX sentinel), so the compare is
        // right either way.
        if (count <= 1) return lo + (p[0] < h);
        if (count <= kMaxScan) {
            uint32_t n = 0;
            for (uint32_t k = 0; k < count; ++k) n += p[k] < h;
            return lo + n;
        }
        return bisect(lo, lo + count, h);
    }

    // The node owning the first point >= h, wrapping past the top.
    inline int32_t owner(uint64_t h) const noexcept { return owners_[position(h)]; }

    // The first node at or after position `pos` (wrapping) whose alive byte is
    // nonzero; -1 if none is.  `alive` null means every node is up.
    inline int32_t live_owner_from(uint32_t pos, const uint8_t* alive) const noexcept {
        if (pos >= size_) pos = 0;
        if (alive == nullptr) return owners_[pos];
        for (uint32_t step = 0; step < size_; ++step) {
            const int32_t o = owners_[pos];
            if (alive[o]) return o;
            if (++pos == size_) pos = 0;
        }
        return -1;
    }

    inline int32_t live_owner(uint64_t h, const uint8_t* alive) const noexcept {
        const uint32_t pos = position(h);
        if (alive == nullptr) return owners_[pos];
        return live_owner_from(pos, alive);
    }

    // Up to n distinct live nodes in ring order from the first point >= h,
    // written to out; returns how many were found.  `seen` is caller scratch
    // of one zeroed byte per node (restored to zero on return), or null to
    // check duplicates by scanning `out` (fine for small n).
    int32_t live_owners_n(uint64_t h, const uint8_t* alive, int32_t n, int32_t* out,
                          uint8_t* seen) const noexcept;

    // Owners of many hashes (-1 where no node is up).
    void live_owner_many(const uint64_t* hashes, size_t count, const uint8_t* alive,
                         int32_t* out) const noexcept;

    // Share of the 2^64 keyspace each node serves, with down nodes' arcs
    // given to the live node that serves them; out has n_nodes entries.
    void distribution(const uint8_t* alive, int32_t n_nodes, double* out) const noexcept;

private:
    uint32_t bisect(uint32_t lo, uint32_t hi, uint64_t h) const noexcept;
    void finish();

    std::vector<uint64_t> points_;   // size_ points, then one UINT64_MAX
    std::vector<int32_t> owners_;    // size_ owners, then a copy of owners_[0]
    std::vector<uint32_t> index_;    // 2^bits_ + 1 bucket starts
    uint32_t size_ = 0;
    int bits_ = 1;
    int shift_ = 63;
    uint32_t scan_ = 0;
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

// Sort points by point, ties by owner (ascending, or descending when
// high_owner_first: ketama's "last node written wins" rule).
void ring_sort(std::vector<RingPoint>& pts, bool high_owner_first);

// A table from sorted points.
RingTable* ring_from_sorted(const std::vector<RingPoint>& pts);

// A new table: `old` plus sorted `added` points (owners >= every old owner),
// merged in O(P + k).  Ties place the added points after (or, with
// high_owner_first, before) the old ones at the same position.
RingTable* ring_merge(const RingTable& old, const std::vector<RingPoint>& added,
                      bool high_owner_first);

// A new table keeping the points whose owner o has remap[o] >= 0, with owner
// remap[o]; remap has n_nodes entries and must be order-preserving on the
// kept owners (so ties keep their order).  Returns null if an owner of `old`
// is outside [0, n_nodes).
RingTable* ring_remap(const RingTable& old, const int32_t* remap, int32_t n_nodes);

}  // namespace faultkit
