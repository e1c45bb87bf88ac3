// The XXH3 ring's points: point j of a node is xxh3_64_u64(j, node_seed)
// (ring.h, ring_node_points).  Building a 1,000-node ring hashes 160,000 of
// them, so on x86-64 CPUs with AVX-512 (F and DQ, for the 64-bit multiply)
// they are hashed eight at a time, chosen at run time
// (__builtin_cpu_supports): wheels stay baseline x86-64, no -march=native.
// Both kernels give the same points bit for bit (tests/test_ring.py checks
// each against python-xxhash).
#pragma once

#include <cstdint>

#include "faultkit/balance/ring.h"
#include "faultkit/common/xxh3.h"

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>
#define FAULTKIT_RING_AVX512 1
#endif

namespace faultkit {
namespace ring_points {

// Records {xxh3_64_u64(first + t, seed), owner} for t in [0, count).
inline void hash_run_scalar(uint64_t first, uint32_t count, uint64_t seed, int32_t owner,
                            RingPoint* out) noexcept {
    for (uint32_t t = 0; t < count; ++t) out[t] = {xxh3_64_u64(first + t, seed), owner};
}

#ifdef FAULTKIT_RING_AVX512
// GCC 12's AVX-512 intrinsics trip -Wmaybe-uninitialized on their own
// _mm512_undefined_epi32() placeholders.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
// hash_run_scalar eight points at a time: xxh3.h's len_4to8 for an 8-byte
// input (its two 32-bit halves swapped, xored with the seeded bitflip, then
// rrmxmx) in 64-bit lanes; each lane pair becomes a record {point, owner}.
__attribute__((target("avx512f,avx512dq"))) inline void hash_run_avx512(
    uint64_t first, uint32_t count, uint64_t seed, int32_t owner, RingPoint* out) noexcept {
    using namespace xxh3_detail;
    const uint64_t s = seed ^ (static_cast<uint64_t>(swap32(static_cast<uint32_t>(seed))) << 32);
    const __m512i flip = _mm512_set1_epi64(
        static_cast<long long>((read64(kSecret + 8) ^ read64(kSecret + 16)) - s));
    const __m512i mx2 = _mm512_set1_epi64(static_cast<long long>(PRIME_MX2));
    const __m512i eight = _mm512_set1_epi64(8);
    const __m512i own = _mm512_set1_epi64(static_cast<long long>(static_cast<uint32_t>(owner)));
    const __m512i lo = _mm512_setr_epi64(0, 8, 1, 8, 2, 8, 3, 8);  // records 0-3 of 8
    const __m512i hi = _mm512_setr_epi64(4, 8, 5, 8, 6, 8, 7, 8);  // records 4-7
    __m512i j = _mm512_add_epi64(_mm512_set1_epi64(static_cast<long long>(first)),
                                 _mm512_setr_epi64(0, 1, 2, 3, 4, 5, 6, 7));
    uint32_t t = 0;
    for (; t + 8 <= count; t += 8) {
        const __m512i x = _mm512_xor_si512(_mm512_rol_epi64(j, 32), flip);
        __m512i h = _mm512_ternarylogic_epi64(x, _mm512_rol_epi64(x, 49), _mm512_rol_epi64(x, 24),
                                              0x96);  // x ^ rotl(x, 49) ^ rotl(x, 24)
        h = _mm512_mullo_epi64(h, mx2);
        h = _mm512_xor_si512(h, _mm512_add_epi64(_mm512_srli_epi64(h, 35), eight));
        h = _mm512_mullo_epi64(h, mx2);
        h = _mm512_xor_si512(h, _mm512_srli_epi64(h, 28));
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
// hashing (F, DQ) and ring.cc's small-segment sort (F, BW).  Every AVX-512
// CPU with DQ also has BW.
inline bool simd_available() noexcept {
#ifdef FAULTKIT_RING_AVX512
    static const bool yes = __builtin_cpu_supports("avx512f") &&
                            __builtin_cpu_supports("avx512dq") &&
                            __builtin_cpu_supports("avx512bw");
    return yes;
#else
    return false;
#endif
}

// hash_run_scalar with the fastest kernel this CPU runs (allow_simd false:
// the portable one, for tests).  Returns whether the eight-lane kernel ran.
inline bool hash_run(uint64_t first, uint32_t count, uint64_t seed, int32_t owner,
                     RingPoint* out, bool allow_simd = true) noexcept {
#ifdef FAULTKIT_RING_AVX512
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
