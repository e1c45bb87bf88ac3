// Rate limiting by GCRA (the generic cell rate algorithm: a token bucket kept
// as one "theoretical arrival time" per key), with no Python, no clock (every
// call takes `now`, integer nanoseconds) and no lock: each key's state is one
// atomic int64 updated by compare-and-swap, so threads that released the GIL
// (bulk decisions) and threads that hold it can decide at the same time.
//
// Model: a limit of `burst` calls at once, refilled at one call every
// `interval` ns.  A call of cost n at `now` is allowed when
//     max(tat, now) + n * interval - burst * interval <= now
// and then sets tat = max(tat, now) + n * interval.  When refused, the wait
// until it would be allowed is max(tat, now) + n * interval - burst * interval - now.
// A key never seen (or idle long enough that tat <= now) is a full bucket.
//
// Keyed table: open addressing over `capacity` (a power of two) slots of
// (key id, tat), probing at most RATE_PROBES slots.  A key not in its window
// takes an empty slot, else the slot of the window whose bucket is fullest
// (smallest tat): an idle key's state is a full bucket anyway, so only a
// window of RATE_PROBES keys all active at once loses state (documented).
// Key id 0 is stored as 1 (0 marks an empty slot).
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>

namespace faultkit {

constexpr int RATE_PROBES = 8;
constexpr int64_t RATE_MAX_CAPACITY = int64_t(1) << 30;
constexpr int64_t RATE_NEVER = INT64_MIN / 4;  // the tat of a fresh key: far in the past

struct RateDecision {
    bool allowed;
    int64_t wait_ns;  // allowed: 0 (try) or the wait reserved; refused: ns until allowed
};

// One bucket's decision on its tat cell.  `max_wait_ns` > 0 reserves: a call
// allowed within that wait is granted now (tat moves) and told how long to wait.
inline RateDecision gcra_decide(std::atomic<int64_t>& cell, int64_t now, int64_t increment,
                                int64_t tolerance, int64_t max_wait_ns) noexcept {
    int64_t tat = cell.load(std::memory_order_relaxed);
    for (;;) {
        const int64_t base = tat > now ? tat : now;
        const int64_t next = base + increment;
        const int64_t allow_at = next - tolerance;
        const int64_t wait = allow_at - now;
        if (wait > max_wait_ns) return RateDecision{false, wait};
        if (cell.compare_exchange_weak(tat, next, std::memory_order_acq_rel,
                                       std::memory_order_relaxed))
            return RateDecision{true, wait > 0 ? wait : 0};
    }
}

class RateTable {
public:
    // interval_ns >= 1, burst >= 1, capacity a power of two in [1, RATE_MAX_CAPACITY].
    // Returns false (changing nothing) on bad values.
    bool configure(int64_t interval_ns, int64_t burst, int64_t capacity) {
        if (interval_ns < 1 || burst < 1 || capacity < 1 || capacity > RATE_MAX_CAPACITY)
            return false;
        if ((capacity & (capacity - 1)) != 0) return false;
        if (burst > INT64_MAX / 4 / interval_ns) return false;
        interval_ = interval_ns;
        burst_ = burst;
        tolerance_ = interval_ns * burst;
        mask_ = static_cast<uint64_t>(capacity - 1);
        slots_.reset(new Slot[static_cast<size_t>(capacity)]);
        for (int64_t i = 0; i < capacity; ++i) {
            slots_[i].key.store(0, std::memory_order_relaxed);
            slots_[i].tat.store(RATE_NEVER, std::memory_order_relaxed);
        }
        single_.store(RATE_NEVER, std::memory_order_relaxed);
        return true;
    }

    int64_t interval() const noexcept { return interval_; }
    int64_t burst() const noexcept { return burst_; }
    int64_t capacity() const noexcept { return static_cast<int64_t>(mask_ + 1); }

    // The unkeyed limiter.  cost in [1, burst] (the caller checks).
    RateDecision decide(int64_t now, int64_t cost, int64_t max_wait_ns) noexcept {
        return gcra_decide(single_, now, cost * interval_, tolerance_, max_wait_ns);
    }

    // A keyed decision.
    RateDecision decide_key(uint64_t key, int64_t now, int64_t cost, int64_t max_wait_ns) noexcept {
        return gcra_decide(cell(key), now, cost * interval_, tolerance_, max_wait_ns);
    }

    // Bulk try (no reservation): out[i] = 1 if keys[i] at now[i] (or now[0]
    // when now_stride is 0) is allowed at cost 1.  Returns the number allowed.
    int64_t decide_many(const uint64_t* keys, const int64_t* now, int64_t now_stride, int64_t n,
                        uint8_t* out) noexcept {
        int64_t allowed = 0;
        const int64_t inc = interval_;
        for (int64_t i = 0; i < n; ++i) {
            const RateDecision d =
                gcra_decide(cell(keys[i]), now[i * now_stride], inc, tolerance_, 0);
            out[i] = d.allowed ? 1 : 0;
            allowed += d.allowed ? 1 : 0;
        }
        return allowed;
    }

    // The tat of a key (RATE_NEVER if not in the table): for tests and metrics.
    int64_t tat_of(uint64_t key) const noexcept {
        key = key ? key : 1;
        const uint64_t h = mix(key);
        for (int p = 0; p < RATE_PROBES; ++p) {
            const Slot& s = slots_[(h + p) & mask_];
            if (s.key.load(std::memory_order_acquire) == key)
                return s.tat.load(std::memory_order_relaxed);
        }
        return RATE_NEVER;
    }

private:
    struct Slot {
        std::atomic<uint64_t> key;
        std::atomic<int64_t> tat;
    };

    static uint64_t mix(uint64_t x) noexcept {  // splitmix64's finalizer
        x ^= x >> 30;
        x *= 0xbf58476d1ce4e5b9ULL;
        x ^= x >> 27;
        x *= 0x94d049bb133111ebULL;
        x ^= x >> 31;
        return x;
    }

    std::atomic<int64_t>& cell(uint64_t key) noexcept {
        key = key ? key : 1;
        const uint64_t h = mix(key);
        for (;;) {
            Slot* victim = nullptr;
            int64_t victim_tat = INT64_MAX;
            for (int p = 0; p < RATE_PROBES; ++p) {
                Slot& s = slots_[(h + p) & mask_];
                uint64_t k = s.key.load(std::memory_order_acquire);
                if (k == key) return s.tat;
                if (k == 0) {
                    if (s.key.compare_exchange_strong(k, key, std::memory_order_acq_rel))
                        return s.tat;  // a fresh slot: tat is RATE_NEVER
                    if (k == key) return s.tat;
                    continue;
                }
                const int64_t t = s.tat.load(std::memory_order_relaxed);
                if (t < victim_tat) {
                    victim_tat = t;
                    victim = &s;
                }
            }
            // Window full: take over the fullest bucket's slot, keeping its tat
            // (the new key starts at least as limited as a fresh key would be;
            // the evicted key, if it comes back, starts afresh).
            uint64_t old = victim->key.load(std::memory_order_acquire);
            if (old != key &&
                victim->key.compare_exchange_strong(old, key, std::memory_order_acq_rel))
                return victim->tat;
            if (old == key) return victim->tat;
            // Lost a race for the slot: probe again (the window changed).
        }
    }

    int64_t interval_ = 1;
    int64_t burst_ = 1;
    int64_t tolerance_ = 1;
    uint64_t mask_ = 0;
    std::unique_ptr<Slot[]> slots_;
    std::atomic<int64_t> single_{RATE_NEVER};
};

}  // namespace faultkit
