// The segmented consistent-hash ring: building, changing and querying
// snapshots (see ring.h and docs/ring.md).
#include "faultkit/balance/ring.h"

#include <algorithm>
#include <atomic>
#include <cstring>
#include <new>
#include <stdexcept>
#include <string>

#if defined(__SSE2__)
#include <emmintrin.h>
#endif

#include "faultkit/balance/md5.h"
#include "faultkit/balance/ring_points.h"
#include "faultkit/common/xxh3.h"

namespace faultkit {

namespace {

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

int choose_bits(size_t points) {
    int bits = 1;
    while (bits < kMaxDirBits && points > (size_t{kTargetAvg} << bits)) ++bits;
    return bits;
}

bool point_less(uint64_t pa, int32_t oa, uint64_t pb, int32_t ob, bool high_first) {
    return pa < pb || (pa == pb && (high_first ? oa > ob : oa < ob));
}

}  // namespace

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
        r[s->count()] = {kTop, 0};
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

    // Sort a segment's records in place (they are there in any order): a
    // counting pass over the local buckets, whose running sums are the index
    // (count_index), a stable scatter back from a copy, then a sort of each
    // bucket holding several points.  `big` is caller scratch for the copy.
    // Segments of at most kByteCount points (all but crowded ones) take
    // sort_small, the same steps with byte counters, and with `simd` (the
    // CPU has AVX-512 F and BW: sort_simd()) those of at most 64, sort_small64.
    static void sort_in_place(RingSegment* s, int gshift, bool high_first,
                              std::vector<RingPoint>& big, bool simd) {
        const uint32_t n = s->count();
#ifdef FAULTKIT_RING_AVX512
        if (simd && n > 0 && n <= 64) {
            sort_small64(s, gshift, high_first);
            return;
        }
#else
        (void)simd;
#endif
        if (n <= kByteCount) {
            sort_small(s, gshift, high_first);
            return;
        }
        RingPoint* r = records(s);
        const uint16_t* idx = index(s);
        big.assign(r, r + n);
        count_index(s, big.data(), gshift);
        alignas(16) uint16_t cur[kNb];
        std::memcpy(cur, idx, sizeof cur);
        for (const RingPoint& p : big) r[cur[bucket(p.point, gshift)]++] = p;
        for (uint32_t b = 0; b < kNb; ++b)
            if (idx[b + 1] - idx[b] > 1) sort_bucket(r + idx[b], r + idx[b + 1], high_first);
        r[n] = {kTop, 0};
    }

    // Records [lo, hi) of one bucket in ring order: insertion sort, or
    // std::sort for a crowded bucket.
    static void sort_bucket(RingPoint* lo, RingPoint* hi, bool high_first) noexcept {
        const auto less = [high_first](const RingPoint& a, const RingPoint& c) {
            return point_less(a.point, a.owner, c.point, c.owner, high_first);
        };
        if (hi - lo > 32) {
            std::sort(lo, hi, less);
            return;
        }
        for (RingPoint* i = lo + 1; i < hi; ++i) {
            const RingPoint v = *i;
            RingPoint* j = i;
            for (; j > lo && less(v, j[-1]); --j) *j = j[-1];
            *j = v;
        }
    }

    // Segments of at most this many points count their buckets in bytes.
    static constexpr uint32_t kByteCount = 255;

    // Records a and b in order (a before b), without a branch on the data.
    static void order_pair(RingPoint* a, RingPoint* b, bool high_first) noexcept {
        const uint64_t pa = a->point, pb = b->point;
        const uint32_t oa = static_cast<uint32_t>(a->owner), ob = static_cast<uint32_t>(b->owner);
        // point_less(b, a): owners are >= 0, so flipping their bits reverses
        // their order for high_first.
        const uint32_t flip = high_first ? ~uint32_t{0} : 0;
        const bool swap = (pb < pa) | ((pb == pa) & ((ob ^ flip) < (oa ^ flip)));
        const uint64_t p0 = swap ? pb : pa, p1 = swap ? pa : pb;
        const uint32_t o0 = swap ? ob : oa, o1 = swap ? oa : ob;
        a->point = p0;
        a->owner = static_cast<int32_t>(o0);
        b->point = p1;
        b->owner = static_cast<int32_t>(o1);
    }

    // sort_in_place for a segment of at most kByteCount points.  The
    // counting pass notes each point's bucket and its rank among the points
    // before it in that bucket, so the placing pass only reads: a point goes
    // to its bucket's start plus its rank.  Bucket counts are bytes, their
    // running sums (the index) are taken sixteen at a time, and the buckets
    // that got several points are found from the counts, then put in order
    // (a pair without a branch).
    static void sort_small(RingSegment* s, int gshift, bool high_first) noexcept {
        const uint32_t n = s->count();
        RingPoint* r = records(s);
        uint16_t* idx = index(s);
        RingPoint tmp[kByteCount];
        std::memcpy(tmp, r, size_t{n} * sizeof(RingPoint));
        alignas(16) uint8_t cnt[kNb];
        std::memset(cnt, 0, sizeof cnt);
        uint8_t bk[kByteCount], rk[kByteCount];
        for (uint32_t i = 0; i < n; ++i) {
            const uint32_t b = bucket(tmp[i].point, gshift);
            const uint8_t c = cnt[b];
            cnt[b] = static_cast<uint8_t>(c + 1);
            bk[i] = static_cast<uint8_t>(b);
            rk[i] = c;
        }
        uint64_t multi[2];
        exclusive_sums(cnt, idx, multi);
        idx[kNb] = static_cast<uint16_t>(n);
        for (uint32_t i = 0; i < n; ++i) r[cnt[bk[i]] + rk[i]] = tmp[i];
        order_multi(r, idx, multi, high_first);
        r[n] = {kTop, 0};
    }

#ifdef FAULTKIT_RING_AVX512
// GCC 12's AVX-512 intrinsics trip -W(maybe-)uninitialized on their own
// _mm512_undefined_epi32() placeholders.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
#endif
    // Inclusive running sums of 64 bytes (no carries out of a byte).
    __attribute__((target("avx512f,avx512bw"))) static inline __m512i prefix64(
        __m512i x) noexcept {
        const __m512i zero = _mm512_setzero_si512();
        x = _mm512_add_epi8(x, _mm512_bslli_epi128(x, 1));
        x = _mm512_add_epi8(x, _mm512_bslli_epi128(x, 2));
        x = _mm512_add_epi8(x, _mm512_bslli_epi128(x, 4));
        x = _mm512_add_epi8(x, _mm512_bslli_epi128(x, 8));  // within each 16-byte lane
        // Each lane's total (its byte 15) moved one lane up, then summed over
        // the lanes below: what each lane adds.
        __m512i e = _mm512_alignr_epi64(_mm512_shuffle_epi8(x, _mm512_set1_epi8(15)), zero, 6);
        e = _mm512_add_epi8(e, _mm512_alignr_epi64(e, zero, 6));
        e = _mm512_add_epi8(e, _mm512_alignr_epi64(e, zero, 4));
        return _mm512_add_epi8(x, e);
    }

    // sort_small for a segment of at most 64 points (most segments) with
    // AVX-512 (F, BW): the buckets of eight points at a time, the 128
    // running sums in two registers (which also give the index, widened,
    // and the buckets with several points), then the same placing pass.
    __attribute__((target("avx512f,avx512bw"))) static void sort_small64(
        RingSegment* s, int gshift, bool high_first) noexcept {
        const uint32_t n = s->count();  // 1..64
        RingPoint* r = records(s);
        uint16_t* idx = index(s);
        alignas(64) RingPoint tmp[64];
        alignas(64) uint8_t bk[64];
        alignas(64) uint8_t cnt[kNb];
        const __m512i zero = _mm512_setzero_si512();
        _mm512_store_si512(cnt, zero);
        _mm512_store_si512(cnt + 64, zero);
        const __m128i sh = _mm_cvtsi32_si128(gshift);
        const __m512i low7 = _mm512_set1_epi64(kNb - 1);
        const __m512i evens = _mm512_setr_epi64(0, 2, 4, 6, 8, 10, 12, 14);
        for (uint32_t k = 0; k < n; k += 8) {
            const uint32_t left = n - k;  // records k.. that exist
            const __mmask8 ma = static_cast<__mmask8>(left >= 4 ? 0xFF : (1u << (2 * left)) - 1);
            const __mmask8 mb = static_cast<__mmask8>(
                left >= 8 ? 0xFF : left <= 4 ? 0 : (1u << (2 * (left - 4))) - 1);
            const __m512i a = _mm512_maskz_loadu_epi64(ma, r + k);
            const __m512i b = _mm512_maskz_loadu_epi64(mb, r + k + 4);
            _mm512_store_si512(tmp + k, a);
            _mm512_store_si512(tmp + k + 4, b);
            const __m512i p = _mm512_permutex2var_epi64(a, evens, b);
            const __m512i bu = _mm512_and_si512(_mm512_srl_epi64(p, sh), low7);
            _mm_storel_epi64(reinterpret_cast<__m128i*>(bk + k), _mm512_cvtepi64_epi8(bu));
        }
        for (uint32_t i = 0; i < n; ++i) ++cnt[bk[i]];
        const __m512i c0 = _mm512_load_si512(cnt), c1 = _mm512_load_si512(cnt + 64);
        const __m512i one = _mm512_set1_epi8(1);
        const uint64_t multi[2] = {_mm512_cmpgt_epu8_mask(c0, one),
                                   _mm512_cmpgt_epu8_mask(c1, one)};
        const __m512i x0 = prefix64(c0);
        const __m512i top = _mm512_shuffle_epi8(x0, _mm512_set1_epi8(15));  // lane totals
        const __m512i x1 = _mm512_add_epi8(prefix64(c1), _mm512_shuffle_i64x2(top, top, 0xFF));
        const __m512i e0 = _mm512_sub_epi8(x0, c0), e1 = _mm512_sub_epi8(x1, c1);  // exclusive
        _mm512_storeu_si512(idx, _mm512_cvtepu8_epi16(_mm512_castsi512_si256(e0)));
        _mm512_storeu_si512(idx + 32, _mm512_cvtepu8_epi16(_mm512_extracti64x4_epi64(e0, 1)));
        _mm512_storeu_si512(idx + 64, _mm512_cvtepu8_epi16(_mm512_castsi512_si256(e1)));
        _mm512_storeu_si512(idx + 96, _mm512_cvtepu8_epi16(_mm512_extracti64x4_epi64(e1, 1)));
        idx[kNb] = static_cast<uint16_t>(n);
        _mm512_store_si512(cnt, e0);  // the placing cursors
        _mm512_store_si512(cnt + 64, e1);
        for (uint32_t i = 0; i < n; ++i) r[cnt[bk[i]]++] = tmp[i];
        order_multi(r, idx, multi, high_first);
        r[n] = {kTop, 0};
    }
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic pop
#endif
#endif

    // Put each bucket with several points (bit b of multi) in order.
    static void order_multi(RingPoint* r, const uint16_t* idx, const uint64_t* multi,
                            bool high_first) noexcept {
        for (int w = 0; w < 2; ++w) {
            for (uint64_t m = multi[w]; m != 0; m &= m - 1) {
                const uint32_t b = static_cast<uint32_t>(64 * w + __builtin_ctzll(m));
                const uint32_t lo = idx[b], hi = idx[b + 1];
                if (hi - lo == 2)
                    order_pair(r + lo, r + lo + 1, high_first);
                else
                    sort_bucket(r + lo, r + hi, high_first);
            }
        }
    }

    // cnt (kNb byte counts, total <= 255) -> exclusive running sums, in
    // place and widened into idx[0..kNb); bit b of multi (two words) is set
    // where cnt[b] > 1.
    static void exclusive_sums(uint8_t* cnt, uint16_t* idx, uint64_t* multi) noexcept {
#if defined(__SSE2__)
        const __m128i zero = _mm_setzero_si128();
        const __m128i two = _mm_set1_epi8(2);
        __m128i carry = zero;  // the total so far, in every byte
        uint64_t m[2] = {0, 0};
        for (uint32_t b = 0; b < kNb; b += 16) {
            __m128i x = _mm_load_si128(reinterpret_cast<const __m128i*>(cnt + b));
            const uint32_t several = static_cast<uint32_t>(
                _mm_movemask_epi8(_mm_cmpeq_epi8(_mm_max_epu8(x, two), x)));
            m[b >> 6] |= uint64_t{several} << (b & 63);
            x = _mm_add_epi8(x, _mm_slli_si128(x, 1));
            x = _mm_add_epi8(x, _mm_slli_si128(x, 2));
            x = _mm_add_epi8(x, _mm_slli_si128(x, 4));
            x = _mm_add_epi8(x, _mm_slli_si128(x, 8));  // inclusive sums in the group
            const __m128i excl = _mm_add_epi8(_mm_slli_si128(x, 1), carry);
            _mm_store_si128(reinterpret_cast<__m128i*>(cnt + b), excl);
            _mm_storeu_si128(reinterpret_cast<__m128i*>(idx + b), _mm_unpacklo_epi8(excl, zero));
            _mm_storeu_si128(reinterpret_cast<__m128i*>(idx + b + 8),
                             _mm_unpackhi_epi8(excl, zero));
            __m128i t = _mm_srli_si128(x, 15);  // the group's total in byte 0
            t = _mm_unpacklo_epi8(t, t);
            t = _mm_unpacklo_epi16(t, t);
            carry = _mm_add_epi8(carry, _mm_shuffle_epi32(t, 0));
        }
        multi[0] = m[0];
        multi[1] = m[1];
#else
        uint32_t run = 0;
        multi[0] = multi[1] = 0;
        for (uint32_t b = 0; b < kNb; ++b) {
            const uint32_t c = cnt[b];
            multi[b >> 6] |= uint64_t{c > 1} << (b & 63);
            cnt[b] = static_cast<uint8_t>(run);
            idx[b] = static_cast<uint16_t>(run);
            run += c;
        }
#endif
    }

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

uint32_t RingSegment::bisect(uint32_t lo, uint32_t hi, uint64_t h) const noexcept {
    const RingPoint* r = records();
    return static_cast<uint32_t>(
        std::lower_bound(r + lo, r + hi, h,
                         [](const RingPoint& p, uint64_t v) { return p.point < v; }) - r);
}

RetiredSegments::~RetiredSegments() {
    for (const RingSegment* s : segs) SegmentBuilder::free(s);
    // Free the rest of the chain iteratively, not by recursive destructors:
    // while we hold the last reference to the next link, unhook its own next
    // before dropping it.  use_count() == 1 means no one else owns it (no
    // weak_ptrs exist, and a copy needs an owner); the fence orders our reads
    // of it after the release decrements of its former owners.
    std::shared_ptr<RetiredSegments> n = std::move(next);
    while (n && n.use_count() == 1) {
        std::atomic_thread_fence(std::memory_order_acquire);
        std::shared_ptr<RetiredSegments> after = std::move(n->next);
        n.reset();
        n = std::move(after);
    }
}

// -- snapshot lookups --------------------------------------------------------

RingSnapshot::Cursor RingSnapshot::locate(uint64_t h) const noexcept {
    const uint64_t g = h >> gshift_;
    const uint32_t i = static_cast<uint32_t>(g >> RingSegment::kLocalBits);
    const uint32_t pos =
        dir_[i]->position(static_cast<uint32_t>(g & (RingSegment::kBuckets - 1)), h);
    if (pos == dir_[i]->count()) return {next_nonempty(i), 0};
    return {i, pos};
}

int32_t RingSnapshot::live_owner(uint64_t h, const uint8_t* alive) const noexcept {
    if (size_ == 0) return -1;
    if (alive == nullptr) return owner(h);
    Cursor c = locate(h);
    for (uint32_t step = 0; step < size_; ++step) {
        const int32_t o = node_at(c);
        if (o >= 0 && alive[o]) return o;
        advance(c);
    }
    return -1;
}

int32_t RingSnapshot::live_owners_n(uint64_t h, const uint8_t* alive, int32_t n, int32_t* out,
                                    uint8_t* seen) const noexcept {
    if (size_ == 0 || n <= 0) return 0;
    Cursor c = locate(h);
    int32_t found = 0;
    for (uint32_t step = 0; step < size_ && found < n; ++step) {
        const int32_t o = node_at(c);
        advance(c);
        if (o < 0 || (alive != nullptr && !alive[o])) continue;
        bool dup = false;
        if (seen != nullptr) {
            dup = seen[o] != 0;
            seen[o] = 1;
        } else {
            for (int32_t j = 0; j < found; ++j) dup |= out[j] == o;
        }
        if (!dup) out[found++] = o;
    }
    if (seen != nullptr)
        for (int32_t j = 0; j < found; ++j) seen[out[j]] = 0;
    return found;
}

void RingSnapshot::live_owner_many(const uint64_t* hashes, size_t count, const uint8_t* alive,
                                   int32_t* out) const noexcept {
    if (size_ == 0) {
        for (size_t i = 0; i < count; ++i) out[i] = -1;
        return;
    }
    if (alive == nullptr) {
        // Locals, not members: stores to out (int32) could alias int members.
        const RingSegment* const* dir = dir_.data();
        const int32_t* slots = slot_index_.data();
        const int gshift = gshift_;
        const auto slot = [dir, gshift](uint64_t h) {
            const uint64_t g = h >> gshift;
            const RingSegment* seg = dir[g >> RingSegment::kLocalBits];
            const uint32_t b = static_cast<uint32_t>(g & (RingSegment::kBuckets - 1));
            return seg->records()[seg->position(b, h)].owner;
        };
        if (identity_) {  // no node removed since slots were numbered: slot = index
            for (size_t i = 0; i < count; ++i) out[i] = slot(hashes[i]);
            return;
        }
        for (size_t i = 0; i < count; ++i) out[i] = slots[slot(hashes[i])];
        return;
    }
    for (size_t i = 0; i < count; ++i) {
        const int32_t o = owner(hashes[i]);
        out[i] = o >= 0 && alive[o] ? o : live_owner(hashes[i], alive);
    }
}

void RingSnapshot::export_points(uint64_t* points, int32_t* owners) const noexcept {
    size_t k = 0;
    for (const RingSegment* seg : dir_) {
        const RingPoint* r = seg->records();
        for (uint32_t i = 0; i < seg->count(); ++i, ++k) {
            points[k] = r[i].point;
            owners[k] = slot_index(r[i].owner);
        }
    }
}

void RingSnapshot::distribution(const uint8_t* alive, int32_t n_nodes, double* out) const {
    for (int32_t i = 0; i < n_nodes; ++i) out[i] = 0.0;
    if (size_ == 0) return;
    std::vector<uint64_t> points(size_);
    std::vector<int32_t> owners(size_);
    export_points(points.data(), owners.data());
    const auto up = [&](int32_t o) { return o >= 0 && (alive == nullptr || alive[o]); };
    // Walk backwards from the last point so the "next live owner" of each
    // point is known when its arc (from the previous point, exclusive, up to
    // it, inclusive) is credited; the live owner after the top comes first.
    int32_t next_live = -1;
    for (uint32_t k = 0; k < size_ && next_live < 0; ++k)
        if (up(owners[k])) next_live = owners[k];
    if (next_live < 0) return;  // nothing is up
    constexpr double kSpan = 18446744073709551616.0;  // 2^64
    for (uint32_t k = size_; k-- > 0;) {
        if (up(owners[k])) next_live = owners[k];
        const uint64_t arc = k ? points[k] - points[k - 1] : points[0] - points[size_ - 1];
        double share = static_cast<double>(arc) / kSpan;
        if (k == 0 && size_ == 1) share = 1.0;
        if (next_live < n_nodes) out[next_live] += share;
    }
}

// -- the writer ----------------------------------------------------------------

namespace {

// At most this many points on one ring (positions are uint32).
constexpr size_t kMaxRingPoints = 0xFFFFFFF0u;

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
int32_t first_owner_from(const std::vector<const RingSegment*>& dir, uint32_t i) {
    const uint32_t mask = static_cast<uint32_t>(dir.size()) - 1;
    while (dir[i]->count() == 0) i = (i + 1) & mask;
    return dir[i]->records()[0].owner;
}

// After a change placed new segments at `touched` (a fresh flag each, in
// `fresh`): give each new segment the owner of the first point after it,
// and give each touched range's predecessors (back to the previous nonempty
// segment) the first owner at or after it, copying an old predecessor only
// if its sentinel changes (when a segment's first point changed).
void relink(std::vector<const RingSegment*>& dir, const std::vector<uint32_t>& touched,
            std::vector<uint8_t>& fresh, std::vector<const RingSegment*>& built,
            std::vector<const RingSegment*>& replaced) {
    const uint32_t mask = static_cast<uint32_t>(dir.size()) - 1;
    const auto owned = [&](uint32_t j) { return const_cast<RingSegment*>(dir[j]); };
    for (uint32_t t : touched)
        SegmentBuilder::set_sentinel(owned(t), first_owner_from(dir, (t + 1) & mask));
    for (uint32_t t : touched) {
        const int32_t v = first_owner_from(dir, t);
        uint32_t j = t;
        do {
            j = (j - 1) & mask;
            if (SegmentBuilder::sentinel(dir[j]) != v) {
                if (fresh[j]) {
                    SegmentBuilder::set_sentinel(owned(j), v);
                } else {
                    built.push_back(nullptr);  // grow first, so the copy is never unowned
                    RingSegment* c = SegmentBuilder::resentinel(dir[j], v);
                    built.back() = c;
                    replaced.push_back(dir[j]);
                    dir[j] = c;
                    fresh[j] = 1;
                }
            }
        } while (dir[j]->count() == 0 && j != t);
    }
}

void check_owners(const std::vector<RingPoint>& pts, size_t slots) {
    for (const RingPoint& p : pts)
        if (p.owner < 0 || static_cast<size_t>(p.owner) >= slots)
            throw std::invalid_argument("ring point owner outside the slot map");
}

}  // namespace

SegmentedRing::SegmentedRing()
    : cur_(std::make_shared<RingSnapshot>()), tail_(std::make_shared<RetiredSegments>()) {
    cur_->dir_.assign(2, SegmentBuilder::empty());
    cur_->retired_ = tail_;
}

SegmentedRing::~SegmentedRing() {
    std::lock_guard<std::mutex> lock(mu_);
    // Readers may still hold the current snapshot: its segments go to the
    // link it holds, freed with the last such snapshot.
    try {
        for (const RingSegment* seg : cur_->dir_)
            if (seg != SegmentBuilder::empty()) tail_->segs.push_back(seg);
    } catch (...) {  // out of memory: leak rather than free what a reader may use
    }
    cur_.reset();
    tail_.reset();
}

void SegmentedRing::set_simd(bool on) {
    std::lock_guard<std::mutex> lock(mu_);
    simd_ = on;
}

std::shared_ptr<RingSnapshot> SegmentedRing::snapshot() const {
    std::lock_guard<std::mutex> lock(mu_);
    return cur_;
}

std::shared_ptr<RingSnapshot> SegmentedRing::successor(const RingSnapshot& cur) {
    auto next = std::make_shared<RingSnapshot>();
    next->dir_ = cur.dir_;
    next->bits_ = cur.bits_;
    next->shift_ = cur.shift_;
    next->gshift_ = cur.gshift_;
    return next;
}

void SegmentedRing::publish(std::shared_ptr<RingSnapshot> next,
                            std::shared_ptr<RetiredSegments> link) noexcept {
    next->retired_ = link;
    tail_->next = link;
    tail_ = std::move(link);
    cur_ = std::move(next);
}

void SegmentedRing::collect(const RingSnapshot& s, std::vector<RingPoint>& out) const {
    out.reserve(out.size() + s.size());
    for (const RingSegment* seg : s.dir_)
        out.insert(out.end(), seg->records(), seg->records() + seg->count());
}

// A fresh partition: count the points by their top bits, allocate every
// segment at its size in one block, scatter, then sort each segment in place
// (a counting pass over its local buckets, which is also its index).
void SegmentedRing::rebuild_all(std::vector<RingPoint>& pts, std::vector<int32_t> slot_index,
                                bool high_first) {
    if (pts.size() > kMaxRingPoints) throw std::overflow_error("too many ring points");
    const int bits = choose_bits(pts.size());
    const int shift = 64 - bits;
    const uint32_t n_segs = uint32_t{1} << bits;
    std::vector<uint32_t> fill(n_segs, 0);
    std::vector<uint32_t> per_slot(slot_index.size(), 0);
    // Points usually come node by node: count each run of one owner at once.
    uint32_t* per = per_slot.data();
    uint32_t* fl = fill.data();
    const size_t n_slots = per_slot.size();
    for (size_t a = 0; a < pts.size();) {
        const int32_t o = pts[a].owner;
        if (o < 0 || static_cast<size_t>(o) >= n_slots)
            throw std::invalid_argument("ring point owner outside the slot map");
        size_t b = a;
        for (; b < pts.size() && pts[b].owner == o; ++b) ++fl[pts[b].point >> shift];
        per[o] += static_cast<uint32_t>(b - a);
        a = b;
    }
    rebuild_counted(pts.data(), pts.size(), bits, fill, per_slot, std::move(slot_index),
                    high_first);
}

std::shared_ptr<RingSnapshot> SegmentedRing::assign_xxh3(const char* const* names,
                                                         const size_t* name_lens,
                                                         const uint32_t* counts, size_t n,
                                                         uint64_t seed,
                                                         std::vector<int32_t> slot_index) {
    std::lock_guard<std::mutex> lock(mu_);
    if (n > slot_index.size() || n > size_t{INT32_MAX})
        throw std::invalid_argument("ring point owner outside the slot map");
    size_t total = 0;
    for (size_t k = 0; k < n; ++k) total += counts[k];
    if (total > kMaxRingPoints) throw std::overflow_error("too many ring points");
    const int bits = choose_bits(total);
    const int shift = 64 - bits;
    std::vector<uint32_t> fill(size_t{1} << bits, 0);
    std::vector<uint32_t> per_slot(slot_index.size(), 0);
    // Uninitialized: every record is written before it is read.
    std::unique_ptr<RingPoint[]> pts(new RingPoint[total > 0 ? total : 1]);
    uint32_t* fl = fill.data();
    size_t at = 0;
    for (size_t k = 0; k < n; ++k) {
        RingPoint* out = pts.get() + at;
        const uint32_t c = counts[k];
        const uint64_t node_seed = xxh3_64(names[k], name_lens[k], seed);
        ring_points::hash_run(0, c, node_seed, static_cast<int32_t>(k), out, simd_);
        for (uint32_t t = 0; t < c; ++t) ++fl[out[t].point >> shift];  // still in L1
        per_slot[k] = c;
        at += c;
    }
    rebuild_counted(pts.get(), total, bits, fill, per_slot, std::move(slot_index), false);
    return cur_;
}

// The build proper: pts counted by segment (fill, 2^bits entries) and by
// owner slot (per_slot, one entry a slot of slot_index).
void SegmentedRing::rebuild_counted(const RingPoint* pts, size_t n_pts, int bits,
                                    const std::vector<uint32_t>& fill,
                                    std::vector<uint32_t>& per_slot,
                                    std::vector<int32_t> slot_index, bool high_first) {
    const int shift = 64 - bits;
    const uint32_t n_segs = uint32_t{1} << bits;
    auto next = std::make_shared<RingSnapshot>();
    auto link = std::make_shared<RetiredSegments>();
    next->dir_.assign(n_segs, SegmentBuilder::empty());
    next->bits_ = bits;
    next->shift_ = shift;
    next->gshift_ = shift - RingSegment::kLocalBits;
    next->size_ = static_cast<uint32_t>(n_pts);
    std::vector<uint32_t> counts;
    for (uint32_t i = 0; i < n_segs; ++i)
        if (fill[i]) counts.push_back(fill[i]);
    std::vector<RingSegment*> segs(counts.size());
    std::vector<RingPoint*> dst(n_segs, nullptr);
    Built built;
    built.segs.reserve(n_segs);  // the filled segments and a stub for each empty range
    tail_->segs.reserve(tail_->segs.size() + cur_->dir_.size());  // retiring cannot throw
    SegmentBuilder::alloc_many(counts.data(), counts.size(), segs.data());
    built.segs.assign(segs.begin(), segs.end());  // reserved: no throw
    for (uint32_t i = 0, k = 0; i < n_segs; ++i) {
        if (!fill[i]) continue;
        next->dir_[i] = segs[k];
        dst[i] = SegmentBuilder::records(segs[k++]);
    }
    for (size_t k = 0; k < n_pts; ++k) *dst[pts[k].point >> shift]++ = pts[k];
    std::vector<RingPoint> tmp;
    const bool simd_sort = simd_ && SegmentBuilder::sort_simd();
    for (RingSegment* seg : segs)
        SegmentBuilder::sort_in_place(seg, next->gshift_, high_first, tmp, simd_sort);
    // Sentinels, from the top down: each segment's is the first owner after
    // it (wrapping); an empty range gets a stub holding just that.
    if (n_pts > 0) {
        int32_t next_owner = first_owner_from(next->dir_, 0);
        for (uint32_t i = n_segs; i-- > 0;) {
            if (fill[i] == 0) {
                RingSegment* st = SegmentBuilder::stub(next_owner);
                built.segs.push_back(st);  // reserved: no throw
                next->dir_[i] = st;
                continue;
            }
            RingSegment* seg = const_cast<RingSegment*>(next->dir_[i]);
            SegmentBuilder::set_sentinel(seg, next_owner);
            next_owner = seg->records()[0].owner;
        }
    }
    next->set_slot_index(std::move(slot_index));
    for (const RingSegment* seg : cur_->dir_)
        if (seg != SegmentBuilder::empty()) tail_->segs.push_back(seg);
    built.committed = true;
    last_written_ = static_cast<uint32_t>(built.segs.size());
    slot_points_.swap(per_slot);
    high_first_ = high_first;
    publish(std::move(next), std::move(link));
}

std::shared_ptr<RingSnapshot> SegmentedRing::assign(std::vector<RingPoint>& pts,
                                                    bool high_owner_first,
                                                    std::vector<int32_t> slot_index) {
    std::lock_guard<std::mutex> lock(mu_);
    rebuild_all(pts, std::move(slot_index), high_owner_first);
    return cur_;
}

std::shared_ptr<RingSnapshot> SegmentedRing::add(std::vector<RingPoint>& pts,
                                                 std::vector<int32_t> slot_index) {
    std::lock_guard<std::mutex> lock(mu_);
    check_owners(pts, slot_index.size());
    const RingSnapshot& cur = *cur_;
    const size_t total = size_t{cur.size_} + pts.size();
    if (total > kMaxRingPoints) throw std::overflow_error("too many ring points");
    // Many points at once (or a ring that outgrows its directory): one fresh
    // partition of everything costs less than merging segment by segment.
    if (cur.size_ == 0 || pts.size() > cur.size_ / 4 ||
        (total > (size_t{kGrowAvg} << cur.bits_) && cur.bits_ < kMaxDirBits)) {
        collect(cur, pts);
        rebuild_all(pts, std::move(slot_index), high_first_);
        return cur_;
    }
    const bool high_first = high_first_;
    std::sort(pts.begin(), pts.end(), [high_first](const RingPoint& a, const RingPoint& b) {
        return point_less(a.point, a.owner, b.point, b.owner, high_first);
    });
    auto next = successor(cur);
    auto link = std::make_shared<RetiredSegments>();
    next->size_ = static_cast<uint32_t>(total);
    const int gshift = cur.gshift_;
    const auto position = [gshift](const RingSegment* seg, uint64_t h) {
        return seg->position(SegmentBuilder::bucket(h, gshift), h);
    };
    Built built;
    built.segs.reserve(pts.size());
    std::vector<const RingSegment*> replaced;
    replaced.reserve(pts.size());
    std::vector<uint32_t> touched;
    touched.reserve(pts.size());
    std::vector<uint8_t> fresh(cur.dir_.size(), 0);
    for (size_t a = 0; a < pts.size();) {
        const uint32_t i = static_cast<uint32_t>(pts[a].point >> cur.shift_);
        size_t b = a + 1;
        while (b < pts.size() && (pts[b].point >> cur.shift_) == i) ++b;
        const RingSegment* old = cur.dir_[i];
        RingSegment* s = SegmentBuilder::alloc(static_cast<uint32_t>(old->count() + (b - a)));
        built.segs.push_back(s);
        RingPoint* r = SegmentBuilder::records(s);
        const RingPoint* o = old->records();
        const uint32_t n_old = old->count();
        uint32_t x = 0, k = 0;
        // Each new point goes after the old points below it (and, unless
        // high_first, after the old points equal to it): find that position
        // with the old segment's index and copy the run before it at once.
        for (size_t y = a; y < b; ++y) {
            const uint64_t p = pts[y].point;
            uint32_t at;
            if (high_first)
                at = position(old, p);  // before the old points equal to p
            else if (p == kTop || ((p + 1) >> cur.shift_) != i)
                at = n_old;  // p is the top of this segment's range
            else
                at = position(old, p + 1);  // after those equal to p
            if (at < x) at = x;  // cannot happen (pts are sorted); keeps the copy in bounds
            std::memcpy(r + k, o + x, (at - x) * sizeof(RingPoint));
            k += at - x;
            x = at;
            r[k++] = pts[y];
        }
        std::memcpy(r + k, o + x, (n_old - x) * sizeof(RingPoint));
        k += n_old - x;
        r[k] = {kTop, 0};
        SegmentBuilder::copy_index(s, old);
        for (size_t y = a; y < b; ++y) SegmentBuilder::shift_index(s, pts[y].point, +1, gshift);
        next->dir_[i] = s;
        touched.push_back(i);
        fresh[i] = 1;
        if (old != SegmentBuilder::empty()) replaced.push_back(old);
        a = b;
    }
    relink(next->dir_, touched, fresh, built.segs, replaced);
    std::vector<uint32_t> per_slot(slot_points_);
    per_slot.resize(slot_index.size(), 0);
    for (const RingPoint& p : pts) ++per_slot[p.owner];
    next->set_slot_index(std::move(slot_index));
    tail_->segs.reserve(tail_->segs.size() + replaced.size());
    tail_->segs.insert(tail_->segs.end(), replaced.begin(), replaced.end());  // no throw
    built.committed = true;
    last_written_ = static_cast<uint32_t>(built.segs.size());
    slot_points_.swap(per_slot);
    publish(std::move(next), std::move(link));
    return cur_;
}

std::shared_ptr<RingSnapshot> SegmentedRing::remove(const std::vector<RingPoint>& hint,
                                                    const uint8_t* drop, size_t drop_len,
                                                    std::vector<int32_t> slot_index) {
    std::lock_guard<std::mutex> lock(mu_);
    const RingSnapshot& cur = *cur_;
    if (drop_len != cur.slot_index_.size())
        throw std::invalid_argument("drop mask length differs from the slot count");
    const auto dropped = [drop, drop_len](int32_t o) {
        return o >= 0 && static_cast<size_t>(o) < drop_len && drop[o] != 0;
    };
    auto next = successor(cur);
    auto link = std::make_shared<RetiredSegments>();
    const int gshift = cur.gshift_;
    Built built;
    std::vector<const RingSegment*> replaced;
    std::vector<uint32_t> touched;
    std::vector<uint8_t> fresh(cur.dir_.size(), 0);
    uint64_t removed = 0;
    uint64_t expected = 0;  // the dropped owners' points
    for (size_t x = 0; x < drop_len && x < slot_points_.size(); ++x)
        if (drop[x]) expected += slot_points_[x];
    // A new segment i: the old one without the records at the sorted
    // positions `gone` (runs between them are copied at once).
    std::vector<uint32_t> gone;
    const auto rewrite = [&](uint32_t i) {
        const RingSegment* old = cur.dir_[i];
        const RingPoint* o = old->records();
        const uint32_t n_old = old->count();
        const uint32_t kept = n_old - static_cast<uint32_t>(gone.size());
        removed += gone.size();
        replaced.push_back(old);
        touched.push_back(i);
        fresh[i] = 1;
        built.segs.push_back(nullptr);  // grow first, so the new segment is never unowned
        if (kept == 0) {  // an empty range: a stub (relink sets its sentinel)
            RingSegment* st = SegmentBuilder::stub(0);
            built.segs.back() = st;
            next->dir_[i] = st;
            return;
        }
        RingSegment* s = SegmentBuilder::alloc(kept);
        built.segs.back() = s;
        RingPoint* r = SegmentBuilder::records(s);
        SegmentBuilder::copy_index(s, old);
        uint32_t x = 0, k = 0;
        for (uint32_t at : gone) {
            std::memcpy(r + k, o + x, (at - x) * sizeof(RingPoint));
            k += at - x;
            SegmentBuilder::shift_index(s, o[at].point, -1, gshift);
            x = at + 1;
        }
        std::memcpy(r + k, o + x, (n_old - x) * sizeof(RingPoint));
        r[kept] = {kTop, 0};
        next->dir_[i] = s;
    };
    // Fast path: find each hinted point with the old segment's index.
    std::vector<RingPoint> pts(hint);
    std::sort(pts.begin(), pts.end(), [](const RingPoint& a, const RingPoint& b) {
        return a.point < b.point || (a.point == b.point && a.owner < b.owner);
    });
    bool exact = true;
    for (size_t a = 0; a < pts.size() && exact;) {
        const uint32_t i = static_cast<uint32_t>(pts[a].point >> cur.shift_);
        const RingSegment* seg = cur.dir_[i];
        const RingPoint* o = seg->records();
        const uint32_t n_old = seg->count();
        gone.clear();
        size_t b = a;
        for (; b < pts.size() && (pts[b].point >> cur.shift_) == i; ++b) {
            const uint64_t p = pts[b].point;
            uint32_t at = seg->position(SegmentBuilder::bucket(p, gshift), p);
            if (!gone.empty() && at <= gone.back()) at = gone.back() + 1;
            while (at < n_old && o[at].point == p && o[at].owner != pts[b].owner) ++at;
            if (at >= n_old || o[at].point != p || !dropped(o[at].owner)) {
                exact = false;  // not there, or not a dropped owner's: a wrong hint
                break;
            }
            gone.push_back(at);
        }
        if (exact) rewrite(i);
        a = b;
    }
    // A wrong hint, or dropped owners with points it missed: start over and
    // filter every segment by owner.
    if (!exact || removed != expected) {
        for (const RingSegment* seg : built.segs) SegmentBuilder::free(seg);
        built.segs.clear();
        replaced.clear();
        touched.clear();
        std::fill(fresh.begin(), fresh.end(), 0);
        removed = 0;
        next->dir_ = cur.dir_;
        for (uint32_t i = 0; i < cur.dir_.size(); ++i) {
            const RingSegment* seg = cur.dir_[i];
            gone.clear();
            for (uint32_t x = 0; x < seg->count(); ++x)
                if (dropped(seg->records()[x].owner)) gone.push_back(x);
            if (!gone.empty()) rewrite(i);
        }
    }
    next->size_ = static_cast<uint32_t>(cur.size_ - removed);
    if (next->size_ == 0 || (next->size_ < (size_t{kShrinkAvg} << cur.bits_) && cur.bits_ > 1 &&
                             choose_bits(next->size_) < cur.bits_)) {
        std::vector<RingPoint> all;
        all.reserve(next->size_);
        for (const RingSegment* seg : cur.dir_)
            for (uint32_t x = 0; x < seg->count(); ++x)
                if (!dropped(seg->records()[x].owner)) all.push_back(seg->records()[x]);
        rebuild_all(all, std::move(slot_index), high_first_);  // `built` is freed unpublished
        return cur_;
    }
    relink(next->dir_, touched, fresh, built.segs, replaced);
    std::vector<uint32_t> per_slot(slot_points_);
    per_slot.resize(slot_index.size(), 0);
    for (size_t x = 0; x < drop_len && x < per_slot.size(); ++x)
        if (drop[x]) per_slot[x] = 0;
    next->set_slot_index(std::move(slot_index));
    tail_->segs.reserve(tail_->segs.size() + replaced.size());
    tail_->segs.insert(tail_->segs.end(), replaced.begin(), replaced.end());
    built.committed = true;
    last_written_ = static_cast<uint32_t>(built.segs.size());
    slot_points_.swap(per_slot);
    publish(std::move(next), std::move(link));
    return cur_;
}

std::shared_ptr<RingSnapshot> SegmentedRing::renumber(const int32_t* remap, size_t remap_len,
                                                      std::vector<int32_t> slot_index) {
    std::lock_guard<std::mutex> lock(mu_);
    if (remap_len != cur_->slot_index_.size())
        throw std::invalid_argument("remap length differs from the slot count");
    std::vector<RingPoint> pts;
    collect(*cur_, pts);
    for (RingPoint& p : pts) {
        const int32_t to = remap[p.owner];  // owners are < remap_len (checked when added)
        if (to < 0 || static_cast<size_t>(to) >= slot_index.size())
            throw std::invalid_argument("remap sends a slot outside the new slot map");
        p.owner = to;
    }
    rebuild_all(pts, std::move(slot_index), high_first_);
    return cur_;
}

// -- points --------------------------------------------------------------------


void ring_node_points(const char* name, size_t name_len, uint64_t seed, uint32_t count,
                      int32_t owner, std::vector<RingPoint>& out) {
    const uint64_t node_seed = xxh3_64(name, name_len, seed);
    // Hash into a small buffer and append it whole: a push_back per point
    // (or a zero-filling resize) costs as much as the hashing.
    constexpr uint32_t kChunk = 256;
    RingPoint buf[kChunk];
    for (uint32_t j = 0; j < count;) {
        const uint32_t m = std::min(kChunk, count - j);
        ring_points::hash_run(j, m, node_seed, owner, buf);
        j += m;
        out.insert(out.end(), buf, buf + m);
    }
}

void ring_ketama_node_points(const char* name, size_t name_len, uint32_t hashes, int32_t owner,
                             std::vector<RingPoint>& out) {
    std::string buf(name, name_len);
    buf.push_back('-');
    const size_t prefix = buf.size();
    uint8_t d[16];
    for (uint32_t k = 0; k < hashes; ++k) {
        buf.resize(prefix);
        buf += std::to_string(k);
        md5(buf.data(), buf.size(), d);
        for (int h = 0; h < 4; ++h) {
            const uint64_t p = uint64_t{d[4 * h]} | (uint64_t{d[4 * h + 1]} << 8) |
                               (uint64_t{d[4 * h + 2]} << 16) | (uint64_t{d[4 * h + 3]} << 24);
            out.push_back({p << 32, owner});
        }
    }
}

}  // namespace faultkit
