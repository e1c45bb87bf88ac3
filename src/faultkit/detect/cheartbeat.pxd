# Cython declarations of csrc/faultkit/heartbeat.h: the contract, declarations only.
from libc.stdint cimport int64_t, uint8_t, uint32_t, uint64_t
from libcpp.vector cimport vector

cdef extern from "faultkit/detect/heartbeat.h" namespace "faultkit" nogil:
    cdef enum:
        HB_ALIVE
        HB_SUSPECT
        HB_DEAD
        HB_IDLE
        HB_LOST
        HB_LEAVING
        HB_LEFT
        HB_RESTARTED
        HB_FREE
        HB_TIMEOUT
        HB_PHI_WINDOW
        HB_PHI_EWMA

    double akka_phi(double time_diff, double mean, double std_dev) noexcept
    double phi_crossing_y(double threshold) noexcept

    cdef cppclass HbConfig:
        int mode
        double timeout
        double suspect_after
        double threshold
        double suspect_threshold
        double min_std
        double pause
        double first_estimate
        uint32_t max_samples
        double alpha
        double join_timeout

    cdef cppclass HbEvent:
        int64_t id
        uint8_t old_state
        uint8_t new_state
        double at
        uint64_t old_inc
        uint64_t new_inc

    cdef cppclass HeartbeatTable:
        HeartbeatTable(const HbConfig& cfg) except +
        int64_t add(double now) except +
        bint remove(int64_t id) except +
        size_t slots() noexcept
        size_t count() noexcept
        bint in_use(int64_t id) noexcept
        int heartbeat(int64_t id, double now, int64_t incarnation) except +
        int leave(int64_t id, double now, int64_t incarnation) except +
        int begin_leave(int64_t id, double now) except +
        size_t validate_many(const int64_t* ids, const double* times, size_t n, int* kind) noexcept
        size_t heartbeat_many(const int64_t* ids, const double* times, size_t n) except +
        void scan(double now, vector[HbEvent]& out) except +
        uint8_t state(int64_t id) noexcept
        double last(int64_t id) noexcept
        uint64_t incarnation(int64_t id) noexcept
        double phi(int64_t id, double now) noexcept
        void phi_all(double now, double* out) noexcept
        void alive_mask(uint8_t* out) noexcept
        double suspect_deadline(int64_t id) noexcept
        double dead_deadline(int64_t id) noexcept
        void deadlines_all(double* suspect, double* dead) noexcept
        size_t memory_bytes() noexcept
        double crossing_y_dead() noexcept
        double crossing_y_suspect() noexcept
