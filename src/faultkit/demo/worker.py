"""One worker process: a ``faultkit.Node`` plus a TCP key-value server whose writes are
journaled before they are acknowledged.

Run by the demo's supervisor as ``python -m faultkit.demo.worker NAME CONFIG.json``.
State: per partition ``{key: [version, value]}``, last writer wins by version.
Requests (one JSON line each, answered with the same ``id``):

- ``put {p, k, ver, val}``: journal the write (durable on return: group
  commit), apply it, answer ``ok``.  The answer is the acknowledgement the
  front end counts; it is never sent before the journal says durable.
- ``get {p, k}``: ``{ver, val}`` (``ver`` 0: never written); refused with
  ``syncing`` until the startup catch-up is done.
- ``scan {p, since}``: every entry of partition ``p`` with version >= ``since``.
- ``sync {p, since, peers}``: pull ``scan`` from the peers, journal what is
  newer, apply it; ``ok`` once at least one peer answered.
- ``status``: name, incarnation, key count, whether the startup catch-up is done.

At start: recover the newest checkpoint plus the journal after it
(``Checkpointer.recover_with``), start the Node and the server, then catch up
every partition it holds from its peers before serving reads.  A damaged disk
(a checkpoint that fails its checksum, journal records damaged after they were
durable) is survived, not trusted: recovery falls back to an older checkpoint
and skips the damaged records with a warning, and the catch-up then waits for
*every* peer of each partition, since this worker may have lost writes it had
acknowledged and no one else knows which.  Every
``checkpoint_every`` seconds a checkpoint records the state and the journal
LSN it covers.  SIGTERM: a graceful stop (the Node sends its leave).
"""
from __future__ import annotations

import asyncio
import ctypes
import json
import logging
import os
import signal
import sys
import time
import warnings
from typing import Any

import faultkit as fk
from faultkit.demo.common import (MAX_LINE, PARTITIONS, Layout, encode, make_detector, partition_of,
                                  request_once)

log = logging.getLogger("faultkit.demo.worker")


def merge(part: dict, key: str, ver: int, val: Any) -> bool:
    """Last writer wins: store ``(ver, val)`` for ``key`` unless it already holds a version >= ``ver``."""
    cur = part.get(key)
    if cur is None or ver > cur[0]:
        part[key] = [ver, val]
        return True
    return False


def apply_record(state: dict, lsn: int, record: bytes) -> dict:
    """Apply one journal record (JSON list of ``[p, key, version, value]``) to ``state``; recovery's ``apply``."""
    parts = state["parts"]
    for p, k, ver, val in json.loads(record):
        merge(parts[p], k, ver, val)
    return state


def empty_state() -> dict:
    return {"parts": [{} for _ in range(PARTITIONS)]}


class Worker:
    """The worker's state, journal, checkpoints, Node and request handlers."""

    def __init__(self, name: str, cfg: dict) -> None:
        self.name = name
        self.cfg = cfg
        self.layout = Layout.from_json(cfg["layout"])
        data = os.path.join(cfg["dir"], name)
        os.makedirs(data, exist_ok=True)
        self.recovered: dict = {"checkpoint": None, "records": 0, "damage": []}
        with warnings.catch_warnings(record=True) as seen:
            warnings.simplefilter("always", fk.JournalWarning)
            warnings.simplefilter("always", fk.CheckpointWarning)
            self.journal = self._open_journal(os.path.join(data, "wal"))
            store = cfg.get("store")
            target = f"{store.rstrip('/')}/{name}" if store else os.path.join(data, "ckpt")
            self.ck = fk.Checkpointer(target, retain=2, journal=self.journal,
                                      store_options=cfg.get("store_options") if store else None)
            self.state = self._recover()
        for w in seen:
            if issubclass(w.category, (fk.JournalWarning, fk.CheckpointWarning)):
                self.recovered["damage"].append(str(w.message)[:300])
                log.warning("%s: %s", name, w.message)
        self.parts = self.state["parts"]
        self.pending: set = set()         # LSNs appended, not yet applied
        self.ready = False                # startup catch-up done: reads are served
        self.synced = {"partitions": 0, "pulled": 0, "unreached": 0}

    # ---- recovery and durability -------------------------------------------
    @staticmethod
    def _open_journal(path: str) -> fk.Journal:
        try:
            return fk.Journal(path, fsync="group", segment_bytes=4 << 20)
        except fk.CorruptJournalError:
            # Records damaged after they were durable: keep what the disk still
            # proves (the warning says what is skipped); the peers have the rest.
            return fk.Journal(path, fsync="group", segment_bytes=4 << 20, skip_corrupt=True)

    def _recover(self) -> dict:
        count = [0]

        def apply(state: dict, lsn: int, record: bytes) -> dict:
            count[0] += 1
            return apply_record(state, lsn, record)
        try:
            state = self.ck.recover_with(self.journal, apply=apply, skip_corrupt=True)
            self.recovered["checkpoint"] = self.ck.last_recovered.id
        except fk.NoCheckpointError:
            state = empty_state()
            for lsn, record in self.journal.replay(skip_corrupt=True):
                apply(state, lsn, record)
        self.recovered["records"] = count[0]
        self.recovered["keys"] = sum(len(p) for p in state["parts"])
        return state

    async def journal_then_apply(self, entries: list) -> None:
        """Append ``entries`` to the journal, wait until durable, then apply them."""
        lsn = self.journal.next_lsn  # the LSN append_async gives (one writer, this loop)
        self.pending.add(lsn)
        try:
            await self.journal.append_async(json.dumps(entries).encode())
            for p, k, ver, val in entries:
                merge(self.parts[p], k, ver, val)
        finally:
            self.pending.discard(lsn)

    async def checkpoint_loop(self) -> None:
        every = self.cfg["checkpoint_every"]
        while True:
            await asyncio.sleep(every)
            # The checkpoint covers every record below the oldest one still
            # being applied; records above that it may include too, and
            # replaying them again is harmless (last writer wins).
            covered = (min(self.pending) if self.pending else self.journal.next_lsn) - 1
            try:
                await asyncio.wrap_future(self.ck.save_async(self.state, lsn=covered))
            except (OSError, fk.FaultkitError) as e:  # e.g. an S3 lease still held by our previous life
                log.warning("%s: checkpoint failed: %s", self.name, e)

    # ---- catch-up ---------------------------------------------------------
    async def pull(self, p: int, since: int, peers: list) -> tuple:
        """Merge into partition ``p`` the entries >= ``since`` of every peer that answers:
        (peers that answered, entries taken)."""
        answers = await asyncio.gather(*(request_once(tuple(a), {"op": "scan", "p": p, "since": since}, 1.0)
                                         for a in peers), return_exceptions=True)
        got = [a for a in answers if isinstance(a, dict) and a.get("ok")]
        newest: dict = {}
        for a in got:
            for k, ver, val in a["items"]:
                if ver > newest.get(k, (0,))[0]:
                    newest[k] = (ver, val)
        part = self.parts[p]
        entries = [[p, k, ver, val] for k, (ver, val) in newest.items() if ver > part.get(k, (0,))[0]]
        if entries:
            await self.journal_then_apply(entries)
        return len(got), len(entries)

    async def startup_catch_up(self) -> None:
        """Before serving reads: pull every partition this worker holds from its peers.

        Writes are taken meanwhile (the front end sends them), so nothing
        acknowledged after the pull starts is missed either.  A partition
        none of whose peers answers within a few tries is left to the front
        end, which knows from its own records what this worker missed.  After
        damage to this worker's disk it may have lost writes it acknowledged,
        which no one recorded: then each partition waits for every peer (reads
        stay refused meanwhile) and there is no try limit."""
        todo = [] if self.cfg.get("unsafe") else self.layout.partitions_of(self.name)
        damaged = bool(self.recovered["damage"])
        tries = 0
        while todo and (damaged or tries < 5):
            tries += 1
            left = []
            for p in todo:
                peers = [self.layout.tcp_addr(w) for w in self.layout.placement(p) if w != self.name]
                answered, taken = await self.pull(p, 0, peers)
                self.synced["pulled"] += taken
                if answered == len(peers) or (answered and not damaged):
                    self.synced["partitions"] += 1
                else:
                    left.append(p)
            todo = left
            if todo:
                await asyncio.sleep(0.2)
        self.synced["unreached"] = len(todo)
        self.ready = True
        log.info("%s: caught up %s", self.name, self.synced)

    # ---- requests -----------------------------------------------------------
    async def handle(self, msg: dict) -> dict:
        op = msg.get("op")
        if op == "put":
            p, k, ver = msg["p"], msg["k"], msg["ver"]
            if not (isinstance(p, int) and 0 <= p < PARTITIONS and partition_of(k) == p and ver > 0):
                return {"ok": False, "err": f"bad put {msg!r:.80}"}
            if self.cfg.get("unsafe"):  # --unsafe: acknowledged from memory alone (what goes wrong)
                merge(self.parts[p], k, ver, msg["val"])
            else:
                await self.journal_then_apply([[p, k, ver, msg["val"]]])
            return {"ok": True}
        if op == "get":
            if not self.ready:
                return {"ok": False, "err": "syncing"}
            cur = self.parts[msg["p"]].get(msg["k"])
            return {"ok": True, "ver": cur[0] if cur else 0, "val": cur[1] if cur else None}
        if op == "scan":
            since = msg.get("since", 0)
            items = [[k, v[0], v[1]] for k, v in self.parts[msg["p"]].items() if v[0] >= since]
            return {"ok": True, "items": items}
        if op == "sync":
            answered, taken = await self.pull(msg["p"], msg.get("since", 0), msg["peers"])
            return {"ok": answered > 0, "pulled": taken, "err": None if answered else "no peer answered"}
        if op == "status":
            return {"ok": True, "name": self.name, "ready": self.ready, "pid": os.getpid(),
                    "keys": sum(len(p) for p in self.parts), "recovered": self.recovered,
                    "synced": self.synced, "syncs": self.journal.syncs}
        return {"ok": False, "err": f"unknown op {op!r:.40}"}

    async def serve_connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        async def one(msg: dict) -> None:
            try:
                out = await self.handle(msg)
            except (KeyError, TypeError, ValueError, IndexError) as e:
                out = {"ok": False, "err": f"{type(e).__name__}: {e}"}
            out["id"] = msg.get("id")
            out["inc"] = self.node.incarnation
            if not writer.is_closing():
                writer.write(encode(out))
        tasks: set = set()
        try:
            while True:
                line = await reader.readline()
                if not line:
                    break
                try:
                    msg = json.loads(line)
                except ValueError:
                    break
                if not isinstance(msg, dict):
                    break
                t = asyncio.ensure_future(one(msg))
                tasks.add(t)
                t.add_done_callback(tasks.discard)
        except (OSError, ValueError):  # reset by the peer, or a line over MAX_LINE
            pass
        finally:
            writer.close()

    async def run(self) -> None:
        cfg = self.cfg
        if cfg.get("etcd"):
            membership: Any = fk.EtcdMembership(cfg["etcd"], prefix=cfg["etcd_prefix"], ttl=cfg["etcd_ttl"])
        else:
            membership = fk.StaticMembership(self.layout.members())
        self.node = fk.Node(self.name, key=bytes.fromhex(cfg["key"]), membership=membership,
                            bind=f"{self.layout.host(self.name)}:{self.layout.udp[self.name]}",
                            domain=self.layout.path(self.name), interval=cfg["interval"],
                            detector=make_detector(cfg["detector"], cfg["interval"]))
        server = await asyncio.start_server(self.serve_connection, *self.layout.tcp_addr(self.name),
                                            reuse_address=True, limit=MAX_LINE)
        await self.node.start()
        log.info("%s: up, incarnation %d, recovered %s", self.name, self.node.incarnation, self.recovered)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, stop.set)
        tasks = [asyncio.ensure_future(self.checkpoint_loop()), asyncio.ensure_future(self.startup_catch_up())]
        await stop.wait()
        log.info("%s: stopping gracefully", self.name)
        server.close()
        for t in tasks:
            t.cancel()
        await self.node.stop()
        self.journal.close()
        self.ck.close()


def _die_with_parent() -> None:
    """Linux: get SIGKILL when the demo process dies, however it dies (PR_SET_PDEATHSIG)."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)
    except (OSError, AttributeError):  # not Linux: the supervisor's own cleanup still kills by PID
        pass


def main(argv: list) -> int:
    if len(argv) < 2:
        print("usage: python -m faultkit.demo.worker NAME CONFIG.json [--standby]", file=sys.stderr)
        return 2
    name, cfg_path = argv[0], argv[1]
    _die_with_parent()
    with open(cfg_path) as f:
        cfg = json.load(f)
    logging.basicConfig(level=logging.INFO, format=f"%(asctime)s {name} %(message)s", stream=sys.stderr)
    if "--standby" in argv:
        # A warm spare: everything imported; start when the supervisor says so
        # (a restart far quicker than a cold Python start).
        sys.stdout.write("standby\n")
        sys.stdout.flush()
        sys.stdin.readline()
    t0 = time.monotonic()
    worker = Worker(name, cfg)
    log.info("%s: recovered in %.3f s", name, time.monotonic() - t0)
    asyncio.run(worker.run())
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
