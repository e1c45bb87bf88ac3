// CPython's dict table layout, for reading a dict's items in insertion order
// without PyDict_Next.  Only where it is known to match: CPython 3.11, 3.12
// and 3.13 with the GIL (Include/internal/pycore_dict.h, struct
// _dictkeysobject, PyDictKeyEntry, PyDictUnicodeEntry, _DK_ENTRIES, which
// are identical in the three).  Elsewhere FAULTKIT_DICT_LAYOUT is 0 and
// callers use PyDict_Next.  Part of _codec.cpp; read-only use, GIL held.
#pragma once

#include <Python.h>

#include <cstdint>

#if PY_VERSION_HEX >= 0x030B0000 && PY_VERSION_HEX < 0x030E0000 && !defined(Py_GIL_DISABLED) && \
    !defined(PYPY_VERSION) && !defined(Py_LIMITED_API)
#define FAULTKIT_DICT_LAYOUT 1
#else
#define FAULTKIT_DICT_LAYOUT 0
#endif

#if FAULTKIT_DICT_LAYOUT
namespace faultkit {
namespace dict_layout {

// dk_kind values (DICT_KEYS_GENERAL, DICT_KEYS_UNICODE); DICT_KEYS_SPLIT
// tables have ma_values != NULL and are not read here.
constexpr uint8_t kGeneral = 0;
constexpr uint8_t kUnicode = 1;

struct Keys {
    Py_ssize_t dk_refcnt;
    uint8_t dk_log2_size;
    uint8_t dk_log2_index_bytes;
    uint8_t dk_kind;
    uint32_t dk_version;
    Py_ssize_t dk_usable;
    Py_ssize_t dk_nentries;  // entries used so far, deleted ones (value NULL) included
    char dk_indices[1];      // 1 << dk_log2_index_bytes bytes of indices, then the entries
};
struct GeneralEntry {
    Py_hash_t hash;
    PyObject* key;
    PyObject* value;
};
struct UnicodeEntry {
    PyObject* key;
    PyObject* value;
};
static_assert(sizeof(GeneralEntry) == 3 * sizeof(void*) && sizeof(UnicodeEntry) == 2 * sizeof(void*),
              "entry layout");

}  // namespace dict_layout
}  // namespace faultkit
#endif
