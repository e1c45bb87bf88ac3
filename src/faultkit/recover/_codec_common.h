// Shared by the codec binding's parts (_codec.cpp, _codec_encode.h,
// _codec_decode.h): owned references and the module's cached objects.
// Included only by _codec.cpp (one translation unit).
#pragma once

#include <Python.h>
#include <pybind11/pybind11.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "faultkit/recover/codec_buffer.h"
#include "faultkit/recover/codec_format.h"

#if defined(__linux__) || defined(__APPLE__)
#include <pthread.h>
#endif

namespace py = pybind11;

namespace faultkit {
namespace binding {

using namespace faultkit::codec;

// ---------------------------------------------------------------- utilities

// Owns one reference; releases it on scope exit (exception-safe building).
struct PyRef {
    PyObject* p = nullptr;
    PyRef() = default;
    explicit PyRef(PyObject* o) : p(o) {}
    PyRef(const PyRef&) = delete;
    PyRef& operator=(const PyRef&) = delete;
    ~PyRef() { Py_XDECREF(p); }
    PyObject* release() {
        PyObject* o = p;
        p = nullptr;
        return o;
    }
    explicit operator bool() const { return p != nullptr; }
};

[[noreturn]] inline void throw_py() { throw py::error_already_set(); }

inline PyObject* check(PyObject* o) {
    if (!o) throw_py();
    return o;
}

// ---------------------------------------------------------------- stack bound

// The encoder and decoder recurse once per nesting level (a few hundred bytes
// of C stack each).  kMaxDepth bounds the depth; this bounds it by the stack
// the calling thread actually has, so a thread made with a small stack
// (threading.stack_size(128 KiB)) gets a ValueError instead of a crash.
//
// kStackReserve bytes stay free below the deepest level for what a level
// calls (numpy, int.from_bytes, a registered type's hook).
inline constexpr size_t kStackReserve = 64 * 1024;
// Where the thread's stack bounds are unknown: assume this much below the
// frame that starts a walk (conservative; the smallest stacks common
// platforms give threads are 128-512 KiB).
inline constexpr size_t kStackFallback = 64 * 1024;

// The lowest address of this thread's stack, or 0 if unknown (cached per
// thread: on Linux the main thread's bounds are read from /proc/self/maps).
inline uintptr_t thread_stack_low() {
    thread_local uintptr_t low = 1;  // 1: not looked up yet
    if (low != 1) return low;
    low = 0;
#if defined(__linux__)
    pthread_attr_t a;
    if (pthread_getattr_np(pthread_self(), &a) == 0) {
        void* addr = nullptr;
        size_t size = 0;
        if (pthread_attr_getstack(&a, &addr, &size) == 0 && size) low = reinterpret_cast<uintptr_t>(addr);
        pthread_attr_destroy(&a);
    }
#elif defined(__APPLE__)
    uintptr_t top = reinterpret_cast<uintptr_t>(pthread_get_stackaddr_np(pthread_self()));
    size_t size = pthread_get_stacksize_np(pthread_self());
    if (top > size) low = top - size;
#endif
    return low;
}

// The address below which a walk starting in the caller's frame must stop
// recursing (compare with the address of a local in each level).
inline uintptr_t stack_limit() {
    char here;
    uintptr_t sp = reinterpret_cast<uintptr_t>(&here);
    uintptr_t low = thread_stack_low();
    if (low && low < sp) return sp - low > kStackReserve ? low + kStackReserve : sp;
    return sp > kStackFallback ? sp - kStackFallback : sp;
}

// True if the frame holding `local` is below the limit (stacks grow down on
// every platform the codec builds for).
__attribute__((always_inline)) inline bool stack_exhausted(const void* local, uintptr_t limit) {
    return reinterpret_cast<uintptr_t>(local) < limit;
}

[[noreturn]] inline void raise_too_deep(const char* what, size_t depth) {
    std::string msg = std::string(what) + " nested " + std::to_string(depth) +
                      " levels deep needs more C stack than this thread has left (run it in a thread with a "
                      "larger threading.stack_size(), or nest less)";
    PyErr_SetString(PyExc_ValueError, msg.c_str());
    throw_py();
}

// Module-level objects looked up once at import.
struct Globals {
    PyObject* ndarray_type = nullptr;      // numpy.ndarray
    PyObject* np_frombuffer = nullptr;     // numpy.frombuffer
    PyObject* np_dtype = nullptr;          // numpy.dtype
    PyObject* np_empty = nullptr;          // numpy.empty
    PyObject* np_ascontiguous = nullptr;   // numpy.ascontiguousarray
    PyObject* corrupt_error = nullptr;     // faultkit.errors.CorruptCheckpointError
    PyObject* int_from_bytes = nullptr;    // int.from_bytes
    PyObject* s_dtype = nullptr;           // interned attribute names
    PyObject* s_kind = nullptr;
    PyObject* s_str = nullptr;
    PyObject* s_little = nullptr;
    PyObject* s_reshape = nullptr;
};
inline Globals G;

inline PyObject* intern(const char* s) {
    PyObject* o = PyUnicode_InternFromString(s);
    if (!o) throw_py();
    return o;
}

}  // namespace binding
}  // namespace faultkit
