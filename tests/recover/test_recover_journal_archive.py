"""Journal segments archived to a real S3 server (moto, a subprocess), and restored on a
replacement node: nothing acknowledged up to the last archived segment is lost."""
import os
import stat

import pytest

import faultkit as fk
from faultkit.errors import CorruptJournalError

pytest.importorskip("obstore")
from faultkit.recover.objstore import ObjectStore
from s3_server import MotoServer

SEG = 4096  # the smallest segment: rotations every few dozen records


@pytest.fixture(scope="module")
def s3():
    server = MotoServer()
    yield server
    server.stop()


@pytest.fixture
def store(s3):
    return ObjectStore(f"s3://{s3.bucket()}/node-a", **s3.options(renew=False, backoff=0.01, max_backoff=0.05))


def fill(j, n, start=0):
    return [j.append(f"record {i:05d} ".encode() * 4) for i in range(start, start + n)]


def test_closed_segments_are_archived_once_and_restored_on_an_empty_disk(store, tmp_path):
    """Also kills the mutant ``0o644`` -> ``0o645`` in restore: restored segments get the
    permissions of any file the process creates (rw-r--r-- under its umask, never executable)."""
    j = fk.Journal(tmp_path / "a", fsync="always", segment_bytes=SEG, archive=store)
    lsns = fill(j, 200)
    segs = j.segments()
    assert len(segs) >= 3
    sent = j.archive_closed()
    assert sent == [os.path.basename(p) for _, p, _ in segs[:-1]]  # every closed one, not the active one
    assert j.archive_closed() == []                                   # idempotent
    last_archived = segs[-1][0] - 1
    j.close()

    replacement = fk.Journal.restore(store, tmp_path / "b", fsync="always", segment_bytes=SEG)
    try:
        umask = os.umask(0)
        os.umask(umask)
        for _, path, _ in replacement.segments()[:-1]:
            assert stat.S_IMODE(os.stat(path).st_mode) == 0o644 & ~umask, path
        got = list(replacement.replay())
        assert [lsn for lsn, _ in got] == list(range(1, last_archived + 1))
        assert got[-1][1] == f"record {last_archived - 1:05d} ".encode() * 4
        assert replacement.append(b"next") == last_archived + 1   # the replacement writes on
    finally:
        replacement.close()
    assert lsns[-1] > last_archived  # the active segment's records were on the lost disk only


def test_a_surviving_disk_keeps_its_tail_and_fetches_only_what_it_lacks(store, tmp_path):
    j = fk.Journal(tmp_path / "a", fsync="always", segment_bytes=SEG, archive=store)
    lsns = fill(j, 150)
    j.archive_closed()
    oldest = j.segments()[0][1]
    j.close()
    os.unlink(oldest)  # lost locally, still archived
    again = fk.Journal.restore(store, tmp_path / "a", fsync="always", segment_bytes=SEG)
    try:
        assert [lsn for lsn, _ in again.replay()] == lsns   # the archived head and the local tail
    finally:
        again.close()


def test_truncate_uploads_before_deleting_and_prunes_the_archive_to_the_same_lsn(store, tmp_path):
    j = fk.Journal(tmp_path / "a", fsync="group", segment_bytes=SEG, archive=store)
    try:
        fill(j, 300)
        segs = j.segments()
        cut = segs[2][0] + 1              # all of segments 0 and 1 precede it
        assert j.truncate_before(cut) == segs[2][0]
        archived = sorted(n for n in store.list() if n.startswith("wal-"))
        # uploaded before the local delete; the archive pruned to the same point
        assert archived[0] == os.path.basename(segs[2][1])
        assert archived == [os.path.basename(p) for _, p, _ in segs[2:-1]]
    finally:
        j.close()


class ListCounter:
    """The real store, its ``list`` calls counted (each one is a LIST request to the server)."""

    def __init__(self, store):
        self._store = store
        self.lists = 0

    def list(self):
        self.lists += 1
        return self._store.list()

    def __getattr__(self, name):
        return getattr(self._store, name)


def test_truncate_before_lists_the_archive_once(store, tmp_path):
    """One listing serves both the upload of the closed segments and the pruning: what the
    archive held before plus what was just uploaded (segments archived by an earlier call and
    segments sent now are pruned alike)."""
    counted = ListCounter(store)
    j = fk.Journal(tmp_path / "a", fsync="never", segment_bytes=SEG, archive=counted)
    try:
        fill(j, 300)
        segs = j.segments()
        assert j.truncate_before(segs[2][0] + 1) == segs[2][0]
        assert counted.lists == 1
        assert sorted(n for n in store.list() if n.startswith("wal-")) == [
            os.path.basename(p) for _, p, _ in segs[2:-1]]
        fill(j, 300, start=300)
        segs = j.segments()
        assert j.truncate_before(segs[-2][0]) == segs[-2][0]  # every closed one but the last goes
        assert counted.lists == 2
        assert sorted(n for n in store.list() if n.startswith("wal-")) == [os.path.basename(segs[-2][1])]
    finally:
        j.close()


def test_with_a_checkpointer_a_replacement_node_recovers_state_and_journal(s3, store, tmp_path):
    ck_url = store.url.replace("node-a", "ckpt")
    opts = s3.options(renew=False, backoff=0.01, max_backoff=0.05)
    j = fk.Journal(tmp_path / "a", fsync="always", segment_bytes=SEG, archive=store)
    ck = fk.Checkpointer(ck_url, store_options=opts)
    state = {}
    for i in range(60):
        lsn = j.append({"k": i % 7, "v": i})
        state[i % 7] = i
        if i == 20:
            ck.save(dict(state), lsn=lsn)
    fill(j, 150, start=1000)  # push the dict records into closed segments
    j.archive_closed()
    j.close()
    ck.close()

    j2 = fk.Journal.restore(store, tmp_path / "b", fsync="always", segment_bytes=SEG)
    ck2 = fk.Checkpointer(ck_url, store_options=opts)
    try:
        def apply(st, lsn, rec):
            if isinstance(rec, dict):
                st[rec["k"]] = rec["v"]
            return st
        assert ck2.recover_with(j2, apply=apply) == state
    finally:
        j2.close()
        ck2.close()


def test_a_damaged_archived_segment_is_named_at_replay(store, tmp_path):
    j = fk.Journal(tmp_path / "a", fsync="always", segment_bytes=SEG, archive=store)
    fill(j, 120)
    j.archive_closed()
    j.close()
    name = sorted(n for n in store.list() if n.startswith("wal-"))[0]
    data = bytearray(store.get(name))
    data[200] ^= 0x40
    store.delete(name)
    store.put_atomic(name, lambda f: f.write(bytes(data)))
    j2 = fk.Journal.restore(store, tmp_path / "b", fsync="always", segment_bytes=SEG)
    try:
        with pytest.raises(CorruptJournalError, match=name):
            list(j2.replay())
    finally:
        j2.close()


def test_archive_arguments_are_checked(tmp_path):
    with pytest.raises(TypeError, match="archive must be a checkpoint store .* got dict"):
        fk.Journal(tmp_path / "x", archive={})
    j = fk.Journal(tmp_path / "y")
    try:
        with pytest.raises(ValueError, match="has no archive"):
            j.archive_closed()
    finally:
        j.close()
    with pytest.raises(ValueError, match="restore needs an archive"):
        fk.Journal.restore(None, tmp_path / "z")
