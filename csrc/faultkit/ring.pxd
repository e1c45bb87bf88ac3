# Cython declarations of csrc/faultkit/ring.h: the contract, declarations only.
from libc.stdint cimport uint8_t, uint32_t, uint64_t, int32_t
from libcpp.vector cimport vector

cdef extern from "faultkit/ring.h" namespace "faultkit" nogil:
    cdef struct RingPoint:
        uint64_t point
        int32_t owner

    cdef cppclass RingTable:
        RingTable()
        uint32_t size() noexcept
        const uint64_t* points() noexcept
        const int32_t* owners() noexcept
        int index_bits() noexcept
        uint32_t scan_length() noexcept
        uint32_t position(uint64_t h) noexcept
        int32_t owner(uint64_t h) noexcept
        int32_t live_owner(uint64_t h, const uint8_t* alive) noexcept
        int32_t live_owner_from(uint32_t pos, const uint8_t* alive) noexcept
        int32_t live_owners_n(uint64_t h, const uint8_t* alive, int32_t n, int32_t* out,
                              uint8_t* seen) noexcept
        void live_owner_many(const uint64_t* hashes, size_t count, const uint8_t* alive,
                             int32_t* out) noexcept
        void distribution(const uint8_t* alive, int32_t n_nodes, double* out) noexcept

    void ring_node_points(const char* name, size_t name_len, uint64_t seed, uint32_t count,
                          int32_t owner, vector[RingPoint]& out) except +
    void ring_ketama_node_points(const char* name, size_t name_len, uint32_t hashes,
                                 int32_t owner, vector[RingPoint]& out) except +
    void ring_sort(vector[RingPoint]& pts, bint high_owner_first) except +
    RingTable* ring_from_sorted(const vector[RingPoint]& pts) except +
    RingTable* ring_merge(const RingTable& old, const vector[RingPoint]& added,
                          bint high_owner_first) except +
    RingTable* ring_remap(const RingTable& old, const int32_t* remap, int32_t n_nodes) except +

cdef extern from "faultkit/md5.h" namespace "faultkit" nogil:
    void md5(const void* data, size_t length, uint8_t* digest) noexcept
    uint32_t ketama_hash(const void* data, size_t length) noexcept
