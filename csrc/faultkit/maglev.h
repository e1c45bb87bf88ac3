// Maglev hashing (Eisenbud et al., "Maglev: A Fast and Reliable Software
// Network Load Balancer", NSDI 2016, section 3.4): a lookup table of prime
// size M filled by letting nodes take turns claiming the next free slot of
// their own permutation (offset + j * skip) mod M.  Weights follow Envoy's
// maglev_lb: a node of weight w takes a turn in round r only while
// r * w >= its running target, so slots split in proportion to weight.
// No Python; the table is built once and is immutable.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

namespace faultkit {

// Whether n is prime (deterministic trial division; n < 2^32 here).
bool is_prime(uint64_t n) noexcept;

class MaglevTable {
public:
    MaglevTable() = default;
    // offset[i] in [0, M), skip[i] in [1, M), weight[i] > 0; nodes whose
    // alive byte is 0 get no slots; with no live node every slot is -1.
    MaglevTable(const uint64_t* offset, const uint64_t* skip, const double* weight,
                const uint8_t* alive, int32_t n_nodes, uint32_t table_size);

    uint32_t size() const noexcept { return static_cast<uint32_t>(table_.size()); }
    const int32_t* entries() const noexcept { return table_.data(); }

    inline int32_t get(uint64_t h) const noexcept { return table_[h % table_.size()]; }

    void get_many(const uint64_t* hashes, size_t count, int32_t* out) const noexcept {
        const uint64_t m = table_.size();
        const int32_t* t = table_.data();
        for (size_t i = 0; i < count; ++i) out[i] = t[hashes[i] % m];
    }

private:
    std::vector<int32_t> table_;
};

}  // namespace faultkit
