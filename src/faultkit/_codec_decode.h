// The decoder of the codec binding: rebuilds a Python state tree from the
// tags of docs/FORMAT.md through the core's bounds-checked Reader.  Builds
// only builtins, numpy arrays (np.frombuffer after a strict dtype check) and
// ints (int.from_bytes); runs no user code but registered from_state hooks.
// Part of _codec.cpp.
#pragma once

#include "_codec_common.h"

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
                PyRef b(check(PyBytes_FromStringAndSize(reinterpret_cast<const char*>(p), static_cast<Py_ssize_t>(n))));
                PyRef kw(check(Py_BuildValue("{s:O}", "signed", Py_True)));
                PyRef args(check(PyTuple_Pack(2, b.p, G.s_little)));
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
#if PY_VERSION_HEX < 0x030D0000
                PyRef d(check(_PyDict_NewPresized(static_cast<Py_ssize_t>(n))));
#else
                PyRef d(check(PyDict_New()));
#endif
                for (uint64_t i = 0; i < n; ++i) {
                    PyRef k(decode(depth + 1, true));
                    PyRef v(decode(depth + 1));
                    if (PyDict_SetItem(d.p, k.p, v.p) < 0) corrupt_from_python("bad dict key");
                }
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
        PyRef flat;
        if (count == 0) {
            flat.p = check(PyObject_CallFunctionObjArgs(G.np_empty, shape.p, dtype.p, nullptr));
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
