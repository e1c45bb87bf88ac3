"""One object that wires the four pillars together for a service's view of its peers.

Data flows one way (docs/architecture.md): heartbeats reach the detector; a scan
(:meth:`Cluster.tick`) turns silence into events; a node declared dead is
routed around, and correlated failures isolate a whole failure domain (the
:class:`~faultkit.contain.IsolationPolicy`); the balancer's lookups follow at
once; checkpoints let a replacement recover the state a failed node held.

Routing has four independent reasons to avoid a node, kept apart so none
undoes another: *down* (from the detector: dead, leaving or left, and
suspect with ``avoid_suspect``), *isolated* (from the failure domains),
*ejected* (from request results, :class:`~faultkit.contain.OutlierDetector`)
and *held* (by the application, e.g. while a restarted node re-syncs).  A
node is routable when it is none of these; the balancer gets one bulk alive
mask whenever that changes.  So a rack restored by the policy does not bring
back a node in it that is still dead, and a node that recovers inside an
isolated rack stays out until the rack is restored.

Member lifecycle (docs/cluster.md): every node is added to the detector
when the Cluster is built (or by :meth:`Cluster.add_node`) and is
``"joining"`` until its first heartbeat - routable, as in Akka's benefit of
the doubt, but dead if nothing is heard within the detector's
``join_timeout``.  Its first heartbeat calls ``on_join``; a heartbeat from a
higher incarnation (the process restarted and lost its memory) is a
``"restarted"`` event and calls ``on_restart``, and with
``hold_restarted=True`` keeps the node out of routing until
:meth:`Cluster.release`.  A graceful leave (the transport's signed leave)
takes it out at once and, unlike a death, never counts toward isolating its
rack.  The Cluster only ever reports events of its own nodes.

Which states count (docs/cluster.md): routing and isolation use the same
failure states - ``"dead"``, plus ``"suspect"`` with ``avoid_suspect`` - so
two briefly suspect nodes cannot take a rack out for the whole hold time
while routing still trusts them.

Threads: :meth:`route`, :meth:`route_many` and :meth:`replicas` may run in
any thread while another calls :meth:`tick` (the balancer swaps its tables
atomically: a lookup sees the old or the new routing), and so may
:meth:`report` (request threads) and :meth:`hold`/:meth:`release`: every
change to the routing masks and its push to the balancer happen under one
lock, so no update is lost between two pushes.  Membership and ticking are
meant for one control thread.
"""
from __future__ import annotations

import threading
import time
from typing import Any, Callable, Hashable, Iterable, Mapping, Optional, Sequence, Union

import numpy as np

from faultkit.balance import Maglev, Rendezvous
from faultkit.balance._spread import SpreadTable
from faultkit.balance.moves import DEFAULT_PROBES, MoveMeter
from faultkit.contain import FailureDomains, IsolationPolicy, OutlierDetector
from faultkit.contain.outlier import Ejection
from faultkit.detect import ALIVE, DEAD, LEAVING, LEFT, RESTARTED, SUSPECT, Event, PhiAccrualDetector
from faultkit.errors import NoLiveNodeError
from faultkit.ring import HashRing

__all__ = ["Cluster"]

_DEFAULT: Any = object()  # "not given" where None means something

_BALANCER_API = ("nodes", "get", "get_many", "set_alive", "add", "remove")


class _IsolationGate:
    """What a :class:`FailureDomains` sees as its attached balancer: it records
    isolation in the cluster's mask instead of marking the balancer directly."""

    def __init__(self, cluster: "Cluster") -> None:
        self._cluster = cluster

    @property
    def nodes(self) -> list:
        return self._cluster.nodes

    def is_up(self, node: Hashable) -> bool:
        c = self._cluster
        i = c._index[node]  # KeyError: not a node of the cluster
        return not c._isolated[i]

    def mark_down_many(self, nodes: Iterable[Hashable]) -> None:
        self._cluster._set_isolated(nodes, True)

    def mark_up_many(self, nodes: Iterable[Hashable]) -> None:
        self._cluster._set_isolated(nodes, False)

    def distribution(self) -> dict:
        # FailureDomains.blast_radius: the keyspace each node serves now.
        return self._cluster.balancer.distribution()


class Cluster:
    """A service's peers with failure detection, containment, load balancing and recovery.

    ``Cluster(nodes, *, balancer=None, domains=None, detector=None,
    policy=None, outliers=None, checkpointer=None, avoid_suspect=False,
    spread="rack", hold_restarted=False, on_join=None, on_restart=None,
    clock=time.monotonic)``

    - ``nodes``: node names (``str``/``bytes``), or a mapping ``node ->
      failure-domain path`` (e.g. ``"eu/az1/r3/h7"``), which builds
      ``domains`` with the default levels region/zone/rack/host.
    - ``balancer``: where keys are routed; default ``HashRing(nodes)``
      (160 vnodes a node).  Any balancer with the failover contract
      (:class:`~faultkit.HashRing`, :class:`~faultkit.Rendezvous`,
      :class:`~faultkit.Maglev`) holding exactly ``nodes``.
    - ``domains``: a :class:`~faultkit.FailureDomains` with every node
      assigned; isolation reaches routing through the cluster (do not
      attach the balancer to it yourself).
    - ``detector``: default ``PhiAccrualDetector(clock=clock)`` with Akka's
      defaults; the nodes it does not track yet are added (joining now).
      Members of the detector that are not nodes are ignored: their events
      never come out of :meth:`tick`.
    - ``policy``: an :class:`~faultkit.IsolationPolicy` over ``domains``;
      default ``IsolationPolicy(domains, failed_states=..., clock=clock)``
      when there are domains (isolate a rack when 2 of its nodes fail
      within 10 s); pass ``False`` for none.  Its ``failed_states`` must be
      the states routing avoids: ``("dead",)``, or ``("suspect", "dead")``
      with ``avoid_suspect`` (ValueError otherwise; docs/cluster.md).
    - ``outliers``: an :class:`~faultkit.OutlierDetector` fed by
      :meth:`report`; default one with Envoy's defaults over the nodes;
      ``False`` for none.
    - ``checkpointer``: a :class:`~faultkit.Checkpointer` for :meth:`save`
      and :meth:`recover`; optional.
    - ``avoid_suspect``: route around suspect nodes too, not only dead ones
      (default False: a suspect node still serves, as in Akka, where
      unreachable is not yet down).
    - ``spread``: the domain level :meth:`placement` and :meth:`replicas`
      spread replicas over.
    - ``hold_restarted``: keep a node that restarted (a ``"restarted"``
      event) out of routing until :meth:`release` (default False).
    - ``on_join(event)``: called by :meth:`tick` for a node's first
      heartbeat (after a join timeout too); ``on_restart(event)`` for each
      restart (``event.old_incarnation`` -> ``event.incarnation``).
    - ``move_probes``: probe keys for estimating the share of the key space
      routing changes move (:class:`~faultkit.balance.moves.MoveMeter`,
      default 4,096; 0 turns it off).  Measured by :meth:`tick` (and
      :meth:`add_node`/:meth:`remove_node`) when routing changed since the
      last measurement, so a change made from a request thread
      (:meth:`report`, :meth:`hold`) never pays for it; HashRing, Maglev and
      Rendezvous balancers only.  :attr:`routing_stats` holds the figures.
    - ``clock``: seconds, monotonic; read when a method's ``now`` is None.
    """

    def __init__(self, nodes: Union[Iterable[Hashable], Mapping[Hashable, str]], *,
                 balancer: Any = None, domains: Optional[FailureDomains] = None,
                 detector: Any = None, policy: Union[IsolationPolicy, None, bool] = None,
                 outliers: Union[OutlierDetector, None, bool] = None,
                 checkpointer: Any = None, avoid_suspect: bool = False, spread: str = "rack",
                 hold_restarted: bool = False,
                 on_join: Optional[Callable[[Event], Any]] = None,
                 on_restart: Optional[Callable[[Event], Any]] = None,
                 move_probes: int = DEFAULT_PROBES,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if not callable(clock):
            raise TypeError(f"clock must be callable, not {type(clock).__name__}")
        for hook_name, hook in (("on_join", on_join), ("on_restart", on_restart)):
            if hook is not None and not callable(hook):
                raise TypeError(f"{hook_name} must be callable, not {type(hook).__name__}")
        if isinstance(nodes, (str, bytes)):
            raise TypeError(f"nodes must be a collection of node names, not a single {type(nodes).__name__}")
        paths = dict(nodes) if isinstance(nodes, Mapping) else None
        names = list(paths) if paths is not None else list(nodes)
        if len(set(names)) != len(names):
            dup = next(n for n in names if names.count(n) > 1)
            raise ValueError(f"node {dup!r} is listed twice")

        if paths is not None:
            if domains is not None:
                raise ValueError("give failure-domain paths either in nodes or through domains, not both")
            domains = FailureDomains()
            for node, path in paths.items():
                domains.assign(node, path)
        if domains is not None:
            if not isinstance(domains, FailureDomains):
                raise TypeError(f"domains must be a FailureDomains, not {type(domains).__name__}")
            missing = [n for n in names if n not in domains]
            if missing:
                raise ValueError(f"nodes without a failure domain: {missing[:5]!r}")

        if balancer is None:
            balancer = HashRing(names)
        for attr in _BALANCER_API:
            if not hasattr(balancer, attr):
                raise TypeError(f"balancer needs .{attr}; {type(balancer).__name__} has none")
        if sorted(map(repr, balancer.nodes)) != sorted(map(repr, names)):
            raise ValueError("the balancer must hold exactly the cluster's nodes")
        if domains is not None and any(b is balancer for b in domains.balancers):
            raise ValueError("domains is attached to the balancer already; the Cluster routes "
                             "isolation itself (detach it first)")

        self.avoid_suspect = bool(avoid_suspect)
        failed = self.failed_states
        if policy is None:
            policy = (IsolationPolicy(domains, failed_states=failed, clock=clock)
                      if domains is not None else False)
        if policy is not False:
            if not isinstance(policy, IsolationPolicy):
                raise TypeError(f"policy must be an IsolationPolicy or False, not {type(policy).__name__}")
            if domains is None or policy.domains is not domains:
                raise ValueError("policy must be built over the cluster's domains")
            if policy.failed_states != frozenset(failed):
                raise ValueError(
                    f"the policy isolates on {sorted(policy.failed_states)!r} but routing avoids "
                    f"{sorted(failed)!r} (avoid_suspect={self.avoid_suspect}); build it with "
                    f"IsolationPolicy(..., failed_states={failed!r}) so both agree")
        if domains is not None:
            domains._level(spread)  # ValueError for an unknown level
        if isinstance(move_probes, bool) or not isinstance(move_probes, int):
            raise TypeError(f"move_probes must be an int, not {type(move_probes).__name__}")
        if move_probes < 0:
            raise ValueError(f"move_probes must be an int >= 0, got {move_probes!r}")

        if outliers is None:
            outliers = OutlierDetector(clock=clock)
        if outliers is not False:
            if not isinstance(outliers, OutlierDetector):
                raise TypeError(f"outliers must be an OutlierDetector or False, not {type(outliers).__name__}")

        if detector is None:
            detector = PhiAccrualDetector(clock=clock)
        start = clock()
        for n in names:
            if n not in detector:
                detector.add(n, start)
            if outliers is not False and n not in outliers:
                outliers.add(n)

        self.balancer = balancer
        self._domains = domains
        self.detector = detector
        self.policy: Optional[IsolationPolicy] = policy or None
        self.outliers: Optional[OutlierDetector] = outliers or None
        self.checkpointer = checkpointer
        self.spread = spread
        self.hold_restarted = bool(hold_restarted)
        self.on_join = on_join
        self.on_restart = on_restart
        self.clock = clock
        self._listeners: list[Callable[[Event], Any]] = []
        self._held_set: set = set()
        self._heard: set = {n for n in names if detector.last_heartbeat(n) is not None}
        self._placements: dict[int, tuple] = {}
        self._lock = threading.RLock()  # the masks and their push to the balancer
        #: Routing changes so far: ``changes`` (pushes that changed the routable set or
        #: the membership), ``measured`` (measurements of the key space they moved: one
        #: per tick with changes), ``moved_keyspace`` (the measured shares, summed) and
        #: ``last_moved_keyspace`` (the latest; None before one or without a
        #: :class:`MoveMeter`).  Read by :mod:`faultkit.observe`.
        self.routing_stats: dict = {"changes": 0, "measured": 0, "moved_keyspace": 0.0,
                                    "last_moved_keyspace": None}
        self._moves = (MoveMeter(balancer, probes=move_probes)
                       if move_probes and isinstance(balancer, (HashRing, Maglev, Rendezvous)) else None)
        #: Probe keys of the moved-share estimate (0: not estimated, e.g. another balancer).
        self.move_probes = move_probes if self._moves is not None else 0
        self._routed: Optional[tuple] = None  # (index, mask bytes) of the last push
        self._moves_due = False
        self._reindex()
        self._measure_moves()  # the meter's starting point
        if domains is not None:
            domains.attach(_IsolationGate(self))

    # ---- routing state -------------------------------------------------
    @property
    def domains(self) -> FailureDomains:
        """The cluster's failure domains; ``ValueError`` if it was built without any."""
        if self._domains is None:
            raise ValueError("this Cluster has no failure domains (give nodes as {node: path} or domains=)")
        return self._domains

    @property
    def failed_states(self) -> tuple:
        """The detector states that count as a failure, for routing and isolation alike:
        ``("dead",)``, or ``("suspect", "dead")`` with ``avoid_suspect``."""
        return (SUSPECT, DEAD) if self.avoid_suspect else (DEAD,)

    def _reindex(self) -> None:
        with self._lock:
            self._reindex_locked()

    def _reindex_locked(self) -> None:
        nodes = list(self.balancer.nodes)
        self._index = {n: i for i, n in enumerate(nodes)}
        self._down = np.zeros(len(nodes), dtype=bool)
        self._isolated = np.zeros(len(nodes), dtype=bool)
        self._ejected = np.zeros(len(nodes), dtype=bool)
        self._held = np.zeros(len(nodes), dtype=bool)
        for n, i in self._index.items():
            self._down[i] = self._is_down_state(self.detector.state(n))
            if self._domains is not None:
                self._isolated[i] = self._domains.is_isolated(n)
            if self.outliers is not None:
                self._ejected[i] = self.outliers.is_ejected(n)
            self._held[i] = n in self._held_set
        self._placements.clear()
        self._push()

    def _is_down_state(self, state: str) -> bool:
        # Not routable: failed (dead; suspect with avoid_suspect), leaving (draining) or left.
        # Joining is routable until its join timeout; restarted is alive.
        return state == DEAD or state == LEFT or state == LEAVING or (self.avoid_suspect and state == SUSPECT)

    def _push(self) -> None:
        mask = ~(self._down | self._isolated | self._ejected | self._held)
        self.balancer.set_alive(mask)
        # Readers (replicas) take this pair in one read: the mask and the
        # per-level live counts derived from it, never one without the other.
        self._view = (mask, {})
        self._count_change(mask)

    def _count_change(self, mask: np.ndarray) -> None:
        """Count a push that changed the routable set or the membership (under the lock)."""
        last, self._routed = self._routed, (self._index, mask.tobytes())
        if last is None or (last[0] is self._index and last[1] == self._routed[1]):
            return
        self.routing_stats["changes"] += 1
        self._moves_due = True

    def _measure_moves(self) -> None:
        """Measure the key space moved since the last measurement (control thread)."""
        if self._moves is None or (not self._moves_due and self._moves.started):
            return  # nothing changed (read unlocked: a change racing this is measured next tick)
        with self._lock:
            self._moves_due = False
            moved = self._moves.measure(self.balancer.nodes)
        if moved is not None:
            st = self.routing_stats
            st["measured"] += 1
            st["moved_keyspace"] += moved
            st["last_moved_keyspace"] = moved

    def _set_isolated(self, nodes: Iterable[Hashable], isolated: bool) -> None:
        with self._lock:
            for n in nodes:
                self._isolated[self._index[n]] = isolated
            self._push()

    def _apply_ejections(self, made: Iterable[Ejection]) -> bool:
        changed = False
        for e in made:
            i = self._index.get(e.host)
            if i is not None:
                v = e.action == "eject"
                if self._ejected[i] != v:
                    self._ejected[i] = v
                    changed = True
        return changed

    # ---- heartbeats and detection --------------------------------------
    def heartbeat(self, node: Hashable, now: Optional[float] = None, *,
                  incarnation: Optional[int] = None) -> bool:
        """Record a heartbeat from ``node`` at ``now`` (seconds; default: the clock), of
        ``incarnation`` if given (a higher one than before is a restart)."""
        return self.detector.heartbeat(node, now, incarnation=incarnation)

    def heartbeat_many(self, nodes: Sequence[Hashable], times: Any) -> None:
        """Record heartbeats of ``nodes`` at ``times`` (seconds), in order, in one native call."""
        ids = np.fromiter((self.detector.id(n) for n in nodes), dtype=np.int64, count=len(nodes))
        self.detector.heartbeat_many(ids, np.asarray(times, dtype=np.float64))

    def leave(self, node: Hashable, incarnation: Optional[int] = None, *,
              now: Optional[float] = None) -> bool:
        """``node`` left gracefully (the detector's ``leave``): out of routing at the next
        :meth:`tick`, and never counted as a failure toward isolating its domain."""
        if node not in self._index:
            raise KeyError(node)
        return self.detector.leave(node, incarnation, now=now)

    def tick(self, now: Optional[float] = None) -> list[Event]:
        """Scan the detector up to ``now``, return ejected nodes whose time is up, route
        around every unroutable node, apply the isolation policy, call the hooks.

        Returns the detector's events of this cluster's nodes (state changes
        since the last tick), after the balancer already routes accordingly;
        each is also passed to ``on_join``/``on_restart`` as it applies and
        then to the listeners.  Call it periodically (e.g. every 100 ms) from
        one thread.
        """
        if now is None:
            now = self.clock()
        index = self._index
        events = [ev for ev in self.detector.scan(now) if ev.name in index]
        with self._lock:
            changed = False
            for ev in events:
                i = index[ev.name]
                down = self._is_down_state(ev.new)
                if self._down[i] != down:
                    self._down[i] = down
                    changed = True
                if ev.new == RESTARTED and self.hold_restarted and not self._held[i]:
                    self._held[i] = True
                    self._held_set.add(ev.name)
                    changed = True
            if self.outliers is not None and self._apply_ejections(self.outliers.tick(now)):
                changed = True
            if changed:
                self._push()
        if self.policy is not None:
            for ev in events:
                self.policy.on_event(ev)
            self.policy.tick(now)
        for ev in events:
            if ev.new in (ALIVE, RESTARTED) and ev.name not in self._heard:
                self._heard.add(ev.name)
                if self.on_join is not None:
                    self.on_join(ev)
            if ev.new == RESTARTED and self.on_restart is not None:
                self.on_restart(ev)
        self._measure_moves()
        for ev in events:
            for fn in list(self._listeners):
                fn(ev)
        return events

    def add_listener(self, fn: Callable[[Event], Any]) -> Callable[[Event], Any]:
        """Call ``fn(event)`` for every event :meth:`tick` returns; returns ``fn``."""
        if not callable(fn):
            raise TypeError(f"listener must be callable, not {type(fn).__name__}")
        self._listeners.append(fn)
        return fn

    # ---- request results: outlier ejection ------------------------------
    def report(self, node: Hashable, ok: bool, latency: Optional[float] = None, *,
               now: Optional[float] = None) -> Optional[Ejection]:
        """One request result of ``node``: ``ok`` and its ``latency`` (seconds, optional).

        Feeds the :class:`~faultkit.OutlierDetector`; an ejection it causes
        (e.g. the 5th error in a row) reaches routing before this returns,
        through the same bulk mask as death and isolation.  Returns that
        :class:`~faultkit.contain.Ejection`, or None.  :meth:`tick` returns
        an ejected node to routing when its time is up, without waiting for
        a request.  KeyError for an unknown node; RuntimeError if the
        cluster was built with ``outliers=False``.
        """
        if node not in self._index:
            raise KeyError(node)
        if self.outliers is None:
            raise RuntimeError("this Cluster has no outlier detector (outliers=False)")
        with self._lock:
            e = self.outliers.report(node, ok, latency, now=now)
            if e is not None and self._apply_ejections((e,)):
                self._push()
        return e

    def eject(self, node: Hashable, *, now: Optional[float] = None) -> Optional[Ejection]:
        """Eject ``node`` by hand (as the outlier detector would: its time, its cap)."""
        if node not in self._index:
            raise KeyError(node)
        if self.outliers is None:
            raise RuntimeError("this Cluster has no outlier detector (outliers=False)")
        with self._lock:
            e = self.outliers.eject(node, now=now)
            if e is not None and self._apply_ejections((e,)):
                self._push()
        return e

    # ---- holds ---------------------------------------------------------------
    def hold(self, node: Hashable) -> None:
        """Keep ``node`` out of routing until :meth:`release` (e.g. while it re-syncs)."""
        with self._lock:
            i = self._index[node]
            self._held_set.add(node)
            if not self._held[i]:
                self._held[i] = True
                self._push()

    def release(self, node: Hashable) -> None:
        """Undo :meth:`hold` (and a ``hold_restarted`` hold); KeyError for an unknown node."""
        with self._lock:
            i = self._index[node]
            self._held_set.discard(node)
            if self._held[i]:
                self._held[i] = False
                self._push()

    @property
    def held(self) -> list:
        """The held nodes, in index order."""
        nodes = self.balancer.nodes
        return [nodes[i] for i in np.flatnonzero(self._held).tolist()]

    # ---- routing ---------------------------------------------------------
    @property
    def nodes(self) -> list:
        """The nodes, in the balancer's index order (the order of :meth:`route_many`'s indices)."""
        return list(self.balancer.nodes)

    def route(self, key: Any) -> Hashable:
        """The node that serves ``key`` now: its balancer owner, or the next routable one.

        ``NoLiveNodeError`` when no node is routable.
        """
        return self.balancer.get(key)

    def route_many(self, keys: Any) -> np.ndarray:
        """Indices into :attr:`nodes` of the node serving each key (int32 array)."""
        return self.balancer.get_many(keys)

    def replicas(self, key: Any, n: int, spread: Optional[str] = _DEFAULT) -> list:
        """``n`` routable nodes for ``key`` in ``n`` distinct domains at level ``spread``.

        ``spread`` defaults to the cluster's (``"rack"``) when it has domains;
        ``None`` (the default without domains) gives the balancer's
        ``get_n`` instead: ``n`` distinct routable nodes in ring order, any
        domains (``TypeError`` for a balancer without it, such as Maglev).

        With a level, a choose-with-retry over the domain tree, as CRUSH's
        ``chooseleaf``: the domains at that level ranked by rendezvous
        (highest-random-weight) score ``XXH3(hash64(key) ^ hash64(domain))``,
        the ones with no routable node skipped, and in each chosen domain its
        routable node of highest score ``XXH3(hash64(key) ^
        hash64(node, seed))``.  While every node is routable this is exactly
        :meth:`placement`.  Each replica stays where it is until its node is
        down, isolated, ejected or held: then only that replica moves, to the
        next routable node of its domain, or to the next domain in the
        key's ranking when none is left; no other key moves.

        With fewer routable domains than ``n``, one node per routable domain
        in rank order, then the fill: the next routable node of each used
        domain, domain after domain in rank order, round after round, until
        ``n`` nodes or no routable node is left (fewer than ``n`` then).
        ``NoLiveNodeError`` if no node is routable.  The list is in domain
        rank order (the fill after); ``replicas(key, n)[0]`` is the primary.
        """
        if spread is _DEFAULT:
            spread = self.spread if self._domains is not None else None
        if isinstance(n, bool) or not isinstance(n, int):
            raise TypeError(f"n must be an int, not {type(n).__name__}")
        if n < 0:
            raise ValueError(f"n must be >= 0, got {n!r}")
        if spread is None:
            get_n = getattr(self.balancer, "get_n", None)
            if get_n is None:
                raise TypeError(f"{type(self.balancer).__name__} has no get_n: use a HashRing or Rendezvous")
            return get_n(key, n)
        if self._domains is None:
            raise RuntimeError("replicas across domains need failure domains: Cluster({node: path, ...})")
        if n == 0:
            return []
        p, flat_idx, table = self._placement_table(spread)
        mask, cache = self._view
        live = cache.get(id(p))
        if live is None:
            flat_live = np.zeros(len(flat_idx), dtype=bool)
            ok = flat_idx >= 0
            flat_live[ok] = mask[flat_idx[ok]]
            live = cache[id(p)] = table.live(flat_live)
        got = live.choose(key, n)
        if not got:
            raise NoLiveNodeError("no routable node in any domain")
        return got

    def _placement_table(self, spread: str) -> tuple:
        # The domains' rendezvous tables for ``spread`` and, per entry, the
        # node's index here (-1: a service of the domains that is no node).
        depth = self._domains._level(spread) + 1
        p = self._domains._placement(depth)
        cached = self._placements.get(depth)
        if cached is not None and cached[0] is p:
            return cached
        index = self._index
        flat_idx = np.array([index.get(s, -1) for s in p.flat], dtype=np.int64)
        offsets = np.append(p.offsets, len(p.flat))
        svc = np.concatenate(p.svc_hashes) if p.svc_hashes else np.empty(0, np.uint64)
        cached = self._placements[depth] = (p, flat_idx, SpreadTable(p.hashes, offsets, svc, list(p.flat)))
        return cached

    def placement(self, key: Any, n: int) -> list:
        """``n`` nodes for ``key`` in ``n`` distinct domains at level ``spread``.

        Stable under failures (placement decides where data lives; routing
        decides where requests go now), so losing one domain loses at most
        one replica.  Needs domains.  :meth:`replicas` is the same choice
        restricted to routable nodes.
        """
        if self._domains is None:
            raise RuntimeError("placement needs failure domains: Cluster({node: path, ...})")
        return self._domains.place(key, n, spread=self.spread)

    def state(self, node: Hashable) -> str:
        """The detector's state of ``node``: ``"joining"``, ``"alive"``, ``"suspect"``,
        ``"dead"``, ``"leaving"`` or ``"left"``."""
        if node not in self._index:
            raise KeyError(node)
        return self.detector.state(node)

    def is_routable(self, node: Hashable) -> bool:
        """Whether lookups may land on ``node`` (not down, isolated, ejected or held)."""
        if node not in self._index:
            raise KeyError(node)
        i = self._index[node]
        return not (self._down[i] or self._isolated[i] or self._ejected[i] or self._held[i])

    def why_unroutable(self, node: Hashable) -> list:
        """The reasons lookups avoid ``node``: a sublist of ``["down", "isolated",
        "ejected", "held"]`` (empty when it is routable)."""
        if node not in self._index:
            raise KeyError(node)
        i = self._index[node]
        return [why for why, arr in (("down", self._down), ("isolated", self._isolated),
                                     ("ejected", self._ejected), ("held", self._held)) if arr[i]]

    def unroutable(self) -> list:
        """The nodes lookups currently avoid (down, isolated, ejected or held), in index order."""
        nodes = self.balancer.nodes
        mask = self._down | self._isolated | self._ejected | self._held
        return [nodes[i] for i in np.flatnonzero(mask).tolist()]

    # ---- membership ------------------------------------------------------
    def add_node(self, node: Hashable, path: Optional[str] = None, *, weight: float = 1.0,
                 now: Optional[float] = None) -> None:
        """Add ``node`` (with its failure-domain ``path`` when the cluster has domains).

        It takes its share of keys from the others at once (consistent
        hashing moves about 1/n of the keys); the detector tracks it as
        joining from ``now`` (default: the clock): dead if not heard within
        its ``join_timeout``.
        """
        if node in self._index:
            raise ValueError(f"node {node!r} is already in the cluster")
        if (path is None) != (self._domains is None):
            raise ValueError("a path is needed exactly when the cluster has failure domains"
                             f" (got path={path!r})")
        if self._domains is not None:
            self._domains.assign(node, path, strict=True)
        try:
            self.balancer.add(node, weight)
        except BaseException:
            if self._domains is not None:
                self._domains.remove(node)
            raise
        if node not in self.detector:
            self.detector.add(node, self.clock() if now is None else now)
        if self.outliers is not None and node not in self.outliers:
            self.outliers.add(node)
        self._reindex()
        self._measure_moves()

    def remove_node(self, node: Hashable) -> None:
        """Remove ``node`` for good: from the balancer, the detector, the outlier
        detector and the domains."""
        if node not in self._index:
            raise KeyError(node)
        self.balancer.remove(node)
        self.detector.remove(node)
        if self.outliers is not None and node in self.outliers:
            self.outliers.remove(node)
        if self._domains is not None:
            self._domains.remove(node)
        self._held_set.discard(node)
        self._heard.discard(node)
        self._reindex()
        self._measure_moves()

    def __len__(self) -> int:
        return len(self._index)

    def __contains__(self, node: object) -> bool:
        try:
            return node in self._index
        except TypeError:
            return False

    # ---- recovery --------------------------------------------------------
    def save(self, state: Any, **options: Any) -> Any:
        """Checkpoint ``state`` durably (the checkpointer's ``save``); returns its info."""
        return self._ckpt().save(state, **options)

    def recover(self, **options: Any) -> Any:
        """The newest valid checkpointed state (the checkpointer's ``recover``)."""
        return self._ckpt().recover(**options)

    def _ckpt(self) -> Any:
        if self.checkpointer is None:
            raise RuntimeError("this Cluster has no checkpointer: Cluster(..., checkpointer=Checkpointer(path))")
        return self.checkpointer

    def __repr__(self) -> str:
        down = len(self.unroutable())
        return (f"Cluster({len(self)} nodes, {down} unroutable, "
                f"balancer={type(self.balancer).__name__}, detector={type(self.detector).__name__})")
