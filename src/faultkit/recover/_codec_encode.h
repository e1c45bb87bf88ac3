// The encoder of the codec binding: walks a Python state tree and writes the
// tags of docs/FORMAT.md into the core's ByteBuffer; arrays and large
// bytes-likes become blobs, held by buffer views.  Part of _codec.cpp.
#pragma once

#include "_codec_common.h"
#include "_dict_layout.h"
#include "_gc_pause.h"
#include "faultkit/recover/codec_io.h"

namespace faultkit {
namespace binding {

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

inline std::string path_string(const std::vector<Frame>& innermost_first, size_t max_frames) {
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

inline std::string UnsupportedType::message(size_t max_frames) const { return path_string(frames, max_frames) + ": " + why; }

// ---------------------------------------------------------------- encoding

// A held export of one blob's bytes (an array or a large bytes-like).
struct BlobHold {
    Py_buffer view{};
    bool has_view = false;
    bool pending_copy = false;
    // The blob is the state object's own memory (not a contiguous copy of a
    // strided one): write tracking may watch that memory between saves.
    bool direct = false;
    ByteBuffer copy;  // used instead of the view when snapshotting
};

// One spare tree buffer, kept between encodes (guarded by the GIL: taken and
// given back only while it is held).  A fresh multi-MiB buffer costs a page
// fault per 4 KiB on first touch -- about a tenth of encoding 100k records --
// so reusing the last one's pages pays; buffers above kSpareMax are freed.
inline constexpr size_t kSpareMax = 32u << 20;
inline ByteBuffer* g_spare = nullptr;

inline ByteBuffer take_buffer() {
    if (g_spare) {
        ByteBuffer b = std::move(*g_spare);
        delete g_spare;
        g_spare = nullptr;
        b.clear();
        return b;
    }
    return ByteBuffer(1 << 16);
}

inline void give_buffer(ByteBuffer&& b) {
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

// Without to_state hooks the walk keeps borrowed references (a small dict's
// items, the item being encoded) across calls that allocate objects tracked
// by the cyclic GC (a big int's to_bytes, a set's iterator): a collection
// there runs finalizers and gc.callbacks, which could mutate the state and
// free an object the walk is about to read.  So no collection runs during
// such a walk (GcPause); with hooks, or if the pause cannot be had, the walk
// holds references as it goes.
class Encoder {
public:
    Encoder(Encoded& out, PyObject* types, uint64_t blob_threshold, bool allow_blobs, bool snapshot)
        : out_(out), buf_(out.tree), types_(types), threshold_(blob_threshold), allow_blobs_(allow_blobs),
          snapshot_(snapshot), hooks_(types && PyDict_GET_SIZE(types) > 0) {}

    Encoder(const Encoder&) = delete;
    Encoder& operator=(const Encoder&) = delete;
    ~Encoder() {  // with the GIL held, as the walk
        for (KeySlot& s : key_slots_) Py_XDECREF(s.key);
    }

    void encode(PyObject* o) {
        GcPause pause(!hooks_);
        if (!hooks_ && !pause.holds()) hooks_ = true;  // collections may run: hold references
        if (!scalar(o)) container(o);
    }

private:
    // Everything but the scalars (which the callers have ruled out).
    void container(PyObject* o) {
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

    Encoded& out_;
    ByteBuffer& buf_;
    PyObject* types_;
    uint64_t threshold_;
    bool allow_blobs_;
    bool snapshot_;
    bool hooks_;  // user to_state hooks may run (and could mutate containers), or collections may
    static constexpr Py_ssize_t kSmallDict = 16;
    static constexpr Py_ssize_t kPrefetchAhead = 4;
    size_t depth_ = 0;
    uintptr_t stack_limit_ = stack_limit();  // of the thread that encodes

    // Small dicts' str keys as encoded, by object address: records repeat the
    // same key objects.  Each cached key holds a reference (dropped with the
    // encoder), so its address cannot be reused by another str during the walk
    // whatever code runs meanwhile (a finalizer run by the cyclic GC, say).
    static constexpr size_t kKeySlots = 64;
    static constexpr size_t kKeyBytes = 24;  // tag, one-byte length, up to 22 ASCII bytes
    struct KeySlot {
        PyObject* key;
        size_t len;
        uint8_t bytes[kKeyBytes];
    };
    KeySlot key_slots_[kKeySlots] = {};

    // Append key `k` of a small dict from (or into) the cache; false if it is
    // not a short compact ASCII str (the caller encodes it as any item).
    __attribute__((always_inline)) inline bool put_key(PyObject* k) {
        KeySlot& s = key_slots_[(reinterpret_cast<uintptr_t>(k) >> 4) & (kKeySlots - 1)];
        if (s.key == k) {
            uint8_t* p = buf_.tail(kKeyBytes);
            std::memcpy(p, s.bytes, kKeyBytes);  // fixed size: a few moves; the tail past len is not counted
            buf_.commit(p + s.len);
            return true;
        }
        if (Py_TYPE(k) != &PyUnicode_Type || !PyUnicode_IS_COMPACT_ASCII(k)) return false;
        size_t n = static_cast<size_t>(PyUnicode_GET_LENGTH(k));
        if (n + 2 > kKeyBytes) return false;
        uint8_t* p = buf_.tail(kKeyBytes);
        p[0] = kTagStr;
        p[1] = static_cast<uint8_t>(n);  // < 0x80: a one-byte varint
        std::memcpy(p + 2, PyUnicode_DATA(k), n);
        std::memcpy(s.bytes, p, n + 2);
        Py_INCREF(k);
        Py_XDECREF(s.key);
        s.key = k;
        s.len = n + 2;
        buf_.commit(p + n + 2);
        return true;
    }

    // The leaves (str, int, float, None, bool) inline, without recursion: they
    // are most of the objects of a typical state and cannot be unsupported.
    __attribute__((always_inline)) inline bool scalar(PyObject* o) {
        PyTypeObject* t = Py_TYPE(o);
        if (t == &PyUnicode_Type) {
            if (PyUnicode_IS_COMPACT_ASCII(o)) {
                size_t n = static_cast<size_t>(PyUnicode_GET_LENGTH(o));  // <= PY_SSIZE_T_MAX: n + 11 cannot wrap
                uint8_t* p = buf_.tail(n + 11);
                *p = kTagStr;
                p = ByteBuffer::at_varint(p + 1, n);
                buf_.commit(ByteBuffer::at_bytes(p, PyUnicode_DATA(o), n));
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

    // Inlined into each container loop: a call per leaf cost more (saved
    // registers) than the leaf itself.
    __attribute__((always_inline)) inline void item(PyObject* o, Frame::Kind kind, Py_ssize_t index, PyObject* key) {
        if (!scalar(o)) child(o, kind, index, key);
    }

    // Encode a non-scalar child one level deeper; on an unsupported object, record where
    // it is on the way out.  Enforces the depth limit (and so ends cycles).
    void child(PyObject* o, Frame::Kind kind, Py_ssize_t index, PyObject* key) {
        if (depth_ >= kMaxDepth) {
            UnsupportedType e("state is nested deeper than " + std::to_string(kMaxDepth) + " levels (a reference cycle?)");
            e.frames.push_back(Frame{kind, index, (Py_XINCREF(key), key)});
            throw e;
        }
        char probe;
        if (stack_exhausted(&probe, stack_limit_)) raise_too_deep("a state", depth_);
        ++depth_;
        try {
            container(o);
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
        PyRef tmp;
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
        PyRef bits(check(PyObject_CallMethod(o, "bit_length", nullptr)));
        Py_ssize_t nbits = PyLong_AsSsize_t(bits.p);
        if (nbits < 0) throw_py();
        Py_ssize_t n = nbits / 8 + 1;
        PyRef meth(check(PyObject_GetAttrString(o, "to_bytes")));
        PyRef args(check(Py_BuildValue("(nO)", n, G.s_little)));
        PyRef kw(check(Py_BuildValue("{s:O}", "signed", Py_True)));
        PyRef b(check(PyObject_Call(meth.p, args.p, kw.p)));
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
            if (small_dict_items(o, n, keys, vals) != n) changed("dict");
            for (Py_ssize_t i = 0; i < n; ++i) {
                if (!put_key(keys[i])) item(keys[i], Frame::kKey, 0, keys[i]);
                item(vals[i], Frame::kKey, 0, keys[i]);
            }
            return;
        }
        while (PyDict_Next(o, &pos, &k, &v)) {
            if (++seen > n) break;
            if (hooks_) {  // a hook could drop the dict's references meanwhile
                PyRef kr((Py_INCREF(k), k)), vr((Py_INCREF(v), v));
                item(k, Frame::kKey, 0, k);
                item(v, Frame::kKey, 0, k);
            } else {
                item(k, Frame::kKey, 0, k);
                item(v, Frame::kKey, 0, k);
            }
        }
        if (seen != n || PyDict_GET_SIZE(o) != n) changed("dict");
    }

    // The items of a dict of n <= kSmallDict items into keys/vals, in order,
    // prefetching the values; returns how many it found (n, or n + 1 if the
    // dict holds more).  Reads CPython's table directly where its layout is
    // known (dict_layout.h): PyDict_Next costs ~45 instructions per item.
    static Py_ssize_t small_dict_items(PyObject* o, Py_ssize_t n, PyObject** keys, PyObject** vals) {
        Py_ssize_t seen = 0;
#if FAULTKIT_DICT_LAYOUT
        const PyDictObject* d = reinterpret_cast<const PyDictObject*>(o);
        if (d->ma_values == nullptr) {  // a combined table (split ones: PyDict_Next below)
            const dict_layout::Keys* dk = reinterpret_cast<const dict_layout::Keys*>(d->ma_keys);
            const char* entries = dk->dk_indices + (size_t{1} << dk->dk_log2_index_bytes);
            const Py_ssize_t end = dk->dk_nentries;
            if (dk->dk_kind == dict_layout::kUnicode) {
                const auto* e = reinterpret_cast<const dict_layout::UnicodeEntry*>(entries);
                for (Py_ssize_t i = 0; i < end; ++i) {
                    PyObject* v = e[i].value;
                    if (!v) continue;  // deleted
                    if (seen == n) return n + 1;
                    __builtin_prefetch(v);
                    keys[seen] = e[i].key;
                    vals[seen++] = v;
                }
                return seen;
            }
            if (dk->dk_kind == dict_layout::kGeneral) {
                const auto* e = reinterpret_cast<const dict_layout::GeneralEntry*>(entries);
                for (Py_ssize_t i = 0; i < end; ++i) {
                    PyObject* v = e[i].value;
                    if (!v) continue;
                    if (seen == n) return n + 1;
                    __builtin_prefetch(v);
                    keys[seen] = e[i].key;
                    vals[seen++] = v;
                }
                return seen;
            }
        }
#endif
        Py_ssize_t pos = 0;
        PyObject *k, *v;
        while (PyDict_Next(o, &pos, &k, &v)) {
            if (seen == n) return n + 1;
            __builtin_prefetch(v);
            keys[seen] = k;
            vals[seen++] = v;
        }
        return seen;
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
                PyRef hold((Py_INCREF(it), it));
                item(it, Frame::kIndex, i, nullptr);
            } else {
                item(it, Frame::kIndex, i, nullptr);
            }
        }
    }

    void put_set(PyObject* o, uint8_t tag) {
        Py_ssize_t n = PySet_GET_SIZE(o);
        buf_.put_tag_varint(tag, static_cast<uint64_t>(n));
        PyRef it(check(PyObject_GetIter(o)));
        Py_ssize_t i = 0;
        while (PyObject* x = PyIter_Next(it.p)) {
            PyRef hold(x);
            if (i == n) break;
            item(x, Frame::kSetItem, i++, nullptr);
        }
        if (PyErr_Occurred()) throw_py();
        if (i != n) changed("set");
    }

    // Take the bytes of `o` (C order) as blob number len(blobs); returns it.
    uint64_t add_blob(PyObject* o, bool copy, bool direct) {
        auto h = std::make_unique<BlobHold>();
        if (PyObject_GetBuffer(o, &h->view, PyBUF_C_CONTIGUOUS) < 0) throw_py();
        h->has_view = true;
        h->direct = direct && !copy;
        Span s{static_cast<const uint8_t*>(h->view.buf), static_cast<uint64_t>(h->view.len)};
        h->pending_copy = copy;  // copied after the walk (see encode()), GIL released
        out_.holds.push_back(std::move(h));
        out_.blobs.push_back(s);
        out_.blob_bytes += s.size;
        return out_.blobs.size() - 1;
    }

    void put_bytes_like(PyObject* o, uint8_t tag, uint8_t blob_tag) {
        Py_buffer v;
        PyRef contiguous;
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
            uint64_t idx = add_blob(src, snapshot_ && !(tag == kTagBytes || src == contiguous.p), src == o);
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
        PyRef dtype(check(PyObject_GetAttr(o, G.s_dtype)));
        PyRef kind(check(PyObject_GetAttr(dtype.p, G.s_kind)));
        const char* k = PyUnicode_AsUTF8(kind.p);
        if (!k) throw_py();
        if (!(k[0] && std::strchr("biufc", k[0]) && !k[1])) unsupported(o, std::string("numpy dtype kind '") + k + "' is not numeric or bool");
        if (!allow_blobs_) unsupported(o, "meta cannot hold numpy arrays");
        PyRef dstr(check(PyObject_GetAttr(dtype.p, G.s_str)));
        Py_ssize_t dlen;
        const char* ds = PyUnicode_AsUTF8AndSize(dstr.p, &dlen);
        if (!ds) throw_py();
        if (dlen > 8) unsupported(o, "numpy dtype with a long descriptor");
        // Non-contiguous arrays are made contiguous (a copy; the view is C order).
        PyRef contiguous;
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
        uint64_t idx = add_blob(src, snapshot_ && src == o, src == o);
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
        PyRef state(check(PyObject_CallOneArg(to_state, o)));
        buf_.put_tag_varint(kTagCustom, static_cast<uint64_t>(n));
        buf_.put_bytes(s, static_cast<size_t>(n));
        item(state.p, Frame::kCustom, 0, nullptr);
    }
};

}  // namespace binding
}  // namespace faultkit
