# Cython declarations of csrc/faultkit/ring.h: the contract, declarations only.
from libc.stdint cimport uint8_t, uint32_t, uint64_t, int32_t
from libcpp.memory cimport shared_ptr
from libcpp.vector cimport vector

cdef extern from "faultkit/balance/ring.h" namespace "faultkit" nogil:
    cdef struct RingPoint:
        uint64_t point
        int32_t owner

    cdef cppclass RingSnapshot:
        uint32_t size() noexcept
        int bits() noexcept
        uint32_t segments() noexcept
        int32_t slots() noexcept
        int32_t slot_index(int32_t slot) noexcept
        int32_t owner(uint64_t h) noexcept
        int32_t live_owner(uint64_t h, const uint8_t* alive) noexcept
        int32_t live_owners_n(uint64_t h, const uint8_t* alive, int32_t n, int32_t* out,
                              uint8_t* seen) noexcept
        void live_owner_many(const uint64_t* hashes, size_t count, const uint8_t* alive,
                             int32_t* out) noexcept
        void distribution(const uint8_t* alive, int32_t n_nodes, double* out) except +
        void export_points(uint64_t* points, int32_t* owners) noexcept

    cdef cppclass SegmentedRing:
        SegmentedRing() except +
        shared_ptr[RingSnapshot] snapshot() except +
        shared_ptr[RingSnapshot] assign(vector[RingPoint]& pts, bint high_owner_first,
                                        vector[int32_t] slot_index) except +
        shared_ptr[RingSnapshot] assign_xxh3(const char* const* names, const size_t* name_lens,
                                             const uint32_t* counts, size_t n, uint64_t seed,
                                             vector[int32_t] slot_index) except +
        shared_ptr[RingSnapshot] add(vector[RingPoint]& pts, vector[int32_t] slot_index) except +
        shared_ptr[RingSnapshot] remove(const vector[RingPoint]& hint, const uint8_t* drop,
                                        size_t drop_len, vector[int32_t] slot_index) except +
        shared_ptr[RingSnapshot] renumber(const int32_t* remap, size_t remap_len,
                                          vector[int32_t] slot_index) except +
        uint32_t last_written() noexcept
        void set_simd(bint on) except +

    void ring_node_points(const char* name, size_t name_len, uint64_t seed, uint32_t count,
                          int32_t owner, vector[RingPoint]& out) except +
    void ring_ketama_node_points(const char* name, size_t name_len, uint32_t hashes,
                                 int32_t owner, vector[RingPoint]& out) except +

cdef extern from "faultkit/balance/md5.h" namespace "faultkit" nogil:
    void md5(const void* data, size_t length, uint8_t* digest) noexcept
    uint32_t ketama_hash(const void* data, size_t length) noexcept

cdef extern from "faultkit/balance/ring_points.h" namespace "faultkit::ring_points" nogil:
    bint hash_run(uint64_t first, uint32_t count, uint64_t seed, int32_t owner, RingPoint* out,
                  bint allow_simd) noexcept
