"""Membership across hosts through etcd: leases, keep-alive and a watch.

Each Node puts ``<prefix>members/<name>`` (JSON: address, domain,
incarnation) under a lease of ``ttl`` seconds that it keeps alive every
``ttl / 3`` s, and watches ``<prefix>``: a put is a join (or, for a name
already known, a restart), a delete is a leave (the Node revoked its lease)
or an expiry (the Node died and its lease ran out).  Each change reaches the
Node as one member, so the balancer moves only that node's keys.  A
watcher's verdict that a node it watches is unreachable is the key
``<prefix>obs/<target>/<observer>``, put under the observer's lease (it
vanishes with the observer).

Fail-static: when etcd cannot be reached (keep-alive or watch fails) the
backend reports ``healthy = False`` and changes nothing; the Node keeps its
last view and routes by its own reachability.  On reconnection it re-reads
the prefix and applies only the differences; a lease that expired meanwhile
is granted anew and the Node's key put again.  etcd itself extends every
lease when a leader is elected, so an etcd restart does not expire anyone.

Client: etcd's JSON gateway (the v3 HTTP API: ``/v3/kv/put``, ``/v3/kv/range``,
``/v3/lease/grant``, ``/v3/lease/keepalive``, ``/v3/lease/revoke``,
``/v3/watch``) over the standard library's ``http.client``, blocking calls
run in a worker thread and the watch stream read on its own thread.  No
dependency: the measured gRPC client (``aetcd``: put 0.74 ms, keep-alive 0.46
ms) is faster per call than the gateway (1.1 / 0.8 ms), but a Node makes one
keep-alive every ``ttl / 3`` s and one put per membership change, so the
difference is a few microseconds a second, not worth grpcio and protobuf
(whose version churn already broke the older ``etcd3`` package).
"""
from __future__ import annotations

import asyncio
import base64
import concurrent.futures
import http.client
import json
import logging
import math
import socket
import threading
import time
from typing import Optional
from urllib.parse import urlsplit

from faultkit.errors import MembershipError
from faultkit.run.membership import Member, Membership, OnChange, OnObservation, make_member

__all__ = ["EtcdMembership", "EtcdClient"]

_log = logging.getLogger(__name__)

DEFAULT_TTL = 5.0  # seconds: a SIGKILLed Node leaves the membership 5 to 5 + ttl/3 s later
DEFAULT_PREFIX = "/faultkit/"
_RETRY_MAX = 2.0  # seconds: attempts while etcd is unreachable come every min(ttl/6, this)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.b64decode(text)


def _prefix_end(prefix: bytes) -> bytes:
    """The range end covering every key that starts with ``prefix`` (etcd's convention)."""
    b = bytearray(prefix)
    for i in range(len(b) - 1, -1, -1):
        if b[i] < 0xFF:
            b[i] += 1
            return bytes(b[:i + 1])
    return b"\0"


class EtcdClient:
    """A minimal blocking client of etcd's v3 JSON gateway (one call, one connection).

    ``endpoint`` is ``"http://host:port"``; ``timeout`` seconds per call.
    Every failure (connection, HTTP status, an error body) raises
    :class:`~faultkit.MembershipError`.
    """

    def __init__(self, endpoint: str, *, timeout: float = 2.0) -> None:
        if not isinstance(endpoint, str):
            raise TypeError(f"endpoint must be a str, not {type(endpoint).__name__}")
        parts = urlsplit(endpoint)
        if parts.scheme != "http" or not parts.hostname or not parts.port:
            raise ValueError(f"endpoint must be http://host:port, got {endpoint!r}")
        if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) \
                or not math.isfinite(timeout) or timeout <= 0:
            raise ValueError(f"timeout must be a positive number of seconds, got {timeout!r}")
        self.endpoint = endpoint
        self.host, self.port = parts.hostname, parts.port
        self.timeout = float(timeout)

    def call(self, path: str, body: dict) -> dict:
        """POST ``body`` as JSON to ``path``; the decoded JSON answer."""
        conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
        try:
            conn.request("POST", path, json.dumps(body), {"Content-Type": "application/json"})
            resp = conn.getresponse()
            data = resp.read()
        except (OSError, http.client.HTTPException) as e:
            raise MembershipError(f"etcd {self.endpoint}{path}: {e}") from e
        finally:
            conn.close()
        try:
            out = json.loads(data or b"{}")
        except ValueError:
            raise MembershipError(f"etcd {path}: answer is not JSON: {data[:80]!r}") from None
        if resp.status != 200 or not isinstance(out, dict) or "error" in out:
            raise MembershipError(f"etcd {path}: HTTP {resp.status}: {str(out)[:200]}")
        return out

    # ---- the calls a Node needs ------------------------------------------
    def grant(self, ttl: float) -> int:
        """A new lease of ``ttl`` seconds (rounded up to whole seconds); its id."""
        out = self.call("/v3/lease/grant", {"TTL": max(1, math.ceil(ttl)), "ID": 0})
        return int(out["ID"])

    def keepalive(self, lease: int) -> int:
        """Refresh ``lease``; its remaining TTL in seconds (0: it has expired)."""
        out = self.call("/v3/lease/keepalive", {"ID": str(lease)})
        return int(out.get("result", {}).get("TTL", 0))

    def revoke(self, lease: int) -> None:
        """Revoke ``lease``: the keys put under it are deleted at once."""
        self.call("/v3/lease/revoke", {"ID": str(lease)})

    def put(self, key: bytes, value: bytes, lease: int = 0) -> int:
        """Put ``key`` = ``value`` (under ``lease`` when non-zero); the new revision."""
        body: dict = {"key": _b64(key), "value": _b64(value)}
        if lease:
            body["lease"] = str(lease)
        return int(self.call("/v3/kv/put", body)["header"]["revision"])

    def delete(self, key: bytes) -> None:
        """Delete ``key`` (no error if absent)."""
        self.call("/v3/kv/deleterange", {"key": _b64(key)})

    def range_prefix(self, prefix: bytes) -> tuple[int, list[tuple[bytes, bytes]]]:
        """(revision, [(key, value), ...]) of every key under ``prefix``."""
        out = self.call("/v3/kv/range", {"key": _b64(prefix), "range_end": _b64(_prefix_end(prefix))})
        kvs = [(_unb64(kv["key"]), _unb64(kv.get("value", ""))) for kv in out.get("kvs", [])]
        return int(out["header"]["revision"]), kvs


class _Watch(threading.Thread):
    """Reads one ``/v3/watch`` stream on a thread; hands each batch of events to
    ``deliver(events, revision)`` and calls ``broken()`` once when the stream ends."""

    def __init__(self, client: EtcdClient, prefix: bytes, start_revision: int, deliver, broken) -> None:
        super().__init__(name="faultkit-etcd-watch", daemon=True)
        self.client, self.prefix, self.start_revision = client, prefix, start_revision
        self.deliver, self.broken = deliver, broken
        self._conn: Optional[http.client.HTTPConnection] = None
        self._closed = False

    def run(self) -> None:
        body = {"create_request": {"key": _b64(self.prefix), "range_end": _b64(_prefix_end(self.prefix)),
                                   "start_revision": str(self.start_revision)}}
        try:
            conn = self._conn = http.client.HTTPConnection(self.client.host, self.client.port,
                                                           timeout=self.client.timeout)
            conn.request("POST", "/v3/watch", json.dumps(body), {"Content-Type": "application/json"})
            resp = conn.getresponse()
            if resp.status != 200:
                raise MembershipError(f"etcd watch: HTTP {resp.status}")
            # The stream is idle between changes: no read timeout from here on.
            if conn.sock is not None:
                conn.sock.settimeout(None)
            while not self._closed:
                line = resp.readline()
                if not line:
                    break
                line = line.strip()
                if not line:
                    continue
                msg = json.loads(line)
                result = msg.get("result", {})
                if "error" in msg or result.get("canceled") or int(result.get("compact_revision", 0) or 0):
                    break
                rev = int(result.get("header", {}).get("revision", 0))
                events = result.get("events", [])
                if events:
                    self.deliver(events, rev)
        except Exception as e:
            if not self._closed:
                _log.info("etcd watch ended: %s", e)
        finally:
            if not self._closed:
                self.broken()

    def close(self) -> None:
        self._closed = True
        conn = self._conn
        if conn is not None and conn.sock is not None:
            try:
                conn.sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            conn.close()


class EtcdMembership(Membership):
    """Membership in etcd under ``prefix`` (default ``"/faultkit/"``), through the JSON
    gateway at ``endpoint`` (``"http://127.0.0.1:2379"``).

    ``ttl``: the lease in seconds (default 5 s; a Node that dies leaves the
    membership between ``ttl`` and ``ttl + ttl/3`` s later); ``timeout``:
    seconds per etcd call (default 2 s).  ``stats`` counts ``keepalives``,
    ``errors``, ``resyncs``, ``grants``, ``bad_records`` (member values
    that are not valid JSON records, ignored) and ``held_evictions``.

    Never a mass eviction: a re-read after an outage that finds half the
    members or more gone at once (etcd's data lost or restored from an old
    backup) holds their removal for one ``ttl`` and reads again; live members
    have re-registered by then, and only those still gone are removed.
    """

    shares_observations = True

    def __init__(self, endpoint: str = "http://127.0.0.1:2379", *, prefix: str = DEFAULT_PREFIX,
                 ttl: float = DEFAULT_TTL, timeout: float = 2.0) -> None:
        self.client = EtcdClient(endpoint, timeout=timeout)
        if not isinstance(prefix, str) or not prefix:
            raise ValueError(f"prefix must be a non-empty str, got {prefix!r}")
        if isinstance(ttl, bool) or not isinstance(ttl, (int, float)) or not math.isfinite(ttl) or ttl < 1:
            raise ValueError(f"ttl must be a number of seconds >= 1, got {ttl!r}")
        self.prefix = prefix.encode("utf-8")
        self.ttl = float(ttl)
        self.stats = dict.fromkeys(("keepalives", "errors", "resyncs", "grants", "bad_records",
                                    "held_evictions"), 0)
        self._hold_until: Optional[float] = None
        self._healthy = False
        self._lease = 0
        self._lease_deadline: Optional[float] = None
        self._me: Optional[Member] = None
        self._view: dict[str, Member] = {}
        self._obs: set[tuple[str, str]] = set()      # (target, observer) keys seen
        self._mine: set[str] = set()                  # targets this node reports unreachable
        self._task: Optional[asyncio.Task] = None
        self._watch: Optional[_Watch] = None
        self._wake: Optional[asyncio.Event] = None
        self._need_sync = True
        self._pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="faultkit-etcd")
        self._loop: Optional[asyncio.AbstractEventLoop] = None

    @property
    def healthy(self) -> bool:
        return self._healthy

    @property
    def lease(self) -> int:
        """The current lease id (0 before start)."""
        return self._lease

    @property
    def lease_remaining(self) -> Optional[float]:
        """Seconds until the lease expires unless renewed, by etcd's answer to the last
        grant or keep-alive that succeeded (``time.monotonic``); None before start.
        Near zero while etcd is unreachable: the Node's record is about to vanish."""
        if self._lease_deadline is None:
            return None
        return max(0.0, self._lease_deadline - time.monotonic())

    def _key(self, *parts: str) -> bytes:
        return self.prefix + "/".join(parts).encode("utf-8")

    def _value(self, m: Member) -> bytes:
        return json.dumps({"address": f"{m.address[0]}:{m.address[1]}", "domain": m.domain,
                           "incarnation": m.incarnation}).encode("utf-8")

    async def _io(self, fn, *args):
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)

    # ---- lifecycle ---------------------------------------------------------
    async def start(self, me: Member, on_change: OnChange, on_observation: OnObservation) -> dict:
        """Grant a lease, put this member, read the prefix and start watching it.

        MembershipError if etcd cannot be reached now (a Node cannot join
        without it; once joined, it survives etcd outages fail-static).
        """
        self._loop = asyncio.get_running_loop()
        self._me, self._on_change, self._on_obs = me, on_change, on_observation
        self._wake = asyncio.Event()
        await self._register()
        await self._sync(initial=True)
        self._healthy = True
        self._task = asyncio.create_task(self._run())
        return dict(self._view)

    async def _register(self) -> None:
        asked = time.monotonic()
        self._lease = await self._io(self.client.grant, self.ttl)
        self._lease_deadline = asked + max(1, math.ceil(self.ttl))
        self.stats["grants"] += 1
        assert self._me is not None
        await self._io(self.client.put, self._key("members", self._me.name), self._value(self._me), self._lease)
        for target in list(self._mine):
            await self._io(self.client.put, self._key("obs", target, self._me.name), b"1", self._lease)

    def _parse(self, key: bytes, value: bytes):
        """("member", Member) / ("obs", (target, observer)) / None for a key under the prefix."""
        try:
            parts = key[len(self.prefix):].decode("utf-8").split("/")
        except UnicodeDecodeError:
            return None
        if len(parts) == 2 and parts[0] == "members":
            try:
                rec = json.loads(value)
                return "member", make_member(parts[1], rec["address"], rec.get("domain"),
                                             int(rec.get("incarnation", 0)))
            except (ValueError, TypeError, KeyError):
                self.stats["bad_records"] += 1
                return None
        if len(parts) == 3 and parts[0] == "obs":
            return "obs", (parts[1], parts[2])
        return None

    async def _sync(self, *, initial: bool = False) -> None:
        """Read the whole prefix, apply the differences to the view, (re)start the watch."""
        rev, kvs = await self._io(self.client.range_prefix, self.prefix)
        members: dict[str, Member] = {}
        obs: set = set()
        for k, v in kvs:
            p = self._parse(k, v)
            if p is None:
                continue
            if p[0] == "member":
                members[p[1].name] = p[1]
            else:
                obs.add(p[1])
        if initial:
            self._view, self._obs = members, obs
        else:
            self.stats["resyncs"] += 1
            me = self._me.name if self._me is not None else None
            gone = [n for n in self._view if n not in members and n != me]
            loop_now = asyncio.get_running_loop().time()
            if len(gone) > 1 and 2 * len(gone) >= len(self._view) and self._hold_until is None:
                # Half the members gone at once is etcd's loss (a wiped or restored data
                # dir), not theirs: live members re-register within ttl/3 of noticing.
                # Hold the removals one ttl and re-read; only what is still gone goes.
                _log.warning("etcd lost %d of %d members at once; holding their removal %.1f s",
                             len(gone), len(self._view), self.ttl)
                self.stats["held_evictions"] += len(gone)
                self._hold_until = loop_now + self.ttl
                gone = []
            elif self._hold_until is not None and loop_now < self._hold_until:
                gone = []
            else:
                self._hold_until = None
            for name in gone:
                self._apply_member_delete(name)
            for m in members.values():
                self._apply_member_put(m)
            for t, o in self._obs - obs:
                self._obs.discard((t, o))
                self._call(self._on_obs, o, t, False)
            for t, o in obs - self._obs:
                self._obs.add((t, o))
                self._call(self._on_obs, o, t, True)
        if self._watch is not None:
            self._watch.close()
        loop = asyncio.get_running_loop()

        def post(fn, *args) -> None:  # from the watch thread; the loop may be gone at shutdown
            try:
                loop.call_soon_threadsafe(fn, *args)
            except RuntimeError:
                pass

        w = _Watch(self.client, self.prefix, rev + 1,
                   deliver=lambda evs, r: post(self._deliver, w, evs),
                   broken=lambda: post(self._broken, w))
        self._watch = w
        w.start()
        self._need_sync = self._hold_until is not None  # re-read once the hold is over

    def _call(self, fn, *args) -> None:
        try:
            fn(*args)
        except Exception:  # the Node's handler: log, never kill the backend
            _log.exception("membership callback failed")

    def _apply_member_put(self, m: Member) -> None:
        old = self._view.get(m.name)
        if old == m:
            return
        self._view[m.name] = m
        self._call(self._on_change, "join" if old is None else "update", m)

    def _apply_member_delete(self, name: str) -> None:
        m = self._view.pop(name, None)
        if m is not None:
            self._call(self._on_change, "leave", m)

    def _deliver(self, watch: _Watch, events: list) -> None:
        if watch is not self._watch:
            return
        for ev in events:
            kv = ev.get("kv", {})
            try:
                key = _unb64(kv.get("key", ""))
                value = _unb64(kv.get("value", "")) if kv.get("value") else b""
            except ValueError:
                continue
            deleted = ev.get("type") == "DELETE"
            if deleted:
                try:
                    parts = key[len(self.prefix):].decode("utf-8").split("/")
                except UnicodeDecodeError:
                    continue
                if len(parts) == 2 and parts[0] == "members":
                    self._apply_member_delete(parts[1])
                elif len(parts) == 3 and parts[0] == "obs" and (parts[1], parts[2]) in self._obs:
                    self._obs.discard((parts[1], parts[2]))
                    self._call(self._on_obs, parts[2], parts[1], False)
                continue
            p = self._parse(key, value)
            if p is None:
                continue
            if p[0] == "member":
                self._apply_member_put(p[1])
            elif p[1] not in self._obs:
                self._obs.add(p[1])
                self._call(self._on_obs, p[1][1], p[1][0], True)

    def _broken(self, watch: _Watch) -> None:
        if watch is self._watch:
            self._need_sync = True
            self._healthy = False
            if self._wake is not None:
                self._wake.set()

    async def _run(self) -> None:
        period = self.ttl / 3  # keep-alive three times a lease: two may be lost
        delay = period
        while True:
            try:
                await asyncio.wait_for(self._wake.wait(), delay)
            except asyncio.TimeoutError:
                pass
            self._wake.clear()
            try:
                asked = time.monotonic()
                left = await self._io(self.client.keepalive, self._lease)
                if left <= 0:  # expired while we were cut off: join again
                    await self._register()
                    self._need_sync = True
                else:
                    self._lease_deadline = asked + left
                self.stats["keepalives"] += 1
                if self._need_sync and (self._hold_until is None
                                        or asyncio.get_running_loop().time() >= self._hold_until):
                    await self._sync()
                self._healthy = True
                delay = period
            except MembershipError as e:
                self.stats["errors"] += 1
                if self._healthy:
                    _log.warning("etcd unreachable, keeping the last view: %s", e)
                self._healthy = False
                self._need_sync = True
                delay = min(_RETRY_MAX, period / 2)

    def observe(self, target: str, unreachable: bool) -> None:
        """Put (or delete) ``<prefix>obs/<target>/<me>`` under this node's lease, in the background."""
        if self._me is None or self._loop is None:
            return
        if unreachable:
            self._mine.add(target)
        else:
            self._mine.discard(target)
        key = self._key("obs", target, self._me.name)

        def send() -> None:
            try:
                if unreachable:
                    self.client.put(key, b"1", self._lease)
                else:
                    self.client.delete(key)
            except MembershipError as e:  # the next re-registration puts _mine again
                self.stats["errors"] += 1
                _log.info("etcd observation not published: %s", e)

        self._loop.run_in_executor(self._pool, send)

    async def stop(self, leave: bool = True) -> None:
        """Stop keep-alive and watch; with ``leave``, revoke the lease (our keys vanish at once)."""
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except (asyncio.CancelledError, Exception):
                pass
            self._task = None
        if self._watch is not None:
            self._watch.close()
            self._watch = None
        if leave and self._lease:
            try:
                await self._io(self.client.revoke, self._lease)
            except MembershipError as e:
                _log.info("lease not revoked (it expires by itself): %s", e)
        self._pool.shutdown(wait=False)
        self._healthy = False

    def __repr__(self) -> str:
        return f"EtcdMembership({self.client.endpoint!r}, prefix={self.prefix.decode()!r}, ttl={self.ttl!r})"
