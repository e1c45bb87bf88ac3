"""``Checkpointer``: durable, checksummed, atomic checkpoints with fallback recovery."""
from __future__ import annotations

import concurrent.futures
import dataclasses
import errno
import io
import os
import re
import threading
import time
import warnings
from typing import Any, Callable, List, Optional, Union

from faultkit.recover import _codec
from faultkit.recover import tracking
from faultkit.errors import (
    CheckpointWarning,
    CorruptCheckpointError,
    CorruptJournalError,
    NoCheckpointError,
    StoreError,
)
from faultkit.recover import codec
from faultkit.recover.store import LocalStore, Store, StoreLock

__all__ = ["Checkpointer", "CheckpointInfo"]

_FILE = re.compile(r"^ckpt-(\d{12,19})\.fkc$")
#: Checkpoint ids are in [1, _MAX_ID): the next id always fits the format's
#: 63-bit range.  A name is a checkpoint's only if it is exactly
#: ``Checkpointer._name(id)`` for such an id: 12 digits, zero-padded, more only
#: when the id needs them; anything else is a foreign entry and is ignored.
_MAX_ID = 2**63 - 1
#: Names that look like a checkpoint's but are not canonical (recover() warns about them).
_LOOKALIKE = re.compile(r"^ckpt-\d+\.fkc$")
#: A path of this form is an object-store URL (s3://bucket/prefix): see faultkit.recover.objstore.
_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
#: Default chunk for incremental checkpoints and per-chunk checksums (1 MiB,
#: see csrc/faultkit/codec_format.h): a 1% change of a 256 MiB array touches
#: about 3 chunks when the change is contiguous.
DEFAULT_CHUNK_SIZE = int(_codec.DEFAULT_CHUNK_SIZE)
#: How often recover() lists the directory again when files it chose vanished
#: (a writer's retention); each pass costs a listing, so a writer would have
#: to commit and prune this many times during one recovery to starve it.
_RESCANS = 100


def _lsn_value(lsn) -> Optional[int]:
    if lsn is None:
        return None
    if isinstance(lsn, bool) or not isinstance(lsn, int):
        raise TypeError(f"lsn must be an int or None, got {lsn!r}")
    if not 0 <= lsn < 2**63:
        raise ValueError(f"lsn must be in [0, 2**63), got {lsn}")
    return lsn


@dataclasses.dataclass(frozen=True)
class CheckpointInfo:
    """One committed checkpoint.

    ``id`` increases by one per save; ``time`` is ``time.time()`` at save
    (seconds since the epoch); ``size`` is the file size in bytes;
    ``checksum`` is the XXH3-64 of the file's table of contents, which covers
    the hash of every chunk (so it identifies the content); ``incremental``
    says whether it references chunks of earlier checkpoints; ``written`` is
    the array/bytes payload written by this save (bytes; 0 when listed);
    ``meta`` is the ``meta`` given to ``save``; ``lsn`` is the journal LSN
    the state covers (``save(..., lsn=)``), None if not given (and for files
    written before journals existed).
    """

    id: int
    time: float
    size: int
    checksum: int
    incremental: bool = False
    written: int = 0
    meta: Any = None
    lsn: Optional[int] = None


def _reason(e: BaseException) -> str:
    """Why an entry could not be loaded, for a CheckpointWarning."""
    if isinstance(e, OSError) and not isinstance(e, StoreError):
        code = errno.errorcode.get(e.errno, str(e.errno)) if e.errno else type(e).__name__
        what = {"EISDIR": "a directory, not a checkpoint file", "EACCES": "not readable (permission denied)",
                "EPERM": "not readable (operation not permitted)", "ELOOP": "a symlink loop",
                "ENOENT": "a dangling symlink or vanished file"}.get(code, "cannot be read")
        where = f" [{e.filename}]" if e.filename else ""
        return f"{what} ({type(e).__name__} {code}: {e.strerror or e}){where}"
    return str(e)


def _positive_int(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {value!r}")
    if value < 1:
        raise ValueError(f"{name} must be >= 1, got {value}")
    return value


class Checkpointer:
    """Save states to, and recover them from, a directory (or any :class:`Store`).

    ``Checkpointer(path, retain=3, fsync=True)``: ``path`` is a directory
    (a :class:`LocalStore` is made for it) or a ``Store``; ``retain`` is how
    many newest checkpoints survive a save (plus any older ones they
    reference); ``fsync=False`` keeps commits atomic but not durable across a
    power loss (it configures the LocalStore made for a path; a given
    ``Store`` decides durability itself).  ``recycle=True`` (default) lets
    that LocalStore overwrite the file retention last deleted instead of
    allocating a new one (see :class:`LocalStore`; costs the disk space of
    one more checkpoint).  ``full_every`` (default 8) bounds an incremental chain: at
    most ``full_every - 1`` incremental saves follow a full one.
    ``chunk_size`` (bytes, power of two, default 1 MiB) is the unit of
    checksums and of incremental reuse.  ``max_size`` (bytes, default no
    limit) refuses to load larger files.  ``track_writes=True`` (default)
    lets incremental saves learn which pages of large arrays (>= 4 MiB,
    owning their memory) were written since the previous save from the
    kernel instead of reading and hashing every chunk: Linux >= 6.7
    (userfaultfd asynchronous write protection and ``PAGEMAP_SCAN``, see
    :mod:`faultkit.recover.tracking`); elsewhere, or for any memory the
    kernel cannot vouch for, saves hash everything as without it.  Tracking
    holds a reference to each tracked array until a save no longer contains
    it or :meth:`close`; the first write to each page after a save costs a
    minor fault (~1.5 us per 4 KiB page).  The files are the same either way.

    ``path`` may also be an object-store URL (``s3://bucket/prefix``, needs
    ``faultkit[s3]``): an :class:`~faultkit.recover.objstore.ObjectStore` is
    made for it with ``store_options`` (a dict of its keyword arguments:
    ``endpoint``, ``region``, ``config``, ``lease_duration``, ...; see
    docs/objstore.md); ``fsync`` and ``recycle`` do not apply to it.

    ``journal`` (a :class:`~faultkit.recover.journal.Journal`, optional): after
    each save, segments the retained checkpoints no longer need are
    truncated, keeping the journal back to the oldest retained checkpoint's
    ``lsn`` (nothing is truncated while a retained checkpoint has none).
    :meth:`recover_with` recovers a checkpoint plus the records after it.

    One writer per directory: the first ``save`` takes the store's lock
    (``CheckpointLockedError`` if another process or Checkpointer holds it)
    and keeps it until :meth:`close`.  Reading never takes the lock.
    """

    def __init__(self, path: Union[str, "os.PathLike[str]", Store], retain: int = 3, fsync: bool = True, *,
                 full_every: int = 8, chunk_size: int = DEFAULT_CHUNK_SIZE, max_size: Optional[int] = None,
                 recycle: bool = True, track_writes: bool = True, store_options: Optional[dict] = None,
                 journal=None):
        if store_options is not None and not isinstance(store_options, dict):
            raise TypeError(f"store_options must be a dict or None, got {type(store_options).__name__}")
        if isinstance(path, str) and _URL.match(path):
            from faultkit.recover.objstore import ObjectStore
            self.store: Store = ObjectStore(path, **(store_options or {}))
        elif store_options is not None:
            raise TypeError("store_options applies only to an object-store URL path")
        elif isinstance(path, Store):
            self.store = path
        elif isinstance(path, (str, os.PathLike)):
            self.store = LocalStore(path, fsync=fsync, recycle=recycle)
        else:
            raise TypeError(f"path must be a directory path or a Store, got {type(path).__name__}")
        self.retain = _positive_int("retain", retain)
        self.full_every = _positive_int("full_every", full_every)
        chunk_size = _positive_int("chunk_size", chunk_size)
        if chunk_size & (chunk_size - 1) or not (1 << 12) <= chunk_size <= (1 << 30):
            raise ValueError(f"chunk_size must be a power of two in [4096, 2**30], got {chunk_size}")
        self.chunk_size = chunk_size
        if max_size is not None:
            max_size = _positive_int("max_size", max_size)
        self.max_size = max_size
        if not isinstance(track_writes, bool):
            raise TypeError(f"track_writes must be a bool, got {track_writes!r}")
        self.track_writes = track_writes
        self._tracking = tracking.Tracking(self.chunk_size) if track_writes else None
        self._last_write: dict = {}  # the codec's figures for the last save (bytes hashed, written)
        #: Counters since construction, read by faultkit.observe: ``saves``, ``save_failures``,
        #: ``bytes_written`` (file bytes of committed saves), ``save_seconds`` (total time in
        #: committing saves), ``recoveries``, ``recover_fallbacks`` (checkpoints skipped as
        #: corrupt or unreadable on the way to a valid one).
        self.stats = {"saves": 0, "save_failures": 0, "bytes_written": 0, "save_seconds": 0.0,
                      "recoveries": 0, "recover_fallbacks": 0}
        self._mutex = threading.RLock()
        self._lock: Optional[StoreLock] = None
        self._next_id: Optional[int] = None
        self._base = None  # ChunkMap of the last checkpoint this object committed
        self._base_id: Optional[int] = None  # the id of that checkpoint
        self._since_full = 0  # incremental saves since the last full one
        self._base_checked = False
        self._refs: dict = {}  # id -> ids it references (known from saves)
        self._executor: Optional[concurrent.futures.ThreadPoolExecutor] = None
        self._closed = False
        if journal is not None and not hasattr(journal, "truncate_before"):
            raise TypeError(f"journal must be a faultkit Journal, got {type(journal).__name__}")
        self.journal = journal
        self._lsns: dict = {}  # id -> lsn the checkpoint covers (None: not recorded)
        #: The CheckpointInfo of the checkpoint the last successful recover()
        #: or recover_with() returned (None before the first).
        self.last_recovered: Optional[CheckpointInfo] = None

    def __repr__(self) -> str:
        return f"Checkpointer({self.store!r}, retain={self.retain}, full_every={self.full_every})"

    # ------------------------------------------------------------ naming

    @staticmethod
    def _name(cid: int) -> str:
        return f"ckpt-{cid:012d}.fkc"

    def _where(self, cid: int) -> str:
        return self._where_name(self._name(cid))

    def _where_name(self, name: str) -> str:
        path = getattr(self.store, "path", None)
        url = getattr(self.store, "url", None)
        if isinstance(url, str) and not path:
            return f"{url.rstrip('/')}/{name}"
        return os.path.join(path, name) if path else name

    def _ids(self, odd: Optional[list] = None) -> List[int]:
        """Sorted ids of the canonical checkpoint names; look-alike names go to ``odd`` if given."""
        ids = []
        for n in self.store.list():
            m = _FILE.match(n)
            if m:
                cid = int(m.group(1))
                if 1 <= cid < _MAX_ID and self._name(cid) == n:  # canonical names only, never lenient
                    ids.append(cid)
                    continue
            if odd is not None and _LOOKALIKE.match(n):
                odd.append(n)
        return sorted(ids)

    # ------------------------------------------------------------ saving

    def save(self, state: Any, *, meta: Any = None, incremental: bool = False,
             lsn: Optional[int] = None) -> CheckpointInfo:
        """Commit ``state`` as a new checkpoint; returns its :class:`CheckpointInfo`.

        ``state`` is a tree of None/bool/int/float/str/bytes-likes/list/tuple/
        dict/set/frozenset/numpy arrays and registered types (``TypeError``
        names the path of anything else).  ``meta`` is a small tree stored
        beside it.  ``incremental=True`` writes only the chunks of arrays and
        large bytes that differ from the previous checkpoint saved by this
        object, referencing the rest (a full save when there is none yet, or
        when the chain reached ``full_every``).  ``lsn`` (int >= 0) is the
        LSN of the last journal record ``state`` includes: :meth:`recover_with`
        replays the records after it.  Atomic: a crash at any instant leaves
        the previous checkpoints intact.
        """
        lsn = _lsn_value(lsn)
        enc = codec.encode(state)
        t = time.time()
        return self._commit(enc, t, meta, bool(incremental), track=True, lsn=lsn)

    def save_async(self, state: Any, *, meta: Any = None, incremental: bool = False,
                   lsn: Optional[int] = None) -> "concurrent.futures.Future":
        """Snapshot ``state`` now, write it on a worker thread; returns a Future of CheckpointInfo.

        The snapshot encodes the object tree at once and copies array and
        mutable bytes buffers (numpy has no copy-on-write), so ``state`` may
        change as soon as this returns.  The codec releases the GIL while it
        hashes and writes.  Saves complete in call order.
        """
        lsn = _lsn_value(lsn)
        enc = codec.encode(state, snapshot=True)
        t = time.time()
        codec.encode_meta(meta)  # unsupported meta fails here, in the caller
        meta = codec.loads(codec.dumps(meta))  # and is snapshotted too
        with self._mutex:
            self._check_open()
            if self._executor is None:
                self._executor = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="faultkit-checkpoint")
            return self._executor.submit(self._commit, enc, t, meta, bool(incremental), False, lsn)

    def _check_open(self) -> None:
        if self._closed:
            raise ValueError("Checkpointer is closed")

    def _start_writing(self) -> None:
        if self._lock is None:
            self._lock = self.store.lock()
            self.store.cleanup()
            ids = self._ids()
            self._next_id = (ids[-1] + 1) if ids else 1

    def _resume_chain(self) -> None:
        """After a restart: continue the incremental chain of the newest checkpoint.

        Its framing and META, and the framing of every file it references, must
        be valid; otherwise the next incremental save is a full one.
        """
        self._base_checked = True
        ids = self._ids()
        if not ids:
            return
        cid = ids[-1]
        try:
            buf = self.store.get_index(self._name(cid))
            layout = _codec.parse(buf)
            m = _codec.read_meta(buf, layout, codec.decode_types())
            for rid, rsum in layout.refs:
                rl = _codec.parse(self.store.get_index(self._name(rid)))
                if rl.id != rid or rl.checksum != rsum:
                    return
            if layout.id != cid or layout.chunk_size != self.chunk_size or not isinstance(m, dict):
                return
            chain = m.get("chain", 0)
        except (CorruptCheckpointError, OSError):
            return
        if isinstance(chain, int) and 0 <= chain:
            self._base = layout.chunk_map()
            self._base_id = cid
            self._since_full = chain

    def _commit(self, enc, t: float, meta: Any, incremental: bool, track: bool = False,
                lsn: Optional[int] = None) -> CheckpointInfo:
        t0 = time.perf_counter()
        try:
            info = self._commit_locked(enc, t, meta, incremental, track, lsn)
        except BaseException:
            self.stats["save_failures"] += 1
            raise
        st = self.stats
        st["saves"] += 1
        st["bytes_written"] += info.size
        st["save_seconds"] += time.perf_counter() - t0
        return info

    def _commit_locked(self, enc, t: float, meta: Any, incremental: bool, track: bool,
                       lsn: Optional[int]) -> CheckpointInfo:
        with self._mutex:
            self._check_open()
            self._start_writing()
            if incremental and self._base is None and not self._base_checked:
                self._resume_chain()
            cid = self._next_id
            base = self._base if incremental and self._since_full + 1 < self.full_every else None
            chain = self._since_full + 1 if base is not None else 0
            head = {"time": t, "meta": meta, "chain": chain}
            if lsn is not None:  # absent otherwise: older readers see the same META as before
                head["lsn"] = lsn
            menc = codec.encode_meta(head)
            out: dict = {}
            # Write tracking: ask the kernel which chunks of tracked arrays may
            # have changed before the codec reads any of them (save() only;
            # save_async's snapshot copies the arrays, and its checkpoint
            # makes the tracked ones stale, so the next save hashes them).
            dirty, stamp = None, []
            if track and self._tracking is not None:
                dirty, stamp = self._tracking.begin(enc, incremental=incremental,
                                                    base_id=self._base_id if base is not None else None)

            def write(f) -> None:
                try:
                    fd = f.fileno()
                except (AttributeError, io.UnsupportedOperation):
                    fd = None
                if fd is None:  # a store without file descriptors: whole image in memory, full
                    f.write(_codec.dumps(enc, menc, id=cid, chunk_size=self.chunk_size))
                    out.update(size=0, checksum=0, blob_bytes_written=enc.blob_bytes, map=None)
                    return
                info, cmap = _codec.write(fd, enc, menc, id=cid, chunk_size=self.chunk_size, base=base,
                                          dirty=dirty if base is not None else None)
                out.update(info)
                out["map"] = cmap

            size = self.store.put_atomic(self._name(cid), write)
            self._next_id = cid + 1
            self._base = out["map"]
            self._base_id = cid
            for entry in stamp:  # their memory as of the scan is what this checkpoint hashed
                entry.ckpt = cid
            self._last_write = {k: v for k, v in out.items() if k != "map"}
            self._since_full = chain
            if out["map"] is not None:
                self._refs[cid] = set(out["map"].ids()) - {cid}
            checksum = out["checksum"]
            if not checksum:  # written through a file object: read back the identity
                checksum = _codec.parse(self.store.get(self._name(cid), mmap=True)).checksum
            self._lsns[cid] = lsn
            self._apply_retention()
            if self.journal is not None:
                self._truncate_journal()
            return CheckpointInfo(cid, t, size, checksum, base is not None, out["blob_bytes_written"], meta, lsn)

    def _refs_of(self, cid: int) -> set:
        refs = self._refs.get(cid)
        if refs is None:
            try:
                layout = _codec.parse(self.store.get_index(self._name(cid)))
                refs = {rid for rid, _ in layout.refs}
            except StoreError:
                raise  # unknown, not empty: retention must not delete what it may reference
            except (CorruptCheckpointError, OSError):
                refs = set()
            self._refs[cid] = refs
        return refs

    def _apply_retention(self) -> None:
        ids = self._ids()
        keep = set(ids[-self.retain:])
        try:
            for cid in list(keep):
                keep |= self._refs_of(cid)
        except StoreError:
            return  # the store is unreachable: prune at the next save
        # Newest first: a checkpoint goes before the older ones it references,
        # so a reader that finds a checkpoint also finds its bases.
        for cid in reversed(ids):
            if cid not in keep:
                try:
                    self.store.delete(self._name(cid))
                except StoreError:
                    return  # unreachable: prune at the next save
                except OSError:
                    pass  # a foreign entry the store may not remove: it stays, the save stands
                self._refs.pop(cid, None)

    # ------------------------------------------------------------ loading

    def _load(self, cid: int, *, mmap: bool, verify: Optional[bool], info: bool = False):
        """The state of checkpoint ``cid``; ``(state, CheckpointInfo)`` if ``info``."""
        name = self._name(cid)
        if verify is None:  # the old spelling of the default
            verify = True
        if not isinstance(verify, bool):
            raise TypeError(f"verify must be a bool, got {verify!r}")
        local_verified = False
        if not mmap and verify and isinstance(self.store, LocalStore) and type(self.store).get is LocalStore.get:
            # Read and hash each chunk while it is in cache (one pass), into huge pages.
            buf, layout = self.store.read_verified(name, max_size=self.max_size)
            local_verified = True
        else:
            buf = self.store.get(name, mmap=mmap)
            if self.max_size is not None and len(buf) > self.max_size:
                raise CorruptCheckpointError(f"{len(buf)} bytes exceeds max_size={self.max_size}")
            layout = _codec.parse(buf)
        if layout.id != cid:
            raise CorruptCheckpointError(f"file holds checkpoint {layout.id}, not {cid} (swapped or renamed file)")
        refs = []
        for rid, rsum in layout.refs:
            rname = self._name(rid)
            try:
                rbuf = self.store.get(rname, mmap=True)
            except FileNotFoundError:
                raise CorruptCheckpointError(f"base checkpoint {rname} is missing") from None
            try:
                rl = _codec.parse(rbuf)
            except CorruptCheckpointError as e:
                raise CorruptCheckpointError(f"base checkpoint {rname} is corrupt: {e}") from None
            if rl.id != rid or rl.checksum != rsum:
                raise CorruptCheckpointError(f"base checkpoint {rname} is not the one referenced")
            refs.append(rbuf)
        ci = self._info_of(cid, buf, layout) if info else None
        # Chunks in this file were hashed by read_verified; referenced ones are always hashed.
        state = _codec.read_state(buf, layout, refs, codec.decode_types(), verify=verify and not local_verified)
        return (state, ci) if info else state

    def recover(self, *, mmap: bool = False, verify: bool = True, with_info: bool = False) -> Any:
        """The state of the newest valid checkpoint.

        Corrupt, torn or unreadable checkpoints are skipped with a
        :class:`CheckpointWarning` naming the file and the reason, falling back
        to older ones; so are foreign entries under a checkpoint's name (a
        directory, a file this process may not read, a dangling symlink or a
        symlink loop).  Names that are not exactly a checkpoint's
        (``ckpt-`` + the id zero-padded to 12 digits + ``.fkc``) are ignored.
        ``NoCheckpointError`` if no checkpoint is valid.

        ``mmap=True`` returns arrays backed by a read-only map of the file
        (zero-copy; arrays of an incremental checkpoint that span files are
        assembled in memory).  ``verify=True`` (default, with or without
        ``mmap``) checks the XXH3 hash of every array chunk once while
        loading; ``verify=False`` is an explicit opt-out for callers who
        accept that a flipped bit in an array goes unnoticed (the framing,
        table of contents and object tree are always checked, and so are
        chunks copied from base checkpoints).

        Which checkpoint was returned: ``with_info=True`` returns
        ``(state, CheckpointInfo)``; and after every successful call
        ``self.last_recovered`` holds that CheckpointInfo (None before).
        """
        if not isinstance(with_info, bool):
            raise TypeError(f"with_info must be a bool, got {with_info!r}")
        _, state, ci = self._recover(mmap=mmap, verify=verify, info=True)
        return (state, ci) if with_info else state

    def _recover(self, *, mmap: bool, verify: Optional[bool], info: bool = False, stacklevel: int = 3):
        """(id, state) of the newest valid checkpoint, with its CheckpointInfo if ``info``."""
        skipped = 0
        for attempt in range(_RESCANS):  # a writer may prune what we listed: list again
            skipped = 0
            vanished = False
            odd: list = []
            ids = self._ids(odd)
            if attempt == 0:
                for n in sorted(odd):
                    warnings.warn(f"ignoring {self._where_name(n)}: not a canonical checkpoint name "
                                  "(ckpt-<id zero-padded to 12 digits>.fkc, 1 <= id < 2**63 - 1)",
                                  CheckpointWarning, stacklevel=stacklevel)
            for cid in reversed(ids):
                try:
                    state, ci = self._load(cid, mmap=mmap, verify=verify, info=True)
                    self.last_recovered = ci
                    self.stats["recoveries"] += 1
                    self.stats["recover_fallbacks"] += skipped
                    return (cid, state, ci) if info else (cid, state)
                except StoreError:
                    raise  # the store is unreachable: not a reason to fall back to an older state
                except (CorruptCheckpointError, OSError) as e:
                    if self._name(cid) not in self.store.list():
                        vanished = True  # pruned by a writer's retention while we read it: list again
                        break
                    # Still listed: corrupt, or a foreign entry under a checkpoint's
                    # name (a directory, an unreadable file, a dangling symlink or a
                    # symlink loop).  Skip it, saying which and why.
                    skipped += 1
                    warnings.warn(f"skipping checkpoint {self._where(cid)}: {_reason(e)}", CheckpointWarning,
                                  stacklevel=stacklevel)
            if not vanished:
                break
        where = getattr(self.store, "path", repr(self.store))
        raise NoCheckpointError(f"no valid checkpoint in {where}"
                                + (f" ({skipped} corrupt skipped)" if skipped else ""))

    def recover_with(self, journal, *, apply: Optional[Callable[[Any, int, Any], Any]] = None,
                     mmap: bool = False, verify: bool = True, skip_corrupt: bool = False):
        """The newest valid checkpoint's state plus the journal records after the LSN it covers.

        Without ``apply``: returns ``(state, records)``, ``records`` a list of
        ``(lsn, record)`` with the LSNs after the checkpoint's ``lsn``, in
        order.  With ``apply``: calls ``state = apply(state, lsn, record)``
        for each of them as it is read (no list is kept) and returns the
        final ``state``.  A checkpoint saved without ``lsn`` covers no record
        (replay starts at the journal's oldest record).  Falls back to older
        checkpoints exactly as :meth:`recover`; ``NoCheckpointError`` if none
        is valid.  :class:`CorruptJournalError` if the journal no longer
        holds the records right after the checkpoint (truncated too far, or
        a journal that restarted below its LSN), or a durable record is
        damaged (``skip_corrupt=True``: warn and skip to the next valid
        segment, as :meth:`Journal.replay`).
        """
        if not hasattr(journal, "replay"):
            raise TypeError(f"journal must be a faultkit Journal, got {type(journal).__name__}")
        if apply is not None and not callable(apply):
            raise TypeError(f"apply must be callable, got {apply!r}")
        cid, state, info = self._recover(mmap=mmap, verify=verify, info=True)
        covered = info.lsn
        first = journal.first_lsn
        if covered is None:
            start = first
        else:
            start = covered + 1
            if first > start:
                raise CorruptJournalError(
                    f"checkpoint {cid} covers records up to LSN {covered}, but the journal at {journal.path!r} "
                    f"starts at LSN {first}: records {start}..{first - 1} are gone", lsn=start)
            if journal.next_lsn < start:
                raise CorruptJournalError(
                    f"checkpoint {cid} covers records up to LSN {covered}, but the journal at {journal.path!r} "
                    f"ends before LSN {journal.next_lsn}: it is not this checkpoint's journal or lost records",
                    lsn=journal.next_lsn)
        records = journal.replay(start, skip_corrupt=skip_corrupt)
        if apply is None:
            return state, list(records)
        for lsn, record in records:
            state = apply(state, lsn, record)
        return state

    def _truncate_journal(self) -> None:
        """Drop journal segments older than every retained checkpoint needs."""
        lsns = []
        for cid in self._ids():
            if cid not in self._lsns:
                try:
                    self._lsns[cid] = self._info(cid).lsn
                except StoreError:
                    raise
                except (CorruptCheckpointError, OSError):
                    continue  # recovery skips it too
            lsns.append(self._lsns[cid])
        for cid in list(self._lsns):
            if cid not in self._ids():
                self._lsns.pop(cid, None)
        if lsns and None not in lsns:
            self.journal.truncate_before(min(lsns) + 1)

    def load(self, id: int, *, mmap: bool = False, verify: bool = True) -> Any:
        """The state of checkpoint ``id``; ``CorruptCheckpointError`` if it is invalid.

        ``NoCheckpointError`` if there is no checkpoint ``id``.  ``mmap`` and
        ``verify`` as for :meth:`recover`; an entry that is not a readable
        file raises its ``OSError``.
        """
        if isinstance(id, bool) or not isinstance(id, int):
            raise TypeError(f"id must be an int, got {id!r}")
        try:
            return self._load(id, mmap=mmap, verify=verify)
        except FileNotFoundError:
            raise NoCheckpointError(f"no checkpoint {id} ({self._where(id)})") from None

    def _info(self, cid: int) -> CheckpointInfo:
        buf = self.store.get_index(self._name(cid))
        return self._info_of(cid, buf, _codec.parse(buf))

    def _info_of(self, cid: int, buf, layout) -> CheckpointInfo:
        if layout.id != cid:
            raise CorruptCheckpointError(f"file holds checkpoint {layout.id}, not {cid}")
        m = _codec.read_meta(buf, layout, codec.decode_types())
        if not isinstance(m, dict) or not isinstance(m.get("time", 0.0), float):
            raise CorruptCheckpointError("malformed META section")
        lsn = m.get("lsn")
        if lsn is not None and (isinstance(lsn, bool) or not isinstance(lsn, int) or lsn < 0):
            raise CorruptCheckpointError(f"malformed META section: lsn {lsn!r}")
        return CheckpointInfo(cid, m.get("time", 0.0), layout.file_size, layout.checksum, layout.incremental, 0,
                              m.get("meta"), lsn)

    def list(self) -> List[CheckpointInfo]:
        """Checkpoints whose framing and metadata are valid, oldest first (contents not hashed).

        Entries that cannot be read (foreign directories, unreadable files,
        broken symlinks) and names that are not canonical are left out.
        """
        out = []
        for cid in self._ids():
            try:
                out.append(self._info(cid))
            except StoreError:
                raise
            except (CorruptCheckpointError, OSError):
                pass
        return out

    def latest(self) -> Optional[CheckpointInfo]:
        """The newest checkpoint with valid framing and metadata, or None (skips what ``list`` leaves out)."""
        for cid in reversed(self._ids()):
            try:
                return self._info(cid)
            except StoreError:
                raise
            except (CorruptCheckpointError, OSError):
                pass
        return None

    # ------------------------------------------------------------ lifetime

    def close(self) -> None:
        """Wait for pending ``save_async`` writes, stop write tracking, release the writer lock."""
        with self._mutex:
            executor, self._executor = self._executor, None
        if executor is not None:
            executor.shutdown(wait=True)
        with self._mutex:
            self._closed = True
            if self._tracking is not None:
                self._tracking.close()
            lock, self._lock = self._lock, None
            if lock is not None:
                lock.release()

    def __enter__(self) -> "Checkpointer":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
