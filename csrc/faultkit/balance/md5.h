// MD5 (RFC 1321), for ketama-compatible rings only: libketama places points
// and hashes keys with MD5, so bit-compatibility needs it.  Not for security.
// Header-only, portable C++17, no Python, no allocation.
//
// Why hand-written (measured, docs/benchmarks.md "Layout (#11)"): ketama's
// get() hashes every key, and a whole get() costs ~140 ns while
// hashlib.md5(key).digest() alone costs ~530 ns a 16-byte key; building the
// points with hashlib too would be 1.8x slower (25 vs 14 ms, 1,000 nodes) and
// still leave this code for get().  OpenSSL's one-shot MD5() is ~10% faster
// but deprecated in OpenSSL 3, its EVP_Digest is 1.3-2.5x slower, and
// libcrypto is optional in the build (detect._recv links it only where
// found), while ketama rings must work everywhere.  MD5 is 64 steps.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>

namespace faultkit {
namespace md5_detail {

inline uint32_t rotl(uint32_t x, int c) noexcept { return (x << c) | (x >> (32 - c)); }

inline uint32_t load_le32(const uint8_t* p) noexcept {
    return uint32_t{p[0]} | (uint32_t{p[1]} << 8) | (uint32_t{p[2]} << 16) | (uint32_t{p[3]} << 24);
}

// The sine-derived constants K[i] = floor(2^32 * |sin(i + 1)|) of RFC 1321,
// section 3.4.
inline constexpr uint32_t kSine[64] = {
    0xd76aa478, 0xe8c7b756, 0x242070db, 0xc1bdceee, 0xf57c0faf, 0x4787c62a, 0xa8304613, 0xfd469501,
    0x698098d8, 0x8b44f7af, 0xffff5bb1, 0x895cd7be, 0x6b901122, 0xfd987193, 0xa679438e, 0x49b40821,
    0xf61e2562, 0xc040b340, 0x265e5a51, 0xe9b6c7aa, 0xd62f105d, 0x02441453, 0xd8a1e681, 0xe7d3fbc8,
    0x21e1cde6, 0xc33707d6, 0xf4d50d87, 0x455a14ed, 0xa9e3e905, 0xfcefa3f8, 0x676f02d9, 0x8d2a4c8a,
    0xfffa3942, 0x8771f681, 0x6d9d6122, 0xfde5380c, 0xa4beea44, 0x4bdecfa9, 0xf6bb4b60, 0xbebfbc70,
    0x289b7ec6, 0xeaa127fa, 0xd4ef3085, 0x04881d05, 0xd9d4d039, 0xe6db99e5, 0x1fa27cf8, 0xc4ac5665,
    0xf4292244, 0x432aff97, 0xab9423a7, 0xfc93a039, 0x655b59c3, 0x8f0ccc92, 0xffeff47d, 0x85845dd1,
    0x6fa87e4f, 0xfe2ce6e0, 0xa3014314, 0x4e0811a1, 0xf7537e82, 0xbd3af235, 0x2ad7d2bb, 0xeb86d391};

// One MD5 step: a += F(b, c, d) + m + k; a = b + rotl(a, s); then rotate
// the roles (a, b, c, d) -> (d, a, b, c), written as explicit rounds so the
// compiler keeps everything in registers and the shifts are constants.
#define FAULTKIT_MD5_STEP(f, a, b, c, d, x, k, s) \
    do {                                          \
        (a) += f((b), (c), (d)) + (x) + (k);      \
        (a) = (b) + rotl((a), (s));               \
    } while (0)
#define FAULTKIT_MD5_F(x, y, z) (((x) & (y)) | (~(x) & (z)))
#define FAULTKIT_MD5_G(x, y, z) (((z) & (x)) | (~(z) & (y)))
#define FAULTKIT_MD5_H(x, y, z) ((x) ^ (y) ^ (z))
#define FAULTKIT_MD5_I(x, y, z) ((y) ^ ((x) | ~(z)))

inline void compress(uint32_t state[4], const uint8_t block[64]) noexcept {
    uint32_t m[16];
    for (int i = 0; i < 16; ++i) m[i] = load_le32(block + 4 * i);
    uint32_t a = state[0], b = state[1], c = state[2], d = state[3];
    // Round 1: F, message word i.
    for (int i = 0; i < 16; i += 4) {
        FAULTKIT_MD5_STEP(FAULTKIT_MD5_F, a, b, c, d, m[i + 0], kSine[i + 0], 7);
        FAULTKIT_MD5_STEP(FAULTKIT_MD5_F, d, a, b, c, m[i + 1], kSine[i + 1], 12);
        FAULTKIT_MD5_STEP(FAULTKIT_MD5_F, c, d, a, b, m[i + 2], kSine[i + 2], 17);
        FAULTKIT_MD5_STEP(FAULTKIT_MD5_F, b, c, d, a, m[i + 3], kSine[i + 3], 22);
    }
    // Round 2: G, message word (5i + 1) mod 16.
    for (int i = 16; i < 32; i += 4) {
        FAULTKIT_MD5_STEP(FAULTKIT_MD5_G, a, b, c, d, m[(5 * i + 1) & 15], kSine[i + 0], 5);
        FAULTKIT_MD5_STEP(FAULTKIT_MD5_G, d, a, b, c, m[(5 * i + 6) & 15], kSine[i + 1], 9);
        FAULTKIT_MD5_STEP(FAULTKIT_MD5_G, c, d, a, b, m[(5 * i + 11) & 15], kSine[i + 2], 14);
        FAULTKIT_MD5_STEP(FAULTKIT_MD5_G, b, c, d, a, m[(5 * i + 16) & 15], kSine[i + 3], 20);
    }
    // Round 3: H, message word (3i + 5) mod 16.
    for (int i = 32; i < 48; i += 4) {
        FAULTKIT_MD5_STEP(FAULTKIT_MD5_H, a, b, c, d, m[(3 * i + 5) & 15], kSine[i + 0], 4);
        FAULTKIT_MD5_STEP(FAULTKIT_MD5_H, d, a, b, c, m[(3 * i + 8) & 15], kSine[i + 1], 11);
        FAULTKIT_MD5_STEP(FAULTKIT_MD5_H, c, d, a, b, m[(3 * i + 11) & 15], kSine[i + 2], 16);
        FAULTKIT_MD5_STEP(FAULTKIT_MD5_H, b, c, d, a, m[(3 * i + 14) & 15], kSine[i + 3], 23);
    }
    // Round 4: I, message word 7i mod 16.
    for (int i = 48; i < 64; i += 4) {
        FAULTKIT_MD5_STEP(FAULTKIT_MD5_I, a, b, c, d, m[(7 * i) & 15], kSine[i + 0], 6);
        FAULTKIT_MD5_STEP(FAULTKIT_MD5_I, d, a, b, c, m[(7 * i + 7) & 15], kSine[i + 1], 10);
        FAULTKIT_MD5_STEP(FAULTKIT_MD5_I, c, d, a, b, m[(7 * i + 14) & 15], kSine[i + 2], 15);
        FAULTKIT_MD5_STEP(FAULTKIT_MD5_I, b, c, d, a, m[(7 * i + 21) & 15], kSine[i + 3], 21);
    }
    state[0] += a;
    state[1] += b;
    state[2] += c;
    state[3] += d;
}

#undef FAULTKIT_MD5_STEP
#undef FAULTKIT_MD5_F
#undef FAULTKIT_MD5_G
#undef FAULTKIT_MD5_H
#undef FAULTKIT_MD5_I

}  // namespace md5_detail

// The 16-byte MD5 digest of `len` bytes at `data` (null allowed when len is 0).
inline void md5(const void* data, size_t len, uint8_t digest[16]) noexcept {
    using namespace md5_detail;
    uint32_t state[4] = {0x67452301, 0xefcdab89, 0x98badcfe, 0x10325476};
    const uint8_t* in = static_cast<const uint8_t*>(data);
    size_t full = len / 64;
    for (size_t i = 0; i < full; ++i) compress(state, in + 64 * i);
    // Final block(s): the tail, a 0x80 byte, zeros, and the bit length (LE).
    uint8_t tail[128] = {0};
    const size_t rest = len - 64 * full;
    if (rest) std::memcpy(tail, in + 64 * full, rest);
    tail[rest] = 0x80;
    const size_t tail_len = rest < 56 ? 64 : 128;
    const uint64_t bits = static_cast<uint64_t>(len) * 8;
    for (int i = 0; i < 8; ++i) tail[tail_len - 8 + i] = static_cast<uint8_t>(bits >> (8 * i));
    compress(state, tail);
    if (tail_len == 128) compress(state, tail + 64);
    for (int i = 0; i < 4; ++i)
        for (int j = 0; j < 4; ++j) digest[4 * i + j] = static_cast<uint8_t>(state[i] >> (8 * j));
}

// libketama's key hash: the first four digest bytes as a little-endian
// uint32 (ketama_hashi in libketama's ketama.c).
inline uint32_t ketama_hash(const void* data, size_t len) noexcept {
    uint8_t d[16];
    md5(data, len, d);
    return md5_detail::load_le32(d);
}

}  // namespace faultkit
