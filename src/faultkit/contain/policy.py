"""Correlated-failure policy: isolate a whole domain when several of its services fail together.

When ``min_failed`` services of one domain (at ``level``) go suspect or dead
within ``window`` seconds, the failures are probably one cause (a top-of-rack
switch, a power feed), so the whole domain is isolated, its remaining members
presumed unhealthy.  It is restored once ``restore_share`` of its members
have been healthy for ``hold`` seconds.  A cap, as Envoy's outlier detection
``max_ejection_percent`` and its panic threshold, refuses isolation past
``max_isolated_fraction`` of all services: a monitor that sees everyone fail
is more likely cut off itself.
"""
from __future__ import annotations

import logging
import math
import time
from typing import Any, Callable, Hashable, NamedTuple, Optional

from faultkit.contain.domains import FailureDomains
from faultkit.errors import IsolationRefusedError

__all__ = ["IsolationPolicy", "Decision", "IsolationRefusedError"]

_log = logging.getLogger("faultkit.contain")

_FAILED_STATES = ("suspect", "dead")
_KNOWN_STATES = frozenset(("suspect", "dead"))

# Envoy outlier detection: base_ejection_time 30 s, max_ejection_percent 10%
# per cluster by default; faultkit caps at 50%, Envoy's healthy panic threshold,
# because a domain is a much larger unit than one host.
DEFAULT_HOLD = 30.0
DEFAULT_MAX_ISOLATED_FRACTION = 0.5


class Decision(NamedTuple):
    """What the policy did: ``action`` is ``"isolate"``, ``"restore"`` or
    ``"refuse"``; ``services`` the services concerned; ``reason`` in words."""

    action: str
    domain: str
    at: float
    services: list
    reason: str


def _number(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number, not {type(value).__name__}")
    return float(value)


class IsolationPolicy:
    """Isolates and restores domains of ``domains`` from detector events.

    Feed it events (objects with ``name``, ``new`` state and time ``at``, as
    :class:`faultkit.detect.Event`) through :meth:`on_event`, or
    :meth:`watch` a detector to receive every event its scans produce; call
    :meth:`tick` to restore domains whose hold time has passed without a new
    event.  Events for services the domains do not know are ignored.

    - ``level`` (default ``"rack"``): the level at which domains are isolated.
    - ``min_failed`` (default 2) services of one domain failing within
      ``window`` seconds (default 10.0) of each other isolate it.
    - ``restore_share`` (default 1.0): the share of the domain's members that
      must be healthy (no failure reported, or recovered since) ...
    - ``hold`` (default 30.0 s, Envoy's base_ejection_time): ... continuously
      for this long before the policy restores it.
    - ``max_isolated_fraction`` (default 0.5): isolation that would leave more
      than this share of all services isolated is refused: reported as a
      ``"refuse"`` :class:`Decision` (and logged), or raised as
      ``IsolationRefusedError`` by :meth:`isolate`.
    - ``failed_states`` (default ``("suspect", "dead")``): the event states
      that count as a failure; any other state (``"alive"``,
      ``"restarted"``, ``"left"``, ...) ends one.  A graceful leave is never
      a failure, so a rolling restart of a rack does not isolate it.
      :class:`~faultkit.Cluster` requires this to equal the states it routes
      around (docs/cluster.md).
    - ``clock`` (default ``time.monotonic``) is read by :meth:`tick` when no
      time is given; events carry their own time.

    The policy restores only domains it isolated.  ``decisions`` keeps every
    decision; ``add_listener(fn)`` calls ``fn(decision)`` for each.
    """

    def __init__(self, domains: FailureDomains, *, level: str = "rack", min_failed: int = 2,
                 window: float = 10.0, restore_share: float = 1.0, hold: float = DEFAULT_HOLD,
                 max_isolated_fraction: float = DEFAULT_MAX_ISOLATED_FRACTION,
                 failed_states: tuple = _FAILED_STATES,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if not isinstance(domains, FailureDomains):
            raise TypeError(f"domains must be a FailureDomains, not {type(domains).__name__}")
        self._depth = domains._level(level) + 1
        if isinstance(min_failed, bool) or not isinstance(min_failed, int):
            raise TypeError(f"min_failed must be an int, not {type(min_failed).__name__}")
        if min_failed < 1:
            raise ValueError(f"min_failed must be >= 1, got {min_failed!r}")
        window = _number("window", window)
        if not (window >= 0 and math.isfinite(window)):
            raise ValueError(f"window must be a finite number of seconds >= 0, got {window!r}")
        restore_share = _number("restore_share", restore_share)
        if not 0 < restore_share <= 1:
            raise ValueError(f"restore_share must be in (0, 1], got {restore_share!r}")
        hold = _number("hold", hold)
        if not (hold >= 0 and math.isfinite(hold)):
            raise ValueError(f"hold must be a finite number of seconds >= 0, got {hold!r}")
        max_isolated_fraction = _number("max_isolated_fraction", max_isolated_fraction)
        if not 0 < max_isolated_fraction <= 1:
            raise ValueError(
                f"max_isolated_fraction must be in (0, 1], got {max_isolated_fraction!r}")
        if isinstance(failed_states, str):
            raise TypeError("failed_states must be a collection of state names, not a str")
        failed_states = tuple(failed_states)
        if not failed_states or not set(failed_states) <= _KNOWN_STATES:
            raise ValueError(f"failed_states must be a non-empty subset of ('suspect', 'dead'), "
                             f"got {failed_states!r}")
        if not callable(clock):
            raise TypeError(f"clock must be callable, not {type(clock).__name__}")
        self.failed_states = frozenset(failed_states)
        self.domains = domains
        self.level = level
        self.min_failed = min_failed
        self.window = window
        self.restore_share = restore_share
        self.hold = hold
        self.max_isolated_fraction = max_isolated_fraction
        self.clock = clock
        self._failed: dict[Hashable, float] = {}      # service -> when it failed
        self._mine: dict[str, Optional[float]] = {}   # isolated by us -> healthy since
        self.decisions: list[Decision] = []
        self._listeners: list[Callable[[Decision], Any]] = []

    # -- inputs ------------------------------------------------------------------
    def watch(self, detector: Any) -> None:
        """Receive every event of ``detector``'s scans (its ``add_listener``)."""
        detector.add_listener(self.on_event)

    def on_event(self, event: Any) -> list[Decision]:
        """Take one detector event into account; returns the decisions it caused."""
        service, new, at = event.name, event.new, _number("event time", event.at)
        if service not in self.domains:
            return []
        domain = self.domains.domain_of(service, self.level)
        made: list[Decision] = []
        if new in self.failed_states:
            self._failed.setdefault(service, at)
            if domain in self._mine:
                self._mine[domain] = None  # not healthy any more: the hold starts over
            elif not self._is_isolated_domain(domain):
                recent = self._correlated(domain)
                if recent:
                    made.append(self._try_isolate(
                        domain, at, f"{len(recent)} services failed within {self.window:g} s: "
                                    + ", ".join(map(str, recent[:5]))
                                    + (", ..." if len(recent) > 5 else "")))
        else:  # alive, restarted, left, ...: not (or no longer) a failure
            self._failed.pop(service, None)
            if domain in self._mine and self._mine[domain] is None and self._healthy(domain):
                self._mine[domain] = at
        made.extend(self.tick(at))
        return made

    def tick(self, now: Optional[float] = None) -> list[Decision]:
        """Restore domains healthy for ``hold`` seconds as of ``now`` (default: the clock)."""
        now = self.clock() if now is None else _number("now", now)
        made = []
        for domain, since in list(self._mine.items()):
            if since is not None and now - since >= self.hold:
                del self._mine[domain]
                back = self.domains.restore(domain) if domain in self.domains.isolated else []
                made.append(self._decide("restore", domain, now, back,
                                         f"{self.restore_share:.0%} healthy for {self.hold:g} s"))
        return made

    # -- decisions -------------------------------------------------------------
    def _correlated(self, domain: str) -> list:
        # The failed members of ``domain`` in the first span of ``window``
        # seconds that holds at least ``min_failed`` failures (events may
        # arrive out of time order across services), or [].
        failed = sorted((self._failed[s], i, s) for i, s in
                        enumerate(self.domains.members(domain)) if s in self._failed)
        m = self.min_failed
        for i in range(len(failed) - m + 1):
            if failed[i + m - 1][0] - failed[i][0] <= self.window:
                j = i + m
                while j < len(failed) and failed[j][0] - failed[i][0] <= self.window:
                    j += 1
                return [s for _, _, s in failed[i:j]]
        return []

    def _is_isolated_domain(self, domain: str) -> bool:
        members = self.domains.members(domain)
        return all(self.domains.is_isolated(s) for s in members)

    def _healthy(self, domain: str) -> bool:
        members = self.domains.members(domain)
        healthy = sum(1 for s in members if s not in self._failed)
        return healthy >= self.restore_share * len(members)

    def _would_exceed(self, domain: str) -> tuple[bool, float]:
        total = len(self.domains)
        isolated = set(self.domains.isolated_services())
        isolated.update(self.domains.members(domain))
        share = len(isolated) / total
        return share > self.max_isolated_fraction, share

    def _try_isolate(self, domain: str, at: float, reason: str) -> Decision:
        exceed, share = self._would_exceed(domain)
        if exceed:
            decision = self._decide(
                "refuse", domain, at, [],
                f"{reason}; isolating it would isolate {share:.0%} of services, over "
                f"max_isolated_fraction={self.max_isolated_fraction:g}")
            _log.warning("isolation of %s refused: %s", domain, decision.reason)
            return decision
        newly = self.domains.isolate(domain)
        self._mine[domain] = at if self._healthy(domain) else None
        return self._decide("isolate", domain, at, newly, reason)

    def isolate(self, domain: str, now: Optional[float] = None) -> list:
        """Isolate ``domain`` by hand under the cap; the policy will restore it like its own.

        ``IsolationRefusedError`` if that would isolate more than
        ``max_isolated_fraction`` of all services.
        """
        now = self.clock() if now is None else _number("now", now)
        decision = self._try_isolate(self.domains._domain(domain), now, "isolated by hand")
        if decision.action == "refuse":
            raise IsolationRefusedError(f"isolating {domain!r} refused: {decision.reason}")
        return decision.services

    def _decide(self, action: str, domain: str, at: float, services: list,
                reason: str) -> Decision:
        decision = Decision(action, domain, at, services, reason)
        self.decisions.append(decision)
        for fn in list(self._listeners):
            try:
                fn(decision)
            except Exception:
                _log.exception("isolation policy listener %r failed", fn)
        return decision

    @property
    def refusals(self) -> list[Decision]:
        """The ``"refuse"`` decisions so far."""
        return [d for d in self.decisions if d.action == "refuse"]

    @property
    def isolated(self) -> list[str]:
        """Domains this policy isolated and has not restored yet, sorted."""
        return sorted(self._mine)

    def add_listener(self, fn: Callable[[Decision], Any]) -> None:
        """Call ``fn(decision)`` for every decision (exceptions are logged)."""
        if not callable(fn):
            raise TypeError(f"listener must be callable, not {type(fn).__name__}")
        self._listeners.append(fn)

    def __repr__(self) -> str:
        return (f"IsolationPolicy(level={self.level!r}, min_failed={self.min_failed}, "
                f"window={self.window:g}, isolated={self.isolated!r})")
