"""The front end: routes each key's writes to its replicas in three racks and its reads to an
in-sync replica, through a breaker per worker, retries within a deadline and hedged reads.

Correctness (docs/demo.md): every write gets a version from one counter;
workers keep the highest version per key.  A write is acknowledged once
WRITE_QUORUM replicas journaled it *and* every replica that did not is
recorded as *behind* for that partition from that version on.  Reads go
only to replicas that are not behind, not catching up after a restart and
routable in the Node's view, so any one of them holds every acknowledged
write.  A sync loop tells behind replicas to pull what they missed from
their peers, and clears the mark only if no new miss happened meanwhile.
"""
from __future__ import annotations

import asyncio
import itertools
import time
from typing import Any, Callable, Optional

import faultkit as fk
from faultkit.demo.common import (PARTITIONS, WRITE_QUORUM, Conn, Layout, NotReady, RemoteError,
                                  partition_of)

#: Per-request time limit: a healthy worker answers in milliseconds; a
#: stopped one (SIGSTOP) costs this much per request until its breaker opens.
RPC_TIMEOUT = 0.25
#: An operation (with its retries) gives up after this long.
WRITE_DEADLINE = 2.0
READ_DEADLINE = 1.0


class Unavailable(Exception):
    """Not enough replicas answered (a write: fewer than WRITE_QUORUM; a read: none in sync)."""


class WriteFailed(Exception):
    """A write was not acknowledged; ``version`` may still exist on some replica (indeterminate)."""

    def __init__(self, version: int, why: str) -> None:
        super().__init__(f"write version {version} not acknowledged: {why}")
        self.version = version


class Router:
    """The front end's routing, containment and replica bookkeeping (see the module docstring).

    ``signal(t, worker, what)`` is called for everything that tells the
    front end a worker changed: Node events, breaker transitions, outlier
    ejections, rack isolation, a new incarnation in an answer, catch-up done.
    """

    def __init__(self, layout: Layout, node: fk.Node, *, signal: Callable[[float, str, str], Any],
                 unsafe: bool = False, clock: Callable[[], float] = time.monotonic) -> None:
        self.layout = layout
        self.unsafe = unsafe  # --unsafe: no record of missed writes, no hold: what goes wrong without them
        self.node = node
        self.signal = signal
        self.clock = clock
        self.conns = {w: Conn(*layout.tcp_addr(w)) for w in layout.names}
        self.limiter = fk.TimeLimiter(RPC_TIMEOUT)
        self.breakers = {}
        for w in layout.names:
            b = fk.CircuitBreaker(failure_rate=0.5, minimum_calls=4, window_size=10, reset_timeout=0.5,
                                  half_open_calls=2, max_half_open_wait=5.0, exclude=(NotReady,))
            b.add_listener(lambda br, old, new, w=w: self.signal(self.clock(), w, f"breaker {new}"))
            self.breakers[w] = b
        self.hedge = fk.Hedge(max_attempts=2, min_delay=0.002, max_delay=0.1)
        self.write_retry = fk.Retry(8, backoff=0.05, max_backoff=0.3, deadline=WRITE_DEADLINE,
                                    retry_on=(Unavailable,))
        self.read_retry = fk.Retry(6, backoff=0.03, max_backoff=0.2, deadline=READ_DEADLINE,
                                   retry_on=(Unavailable, RemoteError, ConnectionError, TimeoutError,
                                             fk.CircuitOpenError))
        self._versions = itertools.count(1)
        self.behind: dict = {}       # (worker, partition) -> lowest version it may lack
        self.gen: dict = {}          # (worker, partition) -> misses recorded so far
        self.held: set = set()       # workers not (yet, or again after a restart) ready: no reads
        self.incarnation: dict = {}  # worker -> incarnation its answers carry
        self.syncing: set = set()    # (worker, partition) with a sync request in flight
        self.recoveries: list = []   # (t, worker, what its status said) when a restarted worker is released
        self.stats = dict.fromkeys(("rpc", "rpc_failed", "syncs", "sync_failed", "hedges"), 0)
        node.add_listener(self._on_event)
        for w in layout.names:   # no reads until a worker said it is ready (its first status)
            if not unsafe:
                self._hold(w, "not heard yet")

    # ---- what the Node and the answers tell us ------------------------------
    def _on_event(self, ev: fk.Event) -> None:
        if ev.name not in self.conns:
            return
        self.signal(self.clock(), ev.name, f"node {ev.new}")
        if ev.new == "restarted":  # the Node (hold_restarted=True) holds it already
            self._hold(ev.name, "Node: higher incarnation")

    def _hold(self, w: str, why: str) -> None:
        """A restarted worker: no reads until it says its startup catch-up is done."""
        if w not in self.held and not self.unsafe:
            self.held.add(w)
            try:
                self.node.hold(w)
            except KeyError:  # etcd membership: not a member right now
                pass

    def _answer(self, w: str, msg: dict) -> dict:
        inc = msg.get("inc")
        known = self.incarnation.get(w)
        if inc is not None and known != inc:
            self.incarnation[w] = inc
            if known is not None:
                self.signal(self.clock(), w, "reply incarnation")
                self._hold(w, "answer from a new incarnation")
        return msg

    def routable(self, w: str) -> bool:
        """The Node's view (not dead, left, isolated, ejected or held) and the breaker's."""
        try:
            if not self.node.cluster.is_routable(w):
                return False
        except KeyError:
            return False
        return self.breakers[w].state != "open"

    def readable(self, w: str, p: int) -> bool:
        return w not in self.held and (w, p) not in self.behind and self.routable(w)

    def read_replicas(self, p: int) -> list:
        return [w for w in self.layout.placement(p) if self.readable(w, p)]

    # ---- one request to one worker --------------------------------------------
    async def rpc(self, w: str, msg: dict) -> dict:
        """``msg`` to worker ``w`` through its breaker and the time limit; the answer or an exception.
        Outcomes also feed the Node's outlier ejection."""
        self.stats["rpc"] += 1
        t = self.clock()
        try:
            out = await self.breakers[w].call(self.limiter.call, self._send, w, msg)
        except fk.CircuitOpenError:
            raise
        except NotReady:
            raise
        except BaseException as e:
            if isinstance(e, Exception):
                self.stats["rpc_failed"] += 1
                self._report(w, False, self.clock() - t)
            raise
        self._report(w, True, self.clock() - t)
        return out

    async def _send(self, w: str, msg: dict) -> dict:
        out = self._answer(w, await self.conns[w].call(msg))
        if not out.get("ok"):
            if out.get("err") == "syncing":
                raise NotReady(f"{w} is catching up")
            raise RemoteError(f"{w}: {out.get('err')}")
        return out

    def _report(self, w: str, ok: bool, latency: float) -> None:
        try:
            e = self.node.report(w, ok, latency)
        except KeyError:
            return
        if e is not None and e.action == "eject":
            self.signal(self.clock(), w, "ejected")

    # ---- writes ----------------------------------------------------------------
    def new_version(self) -> int:
        """The next write version (one counter: versions order all writes)."""
        return next(self._versions)

    async def put(self, key: str, val: Any, *, version: Optional[int] = None) -> int:
        """Store ``key = val`` on its replicas; returns the version once acknowledged.

        ``version`` (default: :meth:`new_version`) lets the caller know it
        before the write goes out.  ``WriteFailed`` (with the version) if
        WRITE_QUORUM replicas could not journal it within WRITE_DEADLINE: not
        acknowledged, may or may not be visible later."""
        p = partition_of(key)
        ver = self.new_version() if version is None else version
        msg = {"op": "put", "p": p, "k": key, "ver": ver, "val": val}
        try:
            await self.write_retry.call(self._put_all, p, ver, msg)
        except Unavailable as e:
            raise WriteFailed(ver, str(e)) from None
        return ver

    async def _put_all(self, p: int, ver: int, msg: dict) -> None:
        replicas = self.layout.placement(p)
        done = await asyncio.gather(*(self._put_one(w, msg) for w in replicas))
        confirmed = [w for w, ok in zip(replicas, done) if ok]
        if len(confirmed) < WRITE_QUORUM:
            raise Unavailable(f"partition {p}: only {confirmed} journaled version {ver}")
        # Before the acknowledgement: every replica that has not journaled
        # this version is behind for the partition, so no read goes there
        # until it has caught up.
        for w in replicas:
            if w not in confirmed and not self.unsafe:
                self._mark_behind(w, p, ver)

    async def _put_one(self, w: str, msg: dict) -> bool:
        try:
            if self.node.view().get(w) in ("dead", "left"):
                return False
            await self.rpc(w, msg)
            return True
        except (Exception, asyncio.TimeoutError):
            return False

    def _mark_behind(self, w: str, p: int, ver: int) -> None:
        k = (w, p)
        self.behind[k] = min(ver, self.behind.get(k, ver))
        self.gen[k] = self.gen.get(k, 0) + 1

    # ---- reads -------------------------------------------------------------------
    async def get(self, key: str) -> tuple:
        """``(version, value)`` of ``key`` from an in-sync replica (hedged to a second
        one when the first is slow); ``(0, None)`` if never written.  Raises when
        no in-sync replica answered within READ_DEADLINE."""
        p = partition_of(key)

        async def attempt() -> tuple:
            replicas = self.read_replicas(p)
            if not replicas:
                raise Unavailable(f"partition {p}: no in-sync replica is routable")
            hedges = self.hedge.hedges
            out = await self.hedge.call(self._get_one, replicas, p, key)
            self.stats["hedges"] += self.hedge.hedges - hedges
            return out
        return await self.read_retry.call(attempt)

    async def _get_one(self, w: str, p: int, key: str) -> tuple:
        out = await self.rpc(w, {"op": "get", "p": p, "k": key})
        return out["ver"], out["val"], w

    # ---- catch-up -----------------------------------------------------------------
    async def sync_loop(self, period: float = 0.1, parallel: int = 4) -> None:
        """Forever: ask behind replicas to catch up; release restarted workers once caught up."""
        sem = asyncio.Semaphore(parallel)
        while True:
            for (w, p) in sorted(self.behind):
                if (w, p) not in self.syncing and self.routable_ignoring_hold(w):
                    self.syncing.add((w, p))
                    asyncio.ensure_future(self._sync(w, p, sem))
            for w in sorted(self.held):
                if self.routable_ignoring_hold(w):
                    asyncio.ensure_future(self._maybe_release(w))
            await asyncio.sleep(period)

    def routable_ignoring_hold(self, w: str) -> bool:
        try:
            why = self.node.cluster.why_unroutable(w)
        except KeyError:
            return False
        return not [r for r in why if r != "held"] and self.breakers[w].state != "open"

    async def _sync(self, w: str, p: int, sem: asyncio.Semaphore) -> None:
        k = (w, p)
        try:
            async with sem:
                g = self.gen.get(k)
                since = self.behind.get(k)
                if since is None:
                    return
                peers = [list(self.layout.tcp_addr(x)) for x in self.layout.placement(p) if x != w]
                self.stats["syncs"] += 1
                msg = await asyncio.wait_for(self.conns[w].call({"op": "sync", "p": p, "since": since,
                                                                  "peers": peers}), 3.0)
                self._answer(w, msg)
                if msg.get("ok") and self.gen.get(k) == g:
                    del self.behind[k]
                    if not any(x == w for x, _ in self.behind):
                        self.signal(self.clock(), w, "caught up")
                elif not msg.get("ok"):
                    self.stats["sync_failed"] += 1
        except (OSError, asyncio.TimeoutError, ValueError):
            self.stats["sync_failed"] += 1
        finally:
            self.syncing.discard(k)

    async def _maybe_release(self, w: str) -> None:
        try:
            st = await asyncio.wait_for(self.conns[w].call({"op": "status"}), 1.0)
        except (OSError, asyncio.TimeoutError, ValueError):
            return
        self._answer(w, st)
        if st.get("ready") and w in self.held:
            self.held.discard(w)
            try:
                self.node.release(w)
            except KeyError:
                pass
            self.signal(self.clock(), w, "released")
            self.recoveries.append((self.clock(), w, {k: st.get(k) for k in ("recovered", "synced")}))

    async def status(self, w: str, timeout: float = 1.0) -> Optional[dict]:
        try:
            st = await asyncio.wait_for(self.conns[w].call({"op": "status"}), timeout)
        except (OSError, asyncio.TimeoutError, ValueError):
            return None
        return self._answer(w, st)

    def in_sync(self, w: str) -> bool:
        """Routable, not held, behind on no partition: serving everything it holds."""
        return self.routable(w) and w not in self.held and not any(x == w for x, _ in self.behind)

    def primaries(self) -> list:
        """The worker each partition's reads go to first now (None: none readable)."""
        out = []
        for p in range(PARTITIONS):
            r = self.read_replicas(p)
            out.append(r[0] if r else None)
        return out

    def close(self) -> None:
        for c in self.conns.values():
            c.close()
