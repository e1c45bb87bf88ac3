// The segmented ring's builds: sorting a segment's records in place, a
// fresh partition of every point (assign, and any change that outgrows the
// directory), and the points of a node (XXH3 and ketama).
#include <algorithm>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#if defined(__SSE2__)
#include <emmintrin.h>
#endif

#include "faultkit/balance/md5.h"
#include "faultkit/balance/ring_internal.h"
#include "faultkit/balance/ring_points.h"
#include "faultkit/common/cpu.h"
#include "faultkit/common/xxh3.h"

namespace faultkit {

using namespace ring_detail;

namespace {

// The sort of SegmentBuilder::sort_in_place and its pieces.
struct SegmentSort : SegmentBuilder {
    // Sort a segment's records in place (they are there in any order): a
    // counting pass over the local buckets, whose running sums are the index
    // (count_index), a stable scatter back from a copy, then a sort of each
    // bucket holding several points.  `big` is caller scratch for the copy.
    // Segments of at most kByteCount points (all but crowded ones) take
    // sort_small, the same steps with byte counters, and with `simd` (the
    // CPU has AVX-512 F and BW: sort_simd()) those of at most 64, sort_small64.
    static void run(RingSegment* s, int gshift, bool high_first, std::vector<RingPoint>& big,
                    bool simd) {
        const uint32_t n = s->count();
#ifdef FAULTKIT_X86_KERNELS
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

#ifdef FAULTKIT_X86_KERNELS
// GCC 12's AVX-512 intrinsics trip -W(maybe-)uninitialized on their own
// _mm512_undefined_epi32() placeholders.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
#endif
    // Inclusive running sums of 64 bytes (no carries out of a byte).
    FAULTKIT_TARGET_AVX512_F_BW static inline __m512i prefix64(__m512i x) noexcept {
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
    FAULTKIT_TARGET_AVX512_F_BW static void sort_small64(RingSegment* s, int gshift,
                                                         bool high_first) noexcept {
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
            const __mmask8 mb = static_cast<__mmask8>(left >= 8   ? 0xFF
                                                      : left <= 4 ? 0
                                                                  : (1u << (2 * (left - 4))) - 1);
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
            const uint32_t several =
                static_cast<uint32_t>(_mm_movemask_epi8(_mm_cmpeq_epi8(_mm_max_epu8(x, two), x)));
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
};

}  // namespace

void SegmentBuilder::sort_in_place(RingSegment* s, int gshift, bool high_first,
                                   std::vector<RingPoint>& big, bool simd) {
    SegmentSort::run(s, gshift, high_first, big, simd);
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
