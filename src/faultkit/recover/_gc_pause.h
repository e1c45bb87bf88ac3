// One scope guard that pauses CPython's cyclic garbage collector, for the
// codec's encoder and decoder (part of _codec.cpp; needs the GIL).
//
// From 3.10 it is PyGC_Disable/PyGC_Enable; 3.9 has no C API for it, so the gc
// module's isenabled()/disable()/enable() are called instead (about 0.1 us a
// pause).  holds() says whether no collection can run in the scope: true when
// the collector was paused here or already off; false only if the 3.9 calls
// failed, and then callers take their path that is safe with collections.
#pragma once

#include <Python.h>

namespace faultkit {
namespace binding {

class GcPause {
public:
    explicit GcPause(bool pause = true) {
        if (!pause) return;
#if PY_VERSION_HEX >= 0x030A0000
        resume_ = PyGC_Disable() != 0;
        holds_ = true;
#else
        PyObject* gc = PyImport_ImportModule("gc");
        PyObject* on = gc ? PyObject_CallMethod(gc, "isenabled", nullptr) : nullptr;
        PyObject* off = on ? PyObject_CallMethod(gc, "disable", nullptr) : nullptr;
        if (off) {
            resume_ = on == Py_True;
            holds_ = true;
        } else {
            PyErr_Clear();
        }
        Py_XDECREF(off);
        Py_XDECREF(on);
        Py_XDECREF(gc);
#endif
    }
    ~GcPause() {
        if (!resume_) return;
#if PY_VERSION_HEX >= 0x030A0000
        PyGC_Enable();
#else
        PyObject *exc_type, *exc, *tb;
        PyErr_Fetch(&exc_type, &exc, &tb);  // an error in flight stays the one raised
        PyObject* gc = PyImport_ImportModule("gc");
        PyObject* r = gc ? PyObject_CallMethod(gc, "enable", nullptr) : nullptr;
        if (!r) PyErr_Clear();
        Py_XDECREF(r);
        Py_XDECREF(gc);
        PyErr_Restore(exc_type, exc, tb);
#endif
    }
    GcPause(const GcPause&) = delete;
    GcPause& operator=(const GcPause&) = delete;

    bool holds() const noexcept { return holds_; }

private:
    bool resume_ = false;  // the collector was on and this guard turned it off
    bool holds_ = false;
};

}  // namespace binding
}  // namespace faultkit
