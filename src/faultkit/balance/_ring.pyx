# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""Consistent-hash ring lookups: the per-call Cython shell over csrc/faultkit/ring.h."""
cimport cython
from cython.operator cimport dereference as deref
from libc.math cimport isfinite, llround, floorf
from libc.stdint cimport uint8_t, uint32_t, uint64_t, int32_t, int64_t
from libcpp.memory cimport shared_ptr
from libcpp.utility cimport move
from libcpp.vector cimport vector
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_GET_SIZE

from faultkit._common.arrays cimport hash_array, out_array
from faultkit.balance.cring cimport (
    RingPoint, RingSnapshot, SegmentedRing, ring_node_points, ring_ketama_node_points, md5,
    ketama_hash, hash_run,
)
from cpython.buffer cimport PyObject_GetBuffer, PyBuffer_Release, PyObject_CheckBuffer, PyBUF_SIMPLE
from faultkit._common.keys cimport ascii_hash, hash_key, str_utf8

import threading
from numbers import Real

import numpy as np

from faultkit.errors import EmptyRingError, NoLiveNodeError

# Virtual nodes per unit of weight: 160, libketama's 40 hashes x 4 points per
# server and the default of uhashring and hash_ring.  Each node's share then
# has a coefficient of variation of 1/sqrt(160) ~ 8% (max/mean ~1.2 at 100 nodes).
DEFAULT_VNODES = 160
# At most this many points on one ring: positions are uint32 and a larger
# ring has no balance benefit (2^26 points ~ 768 MiB of tables).
cdef enum:
    MAX_POINTS = 1 << 26
    # Keys hashed per block in get_many of a list: 8 KiB of hashes, in L1.
    GET_MANY_BLOCK = 1024

# libketama: 40 MD5 hashes per server (scaled by its weight share), each
# giving 4 points, so 160 points per server of average weight (ketama.c).
KETAMA_HASHES = 40

cdef enum Mode:
    MODE_XXH3 = 0
    MODE_KETAMA = 1      # libketama: float32 weight formula, first point >= hash
    MODE_UHASHRING = 2   # uhashring's ketama: integer formula, first point > hash


cdef uint32_t _ketama_key_hash(object key) except? 0:
    """libketama's key hash (MD5, first 4 bytes LE) of a key's bytes: str as
    UTF-8, bytes-like as is, int as its decimal string (as uhashring's str(key))."""
    cdef Py_ssize_t size
    cdef const char* data
    cdef Py_buffer view
    cdef uint32_t h
    if isinstance(key, str):
        data = str_utf8(key, &size)
        return ketama_hash(data, <size_t>size)
    if isinstance(key, bytes):
        return ketama_hash(PyBytes_AS_STRING(key), <size_t>PyBytes_GET_SIZE(key))
    if isinstance(key, int):
        text = str(int(key)).encode()
        return ketama_hash(PyBytes_AS_STRING(text), <size_t>PyBytes_GET_SIZE(text))
    if PyObject_CheckBuffer(key):
        PyObject_GetBuffer(key, &view, PyBUF_SIMPLE)
        try:
            h = ketama_hash(view.buf, <size_t>view.len)
        finally:
            PyBuffer_Release(&view)
        return h
    raise TypeError(f"key must be str, bytes-like or int, not {type(key).__name__}")


def _md5(data):
    """MD5 digest of bytes (the C++ core's, for tests against hashlib)."""
    cdef const unsigned char[::1] view = data
    cdef unsigned char digest[16]
    md5(&view[0] if view.shape[0] else NULL, <size_t>view.shape[0], digest)
    return bytes(digest[:16])


def _hash_points(uint64_t node_seed, uint32_t count, uint64_t first=0, bint simd=True):
    """Points xxh3_64_u64(first + t, node_seed) for t < count, as the C++
    core hashes them (for tests against python-xxhash): (np.ndarray[uint64],
    whether the eight-lane kernel ran; simd=False forces the portable one)."""
    cdef vector[RingPoint] buf = vector[RingPoint](<size_t>count)
    cdef bint used = hash_run(first, count, node_seed, 0, buf.data(), simd)
    out = np.empty(count, dtype=np.uint64)
    cdef uint64_t[::1] o = out
    cdef uint32_t t
    for t in range(count):
        o[t] = buf[t].point
    return out, bool(used)


cdef list _ketama_counts(list weights, int mode, int hashes):
    """MD5 hashes per server (4 points each) by the compat mode's formula."""
    cdef Py_ssize_t n = len(weights)
    cdef float pct, total_f
    cdef double x
    if mode == MODE_UHASHRING:
        # uhashring: (vnodes * len(nodes) * weight) // weight_sum, in Python numbers
        total = 0
        for w in weights:
            total += w
        return [int((hashes * n * w) // total) for w in weights]
    # libketama ketama.c: pct = (float)memory / (float)totalmemory;
    # ks = floorf(pct * 40.0 * (float)numservers), the product in double and
    # rounded to float by floorf's parameter.
    total = 0.0
    for w in weights:
        total += w
    total_f = <float>total
    counts = []
    for w in weights:
        pct = (<float>w) / total_f
        x = (<double>pct) * (<double>hashes) * (<double>(<float>n))
        counts.append(int(floorf(<float>x)))
    return counts


cdef uint64_t _seed_value(object seed) except? 0:
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise TypeError(f"seed must be an int, not {type(seed).__name__}")
    if seed < 0 or seed > 0xFFFFFFFFFFFFFFFF:
        raise ValueError(f"seed {seed!r} is outside [0, 2**64 - 1]")
    return <uint64_t>seed


cdef const char* _node_bytes(object node, Py_ssize_t* size) except NULL:
    """The bytes a node name hashes as: str as UTF-8, bytes as is."""
    if isinstance(node, str):
        return str_utf8(node, size)
    if isinstance(node, bytes):
        size[0] = PyBytes_GET_SIZE(node)
        return PyBytes_AS_STRING(node)
    raise TypeError(f"a node must be a str or bytes, not {type(node).__name__}")


cdef double _weight_value(object weight, object node) except -1.0:
    # numbers.Real: int, float and numpy's scalars (np.float32, np.int64, ...)
    if isinstance(weight, bool) or not isinstance(weight, Real):
        raise TypeError(
            f"weight of node {node!r} must be a number, not {type(weight).__name__}")
    cdef double w = float(weight)
    if not isfinite(w) or w <= 0.0:
        raise ValueError(f"weight of node {node!r} must be finite and > 0, got {weight!r}")
    return w


cdef list _weights_for(list nodes, object weights):
    """Weights aligned with nodes from None, a dict node -> weight (missing
    nodes weigh 1.0) or a sequence of the same length."""
    cdef Py_ssize_t i
    if weights is None:
        return [1.0] * len(nodes)
    if isinstance(weights, dict):
        known = set(nodes)
        unknown = [k for k in weights if k not in known]
        if unknown:
            raise KeyError(f"weights given for unknown node(s): {unknown[:5]!r}")
        return [_weight_value(weights.get(n, 1.0), n) for n in nodes]
    if isinstance(weights, (str, bytes)) or not hasattr(weights, "__len__"):
        raise TypeError(
            f"weights must be a dict or a sequence of numbers, not {type(weights).__name__}")
    if len(weights) != len(nodes):
        raise ValueError(f"{len(weights)} weights for {len(nodes)} nodes")
    return [_weight_value(weights[i], nodes[i]) for i in range(len(nodes))]


cdef list _node_list(object nodes, str what):
    if isinstance(nodes, (str, bytes)):
        raise TypeError(f"{what} must be a collection of nodes, not a single {type(nodes).__name__}")
    try:
        return list(nodes)
    except TypeError:
        raise TypeError(f"{what} must be an iterable of nodes, not {type(nodes).__name__}") from None


cdef class _Balancer:
    """Membership and failover state shared by every balancer: the node list
    (index i is node i in every array), weights, and one alive byte per node.
    Subclasses keep their lookup tables in sync (``_alive_changed``)."""

    def __cinit__(self):
        self._alive.reset(new vector[uint8_t]())
        self._n_down = 0
        self._nodes = []
        self._weights = []
        self._index = {}
        self._write_lock = threading.Lock()

    cdef const uint8_t* _alive_ptr(self) noexcept:
        if self._n_down == 0:
            return NULL
        return deref(self._alive).data()

    cdef int _lock_change(self) except -1:
        """Take _write_lock; RuntimeError (not a deadlock) if this thread holds
        it already: a node name's __hash__/__eq__ changing the members or their
        states from inside a change of them.  Every change of the members or
        of the alive bytes holds it: each builds on a copy of the current
        state, and another change installed meanwhile would be undone."""
        cdef unsigned long me = threading.get_ident()
        if self._writer == me:
            raise RuntimeError("the ring's nodes cannot change from inside a change of them "
                               "(a node's __hash__ or __eq__ changing the ring?)")
        self._write_lock.acquire()
        self._writer = me
        return 0

    cdef _unlock_change(self):
        self._writer = 0
        self._write_lock.release()

    cdef list _check_new(self, list nodes):
        """Raise unless every node is a str/bytes name, new and not repeated."""
        cdef Py_ssize_t size
        cdef dict index = self._index  # held: see _node_index
        seen = set()
        for node in nodes:
            _node_bytes(node, &size)
            if node in index or node in seen:
                raise ValueError(f"node {node!r} is already on the ring")
            seen.add(node)
        return nodes

    cdef _set_members(self, shared_ptr[vector[uint8_t]] alive, list nodes, list weights,
                      dict index):
        """Install a new member list (the caller keeps the old objects alive
        until it returns, so no Python code runs between the assignments)."""
        cdef Py_ssize_t i, n_down = 0
        cdef vector[uint8_t]* a = alive.get()
        for i in range(<Py_ssize_t>a.size()):
            n_down += a[0][i] == 0
        self._alive = alive
        self._nodes = nodes
        self._weights = weights
        self._index = index
        self._n_down = n_down
        self._version += 1

    cdef _alive_changed(self):
        """Called after the alive bytes change; tables that depend on them rebuild."""
        pass

    cdef _set_many(self, object nodes, uint8_t up):
        cdef Py_ssize_t version, i, n_down = 0
        cdef list idx
        cdef shared_ptr[vector[uint8_t]] alive
        self._lock_change()
        try:
            version = self._version
            idx = [self._stable_index(node, version) for node in _node_list(nodes, "nodes")]
            alive = shared_ptr[vector[uint8_t]](new vector[uint8_t](deref(self._alive)))
            for i in idx:
                deref(alive)[i] = up
            for i in range(<Py_ssize_t>deref(alive).size()):
                n_down += deref(alive)[i] == 0
            self._alive = alive
            self._n_down = n_down
            self._alive_changed()
        finally:
            self._unlock_change()

    cdef Py_ssize_t _node_index(self, object node) except -1:
        # A local reference holds the dict: hashing a node can run Python
        # code (a str subclass's __hash__, a GC callback) that lets another
        # thread install a new index and free this one mid-lookup.
        cdef dict index = self._index
        try:
            return index[node]
        except (KeyError, TypeError):
            raise KeyError(f"node {node!r} is not on the ring") from None

    cdef Py_ssize_t _stable_index(self, object node, Py_ssize_t version) except -1:
        """_node_index, refusing if the membership changed since ``version``:
        looking a node up runs its __hash__/__eq__, which can add or remove
        nodes and so shift every index (and shorten the alive bytes)."""
        cdef Py_ssize_t i = self._node_index(node)
        if self._version != version:
            raise RuntimeError(f"the ring's nodes changed while looking up {node!r}")
        return i

    # -- membership: the subclass builds its table in _add_many/_remove_many --

    cdef _add_many(self, list nodes, list weights):
        raise NotImplementedError

    cdef _remove_many(self, list node_list):
        raise NotImplementedError

    def add(self, node, weight=1.0):
        """Add ``node`` with ``weight`` (default 1.0); ``ValueError`` if it is
        already a member.  What a change costs is in the class docstring."""
        self.add_many([node], [weight])

    def add_many(self, nodes, weights=None):
        """Add several nodes in one change (``weights`` as in the constructor)."""
        node_list = _node_list(nodes, "nodes")
        weight_list = _weights_for(node_list, weights)
        self._lock_change()
        try:  # checked under the lock: a node's __hash__ may try to change the members
            self._add_many(self._check_new(node_list), weight_list)
        finally:
            self._unlock_change()

    def remove(self, node):
        """Remove ``node`` (``KeyError`` if absent); its keys move to other nodes."""
        self.remove_many([node])

    def remove_many(self, nodes):
        """Remove several nodes in one change."""
        node_list = _node_list(nodes, "nodes")
        self._lock_change()
        try:
            self._remove_many(node_list)
        finally:
            self._unlock_change()

    def mark_down(self, node):
        """Route around ``node`` (``KeyError`` if absent); its keys go to other nodes."""
        self._set_many((node,), 0)

    def mark_up(self, node):
        """Route to ``node`` again: its keys move back to it."""
        self._set_many((node,), 1)

    def mark_down_many(self, nodes):
        """Mark several nodes down in one update."""
        self._set_many(nodes, 0)

    def mark_up_many(self, nodes):
        """Mark several nodes up in one update."""
        self._set_many(nodes, 1)

    def set_alive(self, mask):
        """Set every node's state from a bool array aligned with :attr:`nodes`."""
        arr = np.asarray(mask)
        if arr.dtype != np.bool_ or arr.ndim != 1:
            raise TypeError(f"mask must be a 1-D bool array, not {arr.ndim}-D {arr.dtype}")
        cdef const uint8_t[::1] m = np.ascontiguousarray(arr).view(np.uint8)
        cdef Py_ssize_t i, n = m.shape[0], n_down = 0
        cdef shared_ptr[vector[uint8_t]] alive
        self._lock_change()
        try:
            # Checked under the lock: the members cannot change before the
            # new bytes are installed (they must never be shorter than them).
            if n != len(self._nodes):
                raise ValueError(f"mask has {n} entries for {len(self._nodes)} nodes")
            alive = shared_ptr[vector[uint8_t]](new vector[uint8_t](<size_t>n))
            for i in range(n):
                deref(alive)[i] = m[i] != 0
                n_down += m[i] == 0
            self._alive = alive
            self._n_down = n_down
            self._alive_changed()
        finally:
            self._unlock_change()

    def alive_mask(self):
        """A new bool array: True where the node at that index of :attr:`nodes` is up."""
        cdef Py_ssize_t n = len(self._nodes)
        res = np.ones(n, dtype=np.bool_)
        cdef uint8_t[::1] r = res.view(np.uint8)
        cdef Py_ssize_t i
        for i in range(n):
            r[i] = deref(self._alive)[i] != 0
        return res

    def is_up(self, node):
        """Whether ``node`` is marked up (``KeyError`` if absent)."""
        return deref(self._alive)[self._stable_index(node, self._version)] != 0

    # -- introspection ---------------------------------------------------

    @property
    def nodes(self):
        """The nodes, in order: index i is node i in every array (``get_many``, masks)."""
        return list(self._nodes)

    @property
    def weights(self):
        """``{node: weight}``."""
        return dict(zip(self._nodes, self._weights))

    def index(self, node):
        """The index of ``node`` in :attr:`nodes` (``KeyError`` if absent)."""
        return self._node_index(node)

    def __len__(self):
        return len(self._nodes)

    def __contains__(self, node):
        cdef dict index = self._index  # held: see _node_index
        try:
            return node in index
        except TypeError:
            return False


cdef class HashRing(_Balancer):
    """A consistent-hash ring of XXH3-64 points (Karger et al. 1997).

    ``HashRing(nodes=(), *, vnodes=160, weights=None, seed=0)``.  Each node
    (a ``str`` or ``bytes`` name) gets ``max(1, round(vnodes * weight))``
    points; point ``j`` of node ``name`` is ``xxh3_64(j as 8 LE bytes,
    seed=xxh3_64(name, seed))``.  A key (``str``/bytes-like/``int``, hashed as
    :func:`faultkit.hash64` does with ``seed``) belongs to the node of the
    first point at or after its hash, wrapping past 2**64 - 1.

    ``weights`` is a dict ``node -> weight`` (missing nodes weigh 1.0) or a
    sequence aligned with ``nodes``; weights are finite floats > 0.

    The ring is a directory of immutable segments (sorted points of one hash
    range each, see docs/ring.md): adding or removing a node rewrites only
    the segments its points fall in (no other node is re-hashed) and swaps
    in a new snapshot, so lookups in other threads see the old ring or the
    new one, never a mix.  Nodes marked
    down stay on the ring; lookups walk on to the next live node, so only the
    down node's keys move, and they move back when it is marked up.
    """
    # The writer (owned) and its current snapshot, which every lookup uses.
    # _index maps a node to its slot (a stable id the segments store);
    # the snapshot maps slots to indices into _nodes.
    cdef SegmentedRing* _ring
    cdef shared_ptr[RingSnapshot] _snap
    cdef uint64_t _seed
    cdef int _vnodes
    cdef int _mode
    cdef uint64_t _key_offset   # ketama keys: hash << 32, + 1 for "first point > hash"

    def __cinit__(self):
        self._ring = new SegmentedRing()
        self._snap = self._ring.snapshot()
        self._mode = MODE_XXH3
        self._key_offset = 0

    def __dealloc__(self):
        # A GIL-free get_many in another thread holds its own snapshot (and
        # with it the segments it reads); deleting the writer frees nothing
        # a snapshot can still see.
        del self._ring
        self._ring = NULL

    cdef Py_ssize_t _node_index(self, object node) except -1:
        cdef int32_t i
        cdef dict index = self._index  # held: see _Balancer._node_index
        try:
            i = self._snap.get().slot_index(index[node])
        except (KeyError, TypeError):
            raise KeyError(f"node {node!r} is not on the ring") from None
        if i < 0:
            raise RuntimeError(f"node {node!r} has no index in the ring snapshot")
        return i

    def __init__(self, nodes=(), *, vnodes=DEFAULT_VNODES, weights=None, seed=0):
        if isinstance(vnodes, bool) or not isinstance(vnodes, int):
            raise TypeError(f"vnodes must be an int, not {type(vnodes).__name__}")
        if vnodes < 1 or vnodes > (1 << 20):
            raise ValueError(f"vnodes must be in [1, 2**20], got {vnodes!r}")
        self._vnodes = vnodes
        self._seed = _seed_value(seed)
        node_list = _node_list(nodes, "nodes")
        self._add_many(node_list, _weights_for(self._check_new(node_list), weights))

    @classmethod
    def ketama(cls, nodes=(), *, weights=None, compat="libketama"):
        """A ring bit-compatible with libketama (MD5 points, 40 hashes x 4
        points per server scaled by its weight share): every key maps to the
        server libketama's ``ketama_get_server`` returns for the same servers
        and weights.

        ``compat="libketama"`` (default) uses ketama.c's formulas: hashes per
        server ``floorf(pct * 40.0 * numservers)`` with ``pct`` a float32
        share, and a key goes to the first point >= its hash.
        ``compat="uhashring"`` matches ``uhashring.HashRing(nodes,
        hash_fn="ketama")``: ``(40 * n * weight) // weight_sum`` in Python
        numbers, the first point > the hash, and on equal points the node
        listed last wins.  The two differ only for a key whose hash equals a
        point exactly and for weight shares where float32 rounding crosses an
        integer.  Keys hash as MD5 of their bytes (str as UTF-8, int as its
        decimal string); ``get_many`` takes arrays of these 32-bit hashes.
        Adding or removing a server rebuilds the ring (ketama's formula
        depends on the server count and the weight sum).
        """
        if compat not in ("libketama", "uhashring"):
            raise ValueError(f"compat must be 'libketama' or 'uhashring', got {compat!r}")
        cdef HashRing ring = cls.__new__(cls)
        ring._vnodes = KETAMA_HASHES
        ring._seed = 0
        if compat == "libketama":
            ring._mode = MODE_KETAMA
            ring._key_offset = 0
        else:
            ring._mode = MODE_UHASHRING
            ring._key_offset = 1
        node_list = _node_list(nodes, "nodes")
        ring._add_many(node_list, _weights_for(ring._check_new(node_list), weights))
        return ring

    cdef inline uint64_t _hash(self, object key) except? 0:
        if self._mode == MODE_XXH3:
            return hash_key(key, self._seed)
        return ((<uint64_t>_ketama_key_hash(key)) << 32) + self._key_offset

    cdef uint64_t _given_hash(self, uint64_t h) except? 0:
        """A caller's pre-computed hash as a ring position."""
        if self._mode == MODE_XXH3:
            return h
        if h > 0xFFFFFFFF:
            raise ValueError(f"a ketama hash is 32-bit, got {h}")
        return (h << 32) + self._key_offset

    # -- lookups ---------------------------------------------------------

    cdef int _check_lookup(self) except -1:
        if self._snap.get().size() == 0:
            raise EmptyRingError(f"lookup on a ring with no points ({len(self._nodes)} nodes)")
        if self._n_down == len(self._nodes):
            raise NoLiveNodeError(f"all {len(self._nodes)} nodes are marked down")
        return 0

    @cython.always_allow_keywords(False)  # METH_O: the cheapest call CPython has
    def get(self, key, /):
        """The node that owns ``key``: the first live node at or after its hash."""
        cdef uint64_t h
        if self._mode != MODE_XXH3:
            h = self._hash(key)
        elif not ascii_hash(key, self._seed, &h):
            h = hash_key(key, self._seed)
        cdef RingSnapshot* t = self._snap.get()
        cdef int32_t o
        if self._n_down == 0 and t.size() != 0:
            o = t.owner(h)
            if o >= 0:
                return self._nodes[o]
        return self._nodes[self._live_owner(h)]

    cdef Py_ssize_t _live_owner(self, uint64_t h) except -1:
        self._check_lookup()
        cdef int32_t o = self._snap.get().live_owner(h, self._alive_ptr())
        if o < 0:  # only a ketama ring can have live nodes with no points
            raise NoLiveNodeError("no live node has a point on the ring")
        return o

    def get_hash(self, uint64_t h):
        """The node that owns a pre-computed hash ``h`` (as in :meth:`get_many`)."""
        return self._nodes[self._live_owner(self._given_hash(h))]

    def get_n(self, key, n):
        """``n`` distinct live nodes for ``key``, in ring order from its hash
        (replica placement).  ``ValueError`` if fewer than ``n`` are live."""
        cdef uint64_t h = self._hash(key)
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
        cdef vector[int32_t] out = vector[int32_t](<size_t>n)
        cdef vector[uint8_t] seen
        cdef uint8_t* seen_ptr = NULL
        if n > 8:
            seen.resize(len(self._nodes), 0)
            seen_ptr = seen.data()
        cdef int32_t found = self._snap.get().live_owners_n(
            h, self._alive_ptr(), <int32_t>n, out.data(), seen_ptr)
        if found != n:  # only a ketama ring can have live nodes with no points
            raise ValueError(f"only {found} live nodes have points on the ring, asked for {n}")
        return [self._nodes[out[i]] for i in range(found)]

    def get_many(self, keys, *, out=None):
        """Owners of many keys as a ``numpy.ndarray[int32]`` of indices into
        :attr:`nodes`.  ``keys`` is a list/tuple of keys (hashed as
        :meth:`get` does) or a 1-D ``numpy.ndarray[uint64]`` of pre-computed
        hashes (``faultkit.hash64_many(keys, seed)``), looked up without the
        GIL; a list is hashed and looked up in blocks of 1,024 keys.  ``out``: optional C-contiguous int32 array of the same length."""
        cdef uint64_t[::1] hashes
        cdef const uint64_t[::1] given
        cdef Py_ssize_t n, i
        if isinstance(keys, np.ndarray):
            given = hash_array(keys)
            n = given.shape[0]
            if self._mode != MODE_XXH3:
                hashes = np.empty(n, dtype=np.uint64)
                for i in range(n):
                    hashes[i] = self._given_hash(given[i])
                given = hashes
        elif isinstance(keys, (list, tuple)):
            return self._get_many_keys(keys, out)
        else:
            raise TypeError(
                f"keys must be a list, tuple or numpy uint64 array, not {type(keys).__name__}")
        cdef int32_t[::1] res = _out_array(out, n)
        if n == 0:
            return res.base if out is None else out
        self._check_lookup()
        # Hold the table and the alive bytes for the GIL-free loop: a
        # concurrent add/remove/mark swaps in new ones and cannot free these.
        cdef shared_ptr[RingSnapshot] table = self._snap
        cdef shared_ptr[vector[uint8_t]] alive = self._alive
        cdef const uint8_t* alive_ptr = self._alive_ptr()
        with nogil:
            table.get().live_owner_many(&given[0], <size_t>n, alive_ptr, &res[0])
        if alive_ptr != NULL:
            for i in range(n):
                if res[i] < 0:  # only a ketama ring can have live nodes with no points
                    raise NoLiveNodeError("no live node has a point on the ring")
        return res.base if out is None else out

    cdef _get_many_keys(self, object keys, object out):
        """get_many of a list/tuple: hash a block of keys (with the GIL: they
        are Python objects), look the block up, repeat.  The block of hashes
        stays in L1 and no array of n hashes is allocated."""
        cdef Py_ssize_t n = len(keys), start, j, m
        cdef int32_t[::1] res = _out_array(out, n)
        if n == 0:
            return res.base if out is None else out
        self._check_lookup()
        cdef shared_ptr[RingSnapshot] table = self._snap   # one snapshot for every key
        cdef shared_ptr[vector[uint8_t]] alive = self._alive
        cdef const uint8_t* alive_ptr = self._alive_ptr()
        cdef uint64_t block[GET_MANY_BLOCK]
        cdef uint64_t seed = self._seed
        cdef bint xxh3_mode = self._mode == MODE_XXH3
        cdef bint exact_list = type(keys) is list
        cdef list lst = keys if exact_list else None
        cdef object key
        for start in range(0, n, GET_MANY_BLOCK):
            m = min(<Py_ssize_t>GET_MANY_BLOCK, n - start)
            for j in range(m):
                # Indexing is unchecked: make sure a key's Python code (a
                # buffer exporter) has not shrunk the list under us.
                if exact_list:
                    if start + j >= len(lst):
                        raise RuntimeError("keys changed size during get_many")
                    key = lst[start + j]
                else:
                    if start + j >= len(keys):
                        raise RuntimeError("keys changed size during get_many")
                    key = keys[start + j]
                if xxh3_mode:
                    block[j] = hash_key(key, seed)
                else:
                    block[j] = self._hash(key)
            table.get().live_owner_many(block, <size_t>m, alive_ptr, &res[start])
        if alive_ptr != NULL:
            for j in range(n):
                if res[j] < 0:  # only a ketama ring can have live nodes with no points
                    raise NoLiveNodeError("no live node has a point on the ring")
        return res.base if out is None else out

    # -- membership ------------------------------------------------------
    #
    # A change runs everything that can fail or run Python code first (new
    # points, slot maps, the new index dict, the alive bytes), then the C++
    # change, then installs the returned snapshot with the matching members
    # with no Python code in between, so a thread holding the GIL sees all
    # of the old state or all of the new.  The node and weight lists change
    # in place (append / delete one entry, not a copy of n), and the alive
    # bytes are never shorter than the node list.  _write_lock keeps two
    # membership changes from interleaving (a GC callback can switch threads
    # in the Python part of one); a change nested in another in one thread
    # (a node's __hash__) raises instead (_lock_change).

    cdef vector[int32_t] _slot_map(self):
        """A copy of the current slot -> node index map."""
        cdef RingSnapshot* t = self._snap.get()
        cdef int32_t s, n = t.slots()
        cdef vector[int32_t] m = vector[int32_t](<size_t>n)
        for s in range(n):
            m[s] = t.slot_index(s)
        return m

    cdef _install(self, shared_ptr[RingSnapshot] snap, shared_ptr[vector[uint8_t]] alive,
                  dict index):
        """Swap in a snapshot, its alive bytes and its node -> slot dict (the
        old ones live on in the locals until return: no dealloc runs here)."""
        cdef Py_ssize_t i, n_down = 0
        cdef vector[uint8_t]* a = alive.get()
        for i in range(len(self._nodes)):
            n_down += a[0][i] == 0
        old_index = self._index
        cdef shared_ptr[vector[uint8_t]] old_alive = self._alive
        self._snap = snap
        self._alive = alive
        self._index = index
        self._n_down = n_down
        self._version += 1
        del old_index

    cdef shared_ptr[vector[uint8_t]] _alive_resized(self, Py_ssize_t n):
        cdef shared_ptr[vector[uint8_t]] alive = shared_ptr[vector[uint8_t]](
            new vector[uint8_t](deref(self._alive)))
        deref(alive).resize(<size_t>n, 1)
        return alive

    cdef int _compact(self) except -1:
        """Renumber the slots densely (slot = node index) by rebuilding every
        segment once.  Called when removed nodes' slots outnumber the live
        ones, so its O(points) cost is spread over as many changes."""
        cdef vector[int32_t] remap = self._slot_map()
        cdef Py_ssize_t n = len(self._nodes), i
        cdef vector[int32_t] ident = vector[int32_t](<size_t>n)
        for i in range(n):
            ident[i] = <int32_t>i
        new_index = {node: i for i, node in enumerate(self._nodes)}
        cdef shared_ptr[vector[uint8_t]] alive = self._alive
        cdef shared_ptr[RingSnapshot] snap = self._ring.renumber(remap.data(), remap.size(),
                                                                 move(ident))
        self._install(snap, alive, new_index)
        return 0

    cdef _add_many(self, list nodes, list weights):
        cdef vector[RingPoint] pts
        cdef Py_ssize_t size, i, base = len(self._nodes), k = len(nodes)
        cdef const char* data
        cdef int64_t count, total = self._snap.get().size()
        cdef shared_ptr[vector[uint8_t]] alive
        cdef shared_ptr[RingSnapshot] snap
        if not nodes:
            return
        if self._mode != MODE_XXH3:
            self._ketama_rebuild(self._nodes + nodes, self._weights + weights,
                                 self._alive_resized(base + k))
            return
        cdef vector[uint32_t] counts
        counts.reserve(<size_t>k)
        for i in range(k):
            count = max(1, llround(self._vnodes * <double>weights[i]))
            total += count
            if count > MAX_POINTS or total > MAX_POINTS:
                raise ValueError(
                    f"weight {weights[i]!r} of node {nodes[i]!r} gives the ring more than "
                    f"{MAX_POINTS} points")
            counts.push_back(<uint32_t>count)
        if base + k > (1 << 30):
            raise ValueError("more than 2**30 nodes")
        # Slots: a fresh ring numbers them 0..n-1; a growing one issues new
        # slots above every old one (so equal points keep their order),
        # renumbering first when dead slots outnumber the live ones.
        if base and self._snap.get().slots() > 2 * base + 64:
            self._compact()
        cdef vector[int32_t] slot_map
        if base:
            slot_map = self._slot_map()
        cdef int32_t first = <int32_t>slot_map.size()
        for i in range(k):
            slot_map.push_back(<int32_t>(base + i))
        # A fresh ring hashes and counts its points in one C++ pass
        # (assign_xxh3); a growing one hands them to add().
        cdef vector[const char*] names
        cdef vector[size_t] name_lens
        if base:
            pts.reserve(<size_t>(total - self._snap.get().size()))
            for i in range(k):
                data = _node_bytes(nodes[i], &size)
                ring_node_points(data, <size_t>size, self._seed, counts[i],
                                 <int32_t>(first + i), pts)
        else:
            names.reserve(<size_t>k)
            name_lens.reserve(<size_t>k)
            for i in range(k):
                names.push_back(_node_bytes(nodes[i], &size))
                name_lens.push_back(<size_t>size)
        if base:
            new_index = self._index.copy()
            for i in range(k):
                new_index[nodes[i]] = first + i
        else:
            new_index = {node: i for i, node in enumerate(nodes)}
        # Longer alive bytes first (harmless to readers of the old snapshot),
        # then the lists, then the change; undo the lists if it fails.
        self._alive = self._alive_resized(base + k)
        alive = self._alive
        self._nodes.extend(nodes)
        try:
            self._weights.extend(weights)
            if base:
                snap = self._ring.add(pts, move(slot_map))
            else:
                snap = self._ring.assign_xxh3(names.data(), name_lens.data(), counts.data(),
                                              <size_t>k, self._seed, move(slot_map))
        except BaseException:
            del self._nodes[base:]
            del self._weights[base:]
            raise
        self._install(snap, alive, new_index)

    cdef _ketama_rebuild(self, list nodes, list weights, shared_ptr[vector[uint8_t]] alive):
        """Build the whole ketama continuum for nodes/weights and install it
        (new list objects: every index may change)."""
        cdef list counts = _ketama_counts(weights, self._mode, self._vnodes)
        cdef vector[RingPoint] pts
        cdef Py_ssize_t i, size
        cdef const char* data
        if len(nodes) > (1 << 30) or sum(counts) * 4 > MAX_POINTS:
            raise ValueError(f"a ketama ring of {len(nodes)} nodes exceeds {MAX_POINTS} points")
        pts.reserve(<size_t>(4 * sum(counts)))
        for i in range(len(nodes)):
            data = _node_bytes(nodes[i], &size)
            ring_ketama_node_points(data, <size_t>size, <uint32_t>counts[i], <int32_t>i, pts)
        cdef vector[int32_t] ident = vector[int32_t](<size_t>len(nodes))
        for i in range(len(nodes)):
            ident[i] = <int32_t>i
        new_index = {node: i for i, node in enumerate(nodes)}
        old = (self._nodes, self._weights)
        # On equal points the node listed last comes first (uhashring keeps
        # the last writer; libketama's qsort leaves ties unspecified).
        cdef shared_ptr[RingSnapshot] snap = self._ring.assign(pts, True, move(ident))
        self._nodes = nodes
        self._weights = weights
        self._install(snap, alive, new_index)
        del old

    cdef _remove_many(self, list node_list):
        cdef Py_ssize_t n = len(self._nodes), i, size
        cdef int32_t s, v, slot
        cdef int64_t count
        cdef const char* data
        gone = {}
        for node in node_list:
            gone[self._node_index(node)] = node
        if not gone:
            return
        cdef vector[uint8_t] removed = vector[uint8_t](<size_t>n, 0)
        for i in gone:
            removed[i] = 1
        cdef shared_ptr[vector[uint8_t]] alive = shared_ptr[vector[uint8_t]](new vector[uint8_t]())
        deref(alive).reserve(<size_t>(n - len(gone)))
        if self._mode != MODE_XXH3:
            for i in range(n):
                if not removed[i]:
                    deref(alive).push_back(deref(self._alive)[i])
            self._ketama_rebuild([self._nodes[i] for i in range(n) if not removed[i]],
                                 [self._weights[i] for i in range(n) if not removed[i]], alive)
            return
        # below[i]: removed indices below i, so index i becomes i - below[i].
        cdef vector[int32_t] below = vector[int32_t](<size_t>(n + 1), 0)
        for i in range(n):
            below[i + 1] = below[i] + removed[i]
        cdef RingSnapshot* t = self._snap.get()
        cdef int32_t n_slots = t.slots()
        cdef vector[uint8_t] drop = vector[uint8_t](<size_t>n_slots, 0)
        cdef vector[int32_t] slot_map = vector[int32_t](<size_t>n_slots)
        for s in range(n_slots):
            v = t.slot_index(s)
            if v < 0 or v >= n or removed[v]:
                slot_map[s] = -1
                drop[s] = v >= 0 and v < n
            else:
                slot_map[s] = v - below[v]
        # Where the removed nodes' points are: the same points add() made.
        cdef vector[RingPoint] hint
        new_index = self._index.copy()
        for i, node in gone.items():
            slot = <int32_t>new_index.pop(node)
            count = max(1, llround(self._vnodes * <double>self._weights[i]))
            data = _node_bytes(node, &size)
            ring_node_points(data, <size_t>size, self._seed, <uint32_t>count, slot, hint)
        kept_nodes = kept_weights = None
        if len(gone) > 1:
            kept_nodes = [self._nodes[i] for i in range(n) if not removed[i]]
            kept_weights = [self._weights[i] for i in range(n) if not removed[i]]
        # From here on no Python code runs: the alive bytes (taken now, so a
        # concurrent mark is not lost), the change, the lists, the install.
        for i in range(n):
            if not removed[i]:
                deref(alive).push_back(deref(self._alive)[i])
        cdef shared_ptr[RingSnapshot] snap = self._ring.remove(hint, drop.data(), drop.size(),
                                                               move(slot_map))
        if kept_nodes is None:
            i = next(iter(gone))
            del self._nodes[i]
            del self._weights[i]
        else:
            old_lists = (self._nodes, self._weights)
            self._nodes = kept_nodes
            self._weights = kept_weights
        self._install(snap, alive, new_index)

    def _segment_stats(self):
        """``(segments, written, slots)``: the directory's size, how many
        segments the last change wrote, and the slots issued (for tests)."""
        cdef shared_ptr[RingSnapshot] snap = self._snap
        return snap.get().segments(), self._ring.last_written(), snap.get().slots()

    def _set_simd(self, bint on):
        """Let later fresh builds use the CPU's vector kernels (default) or
        only the portable ones, which build the same ring (for tests)."""
        self._ring.set_simd(on)

    # -- introspection ---------------------------------------------------

    def distribution(self):
        """Share of the keyspace (floats summing to 1, or all 0 when nothing is
        up) each node serves now, down nodes' arcs going to their successors."""
        cdef Py_ssize_t n = len(self._nodes)
        res = np.zeros(n, dtype=np.float64)
        cdef double[::1] r = res
        if n:
            self._snap.get().distribution(self._alive_ptr(), <int32_t>n, &r[0])
        return dict(zip(self._nodes, res.tolist()))

    @property
    def vnodes(self):
        """Points per unit of weight (a ketama ring: MD5 hashes per average server, 4 points each)."""
        return self._vnodes

    @property
    def seed(self):
        """The XXH3 seed of points and keys (0 for a ketama ring)."""
        return self._seed

    @property
    def compat(self):
        """``None`` for an XXH3 ring, else the ketama flavour: ``"libketama"`` or ``"uhashring"``."""
        return (None, "libketama", "uhashring")[self._mode]

    def points(self):
        """Copies of the ring: ``(points, owners)``, the sorted ``uint64``
        points (ketama: the 32-bit point << 32) and the ``int32`` index into
        :attr:`nodes` of each point's node."""
        # Hold the snapshot: allocating the arrays can run a collection whose
        # callbacks change the ring and drop the current one.
        cdef shared_ptr[RingSnapshot] snap = self._snap
        cdef RingSnapshot* t = snap.get()
        cdef uint32_t n = t.size()
        pts = np.empty(n, dtype=np.uint64)
        own = np.empty(n, dtype=np.int32)
        cdef uint64_t[::1] p = pts
        cdef int32_t[::1] o = own
        if n:
            t.export_points(&p[0], &o[0])
        return pts, own

    @property
    def num_points(self):
        """Points on the ring."""
        return self._snap.get().size()

    def __repr__(self):
        kind = "HashRing" if self._mode == MODE_XXH3 else f"HashRing.ketama[{self.compat}]"
        return (f"{kind}({len(self._nodes)} nodes, {self._snap.get().size()} points, "
                f"{self._n_down} down)")


cdef int32_t[::1] _out_array(object out, Py_ssize_t n):
    return out_array(out, n, np.int32)
