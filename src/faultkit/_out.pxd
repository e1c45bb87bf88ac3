# The ``out=`` contract of faultkit's array functions, in one place: a new
# array when ``out`` is None, else ``out`` itself after checking that it is a
# writeable, C-contiguous 1-D numpy array of ``dtype`` and length ``n``.
# Inline, so each cimporting module compiles its own copy.
import numpy as np


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
