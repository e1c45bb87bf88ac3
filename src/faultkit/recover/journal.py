"""``Journal``: a write-ahead log of records with log sequence numbers (LSNs).

A checkpoint says what the state was; the journal says what happened since.
Records are framed and checksummed natively (XXH3-64, csrc/faultkit/recover/journal.h),
written into memory-mapped segment files that rotate at a size, and made
durable by ``fdatasync`` according to the ``fsync`` mode.  Format:
docs/FORMAT.md ("Journal"); guide: docs/journal.md.
"""
from __future__ import annotations

import asyncio
import collections
import errno
import mmap as _mmap
import os
import re
import secrets
import shutil
import threading
import warnings
from typing import Any, Iterator, List, Optional, Tuple, Union

from faultkit.errors import CheckpointLockedError, CorruptJournalError, JournalLockedError, JournalWarning
from faultkit.recover import _journal, codec
from faultkit.recover.store import LocalStore

__all__ = ["Journal", "DEFAULT_SEGMENT_BYTES", "FSYNC_MODES"]

#: Default segment size: 64 MiB, as PostgreSQL's and RocksDB's WAL files
#: (tens of MiB): large enough that rotations (a new file, zero-filled in the
#: durable modes) are rare, small enough that truncation frees space in steps.
DEFAULT_SEGMENT_BYTES = 64 << 20
#: Durability modes: ``always`` syncs for each append, ``group`` shares one
#: sync among the appends that wait concurrently, ``never`` leaves it to the OS.
FSYNC_MODES = {"never": _journal.MODE_NEVER, "group": _journal.MODE_GROUP, "always": _journal.MODE_ALWAYS}
_SEGMENT = re.compile(r"^wal-(\d{20})\.fkj$")
_TEMP = re.compile(r"^\.wal-\d{20}\.fkj\.tmp$")
_MIN_SEGMENT = 4096


def _segment_name(first_lsn: int) -> str:
    return f"wal-{first_lsn:020d}.fkj"


def _check_archive(archive: Any) -> None:
    if archive is None:
        return
    missing = [m for m in ("put_atomic", "get", "list", "delete") if not callable(getattr(archive, m, None))]
    if missing:
        raise TypeError(f"archive must be a checkpoint store such as ObjectStore (it lacks {', '.join(missing)}), "
                        f"got {type(archive).__name__}")


def _prune_archive(archive: Any, lsn: int, names) -> None:
    """Delete the archived segments whose records all precede ``lsn`` (each has a successor at or before it).

    ``names``: what ``archive`` holds (its listing), so the store is listed once per truncation."""
    firsts = sorted(int(m.group(1)) for m in map(_SEGMENT.match, names) if m)
    for first, nxt in zip(firsts, firsts[1:]):
        if nxt > lsn:
            break
        archive.delete(_segment_name(first))


def _lsn_arg(name: str, value, minimum: int = 0) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {value!r}")
    if not minimum <= value < 2**63:
        raise ValueError(f"{name} must be in [{minimum}, 2**63), got {value}")
    return value


class _LoopWaiters:
    """The asyncio appends of one event loop that wait for durability.

    The first append of a burst schedules one ``kick`` with ``call_soon``: it
    runs after every task made ready with it has run (and appended), and asks
    the native flusher thread to sync everything appended so far, so a
    burst of appends shares one sync.  After the sync the flusher writes to
    this loop's eventfd; the loop's reader callback resolves, in LSN order,
    every future whose record is now durable.  No Python thread is involved.
    """

    def __init__(self, writer, loop):
        self.writer = writer
        self.loop = loop
        self.queue: collections.deque = collections.deque()  # (lsn, future), LSNs increasing
        if hasattr(os, "eventfd"):
            self.rfd = self.wfd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        else:  # pragma: no cover - Python < 3.10 or not Linux
            self.rfd, self.wfd = os.pipe()
            os.set_blocking(self.rfd, False)
            os.set_blocking(self.wfd, False)
        self.kicked = False
        loop.add_reader(self.rfd, self.on_durable)
        writer.add_notify_fd(self.wfd)
        writer.start_flusher()

    def kick(self) -> None:
        self.kicked = False
        self.writer.request_sync()

    def on_durable(self) -> None:
        try:
            os.read(self.rfd, 4096)
        except BlockingIOError:
            pass
        durable = self.writer.durable_lsn
        q = self.queue
        while q and q[0][0] <= durable:
            lsn, fut = q.popleft()
            if not fut.done():
                fut.set_result(lsn)
        err = self.writer.error
        if err and q:
            while q:
                lsn, fut = q.popleft()
                if not fut.done():
                    fut.set_exception(OSError(err, f"{os.strerror(err)}: journal sync failed, record {lsn} "
                                                   "is not acknowledged"))

    def detach(self, closed: bool) -> None:
        """Stop watching (in the loop's thread, or after the loop closed); fail what still waits.

        ``closed``: the journal closed (else the loop did, and its records may still become durable)."""
        self.writer.remove_notify_fd(self.wfd)
        try:
            if not self.loop.is_closed():
                self.loop.remove_reader(self.rfd)
        finally:
            self.on_durable()
            why = "Journal closed" if closed else "its event loop closed"
            for lsn, fut in self.queue:
                if not fut.done():
                    fut.set_exception(ValueError(f"{why} while record {lsn} waited to be durable"))
            self.queue.clear()
            os.close(self.rfd)
            if self.wfd != self.rfd:
                os.close(self.wfd)


def _refuse(record) -> int:
    raise ValueError("Journal is closed")


def _refuse_readonly(record) -> int:
    raise ValueError("Journal is read-only")


class Journal:
    """An append-only log of records with log sequence numbers, in a directory of segments.

    ``Journal(path, *, fsync="group", segment_bytes=64 MiB)`` opens (creating
    if needed) the journal in directory ``path`` for writing: it takes the
    directory's writer lock (``JournalLockedError`` if another process or
    Journal holds it; ``readonly=True`` takes none and only reads), cuts a
    torn tail left by a crash (never returned by :meth:`replay`), and starts
    a new segment.  The directory belongs to the journal: give a Checkpointer
    another one.

    ``append(record)`` returns the record's LSN (1, 2, 3, ... in append
    order; ``first_lsn`` sets the first LSN of a new journal).  A record is a
    bytes-like (stored as is) or any state the checkpoint codec encodes
    (stored as a ``faultkit.recover.dumps`` image and decoded by replay).
    When ``append`` returns:

    - ``fsync="always"``: the record is on disk (each append syncs);
    - ``fsync="group"`` (default): the record is on disk; appends waiting
      concurrently (threads, or asyncio tasks through :meth:`append_async`)
      share one sync, so throughput grows with the number of writers;
    - ``fsync="never"``: the record is in the OS page cache: it survives the
      death of the process but not a power loss or kernel crash (the OS
      writes it back within its dirty-page delay, ~30 s on Linux).

    Waiting for a sync releases the GIL.  ``segment_bytes`` (default 64 MiB,
    at least 4096) is the size at which segments rotate; a larger record gets
    a segment of its own size.  In the durable modes a new segment is
    zero-filled before use (so syncs rewrite blocks instead of allocating
    them); that write blocks appends for the rotation.  A full disk makes the
    append that needed a new segment raise ``OSError(ENOSPC)``: the record is
    not appended and the journal stays usable (free space, e.g. with
    :meth:`truncate_before`, and append again).  A failed sync (EIO, ...)
    fails every later call: the kernel may have dropped the pages it could
    not write, so reopen the journal (recovery then finds what is on disk).

    ``skip_corrupt=True`` lets opening continue past a damaged last segment
    (with a :class:`JournalWarning`); otherwise it raises
    :class:`CorruptJournalError`.

    ``archive`` (an :class:`~faultkit.recover.objstore.ObjectStore`, or any
    checkpoint store) keeps closed segments off the machine:
    :meth:`archive_closed` uploads the segments appends no longer go to, under
    their own names (``wal-<first LSN>.fkj``), and :meth:`truncate_before`
    uploads before it deletes anything locally and prunes the archive to the
    same LSN.  A replacement node with an empty disk gets them back with
    :meth:`restore` (docs/journal.md, "Archiving to an object store").
    """

    def __init__(self, path: Union[str, "os.PathLike[str]"], *, fsync: str = "group",
                 segment_bytes: int = DEFAULT_SEGMENT_BYTES, first_lsn: int = 1, readonly: bool = False,
                 skip_corrupt: bool = False, archive: Any = None):
        _check_archive(archive)
        self.archive = archive
        path = os.fspath(path)
        if not isinstance(path, str) or not path:
            raise TypeError(f"path must be a non-empty str or PathLike, got {path!r}")
        if fsync not in FSYNC_MODES:
            raise ValueError(f"fsync must be one of {sorted(FSYNC_MODES)}, got {fsync!r}")
        segment_bytes = _lsn_arg("segment_bytes", segment_bytes, _MIN_SEGMENT)
        first_lsn = _lsn_arg("first_lsn", first_lsn, 1)
        if not isinstance(readonly, bool):
            raise TypeError(f"readonly must be a bool, got {readonly!r}")
        self.path = path
        self.fsync = fsync
        self.segment_bytes = segment_bytes
        self.readonly = readonly
        self._mode = FSYNC_MODES[fsync]
        self._writer: Any = None  # _journal.Writer while open for writing
        self._lock: Any = None  # the directory's StoreLock
        self._loops: dict = {}  # event loop -> _LoopWaiters
        self._loops_mutex = threading.Lock()
        self._closed = False
        self._id: Any = None  # the journal id (int) once known
        self._append_bytes = _refuse_readonly
        if readonly:
            if not os.path.isdir(path):
                raise FileNotFoundError(errno.ENOENT, f"no journal directory {path!r}")
            return
        store = LocalStore(path, fsync=False, recycle=False)  # makes the directory; its flock is the lock
        try:
            self._lock = store.lock()
        except CheckpointLockedError as e:
            raise JournalLockedError(f"journal {path!r}: {e}".replace("one Checkpointer", "one Journal")) from None
        try:
            self._writer = self._open_writer(first_lsn, bool(skip_corrupt))
        except BaseException:
            self._lock.release()
            self._lock = None
            raise
        self._append_bytes = self._writer.append  # the thin path: bytes straight to the native writer

    def __repr__(self) -> str:
        return f"Journal({self.path!r}, fsync={self.fsync!r}, segment_bytes={self.segment_bytes})"

    # ------------------------------------------------------------ segments

    def _segments(self) -> List[Tuple[int, str]]:
        """(first LSN, file name) of every segment, in LSN order."""
        out = []
        for n in os.listdir(self.path):
            m = _SEGMENT.match(n)
            if m:
                out.append((int(m.group(1)), n))
        out.sort()
        return out

    def _where(self, name: str) -> str:
        return os.path.join(self.path, name)

    def _header(self, buf, name: str, first: int) -> int:
        """The journal id in segment ``name``'s header; CorruptJournalError if it is invalid."""
        st, major, minor, jid, hfirst = _journal.parse_segment_header(buf)
        if st == _journal.HEADER_VERSION:
            raise CorruptJournalError(
                f"journal segment {self._where(name)} has format version {major}.{minor}, newer than this "
                f"reader ({_journal.VERSION[0]}.{_journal.VERSION[1]}); upgrade faultkit to read it",
                segment=self._where(name), lsn=first)
        if st != _journal.HEADER_OK:
            why = {_journal.HEADER_SHORT: "shorter than its header", _journal.HEADER_MAGIC: "bad magic"}.get(
                st, "bad header checksum")
            raise CorruptJournalError(f"journal segment {self._where(name)}: {why} (records from LSN {first})",
                                      segment=self._where(name), lsn=first)
        if hfirst != first:
            raise CorruptJournalError(f"journal segment {self._where(name)} starts at LSN {hfirst}, not {first} as "
                                      "its name says", segment=self._where(name), lsn=first)
        if self._id is not None and jid != self._id:
            raise CorruptJournalError(f"journal segment {self._where(name)} belongs to another journal "
                                      f"(id {jid:#x}, not {self._id:#x})", segment=self._where(name), lsn=first)
        return jid

    @staticmethod
    def _map(path: str):
        with open(path, "rb", buffering=0) as f:
            size = os.fstat(f.fileno()).st_size
            if size == 0:
                return b""
            return _mmap.mmap(f.fileno(), 0, access=_mmap.ACCESS_READ)

    def _open_writer(self, first_lsn: int, skip_corrupt: bool) -> Any:
        for n in os.listdir(self.path):
            if _TEMP.match(n):  # a segment whose creation a crash interrupted
                try:
                    os.unlink(self._where(n))
                except OSError:
                    pass
        segs = self._segments()
        if not segs:
            self._id = secrets.randbits(64) or 1
            nxt = first_lsn
        else:
            first, name = segs[-1]
            nxt = self._recover_tail(first, name, skip_corrupt)
        return _journal.Writer(self.path, self._id, self._mode, self.segment_bytes, nxt, nxt - 1)

    def _recover_tail(self, first: int, name: str, skip_corrupt: bool) -> int:
        """Cut the torn tail of the last segment, seal and sync it; returns the next LSN."""
        where = self._where(name)
        buf = self._map(where)
        try:
            try:
                self._id = self._header(buf, name, first)
            except CorruptJournalError as e:
                if not skip_corrupt:
                    raise
                # Set it aside (kept for inspection) and continue after its first LSN.
                warnings.warn(f"{e}; renamed to {name}.damaged", JournalWarning, stacklevel=4)
                buf.close() if hasattr(buf, "close") else None
                os.rename(where, where + ".damaged")
                rest = self._segments()
                if rest:
                    self._id = self._header(self._map(self._where(rest[-1][1])), rest[-1][1], rest[-1][0])
                else:
                    self._id = secrets.randbits(64) or 1
                return first
            reader = _journal.SegmentReader(buf, self._id, first)
            while reader.next() is not None:
                pass
            status, end, nxt = reader.status, reader.pos, reader.expected
            reader.release()
            if status == _journal.NEXT_DAMAGED:
                msg = (f"journal segment {where}: record {nxt} is damaged (at byte {end}) and later records "
                       f"were written after it was durable")
                if not skip_corrupt:
                    raise CorruptJournalError(msg, segment=where, lsn=nxt)
                warnings.warn(msg + f"; records {nxt}..{reader.resume_lsn - 1} of this segment are skipped",
                              JournalWarning, stacklevel=4)
                return reader.resume_lsn
        finally:
            if hasattr(buf, "close"):
                buf.close()
        fd = os.open(where, os.O_RDWR | os.O_CLOEXEC)
        try:
            if status == _journal.NEXT_END:  # a crash: cut the torn tail and seal it
                seal = _journal.frame(self._id, nxt, nxt - 1, _journal.KIND_SEAL, b"")
                os.pwrite(fd, seal, end)
                os.ftruncate(fd, end + len(seal))
            os.fsync(fd)  # whatever a never-mode writer left in the page cache is durable from here on
        finally:
            os.close(fd)
        return nxt

    # ------------------------------------------------------------ writing

    def _check_writable(self) -> None:
        if self._writer is None:
            raise ValueError("Journal is read-only" if self.readonly else "Journal is closed")

    @staticmethod
    def _encode(record) -> Tuple[Any, int]:
        if isinstance(record, (bytes, bytearray, memoryview)):
            return record, _journal.KIND_BYTES
        return codec.dumps(record), _journal.KIND_STATE

    def append(self, record: Any) -> int:
        """Append ``record``; returns its LSN once it is as durable as the ``fsync`` mode promises.

        ``record``: a bytes-like (at most 1 GiB) or any tree the checkpoint
        codec supports (``TypeError`` names the unsupported part).
        ``OSError`` if it could not be appended or synced: it is then not
        acknowledged.
        """
        if type(record) is bytes:
            return self._append_bytes(record)
        self._check_writable()
        data, kind = self._encode(record)
        return self._writer.append(data, kind)

    def append_many(self, records) -> int:
        """Append a sequence of records with consecutive LSNs; returns the last one (0 if empty).

        One lock and, in the durable modes, one wait for all of them: the way
        to append many records fast (never mode: millions per second).  If
        some record cannot be encoded nothing is appended; if the disk fills
        up midway, the records before stay appended but none is acknowledged.
        """
        self._check_writable()
        if not isinstance(records, (list, tuple)):
            records = list(records)
        if all(type(r) is bytes for r in records):
            return self._writer.append_many(records)
        enc = [self._encode(r) for r in records]
        last = 0
        i = 0
        while i < len(enc):  # runs of one kind, one native call each; wait once at the end
            kind = enc[i][1]
            j = i
            while j < len(enc) and enc[j][1] == kind:
                j += 1
            last = self._writer.append_many([d for d, _ in enc[i:j]], kind, wait=False)
            i = j
        if last:
            self._writer.wait(last)
        return last

    def append_async(self, record: Any) -> "asyncio.Future[int]":
        """Append ``record`` from a coroutine: ``lsn = await journal.append_async(record)``.

        Call it from a running event loop.  The record is framed at once (in
        order with other appends; bad records raise here); the returned
        future completes with the LSN once the record is durable.  The first
        ``append_async`` of a loop iteration schedules one kick (``call_soon``)
        that runs after every task readied in that iteration has appended
        and asks a native flusher thread to sync all of them; the flusher
        wakes the loop through an eventfd, so the loop never blocks and a
        burst of appends shares one sync (``always`` mode included).
        Cancelling the await does not remove the record (it is just not
        acknowledged).  In ``never`` mode the future is already done.
        """
        loop = asyncio.get_running_loop()
        if type(record) is bytes:
            data, kind = record, _journal.KIND_BYTES
        else:
            self._check_writable()
            data, kind = self._encode(record)
        writer = self._writer
        if writer is None:
            self._check_writable()
        lsn = writer.append_nowait(data, kind)
        fut = loop.create_future()
        if self._mode == _journal.MODE_NEVER:
            fut.set_result(lsn)
            return fut
        w = self._loops.get(loop)
        if w is None:
            w = self._attach(loop)
        w.queue.append((lsn, fut))
        if not w.kicked:
            w.kicked = True
            loop.call_soon(w.kick)
        return fut

    def _attach(self, loop) -> _LoopWaiters:
        with self._loops_mutex:
            self._check_writable()
            for old in [lp for lp in self._loops if lp.is_closed()]:  # loops that ended
                self._loops.pop(old).detach(False)
            w = self._loops.get(loop)
            if w is None:
                w = self._loops[loop] = _LoopWaiters(self._writer, loop)
            return w

    def sync(self) -> int:
        """Make every appended record durable (whatever the mode); returns the durable LSN."""
        self._check_writable()
        return self._writer.sync()

    # ------------------------------------------------------------ state

    @property
    def next_lsn(self) -> int:
        """The LSN the next append gets (for a read-only journal: after the last valid record)."""
        if self._writer is not None:
            return self._writer.next_lsn
        last = 0
        segs = self._segments()
        # After the last valid record: damage before it is replay's to report, not this property's.
        for lsn, _ in self._replay(segs, segs[0][0] if segs else 1, True, True, quiet=True):
            last = lsn
        if last:
            return last + 1
        return segs[-1][0] if segs else 1

    @property
    def durable_lsn(self) -> int:
        """Every record up to this LSN is durable (0 for a read-only journal: unknown)."""
        return self._writer.durable_lsn if self._writer is not None else 0

    @property
    def syncs(self) -> int:
        """How many times this writer called fdatasync (group commit: far fewer than appends)."""
        return self._writer.syncs if self._writer is not None else 0

    @property
    def appended_bytes(self) -> int:
        """Framed bytes (headers, data, checksums) this writer appended since it opened."""
        return self._writer.appended_bytes if self._writer is not None else 0

    @property
    def failed(self) -> bool:
        """Whether a sync failed: the error is sticky (the kernel may have dropped the pages it
        could not write), appends raise it, and the journal must be reopened and recovered."""
        return bool(self._writer is not None and self._writer.error)

    @property
    def first_lsn(self) -> int:
        """The LSN of the oldest record still stored (records before were truncated)."""
        segs = self._segments()
        if segs:
            return segs[0][0]
        return self._writer.next_lsn if self._writer is not None else 1

    def segments(self) -> List[Tuple[int, str, int]]:
        """``(first LSN, path, size in bytes)`` of each segment file, oldest first."""
        out = []
        for first, name in self._segments():
            try:
                out.append((first, self._where(name), os.stat(self._where(name)).st_size))
            except FileNotFoundError:
                pass
        return out

    # ------------------------------------------------------------ reading

    def replay(self, from_lsn: Optional[int] = None, *, skip_corrupt: bool = False,
               raw: bool = False) -> Iterator[Tuple[int, Any]]:
        """Yield ``(lsn, record)`` for every record from ``from_lsn`` (default: the oldest stored), in order.

        Records appended as bytes come back as ``bytes``; other records are
        decoded (``raw=True`` returns their codec image instead).  Replay
        stops at the torn tail a crash left (those records were never
        acknowledged).  A damaged record that had been durable, a damaged
        segment header or missing records raise :class:`CorruptJournalError`
        naming the segment and the LSN; ``skip_corrupt=True`` instead warns
        (:class:`JournalWarning`) and continues with the next valid segment,
        so LSNs then have a gap.  ``ValueError`` if ``from_lsn`` precedes the
        oldest stored record (truncated).  Safe while a writer appends: a
        reader sees each record whole or not at all.
        """
        segs = self._segments()
        if from_lsn is None:
            from_lsn = segs[0][0] if segs else 1
        from_lsn = _lsn_arg("from_lsn", from_lsn, 1)
        return self._replay(segs, from_lsn, bool(skip_corrupt), bool(raw))

    def _replay(self, segs, from_lsn: int, skip: bool, raw: bool, quiet: bool = False):
        if not segs:
            return
        if from_lsn < segs[0][0]:
            raise ValueError(f"records before LSN {segs[0][0]} were truncated; cannot replay from {from_lsn}")
        start = 0
        for i, (first, _) in enumerate(segs):
            if first <= from_lsn:
                start = i
        expected = segs[start][0]

        def damaged(err: CorruptJournalError) -> None:
            if not skip:
                raise err
            if not quiet:
                warnings.warn(f"{err}; skipping to the next segment", JournalWarning, stacklevel=3)

        for idx in range(start, len(segs)):
            first, name = segs[idx]
            where = self._where(name)
            last_seg = idx == len(segs) - 1
            if first != expected:
                err = CorruptJournalError(
                    f"journal segment {where} starts at LSN {first} but the previous segment ends before "
                    f"LSN {expected}: records {min(first, expected)}..{max(first, expected) - 1} are "
                    f"{'missing' if first > expected else 'duplicated'}", segment=where, lsn=expected)
                damaged(err)
                expected = first
            try:
                buf = self._map(where)
            except FileNotFoundError:
                if idx == start and from_lsn >= first:  # truncated while we started: newer ones remain
                    raise ValueError(f"records before LSN {from_lsn} were truncated during replay") from None
                raise
            try:
                try:
                    jid = self._header(buf, name, first)
                except CorruptJournalError as e:
                    damaged(e)
                    if not last_seg:
                        expected = segs[idx + 1][0]
                    continue
                if self._id is None:
                    self._id = jid
                reader = _journal.SegmentReader(buf, jid, first)
                try:
                    while True:
                        r = reader.next()
                        if r is None:
                            break
                        lsn, kind, payload = r
                        if lsn < from_lsn:
                            continue
                        if kind == _journal.KIND_STATE and not raw:
                            try:
                                value = codec.loads(payload)
                            except Exception as e:  # checksummed, so a writer bug or a registry change
                                raise CorruptJournalError(
                                    f"journal segment {where}: record {lsn} does not decode: {e}",
                                    segment=where, lsn=lsn) from e
                            yield lsn, value
                        else:
                            yield lsn, payload
                    expected = reader.expected
                    if reader.status == _journal.NEXT_DAMAGED:
                        damaged(CorruptJournalError(
                            f"journal segment {where}: record {expected} is damaged (at byte {reader.pos}) and "
                            f"later records were written after it was durable", segment=where, lsn=expected))
                        if not last_seg:
                            expected = segs[idx + 1][0]
                        continue
                    if reader.status == _journal.NEXT_END and not last_seg and segs[idx + 1][0] != expected:
                        damaged(CorruptJournalError(
                            f"journal segment {where}: record {expected} is damaged or missing (at byte "
                            f"{reader.pos}) and the next segment starts at LSN {segs[idx + 1][0]}",
                            segment=where, lsn=expected))
                        expected = segs[idx + 1][0]
                finally:
                    reader.release()
            finally:
                if hasattr(buf, "close"):
                    buf.close()

    # ------------------------------------------------------------ truncation

    def truncate_before(self, lsn: int) -> int:
        """Delete the segments whose records all precede ``lsn``; returns the new :attr:`first_lsn`.

        Whole segments only (records before ``lsn`` in a kept segment stay),
        and never the active one.  Call it with a checkpoint's LSN + 1 once
        the checkpoint is durable, or let a ``Checkpointer(journal=...)`` do
        it after each save (it keeps the journal back to its oldest retained
        checkpoint).  With an ``archive``, every closed segment is uploaded
        first (a failed upload raises and deletes nothing), and archived
        segments whose records all precede ``lsn`` are deleted from it too.
        """
        self._check_writable()
        lsn = _lsn_arg("lsn", lsn, 1)
        if self.archive is not None:
            _, held = self._archive_closed()
            _prune_archive(self.archive, lsn, held)
        segs = self._segments()
        active = os.path.basename(self._writer.segment_path)
        removed = False
        for i in range(len(segs) - 1):
            first_next = segs[i + 1][0]
            if first_next > lsn or segs[i][1] == active:
                break
            os.unlink(self._where(segs[i][1]))  # oldest first: what remains is a contiguous suffix
            removed = True
        if removed and self._mode != _journal.MODE_NEVER:
            fd = os.open(self.path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        return self.first_lsn

    # ------------------------------------------------------------ archive

    def archive_closed(self) -> List[str]:
        """Upload every closed segment the ``archive`` does not hold yet; returns their names.

        Closed: every segment but the active one, so each is complete and will
        not change.  Idempotent (names the archive already holds are skipped;
        an upload whose commit reply was lost is recognised as ours), and
        a cut upload is retried by the store or leaves nothing visible
        (:meth:`ObjectStore.put_atomic <faultkit.recover.objstore.ObjectStore.put_atomic>`
        commits whole objects only).  ``ValueError`` without an ``archive``."""
        self._check_writable()
        if self.archive is None:
            raise ValueError(f"journal {self.path!r} has no archive: Journal(..., archive=store)")
        return self._archive_closed()[0]

    def _archive_closed(self) -> Tuple[List[str], set]:
        """:meth:`archive_closed`'s work: (the names uploaded, every name the archive now holds)."""
        active = os.path.basename(self._writer.segment_path)
        have = set(self.archive.list())
        sent = []
        for _, name in self._segments():
            if name == active or name in have:
                continue
            where = self._where(name)

            def write(f, where=where) -> None:
                with open(where, "rb") as src:
                    shutil.copyfileobj(src, f, 1 << 20)
            self.archive.put_atomic(name, write)
            sent.append(name)
        return sent, have.union(sent)

    @classmethod
    def restore(cls, archive: Any, path: Union[str, "os.PathLike[str]"], **options: Any) -> "Journal":
        """The journal at ``path`` with every archived segment it lacks fetched from ``archive``, opened.

        For a replacement node (an empty or missing ``path``): the archived
        segments are written to ``path`` (each synced and renamed into place)
        and the journal opens on them, so :meth:`replay` and
        ``Checkpointer.recover_with`` see every record up to the end of the
        last archived segment.  When the old disk survived, only segments
        it lacks are fetched and its own tail is kept.  ``options`` are
        :class:`Journal`'s (``archive`` defaults to ``archive``).  A damaged
        archived segment is reported as the journal reports any damage:
        :class:`CorruptJournalError` naming the segment and LSN."""
        _check_archive(archive)
        if archive is None:
            raise ValueError("restore needs an archive to fetch segments from")
        path = os.fspath(path)
        os.makedirs(path, exist_ok=True)
        local = set(os.listdir(path))
        for name in sorted(n for n in archive.list() if _SEGMENT.match(n)):
            if name in local:
                continue
            data = archive.get(name)
            tmp = os.path.join(path, "." + name + ".tmp")
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view):]
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(tmp, os.path.join(path, name))
        dfd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
        options.setdefault("archive", archive)
        return cls(path, **options)

    # ------------------------------------------------------------ lifetime

    def close(self) -> None:
        """Seal and sync the active segment and release the writer lock (idempotent).

        Asyncio appends still waiting complete (the close syncs them) when
        close is called from their loop's thread; otherwise they fail with
        ``ValueError`` once their loop runs.
        """
        writer, self._writer = self._writer, None
        self._append_bytes = _refuse
        try:
            if writer is not None:
                writer.close()
        finally:
            with self._loops_mutex:
                loops, self._loops = self._loops, {}
            running: Optional[asyncio.AbstractEventLoop]
            try:
                running = asyncio.get_running_loop()
            except RuntimeError:
                running = None
            for loop, w in loops.items():
                if loop is running or loop.is_closed():
                    w.detach(True)
                else:
                    try:
                        loop.call_soon_threadsafe(w.detach, True)
                    except RuntimeError:
                        w.detach(True)
            lock, self._lock = self._lock, None
            if lock is not None:
                lock.release()
            self._closed = True

    def __enter__(self) -> "Journal":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
