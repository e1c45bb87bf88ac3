# Cython declarations of csrc/faultkit/breaker.h: the contract, declarations only.
from libc.stdint cimport int64_t, uint64_t
from libcpp cimport bool

cdef extern from "faultkit/contain/breaker.h" namespace "faultkit" nogil:
    cdef enum BreakerState:
        BREAKER_CLOSED
        BREAKER_OPEN
        BREAKER_HALF_OPEN

    int64_t BREAKER_MAX_COUNT_WINDOW
    int64_t BREAKER_MAX_TIME_WINDOW
    int64_t BREAKER_MAX_HALF_OPEN_CALLS

    cdef cppclass BreakerConfig:
        double failure_rate
        double slow_call_rate
        double slow_call_duration
        double reset_timeout
        int64_t minimum_calls
        int64_t window_size
        int64_t half_open_calls
        double max_half_open_wait
        bool time_window

    cdef cppclass BreakerCounts:
        int64_t total
        int64_t failed
        int64_t slow

    cdef cppclass BreakerLifetime:
        int64_t calls
        int64_t failures
        int64_t slow
        int64_t ignored
        int64_t rejections
        int64_t transitions

    cdef cppclass Breaker:
        bool configure(const BreakerConfig& c) except +
        int state() noexcept
        uint64_t generation() noexcept
        double retry_at() noexcept
        bool retry_pending() noexcept
        int64_t not_permitted() noexcept
        int64_t half_open_permits() noexcept
        int64_t minimum_calls() noexcept
        BreakerCounts counts() noexcept
        const BreakerConfig& config() noexcept
        double half_open_until() noexcept
        const BreakerLifetime& lifetime() noexcept
        int advance(double now) noexcept
        bool acquire() noexcept
        int record(uint64_t generation, double now, bool failed, double duration) noexcept
        void release(uint64_t generation) noexcept
        void set_opened_at(uint64_t generation, double now) noexcept
        int force_open(double now) noexcept
        int reset() noexcept
