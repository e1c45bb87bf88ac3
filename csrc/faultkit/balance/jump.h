// Jump consistent hash (Lamping & Veach, "A Fast, Minimal Memory, Consistent
// Hash Algorithm", 2014), the paper's code verbatim: same integer and double
// arithmetic, so it agrees bit for bit with the reference C implementation.
// Header-only, no Python; the array form's AVX-512 kernel allocates one ~30 KB
// scratch block a call (never per key), the others nothing.
//
// jump_hash_many runs the fastest kernel this CPU has, chosen once at run time
// (faultkit/common/cpu.h), so wheels stay baseline x86-64: AVX-512 (F, DQ,
// VL), then AVX2 + FMA, then portable C++.  Every kernel computes exactly the
// scalar loop's values (see "Why the vector kernels are bit-identical" below).
#pragma once

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <new>

#include "faultkit/common/cpu.h"

namespace faultkit {

// The bucket in [0, num_buckets) of a 64-bit key; num_buckets must be >= 1.
inline int32_t jump_hash(uint64_t key, int32_t num_buckets) noexcept {
    int64_t b = -1, j = 0;
    while (j < num_buckets) {
        b = j;
        key = key * 2862933555777941757ULL + 1;
        j = static_cast<int64_t>(
            (b + 1) * (static_cast<double>(1LL << 31) / static_cast<double>((key >> 33) + 1)));
    }
    return static_cast<int32_t>(b);
}

namespace jump_detail {

constexpr uint64_t kMul = 2862933555777941757ULL;

// Portable: the loop of one key is a chain of dependent multiplies and a
// division (~ln(n) rounds), so lanes of kLanes keys advance in lockstep and
// the CPU overlaps their chains.  A lane that has finished keeps its values
// (selects, not branches); the arithmetic of each lane is exactly the
// scalar loop's, so results are bit-identical.
inline void many_portable(const uint64_t* keys, size_t count, int32_t num_buckets,
                          int32_t* out) noexcept {
    constexpr size_t kLanes = 8;
    const size_t full = count - count % kLanes;
    for (size_t i = 0; i < full; i += kLanes) {
        uint64_t key[kLanes];
        int64_t b[kLanes], j[kLanes];
        for (size_t l = 0; l < kLanes; ++l) {
            key[l] = keys[i + l];
            b[l] = -1;
            j[l] = 0;
        }
        for (;;) {
            bool active = false;
            for (size_t l = 0; l < kLanes; ++l) active |= j[l] < num_buckets;
            if (!active) break;
            for (size_t l = 0; l < kLanes; ++l) {
                const bool on = j[l] < num_buckets;
                const int64_t nb = on ? j[l] : b[l];
                const uint64_t nk = key[l] * kMul + 1;
                // (nk >> 33) + 1 <= 2^31: converting it as signed is exact
                // and avoids the compiler's unsigned-to-double sequence.
                const double x = static_cast<double>(static_cast<int64_t>(nk >> 33) + 1);
                const int64_t nj =
                    static_cast<int64_t>(static_cast<double>(nb + 1) * (2147483648.0 / x));
                b[l] = nb;
                key[l] = on ? nk : key[l];
                j[l] = on ? nj : j[l];
            }
        }
        for (size_t l = 0; l < kLanes; ++l) out[i + l] = static_cast<int32_t>(b[l]);
    }
    for (size_t i = full; i < count; ++i) out[i] = jump_hash(keys[i], num_buckets);
}

// Why the vector kernels are bit-identical.  They keep the bucket j as a
// double (always an integer below 2^31, so exact) and compute one round as
//   d  = (key >> 33) + 1      built exactly: the 31-bit value is put in the
//                              mantissa of 2^52 (an OR) and 2^52 - 1 is
//                              subtracted (exact: the result has <= 32 bits);
//   q  = 2^31 / d              the IEEE division, correctly rounded: the same
//                              double as the scalar code's division;
//   j' = trunc(fma(j, q, q))   fma rounds j*q + q = (j+1)*q once, which is the
//                              scalar fl((b+1) * q) since j+1 is exact; the
//                              product is < 2^62, so trunc equals the int64
//                              conversion;
//   continue while j' < n      compared as doubles, exact for these integers.
// A lane's result is its last j below n, as the scalar b.
//
// Rounds per key vary (about ln(n) + 0.6 on average, standard deviation about
// sqrt(ln n)), so lanes that run in lockstep until the slowest is done idle a
// third of the time at n = 1000.  The AVX-512 kernel avoids most of that:
//  1. Blocks of 8 keys run K rounds in lockstep (K ~ the mean number of
//     rounds, from n); keys finished by then are written in place, and the
//     others are compressed into a small queue with their index.
//  2. Vectors of 8 lanes take keys from that queue: every 2 rounds, lanes that
//     finished hand their (index, bucket) to a staging buffer and are refilled
//     from the queue (vpcompressq / vpexpandq); the staging buffer is scattered
//     to `out` by a scalar loop.  The queue is topped up by step 1, chunk by
//     chunk, so every buffer is small (one ~30 KB scratch block a call, kept off
//     the stack for small thread stacks) and stays in L1/L2.

#ifdef FAULTKIT_X86_KERNELS

#define FAULTKIT_JUMP_AVX512 FAULTKIT_TARGET_AVX512_F_DQ_VL
#define FAULTKIT_JUMP_AVX2 FAULTKIT_TARGET_AVX2_FMA

// Lockstep rounds for blocks: the mean number of rounds (ln n + 0.58), rounded
// down.  Measured at n = 1000 (K = 7): 3.4 ns a key against 3.6-3.8 for K = 5-6
// and 3.9 for refilling from the input directly (docs/benchmarks.md).
inline int lockstep_rounds(int32_t num_buckets) noexcept {
    const int k = static_cast<int>(std::log(static_cast<double>(num_buckets)) + 0.58);
    return k < 1 ? 1 : k;
}

// GCC 12 reports its own intrinsics' _mm512_undefined_* placeholders as
// "may be used uninitialized" once they are inlined here (a false positive).
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif

namespace avx512 {

// The constants of a round, in registers.
struct Consts {
    __m512i mul, one, expo, iota_hi;
    __m512d magic, two31, n, zero;
};

FAULTKIT_JUMP_AVX512 inline Consts make_consts(int32_t num_buckets) noexcept {
    Consts c;
    c.mul = _mm512_set1_epi64(static_cast<long long>(kMul));
    c.one = _mm512_set1_epi64(1);
    c.expo = _mm512_set1_epi64(0x4330000000000000LL);  // the bits of 2^52
    c.iota_hi = _mm512_set_epi64(7LL << 32, 6LL << 32, 5LL << 32, 4LL << 32, 3LL << 32, 2LL << 32,
                                 1LL << 32, 0);
    c.magic = _mm512_set1_pd(4503599627370495.0);  // 2^52 - 1
    c.two31 = _mm512_set1_pd(2147483648.0);
    c.n = _mm512_set1_pd(static_cast<double>(num_buckets));
    c.zero = _mm512_setzero_pd();
    return c;
}

// One round for the lanes in `on`; lanes leave `on` when their next j >= n
// and keep their last j (the result).
FAULTKIT_JUMP_AVX512 __attribute__((always_inline)) inline void step(const Consts& c, __m512i& key,
                                                                     __m512d& j,
                                                                     __mmask8& on) noexcept {
    key = _mm512_add_epi64(_mm512_mullo_epi64(key, c.mul), c.one);
    const __m512d d = _mm512_sub_pd(
        _mm512_castsi512_pd(_mm512_or_si512(_mm512_srli_epi64(key, 33), c.expo)), c.magic);
    const __m512d q = _mm512_div_pd(c.two31, d);
    const __m512d nj =
        _mm512_roundscale_pd(_mm512_fmadd_pd(j, q, q), _MM_FROUND_TO_ZERO | _MM_FROUND_NO_EXC);
    on = _mm512_mask_cmp_pd_mask(on, nj, c.n, _CMP_LT_OQ);
    j = _mm512_mask_mov_pd(j, on, nj);
}

// Keys that outlived the lockstep rounds: key, j and (index << 32), index
// relative to the start of the call.  Chunks of 1,024 keys: 256 cost ~3%
// (more top-ups), 128 ~7%.
struct Queue {
    static constexpr size_t kChunk = 1024;  // input keys per top-up
    // Topped up only below 64 keys; a chunk adds at most kChunk, and a
    // compressed store writes 8 lanes past the end.
    static constexpr size_t kCap = 64 + kChunk + 8;
    alignas(64) uint64_t key[kCap];
    alignas(64) uint64_t idx[kCap];
    alignas(64) double j[kCap];
    size_t rd = 0, wr = 0, in = 0;
};

// Finished (index << 32 | bucket) records, scattered to out in batches.
struct Stage {
    static constexpr size_t kFlush = 256;
    alignas(64) uint64_t rec[kFlush + 8 * 8 + 8];
    size_t count = 0;
    void flush(int32_t* out) noexcept {
        for (size_t s = 0; s < count; ++s) out[rec[s] >> 32] = static_cast<int32_t>(rec[s]);
        count = 0;
    }
};

// Step 1 on the next input chunks until the queue holds `want` keys or the
// input is used up.
FAULTKIT_JUMP_AVX512 __attribute__((noinline)) inline void top_up(Queue& q, size_t want,
                                                                  const uint64_t* keys,
                                                                  size_t count, int32_t num_buckets,
                                                                  int rounds,
                                                                  int32_t* out) noexcept {
    const Consts c = make_consts(num_buckets);
    constexpr int kBlocks = 8;  // independent vectors in flight
    while (q.wr - q.rd < want && q.in < count) {
        if (q.rd) {  // move what is left to the front
            const size_t left = q.wr - q.rd;
            std::memmove(q.key, q.key + q.rd, left * sizeof(uint64_t));
            std::memmove(q.idx, q.idx + q.rd, left * sizeof(uint64_t));
            std::memmove(q.j, q.j + q.rd, left * sizeof(double));
            q.rd = 0;
            q.wr = left;
        }
        const size_t m = count - q.in < Queue::kChunk ? count - q.in : Queue::kChunk;
        size_t wr = q.wr;
        for (size_t v = 0; v < m; v += 8 * kBlocks) {
            __m512i key[kBlocks];
            __m512d j[kBlocks];
            __mmask8 on[kBlocks];
            for (int u = 0; u < kBlocks; ++u) {
                const size_t at = v + 8 * u;
                on[u] = at >= m       ? 0
                        : m - at >= 8 ? 0xff
                                      : static_cast<__mmask8>((1u << (m - at)) - 1);
                key[u] = _mm512_maskz_loadu_epi64(on[u], keys + q.in + (at < m ? at : 0));
                j[u] = c.zero;
            }
            for (int r = 0; r < rounds; ++r)
                for (int u = 0; u < kBlocks; ++u) step(c, key[u], j[u], on[u]);
            for (int u = 0; u < kBlocks; ++u) {
                const size_t at = v + 8 * u;
                if (at >= m) break;
                const size_t pos = q.in + at;
                const __mmask8 valid =
                    m - at >= 8 ? 0xff : static_cast<__mmask8>((1u << (m - at)) - 1);
                _mm256_mask_storeu_epi32(out + pos, valid & static_cast<__mmask8>(~on[u]),
                                         _mm512_cvttpd_epi32(j[u]));
                _mm512_storeu_si512(q.key + wr, _mm512_maskz_compress_epi64(on[u], key[u]));
                _mm512_storeu_pd(q.j + wr, _mm512_maskz_compress_pd(on[u], j[u]));
                const __m512i idx = _mm512_add_epi64(
                    _mm512_set1_epi64(static_cast<long long>(pos << 32)), c.iota_hi);
                _mm512_storeu_si512(q.idx + wr, _mm512_maskz_compress_epi64(on[u], idx));
                wr += static_cast<size_t>(__builtin_popcount(on[u]));
            }
        }
        q.wr = wr;
        q.in += m;
    }
}

// count < 2^32 (indices are packed above the bucket in 64 bits).
FAULTKIT_JUMP_AVX512 inline void many_part(const uint64_t* keys, size_t count, int32_t num_buckets,
                                           int32_t* out, Queue& q, Stage& st) noexcept {
    constexpr int kVecs = 8;  // vectors of lanes in flight
    constexpr int kRounds = 2;  // rounds between refills
    constexpr size_t kLanes = 8 * kVecs;
    const Consts c = make_consts(num_buckets);
    const int rounds = lockstep_rounds(num_buckets);
    q.rd = q.wr = q.in = 0;
    st.count = 0;
    top_up(q, kLanes, keys, count, num_buckets, rounds, out);
    if (q.wr - q.rd >= kLanes) {
        __m512i key[kVecs], idx[kVecs];
        __m512d j[kVecs];
        __mmask8 on[kVecs];
        for (int u = 0; u < kVecs; ++u) {
            key[u] = _mm512_loadu_si512(q.key + q.rd);
            j[u] = _mm512_loadu_pd(q.j + q.rd);
            idx[u] = _mm512_loadu_si512(q.idx + q.rd);
            q.rd += 8;
        }
        for (;;) {
            for (int u = 0; u < kVecs; ++u) on[u] = 0xff;
            for (int r = 0; r < kRounds; ++r)
                for (int u = 0; u < kVecs; ++u) step(c, key[u], j[u], on[u]);
            if (q.wr - q.rd < kLanes) {
                top_up(q, kLanes, keys, count, num_buckets, rounds, out);
                if (q.wr - q.rd < kLanes) break;  // input used up: drain below
            }
            size_t rd = q.rd;
            for (int u = 0; u < kVecs; ++u) {
                const __mmask8 done = static_cast<__mmask8>(~on[u]);
                const __m512i rec = _mm512_or_si512(idx[u], _mm512_cvttpd_epi64(j[u]));
                _mm512_storeu_si512(st.rec + st.count, _mm512_maskz_compress_epi64(done, rec));
                st.count += static_cast<size_t>(__builtin_popcount(done));
                key[u] = _mm512_mask_expand_epi64(key[u], done, _mm512_loadu_si512(q.key + rd));
                j[u] = _mm512_mask_expand_pd(j[u], done, _mm512_loadu_pd(q.j + rd));
                idx[u] = _mm512_mask_expand_epi64(idx[u], done, _mm512_loadu_si512(q.idx + rd));
                rd += static_cast<size_t>(__builtin_popcount(done));
            }
            q.rd = rd;
            if (st.count >= Stage::kFlush) st.flush(out);
        }
        for (int u = 0; u < kVecs; ++u) {  // finish the lanes in flight
            while (on[u]) step(c, key[u], j[u], on[u]);
            _mm512_storeu_si512(st.rec + st.count,
                                _mm512_or_si512(idx[u], _mm512_cvttpd_epi64(j[u])));
            st.count += 8;
            if (st.count >= Stage::kFlush) st.flush(out);
        }
    }
    while (q.rd < q.wr) {  // what is left in the queue (< kLanes keys)
        const size_t left = q.wr - q.rd;
        const __mmask8 valid = left >= 8 ? 0xff : static_cast<__mmask8>((1u << left) - 1);
        __m512i key = _mm512_maskz_loadu_epi64(valid, q.key + q.rd);
        __m512d j = _mm512_maskz_loadu_pd(valid, q.j + q.rd);
        const __m512i idx = _mm512_maskz_loadu_epi64(valid, q.idx + q.rd);
        __mmask8 on = valid;
        while (on) step(c, key, j, on);
        _mm512_storeu_si512(
            st.rec + st.count,
            _mm512_maskz_compress_epi64(valid, _mm512_or_si512(idx, _mm512_cvttpd_epi64(j))));
        st.count += static_cast<size_t>(__builtin_popcount(valid));
        q.rd += left >= 8 ? 8 : left;
        if (st.count >= Stage::kFlush) st.flush(out);
    }
    st.flush(out);
}

// The queue and staging buffer (~30 KB): on the heap, once a call, so that a
// thread with a small stack (Python allows 32 KiB) can call this too.
struct Scratch {
    Queue q;
    Stage st;
};

// False (out untouched) if the scratch memory could not be had.
FAULTKIT_JUMP_AVX512 inline bool many(const uint64_t* keys, size_t count, int32_t num_buckets,
                                      int32_t* out) noexcept {
    Scratch* scratch = new (std::nothrow) Scratch;
    if (scratch == nullptr) return false;
    constexpr size_t kPart = size_t{1} << 31;
    for (size_t off = 0; off < count; off += kPart) {
        const size_t m = count - off < kPart ? count - off : kPart;
        many_part(keys + off, m, num_buckets, out + off, scratch->q, scratch->st);
    }
    delete scratch;
    return true;
}

inline bool available() noexcept { return cpu::avx512_f_dq_vl(); }

}  // namespace avx512

#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic pop
#endif

namespace avx2 {

// AVX2 has no 64-bit multiply, mask registers, compress or expand, so this
// kernel runs blocks of 16 keys (4 vectors of 4) in lockstep until all are
// done; key * kMul (mod 2^64) is built from three 32 x 32 -> 64 products.
FAULTKIT_JUMP_AVX2 inline void many(const uint64_t* keys, size_t count, int32_t num_buckets,
                                    int32_t* out) noexcept {
    constexpr int kVecs = 4;
    const __m256i mul_lo = _mm256_set1_epi64x(static_cast<long long>(kMul & 0xFFFFFFFFu));
    const __m256i mul_hi = _mm256_set1_epi64x(static_cast<long long>(kMul >> 32));
    const __m256i one = _mm256_set1_epi64x(1);
    const __m256i expo = _mm256_set1_epi64x(0x4330000000000000LL);
    const __m256d magic = _mm256_set1_pd(4503599627370495.0);
    const __m256d two31 = _mm256_set1_pd(2147483648.0);
    const __m256d n = _mm256_set1_pd(static_cast<double>(num_buckets));
    size_t i = 0;
    for (; i + 4 * kVecs <= count; i += 4 * kVecs) {
        __m256i key[kVecs];
        __m256d j[kVecs], on[kVecs];
        for (int u = 0; u < kVecs; ++u) {
            key[u] = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(keys + i + 4 * u));
            j[u] = _mm256_setzero_pd();
            on[u] = _mm256_castsi256_pd(_mm256_set1_epi64x(-1));
        }
        for (;;) {
            __m256d any = on[0];
            for (int u = 1; u < kVecs; ++u) any = _mm256_or_pd(any, on[u]);
            if (_mm256_testz_pd(any, any)) break;
            for (int u = 0; u < kVecs; ++u) {
                const __m256i k = key[u];
                const __m256i cross =
                    _mm256_add_epi64(_mm256_mul_epu32(_mm256_srli_epi64(k, 32), mul_lo),
                                     _mm256_mul_epu32(k, mul_hi));
                key[u] = _mm256_add_epi64(
                    _mm256_add_epi64(_mm256_mul_epu32(k, mul_lo), _mm256_slli_epi64(cross, 32)),
                    one);
                const __m256d d = _mm256_sub_pd(
                    _mm256_castsi256_pd(_mm256_or_si256(_mm256_srli_epi64(key[u], 33), expo)),
                    magic);
                const __m256d q = _mm256_div_pd(two31, d);
                const __m256d nj = _mm256_round_pd(_mm256_fmadd_pd(j[u], q, q),
                                                   _MM_FROUND_TO_ZERO | _MM_FROUND_NO_EXC);
                on[u] = _mm256_and_pd(on[u], _mm256_cmp_pd(nj, n, _CMP_LT_OQ));
                j[u] = _mm256_blendv_pd(j[u], nj, on[u]);
            }
        }
        for (int u = 0; u < kVecs; ++u)
            _mm_storeu_si128(reinterpret_cast<__m128i*>(out + i + 4 * u),
                             _mm256_cvttpd_epi32(j[u]));
    }
    for (; i < count; ++i) out[i] = jump_hash(keys[i], num_buckets);
}

inline bool available() noexcept { return cpu::avx2_fma(); }

}  // namespace avx2

#endif  // FAULTKIT_X86_KERNELS

}  // namespace jump_detail

// Kernels jump_hash_many_path can be asked for.
enum class JumpPath : int { kBest = 0, kPortable = 1, kAvx2 = 2, kAvx512 = 3 };

inline bool jump_path_available(int path) noexcept {
    switch (static_cast<JumpPath>(path)) {
        case JumpPath::kBest:
        case JumpPath::kPortable:
            return true;
#ifdef FAULTKIT_X86_KERNELS
        case JumpPath::kAvx512:
            return jump_detail::avx512::available();
        case JumpPath::kAvx2:
            return jump_detail::avx2::available();
#endif
        default:
            return false;
    }
}

// jump_hash of count keys into out with the given kernel; false (and out
// untouched) if this CPU or build lacks it.
inline bool jump_hash_many_path(const uint64_t* keys, size_t count, int32_t num_buckets,
                                int32_t* out, int path) noexcept {
    if (!jump_path_available(path)) return false;
    switch (static_cast<JumpPath>(path)) {
#ifdef FAULTKIT_X86_KERNELS
        case JumpPath::kAvx512:
            if (jump_detail::avx512::many(keys, count, num_buckets, out)) return true;
            break;  // no scratch memory: the portable kernel needs none
        case JumpPath::kAvx2:
            jump_detail::avx2::many(keys, count, num_buckets, out);
            return true;
        case JumpPath::kBest:
            if (jump_detail::avx512::available() &&
                jump_detail::avx512::many(keys, count, num_buckets, out))
                return true;
            if (jump_detail::avx2::available()) {
                jump_detail::avx2::many(keys, count, num_buckets, out);
                return true;
            }
            break;
#endif
        default:
            break;
    }
    jump_detail::many_portable(keys, count, num_buckets, out);
    return true;
}

// jump_hash of count keys into out (num_buckets >= 1), with the fastest kernel
// this CPU runs.
inline void jump_hash_many(const uint64_t* keys, size_t count, int32_t num_buckets,
                           int32_t* out) noexcept {
    jump_hash_many_path(keys, count, num_buckets, out, static_cast<int>(JumpPath::kBest));
}

}  // namespace faultkit
