# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""Rate limiting: GCRA in C++ (csrc/faultkit/contain/rate.h), bound here.

Thread safety: each decision is one compare-and-swap on the key's cell in
native memory, so decisions are atomic with or without the GIL; the bulk
decision releases the GIL.
"""
cimport cython
from libc.math cimport isfinite, fabs, ceil
from libc.stdint cimport int64_t, uint64_t, uint8_t

from faultkit._common.keys cimport hash_key
from faultkit.contain.crate cimport RateTable, RateDecision, RATE_MAX_CAPACITY

import asyncio
import time

import numpy as np

from faultkit.errors import RateLimitedError

DEF _NS = 1e9
DEF _MAX_SECONDS = 4.0e9   # |now| below this: ns + 2 * (burst * interval) stays in int64


cdef double _number(object value, str name) except? -1.0:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number, not {type(value).__name__}")
    return float(value)


cdef inline int64_t _ns(double seconds) except? -1:
    if not (fabs(seconds) < _MAX_SECONDS):
        raise ValueError(f"the clock's value must be finite and below 4e9 s, got {seconds!r}")
    return <int64_t>(seconds * _NS)


cdef class RateLimiter:
    """A rate limit: at most ``rate`` calls per ``per`` seconds, ``burst`` at once.

    GCRA (a token bucket kept as one timestamp) in C++: one call every
    ``per / rate`` seconds on average, and up to ``burst`` (default
    ``max(1, int(rate))``, a bucket of one period's calls as aiolimiter's) back
    to back after an idle spell.  Lock-free: each decision is one
    compare-and-swap, safe from any thread, with or without the GIL.

    ``key`` (any str, bytes, int or buffer; default None, the limiter's own
    bucket) selects a per-key bucket in a table of ``keys`` slots (rounded up
    to a power of two; default 4096) in native memory, with no lock or object
    per key.  A key idle long enough to be a full bucket needs no slot; when
    the 8 slots a key may use all hold busier keys, the fullest is taken over
    and the evicted key starts afresh (size ``keys`` to the active keys).

    Forms: ``try_acquire(key)`` -> bool; ``acquire(key, timeout=)`` waits
    (``sleep``, default ``time.sleep``) for a permit reserved now if it comes
    within ``timeout`` seconds (default: the limiter's ``timeout``, 0.0), else
    raises :class:`~faultkit.RateLimitedError` with ``retry_after`` seconds;
    ``await acquire_async(...)`` (``async_sleep``, default ``asyncio.sleep``);
    ``with limiter:`` / ``async with limiter:`` acquire one permit of the own
    bucket; ``try_acquire_many(ids, now)`` decides many at once (GIL released).
    ``clock`` (default ``time.monotonic``) returns seconds.
    """

    cdef RateTable table
    cdef readonly double rate
    cdef readonly double per
    cdef readonly int64_t burst
    cdef readonly double timeout
    cdef readonly object clock
    cdef readonly object sleep
    cdef readonly object async_sleep
    cdef readonly int64_t allowed
    cdef readonly int64_t refused

    def __init__(self, rate, per=1.0, *, burst=None, keys=4096, timeout=0.0,
                 clock=time.monotonic, sleep=time.sleep, async_sleep=asyncio.sleep):
        cdef double r = _number(rate, "rate")
        cdef double p = _number(per, "per")
        cdef double interval
        cdef int64_t b, cap
        if not (r > 0 and isfinite(r)):
            raise ValueError(f"rate must be a finite number > 0, got {rate!r}")
        if not (p > 0 and isfinite(p)):
            raise ValueError(f"per must be a finite number of seconds > 0, got {per!r}")
        interval = p / r * _NS
        if not (interval >= 1.0 and interval < 1e17):
            raise ValueError(f"per / rate must be between 1 ns and 1e8 s, got {p / r!r} s")
        if burst is None:
            b = max(1, <int64_t>r) if r < 2.0**40 else <int64_t>2**40
        elif isinstance(burst, bool) or not isinstance(burst, int):
            raise TypeError(f"burst must be an int, not {type(burst).__name__}")
        elif not (1 <= burst <= 2**40):
            raise ValueError(f"burst must be in [1, 2**40], got {burst!r}")
        else:
            b = burst
        if isinstance(keys, bool) or not isinstance(keys, int):
            raise TypeError(f"keys must be an int, not {type(keys).__name__}")
        if not (1 <= keys <= RATE_MAX_CAPACITY):
            raise ValueError(f"keys must be in [1, {RATE_MAX_CAPACITY}], got {keys!r}")
        cap = 1
        while cap < keys:
            cap <<= 1
        self.timeout = _number(timeout, "timeout")
        if not (self.timeout >= 0 and isfinite(self.timeout)):
            raise ValueError(f"timeout must be a finite number >= 0, got {timeout!r}")
        for name, fn in (("clock", clock), ("sleep", sleep), ("async_sleep", async_sleep)):
            if not callable(fn):
                raise TypeError(f"{name} must be callable, not {type(fn).__name__}")
        if not self.table.configure(<int64_t>interval, b, cap):
            raise ValueError(f"burst {b} at one call every {interval:.0f} ns overflows")
        self.rate = r
        self.per = p
        self.burst = b
        self.clock = clock
        self.sleep = sleep
        self.async_sleep = async_sleep

    cdef inline int64_t _cost(self, object cost) except -1:
        if type(cost) is int and 1 <= <long long>cost <= self.burst:
            return cost
        if isinstance(cost, bool) or not isinstance(cost, int):
            raise TypeError(f"cost must be an int, not {type(cost).__name__}")
        raise ValueError(f"cost must be in [1, burst={self.burst}], got {cost!r}")

    cdef inline RateDecision _decide(self, object key, int64_t cost, double max_wait) except *:
        cdef int64_t now = _ns(_number(self.clock(), "the clock's value"))
        cdef int64_t wait_ns = <int64_t>(max_wait * _NS)
        cdef RateDecision d
        if key is None:
            d = self.table.decide(now, cost, wait_ns)
        else:
            d = self.table.decide_key(hash_key(key, 0), now, cost, wait_ns)
        if d.allowed:
            self.allowed += 1
        else:
            self.refused += 1
        return d

    def try_acquire(self, key=None, cost=1):
        """Take ``cost`` permits of ``key``'s bucket now if there are; True if taken."""
        return self._decide(key, self._cost(cost), 0.0).allowed

    def retry_after(self, key=None, cost=1):
        """Seconds until ``cost`` permits of ``key`` would be granted (0.0: now); takes none."""
        cdef int64_t c = self._cost(cost)
        cdef int64_t now = _ns(_number(self.clock(), "the clock's value"))
        cdef RateDecision d
        # A reservation that can never be granted (max wait -inf) reports the wait only.
        if key is None:
            d = self.table.decide(now, c, -(1 << 62))
        else:
            d = self.table.decide_key(hash_key(key, 0), now, c, -(1 << 62))
        return max(0.0, d.wait_ns / _NS)

    cdef double _max_wait(self, object timeout) except -1.0:
        cdef double t
        if timeout is None:
            return self.timeout
        t = _number(timeout, "timeout")
        if not (t >= 0 and isfinite(t)):
            raise ValueError(f"timeout must be a finite number >= 0, got {timeout!r}")
        return t

    cdef double _reserve(self, object key, object cost, object timeout) except -1.0:
        cdef RateDecision d = self._decide(key, self._cost(cost), self._max_wait(timeout))
        if not d.allowed:
            err = RateLimitedError(
                f"rate limit of {self.rate:g} per {self.per:g} s exceeded"
                + (f" for key {key!r}" if key is not None else "")
                + f"; retry after {d.wait_ns / _NS:.6f} s")
            err.retry_after = d.wait_ns / _NS
            err.key = key
            raise err
        return d.wait_ns / _NS

    def acquire(self, key=None, cost=1, *, timeout=None):
        """Take ``cost`` permits of ``key``, waiting up to ``timeout`` s for them
        (reserved now, so waiting callers are served in order); raises
        ``RateLimitedError`` (with ``retry_after``) if they come later."""
        cdef double wait = self._reserve(key, cost, timeout)
        if wait > 0:
            self.sleep(wait)

    async def acquire_async(self, key=None, cost=1, *, timeout=None):
        """``acquire`` for coroutines: waits with ``async_sleep``."""
        cdef double wait = self._reserve(key, cost, timeout)
        if wait > 0:
            await self.async_sleep(wait)

    def __enter__(self):
        """``with limiter:``: ``acquire()`` one permit of the limiter's own bucket."""
        self.acquire()
        return self

    def __exit__(self, exc_type, exc, tb):
        return False

    async def __aenter__(self):
        await self.acquire_async()
        return self

    async def __aexit__(self, exc_type, exc, tb):
        return False

    def key_id(self, key):
        """The 64-bit id a key's bucket is stored under (what ``try_acquire_many`` takes)."""
        return hash_key(key, 0)

    @cython.boundscheck(False)
    def try_acquire_many(self, ids, now=None, *, out=None):
        """Decide one permit for each of ``ids`` (a uint64 array of key ids, as
        ``key_id`` gives, or int64) at ``now`` (one float of seconds, an array of
        one per id, or None: the clock once).  Returns (or fills) a uint8 array,
        1 = allowed; decides in order, with the GIL released.  A non-finite or
        out-of-range time is refused."""
        cdef const uint64_t[::1] k
        cdef const double[::1] t
        cdef uint8_t[::1] o
        cdef Py_ssize_t n, i, stride = 1
        cdef double one, x
        cdef int64_t count = 0
        cdef RateDecision d
        arr = np.asarray(ids)
        if arr.ndim != 1 or arr.dtype.kind not in "iu" or arr.dtype.itemsize != 8:
            raise TypeError(f"ids must be a 1-D int64 or uint64 array, not {arr.ndim}-D {arr.dtype}")
        k = np.require(arr, arr.dtype.newbyteorder("="), "CA").view(np.uint64)
        n = k.shape[0]
        if now is None or isinstance(now, (int, float)) and not isinstance(now, bool):
            one = _number(self.clock() if now is None else now, "now")
            t = np.array([one], dtype=np.float64)
            stride = 0
        else:
            tarr = np.asarray(now)
            if tarr.ndim != 1 or tarr.dtype.kind != "f":
                raise TypeError(f"now must be a number or a 1-D float array, not {tarr.dtype}")
            if tarr.shape[0] != n:
                raise ValueError(f"now has {tarr.shape[0]} times for {n} ids")
            t = np.require(tarr, np.float64, "CA")
        if out is None:
            out = np.empty(n, dtype=np.uint8)
        elif not isinstance(out, np.ndarray) or out.dtype != np.uint8 or out.ndim != 1 \
                or out.shape[0] != n or not out.flags.c_contiguous or not out.flags.writeable:
            raise ValueError(f"out must be a writeable C-contiguous 1-D uint8 array of length {n}")
        o = out
        with nogil:
            for i in range(n):
                x = t[i * stride]
                if not (fabs(x) < _MAX_SECONDS):
                    o[i] = 0
                    continue
                d = self.table.decide_key(k[i], <int64_t>(x * _NS), 1, 0)
                o[i] = d.allowed
                count += d.allowed
        self.allowed += count
        self.refused += n - count
        return out

    def metrics(self):
        """A dict: ``rate``, ``per``, ``burst``, ``keys`` (table slots), and the
        lifetime counts ``allowed`` and ``refused`` (decisions, not permits)."""
        return {"rate": self.rate, "per": self.per, "burst": self.burst,
                "keys": self.table.capacity(), "allowed": self.allowed, "refused": self.refused}

    def __repr__(self):
        return f"RateLimiter(rate={self.rate:g}, per={self.per:g}, burst={self.burst})"
