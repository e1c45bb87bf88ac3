// Heartbeat table: N monitored components, with the deadlines at which each
// one crosses its suspect and dead thresholds known from every heartbeat, so
// that a scan is a pass over deadlines.
//
// Layout: a byte array of states (read by validation, scans and masks) plus,
// in the timeout mode, arrays of last-heartbeat times and incarnations; in the
// phi modes, one record per component holding everything a heartbeat reads
// and writes (32 bytes for EWMA, EwmaRec; a 64-byte line for the window,
// WinRec, whose samples live in their own block), so that a heartbeat for a
// random id misses the cache on one line (plus the window's samples) instead
// of one line per array.
//
// No Python.h, no clock: every call that needs the time takes `now` (seconds,
// any epoch).  Callers validate ids and times (see validate_many); the
// per-call entry points check ids too and report instead of trusting them.
//
// Two families of detectors share the table:
//   HB_TIMEOUT     dead `timeout` seconds after the last heartbeat, suspect
//                  `suspect_after` seconds after it (optional).
//   HB_PHI_WINDOW  phi accrual (Hayashibara et al. 2004) as Akka implements it
//                  (akka-remote PhiAccrualFailureDetector.scala): the mean and
//                  standard deviation of the last `max_samples` inter-arrival
//                  intervals, kept as running sums exactly as Akka does.
//   HB_PHI_EWMA    phi accrual over an exponentially weighted mean and
//                  variance: O(1) memory per component instead of a window.
//
// Phi is monotone in the elapsed time, so the elapsed time at which it reaches
// a threshold has a closed form per component: mean + pause + y* x std, where
// y* solves phi(y*) = threshold once per detector (phi_crossing_y).  Scans
// then compare `now` with deadlines and never evaluate phi.  The deadlines
// follow from the record (offsets()), so a record stores only the last
// heartbeat and the statistics.
//
// Scans skip whole blocks of BLOCK components by a per-block lower bound of
// their next deadlines (bmin_).  A heartbeat only lowers a bound (min), so a
// bound may be stale-low, never stale-high; a scan visits a block only when
// its bound is <= now, and recomputes the bound exactly while there.  A phi
// heartbeat lowers it to a bound that needs no square root: the deadline with
// the standard deviation at its floor, min_std (exact while it is there).
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <limits>
#include <new>
#include <type_traits>
#include <vector>

#include "faultkit/common/huge_alloc.h"

namespace faultkit {

// Member lifecycle (docs/cluster.md): IDLE ("joining") -> ALIVE -> SUSPECT
// -> DEAD, back to ALIVE on a heartbeat; IDLE -> LOST when nothing was heard
// within join_timeout of the add; ALIVE/SUSPECT -> LEAVING (draining) ->
// LEFT at its dead deadline, or LEFT at once on a leave.  RESTARTED is never
// a stored state: it is the new_state of the event a heartbeat with a higher
// incarnation makes (the component is then ALIVE).
enum : uint8_t {
    HB_ALIVE = 0,
    HB_SUSPECT = 1,
    HB_DEAD = 2,
    HB_IDLE = 3,  // added, no heartbeat yet ("joining"): routable, phi 0 (as Akka)
    HB_LOST = 4,  // never heard within join_timeout of its add: reported dead
    HB_LEAVING = 5,  // announced it is leaving; heartbeats keep it here
    HB_LEFT = 6,  // left gracefully (or went silent while leaving)
    HB_RESTARTED = 7,  // event only: a heartbeat from a higher incarnation
    HB_FREE = 255,  // removed; the id may be reused by a later add
};

enum : int { HB_TIMEOUT = 0, HB_PHI_WINDOW = 1, HB_PHI_EWMA = 2 };

// Akka's phi: -log10(1 - F(time_diff)) with F the logistic approximation of
// the normal CDF, 1 / (1 + exp(-y (1.5976 + 0.070566 y^2))), y = (t - mean) /
// std (Bowling et al. 2009; max absolute error 1.4e-4 at |y| = 3.16).  The two
// branches are Akka's, kept operation for operation.
inline double akka_phi(double time_diff, double mean, double std_dev) noexcept {
    const double y = (time_diff - mean) / std_dev;
    const double e = std::exp(-y * (1.5976 + 0.070566 * y * y));
    if (time_diff > mean) return -std::log10(e / (1.0 + e));
    return -std::log10(1.0 - 1.0 / (1.0 + e));
}

// The y at which Akka's phi reaches `threshold` (> 0).  Algebraically
// phi(y) = log10(1 + exp(g(y))) with g(y) = y (1.5976 + 0.070566 y^2), so
// phi(y) = T  <=>  g(y) = ln(10^T - 1), a strictly increasing cubic: Newton
// from a bracket, then bisection polish.  Called once per detector.
inline double phi_crossing_y(double threshold) noexcept {
    const double c = std::log(std::expm1(threshold * std::log(10.0)));
    auto g = [](double y) { return y * (1.5976 + 0.070566 * y * y); };
    double lo = -1.0, hi = 1.0;
    while (g(lo) > c) lo *= 2.0;
    while (g(hi) < c) hi *= 2.0;
    for (int i = 0; i < 200 && hi - lo > 0.0; ++i) {
        const double mid = 0.5 * (lo + hi);
        if (mid == lo || mid == hi) break;
        (g(mid) < c ? lo : hi) = mid;
    }
    return hi;
}

struct HbConfig {
    int mode = HB_TIMEOUT;
    // timeout mode (seconds after the last heartbeat); suspect <= 0: no stage
    double timeout = 5.0;
    double suspect_after = 0.0;
    // phi modes; suspect_threshold <= 0: no suspect stage
    double threshold = 8.0;
    double suspect_threshold = 0.0;
    double min_std = 0.1;
    double pause = 3.0;
    double first_estimate = 1.0;
    uint32_t max_samples = 1000;
    double alpha = 0.0;  // EWMA weight of the newest interval, in (0, 1]
    // seconds from add() to LOST when no heartbeat came; <= 0: never
    double join_timeout = 0.0;
};

// One component's record with the EWMA estimator: half a cache line.
struct alignas(32) EwmaRec {
    double last = 0.0;  // time of the last heartbeat
    double a = 0.0, b = 0.0;  // EWMA mean and variance of the intervals
    uint64_t incarnation = 0;  // highest sender incarnation seen
};
static_assert(sizeof(EwmaRec) == 32, "EwmaRec must be half a cache line");

// One component's record with the exact window: one cache line.
struct alignas(64) WinRec {
    double last = 0.0;  // time of the last heartbeat
    double m = 0.0;  // a / n + pause: the mean the offsets start from
    double a = 0.0, b = 0.0;  // running sum and sum of squares of the window
    double* win = nullptr;  // the samples (own heap block, capacity win_cap(n))
    uint32_t n = 0;  // samples held
    uint32_t head = 0;  // index of the oldest sample once full
    uint64_t incarnation = 0;  // highest sender incarnation seen
};
static_assert(sizeof(WinRec) == 64, "WinRec must be one cache line");

struct HbEvent {
    int64_t id;
    uint8_t old_state;
    uint8_t new_state;
    double at;  // the crossing time (scan) or the heartbeat/leave time
    uint64_t old_inc = 0;  // incarnation before the event (differs for RESTARTED)
    uint64_t new_inc = 0;  // incarnation after it
};

class HeartbeatTable {
public:
    static constexpr size_t BLOCK = 256;
    static constexpr size_t PENDING_KEEP = 256;  // events' capacity kept between scans
    static constexpr double INF = std::numeric_limits<double>::infinity();

    explicit HeartbeatTable(const HbConfig& cfg) : cfg_(cfg) {
        has_suspect_ =
            cfg.mode == HB_TIMEOUT ? cfg.suspect_after > 0.0 : cfg.suspect_threshold > 0.0;
        if (cfg.mode != HB_TIMEOUT) {
            y_dead_ = phi_crossing_y(cfg.threshold);
            y_suspect_ = has_suspect_ ? phi_crossing_y(cfg.suspect_threshold) : y_dead_;
            const double e = cfg.first_estimate, sd = e / 4.0;
            seed_lo_ = e - sd;
            seed_hi_ = e + sd;
        }
    }

    ~HeartbeatTable() {
        for (WinRec& r : win_) std::free(r.win);
    }
    HeartbeatTable(const HeartbeatTable&) = delete;
    HeartbeatTable& operator=(const HeartbeatTable&) = delete;

    // ---- membership -----------------------------------------------------
    // A new component at time `now` (the start of its join_timeout).
    int64_t add(double now = 0.0) {
        int64_t id;
        if (!free_.empty()) {
            id = free_.back();
            free_.pop_back();
        } else {
            id = static_cast<int64_t>(state_.size());
            grow(state_.size() + 1);
        }
        reset(static_cast<size_t>(id));
        state_[id] = HB_IDLE;
        last_ref(static_cast<size_t>(id)) = now;  // joining since
        ++count_;
        lower_bound(static_cast<size_t>(id));
        return id;
    }

    bool remove(int64_t id) {
        if (!in_use(id)) return false;
        reset(static_cast<size_t>(id));
        state_[id] = HB_FREE;
        free_.push_back(id);
        --count_;
        // Drop its pending recovery events: the id may be reused.
        pending_.erase(std::remove_if(pending_.begin(), pending_.end(),
                                      [id](const HbEvent& e) { return e.id == id; }),
                       pending_.end());
        return true;
    }

    size_t slots() const noexcept { return state_.size(); }
    size_t count() const noexcept { return count_; }
    bool in_use(int64_t id) const noexcept {
        return id >= 0 && static_cast<size_t>(id) < state_.size() && state_[id] != HB_FREE;
    }

    // ---- heartbeats -----------------------------------------------------
    // 0: recorded; 1: ignored, older than the last heartbeat; 2: ignored,
    // the component left in this (or a later) incarnation; -1: bad id.
    // An `incarnation` above the stored one means the sender restarted: its
    // statistics start afresh, as for a new component (Akka's firstHeartbeat),
    // and the next scan reports a RESTARTED event (a join, for a component
    // never heard from).  A LEFT component comes back only with a higher
    // incarnation, or with heartbeats that carry none (incarnation < 0), so a
    // heartbeat delayed past its sender's leave does not revive it.
    int heartbeat(int64_t id, double now, int64_t incarnation = -1) {
        if (!in_use(id)) return -1;
        const size_t i = static_cast<size_t>(id);
        const uint8_t s = state_[i];
        uint64_t& inc = incarnation_ref(i);
        const bool fresh = incarnation >= 0 && static_cast<uint64_t>(incarnation) > inc;
        if (s == HB_LEFT && incarnation >= 0 && !fresh) return 2;
        if (!unheard(s) && now < last_at(i)) return 1;
        const uint64_t old_inc = inc;
        if (fresh) inc = static_cast<uint64_t>(incarnation);
        beat(i, now, fresh, old_inc);
        return 0;
    }

    // A leave from `id`'s incarnation `incarnation` (< 0: whatever it is) at
    // `now`: LEFT at once.  0: done; 1: ignored, an older incarnation's leave
    // (the component restarted since); 2: ignored, it has left already;
    // -1: bad id.  A leave from a higher incarnation than seen records it.
    int leave(int64_t id, double now, int64_t incarnation = -1) {
        if (!in_use(id)) return -1;
        const size_t i = static_cast<size_t>(id);
        uint64_t& inc = incarnation_ref(i);
        if (incarnation >= 0 && static_cast<uint64_t>(incarnation) < inc) return 1;
        const uint8_t s = state_[i];
        const uint64_t old_inc = inc;
        if (incarnation >= 0) inc = static_cast<uint64_t>(incarnation);
        if (s == HB_LEFT) return 2;
        state_[i] = HB_LEFT;
        pending_.push_back({id, s, HB_LEFT, now, old_inc, inc});
        return 0;
    }

    // `id` announced it will leave (drains): ALIVE/SUSPECT -> LEAVING, which
    // its heartbeats keep and which becomes LEFT (not DEAD) at its dead
    // deadline; a component not heard from or dead leaves at once.
    // 0: done; 2: ignored, leaving or left already; -1: bad id.
    int begin_leave(int64_t id, double now) {
        if (!in_use(id)) return -1;
        const size_t i = static_cast<size_t>(id);
        const uint8_t s = state_[i];
        if (s == HB_LEAVING || s == HB_LEFT) return 2;
        if (s != HB_ALIVE && s != HB_SUSPECT) return leave(id, now, -1);
        state_[i] = HB_LEAVING;
        const uint64_t inc = incarnation_ref(i);
        pending_.push_back({id, s, HB_LEAVING, now, inc, inc});
        lower_bound(i);
        return 0;
    }

    // Index of the first invalid entry, or n if all are valid: an id not in
    // use (kind 1) or a time that is NaN, infinite or negative (kind 2).
    size_t validate_many(const int64_t* ids, const double* times, size_t n,
                         int* kind) const noexcept {
        // No id removed (the usual case): in use is in range, and checking it
        // does not read the states at random.
        const bool dense = count_ == state_.size();
        const uint64_t slots = state_.size();
        for (size_t k = 0; k < n; ++k) {
            if (dense ? static_cast<uint64_t>(ids[k]) >= slots : !in_use(ids[k])) {
                *kind = 1;
                return k;
            }
            if (!(times[k] >= 0.0) || times[k] == INF) {
                *kind = 2;
                return k;
            }
        }
        *kind = 0;
        return n;
    }

    // Apply validated heartbeats in order; returns how many were ignored as
    // older than their component's last heartbeat.
    size_t heartbeat_many(const int64_t* ids, const double* times, size_t n) {
        size_t stale = 0;
        // Random ids miss the cache on every array a heartbeat touches; asking
        // for the lines PREFETCH heartbeats ahead overlaps those misses.
        constexpr size_t PREFETCH = 16;
        if (cfg_.mode == HB_TIMEOUT) {
            // Fast path: an alive component's deadlines only move later, so
            // its block bound stays valid and the heartbeat is one store.
            for (size_t k = 0; k < n; ++k) {
                if (k + PREFETCH < n) {
                    const size_t j = static_cast<size_t>(ids[k + PREFETCH]);
                    prefetch(&last_[j]);
                    prefetch(&state_[j]);
                }
                const size_t i = static_cast<size_t>(ids[k]);
                const double t = times[k];
                if (state_[i] == HB_ALIVE) {
                    if (t < last_[i])
                        ++stale;
                    else
                        last_[i] = t;
                } else if (!unheard(state_[i]) && t < last_[i]) {
                    ++stale;
                } else {
                    beat(i, t, false, incarnation_[i]);
                }
            }
            return stale;
        }
        return cfg_.mode == HB_PHI_WINDOW ? phi_many<true>(ids, times, n)
                                          : phi_many<false>(ids, times, n);
    }

    // ---- scan -----------------------------------------------------------
    // Appends, in id order per block, every state change due at `now`:
    // pending recoveries first, then alive->suspect->dead crossings, each at
    // its crossing time.
    void scan(double now, std::vector<HbEvent>& out) {
        out.insert(out.end(), pending_.begin(), pending_.end());
        // A burst (every member joining at once) should not pin its memory.
        if (pending_.capacity() > PENDING_KEEP)
            std::vector<HbEvent>().swap(pending_);
        else
            pending_.clear();
        const size_t n = state_.size(), nb = bmin_.size();
        for (size_t b = 0; b < nb; ++b) {
            if (!(bmin_[b] <= now)) continue;
            const size_t end = std::min(n, (b + 1) * BLOCK);
            double m = INF;
            for (size_t i = b * BLOCK; i < end; ++i) {
                double d = next_deadline(i);
                if (d <= now) {
                    if (state_[i] == HB_ALIVE && has_suspect_) {
                        const uint64_t inc = incarnation_ref(i);
                        out.push_back({static_cast<int64_t>(i), HB_ALIVE, HB_SUSPECT, d, inc, inc});
                        state_[i] = HB_SUSPECT;
                        d = next_deadline(i);
                    }
                    if (d <= now) {
                        // silence ends a join in LOST, a leave in LEFT
                        const uint8_t s = state_[i];
                        const uint8_t ns = s == HB_IDLE      ? HB_LOST
                                           : s == HB_LEAVING ? HB_LEFT
                                                             : HB_DEAD;
                        const uint64_t inc = incarnation_ref(i);
                        out.push_back({static_cast<int64_t>(i), s, ns, d, inc, inc});
                        state_[i] = ns;
                        d = INF;
                    }
                }
                m = std::min(m, d);
            }
            bmin_[b] = m;
        }
    }

    // ---- queries --------------------------------------------------------
    uint8_t state(int64_t id) const noexcept { return in_use(id) ? state_[id] : HB_FREE; }
    double last(int64_t id) const noexcept { return last_at(static_cast<size_t>(id)); }
    uint64_t incarnation(int64_t id) const noexcept {
        const size_t i = static_cast<size_t>(id);
        if (cfg_.mode == HB_TIMEOUT) return incarnation_[i];
        return cfg_.mode == HB_PHI_WINDOW ? win_[i].incarnation : ewma_[i].incarnation;
    }

    // Current mean and standard deviation (min_std applied) of the intervals.
    void stats(size_t i, double* mean, double* std_dev) const noexcept {
        if (cfg_.mode == HB_PHI_WINDOW)
            stats_of<true>(win_[i], mean, std_dev);
        else
            stats_of<false>(ewma_[i], mean, std_dev);
    }

    // Akka's phi of component `id` at `now`; 0 before its first heartbeat.
    double phi(int64_t id, double now) const noexcept {
        const size_t i = static_cast<size_t>(id);
        if (unheard(state_[i]) || state_[i] == HB_FREE || cfg_.mode == HB_TIMEOUT) return 0.0;
        double mean, sd;
        stats(i, &mean, &sd);
        return akka_phi(now - last_at(i), mean + cfg_.pause, sd);
    }

    // phi of every slot (NaN for removed ids) into out[0, slots()).
    void phi_all(double now, double* out) const noexcept {
        const size_t n = state_.size();
        for (size_t i = 0; i < n; ++i)
            out[i] = state_[i] == HB_FREE ? std::numeric_limits<double>::quiet_NaN()
                                          : phi(static_cast<int64_t>(i), now);
    }

    // 1 for alive (or joining: not yet heard from, within its join_timeout),
    // 0 for suspect, dead, lost, leaving, left or removed.
    void alive_mask(uint8_t* out) const noexcept {
        const size_t n = state_.size();
        for (size_t i = 0; i < n; ++i) out[i] = state_[i] == HB_ALIVE || state_[i] == HB_IDLE;
    }

    // The deadlines component `id` crosses next: suspect (== dead without a
    // suspect stage) and dead, from its last heartbeat; while joining both
    // are its join deadline (+inf without a join_timeout); +inf once lost,
    // left or removed.
    double suspect_deadline(int64_t id) const noexcept {
        const size_t i = static_cast<size_t>(id);
        if (state_[i] == HB_IDLE) return join_deadline(i);
        if (unheard(state_[i]) || state_[i] == HB_LEFT || state_[i] == HB_FREE) return INF;
        if (state_[i] == HB_LEAVING) return dead_deadline(id);
        if (cfg_.mode == HB_TIMEOUT)
            return last_[i] + (has_suspect_ ? cfg_.suspect_after : cfg_.timeout);
        double s, d;
        phi_offsets(i, &s, &d);
        return last_at(i) + s;
    }
    double dead_deadline(int64_t id) const noexcept {
        const size_t i = static_cast<size_t>(id);
        if (state_[i] == HB_IDLE) return join_deadline(i);
        if (unheard(state_[i]) || state_[i] == HB_LEFT || state_[i] == HB_FREE) return INF;
        if (cfg_.mode == HB_TIMEOUT) return last_[i] + cfg_.timeout;
        double s, d;
        phi_offsets(i, &s, &d);
        return last_at(i) + d;
    }

    // Both deadlines of every slot (inf for removed or never-heard ids).
    void deadlines_all(double* suspect, double* dead) const noexcept {
        const size_t n = state_.size();
        for (size_t i = 0; i < n; ++i) {
            suspect[i] = suspect_deadline(static_cast<int64_t>(i));
            dead[i] = dead_deadline(static_cast<int64_t>(i));
        }
    }

    // Bytes held, capacity included (the windows' heap blocks counted by their
    // capacity; allocator overhead not included).
    size_t memory_bytes() const noexcept {
        size_t b = last_.capacity() * sizeof(double) + state_.capacity() +
                   incarnation_.capacity() * sizeof(uint64_t) + bmin_.capacity() * sizeof(double) +
                   free_.capacity() * sizeof(int64_t) + ewma_.capacity() * sizeof(EwmaRec) +
                   win_.capacity() * sizeof(WinRec) + pending_.capacity() * sizeof(HbEvent);
        for (const WinRec& r : win_) b += win_cap(r.n) * sizeof(double);
        return b;
    }

    double crossing_y_dead() const noexcept { return y_dead_; }
    double crossing_y_suspect() const noexcept { return y_suspect_; }

private:
    // Never heard from (joining or lost): no statistics, no last heartbeat.
    static bool unheard(uint8_t s) noexcept { return s == HB_IDLE || s == HB_LOST; }

    double join_deadline(size_t i) const noexcept {
        return cfg_.join_timeout > 0.0 ? last_at(i) + cfg_.join_timeout : INF;
    }

    // Lower i's block bound to its next deadline (a bound may be stale-low).
    void lower_bound(size_t i) noexcept {
        double& bm = bmin_[i / BLOCK];
        const double nd = next_deadline(i);
        if (nd < bm) bm = nd;
    }

    static void prefetch(const void* p) noexcept {
#if defined(__GNUC__) || defined(__clang__)
        __builtin_prefetch(p, 1, 1);
#else
        (void)p;
#endif
    }

    template <bool WINDOW>
    using Rec = std::conditional_t<WINDOW, WinRec, EwmaRec>;
    template <bool WINDOW>
    Rec<WINDOW>* recs() noexcept {
        if constexpr (WINDOW)
            return win_.data();
        else
            return ewma_.data();
    }

    // Whether the batch fast path and the square-root-free block bound hold:
    // phi at y <= 0 is at most log10(2) ~ 0.30103, well below a threshold
    // whose y* exceeds 0.1, and a bound with std at min_std is below the
    // suspect deadline when y*_suspect >= 0.
    bool fast_ok() const noexcept { return y_dead_ > 0.1 && (!has_suspect_ || y_suspect_ >= 0.0); }

    // heartbeat_many's phi loop.  Fast path, inlined: an alive component whose
    // elapsed time is below its dead offset's floor (mean + pause + y* x
    // min_std, by a margin of 1e-9 relative; the offset itself is at least
    // that, so available_fast would say "available" without computing phi)
    // takes the interval as a sample exactly as beat() would, and lowers its
    // block's bound to the suspect deadline's floor: no square root, no
    // division for EWMA, one for the window (the new mean).  Anything else
    // goes through beat().
    template <bool WINDOW>
    size_t phi_many(const int64_t* ids, const double* times, size_t n) {
        // One record a component, and for the window the line its next
        // sample goes to, prefetched once the record has arrived.
        constexpr size_t PREFETCH = 64, PREFETCH_WIN = 32;
        Rec<WINDOW>* const rec = recs<WINDOW>();
        const uint8_t* const st = state_.data();
        double* const bmin = bmin_.data();
        const bool fast = fast_ok();
        const double min_std = cfg_.min_std;
        const double dfloor = y_dead_ * min_std;
        const double sfloor = (has_suspect_ ? y_suspect_ : y_dead_) * min_std;
        const uint32_t cap = cfg_.max_samples;
        size_t stale = 0;
        for (size_t k = 0; k < n; ++k) {
            if (k + PREFETCH < n) {
                const size_t j = static_cast<size_t>(ids[k + PREFETCH]);
                prefetch(rec + j);
                prefetch(st + j);
            }
            if constexpr (WINDOW) {
                if (k + PREFETCH_WIN < n) {
                    const WinRec& r = rec[static_cast<size_t>(ids[k + PREFETCH_WIN])];
                    if (r.win) prefetch(r.win + (r.n < cap ? r.n : r.head));
                }
            }
            const size_t i = static_cast<size_t>(ids[k]);
            const double t = times[k];
            Rec<WINDOW>& r = rec[i];
            if (fast && st[i] == HB_ALIVE) {
                const double el = t - r.last;
                const double d = mean_adj<WINDOW>(r) + dfloor;
                if (el >= 0.0 && el < d - 1e-9 * (1.0 + d)) {  // el >= 0: not stale
                    push_sample<WINDOW>(r, el);
                    r.last = t;
                    // m + y* x min_std <= m + y* x std, rounding included
                    const double nd = t + (mean_adj<WINDOW>(r) + sfloor);
                    double& bm = bmin[i / BLOCK];
                    if (nd < bm) bm = nd;
                    continue;
                }
            }
            if (!unheard(state_[i]) && t < r.last) {
                ++stale;
                continue;
            }
            beat(i, t, false, r.incarnation);
        }
        return stale;
    }

    // mean + pause, as offsets() computes it: the window keeps it in the
    // record (one division a sample, done in push_sample).
    template <bool WINDOW>
    double mean_adj(const Rec<WINDOW>& r) const noexcept {
        if constexpr (WINDOW)
            return r.m;
        else
            return r.a + cfg_.pause;
    }

    // The mean and standard deviation (min_std applied) of a record.
    template <bool WINDOW>
    void stats_of(const Rec<WINDOW>& r, double* mean, double* std_dev) const noexcept {
        double var;
        if constexpr (WINDOW) {
            const double n = static_cast<double>(r.n);
            *mean = r.a / n;
            var = r.b / n - *mean * *mean;
        } else {
            *mean = r.a;
            var = r.b;
        }
        // Akka's sums are integer milliseconds, so its variance is never
        // negative; in floating point it can be by rounding: clamp at 0.
        *std_dev = std::max(std::sqrt(std::max(var, 0.0)), cfg_.min_std);
    }

    // The suspect and dead deadlines' offsets from the last heartbeat:
    // mean + pause + y* x std, from the statistics (no suspect stage: both
    // are the dead one).
    template <bool WINDOW>
    void offsets(const Rec<WINDOW>& r, double* off_s, double* off_d) const noexcept {
        double mean, sd;
        stats_of<WINDOW>(r, &mean, &sd);
        const double m = mean + cfg_.pause;
        const double d = m + y_dead_ * sd;
        *off_s = has_suspect_ ? m + y_suspect_ * sd : d;
        *off_d = d;
    }
    void phi_offsets(size_t i, double* off_s, double* off_d) const noexcept {
        if (cfg_.mode == HB_PHI_WINDOW)
            offsets<true>(win_[i], off_s, off_d);
        else
            offsets<false>(ewma_[i], off_s, off_d);
    }

    double last_at(size_t i) const noexcept {
        if (cfg_.mode == HB_TIMEOUT) return last_[i];
        return cfg_.mode == HB_PHI_WINDOW ? win_[i].last : ewma_[i].last;
    }
    uint64_t& incarnation_ref(size_t i) noexcept {
        if (cfg_.mode == HB_TIMEOUT) return incarnation_[i];
        return cfg_.mode == HB_PHI_WINDOW ? win_[i].incarnation : ewma_[i].incarnation;
    }
    double& last_ref(size_t i) noexcept {
        if (cfg_.mode == HB_TIMEOUT) return last_[i];
        return cfg_.mode == HB_PHI_WINDOW ? win_[i].last : ewma_[i].last;
    }

    // Capacity of a window holding n samples: it grows by doubling from 4,
    // capped at max_samples, so the capacity follows from n alone.
    size_t win_cap(uint32_t n) const noexcept {
        if (n == 0) return 0;
        size_t c = 4;
        while (c < n) c *= 2;
        return std::min<size_t>(c, cfg_.max_samples);
    }

    void grow(size_t n) {
        state_.resize(n, HB_FREE);
        bmin_.resize((n + BLOCK - 1) / BLOCK, INF);
        if (cfg_.mode == HB_PHI_WINDOW) {
            win_.resize(n);
        } else if (cfg_.mode == HB_PHI_EWMA) {
            ewma_.resize(n);
        } else {
            last_.resize(n, 0.0);
            incarnation_.resize(n, 0);
        }
    }

    void reset(size_t i) {
        if (cfg_.mode == HB_PHI_WINDOW) {
            std::free(win_[i].win);  // give the window's memory back
            win_[i] = WinRec{};
        } else if (cfg_.mode == HB_PHI_EWMA) {
            ewma_[i] = EwmaRec{};
        } else {
            last_[i] = 0.0;
            incarnation_[i] = 0;
        }
    }

    template <bool WINDOW>
    void seed_stats(Rec<WINDOW>& r) {
        if constexpr (WINDOW) {
            r.n = 0;  // its capacity follows n: start a new block
            std::free(r.win);
            r.win = nullptr;
            r.head = 0;
            r.a = 0.0;
            r.b = 0.0;
            push_sample<true>(r, seed_lo_);
            push_sample<true>(r, seed_hi_);
        } else {
            const double sd = cfg_.first_estimate / 4.0;
            r.a = cfg_.first_estimate;  // EWMA mean
            r.b = sd * sd;  // EWMA variance
        }
    }

    // Akka's HeartbeatHistory :+ (running sums; drop the oldest when full),
    // or the EWMA update.
    template <bool WINDOW>
    void push_sample(Rec<WINDOW>& r, double x) {
        if constexpr (!WINDOW) {
            const double a = cfg_.alpha, d = x - r.a;
            r.a += a * d;
            r.b = (1.0 - a) * (r.b + a * d * d);
        } else {
            if (r.n < cfg_.max_samples) {
                // Full block (its capacity win_cap(n) == n: n is 0 or a power
                // of two >= 4, as n < max_samples): grow by doubling, capped
                // at the window.
                if (r.n == 0 || (r.n >= 4 && (r.n & (r.n - 1)) == 0)) {
                    const size_t cap =
                        std::min<size_t>(cfg_.max_samples, std::max<size_t>(4, 2 * size_t{r.n}));
                    void* p = std::realloc(r.win, cap * sizeof(double));
                    if (!p) throw std::bad_alloc();
                    r.win = static_cast<double*>(p);
                }
                r.win[r.n++] = x;
            } else {
                const double old = r.win[r.head];
                r.a = r.a - old;
                r.b = r.b - old * old;
                r.win[r.head] = x;
                r.head = r.head + 1 == cfg_.max_samples ? 0 : r.head + 1;
            }
            r.a = r.a + x;
            r.b = r.b + x * x;
            r.m = r.a / static_cast<double>(r.n) + cfg_.pause;
        }
    }

    // Akka's isAvailable at `now` (phi(now) < threshold) given the current
    // stats: decided on y (the same division phi does), and by phi itself
    // only within a hair of y*, so the decision is phi's to the last bit.
    bool available(double last, double now, double mean, double sd) const noexcept {
        const double t = now - last, m = mean + cfg_.pause;
        const double y = (t - m) / sd, tol = 1e-9 * (1.0 + std::fabs(y_dead_));
        if (y < y_dead_ - tol) return true;
        if (y > y_dead_ + tol) return false;
        return akka_phi(t, m, sd) < cfg_.threshold;
    }

    // available() by the dead offset: it is mean + pause + y* std, so away
    // from it, comparing the elapsed time with it decides the same way (the
    // 1e-9 relative margin dwarfs the rounding of the offset and of phi once
    // y* > 0.1, i.e. threshold > ~0.35; below that, or near the boundary,
    // phi decides).
    template <bool WINDOW>
    bool available_fast(const Rec<WINDOW>& r, double now) const noexcept {
        double mean, sd;
        stats_of<WINDOW>(r, &mean, &sd);
        if (y_dead_ > 0.1) {
            const double t = now - r.last, d = mean + cfg_.pause + y_dead_ * sd;
            const double tol = 1e-9 * (1.0 + d);
            if (t < d - tol) return true;
            if (t > d + tol) return false;
        }
        return available(r.last, now, mean, sd);
    }

    template <bool WINDOW>
    void beat_phi(size_t i, double now, bool fresh) {
        Rec<WINDOW>& r = recs<WINDOW>()[i];
        if (unheard(state_[i]) || state_[i] == HB_LEFT || fresh)
            seed_stats<WINDOW>(r);
        else if (available_fast<WINDOW>(r, now))
            push_sample<WINDOW>(r, now - r.last);
        // else: an interval observed while not available is not a sample
        r.last = now;
    }

    // A heartbeat at `now` (validated); `fresh`: from a higher incarnation
    // than `old_inc` (already stored).  Queues the lifecycle event it makes:
    // a join (joining/lost -> alive), a recovery (suspect/dead/left ->
    // alive) or a restart (any heard state -> RESTARTED); a leaving
    // component stays leaving unless it restarted.
    void beat(size_t i, double now, bool fresh, uint64_t old_inc) {
        const uint8_t old = state_[i];
        if (cfg_.mode == HB_PHI_WINDOW)
            beat_phi<true>(i, now, fresh);
        else if (cfg_.mode == HB_PHI_EWMA)
            beat_phi<false>(i, now, fresh);
        else
            last_[i] = now;
        state_[i] = old == HB_LEAVING && !fresh ? HB_LEAVING : HB_ALIVE;
        const uint64_t inc = incarnation_ref(i);
        if (fresh && !unheard(old))
            pending_.push_back({static_cast<int64_t>(i), old, HB_RESTARTED, now, old_inc, inc});
        else if (old != HB_ALIVE && old != HB_LEAVING)
            pending_.push_back({static_cast<int64_t>(i), old, HB_ALIVE, now, old_inc, inc});
        // The new deadline may be earlier than the block's bound: lower it.
        lower_bound(i);
    }

    double next_deadline(size_t i) const noexcept {
        const uint8_t s = state_[i];
        if (s == HB_ALIVE) return suspect_deadline(static_cast<int64_t>(i));
        if (s == HB_SUSPECT || s == HB_LEAVING || s == HB_IDLE)
            return dead_deadline(static_cast<int64_t>(i));
        return INF;
    }

    HbConfig cfg_;
    bool has_suspect_ = false;
    double y_dead_ = 0.0, y_suspect_ = 0.0, seed_lo_ = 0.0, seed_hi_ = 0.0;
    size_t count_ = 0;

    // The per-component arrays are read at random: huge pages (huge_alloc.h).
    std::vector<uint8_t, HugeAlloc<uint8_t>> state_;  // HB_ALIVE .. HB_FREE
    std::vector<double> bmin_;  // per-block lower bound of next deadlines
    std::vector<int64_t> free_;  // removed ids, reused by add()
    std::vector<HbEvent> pending_;  // recoveries since the last scan
    // timeout mode
    std::vector<double, HugeAlloc<double>> last_;  // time of the last heartbeat
    std::vector<uint64_t, HugeAlloc<uint64_t>> incarnation_;  // highest sender incarnation seen
    // phi modes: one record a component (last, statistics, window)
    std::vector<EwmaRec, HugeAlloc<EwmaRec>> ewma_;
    std::vector<WinRec, HugeAlloc<WinRec>> win_;
};

}  // namespace faultkit
