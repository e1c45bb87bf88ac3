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
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <algorithm>
#include <cstring>
#include <memory>
#include <string>
#include <system_error>
#include <vector>

#include "faultkit/codec_buffer.h"
#include "faultkit/codec_format.h"
#include "faultkit/codec_io.h"

namespace py = pybind11;
using namespace faultkit::codec;

namespace {

// ---------------------------------------------------------------- utilities

// Owns one reference; releases it on scope exit (exception-safe building).
struct Ref {
    PyObject* p = nullptr;
    Ref() = default;
    explicit Ref(PyObject* o) : p(o) {}
    Ref(const Ref&) = delete;
    Ref& operator=(const Ref&) = delete;
    ~Ref() { Py_XDECREF(p); }
    PyObject* release() {
        PyObject* o = p;
        p = nullptr;
        return o;
    }
    explicit operator bool() const { return p != nullptr; }
};

[[noreturn]] void throw_py() { throw py::error_already_set(); }

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
Globals G;

PyObject* intern(const char* s) {
    PyObject* o = PyUnicode_InternFromString(s);
    if (!o) throw_py();
    return o;
}

// One step of the path from the root to an object: collected while an
// error unwinds, so the happy path pays nothing for it.
struct Frame {
    enum Kind : uint8_t { kIndex, kKey, kSetItem, kCustom } kind;
    Py_ssize_t index;
    PyObject* key;  // a new reference (kKey), released by ~UnsupportedType
};

// An unsupported object in the state; the path is filled in on the way out.
struct UnsupportedType {
    std::string why;
    std::vector<Frame> frames;  // innermost first
    UnsupportedType(std::string w) : why(std::move(w)) {}
    UnsupportedType(UnsupportedType&& o) noexcept : why(std::move(o.why)), frames(std::move(o.frames)) {}
    UnsupportedType(const UnsupportedType& o) : why(o.why), frames(o.frames) {
        for (Frame& f : frames) Py_XINCREF(f.key);
    }
    ~UnsupportedType() {
        for (Frame& f : frames) Py_XDECREF(f.key);
    }
    std::string message(size_t max_frames = SIZE_MAX) const;
};

std::string path_string(const std::vector<Frame>& innermost_first, size_t max_frames) {
    std::string s = "state";
    size_t n = 0;
    for (auto it = innermost_first.rbegin(); it != innermost_first.rend(); ++it) {
        const Frame& f = *it;
        if (n++ == max_frames) {
            s += "...";
            break;
        }
        switch (f.kind) {
            case Frame::kIndex:
                s += "[" + std::to_string(f.index) + "]";
                break;
            case Frame::kKey: {
                PyObject* r = PyObject_Repr(f.key);
                const char* u = r ? PyUnicode_AsUTF8(r) : nullptr;
                if (u) {
                    s += "[";
                    s += u;
                    s += "]";
                } else {
                    PyErr_Clear();
                    s += "[?]";
                }
                Py_XDECREF(r);
                break;
            }
            case Frame::kSetItem:
                s += ".<set item " + std::to_string(f.index) + ">";
                break;
            case Frame::kCustom:
                s += ".<to_state>";
                break;
        }
    }
    return s;
}

std::string UnsupportedType::message(size_t max_frames) const { return path_string(frames, max_frames) + ": " + why; }

// ---------------------------------------------------------------- encoding

// A held export of one blob's bytes (an array or a large bytes-like).
struct BlobHold {
    Py_buffer view{};
    bool has_view = false;
    bool pending_copy = false;
    ByteBuffer copy;  // used instead of the view when snapshotting
};

// One spare tree buffer, kept between encodes (guarded by the GIL: taken and
// given back only while it is held).  A fresh multi-MiB buffer costs a page
// fault per 4 KiB on first touch -- about a tenth of encoding 100k records --
// so reusing the last one's pages pays; buffers above kSpareMax are freed.
constexpr size_t kSpareMax = 32u << 20;
ByteBuffer* g_spare = nullptr;

ByteBuffer take_buffer() {
    if (g_spare) {
        ByteBuffer b = std::move(*g_spare);
        delete g_spare;
        g_spare = nullptr;
        b.clear();
        return b;
    }
    return ByteBuffer(1 << 16);
}

void give_buffer(ByteBuffer&& b) {
    if (g_spare || b.capacity() > kSpareMax) return;
    g_spare = new (std::nothrow) ByteBuffer(std::move(b));
}

struct Encoded {
    ByteBuffer tree = take_buffer();
    std::vector<std::unique_ptr<BlobHold>> holds;
    std::vector<Span> blobs;
    uint64_t blob_bytes = 0;

    Encoded() = default;
    Encoded(const Encoded&) = delete;
    ~Encoded() {  // runs with the GIL held (pybind11 deallocation, or encode())
        for (auto& h : holds)
            if (h->has_view) PyBuffer_Release(&h->view);
        give_buffer(std::move(tree));
    }
    Span tree_span() const { return Span{tree.data(), tree.size()}; }
};

class Encoder {
public:
    Encoder(Encoded& out, PyObject* types, uint64_t blob_threshold, bool allow_blobs, bool snapshot)
        : out_(out), buf_(out.tree), types_(types), threshold_(blob_threshold), allow_blobs_(allow_blobs),
          snapshot_(snapshot), hooks_(types && PyDict_GET_SIZE(types) > 0) {}

    void encode(PyObject* o) {
        if (scalar(o)) return;
        PyTypeObject* t = Py_TYPE(o);
        if (t == &PyDict_Type) return put_dict(o);
        if (t == &PyList_Type) return put_list(o, kTagList);
        if (t == &PyTuple_Type) return put_list(o, kTagTuple);
        if (reinterpret_cast<PyObject*>(t) == G.ndarray_type) return put_array(o);
        if (t == &PyBytes_Type) return put_bytes_like(o, kTagBytes, kTagBlobBytes);
        if (t == &PyByteArray_Type) return put_bytes_like(o, kTagByteArray, kTagBlobByteArray);
        if (t == &PyMemoryView_Type) return put_bytes_like(o, kTagMemoryView, kTagBlobMemoryView);
        if (t == &PySet_Type) return put_set(o, kTagSet);
        if (t == &PyFrozenSet_Type) return put_set(o, kTagFrozenSet);
        return put_custom(o);
    }

private:
    Encoded& out_;
    ByteBuffer& buf_;
    PyObject* types_;
    uint64_t threshold_;
    bool allow_blobs_;
    bool snapshot_;
    bool hooks_;  // user to_state hooks may run (and could mutate containers)
    static constexpr Py_ssize_t kSmallDict = 16;
    static constexpr Py_ssize_t kPrefetchAhead = 4;
    size_t depth_ = 0;

    // The leaves (str, int, float, None, bool) inline, without recursion: they
    // are most of the objects of a typical state and cannot be unsupported.
    __attribute__((always_inline)) inline bool scalar(PyObject* o) {
        PyTypeObject* t = Py_TYPE(o);
        if (t == &PyUnicode_Type) {
            if (PyUnicode_IS_COMPACT_ASCII(o)) {
                buf_.put_tagged_bytes(kTagStr, PyUnicode_DATA(o), static_cast<size_t>(PyUnicode_GET_LENGTH(o)));
            } else {
                put_str(o);
            }
            return true;
        }
        if (t == &PyLong_Type) {
#if PY_VERSION_HEX < 0x030C0000
            Py_ssize_t size = Py_SIZE(o);
            if (size >= -1 && size <= 1) {
                long long v = static_cast<long long>(size) * static_cast<long long>(reinterpret_cast<PyLongObject*>(o)->ob_digit[0]);
                buf_.put_tag_u64(kTagInt64, static_cast<uint64_t>(v));
                return true;
            }
#else
            if (PyUnstable_Long_IsCompact(reinterpret_cast<PyLongObject*>(o))) {
                long long v = static_cast<long long>(PyUnstable_Long_CompactValue(reinterpret_cast<PyLongObject*>(o)));
                buf_.put_tag_u64(kTagInt64, static_cast<uint64_t>(v));
                return true;
            }
#endif
            put_int(o);
            return true;
        }
        if (t == &PyFloat_Type) {
            double d = PyFloat_AS_DOUBLE(o);
            uint64_t bits;
            std::memcpy(&bits, &d, 8);
            buf_.put_tag_u64(kTagFloat, bits);
            return true;
        }
        if (o == Py_None) {
            buf_.put_u8(kTagNone);
            return true;
        }
        if (t == &PyBool_Type) {
            buf_.put_u8(o == Py_True ? kTagTrue : kTagFalse);
            return true;
        }
        return false;
    }

    inline void item(PyObject* o, Frame::Kind kind, Py_ssize_t index, PyObject* key) {
        if (!scalar(o)) child(o, kind, index, key);
    }

    // Encode a child one level deeper; on an unsupported object, record where
    // it is on the way out.  Enforces the depth limit (and so ends cycles).
    void child(PyObject* o, Frame::Kind kind, Py_ssize_t index, PyObject* key) {
        if (depth_ >= kMaxDepth) {
            UnsupportedType e("state is nested deeper than " + std::to_string(kMaxDepth) + " levels (a reference cycle?)");
            e.frames.push_back(Frame{kind, index, (Py_XINCREF(key), key)});
            throw e;
        }
        ++depth_;
        try {
            encode(o);
        } catch (UnsupportedType& e) {
            --depth_;
            e.frames.push_back(Frame{kind, index, (Py_XINCREF(key), key)});
            throw;
        } catch (...) {
            --depth_;
            throw;
        }
        --depth_;
    }

    [[noreturn]] void unsupported(PyObject* o, const std::string& why) {
        throw UnsupportedType(why + " (type " + Py_TYPE(o)->tp_name + ")");
    }

    [[noreturn]] void changed(const char* what) {
        PyErr_Format(PyExc_RuntimeError, "%s changed size during encoding", what);
        throw_py();
    }

    void put_str(PyObject* o) {
        Py_ssize_t n;
        const char* data;
        Ref tmp;
        if (PyUnicode_IS_COMPACT_ASCII(o)) {
            n = PyUnicode_GET_LENGTH(o);
            data = static_cast<const char*>(PyUnicode_DATA(o));
        } else {
            data = PyUnicode_AsUTF8AndSize(o, &n);
            if (!data) {  // lone surrogates: keep them exactly, as "surrogatepass" does
                PyErr_Clear();
                tmp.p = check(PyUnicode_AsEncodedString(o, "utf-8", "surrogatepass"));
                data = PyBytes_AS_STRING(tmp.p);
                n = PyBytes_GET_SIZE(tmp.p);
            }
        }
        buf_.put_tagged_bytes(kTagStr, data, static_cast<size_t>(n));
    }

    void put_int(PyObject* o) {
        int overflow = 0;
        long long v = PyLong_AsLongLongAndOverflow(o, &overflow);
        if (!overflow) {
            if (v == -1 && PyErr_Occurred()) throw_py();
            return buf_.put_tag_u64(kTagInt64, static_cast<uint64_t>(v));
        }
        // Any size: n bytes of little-endian two's complement, n = bit_length // 8 + 1.
        Ref bits(check(PyObject_CallMethod(o, "bit_length", nullptr)));
        Py_ssize_t nbits = PyLong_AsSsize_t(bits.p);
        if (nbits < 0) throw_py();
        Py_ssize_t n = nbits / 8 + 1;
        Ref meth(check(PyObject_GetAttrString(o, "to_bytes")));
        Ref args(check(Py_BuildValue("(nO)", n, G.s_little)));
        Ref kw(check(Py_BuildValue("{s:O}", "signed", Py_True)));
        Ref b(check(PyObject_Call(meth.p, args.p, kw.p)));
        buf_.put_tag_varint(kTagBigInt, static_cast<uint64_t>(n));
        buf_.put_bytes(PyBytes_AS_STRING(b.p), static_cast<size_t>(n));
    }

    void put_dict(PyObject* o) {
        Py_ssize_t n = PyDict_GET_SIZE(o);
        buf_.put_tag_varint(kTagDict, static_cast<uint64_t>(n));
        Py_ssize_t pos = 0, seen = 0;
        PyObject *k, *v;
        if (n <= kSmallDict && !hooks_) {
            // Small dicts (records): collect the items first and prefetch the
            // values' headers, so their cache misses overlap instead of
            // queueing one after another -- the walk is memory-latency bound.
            PyObject* keys[kSmallDict];
            PyObject* vals[kSmallDict];
            while (PyDict_Next(o, &pos, &k, &v) && seen < n) {
                __builtin_prefetch(v);
                keys[seen] = k;
                vals[seen++] = v;
            }
            if (seen != n) changed("dict");
            for (Py_ssize_t i = 0; i < n; ++i) {
                item(keys[i], Frame::kKey, 0, keys[i]);
                item(vals[i], Frame::kKey, 0, keys[i]);
            }
            return;
        }
        while (PyDict_Next(o, &pos, &k, &v)) {
            if (++seen > n) break;
            if (hooks_) {  // a hook could drop the dict's references meanwhile
                Ref kr((Py_INCREF(k), k)), vr((Py_INCREF(v), v));
                item(k, Frame::kKey, 0, k);
                item(v, Frame::kKey, 0, k);
            } else {
                item(k, Frame::kKey, 0, k);
                item(v, Frame::kKey, 0, k);
            }
        }
        if (seen != n || PyDict_GET_SIZE(o) != n) changed("dict");
    }

    void put_list(PyObject* o, uint8_t tag) {
        bool is_list = tag == kTagList;
        Py_ssize_t n = is_list ? PyList_GET_SIZE(o) : PyTuple_GET_SIZE(o);
        buf_.put_tag_varint(tag, static_cast<uint64_t>(n));
        for (Py_ssize_t i = 0; i < n; ++i) {
            if (is_list && PyList_GET_SIZE(o) != n) changed("list");
            PyObject* it = is_list ? PyList_GET_ITEM(o, i) : PyTuple_GET_ITEM(o, i);
            if (i + kPrefetchAhead < n)  // the next items' headers, while this one is encoded
                __builtin_prefetch(is_list ? PyList_GET_ITEM(o, i + kPrefetchAhead) : PyTuple_GET_ITEM(o, i + kPrefetchAhead));
            if (hooks_) {
                Ref hold((Py_INCREF(it), it));
                item(it, Frame::kIndex, i, nullptr);
            } else {
                item(it, Frame::kIndex, i, nullptr);
            }
        }
    }

    void put_set(PyObject* o, uint8_t tag) {
        Py_ssize_t n = PySet_GET_SIZE(o);
        buf_.put_tag_varint(tag, static_cast<uint64_t>(n));
        Ref it(check(PyObject_GetIter(o)));
        Py_ssize_t i = 0;
        while (PyObject* x = PyIter_Next(it.p)) {
            Ref hold(x);
            if (i == n) break;
            item(x, Frame::kSetItem, i++, nullptr);
        }
        if (PyErr_Occurred()) throw_py();
        if (i != n) changed("set");
    }

    // Take the bytes of `o` (C order) as blob number len(blobs); returns it.
    uint64_t add_blob(PyObject* o, bool copy) {
        auto h = std::make_unique<BlobHold>();
        if (PyObject_GetBuffer(o, &h->view, PyBUF_C_CONTIGUOUS) < 0) throw_py();
        h->has_view = true;
        Span s{static_cast<const uint8_t*>(h->view.buf), static_cast<uint64_t>(h->view.len)};
        h->pending_copy = copy;  // copied after the walk (see encode()), GIL released
        out_.holds.push_back(std::move(h));
        out_.blobs.push_back(s);
        out_.blob_bytes += s.size;
        return out_.blobs.size() - 1;
    }

    void put_bytes_like(PyObject* o, uint8_t tag, uint8_t blob_tag) {
        Py_buffer v;
        Ref contiguous;
        PyObject* src = o;
        if (PyObject_GetBuffer(o, &v, PyBUF_C_CONTIGUOUS) < 0) {
            if (tag != kTagMemoryView) throw_py();
            PyErr_Clear();  // a strided memoryview: take its bytes in C order
            contiguous.p = check(PyObject_CallMethod(o, "tobytes", nullptr));
            src = contiguous.p;
            if (PyObject_GetBuffer(src, &v, PyBUF_SIMPLE) < 0) throw_py();
        }
        uint64_t n = static_cast<uint64_t>(v.len);
        if (allow_blobs_ && n >= threshold_) {
            PyBuffer_Release(&v);
            // bytes are immutable: a snapshot can keep the view instead of copying.
            uint64_t idx = add_blob(src, snapshot_ && !(tag == kTagBytes || src == contiguous.p));
            buf_.put_tag_varint(blob_tag, idx);
            return;
        }
        try {
            buf_.put_tagged_bytes(tag, v.buf, n);
        } catch (...) {
            PyBuffer_Release(&v);
            throw;
        }
        PyBuffer_Release(&v);
    }

    void put_array(PyObject* o) {
        Ref dtype(check(PyObject_GetAttr(o, G.s_dtype)));
        Ref kind(check(PyObject_GetAttr(dtype.p, G.s_kind)));
        const char* k = PyUnicode_AsUTF8(kind.p);
        if (!k) throw_py();
        if (!(k[0] && std::strchr("biufc", k[0]) && !k[1])) unsupported(o, std::string("numpy dtype kind '") + k + "' is not numeric or bool");
        if (!allow_blobs_) unsupported(o, "meta cannot hold numpy arrays");
        Ref dstr(check(PyObject_GetAttr(dtype.p, G.s_str)));
        Py_ssize_t dlen;
        const char* ds = PyUnicode_AsUTF8AndSize(dstr.p, &dlen);
        if (!ds) throw_py();
        if (dlen > 8) unsupported(o, "numpy dtype with a long descriptor");
        // Non-contiguous arrays are made contiguous (a copy; the view is C order).
        Ref contiguous;
        PyObject* src = o;
        Py_buffer probe;
        if (PyObject_GetBuffer(o, &probe, PyBUF_C_CONTIGUOUS) < 0) {
            PyErr_Clear();
            contiguous.p = check(PyObject_CallFunctionObjArgs(G.np_ascontiguous, o, nullptr));
            src = contiguous.p;
            if (PyObject_GetBuffer(src, &probe, PyBUF_C_CONTIGUOUS) < 0) throw_py();
        }
        int ndim = probe.ndim;
        std::vector<Py_ssize_t> shape(probe.shape, probe.shape + ndim);
        PyBuffer_Release(&probe);
        uint64_t idx = add_blob(src, snapshot_ && src == o);
        buf_.put_u8(kTagArray);
        buf_.put_u8(static_cast<uint8_t>(dlen));
        buf_.put_bytes(ds, static_cast<size_t>(dlen));
        buf_.put_varint(static_cast<uint64_t>(ndim));
        for (Py_ssize_t d : shape) buf_.put_varint(static_cast<uint64_t>(d));
        buf_.put_varint(idx);
    }

    void put_custom(PyObject* o) {
        PyObject* entry = types_ ? PyDict_GetItemWithError(types_, reinterpret_cast<PyObject*>(Py_TYPE(o))) : nullptr;
        if (!entry) {
            if (PyErr_Occurred()) throw_py();
            unsupported(o, "unsupported type; register it with faultkit.register_type");
        }
        // entry = (name: str, to_state: callable)
        PyObject* name = PyTuple_GET_ITEM(entry, 0);
        PyObject* to_state = PyTuple_GET_ITEM(entry, 1);
        Py_ssize_t n;
        const char* s = PyUnicode_AsUTF8AndSize(name, &n);
        if (!s) throw_py();
        Ref state(check(PyObject_CallOneArg(to_state, o)));
        buf_.put_tag_varint(kTagCustom, static_cast<uint64_t>(n));
        buf_.put_bytes(s, static_cast<size_t>(n));
        child(state.p, Frame::kCustom, 0, nullptr);
    }
};

// ---------------------------------------------------------------- decoding

// One decoded blob: where its logical bytes are, and the object that owns them.
struct Blob {
    PyObject* owner = nullptr;  // borrowed (the file buffer, or an assembled bytearray)
    const uint8_t* data = nullptr;
    uint64_t offset = 0;  // offset of the bytes in owner's buffer
    uint64_t size = 0;
};

// Short dict keys recur (100k records with the same 5 keys): reuse the str.
class KeyCache {
public:
    static constexpr size_t kSlots = 512;
    static constexpr size_t kMaxLen = 32;
    ~KeyCache() {
        for (PyObject* o : slots_) Py_XDECREF(o);
    }
    PyObject* get(const uint8_t* p, size_t n) {
        size_t h = static_cast<size_t>(faultkit::xxh3_64(p, n, 0)) & (kSlots - 1);
        PyObject* o = slots_[h];
        if (o && static_cast<size_t>(PyUnicode_GET_LENGTH(o)) == n && std::memcmp(PyUnicode_DATA(o), p, n) == 0) {
            Py_INCREF(o);
            return o;
        }
        for (size_t i = 0; i < n; ++i)
            if (p[i] & 0x80) return nullptr;  // only ASCII keys are cached (length == bytes)
        PyObject* s = PyUnicode_DecodeASCII(reinterpret_cast<const char*>(p), static_cast<Py_ssize_t>(n), nullptr);
        if (!s) throw_py();
        Py_XDECREF(slots_[h]);
        Py_INCREF(s);
        slots_[h] = s;
        return s;
    }

private:
    PyObject* slots_[kSlots] = {};
};

class Decoder {
public:
    Decoder(Reader r, PyObject* types, const std::vector<Blob>* blobs)
        : r_(r), types_(types), blobs_(blobs) {}

    PyObject* decode_root() {
        PyObject* o = decode(0);
        if (!r_.at_end()) {
            Py_DECREF(o);
            r_.fail("trailing bytes after the root value");
        }
        return o;
    }

private:
    Reader r_;
    PyObject* types_;
    const std::vector<Blob>* blobs_;
    KeyCache keys_;

    // Wrap an exception raised by building a builtin (unhashable key, bad
    // UTF-8) as corrupt input: the data was not produced by the encoder.
    [[noreturn]] void corrupt_from_python(const char* what) {
        PyObject *t, *v, *tb;
        PyErr_Fetch(&t, &v, &tb);
        std::string msg = what;
        if (v) {
            PyObject* s = PyObject_Str(v);
            if (s && PyUnicode_Check(s)) msg += std::string(": ") + PyUnicode_AsUTF8(s);
            Py_XDECREF(s);
        }
        PyErr_Clear();
        Py_XDECREF(t);
        Py_XDECREF(v);
        Py_XDECREF(tb);
        r_.fail(msg.c_str());
    }

    PyObject* str(uint64_t n, bool key) {
        const uint8_t* p = r_.take(n);
        if (key && n <= KeyCache::kMaxLen) {
            if (PyObject* o = keys_.get(p, n)) return o;
        }
        PyObject* s = PyUnicode_DecodeUTF8(reinterpret_cast<const char*>(p), static_cast<Py_ssize_t>(n), "surrogatepass");
        if (!s) corrupt_from_python("invalid UTF-8 in a str");
        return s;
    }

    const Blob& blob() {
        uint64_t i = r_.varint();
        if (!blobs_ || i >= blobs_->size()) r_.fail("reference to a missing blob section");
        return (*blobs_)[i];
    }

    PyObject* decode(size_t depth, bool key = false) {
        if (depth > kMaxDepth) r_.fail("nested deeper than the depth limit");
        uint8_t tag = r_.u8();
        switch (tag) {
            case kTagNone:
                Py_RETURN_NONE;
            case kTagFalse:
                Py_RETURN_FALSE;
            case kTagTrue:
                Py_RETURN_TRUE;
            case kTagInt64:
                return check(PyLong_FromLongLong(static_cast<long long>(r_.u64())));
            case kTagBigInt: {
                uint64_t n = r_.varint();
                const uint8_t* p = r_.take(n);
                if (n == 0) r_.fail("empty big int");
                Ref b(check(PyBytes_FromStringAndSize(reinterpret_cast<const char*>(p), static_cast<Py_ssize_t>(n))));
                Ref kw(check(Py_BuildValue("{s:O}", "signed", Py_True)));
                Ref args(check(PyTuple_Pack(2, b.p, G.s_little)));
                return check(PyObject_Call(G.int_from_bytes, args.p, kw.p));
            }
            case kTagFloat: {
                uint64_t bits = r_.u64();
                double d;
                std::memcpy(&d, &bits, 8);
                return check(PyFloat_FromDouble(d));
            }
            case kTagStr:
                return str(r_.varint(), key);
            case kTagBytes:
            case kTagByteArray:
            case kTagMemoryView: {
                uint64_t n = r_.varint();
                const char* p = reinterpret_cast<const char*>(r_.take(n));
                return bytes_like(tag - kTagBytes, p, n);
            }
            case kTagBlobBytes:
            case kTagBlobByteArray:
            case kTagBlobMemoryView: {
                const Blob& b = blob();
                return bytes_like(tag - kTagBlobBytes, reinterpret_cast<const char*>(b.data), b.size);
            }
            case kTagList:
            case kTagTuple: {
                uint64_t n = r_.count(1);
                bool is_list = tag == kTagList;
                Ref seq(check(is_list ? PyList_New(static_cast<Py_ssize_t>(n)) : PyTuple_New(static_cast<Py_ssize_t>(n))));
                for (uint64_t i = 0; i < n; ++i) {
                    PyObject* item = decode(depth + 1);
                    if (is_list)
                        PyList_SET_ITEM(seq.p, static_cast<Py_ssize_t>(i), item);
                    else
                        PyTuple_SET_ITEM(seq.p, static_cast<Py_ssize_t>(i), item);
                }
                return seq.release();
            }
            case kTagDict: {
                uint64_t n = r_.count(2);
#if PY_VERSION_HEX < 0x030D0000
                Ref d(check(_PyDict_NewPresized(static_cast<Py_ssize_t>(n))));
#else
                Ref d(check(PyDict_New()));
#endif
                for (uint64_t i = 0; i < n; ++i) {
                    Ref k(decode(depth + 1, true));
                    Ref v(decode(depth + 1));
                    if (PyDict_SetItem(d.p, k.p, v.p) < 0) corrupt_from_python("bad dict key");
                }
                return d.release();
            }
            case kTagSet:
            case kTagFrozenSet: {
                uint64_t n = r_.count(1);
                Ref s(check(tag == kTagSet ? PySet_New(nullptr) : PyFrozenSet_New(nullptr)));
                for (uint64_t i = 0; i < n; ++i) {
                    Ref item(decode(depth + 1));
                    if (PySet_Add(s.p, item.p) < 0) corrupt_from_python("bad set item");
                }
                return s.release();
            }
            case kTagArray:
                return array();
            case kTagCustom: {
                uint64_t n = r_.varint();
                const uint8_t* p = r_.take(n);
                Ref name(PyUnicode_DecodeUTF8(reinterpret_cast<const char*>(p), static_cast<Py_ssize_t>(n), nullptr));
                if (!name) corrupt_from_python("invalid UTF-8 in a type name");
                PyObject* hook = types_ ? PyDict_GetItemWithError(types_, name.p) : nullptr;
                if (!hook) {
                    if (PyErr_Occurred()) throw_py();
                    r_.fail(("unknown registered type '" + std::string(reinterpret_cast<const char*>(p), n) +
                             "' (register it with faultkit.register_type before loading)").c_str());
                }
                Ref state(decode(depth + 1));
                return check(PyObject_CallOneArg(hook, state.p));  // the one kind of user code decoding runs
            }
            default:
                r_.fail(("unknown tag 0x" + std::to_string(tag)).c_str());
        }
    }

    PyObject* bytes_like(int which, const char* p, uint64_t n) {
        if (which == 1) return check(PyByteArray_FromStringAndSize(p, static_cast<Py_ssize_t>(n)));
        Ref b(check(PyBytes_FromStringAndSize(p, static_cast<Py_ssize_t>(n))));
        if (which == 0) return b.release();
        return check(PyMemoryView_FromObject(b.p));
    }

    PyObject* array() {
        uint8_t dlen = r_.u8();
        const char* ds = reinterpret_cast<const char*>(r_.take(dlen));
        // Accept only "<>|" + one of "biufc" + an item size: np.dtype is then
        // given nothing it could interpret as code or a structured type.
        auto one_of = [](char c, const char* set) { return c != 0 && std::strchr(set, c) != nullptr; };
        if (dlen < 3 || dlen > 4 || !one_of(ds[0], "<>|") || !one_of(ds[1], "biufc")) r_.fail("bad array dtype");
        for (int i = 2; i < dlen; ++i)
            if (ds[i] < '0' || ds[i] > '9') r_.fail("bad array dtype");
        Ref dstr(check(PyUnicode_FromStringAndSize(ds, dlen)));
        Ref dtype(PyObject_CallOneArg(G.np_dtype, dstr.p));
        if (!dtype) corrupt_from_python("bad array dtype");
        Ref canonical(check(PyObject_GetAttr(dtype.p, G.s_str)));
        if (PyUnicode_Compare(canonical.p, dstr.p) != 0) r_.fail("array dtype is not in canonical form");
        Py_ssize_t itemsize = PyLong_AsSsize_t(Ref(check(PyObject_GetAttrString(dtype.p, "itemsize"))).p);
        if (itemsize <= 0) r_.fail("bad array item size");

        uint64_t ndim = r_.varint();
        if (ndim > kMaxNdim) r_.fail("array has too many dimensions");
        Ref shape(check(PyTuple_New(static_cast<Py_ssize_t>(ndim))));
        uint64_t count = 1;
        bool overflow = false;
        for (uint64_t i = 0; i < ndim; ++i) {
            uint64_t d = r_.varint();
            if (d > static_cast<uint64_t>(PY_SSIZE_T_MAX)) r_.fail("array dimension too large");
            if (d && count > UINT64_MAX / d) overflow = true;
            count *= d;
            PyTuple_SET_ITEM(shape.p, static_cast<Py_ssize_t>(i), check(PyLong_FromUnsignedLongLong(d)));
        }
        const Blob& b = blob();
        if (overflow || count > b.size / static_cast<uint64_t>(itemsize) || count * static_cast<uint64_t>(itemsize) != b.size)
            r_.fail("array shape disagrees with its blob's length");
        Ref flat;
        if (count == 0) {
            flat.p = check(PyObject_CallFunctionObjArgs(G.np_empty, shape.p, dtype.p, nullptr));
            return flat.release();
        }
        Ref cnt(check(PyLong_FromUnsignedLongLong(count)));
        Ref off(check(PyLong_FromUnsignedLongLong(b.offset)));
        Ref args(check(PyTuple_Pack(4, b.owner, dtype.p, cnt.p, off.p)));
        flat.p = check(PyObject_Call(G.np_frombuffer, args.p, nullptr));
        return check(PyObject_CallMethodOneArg(flat.p, G.s_reshape, shape.p));
    }
};

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
        PyErr_SetObject(PyExc_OSError, Ref(Py_BuildValue("(is)", e.code().value(), e.what())).p);
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

// Pauses the cyclic garbage collector while a tree is built.  The decoder
// creates only fresh containers whose children exist before them, so it can
// make no cycle; yet every container allocated would count towards a
// generation-0 collection that traverses all the young containers built so
// far -- most of the cost of decoding 100k small dicts.  (from_state hooks may
// build cycles: the collector finds them once re-enabled.)
struct GcPause {
    bool was_enabled;
#if PY_VERSION_HEX >= 0x030A0000
    GcPause() : was_enabled(PyGC_Disable() != 0) {}
    ~GcPause() {
        if (was_enabled) PyGC_Enable();
    }
#else
    GcPause() : was_enabled(false) {}
#endif
};

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

    py::class_<Encoded>(m, "Encoded", "An encoded state tree plus its blobs, ready to write.")
        .def_property_readonly("tree_size", [](const Encoded& e) { return e.tree.size(); })
        .def_property_readonly("blob_count", [](const Encoded& e) { return e.blobs.size(); })
        .def_property_readonly("blob_bytes", [](const Encoded& e) { return e.blob_bytes; })
        .def("tree_bytes", [](const Encoded& e) {
            return py::bytes(reinterpret_cast<const char*>(e.tree.data()), e.tree.size());
        });

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
                      const ChunkMap* base) {
        if (meta.blobs.size()) throw py::value_error("meta cannot hold blobs");
        auto map = std::make_unique<ChunkMap>();
        WriteResult w = guarded([&] {
            py::gil_scoped_release nogil;
            FdSink sink(fd);
            return write_checkpoint(sink, id, meta.tree_span(), state.tree_span(), state.blobs, chunk_size, base, map.get());
        });
        return py::make_tuple(write_result(w), std::move(map));
    }, py::arg("fd"), py::arg("state"), py::arg("meta"), py::kw_only(), py::arg("id"), py::arg("chunk_size"),
       py::arg("base") = nullptr,
       "Write a checkpoint to file descriptor fd (GIL released).  Returns (info dict, ChunkMap).");

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

    m.def("parse", &parse, py::arg("buffer"), "Validate the framing of a file image; returns its Layout.");
    m.def("read_meta", &read_meta, py::arg("buffer"), py::arg("layout"), py::arg("types"),
          "Decode the META section.");
    m.def("read_state", &read_state, py::arg("buffer"), py::arg("layout"), py::arg("refs"), py::arg("types"),
          py::kw_only(), py::arg("verify") = true,
          "Decode the state; refs are the referenced files' buffers (None if unavailable).");
}
