// The XXH3 ring's points: point j of a node is xxh3_64_u64(j, node_seed)
// (ring.h, ring_node_points).  Building a 1,000-node ring hashes 160,000 of
// them; on x86-64 CPUs with AVX-512 (F and DQ, cpu.h) they are hashed eight
// at a time by xxh3_simd.h's u64_finish_x8 and written as records here.
// Both kernels give the same points bit for bit (tests/balance/test_ring.py
// checks each against python-xxhash).
//
// Why this kernel stays (docs/benchmarks.md, "Layout (#11)"): 160,000 points
// hash in 0.93 ns a point with it against 3.3 ns with hash_run_scalar
// (_hash_points, same run), 3.5x; at 1,000 nodes that is ~0.4 ms of a build.
#pragma once

#include <cstdint>

#include "faultkit/balance/ring.h"
#include "faultkit/common/cpu.h"
#include "faultkit/common/xxh3.h"

namespace faultkit {
namespace ring_points {

// Records {xxh3_64_u64(first + t, seed), owner} for t in [0, count).
inline void hash_run_scalar(uint64_t first, uint32_t count, uint64_t seed, int32_t owner,
                            RingPoint* out) noexcept {
    const uint64_t flip = xxh3_detail::u64_bitflip(seed);
    for (uint32_t t = 0; t < count; ++t) out[t] = {xxh3_detail::u64_finish(first + t, flip), owner};
}

#ifdef FAULTKIT_X86_KERNELS
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
#endif
// hash_run_scalar eight points at a time; each lane pair becomes a record
// {point, owner}.
FAULTKIT_TARGET_AVX512_F_DQ inline void hash_run_avx512(uint64_t first, uint32_t count,
                                                        uint64_t seed, int32_t owner,
                                                        RingPoint* out) noexcept {
    const __m512i flip = _mm512_set1_epi64(static_cast<long long>(xxh3_detail::u64_bitflip(seed)));
    const __m512i eight = _mm512_set1_epi64(8);
    const __m512i own = _mm512_set1_epi64(static_cast<long long>(static_cast<uint32_t>(owner)));
    const __m512i lo = _mm512_setr_epi64(0, 8, 1, 8, 2, 8, 3, 8);  // records 0-3 of 8
    const __m512i hi = _mm512_setr_epi64(4, 8, 5, 8, 6, 8, 7, 8);  // records 4-7
    __m512i j = _mm512_add_epi64(_mm512_set1_epi64(static_cast<long long>(first)),
                                 _mm512_setr_epi64(0, 1, 2, 3, 4, 5, 6, 7));
    uint32_t t = 0;
    for (; t + 8 <= count; t += 8) {
        const __m512i h = xxh3_detail::u64_finish_x8(j, flip);
        _mm512_storeu_si512(out + t, _mm512_permutex2var_epi64(h, lo, own));
        _mm512_storeu_si512(out + t + 4, _mm512_permutex2var_epi64(h, hi, own));
        j = _mm512_add_epi64(j, eight);
    }
    hash_run_scalar(first + t, count - t, seed, owner, out + t);
}
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic pop
#endif
#endif

// Whether this CPU runs the ring's AVX-512 kernels: this file's eight-lane
// hashing (F, DQ) and ring_build.cc's small-segment sort (F, BW).
inline bool simd_available() noexcept { return cpu::avx512_f_dq() && cpu::avx512_f_bw(); }

// hash_run_scalar with the fastest kernel this CPU runs (allow_simd false:
// the portable one, for tests).  Returns whether the eight-lane kernel ran.
inline bool hash_run(uint64_t first, uint32_t count, uint64_t seed, int32_t owner, RingPoint* out,
                     bool allow_simd = true) noexcept {
#ifdef FAULTKIT_X86_KERNELS
    if (allow_simd && count >= 8 && simd_available()) {
        hash_run_avx512(first, count, seed, owner, out);
        return true;
    }
#endif
    hash_run_scalar(first, count, seed, owner, out);
    return false;
}

}  // namespace ring_points
}  // namespace faultkit
