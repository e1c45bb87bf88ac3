# Cython declarations of csrc/faultkit/contain/rate.h: the contract, declarations only.
from libc.stdint cimport int64_t, uint64_t, uint8_t
from libcpp cimport bool

cdef extern from "faultkit/contain/rate.h" namespace "faultkit" nogil:
    int RATE_PROBES
    int64_t RATE_MAX_CAPACITY

    cdef cppclass RateDecision:
        bool allowed
        int64_t wait_ns

    cdef cppclass RateTable:
        bool configure(int64_t interval_ns, int64_t burst, int64_t capacity) except +
        int64_t interval() noexcept
        int64_t burst() noexcept
        int64_t capacity() noexcept
        RateDecision decide(int64_t now, int64_t cost, int64_t max_wait_ns) noexcept
        RateDecision decide_key(uint64_t key, int64_t now, int64_t cost, int64_t max_wait_ns) noexcept
        int64_t decide_many(const uint64_t* keys, const int64_t* now, int64_t now_stride,
                            int64_t n, uint8_t* out) noexcept
        int64_t tat_of(uint64_t key) noexcept
