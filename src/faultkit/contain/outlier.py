"""Outlier ejection from request results, after Envoy's outlier detection.

Heartbeats say whether a host is reachable; request results say whether it
is *useful*.  A host that answers heartbeats but fails or crawls on requests
(a full disk, a bad deploy, a slow replica) is an outlier: :class:`OutlierDetector`
ejects it from routing for a while, longer each time it is ejected again,
and never more than ``max_ejection_percent`` of the hosts at once.

Three detectors, as Envoy's ``outlier_detection`` (envoy.config.cluster.v3):

- **consecutive errors**: ``consecutive_errors`` failures in a row (Envoy's
  ``consecutive_5xx``, default 5) eject at once, from :meth:`report`.
- **success rate**: every ``interval`` seconds (default 10 s), over the hosts
  with at least ``success_rate_request_volume`` results in that interval
  (default 100), if there are at least ``success_rate_minimum_hosts`` of them
  (default 5): a host whose success rate is below ``mean - stdev_factor x
  stdev`` of those hosts' rates is ejected (``success_rate_stdev_factor``,
  Envoy's 1900 / 1000 = 1.9; the population standard deviation).
- **latency** (faultkit's, off by default): the same rule on the hosts' mean
  latency in the interval, ejecting those above ``mean + latency_stdev_factor
  x stdev``.

An ejection lasts ``base_ejection_time x n`` seconds (default 30 s, Envoy),
``n`` being the host's ejection count, capped at ``max_ejection_time``
(default 300 s, Envoy).  Each interval a host spends un-ejected lowers its
count by one (Envoy's decay), so a host that stays healthy is forgiven.
When the time is up, :meth:`tick` returns the host to routing (its trial:
the next failures eject it again, for longer); nothing waits for a request
to reach it.  An ejection that would leave more than ``max_ejection_percent``
(default 10 %, Envoy) of the hosts ejected is skipped, except that one host
may always be ejected (Envoy's rule since 1.21).

Times are seconds on ``clock`` (default :func:`time.monotonic`); every method
takes ``now=None`` and reads the clock only when it is not given.
"""
from __future__ import annotations

import math
import time
from typing import Any, Callable, Hashable, Iterable, NamedTuple, Optional

__all__ = ["OutlierDetector", "Ejection"]

# Envoy's defaults (envoy.config.cluster.v3.OutlierDetection).
ENVOY_CONSECUTIVE_5XX = 5
ENVOY_INTERVAL = 10.0                 # seconds between success-rate sweeps
ENVOY_BASE_EJECTION_TIME = 30.0       # seconds
ENVOY_MAX_EJECTION_TIME = 300.0       # seconds
ENVOY_MAX_EJECTION_PERCENT = 10.0
ENVOY_SUCCESS_RATE_MINIMUM_HOSTS = 5
ENVOY_SUCCESS_RATE_REQUEST_VOLUME = 100
ENVOY_SUCCESS_RATE_STDEV_FACTOR = 1.9  # 1900 / 1000


class Ejection(NamedTuple):
    """An ejection (``action == "eject"``) or a return to routing (``"return"``) of
    ``host`` at time ``at``.  ``reason``: ``"consecutive_errors"``,
    ``"success_rate"``, ``"latency"``, ``"manual"`` or, for a return,
    ``"time_up"``.  ``until``: when an ejection ends (None for a return);
    ``count``: the host's ejection count after the event."""

    host: Hashable
    action: str
    reason: str
    at: float
    until: Optional[float]
    count: int


class _Host:
    __slots__ = ("consecutive", "requests", "successes", "latency_sum", "latency_n",
                 "ejected_until", "count", "ejected_in_interval")

    def __init__(self) -> None:
        self.consecutive = 0
        self.requests = 0
        self.successes = 0
        self.latency_sum = 0.0
        self.latency_n = 0
        self.ejected_until: Optional[float] = None
        self.count = 0
        self.ejected_in_interval = False


def _num(name: str, value: Any, *, low: float = 0.0, strict: bool = False,
         inf: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number, not {type(value).__name__}")
    v = float(value)
    ok = (v > low if strict else v >= low) and (math.isfinite(v) or (inf and v == math.inf))
    if not ok:
        raise ValueError(f"{name} must be {'>' if strict else '>='} {low:g}"
                         f"{'' if inf else ' and finite'}, got {value!r}")
    return v


def _int(name: str, value: Any, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, not {type(value).__name__}")
    if value < low:
        raise ValueError(f"{name} must be >= {low}, got {value!r}")
    return value


class OutlierDetector:
    """Ejects hosts whose request results make them outliers (Envoy's outlier detection).

    ``OutlierDetector(hosts=(), *, consecutive_errors=5, interval=10.0,
    base_ejection_time=30.0, max_ejection_time=300.0, max_ejection_percent=10.0,
    success_rate_minimum_hosts=5, success_rate_request_volume=100,
    success_rate_stdev_factor=1.9, latency_stdev_factor=None, clock=time.monotonic)``

    Every default is Envoy's (see the module docstring); ``consecutive_errors``
    None turns that detector off, ``success_rate_stdev_factor`` None the
    success-rate one; ``latency_stdev_factor`` (None: off) turns the latency
    one on, with the success rate's minimum hosts and request volume.  Feed
    it :meth:`report` per request and call :meth:`tick` periodically (each
    call is cheap when nothing is due); both return the :class:`Ejection`
    events they made.  A :class:`~faultkit.Cluster` owns one and routes by it.
    """

    def __init__(self, hosts: Iterable[Hashable] = (), *,
                 consecutive_errors: Optional[int] = ENVOY_CONSECUTIVE_5XX,
                 interval: float = ENVOY_INTERVAL,
                 base_ejection_time: float = ENVOY_BASE_EJECTION_TIME,
                 max_ejection_time: float = ENVOY_MAX_EJECTION_TIME,
                 max_ejection_percent: float = ENVOY_MAX_EJECTION_PERCENT,
                 success_rate_minimum_hosts: int = ENVOY_SUCCESS_RATE_MINIMUM_HOSTS,
                 success_rate_request_volume: int = ENVOY_SUCCESS_RATE_REQUEST_VOLUME,
                 success_rate_stdev_factor: Optional[float] = ENVOY_SUCCESS_RATE_STDEV_FACTOR,
                 latency_stdev_factor: Optional[float] = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.consecutive_errors = (None if consecutive_errors is None
                                   else _int("consecutive_errors", consecutive_errors, 1))
        self.interval = _num("interval", interval, strict=True)
        self.base_ejection_time = _num("base_ejection_time", base_ejection_time, strict=True)
        self.max_ejection_time = _num("max_ejection_time", max_ejection_time, strict=True, inf=True)
        if self.max_ejection_time < self.base_ejection_time:
            raise ValueError(f"max_ejection_time ({max_ejection_time!r}) must be >= "
                             f"base_ejection_time ({base_ejection_time!r})")
        self.max_ejection_percent = _num("max_ejection_percent", max_ejection_percent)
        if self.max_ejection_percent > 100:
            raise ValueError(f"max_ejection_percent must be in [0, 100], got {max_ejection_percent!r}")
        self.success_rate_minimum_hosts = _int("success_rate_minimum_hosts",
                                               success_rate_minimum_hosts, 1)
        self.success_rate_request_volume = _int("success_rate_request_volume",
                                                success_rate_request_volume, 1)
        self.success_rate_stdev_factor = (
            None if success_rate_stdev_factor is None
            else _num("success_rate_stdev_factor", success_rate_stdev_factor))
        self.latency_stdev_factor = (None if latency_stdev_factor is None
                                     else _num("latency_stdev_factor", latency_stdev_factor))
        if not callable(clock):
            raise TypeError(f"clock must be callable, not {type(clock).__name__}")
        self.clock = clock
        self._hosts: dict[Hashable, _Host] = {}
        self._ejected: dict[Hashable, None] = {}   # in ejection order
        # Hosts a sweep must look at: results this interval, or an ejection count
        # to decay; a sweep over a quiet fleet costs nothing per host.
        self._active: set = set()
        self._next_sweep: Optional[float] = None
        self.events: list[Ejection] = []           # the last 1000, newest last
        #: Lifetime counts of :attr:`events` by ``action`` (``"eject"``, ``"return"``).
        self.counts: dict[str, int] = {"eject": 0, "return": 0}
        for h in hosts:
            self.add(h)

    # -- hosts -----------------------------------------------------------------
    def add(self, host: Hashable) -> None:
        """Start tracking ``host`` (ValueError if it is tracked)."""
        hash(host)
        if host in self._hosts:
            raise ValueError(f"host {host!r} is already tracked")
        self._hosts[host] = _Host()

    def remove(self, host: Hashable) -> None:
        """Stop tracking ``host`` (KeyError if unknown); an ejection of it ends."""
        self._host(host)
        del self._hosts[host]
        self._ejected.pop(host, None)
        self._active.discard(host)

    def _host(self, host: Hashable) -> _Host:
        try:
            return self._hosts[host]
        except KeyError:
            raise KeyError(f"unknown host {host!r}") from None
        except TypeError:
            raise TypeError(f"hosts must be hashable, not {type(host).__name__}") from None

    def __contains__(self, host: object) -> bool:
        try:
            return host in self._hosts
        except TypeError:
            return False

    def __len__(self) -> int:
        return len(self._hosts)

    # -- inputs ------------------------------------------------------------------
    def report(self, host: Hashable, ok: bool, latency: Optional[float] = None, *,
               now: Optional[float] = None) -> Optional[Ejection]:
        """One request result of ``host``: ``ok`` (bool) and its ``latency`` in
        seconds (optional); returns the ejection it caused, if any.

        ``consecutive_errors`` failures in a row eject at once (under the
        ``max_ejection_percent`` cap).  Results of an ejected host (requests
        that were in flight) count in the interval's statistics but do not
        eject it again.
        """
        h = self._host(host)
        if not isinstance(ok, bool):
            raise TypeError(f"ok must be a bool, not {type(ok).__name__}")
        if latency is not None:
            latency = _num("latency", latency)
        t = self._now(now)
        if self._next_sweep is None:
            self._next_sweep = t + self.interval
        h.requests += 1
        self._active.add(host)
        if latency is not None:
            h.latency_sum += latency
            h.latency_n += 1
        if ok:
            h.successes += 1
            h.consecutive = 0
            return None
        h.consecutive += 1
        if (self.consecutive_errors is not None and h.consecutive >= self.consecutive_errors
                and h.ejected_until is None):
            return self._eject(host, h, "consecutive_errors", t)
        return None

    def tick(self, now: Optional[float] = None) -> list[Ejection]:
        """Return hosts whose ejection time is up, and run the success-rate and
        latency sweep when ``interval`` has passed; returns the events made."""
        t = self._now(now)
        made: list[Ejection] = []
        for host in list(self._ejected):
            h = self._hosts[host]
            if h.ejected_until is not None and h.ejected_until <= t:
                h.ejected_until = None
                h.consecutive = 0
                del self._ejected[host]
                made.append(self._record(Ejection(host, "return", "time_up", t, None, h.count)))
        if self._next_sweep is None:
            self._next_sweep = t + self.interval
        elif t >= self._next_sweep:
            made.extend(self._sweep(t))
            # the next sweep one interval after this one (missed ones are not replayed)
            self._next_sweep = t + self.interval
        return made

    # -- sweeps --------------------------------------------------------------------
    def _sweep(self, t: float) -> list[Ejection]:
        made: list[Ejection] = []
        vol, hosts = self.success_rate_request_volume, self._hosts
        active = {k: hosts[k] for k in self._active}
        if self.success_rate_stdev_factor is not None:
            rates = {k: h.successes / h.requests for k, h in active.items()
                     if h.requests >= vol and h.ejected_until is None}
            for k in self._outliers(rates, -self.success_rate_stdev_factor):
                if hosts[k].ejected_until is None:
                    e = self._eject(k, hosts[k], "success_rate", t)
                    if e is not None:
                        made.append(e)
        if self.latency_stdev_factor is not None:
            means = {k: h.latency_sum / h.latency_n for k, h in active.items()
                     if h.latency_n >= vol and h.ejected_until is None}
            for k in self._outliers(means, self.latency_stdev_factor):
                if hosts[k].ejected_until is None:
                    e = self._eject(k, hosts[k], "latency", t)
                    if e is not None:
                        made.append(e)
        keep = set()
        for k, h in active.items():
            if h.ejected_until is None and not h.ejected_in_interval and h.count > 0:
                h.count -= 1  # a whole interval in routing: forgive one ejection
            h.ejected_in_interval = h.ejected_until is not None
            h.requests = h.successes = h.latency_n = 0
            h.latency_sum = 0.0
            if h.count > 0:
                keep.add(k)
        self._active = keep
        return made

    def _outliers(self, values: dict, factor: float) -> list:
        # Hosts beyond mean + factor x stdev (factor < 0: below mean - |factor| x stdev).
        if len(values) < self.success_rate_minimum_hosts:
            return []
        xs = list(values.values())
        mean = math.fsum(xs) / len(xs)
        std = math.sqrt(math.fsum((x - mean) ** 2 for x in xs) / len(xs))
        limit = mean + factor * std
        if factor < 0:
            return sorted((k for k, v in values.items() if v < limit), key=lambda k: values[k])
        return sorted((k for k, v in values.items() if v > limit), key=lambda k: -values[k])

    # -- ejection ------------------------------------------------------------------
    def _eject(self, host: Hashable, h: _Host, reason: str, t: float) -> Optional[Ejection]:
        n = len(self._hosts)
        ejected = len(self._ejected)
        if ejected and 100.0 * (ejected + 1) / n > self.max_ejection_percent:
            return None  # over the cap (one host may always be ejected, as in Envoy)
        h.count += 1
        h.ejected_until = t + min(self.base_ejection_time * h.count, self.max_ejection_time)
        h.ejected_in_interval = True
        self._ejected[host] = None
        self._active.add(host)
        return self._record(Ejection(host, "eject", reason, t, h.ejected_until, h.count))

    def _record(self, e: Ejection) -> Ejection:
        self.counts[e.action] += 1
        self.events.append(e)
        if len(self.events) > 1000:
            del self.events[:-1000]
        return e

    def eject(self, host: Hashable, *, now: Optional[float] = None) -> Optional[Ejection]:
        """Eject ``host`` by hand, as the detectors would (count, time, cap);
        returns the ejection, or None when it is ejected already or the cap refuses."""
        h = self._host(host)
        if h.ejected_until is not None:
            return None
        return self._eject(host, h, "manual", self._now(now))

    # -- queries --------------------------------------------------------------------
    def is_ejected(self, host: Hashable) -> bool:
        """Whether ``host`` is ejected now (until :meth:`tick` returns it)."""
        return self._host(host).ejected_until is not None

    @property
    def ejected(self) -> list:
        """The ejected hosts, in ejection order."""
        return list(self._ejected)

    def ejected_until(self, host: Hashable) -> Optional[float]:
        """When ``host``'s ejection ends (None if it is not ejected)."""
        return self._host(host).ejected_until

    def ejection_count(self, host: Hashable) -> int:
        """``host``'s ejection count: the multiplier of its next ejection time less one."""
        return self._host(host).count

    def _now(self, now: Optional[float]) -> float:
        return _num("now", self.clock() if now is None else now)

    def __repr__(self) -> str:
        return (f"OutlierDetector({len(self._hosts)} hosts, {len(self._ejected)} ejected, "
                f"consecutive_errors={self.consecutive_errors}, "
                f"max_ejection_percent={self.max_ejection_percent:g})")
