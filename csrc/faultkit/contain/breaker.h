// Circuit breaker core: the state machine and sliding windows of resilience4j's
// CircuitBreaker, with no Python, no clock and no allocation after configure().
//
// Model (resilience4j CircuitBreakerStateMachine / CircuitBreakerMetrics):
//   closed     every call is permitted and its outcome recorded in a sliding
//              window: the last `window_size` calls (a ring of outcome bytes
//              with running counts), or the calls of the last `window_size`
//              whole seconds (one bucket per epoch second, as
//              SlidingTimeWindowMetrics).  Once the window holds at least
//              `minimum_calls` calls (min(minimum_calls, window_size) for a
//              count window), failed/total >= failure_rate or
//              slow/total >= slow_call_rate opens the breaker.  A call is slow
//              when its duration is strictly greater than slow_call_duration.
//   open       calls are rejected until now >= opened_at + reset_timeout; the
//              first advance() after that (a call, or a read of the state)
//              moves to half-open.
//   half-open  `half_open_calls` trial permits; once that many outcomes are
//              recorded, the same thresholds decide: open again, or close with
//              a fresh window.  The half-open window holds trial outcomes only.
//              A half-open state older than max_half_open_wait (resilience4j's
//              maxWaitDurationInHalfOpenState) opens again on the next
//              advance(), so a stale trial outcome is never combined with one
//              taken minutes later.
// While open, counts() reports the window that opened it (the closed window,
// or the trial calls when a half-open state reopened it).
// Every transition bumps `generation`; an outcome carries the generation its
// permit was taken in and is dropped if the breaker has moved on since (a call
// that started while closed does not count as a half-open trial; resilience4j
// would count it).
//
// Thread safety: none here.  The Cython shell calls these methods with the GIL
// held and without running Python code in between, so each call is atomic.
#pragma once

#include <cmath>
#include <cstdint>
#include <vector>

namespace faultkit {

enum BreakerState : int { BREAKER_CLOSED = 0, BREAKER_OPEN = 1, BREAKER_HALF_OPEN = 2 };

// Caps checked by configure(): a count window costs a byte a call (16 MiB at
// most), a time window 32 bytes a second (32 MiB, ~12 days, at most).
constexpr int64_t BREAKER_MAX_COUNT_WINDOW = int64_t(1) << 24;
constexpr int64_t BREAKER_MAX_TIME_WINDOW = int64_t(1) << 20;  // seconds
constexpr int64_t BREAKER_MAX_HALF_OPEN_CALLS = int64_t(1) << 30;

struct BreakerConfig {
    double failure_rate = 0.5;  // (0, 1]
    double slow_call_rate = 1.0;  // (0, 1]
    double slow_call_duration = INFINITY;  // seconds, > 0; inf: no call is slow
    double reset_timeout = 60.0;  // seconds, >= 0, finite
    int64_t minimum_calls = 10;  // >= 1
    int64_t window_size = 100;  // calls or seconds, >= 1
    int64_t half_open_calls = 10;  // >= 1
    double max_half_open_wait = INFINITY;  // seconds, > 0; inf: wait for the trials forever
    bool time_window = false;
};

struct BreakerCounts {
    int64_t total = 0;
    int64_t failed = 0;
    int64_t slow = 0;
};

// Counters over the breaker's lifetime (configure() zeroes them, reset() does not).
struct BreakerLifetime {
    int64_t calls = 0;  // outcomes reported: recorded, dropped as stale, or ignored
    int64_t failures = 0;  // of which failed
    int64_t slow = 0;  // of which slow
    int64_t ignored = 0;  // of which ignored (excluded exceptions, caller cancellations)
    int64_t rejections = 0;  // calls refused
    int64_t transitions = 0;  // state changes
};

class Breaker {
public:
    // Validates and applies a configuration, clearing all state (closed,
    // generation 0).  Returns false, changing nothing, if a value is out of range.
    bool configure(const BreakerConfig& c) {
        if (!(c.failure_rate > 0.0 && c.failure_rate <= 1.0)) return false;
        if (!(c.slow_call_rate > 0.0 && c.slow_call_rate <= 1.0)) return false;
        if (!(c.slow_call_duration > 0.0)) return false;  // also refuses NaN
        if (!(c.reset_timeout >= 0.0 && std::isfinite(c.reset_timeout))) return false;
        if (c.minimum_calls < 1 || c.half_open_calls < 1) return false;
        if (c.half_open_calls > BREAKER_MAX_HALF_OPEN_CALLS) return false;
        if (!(c.max_half_open_wait > 0.0)) return false;  // also refuses NaN
        if (c.window_size < 1) return false;
        if (c.window_size > (c.time_window ? BREAKER_MAX_TIME_WINDOW : BREAKER_MAX_COUNT_WINDOW))
            return false;
        cfg_ = c;
        min_calls_ = c.time_window
                         ? c.minimum_calls
                         : (c.minimum_calls < c.window_size ? c.minimum_calls : c.window_size);
        if (c.time_window) {
            ring_.clear();
            ring_.shrink_to_fit();
            buckets_.assign(static_cast<size_t>(c.window_size), Bucket{});
        } else {
            buckets_.clear();
            buckets_.shrink_to_fit();
            ring_.assign(static_cast<size_t>(c.window_size), 0);
        }
        state_ = BREAKER_CLOSED;
        generation_ = 0;
        not_permitted_ = 0;
        retry_at_ = INFINITY;
        half_open_until_ = INFINITY;
        life_ = BreakerLifetime{};
        tripped_ = BreakerCounts{};
        clear_window();
        return true;
    }

    int state() const noexcept { return state_; }
    uint64_t generation() const noexcept { return generation_; }
    double retry_at() const noexcept { return retry_at_; }
    bool retry_pending() const noexcept { return state_ == BREAKER_OPEN && std::isnan(retry_at_); }
    int64_t not_permitted() const noexcept { return not_permitted_; }
    double half_open_until() const noexcept { return half_open_until_; }
    const BreakerLifetime& lifetime() const noexcept { return life_; }
    int64_t half_open_permits() const noexcept {
        return state_ == BREAKER_HALF_OPEN ? permits_ : 0;
    }
    int64_t minimum_calls() const noexcept { return min_calls_; }
    const BreakerConfig& config() const noexcept { return cfg_; }

    // Counts of the window the current state evaluates: the trial calls when
    // half-open, the closed window when closed, the window that opened the
    // breaker when open.
    BreakerCounts counts() const noexcept {
        return state_ == BREAKER_HALF_OPEN ? half_ : state_ == BREAKER_OPEN ? tripped_ : window_;
    }

    // The time-driven transitions, at `now`: open -> half-open once
    // reset_timeout is over, half-open -> open once max_half_open_wait is
    // over.  One step a call (call again until it returns -1: at most two
    // steps follow each other, when reset_timeout is 0).  Returns the state
    // moved to, or -1.  A NaN `now` moves nothing.
    int advance(double now) noexcept {
        if (state_ == BREAKER_OPEN) {
            // retry_at_ is NaN while the opening time is pending: stay open.
            if (!(now >= retry_at_)) return -1;
            move(BREAKER_HALF_OPEN, now);
            return BREAKER_HALF_OPEN;
        }
        if (state_ == BREAKER_HALF_OPEN && now >= half_open_until_) {
            tripped_ = half_;
            move(BREAKER_OPEN, now);
            return BREAKER_OPEN;
        }
        return -1;
    }

    // May a call start now?  Call advance() first; counts rejections.
    bool acquire() noexcept {
        if (state_ == BREAKER_CLOSED) return true;
        if (state_ == BREAKER_HALF_OPEN && permits_ > 0) {
            --permits_;
            return true;
        }
        ++not_permitted_;
        ++life_.rejections;
        return false;
    }

    // Record the outcome of a call permitted in `generation` that ended at
    // `now` after `duration` seconds.  `now` may be NaN when the breaker has a
    // count window (the time is then needed only to open, and an opening
    // without a time leaves retry_pending() true until set_opened_at()).
    // Returns the state moved to, or -1 if none.
    // An infinite duration (a call cut off by a time limit) is always slow.
    int record(uint64_t generation, double now, bool failed, double duration) noexcept {
        const int slow = (duration > cfg_.slow_call_duration || duration == INFINITY) ? 1 : 0;
        const int fail = failed ? 1 : 0;
        life_.calls += 1;
        life_.failures += fail;
        life_.slow += slow;
        if (generation != generation_ || state_ == BREAKER_OPEN) return -1;
        if (state_ == BREAKER_HALF_OPEN) {
            half_.total += 1;
            half_.failed += fail;
            half_.slow += slow;
            if (half_.total < cfg_.half_open_calls) return -1;
            const int to = above(half_) ? BREAKER_OPEN : BREAKER_CLOSED;
            if (to == BREAKER_OPEN) tripped_ = half_;
            move(to, now);
            return to;
        }
        if (cfg_.time_window) {
            if (!record_time(now, fail, slow)) return -1;
        } else {
            record_count(fail, slow);
        }
        if (window_.total >= min_calls_ && above(window_)) {
            tripped_ = window_;
            move(BREAKER_OPEN, now);
            return BREAKER_OPEN;
        }
        return -1;
    }

    // An outcome that does not count (an excluded exception, a cancellation):
    // gives a half-open trial permit back.
    void release(uint64_t generation) noexcept {
        life_.calls += 1;
        life_.ignored += 1;
        if (generation == generation_ && state_ == BREAKER_HALF_OPEN &&
            permits_ < cfg_.half_open_calls)
            ++permits_;
    }

    // Sets the opening time of an opening recorded without one (see record()).
    void set_opened_at(uint64_t generation, double now) noexcept {
        if (generation == generation_ && retry_pending() && std::isfinite(now))
            retry_at_ = now + cfg_.reset_timeout;
    }

    // Manual transitions (resilience4j's transitionToOpenState / reset).
    // Return the state moved to, or -1 if already there.
    int force_open(double now) noexcept {
        if (state_ == BREAKER_OPEN) return -1;
        tripped_ = counts();
        move(BREAKER_OPEN, now);
        return BREAKER_OPEN;
    }
    int reset() noexcept {
        const bool was_closed = state_ == BREAKER_CLOSED;
        move(BREAKER_CLOSED, 0.0);
        if (was_closed) --life_.transitions;  // a cleared window, not a state change
        not_permitted_ = 0;
        return was_closed ? -1 : BREAKER_CLOSED;
    }

private:
    struct Bucket {
        int64_t second = 0;
        int64_t total = 0, failed = 0, slow = 0;
    };

    bool above(const BreakerCounts& c) const noexcept {
        // As resilience4j: rate >= threshold (in double, failed / total).
        return static_cast<double>(c.failed) / static_cast<double>(c.total) >= cfg_.failure_rate ||
               static_cast<double>(c.slow) / static_cast<double>(c.total) >= cfg_.slow_call_rate;
    }

    void move(int to, double now) noexcept {
        state_ = to;
        ++generation_;
        ++life_.transitions;
        half_open_until_ = to == BREAKER_HALF_OPEN ? now + cfg_.max_half_open_wait : INFINITY;
        if (to == BREAKER_OPEN) {
            retry_at_ = std::isnan(now) ? NAN : now + cfg_.reset_timeout;
        } else {
            retry_at_ = INFINITY;
        }
        if (to == BREAKER_HALF_OPEN) {
            permits_ = cfg_.half_open_calls;
            half_ = BreakerCounts{};
        } else if (to == BREAKER_CLOSED) {
            clear_window();
        }
    }

    void clear_window() noexcept {
        window_ = BreakerCounts{};
        half_ = BreakerCounts{};
        permits_ = 0;
        head_ = 0;
        started_ = false;
        for (auto& b : buckets_) b = Bucket{};
    }

    void record_count(int fail, int slow) noexcept {
        const size_t n = ring_.size();
        uint8_t& slot = ring_[head_];
        if (window_.total == static_cast<int64_t>(n)) {  // full: the oldest leaves
            window_.failed -= slot & 1;
            window_.slow -= slot >> 1;
        } else {
            window_.total += 1;
        }
        slot = static_cast<uint8_t>(fail | (slow << 1));
        window_.failed += fail;
        window_.slow += slow;
        head_ = head_ + 1 == n ? 0 : head_ + 1;
    }

    // SlidingTimeWindowMetrics.moveWindowToCurrentEpochSecond, then record.
    // A time before the newest bucket's second is recorded into that bucket
    // (a clock that steps back does not rewrite history).  Refuses NaN/inf.
    bool record_time(double now, int fail, int slow) noexcept {
        if (!std::isfinite(now) || std::fabs(now) > 9.0e15) return false;
        const int64_t sec = static_cast<int64_t>(std::floor(now));
        const int64_t w = static_cast<int64_t>(buckets_.size());
        if (!started_) {
            started_ = true;
            buckets_[head_].second = sec;
        }
        const int64_t diff = sec - buckets_[head_].second;
        if (diff > 0) {
            int64_t steps = diff < w ? diff : w;
            while (steps > 0) {
                --steps;
                head_ = head_ + 1 == buckets_.size() ? 0 : head_ + 1;
                Bucket& b = buckets_[head_];
                window_.total -= b.total;
                window_.failed -= b.failed;
                window_.slow -= b.slow;
                b = Bucket{};
                b.second = sec - steps;
            }
        }
        Bucket& b = buckets_[head_];
        b.total += 1;
        b.failed += fail;
        b.slow += slow;
        window_.total += 1;
        window_.failed += fail;
        window_.slow += slow;
        return true;
    }

    BreakerConfig cfg_;
    int64_t min_calls_ = 10;
    int state_ = BREAKER_CLOSED;
    uint64_t generation_ = 0;
    double retry_at_ = INFINITY;
    double half_open_until_ = INFINITY;
    BreakerLifetime life_;
    BreakerCounts tripped_;
    int64_t permits_ = 0;
    int64_t not_permitted_ = 0;
    BreakerCounts window_, half_;
    std::vector<uint8_t> ring_;  // count window: bit 0 failed, bit 1 slow
    std::vector<Bucket> buckets_;  // time window: one bucket per second
    size_t head_ = 0;  // newest bucket / next ring slot
    bool started_ = false;  // time window: has a bucket a second yet?
};

}  // namespace faultkit
