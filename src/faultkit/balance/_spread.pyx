# cython: language_level=3, boundscheck=False, wraparound=False
"""Live replicas across failure domains: a thin shell over csrc/faultkit/balance/spread.h.

:class:`SpreadTable` holds the rendezvous tables of the domains at one level
(built from :class:`faultkit.FailureDomains`' placement tables);
:meth:`SpreadTable.live` pairs it with a routable mask, and
:meth:`LiveSpread.choose` picks a key's replicas (faultkit.Cluster.replicas).
"""
from libc.stdint cimport int64_t, uint8_t, uint64_t
from libcpp.vector cimport vector

from faultkit._common.keys cimport ascii_hash, hash_key
from faultkit.balance.cspread cimport SpreadView, spread_choose

import numpy as np

# Replicas asked for at once up to this many are chosen into a stack buffer.
cdef enum:
    STACK_OUT = 64


cdef class SpreadTable:
    """The domains at one level: their path hashes, and domain after domain their
    members' hashes and objects (``offsets[d]:offsets[d + 1]`` are domain d's)."""
    cdef vector[uint64_t] dom_hash
    cdef vector[int64_t] offsets
    cdef vector[uint64_t] svc_hash
    cdef list members
    cdef readonly Py_ssize_t domains

    def __cinit__(self, dom_hash, offsets, svc_hash, list members):
        dh = np.ascontiguousarray(dom_hash, dtype=np.uint64)
        off = np.ascontiguousarray(offsets, dtype=np.int64)
        sh = np.ascontiguousarray(svc_hash, dtype=np.uint64)
        if dh.ndim != 1 or off.ndim != 1 or sh.ndim != 1:
            raise ValueError("dom_hash, offsets and svc_hash must be 1-D")
        d, m = dh.shape[0], sh.shape[0]
        if off.shape[0] != d + 1 or off[0] != 0 or off[d] != m or (np.diff(off) < 0).any():
            raise ValueError(f"offsets must rise from 0 to {m} over {d + 1} entries")
        if len(members) != m:
            raise ValueError(f"{len(members)} members for {m} member hashes")
        self.dom_hash = dh
        self.offsets = off
        self.svc_hash = sh
        self.members = members
        self.domains = d

    def live(self, mask):
        """This table with ``mask`` (one bool per member: routable) as a :class:`LiveSpread`."""
        return LiveSpread(self, mask)

    def __len__(self):
        return len(self.members)


cdef class LiveSpread:
    """A :class:`SpreadTable` and which of its members are routable (immutable)."""
    cdef SpreadTable table
    cdef vector[uint8_t] alive
    cdef vector[int64_t] count
    # Scratch for choose(): calls hold the GIL, so one thread at a time uses it.
    cdef vector[uint64_t] scores
    cdef vector[int64_t] scratch
    cdef SpreadView view
    cdef readonly Py_ssize_t live_members

    def __cinit__(self, SpreadTable table, mask):
        cdef Py_ssize_t d, j
        a = np.ascontiguousarray(mask, dtype=np.bool_)
        if a.ndim != 1 or a.shape[0] != len(table.members):
            raise ValueError(f"mask must be 1-D with {len(table.members)} entries, got shape {a.shape}")
        self.table = table
        self.alive = a.view(np.uint8)
        self.count.resize(table.domains, 0)
        for d in range(table.domains):
            for j in range(table.offsets[d], table.offsets[d + 1]):
                self.count[d] += self.alive[j]
        self.live_members = int(a.sum())
        self.scores.resize(max(table.domains, 1))
        self.scratch.resize(max(2 * table.domains, 1))
        self.view.dom_hash = table.dom_hash.data()
        self.view.offsets = table.offsets.data()
        self.view.domains = table.domains
        self.view.svc_hash = table.svc_hash.data()
        self.view.live = self.alive.data()
        self.view.live_count = self.count.data()

    def choose(self, key, Py_ssize_t n):
        """Up to ``n`` routable members for ``key`` (hashed as faultkit.hash64),
        one per domain first, in choice order (spread.h)."""
        cdef uint64_t kh
        cdef int64_t buf[STACK_OUT]
        cdef vector[int64_t] big
        cdef int64_t* out = buf
        cdef int64_t k, i
        if n < 0:
            raise ValueError(f"n must be >= 0, got {n!r}")
        if not ascii_hash(key, 0, &kh):
            kh = hash_key(key, 0)
        if n > STACK_OUT:
            big.resize(n)
            out = big.data()
        k = spread_choose(self.view, kh, n, out, self.scores.data(), self.scratch.data())
        members = self.table.members
        return [members[out[i]] for i in range(k)]
