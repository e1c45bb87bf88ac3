// Private to the ring's .cc files (ring_build.cc, ring_snapshot.cc,
// ring_writer.cc): the directory sizing rules, the segment allocator and
// builder (a friend of RingSegment), and the bookkeeping a change shares
// with a fresh build.  See ring.h and docs/ring.md.
#pragma once

#include <algorithm>
#include <atomic>
#include <cstring>
#include <new>
#include <stdexcept>
#include <vector>

#include "faultkit/balance/ring.h"
#include "faultkit/balance/ring_points.h"

namespace faultkit {
namespace ring_detail {

constexpr uint64_t kTop = ~uint64_t{0};
// Directory bits: the fewest in [1, kMaxDirBits] giving at most kTargetAvg
// points a segment on average, so a segment's 128 local buckets hold about
// a third of a point each.  ~39 points a segment at 1,000 x 160 points
// (4,096 segments): a one-node change then writes ~160 segments of ~0.9 KiB
// and a 32 KiB directory (the two costs are of the same order there).
constexpr int kMaxDirBits = 16;
constexpr uint32_t kTargetAvg = 48;
// A change that leaves the average outside [kShrinkAvg, kGrowAvg] re-chooses
// the bits and rebuilds every segment (amortized: the size must double or
// halve between two such rebuilds).  At kGrowAvg a bucket holds 0.75 points.
constexpr uint32_t kGrowAvg = 96;
constexpr uint32_t kShrinkAvg = 8;

inline int choose_bits(size_t points) {
    int bits = 1;
    while (bits < kMaxDirBits && points > (size_t{kTargetAvg} << bits)) ++bits;
    return bits;
}

inline bool point_less(uint64_t pa, int32_t oa, uint64_t pb, int32_t ob, bool high_first) {
    return pa < pb || (pa == pb && (high_first ? oa > ob : oa < ob));
}

// At most this many points on one ring (positions are uint32).
constexpr size_t kMaxRingPoints = 0xFFFFFFF0u;

}  // namespace ring_detail

// A block of segments from one fresh build; segments in it are retired
// one by one (by any thread), and the last one frees the block.
struct alignas(16) Arena {
    std::atomic<uint32_t> live{0};
};

// Allocation and construction of segments (a friend of RingSegment).
// `gshift` is the snapshot's: a point's local bucket is (p >> gshift) & mask.
class SegmentBuilder {
public:
    static constexpr uint32_t kNb = RingSegment::kBuckets;
    // Whether this CPU runs sort_small64 (AVX-512 F and BW).
    static bool sort_simd() noexcept { return ring_points::simd_available(); }
    static uint32_t bucket(uint64_t point, int gshift) noexcept {
        return static_cast<uint32_t>((point >> gshift) & (kNb - 1));
    }
    // Bytes of a segment of `count` points (a multiple of 16).
    static size_t bytes(uint32_t count) noexcept {
        return RingSegment::kRecordsOffset + (size_t{count} + 1) * sizeof(RingPoint);
    }
    static RingSegment* place(void* mem, uint32_t count, Arena* arena) noexcept {
        RingSegment* s = static_cast<RingSegment*>(mem);
        s->count_ = count;
        s->unused_ = 0;
        s->arena_ = arena;
        return s;
    }
    static void check(uint32_t count) {
        if (count > RingSegment::kMaxPoints)
            throw std::overflow_error("more than 65535 ring points in one segment");
    }
    // A segment of `count` points in its own allocation; records and index
    // uninitialized.
    static RingSegment* alloc(uint32_t count) {
        check(count);
        return place(::operator new(bytes(count)), count, nullptr);
    }
    // Segments of the given sizes (all > 0) in one allocation, freed when
    // the last of them is (a fresh build allocates once, not per segment).
    static void alloc_many(const uint32_t* counts, size_t n, RingSegment** out) {
        if (n == 0) return;  // no block: nothing would ever free it
        size_t total = sizeof(Arena);
        for (size_t i = 0; i < n; ++i) {
            check(counts[i]);
            total += bytes(counts[i]);
        }
        char* mem = static_cast<char*>(::operator new(total));
        Arena* arena = new (mem) Arena{};
        arena->live.store(static_cast<uint32_t>(n), std::memory_order_relaxed);
        char* at = mem + sizeof(Arena);
        for (size_t i = 0; i < n; ++i) {
            out[i] = place(at, counts[i], arena);
            at += bytes(counts[i]);
        }
    }

    static void free(const RingSegment* s) noexcept {
        if (s == nullptr || s == empty()) return;
        Arena* a = s->arena_;
        if (a == nullptr) {
            ::operator delete(const_cast<RingSegment*>(s));
        } else if (a->live.fetch_sub(1, std::memory_order_acq_rel) == 1) {
            a->~Arena();
            ::operator delete(static_cast<void*>(a));
        }
    }

    static RingPoint* records(RingSegment* s) noexcept {
        return const_cast<RingPoint*>(s->records());
    }
    static uint16_t* index(RingSegment* s) noexcept { return const_cast<uint16_t*>(s->index()); }

    // Local index and sentinel (owner 0: relink or the caller sets it) of a
    // segment whose records are sorted.
    static void finish(RingSegment* s, int gshift) noexcept {
        RingPoint* r = records(s);
        count_index(s, r, gshift);
        r[s->count()] = {ring_detail::kTop, 0};
    }
    // idx[b] = number of points of `src` in buckets below b (idx[kNb] = count).
    static void count_index(RingSegment* s, const RingPoint* src, int gshift) noexcept {
        uint16_t* idx = index(s);
        const uint32_t n = s->count();
        std::memset(idx, 0, (size_t{kNb} + 1) * sizeof(uint16_t));
        for (uint32_t i = 0; i < n; ++i) ++idx[bucket(src[i].point, gshift) + 1];
        prefix_sums(idx);
    }
    // Running sums of idx[1..kNb], four uint16 lanes at a time (kNb is a
    // multiple of 4: the last entry, idx[kNb], is done alone).
    static void prefix_sums(uint16_t* idx) noexcept {
        uint64_t carry = 0;  // the running total: one add a group on its chain
        uint32_t b = 1;
        for (; b + 4 <= kNb + 1; b += 4) {
            uint64_t x;
            std::memcpy(&x, idx + b, 8);
            x += x << 16;
            x += x << 32;
            const uint64_t total = x >> 48;
            x += carry * 0x0001000100010001ull;
            std::memcpy(idx + b, &x, 8);
            carry += total;
        }
        for (uint16_t run = static_cast<uint16_t>(carry); b <= kNb; ++b)
            idx[b] = run = static_cast<uint16_t>(run + idx[b]);
    }

    // A changed segment's index from the old one's: copy it, then shift the
    // starts past each added (delta +1) or removed (delta -1) point.
    static void copy_index(RingSegment* s, const RingSegment* old) noexcept {
        std::memcpy(index(s), old->index(), (size_t{kNb} + 1) * sizeof(uint16_t));
    }
    static void shift_index(RingSegment* s, uint64_t point, int delta, int gshift) noexcept {
        uint16_t* idx = index(s);
        const uint16_t d = static_cast<uint16_t>(delta);
        for (uint32_t b = bucket(point, gshift) + 1; b <= kNb; ++b)
            idx[b] = static_cast<uint16_t>(idx[b] + d);
    }

    // Sort a segment's records in place (ring_build.cc).
    static void sort_in_place(RingSegment* s, int gshift, bool high_first,
                              std::vector<RingPoint>& big, bool simd);

    // The segment of the empty ring (never freed; no lookup reaches it).
    static const RingSegment* empty() noexcept {
        static const RingSegment* const e = [] {
            RingSegment* s = alloc(0);
            finish(s, 0);
            return s;
        }();
        return e;
    }
    // A segment for an empty hash range: a zero index and the sentinel.
    static RingSegment* stub(int32_t next_owner) {
        RingSegment* s = alloc(0);
        finish(s, 0);
        records(s)[0].owner = next_owner;
        return s;
    }
    // A copy of old (its own allocation) with the sentinel's owner changed.
    static RingSegment* resentinel(const RingSegment* old, int32_t next_owner) {
        RingSegment* s = alloc(old->count());
        std::memcpy(reinterpret_cast<char*>(s) + RingSegment::kIndexOffset,
                    reinterpret_cast<const char*>(old) + RingSegment::kIndexOffset,
                    bytes(old->count()) - RingSegment::kIndexOffset);  // index and records
        records(s)[s->count()].owner = next_owner;
        return s;
    }
    static int32_t sentinel(const RingSegment* s) noexcept {
        return s->records()[s->count()].owner;
    }
    static void set_sentinel(RingSegment* s, int32_t owner) noexcept {
        records(s)[s->count()].owner = owner;
    }
};

namespace ring_detail {

// New segments of a change not yet published: freed if the change throws.
struct Built {
    std::vector<const RingSegment*> segs;
    bool committed = false;
    ~Built() {
        if (!committed)
            for (const RingSegment* s : segs) SegmentBuilder::free(s);
    }
};

// The owner of the first point at or after segment i, wrapping (the ring
// must have a point).
inline int32_t first_owner_from(const std::vector<const RingSegment*>& dir, uint32_t i) {
    const uint32_t mask = static_cast<uint32_t>(dir.size()) - 1;
    while (dir[i]->count() == 0) i = (i + 1) & mask;
    return dir[i]->records()[0].owner;
}

}  // namespace ring_detail
}  // namespace faultkit
