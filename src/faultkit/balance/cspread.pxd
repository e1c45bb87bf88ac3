# Cython declarations of csrc/faultkit/balance/spread.h: the contract, declarations only.
from libc.stdint cimport int64_t, uint8_t, uint64_t

cdef extern from "faultkit/balance/spread.h" namespace "faultkit" nogil:
    cdef cppclass SpreadView:
        const uint64_t* dom_hash
        const int64_t* offsets
        int64_t domains
        const uint64_t* svc_hash
        const uint8_t* live
        const int64_t* live_count

    int64_t spread_choose(const SpreadView& v, uint64_t kh, int64_t n, int64_t* out,
                          uint64_t* scores, int64_t* scratch) noexcept
