"""One object that wires the four pillars together for a service's view of its peers.

Data flows one way (docs/architecture.md): heartbeats reach the detector; a scan
(:meth:`Cluster.tick`) turns silence into events; a node declared dead is
routed around, and correlated failures isolate a whole failure domain (the
:class:`~faultkit.contain.IsolationPolicy`); the balancer's lookups follow at
once; checkpoints let a replacement recover the state a failed node held.

Routing has two independent reasons to avoid a node, kept apart so neither
undoes the other: *dead* (from the detector) and *isolated* (from the failure
domains).  A node is routable when it is neither; the balancer gets one bulk
alive mask whenever that changes.  So a rack restored by the policy does not
bring back a node in it that is still dead, and a node that recovers inside
an isolated rack stays out until the rack is restored.

Threads: :meth:`route`, :meth:`route_many` and :meth:`replicas` may run in
any thread while another calls :meth:`tick` (the balancer swaps its tables
atomically: a lookup sees the old or the new routing).  Membership and
ticking are meant for one control thread.
"""
from __future__ import annotations

import time
from typing import Any, Callable, Hashable, Iterable, Mapping, Optional, Sequence, Union

import numpy as np

from faultkit.contain import FailureDomains, IsolationPolicy
from faultkit.detect import DEAD, SUSPECT, Event, PhiAccrualDetector
from faultkit.ring import HashRing

__all__ = ["Cluster"]

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


class Cluster:
    """A service's peers with failure detection, containment, load balancing and recovery.

    ``Cluster(nodes, *, balancer=None, domains=None, detector=None,
    policy=None, checkpointer=None, avoid_suspect=False, spread="rack",
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
      defaults; nodes it does not track yet are added.
    - ``policy``: an :class:`~faultkit.IsolationPolicy` over ``domains``;
      default ``IsolationPolicy(domains, clock=clock)`` when there are
      domains (isolate a rack when 2 of its nodes fail within 10 s); pass
      ``False`` for none.
    - ``checkpointer``: a :class:`~faultkit.Checkpointer` for :meth:`save`
      and :meth:`recover`; optional.
    - ``avoid_suspect``: route around suspect nodes too, not only dead ones
      (default False: a suspect node still serves, as in Akka, where
      unreachable is not yet down).
    - ``spread``: the domain level :meth:`placement` spreads replicas over.
    - ``clock``: seconds, monotonic; read when a method's ``now`` is None.
    """

    def __init__(self, nodes: Union[Iterable[Hashable], Mapping[Hashable, str]], *,
                 balancer: Any = None, domains: Optional[FailureDomains] = None,
                 detector: Any = None, policy: Union[IsolationPolicy, None, bool] = None,
                 checkpointer: Any = None, avoid_suspect: bool = False, spread: str = "rack",
                 clock: Callable[[], float] = time.monotonic) -> None:
        if not callable(clock):
            raise TypeError(f"clock must be callable, not {type(clock).__name__}")
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

        if detector is None:
            detector = PhiAccrualDetector(clock=clock)
        for n in names:
            if n not in detector:
                detector.add(n)

        if policy is None:
            policy = IsolationPolicy(domains, clock=clock) if domains is not None else False
        if policy is not False:
            if not isinstance(policy, IsolationPolicy):
                raise TypeError(f"policy must be an IsolationPolicy or False, not {type(policy).__name__}")
            if domains is None or policy.domains is not domains:
                raise ValueError("policy must be built over the cluster's domains")
        if domains is not None:
            domains._level(spread)  # ValueError for an unknown level

        self.balancer = balancer
        self.domains = domains
        self.detector = detector
        self.policy: Optional[IsolationPolicy] = policy or None
        self.checkpointer = checkpointer
        self.avoid_suspect = bool(avoid_suspect)
        self.spread = spread
        self.clock = clock
        self._listeners: list[Callable[[Event], Any]] = []
        self._reindex()
        if domains is not None:
            domains.attach(_IsolationGate(self))

    # ---- routing state -------------------------------------------------
    def _reindex(self, dead: Optional[dict] = None, isolated: Optional[dict] = None) -> None:
        nodes = list(self.balancer.nodes)
        self._index = {n: i for i, n in enumerate(nodes)}
        self._dead = np.zeros(len(nodes), dtype=bool)
        self._isolated = np.zeros(len(nodes), dtype=bool)
        for n, i in self._index.items():
            self._dead[i] = self._is_down_state(self.detector.state(n))
            if self.domains is not None:
                self._isolated[i] = self.domains.is_isolated(n)
        self._push()

    def _is_down_state(self, state: str) -> bool:
        return state == DEAD or (self.avoid_suspect and state == SUSPECT)

    def _push(self) -> None:
        self.balancer.set_alive(~(self._dead | self._isolated))

    def _set_isolated(self, nodes: Iterable[Hashable], isolated: bool) -> None:
        for n in nodes:
            self._isolated[self._index[n]] = isolated
        self._push()

    # ---- heartbeats and detection --------------------------------------
    def heartbeat(self, node: Hashable, now: Optional[float] = None) -> None:
        """Record a heartbeat from ``node`` at ``now`` (seconds; default: the clock)."""
        self.detector.heartbeat(node, now)

    def heartbeat_many(self, nodes: Sequence[Hashable], times: Any) -> None:
        """Record heartbeats of ``nodes`` at ``times`` (seconds), in order, in one native call."""
        ids = np.fromiter((self.detector.id(n) for n in nodes), dtype=np.int64, count=len(nodes))
        self.detector.heartbeat_many(ids, np.asarray(times, dtype=np.float64))

    def tick(self, now: Optional[float] = None) -> list[Event]:
        """Scan the detector up to ``now``, route around dead nodes, apply the isolation policy.

        Returns the detector's events (state changes since the last tick),
        after the balancer already routes accordingly; each is also passed
        to the listeners.  Call it periodically (e.g. every 100 ms) from one
        thread.
        """
        if now is None:
            now = self.clock()
        events = self.detector.scan(now)
        changed = False
        for ev in events:
            i = self._index.get(ev.name)
            if i is None:
                continue
            down = self._is_down_state(ev.new)
            if self._dead[i] != down:
                self._dead[i] = down
                changed = True
        if changed:
            self._push()
        if self.policy is not None:
            for ev in events:
                self.policy.on_event(ev)
            self.policy.tick(now)
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

    def replicas(self, key: Any, n: int) -> list:
        """``n`` distinct routable nodes for ``key`` in failover order (the balancer's ``get_n``;
        ``TypeError`` for a balancer without one, such as Maglev)."""
        get_n = getattr(self.balancer, "get_n", None)
        if get_n is None:
            raise TypeError(f"{type(self.balancer).__name__} has no get_n: use a HashRing or Rendezvous")
        return get_n(key, n)

    def placement(self, key: Any, n: int) -> list:
        """``n`` nodes for ``key`` in ``n`` distinct domains at level ``spread``.

        Stable under failures (placement decides where data lives; routing
        decides where requests go now), so losing one domain loses at most
        one replica.  Needs domains.
        """
        if self.domains is None:
            raise RuntimeError("placement needs failure domains: Cluster({node: path, ...})")
        return self.domains.place(key, n, spread=self.spread)

    def state(self, node: Hashable) -> str:
        """The detector's state of ``node``: ``"alive"``, ``"suspect"`` or ``"dead"``."""
        if node not in self._index:
            raise KeyError(node)
        return self.detector.state(node)

    def is_routable(self, node: Hashable) -> bool:
        """Whether lookups may land on ``node`` (neither dead nor isolated)."""
        if node not in self._index:
            raise KeyError(node)
        i = self._index[node]
        return not (self._dead[i] or self._isolated[i])

    def unroutable(self) -> list:
        """The nodes lookups currently avoid (dead or isolated), in index order."""
        nodes = self.balancer.nodes
        return [nodes[i] for i in np.flatnonzero(self._dead | self._isolated).tolist()]

    # ---- membership ------------------------------------------------------
    def add_node(self, node: Hashable, path: Optional[str] = None, *, weight: float = 1.0) -> None:
        """Add ``node`` (with its failure-domain ``path`` when the cluster has domains).

        It takes its share of keys from the others at once (consistent
        hashing moves about 1/n of the keys); the detector starts watching
        it at its first heartbeat.
        """
        if node in self._index:
            raise ValueError(f"node {node!r} is already in the cluster")
        if (path is None) != (self.domains is None):
            raise ValueError("a path is needed exactly when the cluster has failure domains"
                             f" (got path={path!r})")
        if self.domains is not None:
            self.domains.assign(node, path, strict=True)
        try:
            self.balancer.add(node, weight)
        except BaseException:
            if self.domains is not None:
                self.domains.remove(node)
            raise
        if node not in self.detector:
            self.detector.add(node)
        self._reindex()

    def remove_node(self, node: Hashable) -> None:
        """Remove ``node`` for good: from the balancer, the detector and the domains."""
        if node not in self._index:
            raise KeyError(node)
        self.balancer.remove(node)
        self.detector.remove(node)
        if self.domains is not None:
            self.domains.remove(node)
        self._reindex()

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
        down = int((self._dead | self._isolated).sum())
        return (f"Cluster({len(self)} nodes, {down} unroutable, "
                f"balancer={type(self.balancer).__name__}, detector={type(self.detector).__name__})")
