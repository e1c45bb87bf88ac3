"""Heartbeat failure detectors over arrays: fixed timeout and phi accrual.

Components send heartbeats; a detector turns their silence into states,
``"alive" -> "suspect" -> "dead"``, and back to ``"alive"`` on the next
heartbeat.  Both detectors keep every component in one native table
(``csrc/faultkit/detect/heartbeat.h``): at each heartbeat the table precomputes the
times at which the component will cross its suspect and dead thresholds, so
:meth:`~TimeoutDetector.scan` is a pass over deadlines - and over a per-block
lower bound of those deadlines (blocks of 256 components), so a scan in which
nothing expires reads 8 bytes per 256 components.

Times are float seconds from ``clock`` (default :func:`time.monotonic`); every
method that needs the time takes ``now=None`` and reads the clock only when it
is not given, so tests replay interval lists without sleeping.

A component is monitored from its first heartbeat: before it, it reads
``"alive"`` with phi 0, as in Akka ("treat unmanaged connections ... as
healthy").

Memory per component in the native table (plus the name <-> id dict in
Python, ~100-200 bytes a name): ``TimeoutDetector`` 17 bytes; phi accrual
33 bytes with ``estimator="ewma"`` (a 32-byte record holding all a heartbeat
touches - last heartbeat, mean, variance, incarnation -, half a cache line,
plus a state byte), and with the exact window (Akka's) 65 bytes (a 64-byte
record) + 8 bytes per stored interval (at most ``max_sample_size``; the
window grows only as intervals arrive, by doubling).  The deadlines are not
stored: they follow from the last heartbeat and the statistics.
"""
from __future__ import annotations

import math
import time
from typing import Any, Callable, Hashable, Iterable, NamedTuple, Optional

import numpy as np

from faultkit.detect import _table as _detect

__all__ = [
    "Event",
    "TimeoutDetector",
    "PhiAccrualDetector",
    "ALIVE",
    "SUSPECT",
    "DEAD",
]

ALIVE, SUSPECT, DEAD = "alive", "suspect", "dead"

# Akka Cluster's defaults (akka-cluster reference.conf,
# akka.cluster.failure-detector), in seconds.
AKKA_THRESHOLD = 8.0
AKKA_MAX_SAMPLE_SIZE = 1000
AKKA_MIN_STD_DEVIATION = 0.1          # min-std-deviation = 100 ms
AKKA_ACCEPTABLE_HEARTBEAT_PAUSE = 3.0  # acceptable-heartbeat-pause = 3 s
AKKA_FIRST_HEARTBEAT_ESTIMATE = 1.0    # heartbeat-interval = 1 s

# The seed's semantics: dead after 5 s of silence.
DEFAULT_TIMEOUT = 5.0


class Event(NamedTuple):
    """A state change: component ``name`` went from ``old`` to ``new`` at time ``at``.

    ``at`` is the threshold crossing time for ``suspect``/``dead`` (not the
    scan's time, which is later) and the heartbeat's time for a recovery.
    """

    name: Hashable
    old: str
    new: str
    at: float


def _finite(name: str, value: Any, *, positive: bool = False, allow_zero: bool = True) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number, not {type(value).__name__}")
    v = float(value)
    if not math.isfinite(v) or v < 0 or (not allow_zero and v == 0):
        want = "> 0" if not allow_zero else ">= 0"
        raise ValueError(f"{name} must be finite and {want}, got {value!r}")
    return v


class _Detector:
    """The scan API shared by both detectors (names <-> ids, clock, listeners)."""

    def __init__(self, table: _detect.HeartbeatTable, clock: Callable[[], float]) -> None:
        if not callable(clock):
            raise TypeError(f"clock must be callable, not {type(clock).__name__}")
        self._table = table
        self._clock = clock
        self._ids: dict[Hashable, int] = {}
        self._names: list[Optional[Hashable]] = []
        self._last_scan = 0.0
        self._listeners: list[Callable[[Event], Any]] = []
        # The per-call hot path: the native table looks the name up in our
        # dict itself, so a heartbeat costs one call (see heartbeat below,
        # which documents it and which this instance attribute stands in for).
        table.bind(self._ids, clock)
        self.heartbeat = table.heartbeat_name

    # ---- membership ----------------------------------------------------
    def add(self, name: Hashable) -> int:
        """Start tracking ``name``; returns its id (stable until it is removed).

        ValueError if ``name`` is already tracked.  Monitoring starts at its
        first heartbeat.  Ids of removed components are reused.
        """
        hash(name)  # TypeError for unhashable names, before touching anything
        if name in self._ids:
            raise ValueError(f"component {name!r} is already tracked (id {self._ids[name]})")
        i = self._table.add()
        if i == len(self._names):
            self._names.append(name)
        else:
            self._names[i] = name
        self._ids[name] = i
        return i

    def add_many(self, names: Iterable[Hashable]) -> np.ndarray:
        """:meth:`add` each name; returns their ids as an int64 array."""
        return np.array([self.add(n) for n in names], dtype=np.int64)

    def remove(self, name: Hashable) -> None:
        """Stop tracking ``name`` (KeyError if unknown); its pending events are dropped."""
        i = self.id(name)
        self._table.remove(i)
        del self._ids[name]
        self._names[i] = None

    def id(self, name: Hashable) -> int:
        """The id of ``name``: its index in :meth:`alive_mask` and :meth:`phi_all`."""
        try:
            return self._ids[name]
        except KeyError:
            raise KeyError(name) from None
        except TypeError:
            raise TypeError(f"component names must be hashable, not {type(name).__name__}") from None

    def name(self, id: int) -> Hashable:
        """The name of id ``id`` (IndexError if no component has it)."""
        if not isinstance(id, (int, np.integer)) or isinstance(id, bool):
            raise TypeError(f"id must be an int, not {type(id).__name__}")
        if not 0 <= id < len(self._names) or self._names[id] is None:
            raise IndexError(f"id {id} is not a component id")
        return self._names[id]

    @property
    def names(self) -> list:
        """Names of the tracked components, in id order."""
        return [n for n in self._names if n is not None]

    def __len__(self) -> int:
        return len(self._ids)

    def __contains__(self, name: object) -> bool:
        try:
            return name in self._ids
        except TypeError:
            return False

    # ---- heartbeats ----------------------------------------------------
    def heartbeat(self, name: Hashable, now: Optional[float] = None, *,
                  incarnation: Optional[int] = None) -> None:
        """Record a heartbeat from ``name`` at ``now`` (default: the clock).

        KeyError for an unknown name; ValueError for a NaN, infinite or
        negative time, or one earlier than its last heartbeat (nothing is
        recorded).  A larger ``incarnation`` than seen before means the
        component restarted: its interval statistics start afresh.
        """
        # Instances call the native method directly (bound in __init__); this
        # definition documents it and serves calls through the class.
        self._table.heartbeat_name(name, now, incarnation=incarnation)

    def heartbeat_many(self, ids: Any, times: Any) -> int:
        """Record heartbeats of many components at once (numpy arrays, GIL released).

        ``ids`` are component ids (from :meth:`add`), ``times`` their arrival
        times, applied in order.  Every entry is validated before anything is
        written: IndexError for an id that is not a component's, ValueError
        for a NaN/infinite/negative time.  A time earlier than the component's
        last heartbeat (a reordered arrival) is ignored; returns how many were.
        """
        return self._table.heartbeat_many(ids, times)

    # ---- scanning ------------------------------------------------------
    def scan(self, now: Optional[float] = None) -> list[Event]:
        """State changes since the last scan, up to ``now`` (default: the clock).

        Returns only changes: recoveries (``suspect``/``dead`` -> ``alive``,
        at their heartbeat), then threshold crossings (``alive`` ->
        ``suspect`` -> ``dead``, each at its crossing time); events of one
        component are in time order.  Each event is passed to every listener
        after the table has been updated.  ValueError if ``now`` is earlier
        than the previous scan's.
        """
        if now is None:
            now = self._clock()
        now = _finite("now", now)
        if now < self._last_scan:
            raise ValueError(f"scan time {now!r} is before the previous scan at {self._last_scan!r}")
        self._last_scan = now
        names = self._names
        events = [Event(names[i], old, new, at) for i, old, new, at in self._table.scan(now)]
        for ev in events:
            for fn in list(self._listeners):
                fn(ev)
        return events

    def state(self, name: Hashable) -> str:
        """``"alive"``, ``"suspect"`` or ``"dead"`` as of the last scan or heartbeat."""
        return self._table.state(self.id(name))

    def alive_mask(self) -> np.ndarray:
        """bool array indexed by id: True for alive components (removed ids: False)."""
        return self._table.alive_mask()

    def deadlines(self, name: Hashable) -> tuple[float, float]:
        """(suspect, dead) crossing times of ``name`` after its last heartbeat (inf before the first)."""
        return self._table.deadlines(self.id(name))

    def deadlines_all(self) -> tuple[np.ndarray, np.ndarray]:
        """(suspect, dead) crossing-time arrays indexed by id (inf for removed or unheard ids)."""
        return self._table.deadlines_all()

    def last_heartbeat(self, name: Hashable) -> Optional[float]:
        """Time of ``name``'s last heartbeat, or None before the first."""
        i = self.id(name)
        return self._table.last(i) if self._table.heard(i) else None

    def incarnation(self, name: Hashable) -> int:
        """The highest sender incarnation seen for ``name`` (0 if none was given)."""
        return self._table.incarnation(self.id(name))

    # ---- listeners -----------------------------------------------------
    @property
    def listeners(self) -> list[Callable[[Event], Any]]:
        """The callbacks :meth:`scan` calls with each event (a copy; use add/remove_listener)."""
        return list(self._listeners)

    def add_listener(self, fn: Callable[[Event], Any]) -> Callable[[Event], Any]:
        """Call ``fn(event)`` for every event a scan returns; returns ``fn`` (usable as a decorator)."""
        if not callable(fn):
            raise TypeError(f"listener must be callable, not {type(fn).__name__}")
        self._listeners.append(fn)
        return fn

    def remove_listener(self, fn: Callable[[Event], Any]) -> None:
        """Stop calling ``fn``; ValueError if it is not a listener."""
        try:
            self._listeners.remove(fn)
        except ValueError:
            raise ValueError(f"{fn!r} is not a listener") from None

    def memory_bytes(self) -> int:
        """Bytes held by the native table (capacity included; the name dict is not)."""
        return self._table.memory_bytes()


class TimeoutDetector(_Detector):
    """Dead after ``timeout`` seconds without a heartbeat; suspect after ``suspect_after``.

    ``timeout`` defaults to 5 s, the seed's fixed timeout.  ``suspect_after``
    (None: no suspect stage) must be below ``timeout``.  17 bytes per
    component in the native table.
    """

    def __init__(self, timeout: float = DEFAULT_TIMEOUT, suspect_after: Optional[float] = None, *,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.timeout = _finite("timeout", timeout, allow_zero=False)
        if suspect_after is not None:
            suspect_after = _finite("suspect_after", suspect_after, allow_zero=False)
            if suspect_after >= self.timeout:
                raise ValueError(
                    f"suspect_after ({suspect_after!r}) must be below timeout ({self.timeout!r})")
        self.suspect_after = suspect_after
        table = _detect.HeartbeatTable("timeout", timeout=self.timeout,
                                       suspect_after=suspect_after or 0.0)
        super().__init__(table, clock)

    def __repr__(self) -> str:
        return (f"TimeoutDetector(timeout={self.timeout!r}, suspect_after={self.suspect_after!r}, "
                f"components={len(self)})")


class PhiAccrualDetector(_Detector):
    """The phi accrual failure detector (Hayashibara et al. 2004) as Akka implements it.

    ``phi = -log10(1 - F(t))`` where ``t`` is the time since the last
    heartbeat and ``F`` the normal CDF with the mean (plus
    ``acceptable_heartbeat_pause``) and standard deviation (at least
    ``min_std_deviation``) of recent inter-arrival intervals.  As in Akka
    (akka-remote ``PhiAccrualFailureDetector.scala``), ``F`` is the logistic
    approximation ``1 / (1 + exp(-y (1.5976 + 0.070566 y^2)))``,
    ``y = (t - mean) / std`` (Bowling et al. 2009; absolute error at most
    1.4e-4, at ``|y| = 3.16``).  A component is dead when phi >= ``threshold``
    and suspect when phi >= ``suspect_threshold`` (None: no suspect stage).

    Defaults are Akka Cluster's (``akka.cluster.failure-detector``):
    ``threshold`` 8.0, ``max_sample_size`` 1000, ``min_std_deviation`` 0.1 s,
    ``acceptable_heartbeat_pause`` 3 s, ``first_heartbeat_estimate`` 1 s (its
    ``heartbeat-interval``).  As in Akka, the first heartbeat seeds the window
    with two intervals, ``e - e/4`` and ``e + e/4`` for ``e`` =
    ``first_heartbeat_estimate`` (mean ``e``, standard deviation ``e/4``), and
    an interval is added only if phi was below ``threshold`` when it ended
    (a long outage does not skew the statistics).

    ``estimator="window"`` (default) keeps Akka's exact window of the last
    ``max_sample_size`` intervals with running sums: 65 bytes + 8 bytes per
    interval per component.  ``estimator="ewma"`` keeps an exponentially
    weighted mean and variance instead (weight ``ewma_alpha`` for the newest
    interval, default ``2 / (max_sample_size + 1)``, the weight whose mean age
    equals a window's): 33 bytes per component whatever the history, but old
    intervals fade gradually instead of dropping out, so phi differs from
    Akka's once the history is long.  Differences from Akka: times are float
    seconds (Akka: integer milliseconds, so its ``e/4`` rounds down), and a
    variance that rounding makes negative counts as 0.
    """

    def __init__(self, threshold: float = AKKA_THRESHOLD, *,
                 suspect_threshold: Optional[float] = None,
                 max_sample_size: int = AKKA_MAX_SAMPLE_SIZE,
                 min_std_deviation: float = AKKA_MIN_STD_DEVIATION,
                 acceptable_heartbeat_pause: float = AKKA_ACCEPTABLE_HEARTBEAT_PAUSE,
                 first_heartbeat_estimate: float = AKKA_FIRST_HEARTBEAT_ESTIMATE,
                 estimator: str = "window",
                 ewma_alpha: Optional[float] = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.threshold = _finite("threshold", threshold, allow_zero=False)
        if suspect_threshold is not None:
            suspect_threshold = _finite("suspect_threshold", suspect_threshold, allow_zero=False)
            if suspect_threshold >= self.threshold:
                raise ValueError(f"suspect_threshold ({suspect_threshold!r}) must be below "
                                 f"threshold ({self.threshold!r})")
        self.suspect_threshold = suspect_threshold
        if isinstance(max_sample_size, bool) or not isinstance(max_sample_size, int):
            raise TypeError(f"max_sample_size must be an int, not {type(max_sample_size).__name__}")
        if not 1 <= max_sample_size <= 2**31:
            raise ValueError(f"max_sample_size must be in [1, 2**31], got {max_sample_size!r}")
        self.max_sample_size = max_sample_size
        self.min_std_deviation = _finite("min_std_deviation", min_std_deviation, allow_zero=False)
        self.acceptable_heartbeat_pause = _finite("acceptable_heartbeat_pause", acceptable_heartbeat_pause)
        self.first_heartbeat_estimate = _finite("first_heartbeat_estimate", first_heartbeat_estimate,
                                                allow_zero=False)
        if estimator not in ("window", "ewma"):
            raise ValueError(f"estimator must be 'window' or 'ewma', got {estimator!r}")
        self.estimator = estimator
        if ewma_alpha is None:
            ewma_alpha = 2.0 / (max_sample_size + 1)
        else:
            ewma_alpha = _finite("ewma_alpha", ewma_alpha, allow_zero=False)
            if ewma_alpha > 1:
                raise ValueError(f"ewma_alpha must be in (0, 1], got {ewma_alpha!r}")
        self.ewma_alpha = ewma_alpha
        table = _detect.HeartbeatTable(
            estimator, threshold=self.threshold, suspect_threshold=suspect_threshold or 0.0,
            min_std=self.min_std_deviation, pause=self.acceptable_heartbeat_pause,
            first_estimate=self.first_heartbeat_estimate, max_samples=max_sample_size,
            alpha=ewma_alpha)
        super().__init__(table, clock)

    def phi(self, name: Hashable, now: Optional[float] = None) -> float:
        """phi of ``name`` at ``now`` (default: the clock); 0 before its first heartbeat."""
        i = self.id(name)
        return self._table.phi(i, self._clock() if now is None else now)

    def phi_all(self, now: Optional[float] = None, *, out: Optional[np.ndarray] = None) -> np.ndarray:
        """phi of every id at ``now`` as a float64 array indexed by id (NaN for removed ids).

        ``out``: a C-contiguous, writeable float64 array of one entry per id to
        fill instead of a new one (TypeError for another dtype, ValueError for
        another length or layout), as every faultkit array function takes it.
        """
        return self._table.phi_all(self._clock() if now is None else now, out)

    def __repr__(self) -> str:
        return (f"PhiAccrualDetector(threshold={self.threshold!r}, "
                f"suspect_threshold={self.suspect_threshold!r}, estimator={self.estimator!r}, "
                f"components={len(self)})")
