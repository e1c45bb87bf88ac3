# The balancer base class and the argument helpers, shared with the other
# balancer module (_balance.pyx) by cimport.
from libc.stdint cimport uint8_t, uint64_t, int32_t
from libcpp.memory cimport shared_ptr
from libcpp.vector cimport vector


cdef class _Balancer:
    cdef shared_ptr[vector[uint8_t]] _alive   # one byte per node, 1 = up
    cdef Py_ssize_t _n_down
    cdef list _nodes
    cdef list _weights
    cdef dict _index
    cdef Py_ssize_t _version   # bumped by every membership change (indices shift)
    cdef object _write_lock    # held by every change of the members or the alive bytes
    cdef unsigned long _writer # thread ident holding _write_lock, 0 if none

    cdef const uint8_t* _alive_ptr(self) noexcept
    cdef list _check_new(self, list nodes)
    cdef _set_members(self, shared_ptr[vector[uint8_t]] alive, list nodes, list weights,
                      dict index)
    cdef _alive_changed(self)
    cdef _add_many(self, list nodes, list weights)
    cdef _remove_many(self, list node_list)
    cdef _set_many(self, object nodes, uint8_t up)
    cdef int _lock_change(self) except -1
    cdef _unlock_change(self)
    cdef Py_ssize_t _node_index(self, object node) except -1
    cdef Py_ssize_t _stable_index(self, object node, Py_ssize_t version) except -1


cdef uint64_t _seed_value(object seed) except? 0
cdef const char* _node_bytes(object node, Py_ssize_t* size) except NULL
cdef double _weight_value(object weight, object node) except -1.0
cdef list _weights_for(list nodes, object weights)
cdef list _node_list(object nodes, str what)
cdef int32_t[::1] _out_array(object out, Py_ssize_t n)
