"""What every process of the demo agrees on: the layout, key partitions, replica placement and the wire format."""
from __future__ import annotations

import asyncio
import json
import random
import socket
from dataclasses import dataclass, field
from typing import Any, Optional

import faultkit as fk

#: Keys are hashed into this many partitions; a partition is the unit of
#: placement and of catch-up.  32 keeps a catch-up request small (a few
#: dozen keys at the demo's key count) and still spreads 6 workers evenly.
PARTITIONS = 32
#: Replicas per partition, one per rack (so the demo needs >= 3 racks).
REPLICAS = 3
#: Replicas that must have journaled a write before it is acknowledged: a
#: majority of REPLICAS.  See docs/demo.md ("Why 2 of 3, and in sync").
WRITE_QUORUM = 2
#: The rack-level failure-domain path prefix of every worker.
ZONE = "demo/z1"
#: The longest request or response line (bytes): a catch-up answer for one
#: partition at the largest key count stays far below it.
MAX_LINE = 8 << 20


def partition_of(key: str) -> int:
    """The partition of ``key``: XXH3-64 of its UTF-8 bytes, modulo PARTITIONS."""
    return fk.hash64(key) % PARTITIONS


def _ephemeral_low() -> int:
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            return int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768  # Linux's default range starts here


def free_port(kind: int = socket.SOCK_STREAM, rng: Optional[random.Random] = None) -> int:
    """A port on 127.0.0.1 that is free now (TCP or UDP), below the ephemeral range.

    A worker listens on the same ports across restarts.  A port from the
    ephemeral range could be taken, while its worker is down, as the source
    port of some outgoing connection (a catch-up request is one), and the
    restarted worker could not bind it; below that range only a listener
    takes a port."""
    rng = rng or random.Random()
    low = _ephemeral_low()
    if low > 12000:
        for _ in range(200):
            port = rng.randrange(10000, low)
            with socket.socket(socket.AF_INET, kind) as s:
                try:
                    s.bind(("127.0.0.1", port))
                except OSError:
                    continue
                return port
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Layout:
    """Who runs where: worker names, their racks, failure-domain paths, hosts and ports.

    Workers are ``w0 .. w{n-1}``; ``w{i}`` sits in rack ``r{i * racks // n}``
    (so 6 workers in 3 racks are r0: w0 w1, r1: w2 w3, r2: w4 w5).  The front
    end is a member too (its own rack, so it never holds a replica).
    ``hosts`` maps a name to its IPv4 address (default: every one on
    127.0.0.1; with ``--netns``, one address per rack, see :mod:`.hosts`).
    """

    workers: int
    racks: int
    udp: dict = field(default_factory=dict)   # name -> port (heartbeats)
    tcp: dict = field(default_factory=dict)   # worker -> port (requests)
    hosts: dict = field(default_factory=dict)  # name -> IPv4 address

    def __post_init__(self) -> None:
        if not self.udp:
            taken: set = set()
            for n in self.names + ["front"]:
                self.udp[n] = self._pick(socket.SOCK_DGRAM, taken)
            for n in self.names:
                self.tcp[n] = self._pick(socket.SOCK_STREAM, taken)
        self.domains = fk.FailureDomains()
        for n in self.names:
            self.domains.assign(n, self.path(n))
        self._placement = [self.domains.place(f"p{p}", REPLICAS, spread="rack") for p in range(PARTITIONS)]

    @staticmethod
    def _pick(kind: int, taken: set) -> int:
        while True:
            port = free_port(kind)
            if port not in taken:
                taken.add(port)
                return port

    @property
    def names(self) -> list:
        return [f"w{i}" for i in range(self.workers)]

    @property
    def rack_names(self) -> list:
        return [f"r{k}" for k in range(self.racks)]

    def host(self, name: str) -> str:
        """The address ``name`` (a worker, or ``"front"``) listens on."""
        return self.hosts.get(name, "127.0.0.1")

    def tcp_addr(self, name: str) -> tuple:
        """``(host, port)`` of worker ``name``'s request server."""
        return (self.host(name), self.tcp[name])

    def rack(self, name: str) -> str:
        """``"r<k>"``: the rack of worker ``name``."""
        return f"r{int(name[1:]) * self.racks // self.workers}"

    def rack_members(self, rack: str) -> list:
        return [n for n in self.names if self.rack(n) == rack]

    def path(self, name: str) -> str:
        if name == "front":
            return f"{ZONE}/front/front"
        return f"{ZONE}/{self.rack(name)}/{name}"

    def placement(self, p: int) -> list:
        """The REPLICAS workers that hold partition ``p``, one per rack (``FailureDomains.place``).

        Fixed: it does not follow failures, so a partition's data never moves
        and a restarted worker knows which partitions it holds."""
        return self._placement[p]

    def partitions_of(self, name: str) -> list:
        return [p for p in range(PARTITIONS) if name in self._placement[p]]

    def members(self) -> dict:
        """The static membership: ``{name: ("host:udp", path)}``, the front included."""
        return {n: (f"{self.host(n)}:{self.udp[n]}", self.path(n)) for n in self.names + ["front"]}

    def to_json(self) -> dict:
        return {"workers": self.workers, "racks": self.racks, "udp": self.udp, "tcp": self.tcp,
                "hosts": self.hosts}

    @classmethod
    def from_json(cls, d: dict) -> "Layout":
        return cls(d["workers"], d["racks"], udp=d["udp"], tcp=d["tcp"], hosts=d.get("hosts", {}))


def make_detector(kind: str, interval: float) -> Any:
    """The failure detector every Node of the demo uses: ``"phi"`` (the Node's default,
    Akka's settings scaled to ``interval``) or ``"timeout"`` (dead after 5 silent intervals)."""
    if kind == "phi":
        return None
    if kind == "timeout":
        return fk.TimeoutDetector(timeout=5 * interval, suspect_after=2.5 * interval)
    raise ValueError(f"detector must be 'phi' or 'timeout', got {kind!r}")


def encode(msg: dict) -> bytes:
    """One message on the wire: compact JSON and a newline."""
    return json.dumps(msg, separators=(",", ":")).encode() + b"\n"


class RemoteError(Exception):
    """A worker answered a request with an error (``ok`` false)."""


class NotReady(RemoteError):
    """A worker refused a read because it is still catching up (not a fault of the worker)."""


async def request_once(addr: tuple, msg: dict, timeout: float) -> dict:
    """One request on a fresh connection (worker-to-worker catch-up); the answer, or an exception."""
    async def go() -> dict:
        reader, writer = await asyncio.open_connection(*addr, limit=MAX_LINE)
        try:
            writer.write(encode(dict(msg, id=1)))
            await writer.drain()
            line = await reader.readline()
            if not line:
                raise ConnectionError(f"{addr[0]}:{addr[1]} closed the connection")
            return json.loads(line)
        finally:
            writer.close()
    return await asyncio.wait_for(go(), timeout)


class Conn:
    """Requests to one worker over one TCP connection, many in flight, matched by id.

    ``await conn.call(msg)`` sends ``msg`` and returns the worker's answer
    (a dict with ``ok``); a connection error fails every request in flight
    with ``ConnectionError`` and the next call reconnects.
    """

    def __init__(self, host: str, port: int) -> None:
        self.addr = (host, port)
        self._writer: Optional[asyncio.StreamWriter] = None
        self._pending: dict = {}
        self._next = 0
        self._connecting: Optional[asyncio.Future] = None

    async def _connect(self) -> asyncio.StreamWriter:
        if self._writer is not None:
            return self._writer
        if self._connecting is None:
            self._connecting = asyncio.ensure_future(asyncio.open_connection(*self.addr, limit=MAX_LINE))
        fut = self._connecting
        try:
            reader, writer = await asyncio.shield(fut)
        finally:
            if self._connecting is fut and fut.done():
                self._connecting = None
        if self._writer is None:
            self._writer = writer
            asyncio.ensure_future(self._read(reader, writer))
        return self._writer

    async def _read(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        err: BaseException = ConnectionError(f"worker {self.addr[1]} closed the connection")
        try:
            while True:
                line = await reader.readline()
                if not line:
                    break
                msg = json.loads(line)
                fut = self._pending.pop(msg.get("id"), None)
                if fut is not None and not fut.done():
                    fut.set_result(msg)
        except (OSError, ValueError) as e:
            err = ConnectionError(f"worker {self.addr[1]}: {e}")
        finally:
            if self._writer is writer:
                self._writer = None
            writer.close()
            pending, self._pending = self._pending, {}
            for fut in pending.values():
                if not fut.done():
                    fut.set_exception(err)

    async def call(self, msg: dict) -> dict:
        writer = await self._connect()
        self._next += 1
        rid = self._next
        fut = asyncio.get_running_loop().create_future()
        self._pending[rid] = fut
        try:
            writer.write(encode(dict(msg, id=rid)))
            return await fut
        finally:
            self._pending.pop(rid, None)

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None
