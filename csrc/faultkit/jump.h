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

inline void jump_hash_many(const uint64_t* keys, size_t count, int32_t num_buckets,
                           int32_t* out) noexcept {
    for (size_t i = 0; i < count; ++i) out[i] = jump_hash(keys[i], num_buckets);
}

}  // namespace faultkit
