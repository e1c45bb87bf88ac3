# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""XXH3-64 for Python keys: one call, and many at once into a numpy array."""
from libc.stdint cimport uint64_t, int64_t
from libc.stdlib cimport malloc, free

from faultkit._common.arrays cimport key_array, out_array
from faultkit._common.cxxh3 cimport (
    xxh3_64, xxh3_64_path, xxh3_64_u64_many, xxh3_path_available,
)
from faultkit._common.keys cimport hash_key, str_utf8
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_GET_SIZE

import numpy as np

# Below this many bytes of long keys, holding the GIL is cheaper than a
# release/acquire pair (~100 ns); above it, other threads run while we hash.
cdef enum:
    GIL_RELEASE_BYTES = 1 << 16

cdef uint64_t seed_value(object seed) except? 0:
    if not isinstance(seed, int):
        raise TypeError(f"seed must be an int, not {type(seed).__name__}")
    if seed < 0 or seed > 0xFFFFFFFFFFFFFFFF:
        raise OverflowError(f"seed {seed!r} is outside [0, 2**64 - 1]")
    return <uint64_t>seed


def hash64(data, seed=0):
    """XXH3-64 of ``data`` with ``seed``, as an int in [0, 2**64).

    ``str`` hashes as its UTF-8 bytes, bytes-like objects as their bytes, and
    ``int`` as its 8-byte little-endian two's-complement form (int64 or uint64
    range, else OverflowError).  Equal to ``xxhash.xxh3_64_intdigest`` of
    those bytes with the same seed.
    """
    if seed == 0 and type(seed) is int:
        return hash_key(data, 0)
    return hash_key(data, seed_value(seed))


cdef struct LongKey:
    Py_ssize_t index
    const char* data
    Py_ssize_t size


# Keys longer than this are hashed in a second pass, without the GIL when they
# add up to more than GIL_RELEASE_BYTES.  Shorter keys are hashed in the first
# pass while their bytes are in cache: for them, reading the object is the cost.
cdef enum:
    LONG_KEY_BYTES = 1024


def hash64_many(keys, seed=0, *, out=None):
    """XXH3-64 of every key in ``keys`` into a ``numpy.ndarray[uint64]``.

    ``keys`` is a list or tuple of str/bytes-like/int keys (hashed as
    :func:`hash64` does), or a 1-D numpy array of 64-bit integers (each hashed
    as its 8-byte little-endian form).  ``out``, if given, is a C-contiguous
    uint64 array of the same length to write into.  Long keys are hashed
    without the GIL once they add up to more than 64 KiB; numpy arrays always.
    """
    cdef uint64_t s = seed_value(seed)
    cdef Py_ssize_t n, i, size, n_long = 0, long_bytes = 0
    cdef const char* data
    cdef uint64_t[::1] res
    cdef const uint64_t[::1] ints
    cdef LongKey* longs = NULL
    cdef object item
    cdef list hold
    if isinstance(keys, np.ndarray):
        ints = key_array(keys)
        n = ints.shape[0]
        res = _out_array(out, n)
        if n:
            with nogil:
                xxh3_64_u64_many(&ints[0], <size_t>n, s, &res[0], 0)
        return res.base if out is None else out
    if not isinstance(keys, (list, tuple)):
        raise TypeError(
            f"keys must be a list, tuple or numpy integer array, not {type(keys).__name__}")
    n = len(keys)
    res = _out_array(out, n)
    hold = []  # references to the long keys, valid while the GIL is released
    try:
        for i in range(n):
            if i >= len(keys):  # a buffer key's Python code shrank the list
                raise RuntimeError("keys changed size during hash64_many")
            item = keys[i]
            if type(item) is str:
                data = str_utf8(item, &size)
            elif type(item) is bytes:
                data = PyBytes_AS_STRING(item)
                size = PyBytes_GET_SIZE(item)
            else:  # rare key types (int, bytearray, str subclasses, ...)
                res[i] = hash_key(item, s)
                continue
            if size <= LONG_KEY_BYTES:
                res[i] = xxh3_64(data, <size_t>size, s)
                continue
            if longs == NULL:
                longs = <LongKey*>malloc(n * sizeof(LongKey))
                if longs == NULL:
                    raise MemoryError()
            longs[n_long].index = i
            longs[n_long].data = data
            longs[n_long].size = size
            n_long += 1
            long_bytes += size
            hold.append(item)
        if long_bytes > GIL_RELEASE_BYTES:
            with nogil:
                _hash_long_keys(longs, n_long, s, &res[0])
        elif n_long:
            _hash_long_keys(longs, n_long, s, &res[0])
    finally:
        free(longs)
    return res.base if out is None else out


cdef inline void _hash_long_keys(const LongKey* keys, Py_ssize_t n, uint64_t seed, uint64_t* res) noexcept nogil:
    cdef Py_ssize_t i
    for i in range(n):
        res[keys[i].index] = xxh3_64(keys[i].data, <size_t>keys[i].size, seed)


cdef uint64_t[::1] _out_array(object out, Py_ssize_t n):
    return out_array(out, n, np.uint64)


# The kernels of xxh3.h's long loop and integer batches (Xxh3Path), by name.
_PATHS = {"best": 0, "scalar": 1, "avx2": 2, "avx512": 3}


def _hash64_paths():
    """Names of the XXH3 kernels this build and CPU run (internal: tests)."""
    return [name for name, code in _PATHS.items() if xxh3_path_available(code)]


cdef int _path_code(object path) except -1:
    if path not in _PATHS:
        raise ValueError(f"unknown XXH3 kernel {path!r}; expected one of {sorted(_PATHS)}")
    cdef int code = _PATHS[path]
    if not xxh3_path_available(code):
        raise ValueError(f"this CPU or build has no {path} XXH3 kernel")
    return code


def _hash64_path(data, seed, path):
    """:func:`hash64` of the bytes-like ``data`` with the XXH3 kernel named
    ``path`` (one of ``_hash64_paths()``) for inputs over 240 bytes, so that
    every kernel can be checked against a reference (internal: tests)."""
    cdef int code = _path_code(path)
    cdef uint64_t s = seed_value(seed)
    cdef const unsigned char[::1] view = memoryview(data).cast("B")
    cdef uint64_t h = 0
    with nogil:
        xxh3_64_path(&view[0] if view.shape[0] else NULL, <size_t>view.shape[0], s, code, &h)
    return h


def _hash64_ints_path(values, seed, path):
    """:func:`hash64_many` of a 1-D uint64 numpy array with the XXH3 integer
    kernel named ``path`` (internal: tests)."""
    cdef int code = _path_code(path)
    cdef uint64_t s = seed_value(seed)
    cdef const uint64_t[::1] ints = key_array(values)
    cdef Py_ssize_t n = ints.shape[0]
    cdef uint64_t[::1] res = np.empty(n, dtype=np.uint64)
    if n:
        with nogil:
            xxh3_64_u64_many(&ints[0], <size_t>n, s, &res[0], code)
    return res.base
