# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""Jump hash, weighted rendezvous and Maglev: the Cython shell over
csrc/faultkit/{jump,rendezvous,maglev}.h."""
cimport cython
from cython.operator cimport dereference as deref
from libc.stdint cimport uint8_t, uint32_t, uint64_t, int32_t, int64_t
from libcpp.memory cimport shared_ptr
from libcpp.vector cimport vector

from faultkit.balance.cchoose cimport (
    jump_hash as c_jump_hash, jump_hash_many, jump_hash_many_path, jump_path_available,
    RendezvousTable, MaglevTable, is_prime,
)
from faultkit._common.cxxh3 cimport xxh3_64
from faultkit._common.keys cimport ascii_hash, hash_key, int_key
from faultkit._common.arrays cimport hash_array, key_array
from faultkit.balance._ring cimport (
    _Balancer, _seed_value, _node_bytes, _weight_value, _weights_for, _node_list, _out_array,
)

from numbers import Integral

import numpy as np

from faultkit.errors import EmptyRingError, NoLiveNodeError

# Maglev's lookup table size: 65537, the prime the paper uses for its
# evaluation (Eisenbud et al., NSDI 2016, section 5.3) and Envoy's default.
# The paper asks for M prime and much larger than the number of backends
# (M > 100 N keeps each backend's share within about 1% of its target).
MAGLEV_TABLE_SIZE = 65537
# The largest table accepted: 2^25 entries (128 MiB of int32).
cdef enum:
    MAX_TABLE_SIZE = 1 << 25
# The seed that derives a node's Maglev skip from its name (the offset uses
# the balancer's seed itself): the paper's two independent hashes h1, h2.
cdef enum:
    SKIP_SEED_XOR = 0x5851F42D


def jump_hash(key, num_buckets, *, seed=0):
    """Jump consistent hash (Lamping & Veach 2014): a bucket in
    ``[0, num_buckets)`` for ``key``, moving only 1/(n+1) of keys when a
    bucket is added at the end.

    ``key`` is an ``int`` (used as its 64-bit two's-complement value, as the
    ``jump-consistent-hash`` package does), a ``str``/bytes-like key (hashed
    first with XXH3-64 and ``seed``, as :func:`faultkit.hash64`), or a 1-D
    ``numpy`` int64/uint64 array of integer keys, which returns a
    ``numpy.ndarray[int32]`` computed without the GIL.  ``num_buckets`` is an
    int in ``[1, 2**31 - 1]``.
    """
    if isinstance(num_buckets, bool) or not isinstance(num_buckets, int):
        raise TypeError(f"num_buckets must be an int, not {type(num_buckets).__name__}")
    if num_buckets < 1 or num_buckets > 0x7FFFFFFF:
        raise ValueError(f"num_buckets must be in [1, 2**31 - 1], got {num_buckets!r}")
    cdef int32_t n = <int32_t>num_buckets
    cdef const uint64_t[::1] keys
    cdef int32_t[::1] res
    if isinstance(key, int):
        return c_jump_hash(int_key(key), n)
    if isinstance(key, Integral) and not isinstance(key, np.ndarray):
        # numpy integer scalars are integers here, not 8-byte buffers to hash
        return c_jump_hash(int_key(int(key)), n)
    if isinstance(key, np.ndarray):
        keys = key_array(key)
        res = np.empty(keys.shape[0], dtype=np.int32)
        if keys.shape[0]:
            with nogil:
                jump_hash_many(&keys[0], <size_t>keys.shape[0], n, &res[0])
        return res.base
    return c_jump_hash(hash_key(key, _seed_value(seed)), n)


# The kernels of jump_hash's array form, by the numbers csrc/faultkit/jump.h
# gives them (JumpPath); "best" is what fk.jump_hash runs.
_JUMP_PATHS = {"best": 0, "portable": 1, "avx2": 2, "avx512": 3}


def _jump_hash_paths():
    """Internal (tests): the names of the array kernels this CPU and build run."""
    return [name for name, code in _JUMP_PATHS.items() if jump_path_available(code)]


def _jump_hash_path(key, num_buckets, path):
    """Internal (tests): ``jump_hash`` of a 1-D uint64 array with the kernel
    named ``path`` (one of ``_jump_hash_paths()``), so every kernel can be
    checked on a CPU that would not pick it."""
    if path not in _JUMP_PATHS:
        raise ValueError(f"unknown jump kernel {path!r}; expected one of {sorted(_JUMP_PATHS)}")
    if not isinstance(key, np.ndarray) or key.ndim != 1 or key.dtype != np.uint64:
        raise TypeError("keys must be a 1-D uint64 array")
    if isinstance(num_buckets, bool) or not isinstance(num_buckets, int):
        raise TypeError(f"num_buckets must be an int, not {type(num_buckets).__name__}")
    if num_buckets < 1 or num_buckets > 0x7FFFFFFF:
        raise ValueError(f"num_buckets must be in [1, 2**31 - 1], got {num_buckets!r}")
    cdef int code = _JUMP_PATHS[path]
    if not jump_path_available(code):
        raise RuntimeError(f"jump kernel {path!r} is not available on this CPU or build")
    cdef int32_t n = <int32_t>num_buckets
    cdef const uint64_t[::1] keys = np.require(key, None, "CA")
    cdef int32_t[::1] res = np.empty(keys.shape[0], dtype=np.int32)
    cdef bint ok = True
    if keys.shape[0]:
        with nogil:
            ok = jump_hash_many_path(&keys[0], <size_t>keys.shape[0], n, &res[0], code)
    if not ok:
        raise RuntimeError(f"jump kernel {path!r} is not available on this CPU or build")
    return res.base


cdef const uint64_t[::1] _key_hashes(object keys, uint64_t seed):
    """Hashes of a list/tuple of keys, or a uint64 array of pre-computed hashes."""
    cdef uint64_t[::1] hashes
    cdef Py_ssize_t i, n
    if isinstance(keys, np.ndarray):
        return hash_array(keys)
    if not isinstance(keys, (list, tuple)):
        raise TypeError(
            f"keys must be a list, tuple or numpy uint64 array, not {type(keys).__name__}")
    n = len(keys)
    hashes = np.empty(n, dtype=np.uint64)
    for i in range(n):
        if i >= len(keys):
            raise RuntimeError("keys changed size during get_many")
        hashes[i] = hash_key(keys[i], seed)
    return hashes


cdef class _TableBalancer(_Balancer):
    """A balancer whose lookup table is rebuilt from the member list on every
    change (O(nodes) for rendezvous, O(table) for Maglev) and swapped in."""
    cdef uint64_t _seed

    cdef _rebuild(self, list nodes, list weights, shared_ptr[vector[uint8_t]] alive):
        raise NotImplementedError

    cdef _check_lookup(self):
        if not self._nodes:
            raise EmptyRingError(f"lookup on an empty {type(self).__name__}")
        if self._n_down == len(self._nodes):
            raise NoLiveNodeError(f"all {len(self._nodes)} nodes are marked down")

    cdef _add_many(self, list nodes, list weights):
        if not nodes:
            return
        cdef shared_ptr[vector[uint8_t]] alive = shared_ptr[vector[uint8_t]](
            new vector[uint8_t](deref(self._alive)))
        deref(alive).resize(len(self._nodes) + len(nodes), 1)
        self._rebuild(self._nodes + nodes, self._weights + weights, alive)

    cdef _remove_many(self, list node_list):
        cdef Py_ssize_t version = self._version
        drop = {self._stable_index(node, version) for node in node_list}
        if not drop:
            return
        cdef shared_ptr[vector[uint8_t]] alive = shared_ptr[vector[uint8_t]](new vector[uint8_t]())
        keep = [i for i in range(len(self._nodes)) if i not in drop]
        for i in keep:
            deref(alive).push_back(deref(self._alive)[i])
        self._rebuild([self._nodes[i] for i in keep], [self._weights[i] for i in keep], alive)

    @property
    def seed(self):
        """The XXH3 seed of node and key hashes."""
        return self._seed

    def __repr__(self):
        return f"{type(self).__name__}({len(self._nodes)} nodes, {self._n_down} down)"


cdef class Rendezvous(_TableBalancer):
    """Weighted rendezvous (highest random weight) hashing.

    ``Rendezvous(nodes=(), weights=None, *, seed=0)``.  For a key with
    XXH3-64 hash ``h`` (as :func:`faultkit.hash64` with ``seed``), node ``i``
    scores ``-w_i / ln(u_i)`` where ``u_i = (b + 0.5) / 2**52`` and ``b`` is
    the top 52 bits of ``xxh3_64(h as 8 LE bytes, seed=xxh3_64(name_i,
    seed))``; the highest-scoring live node wins (the logarithmic method:
    node i wins with probability ``w_i / sum(w)`` exactly).  Removing or
    marking down a node moves only its keys, each to its next-best node.
    A lookup costs O(nodes).
    """
    cdef shared_ptr[RendezvousTable] _table

    def __cinit__(self):
        self._table.reset(new RendezvousTable())

    def __init__(self, nodes=(), weights=None, *, seed=0):
        self._seed = _seed_value(seed)
        node_list = self._check_new(_node_list(nodes, "nodes"))
        self._add_many(node_list, _weights_for(node_list, weights))

    cdef _rebuild(self, list nodes, list weights, shared_ptr[vector[uint8_t]] alive):
        cdef vector[uint64_t] node_hash
        cdef vector[double] weight
        cdef Py_ssize_t size
        cdef const char* data
        for i in range(len(nodes)):
            data = _node_bytes(nodes[i], &size)
            node_hash.push_back(xxh3_64(data, <size_t>size, self._seed))
            weight.push_back(<double>weights[i])
        cdef shared_ptr[RendezvousTable] table = shared_ptr[RendezvousTable](
            new RendezvousTable(node_hash, weight))
        old = (self._nodes, self._weights, self._index)
        self._table = table
        self._set_members(alive, nodes, weights, {node: i for i, node in enumerate(nodes)})
        del old

    @cython.always_allow_keywords(False)  # METH_O: the cheapest call CPython has
    def get(self, key, /):
        """The live node with the highest score for ``key``."""
        cdef uint64_t h
        if not ascii_hash(key, self._seed, &h):
            h = hash_key(key, self._seed)
        self._check_lookup()
        return self._nodes[self._table.get().get(h, self._alive_ptr())]

    def get_hash(self, uint64_t h):
        """The node for a pre-computed 64-bit key hash (as in :meth:`get_many`)."""
        self._check_lookup()
        return self._nodes[self._table.get().get(h, self._alive_ptr())]

    def get_n(self, key, n):
        """The ``n`` best live nodes for ``key``, best first (replica placement);
        ``ValueError`` if fewer than ``n`` are live."""
        cdef uint64_t h = hash_key(key, self._seed)
        if isinstance(n, bool) or not isinstance(n, int):
            raise TypeError(f"n must be an int, not {type(n).__name__}")
        live = len(self._nodes) - self._n_down
        if n < 0:
            raise ValueError(f"n must be in [0, {live}] (live nodes), got {n!r}")
        if n == 0:
            return []
        self._check_lookup()
        if n > live:
            raise ValueError(f"n must be in [0, {live}] (live nodes), got {n!r}")
        cdef Py_ssize_t size = len(self._nodes)
        cdef vector[double] scores = vector[double](<size_t>size)
        cdef vector[int32_t] order = vector[int32_t](<size_t>size)
        cdef vector[int32_t] out = vector[int32_t](<size_t>n)
        cdef int32_t found = self._table.get().get_n(h, self._alive_ptr(), <int32_t>n, out.data(),
                                                     scores.data(), order.data())
        return [self._nodes[out[i]] for i in range(found)]

    def get_many(self, keys, *, out=None):
        """Winners of many keys as ``numpy.ndarray[int32]`` indices into
        :attr:`nodes`; ``keys`` is a list/tuple of keys or a ``uint64`` array of
        hashes.  The lookups run without the GIL."""
        cdef const uint64_t[::1] hashes = _key_hashes(keys, self._seed)
        cdef Py_ssize_t n = hashes.shape[0]
        cdef int32_t[::1] res = _out_array(out, n)
        if n == 0:
            return res.base if out is None else out
        self._check_lookup()
        cdef shared_ptr[RendezvousTable] table = self._table
        cdef shared_ptr[vector[uint8_t]] alive = self._alive
        cdef const uint8_t* alive_ptr = self._alive_ptr()
        with nogil:
            table.get().get_many(&hashes[0], <size_t>n, alive_ptr, &res[0])
        return res.base if out is None else out

    def distribution(self):
        """Each node's expected share of keys: its weight over the live weights
        (exact for the logarithmic method); 0 for down nodes."""
        alive = self.alive_mask()
        total = sum(w for w, up in zip(self._weights, alive) if up)
        return {node: (w / total if up else 0.0)
                for node, w, up in zip(self._nodes, self._weights, alive)}


cdef class Maglev(_TableBalancer):
    """Maglev consistent hashing (Eisenbud et al., NSDI 2016, section 3.4).

    ``Maglev(nodes=(), weights=None, *, table_size=65537, seed=0)``.  Node
    ``name`` has ``offset = xxh3_64(name, seed) % M`` and ``skip =
    xxh3_64(name, seed ^ 0x5851F42D) % (M - 1) + 1``; the nodes take turns
    claiming the next free slot of their permutation ``(offset + j * skip) %
    M`` (the paper's population), weighted as Envoy's ``maglev_lb`` does.  A
    key with XXH3-64 hash ``h`` goes to ``table[h % M]``: O(1) lookups and
    near-perfect balance (each node's share within one slot of its target).

    ``table_size`` (M) must be prime and at least the number of nodes; the
    paper recommends M > 100 x nodes.  Membership changes (add/remove,
    weights) rebuild the table (O(M log M)) as the paper does: besides the
    changed node's keys, a small fraction of other keys can move (the
    paper's Figure 12 bound).  Liveness never rebuilds it: a key whose
    slot's node is down walks on to the next slot (wrapping) whose node is
    up, as the ring does, so ``mark_down`` moves only that node's keys and
    ``mark_up`` moves exactly them back.
    """
    cdef shared_ptr[MaglevTable] _table
    cdef uint32_t _m

    def __cinit__(self):
        self._table.reset(new MaglevTable())

    def __init__(self, nodes=(), weights=None, *, table_size=MAGLEV_TABLE_SIZE, seed=0):
        if isinstance(table_size, bool) or not isinstance(table_size, int):
            raise TypeError(f"table_size must be an int, not {type(table_size).__name__}")
        if table_size < 2 or table_size > MAX_TABLE_SIZE or not is_prime(table_size):
            raise ValueError(
                f"table_size must be a prime in [2, {MAX_TABLE_SIZE}], got {table_size!r}")
        self._m = <uint32_t>table_size
        self._seed = _seed_value(seed)
        node_list = self._check_new(_node_list(nodes, "nodes"))
        self._add_many(node_list, _weights_for(node_list, weights))

    cdef _rebuild(self, list nodes, list weights, shared_ptr[vector[uint8_t]] alive):
        """A new table from the members (every node, up or down) and weights."""
        if len(nodes) > self._m:
            raise ValueError(
                f"{len(nodes)} nodes do not fit a Maglev table of {self._m} slots "
                f"(table_size must be >= the number of nodes)")
        cdef vector[uint64_t] offset, skip
        cdef vector[double] weight
        cdef Py_ssize_t size
        cdef const char* data
        for i in range(len(nodes)):
            data = _node_bytes(nodes[i], &size)
            offset.push_back(xxh3_64(data, <size_t>size, self._seed) % self._m)
            skip.push_back(xxh3_64(data, <size_t>size, self._seed ^ SKIP_SEED_XOR) % (self._m - 1) + 1)
            weight.push_back(<double>weights[i])
        cdef shared_ptr[MaglevTable] table = shared_ptr[MaglevTable](new MaglevTable(
            offset.data(), skip.data(), weight.data(), <int32_t>len(nodes), self._m))
        old = (self._nodes, self._weights, self._index)
        self._table = table
        self._set_members(alive, nodes, weights, {node: i for i, node in enumerate(nodes)})
        del old

    cdef Py_ssize_t _live_owner(self, uint64_t h) except -1:
        self._check_lookup()
        cdef int32_t o = self._table.get().live_owner(h, self._alive_ptr())
        if o < 0:  # unreachable: _check_lookup saw a live node
            raise NoLiveNodeError(f"all {len(self._nodes)} nodes are marked down")
        return o

    @cython.always_allow_keywords(False)  # METH_O: the cheapest call CPython has
    def get(self, key, /):
        """The node in ``key``'s slot of the lookup table or, if that node is
        down, the node of the next slot (wrapping) whose node is up."""
        cdef uint64_t h
        if not ascii_hash(key, self._seed, &h):
            h = hash_key(key, self._seed)
        if self._n_down == 0 and self._nodes:
            return self._nodes[self._table.get().live_owner(h, NULL)]
        return self._nodes[self._live_owner(h)]

    def get_hash(self, uint64_t h):
        """The node for a pre-computed 64-bit key hash (as in :meth:`get_many`)."""
        return self._nodes[self._live_owner(h)]

    def get_many(self, keys, *, out=None):
        """Nodes of many keys as ``numpy.ndarray[int32]`` indices into
        :attr:`nodes`; ``keys`` is a list/tuple of keys or a ``uint64`` array of
        hashes.  The lookups run without the GIL."""
        cdef const uint64_t[::1] hashes = _key_hashes(keys, self._seed)
        cdef Py_ssize_t i, n = hashes.shape[0]
        cdef int32_t[::1] res = _out_array(out, n)
        if n == 0:
            return res.base if out is None else out
        self._check_lookup()
        # Hold the table and the alive bytes for the GIL-free loop: a
        # concurrent add/remove/mark swaps in new ones and cannot free these.
        cdef shared_ptr[MaglevTable] table = self._table
        cdef shared_ptr[vector[uint8_t]] alive = self._alive
        cdef const uint8_t* alive_ptr = self._alive_ptr()
        with nogil:
            table.get().live_owner_many(&hashes[0], <size_t>n, alive_ptr, &res[0])
        if alive_ptr != NULL:
            for i in range(n):
                if res[i] < 0:  # unreachable: _check_lookup saw a live node
                    raise NoLiveNodeError(f"all {len(self._nodes)} nodes are marked down")
        return res.base if out is None else out

    def lookup_table(self):
        """A copy of the lookup table: node index per slot, built from every
        member whether up or down (-1 only when there are no nodes)."""
        # Hold the table: wrapping it allocates, which can run a collection
        # whose callbacks change the members and drop the current table.
        cdef shared_ptr[MaglevTable] table = self._table
        cdef MaglevTable* t = table.get()
        if t.size() == 0:
            return np.full(self._m, -1, dtype=np.int32)
        return np.asarray(<const int32_t[:t.size()]>t.entries()).copy()

    def distribution(self):
        """Each node's share of the lookup table's slots (its share of keys),
        a down node's slots credited to the live nodes that serve them; 0 for
        down nodes."""
        cdef Py_ssize_t n = len(self._nodes)
        res = np.zeros(n, dtype=np.float64)
        cdef double[::1] r = res
        if n:
            self._table.get().distribution(self._alive_ptr(), <int32_t>n, &r[0])
        return dict(zip(self._nodes, res.tolist()))

    @property
    def table_size(self):
        """M, the lookup table's (prime) size."""
        return self._m
