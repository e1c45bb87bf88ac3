# Key handling shared by every Cython module that hashes keys: one place
# decides which Python objects are keys and what bytes they hash as, so the
# ring, the hash functions and the detectors all agree.  Declared `inline`
# here so each cimporting module compiles its own copy (no cross-module call).
#
#   str         -> its UTF-8 bytes (CPython caches them on the object; no copy)
#   bytes       -> its bytes
#   other buffer (bytearray, memoryview, ...) -> its bytes, C-contiguous
#   int         -> 8-byte little-endian two's complement (int64 or uint64 range)
from cpython.buffer cimport PyObject_GetBuffer, PyBuffer_Release, PyObject_CheckBuffer, PyBUF_SIMPLE
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_GET_SIZE
from cpython.long cimport PyLong_AsLongLongAndOverflow, PyLong_AsUnsignedLongLong
from libc.stdint cimport uint64_t, int64_t

from faultkit._common.cxxh3 cimport xxh3_64, xxh3_64_u64

cdef extern from "Python.h":
    const char* PyUnicode_AsUTF8AndSize(object s, Py_ssize_t* size) except NULL
    bint PyUnicode_IS_COMPACT_ASCII(object s)
    void* PyUnicode_DATA(object s)
    Py_ssize_t PyUnicode_GET_LENGTH(object s)


cdef inline const char* str_utf8(object s, Py_ssize_t* size) except NULL:
    """UTF-8 bytes of a str.  A compact ASCII str *is* its UTF-8 (read in place,
    the common case); otherwise CPython encodes once and caches on the object."""
    if PyUnicode_IS_COMPACT_ASCII(s):
        size[0] = PyUnicode_GET_LENGTH(s)
        return <const char*>PyUnicode_DATA(s)
    return PyUnicode_AsUTF8AndSize(s, size)


cdef inline uint64_t int_key(object key) except? 0:
    """The uint64 bit pattern of an int key; OverflowError outside int64/uint64."""
    cdef int overflow = 0
    cdef long long v = PyLong_AsLongLongAndOverflow(key, &overflow)
    if overflow == 0:
        return <uint64_t>v
    if overflow > 0:
        try:
            return PyLong_AsUnsignedLongLong(key)
        except OverflowError:
            pass
    raise OverflowError(
        f"int key {key!r} is outside the 64-bit range [-2**63, 2**64 - 1]")


cdef inline bint ascii_hash(object key, uint64_t seed, uint64_t* h) noexcept:
    """XXH3-64 of an exact compact-ASCII str (its UTF-8, read in place) into
    h[0]; False, with nothing done, for any other key.  The common key, and
    small enough that per-call lookups inline it: they try it first and call
    hash_key (too big to inline) only when it returns False."""
    if type(key) is str and PyUnicode_IS_COMPACT_ASCII(key):
        h[0] = xxh3_64(PyUnicode_DATA(key), <size_t>PyUnicode_GET_LENGTH(key), seed)
        return True
    return False


cdef inline uint64_t hash_key(object key, uint64_t seed) except? 0:
    """XXH3-64 of a key, under the rules at the top of this file."""
    cdef Py_ssize_t size
    cdef const char* data
    cdef Py_buffer view
    cdef uint64_t h
    if ascii_hash(key, seed, &h):
        return h
    if isinstance(key, str):
        data = str_utf8(key, &size)
        return xxh3_64(data, <size_t>size, seed)
    if isinstance(key, bytes):
        return xxh3_64(PyBytes_AS_STRING(key), <size_t>PyBytes_GET_SIZE(key), seed)
    if isinstance(key, int):
        return xxh3_64_u64(int_key(key), seed)
    if PyObject_CheckBuffer(key):
        PyObject_GetBuffer(key, &view, PyBUF_SIMPLE)
        try:
            h = xxh3_64(view.buf, <size_t>view.len, seed)
        finally:
            PyBuffer_Release(&view)
        return h
    raise TypeError(
        f"key must be str, bytes-like or int, not {type(key).__name__}")
