// Jump consistent hash (Lamping & Veach, "A Fast, Minimal Memory, Consistent
// Hash Algorithm", 2014), the paper's code verbatim: same integer and double
// arithmetic, so it agrees bit for bit with the reference C implementation.
// Header-only, no Python, no allocation.
#pragma once

#include <cstddef>
#include <cstdint>

namespace faultkit {

// The bucket in [0, num_buckets) of a 64-bit key; num_buckets must be >= 1.
inline int32_t jump_hash(uint64_t key, int32_t num_buckets) noexcept {
    int64_t b = -1, j = 0;
    while (j < num_buckets) {
        b = j;
        key = key * 2862933555777941757ULL + 1;
        j = static_cast<int64_t>((b + 1) * (static_cast<double>(1LL << 31) /
                                            static_cast<double>((key >> 33) + 1)));
    }
    return static_cast<int32_t>(b);
}

// Many keys: the loop of one key is a chain of dependent multiplies and a
// division (~ln(n) rounds), so lanes of kLanes keys advance in lockstep and
// the CPU overlaps their chains.  A lane that has finished keeps its values
// (selects, not branches); the arithmetic of each lane is exactly the
// scalar loop's, so results are bit-identical.
inline void jump_hash_many(const uint64_t* keys, size_t count, int32_t num_buckets,
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
                const uint64_t nk = key[l] * 2862933555777941757ULL + 1;
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

}  // namespace faultkit
