// pybind11 binding of the checkpoint codec (docs/FORMAT.md).
//
// The C++ core in csrc/faultkit/codec_*.h owns the byte buffers, the file
// framing and the checksums and knows nothing of Python.  This file walks the
// Python object tree: the encoder dispatches on the exact type with the
// CPython API (that walk is the hot path of object-heavy states) and writes
// tags into the core's ByteBuffer; the decoder reads them back through the
// core's bounds-checked Reader.  Large array and bytes payloads never pass
// through the tree: they are written straight from their buffers, hashed and
// written chunk by chunk with the GIL released.
//
// Decoding executes no user code except registered from_state hooks: it builds
// only builtin containers and scalars, numpy arrays through np.frombuffer and
// np.dtype (after checking the dtype string), and ints through int.from_bytes.
#include <Python.h>
#include <errno.h>
#include <unistd.h>
#if defined(__linux__)
#include <sys/mman.h>
#endif
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <stdexcept>
#include <string>
#include <system_error>
#include <thread>
#include <vector>

#include "_codec_common.h"
#include "_codec_decode.h"
#include "_codec_encode.h"
#include "faultkit/recover/codec_io.h"

using namespace faultkit::binding;

namespace {

// ---------------------------------------------------------------- Python API

[[noreturn]] void raise_corrupt(const CodecError& e) {
    PyErr_SetString(G.corrupt_error, e.what());
    throw py::error_already_set();
}

// Run `f`, mapping core errors to Python ones.
template <class F>
auto guarded(F&& f) -> decltype(f()) {
    try {
        return f();
    } catch (const CodecError& e) {
        raise_corrupt(e);
    } catch (const UnsupportedType& e) {
        bool deep = e.why.rfind("state is nested", 0) == 0;
        PyErr_SetString(deep ? PyExc_ValueError : PyExc_TypeError, e.message(deep ? 12 : SIZE_MAX).c_str());
        throw py::error_already_set();
    } catch (const std::system_error& e) {
        PyErr_SetObject(PyExc_OSError, PyRef(Py_BuildValue("(is)", e.code().value(), e.what())).p);
        throw py::error_already_set();
    }
}

std::unique_ptr<Encoded> encode(py::handle state, py::object types, uint64_t blob_threshold, bool allow_blobs,
                                bool snapshot) {
    auto out = std::make_unique<Encoded>();
    PyObject* t = types.is_none() ? nullptr : types.ptr();
    if (t && !PyDict_Check(t)) throw py::type_error("types must be a dict");
    guarded([&] {
        Encoder e(*out, t, blob_threshold, allow_blobs, snapshot);
        e.encode(state.ptr());
        return 0;
    });
    if (snapshot) {
        // Copy the mutable blobs now that the walk is over: with the GIL
        // released (the held views keep their memory alive), so other threads
        // run during a large copy; then drop the views.
        {
            py::gil_scoped_release nogil;
            for (size_t i = 0; i < out->holds.size(); ++i) {
                BlobHold& h = *out->holds[i];
                if (!h.pending_copy) continue;
                h.copy.put_bytes(h.view.buf, static_cast<size_t>(h.view.len));
                out->blobs[i] = Span{h.copy.data(), h.copy.size()};
            }
        }
        for (auto& h : out->holds) {
            if (h->pending_copy && h->has_view) {
                PyBuffer_Release(&h->view);
                h->has_view = false;
            }
        }
    }
    return out;
}

struct PyBuf {
    Py_buffer view{};
    explicit PyBuf(py::handle o) {
        if (PyObject_GetBuffer(o.ptr(), &view, PyBUF_SIMPLE) < 0) throw py::error_already_set();
    }
    ~PyBuf() { PyBuffer_Release(&view); }
    FileView file() const { return FileView{static_cast<const uint8_t*>(view.buf), static_cast<uint64_t>(view.len)}; }
};

Layout parse(py::handle buffer) {
    PyBuf b(buffer);
    return guarded([&] { return parse_layout(b.file().data, b.file().size); });
}

// The decoder pauses the cyclic garbage collector while a tree is built
// (GcPause, _gc_pause.h).  It creates only fresh containers whose children
// exist before them, so it can make no cycle; yet every container allocated
// would count towards a generation-0 collection that traverses all the young
// containers built so far -- most of the cost of decoding 100k small dicts.
// (from_state hooks may build cycles: the collector finds them once re-enabled.)

py::object decode_section(const Layout& l, size_t index, FileView f, py::handle types, const std::vector<Blob>* blobs) {
    const Section& s = l.sections[index];
    if (s.stored != s.length || !section_contiguous(l, s)) throw CodecError("tree section is not contiguous");
    verify_local_chunks(l, index, f);
    Reader r(f.data + s.offset, s.length);
    Decoder d(r, types.is_none() ? nullptr : types.ptr(), blobs);
    GcPause pause;
    return py::reinterpret_steal<py::object>(d.decode_root());
}

py::object read_meta(py::handle buffer, const Layout& l, py::object types) {
    PyBuf b(buffer);
    return guarded([&] { return decode_section(l, 0, b.file(), types, nullptr); });
}

// Decode the state of checkpoint `buffer` (parsed as `l`).  Blobs stored whole
// in the file are used in place (np.frombuffer on `buffer`: a read-only mmap
// gives read-only zero-copy arrays); others are assembled into new memory from
// `refs` (the referenced files' buffers, aligned with l.refs).
py::object read_state(py::handle buffer, const Layout& l, py::list refs, py::object types, bool verify) {
    PyBuf b(buffer);
    FileView f = b.file();
    if (f.size != l.file_size) throw py::value_error("buffer is not the parsed file");
    std::vector<std::unique_ptr<PyBuf>> ref_bufs;
    std::vector<FileView> ref_views;
    for (py::handle r : refs) {
        if (r.is_none()) {
            ref_bufs.push_back(nullptr);
            ref_views.push_back(FileView{});
            continue;
        }
        ref_bufs.push_back(std::make_unique<PyBuf>(r));
        ref_views.push_back(ref_bufs.back()->file());
    }
    return guarded([&] {
        if (ref_views.size() != l.refs.size()) throw CodecError("wrong number of referenced files");
        verify_local_chunks(l, 0, f);  // META: small, and part of what the checksum vouches for
        std::vector<Blob> blobs;
        std::vector<py::object> assembled;
        for (size_t i = 2; i < l.sections.size(); ++i) {
            const Section& s = l.sections[i];
            Blob bl;
            bl.size = s.length;
            if (section_contiguous(l, s)) {
                if (verify) {
                    py::gil_scoped_release nogil;
                    verify_local_chunks(l, i, f);
                }
                bl.owner = buffer.ptr();
                bl.offset = s.offset;
                bl.data = f.data + s.offset;
            } else {
                for (uint64_t k = 0; k < s.n_chunks; ++k) {
                    uint32_t ref = l.chunks[s.first_chunk + k].ref;
                    if (ref && !ref_views[ref - 1].data)
                        throw CodecError("section " + std::to_string(i) + " needs checkpoint " +
                                         std::to_string(l.refs[ref - 1].id) + ", which is missing or invalid");
                }
                py::object mem = py::reinterpret_steal<py::object>(
                    check(PyByteArray_FromStringAndSize(nullptr, static_cast<Py_ssize_t>(s.length))));
                uint8_t* out = reinterpret_cast<uint8_t*>(PyByteArray_AS_STRING(mem.ptr()));
                {
                    py::gil_scoped_release nogil;
                    assemble_section(l, i, f, ref_views, out, verify);
                }
                bl.owner = mem.ptr();
                bl.offset = 0;
                bl.data = out;
                assembled.push_back(std::move(mem));
            }
            blobs.push_back(bl);
        }
        return decode_section(l, 1, f, types, &blobs);
    });
}

// A file image read by read_verified.  Large images (32 MiB and up: glibc's
// largest dynamic mmap threshold, above which malloc hands out fresh pages
// anyway) are 2 MB-aligned and marked for transparent huge pages (Linux), so
// the first touch of 256 MiB costs 128 faults rather than 65536 (measured: the
// 4 kB faults were ~30% of a plain read's time here).  Smaller ones come from
// the heap, 64-byte aligned, where a recovery after a recovery reuses pages
// already faulted in (measured at 25 MiB: 3.96 ms with huge pages, each call
// faulting and zeroing fresh ones, against safetensors' 2.17 ms from the heap).
// Writable, like the bytearray it replaces.  Also the buffer ObjectStore.get
// streams a download into (ReadBuffer(size, huge_pages=False) from Python, its
// pages faulted in by populate() on a second thread meanwhile): unlike
// bytearray(size) it is not zero-filled first, and nobody waits for its page
// faults.  (Huge pages there were bimodal on a VM whose free 2 MB blocks are
// reported to the host: a fresh one costs the host's faults for its 4 kB pages.)
struct ReadBuffer {
    static constexpr size_t kFresh = size_t{32} << 20;  // from here: fresh pages, huge if asked
    uint8_t* data = nullptr;
    size_t size = 0;
    explicit ReadBuffer(size_t n, bool huge_pages = true) : size(n) {
        // What a Python buffer can describe; also keeps the rounding below from wrapping.
        if (n > static_cast<size_t>(PY_SSIZE_T_MAX))
            throw std::length_error("ReadBuffer size " + std::to_string(n) + " exceeds PY_SSIZE_T_MAX");
        constexpr size_t kHuge = size_t{1} << 21;
        const size_t align = n < kFresh ? 64 : huge_pages ? kHuge : 4096;
        const size_t rounded = (n + align - 1) / align * align;
        data = static_cast<uint8_t*>(std::aligned_alloc(align, rounded ? rounded : align));
        if (!data) throw std::bad_alloc();
#if defined(__linux__) && defined(MADV_HUGEPAGE)
        if (align == kHuge) (void)madvise(data, rounded, MADV_HUGEPAGE);  // a hint only
#endif
    }
    // Fault every page in writable without writing them (Linux >= 5.14:
    // MADV_POPULATE_WRITE; bytes already written are kept), so that a thread
    // can take the page faults while another streams a download into the
    // buffer.  False where unsupported or refused (a hint: the writes fault
    // the pages in themselves then).
    bool populate() const {
#if defined(__linux__)
#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23
#endif
        const uintptr_t page = static_cast<uintptr_t>(sysconf(_SC_PAGESIZE));
        const uintptr_t lo = (reinterpret_cast<uintptr_t>(data) + page - 1) / page * page;
        const uintptr_t hi = (reinterpret_cast<uintptr_t>(data) + size) / page * page;  // whole pages only
        if (hi <= lo) return true;
        return madvise(reinterpret_cast<void*>(lo), hi - lo, MADV_POPULATE_WRITE) == 0;
#else
        return false;
#endif
    }
    ReadBuffer(const ReadBuffer&) = delete;
    ReadBuffer& operator=(const ReadBuffer&) = delete;
    ~ReadBuffer() { std::free(data); }
};

// ReadBuffer(size) from Python: an int in [0, PY_SSIZE_T_MAX]; MemoryError if it cannot be allocated.
std::unique_ptr<ReadBuffer> make_read_buffer(py::handle size, py::handle huge_pages) {
    if (!PyBool_Check(huge_pages.ptr()))
        throw py::type_error(std::string("ReadBuffer huge_pages must be a bool, got ") + Py_TYPE(huge_pages.ptr())->tp_name);
    PyObject* o = size.ptr();
    if (PyBool_Check(o) || !PyIndex_Check(o))
        throw py::type_error(std::string("ReadBuffer size must be an int, got ") + Py_TYPE(o)->tp_name);
    py::object v = py::reinterpret_steal<py::object>(check(PyNumber_Index(o)));
    int overflow = 0;
    long long n = PyLong_AsLongLongAndOverflow(v.ptr(), &overflow);
    if (n == -1 && PyErr_Occurred()) throw py::error_already_set();
    std::string shown = py::str(v).cast<std::string>();
    if (overflow < 0 || (!overflow && n < 0)) throw py::value_error("ReadBuffer size must be >= 0, got " + shown);
    if (overflow > 0 || static_cast<unsigned long long>(n) > static_cast<unsigned long long>(PY_SSIZE_T_MAX))
        throw py::value_error("ReadBuffer size must be at most " + std::to_string(PY_SSIZE_T_MAX) + ", got " +
                              shown);
    try {
        return std::make_unique<ReadBuffer>(static_cast<size_t>(n), huge_pages.ptr() == Py_True);
    } catch (const std::bad_alloc&) {
        PyErr_SetString(PyExc_MemoryError, ("cannot allocate a ReadBuffer of " + shown + " bytes").c_str());
        throw py::error_already_set();
    }
}

void pread_all(int fd, uint8_t* p, uint64_t n, uint64_t off) {
    constexpr uint64_t kMaxRead = 64u << 20;  // bounded calls, far below Linux's ~2 GiB cap
    while (n) {
        ssize_t r = ::pread(fd, p, std::min(n, kMaxRead), static_cast<off_t>(off));
        if (r < 0) {
            if (errno == EINTR) continue;
            throw std::system_error(errno, std::generic_category(), "checkpoint read");
        }
        if (r == 0) throw CodecError("file shrank while it was read");
        p += r;
        n -= static_cast<uint64_t>(r);
        off += static_cast<uint64_t>(r);
    }
}

// Read checkpoint file `fd` (`size` bytes) and verify it in one pass: the
// header, footer and TOC first (so the layout is known), then every chunk
// stored in this file, each hashed right after its read while it is still in
// cache (a chunk is 1 MiB by default), instead of reading 256 MiB and then
// reading it all again from memory to hash it.  Returns (buffer, layout);
// read_state(buffer, layout, ..., verify=False) then skips the re-hash of
// local chunks (referenced chunks are still hashed there).  A buffer of 32 MiB
// and more keeps its huge pages and has them faulted in by a second thread
// meanwhile: 256 MiB, medians on this VM, 50 -> 49 ms when freed memory was
// reused at once and 582-591 -> 289-399 ms when it had been reported to the
// host first, as at a restart (4 kB pages with the same thread: 117 and 133 ms;
// docs/benchmarks.md, "read_verified's page faults").
py::tuple read_verified(int fd, uint64_t size) {
    if (fd < 0) throw py::value_error("fd must be >= 0, got " + std::to_string(fd));
    auto buf = std::make_unique<ReadBuffer>(static_cast<size_t>(size));
    Layout l = guarded([&] {
        py::gil_scoped_release nogil;
        // A fresh (large) buffer's pages are faulted in by a second thread
        // while this one reads and hashes, started once the framing parses (a
        // damaged file fails without faulting in the whole buffer first) and
        // joined before the buffer is returned or freed, on every path.
        struct Populator {
            std::thread t;
            ~Populator() {
                if (t.joinable()) t.join();
            }
        } pop;
        auto start_populating = [&] {
            if (size < ReadBuffer::kFresh) return;
            try {
                pop.t = std::thread([&buf] { (void)buf->populate(); });
            } catch (const std::exception&) {
                // No thread to spare: the reads fault the pages in themselves.
            }
        };
        uint8_t* d = buf->data;
        if (size < kHeaderSize + kFooterSize) {
            pread_all(fd, d, size, 0);
            return parse_layout(d, size);  // throws: truncated
        }
        pread_all(fd, d, kHeaderSize, 0);
        pread_all(fd, d + size - kFooterSize, kFooterSize, size - kFooterSize);
        uint64_t toc = faultkit::load_le64(d + size - kFooterSize);
        uint64_t data_end = size - kFooterSize;
        if (toc >= kHeaderSize && toc <= data_end) pread_all(fd, d + toc, data_end - toc, toc);
        Layout lay = parse_layout(d, size, false);  // the framing; contents not yet read
        start_populating();
        const uint64_t cs = lay.header.chunk_size;
        uint64_t at = kHeaderSize;  // everything before `at` is read
        for (size_t i = 0; i < lay.sections.size(); ++i) {
            const Section& s = lay.sections[i];
            for (uint64_t k = 0; k < s.n_chunks; ++k) {
                const Chunk& c = lay.chunks[s.first_chunk + k];
                if (c.ref) continue;
                uint64_t len = chunk_len(s, k, cs);
                if (c.offset < kHeaderSize || c.offset > lay.toc_offset || len > lay.toc_offset - c.offset)
                    throw CodecError("section " + std::to_string(i) + " chunk " + std::to_string(k) +
                                     " is out of bounds");
                if (c.offset >= at) {
                    pread_all(fd, d + at, c.offset + len - at, at);  // padding + the chunk
                    at = c.offset + len;
                } else if (c.offset + len > at) {  // overlaps what was read: read the rest
                    pread_all(fd, d + at, c.offset + len - at, at);
                    at = c.offset + len;
                }
                if (chunk_hash(d + c.offset, len) != c.hash)
                    throw CodecError("section " + std::to_string(i) + " chunk " + std::to_string(k) +
                                     " checksum mismatch");
            }
        }
        if (at < lay.toc_offset) pread_all(fd, d + at, lay.toc_offset - at, at);
        return parse_layout(d, size);  // again, now that the padding is read too (small)
    });
    return py::make_tuple(py::cast(std::move(buf)), std::move(l));
}

py::tuple ref_list(const Layout& l) {
    py::tuple t(l.refs.size());
    for (size_t i = 0; i < l.refs.size(); ++i) t[i] = py::make_tuple(l.refs[i].id, l.refs[i].toc_checksum);
    return t;
}

py::dict write_result(const WriteResult& w) {
    py::dict d;
    d["size"] = w.file_size;
    d["checksum"] = w.toc_checksum;
    d["chunks_written"] = w.chunks_written;
    d["chunks_referenced"] = w.chunks_referenced;
    d["blob_bytes_written"] = w.blob_bytes_written;
    d["blob_bytes_hashed"] = w.blob_bytes_hashed;
    return d;
}

}  // namespace

PYBIND11_MODULE(_codec, m) {
    m.doc() = "Native checkpoint codec (private; use faultkit.recover).  Format: docs/FORMAT.md.";

    py::module_ np = py::module_::import("numpy");
    G.ndarray_type = py::object(np.attr("ndarray")).release().ptr();
    G.np_frombuffer = py::object(np.attr("frombuffer")).release().ptr();
    G.np_dtype = py::object(np.attr("dtype")).release().ptr();
    G.np_empty = py::object(np.attr("empty")).release().ptr();
    G.np_ascontiguous = py::object(np.attr("ascontiguousarray")).release().ptr();
    G.corrupt_error = py::object(py::module_::import("faultkit.errors").attr("CorruptCheckpointError")).release().ptr();
    G.int_from_bytes = check(PyObject_GetAttrString(reinterpret_cast<PyObject*>(&PyLong_Type), "from_bytes"));
    G.s_dtype = intern("dtype");
    G.s_kind = intern("kind");
    G.s_str = intern("str");
    G.s_little = intern("little");
    G.s_reshape = intern("reshape");

    m.attr("FORMAT_VERSION") = py::make_tuple(kVersionMajor, kVersionMinor);
    m.attr("DEFAULT_CHUNK_SIZE") = kDefaultChunkSize;
    m.attr("MAX_DEPTH") = kMaxDepth;
    m.attr("FRESH_BYTES") = ReadBuffer::kFresh;

    py::class_<Encoded>(m, "Encoded", "An encoded state tree plus its blobs, ready to write.")
        .def_property_readonly("tree_size", [](const Encoded& e) { return e.tree.size(); })
        .def_property_readonly("blob_count", [](const Encoded& e) { return e.blobs.size(); })
        .def_property_readonly("blob_bytes", [](const Encoded& e) { return e.blob_bytes; })
        .def("tree_bytes", [](const Encoded& e) {
            return py::bytes(reinterpret_cast<const char*>(e.tree.data()), e.tree.size());
        })
        .def("blob_sources", [](const Encoded& e) {
            // (address, nbytes, exporter or None) per blob: the exporter when the
            // blob is read in place from the state object's own memory.
            py::list out;
            for (size_t i = 0; i < e.blobs.size(); ++i) {
                const BlobHold& h = *e.holds[i];
                bool direct = h.direct && h.has_view && !h.pending_copy && h.view.buf == e.blobs[i].data;
                py::object owner = direct && h.view.obj ? py::reinterpret_borrow<py::object>(h.view.obj) : py::none();
                out.append(py::make_tuple(reinterpret_cast<uintptr_t>(e.blobs[i].data), e.blobs[i].size, owner));
            }
            return out;
        }, "Per blob: (address, nbytes, the object whose own memory it is, or None).");

    py::class_<ChunkMap>(m, "ChunkMap", "Where each blob chunk of a checkpoint lives (the base of an incremental save).")
        .def_property_readonly("chunk_size", [](const ChunkMap& c) { return c.chunk_size; })
        .def_property_readonly("blob_count", [](const ChunkMap& c) { return c.blobs.size(); })
        .def("ids", [](const ChunkMap& c) {
            std::vector<uint64_t> ids;
            for (const BlobMap& b : c.blobs)
                for (const ChunkLoc& k : b.chunks)
                    if (std::find(ids.begin(), ids.end(), k.id) == ids.end()) ids.push_back(k.id);
            return ids;
        }, "Checkpoint ids holding the chunks.");

    py::class_<Layout>(m, "Layout", "The validated framing of one checkpoint file.")
        .def_property_readonly("id", [](const Layout& l) { return l.header.id; })
        .def_property_readonly("version", [](const Layout& l) { return py::make_tuple(l.header.major, l.header.minor); })
        .def_property_readonly("incremental", [](const Layout& l) { return (l.header.flags & kFlagIncremental) != 0; })
        .def_property_readonly("chunk_size", [](const Layout& l) { return l.header.chunk_size; })
        .def_property_readonly("file_size", [](const Layout& l) { return l.file_size; })
        .def_property_readonly("checksum", [](const Layout& l) { return l.toc_checksum; })
        .def_property_readonly("blob_count", [](const Layout& l) { return l.sections.size() - 2; })
        .def_property_readonly("refs", &ref_list)
        .def("chunk_map", [](const Layout& l) { return chunk_map_of(l); });

    m.def("encode", &encode, py::arg("state"), py::arg("types"), py::kw_only(),
          py::arg("blob_threshold"), py::arg("allow_blobs") = true, py::arg("snapshot") = false,
          "Encode a state tree; arrays and bytes-likes of >= blob_threshold bytes become blobs.\n"
          "snapshot=True copies mutable blob buffers so the state may change afterwards.");

    m.def("write", [](int fd, const Encoded& state, const Encoded& meta, uint64_t id, uint64_t chunk_size,
                      const ChunkMap* base, py::object dirty) {
        if (meta.blobs.size()) throw py::value_error("meta cannot hold blobs");
        std::vector<py::bytes> masks;  // kept alive while the GIL is released
        std::vector<const uint8_t*> dirty_ptrs;
        if (!dirty.is_none()) {
            py::list d = dirty.cast<py::list>();
            if (d.size() != state.blobs.size()) throw py::value_error("dirty must have one entry per blob");
            for (size_t b = 0; b < d.size(); ++b) {
                if (d[b].is_none()) {
                    dirty_ptrs.push_back(nullptr);
                    continue;
                }
                if (!PyBytes_Check(d[b].ptr())) throw py::type_error("dirty masks must be bytes or None");
                py::bytes mask = d[b].cast<py::bytes>();
                uint64_t n = chunk_size ? (state.blobs[b].size + chunk_size - 1) / chunk_size : 0;
                if (static_cast<uint64_t>(PyBytes_GET_SIZE(mask.ptr())) != n)
                    throw py::value_error("dirty mask of blob " + std::to_string(b) + " must have " + std::to_string(n) +
                                          " bytes (one per chunk)");
                dirty_ptrs.push_back(reinterpret_cast<const uint8_t*>(PyBytes_AS_STRING(mask.ptr())));
                masks.push_back(std::move(mask));
            }
        }
        auto map = std::make_unique<ChunkMap>();
        WriteResult w = guarded([&] {
            py::gil_scoped_release nogil;
            FdSink sink(fd);
            return write_checkpoint(sink, id, meta.tree_span(), state.tree_span(), state.blobs, chunk_size, base, map.get(),
                                    dirty.is_none() ? nullptr : &dirty_ptrs);
        });
        return py::make_tuple(write_result(w), std::move(map));
    }, py::arg("fd"), py::arg("state"), py::arg("meta"), py::kw_only(), py::arg("id"), py::arg("chunk_size"),
       py::arg("base") = nullptr, py::arg("dirty") = py::none(),
       "Write a checkpoint to file descriptor fd (GIL released).  Returns (info dict, ChunkMap).\n"
       "dirty: None, or per blob None or a bytes mask (one byte per chunk): chunks whose byte is 0\n"
       "are vouched unchanged since the base and take its hash unread.");

    m.def("dumps", [](const Encoded& state, const Encoded& meta, uint64_t id, uint64_t chunk_size) {
        if (meta.blobs.size()) throw py::value_error("meta cannot hold blobs");
        // Written straight into the bytes object: its size is known exactly.
        uint64_t size = full_file_size(meta.tree_span(), state.tree_span(), state.blobs, chunk_size);
        if (size > static_cast<uint64_t>(PY_SSIZE_T_MAX)) throw py::value_error("state too large for bytes");
        py::object out = py::reinterpret_steal<py::object>(check(PyBytes_FromStringAndSize(nullptr, static_cast<Py_ssize_t>(size))));
        uint8_t* data = reinterpret_cast<uint8_t*>(PyBytes_AS_STRING(out.ptr()));
        guarded([&] {
            py::gil_scoped_release nogil;
            BufferSink sink(data, size);
            write_checkpoint(sink, id, meta.tree_span(), state.tree_span(), state.blobs, chunk_size, nullptr, nullptr);
            if (sink.position != size) throw CodecError("internal error: file size mismatch");
            return 0;
        });
        return out;
    }, py::arg("state"), py::arg("meta"), py::kw_only(), py::arg("id") = 0, py::arg("chunk_size") = kDefaultChunkSize,
       "A whole checkpoint file image as bytes.");

    py::class_<ReadBuffer>(m, "ReadBuffer", py::buffer_protocol(),
                           "A writable, uninitialised byte buffer (huge-page backed from 32 MiB): the file "
                           "image read_verified returns, and what ObjectStore.get downloads into.")
        .def(py::init(&make_read_buffer), py::arg("size"), py::kw_only(), py::arg("huge_pages") = true,
             "ReadBuffer(size, *, huge_pages=True): size bytes, contents undefined until written (not "
             "zero-filled); from 32 MiB 2 MB-aligned and marked for transparent huge pages if huge_pages, "
             "else page-aligned.  TypeError unless size is an int and huge_pages a bool, ValueError if size "
             "is negative or above PY_SSIZE_T_MAX, MemoryError if it cannot be allocated.")
        .def_buffer([](ReadBuffer& b) {
            return py::buffer_info(b.data, 1, py::format_descriptor<uint8_t>::format(), 1,
                                   {static_cast<py::ssize_t>(b.size)}, {1});
        })
        .def("__len__", [](const ReadBuffer& b) { return b.size; })
        .def("populate", &ReadBuffer::populate, py::call_guard<py::gil_scoped_release>(),
             "Fault every whole page of the buffer in, writable, without changing its bytes (Linux "
             "MADV_POPULATE_WRITE; releases the GIL), so a thread can take the page faults while another "
             "writes the buffer.  False where unsupported or refused (then the writes fault them in).");
    m.def("read_verified", &read_verified, py::arg("fd"), py::arg("size"),
          "Read checkpoint file fd (size bytes) and verify every chunk stored in it, each hashed "
          "while in cache; returns (buffer, layout).  Raises CorruptCheckpointError, OSError.");
    m.def("parse", &parse, py::arg("buffer"), "Validate the framing of a file image; returns its Layout.");
    m.def("read_meta", &read_meta, py::arg("buffer"), py::arg("layout"), py::arg("types"),
          "Decode the META section.");
    m.def("read_state", &read_state, py::arg("buffer"), py::arg("layout"), py::arg("refs"), py::arg("types"),
          py::kw_only(), py::arg("verify") = true,
          "Decode the state; refs are the referenced files' buffers (None if unavailable).");
}
