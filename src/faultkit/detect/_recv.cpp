// pybind11 shell of the native heartbeat receive path (private; see
// csrc/faultkit/detect/packet_filter.h for the checks and transport.py's
// HeartbeatReceiver for the policy).  Coarse calls only: run() drains a socket
// in batches with the GIL released and returns the accepted entries at once.
//
// Socket syscalls live here (plain POSIX): recvmmsg on Linux, a recvfrom loop
// elsewhere (-DFAULTKIT_NO_RECVMMSG builds that loop on Linux too, to test it).
// The clock read for budgets (CLOCK_MONOTONIC, once per batch) is
// also here: csrc/ takes `now`.
#include <pybind11/pybind11.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <time.h>
#include <unistd.h>

#include <cerrno>
#include <cmath>
#include <cstring>
#include <string>
#include <vector>

#include "faultkit/detect/packet_filter.h"

namespace py = pybind11;
using namespace faultkit::detect;

namespace {

#if defined(__linux__) && !defined(FAULTKIT_NO_RECVMMSG)
constexpr bool kHaveRecvmmsg = true;
#else
constexpr bool kHaveRecvmmsg = false;
#endif

const char* const kVerdictNames[kNumVerdicts] = {"packets",      "oversized", "malformed",
                                                 "unauthenticated", "budget", "penalised"};

double monotonic_now() {
    timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return static_cast<double>(ts.tv_sec) + ts.tv_nsec * 1e-9;
}

SourceKey source_of(const sockaddr_storage& ss) {
    SourceKey k;
    std::memset(&k, 0, sizeof k);
    if (ss.ss_family == AF_INET) {
        const auto* a = reinterpret_cast<const sockaddr_in*>(&ss);
        std::memcpy(k.addr, &a->sin_addr, 4);
        k.port = ntohs(a->sin_port);
        k.family = 4;
    } else if (ss.ss_family == AF_INET6) {
        const auto* a = reinterpret_cast<const sockaddr_in6*>(&ss);
        std::memcpy(k.addr, &a->sin6_addr, 16);
        k.port = ntohs(a->sin6_port);
        k.family = 6;
    }
    return k;
}

void raise_errno(int err, const char* what) {
    PyErr_SetObject(PyExc_OSError, py::make_tuple(err, std::string(what) + ": " + std::strerror(err)).ptr());
    throw py::error_already_set();
}

class Receiver {
  public:
    Receiver(py::bytes key, size_t max_packet, const BudgetConfig& cfg, size_t batch)
        : max_packet_(max_packet), batch_(batch) {
        if (batch < 1 || batch > 1024) throw py::value_error("batch must be in [1, 1024], got " + std::to_string(batch));
        std::string k = key;
        filter_ = std::make_unique<PacketFilter>(reinterpret_cast<const uint8_t*>(k.data()), k.size(), max_packet, cfg);
        bufs_.resize(batch * max_packet);
        addrs_.resize(batch);
#if defined(__linux__) && !defined(FAULTKIT_NO_RECVMMSG)
        iovs_.resize(batch);
        msgs_.resize(batch);
#endif
    }

    // Filter datagrams already in memory, all from one synthetic source.
    py::list process(py::list datagrams, double now, py::bytes address, int port) {
        if (!std::isfinite(now)) throw py::value_error("now must be finite");
        if (port < 0 || port > 65535) throw py::value_error("port must be in [0, 65535], got " + std::to_string(port));
        std::string a = address;
        if (a.size() > 16) throw py::value_error("address must be at most 16 bytes");
        SourceKey src;
        std::memset(&src, 0, sizeof src);
        std::memcpy(src.addr, a.data(), a.size());
        src.port = static_cast<uint16_t>(port);
        std::vector<std::string> copies;
        copies.reserve(datagrams.size());
        for (py::handle d : datagrams) {
            if (!PyBytes_Check(d.ptr())) throw py::type_error("datagrams must be bytes");
            copies.emplace_back(PyBytes_AS_STRING(d.ptr()), PyBytes_GET_SIZE(d.ptr()));
        }
        entries_.clear();
        names_.clear();
        {
            py::gil_scoped_release nogil;
            for (const std::string& c : copies)
                filter_->process(reinterpret_cast<const uint8_t*>(c.data()), c.size(), false, src, now, entries_,
                                 names_);
        }
        return take_entries();
    }

    // Wait up to `timeout` seconds for datagrams on `fd` (or a byte on
    // `wake_fd`: returns None), then drain up to `max_datagrams` of them.
    py::object run(int fd, int wake_fd, double timeout, size_t max_datagrams) {
        if (!(timeout >= 0 && timeout <= 3600)) throw py::value_error("timeout must be in [0, 3600] seconds");
        entries_.clear();
        names_.clear();
        bool woken = false;
        int err = 0;
        {
            py::gil_scoped_release nogil;
            pollfd fds[2] = {{fd, POLLIN, 0}, {wake_fd, POLLIN, 0}};
            int r = ::poll(fds, 2, static_cast<int>(timeout * 1000));
            if (r < 0 && errno != EINTR) {
                err = errno;
            } else if (r > 0 && (fds[1].revents & (POLLIN | POLLHUP | POLLERR | POLLNVAL))) {
                woken = true;
            } else if (r > 0) {
                if (fds[0].revents & POLLNVAL) err = EBADF;
                else err = drain(fd, max_datagrams);
            }
        }
        if (woken) return py::none();
        if (err == EBADF || err == ENOTSOCK) raise_errno(err, "receive");
        if (err) ++socket_errors_;
        return take_entries();
    }

    py::dict counts() const {
        py::dict d;
        for (int v = 0; v < kNumVerdicts; ++v) d[kVerdictNames[v]] = filter_->counts()[v];
        d["socket_errors"] = socket_errors_;
        d["datagrams"] = datagrams_;
        return d;
    }

    size_t known_good() const { return filter_->known_good(); }
    size_t tracked() const { return filter_->tracked(); }
    void reset_sources() { filter_->reset_sources(); }

  private:
    // Without the GIL.  Returns 0 or the errno that stopped it.
    int drain(int fd, size_t max_datagrams) {
        size_t done = 0;
        while (done < max_datagrams) {
            const size_t want = std::min(batch_, max_datagrams - done);
#if defined(__linux__) && !defined(FAULTKIT_NO_RECVMMSG)
            for (size_t i = 0; i < want; ++i) {
                iovs_[i].iov_base = bufs_.data() + i * max_packet_;
                iovs_[i].iov_len = max_packet_;
                std::memset(&msgs_[i], 0, sizeof msgs_[i]);
                msgs_[i].msg_hdr.msg_name = &addrs_[i];
                msgs_[i].msg_hdr.msg_namelen = sizeof addrs_[i];
                msgs_[i].msg_hdr.msg_iov = &iovs_[i];
                msgs_[i].msg_hdr.msg_iovlen = 1;
            }
            int got = ::recvmmsg(fd, msgs_.data(), static_cast<unsigned>(want), MSG_DONTWAIT, nullptr);
            if (got < 0) {
                if (errno == EINTR) continue;
                return (errno == EAGAIN || errno == EWOULDBLOCK) ? 0 : errno;
            }
            const double now = monotonic_now();
            for (int i = 0; i < got; ++i) {
                const bool trunc = (msgs_[i].msg_hdr.msg_flags & MSG_TRUNC) != 0;
                filter_->process(bufs_.data() + i * max_packet_, msgs_[i].msg_len, trunc, source_of(addrs_[i]), now,
                                 entries_, names_);
            }
#else
            int got = 0;
            const double now = monotonic_now();
            for (; static_cast<size_t>(got) < want; ++got) {
                socklen_t alen = sizeof addrs_[0];
                // scratch_ holds any UDP datagram, so an oversized one is seen whole.
                ssize_t n = ::recvfrom(fd, scratch_, sizeof scratch_, MSG_DONTWAIT,
                                       reinterpret_cast<sockaddr*>(&addrs_[0]), &alen);
                if (n < 0) {
                    if (errno == EINTR) { --got; continue; }
                    if (got == 0) return (errno == EAGAIN || errno == EWOULDBLOCK) ? 0 : errno;
                    break;
                }
                filter_->process(scratch_, static_cast<size_t>(n), false, source_of(addrs_[0]), now, entries_,
                                 names_);
            }
            if (got == 0) return 0;
#endif
            datagrams_ += static_cast<uint64_t>(got);
            done += static_cast<size_t>(got);
            if (static_cast<size_t>(got) < want) return 0;  // the queue is empty
        }
        return 0;
    }

    py::list take_entries() {
        py::list out(entries_.size());
        for (size_t i = 0; i < entries_.size(); ++i) {
            const Entry& e = entries_[i];
            PyObject* t = PyTuple_New(4);
            if (t == nullptr) throw py::error_already_set();
            py::object tup = py::reinterpret_steal<py::object>(t);
            PyObject* name = PyUnicode_DecodeUTF8(names_.data() + e.name_off, e.name_len, "strict");
            if (name == nullptr) throw py::error_already_set();  // validated: cannot happen
            PyTuple_SET_ITEM(t, 0, name);
            PyObject* inc = PyLong_FromUnsignedLongLong(e.incarnation_raw);
            if (inc == nullptr) throw py::error_already_set();
            PyTuple_SET_ITEM(t, 1, inc);
            PyObject* seq = PyLong_FromUnsignedLongLong(e.sequence);
            if (seq == nullptr) throw py::error_already_set();
            PyTuple_SET_ITEM(t, 2, seq);
            PyObject* sent = PyFloat_FromDouble(e.sent);
            if (sent == nullptr) throw py::error_already_set();
            PyTuple_SET_ITEM(t, 3, sent);
            PyList_SET_ITEM(out.ptr(), static_cast<Py_ssize_t>(i), tup.release().ptr());
        }
        entries_.clear();
        names_.clear();
        return out;
    }

    std::unique_ptr<PacketFilter> filter_;
    size_t max_packet_;
    size_t batch_;
    std::vector<uint8_t> bufs_;
    std::vector<sockaddr_storage> addrs_;
#if defined(__linux__) && !defined(FAULTKIT_NO_RECVMMSG)
    std::vector<iovec> iovs_;
    std::vector<mmsghdr> msgs_;
#else
    uint8_t scratch_[65536];
#endif
    std::vector<Entry> entries_;
    std::string names_;
    uint64_t socket_errors_ = 0;
    uint64_t datagrams_ = 0;
};

// Send `datagrams` over connected socket `fd`, round-robin, `total` datagrams
// in all (sendmmsg on Linux); returns how many the kernel took.  For load
// tests and benchmarks: floods stay bounded by `total`.
uint64_t send_many(int fd, py::list datagrams, uint64_t total) {
    std::vector<std::string> pkts;
    for (py::handle d : datagrams) {
        if (!PyBytes_Check(d.ptr())) throw py::type_error("datagrams must be bytes");
        pkts.emplace_back(PyBytes_AS_STRING(d.ptr()), PyBytes_GET_SIZE(d.ptr()));
    }
    if (pkts.empty()) throw py::value_error("datagrams must not be empty");
    if (total > (uint64_t{1} << 40)) throw py::value_error("total is too large");
    uint64_t sent = 0;
    int err = 0;
    {
        py::gil_scoped_release nogil;
        size_t next = 0;
#if defined(__linux__) && !defined(FAULTKIT_NO_RECVMMSG)
        constexpr size_t kBatch = 64;
        mmsghdr msgs[kBatch];
        iovec iovs[kBatch];
        while (sent < total) {
            const size_t want = static_cast<size_t>(std::min<uint64_t>(kBatch, total - sent));
            for (size_t i = 0; i < want; ++i) {
                const std::string& p = pkts[(next + i) % pkts.size()];
                iovs[i].iov_base = const_cast<char*>(p.data());
                iovs[i].iov_len = p.size();
                std::memset(&msgs[i], 0, sizeof msgs[i]);
                msgs[i].msg_hdr.msg_iov = &iovs[i];
                msgs[i].msg_hdr.msg_iovlen = 1;
            }
            int r = ::sendmmsg(fd, msgs, static_cast<unsigned>(want), 0);
            if (r < 0) {
                if (errno == EINTR || errno == ENOBUFS || errno == EAGAIN || errno == ECONNREFUSED) continue;
                err = errno;
                break;
            }
            sent += static_cast<uint64_t>(r);
            next = (next + static_cast<size_t>(r)) % pkts.size();
        }
#else
        while (sent < total) {
            const std::string& p = pkts[next];
            if (::send(fd, p.data(), p.size(), 0) < 0) {
                if (errno == EINTR || errno == ENOBUFS || errno == EAGAIN || errno == ECONNREFUSED) continue;
                err = errno;
                break;
            }
            ++sent;
            next = (next + 1) % pkts.size();
        }
#endif
    }
    if (err) raise_errno(err, "send");
    return sent;
}

}  // namespace

PYBIND11_MODULE(_recv, m) {
    m.doc() = "Native heartbeat receive path: batched receive, early rejection, per-source budgets and\n"
              "HMAC-SHA256 through OpenSSL, with the GIL released (private; see faultkit.detect.transport).";
    m.attr("HAVE_RECVMMSG") = kHaveRecvmmsg;
    m.attr("VERDICTS") = py::make_tuple(kVerdictNames[0], kVerdictNames[1], kVerdictNames[2], kVerdictNames[3],
                                        kVerdictNames[4], kVerdictNames[5]);

    py::class_<Receiver>(m, "Receiver",
                         "One receiver thread's filter: framing, per-source budgets, the MAC (OpenSSL).\n"
                         "Not thread-safe: one thread calls it.")
        .def(py::init([](py::bytes key, size_t max_packet, double source_rate, double source_burst,
                         double unknown_rate, double unknown_burst, uint32_t fail_limit, double penalty,
                         uint32_t max_sources, size_t batch) {
                 BudgetConfig cfg;
                 cfg.source_rate = source_rate;
                 cfg.source_burst = source_burst;
                 cfg.unknown_rate = unknown_rate;
                 cfg.unknown_burst = unknown_burst;
                 cfg.fail_limit = fail_limit;
                 cfg.penalty = penalty;
                 cfg.max_sources = max_sources;
                 try {
                     return new Receiver(key, max_packet, cfg, batch);
                 } catch (const std::invalid_argument& e) {
                     throw py::value_error(e.what());
                 }
             }),
             py::arg("key"), py::arg("max_packet"), py::kw_only(), py::arg("source_rate") = 1000.0,
             py::arg("source_burst") = 256.0, py::arg("unknown_rate") = 200000.0,
             py::arg("unknown_burst") = 20000.0, py::arg("fail_limit") = 8, py::arg("penalty") = 2.0,
             py::arg("max_sources") = 4096, py::arg("batch") = 64)
        .def("process", &Receiver::process, py::arg("datagrams"), py::arg("now"), py::kw_only(),
             py::arg("address") = py::bytes(""), py::arg("port") = 0,
             "Filter datagrams (bytes) that all came from one source at monotonic time `now`; returns the\n"
             "accepted entries as (name, raw 64-bit incarnation field, sequence, send time) tuples.")
        .def("run", &Receiver::run, py::arg("fd"), py::arg("wake_fd"), py::arg("timeout"),
             py::arg("max_datagrams") = 4096,
             "Wait up to `timeout` s for datagrams on socket `fd`, drain up to `max_datagrams`, return the\n"
             "accepted entries (as process()); None if `wake_fd` became readable (stop).  GIL released.")
        .def("counts", &Receiver::counts, "Datagrams by verdict since construction, plus socket errors.")
        .def_property_readonly("known_good", &Receiver::known_good, "Sources that have sent a valid datagram.")
        .def_property_readonly("tracked", &Receiver::tracked, "Sources in the table.")
        .def("reset_sources", &Receiver::reset_sources, "Forget every source (known good, penalties, budgets).");

    m.def("send_many", &send_many, py::arg("fd"), py::arg("datagrams"), py::arg("total"),
          "Send `total` datagrams from the list, round-robin, over connected socket `fd` (GIL released);\n"
          "returns how many were sent.  For bounded load tests and benchmarks.");
}
