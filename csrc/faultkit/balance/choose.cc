// Non-inline parts of the rendezvous and Maglev balancers.
#include <algorithm>

#include "faultkit/balance/maglev.h"
#include "faultkit/balance/rendezvous.h"

namespace faultkit {

int32_t RendezvousTable::get_n(uint64_t h, const uint8_t* alive, int32_t n, int32_t* out,
                               double* scores, int32_t* order) const noexcept {
    const int32_t size = this->size();
    int32_t live = 0;
    for (int32_t i = 0; i < size; ++i) {
        if (alive != nullptr && !alive[i]) continue;
        const uint64_t bits = draw(h, node_hash_[i]);
        // Equal weights: the draw orders nodes exactly as the score does.
        scores[i] = uniform_ ? static_cast<double>(bits) : score(bits, weight_[i]);
        order[live++] = i;
    }
    const int32_t k = std::min(n, live);
    if (k <= 0) return 0;
    std::partial_sort(order, order + k, order + live, [scores](int32_t a, int32_t b) {
        return scores[a] > scores[b] || (scores[a] == scores[b] && a < b);
    });
    for (int32_t i = 0; i < k; ++i) out[i] = order[i];
    return k;
}

bool is_prime(uint64_t n) noexcept {
    if (n < 2) return false;
    if (n % 2 == 0) return n == 2;
    for (uint64_t d = 3; d * d <= n; d += 2)
        if (n % d == 0) return false;
    return true;
}

MaglevTable::MaglevTable(const uint64_t* offset, const uint64_t* skip, const double* weight,
                         int32_t n_nodes, uint32_t table_size)
    : table_(table_size, -1) {
    struct Entry {
        int32_t node;
        uint64_t offset, skip, next;
        double weight, target;
    };
    std::vector<Entry> entries;
    double max_weight = 0.0;
    for (int32_t i = 0; i < n_nodes; ++i) {
        entries.push_back({i, offset[i] % table_size, skip[i] % table_size, 0, weight[i], 0.0});
        max_weight = std::max(max_weight, weight[i]);
    }
    if (entries.empty() || table_size == 0) return;
    // Normalise so the heaviest node takes a turn in every round.
    for (Entry& e : entries) e.weight /= max_weight;
    uint32_t filled = 0;
    for (uint64_t round = 1; filled < table_size; ++round) {
        for (Entry& e : entries) {
            if (filled == table_size) break;
            if (static_cast<double>(round) * e.weight < e.target) continue;
            e.target += 1.0;
            // The node's permutation visits every slot once (skip and M are
            // coprime since M is prime), so a free slot is always found.
            uint64_t c = (e.offset + e.next * e.skip) % table_size;
            while (table_[c] >= 0) {
                ++e.next;
                c = (e.offset + e.next * e.skip) % table_size;
            }
            table_[c] = e.node;
            ++e.next;
            ++filled;
        }
    }
}

void MaglevTable::distribution(const uint8_t* alive, int32_t n_nodes, double* out) const noexcept {
    for (int32_t i = 0; i < n_nodes; ++i) out[i] = 0.0;
    const uint32_t m = size();
    if (m == 0) return;
    // Walk backwards so the live owner serving each slot (the first live
    // owner at or after it) is known; start from the one serving slot 0's
    // wrap-around, i.e. the first live owner from slot 0.
    int32_t next_live = live_owner_from(0, alive);
    if (next_live < 0) return;  // nothing is up
    for (uint32_t k = m; k-- > 0;) {
        const int32_t o = table_[k];
        if (o >= 0 && (alive == nullptr || alive[o])) next_live = o;
        if (next_live < n_nodes) out[next_live] += 1.0;
    }
    for (int32_t i = 0; i < n_nodes; ++i) out[i] /= m;
}

}  // namespace faultkit
