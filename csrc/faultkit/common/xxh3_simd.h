// XXH3's vector kernels on x86-64, included by xxh3.h (not on its own): the
// accumulators of its long loop in AVX2 (two 256-bit registers), and
// xxh3_64_u64 eight integers at a time in AVX-512 (F and DQ, for the 64-bit
// multiply).  Each function carries its target attribute (cpu.h); xxh3.h
// runs them only where cpu.h says the CPU has the ISA.  Every kernel gives
// the portable code's values bit for bit (tests/common/test_xxh3_kernels.py
// checks each against python-xxhash).
//
// Measured on the project's 2-core AMD EPYC (Zen 4) host (docs/benchmarks.md,
// "Layout (#11)"): the AVX2 long loop hashes 28-46 GB/s in cache against 6-12
// for the portable one (which the compiler vectorises with SSE2).  An AVX-512
// long loop (one 512-bit accumulator) measured the same as AVX2 (27-49 GB/s,
// within noise, 4 KiB to 1 MiB; Zen 4 runs 512-bit operations as two 256-bit
// halves), so it is not kept; a CPU with full-width 512-bit units was not
// measured.  The eight-lane integer hash does pay: 0.31 ns a key against 4.4
// for the scalar loop (hash64_many of a uint64 array; the ring's points).
#pragma once

#ifdef FAULTKIT_X86_KERNELS

namespace faultkit {
namespace xxh3_detail {

// GCC 12's AVX-512 intrinsics trip -W(maybe-)uninitialized on their own
// _mm512_undefined_epi32() placeholders.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
#endif

// accumulate_512, scramble of xxh3.h in 4 lanes of 64 bits, twice.
struct Avx2Lanes {
    __m256i acc[2];
    FAULTKIT_TARGET_AVX2 explicit Avx2Lanes(const uint64_t* init) noexcept {
        acc[0] = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(init));
        acc[1] = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(init) + 1);
    }
    FAULTKIT_TARGET_AVX2 void accumulate(const uint8_t* in, const uint8_t* secret) noexcept {
        for (int i = 0; i < 2; ++i) {
            const __m256i data = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(in) + i);
            const __m256i key = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(secret) + i);
            const __m256i dk = _mm256_xor_si256(data, key);
            // lo32 * hi32 of each lane of data ^ key
            const __m256i product = _mm256_mul_epu32(dk, _mm256_srli_epi64(dk, 32));
            // acc[lane ^ 1] += data: swap the 64-bit halves of each 128-bit lane.
            const __m256i swapped = _mm256_shuffle_epi32(data, _MM_SHUFFLE(1, 0, 3, 2));
            acc[i] = _mm256_add_epi64(product, _mm256_add_epi64(acc[i], swapped));
        }
    }
    FAULTKIT_TARGET_AVX2 void scramble(const uint8_t* secret) noexcept {
        const __m256i prime = _mm256_set1_epi32(static_cast<int>(PRIME32_1));
        for (int i = 0; i < 2; ++i) {
            __m256i a = acc[i];
            a = _mm256_xor_si256(a, _mm256_srli_epi64(a, 47));
            a = _mm256_xor_si256(a,
                                 _mm256_loadu_si256(reinterpret_cast<const __m256i*>(secret) + i));
            // a * PRIME32_1 (mod 2^64) from two 32 x 32 -> 64 products.
            const __m256i lo = _mm256_mul_epu32(a, prime);
            const __m256i hi = _mm256_mul_epu32(_mm256_srli_epi64(a, 32), prime);
            acc[i] = _mm256_add_epi64(lo, _mm256_slli_epi64(hi, 32));
        }
    }
    FAULTKIT_TARGET_AVX2 void store(uint64_t* out) const noexcept {
        _mm256_storeu_si256(reinterpret_cast<__m256i*>(out), acc[0]);
        _mm256_storeu_si256(reinterpret_cast<__m256i*>(out) + 1, acc[1]);
    }
};

FAULTKIT_TARGET_AVX2 inline uint64_t hash_long_avx2(const uint8_t* in, size_t len,
                                                    const uint8_t* secret) noexcept {
    return long_loop<Avx2Lanes>(in, len, secret);
}

// u64_finish of eight values with one bitflip (u64_bitflip(seed) in every
// lane): rotl(v, 32) ^ bitflip, then rrmxmx with len 8.
FAULTKIT_TARGET_AVX512_F_DQ inline __m512i u64_finish_x8(__m512i v, __m512i bitflip) noexcept {
    const __m512i mx2 = _mm512_set1_epi64(static_cast<long long>(PRIME_MX2));
    const __m512i x = _mm512_xor_si512(_mm512_rol_epi64(v, 32), bitflip);
    // x ^ rotl(x, 49) ^ rotl(x, 24) (0x96: three-input xor)
    __m512i h =
        _mm512_ternarylogic_epi64(x, _mm512_rol_epi64(x, 49), _mm512_rol_epi64(x, 24), 0x96);
    h = _mm512_mullo_epi64(h, mx2);
    h = _mm512_xor_si512(h, _mm512_add_epi64(_mm512_srli_epi64(h, 35), _mm512_set1_epi64(8)));
    h = _mm512_mullo_epi64(h, mx2);
    return _mm512_xor_si512(h, _mm512_srli_epi64(h, 28));
}

// xxh3_64_u64 of values[0, 8k) into out, k as large as fits count; returns 8k.
FAULTKIT_TARGET_AVX512_F_DQ inline size_t u64_many_avx512(const uint64_t* values, size_t count,
                                                          uint64_t seed, uint64_t* out) noexcept {
    const __m512i flip = _mm512_set1_epi64(static_cast<long long>(u64_bitflip(seed)));
    size_t i = 0;
    for (; i + 8 <= count; i += 8)
        _mm512_storeu_si512(out + i, u64_finish_x8(_mm512_loadu_si512(values + i), flip));
    return i;
}

#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic pop
#endif

}  // namespace xxh3_detail
}  // namespace faultkit

#endif  // FAULTKIT_X86_KERNELS
