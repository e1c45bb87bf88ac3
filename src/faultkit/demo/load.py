"""The load generator: writes and reads keys at a bounded rate, remembers every acknowledged
write, and checks each read and the final read-back against them."""
from __future__ import annotations

import asyncio
import random
import time
from typing import Any, Callable, Optional

from faultkit.demo.front import Router, WriteFailed


class Second:
    """Counts and latencies of one second of load."""

    __slots__ = ("writes", "write_errors", "reads", "read_errors", "stale", "lat")

    def __init__(self) -> None:
        self.writes = self.write_errors = self.reads = self.read_errors = self.stale = 0
        self.lat: list = []


class Load:
    """``rate`` operations a second (``read_share`` of them reads) over ``keys`` keys, at
    most ``max_inflight`` at once (beyond that an operation is shed and counted).

    Every acknowledged write is kept as ``acked[key] = (version, value)``
    (the highest acknowledged version; one write per key is in flight at a
    time, so that is also the last).  ``attempted[(key, version)]`` holds the
    value of every write sent, acknowledged or not, so a read showing a
    version nobody acknowledged can still be checked for its value.  A read
    is *stale* if it returns a version older than the key's acknowledged
    version when the read started.
    """

    def __init__(self, router: Router, *, rate: float, keys: int = 1000, read_share: float = 0.5,
                 max_inflight: int = 64, seed: int = 0, clock: Callable[[], float] = time.monotonic) -> None:
        self.router = router
        self.rate = rate
        self.keys = [f"k{i:05d}" for i in range(keys)]
        self.read_share = read_share
        self.max_inflight = max_inflight
        self.rng = random.Random(seed)
        self.clock = clock
        self.acked: dict = {}
        self.attempted: dict = {}
        self.writing: set = set()
        self.inflight = 0
        self.shed = 0
        self.seconds: list = []
        self.t0: Optional[float] = None
        self.bad_values = 0
        self._seq = 0

    def _bucket(self, t: float) -> Second:
        i = int(t - self.t0)
        while len(self.seconds) <= i:
            self.seconds.append(Second())
        return self.seconds[i]

    async def run(self, duration: float) -> None:
        """Issue operations for ``duration`` seconds, then wait (bounded) for those in flight."""
        self.t0 = self.clock()
        tasks: set = set()
        n = 0
        while True:
            now = self.clock()
            if now - self.t0 >= duration:
                break
            due = self.t0 + n / self.rate
            if due > now:
                await asyncio.sleep(due - now)
                continue
            n += 1
            if self.inflight >= self.max_inflight:
                self.shed += 1
                continue
            if self.rng.random() < self.read_share:
                coro = self.read(self.rng.choice(self.keys))
            else:
                key = self.rng.choice(self.keys)
                if key in self.writing:
                    continue
                coro = self.write(key)
            t = asyncio.ensure_future(coro)
            tasks.add(t)
            t.add_done_callback(tasks.discard)
        if tasks:  # bounded: what is still running after 5 s is cancelled (not acknowledged)
            await asyncio.wait(tasks, timeout=5.0)
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def write(self, key: str) -> None:
        self.inflight += 1
        self.writing.add(key)
        self._seq += 1
        val = f"{key}/{self._seq}"
        t = self.clock()
        ver = self.router.new_version()
        self.attempted[(key, ver)] = val  # before it goes out: it may land even if never acknowledged
        try:
            await self.router.put(key, val, version=ver)
        except WriteFailed:
            self._bucket(t).write_errors += 1
        else:
            if ver > self.acked.get(key, (0,))[0]:
                self.acked[key] = (ver, val)
            s = self._bucket(t)
            s.writes += 1
            s.lat.append(self.clock() - t)
        finally:
            self.inflight -= 1
            self.writing.discard(key)

    async def read(self, key: str) -> None:
        self.inflight += 1
        floor = self.acked.get(key, (0,))[0]
        t = self.clock()
        try:
            ver, val, _ = await self.router.get(key)
        except Exception:
            self._bucket(t).read_errors += 1
        else:
            s = self._bucket(t)
            s.reads += 1
            s.lat.append(self.clock() - t)
            if ver < floor:
                s.stale += 1
            if ver and self.attempted.get((key, ver), val) != val:
                self.bad_values += 1
        finally:
            self.inflight -= 1

    def check(self, key: str, ver: int, val: Any) -> str:
        """The verdict on a final read of ``key``: ``"ok"`` (its last acknowledged
        write), ``"newer"`` (a later write that was not acknowledged but did
        land), or ``"lost"``."""
        want_ver, want_val = self.acked[key]
        if ver == want_ver and val == want_val:
            return "ok"
        if ver > want_ver and self.attempted.get((key, ver)) == val:
            return "newer"
        return "lost"

    async def verify(self, concurrency: int = 32) -> dict:
        """Read back every key with an acknowledged write, through the front end.

        A key is lost when its read fails outright after retries too: an
        acknowledged write that cannot be read back is not kept."""
        sem = asyncio.Semaphore(concurrency)
        result = {"ok": 0, "newer": 0, "lost": 0, "lost_keys": []}

        async def one(key: str) -> None:
            async with sem:
                for _ in range(5):
                    try:
                        ver, val, _ = await self.router.get(key)
                        break
                    except Exception:
                        await asyncio.sleep(0.2)
                else:
                    ver, val = -1, None
            verdict = self.check(key, ver, val)
            result[verdict] += 1
            if verdict == "lost" and len(result["lost_keys"]) < 20:
                result["lost_keys"].append([key, self.acked[key][0], ver])
        await asyncio.gather(*(one(k) for k in sorted(self.acked)))
        return result
