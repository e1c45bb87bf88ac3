# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""Retries: the success path in C (one vectorcall, no allocation), the retry
loop beside it.  See :class:`Retry` and :class:`RetryBudget`.

Thread safety: a RetryBudget's counters change only in sections that run no
Python code with the GIL held (atomic under the GIL, as the breaker's).
"""
cimport cython
from libc.math cimport INFINITY, NAN, isfinite, isnan, floor, fmin, fmax
from libc.stdint cimport int64_t
from libcpp.vector cimport vector
from cpython.object cimport PyObject, PyTypeObject

cdef extern from "Python.h":
    ctypedef PyObject* (*PyCFunction)(PyObject*, PyObject*)
    ctypedef struct PyMethodDef:
        const char* ml_name
        PyCFunction ml_meth
        int ml_flags
        const char* ml_doc
    int METH_FASTCALL
    int METH_KEYWORDS
    object PyDescr_NewMethod(PyTypeObject* type, PyMethodDef* meth)
    object PyObject_Vectorcall(object callable, PyObject** args, size_t nargsf,
                               PyObject* kwnames)
    Py_ssize_t PyVectorcall_NARGS(size_t nargsf)

cdef extern from *:
    """
    static int faultkit_retry_install_method(PyTypeObject* type, PyObject* descr) {
        const char* name = ((PyMethodDescrObject*)descr)->d_method->ml_name;
        if (PyDict_SetItemString(type->tp_dict, name, descr) < 0) return -1;
        PyType_Modified(type);
        return 0;
    }
    static int faultkit_retry_enable_vectorcall(PyTypeObject* type, Py_ssize_t offset) {
        type->tp_vectorcall_offset = offset;
        type->tp_flags |= Py_TPFLAGS_HAVE_VECTORCALL;
        PyType_Modified(type);
        return 0;
    }
    """
    int _install_method "faultkit_retry_install_method"(PyTypeObject* type, object descr) except -1
    int _enable_vectorcall "faultkit_retry_enable_vectorcall"(PyTypeObject* type, Py_ssize_t offset) except -1

import asyncio
import functools
import inspect
import random
import time
from types import CoroutineType, MethodType

_JITTERS = ("none", "full", "equal", "decorrelated")
DEF _J_NONE = 0
DEF _J_FULL = 1
DEF _J_EQUAL = 2
DEF _J_DECORRELATED = 3


cdef double _number(object value, str name) except? -1.0:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number, not {type(value).__name__}")
    return float(value)


cdef double _seconds(object value, str name, bint allow_zero) except? -1.0:
    cdef double v = _number(value, name)
    if not isfinite(v) or v < 0 or (v == 0 and not allow_zero):
        raise ValueError(f"{name} must be a finite number of seconds "
                         f"{'>= 0' if allow_zero else '> 0'}, got {value!r}")
    return v


cdef tuple _exc_classes(object value, str name):
    if isinstance(value, type):
        value = (value,)
    try:
        value = tuple(value)
    except TypeError:
        raise TypeError(f"{name} must be an exception class or an iterable of them, "
                        f"not {type(value).__name__}") from None
    for e in value:
        if not (isinstance(e, type) and issubclass(e, BaseException)):
            raise TypeError(f"{name} must hold exception classes, got {e!r}")
    return value


cdef class RetryBudget:
    """How many retries all callers sharing it may make: Finagle's RetryBudget.

    Over the last ``window`` seconds (default 10, one bucket a second), retries
    may be at most ``ratio`` (default 0.2) of the requests made plus
    ``min_per_second`` (default 10) a second, so retries cannot multiply the
    load on a dependency that is down: with 0.2, at most 1.2x the requests.
    Share one budget between the ``Retry`` policies (and threads) calling the
    same dependency.  ``clock`` (default ``time.monotonic``) returns seconds.
    """
    cdef readonly double ratio
    cdef readonly double min_per_second
    cdef readonly int64_t window
    cdef readonly object clock
    cdef vector[int64_t] _requests
    cdef vector[int64_t] _retries
    cdef vector[int64_t] _second
    cdef int64_t _req_total
    cdef int64_t _retry_total
    cdef readonly int64_t refused

    def __init__(self, *, ratio=0.2, min_per_second=10.0, window=10, clock=time.monotonic):
        self.ratio = _number(ratio, "ratio")
        if not (0 <= self.ratio <= 1000):
            raise ValueError(f"ratio must be in [0, 1000], got {ratio!r}")
        self.min_per_second = _number(min_per_second, "min_per_second")
        if not (0 <= self.min_per_second < 1e12):
            raise ValueError(f"min_per_second must be in [0, 1e12), got {min_per_second!r}")
        if isinstance(window, bool) or not isinstance(window, int):
            raise TypeError(f"window must be an int of seconds, not {type(window).__name__}")
        if not (1 <= window <= 3600):
            raise ValueError(f"window must be in [1, 3600] seconds, got {window!r}")
        if not callable(clock):
            raise TypeError(f"clock must be callable, not {type(clock).__name__}")
        self.window = window
        self.clock = clock
        cdef size_t w = window
        cdef int64_t zero = 0, never = -(1 << 62)
        self._requests.assign(w, zero)
        self._retries.assign(w, zero)
        self._second.assign(w, never)

    cdef inline Py_ssize_t _slot(self, double now):
        # The bucket of epoch second `now`, emptied if it held an older second.
        cdef int64_t sec = <int64_t>floor(now) if fabs_ok(now) else 0
        cdef Py_ssize_t i = <Py_ssize_t>(sec % self.window) if sec >= 0 else \
            <Py_ssize_t>((self.window - (-sec) % self.window) % self.window)
        if self._second[i] != sec:
            self._req_total -= self._requests[i]
            self._retry_total -= self._retries[i]
            self._requests[i] = 0
            self._retries[i] = 0
            self._second[i] = sec
        return i

    cdef int _expire(self, double now) except -1:
        # Empty every bucket older than the window (called before a decision).
        cdef int64_t sec = <int64_t>floor(now) if fabs_ok(now) else 0
        cdef Py_ssize_t i
        for i in range(self.window):
            if self._second[i] <= sec - self.window or self._second[i] > sec:
                self._req_total -= self._requests[i]
                self._retry_total -= self._retries[i]
                self._requests[i] = 0
                self._retries[i] = 0
                self._second[i] = -(1 << 62)
        return 0

    cdef int deposit(self, double now) except -1:
        cdef Py_ssize_t i = self._slot(now)
        self._requests[i] += 1
        self._req_total += 1
        return 0

    cdef bint withdraw(self, double now) except -1:
        self._expire(now)
        if self._retry_total + 1 > self.ratio * self._req_total + self.min_per_second * self.window:
            self.refused += 1
            return False
        cdef Py_ssize_t i = self._slot(now)
        self._retries[i] += 1
        self._retry_total += 1
        return True

    def record_request(self):
        """Count one request (``Retry`` does this for each call it makes)."""
        self.deposit(_number(self.clock(), "the clock's value"))

    def try_retry(self):
        """Take one retry from the budget if it allows one; True if taken."""
        return self.withdraw(_number(self.clock(), "the clock's value"))

    def metrics(self):
        """A dict: ``requests`` and ``retries`` in the window, ``refused`` (lifetime)."""
        self._expire(_number(self.clock(), "the clock's value"))
        return {"requests": self._req_total, "retries": self._retry_total,
                "refused": self.refused}


cdef inline bint fabs_ok(double x):
    return x == x and -9.0e15 < x < 9.0e15


cdef class Retry:
    """Call again when a call fails: attempts, backoff with jitter, a deadline, a budget.

    ``attempts`` (default 3) calls at most.  Between them it sleeps a backoff:
    ``backoff * multiplier**(n-1)`` seconds before retry n (defaults 0.1 s and
    2.0), capped at ``max_backoff`` (default 10 s), with ``jitter``
    (AWS's names): ``"full"`` (default; uniform in [0, b]), ``"equal"``
    (b/2 + uniform in [0, b/2]), ``"decorrelated"`` (uniform in
    [backoff, 3 * previous sleep], capped) or ``"none"``.

    A call is retried when it raises an instance of ``retry_on`` (default
    ``Exception``), or when ``retry_if_result(result)`` (default None) is true;
    when retries run out the last exception propagates (or the last result is
    returned).  ``deadline`` (seconds, default None) bounds the whole call: no
    sleep ends after it and no attempt starts at or after it (a backoff that
    would cross it is skipped and the call gives up).  ``budget``, a
    :class:`RetryBudget` shared by callers, refuses retries past its share.

    Forms: ``retry.call(fn, *args, **kwargs)``, ``@retry`` (plain or ``async
    def``), ``await retry.call(async_fn, ...)``.  ``clock`` (default
    ``time.monotonic``), ``sleep`` (``time.sleep``), ``async_sleep``
    (``asyncio.sleep``) and ``rng`` (a ``random.Random``) make it deterministic
    under test.  The success path costs one C-level call (plus one clock read
    when a deadline or budget needs it).
    """
    cdef readonly int64_t attempts
    cdef readonly double backoff
    cdef readonly double multiplier
    cdef readonly double max_backoff
    cdef readonly str jitter
    cdef int _jitter
    cdef readonly tuple retry_on
    cdef readonly object retry_if_result
    cdef readonly double deadline
    cdef readonly RetryBudget budget
    cdef readonly object clock
    cdef readonly object sleep
    cdef readonly object async_sleep
    cdef readonly object rng
    cdef bint _timed
    cdef readonly int64_t calls
    cdef readonly int64_t retries
    cdef readonly int64_t gave_up

    def __init__(self, attempts=3, *, backoff=0.1, multiplier=2.0, max_backoff=10.0,
                 jitter="full", retry_on=Exception, retry_if_result=None, deadline=None,
                 budget=None, clock=time.monotonic, sleep=time.sleep,
                 async_sleep=asyncio.sleep, rng=None):
        if isinstance(attempts, bool) or not isinstance(attempts, int):
            raise TypeError(f"attempts must be an int, not {type(attempts).__name__}")
        if not (1 <= attempts <= 1_000_000):
            raise ValueError(f"attempts must be in [1, 1000000], got {attempts!r}")
        self.attempts = attempts
        self.backoff = _seconds(backoff, "backoff", True)
        self.multiplier = _number(multiplier, "multiplier")
        if not (1.0 <= self.multiplier <= 1000.0):
            raise ValueError(f"multiplier must be in [1, 1000], got {multiplier!r}")
        self.max_backoff = _seconds(max_backoff, "max_backoff", True)
        if jitter not in _JITTERS:
            raise ValueError(f'jitter must be "none", "full", "equal" or "decorrelated", '
                             f'got {jitter!r}')
        self.jitter = jitter
        self._jitter = _JITTERS.index(jitter)
        self.retry_on = _exc_classes(retry_on, "retry_on")
        if retry_if_result is not None and not callable(retry_if_result):
            raise TypeError(f"retry_if_result must be callable or None, "
                            f"not {type(retry_if_result).__name__}")
        self.retry_if_result = retry_if_result
        self.deadline = INFINITY if deadline is None else _seconds(deadline, "deadline", False)
        if budget is not None and not isinstance(budget, RetryBudget):
            raise TypeError(f"budget must be a RetryBudget or None, not {type(budget).__name__}")
        self.budget = budget
        for name, fn in (("clock", clock), ("sleep", sleep), ("async_sleep", async_sleep)):
            if not callable(fn):
                raise TypeError(f"{name} must be callable, not {type(fn).__name__}")
        if rng is None:
            rng = random.Random()
        elif not isinstance(rng, random.Random):
            raise TypeError(f"rng must be a random.Random or None, not {type(rng).__name__}")
        self.clock = clock
        self.sleep = sleep
        self.async_sleep = async_sleep
        self.rng = rng
        self._timed = isfinite(self.deadline) or budget is not None

    cdef double _now(self) except? -1.0:
        cdef double now = _number(self.clock(), "the clock's value")
        if isnan(now):
            raise ValueError("the clock returned NaN")
        return now

    cdef double _next_sleep(self, int64_t retry, double previous) except? -1.0:
        # The backoff before retry number `retry` (1-based).
        cdef double b = self.backoff
        cdef int64_t i
        cdef double r
        if self._jitter == _J_DECORRELATED:
            r = self.rng.random()
            b = fmin(self.max_backoff, self.backoff + r * (fmax(3.0 * previous, self.backoff) - self.backoff))
            return b
        for i in range(retry - 1):
            b *= self.multiplier
            if b >= self.max_backoff:
                break
        b = fmin(b, self.max_backoff)
        if self._jitter == _J_FULL:
            return self.rng.random() * b
        if self._jitter == _J_EQUAL:
            return b / 2 + self.rng.random() * b / 2
        return b

    cdef double _plan(self, int64_t attempt, double start, double* previous) except -2.0:
        # After attempt `attempt` failed: the sleep before the next one, or -1.0
        # to give up (attempts, budget or deadline).
        cdef double now, pause
        if attempt >= self.attempts:
            return -1.0
        pause = self._next_sleep(attempt, previous[0])
        if self._timed:
            now = self._now()
            if now + pause >= start + self.deadline:
                return -1.0
            if self.budget is not None and not self.budget.withdraw(now):
                return -1.0
        previous[0] = pause
        self.retries += 1
        return pause

    cdef bint _retryable(self, object exc) except -1:
        return isinstance(exc, self.retry_on) and isinstance(exc, Exception)

    cdef object _sync_loop(self, object fn, PyObject** args, Py_ssize_t nargs, PyObject* kwnames,
                           double start, object exc, object result):
        # Attempt 1 failed (exc) or returned a result to retry (result).
        cdef int64_t attempt = 1
        cdef double previous = self.backoff
        cdef double pause
        while True:
            pause = self._plan(attempt, start, &previous)
            if pause < 0:
                self.gave_up += 1
                if exc is not None:
                    raise exc
                return result
            if pause > 0:
                self.sleep(pause)
            attempt += 1
            if self.budget is not None:
                self.budget.deposit(self._now())
            try:
                result = PyObject_Vectorcall(fn, args, nargs, kwnames)
            except BaseException as e:
                if not self._retryable(e):
                    raise
                exc = e
                continue
            exc = None
            if self.retry_if_result is None or not self.retry_if_result(result):
                return result

    async def _async_loop(self, object fn, tuple args, dict kwargs, object first, double start):
        cdef int64_t attempt = 1
        cdef double previous = self.backoff
        cdef double pause
        exc = None
        result = None
        try:
            result = await first
            if self.retry_if_result is None or not self.retry_if_result(result):
                return result
        except BaseException as e:
            if not self._retryable(e):
                raise
            exc = e
        while True:
            pause = self._plan(attempt, start, &previous)
            if pause < 0:
                self.gave_up += 1
                if exc is not None:
                    raise exc
                return result
            if pause > 0:
                await self.async_sleep(pause)
            attempt += 1
            if self.budget is not None:
                self.budget.deposit(self._now())
            try:
                result = await fn(*args, **kwargs)
            except BaseException as e:
                if not self._retryable(e):
                    raise
                exc = e
                continue
            exc = None
            if self.retry_if_result is None or not self.retry_if_result(result):
                return result

    def __call__(self, fn):
        """Decorate ``fn`` (plain or ``async def``) so every call goes through ``call``."""
        if not callable(fn):
            raise TypeError(f"Retry decorates callables, not {type(fn).__name__}")
        if inspect.iscoroutinefunction(fn):
            call = self.call

            @cython.binding(True)
            async def retried_async(*args, **kwargs):
                return await call(fn, *args, **kwargs)
            return functools.wraps(fn)(retried_async)
        return functools.wraps(fn)(_Retried(self, fn))

    def metrics(self):
        """A dict of lifetime counts: ``calls``, ``retries`` (extra attempts made),
        ``gave_up`` (calls that ran out of attempts, deadline or budget)."""
        return {"calls": self.calls, "retries": self.retries, "gave_up": self.gave_up}

    def __repr__(self):
        return (f"Retry(attempts={self.attempts}, backoff={self.backoff}, "
                f"jitter={self.jitter!r}, deadline={self.deadline})")


cdef object _retry_call(Retry r, object fn, PyObject** args, Py_ssize_t nargs, PyObject* kwnames):
    cdef double start = NAN
    cdef Py_ssize_t i
    r.calls += 1
    if r._timed:
        start = r._now()
        if r.budget is not None:
            r.budget.deposit(start)
    try:
        result = PyObject_Vectorcall(fn, args, nargs, kwnames)
    except BaseException as exc:
        if not r._retryable(exc):
            raise
        return r._sync_loop(fn, args, nargs, kwnames, start, exc, None)
    if type(result) is CoroutineType:
        pos = tuple([<object>args[i] for i in range(nargs)])
        kw = {}
        if kwnames is not NULL:
            names = <tuple><object>kwnames
            for i in range(len(names)):
                kw[names[i]] = <object>args[nargs + i]
        return r._async_loop(fn, pos, kw, result, start)
    if r.retry_if_result is not None and r.retry_if_result(result):
        return r._sync_loop(fn, args, nargs, kwnames, start, None, result)
    return result


cdef object _call_vector(object self, PyObject** args, Py_ssize_t nargs, PyObject* kwnames):
    if nargs < 1:
        raise TypeError("Retry.call() missing the function to call")
    return _retry_call(<Retry>self, <object>args[0], args + 1, nargs - 1, kwnames)


cdef PyMethodDef _CALL_DEF
_CALL_DEF.ml_name = "call"
_CALL_DEF.ml_meth = <PyCFunction><void*>_call_vector
_CALL_DEF.ml_flags = METH_FASTCALL | METH_KEYWORDS
_CALL_DEF.ml_doc = (
    b"call($self, fn, /, *args, **kwargs)\n--\n\n"
    b"Call ``fn(*args, **kwargs)``, retrying as configured; return its result.\n\n"
    b"For an ``async`` function it returns an awaitable running the retries.")
if _install_method(<PyTypeObject*>Retry, PyDescr_NewMethod(<PyTypeObject*>Retry, &_CALL_DEF)) < 0:
    raise ImportError("faultkit._retry: could not install Retry.call")


cdef class _Retried:
    """A function decorated by a Retry (a C-level callable: vectorcall)."""
    cdef void* vectorcall
    cdef readonly Retry retry
    cdef readonly object fn
    cdef dict __dict__

    def __cinit__(self, Retry retry, fn):
        self.vectorcall = <void*>_retried_vector
        self.retry = retry
        self.fn = fn

    def __call__(self, *args, **kwargs):
        return self.retry.call(self.fn, *args, **kwargs)

    def __get__(self, obj, objtype):
        return self if obj is None else MethodType(self, obj)

    def __repr__(self):
        return f"<retried {self.fn!r}>"


cdef object _retried_vector(object self, PyObject** args, size_t nargsf, PyObject* kwnames):
    cdef _Retried g = <_Retried>self
    return _retry_call(g.retry, g.fn, args, PyVectorcall_NARGS(nargsf), kwnames)


cdef _Retried _probe = _Retried.__new__(_Retried, Retry(), None)
_enable_vectorcall(<PyTypeObject*>_Retried, <char*>&_probe.vectorcall - <char*><PyObject*>_probe)
_probe = None
