# Cython declarations of csrc/faultkit/{jump,rendezvous,maglev}.h: declarations only.
from libc.stdint cimport uint8_t, uint32_t, uint64_t, int32_t
from libcpp.vector cimport vector

cdef extern from "faultkit/balance/jump.h" namespace "faultkit" nogil:
    int32_t jump_hash(uint64_t key, int32_t num_buckets) noexcept
    void jump_hash_many(const uint64_t* keys, size_t count, int32_t num_buckets,
                        int32_t* out) noexcept
    bint jump_path_available(int path) noexcept
    bint jump_hash_many_path(const uint64_t* keys, size_t count, int32_t num_buckets,
                             int32_t* out, int path) noexcept

cdef extern from "faultkit/balance/rendezvous.h" namespace "faultkit" nogil:
    cdef cppclass RendezvousTable:
        RendezvousTable()
        RendezvousTable(vector[uint64_t] node_hash, vector[double] weight) except +
        int32_t size() noexcept
        int32_t get(uint64_t h, const uint8_t* alive) noexcept
        int32_t get_n(uint64_t h, const uint8_t* alive, int32_t n, int32_t* out,
                      double* scores, int32_t* order) noexcept
        void get_many(const uint64_t* hashes, size_t count, const uint8_t* alive,
                      int32_t* out) noexcept

cdef extern from "faultkit/balance/maglev.h" namespace "faultkit" nogil:
    bint is_prime(uint64_t n) noexcept
    cdef cppclass MaglevTable:
        MaglevTable()
        MaglevTable(const uint64_t* offset, const uint64_t* skip, const double* weight,
                    int32_t n_nodes, uint32_t table_size) except +
        uint32_t size() noexcept
        const int32_t* entries() noexcept
        int32_t live_owner(uint64_t h, const uint8_t* alive) noexcept
        void live_owner_many(const uint64_t* hashes, size_t count, const uint8_t* alive,
                             int32_t* out) noexcept
        void distribution(const uint8_t* alive, int32_t n_nodes, double* out) noexcept
