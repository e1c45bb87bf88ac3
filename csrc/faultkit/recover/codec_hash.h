// Chunk checksums of the checkpoint format: XXH3-64 with seed 0, equal bit
// for bit to faultkit::xxh3_64 (xxh3.h) and to xxhash.xxh3_64_intdigest.
//
// Chunks are large (1 MiB by default), so their hash is XXH3's long loop.
// On x86-64 CPUs with AVX2 that loop runs here with 256-bit vectors, chosen
// at run time (__builtin_cpu_supports): wheels stay baseline x86-64, no
// -march=native.  AVX2 about doubles the in-cache speed of the SSE2 code the
// compiler makes of the portable loop, which matters because a save hashes
// every byte it writes.  Everything else uses the portable xxh3_64.
#pragma once

#include <cstddef>
#include <cstdint>

#include "faultkit/common/xxh3.h"

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>
#define FAULTKIT_HAVE_AVX2_KERNEL 1
#endif

namespace faultkit {
namespace codec {

#ifdef FAULTKIT_HAVE_AVX2_KERNEL
namespace avx2 {

using namespace faultkit::xxh3_detail;

__attribute__((target("avx2"))) inline void accumulate_512(__m256i* acc, const uint8_t* in, const uint8_t* secret) {
    for (int i = 0; i < 2; ++i) {
        const __m256i data = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(in) + i);
        const __m256i key = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(secret) + i);
        const __m256i data_key = _mm256_xor_si256(data, key);
        const __m256i data_key_hi = _mm256_srli_epi64(data_key, 32);
        const __m256i product = _mm256_mul_epu32(data_key, data_key_hi);  // lo32 * hi32 per lane
        // acc[lane ^ 1] += data: swap the 64-bit halves of each 128-bit lane.
        const __m256i swapped = _mm256_shuffle_epi32(data, _MM_SHUFFLE(1, 0, 3, 2));
        acc[i] = _mm256_add_epi64(product, _mm256_add_epi64(acc[i], swapped));
    }
}

__attribute__((target("avx2"))) inline void scramble(__m256i* acc, const uint8_t* secret) {
    const __m256i prime32 = _mm256_set1_epi32(static_cast<int>(PRIME32_1));
    for (int i = 0; i < 2; ++i) {
        __m256i a = acc[i];
        a = _mm256_xor_si256(a, _mm256_srli_epi64(a, 47));
        a = _mm256_xor_si256(a, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(secret) + i));
        // a * PRIME32_1 (mod 2^64) from two 32x32->64 products.
        const __m256i hi = _mm256_shuffle_epi32(a, _MM_SHUFFLE(0, 3, 0, 1));
        const __m256i prod_lo = _mm256_mul_epu32(a, prime32);
        const __m256i prod_hi = _mm256_mul_epu32(hi, prime32);
        acc[i] = _mm256_add_epi64(prod_lo, _mm256_slli_epi64(prod_hi, 32));
    }
}

// xxh3_detail::hash_long with the default secret, vectorised.
__attribute__((target("avx2"))) inline uint64_t hash_long(const uint8_t* in, size_t len) {
    const uint8_t* secret = kSecret;
    const size_t secret_size = SECRET_SIZE;
    alignas(32) uint64_t init[8] = {PRIME32_3, PRIME64_1, PRIME64_2, PRIME64_3,
                                    PRIME64_4, PRIME32_2, PRIME64_5, PRIME32_1};
    __m256i acc[2] = {_mm256_load_si256(reinterpret_cast<const __m256i*>(init)),
                      _mm256_load_si256(reinterpret_cast<const __m256i*>(init) + 1)};
    const size_t stripes_per_block = (secret_size - STRIPE_LEN) / SECRET_CONSUME_RATE;
    const size_t block_len = STRIPE_LEN * stripes_per_block;
    const size_t blocks = (len - 1) / block_len;
    for (size_t b = 0; b < blocks; ++b) {
        const uint8_t* block = in + b * block_len;
        for (size_t s = 0; s < stripes_per_block; ++s)
            accumulate_512(acc, block + s * STRIPE_LEN, secret + s * SECRET_CONSUME_RATE);
        scramble(acc, secret + secret_size - STRIPE_LEN);
    }
    const size_t stripes = ((len - 1) - block_len * blocks) / STRIPE_LEN;
    const uint8_t* tail = in + blocks * block_len;
    for (size_t s = 0; s < stripes; ++s) accumulate_512(acc, tail + s * STRIPE_LEN, secret + s * SECRET_CONSUME_RATE);
    accumulate_512(acc, in + len - STRIPE_LEN, secret + secret_size - STRIPE_LEN - SECRET_LASTACC_START);
    alignas(32) uint64_t out[8];
    _mm256_store_si256(reinterpret_cast<__m256i*>(out), acc[0]);
    _mm256_store_si256(reinterpret_cast<__m256i*>(out) + 1, acc[1]);
    return merge_accs(out, secret + SECRET_MERGEACCS_START, len * PRIME64_1);
}

inline bool available() {
    static const bool yes = __builtin_cpu_supports("avx2");
    return yes;
}

}  // namespace avx2
#endif

// XXH3-64 (seed 0) of a chunk; the fastest kernel this CPU runs.
inline uint64_t chunk_hash(const void* data, size_t len) noexcept {
#ifdef FAULTKIT_HAVE_AVX2_KERNEL
    if (len > 240 && avx2::available()) return avx2::hash_long(static_cast<const uint8_t*>(data), len);
#endif
    return xxh3_64(data, len, 0);
}

}  // namespace codec
}  // namespace faultkit
