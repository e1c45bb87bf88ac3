// pybind11 binding of the write tracker (csrc/faultkit/write_tracker.h):
// which pages of a buffer were written since the last look, on Linux >= 6.7.
// Private; the Checkpointer uses it to hash only the chunks of large arrays
// that may have changed since the previous checkpoint.
#include <pybind11/pybind11.h>

#include <cerrno>
#include <cstring>
#include <string>

#include "faultkit/recover/write_tracker.h"

namespace py = pybind11;
using faultkit::track::WriteTracker;

namespace {

void check(int err, const char* what) {
    if (err) {
        PyErr_SetObject(PyExc_OSError, py::make_tuple(err, std::string(what) + ": " + std::strerror(err)).ptr());
        throw py::error_already_set();
    }
}

}  // namespace

PYBIND11_MODULE(_track, m) {
    m.doc() = "Write tracking with userfaultfd asynchronous write protection and PAGEMAP_SCAN (private).";
    m.attr("PAGE_SIZE") = WriteTracker::page_size();

    py::class_<WriteTracker>(m, "WriteTracker",
                             "Tracks which pages of armed ranges were written (or dropped from memory) since the\n"
                             "last collect().  available is False, with reason, where the kernel lacks the feature.")
        .def(py::init<>())
        .def_property_readonly("available", &WriteTracker::available)
        .def_property_readonly("reason", [](const WriteTracker& t) { return t.reason(); })
        .def_property_readonly("tracked", &WriteTracker::tracked, "Number of armed ranges.")
        .def("arm", [](WriteTracker& t, uint64_t addr, uint64_t nbytes) { check(t.arm(addr, nbytes), "arm"); },
             py::arg("addr"), py::arg("nbytes"),
             "Start tracking the pages of [addr, addr + nbytes): all clean now.  OSError (errno) if refused:\n"
             "EEXIST overlap with an armed range, EINVAL not private anonymous writable memory.")
        .def("collect", [](WriteTracker& t, uint64_t addr, uint64_t nbytes, uint64_t chunk_size) {
            if (chunk_size == 0) throw py::value_error("chunk_size must be > 0");
            if (nbytes == 0) throw py::value_error("nbytes must be > 0");
            uint64_t n = (nbytes - 1) / chunk_size + 1;
            PyObject* b = PyBytes_FromStringAndSize(nullptr, static_cast<Py_ssize_t>(n));
            if (!b) throw py::error_already_set();
            py::bytes out = py::reinterpret_steal<py::bytes>(b);
            uint8_t* d = reinterpret_cast<uint8_t*>(PyBytes_AS_STRING(b));
            std::memset(d, 0, n);
            check(t.collect(addr, nbytes, chunk_size, d, n), "collect");
            return out;
        }, py::arg("addr"), py::arg("nbytes"), py::arg("chunk_size"),
           "Bytes, one per chunk of chunk_size bytes of the range: 1 if a page in it was written or is not\n"
           "present since arm() or the last collect(); those pages are protected again.  OSError on\n"
           "failure, after which the range is no longer armed.")
        .def("disarm", [](WriteTracker& t, uint64_t addr, uint64_t nbytes) { return t.disarm(addr, nbytes); },
             py::arg("addr"), py::arg("nbytes"), "Stop tracking an armed range; returns 0 or an errno value.")
        .def("close", &WriteTracker::close, "Disarm every range and close the descriptors.");
}
