# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""The native heartbeat table behind faultkit.detect (a thin shell over csrc/faultkit/heartbeat.h).

Ids are the table's slot numbers; names live in faultkit.detect.  Times are
float seconds; every call that needs the time takes it (the table has no clock).
"""
from libc.math cimport isfinite
from libc.stdint cimport int64_t, uint8_t, uint32_t
from libcpp.vector cimport vector

from faultkit._common.arrays cimport out_array
from faultkit.detect.cheartbeat cimport (
    HeartbeatTable as CTable, HbConfig, HbEvent, akka_phi, phi_crossing_y,
    HB_ALIVE, HB_SUSPECT, HB_DEAD, HB_IDLE, HB_LOST, HB_LEAVING, HB_LEFT, HB_RESTARTED, HB_FREE,
    HB_TIMEOUT, HB_PHI_WINDOW, HB_PHI_EWMA,
)

import numpy as np

MODES = {"timeout": HB_TIMEOUT, "window": HB_PHI_WINDOW, "ewma": HB_PHI_EWMA}
# State codes as the table stores them, by the names the detectors report:
# IDLE (added, never heard from) is "joining", LOST (never heard within the
# join timeout) reads "dead"; RESTARTED only appears in events.
STATE_NAMES = {HB_ALIVE: "alive", HB_SUSPECT: "suspect", HB_DEAD: "dead", HB_IDLE: "joining",
               HB_LOST: "dead", HB_LEAVING: "leaving", HB_LEFT: "left", HB_RESTARTED: "restarted"}
_ALIVE, _SUSPECT, _DEAD = "alive", "suspect", "dead"
_JOINING, _LEAVING, _LEFT, _RESTARTED = "joining", "leaving", "left", "restarted"


cdef inline str _state_name(uint8_t s):
    if s == HB_ALIVE:
        return _ALIVE
    if s == HB_SUSPECT:
        return _SUSPECT
    if s == HB_DEAD or s == HB_LOST:
        return _DEAD
    if s == HB_IDLE:
        return _JOINING
    if s == HB_LEAVING:
        return _LEAVING
    if s == HB_LEFT:
        return _LEFT
    if s == HB_RESTARTED:
        return _RESTARTED
    return _ALIVE  # pragma: no cover - FREE ids are never reported


cdef inline double _check_time(double t) except? -1.0:
    if not isfinite(t) or t < 0.0:
        raise ValueError(f"time must be finite and >= 0, got {t!r}")
    return t


def phi(double time_diff, double mean, double std_dev):
    """Akka's phi for an elapsed time, mean and standard deviation (all seconds)."""
    return akka_phi(time_diff, mean, std_dev)


def crossing_y(double threshold):
    """The standardized elapsed time y at which Akka's phi reaches ``threshold``."""
    if not (threshold > 0.0 and isfinite(threshold)):
        raise ValueError(f"threshold must be finite and > 0, got {threshold!r}")
    return phi_crossing_y(threshold)


cdef inline int64_t _need(CTable* t, int64_t id) except -1:
    if not t.in_use(id):
        raise IndexError(f"id {id} is not in the table")
    return id


cdef inline int _free(int busy) except -1:
    if busy:
        raise RuntimeError("the heartbeat table is in use by another thread (heartbeat_many/phi_all)")
    return 0


cdef class HeartbeatTable:
    """N components' heartbeat state in structure-of-arrays form (see heartbeat.h)."""
    cdef CTable* t
    cdef readonly str mode
    cdef vector[HbEvent] events
    # Set while a method runs without the GIL: another thread calling in then
    # (and growing the arrays under it) gets RuntimeError instead of a crash.
    cdef int busy
    # Set by faultkit.detect (bind): its name -> id dict and clock, so the
    # per-call heartbeat_name path runs without a Python-level frame.
    cdef dict names
    cdef object clock

    def __cinit__(self, str mode, *, double timeout=5.0, double suspect_after=0.0,
                  double threshold=8.0, double suspect_threshold=0.0, double min_std=0.1,
                  double pause=3.0, double first_estimate=1.0, uint32_t max_samples=1000,
                  double alpha=0.0, double join_timeout=0.0):
        cdef HbConfig cfg
        if mode not in MODES:
            raise ValueError(f"mode must be one of {sorted(MODES)}, got {mode!r}")
        cfg.mode = MODES[mode]
        cfg.timeout = timeout
        cfg.suspect_after = suspect_after
        cfg.threshold = threshold
        cfg.suspect_threshold = suspect_threshold
        cfg.min_std = min_std
        cfg.pause = pause
        cfg.first_estimate = first_estimate
        cfg.max_samples = max_samples
        cfg.alpha = alpha
        cfg.join_timeout = join_timeout
        self.mode = mode
        self.t = new CTable(cfg)

    def __dealloc__(self):
        del self.t

    def add(self, double now=0.0):
        """A new id, joining since ``now`` (the start of its join timeout)."""
        _check_time(now)
        _free(self.busy)
        return self.t.add(now)

    def remove(self, int64_t id):
        _free(self.busy)
        return self.t.remove(id)

    @property
    def slots(self):
        """Number of id slots (ids are < slots; removed ids are reused)."""
        return self.t.slots()

    def __len__(self):
        return self.t.count()

    def in_use(self, int64_t id):
        return self.t.in_use(id)

    def heartbeat(self, int64_t id, double now, int64_t incarnation=-1):
        """Record a heartbeat of ``id`` at ``now``; ValueError if ``now`` is bad or earlier than its last."""
        cdef int r
        _free(self.busy)
        if not isfinite(now) or now < 0.0:
            raise ValueError(f"time must be finite and >= 0, got {now!r}")
        r = self.t.heartbeat(id, now, incarnation)
        if r != 0:
            if r == 2:
                return False
            if r < 0:
                raise IndexError(f"id {id} is not in the table")
            raise ValueError(
                f"heartbeat time {now!r} is before the last heartbeat at {self.t.last(id)!r}")
        return True

    def leave(self, int64_t id, double now, int64_t incarnation=-1):
        """``id`` left at ``now`` (incarnation < 0: any): 0 done, 1 an older
        incarnation's leave (ignored), 2 left already (ignored)."""
        cdef int r
        _check_time(now)
        _free(self.busy)
        r = self.t.leave(id, now, incarnation)
        if r < 0:
            raise IndexError(f"id {id} is not in the table")
        return r

    def begin_leave(self, int64_t id, double now):
        """``id`` starts leaving (draining) at ``now``: 0 done, 2 leaving or left already."""
        cdef int r
        _check_time(now)
        _free(self.busy)
        r = self.t.begin_leave(id, now)
        if r < 0:
            raise IndexError(f"id {id} is not in the table")
        return r

    def bind(self, dict names, clock):
        """Share ``names`` (name -> id) and ``clock`` with :meth:`heartbeat_name`."""
        self.names = names
        self.clock = clock

    def heartbeat_name(self, name, now=None, *, incarnation=None):
        """Record a heartbeat from component ``name`` at ``now`` (default: the clock).

        Returns True when recorded, False when ignored because the component
        left in this incarnation (a heartbeat delayed past its leave).
        KeyError for an unknown name; ValueError for a NaN, infinite or
        negative time, or one earlier than its last heartbeat (nothing is
        recorded).  A larger ``incarnation`` than seen before means the
        component restarted: its interval statistics start afresh and the
        next scan reports a ``"restarted"`` event.
        """
        cdef object i
        cdef double t
        cdef int64_t inc = -1
        cdef int r
        cdef dict names = self.names  # held: name.__hash__ may run Python code
        if names is None:
            raise RuntimeError("no names bound to this table")
        i = names.get(name)
        if i is None:
            raise KeyError(name)
        t = self.clock() if now is None else now
        if not isfinite(t) or t < 0.0:
            raise ValueError(f"time must be finite and >= 0, got {t!r}")
        if incarnation is not None:
            if type(incarnation) is not int or not 0 <= incarnation < 2**63:
                raise ValueError(f"incarnation must be an int in [0, 2**63), got {incarnation!r}")
            inc = incarnation
        _free(self.busy)
        r = self.t.heartbeat(<int64_t>i, t, inc)
        if r != 0:
            if r == 2:
                return False
            if r < 0:
                raise IndexError(f"id {i} of {name!r} is not in the table")
            raise ValueError(f"heartbeat time {t!r} of {name!r} is before its last "
                             f"heartbeat at {self.t.last(<int64_t>i)!r}")
        return True

    def heartbeat_many(self, ids, times):
        """Validate every (id, time), then record them in order; returns how many were stale.

        IndexError / ValueError name the first bad entry and nothing is written.
        A time earlier than its component's last heartbeat is ignored (stale).
        The GIL is released for both passes.
        """
        cdef const int64_t[::1] iv
        cdef const double[::1] tv
        cdef size_t n, bad, stale = 0
        cdef int kind = 0
        ids = np.asarray(ids)
        times = np.asarray(times)
        if ids.ndim != 1 or ids.dtype.kind not in "iu":
            raise TypeError(f"ids must be a 1-D integer array, not {ids.ndim}-D {ids.dtype}")
        if times.ndim != 1 or times.dtype.kind not in "fiu":
            raise TypeError(f"times must be a 1-D float array, not {times.ndim}-D {times.dtype}")
        if ids.shape[0] != times.shape[0]:
            raise ValueError(f"ids has {ids.shape[0]} entries but times has {times.shape[0]}")
        if ids.dtype == np.uint64 and ids.shape[0] and ids.max() > np.iinfo(np.int64).max:
            raise IndexError(f"id {int(ids.max())} is out of range")
        iv = np.ascontiguousarray(ids, dtype=np.int64)
        tv = np.ascontiguousarray(times, dtype=np.float64)
        n = iv.shape[0]
        if n == 0:
            return 0
        _free(self.busy)
        self.busy = 1
        try:
            with nogil:
                bad = self.t.validate_many(&iv[0], &tv[0], n, &kind)
                if bad == n:
                    stale = self.t.heartbeat_many(&iv[0], &tv[0], n)
        finally:
            self.busy = 0
        if bad < n:
            if kind == 1:
                raise IndexError(f"ids[{bad}] = {iv[bad]} is not a component id; nothing was recorded")
            raise ValueError(f"times[{bad}] = {tv[bad]!r} is not a finite time >= 0; nothing was recorded")
        return stale

    def scan(self, double now):
        """State changes due at ``now``: a list of (id, old, new, at, old_incarnation,
        incarnation) tuples."""
        cdef size_t k
        cdef HbEvent e
        cdef list out = []
        _check_time(now)
        _free(self.busy)
        self.events.clear()
        self.t.scan(now, self.events)
        for k in range(self.events.size()):
            e = self.events[k]
            out.append((e.id, _state_name(e.old_state), _state_name(e.new_state), e.at,
                        e.old_inc, e.new_inc))
        self.events.clear()
        return out

    def state(self, int64_t id):
        _need(self.t, id)
        return _state_name(self.t.state(id))

    def heard(self, int64_t id):
        """Whether ``id`` has had a heartbeat (is monitored)."""
        cdef uint8_t s = self.t.state(id)
        return s != HB_IDLE and s != HB_LOST and s != HB_FREE

    def last(self, int64_t id):
        _need(self.t, id)
        return self.t.last(id)

    def incarnation(self, int64_t id):
        _need(self.t, id)
        return self.t.incarnation(id)

    def phi(self, int64_t id, double now):
        _need(self.t, id)
        return self.t.phi(id, _check_time(now))

    def phi_all(self, double now, out=None):
        """phi of every id slot at ``now`` (NaN for removed ids), GIL released."""
        cdef double[::1] o
        _check_time(now)
        n = self.t.slots()
        out = out_array(out, n, np.float64)
        if n == 0:
            return out
        o = out
        _free(self.busy)
        self.busy = 1
        try:
            with nogil:
                self.t.phi_all(now, &o[0])
        finally:
            self.busy = 0
        return out

    def alive_mask(self):
        """bool array over id slots: alive or joining; suspect, dead, leaving, left and removed ids are False."""
        cdef uint8_t[::1] o
        n = self.t.slots()
        out = np.empty(n, dtype=np.bool_)
        if n:
            o = out.view(np.uint8)
            _free(self.busy)
            self.busy = 1
            try:
                with nogil:
                    self.t.alive_mask(&o[0])
            finally:
                self.busy = 0
        return out

    def deadlines(self, int64_t id):
        """(suspect, dead) crossing times of ``id`` after its last heartbeat; inf if none."""
        _need(self.t, id)
        return self.t.suspect_deadline(id), self.t.dead_deadline(id)

    def deadlines_all(self):
        """(suspect, dead) crossing-time arrays over id slots; inf where none."""
        cdef double[::1] a, b
        n = self.t.slots()
        sus = np.empty(n, dtype=np.float64)
        dead = np.empty(n, dtype=np.float64)
        if n:
            a = sus
            b = dead
            _free(self.busy)
            self.busy = 1
            try:
                with nogil:
                    self.t.deadlines_all(&a[0], &b[0])
            finally:
                self.busy = 0
        return sus, dead

    def memory_bytes(self):
        return self.t.memory_bytes()

    @property
    def crossing_y(self):
        """(suspect, dead) standardized crossing points y* (phi modes)."""
        return self.t.crossing_y_suspect(), self.t.crossing_y_dead()
