// XXH3-64: the 64-bit variant of xxHash v0.8, written from the public
// specification (xxhash/doc/xxhash_spec.md).  Header-only, portable C++17,
// no Python.  Bit-identical to XXH3_64bits_withSeed() for every input length.
//
// The one XXH3 of faultkit: key hashing (hash64, hash64_many, every
// balancer), the checkpoint codec's chunk checksums and the ring's points all
// call it.  The hot cases for keys are short (<= 16 bytes: one or two
// multiplies) and 17..128 bytes, inlined where they are called.  Inputs over
// 240 bytes run the long loop (long_loop below, written once) with the
// fastest accumulators this CPU has, AVX2 (xxh3_simd.h) or portable code,
// and integer batches run eight at a time with AVX-512; both chosen once at
// run time (cpu.h), no -march=native.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>

#include "faultkit/common/cpu.h"
#include "faultkit/common/endian.h"

namespace faultkit {
namespace xxh3_detail {

constexpr uint32_t PRIME32_1 = 0x9E3779B1U;
constexpr uint32_t PRIME32_2 = 0x85EBCA77U;
constexpr uint32_t PRIME32_3 = 0xC2B2AE3DU;
constexpr uint64_t PRIME64_1 = 0x9E3779B185EBCA87ULL;
constexpr uint64_t PRIME64_2 = 0xC2B2AE3D27D4EB4FULL;
constexpr uint64_t PRIME64_3 = 0x165667B19E3779F9ULL;
constexpr uint64_t PRIME64_4 = 0x85EBCA77C2B2AE63ULL;
constexpr uint64_t PRIME64_5 = 0x27D4EB2F165667C5ULL;
constexpr uint64_t PRIME_MX1 = 0x165667919E3779F9ULL;
constexpr uint64_t PRIME_MX2 = 0x9FB21C651E98DF25ULL;

constexpr size_t SECRET_SIZE = 192;  // size of the default secret
constexpr size_t STRIPE_LEN = 64;  // bytes consumed per accumulate step
constexpr size_t SECRET_CONSUME_RATE = 8;
constexpr size_t MIDSIZE_STARTOFFSET = 3;
constexpr size_t MIDSIZE_LASTOFFSET = 17;
constexpr size_t SECRET_MERGEACCS_START = 11;
constexpr size_t SECRET_LASTACC_START = 7;
constexpr size_t SECRET_SIZE_MIN = 136;

// The default secret ("kSecret") of the specification.
alignas(64) inline constexpr uint8_t kSecret[SECRET_SIZE] = {
    0xb8, 0xfe, 0x6c, 0x39, 0x23, 0xa4, 0x4b, 0xbe, 0x7c, 0x01, 0x81, 0x2c, 0xf7, 0x21, 0xad, 0x1c,
    0xde, 0xd4, 0x6d, 0xe9, 0x83, 0x90, 0x97, 0xdb, 0x72, 0x40, 0xa4, 0xa4, 0xb7, 0xb3, 0x67, 0x1f,
    0xcb, 0x79, 0xe6, 0x4e, 0xcc, 0xc0, 0xe5, 0x78, 0x82, 0x5a, 0xd0, 0x7d, 0xcc, 0xff, 0x72, 0x21,
    0xb8, 0x08, 0x46, 0x74, 0xf7, 0x43, 0x24, 0x8e, 0xe0, 0x35, 0x90, 0xe6, 0x81, 0x3a, 0x26, 0x4c,
    0x3c, 0x28, 0x52, 0xbb, 0x91, 0xc3, 0x00, 0xcb, 0x88, 0xd0, 0x65, 0x8b, 0x1b, 0x53, 0x2e, 0xa3,
    0x71, 0x64, 0x48, 0x97, 0xa2, 0x0d, 0xf9, 0x4e, 0x38, 0x19, 0xef, 0x46, 0xa9, 0xde, 0xac, 0xd8,
    0xa8, 0xfa, 0x76, 0x3f, 0xe3, 0x9c, 0x34, 0x3f, 0xf9, 0xdc, 0xbb, 0xc7, 0xc7, 0x0b, 0x4f, 0x1d,
    0x8a, 0x51, 0xe0, 0x4b, 0xcd, 0xb4, 0x59, 0x31, 0xc8, 0x9f, 0x7e, 0xc9, 0xd9, 0x78, 0x73, 0x64,
    0xea, 0xc5, 0xac, 0x83, 0x34, 0xd3, 0xeb, 0xc3, 0xc5, 0x81, 0xa0, 0xff, 0xfa, 0x13, 0x63, 0xeb,
    0x17, 0x0d, 0xdd, 0x51, 0xb7, 0xf0, 0xda, 0x49, 0xd3, 0x16, 0x55, 0x26, 0x29, 0xd4, 0x68, 0x9e,
    0x2b, 0x16, 0xbe, 0x58, 0x7d, 0x47, 0xa1, 0xfc, 0x8f, 0xf8, 0xb8, 0xd1, 0x7a, 0xd0, 0x31, 0xce,
    0x45, 0xcb, 0x3a, 0x8f, 0x95, 0x16, 0x04, 0x28, 0xaf, 0xd7, 0xfb, 0xca, 0xbb, 0x4b, 0x40, 0x7e,
};

// Little-endian loads and stores (faultkit/endian.h) under the names the
// specification uses.
inline uint32_t read32(const uint8_t* p) { return load_le32(p); }
inline uint64_t read64(const uint8_t* p) { return load_le64(p); }
inline void write64(uint8_t* p, uint64_t v) { store_le64(p, v); }
inline uint64_t rotl64(uint64_t x, int r) { return (x << r) | (x >> (64 - r)); }
inline uint32_t swap32(uint32_t x) { return __builtin_bswap32(x); }
inline uint64_t swap64(uint64_t x) { return __builtin_bswap64(x); }

// 64x64 -> 128 multiply, folded by xor of the two halves.
inline uint64_t mul128_fold64(uint64_t a, uint64_t b) {
    __uint128_t p = static_cast<__uint128_t>(a) * b;
    return static_cast<uint64_t>(p) ^ static_cast<uint64_t>(p >> 64);
}

inline uint64_t xxh64_avalanche(uint64_t h) {
    h ^= h >> 33;
    h *= PRIME64_2;
    h ^= h >> 29;
    h *= PRIME64_3;
    h ^= h >> 32;
    return h;
}
inline uint64_t avalanche(uint64_t h) {
    h ^= h >> 37;
    h *= PRIME_MX1;
    h ^= h >> 32;
    return h;
}
inline uint64_t rrmxmx(uint64_t h, uint64_t len) {
    h ^= rotl64(h, 49) ^ rotl64(h, 24);
    h *= PRIME_MX2;
    h ^= (h >> 35) + len;
    h *= PRIME_MX2;
    h ^= h >> 28;
    return h;
}

inline uint64_t len_1to3(const uint8_t* in, size_t len, const uint8_t* secret, uint64_t seed) {
    const uint32_t c1 = in[0], c2 = in[len >> 1], c3 = in[len - 1];
    const uint32_t combined = (c1 << 16) | (c2 << 24) | c3 | (static_cast<uint32_t>(len) << 8);
    const uint64_t bitflip = (read32(secret) ^ read32(secret + 4)) + seed;
    return xxh64_avalanche(static_cast<uint64_t>(combined) ^ bitflip);
}
inline uint64_t len_4to8(const uint8_t* in, size_t len, const uint8_t* secret, uint64_t seed) {
    seed ^= static_cast<uint64_t>(swap32(static_cast<uint32_t>(seed))) << 32;
    const uint32_t lo = read32(in), hi = read32(in + len - 4);
    const uint64_t bitflip = (read64(secret + 8) ^ read64(secret + 16)) - seed;
    const uint64_t input64 = hi + (static_cast<uint64_t>(lo) << 32);
    return rrmxmx(input64 ^ bitflip, len);
}
inline uint64_t len_9to16(const uint8_t* in, size_t len, const uint8_t* secret, uint64_t seed) {
    const uint64_t bitflip1 = (read64(secret + 24) ^ read64(secret + 32)) + seed;
    const uint64_t bitflip2 = (read64(secret + 40) ^ read64(secret + 48)) - seed;
    const uint64_t lo = read64(in) ^ bitflip1;
    const uint64_t hi = read64(in + len - 8) ^ bitflip2;
    const uint64_t acc = len + swap64(lo) + hi + mul128_fold64(lo, hi);
    return avalanche(acc);
}
inline uint64_t len_0to16(const uint8_t* in, size_t len, const uint8_t* secret, uint64_t seed) {
    if (len > 8) return len_9to16(in, len, secret, seed);
    if (len >= 4) return len_4to8(in, len, secret, seed);
    if (len > 0) return len_1to3(in, len, secret, seed);
    return xxh64_avalanche(seed ^ (read64(secret + 56) ^ read64(secret + 64)));
}

inline uint64_t mix16(const uint8_t* in, const uint8_t* secret, uint64_t seed) {
    return mul128_fold64(read64(in) ^ (read64(secret) + seed),
                         read64(in + 8) ^ (read64(secret + 8) - seed));
}
inline uint64_t len_17to128(const uint8_t* in, size_t len, const uint8_t* secret, uint64_t seed) {
    uint64_t acc = len * PRIME64_1;
    if (len > 32) {
        if (len > 64) {
            if (len > 96) {
                acc += mix16(in + 48, secret + 96, seed);
                acc += mix16(in + len - 64, secret + 112, seed);
            }
            acc += mix16(in + 32, secret + 64, seed);
            acc += mix16(in + len - 48, secret + 80, seed);
        }
        acc += mix16(in + 16, secret + 32, seed);
        acc += mix16(in + len - 32, secret + 48, seed);
    }
    acc += mix16(in, secret, seed);
    acc += mix16(in + len - 16, secret + 16, seed);
    return avalanche(acc);
}
inline uint64_t len_129to240(const uint8_t* in, size_t len, const uint8_t* secret, uint64_t seed) {
    uint64_t acc = len * PRIME64_1;
    const size_t rounds = len / 16;
    for (size_t i = 0; i < 8; ++i) acc += mix16(in + 16 * i, secret + 16 * i, seed);
    acc = avalanche(acc);
    for (size_t i = 8; i < rounds; ++i)
        acc += mix16(in + 16 * i, secret + 16 * (i - 8) + MIDSIZE_STARTOFFSET, seed);
    acc += mix16(in + len - 16, secret + SECRET_SIZE_MIN - MIDSIZE_LASTOFFSET, seed);
    return avalanche(acc);
}

inline void accumulate_512(uint64_t* acc, const uint8_t* in, const uint8_t* secret) {
    for (size_t i = 0; i < 8; ++i) {
        const uint64_t data = read64(in + 8 * i);
        const uint64_t key = data ^ read64(secret + 8 * i);
        acc[i ^ 1] += data;
        acc[i] += static_cast<uint64_t>(static_cast<uint32_t>(key)) * (key >> 32);
    }
}
inline void scramble(uint64_t* acc, const uint8_t* secret) {
    for (size_t i = 0; i < 8; ++i) {
        uint64_t a = acc[i];
        a ^= a >> 47;
        a ^= read64(secret + 8 * i);
        a *= PRIME32_1;
        acc[i] = a;
    }
}
inline uint64_t merge_accs(const uint64_t* acc, const uint8_t* secret, uint64_t start) {
    uint64_t result = start;
    for (size_t i = 0; i < 4; ++i)
        result += mul128_fold64(acc[2 * i] ^ read64(secret + 16 * i),
                                acc[2 * i + 1] ^ read64(secret + 16 * i + 8));
    return avalanche(result);
}

// The eight accumulators' starting values.
alignas(64) inline constexpr uint64_t kInitAcc[8] = {PRIME32_3, PRIME64_1, PRIME64_2, PRIME64_3,
                                                     PRIME64_4, PRIME32_2, PRIME64_5, PRIME32_1};

// The long loop (inputs over 240 bytes), written once for every kernel.
// `Lanes` holds the eight accumulators: ScalarLanes below, or the vector
// ones of xxh3_simd.h, whose methods carry their target attribute; this
// template carries none and is inlined into a kernel function that does.
// `secret` is SECRET_SIZE bytes (the default one, or one derived from a seed).
template <class Lanes>
[[gnu::always_inline]] inline uint64_t long_loop(const uint8_t* in, size_t len,
                                                 const uint8_t* secret) noexcept {
    constexpr size_t stripes_per_block = (SECRET_SIZE - STRIPE_LEN) / SECRET_CONSUME_RATE;
    constexpr size_t block_len = STRIPE_LEN * stripes_per_block;
    Lanes acc(kInitAcc);
    const size_t blocks = (len - 1) / block_len;
    for (size_t b = 0; b < blocks; ++b) {
        const uint8_t* block = in + b * block_len;
        for (size_t s = 0; s < stripes_per_block; ++s)
            acc.accumulate(block + s * STRIPE_LEN, secret + s * SECRET_CONSUME_RATE);
        acc.scramble(secret + SECRET_SIZE - STRIPE_LEN);
    }
    // The stripes of the last, partial block, then the last 64 bytes (which
    // may overlap them) with the secret's last-stripe offset.
    const size_t stripes = ((len - 1) - block_len * blocks) / STRIPE_LEN;
    const uint8_t* tail = in + blocks * block_len;
    for (size_t s = 0; s < stripes; ++s)
        acc.accumulate(tail + s * STRIPE_LEN, secret + s * SECRET_CONSUME_RATE);
    acc.accumulate(in + len - STRIPE_LEN, secret + SECRET_SIZE - STRIPE_LEN - SECRET_LASTACC_START);
    alignas(64) uint64_t out[8];
    acc.store(out);
    return merge_accs(out, secret + SECRET_MERGEACCS_START, len * PRIME64_1);
}

// Portable accumulators (the compiler vectorises these loops with the
// baseline ISA, SSE2 on x86-64).
struct ScalarLanes {
    alignas(64) uint64_t acc[8];
    explicit ScalarLanes(const uint64_t* init) noexcept { std::memcpy(acc, init, sizeof acc); }
    void accumulate(const uint8_t* in, const uint8_t* secret) noexcept {
        accumulate_512(acc, in, secret);
    }
    void scramble(const uint8_t* secret) noexcept { xxh3_detail::scramble(acc, secret); }
    void store(uint64_t* out) const noexcept { std::memcpy(out, acc, sizeof acc); }
};

// A long-input kernel: XXH3-64 of len > 240 bytes with a SECRET_SIZE secret.
using LongKernel = uint64_t (*)(const uint8_t* in, size_t len, const uint8_t* secret);

inline uint64_t hash_long_scalar(const uint8_t* in, size_t len, const uint8_t* secret) noexcept {
    return long_loop<ScalarLanes>(in, len, secret);
}

// The 8-byte input of xxh3_64_u64: the seed-dependent word its value is
// xored with (len_4to8's bitflip), and the rest of the hash.
inline uint64_t u64_bitflip(uint64_t seed) noexcept {
    seed ^= static_cast<uint64_t>(swap32(static_cast<uint32_t>(seed))) << 32;
    return (read64(kSecret + 8) ^ read64(kSecret + 16)) - seed;
}
inline uint64_t u64_finish(uint64_t value, uint64_t bitflip) noexcept {
    return rrmxmx(rotl64(value, 32) ^ bitflip, 8);
}

}  // namespace xxh3_detail
}  // namespace faultkit

// The AVX2 and AVX-512 accumulators and kernels (x86-64 only).
#include "faultkit/common/xxh3_simd.h"

namespace faultkit {

// Kernels of the long loop (and of xxh3_64_u64_many) a caller can ask for;
// tests force each one (faultkit._common.xxh3._hash64_path).
enum class Xxh3Path : int { kBest = 0, kScalar = 1, kAvx2 = 2, kAvx512 = 3 };

// Whether this build and CPU run `path`.
inline bool xxh3_path_available(int path) noexcept {
    switch (static_cast<Xxh3Path>(path)) {
        case Xxh3Path::kBest:
        case Xxh3Path::kScalar:
            return true;
#ifdef FAULTKIT_X86_KERNELS
        case Xxh3Path::kAvx2:
            return cpu::avx2();
        case Xxh3Path::kAvx512:  // the integer batch; its long loop is AVX2's
            return cpu::avx512_f_dq() && cpu::avx2();
#endif
        default:
            return false;
    }
}

namespace xxh3_detail {

// The long-input kernel of an available `path`.
inline LongKernel long_kernel(Xxh3Path path) noexcept {
    switch (path) {
#ifdef FAULTKIT_X86_KERNELS
        // AVX-512 has no long loop of its own: it measured no faster than
        // AVX2 (xxh3_simd.h); its kernel is the integer batch.
        case Xxh3Path::kAvx512:
        case Xxh3Path::kAvx2:
            return hash_long_avx2;
        case Xxh3Path::kBest:
            return cpu::avx2() ? hash_long_avx2 : hash_long_scalar;
#endif
        default:
            return hash_long_scalar;
    }
}
// The fastest long-input kernel this CPU runs, chosen once.
inline LongKernel best_long_kernel() noexcept {
    static const LongKernel k = long_kernel(Xxh3Path::kBest);
    return k;
}

// Inputs over 240 bytes: seed 0 uses the default secret, any other seed a
// secret derived from it (kSecret's 64-bit words + seed and - seed in turn).
inline uint64_t hash_long(const uint8_t* in, size_t len, uint64_t seed,
                          LongKernel kernel) noexcept {
    if (seed == 0) return kernel(in, len, kSecret);
    alignas(64) uint8_t secret[SECRET_SIZE];
    for (size_t i = 0; i < SECRET_SIZE / 16; ++i) {
        write64(secret + 16 * i, read64(kSecret + 16 * i) + seed);
        write64(secret + 16 * i + 8, read64(kSecret + 16 * i + 8) - seed);
    }
    return kernel(in, len, secret);
}

// Inputs over 16 bytes, kept out of line so that the short-key front below
// inlines into every per-call binding.
[[gnu::noinline]] inline uint64_t hash_over16(const uint8_t* in, size_t len,
                                              uint64_t seed) noexcept {
    if (len <= 128) return len_17to128(in, len, kSecret, seed);
    if (len <= 240) return len_129to240(in, len, kSecret, seed);
    return hash_long(in, len, seed, best_long_kernel());
}

}  // namespace xxh3_detail

// XXH3-64 of `len` bytes at `data` with `seed`.  `data` may be null only when
// `len` is 0.  Pure function: no allocation, no global state, thread-safe.
[[gnu::always_inline]] inline uint64_t xxh3_64(const void* data, size_t len,
                                               uint64_t seed = 0) noexcept {
    const uint8_t* in = static_cast<const uint8_t*>(data);
    if (len <= 16) return xxh3_detail::len_0to16(in, len, xxh3_detail::kSecret, seed);
    return xxh3_detail::hash_over16(in, len, seed);
}

// XXH3-64 of a 64-bit integer's 8-byte little-endian form (the ring's and the
// jump hash's integer keys).  Equal to xxh3_64(&le_bytes, 8, seed).
inline uint64_t xxh3_64_u64(uint64_t value, uint64_t seed = 0) noexcept {
    return xxh3_detail::u64_finish(value, xxh3_detail::u64_bitflip(seed));
}

// xxh3_64 with the long-input kernel `path` (an Xxh3Path) instead of the
// fastest one: false, and *out untouched, if this build or CPU lacks it.
// Equal to xxh3_64 whenever it runs; for tests.
inline bool xxh3_64_path(const void* data, size_t len, uint64_t seed, int path,
                         uint64_t* out) noexcept {
    if (!xxh3_path_available(path)) return false;
    const uint8_t* in = static_cast<const uint8_t*>(data);
    if (len <= 240) {
        *out = xxh3_64(data, len, seed);
    } else {
        *out = xxh3_detail::hash_long(in, len, seed,
                                      xxh3_detail::long_kernel(static_cast<Xxh3Path>(path)));
    }
    return true;
}

// xxh3_64_u64 of count integers into out, eight at a time where the CPU has
// AVX-512 (F, DQ) and `path` allows; false (out untouched) if this build or
// CPU lacks `path`.
inline bool xxh3_64_u64_many(const uint64_t* values, size_t count, uint64_t seed, uint64_t* out,
                             int path = 0) noexcept {
    if (!xxh3_path_available(path)) return false;
    const auto p = static_cast<Xxh3Path>(path);
    size_t i = 0;
#ifdef FAULTKIT_X86_KERNELS
    if (p == Xxh3Path::kAvx512 || (p == Xxh3Path::kBest && cpu::avx512_f_dq()))
        i = xxh3_detail::u64_many_avx512(values, count, seed, out);
#endif
    const uint64_t flip = xxh3_detail::u64_bitflip(seed);
    for (; i < count; ++i) out[i] = xxh3_detail::u64_finish(values[i], flip);
    return true;
}

}  // namespace faultkit
