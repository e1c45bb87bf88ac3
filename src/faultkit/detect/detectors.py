"""Heartbeat failure detectors over arrays: fixed timeout and phi accrual.

Components send heartbeats; a detector turns their silence into states,
``"alive" -> "suspect" -> "dead"``, and back to ``"alive"`` on the next
heartbeat.  Around that sits the member lifecycle (docs/cluster.md):
``"joining"`` from :meth:`~TimeoutDetector.add` to the first heartbeat (dead
if none comes within ``join_timeout``), ``"leaving"`` -> ``"left"`` for a
graceful stop, and a ``"restarted"`` event when a heartbeat carries a higher
incarnation than seen before (the process lost its memory; the component is
alive in its new incarnation).  Both detectors keep every component in one native table
(``csrc/faultkit/detect/heartbeat.h``): at each heartbeat the table precomputes the
times at which the component will cross its suspect and dead thresholds, so
:meth:`~TimeoutDetector.scan` is a pass over deadlines - and over a per-block
lower bound of those deadlines (blocks of 256 components), so a scan in which
nothing expires reads 8 bytes per 256 components.

Times are float seconds from ``clock`` (default :func:`time.monotonic`); every
method that needs the time takes ``now=None`` and reads the clock only when it
is not given, so tests replay interval lists without sleeping.

A component is monitored from its first heartbeat: before it, it reads
``"joining"`` with phi 0, and is counted alive by :meth:`alive_mask`, as in
Akka ("treat unmanaged connections ... as healthy"), until ``join_timeout``
seconds after it was added.

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
    "JOINING",
    "LEAVING",
    "LEFT",
    "RESTARTED",
]

ALIVE, SUSPECT, DEAD = "alive", "suspect", "dead"
JOINING, LEAVING, LEFT, RESTARTED = "joining", "leaving", "left", "restarted"

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

    ``at`` (seconds, the detector's monotonic clock) is the threshold
    crossing time for ``suspect``/``dead``/``left`` by silence (not the
    scan's time, which is later), and the heartbeat's or leave's time
    otherwise.  ``wall`` is the same instant on the wall clock (seconds since
    the epoch: the scan's wall-clock reading less how long before the scan
    ``at`` was), for logs and for comparing across hosts.  ``incarnation`` is
    the component's incarnation after the event and ``old_incarnation`` the
    one before; they differ only for ``new == "restarted"``, a heartbeat from
    a higher incarnation: the component restarted (and lost what it held in
    memory) and is alive in its new incarnation.  Events built by hand may
    leave the last three at their defaults (NaN, None, None).
    """

    name: Hashable
    old: str
    new: str
    at: float
    wall: float = math.nan
    incarnation: Optional[int] = None
    old_incarnation: Optional[int] = None


def _finite(name: str, value: Any, *, positive: bool = False, allow_zero: bool = True,
            allow_inf: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number, not {type(value).__name__}")
    v = float(value)
    if math.isnan(v) or (math.isinf(v) and not allow_inf) or v < 0 or (not allow_zero and v == 0):
        want = "> 0" if not allow_zero else ">= 0"
        raise ValueError(f"{name} must be {'' if allow_inf else 'finite and '}{want}, got {value!r}")
    return v


def _native_join(join_timeout: float) -> float:
    # The table's "no join deadline" is <= 0.
    return 0.0 if math.isinf(join_timeout) else join_timeout


class _Detector:
    """The scan API shared by both detectors (names <-> ids, clock, listeners)."""

    def __init__(self, table: _detect.HeartbeatTable, clock: Callable[[], float],
                 wall_clock: Callable[[], float], join_timeout: float) -> None:
        if not callable(clock):
            raise TypeError(f"clock must be callable, not {type(clock).__name__}")
        if not callable(wall_clock):
            raise TypeError(f"wall_clock must be callable, not {type(wall_clock).__name__}")
        self._table = table
        self._clock = clock
        self._wall_clock = wall_clock
        self.join_timeout = join_timeout
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
    def add(self, name: Hashable, now: Optional[float] = None) -> int:
        """Start tracking ``name``, joining at ``now`` (default: the clock); returns its id
        (stable until it is removed).

        ValueError if ``name`` is already tracked.  It reads ``"joining"``
        until its first heartbeat; if none comes within ``join_timeout``
        seconds it becomes ``"dead"`` (event ``joining -> dead``).  Ids of
        removed components are reused.
        """
        hash(name)  # TypeError for unhashable names, before touching anything
        if name in self._ids:
            raise ValueError(f"component {name!r} is already tracked (id {self._ids[name]})")
        t = _finite("now", self._clock() if now is None else now)
        i = self._table.add(t)
        if i == len(self._names):
            self._names.append(name)
        else:
            self._names[i] = name
        self._ids[name] = i
        return i

    def add_many(self, names: Iterable[Hashable], now: Optional[float] = None) -> np.ndarray:
        """:meth:`add` each name, all joining at ``now``; returns their ids as an int64 array."""
        t = _finite("now", self._clock() if now is None else now)
        return np.array([self.add(n, t) for n in names], dtype=np.int64)

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
                  incarnation: Optional[int] = None) -> bool:
        """Record a heartbeat from ``name`` at ``now`` (default: the clock).

        Returns True when recorded; False when ignored because ``name`` left
        in this incarnation (a heartbeat delayed past its leave: a left
        component comes back with a higher incarnation, or with heartbeats
        that carry none).  KeyError for an unknown name; ValueError for a
        NaN, infinite or negative time, or one earlier than its last
        heartbeat (nothing is recorded).  A larger ``incarnation`` than seen
        before means the component restarted: its interval statistics start
        afresh and the next scan reports ``Event(new="restarted")`` with both
        incarnations.
        """
        # Instances call the native method directly (bound in __init__); this
        # definition documents it and serves calls through the class.
        return self._table.heartbeat_name(name, now, incarnation=incarnation)

    def leave(self, name: Hashable, incarnation: Optional[int] = None, *,
              now: Optional[float] = None) -> bool:
        """``name`` left gracefully at ``now`` (default: the clock): ``"left"`` at once.

        ``incarnation`` is the leaving process's (None: whichever is
        current).  Returns False, changing nothing, for the leave of an older
        incarnation than the last heard (the component restarted since) or of
        a component that has left already.  A left component is not routable
        and makes no further events until a heartbeat of a higher
        incarnation (``"restarted"``) or one without an incarnation
        (``left -> alive``).  KeyError for an unknown name.
        """
        i = self.id(name)
        inc = self._incarnation_arg(incarnation)
        t = _finite("now", self._clock() if now is None else now)
        return self._table.leave(i, t, inc) == 0

    def begin_leave(self, name: Hashable, *, now: Optional[float] = None) -> bool:
        """``name`` announced it is leaving (draining) at ``now``: ``"leaving"``.

        Its heartbeats keep it ``"leaving"`` (not routable: no new work), and
        silence ends it in ``"left"``, not ``"dead"``, at its dead deadline;
        :meth:`leave` ends it at once.  A component joining or dead leaves at
        once.  Returns False if it is leaving or left already.
        """
        i = self.id(name)
        t = _finite("now", self._clock() if now is None else now)
        return self._table.begin_leave(i, t) == 0

    @staticmethod
    def _incarnation_arg(incarnation: Optional[int]) -> int:
        if incarnation is None:
            return -1
        if isinstance(incarnation, bool) or not isinstance(incarnation, (int, np.integer)):
            raise TypeError(f"incarnation must be an int, not {type(incarnation).__name__}")
        if not 0 <= incarnation < 2**63:
            raise ValueError(f"incarnation must be in [0, 2**63), got {incarnation!r}")
        return int(incarnation)

    def heartbeat_many(self, ids: Any, times: Any) -> int:
        """Record heartbeats of many components at once (numpy arrays, GIL released).

        ``ids`` are component ids (from :meth:`add`), ``times`` their arrival
        times, applied in order.  Every entry is validated before anything is
        written: IndexError for an id that is not a component's, ValueError
        for a NaN/infinite/negative time.  A time earlier than the component's
        last heartbeat (a reordered arrival) is ignored; returns how many were.
        These heartbeats carry no incarnation: they never report a restart,
        and they bring a left component back (``left -> alive``).
        """
        return self._table.heartbeat_many(ids, times)

    # ---- scanning ------------------------------------------------------
    def scan(self, now: Optional[float] = None) -> list[Event]:
        """State changes since the last scan, up to ``now`` (default: the clock).

        Returns only changes: first those made by heartbeats and leaves since
        the last scan, in arrival order (joins ``joining``/``dead`` ->
        ``alive``, recoveries ``suspect``/``dead``/``left`` -> ``alive``,
        restarts ``* -> restarted``, ``-> leaving``, ``-> left``), then
        threshold crossings by silence (``alive`` -> ``suspect`` ->
        ``dead``, ``joining`` -> ``dead`` at the join deadline, ``leaving``
        -> ``left``), each at its crossing time.  Each event is passed to
        every listener after the table has been updated.  ValueError if
        ``now`` is earlier than the previous scan's.
        """
        if now is None:
            now = self._clock()
        now = _finite("now", now)
        if now < self._last_scan:
            raise ValueError(f"scan time {now!r} is before the previous scan at {self._last_scan!r}")
        self._last_scan = now
        names = self._names
        raw = self._table.scan(now)
        if not raw:
            return []
        wall_now = float(self._wall_clock())
        events = [Event(names[i], old, new, at, wall_now - (now - at), inc, old_inc)
                  for i, old, new, at, old_inc, inc in raw]
        for ev in events:
            for fn in list(self._listeners):
                fn(ev)
        return events

    def state(self, name: Hashable) -> str:
        """``"joining"``, ``"alive"``, ``"suspect"``, ``"dead"``, ``"leaving"`` or ``"left"``
        as of the last scan, heartbeat or leave."""
        return self._table.state(self.id(name))

    def alive_mask(self) -> np.ndarray:
        """bool array indexed by id: True for alive and joining components (removed ids: False)."""
        return self._table.alive_mask()

    def deadlines(self, name: Hashable) -> tuple[float, float]:
        """(suspect, dead) crossing times of ``name`` after its last heartbeat (while joining:
        its join deadline twice; inf when none is due)."""
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
    (None: no suspect stage) must be below ``timeout``.  ``join_timeout``:
    seconds from :meth:`add` to ``"dead"`` for a component never heard from;
    default (None) ``timeout``, as if it had sent a heartbeat when it was
    added (silence since then is judged like any other); ``math.inf``:
    never.  ``wall_clock`` (default :func:`time.time`) dates events in
    :attr:`Event.wall`.  17 bytes per component in the native table.
    """

    def __init__(self, timeout: float = DEFAULT_TIMEOUT, suspect_after: Optional[float] = None, *,
                 join_timeout: Optional[float] = None,
                 clock: Callable[[], float] = time.monotonic,
                 wall_clock: Callable[[], float] = time.time) -> None:
        self.timeout = _finite("timeout", timeout, allow_zero=False)
        if suspect_after is not None:
            suspect_after = _finite("suspect_after", suspect_after, allow_zero=False)
            if suspect_after >= self.timeout:
                raise ValueError(
                    f"suspect_after ({suspect_after!r}) must be below timeout ({self.timeout!r})")
        self.suspect_after = suspect_after
        join = self.timeout if join_timeout is None else _finite("join_timeout", join_timeout,
                                                                 allow_zero=False, allow_inf=True)
        table = _detect.HeartbeatTable("timeout", timeout=self.timeout,
                                       suspect_after=suspect_after or 0.0,
                                       join_timeout=_native_join(join))
        super().__init__(table, clock, wall_clock, join)

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

    ``join_timeout``: seconds from :meth:`add` to ``"dead"`` for a component
    never heard from; default (None) the dead deadline a first heartbeat at
    the add would set: ``first_heartbeat_estimate +
    acceptable_heartbeat_pause + y* x max(first_heartbeat_estimate / 4,
    min_std_deviation)`` (y* where phi reaches ``threshold``; 5.3 s with
    Akka's defaults), so a component that never speaks is judged like one
    that spoke once and fell silent; ``math.inf``: never.  ``wall_clock``
    (default :func:`time.time`) dates events in :attr:`Event.wall`.
    """

    def __init__(self, threshold: float = AKKA_THRESHOLD, *,
                 suspect_threshold: Optional[float] = None,
                 max_sample_size: int = AKKA_MAX_SAMPLE_SIZE,
                 min_std_deviation: float = AKKA_MIN_STD_DEVIATION,
                 acceptable_heartbeat_pause: float = AKKA_ACCEPTABLE_HEARTBEAT_PAUSE,
                 first_heartbeat_estimate: float = AKKA_FIRST_HEARTBEAT_ESTIMATE,
                 estimator: str = "window",
                 ewma_alpha: Optional[float] = None,
                 join_timeout: Optional[float] = None,
                 clock: Callable[[], float] = time.monotonic,
                 wall_clock: Callable[[], float] = time.time) -> None:
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
        if join_timeout is None:
            e = self.first_heartbeat_estimate
            join = (e + self.acceptable_heartbeat_pause
                    + _detect.crossing_y(self.threshold) * max(e / 4.0, self.min_std_deviation))
        else:
            join = _finite("join_timeout", join_timeout, allow_zero=False, allow_inf=True)
        table = _detect.HeartbeatTable(
            estimator, threshold=self.threshold, suspect_threshold=suspect_threshold or 0.0,
            min_std=self.min_std_deviation, pause=self.acceptable_heartbeat_pause,
            first_estimate=self.first_heartbeat_estimate, max_samples=max_sample_size,
            alpha=ewma_alpha, join_timeout=_native_join(join))
        super().__init__(table, clock, wall_clock, join)

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
