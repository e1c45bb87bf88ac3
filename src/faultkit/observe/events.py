"""Events as structured records: every state change, isolation, ejection or restart one
record with wall-clock and monotonic time, through :mod:`logging` and as JSON lines."""
from __future__ import annotations

import json
import logging
import time
from typing import Any, Callable, Dict, Optional

__all__ = ["EVENT_LOGGER", "record", "decision_record", "log_events", "JsonLinesFormatter"]

#: The logger :func:`log_events` writes to unless told otherwise.
EVENT_LOGGER = "faultkit.events"


def record(source: str, ev: Any, *, wall: Optional[float] = None,
           monotonic: Optional[float] = None) -> Dict[str, Any]:
    """The structured record of one ``faultkit.Event`` from ``source``.

    Keys: ``source``, ``member``, ``old``, ``new``, ``at`` (the event's own time on
    its object's clock), ``wall`` (seconds since the epoch) and ``monotonic``
    (``time.monotonic()``), both taken now unless given; ``incarnation`` for restarts."""
    rec: Dict[str, Any] = {
        "source": source, "member": str(ev.name), "old": ev.old, "new": ev.new, "at": ev.at,
        "wall": time.time() if wall is None else wall,
        "monotonic": time.monotonic() if monotonic is None else monotonic,
    }
    inc = getattr(ev, "incarnation", None)
    if inc is not None and ev.new == "restarted":
        rec["incarnation"] = inc
    return rec


def decision_record(source: str, d: Any, *, wall: Optional[float] = None,
                    monotonic: Optional[float] = None) -> Dict[str, Any]:
    """The structured record of one isolation ``Decision`` (or outlier ``Ejection``) from ``source``.

    Keys: ``source``, ``action`` (isolate, restore, refuse; eject, return),
    ``domain`` and ``services`` (a decision) or ``member`` (an ejection),
    ``reason``, ``at`` (on the object's clock), ``wall`` and ``monotonic`` as in
    :func:`record`."""
    rec: Dict[str, Any] = {"source": source, "action": d.action, "reason": d.reason, "at": d.at}
    if hasattr(d, "domain"):
        rec["domain"] = d.domain
        rec["services"] = [str(s) for s in d.services]
    else:
        rec["member"] = str(d.host)
    rec["wall"] = time.time() if wall is None else wall
    rec["monotonic"] = time.monotonic() if monotonic is None else monotonic
    return rec


def log_events(obj: Any, source: str, *, logger: Optional[logging.Logger] = None,
               level: int = logging.INFO) -> Callable[[Any], None]:
    """Log every event of ``obj`` (a detector, Cluster or Node: anything with
    ``add_listener``) as one record: message ``"<source> <member>: <old> -> <new>"``,
    and the structured record (:func:`record`) as ``extra={"faultkit": {...}}``; an
    :class:`~faultkit.IsolationPolicy`'s decisions as ``"<source> <action> <domain>:
    <reason>"`` with :func:`decision_record`.
    Returns the listener (to remove it later)."""
    if not callable(getattr(obj, "add_listener", None)):
        raise TypeError(f"{type(obj).__name__} has no add_listener: nothing to log events of")
    if not isinstance(source, str) or not source:
        raise ValueError(f"source must be a non-empty str, got {source!r}")
    log = logger if logger is not None else logging.getLogger(EVENT_LOGGER)

    def listener(ev: Any) -> None:
        if hasattr(ev, "action"):  # an isolation decision
            rec = decision_record(source, ev)
            log.log(level, "%s %s %s: %s", source, ev.action, ev.domain, ev.reason, extra={"faultkit": rec})
            return
        rec = record(source, ev)
        log.log(level, "%s %s: %s -> %s", source, rec["member"], ev.old, ev.new, extra={"faultkit": rec})

    obj.add_listener(listener)
    return listener


class JsonLinesFormatter(logging.Formatter):
    """Formats a record as one JSON object per line: the faultkit record when the
    record carries one (``extra={"faultkit": ...}``), else time, level, logger, message."""

    def format(self, r: logging.LogRecord) -> str:
        rec = getattr(r, "faultkit", None)
        if rec is None:
            rec = {"wall": r.created, "level": r.levelname, "logger": r.name, "message": r.getMessage()}
        return json.dumps(rec, sort_keys=True, default=str)
