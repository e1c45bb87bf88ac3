"""Write tracking for incremental checkpoints: hash only what may have changed.

An incremental save must find the chunks of each array that differ from the
previous checkpoint.  Without help that means reading and hashing every
chunk (256 MiB: ~10 ms).  On Linux >= 6.7 the kernel can say which pages were
written since a point in time without reading them: the array's pages are
registered with a userfaultfd in asynchronous write-protect mode
(``UFFD_FEATURE_WP_ASYNC``; the kernel itself unprotects a page on its first
write, so nothing waits on a handler) and the ``PAGEMAP_SCAN`` ioctl of
``/proc/self/pagemap`` returns the unprotected pages and protects them again
in one walk (``faultkit._track``, ``csrc/faultkit/write_tracker.h``).  The
userfaultfd is user-mode-only, which unprivileged processes may open even
with ``vm.unprivileged_userfaultfd = 0``; in asynchronous mode the kernel
still resolves its own writes into the memory (``read(2)`` into an array).
Checked on Linux 6.18 as root and as an unprivileged user.

The policy (:class:`Tracking`, used by ``Checkpointer.save``):

- An array of at least :data:`TRACK_MIN_BYTES` saved with ``incremental=True``,
  stored in place (C-contiguous, not a copy) and owning its memory (or a view
  of an array that does), is *armed* at that save before the codec reads it:
  all its pages become clean.  A reference to it is held so the memory stays
  where it is.
- At each later ``save`` the armed ranges still at the same blob index with
  the same address and size are scanned before any chunk is read.  If the
  previous checkpoint this Checkpointer committed is the one that hashed that
  blob after the last scan, only chunks holding a written page -- or a page
  not in memory (swapped out, discarded with ``madvise``) -- are hashed; the
  others take the previous checkpoint's chunk hash, which is the hash of what
  that checkpoint stores for them.  Otherwise (a ``save_async`` or a failed
  save in between, a new array, a moved blob) every chunk is hashed, and the
  scan makes the range clean for the next save.
- A write racing with a save is caught by the next save: the scan precedes
  the reads, and a page written after it is unprotected again.
- Anything the kernel refuses (no support, memory that is shared or backed by
  a file, a range another userfaultfd watches, overlapping ranges, a forked
  child), a tracker descriptor someone else closed (``os.closerange``: the
  tracker then gives up for good, closing nothing that is not its own) and
  any scan error mean "hash everything", as without tracking.
- Arrays no longer in the saved state are released at the next save, all at
  :meth:`Tracking.close`.  A new Checkpointer (after a restart) tracks nothing
  yet: its first save hashes everything.

Not seen, by design of the mechanism: writes through a page reference the
kernel took before a save's scan and writes through after it, which bypass
the page tables -- a device's through a long-term pinned buffer (RDMA,
io_uring registered buffers), and any direct I/O (``O_DIRECT`` reads, AIO,
io_uring) or ``process_vm_writev`` into the array still in flight while
``save`` runs.  Incremental saves then keep reusing the stale chunk until
the next full checkpoint (at most ``full_every - 1`` saves later: a full save
reads every chunk), so do not save an array with I/O into it pending, or
pass ``track_writes=False``.  The file format does not depend on tracking:
the same state gives the same checkpoint with it or without it.
"""
from __future__ import annotations

import dataclasses
import os
from typing import Any, Dict, List, Optional, Tuple

import numpy as np

__all__ = ["TRACK_MIN_BYTES", "Tracking", "owns_memory"]

#: Arrays of at least this many bytes are tracked (4 MiB).  Below it hashing
#: costs ~0.3 ms at most, while arming costs a /proc/self/maps read (~0.1-1 ms)
#: and each later write a page fault; numpy also gives arrays of this size
#: their own huge-page-advised memory.
TRACK_MIN_BYTES = 4 << 20


def owns_memory(obj: Any) -> bool:
    """Whether ``obj`` is a numpy array whose memory its base chain owns.

    Memory numpy allocated itself stays allocated, at its address, while the
    array lives; memory borrowed from other objects (an ``mmap``, ``bytes``, a
    ctypes buffer) may be unmapped or replaced by its real owner.
    """
    if not isinstance(obj, np.ndarray):
        return False
    while isinstance(obj.base, np.ndarray):
        obj = obj.base
    return obj.base is None and bool(obj.flags.owndata)


@dataclasses.dataclass(eq=False)
class Entry:
    """One armed range: the blob index it was saved at and its memory."""

    owner: Any  # keeps the memory alive
    addr: int
    nbytes: int
    #: The checkpoint that hashed this memory after the last scan (None: no
    #: committed checkpoint did yet, or a save failed after the scan).
    ckpt: Optional[int] = None


class Tracking:
    """The armed arrays of one Checkpointer, and their write tracker."""

    def __init__(self, chunk_size: int):
        self.chunk_size = chunk_size
        self._tracker = None
        self._pid = 0
        self.unavailable: Optional[str] = None  # why the kernel cannot track, once known
        self.entries: Dict[int, Entry] = {}  # blob index -> Entry
        # blob index -> (addr, nbytes) the kernel refused to arm: not retried
        # (each try reads /proc/self/maps) while the blob stays the same.
        self.refused: Dict[int, Tuple[int, int]] = {}

    def _get_tracker(self):
        if self._tracker is not None and self._pid != os.getpid():
            # A forked child: the tracker's descriptors act on the parent's
            # memory.  Forget them without touching the parent's ranges.
            self._tracker = None
            self.entries.clear()
            self.refused.clear()
        if self._tracker is None and self.unavailable is None:
            from faultkit.recover import _track

            t = _track.WriteTracker()
            if not t.available:
                self.unavailable = t.reason
                return None
            self._tracker, self._pid = t, os.getpid()
        return self._tracker

    def begin(self, enc, *, incremental: bool,
              base_id: Optional[int]) -> Tuple[Optional[List[Optional[bytes]]], List[Entry]]:
        """Scan or arm the tracked blobs of ``enc`` before the codec reads them.

        Returns ``(dirty, stamp)``: ``dirty`` is None or, per blob, None (hash
        it all) or a mask of the chunks to hash, valid against the checkpoint
        ``base_id``; ``stamp`` are the entries to mark with the new
        checkpoint's id once it is committed.  New arrays are armed only when
        ``incremental``.
        """
        sources = enc.blob_sources()
        if not self.entries and not (incremental and any(
                n >= TRACK_MIN_BYTES and o is not None for _, n, o in sources)):
            return None, []
        tracker = self._get_tracker()
        if tracker is None:
            return None, []
        for b, e in list(self.entries.items()):  # release what left the state or moved
            src = sources[b] if b < len(sources) else None
            if src is None or src[2] is None or src[0] != e.addr or src[1] != e.nbytes:
                tracker.disarm(e.addr, e.nbytes)
                del self.entries[b]
        for b in [b for b in self.refused if b >= len(sources) or sources[b][:2] != self.refused[b]]:
            del self.refused[b]
        dirty: List[Optional[bytes]] = [None] * len(sources)
        stamp: List[Entry] = []
        for b, (addr, nbytes, owner) in enumerate(sources):
            e = self.entries.get(b)
            if e is not None:
                valid = base_id is not None and e.ckpt == base_id
                e.ckpt = None  # until a checkpoint hashes the memory as of this scan
                e.owner = owner
                try:
                    mask = tracker.collect(addr, nbytes, self.chunk_size)
                except OSError:  # the tracker gave the range up
                    del self.entries[b]
                    continue
                if valid:
                    dirty[b] = mask
                stamp.append(e)
            elif incremental and nbytes >= TRACK_MIN_BYTES and owns_memory(owner):
                if self.refused.get(b) == (addr, nbytes):
                    continue
                try:
                    tracker.arm(addr, nbytes)
                except OSError:  # shared, file-backed, overlapping, watched by another tracker...
                    self.refused[b] = (addr, nbytes)
                    continue
                e = Entry(owner, addr, nbytes)
                self.entries[b] = e
                stamp.append(e)
        return (dirty if any(m is not None for m in dirty) else None), stamp

    def close(self) -> None:
        """Disarm everything and drop the references."""
        if self._tracker is not None and self._pid == os.getpid():
            self._tracker.close()
        self._tracker = None
        self.entries.clear()
        self.refused.clear()
