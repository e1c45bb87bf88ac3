"""The live terminal view of ``faultkit monitor``: one row per member, refreshed in place
(``rich``, from the ``cli`` extra), and the most recent events under it."""
from __future__ import annotations

import collections
import time
from typing import Any, Deque, Optional

__all__ = ["LiveView"]


class LiveView:
    """Renders ``detector``'s members as a table: state, phi (phi-accrual) or silence
    (timeout), incarnation, last heartbeat age; and the last ``keep`` events (default 8).

    With ``cluster`` (a :class:`~faultkit.Cluster` over the same detector, built
    with failure domains) two more columns: each member's domain path and its
    routing (``routable``, or why not: ``down``, ``isolated``, ``ejected``,
    ``held``); members the cluster does not know show ``-``.
    ``title`` heads the table (the monitor puts its address there)."""

    def __init__(self, detector: Any, *, cluster: Optional[Any] = None, title: str = "",
                 keep: int = 8) -> None:
        if isinstance(keep, bool) or not isinstance(keep, int) or keep < 0:
            raise ValueError(f"keep must be an int >= 0, got {keep!r}")
        if cluster is not None and getattr(cluster, "detector", None) is not detector:
            raise ValueError("cluster must be built over the view's detector")
        self.detector = detector
        self.cluster = cluster
        self.title = title
        self.events: Deque[str] = collections.deque(maxlen=keep)

    def event(self, ev: Any) -> None:
        """Record one event for the list under the table (a detector listener)."""
        self.events.append(f"{time.strftime('%H:%M:%S')} {ev.name}: {ev.old} -> {ev.new}")

    def decision(self, d: Any) -> None:
        """Record one isolation decision (an :class:`~faultkit.IsolationPolicy` listener)."""
        self.events.append(f"{time.strftime('%H:%M:%S')} {d.action} {d.domain}: {d.reason}")

    def _placement(self, name: Any) -> tuple:
        c = self.cluster
        if c is None or name not in c:
            return ("-", "-")
        why = c.why_unroutable(name)
        return (c.domains.domain_of(name), ", ".join(why) if why else "routable")

    def render(self, now: float) -> Any:
        """The rich renderable for ``now`` (on the detector's clock)."""
        from rich.console import Group
        from rich.table import Table
        from rich.text import Text

        det = self.detector
        phi = getattr(det, "phi", None)
        table = Table(title=self.title, expand=False)
        columns = ["member", "state", "phi" if phi else "silence", "incarnation"]
        if self.cluster is not None:
            columns += ["domain", "routing"]
        for col in columns + ["last heartbeat"]:
            table.add_column(col)
        colours = {"alive": "green", "suspect": "yellow", "dead": "red", "left": "blue"}
        for name in det.names:
            state = det.state(name)
            last = det.last_heartbeat(name)
            age = "-" if last is None else f"{max(0.0, now - last):.1f} s ago"
            if phi is not None:
                level = "-" if last is None else f"{phi(name, now):.2f}"
            else:
                level = "-" if last is None else f"{max(0.0, now - last):.2f} s"
            cells = [str(name), Text(state, style=colours.get(state, "")), level, str(det.incarnation(name))]
            if self.cluster is not None:
                domain, routing = self._placement(name)
                cells += [domain, Text(routing, style="" if routing in ("routable", "-") else "red")]
            table.add_row(*cells, age)
        return Group(table, Text("\n".join(self.events) or "(no events yet)"))
