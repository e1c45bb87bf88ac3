"""One metrics model for every pillar, read when scraped, so the hot paths pay nothing.

A :class:`Registry` holds the objects a service wants to see (breakers,
bulkheads, detectors, heartbeat receivers, clusters, nodes, checkpointers,
journals), each under a name.  :meth:`Registry.collect` reads their counters
and states at that moment (counters the native cores already keep, such as a
breaker's lifetime counts, are read, not duplicated) and returns
:class:`Metric` families named and labelled as Prometheus expects
(``faultkit_breaker_calls_total{name,outcome}``; units in the name).  The
exporters in :mod:`faultkit.observe.prometheus` and
:mod:`faultkit.observe.otel` only translate these families.

Transitions of detectors, clusters and nodes are counted by a listener the
registry adds (the objects' own listener mechanism); every other figure is read
from the object.  docs/observe.md lists every metric.
"""
from __future__ import annotations

import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Iterable, List, Optional, Tuple

__all__ = ["Metric", "Registry"]

#: Per-member gauges (phi, silence) are exported for at most this many members of one
#: detector by default: one time series per member does not scale to arrays of 100k.
PER_MEMBER_LIMIT = 1000


@dataclass
class Metric:
    """One metric family: ``name`` (full Prometheus name, counters end in ``_total``),
    ``kind`` (``"counter"`` or ``"gauge"``), ``help``, ``labels`` (label names) and
    ``samples``: ``[(label values, value)]``."""

    name: str
    kind: str
    help: str
    labels: Tuple[str, ...]
    samples: List[Tuple[Tuple[str, ...], float]] = field(default_factory=list)


# (name, kind, help, labels) of every family; the adapters fill samples by name.
_FAMILIES: Dict[str, Tuple[str, str, Tuple[str, ...]]] = {
    # detect
    "faultkit_detector_members": ("gauge", "Members of a detector, by state.", ("name", "state")),
    "faultkit_detector_transitions_total": (
        "counter", "State changes a detector reported, by the new state.", ("name", "state")),
    "faultkit_detector_phi": ("gauge", "Phi (suspicion) of each member, phi-accrual detectors.",
                              ("name", "member")),
    "faultkit_detector_silence_seconds": ("gauge", "Seconds since each member's last heartbeat.",
                                          ("name", "member")),
    "faultkit_heartbeat_datagrams_total": (
        "counter", "Heartbeat datagrams and entries a receiver handled, by fate "
        "(accepted, or the reason it was dropped).", ("name", "fate")),
    # contain
    "faultkit_breaker_state": ("gauge", "1 for the breaker's current state, 0 for the others.",
                               ("name", "state")),
    "faultkit_breaker_calls_total": (
        "counter", "Calls whose outcome a breaker recorded, by outcome "
        "(success, failure, ignored; slow calls are also counted under slow).", ("name", "outcome")),
    "faultkit_breaker_rejections_total": ("counter", "Calls a breaker refused.", ("name",)),
    "faultkit_breaker_transitions_total": ("counter", "State changes of a breaker.", ("name",)),
    "faultkit_bulkhead_in_flight": ("gauge", "Calls holding a bulkhead slot.", ("name",)),
    "faultkit_bulkhead_waiting": ("gauge", "Callers waiting for a bulkhead slot.", ("name",)),
    "faultkit_bulkhead_capacity": ("gauge", "A bulkhead's max_concurrent.", ("name",)),
    "faultkit_bulkhead_rejections_total": ("counter", "Calls a bulkhead refused.", ("name",)),
    "faultkit_cluster_members": ("gauge", "Members of a cluster, by detector state.", ("name", "state")),
    "faultkit_cluster_routable": ("gauge", "Members a cluster routes to.", ("name",)),
    "faultkit_cluster_live_fraction": ("gauge", "Routable members / members.", ("name",)),
    "faultkit_cluster_unroutable": (
        "gauge", "Members kept out of routing, by reason (dead, left, isolated, ejected, held, ...); "
        "a member may count under several.", ("name", "reason")),
    "faultkit_cluster_transitions_total": (
        "counter", "Events a cluster reported, by the new state.", ("name", "state")),
    "faultkit_cluster_isolation_decisions_total": (
        "counter", "Decisions of a cluster's isolation policy, by action (isolate, restore, refuse).",
        ("name", "action")),
    "faultkit_cluster_outlier_events_total": (
        "counter", "Outlier ejections of a cluster's nodes and their returns, by action "
        "(eject, return).", ("name", "action")),
    # balance
    "faultkit_cluster_routing_changes_total": (
        "counter", "Changes of the routable set or the membership pushed to a cluster's balancer.",
        ("name",)),
    "faultkit_cluster_move_measurements_total": (
        "counter", "Measurements of the key space routing changes moved (one per tick that "
        "changed routing).", ("name",)),
    "faultkit_cluster_moved_keyspace_ratio_total": (
        "counter", "Share of the key space whose node changed, estimated from probe keys at each "
        "measurement, summed (divide by the measurements for the mean).", ("name",)),
    "faultkit_cluster_last_moved_keyspace_ratio": (
        "gauge", "Share of the key space the latest measured routing change moved (estimated).",
        ("name",)),
    # recover
    "faultkit_checkpoint_saves_total": ("counter", "Checkpoints committed.", ("name",)),
    "faultkit_checkpoint_save_failures_total": ("counter", "Saves that raised.", ("name",)),
    "faultkit_checkpoint_written_bytes_total": ("counter", "File bytes of committed checkpoints.",
                                                ("name",)),
    "faultkit_checkpoint_save_seconds_total": ("counter", "Time spent committing checkpoints.",
                                               ("name",)),
    "faultkit_checkpoint_recoveries_total": ("counter", "Successful recoveries.", ("name",)),
    "faultkit_checkpoint_fallbacks_total": (
        "counter", "Checkpoints skipped as corrupt or unreadable during recovery.", ("name",)),
    "faultkit_journal_next_lsn": ("gauge", "The LSN the next append gets.", ("name",)),
    "faultkit_journal_durable_lsn": ("gauge", "The highest LSN known to be on disk.", ("name",)),
    "faultkit_journal_syncs_total": ("counter", "fsyncs the journal issued.", ("name",)),
    "faultkit_journal_appended_bytes_total": (
        "counter", "Framed bytes of the records a journal's writer appended.", ("name",)),
    "faultkit_journal_stored_bytes": (
        "gauge", "Bytes of a journal's segment files on disk (new segments are preallocated).",
        ("name",)),
    "faultkit_journal_failed": (
        "gauge", "1 once a journal's sync failed (sticky: reopen and recover it).", ("name",)),
    # run
    "faultkit_node_peers": ("gauge", "Members of a node's view, by state.", ("name", "state")),
    "faultkit_node_routable": ("gauge", "Members the node routes to.", ("name",)),
    "faultkit_node_events_total": ("counter", "Events a node reported, by the new state.",
                                   ("name", "state")),
    "faultkit_node_detections_total": (
        "counter", "Dead verdicts on members this node had heard from.", ("name",)),
    "faultkit_node_detection_seconds_total": (
        "counter", "Seconds from each such member's last heartbeat to the node's dead verdict (routing "
        "around it), summed: divided by detections, the node's mean time to converge on a failure.",
        ("name",)),
    "faultkit_node_heartbeats_sent_total": ("counter", "Heartbeat datagrams a node sent.", ("name",)),
    "faultkit_node_stalls_total": (
        "counter", "Ticks far later than due (the node's own process was paused).", ("name",)),
    "faultkit_node_partitioned": (
        "gauge", "1 while the node hears from fewer than half of the members it watches.", ("name",)),
    "faultkit_node_membership_healthy": (
        "gauge", "1 while the node's membership backend is reachable (0: fail-static).", ("name",)),
    "faultkit_node_membership_operations_total": (
        "counter", "Operations of the membership backend by kind (etcd: keepalives, errors, resyncs, "
        "grants, bad_records, held_evictions).", ("name", "operation")),
    "faultkit_node_lease_remaining_seconds": (
        "gauge", "Seconds until the node's etcd lease expires unless renewed.", ("name",)),
}


class _Entry:
    """One registered object: its adapter, and the transition counts its listener keeps."""

    __slots__ = ("obj", "name", "read", "counts", "unlisten")

    def __init__(self, obj: Any, name: str, read: Callable[["_Entry", dict], None]) -> None:
        self.obj = obj
        self.name = name
        self.read = read
        self.counts: Counter = Counter()
        self.unlisten: Optional[Callable[[], None]] = None


class Registry:
    """The objects a service exports metrics for, each under a ``name`` label value.

    ``per_member_limit`` (default 1000): detectors with more members than this export
    no per-member gauges (phi, silence), only the per-state counts."""

    def __init__(self, *, per_member_limit: int = PER_MEMBER_LIMIT,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if isinstance(per_member_limit, bool) or not isinstance(per_member_limit, int) or per_member_limit < 0:
            raise ValueError(f"per_member_limit must be an int >= 0, got {per_member_limit!r}")
        if not callable(clock):
            raise TypeError(f"clock must be callable, got {type(clock).__name__}")
        self.per_member_limit = per_member_limit
        self._clock = clock
        self._entries: Dict[Tuple[Callable, str], _Entry] = {}
        self._lock = threading.Lock()

    def add(self, obj: Any, name: str) -> Any:
        """Export ``obj``'s metrics under ``name``; returns ``obj``.

        ``obj`` is a CircuitBreaker, Bulkhead, TimeoutDetector, PhiAccrualDetector,
        HeartbeatReceiver, Cluster, Node, Checkpointer or Journal (``TypeError``
        otherwise).  Objects of different kinds may share a name (a detector and the
        receiver that feeds it); ``ValueError`` if ``name`` is empty or already used by
        an object of the same kind."""
        if not isinstance(name, str) or not name:
            raise ValueError(f"name must be a non-empty str, got {name!r}")
        read, listens = _adapter(obj)
        entry = _Entry(obj, name, read)
        key = (read, name)
        with self._lock:
            if key in self._entries:
                raise ValueError(f"name {name!r} is already registered for a {type(obj).__name__}")
            self._entries[key] = entry
        if listens:
            def count(ev: Any) -> None:
                entry.counts[ev.new] += 1
            obj.add_listener(count)
            remove = getattr(obj, "remove_listener", None)
            if remove is not None:
                entry.unlisten = lambda: remove(count)
        return obj

    def remove(self, obj: Any) -> None:
        """Stop exporting ``obj``; ``KeyError`` if it is not registered."""
        with self._lock:
            key = next((k for k, e in self._entries.items() if e.obj is obj), None)
            entry = self._entries.pop(key, None) if key is not None else None
        if entry is None:
            raise KeyError(f"{type(obj).__name__} object {obj!r} is not registered")
        if entry.unlisten is not None:
            try:
                entry.unlisten()
            except ValueError:
                pass

    def names(self) -> List[str]:
        """The registered names, in registration order (a shared name once)."""
        with self._lock:
            return list(dict.fromkeys(name for _, name in self._entries))

    def collect(self) -> List[Metric]:
        """Every family with at least one sample, read now."""
        with self._lock:
            entries = list(self._entries.values())
        out: Dict[str, list] = {}
        now = self._clock()
        for e in entries:
            e.read(e, _Sink(out, e.name, now, self.per_member_limit))
        return [Metric(n, _FAMILIES[n][0], _FAMILIES[n][1], _FAMILIES[n][2], samples)
                for n, samples in out.items() if samples]


class _Sink:
    """What an adapter writes to: ``sink(metric, value, *extra label values)``; ``now``
    (the registry's clock at this collection) and ``per_member_limit`` for the adapters."""

    __slots__ = ("out", "name", "now", "per_member_limit")

    def __init__(self, out: Dict[str, list], name: str, now: float, per_member_limit: int) -> None:
        self.out, self.name, self.now, self.per_member_limit = out, name, now, per_member_limit

    def __call__(self, metric: str, value: float, *labels: str) -> None:
        self.out.setdefault(metric, []).append(((self.name, *labels), float(value)))


# ------------------------------------------------------------------ adapters

def _adapter(obj: Any) -> Tuple[Callable[[_Entry, Any], None], bool]:
    """(reader, whether the registry counts the object's events through a listener)."""
    from faultkit.contain import Bulkhead, CircuitBreaker
    from faultkit.detect import HeartbeatReceiver, PhiAccrualDetector, TimeoutDetector

    if isinstance(obj, CircuitBreaker):
        return _read_breaker, False
    if isinstance(obj, Bulkhead):
        return _read_bulkhead, False
    if isinstance(obj, (TimeoutDetector, PhiAccrualDetector)):
        return _read_detector, True
    if isinstance(obj, HeartbeatReceiver):
        return _read_receiver, False
    kind = type(obj).__name__
    module = type(obj).__module__
    if module.startswith("faultkit"):
        if kind == "Cluster":
            return _read_cluster, True
        if kind == "Node":
            return _read_node, True
        if kind == "Checkpointer":
            return _read_checkpointer, False
        if kind == "Journal":
            return _read_journal, False
    raise TypeError(f"faultkit.observe has no metrics for {type(obj).__name__} objects")


_BREAKER_STATES = ("closed", "open", "half_open")


def _read_breaker(e: _Entry, put: Any) -> None:
    m = e.obj.metrics()
    life = m["lifetime"]
    for s in _BREAKER_STATES:
        put("faultkit_breaker_state", 1.0 if m["state"] == s else 0.0, s)
    put("faultkit_breaker_calls_total", life["calls"] - life["failures"], "success")
    put("faultkit_breaker_calls_total", life["failures"], "failure")
    put("faultkit_breaker_calls_total", life["ignored"], "ignored")
    put("faultkit_breaker_calls_total", life["slow"], "slow")
    put("faultkit_breaker_rejections_total", life["rejections"])
    put("faultkit_breaker_transitions_total", life["transitions"])


def _read_bulkhead(e: _Entry, put: Any) -> None:
    b = e.obj
    put("faultkit_bulkhead_in_flight", b.in_flight)
    put("faultkit_bulkhead_waiting", b.waiting)
    put("faultkit_bulkhead_capacity", b.max_concurrent)
    put("faultkit_bulkhead_rejections_total", b.refused)


def _read_detector(e: _Entry, put: Any) -> None:
    det = e.obj
    names = det.names
    states = Counter(det.state(n) for n in names)
    for s, n in sorted(states.items()):
        put("faultkit_detector_members", n, s)
    for s, n in sorted(e.counts.items()):
        put("faultkit_detector_transitions_total", n, s)
    if len(names) > put.per_member_limit:
        return
    now = put.now
    phi = getattr(det, "phi", None)
    for n in names:
        last = det.last_heartbeat(n)
        if last is not None:
            put("faultkit_detector_silence_seconds", max(0.0, now - last), str(n))
        if phi is not None and last is not None:
            put("faultkit_detector_phi", phi(n, now), str(n))


def _read_receiver(e: _Entry, put: Any) -> None:
    for fate, n in sorted(e.obj.stats.items()):
        put("faultkit_heartbeat_datagrams_total", n, fate)


def _read_cluster(e: _Entry, put: Any) -> None:
    c = e.obj
    nodes = c.nodes
    states = Counter(c.state(n) for n in nodes)
    for s, n in sorted(states.items()):
        put("faultkit_cluster_members", n, s)
    unroutable = c.unroutable()
    routable = len(nodes) - len(unroutable)
    put("faultkit_cluster_routable", routable)
    put("faultkit_cluster_live_fraction", routable / len(nodes) if nodes else 0.0)
    reasons: Counter = Counter()
    for n in unroutable:
        reasons.update(c.why_unroutable(n))
    for r, n in sorted(reasons.items()):
        put("faultkit_cluster_unroutable", n, r)
    for s, n in sorted(e.counts.items()):
        put("faultkit_cluster_transitions_total", n, s)
    if c.policy is not None:
        actions = Counter(d.action for d in c.policy.decisions)
        for a in ("isolate", "restore", "refuse"):
            put("faultkit_cluster_isolation_decisions_total", actions[a], a)
    if c.outliers is not None:
        for a, n in sorted(c.outliers.counts.items()):
            put("faultkit_cluster_outlier_events_total", n, a)
    _read_routing(c, put)


def _read_routing(c: Any, put: Any) -> None:
    st = c.routing_stats
    put("faultkit_cluster_routing_changes_total", st["changes"])
    if c.move_probes:
        put("faultkit_cluster_move_measurements_total", st["measured"])
        put("faultkit_cluster_moved_keyspace_ratio_total", st["moved_keyspace"])
        if st["last_moved_keyspace"] is not None:
            put("faultkit_cluster_last_moved_keyspace_ratio", st["last_moved_keyspace"])


def _read_node(e: _Entry, put: Any) -> None:
    node = e.obj
    view = node.view()
    for s, n in sorted(Counter(view.values()).items()):
        put("faultkit_node_peers", n, s)
    for s, n in sorted(e.counts.items()):
        put("faultkit_node_events_total", n, s)
    st = node.stats
    put("faultkit_node_detections_total", st["detections"])
    put("faultkit_node_detection_seconds_total", st["detection_seconds"])
    put("faultkit_node_heartbeats_sent_total", st["sent"])
    put("faultkit_node_stalls_total", st["stalls"])
    membership = node.membership
    put("faultkit_node_membership_healthy", 1.0 if membership.healthy else 0.0)
    for op, n in sorted(getattr(membership, "stats", {}).items()):
        put("faultkit_node_membership_operations_total", n, op)
    remaining = getattr(membership, "lease_remaining", None)
    if remaining is not None:
        put("faultkit_node_lease_remaining_seconds", remaining)
    if node.cluster is None:  # not started: no view, no routing yet
        return
    put("faultkit_node_routable", len(node.routable()))
    put("faultkit_node_partitioned", 1.0 if node.partitioned else 0.0)
    _read_routing(node.cluster, put)


def _read_checkpointer(e: _Entry, put: Any) -> None:
    st = e.obj.stats
    put("faultkit_checkpoint_saves_total", st["saves"])
    put("faultkit_checkpoint_save_failures_total", st["save_failures"])
    put("faultkit_checkpoint_written_bytes_total", st["bytes_written"])
    put("faultkit_checkpoint_save_seconds_total", st["save_seconds"])
    put("faultkit_checkpoint_recoveries_total", st["recoveries"])
    put("faultkit_checkpoint_fallbacks_total", st["recover_fallbacks"])


def _read_journal(e: _Entry, put: Any) -> None:
    j = e.obj
    put("faultkit_journal_next_lsn", j.next_lsn)
    put("faultkit_journal_durable_lsn", j.durable_lsn)
    put("faultkit_journal_syncs_total", j.syncs)
    put("faultkit_journal_appended_bytes_total", j.appended_bytes)
    put("faultkit_journal_stored_bytes", sum(size for _, _, size in j.segments()))
    put("faultkit_journal_failed", 1.0 if j.failed else 0.0)


def families() -> Iterable[Tuple[str, str, str, Tuple[str, ...]]]:
    """(name, kind, help, labels) of every metric the model defines (docs/observe.md)."""
    for n, (kind, help, labels) in _FAMILIES.items():
        yield n, kind, help, labels

