# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
# binding=False (setup.py): the decorator of a plain function is a _Guard object
# (C-level vectorcall), not a closure; only the async decorator is a closure.
"""Circuit breaker: resilience4j's state machine in C++ (csrc/faultkit/breaker.h),
called from Python with the state check and the counting inline.

Thread safety without a lock: every read-modify-write of the breaker's state is
one call into the C++ core (or a few calls with no Python code between them)
made with the GIL held.  CPython switches threads only between bytecodes or
when code releases the GIL, and none of these sections runs Python code, frees
a Python object or releases the GIL, so each is atomic: concurrent calls never
corrupt the counts.  The clock, the protected function, listeners and fallbacks
run outside these sections, and no lock is held while the protected call runs.
This module does not declare itself free-threading compatible, so a
free-threaded CPython re-enables the GIL when it imports it.
"""
cimport cython
from libc.math cimport NAN, INFINITY, isfinite, isnan
from libc.stdint cimport int64_t, uint64_t
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
    /* Put a method descriptor into a (static, Cython-made) type's dict.  The
       type is not yet in use when this runs: module initialisation. */
    static int faultkit_install_method(PyTypeObject* type, PyObject* descr) {
        const char* name = ((PyMethodDescrObject*)descr)->d_method->ml_name;
        if (PyDict_SetItemString(type->tp_dict, name, descr) < 0) return -1;
        PyType_Modified(type);
        return 0;
    }
    """
    int _install_method "faultkit_install_method"(PyTypeObject* type, object descr) except -1

cdef extern from *:
    """
    /* Make instances of a (static, Cython-made) type callable through the
       vectorcall protocol: the function pointer sits `offset` bytes into each
       instance.  Runs at module initialisation, before any instance is called. */
    static int faultkit_enable_vectorcall(PyTypeObject* type, Py_ssize_t offset) {
        type->tp_vectorcall_offset = offset;
        type->tp_flags |= Py_TPFLAGS_HAVE_VECTORCALL;
        PyType_Modified(type);
        return 0;
    }
    """
    int _enable_vectorcall "faultkit_enable_vectorcall"(PyTypeObject* type, Py_ssize_t offset) except -1

cdef extern from *:
    """
    /* am_send of an always-done awaitable: `await` gets the object stored
       `offset` bytes into the instance, with no StopIteration raised (the
       interpreter's SEND goes through PyIter_Send, which prefers am_send). */
    static Py_ssize_t faultkit_ready_offset = 0;
#if PY_VERSION_HEX >= 0x030A0000  /* am_send is 3.10+; 3.9 awaits through __next__ */
    static PySendResult faultkit_ready_send(PyObject* iter, PyObject* arg, PyObject** result) {
        PyObject* v = *(PyObject**)((char*)iter + faultkit_ready_offset);
        (void)arg;
        Py_INCREF(v);
        *result = v;
        return PYGEN_RETURN;
    }
#endif
    static int faultkit_enable_send(PyTypeObject* type, Py_ssize_t offset) {
        if (type->tp_as_async == NULL) {
            PyErr_SetString(PyExc_ImportError, "faultkit: awaitable type without tp_as_async");
            return -1;
        }
        faultkit_ready_offset = offset;
#if PY_VERSION_HEX >= 0x030A0000
        type->tp_as_async->am_send = faultkit_ready_send;
        PyType_Modified(type);
#endif
        return 0;
    }
    """
    int _enable_send "faultkit_enable_send"(PyTypeObject* type, Py_ssize_t offset) except -1

from faultkit.contain.cbreaker cimport (
    Breaker, BreakerConfig, BreakerCounts, BreakerLifetime, BREAKER_CLOSED, BREAKER_OPEN,
    BREAKER_HALF_OPEN, BREAKER_MAX_COUNT_WINDOW, BREAKER_MAX_TIME_WINDOW,
    BREAKER_MAX_HALF_OPEN_CALLS,
)

import contextvars
import functools
import inspect
import logging
import time
from asyncio import CancelledError
from types import CoroutineType, MethodType

from faultkit.contain.timelimit import TIME_LIMIT_MESSAGE as _TIME_LIMIT_MESSAGE
from faultkit.errors import CircuitOpenError

_STATES = ("closed", "open", "half_open")
_TIMEOUT_OUTCOMES = ("failure", "slow", "ignore")
DEF _TIMEOUT_FAILURE = 0
DEF _TIMEOUT_SLOW = 1
DEF _TIMEOUT_IGNORE = 2
_log = logging.getLogger("faultkit.contain")


cdef int64_t _positive_int(object value, str name, int64_t cap) except -1:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, not {type(value).__name__}")
    if value < 1 or value > cap:
        raise ValueError(f"{name} must be in [1, {cap}], got {value!r}")
    return value


cdef double _number(object value, str name) except? -1.0:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number, not {type(value).__name__}")
    return float(value)


cdef double _rate(object value, str name) except? -1.0:
    cdef double v = _number(value, name)
    if not (v > 0.0 and v <= 1.0):
        raise ValueError(f"{name} must be in (0, 1], got {value!r}")
    return v


cdef class CircuitBreaker:
    """A circuit breaker: cuts calls to a failing dependency off before they pile up.

    resilience4j's model and defaults, except ``minimum_calls=10`` (resilience4j:
    100) so a small service trips within seconds.  **closed**: calls run and
    their outcomes fill a sliding window, the last ``window_size`` calls
    (``window_type="count"``) or the calls of the last ``window_size`` whole
    seconds (``"time"``, one bucket a second).  Once it holds ``minimum_calls``
    outcomes (for a count window, at most ``window_size``), a failure share
    ``>= failure_rate`` (default 0.5) or a slow-call share ``>= slow_call_rate``
    (default 1.0) **opens** it: calls fail fast with ``CircuitOpenError`` (or
    return ``fallback(*args, **kwargs)``) for ``reset_timeout`` seconds
    (default 60, resilience4j's waitDurationInOpenState).  The next call after
    that moves it to **half-open**: ``half_open_calls`` (default 10) trial calls
    run, the rest are refused; when all trials are in, it opens again if their
    failure or slow share is at the threshold, else closes with a fresh window.
    A half-open state that has not decided within ``max_half_open_wait``
    seconds (default 60; None: forever; resilience4j's
    maxWaitDurationInHalfOpenState, whose default is forever) opens again, so
    an old trial outcome is never combined with one taken much later.  The
    time-driven transitions (open -> half-open, half-open -> open) happen on the
    next call *or read* of ``state``, ``time_until_half_open`` or
    ``metrics()``, and listeners hear of them then: a router that stops calling
    an open node sees it half-open by reading ``state``.

    Time limits: a call cut off by a time limit counts as ``timeout_outcome``:
    ``"failure"`` (default), ``"slow"`` (a slow success) or ``"ignore"``.  It is
    recognised as a ``TimeoutError`` raised by the call, or, for coroutines, as
    the ``CancelledError`` that :class:`faultkit.TimeLimiter` cancels with (its
    message is ``faultkit.contain.timelimit.TIME_LIMIT_MESSAGE``).  Any other
    cancellation is the caller's own and counts as nothing.  Plain
    ``asyncio.wait_for``/``asyncio.timeout`` cancel without saying why, so
    under them a timeout cannot be told from a caller's cancel and counts as
    nothing: put ``fk.TimeLimiter`` inside the breaker instead
    (``breaker.call(limiter.call, coro_fn)``, or see ``faultkit.contain.stack``).

    A call fails when it raises an ``Exception`` that is not an instance of
    ``exclude``; excluded exceptions and ``BaseException``\\s such as
    cancellation count as nothing (a half-open trial permit is returned).  A
    call is slow when it takes strictly more than ``slow_call_duration``
    seconds (default None: never).  Outcomes of calls that started before the
    breaker last changed state are dropped.  ``clock`` (default
    ``time.monotonic``) returns seconds; it is read only when the breaker is
    not closed, on failures, and around every call when slow calls or a time
    window need it.  No lock is held while the protected call runs.

    Use it as ``breaker.call(fn, *args, **kwargs)``, as a decorator (sync or
    ``async def``), as ``with breaker:`` / ``async with breaker:``, or
    ``await breaker.call(async_fn)``.  ``add_listener(fn)`` registers
    ``fn(breaker, old_state, new_state)`` for every transition.
    """

    cdef Breaker core
    cdef readonly object clock
    cdef readonly object fallback
    cdef readonly tuple exclude
    cdef readonly str window_type
    cdef object _slow_call_duration
    cdef bint _timed          # read the clock around every call
    cdef tuple _listeners
    cdef object _frames       # ContextVar: stack of (generation, start, next) for `with`
    cdef int _timeout_outcome
    # `with` blocks of an untimed breaker keep no per-block state: counts of
    # open blocks entered in generation _with_gen (current) and before (stale).
    cdef uint64_t _with_gen
    cdef int64_t _with_current
    cdef int64_t _with_stale
    cdef object _ready_self   # a _Ready(self): what `async with` enters with

    def __init__(self, *, failure_rate=0.5, minimum_calls=10, window_size=100,
                 window_type="count", slow_call_duration=None, slow_call_rate=1.0,
                 reset_timeout=60.0, half_open_calls=10, max_half_open_wait=60.0,
                 timeout_outcome="failure", exclude=(), fallback=None,
                 clock=time.monotonic):
        cdef BreakerConfig c
        if window_type not in ("count", "time"):
            raise ValueError(f'window_type must be "count" or "time", got {window_type!r}')
        c.time_window = window_type == "time"
        c.failure_rate = _rate(failure_rate, "failure_rate")
        c.slow_call_rate = _rate(slow_call_rate, "slow_call_rate")
        c.minimum_calls = _positive_int(minimum_calls, "minimum_calls", 2**62)
        c.window_size = _positive_int(
            window_size, "window_size",
            BREAKER_MAX_TIME_WINDOW if c.time_window else BREAKER_MAX_COUNT_WINDOW)
        c.half_open_calls = _positive_int(half_open_calls, "half_open_calls",
                                          BREAKER_MAX_HALF_OPEN_CALLS)
        c.reset_timeout = _number(reset_timeout, "reset_timeout")
        if not (c.reset_timeout >= 0.0 and isfinite(c.reset_timeout)):
            raise ValueError(f"reset_timeout must be a finite number >= 0, got {reset_timeout!r}")
        if slow_call_duration is None:
            c.slow_call_duration = INFINITY
        else:
            c.slow_call_duration = _number(slow_call_duration, "slow_call_duration")
            if not (c.slow_call_duration > 0.0):
                raise ValueError(
                    f"slow_call_duration must be > 0 or None, got {slow_call_duration!r}")
        if max_half_open_wait is None:
            c.max_half_open_wait = INFINITY
        else:
            c.max_half_open_wait = _number(max_half_open_wait, "max_half_open_wait")
            if not (c.max_half_open_wait > 0.0):
                raise ValueError(
                    f"max_half_open_wait must be > 0 or None, got {max_half_open_wait!r}")
        if timeout_outcome not in _TIMEOUT_OUTCOMES:
            raise ValueError(f'timeout_outcome must be "failure", "slow" or "ignore", '
                             f'got {timeout_outcome!r}')
        if isinstance(exclude, type):
            exclude = (exclude,)
        try:
            exclude = tuple(exclude)
        except TypeError:
            raise TypeError(
                f"exclude must be an exception class or an iterable of them, not "
                f"{type(exclude).__name__}") from None
        for e in exclude:
            if not (isinstance(e, type) and issubclass(e, BaseException)):
                raise TypeError(f"exclude must hold exception classes, got {e!r}")
        if fallback is not None and not callable(fallback):
            raise TypeError(f"fallback must be callable or None, not {type(fallback).__name__}")
        if not callable(clock):
            raise TypeError(f"clock must be callable, not {type(clock).__name__}")
        if not self.core.configure(c):  # unreachable after the checks above
            raise ValueError("invalid circuit breaker configuration")
        self.clock = clock
        self.fallback = fallback
        self.exclude = exclude
        self.window_type = window_type
        self._slow_call_duration = slow_call_duration
        self._timed = c.time_window or slow_call_duration is not None
        self._timeout_outcome = _TIMEOUT_OUTCOMES.index(timeout_outcome)
        self._listeners = ()
        self._frames = contextvars.ContextVar("faultkit.breaker.frames", default=None)

    # -- the per-call path -------------------------------------------------
    # ``call`` is _call_vector below, installed as a METH_FASTCALL method: it
    # passes its own argument vector on to ``fn`` (PyObject_Vectorcall), so a
    # call through the breaker allocates no tuple and no dict.  A ``def
    # call(self, fn, *args, **kwargs)`` builds both and costs twice as much.

    cdef object _call_checked(self, object fn, PyObject** args, Py_ssize_t nargs,
                              PyObject* kwnames):
        cdef uint64_t gen
        cdef double start = NAN
        cdef double now = self._now()
        cdef bint permitted
        self._advance(now)
        permitted = self.core.acquire()
        gen = self.core.generation()
        if not permitted:
            return self._rejected(fn, args, nargs, kwnames)
        if self._timed:
            start = now
        try:
            result = PyObject_Vectorcall(fn, args, nargs, kwnames)
        except BaseException as exc:
            self._failed(exc, gen, start)
            raise
        if type(result) is CoroutineType:
            return _await_outcome(self, result, gen, start)
        self._succeeded(gen, start)
        return result

    cdef int _succeeded(self, uint64_t gen, double start) except -1:
        cdef double now = NAN
        cdef double duration = 0.0
        cdef int old, moved
        if self._timed:
            now = self._now()
            if not isnan(start):
                duration = now - start
        old = self.core.state()
        moved = self.core.record(gen, now, False, duration)
        if moved >= 0:
            self._moved(old, moved)
        return 0

    cdef int _failed(self, object exc, uint64_t gen, double start) except -1:
        cdef double now, duration = 0.0
        cdef int old, moved
        cdef bint failed = True
        if _is_time_limit(exc):
            if self._timeout_outcome == _TIMEOUT_IGNORE:
                self.core.release(gen)
                return 0
            if self._timeout_outcome == _TIMEOUT_SLOW:
                failed = False
                duration = INFINITY
        elif not isinstance(exc, Exception) or (self.exclude and isinstance(exc, self.exclude)):
            self.core.release(gen)
            return 0
        now = self._now()
        if not isnan(start) and duration == 0.0:
            duration = now - start
        old = self.core.state()
        moved = self.core.record(gen, now, failed, duration)
        if moved >= 0:
            self._moved(old, moved)
        return 0

    cdef int _moved(self, int old, int moved) except -1:
        # An opening recorded without a time (fast path): stamp it now.  The
        # generation pins the stamp to this opening if another thread moves on.
        cdef uint64_t gen
        if moved == BREAKER_OPEN and self.core.retry_pending():
            gen = self.core.generation()
            self.core.set_opened_at(gen, self._now())
        self._notify(old, moved)
        return 0

    cdef int _advance(self, double now) except -1:
        # The time-driven transitions, each heard by the listeners.
        cdef int old = self.core.state()
        cdef int moved = self.core.advance(now)
        while moved >= 0:
            self._notify(old, moved)
            old = moved
            moved = self.core.advance(now)
        return 0

    cdef int _refresh(self) except -1:
        # A read of the state: apply what the clock says, if anything can move.
        if self.core.state() != BREAKER_CLOSED:
            self._advance(self._now())
        return 0

    cdef double _now(self) except? -1.0:
        cdef double now = _number(self.clock(), "the clock's value")
        if isnan(now):
            raise ValueError("the clock returned NaN")
        return now

    cdef object _rejected(self, object fn, PyObject** args, Py_ssize_t nargs,
                          PyObject* kwnames):
        if self.fallback is None:
            raise self._open_error()
        result = PyObject_Vectorcall(self.fallback, args, nargs, kwnames)
        if inspect.iscoroutinefunction(fn) and not inspect.isawaitable(result):
            return _ready(result)
        return result

    cdef object _open_error(self):
        if self.core.state() == BREAKER_HALF_OPEN:
            msg = (f"circuit breaker is half-open and all "
                   f"{self.core.config().half_open_calls} trial calls are taken")
        else:
            msg = f"circuit breaker is open; half-open in {self.time_until_half_open:.3f} s"
        err = CircuitOpenError(msg)
        err.breaker = self
        return err

    cdef int _notify(self, int old, int new) except -1:
        cdef object listener
        for listener in self._listeners:
            try:
                listener(self, _STATES[old], _STATES[new])
            except Exception:
                _log.exception("circuit breaker listener %r failed", listener)
        return 0

    # -- decorator and context manager -------------------------------------
    def __call__(self, fn):
        """Decorate ``fn`` (a plain or ``async def`` function) so every call goes through the breaker."""
        if not callable(fn):
            raise TypeError(f"the breaker decorates callables, not {type(fn).__name__}")
        if inspect.iscoroutinefunction(fn):
            call = self.call

            @cython.binding(True)  # a cyfunction: functools.wraps can rename it
            async def guarded_async(*args, **kwargs):
                return await call(fn, *args, **kwargs)
            return functools.wraps(fn)(guarded_async)
        # A C-level callable (vectorcall): as cheap as ``call`` itself.
        return functools.wraps(fn)(_Guard(self, fn))

    # A breaker with slow calls or a time window needs each block's start time
    # and keeps a stack of (generation, start) frames in a ContextVar.  An
    # untimed breaker keeps none: it counts the open blocks entered in the
    # current generation and in earlier ones.  A block that exits while
    # earlier-generation blocks are open is taken to be one of them (its
    # outcome is dropped, as a call that straddles a transition is): exact
    # counts, at the cost of not telling apart, during a transition, which of
    # the open blocks straddled it.

    cdef inline void _with_sync(self):
        cdef uint64_t gen = self.core.generation()
        if gen != self._with_gen:
            self._with_stale += self._with_current
            self._with_current = 0
            self._with_gen = gen

    cdef int _enter(self) except -1:
        cdef double now = NAN
        cdef uint64_t gen
        if self.core.state() != BREAKER_CLOSED or self._timed:
            now = self._now()
            self._advance(now)
            if not self.core.acquire():
                raise self._open_error()
        gen = self.core.generation()
        if self._timed:
            self._frames.set((gen, now, self._frames.get()))
        else:
            self._with_sync()
            self._with_current += 1
        return 0

    cdef int _exit(self, object exc_type, object exc) except -1:
        cdef uint64_t gen
        cdef double start = NAN
        if self._timed:
            frame = self._frames.get()
            if frame is None:
                raise RuntimeError("CircuitBreaker.__exit__ without a matching __enter__")
            self._frames.set(frame[2])
            gen = frame[0]
            start = frame[1]
        else:
            self._with_sync()
            if self._with_stale > 0:
                self._with_stale -= 1
                gen = self.core.generation() - 1   # dropped by the core: not current
            elif self._with_current > 0:
                self._with_current -= 1
                gen = self._with_gen
            else:
                raise RuntimeError("CircuitBreaker.__exit__ without a matching __enter__")
        if exc_type is None:
            self._succeeded(gen, start)
        else:
            self._failed(exc if exc is not None else exc_type(), gen, start)
        return 0

    def __enter__(self):
        """Take a permit (``CircuitOpenError`` if refused); the block is the protected call."""
        self._enter()
        return self

    def __exit__(self, exc_type, exc, tb):
        """Count the block's outcome; never suppresses its exception."""
        self._exit(exc_type, exc)
        return False

    def __aenter__(self):
        """``async with``: as ``__enter__``, returning a ready awaitable."""
        self._enter()
        if self._ready_self is None:
            self._ready_self = _Ready.__new__(_Ready, self)
        return self._ready_self

    def __aexit__(self, exc_type, exc, tb):
        """``async with``: as ``__exit__``, returning a ready awaitable."""
        self._exit(exc_type, exc)
        return _READY_FALSE

    # -- state, metrics, listeners, manual transitions ---------------------
    @property
    def state(self):
        """``"closed"``, ``"open"`` or ``"half_open"``, after applying the
        time-driven transitions (reading it may move open -> half-open or a
        stale half-open -> open, and call the listeners)."""
        self._refresh()
        return _STATES[self.core.state()]

    @property
    def time_until_half_open(self):
        """Seconds until the open breaker moves to half-open; 0.0 unless open."""
        self._refresh()
        if self.core.state() != BREAKER_OPEN:
            return 0.0
        if self.core.retry_pending():
            return self.core.config().reset_timeout
        return max(0.0, self.core.retry_at() - self._now())

    def metrics(self):
        """A dict: ``state``; ``calls``, ``failed``, ``slow`` in the window the state
        evaluates (the trial calls when half-open, the window that opened it
        when open); ``failure_rate`` and ``slow_call_rate`` over it (None below
        ``minimum_calls``); ``not_permitted`` (refused calls since the last
        reset); ``lifetime``, counters since construction that ``reset()``
        keeps: ``calls`` (outcomes reported), ``failures``, ``slow``,
        ``ignored`` (excluded exceptions, caller cancellations), ``rejections``
        and ``transitions``."""
        self._refresh()
        cdef BreakerCounts c = self.core.counts()
        cdef BreakerLifetime life = self.core.lifetime()
        cdef int64_t needed = (self.core.config().half_open_calls
                               if self.core.state() == BREAKER_HALF_OPEN
                               else self.core.minimum_calls())
        enough = c.total >= needed and c.total > 0
        return {
            "state": _STATES[self.core.state()],
            "calls": c.total,
            "failed": c.failed,
            "slow": c.slow,
            "failure_rate": <double>c.failed / <double>c.total if enough else None,
            "slow_call_rate": <double>c.slow / <double>c.total if enough else None,
            "not_permitted": self.core.not_permitted(),
            "lifetime": {
                "calls": life.calls,
                "failures": life.failures,
                "slow": life.slow,
                "ignored": life.ignored,
                "rejections": life.rejections,
                "transitions": life.transitions,
            },
        }

    def add_listener(self, listener):
        """Call ``listener(breaker, old_state, new_state)`` on every transition.

        Listeners run after the transition, outside any critical section;
        an exception in one is logged (logger ``faultkit.contain``) and does
        not reach the call that caused the transition.
        """
        if not callable(listener):
            raise TypeError(f"listener must be callable, not {type(listener).__name__}")
        self._listeners = self._listeners + (listener,)

    def remove_listener(self, listener):
        """Stop calling ``listener``; ``ValueError`` if it was not added."""
        items = list(self._listeners)
        try:
            items.remove(listener)
        except ValueError:
            raise ValueError(f"{listener!r} is not a listener of this breaker") from None
        self._listeners = tuple(items)

    def open(self):
        """Open the breaker now (as a failure-rate trip would), whatever its state."""
        cdef int old = self.core.state()
        cdef double now = self._now()
        cdef int moved = self.core.force_open(now)
        if moved >= 0:
            self._notify(old, moved)

    def reset(self):
        """Close the breaker with an empty window and zero counters."""
        cdef int old = self.core.state()
        cdef int moved = self.core.reset()
        if moved >= 0:
            self._notify(old, moved)

    def __repr__(self):
        return (f"CircuitBreaker(state={self.state!r}, window_type={self.window_type!r}, "
                f"window_size={self.core.config().window_size})")


cdef inline bint _is_time_limit(object exc):
    # A TimeoutError, or the CancelledError a faultkit TimeLimiter cancels with.
    if isinstance(exc, TimeoutError):
        return True
    if type(exc) is CancelledError or isinstance(exc, CancelledError):
        args = (<BaseException>exc).args
        return len(args) == 1 and args[0] == _TIME_LIMIT_MESSAGE
    return False


cdef object _call_vector(object self, PyObject** args, Py_ssize_t nargs, PyObject* kwnames):
    # The C signature of METH_FASTCALL | METH_KEYWORDS; `self` is a
    # CircuitBreaker (the method descriptor checks).  nargs has no flag bits.
    if nargs < 1:
        raise TypeError("CircuitBreaker.call() missing the function to call")
    return _guarded_call(<CircuitBreaker>self, <object>args[0], args + 1, nargs - 1, kwnames)


cdef inline object _guarded_call(CircuitBreaker b, object fn, PyObject** args,
                                 Py_ssize_t nargs, PyObject* kwnames):
    cdef uint64_t gen
    if b.core.state() != BREAKER_CLOSED or b._timed:
        return b._call_checked(fn, args, nargs, kwnames)
    # Fast path: closed, count window, no slow calls: no clock read.
    gen = b.core.generation()
    try:
        result = PyObject_Vectorcall(fn, args, nargs, kwnames)
    except BaseException as exc:
        b._failed(exc, gen, NAN)
        raise
    if type(result) is CoroutineType:
        return _await_outcome(b, result, gen, NAN)
    b._succeeded(gen, NAN)
    return result


cdef PyMethodDef _CALL_DEF
_CALL_DEF.ml_name = "call"
_CALL_DEF.ml_meth = <PyCFunction><void*>_call_vector
_CALL_DEF.ml_flags = METH_FASTCALL | METH_KEYWORDS
_CALL_DEF.ml_doc = (
    b"call($self, fn, /, *args, **kwargs)\n--\n\n"
    b"Run ``fn(*args, **kwargs)`` under the breaker and return its result.\n\n"
    b"Raises ``CircuitOpenError`` (or returns ``fallback(*args, **kwargs)``)\n"
    b"when the call is not permitted; re-raises whatever ``fn`` raises after\n"
    b"counting it.  For an ``async`` function it returns an awaitable that\n"
    b"counts the outcome when awaited.")
if _install_method(<PyTypeObject*>CircuitBreaker, PyDescr_NewMethod(
        <PyTypeObject*>CircuitBreaker, &_CALL_DEF)) < 0:
    raise ImportError("faultkit.contain._breaker: could not install CircuitBreaker.call")


cdef class _Ready:
    """An awaitable that is already done: ``await`` returns ``value`` at once
    (cheaper than a coroutine for ``async with``'s enter and exit)."""
    cdef PyObject* raw        # = value, for am_send (a borrowed pointer)
    cdef object value

    def __cinit__(self, value):
        self.value = value
        self.raw = <PyObject*>value

    def __await__(self):
        return self

    def __iter__(self):
        return self

    def __next__(self):
        raise StopIteration(self.value)

    def send(self, value):
        raise StopIteration(self.value)

    def throw(self, typ, val=None, tb=None):
        if val is None:
            raise typ
        raise val

    def close(self):
        pass


cdef _Ready _READY_FALSE = _Ready.__new__(_Ready, False)
_enable_send(<PyTypeObject*>_Ready, <char*>&_READY_FALSE.raw - <char*><PyObject*>_READY_FALSE)


cdef class _Guard:
    """A function decorated by a CircuitBreaker: calling it is ``breaker.call(fn, ...)``.

    A C-level callable (vectorcall), so the decorator costs what ``call`` costs;
    ``functools.wraps`` copies the function's name and docstring into its
    ``__dict__``; it binds as a method like a function does.
    """
    cdef void* vectorcall        # the vectorcallfunc slot (tp_vectorcall_offset)
    cdef readonly CircuitBreaker breaker
    cdef readonly object fn
    cdef dict __dict__

    def __cinit__(self, CircuitBreaker breaker, fn):
        self.vectorcall = <void*>_guard_vector
        self.breaker = breaker
        self.fn = fn

    def __call__(self, *args, **kwargs):
        # tp_call, for callers that do not use vectorcall.
        return self.breaker.call(self.fn, *args, **kwargs)

    def __get__(self, obj, objtype):
        return self if obj is None else MethodType(self, obj)

    def __repr__(self):
        return f"<breaker-guarded {self.fn!r}>"


cdef object _guard_vector(object self, PyObject** args, size_t nargsf, PyObject* kwnames):
    cdef _Guard g = <_Guard>self
    return _guarded_call(g.breaker, g.fn, args, PyVectorcall_NARGS(nargsf), kwnames)


cdef _Guard _probe = _Guard.__new__(_Guard, CircuitBreaker(), None)
_enable_vectorcall(<PyTypeObject*>_Guard,
                   <char*>&_probe.vectorcall - <char*><PyObject*>_probe)
_probe = None


async def _await_outcome(CircuitBreaker breaker, object coro, uint64_t gen, double start):
    try:
        result = await coro
    except BaseException as exc:
        breaker._failed(exc, gen, start)
        raise
    breaker._succeeded(gen, start)
    return result


async def _ready(value):
    return value
