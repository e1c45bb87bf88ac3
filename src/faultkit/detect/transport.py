"""Heartbeats over UDP, authenticated with HMAC-SHA256 (asyncio).

A :class:`HeartbeatSender` sends, every ``interval`` seconds, one datagram
carrying a heartbeat for each of its names; a :class:`HeartbeatReceiver`
feeds the heartbeats it accepts into a detector (``faultkit.detect``).

Packet (version 1, big-endian), at most :data:`MAX_PACKET` bytes::

    magic  b"FK"            2
    version 1               1
    count  n (1..255)       1
    n x  name length L      1   (1..255)
         name (UTF-8)       L
         incarnation        8   uint64: bits 0-62 the incarnation (bumped by each
                                sender restart); bit 63 set: this entry is a LEAVE
         sequence           8   uint64, +1 per datagram within an incarnation
         send time          8   float64, the sender's wall clock (seconds since the epoch)
    tag                    32   HMAC-SHA256(key, every byte before the tag)

An entry whose incarnation field has bit 63 set (``incarnation | 2**63``) is
a *leave*: the sender of that incarnation stops gracefully, and the receiver
marks the name ``"left"`` at once (the detector's ``leave(name,
incarnation)``) instead of waiting for its timeout.  Leaves are signed and
sequenced like heartbeats (the same replay rule), and keep version 1: a
receiver from before leaves existed drops such a packet as malformed, which
is what it did for it anyway.  :meth:`HeartbeatSender.stop` sends the leave
:data:`LEAVE_REPEATS` times (UDP may drop one) before closing.

Only holders of the shared key can make a packet the receiver accepts, so
nobody else can keep a dead node alive or (by replaying old heartbeats with
a forged order) confuse it.  A heartbeat is accepted only if its
(incarnation, sequence) is above the last accepted one for its name, so a
captured packet cannot be replayed.  A receiver that restarts forgets those
pairs; senders restart with a higher incarnation (the default is the start
time in milliseconds), but packets of a sender's current incarnation captured
before the restart could then be replayed, in order, to keep that sender
alive after it dies.  With ``max_skew`` set, the receiver also drops
heartbeats whose send time is more than ``max_skew`` seconds from its own
wall clock, which bounds such replays to that window (it needs clocks synced
to within ``max_skew``, e.g. by NTP).

Malformed, unauthenticated, oversized and replayed packets are dropped and
counted in :attr:`HeartbeatReceiver.stats`; nothing a peer sends raises into
the event loop.

Receive paths (docs/transport.md).  Where the native module ``_recv`` was
built (Linux or another POSIX system, with OpenSSL >= 3's libcrypto found at
build time), the receiver drains its socket on a thread of its own, in
batches (``recvmmsg`` on Linux, a ``recvfrom`` loop elsewhere), with the GIL
released: it drops what cannot be genuine before any MAC (size, magic and
version, count against length), gives every source (address, port) a budget
of MAC verifications, penalises a source that keeps failing them, always
verifies sources that have sent valid datagrams, checks HMAC-SHA256 with
OpenSSL, and hands the accepted entries to the event loop in batches.
Without the module (or with ``native=False``) the receiver is an asyncio
datagram protocol that verifies each datagram in Python (``hmac``), as
before: same wire format, same stats, about 50,000 datagrams/s.
"""
from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import math
import os
import socket
import struct
import sys
import threading
import time
from typing import Any, Callable, Hashable, NamedTuple, Optional, Sequence, Union

__all__ = [
    "HeartbeatSender",
    "HeartbeatReceiver",
    "encode_packet",
    "decode_packet",
    "load_key",
    "parse_address",
    "PacketError",
    "Beat",
    "MAX_PACKET",
    "VERSION",
    "LEAVE_BIT",
    "LEAVE_REPEATS",
    "HAVE_NATIVE",
    "DEFAULT_RCVBUF",
    "MAX_INFLIGHT",
]

_log = logging.getLogger(__name__)

MAGIC = b"FK"
VERSION = 1
# 1400 bytes keeps a datagram inside one Ethernet frame (1500 MTU less IP/UDP
# headers and tunnel overhead), so a heartbeat is never lost to fragmentation.
MAX_PACKET = 1400
MAX_BEATS = 255
TAG_SIZE = 32  # HMAC-SHA256
MIN_KEY_BYTES = 16  # 128 bits: below this a key can be brute-forced
_HEAD = struct.Struct(">2sBB")
_ENTRY = struct.Struct(">QQd")
_INC_LIMIT = 2**63
# Bit 63 of an entry's incarnation field marks a leave (the rest is the incarnation).
LEAVE_BIT = 1 << 63
# A graceful stop sends its leave this many times, LEAVE_SPACING seconds apart:
# one lost datagram (the usual loss is independent and well under 1%) should
# not turn a clean stop into a timeout.  Duplicates are harmless (a second
# leave of the same incarnation changes nothing).
LEAVE_REPEATS = 3
LEAVE_SPACING = 0.005

Address = Union[str, "tuple[str, int]"]

try:  # the native receive path (setup.py builds it where OpenSSL >= 3 is found)
    from faultkit.detect import _recv
except ImportError:  # pragma: no cover - depends on the build
    _recv = None  # type: ignore[assignment]

#: Whether this build has the native receive path (see the module docstring).
HAVE_NATIVE = _recv is not None
# A receive buffer of 8 MiB holds about 0.1 s of a flood of short datagrams at
# 500,000/s (each costs its skb, ~1 KiB of buffer accounting), so a stall of the
# receiver thread that long loses nothing.  Linux grants min(asked, rmem_max)
# doubled; rcvbuf_force=True uses SO_RCVBUFFORCE (root / CAP_NET_ADMIN) to pass
# rmem_max.
DEFAULT_RCVBUF = 8 << 20
# Batches handed to the event loop and not yet processed, beyond which the
# receiver thread drops accepted entries (stats "backlog") rather than queue
# without bound behind a stalled loop.  64 batches of up to 4096 datagrams.
MAX_INFLIGHT = 64
_BATCH_DATAGRAMS = 4096
_POLL_TIMEOUT = 0.5  # seconds; close() wakes the thread at once through a pipe anyway
_INC_MASK = LEAVE_BIT - 1
# Python's socket module does not export SO_RCVBUFFORCE; Linux's value is 33
# (asm-generic/socket.h, the same on every Linux architecture but
# alpha/mips/parisc/sparc, where faultkit is not built for it).
_SO_RCVBUFFORCE = getattr(socket, "SO_RCVBUFFORCE", 33 if sys.platform == "linux" else None)


class Beat(NamedTuple):
    """One entry of a packet: a heartbeat, or with ``leave`` a leave, of ``name``'s
    ``incarnation`` (< 2**63), ``sequence`` and ``sent`` time (sender's wall clock)."""

    name: str
    incarnation: int
    sequence: int
    sent: float
    leave: bool = False


class PacketError(ValueError):
    """A datagram the receiver drops; ``reason`` is its stats counter."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason


def _check_key(key: Any) -> bytes:
    if not isinstance(key, (bytes, bytearray)):
        raise TypeError(f"key must be bytes, not {type(key).__name__}")
    if len(key) < MIN_KEY_BYTES:
        raise ValueError(f"key must be at least {MIN_KEY_BYTES} bytes, got {len(key)}")
    return bytes(key)


def load_key(path: Union[str, os.PathLike]) -> bytes:
    """The shared key in file ``path`` (surrounding whitespace stripped; >= 16 bytes)."""
    with open(path, "rb") as f:
        return _check_key(f.read().strip())


def parse_address(text: Address) -> tuple[str, int]:
    """``"host:port"`` (or a (host, port) tuple) as a (host, port) tuple; ValueError if malformed."""
    if isinstance(text, tuple) and len(text) == 2:
        host, port = text
    elif isinstance(text, str):
        host, sep, port_text = text.rpartition(":")
        if not sep or not host:
            raise ValueError(f"address must be host:port, got {text!r}")
        try:
            port = int(port_text)
        except ValueError:
            raise ValueError(f"port must be an integer in {text!r}") from None
    else:
        raise TypeError(f"address must be 'host:port' or (host, port), not {type(text).__name__}")
    if not isinstance(port, int) or not 0 <= port <= 65535:
        raise ValueError(f"port must be in [0, 65535], got {port!r}")
    return str(host).strip("[]"), port


def encode_packet(key: bytes, beats: Sequence[tuple]) -> bytes:
    """One datagram carrying ``beats``: (name, incarnation, sequence, send_time) tuples
    for heartbeats, or :class:`Beat` / 5-tuples whose last field ``leave`` marks a leave.

    ValueError if a field is out of range or the packet would exceed
    :data:`MAX_PACKET` bytes.
    """
    key = _check_key(key)
    if not 1 <= len(beats) <= MAX_BEATS:
        raise ValueError(f"a packet carries 1..{MAX_BEATS} heartbeats, got {len(beats)}")
    parts = [_HEAD.pack(MAGIC, VERSION, len(beats))]
    for beat in beats:
        if len(beat) == 4:
            (name, inc, seq, sent), leave = beat, False
        elif len(beat) == 5:
            name, inc, seq, sent, leave = beat
        else:
            raise ValueError(f"an entry is (name, incarnation, sequence, sent[, leave]), got {beat!r}")
        raw = name.encode("utf-8")
        if not 1 <= len(raw) <= 255:
            raise ValueError(f"name {name!r} must be 1..255 bytes of UTF-8")
        if not 0 <= inc < _INC_LIMIT or not 0 <= seq < 2**64:
            raise ValueError(f"incarnation {inc!r} / sequence {seq!r} out of range")
        if not math.isfinite(sent):
            raise ValueError(f"send time must be finite, got {sent!r}")
        parts += [bytes((len(raw),)), raw, _ENTRY.pack(inc | LEAVE_BIT if leave else inc, seq, sent)]
    body = b"".join(parts)
    if len(body) + TAG_SIZE > MAX_PACKET:
        raise ValueError(f"packet of {len(body) + TAG_SIZE} bytes exceeds {MAX_PACKET}")
    return body + hmac.new(key, body, hashlib.sha256).digest()


def decode_packet(key: bytes, data: bytes, *, max_packet: int = MAX_PACKET) -> list[Beat]:
    """The entries of datagram ``data`` as :class:`Beat` tuples; PacketError (reason:
    oversized, malformed or unauthenticated) unless it is a well-formed version-1
    packet signed with ``key``.

    An incarnation field with bit 63 set decodes as a leave (``leave=True``) of
    incarnation ``field & ~2**63``.  The tag is checked (in constant time)
    before any field is parsed.
    """
    n = len(data)
    if n > max_packet:
        raise PacketError("oversized", f"{n} bytes > {max_packet}")
    if n < _HEAD.size + 1 + _ENTRY.size + TAG_SIZE:
        raise PacketError("malformed", f"{n} bytes is too short")
    magic, version, count = _HEAD.unpack_from(data)
    if magic != MAGIC or version != VERSION:
        raise PacketError("malformed", f"magic {magic!r} version {version}")
    body, tag = data[:-TAG_SIZE], data[-TAG_SIZE:]
    if not hmac.compare_digest(hmac.new(key, body, hashlib.sha256).digest(), tag):
        raise PacketError("unauthenticated", "bad HMAC tag")
    beats = []
    pos, end = _HEAD.size, len(body)
    for _ in range(count):
        if pos >= end:
            raise PacketError("malformed", "truncated entry")
        size = body[pos]
        pos += 1
        if size == 0 or pos + size + _ENTRY.size > end:
            raise PacketError("malformed", "bad name length")
        try:
            name = body[pos:pos + size].decode("utf-8")
        except UnicodeDecodeError:
            raise PacketError("malformed", "name is not UTF-8") from None
        pos += size
        inc, seq, sent = _ENTRY.unpack_from(body, pos)
        pos += _ENTRY.size
        if not math.isfinite(sent):
            raise PacketError("malformed", "send time out of range")
        beats.append(Beat(name, inc & ~LEAVE_BIT, seq, sent, inc >= LEAVE_BIT))
    if count == 0 or pos != end:
        raise PacketError("malformed", "count does not match the body")
    return beats


class HeartbeatReceiver(asyncio.DatagramProtocol):
    """Receives heartbeat datagrams on ``bind`` and records them in ``detector``.

    ``detector`` is a :class:`~faultkit.TimeoutDetector` or
    :class:`~faultkit.PhiAccrualDetector`; heartbeats are stamped with its
    clock on arrival in the event loop (the sender's clock is not trusted for
    timing).  With ``auto_add``, an authenticated heartbeat from an unknown
    name adds it; by default (off) it is dropped as ``unknown``, so the
    members are the ones the application added (a :class:`~faultkit.Cluster`'s
    nodes) and a key holder cannot make the detector track names nobody
    routes to.  A leave entry (see the module docstring) calls the detector's
    ``leave(name, incarnation)``: ``"left"`` at once.

    ``native`` picks the receive path: None (default) the native one where
    this build has it (:data:`HAVE_NATIVE`), else the Python one; True
    requires the native path (RuntimeError without it); False forces the
    Python path.  ``rcvbuf`` is the socket receive buffer asked for, in bytes
    (default :data:`DEFAULT_RCVBUF`, 8 MiB); :attr:`rcvbuf` after
    :meth:`start` is what the kernel granted.  ``rcvbuf_force`` asks with
    ``SO_RCVBUFFORCE`` (Linux, needs root or CAP_NET_ADMIN) to exceed
    ``net.core.rmem_max``; it falls back to ``SO_RCVBUF`` when refused.
    ``budgets`` overrides the native path's per-source budgets, a dict with
    any of ``source_rate`` (MAC verifications per second per unknown source,
    default 1000), ``source_burst`` (256), ``unknown_rate`` (shared by all
    sources not yet known good, 200,000/s), ``unknown_burst`` (20,000),
    ``fail_limit`` (consecutive failures that penalise a source, 8),
    ``penalty`` (seconds a penalised source's datagrams are dropped before
    the MAC, 2.0) and ``max_sources`` (sources tracked, 4096); see
    docs/transport.md.

    ``stats`` counts datagrams and entries by fate: ``packets``
    (authenticated datagrams), ``heartbeats`` (recorded), ``leaves`` (leaves
    that took effect), ``after_leave`` (heartbeats or leaves ignored because
    that incarnation has left), ``oversized``, ``malformed``,
    ``unauthenticated``, ``replayed`` (entries), ``unknown``, ``rejected``
    (the detector refused it), ``stale`` (entries sent more than ``max_skew``
    seconds from ``wall_clock()``; off by default), ``socket_errors``,
    ``callback_errors``, and on the native path ``budget`` (dropped before
    the MAC: the source's or the unknown sources' budget was spent),
    ``penalised`` (dropped before the MAC: the source failed verification
    ``fail_limit`` times in a row) and ``backlog`` (authenticated entries
    dropped because the event loop had :data:`MAX_INFLIGHT` batches queued).
    The native path checks framing before the MAC, so a datagram both
    misframed and forged counts as ``malformed`` there and as
    ``unauthenticated`` on the Python path.  Native counts reach ``stats``
    with each batch the event loop processes.
    ``on_join(name)`` is called after a name added by ``auto_add`` has its
    first heartbeat recorded; an exception from it is logged (logger
    ``faultkit.transport``) and counted, never raised into the event loop.
    Use ``await receiver.start()`` / ``receiver.close()`` or ``async with``.
    """

    def __init__(self, detector: Any, bind: Address = "127.0.0.1:7946", *, key: bytes,
                 auto_add: bool = False, max_packet: int = MAX_PACKET,
                 on_join: Optional[Callable[[Hashable], Any]] = None,
                 max_skew: Optional[float] = None,
                 wall_clock: Callable[[], float] = time.time,
                 native: Optional[bool] = None, rcvbuf: int = DEFAULT_RCVBUF,
                 rcvbuf_force: bool = False, budgets: Optional[dict] = None) -> None:
        for attr in ("heartbeat", "add", "scan"):
            if not callable(getattr(detector, attr, None)):
                raise TypeError(f"detector must be a faultkit detector, not {type(detector).__name__}")
        self.detector = detector
        self.bind = parse_address(bind)
        self.key = _check_key(key)
        self.auto_add = bool(auto_add)
        if not isinstance(max_packet, int) or not 64 <= max_packet <= 65507:
            raise ValueError(f"max_packet must be in [64, 65507], got {max_packet!r}")
        self.max_packet = max_packet
        if on_join is not None and not callable(on_join):
            raise TypeError(f"on_join must be callable, not {type(on_join).__name__}")
        self.on_join = on_join
        if max_skew is not None:
            if isinstance(max_skew, bool) or not isinstance(max_skew, (int, float)):
                raise TypeError(f"max_skew must be a number of seconds or None, not "
                                f"{type(max_skew).__name__}")
            if not (math.isfinite(max_skew) and max_skew > 0):
                raise ValueError(f"max_skew must be a positive number of seconds, got {max_skew!r}")
            max_skew = float(max_skew)
        if not callable(wall_clock):
            raise TypeError(f"wall_clock must be callable, not {type(wall_clock).__name__}")
        self.max_skew = max_skew
        self.wall_clock = wall_clock
        if native is not None and not isinstance(native, bool):
            raise TypeError(f"native must be None, True or False, not {native!r}")
        if native and _recv is None:
            raise RuntimeError("native=True, but this build has no native receive path "
                               "(it needs OpenSSL >= 3 at build time; see docs/transport.md)")
        self.native = _recv is not None if native is None else native
        if isinstance(rcvbuf, bool) or not isinstance(rcvbuf, int) or not 0 <= rcvbuf <= 1 << 30:
            raise ValueError(f"rcvbuf must be an int in [0, 2**30] bytes (0: the system default), got {rcvbuf!r}")
        self._rcvbuf_asked = rcvbuf
        self._rcvbuf_force = bool(rcvbuf_force)
        #: Receive buffer the kernel granted, in bytes (None before start()).
        self.rcvbuf: Optional[int] = None
        self._filter = None
        if self.native:
            opts = dict(budgets or {})
            if budgets is not None and not isinstance(budgets, dict):
                raise TypeError(f"budgets must be a dict, not {type(budgets).__name__}")
            known = {"source_rate", "source_burst", "unknown_rate", "unknown_burst", "fail_limit",
                     "penalty", "max_sources"}
            bad = set(opts) - known
            if bad:
                raise ValueError(f"unknown budget options {sorted(bad)}; known: {sorted(known)}")
            try:
                self._filter = _recv.Receiver(self.key, max_packet, **opts)
            except TypeError as e:
                raise TypeError(f"budgets: {e}") from None
        elif budgets is not None:
            raise ValueError("budgets apply to the native receive path only (native is False)")
        self.stats = dict.fromkeys(
            ("packets", "heartbeats", "leaves", "after_leave", "oversized", "malformed",
             "unauthenticated", "replayed", "unknown", "rejected", "stale", "socket_errors",
             "callback_errors", "budget", "penalised", "backlog"), 0)
        self._seen: dict[str, tuple[int, int]] = {}
        self.transport: Optional[asyncio.DatagramTransport] = None
        self._sock: Optional[socket.socket] = None
        self._thread: Optional[threading.Thread] = None
        self._wake: Optional[tuple[int, int]] = None
        self._loop: Optional[asyncio.AbstractEventLoop] = None
        self._scheduled = 0  # batches handed to the loop (written by the thread only)
        self._delivered = 0  # batches the loop processed (written by the loop only)
        self._received = 0  # datagrams the thread has taken from the socket (written by it only)

    def _set_rcvbuf(self, sock: socket.socket) -> None:
        if self._rcvbuf_asked:
            done = False
            force = _SO_RCVBUFFORCE
            if self._rcvbuf_force and force is not None:
                try:
                    sock.setsockopt(socket.SOL_SOCKET, force, self._rcvbuf_asked)
                    done = True
                except OSError:
                    pass  # not privileged: the capped SO_RCVBUF below
            if not done:
                try:
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, self._rcvbuf_asked)
                except OSError:
                    pass  # keep the system default
        self.rcvbuf = sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)

    async def start(self) -> tuple[str, int]:
        """Bind the socket; returns the bound (host, port) (port 0 picks a free one).

        On the native path this also starts the receiver thread."""
        if self.transport is not None or self._sock is not None:
            raise RuntimeError("the receiver is already started")
        loop = asyncio.get_running_loop()
        if not self.native:
            await loop.create_datagram_endpoint(lambda: self, local_addr=self.bind)
            sock = self.transport.get_extra_info("socket") if self.transport is not None else None
            if sock is not None:
                self._set_rcvbuf(sock)
            return self.address
        host, port = self.bind
        infos = await loop.getaddrinfo(host, port, type=socket.SOCK_DGRAM)
        family, _, proto, _, addr = infos[0]
        sock = socket.socket(family, socket.SOCK_DGRAM, proto)
        try:
            self._set_rcvbuf(sock)
            sock.bind(addr)
            sock.setblocking(False)
        except BaseException:
            sock.close()
            raise
        self._sock, self._loop = sock, loop
        self._wake = os.pipe()
        self._thread = threading.Thread(target=self._run_native, name=f"faultkit-recv-{self.address[1]}",
                                        daemon=True)
        self._thread.start()
        return self.address

    def _leave(self, name: str, inc: int, seq: int, now: Optional[float]) -> None:
        stats, det = self.stats, self.detector
        leave = getattr(det, "leave", None)
        if name not in det:
            stats["unknown"] += 1  # a leave never adds a member
            return
        if leave is None:
            stats["rejected"] += 1
            return
        try:
            took = leave(name, inc, now=now)
        except (ValueError, KeyError, TypeError):
            stats["rejected"] += 1
            return
        self._seen[name] = (inc, seq)
        stats["leaves" if took else "after_leave"] += 1

    @property
    def address(self) -> tuple[str, int]:
        """The bound (host, port)."""
        if self._sock is not None:
            return self._sock.getsockname()[:2]
        if self.transport is None:
            raise RuntimeError("the receiver is not started")
        return self.transport.get_extra_info("sockname")[:2]

    def close(self) -> None:
        """Close the socket, stopping the receiver thread first (idempotent).

        Batches the thread already handed to the event loop are still
        processed when the loop runs them."""
        if self.transport is not None:
            self.transport.close()
            self.transport = None
        if self._thread is not None and self._wake is not None:
            try:
                os.write(self._wake[1], b"x")
            except OSError:  # pragma: no cover - the pipe is ours and open
                pass
            self._thread.join(timeout=10.0)
            if self._thread.is_alive():  # pragma: no cover - run() wakes on the pipe at once
                _log.error("receiver thread did not stop; leaving its socket open")
                return
            self._thread = None
        if self._wake is not None:
            for fd in self._wake:
                os.close(fd)
            self._wake = None
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    async def __aenter__(self) -> "HeartbeatReceiver":
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.close()

    # ---- the native path: a thread drains the socket ------------------------------
    def _run_native(self) -> None:
        rx, sock, wake, loop = self._filter, self._sock, self._wake, self._loop
        assert rx is not None and sock is not None and wake is not None and loop is not None
        fd = sock.fileno()
        prev = rx.counts()
        pending: dict[str, int] = {}
        while True:
            try:
                got = rx.run(fd, wake[0], _POLL_TIMEOUT, _BATCH_DATAGRAMS)
            except OSError:
                _log.exception("heartbeat receiver thread stopped by a socket error")
                pending["socket_errors"] = pending.get("socket_errors", 0) + 1
                got = None
            if loop.is_closed():  # the loop went away without close(): nobody to deliver to
                return
            if got is not None:
                counts = rx.counts()
                for k, v in counts.items():
                    if v != prev[k] and k != "datagrams":
                        pending[k] = pending.get(k, 0) + v - prev[k]
                prev = counts
                self._received = counts["datagrams"]
                if not got and not pending:
                    continue
                if self._scheduled - self._delivered >= MAX_INFLIGHT:
                    # The loop is not keeping up: drop, count, and never queue without bound.
                    pending["backlog"] = pending.get("backlog", 0) + len(got)
                    continue
            elif not pending:
                return
            self._scheduled += 1
            try:
                loop.call_soon_threadsafe(self._deliver, got or [], pending)
            except RuntimeError:  # the loop is closed: nobody to deliver to
                return
            pending = {}
            if got is None:
                return

    def _deliver(self, entries: list, counts: dict) -> None:
        """Event loop side of the native path: merge the counts, apply the entries."""
        self._delivered += 1
        stats = self.stats
        for k, v in counts.items():
            stats[k] = stats.get(k, 0) + v
        if entries:
            mask = _INC_MASK
            self._apply([(n, r & mask, q, t, r > mask) for n, r, q, t in entries], None)

    # ---- the Python path: asyncio.DatagramProtocol ---------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.handle(data)

    def error_received(self, exc: Exception) -> None:
        self.stats["socket_errors"] += 1

    def handle(self, data: bytes, now: Optional[float] = None) -> int:
        """Process one datagram with the Python verifier (what the Python path's socket
        calls; usable on either path for datagrams already in memory); returns
        heartbeats recorded.

        Never raises for anything in ``data``: bad packets are counted and dropped.
        """
        stats = self.stats
        try:
            beats = decode_packet(self.key, data, max_packet=self.max_packet)
        except PacketError as e:
            stats[e.reason] += 1
            return 0
        except Exception:  # pragma: no cover - defensive: decode handles every input
            stats["malformed"] += 1
            return 0
        stats["packets"] += 1
        return self._apply(beats, now)

    def _apply(self, beats: Sequence[tuple], now: Optional[float]) -> int:
        """Record authenticated entries (name, incarnation, sequence, sent, leave)."""
        stats = self.stats
        det, seen, done = self.detector, self._seen, 0
        skew = self.max_skew
        wall = self.wall_clock() if skew is not None else 0.0
        for name, inc, seq, sent, leave in beats:
            if seen.get(name, (-1, -1)) >= (inc, seq):
                stats["replayed"] += 1
                continue
            if skew is not None and not abs(sent - wall) <= skew:
                stats["stale"] += 1
                continue
            if leave:
                self._leave(name, inc, seq, now)
                continue
            if name not in det:
                if not self.auto_add:
                    stats["unknown"] += 1
                    continue
                det.add(name)
                joined = True
            else:
                joined = False
            try:
                recorded = det.heartbeat(name, now, incarnation=inc)
            except (ValueError, KeyError):
                stats["rejected"] += 1
                continue
            seen[name] = (inc, seq)
            if recorded is False:  # that incarnation has left: a heartbeat overtaken by its leave
                stats["after_leave"] += 1
                continue
            done += 1
            if joined and self.on_join is not None:
                try:
                    self.on_join(name)
                except Exception:
                    # The caller here is the event loop: a failing callback is the
                    # application's bug, reported, never allowed to drop heartbeats.
                    stats["callback_errors"] += 1
                    _log.exception("on_join callback failed for %r", name)
        stats["heartbeats"] += done
        return done


class HeartbeatSender:
    """Sends a heartbeat for ``name`` (a str, or several names in one datagram) to
    ``target`` every ``interval`` seconds (default 1 s, Akka's heartbeat-interval).

    ``incarnation`` defaults to the start time in milliseconds, so a restarted
    sender outranks its previous life at the receiver.  Names that do not fit
    one :data:`MAX_PACKET` datagram are split over several.  ``stats`` counts
    ``sent`` datagrams (leaves included) and ``errors``.  Use ``await
    sender.start()`` / ``await sender.stop()`` or ``async with``: a stop
    announces a leave (:data:`LEAVE_REPEATS` times), so the receiver reports
    the names ``"left"`` at once; :meth:`close` stops without one (the
    receiver sees what it would see of a crash, unless ``leave=True``).
    """

    def __init__(self, name: Union[str, Sequence[str]], target: Address, interval: float = 1.0, *,
                 key: bytes, incarnation: Optional[int] = None,
                 clock: Callable[[], float] = time.time) -> None:
        names = [name] if isinstance(name, str) else list(name)
        if not names or not all(isinstance(n, str) for n in names):
            raise TypeError("name must be a str or a non-empty sequence of str")
        for n in names:
            if not 1 <= len(n.encode("utf-8")) <= 255:
                raise ValueError(f"name {n!r} must be 1..255 bytes of UTF-8")
        self.names = names
        self.target = parse_address(target)
        if isinstance(interval, bool) or not isinstance(interval, (int, float)) \
                or not math.isfinite(interval) or interval <= 0:
            raise ValueError(f"interval must be a finite number of seconds > 0, got {interval!r}")
        self.interval = float(interval)
        self.key = _check_key(key)
        if incarnation is None:
            incarnation = time.time_ns() // 1_000_000
        if not isinstance(incarnation, int) or not 0 <= incarnation < _INC_LIMIT:
            raise ValueError(f"incarnation must be an int in [0, 2**63), got {incarnation!r}")
        self.incarnation = incarnation
        self.sequence = 0
        self._clock = clock
        self.stats = {"sent": 0, "errors": 0}
        self._transport: Optional[asyncio.DatagramTransport] = None
        self._task: Optional[asyncio.Task] = None
        # Names per datagram: each entry costs 1 + len(name) + 24 bytes.
        self._batches: list[list[str]] = []
        batch: list[str] = []
        size = _HEAD.size + TAG_SIZE
        for n in names:
            cost = 1 + len(n.encode("utf-8")) + _ENTRY.size
            if batch and (size + cost > MAX_PACKET or len(batch) == MAX_BEATS):
                self._batches.append(batch)
                batch, size = [], _HEAD.size + TAG_SIZE
            batch.append(n)
            size += cost
        self._batches.append(batch)

    def packets(self) -> list[bytes]:
        """The datagrams of the next heartbeat round (advances the sequence)."""
        out = []
        now = self._clock()
        for batch in self._batches:
            self.sequence += 1
            out.append(encode_packet(self.key, [(n, self.incarnation, self.sequence, now)
                                                for n in batch]))
        return out

    def leave_packets(self) -> list[bytes]:
        """The datagrams announcing that every name leaves (advances the sequence)."""
        out = []
        now = self._clock()
        for batch in self._batches:
            self.sequence += 1
            out.append(encode_packet(self.key, [(n, self.incarnation, self.sequence, now, True)
                                                for n in batch]))
        return out

    def _send(self, packets: list[bytes]) -> None:
        for p in packets:
            try:
                self._transport.sendto(p)  # type: ignore[union-attr]
                self.stats["sent"] += 1
            except OSError:
                self.stats["errors"] += 1

    async def start(self) -> None:
        """Open the socket and start sending (the first heartbeat goes at once)."""
        loop = asyncio.get_running_loop()
        self._transport, _ = await loop.create_datagram_endpoint(
            asyncio.DatagramProtocol, remote_addr=self.target)
        self._task = asyncio.create_task(self._run())

    def send_now(self) -> None:
        """Send one heartbeat round immediately."""
        if self._transport is None:
            raise RuntimeError("the sender is not started")
        self._send(self.packets())

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        due = loop.time()
        while True:
            self.send_now()
            due += self.interval
            # After a stall (e.g. SIGSTOP), resume the cadence rather than burst.
            due = max(due, loop.time())
            await asyncio.sleep(due - loop.time())

    async def stop(self, *, repeats: int = LEAVE_REPEATS, spacing: float = LEAVE_SPACING) -> None:
        """Stop gracefully: stop heartbeating, send the leave ``repeats`` times ``spacing``
        seconds apart (defaults :data:`LEAVE_REPEATS`, 5 ms), close (idempotent)."""
        if isinstance(repeats, bool) or not isinstance(repeats, int) or not 1 <= repeats <= 100:
            raise ValueError(f"repeats must be an int in [1, 100], got {repeats!r}")
        if isinstance(spacing, bool) or not isinstance(spacing, (int, float)) \
                or not (math.isfinite(spacing) and 0 <= spacing <= 1):
            raise ValueError(f"spacing must be in [0, 1] seconds, got {spacing!r}")
        if self._task is not None:
            self._task.cancel()
            self._task = None
        if self._transport is not None:
            packets = self.leave_packets()  # one sequence: duplicates of one leave
            for k in range(repeats):
                if k:
                    await asyncio.sleep(spacing)
                if self._transport is None:
                    break
                self._send(packets)
        self.close()

    def close(self, *, leave: bool = False) -> None:
        """Stop sending and close the socket (idempotent).  With ``leave``, first send
        the leave :data:`LEAVE_REPEATS` times back to back (for callers that cannot
        await :meth:`stop`)."""
        if self._task is not None:
            self._task.cancel()
            self._task = None
        if self._transport is not None:
            if leave:
                packets = self.leave_packets()
                for _ in range(LEAVE_REPEATS):
                    self._send(packets)
            self._transport.close()
            self._transport = None

    async def __aenter__(self) -> "HeartbeatSender":
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()
