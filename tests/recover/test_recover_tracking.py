"""Write tracking for incremental saves (faultkit.recover.tracking, faultkit.recover._track).

Every checkpoint must recover bit-exact whatever route wrote the array, and
must be the same checkpoint the untracked path writes; where the kernel can
track (Linux >= 6.7), saves must really hash only the chunks written.
"""
import ctypes
import errno
import mmap
import os
import tempfile
import threading

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import faultkit as fk
from faultkit.recover import _codec, _track
from faultkit.recover import tracking
from recover_util import exact_equal

CHUNK = 1 << 16
# Just over the tracking threshold, not a whole number of chunks or pages.
NBYTES = tracking.TRACK_MIN_BYTES + 3 * CHUNK + 1000
N_CHUNKS = -(-NBYTES // CHUNK)
PAGE = _track.PAGE_SIZE
# Writes land mid-chunk: numpy's memory starts 16 bytes into a page, so a
# page holding a chunk's first bytes also holds the previous chunk's last
# ones, and a write there makes both chunks dirty (tests say so where it matters).
MID = CHUNK // 2


def _kernel_tracks() -> bool:
    t = _track.WriteTracker()
    ok = t.available
    t.close()
    return ok


TRACKS = _kernel_tracks()
needs_tracking = pytest.mark.skipif(not TRACKS, reason="kernel lacks userfaultfd async write protection / PAGEMAP_SCAN")


def hashed(ck):
    return ck._last_write["blob_bytes_hashed"]


def chunks_of(*byte_ranges):
    """The chunks [lo, hi) byte ranges touch."""
    out = set()
    for lo, hi in byte_ranges:
        out.update(range(lo // CHUNK, (hi - 1) // CHUNK + 1))
    return out


def pages_of(a, byte_ranges):
    """The byte ranges of `a` rounded out to whole pages of memory."""
    p = a.ctypes.data
    return [(max(0, (p + lo) // PAGE * PAGE - p), min(a.nbytes, -(-(p + hi) // PAGE) * PAGE - p)) for lo, hi in byte_ranges]


def expected_hashed(chunks):
    return sum(min(CHUNK, NBYTES - k * CHUNK) for k in chunks)


def padded(src):
    """A copy of `src` (uint8) inside a larger array, a page of margin each side.

    Memory next to an array may belong to other heap blocks whose writes show
    in the array's first and last page; the margin keeps the counts exact.
    """
    base = np.zeros(src.nbytes + 2 * PAGE, np.uint8)
    view = base[PAGE:PAGE + src.nbytes]
    view[:] = src.view(np.uint8).reshape(-1)
    return view


def fresh():
    return padded(np.random.default_rng(1).integers(0, 256, NBYTES, dtype=np.uint8))


def refs_of(ck, info):
    """The ids of the checkpoints `info` references (their checksums cover META's time)."""
    return [rid for rid, _ in _codec.parse(ck.store.get(ck._name(info.id), mmap=True)).refs]


# ---------------------------------------------------------------- write patterns (hypothesis)

ops = st.one_of(
    st.tuples(st.just("slice"), st.integers(0, NBYTES - 1), st.integers(1, 3 * CHUNK)),
    st.tuples(st.just("scatter"), st.lists(st.integers(0, NBYTES - 1), min_size=1, max_size=20)),
    st.tuples(st.just("edge"), st.integers(1, N_CHUNKS - 1), st.integers(1, 64)),  # spans chunk k-1 / k
    st.tuples(st.just("first_page")),
    st.tuples(st.just("last_page")),
)


def apply(a, op, value):
    """Do `op` to the array; returns the byte ranges written."""
    kind = op[0]
    if kind == "slice":
        lo = op[1]
        hi = min(NBYTES, lo + op[2])
        a[lo:hi] = value
        return [(lo, hi)]
    if kind == "scatter":
        a[np.array(op[1])] = value
        return [(i, i + 1) for i in op[1]]
    if kind == "edge":
        lo = op[1] * CHUNK - op[2]
        a[lo:lo + 2 * op[2]] = value
        return [(lo, lo + 2 * op[2])]
    if kind == "first_page":
        a[:PAGE] = value
        return [(0, PAGE)]
    a[-PAGE:] = value
    return [(NBYTES - PAGE, NBYTES)]


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rounds=st.lists(st.lists(ops, max_size=4), min_size=1, max_size=5))
def test_every_checkpoint_recovers_exactly_under_random_writes(rounds):
    a = fresh()
    with tempfile.TemporaryDirectory() as d:
        with fk.Checkpointer(os.path.join(d, "t"), retain=20, fsync=False, chunk_size=CHUNK) as ck, \
                fk.Checkpointer(os.path.join(d, "u"), retain=20, fsync=False, chunk_size=CHUNK, track_writes=False) as plain:
            ck.save({"a": a}, incremental=True)
            plain.save({"a": a}, incremental=True)
            copies = []
            for i, round_ops in enumerate(rounds):
                touched = []
                for op in round_ops:
                    touched += apply(a, op, (i * 37 + 11) % 256)
                info = ck.save({"a": a}, incremental=True)
                pinfo = plain.save({"a": a}, incremental=True)
                copies.append((info, a.copy()))
                # the same checkpoint as without tracking: same chunks written, same references
                assert info.written == pinfo.written and refs_of(ck, info) == refs_of(plain, pinfo)
                if TRACKS:  # only chunks holding a written page were read
                    assert hashed(ck) <= expected_hashed(chunks_of(*pages_of(a, touched)))
                    assert hashed(ck) >= expected_hashed(chunks_of(*touched))
                assert hashed(plain) == NBYTES
            for info, want in copies:
                exact_equal({"a": want}, ck.load(info.id))


# ---------------------------------------------------------------- routes into the memory

def _write_copyto(a):
    np.copyto(a[100:200], np.full(100, 7, np.uint8))
    return [(100, 200)]


def _write_thread(a):
    lo = 5 * CHUNK + MID
    t = threading.Thread(target=a.__setitem__, args=(slice(lo, lo + 10), 9))
    t.start()
    t.join()
    return [(lo, lo + 10)]


def _write_memmove(a):
    src = (ctypes.c_char * 64).from_buffer_copy(b"\x05" * 64)
    ctypes.memmove(a.ctypes.data + 20 * CHUNK + MID, src, 64)
    return [(20 * CHUNK + MID, 20 * CHUNK + MID + 64)]


def _write_readv(a):
    r, w = os.pipe()
    try:
        os.write(w, b"\x03" * 5000)
        lo = 30 * CHUNK - 2000  # spans two chunks
        assert os.readv(r, [memoryview(a)[lo:lo + 5000]]) == 5000
    finally:
        os.close(r)
        os.close(w)
    return [(lo, lo + 5000)]


def _write_readinto(a, tmp=[None]):  # noqa: B006 - one temporary file, kept across calls
    fd, path = tempfile.mkstemp()
    try:
        os.write(fd, b"\x04" * 3000)
        os.close(fd)
        with open(path, "rb", buffering=0) as f:
            lo = NBYTES - 3000
            assert f.readinto(memoryview(a)[lo:]) == 3000
    finally:
        os.unlink(path)
    return [(lo, NBYTES)]


@pytest.mark.parametrize("route", [_write_copyto, _write_thread, _write_memmove, _write_readv, _write_readinto],
                         ids=["copyto", "thread", "memmove", "readv", "readinto"])
def test_writes_by_every_route_are_seen(tmp_path, route):
    a = fresh()
    with fk.Checkpointer(tmp_path, chunk_size=CHUNK, fsync=False) as ck:
        ck.save({"a": a}, incremental=True)
        touched = route(a)
        info = ck.save({"a": a}, incremental=True)
        exact_equal({"a": a}, ck.load(info.id))
        assert info.written == expected_hashed(chunks_of(*touched))
        if TRACKS:
            assert hashed(ck) == expected_hashed(chunks_of(*pages_of(a, touched)))


@needs_tracking
def test_memory_dropped_without_a_write_is_seen(tmp_path):
    # madvise(MADV_DONTNEED) on a clean page turns its content to zeros with
    # no write fault: pages not present count as changed.
    a = fresh()
    with fk.Checkpointer(tmp_path, chunk_size=CHUNK, fsync=False) as ck:
        ck.save({"a": a}, incremental=True)
        page = (a.ctypes.data + 10 * CHUNK + PAGE - 1) // PAGE * PAGE
        libc = ctypes.CDLL(None, use_errno=True)
        assert libc.madvise(ctypes.c_void_p(page), ctypes.c_size_t(PAGE), 4) == 0  # MADV_DONTNEED
        lo = page - a.ctypes.data
        assert not a[lo:lo + PAGE].any()
        info = ck.save({"a": a}, incremental=True)
        exact_equal({"a": a}, ck.load(info.id))
        assert info.written == CHUNK


# ---------------------------------------------------------------- what is tracked, and when

@needs_tracking
def test_tracking_reads_only_the_written_chunks(tmp_path):
    a = padded(np.zeros(NBYTES, np.uint8)).view(np.float64)  # NBYTES is a multiple of 8
    with fk.Checkpointer(tmp_path, chunk_size=CHUNK, fsync=False, full_every=100) as ck:
        first = ck.save({"a": a}, incremental=True)
        assert hashed(ck) == a.nbytes and first.written == a.nbytes
        info = ck.save({"a": a}, incremental=True)  # nothing written: nothing read
        assert hashed(ck) == 0 and info.written == 0 and info.incremental
        for step in range(1, 6):
            a[(step * 3 * CHUNK + MID) // 8] = step  # one element: one chunk
            info = ck.save({"a": a}, incremental=True)
            assert hashed(ck) == CHUNK and info.written == CHUNK
            exact_equal({"a": a}, ck.recover())
        assert len(ck._tracking.entries) == 1


def test_fallback_without_tracking_hashes_everything_and_writes_the_same(tmp_path, monkeypatch):
    a = fresh()
    runs = {}
    for mode in ["on", "off", "unavailable"]:
        if mode == "unavailable":
            monkeypatch.setattr(tracking.Tracking, "_get_tracker", lambda self: None)
        b = padded(a)
        with fk.Checkpointer(tmp_path / mode, chunk_size=CHUNK, fsync=False, track_writes=mode != "off") as ck:
            ck.save({"b": b}, incremental=True)
            infos, sums = [], []
            for step in range(4):
                b[step * 7 * CHUNK + MID: step * 7 * CHUNK + MID + 100] = step
                infos.append(ck.save({"b": b}, incremental=True).written)
                sums.append(hashed(ck))
                exact_equal({"b": b}, ck.recover())
            runs[mode] = (infos, [refs_of(ck, i) for i in ck.list()])
            if mode != "on" or not TRACKS:
                assert sums == [NBYTES] * 4
            else:
                assert sums == [CHUNK] * 4
    assert runs["on"] == runs["off"] == runs["unavailable"]


def test_a_new_object_at_the_same_path_is_hashed_whole(tmp_path):
    a = fresh()
    with fk.Checkpointer(tmp_path, chunk_size=CHUNK, fsync=False) as ck:
        ck.save({"a": a}, incremental=True)
        a2 = padded(a)
        a2[0] ^= 1
        info = ck.save({"a": a2}, incremental=True)
        assert hashed(ck) == NBYTES and info.written == CHUNK
        exact_equal({"a": a2}, ck.recover())
        if TRACKS:  # the old array is released, the new one tracked
            assert [e.addr == a2.ctypes.data for e in ck._tracking.entries.values()] == [True]
            a2[-1] ^= 1
            info = ck.save({"a": a2}, incremental=True)
            assert info.written == expected_hashed({N_CHUNKS - 1})
            assert hashed(ck) == expected_hashed(chunks_of(*pages_of(a2, [(NBYTES - 1, NBYTES)])))
            exact_equal({"a": a2}, ck.recover())
        # arrays no longer saved are released
        ck.save({"x": 1}, incremental=True)
        assert not ck._tracking.entries


def test_views_and_readonly_arrays(tmp_path):
    base = np.ones(NBYTES + 2 * PAGE, np.uint8)  # written: its pages are present
    view = base[PAGE + 7: PAGE + 7 + NBYTES]  # a view of memory its base owns
    ro = fresh()
    ro.setflags(write=False)
    strided = np.zeros(2 * NBYTES, np.uint8)[::2]  # saved through a copy: not trackable
    with fk.Checkpointer(tmp_path, chunk_size=CHUNK, fsync=False) as ck:
        state = {"v": view, "ro": ro, "s": strided}
        ck.save(state, incremental=True)
        if TRACKS:
            assert len(ck._tracking.entries) == 2
        base[PAGE + 7 + 3 * CHUNK + MID] = 5  # through the base
        strided[5] = 2
        ro.setflags(write=True)  # it owns its memory: it may be written again
        ro[9] ^= 0xFF
        ro.setflags(write=False)
        info = ck.save(state, incremental=True)
        exact_equal(state, ck.recover())
        assert info.written == 3 * CHUNK
        if TRACKS:
            assert hashed(ck) == 2 * CHUNK + strided.nbytes
        # a new view object of the same memory keeps the tracking
        state["v"] = base[PAGE + 7: PAGE + 7 + NBYTES]
        base[PAGE + 7 + MID] = 3
        ck.save(state, incremental=True)
        exact_equal(state, ck.recover())
        if TRACKS:
            assert hashed(ck) == CHUNK + strided.nbytes


def test_borrowed_and_shared_memory_is_not_tracked(tmp_path):
    m = mmap.mmap(-1, NBYTES)  # shared anonymous: another process could write it
    shared = np.frombuffer(m, np.uint8)
    small = np.zeros(1000, np.uint8)
    big = fresh()
    with fk.Checkpointer(tmp_path, chunk_size=CHUNK, fsync=False) as ck:
        state = {"shared": shared, "small": small, "twice": [big, big]}
        ck.save(state, incremental=True)
        shared[7] = 1
        big[5] = 2
        info = ck.save(state, incremental=True)
        exact_equal(state, ck.recover())
        assert info.written == CHUNK + 2 * CHUNK
        if TRACKS:  # only the first occurrence of big is tracked (the second overlaps it)
            assert len(ck._tracking.entries) == 1
            assert hashed(ck) == NBYTES + small.nbytes + CHUNK + NBYTES
    del shared, state
    m.close()


def test_interleaved_async_full_and_failed_saves_stay_exact(tmp_path):
    a = fresh()
    with fk.Checkpointer(tmp_path, chunk_size=CHUNK, fsync=False, retain=20, full_every=3) as ck:
        ck.save({"a": a}, incremental=True)
        a[1] = 1
        fut = ck.save_async({"a": a}, incremental=True)  # in between: a checkpoint tracking did not see
        fut.result()
        a[2 * CHUNK + MID] = 2
        ck.save({"a": a}, incremental=True)
        assert not TRACKS or hashed(ck) == NBYTES  # stale: hashed whole
        exact_equal({"a": a}, ck.recover())
        a[3 * CHUNK + MID] = 3
        ck.save({"a": a})  # a full save keeps the tracking in step
        a[4 * CHUNK + MID] = 4
        ck.save({"a": a}, incremental=True)
        assert not TRACKS or hashed(ck) == CHUNK
        exact_equal({"a": a}, ck.recover())
        # a save that fails after the scan must not lose the writes it scanned
        a[6 * CHUNK + MID] = 6
        with pytest.raises(TypeError, match=r"state\['bad'\]: unsupported type; register it with faultkit\.register_type \(type"):
            ck.save({"a": a, "bad": object()}, incremental=True)  # fails in encode: nothing scanned
        real = ck.store.put_atomic

        def broken(name, write):
            raise OSError(errno.ENOSPC, "disk full")

        ck.store.put_atomic = broken
        with pytest.raises(OSError):
            ck.save({"a": a}, incremental=True)
        ck.store.put_atomic = real
        info = ck.save({"a": a}, incremental=True)
        exact_equal({"a": a}, ck.recover())
        assert ck.load(info.id)["a"][6 * CHUNK + MID] == 6
        for i in ck.list():
            ck.load(i.id)  # every kept checkpoint is whole


def test_close_releases_and_a_reopened_checkpointer_starts_untracked(tmp_path):
    a = fresh()
    ck = fk.Checkpointer(tmp_path, chunk_size=CHUNK, fsync=False)
    ck.save({"a": a}, incremental=True)
    t = ck._tracking
    ck.close()
    assert not t.entries
    a[CHUNK] = 1  # written while nobody tracks it
    with fk.Checkpointer(tmp_path, chunk_size=CHUNK, fsync=False) as ck2:
        info = ck2.save({"a": a}, incremental=True)  # resumes the chain: hashes everything
        assert info.incremental and hashed(ck2) == NBYTES and info.written == CHUNK
        a[2 * CHUNK + MID] = 2
        info = ck2.save({"a": a}, incremental=True)
        assert info.written == CHUNK and (not TRACKS or hashed(ck2) == CHUNK)
        exact_equal({"a": a}, ck2.recover())


def test_option_is_validated(tmp_path):
    with pytest.raises(TypeError, match="track_writes"):
        fk.Checkpointer(tmp_path, track_writes=1)


# ---------------------------------------------------------------- the native tracker

@needs_tracking
def test_tracker_contract():
    t = _track.WriteTracker()
    a = np.ones(66 * PAGE, np.uint8)[PAGE:65 * PAGE]  # written (present) pages, with margins
    p = a.ctypes.data
    t.arm(p, a.nbytes)
    with pytest.raises(OSError) as e:
        t.arm(p + PAGE, 10)
    assert e.value.errno == errno.EEXIST
    assert t.collect(p, a.nbytes, PAGE) == bytes(64)
    a[5 * PAGE] = 2
    a[-1] = 2
    assert t.collect(p, a.nbytes, 8 * PAGE) == bytes([1, 0, 0, 0, 0, 0, 0, 1])
    assert t.collect(p, a.nbytes, 8 * PAGE) == bytes(8)
    with pytest.raises(ValueError, match=r"chunk_size must be > 0"):
        t.collect(p, a.nbytes, 0)
    with pytest.raises(OSError) as e:
        t.collect(p + PAGE, 10, PAGE)  # not an armed range
    assert e.value.errno == errno.ENOENT
    assert t.disarm(p, a.nbytes) == 0 and t.tracked == 0
    m = mmap.mmap(-1, 4 * PAGE)
    with pytest.raises(OSError) as e:
        t.arm(ctypes.addressof(ctypes.c_char.from_buffer(m)), 4 * PAGE)  # shared memory
    assert e.value.errno == errno.EINVAL
    t.close()
    assert not t.available
    with pytest.raises(OSError):
        t.arm(p, a.nbytes)


@needs_tracking
def test_tracker_refuses_to_work_in_a_forked_child():
    t = _track.WriteTracker()
    a = np.ones(18 * PAGE, np.uint8)[PAGE:17 * PAGE]  # margins: heap neighbours' writes stay outside
    t.arm(a.ctypes.data, a.nbytes)
    pid = os.fork()
    if pid == 0:  # the descriptors act on the parent's memory: every call must refuse
        code = 1
        try:
            t.collect(a.ctypes.data, a.nbytes, PAGE)
        except OSError as e:
            code = 0 if e.errno == errno.ECHILD else 2
        os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    a[0] = 2  # the parent's tracking is intact
    assert t.collect(a.ctypes.data, a.nbytes, 8 * PAGE) == bytes([1, 0])
    t.close()


def _userfaultfds():
    """This process's descriptors that are userfaultfds."""
    out = set()
    for name in os.listdir("/proc/self/fd"):
        try:
            if os.readlink(f"/proc/self/fd/{name}") == "anon_inode:[userfaultfd]":
                out.add(int(name))
        except OSError:  # the listing's own descriptor
            pass
    return out


@needs_tracking
def test_a_tracker_whose_descriptor_was_closed_vouches_for_nothing(tmp_path):
    # Someone closes the tracker's userfaultfd (a library's os.closerange,
    # say): the kernel drops its registrations and another Checkpointer may
    # arm the same memory, often getting the same descriptor number.  The
    # first must not scan it any more: PAGEMAP_SCAN re-protects pages for
    # whoever registered them, so the second would miss writes and store
    # stale chunks.
    a = fresh()
    opts = dict(chunk_size=CHUNK, fsync=False, retain=10)
    with fk.Checkpointer(tmp_path / "1", **opts) as c1, fk.Checkpointer(tmp_path / "2", **opts) as c2:
        before = _userfaultfds()
        c1.save({"a": a}, incremental=True)
        mine = _userfaultfds() - before
        assert len(mine) == 1
        for fd in mine:
            os.close(fd)
        c2.save({"a": a}, incremental=True)
        for step in range(3):
            a[(5 + step) * CHUNK + MID] ^= 0xFF
            i1 = c1.save({"a": a}, incremental=True)
            i2 = c2.save({"a": a}, incremental=True)
            exact_equal({"a": a}, c1.load(i1.id))
            exact_equal({"a": a}, c2.load(i2.id))
            assert i2.written == CHUNK  # c2 still tracks
        c1.close()  # must not close c2's descriptor, which may have the old number
        a[9 * CHUNK + MID] ^= 0xFF
        i2 = c2.save({"a": a}, incremental=True)
        exact_equal({"a": a}, c2.load(i2.id))
        assert hashed(c2) < NBYTES


@needs_tracking
def test_tracker_refuses_descriptors_it_no_longer_owns():
    a = np.ones(18 * PAGE, np.uint8)[PAGE:17 * PAGE]
    t = _track.WriteTracker()
    before = _userfaultfds()
    t2 = _track.WriteTracker()
    (fd,) = _userfaultfds() - before
    t2.arm(a.ctypes.data, a.nbytes)
    os.close(fd)  # t2's registrations are gone with it
    t3 = _track.WriteTracker()  # likely takes the number
    with pytest.raises(OSError) as e:
        t2.collect(a.ctypes.data, a.nbytes, PAGE)
    assert e.value.errno == errno.EBADF
    assert not t2.available and t2.tracked == 0
    t2.close()  # closes nothing it does not own
    t3.arm(a.ctypes.data, a.nbytes)
    a[0] = 2
    assert t3.collect(a.ctypes.data, a.nbytes, 8 * PAGE) == bytes([1, 0])
    t3.close()
    t.close()


def test_two_checkpointers_on_one_array_and_memory_that_moves(tmp_path):
    # The second Checkpointer cannot register memory the first one watches
    # (EBUSY): it hashes everything, and both stay exact.  An array whose
    # memory numpy reallocates (resize without the reference check) is
    # released and tracked anew at its new address.
    a = fresh()
    opts = dict(chunk_size=CHUNK, fsync=False, retain=10)
    with fk.Checkpointer(tmp_path / "1", **opts) as c1, fk.Checkpointer(tmp_path / "2", **opts) as c2:
        for step in range(3):
            a[(2 + step) * CHUNK + MID] ^= 0x5A
            i1 = c1.save({"a": a}, incremental=True)
            i2 = c2.save({"a": a}, incremental=True)
            exact_equal({"a": a}, c1.load(i1.id))
            exact_equal({"a": a}, c2.load(i2.id))
            if TRACKS and step:
                assert hashed(c1) == CHUNK and hashed(c2) == NBYTES
    b = np.array(np.random.default_rng(2).integers(0, 256, NBYTES, dtype=np.uint8))
    with fk.Checkpointer(tmp_path / "3", **opts) as ck:
        ck.save({"b": b}, incremental=True)
        b.resize(NBYTES // 3, refcheck=False)  # the tracker's reference does not stop it
        b.resize(NBYTES, refcheck=False)  # zero-filled tail, maybe at a new address
        info = ck.save({"b": b}, incremental=True)
        exact_equal({"b": b}, ck.load(info.id))
        b[-1] ^= 1
        b[5 * CHUNK + MID] ^= 1
        info = ck.save({"b": b}, incremental=True)
        exact_equal({"b": b}, ck.load(info.id))
