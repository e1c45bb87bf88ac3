# Cython declarations of csrc/faultkit/common/xxh3.h: the contract, declarations only.
from libc.stdint cimport uint64_t

cdef extern from "faultkit/common/xxh3.h" namespace "faultkit" nogil:
    uint64_t xxh3_64(const void* data, size_t length, uint64_t seed) noexcept
    uint64_t xxh3_64_u64(uint64_t value, uint64_t seed) noexcept
    bint xxh3_path_available(int path) noexcept
    bint xxh3_64_path(const void* data, size_t length, uint64_t seed, int path,
                      uint64_t* out) noexcept
    bint xxh3_64_u64_many(const uint64_t* values, size_t count, uint64_t seed, uint64_t* out,
                          int path) noexcept
