// Maglev hashing (Eisenbud et al., "Maglev: A Fast and Reliable Software
// Network Load Balancer", NSDI 2016, section 3.4): a lookup table of prime
// size M filled by letting nodes take turns claiming the next free slot of
// their own permutation (offset + j * skip) mod M.  Weights follow Envoy's
// maglev_lb: a node of weight w takes a turn in round r only while
// r * w >= its running target, so slots split in proportion to weight.
// No Python; the table is built once and is immutable.
//
// The table depends on membership only (nodes and weights).  Liveness is
// separate, as on the ring: `alive` is one byte per node (nonzero = up), or
// null when every node is up, and a lookup whose slot's owner is down walks
// on to the next slot (wrapping) whose owner is up.  Marking a node down thus
// moves only its keys, and marking it up moves exactly those back; a node's
// slots are spread pseudo-randomly over the table, so the walk takes about
// 1 / (live share) steps.
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
    // offset[i] in [0, M), skip[i] in [1, M), weight[i] > 0; with no node
    // every slot is -1.
    MaglevTable(const uint64_t* offset, const uint64_t* skip, const double* weight, int32_t n_nodes,
                uint32_t table_size);

    uint32_t size() const noexcept { return static_cast<uint32_t>(table_.size()); }
    const int32_t* entries() const noexcept { return table_.data(); }

    // The first owner at or after slot `pos` (wrapping) whose alive byte is
    // nonzero; -1 if none is (or the table is empty).  `alive` null means
    // every node is up.  Requires pos < size() when the table is non-empty.
    inline int32_t live_owner_from(uint32_t pos, const uint8_t* alive) const noexcept {
        const uint32_t m = size();
        if (m == 0) return -1;
        if (alive == nullptr) return table_[pos];
        for (uint32_t step = 0; step < m; ++step) {
            const int32_t o = table_[pos];
            if (o >= 0 && alive[o]) return o;
            if (++pos == m) pos = 0;
        }
        return -1;
    }

    // The live node for hash h: table[h % M], or the walk on from there.
    inline int32_t live_owner(uint64_t h, const uint8_t* alive) const noexcept {
        const uint32_t m = size();
        if (m == 0) return -1;
        return live_owner_from(static_cast<uint32_t>(h % m), alive);
    }

    // Live owners of many hashes (-1 where no node is up).
    void live_owner_many(const uint64_t* hashes, size_t count, const uint8_t* alive,
                         int32_t* out) const noexcept {
        const uint64_t m = table_.size();
        const int32_t* t = table_.data();
        if (m == 0) {
            for (size_t i = 0; i < count; ++i) out[i] = -1;
            return;
        }
        if (alive == nullptr) {
            for (size_t i = 0; i < count; ++i) out[i] = t[hashes[i] % m];
            return;
        }
        for (size_t i = 0; i < count; ++i) {
            const uint32_t pos = static_cast<uint32_t>(hashes[i] % m);
            const int32_t o = t[pos];
            out[i] = (o >= 0 && alive[o]) ? o : live_owner_from(pos, alive);
        }
    }

    // Share of the slots (so of the keyspace) each node serves, a down
    // node's slots credited to the live node that serves them; out has
    // n_nodes entries (owners outside [0, n_nodes) are skipped).
    void distribution(const uint8_t* alive, int32_t n_nodes, double* out) const noexcept;

private:
    std::vector<int32_t> table_;
};

}  // namespace faultkit
