// The decoder of the codec binding: rebuilds a Python state tree from the
// tags of docs/FORMAT.md through the core's bounds-checked Reader.  Builds
// only builtins, numpy arrays (np.frombuffer after a strict dtype check) and
// ints (int.from_bytes); runs no user code but registered from_state hooks.
// Part of _codec.cpp.
#pragma once

#include "_codec_common.h"
#include "_dict_layout.h"

namespace faultkit {
namespace binding {

// ---------------------------------------------------------------- decoding

// One decoded blob: where its logical bytes are, and the object that owns them.
struct Blob {
    PyObject* owner = nullptr;  // borrowed (the file buffer, or an assembled bytearray)
    const uint8_t* data = nullptr;
    uint64_t offset = 0;  // offset of the bytes in owner's buffer
    uint64_t size = 0;
};

// Short dict keys recur (100k records with the same 5 keys): reuse the str.
// A slot remembers its key's length and bytes as four words, so a hit is
// decided without hashing the whole key or touching the str object.
class KeyCache {
public:
    static constexpr size_t kSlots = 512;
    static constexpr size_t kMaxLen = 32;
    ~KeyCache() {
        for (Slot& s : slots_) Py_XDECREF(s.str);
    }
    PyObject* get(const uint8_t* p, size_t n) {
        uint64_t w[4];
        words(p, n, w);
        uint64_t h = (w[0] ^ (w[1] * 0x9E3779B97F4A7C15ull) ^ (w[2] * 0xC2B2AE3D27D4EB4Full) ^ w[3] ^ n) *
                     0xFF51AFD7ED558CCDull;
        Slot& s = slots_[h >> 55];  // the top 9 bits: kSlots
        if (s.str && s.n == n && s.w[0] == w[0] && s.w[1] == w[1] && s.w[2] == w[2] && s.w[3] == w[3]) {
            Py_INCREF(s.str);
            return s.str;
        }
        if ((w[0] | w[1] | w[2] | w[3]) & 0x8080808080808080ull) return nullptr;  // only ASCII keys (length == bytes)
        PyObject* o = PyUnicode_DecodeASCII(reinterpret_cast<const char*>(p), static_cast<Py_ssize_t>(n), nullptr);
        if (!o) throw_py();
        Py_XDECREF(s.str);
        Py_INCREF(o);
        s = Slot{o, n, {w[0], w[1], w[2], w[3]}};
        return o;
    }

private:
    struct Slot {
        PyObject* str;
        size_t n;
        uint64_t w[4];
    };
    static_assert(kSlots == 512, "get() indexes with the top 9 bits of the hash");

    // The n <= 32 bytes at p as four words that, with n, determine them all:
    // overlapping loads that stay within [p, p + n) and cover it.
    static void words(const uint8_t* p, size_t n, uint64_t* w) {
        w[2] = w[3] = 0;
        if (n >= 16) {
            std::memcpy(&w[0], p, 8);
            std::memcpy(&w[1], p + 8, 8);
            std::memcpy(&w[2], p + n - 16, 8);
            std::memcpy(&w[3], p + n - 8, 8);
        } else if (n >= 8) {
            std::memcpy(&w[0], p, 8);
            std::memcpy(&w[1], p + n - 8, 8);
        } else if (n >= 4) {
            uint32_t x, y;
            std::memcpy(&x, p, 4);
            std::memcpy(&y, p + n - 4, 4);
            w[0] = x;
            w[1] = y;
        } else {
            w[0] = n ? (uint64_t{p[0]} | uint64_t{p[n / 2]} << 8 | uint64_t{p[n - 1]} << 16) : 0;
            w[1] = 0;
        }
    }

    Slot slots_[kSlots] = {};
};

// Records repeat one key sequence: {"id", "name", ...} 100k times.  A dict
// whose keys are, in order, the same str objects as the previous run of dicts
// is made by copying a template dict (those keys, values None: PyDict_Copy
// clones its table with one memcpy) and writing its values into the copy's
// entries: no hashing, probing or insertion per item.  Only where CPython's
// table layout is known (_dict_layout.h), and each copy is checked to be the
// combined unicode table of exactly those keys before it is written.  A key
// sequence becomes the template on its second consecutive dict, so
// alternating shapes cost a few reference counts, not a template each.
class DictTemplates {
public:
    static constexpr size_t kMaxItems = 16;
    ~DictTemplates() {
        Py_XDECREF(tmpl_);
        clear_candidate();
    }

#if FAULTKIT_DICT_LAYOUT
    // A new dict of keys[0..n) -> vals[0..n) (stealing the values on success;
    // keys stay the caller's), or nullptr if the keys are not the template's.
    PyObject* make(size_t n, PyObject* const* keys, PyObject* const* vals) {
        if (!tmpl_ || n != tmpl_n_) return nullptr;
        for (size_t i = 0; i < n; ++i)
            if (keys[i] != tmpl_keys_[i]) return nullptr;
        PyObject* d = PyDict_Copy(tmpl_);
        if (!d) throw_py();
        dict_layout::UnicodeEntry* e = unicode_entries(d, n);
        if (!e) {
            Py_DECREF(d);
            return nullptr;
        }
        for (size_t i = 0; i < n; ++i)
            if (e[i].key != keys[i] || e[i].value != Py_None) {
                Py_DECREF(d);
                return nullptr;
            }
        bool track = false;
        for (size_t i = 0; i < n; ++i) {
            e[i].value = vals[i];  // steals; the None it replaces was the copy's reference
            Py_DECREF(Py_None);
            // What dict insertion would track (CPython's MAINTAIN_TRACKING): any
            // container value (untracked tuples of atoms aside; tracking them
            // too is harmless).
            track |= PyObject_IS_GC(vals[i]) != 0;
        }
        if (track && !PyObject_GC_IsTracked(d)) PyObject_GC_Track(d);
        return d;
    }

    // Called after a dict of these n keys was built the slow way: remember
    // the sequence, and make it the template if it is the second in a row.
    void saw(size_t n, PyObject* const* keys) {
        if (n == 0 || n > kMaxItems) return;
        for (size_t i = 0; i < n; ++i)
            if (!PyUnicode_CheckExact(keys[i])) return;
        bool same = n == cand_n_;
        for (size_t i = 0; same && i < n; ++i) same = keys[i] == cand_keys_[i];
        if (!same) {
            clear_candidate();
            for (size_t i = 0; i < n; ++i) {
                Py_INCREF(keys[i]);
                cand_keys_[i] = keys[i];
            }
            cand_n_ = n;
            return;
        }
        PyRef t(check(PyDict_New()));
        for (size_t i = 0; i < n; ++i)
            if (PyDict_SetItem(t.p, keys[i], Py_None) < 0) throw_py();
        if (static_cast<size_t>(PyDict_GET_SIZE(t.p)) != n || !unicode_entries(t.p, n)) return;  // repeated keys
        Py_XDECREF(tmpl_);
        tmpl_ = t.release();
        tmpl_n_ = n;
        for (size_t i = 0; i < n; ++i) tmpl_keys_[i] = keys[i];  // borrowed: tmpl_ holds them
    }

private:
    // d's entries if d is a combined unicode table of exactly n entries.
    static dict_layout::UnicodeEntry* unicode_entries(PyObject* o, size_t n) {
        PyDictObject* d = reinterpret_cast<PyDictObject*>(o);
        if (d->ma_values != nullptr || static_cast<size_t>(d->ma_used) != n) return nullptr;
        dict_layout::Keys* dk = reinterpret_cast<dict_layout::Keys*>(d->ma_keys);
        if (dk->dk_kind != dict_layout::kUnicode || static_cast<size_t>(dk->dk_nentries) != n) return nullptr;
        return reinterpret_cast<dict_layout::UnicodeEntry*>(dk->dk_indices + (size_t{1} << dk->dk_log2_index_bytes));
    }
#else
    PyObject* make(size_t, PyObject* const*, PyObject* const*) { return nullptr; }
    void saw(size_t, PyObject* const*) {}
#endif

private:
    void clear_candidate() {
        for (size_t i = 0; i < cand_n_; ++i) Py_DECREF(cand_keys_[i]);
        cand_n_ = 0;
    }
    PyObject* tmpl_ = nullptr;
    size_t tmpl_n_ = 0;
    PyObject* tmpl_keys_[kMaxItems] = {};
    size_t cand_n_ = 0;
    PyObject* cand_keys_[kMaxItems] = {};  // owned
};

// Up to DictTemplates::kMaxItems decoded keys and values, released on unwinding.
struct SmallItems {
    PyObject* keys[DictTemplates::kMaxItems];
    PyObject* vals[DictTemplates::kMaxItems];
    size_t n_keys = 0, n_vals = 0;
    SmallItems() = default;
    SmallItems(const SmallItems&) = delete;
    SmallItems& operator=(const SmallItems&) = delete;
    ~SmallItems() {
        for (size_t i = 0; i < n_keys; ++i) Py_DECREF(keys[i]);
        for (size_t i = 0; i < n_vals; ++i) Py_XDECREF(vals[i]);
    }
};

class Decoder {
public:
    Decoder(Reader r, PyObject* types, const std::vector<Blob>* blobs)
        : r_(r), types_(types), blobs_(blobs), stack_limit_(stack_limit()) {}

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
    uintptr_t stack_limit_;  // stack_limit() of the thread that decodes
    KeyCache keys_;
    DictTemplates templates_;

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

    // The value at `depth` (the root is at 0): the common leaves decoded
    // here, inline in every container's loop, the rest by decode_tag.
    __attribute__((always_inline)) inline PyObject* decode(size_t depth, bool key = false) {
        if (depth > kMaxDepth) r_.fail("nested deeper than the depth limit");
        uint8_t tag = r_.u8();
        switch (tag) {
            case kTagStr:
                return str(r_.varint(), key);
            case kTagInt64:
                return check(PyLong_FromLongLong(static_cast<long long>(r_.u64())));
            case kTagFloat: {
                uint64_t bits = r_.u64();
                double d;
                std::memcpy(&d, &bits, 8);
                return check(PyFloat_FromDouble(d));
            }
            case kTagNone:
                Py_RETURN_NONE;
            case kTagFalse:
                Py_RETURN_FALSE;
            case kTagTrue:
                Py_RETURN_TRUE;
            default:
                return decode_tag(tag, depth);
        }
    }

    // Every other tag: big ints, bytes, containers, arrays, registered types.
    PyObject* decode_tag(uint8_t tag, size_t depth) {
        char probe;
        if (stack_exhausted(&probe, stack_limit_)) raise_too_deep("a checkpoint state", depth);
        switch (tag) {
            case kTagBigInt: {
                uint64_t n = r_.varint();
                const uint8_t* p = r_.take(n);
                if (n == 0) r_.fail("empty big int");
                PyRef b(check(PyBytes_FromStringAndSize(reinterpret_cast<const char*>(p), static_cast<Py_ssize_t>(n))));
                PyRef kw(check(Py_BuildValue("{s:O}", "signed", Py_True)));
                PyRef args(check(PyTuple_Pack(2, b.p, G.s_little)));
                PyRef v(check(PyObject_Call(G.int_from_bytes, args.p, kw.p)));
                // Canonical only: what the encoder writes for this value (an
                // int64 is tag 0x03; n = bit_length // 8 + 1 bytes exactly).
                int overflow = 0;
                PyLong_AsLongLongAndOverflow(v.p, &overflow);
                if (!overflow) r_.fail("non-canonical int: a big int that fits in int64");
                PyRef bl(check(PyObject_CallMethod(v.p, "bit_length", nullptr)));
                size_t bits = PyLong_AsSize_t(bl.p);
                if (bits == static_cast<size_t>(-1) && PyErr_Occurred()) throw_py();
                if (n != bits / 8 + 1) r_.fail("non-canonical int: big int with redundant bytes");
                return v.release();
            }
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
                PyRef seq(check(is_list ? PyList_New(static_cast<Py_ssize_t>(n)) : PyTuple_New(static_cast<Py_ssize_t>(n))));
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
                if (FAULTKIT_DICT_LAYOUT && n > 0 && n <= DictTemplates::kMaxItems) return small_dict(n, depth);
                PyRef d(new_dict(n));
                for (uint64_t i = 0; i < n; ++i) {
                    PyRef k(decode(depth + 1, true));
                    PyRef v(decode(depth + 1));
                    if (PyDict_SetItem(d.p, k.p, v.p) < 0) corrupt_from_python("bad dict key");
                }
                if (static_cast<uint64_t>(PyDict_GET_SIZE(d.p)) != n) r_.fail("duplicate keys in a dict");
                return d.release();
            }
            case kTagSet:
            case kTagFrozenSet: {
                uint64_t n = r_.count(1);
                PyRef s(check(tag == kTagSet ? PySet_New(nullptr) : PyFrozenSet_New(nullptr)));
                for (uint64_t i = 0; i < n; ++i) {
                    PyRef item(decode(depth + 1));
                    if (PySet_Add(s.p, item.p) < 0) corrupt_from_python("bad set item");
                }
                if (static_cast<uint64_t>(PySet_GET_SIZE(s.p)) != n) r_.fail("duplicate items in a set");
                return s.release();
            }
            case kTagArray:
                return array();
            case kTagCustom: {
                uint64_t n = r_.varint();
                const uint8_t* p = r_.take(n);
                PyRef name(PyUnicode_DecodeUTF8(reinterpret_cast<const char*>(p), static_cast<Py_ssize_t>(n), nullptr));
                if (!name) corrupt_from_python("invalid UTF-8 in a type name");
                PyObject* hook = types_ ? PyDict_GetItemWithError(types_, name.p) : nullptr;
                if (!hook) {
                    if (PyErr_Occurred()) throw_py();
                    r_.fail(("unknown registered type '" + std::string(reinterpret_cast<const char*>(p), n) +
                             "' (register it with faultkit.register_type before loading)").c_str());
                }
                PyRef state(decode(depth + 1));
                return check(PyObject_CallOneArg(hook, state.p));  // the one kind of user code decoding runs
            }
            default:
                r_.fail(("unknown tag 0x" + std::to_string(tag)).c_str());
        }
    }

    // An empty dict with room for n items where CPython offers it (before 3.13).
    static PyObject* new_dict(uint64_t n) {
#if PY_VERSION_HEX < 0x030D0000
        return check(_PyDict_NewPresized(static_cast<Py_ssize_t>(n)));
#else
        (void)n;
        return check(PyDict_New());
#endif
    }

    // A dict of 1..kMaxItems items: keys and values decoded first, then the
    // dict made from the template if the keys are its keys, else item by item.
    PyObject* small_dict(uint64_t n, size_t depth) {
        SmallItems it;
        for (uint64_t i = 0; i < n; ++i) {
            it.keys[it.n_keys++] = decode(depth + 1, true);
            it.vals[it.n_vals++] = decode(depth + 1);
        }
        if (PyObject* d = templates_.make(n, it.keys, it.vals)) {
            it.n_vals = 0;  // stolen by d
            return d;
        }
        PyRef d(new_dict(n));
        for (uint64_t i = 0; i < n; ++i)
            if (PyDict_SetItem(d.p, it.keys[i], it.vals[i]) < 0) corrupt_from_python("bad dict key");
        if (static_cast<uint64_t>(PyDict_GET_SIZE(d.p)) != n) r_.fail("duplicate keys in a dict");
        templates_.saw(n, it.keys);
        return d.release();
    }

    PyObject* bytes_like(int which, const char* p, uint64_t n) {
        if (which == 1) return check(PyByteArray_FromStringAndSize(p, static_cast<Py_ssize_t>(n)));
        PyRef b(check(PyBytes_FromStringAndSize(p, static_cast<Py_ssize_t>(n))));
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
        PyRef dstr(check(PyUnicode_FromStringAndSize(ds, dlen)));
        PyRef dtype(PyObject_CallOneArg(G.np_dtype, dstr.p));
        if (!dtype) corrupt_from_python("bad array dtype");
        PyRef canonical(check(PyObject_GetAttr(dtype.p, G.s_str)));
        if (PyUnicode_Compare(canonical.p, dstr.p) != 0) r_.fail("array dtype is not in canonical form");
        Py_ssize_t itemsize = PyLong_AsSsize_t(PyRef(check(PyObject_GetAttrString(dtype.p, "itemsize"))).p);
        if (itemsize <= 0) r_.fail("bad array item size");

        uint64_t ndim = r_.varint();
        if (ndim > kMaxNdim) r_.fail("array has too many dimensions");
        PyRef shape(check(PyTuple_New(static_cast<Py_ssize_t>(ndim))));
        uint64_t count = 1;
        // numpy's own limit: the product of the nonzero dimensions times the
        // item size must fit in a Py_ssize_t, even when a zero dimension makes
        // the array empty ((2**62, 0) has no elements, but numpy refuses it).
        uint64_t nonzero_bytes = static_cast<uint64_t>(itemsize);
        bool overflow = false;
        for (uint64_t i = 0; i < ndim; ++i) {
            uint64_t d = r_.varint();
            if (d > static_cast<uint64_t>(PY_SSIZE_T_MAX)) r_.fail("array dimension too large");
            if (d) {
                if (nonzero_bytes > static_cast<uint64_t>(PY_SSIZE_T_MAX) / d) overflow = true;
                nonzero_bytes *= d;
            }
            count = d ? count * d : 0;  // no overflow: count <= nonzero_bytes while !overflow
            PyTuple_SET_ITEM(shape.p, static_cast<Py_ssize_t>(i), check(PyLong_FromUnsignedLongLong(d)));
        }
        if (overflow) r_.fail("array shape's size overflows");
        const Blob& b = blob();
        if (count * static_cast<uint64_t>(itemsize) != b.size) r_.fail("array shape disagrees with its blob's length");
        if (ds[1] == 'b') {  // bool: only bytes 0 and 1 are values numpy defines
            uint8_t any = 0;
            for (uint64_t i = 0; i < b.size; ++i) any |= b.data[i];
            if (any > 1) r_.fail("bool array holds a byte other than 0 and 1");
        }
        PyRef flat;
        if (count == 0) {
            flat.p = PyObject_CallFunctionObjArgs(G.np_empty, shape.p, dtype.p, nullptr);
            if (!flat.p) corrupt_from_python("bad empty array");
            return flat.release();
        }
        PyRef cnt(check(PyLong_FromUnsignedLongLong(count)));
        PyRef off(check(PyLong_FromUnsignedLongLong(b.offset)));
        PyRef args(check(PyTuple_Pack(4, b.owner, dtype.p, cnt.p, off.p)));
        flat.p = check(PyObject_Call(G.np_frombuffer, args.p, nullptr));
        return check(PyObject_CallMethodOneArg(flat.p, G.s_reshape, shape.p));
    }
};

}  // namespace binding
}  // namespace faultkit
