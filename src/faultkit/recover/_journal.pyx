# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""The journal's native shell: record framing, the segment scanner and the writer.

Private: ``faultkit.recover.journal.Journal`` is the public face.  The framing,
checksums (XXH3-64), scanner and group commit live in
csrc/faultkit/recover/journal.{h,cc}; this module converts arguments, calls
them and maps errno values to ``OSError``.
"""
from libc.stdint cimport uint8_t, uint16_t, uint32_t, uint64_t
from libc.stdlib cimport malloc, free
from libc.string cimport strerror
from libcpp.string cimport string
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_GET_SIZE, PyBytes_FromStringAndSize

from faultkit.recover cimport cjournal
from faultkit.recover.cjournal cimport Record, SegmentHeader

import errno as _errno
import os as _os

SEGMENT_HEADER_SIZE = cjournal.SEGMENT_HEADER_SIZE
RECORD_HEADER_SIZE = cjournal.RECORD_HEADER_SIZE
MAX_RECORD = cjournal.MAX_RECORD
KIND_BYTES = cjournal.KIND_BYTES
KIND_STATE = cjournal.KIND_STATE
KIND_SEAL = cjournal.KIND_SEAL
VERSION = (cjournal.VERSION_MAJOR, cjournal.VERSION_MINOR)
MODE_NEVER = cjournal.MODE_NEVER
MODE_GROUP = cjournal.MODE_GROUP
MODE_ALWAYS = cjournal.MODE_ALWAYS
HEADER_OK = cjournal.HEADER_OK
HEADER_SHORT = cjournal.HEADER_SHORT
HEADER_MAGIC = cjournal.HEADER_MAGIC
HEADER_VERSION = cjournal.HEADER_VERSION
HEADER_CHECKSUM = cjournal.HEADER_CHECKSUM
NEXT_RECORD = cjournal.NEXT_RECORD
NEXT_SEAL = cjournal.NEXT_SEAL
NEXT_END = cjournal.NEXT_END
NEXT_DAMAGED = cjournal.NEXT_DAMAGED


# Records of at least this many bytes are copied with the GIL released (a
# 64 KiB copy takes ~5 us, about what a release/acquire pair costs under
# contention).
cdef enum:
    GIL_RELEASE_BYTES = 1 << 16


cdef int raise_errno(int rc, str what) except -1:
    raise OSError(rc, f"{what}: {strerror(rc).decode()}")


def frame_size(Py_ssize_t length):
    """Bytes a record of ``length`` payload bytes takes in a segment (header and padding included)."""
    if length < 0 or length > cjournal.MAX_RECORD:
        raise ValueError(f"record length {length} outside [0, {cjournal.MAX_RECORD}]")
    return cjournal.frame_size(<size_t>length)


def segment_header(uint64_t journal_id, uint64_t first_lsn):
    """The 64-byte header of a segment whose first record has LSN ``first_lsn``."""
    cdef bytes out = PyBytes_FromStringAndSize(NULL, cjournal.SEGMENT_HEADER_SIZE)
    cjournal.write_segment_header(<uint8_t*>PyBytes_AS_STRING(out), journal_id, first_lsn)
    return out


def parse_segment_header(const uint8_t[::1] buffer not None):
    """``(status, major, minor, journal_id, first_lsn)`` of the header at the start of ``buffer``."""
    cdef SegmentHeader h
    cdef int st = cjournal.parse_segment_header(&buffer[0] if buffer.shape[0] else NULL,
                                                <size_t>buffer.shape[0], &h)
    return st, h.major, h.minor, h.journal_id, h.first_lsn


def frame(uint64_t seed, uint64_t lsn, uint64_t durable, uint16_t kind, const uint8_t[::1] data not None):
    """One framed record as bytes (the writer frames in place; this serves seals and tests)."""
    cdef size_t n = <size_t>data.shape[0]
    if n > cjournal.MAX_RECORD:
        raise ValueError(f"record of {n} bytes exceeds the limit of {cjournal.MAX_RECORD}")
    cdef bytes out = PyBytes_FromStringAndSize(NULL, cjournal.frame_size(n))
    cjournal.frame_record(<uint8_t*>PyBytes_AS_STRING(out), seed, lsn, durable, kind,
                          &data[0] if n else NULL, <uint32_t>n)
    return out


cdef class SegmentReader:
    """Reads the records of one segment image in order.

    ``SegmentReader(buffer, seed, expected)``: ``buffer`` is the segment's
    bytes (a memory map), ``seed`` the journal id, ``expected`` the LSN of its
    first record.  ``next()`` returns ``(lsn, kind, payload bytes)`` or None
    at the end, after which ``status`` says why (NEXT_SEAL, NEXT_END: a torn
    or empty tail, NEXT_DAMAGED: a damaged record that was durable), ``pos``
    where (bytes), ``expected`` the LSN that was not read, and
    ``resume_lsn`` the LSN after the last valid record found past the damage.
    """
    cdef const uint8_t[::1] buf
    cdef uint64_t seed
    cdef public size_t pos
    cdef public uint64_t expected
    cdef public int status
    cdef public uint64_t resume_lsn
    cdef public uint64_t last_durable

    def __init__(self, const uint8_t[::1] buffer not None, uint64_t seed, uint64_t expected):
        if buffer.shape[0] < <Py_ssize_t>cjournal.SEGMENT_HEADER_SIZE:
            raise ValueError(f"a segment image needs at least {cjournal.SEGMENT_HEADER_SIZE} bytes")
        self.buf = buffer
        self.seed = seed
        self.pos = cjournal.SEGMENT_HEADER_SIZE
        self.expected = expected
        self.status = -1
        self.resume_lsn = 0
        self.last_durable = 0

    def next(self):
        """The next record as ``(lsn, kind, payload)``, or None at the end of the segment."""
        cdef Record r
        cdef uint64_t resume = 0
        if self.status >= 0:
            return None
        cdef int st
        with nogil:
            st = cjournal.next_record(&self.buf[0], <size_t>self.buf.shape[0], self.pos, self.seed,
                                      self.expected, &r, &resume)
        if st == cjournal.NEXT_RECORD:
            self.pos += r.frame
            self.expected += 1
            self.last_durable = r.durable
            return (r.lsn, r.kind,
                    PyBytes_FromStringAndSize(<const char*>&self.buf[r.payload], <Py_ssize_t>r.length))
        self.status = st
        self.resume_lsn = resume
        if st == cjournal.NEXT_SEAL:
            self.last_durable = r.durable
            self.pos += r.frame
        return None

    def release(self):
        """Drop the reference to the buffer (so a memory map can close)."""
        self.buf = None


cdef class Writer:
    """The native writer of one journal directory (see journal.h).

    ``Writer(dir, seed, mode, segment_bytes, first_lsn, durable)`` starts a
    new segment whose first record gets ``first_lsn``.  ``append`` frames a
    record and, unless the mode is never, returns only once it is durable
    (the wait releases the GIL); ``append_nowait`` returns at once with the
    LSN and ``wait(lsn)`` waits for it.
    """
    cdef cjournal.Writer* w
    cdef readonly int mode

    def __cinit__(self):
        self.w = new cjournal.Writer()

    def __dealloc__(self):
        if self.w is not NULL:
            with nogil:
                self.w.close()
            del self.w
            self.w = NULL

    def __init__(self, str dir, uint64_t seed, int mode, uint64_t segment_bytes, uint64_t first_lsn,
                 uint64_t durable):
        cdef string d = _os.fsencode(dir)
        cdef int rc
        with nogil:
            rc = self.w.open(d, seed, mode, segment_bytes, first_lsn, durable)
        if rc:
            raise_errno(rc, f"cannot start a journal segment in {dir!r}")
        self.mode = mode

    cdef inline uint64_t _append(self, object data, uint16_t kind) except 0:
        cdef uint64_t lsn = 0
        cdef int rc
        cdef const uint8_t[::1] view
        cdef const uint8_t* p
        cdef Py_ssize_t n
        if type(data) is bytes:
            p = <const uint8_t*>PyBytes_AS_STRING(data)
            n = PyBytes_GET_SIZE(data)
        else:
            view = memoryview(data).cast("B")
            n = view.shape[0]
            p = &view[0] if n else NULL
        if n > cjournal.MAX_RECORD:
            raise ValueError(f"record of {n} bytes exceeds the limit of {cjournal.MAX_RECORD}")
        # The copy is short: keep the GIL (a release/acquire pair costs more
        # than a small append, and with many threads each handoff is a context
        # switch).  A rotation creates and, in the durable modes, zero-fills a
        # segment: that runs with the GIL released.
        rc = self.w.append(p, <uint32_t>n, kind, &lsn, n < GIL_RELEASE_BYTES)
        if rc == cjournal.WOULD_ROTATE:
            with nogil:
                rc = self.w.append(p, <uint32_t>n, kind, &lsn, True)
        if rc:
            raise_errno(rc, "journal append failed (record not appended)")
        return lsn

    def append(self, data, uint16_t kind=0):
        """Append one record (a bytes-like); returns its LSN once durable in the writer's mode."""
        cdef uint64_t lsn = self._append(data, kind)
        cdef int rc
        if self.mode != cjournal.MODE_NEVER:
            with nogil:
                rc = self.w.wait_durable(lsn)
            if rc:
                raise_errno(rc, f"journal sync failed: record {lsn} is not acknowledged")
        return lsn

    def append_nowait(self, data, uint16_t kind=0):
        """Append one record; returns its LSN at once (durable only after ``wait(lsn)``)."""
        return self._append(data, kind)

    def append_many(self, records, uint16_t kind=0, bint wait=True):
        """Append a sequence of bytes-likes with consecutive LSNs; returns the last LSN (0 if empty).

        ``wait`` (default True) returns only once all are durable in the
        writer's mode.  On a failure the records before the failing one stay
        appended (unacknowledged) and ``OSError`` is raised.
        """
        cdef Py_ssize_t n = len(records), i
        cdef list keep = []
        cdef const uint8_t** ptrs
        cdef uint32_t* lens
        cdef uint64_t last = 0
        cdef int rc = 0
        cdef Py_ssize_t m
        if n == 0:
            return 0
        ptrs = <const uint8_t**>malloc(n * sizeof(uint8_t*))
        lens = <uint32_t*>malloc(n * sizeof(uint32_t))
        if ptrs is NULL or lens is NULL:
            free(ptrs)
            free(lens)
            raise MemoryError()
        try:
            for i in range(n):
                r = records[i]
                if type(r) is not bytes:
                    r = bytes(memoryview(r).cast("B"))
                    keep.append(r)
                m = PyBytes_GET_SIZE(r)
                if m > cjournal.MAX_RECORD:
                    raise ValueError(f"record {i} of {m} bytes exceeds the limit of {cjournal.MAX_RECORD}")
                ptrs[i] = <const uint8_t*>PyBytes_AS_STRING(r)
                lens[i] = <uint32_t>m
            if self.mode == cjournal.MODE_NEVER:
                rc = self.w.append_many(ptrs, lens, <size_t>n, kind, &last)
            else:
                with nogil:
                    rc = self.w.append_many(ptrs, lens, <size_t>n, kind, &last)
        finally:
            free(ptrs)
            free(lens)
        if rc:
            raise_errno(rc, f"journal append failed after LSN {last} (the rest not appended)")
        if wait and self.mode != cjournal.MODE_NEVER:
            with nogil:
                rc = self.w.wait_durable(last)
            if rc:
                raise_errno(rc, f"journal sync failed: records up to {last} are not acknowledged")
        return last

    def wait(self, uint64_t lsn):
        """Block (GIL released) until ``lsn`` is durable in the writer's mode."""
        cdef int rc
        with nogil:
            rc = self.w.wait_durable(lsn)
        if rc:
            raise_errno(rc, f"journal sync failed: record {lsn} is not acknowledged")

    def start_flusher(self):
        """Start the native flusher thread (idempotent): it syncs whatever is appended and not durable."""
        cdef int rc = self.w.start_flusher()
        if rc:
            raise_errno(rc, "cannot start the journal flusher")

    def request_sync(self):
        """Ask the flusher to sync everything appended so far (returns at once)."""
        self.w.request_sync()

    def add_notify_fd(self, int fd):
        """After each sync, write the 8-byte value 1 to ``fd`` (an eventfd or a non-blocking pipe)."""
        self.w.add_notify_fd(fd)

    def remove_notify_fd(self, int fd):
        """Stop notifying ``fd``."""
        self.w.remove_notify_fd(fd)

    def sync(self):
        """Make every appended record durable (any mode); returns the durable LSN."""
        cdef int rc
        with nogil:
            rc = self.w.sync()
        if rc:
            raise_errno(rc, "journal sync failed")
        return self.w.durable_lsn()

    def close(self):
        """Sync, seal and trim the active segment (in every mode). Idempotent."""
        cdef int rc
        with nogil:
            rc = self.w.close()
        if rc:
            raise_errno(rc, "journal close failed")

    @property
    def next_lsn(self):
        """The LSN the next append gets."""
        return self.w.next_lsn()

    @property
    def durable_lsn(self):
        """Every record up to this LSN is durable."""
        return self.w.durable_lsn()

    @property
    def segment_path(self):
        """Path of the active segment ('' when closed)."""
        return _os.fsdecode(self.w.segment_path())

    @property
    def syncs(self):
        """How many fdatasync calls the writer made (group commit shares one among many appends)."""
        return self.w.syncs()

    @property
    def appended_bytes(self):
        """Framed bytes (headers, data, checksums) of every record this writer appended."""
        return self.w.appended_bytes()

    @property
    def error(self):
        """The sticky errno of a failed sync (0 if none)."""
        return self.w.error()
