"""Journal appends: faultkit against SQLite in WAL mode and the floor, in one run.

Compare within a group: ``faultkit bench -k journal --benchmark-group-by=group``
(or ``pytest benchmarks/test_journal.py --benchmark-group-by=group``).

Each round appends ``N`` records of 100 B or 4 KiB from 1, 8 or 64 writers
(threads, or asyncio tasks) to a journal in a temporary directory (the disk
the tests use) and returns when every append has been acknowledged:

- ``faultkit-always`` / ``faultkit-group``: ``Journal(fsync=...)``; threads call
  ``append``, tasks ``await append_async``.
- ``sqlite-full`` / ``sqlite-normal``: ``sqlite3`` with ``journal_mode=WAL``, one
  ``INSERT`` per record in autocommit, ``synchronous=FULL`` (durable at
  commit) or ``NORMAL`` (WAL mode then syncs only at checkpoints: a commit
  survives a process crash, not a power loss).  One connection shared under
  a lock (SQLite has one writer); tasks go through ``asyncio.to_thread``.
- ``floor-per-record``: ``os.write`` + ``os.fsync`` per record on an
  ``O_APPEND`` file; ``floor-per-batch``: ``os.write`` of each record and one
  ``os.fsync`` per batch of as many records as there are writers, from one
  thread (no coordination at all: the least any group commit can cost).
- ``group-on-tmpfs``: ``faultkit-group`` with its journal in ``/dev/shm``, where
  ``fdatasync`` writes nothing: not durable, a reference for what the
  coordination alone costs (waking each waiting writer, which must then take
  the GIL back to return to Python).

``never`` mode: one thread, 100-byte records, faultkit's ``append`` and
``append_many`` (batches of 1000) against ``os.write`` per record (no fsync)
and SQLite with ``synchronous=OFF``.  Every round does the same work; the
benchmark reports seconds per round, and ``extra_info["appends_per_s"]``.
"""
import asyncio
import os
import sqlite3
import pathlib
import shutil
import tempfile
import threading

import pytest

import faultkit as fk

SIZES = {"100B": 100, "4KiB": 4096}
WRITERS = [1, 8, 64]
N = 1024  # records per round in the durable modes (each fsync is ~0.2-1.5 ms here)
N_NEVER = 200_000
ROUNDS = dict(rounds=5, iterations=1, warmup_rounds=1)


def record(size: int, i: int = 0) -> bytes:
    return (b"%08d" % i + bytes(range(256)) * (size // 256 + 1))[:size]


class Threads:
    """`writers` threads, started before the timer, each making n // writers calls of fn(index) per round."""

    def __init__(self, writers: int, n: int, fn):
        self.writers, self.per, self.fn = writers, n // writers, fn

    def setup(self):
        go = threading.Event()
        threads = [threading.Thread(target=self._work, args=(t, go)) for t in range(self.writers)]
        for t in threads:
            t.start()
        return (go, threads), {}

    def _work(self, t, go):
        go.wait()
        fn, base = self.fn, t * self.per
        for i in range(base, base + self.per):
            fn(i)

    @staticmethod
    def run(go, threads):
        go.set()
        for t in threads:
            t.join()


class Tasks:
    """`writers` asyncio tasks on one long-lived loop, each awaiting n // writers calls of afn(index)."""

    def __init__(self, writers: int, n: int, afn):
        self.writers, self.per, self.afn = writers, n // writers, afn
        self.loop = asyncio.new_event_loop()

    async def _work(self, t):
        afn, base = self.afn, t * self.per
        for i in range(base, base + self.per):
            await afn(i)

    async def _main(self):
        await asyncio.gather(*(self._work(t) for t in range(self.writers)))

    def run(self):
        self.loop.run_until_complete(self._main())

    def close(self):
        self.loop.run_until_complete(self.loop.shutdown_default_executor())
        self.loop.close()


class SqliteLog:
    def __init__(self, path, synchronous: str):
        self.db = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute(f"PRAGMA synchronous={synchronous}")
        self.db.execute("CREATE TABLE IF NOT EXISTS log (id INTEGER PRIMARY KEY, data BLOB)")
        self.lock = threading.Lock()

    def append(self, data: bytes) -> int:
        with self.lock:
            return self.db.execute("INSERT INTO log (data) VALUES (?)", (data,)).lastrowid

    def close(self):
        self.db.close()


def append_file(path):
    return os.open(str(path), os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o644)


def bench(benchmark, n, fn, setup=None):
    if setup is None:
        benchmark.pedantic(fn, **ROUNDS)
    else:
        benchmark.pedantic(fn, setup=setup, rounds=ROUNDS["rounds"], warmup_rounds=ROUNDS["warmup_rounds"])
    benchmark.extra_info["appends_per_s"] = round(n / benchmark.stats.stats.min)


def bench_writers(benchmark, n, style, writers, fn, afn):
    """Time n appends: fn(i) from `writers` threads, or afn(i) awaited from `writers` tasks."""
    if style == "threads":
        th = Threads(writers, n, fn)
        bench(benchmark, n, th.run, setup=th.setup)
    else:
        tasks = Tasks(writers, n, afn)
        try:
            bench(benchmark, n, tasks.run)
        finally:
            tasks.close()


CONTENDERS = ["faultkit-always", "faultkit-group", "sqlite-full", "sqlite-normal", "floor-per-record",
              "floor-per-batch", "group-on-tmpfs"]


@pytest.mark.parametrize("style", ["threads", "asyncio"])
@pytest.mark.parametrize("writers", WRITERS)
@pytest.mark.parametrize("size", list(SIZES))
@pytest.mark.parametrize("who", CONTENDERS)
def test_durable_appends(benchmark, tmp_path, who, size, writers, style):
    benchmark.group = f"journal: {N} durable appends of {size}, {writers} writer(s), {style}"
    recs = [record(SIZES[size], i) for i in range(N)]
    if who == "group-on-tmpfs":
        if not os.path.isdir("/dev/shm"):
            pytest.skip("no /dev/shm")
        tmp_path = pathlib.Path(tempfile.mkdtemp(dir="/dev/shm"))
        who = "faultkit-group"
    if who.startswith("faultkit"):
        j = fk.Journal(tmp_path / "j", fsync=who.split("-")[1])
        try:
            bench_writers(benchmark, N, style, writers, lambda i: j.append(recs[i]),
                          lambda i: j.append_async(recs[i]))
            assert j.durable_lsn == j.next_lsn - 1
        finally:
            j.close()
            if str(tmp_path).startswith("/dev/shm"):
                shutil.rmtree(tmp_path, ignore_errors=True)
    elif who.startswith("sqlite"):
        db = SqliteLog(tmp_path / "log.db", "FULL" if who == "sqlite-full" else "NORMAL")
        try:
            bench_writers(benchmark, N, style, writers, lambda i: db.append(recs[i]),
                          lambda i: asyncio.to_thread(db.append, recs[i]))
        finally:
            db.close()
    elif who == "floor-per-record":
        fd = append_file(tmp_path / "floor")

        def one(i):
            os.write(fd, recs[i])
            os.fsync(fd)

        try:
            bench_writers(benchmark, N, style, writers, one, lambda i: asyncio.to_thread(one, i))
        finally:
            os.close(fd)
    else:  # floor-per-batch: the same for threads and tasks
        fd = append_file(tmp_path / "floor")

        def batches():
            for b in range(0, N, writers):
                for i in range(b, b + writers):
                    os.write(fd, recs[i])
                os.fsync(fd)

        try:
            bench(benchmark, N, batches)
        finally:
            os.close(fd)


NEVER = ["faultkit-append", "faultkit-append_many", "os.write", "sqlite-off"]


@pytest.mark.parametrize("who", NEVER)
def test_never_mode_appends_from_one_thread(benchmark, tmp_path, who):
    benchmark.group = f"journal: {N_NEVER} appends of 100B, no fsync, one thread"
    rec = record(100)
    if who.startswith("faultkit"):
        j = fk.Journal(tmp_path / "j", fsync="never")
        try:
            if who == "faultkit-append":
                def run():
                    append = j.append
                    for _ in range(N_NEVER):
                        append(rec)
            else:
                batch = [rec] * 1000

                def run():
                    for _ in range(N_NEVER // 1000):
                        j.append_many(batch)
            bench(benchmark, N_NEVER, run)
        finally:
            j.close()
    elif who == "os.write":
        fd = append_file(tmp_path / "floor")

        def run():
            for _ in range(N_NEVER):
                os.write(fd, rec)

        try:
            bench(benchmark, N_NEVER, run)
        finally:
            os.close(fd)
    else:
        db = SqliteLog(tmp_path / "log.db", "OFF")

        def run():
            ex = db.db.execute
            for _ in range(N_NEVER):
                ex("INSERT INTO log (data) VALUES (?)", (rec,))

        try:
            bench(benchmark, N_NEVER, run)
        finally:
            db.close()
