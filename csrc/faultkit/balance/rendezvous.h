// Weighted rendezvous (highest random weight) hashing, Thaler & Ravishankar
// 1998, with the logarithmic method for weights (Schindelhauer & Schomaker,
// "Weighted Distributed Hash Tables", 2005): node i's score for a key is
// -w_i / ln(u), u in (0, 1) uniform from XXH3 of the key's hash seeded with
// the node's hash; the highest live score wins.  A key moves only when its
// winner leaves, and node i wins with probability w_i / sum(w).  No Python.
#pragma once

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <vector>

#include "faultkit/common/xxh3.h"

namespace faultkit {

class RendezvousTable {
public:
    RendezvousTable() = default;
    // node_hash[i] = xxh3_64(name_i, seed); weights finite and > 0.
    RendezvousTable(std::vector<uint64_t> node_hash, std::vector<double> weight)
        : node_hash_(std::move(node_hash)), weight_(std::move(weight)) {
        uniform_ = true;
        for (double w : weight_) uniform_ &= w == weight_.front();
    }

    int32_t size() const noexcept { return static_cast<int32_t>(node_hash_.size()); }

    // u's 52 random bits: u = (bits + 0.5) / 2^52 is exact and strictly
    // inside (0, 1), and increasing in bits.
    static inline uint64_t draw(uint64_t h, uint64_t node_hash) noexcept {
        return xxh3_64_u64(h, node_hash) >> 12;
    }
    static inline double score(uint64_t bits, double w) noexcept {
        const double u = (static_cast<double>(bits) + 0.5) * 0x1p-52;
        return -w / std::log(u);
    }

    // The winning live node (lowest index on an exact tie), -1 if none is up.
    // With equal weights the score is increasing in the draw, so the draw is
    // compared directly and no logarithm is taken.
    inline int32_t get(uint64_t h, const uint8_t* alive) const noexcept {
        const int32_t n = size();
        int32_t best = -1;
        if (uniform_) {
            uint64_t best_bits = 0;
            for (int32_t i = 0; i < n; ++i) {
                if (alive != nullptr && !alive[i]) continue;
                const uint64_t b = draw(h, node_hash_[i]);
                if (best < 0 || b > best_bits) {
                    best = i;
                    best_bits = b;
                }
            }
            return best;
        }
        double best_score = 0.0;
        for (int32_t i = 0; i < n; ++i) {
            if (alive != nullptr && !alive[i]) continue;
            const double s = score(draw(h, node_hash_[i]), weight_[i]);
            if (best < 0 || s > best_score) {
                best = i;
                best_score = s;
            }
        }
        return best;
    }

    // The n highest-scoring live nodes, best first (ties: lower index first);
    // returns how many were written.  `scores` and `order` are caller scratch
    // of size() entries each.
    int32_t get_n(uint64_t h, const uint8_t* alive, int32_t n, int32_t* out, double* scores,
                  int32_t* order) const noexcept;

    void get_many(const uint64_t* hashes, size_t count, const uint8_t* alive,
                  int32_t* out) const noexcept {
        for (size_t i = 0; i < count; ++i) out[i] = get(hashes[i], alive);
    }

private:
    std::vector<uint64_t> node_hash_;
    std::vector<double> weight_;
    bool uniform_ = true;
};

}  // namespace faultkit
