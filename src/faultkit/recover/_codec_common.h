// Shared by the codec binding's parts (_codec.cpp, _codec_encode.h,
// _codec_decode.h): owned references and the module's cached objects.
// Included only by _codec.cpp (one translation unit).
#pragma once

#include <Python.h>
#include <pybind11/pybind11.h>

#include <algorithm>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "faultkit/recover/codec_buffer.h"
#include "faultkit/recover/codec_format.h"

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
