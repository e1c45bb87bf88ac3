// Live replicas across failure domains: CRUSH-like choose-with-retry over a
// flat table of the domains at one level of the tree.
//
// A table holds D domains (rendezvous hash of each domain's path) and, domain
// after domain, the hashes of their members; a live byte per member says
// whether routing may use it.  For a key hash kh, a domain's score is
// xxh3_64_u64(dom_hash ^ kh) and a member's xxh3_64_u64(member_hash ^ kh)
// (faultkit.hash64 of that integer, as FailureDomains.place computes them).
// choose() walks the domains by descending score, skipping those with no live
// member, and takes each one's live member of highest score; with fewer live
// domains than n it fills from the domains it used, round after round, each
// round taking every used domain's next live member by score.
//
// Ties (probability 2^-64 per pair) break as numpy's argsort(kind="stable")[::-1]
// does for domains (higher index first) and argmax does for members (lower
// index first), so a table whose members are all live chooses exactly what
// FailureDomains.place does.
//
// No Python.h, no clock, no allocation: the caller passes scratch space.
#pragma once

#include <cstddef>
#include <cstdint>

#include "faultkit/common/xxh3.h"

namespace faultkit {

struct SpreadView {
    const uint64_t* dom_hash;  // [D]
    const int64_t* offsets;  // [D + 1]: domain d's members are [offsets[d], offsets[d + 1])
    int64_t domains;  // D
    const uint64_t* svc_hash;  // [offsets[D]]
    const uint8_t* live;  // [offsets[D]]: 1 when routable
    const int64_t* live_count;  // [D]: live members per domain
};

// The live member of domain d with the highest score strictly below `below`
// (or any score when `first`), lowest index on a tie; -1 if none.
inline int64_t spread_best_member(const SpreadView& v, int64_t d, uint64_t kh, bool first,
                                  uint64_t below, int64_t below_idx) noexcept {
    int64_t best = -1;
    uint64_t top = 0;
    for (int64_t j = v.offsets[d]; j < v.offsets[d + 1]; ++j) {
        if (!v.live[j]) continue;
        const uint64_t s = xxh3_64_u64(v.svc_hash[j] ^ kh, 0);
        // after (below, below_idx) in the order (score desc, index asc)
        if (!first && !(s < below || (s == below && j > below_idx))) continue;
        if (best < 0 || s > top) {
            best = j;
            top = s;
        }
    }
    return best;
}

// Up to n member indices (into the flat member arrays) for key hash kh, in
// choice order, written to out[0, n); returns how many (fewer than n only
// when fewer members are live).  scores[D] and scratch[2 D] are scratch.
inline int64_t spread_choose(const SpreadView& v, uint64_t kh, int64_t n, int64_t* out,
                             uint64_t* scores, int64_t* scratch) noexcept {
    const int64_t D = v.domains;
    if (n <= 0) return 0;
    int64_t* used = scratch;  // the domains chosen, in order
    int64_t* prev = scratch + D;  // per used domain: its last pick
    int64_t live_domains = 0;
    for (int64_t d = 0; d < D; ++d) {
        if (v.live_count[d] > 0) {
            scores[d] = xxh3_64_u64(v.dom_hash[d] ^ kh, 0);
            ++live_domains;
        }
    }
    // Selection of the best remaining live domain, up to n times: O(n D),
    // cheaper than a sort for the usual n of 2-5.
    int64_t k = 0, nused = 0;
    uint64_t last_s = 0;
    int64_t last_d = -1;
    while (k < n && nused < live_domains) {
        int64_t best = -1;
        uint64_t top = 0;
        for (int64_t d = 0; d < D; ++d) {
            if (v.live_count[d] <= 0) continue;
            const uint64_t s = scores[d];
            // strictly after (last_s, last_d) in the order (score desc, index desc)
            if (last_d >= 0 && !(s < last_s || (s == last_s && d < last_d))) continue;
            if (best < 0 || s > top || (s == top && d > best)) {
                best = d;
                top = s;
            }
        }
        if (best < 0) break;
        last_s = top;
        last_d = best;
        const int64_t m = spread_best_member(v, best, kh, true, 0, 0);
        used[nused] = best;
        prev[nused++] = m;
        out[k++] = m;
    }
    // Fewer live domains than n: round after round, each used domain's next
    // live member by score, in the order the domains were chosen.
    while (k < n) {
        int64_t took = 0;
        for (int64_t i = 0; i < nused && k < n; ++i) {
            if (prev[i] < 0) continue;
            const uint64_t ps = xxh3_64_u64(v.svc_hash[prev[i]] ^ kh, 0);
            prev[i] = spread_best_member(v, used[i], kh, false, ps, prev[i]);
            if (prev[i] >= 0) {
                out[k++] = prev[i];
                ++took;
            }
        }
        if (!took) break;
    }
    return k;
}

}  // namespace faultkit
