# The numpy array contracts of faultkit's array functions, in one place: the
# key and hash arrays they take (handed to C++ as uint64_t*, so native byte
# order, C-contiguous and aligned) and the ``out=`` arrays they fill (a new
# array when ``out`` is None, else ``out`` itself after checking that it is a
# writeable, C-contiguous, aligned 1-D numpy array of ``dtype`` and length
# ``n``).  Inline, so each cimporting module compiles its own copy.
import numpy as np


cdef inline object key_array(object keys):
    """A 1-D int64/uint64 key array as native-order, C-contiguous, aligned
    uint64 (a copy only if it is not already); TypeError for other arrays."""
    if keys.ndim != 1 or keys.dtype.kind not in "iu" or keys.dtype.itemsize != 8:
        raise TypeError(
            f"a key array must be 1-D int64 or uint64, not {keys.ndim}-D {keys.dtype}")
    return np.require(keys, keys.dtype.newbyteorder("="), "CA").view(np.uint64)


cdef inline object hash_array(object hashes):
    """A 1-D uint64 array of pre-computed hashes, C-contiguous and aligned (a
    copy only if it is not already); TypeError for other arrays."""
    if hashes.ndim != 1 or hashes.dtype != np.uint64:
        raise TypeError(f"a hash array must be 1-D uint64, not {hashes.ndim}-D {hashes.dtype}")
    return np.require(hashes, None, "CA")


cdef inline object out_array(object out, Py_ssize_t n, object dtype):
    if out is None:
        return np.empty(n, dtype=dtype)
    if not isinstance(out, np.ndarray) or out.dtype != dtype or out.ndim != 1:
        raise TypeError(f"out must be a 1-D numpy {np.dtype(dtype).name} array")
    if out.shape[0] != n:
        raise ValueError(f"out has length {out.shape[0]}, expected {n}")
    if not out.flags.c_contiguous or not out.flags.aligned or not out.flags.writeable:
        raise ValueError("out must be C-contiguous, aligned and writeable")
    return out
