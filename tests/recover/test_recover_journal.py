"""The write-ahead journal: appends, replay, rotation, truncation, torn tails, corruption, ENOSPC, asyncio."""
import asyncio
import errno
import os
import shutil
import subprocess
import threading
import uuid
import warnings

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
import pytest

import faultkit as fk
from faultkit.errors import CorruptJournalError, JournalLockedError, JournalWarning
from faultkit.recover import _journal
from faultkit.recover.journal import Journal
from recover_util import exact_equal


def records(n, size=20):
    return [bytes([(i * 7 + k) % 256 for k in range(size)]) + b"%d" % i for i in range(n)]


def read_all(path, **kw):
    return list(Journal(path, readonly=True).replay(**kw))


# ---------------------------------------------------------------- basics

@pytest.mark.parametrize("mode", ["always", "group", "never"])
def test_append_returns_consecutive_lsns_and_replay_returns_records_in_order(tmp_path, mode):
    recs = records(100)
    with Journal(tmp_path / "j", fsync=mode, segment_bytes=4096) as j:
        lsns = [j.append(r) for r in recs]
        assert lsns == list(range(1, 101))
        assert j.next_lsn == 101
        if mode != "never":
            assert j.durable_lsn == 100
        assert list(j.replay()) == list(zip(lsns, recs))
        assert len(j.segments()) > 1  # 100 * 56 bytes rotate 4 KiB segments
    assert read_all(tmp_path / "j") == list(zip(lsns, recs))
    assert read_all(tmp_path / "j", from_lsn=37) == list(zip(lsns, recs))[36:]


def test_state_records_round_trip_through_the_codec(tmp_path):
    state = {"k": [1, 2.5, None, "x"], "a": np.arange(10, dtype="<i4"), "t": (b"b", frozenset({1}))}
    with Journal(tmp_path / "j", fsync="never") as j:
        j.append(b"raw")
        j.append(state)
        j.append(bytearray(b"ba"))
        j.append(memoryview(np.arange(3, dtype="<u2")))
    got = read_all(tmp_path / "j")
    assert [lsn for lsn, _ in got] == [1, 2, 3, 4]
    assert got[0][1] == b"raw" and got[2][1] == b"ba"
    assert got[3][1] == np.arange(3, dtype="<u2").tobytes()
    exact_equal(got[1][1]["k"], state["k"])
    exact_equal(got[1][1]["a"], state["a"])
    raw = list(Journal(tmp_path / "j", readonly=True).replay(2, raw=True))[0][1]
    assert fk.recover.loads(raw)["k"] == state["k"]


def test_reopen_continues_after_the_last_record(tmp_path):
    with Journal(tmp_path / "j", fsync="group") as j:
        j.append_many([b"a", b"b", b"c"])
    with Journal(tmp_path / "j", fsync="always") as j:
        assert j.next_lsn == 4
        assert j.append(b"d") == 4
    assert [r for _, r in read_all(tmp_path / "j")] == [b"a", b"b", b"c", b"d"]


def test_first_lsn_of_a_new_journal(tmp_path):
    with Journal(tmp_path / "j", first_lsn=1000) as j:
        assert j.append(b"x") == 1000
        assert j.first_lsn == 1000


def test_append_many_mixed_kinds(tmp_path):
    with Journal(tmp_path / "j", fsync="group") as j:
        assert j.append_many([]) == 0
        assert j.append_many([b"a", {"b": 1}, {"c": 2}, b"d"]) == 4
        assert j.append_many((x for x in [b"e"])) == 5
        with pytest.raises(TypeError, match="unsupported type"):
            j.append_many([b"f", object()])
        assert j.next_lsn == 6  # nothing of the failed batch was appended
    assert [r for _, r in read_all(tmp_path / "j")] == [b"a", {"b": 1}, {"c": 2}, b"d", b"e"]


def test_a_record_larger_than_a_segment_gets_a_segment_of_its_own(tmp_path):
    big = os.urandom(20000)
    with Journal(tmp_path / "j", fsync="group", segment_bytes=4096) as j:
        j.append(b"small")
        assert j.append(big) == 2
        j.append(b"after")
    assert [r for _, r in read_all(tmp_path / "j")] == [b"small", big, b"after"]


def test_native_helpers_refuse_none_for_a_buffer():
    """None is not an empty buffer: the framing and parsing helpers refuse it by name."""
    with pytest.raises(TypeError, match="Argument 'data' must not be None"):
        _journal.frame(0, 1, 0, 0, None)
    with pytest.raises(TypeError, match="Argument 'buffer' must not be None"):
        _journal.parse_segment_header(None)
    with pytest.raises(TypeError, match="Argument 'buffer' must not be None"):
        _journal.SegmentReader(None, 0, 1)


def test_bad_arguments_name_the_value(tmp_path):
    with pytest.raises(ValueError, match="fsync must be one of"):
        Journal(tmp_path / "a", fsync="sometimes")
    with pytest.raises(ValueError, match="segment_bytes must be in"):
        Journal(tmp_path / "a", segment_bytes=100)
    with pytest.raises(TypeError, match="segment_bytes must be an int"):
        Journal(tmp_path / "a", segment_bytes=4096.0)
    with pytest.raises(ValueError, match="first_lsn must be in"):
        Journal(tmp_path / "a", first_lsn=0)
    with pytest.raises(TypeError, match="path must be"):
        Journal(b"")
    with pytest.raises(FileNotFoundError, match="no journal directory"):
        Journal(tmp_path / "missing", readonly=True)
    with Journal(tmp_path / "j") as j:
        with pytest.raises(TypeError, match="unsupported type"):
            j.append(object())
        with pytest.raises(ValueError, match="from_lsn must be in"):
            list(j.replay(0))
        with pytest.raises(TypeError, match="lsn must be an int"):
            j.truncate_before("3")
    with pytest.raises(ValueError, match="closed"):
        j.append(b"x")
    with pytest.raises(ValueError, match="closed"):
        j.append({"x": 1})
    with pytest.raises(ValueError, match="read-only"):
        Journal(tmp_path / "j", readonly=True).append(b"x")


def test_one_writer_per_journal(tmp_path):
    j = Journal(tmp_path / "j")
    with pytest.raises(JournalLockedError, match="locked by another writer"):
        Journal(tmp_path / "j")
    assert isinstance(JournalLockedError("x"), fk.CheckpointLockedError)
    Journal(tmp_path / "j", readonly=True)  # readers take no lock
    j.close()
    Journal(tmp_path / "j").close()


# ---------------------------------------------------------------- truncation

def test_truncate_before_drops_whole_segments_only(tmp_path):
    with Journal(tmp_path / "j", fsync="never", segment_bytes=4096) as j:
        j.append_many(records(300))
        segs = j.segments()
        assert len(segs) >= 4
        cut = segs[2][0] + 1  # inside the third segment
        assert j.truncate_before(cut) == segs[2][0]
        assert [s[0] for s in j.segments()] == [s[0] for s in segs[2:]]
        got = list(j.replay())
        assert got[0][0] == segs[2][0] and got[-1][0] == 300
        with pytest.raises(ValueError, match="were truncated"):
            list(j.replay(1))
        j.truncate_before(10**9)  # never the active segment
        assert len(j.segments()) == 1
        assert j.append(b"x") == 301


# ---------------------------------------------------------------- torn tails and corruption

def small_journal(path, n=6, mode="group"):
    recs = records(n, size=13)
    with Journal(path, fsync=mode, segment_bytes=1 << 16) as j:
        for r in recs:
            j.append(r)
    [seg] = os.listdir(path)[:0] or [s for s in os.listdir(path) if s.startswith("wal-")]
    return recs, os.path.join(path, seg)


def test_truncation_at_every_length_recovers_exactly_the_whole_records_before_it(tmp_path):
    recs, seg = small_journal(tmp_path / "j", n=8)
    data = open(seg, "rb").read()
    ends = []  # byte offset after each record
    pos = _journal.SEGMENT_HEADER_SIZE
    for r in recs:
        pos += _journal.frame_size(len(r))
        ends.append(pos)
    assert len(data) == pos + _journal.RECORD_HEADER_SIZE  # + the seal
    for cut in range(_journal.SEGMENT_HEADER_SIZE, len(data) + 1):
        with open(seg, "wb") as f:
            f.write(data[:cut])
        whole = sum(1 for e in ends if e <= cut)
        got = read_all(tmp_path / "j")
        assert got == list(zip(range(1, whole + 1), recs[:whole])), cut
    # a writer opening a torn journal cuts the tail and continues right after the last whole record
    for cut in (ends[3] - 1, ends[3], ends[3] + 5):
        with open(seg, "wb") as f:
            f.write(data[:cut])
        whole = sum(1 for e in ends if e <= cut)
        with Journal(tmp_path / "j", fsync="never", segment_bytes=4096) as j:
            assert j.next_lsn == whole + 1
            assert j.append(b"new") == whole + 1
        got = read_all(tmp_path / "j")
        assert [r for _, r in got] == recs[:whole] + [b"new"]
        for s in os.listdir(tmp_path / "j"):
            if s.startswith("wal-") and not seg.endswith(s):
                os.unlink(tmp_path / "j" / s)


def test_a_header_shorter_than_64_bytes_is_corrupt(tmp_path):
    recs, seg = small_journal(tmp_path / "j")
    with open(seg, "r+b") as f:
        f.truncate(40)
    with pytest.raises(CorruptJournalError, match="shorter than its header"):
        read_all(tmp_path / "j")


@pytest.mark.parametrize("mode", ["group", "never"])
def test_every_bit_flip_in_a_small_journal_is_detected(tmp_path, mode):
    recs, seg = small_journal(tmp_path / "j", n=5, mode=mode)
    data = bytearray(open(seg, "rb").read())
    seal_at = len(data) - _journal.RECORD_HEADER_SIZE
    want = list(zip(range(1, 6), recs))
    fd = os.open(seg, os.O_RDWR)
    raised = 0
    try:
        for byte in range(len(data)):
            for bit in range(8):
                os.pwrite(fd, bytes([data[byte] ^ (1 << bit)]), byte)
                try:
                    got = read_all(tmp_path / "j")
                except CorruptJournalError as e:
                    raised += 1
                    assert e.segment == seg and e.lsn is not None
                else:
                    # only a flip in the seal may go unreported, and then no record changes
                    assert byte >= seal_at, (byte, bit)
                    assert got == want
                os.pwrite(fd, bytes([data[byte]]), byte)
    finally:
        os.close(fd)
    assert raised == seal_at * 8


def test_damage_in_the_middle_names_segment_and_lsn_and_skip_goes_to_the_next_segment(tmp_path):
    recs = records(200)
    with Journal(tmp_path / "j", fsync="group", segment_bytes=4096) as j:
        j.append_many(recs[:1])
        for r in recs[1:]:
            j.append(r)
        segs = j.segments()
    first, seg, _ = segs[1]
    with open(seg, "r+b") as f:  # damage the payload of the segment's third record
        off = _journal.SEGMENT_HEADER_SIZE + 2 * _journal.frame_size(len(recs[0])) + 40
        f.seek(off)
        b = f.read(1)
        f.seek(off)
        f.write(bytes([b[0] ^ 0x10]))
    with pytest.raises(CorruptJournalError, match=f"record {first + 2} is damaged") as ei:
        read_all(tmp_path / "j")
    assert ei.value.segment == seg and ei.value.lsn == first + 2
    with pytest.warns(JournalWarning, match=f"record {first + 2} is damaged") as rec:
        got = read_all(tmp_path / "j", skip_corrupt=True)
    assert len(rec) == 1  # skipping resumes at the next segment's first LSN: reported once
    lsns = [lsn for lsn, _ in got]
    assert lsns == list(range(1, first + 2)) + list(range(segs[2][0], 201))
    assert all(recs[lsn - 1] == r for lsn, r in got)
    # a replay that starts after the damaged segment does not see it
    assert [lsn for lsn, _ in read_all(tmp_path / "j", from_lsn=segs[2][0])] == list(range(segs[2][0], 201))


def test_a_missing_segment_is_reported(tmp_path):
    with Journal(tmp_path / "j", fsync="never", segment_bytes=4096) as j:
        j.append_many(records(300))
        segs = j.segments()
    os.unlink(segs[1][1])
    with pytest.raises(CorruptJournalError, match="missing") as ei:
        read_all(tmp_path / "j")
    assert ei.value.lsn == segs[1][0]


def test_a_segment_of_another_journal_is_rejected(tmp_path):
    with Journal(tmp_path / "a", fsync="never", segment_bytes=4096) as j:
        j.append_many(records(300))
        segs_a = j.segments()
    with Journal(tmp_path / "b", fsync="never", segment_bytes=4096) as j:
        j.append_many(records(300))
        segs_b = j.segments()
    assert segs_a[1][0] == segs_b[1][0]
    shutil.copy(segs_b[1][1], segs_a[1][1])
    with pytest.raises(CorruptJournalError, match="belongs to another journal"):
        read_all(tmp_path / "a")


def test_writer_refuses_a_damaged_last_segment_unless_told_to_skip(tmp_path):
    recs, seg = small_journal(tmp_path / "j", n=6)
    with open(seg, "r+b") as f:
        f.seek(_journal.SEGMENT_HEADER_SIZE + 40)
        b = f.read(1)
        f.seek(-1, 1)
        f.write(bytes([b[0] ^ 1]))
    with pytest.raises(CorruptJournalError, match="record 1 is damaged"):
        Journal(tmp_path / "j")
    with pytest.warns(JournalWarning, match="record 1 is damaged"):
        j = Journal(tmp_path / "j", skip_corrupt=True, segment_bytes=4096)
    assert j.append(b"x") == 7  # after every LSN the damaged segment used
    j.close()
    with pytest.warns(JournalWarning):
        got = read_all(tmp_path / "j", skip_corrupt=True)
    assert got == [(7, b"x")]


def test_a_newer_format_version_is_refused_by_name(tmp_path):
    recs, seg = small_journal(tmp_path / "j")
    import struct

    from faultkit import hash64

    with open(seg, "r+b") as f:
        h = bytearray(f.read(64))
        h[8:10] = struct.pack("<H", 2)
        h[56:64] = struct.pack("<Q", hash64(bytes(h[:56])))
        f.seek(0)
        f.write(h)
    with pytest.raises(CorruptJournalError, match=r"format version 2\.0, newer than this reader \(1\.0\); "
                                                  r"upgrade faultkit to read it$"):
        read_all(tmp_path / "j")


# ---------------------------------------------------------------- concurrency

@pytest.mark.parametrize("mode", ["group", "always"])
def test_concurrent_threads_get_distinct_durable_lsns(tmp_path, mode):
    out = {}
    with Journal(tmp_path / "j", fsync=mode, segment_bytes=8192) as j:
        def run(t):
            out[t] = [(j.append(b"t%d-%d" % (t, i)), b"t%d-%d" % (t, i)) for i in range(40)]
            assert j.durable_lsn >= out[t][-1][0]

        threads = [threading.Thread(target=run, args=(t,)) for t in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    acked = sorted(x for v in out.values() for x in v)
    assert [lsn for lsn, _ in acked] == list(range(1, 321))
    assert read_all(tmp_path / "j") == acked


@pytest.mark.parametrize("mode", ["group", "never"])
def test_append_async_completes_when_durable(tmp_path, mode):
    async def main(j):
        async def task(t):
            got = []
            for i in range(20):
                rec = b"a%d-%d" % (t, i) if i % 2 else {"t": t, "i": i}
                lsn = await j.append_async(rec)
                if mode == "group":
                    assert j.durable_lsn >= lsn
                got.append((lsn, rec))
            return got

        return await asyncio.gather(*(task(t) for t in range(64)))

    with Journal(tmp_path / "j", fsync=mode) as j:
        res = asyncio.run(main(j))
        if mode == "group":
            # each burst of 64 appends (one per task) shares one sync
            assert 20 <= j.syncs <= 2 * 20 + 2, j.syncs
    acked = sorted(x for v in res for x in v)
    assert [lsn for lsn, _ in acked] == list(range(1, 64 * 20 + 1))
    assert read_all(tmp_path / "j") == acked


# ---------------------------------------------------------------- a full disk

@pytest.fixture
def tiny_fs(tmp_path):
    mnt = tmp_path / "tiny"
    mnt.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a 1 MiB tmpfs needs root")
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", f"fk-{uuid.uuid4().hex[:8]}", str(mnt)],
                       capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"mount refused: {r.stderr.strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", str(mnt)], check=True)


def test_enospc_leaves_the_journal_usable_and_the_failed_append_unacknowledged(tiny_fs):
    acked = []
    rec = os.urandom(4000)
    with Journal(tiny_fs / "j", fsync="group", segment_bytes=128 << 10) as j:
        with pytest.raises(OSError) as ei:
            for _ in range(1000):
                acked.append(j.append(rec))
        assert ei.value.errno == errno.ENOSPC
        assert len(acked) > 100
        nxt = j.next_lsn
        assert nxt == acked[-1] + 1  # the failed append took no LSN
        assert j.appended_bytes == len(acked) * _journal.frame_size(len(rec))  # nor counted bytes
        assert not j.failed  # ENOSPC at a rotation is not a failed sync: the journal stays usable
        assert [lsn for lsn, _ in j.replay()] == acked
        with pytest.raises(OSError, match="record not appended"):
            j.append(rec)
        j.truncate_before(nxt)  # frees the old segments
        assert j.append(rec) == nxt
        acked.append(nxt)
    got = read_all(tiny_fs / "j")
    assert [lsn for lsn, _ in got] == acked[-len(got):] and got[-1] == (nxt, rec)


# ---------------------------------------------------------------- with the Checkpointer

def test_checkpoint_records_its_lsn_and_recover_with_replays_the_rest(tmp_path):
    j = Journal(tmp_path / "wal", fsync="group", segment_bytes=4096)
    ck = fk.Checkpointer(tmp_path / "ck", retain=2, journal=j)
    state = {"n": 0, "log": []}
    for i in range(1, 301):
        lsn = j.append({"add": i})
        state["n"] += i
        state["log"].append(i)
        if i % 100 == 0:
            info = ck.save(state, lsn=lsn)
            assert info.lsn == lsn
    for i in range(301, 311):
        j.append({"add": i})
    assert [c.lsn for c in ck.list()] == [200, 300]
    # retention kept the journal back to the oldest retained checkpoint (LSN 200)
    assert j.first_lsn <= 201 and j.first_lsn > 1

    rec_state, recs = ck.recover_with(j)
    assert rec_state["n"] == sum(range(1, 301))
    assert recs == [(i, {"add": i}) for i in range(301, 311)]

    def apply(s, lsn, r):
        s["n"] += r["add"]
        s["log"].append(lsn)
        return s

    final = ck.recover_with(j, apply=apply)
    assert final["n"] == sum(range(1, 311)) and final["log"] == list(range(1, 311))
    j.close()
    ck.close()

    # the newest checkpoint is damaged: fall back to the older one and replay more
    newest = sorted(os.listdir(tmp_path / "ck"))[-1]
    with open(tmp_path / "ck" / newest, "r+b") as f:
        f.seek(100)
        f.write(b"\xff\xff")
    j = Journal(tmp_path / "wal", readonly=True)
    with pytest.warns(fk.CheckpointWarning):
        s, recs = fk.Checkpointer(tmp_path / "ck").recover_with(j)
    assert s["n"] == sum(range(1, 201)) and [lsn for lsn, _ in recs] == list(range(201, 311))


def test_recover_with_reports_a_journal_that_lost_the_records_after_the_checkpoint(tmp_path):
    with Journal(tmp_path / "wal", fsync="never", segment_bytes=4096) as j:
        j.append_many(records(300))
        ck = fk.Checkpointer(tmp_path / "ck")
        ck.save({"x": 1}, lsn=10)
        j.truncate_before(200)
        with pytest.raises(CorruptJournalError, match="records 11..") as ei:
            ck.recover_with(j)
        assert ei.value.lsn == 11
    with Journal(tmp_path / "wal2") as j2:
        ck.save({"x": 2}, lsn=50)
        with pytest.raises(CorruptJournalError, match="not this checkpoint's journal"):
            ck.recover_with(j2)
    ck.close()
    with pytest.raises(TypeError, match="journal must be a faultkit Journal"):
        ck.recover_with("wal")
    with pytest.raises(TypeError, match="lsn must be an int"):
        fk.Checkpointer(tmp_path / "c2").save({}, lsn=1.5)
    with pytest.raises(ValueError, match="lsn must be in"):
        fk.Checkpointer(tmp_path / "c3").save({}, lsn=-1)


def test_checkpoints_without_lsn_stay_readable_and_cover_no_record(tmp_path):
    ck = fk.Checkpointer(tmp_path / "ck")
    info = ck.save({"a": 1})  # as every checkpoint written before journals existed
    assert info.lsn is None and ck.list()[0].lsn is None
    with Journal(tmp_path / "wal") as j:
        j.append(b"r1")
        j.append(b"r2")
        state, recs = ck.recover_with(j)
    assert state == {"a": 1} and recs == [(1, b"r1"), (2, b"r2")]
    ck.close()
    # a journal attached to a Checkpointer whose checkpoints lack an LSN is never truncated
    with Journal(tmp_path / "wal", segment_bytes=4096, fsync="never") as j:
        j.append_many(records(300))
        ck2 = fk.Checkpointer(tmp_path / "ck", journal=j)
        ck2.save({"a": 2})
        assert j.first_lsn == 1
        ck2.close()


@pytest.mark.parametrize("mode", ["never", "group"])
def test_readers_racing_a_writer_see_whole_records_in_order(tmp_path, mode):
    recs = records(3000, size=50)
    with Journal(tmp_path / "j", fsync=mode, segment_bytes=16384) as j:
        done = threading.Event()

        def write():
            try:
                for i in range(0, len(recs), 100):
                    j.append_many(recs[i:i + 100])
            finally:
                done.set()

        t = threading.Thread(target=write)
        t.start()
        seen = 0
        reads = 0
        while not done.is_set() or reads < 2:
            got = read_all(tmp_path / "j")
            assert [lsn for lsn, _ in got] == list(range(1, len(got) + 1))
            assert all(r == recs[lsn - 1] for lsn, r in got)
            assert len(got) >= seen  # what a reader saw never goes away
            seen = len(got)
            reads += 1
        t.join()
    assert len(read_all(tmp_path / "j")) == len(recs)


def test_close_completes_pending_asyncio_appends(tmp_path):
    j = Journal(tmp_path / "j", fsync="group")

    async def main():
        tasks = [asyncio.ensure_future(j.append_async(b"r%d" % i)) for i in range(10)]
        await asyncio.sleep(0)  # every task has appended and waits
        j.close()  # syncs them
        return await asyncio.gather(*tasks, return_exceptions=True)

    res = asyncio.run(main())
    assert sorted(res) == list(range(1, 11))
    assert [r for _, r in read_all(tmp_path / "j")] == [b"r%d" % i for i in range(10)]
    async def late():
        return await j.append_async(b"late")

    with pytest.raises(ValueError, match="closed"):
        asyncio.run(late())
    with pytest.raises(RuntimeError, match="no running event loop"):
        Journal(tmp_path / "k").append_async(b"outside a loop")


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(edits=st.lists(st.tuples(st.integers(0, 2000), st.binary(min_size=1, max_size=40)), max_size=4),
       cut=st.one_of(st.none(), st.integers(0, 2000)))
def test_any_damage_is_reported_or_cut_never_returned(tmp_path, edits, cut):
    path = tmp_path / uuid.uuid4().hex
    recs, seg = small_journal(path, n=12)
    data = bytearray(open(seg, "rb").read())
    for off, b in edits:
        off %= len(data)
        data[off:off + len(b)] = b[:len(data) - off]
    if cut is not None:
        del data[cut % (len(data) + 1):]
    with open(seg, "wb") as f:
        f.write(data)
    try:
        got = read_all(path)
    except CorruptJournalError:
        return
    # whatever replay returns is a prefix of what was appended, unchanged
    assert got == list(zip(range(1, len(got) + 1), recs[:len(got)]))


# ---------------------------------------------------------------- mutants (docs/mutation.md)

def test_the_pipe_fallback_is_non_blocking_and_acknowledges_appends(tmp_path, monkeypatch):
    """Kills the mutants ``os.set_blocking(self.rfd, False)`` -> ``True`` (and the same for
    ``wfd``) in ``_LoopWaiters``: where ``os.eventfd`` is missing (Python 3.9, not Linux) the
    loop is woken through a pipe.  Both ends must be non-blocking: ``close`` drains the read end
    once more after the last wakeup (a blocking read of the empty pipe never returns), and the
    flusher writes to the write end holding the journal's mutex (a full blocking pipe would
    stall every append).  Through the pipe, appends are acknowledged once durable and close
    returns."""
    monkeypatch.delattr(os, "eventfd", raising=False)  # absent already before Python 3.10
    seen = {}

    async def main(j):
        lsns = await asyncio.gather(*(j.append_async(b"p%d" % i) for i in range(50)))
        assert j.durable_lsn >= max(lsns)
        w = j._loops[asyncio.get_running_loop()]
        seen.update(pipe=w.rfd != w.wfd, rfd=os.get_blocking(w.rfd), wfd=os.get_blocking(w.wfd))
        if seen["rfd"] or seen["wfd"]:
            os.set_blocking(w.rfd, False)  # let the close below return; the assertion reports it
            os.set_blocking(w.wfd, False)
        else:
            late = j.append_async(b"late")
            j.close()  # from the loop's thread: syncs, drains the pipe, resolves the waiter
            assert late.done() and late.result() == 51
        return lsns

    j = Journal(tmp_path / "j", fsync="group")
    try:
        lsns = asyncio.run(main(j))
    finally:
        j.close()
    assert seen == {"pipe": True, "rfd": False, "wfd": False}
    assert sorted(lsns) == list(range(1, 51))
    assert [lsn for lsn, _ in read_all(tmp_path / "j")] == list(range(1, 52))


def test_a_damaged_last_header_is_set_aside_and_the_journal_continues_with_its_id(tmp_path):
    """Kills the mutants of ``rest[-1][1]`` / ``rest[-1][0]`` (``-1`` -> ``-2``, ``1`` -> ``2``)
    in ``_recover_tail``: after the damaged last segment is renamed aside, the journal id is
    re-read from the header of the segment now last, under that segment's own name and LSN;
    new records then carry that id and replay joins them to the older ones."""
    path = tmp_path / "j"
    with Journal(path, fsync="never", segment_bytes=4096) as j:
        j.append_many(records(300))
        segs = j.segments()
    assert len(segs) >= 4
    last_first, last_path, _ = segs[-1]
    with open(last_path, "r+b") as f:
        f.write(b"XXXX")  # the magic
    with pytest.raises(CorruptJournalError, match="bad magic"):
        Journal(path)
    with pytest.warns(JournalWarning, match=r"bad magic.*renamed to wal-\d+\.fkj\.damaged"):
        j = Journal(path, skip_corrupt=True, fsync="never", segment_bytes=4096)
    try:
        assert os.path.exists(last_path + ".damaged")
        assert j.append(b"after") == last_first  # continues after the damaged segment's first LSN
    finally:
        j.close()
    got = read_all(path)
    assert [lsn for lsn, _ in got] == list(range(1, last_first + 1))
    assert got[-1] == (last_first, b"after") and got[:-1] == list(zip(range(1, last_first), records(300)))

    # the segment before is damaged too: skip_corrupt sets aside the last one only, and the
    # error names the one it could not read (its path and first LSN)
    path = tmp_path / "k"
    with Journal(path, fsync="never", segment_bytes=4096) as j:
        j.append_many(records(300))
        segs = j.segments()
    for _, where, _ in segs[-2:]:
        with open(where, "r+b") as f:
            f.write(b"XXXX")
    with pytest.warns(JournalWarning, match="renamed to"):
        with pytest.raises(CorruptJournalError, match="bad magic") as ei:
            Journal(path, skip_corrupt=True, fsync="never", segment_bytes=4096)
    assert (ei.value.segment, ei.value.lsn) == (segs[-2][1], segs[-2][0])


def test_an_empty_journal_reports_its_first_and_next_lsn_when_closed_or_read_only(tmp_path):
    """Kills the mutants ``segs[-1][0] if segs else 1`` (``-1`` -> ``-2``, ``1`` -> ``2``) in
    ``next_lsn`` and ``self._writer is not None`` -> ``is None`` in ``first_lsn``: without a
    writer and without records, the next LSN is the first LSN of the last (empty) segment, or 1
    for a directory with no segment at all."""
    (tmp_path / "empty").mkdir()
    r = Journal(tmp_path / "empty", readonly=True)
    assert (r.first_lsn, r.next_lsn, list(r.replay())) == (1, 1, [])
    j = Journal(tmp_path / "j", first_lsn=500)
    assert (j.first_lsn, j.next_lsn) == (500, 500)
    j.close()
    assert (j.first_lsn, j.next_lsn) == (500, 500)  # closed: read from the directory
    r = Journal(tmp_path / "j", readonly=True)
    assert (r.first_lsn, r.next_lsn, list(r.replay())) == (500, 500, [])


def test_replay_from_a_truncated_lsn_names_the_oldest_stored_record(tmp_path):
    """Kills the mutants ``segs[0][0]`` -> ``segs[1][0]`` / ``segs[0][1]`` in replay's
    "were truncated" message: it names the first LSN still stored and the LSN asked for."""
    with Journal(tmp_path / "j", fsync="never", segment_bytes=4096) as j:
        j.append_many(records(300))
        segs = j.segments()
        j.truncate_before(segs[-1][0])  # keep the active segment only
        assert [s[0] for s in j.segments()] == [segs[-1][0]]
        with pytest.raises(ValueError, match=rf"^records before LSN {segs[-1][0]} were truncated; "
                                             rf"cannot replay from {segs[1][0]}$"):
            list(j.replay(segs[1][0]))


def test_a_segment_that_ends_before_the_next_one_starts_names_both_lsns(tmp_path):
    """Kills the mutant ``segs[idx + 1][0]`` -> ``segs[idx + 2][0]`` in the message for a
    segment that ends cleanly before the next segment's first LSN (its last records lost,
    e.g. a middle segment cut short): the error names the first missing record and the LSN
    the next segment starts at; ``skip_corrupt`` continues with that segment."""
    recs = records(300)
    with Journal(tmp_path / "j", fsync="never", segment_bytes=4096) as j:
        j.append_many(recs)
        segs = j.segments()
    assert len(segs) >= 4
    first, seg, size = segs[1]
    nxt = segs[2][0]
    whole = []  # end offset of each record of the segment
    pos = _journal.SEGMENT_HEADER_SIZE
    for r in recs[first - 1:nxt - 1]:
        pos += _journal.frame_size(len(r))
        whole.append(pos)
    os.truncate(seg, whole[-3])  # its last two records are gone
    missing = nxt - 2
    with pytest.raises(CorruptJournalError, match=rf"record {missing} is damaged or missing \(at byte "
                                                  rf"{whole[-3]}\) and the next segment starts at LSN {nxt}$") as ei:
        read_all(tmp_path / "j")
    assert ei.value.lsn == missing and ei.value.segment == seg
    with pytest.warns(JournalWarning, match=f"next segment starts at LSN {nxt}") as rec:
        got = read_all(tmp_path / "j", skip_corrupt=True)
    assert len(rec) == 1  # skipping resumes where the next segment starts: no second report
    assert [lsn for lsn, _ in got] == list(range(1, missing)) + list(range(nxt, 301))


def test_the_default_segment_size_is_64_mib(tmp_path):
    """Kills the mutants of ``DEFAULT_SEGMENT_BYTES = 64 << 20`` (``64`` -> ``65``, ``20`` ->
    ``21``): the documented default, and the size a new segment is preallocated to."""
    assert fk.recover.journal.DEFAULT_SEGMENT_BYTES == 64 * 1024 * 1024
    with Journal(tmp_path / "j", fsync="never") as j:
        assert j.segment_bytes == 64 * 1024 * 1024
        [(_, seg, size)] = j.segments()
        assert size == 64 * 1024 * 1024  # preallocated (sparse in never mode) until sealed


def test_lsn_bounds_are_exact(tmp_path):
    """Kills the mutants of ``minimum <= value < 2**63`` in ``_lsn_arg`` (``<`` -> ``<=``,
    ``2`` -> ``3``, ``63`` -> ``64``) and of ``truncate_before``'s minimum (``1`` -> ``2``):
    LSNs are in [1, 2**63) (they are signed 64-bit on disk), both ends exact."""
    with Journal(tmp_path / "j", first_lsn=2**63 - 1, fsync="never") as j:
        assert j.next_lsn == 2**63 - 1
    with pytest.raises(ValueError, match=r"first_lsn must be in \[1, 2\*\*63\), got 9223372036854775808$"):
        Journal(tmp_path / "k", first_lsn=2**63)
    with Journal(tmp_path / "k", fsync="never") as j:
        j.append(b"x")
        assert j.truncate_before(1) == 1   # the smallest LSN: nothing precedes it
        assert j.truncate_before(2**63 - 1) == 1
        with pytest.raises(ValueError, match=r"^lsn must be in \[1, 2\*\*63\), got 9223372036854775808$"):
            j.truncate_before(2**63)
        with pytest.raises(ValueError, match=r"^lsn must be in \[1, 2\*\*63\), got 0$"):
            j.truncate_before(0)
        with pytest.raises(ValueError, match=r"^from_lsn must be in \[1, 2\*\*63\)"):
            list(j.replay(2**63))


def test_path_must_be_a_non_empty_str(tmp_path):
    """Kills the mutant ``not isinstance(path, str) or not path`` -> ``and``: an empty str and
    a bytes path are both refused, naming the value."""
    with pytest.raises(TypeError, match=r"path must be a non-empty str or PathLike, got ''"):
        Journal("")
    with pytest.raises(TypeError, match=r"path must be a non-empty str or PathLike, got b'"):
        Journal(os.fsencode(str(tmp_path / "b")))
    assert not (tmp_path / "b").exists()
    for bad in ("", os.fsencode(str(tmp_path))):  # a reader checks the same (it makes no store)
        with pytest.raises(TypeError, match=r"path must be a non-empty str or PathLike"):
            Journal(bad, readonly=True)


def test_repr_names_path_mode_and_segment_size(tmp_path):
    """Kills the mutant ``__repr__`` -> ``return None``."""
    with Journal(tmp_path / "j", fsync="always", segment_bytes=8192) as j:
        assert repr(j) == f"Journal({str(tmp_path / 'j')!r}, fsync='always', segment_bytes=8192)"


def test_an_empty_segment_file_is_reported_and_reading_warns_nothing(tmp_path):
    """Kills the mutants in ``_map``: ``return b""`` -> ``return None`` (a zero-length segment
    file cannot be mapped; it is reported as a header too short, not a TypeError) and
    ``buffering=0`` -> ``1`` (line buffering of a binary file: a RuntimeWarning at every read)."""
    recs, seg = small_journal(tmp_path / "j")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert read_all(tmp_path / "j") == list(zip(range(1, 7), recs))
        os.truncate(seg, 0)
        with pytest.raises(CorruptJournalError, match="shorter than its header") as ei:
            read_all(tmp_path / "j")
    assert ei.value.segment == seg and ei.value.lsn == 1


def test_reopening_a_torn_journal_cuts_the_tail_and_writes_the_documented_seal(tmp_path):
    """Kills the mutants ``status == NEXT_END`` -> ``!=`` and ``nxt - 1`` -> ``nxt + 1`` in
    ``_recover_tail``: a writer opening a journal with a torn tail cuts the segment after its
    last whole record and writes a seal there (docs/FORMAT.md: kind 0xFFFF, length 0, LSN =
    the next LSN, durable LSN = the last valid record), so the file ends with that seal."""
    import struct

    recs, seg = small_journal(tmp_path / "j", n=5)
    end = _journal.SEGMENT_HEADER_SIZE + sum(_journal.frame_size(len(r)) for r in recs[:4])
    with open(seg, "r+b") as f:  # record 5 torn: half of it, then stale bytes
        f.seek(end + 20)
        f.write(b"\xa5" * 40)
        f.truncate(end + 60)
    head = open(seg, "rb").read(end)
    with Journal(tmp_path / "j", fsync="group") as j:
        assert j.next_lsn == 5
    data = open(seg, "rb").read()
    assert len(data) == end + _journal.RECORD_HEADER_SIZE and data[:end] == head
    lsn, durable, length, kind = struct.unpack_from("<QQIH", data, end + 8)
    assert (lsn, durable, length, kind) == (5, 4, 0, 0xFFFF)
    assert read_all(tmp_path / "j") == list(zip(range(1, 5), recs[:4]))


def test_append_many_of_state_records_and_one_sync_for_a_mixed_batch(tmp_path):
    """Kills the mutants ``all(type(r) is bytes ...)`` -> ``is not`` (a batch of state records
    only would go to the bytes-only native path) and ``wait=False`` -> ``True`` in
    ``append_many`` (one wait per run of one kind instead of one for the batch): a mixed
    batch in group mode costs one sync."""
    with Journal(tmp_path / "j", fsync="group") as j:
        assert j.append_many([{"a": 1}, {"b": 2}]) == 2
        before = j.syncs
        assert j.append_many([b"c", {"d": 3}, b"e", {"f": 4}, b"g"]) == 7
        assert j.syncs == before + 1 and j.durable_lsn == 7
    assert [r for _, r in read_all(tmp_path / "j")] == [{"a": 1}, {"b": 2}, b"c", {"d": 3}, b"e", {"f": 4}, b"g"]


class _Opaque:
    def __init__(self, v):
        self.v = v


def test_lsn_state_of_a_writer_a_closed_and_a_read_only_journal(tmp_path):
    """Kills the mutants ``sync`` -> ``return None``, ``last + 1`` -> ``last - 1`` / ``last +
    2`` and ``replay(raw=True)`` -> ``raw=False`` in ``next_lsn``, ``else 0`` -> ``else 1`` in
    ``durable_lsn`` and ``syncs``: a read-only journal's next LSN follows its last record (even
    one whose state no longer decodes: it is not decoded), its durable LSN and sync count are 0."""
    from faultkit.recover import register_type, unregister_type

    def refuse(state):
        raise ValueError("this reader cannot rebuild _Opaque")

    register_type(_Opaque, lambda o: o.v, refuse, name="test.journal.Opaque")
    try:
        with Journal(tmp_path / "j", fsync="never") as j:
            j.append_many([b"a", b"b"])
            j.append(_Opaque(3))
            assert j.sync() == 3 == j.durable_lsn
        r = Journal(tmp_path / "j", readonly=True)
        assert (r.next_lsn, r.durable_lsn, r.syncs, r.first_lsn) == (4, 0, 0, 1)
        assert (j.next_lsn, j.durable_lsn, j.syncs) == (4, 0, 0)  # closed: like a reader
        with pytest.raises(CorruptJournalError, match="record 3 does not decode"):
            list(r.replay())
    finally:
        unregister_type(_Opaque)


def test_a_skip_corrupt_warning_points_at_the_callers_line(tmp_path):
    """Kills the mutants ``stacklevel=3`` -> ``4`` in replay's warning (it is attributed to
    the line that iterates the replay, not to a frame above it) and ``segs[idx + 1][0]`` ->
    ``segs[idx + 1][1]`` / ``segs[idx - 1][0]`` after a damaged header (skipping resumes at
    the next segment's first LSN, so the gap is reported once)."""
    with Journal(tmp_path / "j", fsync="never", segment_bytes=4096) as j:
        j.append_many(records(300))
        segs = j.segments()
    with open(segs[1][1], "r+b") as f:
        f.write(b"XXXX")
    r = Journal(tmp_path / "j", readonly=True)
    with pytest.warns(JournalWarning, match="bad magic") as rec:
        got = list(r.replay(skip_corrupt=True))
    assert rec[0].filename == __file__
    assert len(rec) == 1  # skipping resumes where the next segment starts: no second report
    assert [lsn for lsn, _ in got] == list(range(1, segs[1][0])) + list(range(segs[2][0], 301))


@pytest.mark.parametrize("mode", ["group", "never"])
def test_truncation_syncs_the_directory_only_when_it_removed_a_segment_in_a_durable_mode(
        tmp_path, monkeypatch, mode):
    """Kills the mutants ``removed = False`` -> ``True``, ``removed = True`` -> ``False``,
    ``removed and mode != NEVER`` -> ``or`` and ``!=`` -> ``==`` in ``truncate_before``: the
    unlinks are made durable (a directory fsync) in the durable modes, once, and only when a
    segment was removed; never mode leaves it to the OS."""
    synced = []
    real_fsync = os.fsync

    def fsync(fd):
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        return real_fsync(fd)

    with Journal(tmp_path / "j", fsync=mode, segment_bytes=4096) as j:
        j.append_many(records(300))
        segs = j.segments()
        monkeypatch.setattr(os, "fsync", fsync)
        assert j.truncate_before(segs[0][0] + 1) == segs[0][0]  # nothing to remove
        assert synced == []
        assert j.truncate_before(segs[2][0]) == segs[2][0]       # removes two
        assert synced == ([str(tmp_path / "j")] if mode == "group" else [])
        monkeypatch.undo()


def _break_segment_fd(path):
    """Point this process's descriptor of segment ``path`` at /dev/null: later writes vanish
    and fdatasync fails with EINVAL, as it fails with EIO on a failing disk."""
    null = os.open(os.devnull, os.O_RDWR)
    try:
        want = os.path.realpath(path)
        for name in os.listdir("/proc/self/fd"):
            try:
                target = os.readlink(f"/proc/self/fd/{name}")
            except OSError:
                continue
            if target == want:
                os.dup2(null, int(name))
                return
        raise AssertionError(f"no descriptor of {path}")
    finally:
        os.close(null)


def test_async_waiters_partial_wakeup_failed_sync_and_close_in_the_loop(tmp_path):
    """Kills the mutants in ``_LoopWaiters``: ``err and q`` -> ``or`` (a wakeup that finds
    some records not durable yet, e.g. after another caller's sync, would fail them), ``if not
    fut.done()`` -> ``if fut.done()`` in the error path (a failed sync must fail every waiting
    append, and leave a cancelled one alone), and ``if not self.loop.is_closed()`` -> ``if
    ...is_closed()`` in ``detach`` (a journal closed inside a running loop must stop watching
    its descriptor).  ``on_durable`` is called directly where the loop's reader would call it,
    so no flusher sync can race the check."""
    async def partial(j):
        loop = asyncio.get_running_loop()
        fa = j.append_async(b"a")   # schedules the kick; it has not run
        w = j._loops[loop]
        assert j.sync() == 1         # another caller's sync: 1 durable, the eventfd written
        fb = j.append_async(b"b")
        w.on_durable()
        assert fa.result() == 1 and not fb.done()
        assert await fb == 2
        rfd = w.rfd
        j.close()                    # in the loop's thread: detached at once
        assert not loop.remove_reader(rfd)

    j = Journal(tmp_path / "j", fsync="group")
    try:
        asyncio.run(partial(j))
    finally:
        j.close()

    async def failing(j):
        futs = [j.append_async(b"w%d" % i) for i in range(3)]
        futs[1].cancel()             # a caller that gave up: left alone
        _break_segment_fd(j.segments()[-1][1])
        with pytest.raises(OSError) as ei:
            j.sync()
        assert ei.value.errno == errno.EINVAL
        for _ in range(2):           # the loop reads the wakeup the failed sync wrote
            await asyncio.sleep(0)
        assert futs[1].cancelled()
        for lsn, f in ((1, futs[0]), (3, futs[2])):
            assert f.done() and isinstance(f.exception(), OSError)
            assert f.exception().errno == errno.EINVAL
            assert f"journal sync failed, record {lsn} is not acknowledged" in str(f.exception())
        with pytest.raises(OSError):
            j.append(b"later")

    j = Journal(tmp_path / "k", fsync="group")
    try:
        asyncio.run(failing(j))
    finally:
        try:
            j.close()
        except OSError:
            pass


def test_opening_past_a_damaged_last_segment_names_the_skipped_records_at_the_callers_line(tmp_path):
    """Kills the mutants of ``records {nxt}..{reader.resume_lsn - 1}`` (``- 1`` -> ``+ 1`` /
    ``- 2``) in the warning of a writer opening past a damaged last segment, and checks that
    both of ``_recover_tail``'s warnings point at the line that opened the journal (they were
    attributed to ``Journal.__init__``; found by the ``stacklevel`` mutants)."""
    recs, seg = small_journal(tmp_path / "j", n=6)
    with open(seg, "r+b") as f:  # record 1's payload: records 2..6 were written after it was durable
        f.seek(_journal.SEGMENT_HEADER_SIZE + 40)
        b = f.read(1)
        f.seek(-1, 1)
        f.write(bytes([b[0] ^ 1]))
    with pytest.warns(JournalWarning, match=r"record 1 is damaged .*; records 1\.\.6 of this segment are "
                                            r"skipped$") as rec:
        j = Journal(tmp_path / "j", skip_corrupt=True, segment_bytes=4096)
    j.close()
    assert rec[0].filename == __file__
    with open(j.segments()[-1][1], "r+b") as f:  # the segment that reopening started
        f.write(b"XXXX")
    with pytest.warns(JournalWarning, match="renamed to") as rec:
        j = Journal(tmp_path / "j", skip_corrupt=True, segment_bytes=4096)
    j.close()
    assert rec[0].filename == __file__


def test_a_missing_segment_names_the_missing_records_exactly(tmp_path):
    """Kills the mutants of ``{max(first, expected) - 1}`` (``- 1`` -> ``+ 1`` / ``- 2``) in
    replay's message for segments that do not connect."""
    with Journal(tmp_path / "j", fsync="never", segment_bytes=4096) as j:
        j.append_many(records(300))
        segs = j.segments()
    os.unlink(segs[1][1])
    with pytest.raises(CorruptJournalError, match=rf"records {segs[1][0]}\.\.{segs[2][0] - 1} are missing$"):
        read_all(tmp_path / "j")


def test_a_new_journal_id_may_use_all_64_bits(tmp_path, monkeypatch):
    """Kills the mutants ``secrets.randbits(64)`` -> ``randbits(65)`` and ``randbits(64) or 1``
    -> ``and 1`` (a new journal, and a journal whose only segment was set aside as damaged,
    draw a new id): the id is the u64 drawn, and the largest one works."""
    import secrets

    monkeypatch.setattr(secrets, "randbits", lambda k: (1 << k) - 1)
    with Journal(tmp_path / "j", fsync="never") as j:
        j.append(b"a")
    seg = j.segments()[0][1]
    with open(seg, "r+b") as f:
        f.write(b"XXXX")
    with pytest.warns(JournalWarning, match="renamed to"):
        with Journal(tmp_path / "j", fsync="never", skip_corrupt=True) as j:
            assert j.append(b"b") == 1
    assert read_all(tmp_path / "j") == [(1, b"b")]
    with open(seg, "rb") as f:  # the new segment's header carries the id drawn (docs/FORMAT.md: offset 16)
        assert int.from_bytes(f.read(24)[16:], "little") == (1 << 64) - 1


def test_a_truncation_during_replay_is_reported_as_truncation(tmp_path):
    """Kills the mutants ``idx == start`` -> ``!=`` and ``from_lsn >= first`` -> ``>`` in
    replay: the segments are listed when ``replay`` is called, so a truncation before the
    iteration reaches the first segment is reported as ``ValueError`` (records truncated),
    including a replay from exactly that segment's first LSN (the default)."""
    with Journal(tmp_path / "j", fsync="never", segment_bytes=4096) as j:
        j.append_many(records(300))
        segs = j.segments()
        it = j.replay()                   # from segs[0][0], exactly the first segment's first LSN
        j.truncate_before(segs[1][0])
        with pytest.raises(ValueError, match=rf"^records before LSN {segs[0][0]} were truncated during replay$"):
            list(it)
        it = j.replay(segs[1][0] + 3)     # inside a segment
        j.truncate_before(segs[2][0])
        with pytest.raises(ValueError, match=rf"^records before LSN {segs[1][0] + 3} were truncated during"):
            list(it)


def test_a_waiter_of_an_event_loop_that_closed_is_failed_when_the_journal_notices(tmp_path):
    """Kills the mutants ``if not fut.done()`` -> ``if fut.done()`` in ``detach`` and
    ``detach(False)`` -> ``detach(True)`` in ``_attach``: an ``append_async`` whose loop
    stopped and closed before its sync was even requested is failed, naming the loop (not the
    journal) as the cause, when another loop attaches; its record is made durable all the same."""
    j = Journal(tmp_path / "j", fsync="group")
    try:
        loop = asyncio.new_event_loop()
        box = {}

        def orphan():
            box["fut"] = j.append_async(b"orphan")  # its kick is scheduled for the next iteration
            loop.stop()                            # which never comes

        loop.call_soon(orphan)
        loop.run_forever()
        loop.close()
        fut = box["fut"]
        assert not fut.done() and j.durable_lsn == 0

        async def later():
            return await j.append_async(b"later")

        assert asyncio.run(later()) == 2
        assert j.durable_lsn == 2
        with pytest.raises(ValueError, match=r"^its event loop closed while record 1 waited to be durable$"):
            fut.result()
    finally:
        j.close()
    assert [r for _, r in read_all(tmp_path / "j")] == [b"orphan", b"later"]


def test_recover_with_skips_damage_in_a_read_only_journal_when_told_to(tmp_path):
    """``recover_with(skip_corrupt=True)`` on a read-only journal with a damaged durable record
    after the checkpoint warns and skips to the next segment, as documented; it raised,
    because the read-only journal's ``next_lsn`` (checked first) replayed without skipping
    (found by the mutant ``skip_corrupt=False`` -> ``True``, which no test could tell apart).
    Without ``skip_corrupt`` the damage is raised, and ``next_lsn`` is after the last valid
    record whatever the damage before it."""
    with Journal(tmp_path / "wal", fsync="never", segment_bytes=4096) as j:
        ck = fk.Checkpointer(tmp_path / "ck")
        ck.save({"n": 0}, lsn=j.append(b"r0"))
        ck.close()
        j.append_many([b"r%d" % i for i in range(1, 400)])
        segs = j.segments()
    assert len(segs) >= 3
    with open(segs[1][1], "r+b") as f:  # the second record of the second segment
        f.seek(_journal.SEGMENT_HEADER_SIZE + 40)
        b = f.read(1)
        f.seek(-1, 1)
        f.write(bytes([b[0] ^ 1]))
    r = Journal(tmp_path / "wal", readonly=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert r.next_lsn == 401
    ck = fk.Checkpointer(tmp_path / "ck")
    with pytest.raises(CorruptJournalError, match=f"record {segs[1][0] + 1} is damaged"):
        ck.recover_with(r)
    with pytest.warns(JournalWarning, match=f"record {segs[1][0] + 1} is damaged") as rec:
        state, recs = ck.recover_with(r, skip_corrupt=True)
    assert len(rec) == 1 and state == {"n": 0}
    assert [lsn for lsn, _ in recs] == list(range(2, segs[1][0] + 1)) + list(range(segs[2][0], 401))
