"""``faultkit.Node``: one service instance's runtime, in the service's own event loop.

A Node heartbeats its peers and receives theirs over the UDP+HMAC transport
(:mod:`faultkit.detect.transport`), ticks its detector, keeps a
:class:`~faultkit.Cluster` current (routing, isolation) and reports what it
sees as events.  Membership (who belongs) comes from a backend
(:mod:`faultkit.run.membership`: a static list, or etcd); reachability (who
answers now) from the Node's own heartbeats.

Observers.  Up to ``full_mesh`` members (default 64) every Node heartbeats
every other and routes by its own detector, as memberlist and Akka do: no
central observer.  Beyond that, each node ``X`` is watched by ``watchers``
peers (default 3), the top of a rendezvous hash of ``X`` over the other
members, so every Node computes the same watchers without talking; ``X``
heartbeats only them.  A watcher publishes its verdict ("X unreachable")
through the membership backend (etcd keys under its lease), or over UDP for
the static list, and every Node routes around ``X`` once a quorum
(``watchers // 2 + 1``) of X's watchers report it: one observer's view never
decides alone.

One socket.  The Node binds one UDP socket: heartbeat datagrams (``b"FK"``)
go to a :class:`~faultkit.detect.transport.HeartbeatReceiver`'s ``handle``;
the Node's control datagrams (``b"FN"``: a graceful leave, a watcher's
observations) are signed with the same key, checked in constant time and
replay-protected by (incarnation, sequence) like heartbeats.  Control
packet (version 1, big-endian)::

    magic b"FN" 2 | version 1 | kind 1 (1 leave, 2 observations)
    incarnation 8 | sequence 8 | name length 1 | name | count 2
    count x (name length 1 | name) | HMAC-SHA256 tag 32
"""
from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import math
import struct
import time
from typing import Any, AsyncIterator, Callable, Hashable, Optional, Union


from faultkit.balance import Rendezvous
from faultkit.cluster import Cluster
from faultkit.detect import ALIVE, DEAD, SUSPECT, Event, PhiAccrualDetector
from faultkit.detect.transport import HeartbeatReceiver, HeartbeatSender, _check_key, parse_address
from faultkit.run.membership import Member, Membership, StaticMembership, check_name

__all__ = ["Node", "JOINED", "RESTARTED", "LEFT", "REMOVED", "DEFAULT_FULL_MESH", "DEFAULT_WATCHERS"]

_log = logging.getLogger(__name__)

# Node event kinds beyond the detector's alive/suspect/dead.
JOINING = "joining"      # a member we have not heard from yet (a state, not an event)
JOINED = "joined"        # the membership added it
RESTARTED = "restarted"  # it came back under its name with a higher incarnation
LEFT = "left"            # it left gracefully (its leave message or its deregistration)
REMOVED = "removed"      # the membership removed it (left, or its lease expired)

#: Members up to which every Node watches every other.  At 64 members and a
#: 1 s interval a Node sends and receives 63 datagrams a second (well under
#: 1% of a core, benchmarks/test_node.py); the mesh's n^2 traffic is what the
#: watcher scheme removes beyond it.
DEFAULT_FULL_MESH = 64
#: Watchers per node beyond the full mesh: with 3, a quorum of 2 tolerates
#: one watcher that is wrong (cut off itself) and one that is gone.
DEFAULT_WATCHERS = 3
#: A watcher's UDP-shared observation lapses after this many intervals
#: without being repeated (static membership; soft state).
OBSERVATION_LIFETIME = 3.0

_CTRL_MAGIC = b"FN"
_CTRL_VERSION = 1
_LEAVE, _OBSERVE = 1, 2
_CTRL_HEAD = struct.Struct(">2sBBQQ")
_TAG = 32
_MAX_CTRL = 1400


def _finite_pos(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a finite number of seconds > 0, got {value!r}")
    return float(value)


def encode_control(key: bytes, kind: int, name: str, incarnation: int, sequence: int,
                   targets: list) -> bytes:
    """A signed control datagram (see the module docstring)."""
    raw = name.encode("utf-8")
    parts = [_CTRL_HEAD.pack(_CTRL_MAGIC, _CTRL_VERSION, kind, incarnation, sequence),
             bytes((len(raw),)), raw, struct.pack(">H", len(targets))]
    for t in targets:
        tr = t.encode("utf-8")
        parts += [bytes((len(tr),)), tr]
    body = b"".join(parts)
    if len(body) + _TAG > _MAX_CTRL:
        raise ValueError(f"control packet of {len(body) + _TAG} bytes exceeds {_MAX_CTRL}")
    return body + hmac.new(key, body, hashlib.sha256).digest()


def decode_control(key: bytes, data: bytes) -> Optional[tuple]:
    """(kind, name, incarnation, sequence, targets), or None for anything not a valid signed packet."""
    if not (_CTRL_HEAD.size + 4 + _TAG <= len(data) <= _MAX_CTRL):
        return None
    body, tag = data[:-_TAG], data[-_TAG:]
    if not hmac.compare_digest(hmac.new(key, body, hashlib.sha256).digest(), tag):
        return None
    magic, version, kind, inc, seq = _CTRL_HEAD.unpack_from(body)
    if magic != _CTRL_MAGIC or version != _CTRL_VERSION or kind not in (_LEAVE, _OBSERVE):
        return None
    try:
        pos = _CTRL_HEAD.size
        n = body[pos]
        name = body[pos + 1:pos + 1 + n].decode("utf-8")
        pos += 1 + n
        (count,) = struct.unpack_from(">H", body, pos)
        pos += 2
        targets = []
        for _ in range(count):
            n = body[pos]
            targets.append(body[pos + 1:pos + 1 + n].decode("utf-8"))
            pos += 1 + n
    except (IndexError, struct.error, UnicodeDecodeError):
        return None
    if pos != len(body) or not name or inc >= 2**63:
        return None
    return kind, name, inc, seq, targets


class _Verdicts:
    """The detector the Node's Cluster reads: the Node's decisions, as events.

    It has the detector interface a :class:`~faultkit.Cluster` uses (add,
    remove, state, scan, ``in``), so routing, the isolation policy and the
    balancer follow the Node's verdict, whether that came from its own
    detector (full mesh) or from a quorum of watchers.
    """

    def __init__(self) -> None:
        self._state: dict = {}
        self._pending: list[Event] = []

    def add(self, name: Hashable, now: Optional[float] = None) -> int:
        self._state[name] = ALIVE  # the Node decides joins itself (join_timeout)
        return 0

    def last_heartbeat(self, name: Hashable) -> Optional[float]:
        return 0.0 if name in self._state else None  # the Node's verdicts start from heard

    def leave(self, name: Hashable, incarnation: Optional[int] = None, *,
              now: Optional[float] = None) -> bool:
        self.set(name, "left", 0.0 if now is None else now)
        return True

    def remove(self, name: Hashable) -> None:
        self._state.pop(name, None)
        self._pending = [e for e in self._pending if e.name != name]

    def __contains__(self, name: object) -> bool:
        return name in self._state

    def state(self, name: Hashable) -> str:
        return self._state[name]

    def set(self, name: Hashable, state: str, at: float) -> None:
        old = self._state.get(name)
        if old is not None and old != state:
            self._state[name] = state
            self._pending.append(Event(name, old, state, at))

    def scan(self, now: Optional[float] = None) -> list[Event]:
        out, self._pending = self._pending, []
        return out

    def id(self, name: Hashable) -> int:  # Cluster.heartbeat_many is not used by the Node
        raise TypeError("a Node's cluster takes no heartbeats directly")


class _Protocol(asyncio.DatagramProtocol):
    def __init__(self, node: "Node") -> None:
        self.node = node

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr: Any) -> None:
        node = self.node
        if data[:2] == _CTRL_MAGIC:
            node._control(data)
        else:
            node.receiver.handle(data)

    def error_received(self, exc: Exception) -> None:
        self.node.stats["socket_errors"] += 1


class Node:
    """One member of a cluster, run in the caller's asyncio event loop.

    ``Node(name, *, key, bind=None, membership=None, domain=None,
    advertise=None, interval=1.0, tick=None, detector=None, full_mesh=64,
    watchers=3, join_timeout=None, incarnation=None, avoid_suspect=False,
    hold_restarted=False, clock=time.monotonic)``

    - ``name``: this member's name (1..255 bytes, no whitespace or ``/``).
    - ``key``: the shared HMAC key (>= 16 bytes) every member signs with.
    - ``bind``: the UDP ``"host:port"`` to listen on; default the address the
      static list gives ``name``, else ``"127.0.0.1:7946"`` (memberlist's port).
    - ``membership``: a :class:`~faultkit.run.Membership` (default: a
      :class:`StaticMembership` of this node alone), or a mapping
      ``{name: "host:port"}`` for a static list.
    - ``domain``: this node's failure-domain path (``"eu/az1/r3/h7"``);
      when given, every member must have one and the Cluster isolates domains.
    - ``advertise``: the address peers send to (default: the bound address).
    - ``interval``: seconds between heartbeats (default 1 s, Akka's).
    - ``tick``: seconds between detector scans (default ``interval / 4``).
    - ``detector``: default ``PhiAccrualDetector`` with Akka's defaults scaled
      to ``interval``: threshold 8, acceptable pause ``3 * interval``, first
      estimate ``interval``, minimum deviation ``0.1 * interval``.  Dead about
      :attr:`detection_bound` seconds after the last heartbeat.
    - ``full_mesh``: members up to which everyone watches everyone (64);
      ``watchers``: peers that watch each node beyond it (3).
    - ``join_timeout``: seconds a member may stay unheard after it joined
      (or after this Node started) before it is reported dead (default twice
      the detection bound: a joiner's peers learn of it through the
      membership first); only for members this Node watches.  Its first
      heartbeat makes it alive whenever it comes.
    - ``incarnation``: default the start time in milliseconds, so a restarted
      process outranks its previous life.
    - ``avoid_suspect``: route around suspect members too (the Cluster's).
    - ``hold_restarted``: keep a member that restarted (a ``"restarted"``
      event: it lost its memory, however fast it came back) out of routing
      until :meth:`release` - e.g. until it has caught up on what it missed
      (default False).  :meth:`hold` holds a member by hand.
    - ``clock``: monotonic seconds for the detector and events.

    ``await node.start()``, then :meth:`route`, :meth:`replicas`,
    :meth:`view`, :meth:`events` / :meth:`add_listener`; ``await
    node.stop()`` leaves gracefully.  Also ``async with Node(...)``.

    ``stats`` counts heartbeats ``sent``, ``send_errors``, ``socket_errors``,
    ``control`` packets taken and ``control_dropped``, ``ticks``, ``stalls``
    (ticks far later than due: this process was paused), ``events``,
    ``listener_errors``, ``dropped_events`` (slow :meth:`events` readers), and
    the time to route around a failure: ``detections`` (dead verdicts on a
    member this node had heard), ``detection_seconds`` (their seconds from
    the member's last heartbeat to the verdict, summed) and
    ``last_detection_seconds``.
    """

    def __init__(self, name: str, *, key: bytes, bind: Optional[Any] = None,
                 membership: Union[Membership, dict, None] = None, domain: Optional[str] = None,
                 advertise: Optional[Any] = None, interval: float = 1.0, tick: Optional[float] = None,
                 detector: Any = None, full_mesh: int = DEFAULT_FULL_MESH,
                 watchers: int = DEFAULT_WATCHERS, join_timeout: Optional[float] = None,
                 incarnation: Optional[int] = None, avoid_suspect: bool = False,
                 hold_restarted: bool = False, clock: Callable[[], float] = time.monotonic) -> None:
        self.name = check_name(name)
        self.key = _check_key(key)
        if membership is None:
            membership = StaticMembership({name: bind or "127.0.0.1:7946"})
        elif isinstance(membership, dict):
            membership = StaticMembership(membership)
        if not isinstance(membership, Membership):
            raise TypeError(f"membership must be a Membership or a dict, not {type(membership).__name__}")
        self.membership = membership
        if bind is None:
            listed = getattr(membership, "members", {}).get(name)
            bind = listed.address if listed is not None else "127.0.0.1:7946"
        self.bind = parse_address(bind)
        self.advertise = parse_address(advertise) if advertise is not None else None
        if domain is not None and (not isinstance(domain, str) or not domain):
            raise ValueError(f"domain must be a failure-domain path or None, got {domain!r}")
        self.domain = domain
        self.interval = _finite_pos("interval", interval)
        self.tick_interval = _finite_pos("tick", tick) if tick is not None else self.interval / 4
        for label, v, lo in (("full_mesh", full_mesh, 1), ("watchers", watchers, 1)):
            if isinstance(v, bool) or not isinstance(v, int) or v < lo:
                raise ValueError(f"{label} must be an int >= {lo}, got {v!r}")
        self.full_mesh = full_mesh
        self.watchers = watchers
        if not callable(clock):
            raise TypeError(f"clock must be callable, not {type(clock).__name__}")
        self.clock = clock
        if detector is None:
            detector = PhiAccrualDetector(acceptable_heartbeat_pause=3 * self.interval,
                                          first_heartbeat_estimate=self.interval,
                                          min_std_deviation=0.1 * self.interval, clock=clock)
        for attr in ("heartbeat", "add", "remove", "scan", "state", "incarnation"):
            if not callable(getattr(detector, attr, None)):
                raise TypeError(f"detector must be a faultkit detector, not {type(detector).__name__}")
        self.detector = detector
        self.detection_bound = self._bound(detector)
        self.join_timeout = (_finite_pos("join_timeout", join_timeout) if join_timeout is not None
                             else 2 * self.detection_bound)
        self.avoid_suspect = bool(avoid_suspect)
        if not isinstance(hold_restarted, bool):
            raise TypeError(f"hold_restarted must be a bool, got {hold_restarted!r}")
        self.hold_restarted = hold_restarted
        self._encoder = HeartbeatSender(name, ("127.0.0.1", 0), self.interval, key=self.key,
                                        incarnation=incarnation)
        self.incarnation = self._encoder.incarnation
        self.receiver = HeartbeatReceiver(detector, self.bind, key=self.key, auto_add=False)
        self.stats = dict.fromkeys(("sent", "send_errors", "socket_errors", "control", "control_dropped",
                                    "ticks", "stalls", "events", "listener_errors", "dropped_events",
                                    "detections"), 0)
        # Seconds from a member's last heartbeat (as this node heard it) to this node's
        # dead verdict, summed over ``stats["detections"]`` verdicts, and the latest one.
        self.stats["detection_seconds"] = 0.0
        self.stats["last_detection_seconds"] = None
        self._last_tick: Optional[float] = None
        self._hold_until = -math.inf
        self.cluster: Optional[Cluster] = None
        self.members: dict[str, Member] = {}
        self._view: dict[str, str] = {}          # name -> joining/alive/suspect/dead/left
        self._inc: dict[str, int] = {}           # highest incarnation known per member
        self._left_inc: dict[str, int] = {}      # incarnation a member left with
        self._since: dict[str, float] = {}       # when an unheard member became expected
        self._ctrl_seen: dict[str, tuple] = {}
        self._ctrl_seq = 0
        self._obs: dict[str, dict[str, float]] = {}   # target -> observer -> expiry (inf: etcd)
        self._mine: set[str] = set()             # targets this node reports unreachable
        self._watchers_of: dict[str, list] = {}
        self._watched: set[str] = set()          # members this node watches
        self._unheard: set[str] = set()          # watched members not heard from yet
        self._targets: list[tuple] = []          # addresses this node heartbeats
        self._listeners: list[Callable[[Event], Any]] = []
        self._queues: list[asyncio.Queue] = []
        self._tasks: list[asyncio.Task] = []
        self._transport: Optional[asyncio.DatagramTransport] = None
        self._running = False

    # ---- the detector's bound ------------------------------------------
    def _bound(self, detector: Any) -> float:
        """Seconds from the last of regular heartbeats (every ``interval``) to the
        detector's dead verdict, computed by replaying them in a copy of its kind."""
        probe_cls = type(detector)
        try:
            if isinstance(detector, PhiAccrualDetector):
                probe = PhiAccrualDetector(detector.threshold, max_sample_size=detector.max_sample_size,
                                           min_std_deviation=detector.min_std_deviation,
                                           acceptable_heartbeat_pause=detector.acceptable_heartbeat_pause,
                                           first_heartbeat_estimate=detector.first_heartbeat_estimate,
                                           clock=lambda: 0.0)
            elif hasattr(detector, "timeout"):
                return float(detector.timeout)
            else:
                probe = probe_cls(clock=lambda: 0.0)
            probe.add("p")
            for i in range(20):
                probe.heartbeat("p", i * self.interval)
            return float(probe.deadlines("p")[1] - 19 * self.interval)
        except Exception:  # an unusual detector: fall back to a conservative figure
            return 10.0 * self.interval

    # ---- start and stop --------------------------------------------------
    async def start(self) -> "Node":
        """Bind the socket, join the membership, start heartbeating and ticking."""
        if self._running:
            raise RuntimeError(f"node {self.name!r} is already started")
        loop = asyncio.get_running_loop()
        self._transport, _ = await loop.create_datagram_endpoint(lambda: _Protocol(self),
                                                                 local_addr=self.bind)
        self.address = self._transport.get_extra_info("sockname")[:2]
        me = Member(self.name, self.advertise or self.address, self.domain, self.incarnation)
        try:
            members = await self.membership.start(me, self._on_change, self._on_observation)
        except BaseException:
            self._transport.close()
            raise
        members[self.name] = me
        self.members = {}
        now = self.clock()
        names = []
        for m in members.values():
            if (m.domain is None) != (self.domain is None):
                _log.warning("member %r ignored: its domain %r does not match this node's use of domains",
                             m.name, m.domain)
                continue
            self.members[m.name] = m
            names.append(m.name)
        self._verdicts = _Verdicts()
        nodes = {n: self.members[n].domain for n in names} if self.domain is not None else names
        self.cluster = Cluster(nodes, detector=self._verdicts, avoid_suspect=self.avoid_suspect,
                               clock=self.clock)
        for n in names:
            self._inc[n] = self.members[n].incarnation
            if n != self.name:
                if n not in self.detector:
                    self.detector.add(n)
                self._view[n] = JOINING
                self._since[n] = now
        self._view[self.name] = ALIVE
        self._replan()
        self._running = True
        self._tasks = [asyncio.create_task(self._beat_loop()), asyncio.create_task(self._tick_loop())]
        return self

    async def stop(self, *, leave: bool = True) -> None:
        """Leave gracefully (``leave``: tell every peer and deregister), stop all tasks,
        close the socket, and end every :meth:`events` iterator.  Idempotent."""
        if not self._running:
            return
        self._running = False
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            try:
                await t
            except (asyncio.CancelledError, Exception):
                pass
        self._tasks = []
        if leave and self._transport is not None:
            self._send_control(_LEAVE, [], [m.address for n, m in self.members.items() if n != self.name])
        try:
            await self.membership.stop(leave=leave)
        finally:
            if self._transport is not None:
                self._transport.close()
                self._transport = None
            for q in self._queues:
                q.put_nowait(None)

    async def __aenter__(self) -> "Node":
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # ---- sending ----------------------------------------------------------
    async def _beat_loop(self) -> None:
        loop = asyncio.get_running_loop()
        due = loop.time()
        while True:
            self._send_beats()
            if self._mine or self._obs_dirty:
                self._share_observations()
            due = max(due + self.interval, loop.time())  # after a stall, resume the cadence
            await asyncio.sleep(due - loop.time())

    def _send_beats(self) -> None:
        tr = self._transport
        if tr is None:
            return
        packets = self._encoder.packets()
        for addr in self._targets:
            for p in packets:
                try:
                    tr.sendto(p, addr)
                    self.stats["sent"] += 1
                except OSError:
                    self.stats["send_errors"] += 1

    def _send_control(self, kind: int, targets: list, addresses: list) -> None:
        tr = self._transport
        if tr is None:
            return
        self._ctrl_seq += 1
        pkt = encode_control(self.key, kind, self.name, self.incarnation, self._ctrl_seq, targets)
        for addr in addresses:
            try:
                tr.sendto(pkt, addr)
            except OSError:
                self.stats["send_errors"] += 1

    _obs_dirty = False

    def _share_observations(self) -> None:
        """Static membership: send this node's current unreachable list to every member."""
        self._obs_dirty = False
        if self.membership.shares_observations:
            return
        mine = sorted(self._mine)
        addrs = [m.address for n, m in self.members.items() if n != self.name]
        # Split so each datagram stays under the MTU.
        chunk: list = []
        size = 0
        for t in mine:
            cost = 1 + len(t.encode("utf-8"))
            if chunk and size + cost > 1000:
                self._send_control(_OBSERVE, chunk, addrs)
                chunk, size = [], 0
            chunk.append(t)
            size += cost
        self._send_control(_OBSERVE, chunk, addrs)

    # ---- receiving control packets ----------------------------------------
    def _control(self, data: bytes) -> None:
        msg = decode_control(self.key, data)
        if msg is None:
            self.stats["control_dropped"] += 1
            return
        kind, name, inc, seq, targets = msg
        if name not in self.members or name == self.name or self._ctrl_seen.get(name, (-1, -1)) >= (inc, seq):
            self.stats["control_dropped"] += 1
            return
        if inc < self._inc.get(name, 0):  # from an earlier life
            self.stats["control_dropped"] += 1
            return
        self._ctrl_seen[name] = (inc, seq)
        self.stats["control"] += 1
        now = self.clock()
        if kind == _LEAVE:
            self._left_inc[name] = inc
            self._set(name, LEFT, now)
            self._after_change(now)
        else:
            expiry = now + OBSERVATION_LIFETIME * self.interval
            current = set(targets)
            for t, by in self._obs.items():
                if name in by and t not in current:
                    by.pop(name)
            for t in current:
                self._obs.setdefault(t, {})[name] = expiry

    # ---- membership changes --------------------------------------------------
    def _on_change(self, kind: str, m: Member) -> None:
        """A membership backend's change: one member joins, updates or leaves."""
        if self.cluster is None or m.name == self.name:
            return
        now = self.clock()
        if kind == "leave":
            if m.name not in self.members:
                return
            del self.members[m.name]
            old = self._view.pop(m.name, JOINING)
            for d in (self._inc, self._left_inc, self._since, self._ctrl_seen):
                d.pop(m.name, None)
            self._unheard.discard(m.name)
            self._obs.pop(m.name, None)
            self._mine.discard(m.name)
            if m.name in self.cluster:
                self.cluster.remove_node(m.name)
            if m.name in self.detector:
                self.detector.remove(m.name)
            self._emit(Event(m.name, old, REMOVED, now))
            self._replan()
            return
        if (m.domain is None) != (self.domain is None):
            _log.warning("member %r ignored: domain %r", m.name, m.domain)
            return
        if m.name not in self.members:
            self.members[m.name] = m
            self._inc[m.name] = m.incarnation
            self.cluster.add_node(m.name, m.domain) if self.domain is not None else self.cluster.add_node(m.name)
            if m.name not in self.detector:
                self.detector.add(m.name)
            self._view[m.name] = JOINING
            self._since[m.name] = now
            self._emit(Event(m.name, "absent", JOINED, now))
            self._replan()
            return
        old = self.members[m.name]
        self.members[m.name] = m
        if m.address != old.address:
            self._replan()
        if m.incarnation > self._inc.get(m.name, 0):
            self._restarted(m.name, m.incarnation, now)

    def _on_observation(self, observer: str, target: str, unreachable: bool) -> None:
        if unreachable:
            self._obs.setdefault(target, {})[observer] = math.inf
        else:
            by = self._obs.get(target)
            if by is not None:
                by.pop(observer, None)

    def _replan(self) -> None:
        """Recompute whom this node heartbeats and watches (after a membership change)."""
        names = sorted(self.members)
        others = [n for n in names if n != self.name]
        if len(names) <= self.full_mesh:
            self._watchers_of = {}
            watched = set(others)
            targets = others
        else:
            rz = Rendezvous(names)
            k = min(self.watchers, len(names) - 1)
            self._watchers_of = {n: [w for w in rz.get_n(n, k + 1) if w != n][:k] for n in names}
            targets = self._watchers_of[self.name]
            watched = {n for n in others if self.name in self._watchers_of[n]}
        now = self.clock()
        for n in watched - self._watched:  # newly watched: forget what the detector knew
            if n in self.detector:
                self.detector.remove(n)
            self.detector.add(n)
            self._since[n] = now
            self._unheard.add(n)
        for n in self._watched - watched:
            self._mine.discard(n)
            self._unheard.discard(n)
            if n in self.detector:
                self.detector.remove(n)
                self.detector.add(n)
        self._watched = watched
        self._targets = [self.members[n].address for n in targets]

    # ---- ticking -------------------------------------------------------------
    async def _tick_loop(self) -> None:
        loop = asyncio.get_running_loop()
        due = loop.time()
        while True:
            try:
                self.tick()
            except Exception:  # a bug here must not stop detection silently forever
                _log.exception("node tick failed")
            due = max(due + self.tick_interval, loop.time())
            await asyncio.sleep(due - loop.time())

    def tick(self, now: Optional[float] = None) -> list[Event]:
        """Scan the detector, update the view and routing; returns the Node events.

        The Node's own task calls it every ``tick`` seconds; calling it by
        hand (with an injected clock) is for tests.
        """
        if self.cluster is None:
            raise RuntimeError("the node is not started")
        if now is None:
            now = self.clock()
        self.stats["ticks"] += 1
        # A tick far later than due means this process itself was paused (SIGSTOP,
        # a VM freeze, a long GC): the silence it would now see is its own.  Hold
        # verdicts for one interval, so its peers' fresh heartbeats arrive first.
        last, self._last_tick = self._last_tick, now
        if last is not None and now - last > self.interval + self.tick_interval:
            self.stats["stalls"] += 1
            self._hold_until = now + self.interval + self.tick_interval
        if now < self._hold_until:
            return []
        self._batch = batch = []
        try:
            det = self.detector
            mesh = not self._watchers_of
            # Restarts first (a higher incarnation the receiver recorded), so a
            # restarted member's recovery is reported once, as a restart.
            unheard = self._unheard
            for n in self._watched:
                inc = det.incarnation(n)
                if inc > self._inc.get(n, 0):
                    self._restarted(n, inc, now)
                if n not in unheard:
                    continue
                if det.last_heartbeat(n) is not None:  # its first heartbeat
                    unheard.discard(n)
                    if mesh:
                        if self._view.get(n) in (JOINING, DEAD):
                            self._set(n, ALIVE, now)
                    elif n in self._mine:
                        self._mine.discard(n)
                        self._publish(n, False, now)
                elif now - self._since.get(n, now) >= self.join_timeout:
                    if mesh:
                        if self._view.get(n) == JOINING:
                            self._set(n, DEAD, now)
                    elif n not in self._mine:
                        self._mine.add(n)
                        self._publish(n, True, now)
            for ev in det.scan(now):
                self._detector_event(ev)
            if not mesh:
                self._quorum(now)
            self._after_change(now)
        finally:
            self._batch = None
        return batch

    def _detector_event(self, ev: Event) -> None:
        """Map one detector event to the Node's view.

        The detector says joining/alive/suspect/dead; the Node decides joins
        (its own ``join_timeout``), leaves (its signed control packets) and
        restarts (:meth:`_restarted`, from the incarnation a heartbeat or the
        membership carries) itself, so the detector's ``"restarted"`` event,
        which is not a state, is left to that one place.
        """
        n = ev.name
        if n not in self._watched or self._view.get(n) is None or ev.new == RESTARTED:
            return
        if self._view[n] == LEFT and self.detector.incarnation(n) <= self._left_inc.get(n, -1):
            return  # stray heartbeats of a member that left; it returns with a higher incarnation
        if self._watchers_of:
            # Beyond the full mesh this node's verdict is one observation among the watchers'.
            unreachable = ev.new == DEAD
            if unreachable != (n in self._mine):
                (self._mine.add if unreachable else self._mine.discard)(n)
                self._publish(n, unreachable, ev.at)
            return
        self._set(n, ev.new, ev.at)

    def _restarted(self, n: str, inc: int, now: float) -> None:
        """A higher incarnation than known for ``n``: it restarted.

        Seen from the heartbeats' incarnation (the detector records it) or
        from the membership record, whichever comes first.
        """
        known = self._inc.get(n, 0)
        self._inc[n] = inc
        if n in self._mine:
            self._mine.discard(n)
            self._publish(n, False, now)
        if known == 0:
            if self._view.get(n) != LEFT:
                self._set(n, ALIVE, now)   # the first incarnation we hear of: a join, not a restart
            return
        old = self._view.get(n, JOINING)
        self._left_inc.pop(n, None)
        if self.hold_restarted and self.cluster is not None and n in self.cluster:
            self.cluster.hold(n)  # before the event: a listener sees it held already
        self._emit(Event(n, old, RESTARTED, now))
        self._view[n] = ALIVE
        self._verdicts.set(n, ALIVE, now)

    def _publish(self, target: str, unreachable: bool, at: float) -> None:
        by = self._obs.setdefault(target, {})
        if unreachable:
            by[self.name] = math.inf
        else:
            by.pop(self.name, None)
        if self.membership.shares_observations:
            self.membership.observe(target, unreachable)
        else:
            self._obs_dirty = True

    def _quorum(self, now: float) -> None:
        """Beyond the full mesh: dead when a quorum of a node's watchers report it."""
        for target in list(self._obs):
            by = self._obs[target]
            for o in [o for o, exp in by.items() if exp <= now]:
                del by[o]
            if not by:
                del self._obs[target]
        for target, ws in self._watchers_of.items():
            if target == self.name:
                continue
            by = self._obs.get(target)
            votes = sum(1 for w in ws if w in by) if by else 0
            down = votes >= len(ws) // 2 + 1
            state = self._view.get(target)
            if state in (None, LEFT):
                continue
            if down and state != DEAD:
                self._set(target, DEAD, now)
            elif not down and state in (DEAD, JOINING, SUSPECT):
                self._set(target, ALIVE, now)

    def _set(self, n: str, state: str, at: float) -> None:
        old = self._view.get(n)
        if old is None or old == state:
            return
        self._view[n] = state
        if state == DEAD:
            last = self.detector.last_heartbeat(n) if n in self.detector else None
            if last is not None:
                took = max(0.0, at - last)
                self.stats["detections"] += 1
                self.stats["detection_seconds"] += took
                self.stats["last_detection_seconds"] = took
        self._emit(Event(n, old, state, at))
        self._verdicts.set(n, DEAD if state == LEFT else (ALIVE if state == JOINING else state), at)

    def _after_change(self, now: float) -> None:
        assert self.cluster is not None
        self.cluster.tick(now)

    # ---- events ----------------------------------------------------------------
    _batch: Optional[list] = None

    def _emit(self, ev: Event) -> None:
        self.stats["events"] += 1
        if self._batch is not None:
            self._batch.append(ev)
        for fn in list(self._listeners):
            try:
                fn(ev)
            except Exception:
                self.stats["listener_errors"] += 1
                _log.exception("node listener failed on %r", ev)
        for q in self._queues:
            if q.full():
                q.get_nowait()
                self.stats["dropped_events"] += 1
            q.put_nowait(ev)

    def add_listener(self, fn: Callable[[Event], Any]) -> Callable[[Event], Any]:
        """Call ``fn(event)`` for every Node event; returns ``fn`` (a decorator too).

        Events are :class:`~faultkit.Event` ``(name, old, new, at)`` with
        ``new`` one of ``"joined"``, ``"alive"``, ``"suspect"``, ``"dead"``,
        ``"restarted"``, ``"left"``, ``"removed"``; ``at`` on the Node's clock.
        An exception from ``fn`` is logged and counted, never raised.
        """
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

    async def events(self, *, maxsize: int = 1024) -> AsyncIterator[Event]:
        """``async for ev in node.events()``: every Node event from now on, until :meth:`stop`.

        A consumer slower than ``maxsize`` pending events loses the oldest
        (counted in ``stats["dropped_events"]``).
        """
        if isinstance(maxsize, bool) or not isinstance(maxsize, int) or maxsize < 1:
            raise ValueError(f"maxsize must be an int >= 1, got {maxsize!r}")
        q: asyncio.Queue = asyncio.Queue(maxsize)
        self._queues.append(q)
        try:
            while True:
                ev = await q.get()
                if ev is None:
                    return
                yield ev
        finally:
            self._queues.remove(q)

    # ---- routing and views -----------------------------------------------------
    def _cluster(self) -> Cluster:
        if self.cluster is None:
            raise RuntimeError("the node is not started: await node.start()")
        return self.cluster

    def route(self, key: Any) -> str:
        """The member that serves ``key`` now (the Cluster's balancer, skipping
        members that are dead, left or isolated)."""
        return self._cluster().route(key)

    def replicas(self, key: Any, n: int) -> list:
        """``n`` members for ``key``: routable ones in failover order; with failure
        domains, ``n`` live members in ``n`` distinct racks whenever that many
        racks have one (:meth:`faultkit.Cluster.replicas`)."""
        c = self._cluster()
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ValueError(f"n must be an int >= 1, got {n!r}")
        return c.replicas(key, n)

    def report(self, member: str, ok: bool, latency: Optional[float] = None) -> Any:
        """A request to ``member`` succeeded (``ok``) or failed, taking ``latency``
        seconds: outlier ejection (:meth:`faultkit.Cluster.report`) routes around
        a member that fails requests before its heartbeats stop."""
        return self._cluster().report(member, ok, latency)

    def hold(self, member: str) -> None:
        """Keep ``member`` out of routing until :meth:`release` (e.g. while it catches up);
        KeyError if it is not a member."""
        c = self._cluster()
        if member not in c:
            raise KeyError(f"{member!r} is not a member of node {self.name!r}'s cluster")
        c.hold(member)

    def release(self, member: str) -> None:
        """Route to ``member`` again after :meth:`hold` or a ``hold_restarted`` hold
        (routing still avoids it while it is dead, left, isolated or ejected);
        KeyError if it is not a member."""
        c = self._cluster()
        if member not in c:
            raise KeyError(f"{member!r} is not a member of node {self.name!r}'s cluster")
        c.release(member)

    @property
    def held(self) -> list:
        """The members held out of routing (:meth:`hold`, ``hold_restarted``), sorted."""
        return sorted(self._cluster().held)

    def view(self) -> dict:
        """``{member: state}`` as this Node sees it: ``"joining"`` (not heard yet),
        ``"alive"``, ``"suspect"``, ``"dead"`` or ``"left"``; itself ``"alive"``."""
        return dict(self._view)

    def routable(self) -> list:
        """The members lookups may land on, sorted."""
        c = self._cluster()
        return sorted(n for n in c.nodes if c.is_routable(n))

    @property
    def partitioned(self) -> bool:
        """True when this Node hears from fewer than half of the other members it
        watches: it is probably the one cut off, and should not act on its view."""
        if not self._watched:
            return False
        down = sum(1 for n in self._watched if self._view.get(n) in (DEAD, SUSPECT))
        return down * 2 > len(self._watched)

    @property
    def healthy(self) -> bool:
        """Whether the membership backend is reachable (False: fail-static)."""
        return self.membership.healthy

    def watchers_of(self, name: str) -> list:
        """The members watching ``name`` (every other member in a full mesh)."""
        if name not in self.members:
            raise KeyError(name)
        if not self._watchers_of:
            return sorted(n for n in self.members if n != name)
        return list(self._watchers_of[name])

    def __repr__(self) -> str:
        state = "running" if self._running else "stopped"
        return f"Node({self.name!r}, {len(self.members)} members, {state})"
