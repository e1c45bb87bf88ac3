"""Checkpointer: save/recover/list/load, retention, locking, mmap, incremental, async, stores."""
import concurrent.futures
import os
import threading
import warnings

import numpy as np
import pytest

import faultkit as fk
from faultkit.recover import LocalStore, Store
from recover_util import exact_equal


def state_of(n, size=10_000):
    return {"n": n, "arr": np.full(size, n, dtype="<f8"), "users": [{"id": i, "name": f"u{i}"} for i in range(n % 5)]}


def test_recover_on_an_empty_store_raises_no_checkpoint(tmp_path):
    ck = fk.Checkpointer(tmp_path / "ck")
    with pytest.raises(fk.NoCheckpointError):
        ck.recover()
    assert ck.list() == [] and ck.latest() is None
    with pytest.raises(fk.NoCheckpointError):
        ck.load(1)


def test_save_recover_list_load(tmp_path):
    with fk.Checkpointer(tmp_path, retain=3) as ck:
        infos = [ck.save(state_of(n), meta={"step": n}) for n in range(5)]
        assert [i.id for i in infos] == [1, 2, 3, 4, 5]
        assert all(i.size == os.path.getsize(tmp_path / f"ckpt-{i.id:012d}.fkc") for i in infos[2:])
        exact_equal(state_of(4), ck.recover())
        listed = ck.list()
        assert [i.id for i in listed] == [3, 4, 5]  # retention
        assert [i.meta for i in listed] == [{"step": 2}, {"step": 3}, {"step": 4}]
        assert listed[-1].checksum == infos[-1].checksum and listed[-1].time == infos[-1].time
        assert ck.latest() == listed[-1]
        exact_equal(state_of(2), ck.load(3))
        with pytest.raises(fk.NoCheckpointError):
            ck.load(1)
    # a new Checkpointer on the same directory continues the ids
    with fk.Checkpointer(tmp_path) as ck2:
        assert ck2.save(state_of(9)).id == 6


def test_arguments_are_validated(tmp_path):
    with pytest.raises(ValueError, match="retain must be >= 1, got 0"):
        fk.Checkpointer(tmp_path, retain=0)
    with pytest.raises(TypeError, match=r"path must be a directory path or a Store, got int"):
        fk.Checkpointer(42)
    with pytest.raises(ValueError, match="chunk_size"):
        fk.Checkpointer(tmp_path, chunk_size=1000)
    with pytest.raises(TypeError, match=r"id must be an int, got '1'"):
        fk.Checkpointer(tmp_path).load("1")


def test_lock_prevents_a_second_writer(tmp_path):
    a = fk.Checkpointer(tmp_path)
    b = fk.Checkpointer(tmp_path)
    a.save([1])
    with pytest.raises(fk.CheckpointLockedError, match=f"pid {os.getpid()}"):
        b.save([2])
    assert b.recover() == [1]  # readers need no lock
    a.close()
    b.save([3])
    assert a.recover() == [3]
    b.close()


def test_mmap_recover_is_zero_copy_and_read_only(tmp_path):
    with fk.Checkpointer(tmp_path) as ck:
        ck.save({"a": np.arange(1 << 16, dtype="<i8"), "b": np.ones((3, 4), dtype=">f4")})
        out = ck.recover(mmap=True)
    assert not out["a"].flags.writeable and not out["a"].flags.owndata
    import mmap
    base = out["a"]
    while isinstance(base, np.ndarray):
        base = base.base
    base = base.obj if isinstance(base, memoryview) else base
    assert isinstance(base, mmap.mmap)  # the file's map, no copy
    assert np.array_equal(out["a"], np.arange(1 << 16)) and out["b"].dtype.str == ">f4"


def test_incremental_writes_only_changed_chunks(tmp_path):
    chunk = 1 << 16
    with fk.Checkpointer(tmp_path, retain=2, full_every=4, chunk_size=chunk) as ck:
        a = np.zeros(64 * chunk // 8)
        blob = bytes(200_000)
        first = ck.save({"a": a, "blob": blob}, incremental=True)
        assert not first.incremental and first.written == a.nbytes + len(blob)
        for step in range(1, 6):
            a[step * 1000] = step  # one chunk changes
            info = ck.save({"a": a, "blob": blob}, incremental=True)
            exact_equal({"a": a, "blob": blob}, ck.recover())
            exact_equal({"a": a, "blob": blob}, ck.recover(mmap=True))
            if step % 4 == 0:
                assert not info.incremental and info.written == a.nbytes + len(blob)
            else:
                assert info.incremental and info.written == chunk
        # retention kept the bases the kept checkpoints reference
        ids = [i.id for i in ck.list()]
        for cid in ids:
            exact_equal(ck.load(cid)["a"].shape, a.shape)


def test_incremental_with_a_corrupt_base_falls_back(tmp_path):
    chunk = 1 << 16
    with fk.Checkpointer(tmp_path, retain=5, chunk_size=chunk) as ck:
        a = np.zeros(8 * chunk // 8)
        ck.save({"a": a.copy()})  # 1: full, the base
        a[0] = 1
        ck.save({"a": a.copy()}, incremental=True)  # 2: references 1
        old = state_of(7)
    # corrupt a chunk of checkpoint 1 that checkpoint 2 references
    p = tmp_path / "ckpt-000000000001.fkc"
    data = bytearray(p.read_bytes())
    data[len(data) // 2] ^= 0xFF
    p.write_bytes(bytes(data))
    with pytest.warns(fk.CheckpointWarning) as rec:
        with pytest.raises(fk.NoCheckpointError, match="2 corrupt skipped"):
            fk.Checkpointer(tmp_path).recover()
    assert "ckpt-000000000002.fkc" in str(rec[0].message) and "checkpoint 1" in str(rec[0].message)
    with pytest.raises(fk.CorruptCheckpointError):
        fk.Checkpointer(tmp_path).load(2)
    del old


def test_save_async_snapshots_and_completes_in_order(tmp_path):
    with fk.Checkpointer(tmp_path, retain=10) as ck:
        a = np.arange(100_000, dtype=np.int64)
        futs = []
        for n in range(4):
            a[:] = n
            futs.append(ck.save_async({"n": n, "a": a, "ba": bytearray([n]) * 100_000}))
        a[:] = -1  # after the snapshots: must not leak into any checkpoint
        infos = [f.result() for f in futs]
        assert [i.id for i in infos] == [1, 2, 3, 4]
        for n, i in enumerate(infos):
            out = ck.load(i.id)
            assert out["n"] == n and (out["a"] == n).all() and out["ba"] == bytearray([n]) * 100_000


def test_unsupported_state_leaves_nothing_behind(tmp_path):
    with fk.Checkpointer(tmp_path) as ck:
        with pytest.raises(TypeError, match=r"state\['x'\]"):
            ck.save({"x": object()})
        assert [n for n in os.listdir(tmp_path) if n != ".lock"] == []


class MemoryStore(Store):
    """A Store with no files at all: the Checkpointer must work through the interface only."""

    class _Lock(fk.recover.StoreLock):
        def release(self):
            pass

    def __init__(self):
        self.objects = {}

    def put_atomic(self, name, write):
        import io
        f = io.BytesIO()
        write(f)
        self.objects[name] = f.getvalue()
        return len(self.objects[name])

    def get(self, name, *, mmap=False):
        try:
            return self.objects[name]
        except KeyError:
            raise FileNotFoundError(name) from None

    def list(self):
        return list(self.objects)

    def delete(self, name):
        self.objects.pop(name, None)

    def lock(self):
        return self._Lock()


def test_checkpointer_depends_only_on_the_store_interface():
    store = MemoryStore()
    ck = fk.Checkpointer(store, retain=2)
    for n in range(4):
        info = ck.save(state_of(n))
    assert sorted(store.objects) == ["ckpt-000000000003.fkc", "ckpt-000000000004.fkc"]
    exact_equal(state_of(3), ck.recover())
    assert ck.latest().checksum == info.checksum


def test_local_store_put_atomic_leaves_no_temp_on_failure(tmp_path):
    store = LocalStore(tmp_path)

    def boom(f):
        f.write(b"partial")
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        store.put_atomic("x", boom)
    assert os.listdir(tmp_path) == []
    assert store.put_atomic("x", lambda f: f.write(b"abc")) == 3
    assert bytes(store.get("x")) == b"abc" and bytes(store.get("x", mmap=True)) == b"abc"
    with pytest.raises(ValueError, match=r"bad object name '\.\./escape': letters, digits, '\.', '_', '-' only, not starting"):
        store.put_atomic("../escape", lambda f: None)


def test_incremental_chain_continues_after_a_restart_and_bases_are_kept(tmp_path):
    chunk = 1 << 16
    a = np.zeros(16 * chunk // 8)
    with fk.Checkpointer(tmp_path, retain=1, full_every=3, chunk_size=chunk) as ck:
        assert not ck.save({"a": a}).incremental  # 1: full
        a[0] = 1
        assert ck.save({"a": a}, incremental=True).incremental  # 2: refs 1
    names = sorted(os.listdir(tmp_path))
    assert "ckpt-000000000001.fkc" in names  # retain=1, but 2 references it
    with fk.Checkpointer(tmp_path, retain=1, full_every=3, chunk_size=chunk) as ck:
        a[-1] = 2
        info = ck.save({"a": a}, incremental=True)  # 3: the chain resumes from 2
        assert info.incremental and info.written == chunk
        exact_equal({"a": a}, ck.recover())
        a[1] = 3
        info = ck.save({"a": a}, incremental=True)  # 4: full_every=3 reached -> full
        assert not info.incremental
    assert sorted(n for n in os.listdir(tmp_path) if n.endswith(".fkc")) == ["ckpt-000000000004.fkc"]


def test_save_async_validates_meta_in_the_caller(tmp_path):
    with fk.Checkpointer(tmp_path) as ck:
        with pytest.raises(TypeError, match="meta cannot hold numpy arrays"):
            ck.save_async([1], meta={"a": np.zeros(3)})
        assert ck.save_async([1], meta={"k": [1]}).result().meta == {"k": [1]}


def test_readers_recover_while_a_writer_saves_and_prunes(tmp_path):
    import threading

    def mostly_same(n):  # 8 chunks of 64 KiB; one changes per step, so bases are shared
        a = np.zeros(1 << 16)
        a[(n * 9973) % a.size] = n
        return {"n": n, "a": a}

    ck = fk.Checkpointer(tmp_path, retain=1, fsync=False, full_every=3, chunk_size=1 << 16)
    ck.save(mostly_same(0))
    done = threading.Event()

    def writer():
        try:
            for n in range(1, 400):  # incremental chains: bases get pruned too
                ck.save(mostly_same(n), incremental=True)
        finally:
            done.set()

    t = threading.Thread(target=writer)
    t.start()
    reader = fk.Checkpointer(tmp_path)
    seen = []
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a committed checkpoint never looks corrupt
        while not done.is_set():
            out = reader.recover()
            exact_equal(mostly_same(out["n"]), out)
            seen.append(out["n"])
    t.join()
    ck.close()
    assert seen == sorted(seen) and len(seen) > 1 and reader.recover()["n"] == 399


# ---- mutants that survived the suite once (issue #21); each test names the one it kills

def _chain(path, chunk_size=4096):
    """Checkpoint 1 (full) and 2 (incremental, reusing 1's unchanged chunks) in path."""
    arr = np.arange(64 * 1024, dtype="<f8")   # 512 KiB: 128 chunks of 4 KiB
    with fk.Checkpointer(path, chunk_size=chunk_size, track_writes=False) as ck:
        ck.save({"gen": 1, "arr": arr})
        arr[:10] = -1.0
        info = ck.save({"gen": 2, "arr": arr}, incremental=True)
    assert info.incremental
    return arr


def test_an_incremental_checkpoint_refuses_a_base_that_is_not_its_own(tmp_path):
    """Kills: recovery of an incremental checkpoint no longer checking its base's checksum
    (``rl.checksum != rsum`` dropped in ``Checkpointer._load``): a *valid* checkpoint 1
    from elsewhere, put in place of the one checkpoint 2 was built on, must be refused as
    2's base, even with verify=False, whose reads would otherwise mix the two files."""
    arr = _chain(tmp_path / "a")
    with fk.Checkpointer(tmp_path / "b", chunk_size=4096, track_writes=False) as other:
        other.save({"gen": "foreign", "arr": np.zeros(64 * 1024, dtype="<f8")})
    os.replace(tmp_path / "b" / "ckpt-000000000001.fkc", tmp_path / "a" / "ckpt-000000000001.fkc")
    ck = fk.Checkpointer(tmp_path / "a", chunk_size=4096)
    for verify in (True, False):
        with pytest.raises(fk.CorruptCheckpointError, match="base checkpoint ckpt-000000000001.fkc is not the one referenced"):
            ck.load(2, verify=verify)
    with pytest.warns(fk.CheckpointWarning, match="ckpt-000000000002.fkc.*not the one referenced"):
        state = ck.recover()
    assert state["gen"] == "foreign"  # 1 is valid on its own: the fallback, never a mix
    # A writer resuming the chain after a restart does not build on the foreign base either.
    with fk.Checkpointer(tmp_path / "a", chunk_size=4096, track_writes=False) as w:
        assert not w.save({"gen": 3, "arr": arr}, incremental=True).incremental
    exact_equal({"gen": 3, "arr": arr}, fk.Checkpointer(tmp_path / "a").load(3))


def test_max_size_refuses_a_larger_file_and_accepts_one_of_exactly_that_size(tmp_path):
    """Kills: ``max_size`` no longer refused (the size check in ``Checkpointer._load``
    dropped, or moved off by one)."""
    with fk.Checkpointer(tmp_path) as ck:
        size = ck.save(state_of(3)).size
    small = fk.Checkpointer(tmp_path, max_size=size - 1)
    with pytest.raises(fk.CorruptCheckpointError, match=f"^{size} bytes exceeds max_size={size - 1}$"):
        small.load(1)
    with pytest.raises(fk.CorruptCheckpointError, match=f"{size} bytes exceeds max_size"):
        small.load(1, mmap=True)
    with pytest.warns(fk.CheckpointWarning, match=f"ckpt-000000000001.fkc.*{size} bytes exceeds max_size={size - 1}"):
        with pytest.raises(fk.NoCheckpointError, match="1 corrupt skipped"):
            small.recover()
    exact_equal(state_of(3), fk.Checkpointer(tmp_path, max_size=size).load(1))
    with pytest.raises(ValueError, match="max_size must be >= 1, got 0"):
        fk.Checkpointer(tmp_path, max_size=0)


class _PrunedWhileListing(LocalStore):
    """A real directory whose listing is followed, before the reader gets to it, by another
    process's retention deleting checkpoint ``victim`` (done here, on the real file)."""

    victim = "ckpt-000000000001.fkc"

    def list(self):
        names = super().list()
        if self.victim in names and os.path.exists(os.path.join(self.path, self.victim)):
            os.unlink(os.path.join(self.path, self.victim))
        return names


def test_list_and_latest_tolerate_a_checkpoint_pruned_while_they_read(tmp_path):
    """Kills: ``list()`` (and ``latest()``) no longer tolerating a checkpoint pruned between
    the directory listing and the read (``OSError`` dropped from what they skip)."""
    with fk.Checkpointer(tmp_path) as ck:
        for n in (1, 2):
            ck.save(state_of(n))
    store = _PrunedWhileListing(tmp_path)
    assert [i.id for i in fk.Checkpointer(store).list()] == [2]
    _PrunedWhileListing.victim = "ckpt-000000000002.fkc"
    try:
        assert fk.Checkpointer(_PrunedWhileListing(tmp_path)).latest() is None
    finally:
        _PrunedWhileListing.victim = "ckpt-000000000001.fkc"
    assert not [n for n in os.listdir(tmp_path) if n.startswith("ckpt-")]  # both really went


def test_an_incremental_checkpoint_whose_base_is_damaged_or_gone_is_refused(tmp_path):
    arr = _chain(tmp_path)
    base = tmp_path / "ckpt-000000000001.fkc"
    good = base.read_bytes()
    base.write_bytes(good[: len(good) // 2])        # torn
    ck = fk.Checkpointer(tmp_path)
    with pytest.raises(fk.CorruptCheckpointError, match="base checkpoint ckpt-000000000001.fkc is corrupt: "):
        ck.load(2)
    with fk.Checkpointer(tmp_path, chunk_size=4096, track_writes=False) as w:  # resumes no chain on it
        assert not w.save({"gen": 3, "arr": arr}, incremental=True).incremental
    base.unlink()
    with pytest.raises(fk.CorruptCheckpointError, match="base checkpoint ckpt-000000000001.fkc is missing"):
        ck.load(2)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        exact_equal({"gen": 3, "arr": arr}, ck.recover())   # 3 is full: recovery never needs 1


def test_more_bad_arguments_and_a_closed_checkpointer(tmp_path):
    with pytest.raises(TypeError, match="retain must be an int, got '3'"):
        fk.Checkpointer(tmp_path, retain="3")
    with pytest.raises(TypeError, match="max_size must be an int, got 1.5"):
        fk.Checkpointer(tmp_path, max_size=1.5)
    with pytest.raises(TypeError, match="journal must be a faultkit Journal, got object"):
        fk.Checkpointer(tmp_path, journal=object())
    ck = fk.Checkpointer(tmp_path)
    assert repr(ck) == f"Checkpointer({ck.store!r}, retain=3, full_every=8)"
    ck.save([1])
    with pytest.raises(TypeError, match="journal must be a faultkit Journal, got list"):
        ck.recover_with([])
    with fk.Journal(tmp_path / "wal") as j:
        with pytest.raises(TypeError, match="apply must be callable, got 3"):
            ck.recover_with(j, apply=3)
    ck.close()
    with pytest.raises(ValueError, match="Checkpointer is closed"):
        ck.save([2])
    assert fk.Checkpointer(tmp_path).recover() == [1]  # the failed save wrote nothing


def test_checkpoint_info_defaults():
    """Kills: ``CheckpointInfo.incremental`` defaulting to True (``False -> True``) and the
    other defaults of the public record changing."""
    info = fk.CheckpointInfo(3, 1.5, 100, 7)
    assert (info.incremental, info.written, info.meta, info.lsn) == (False, 0, None, None)


def test_journal_lsn_cache_follows_retention(tmp_path):
    """Kills: ``_truncate_journal`` dropping the cached LSNs of the *retained* checkpoints
    and keeping those of pruned ones (``cid not in self._ids()`` -> ``in``): the cache of a
    long-running checkpointer must stay the size of ``retain``, not grow per save."""
    from faultkit.recover import Journal
    j = Journal(tmp_path / "wal", fsync="group", segment_bytes=4096)
    ck = fk.Checkpointer(tmp_path / "ck", retain=2, journal=j)
    for i in range(1, 8):
        lsn = j.append({"i": i})
        ck.save({"i": i}, lsn=lsn)
    assert sorted(ck._lsns) == [c.id for c in ck.list()] == [6, 7]
    assert [ck._lsns[c] for c in (6, 7)] == [6, 7]
    j.close()


def test_save_async_is_full_by_default(tmp_path):
    """Kills: ``save_async``'s ``incremental`` default False -> True."""
    ck = fk.Checkpointer(tmp_path / "ck")
    ck.save({"a": np.arange(10_000)})
    info = ck.save_async({"a": np.arange(10_000)}).result(timeout=60)
    assert info.incremental is False and ck.list()[-1].incremental is False
    ck.close()


def test_restart_with_another_chunk_size_starts_a_full_checkpoint(tmp_path):
    """Kills: ``layout.id != cid or layout.chunk_size != self.chunk_size or ...`` -> ``and``
    in ``_resume_chain``: a chain written with other chunks cannot be continued."""
    state = {"a": np.arange(50_000)}
    ck = fk.Checkpointer(tmp_path / "ck", chunk_size=4096)
    ck.save(state)
    ck.close()
    ck = fk.Checkpointer(tmp_path / "ck", chunk_size=8192)
    info = ck.save(state, incremental=True)
    assert info.incremental is False
    exact_equal(ck.load(info.id), state)
    ck.close()
    ck = fk.Checkpointer(tmp_path / "ck", chunk_size=8192)   # same chunks: the chain goes on
    assert ck.save(state, incremental=True).incremental is True
    ck.close()


def test_lsn_zero_is_read_back(tmp_path):
    """Kills: ``lsn < 0`` -> ``<= 0`` in ``_info``: a checkpoint covering LSN 0 read as corrupt."""
    ck = fk.Checkpointer(tmp_path / "ck")
    ck.save({"n": 1}, lsn=0)
    ck.close()
    ck = fk.Checkpointer(tmp_path / "ck")
    assert [c.lsn for c in ck.list()] == [0]
    ck.close()


def test_journal_truncation_keeps_the_segment_that_starts_right_after_the_checkpoint(tmp_path):
    """Kills the mutant ``truncate_before(min(lsns) + 1)`` -> ``+ 2`` (docs/mutation.md): with
    one record per segment, the segment holding LSN k + 1 starts exactly after a checkpoint
    at k, and dropping it would lose the first record recover_with must replay."""
    j = fk.Journal(tmp_path / "wal", fsync="never", segment_bytes=4096)
    ck = fk.Checkpointer(tmp_path / "ck", retain=1, journal=j)
    try:
        big = b"r" * 5000                   # larger than a segment: one record per segment
        lsns = [j.append(big) for _ in range(6)]
        ck.save({"upto": lsns[2]}, lsn=lsns[2])
        assert j.first_lsn == lsns[3]       # everything the checkpoint covers is gone, nothing more
        state, records = ck.recover_with(j)
        assert state == {"upto": lsns[2]} and [lsn for lsn, _ in records] == lsns[3:]
    finally:
        ck.close()
        j.close()


def test_recover_with_names_the_missing_records_exactly(tmp_path):
    """Kills the mutant ``{first - 1}`` -> ``{first + 1}`` in recover_with's message: the
    range of lost records it names is exact."""
    j = fk.Journal(tmp_path / "wal", fsync="never", segment_bytes=4096)
    ck = fk.Checkpointer(tmp_path / "ck", retain=1)
    try:
        lsns = [j.append(b"r" * 5000) for _ in range(6)]
        ck.save({"x": 1}, lsn=lsns[0])
        j.truncate_before(lsns[3])           # records lsns[1]..lsns[2] are lost
        with pytest.raises(fk.CorruptJournalError,
                           match=rf"records {lsns[1]}\.\.{lsns[2]} are gone"):
            ck.recover_with(j)
    finally:
        ck.close()
        j.close()


def test_a_checkpoint_written_before_chains_resumes_as_a_full_base(tmp_path):
    """Kills the mutant ``m.get("chain", 0)`` -> ``1`` in ``_resume_chain`` (docs/mutation.md):
    checkpoints written before incremental chains resumed after a restart (2c8a950) have no
    ``chain`` in their META; such a checkpoint is full, so the chain restarts from it at
    position 0 and ``full_every=2`` still allows one incremental save on top of it."""
    from faultkit.recover import _codec, codec

    chunk = 1 << 16
    a = np.zeros(4 * chunk // 8)
    t = 1.5e9
    image = _codec.dumps(codec.encode({"a": a}), codec.encode_meta({"time": t, "meta": None}),
                         id=1, chunk_size=chunk)   # the META an older faultkit wrote: no "chain"
    with open(tmp_path / "ckpt-000000000001.fkc", "wb") as f:
        f.write(image)
    with fk.Checkpointer(tmp_path, retain=2, full_every=2, chunk_size=chunk) as ck:
        [old] = ck.list()
        assert old.id == 1 and old.time == t and not old.incremental
        a[0] = 1
        info = ck.save({"a": a}, incremental=True)      # 2: chain position 1, references 1
        assert info.incremental and info.written == chunk
        exact_equal({"a": a}, ck.recover())
        a[1] = 2
        assert not ck.save({"a": a}, incremental=True).incremental  # 3: full_every=2 reached


# ---------------------------------------------------------------- mutants of a full run (docs/mutation.md)

def _write_checkpoint(directory, cid, head, state=None, chunk_size=None):
    """A checkpoint file as a writer with META ``head`` would leave it (older writers, foreign files)."""
    from faultkit.recover import _codec, codec

    image = _codec.dumps(codec.encode({"x": 1} if state is None else state), codec.encode_meta(head),
                         id=cid, chunk_size=chunk_size or fk.recover.checkpointer.DEFAULT_CHUNK_SIZE)
    with open(os.path.join(directory, f"ckpt-{cid:012d}.fkc"), "wb") as f:
        f.write(image)


def test_save_lsn_bounds_are_exact(tmp_path):
    """Kills the mutants of ``0 <= lsn < 2**63`` in ``_lsn_value`` (``<`` -> ``<=``, ``2`` ->
    ``3``, ``63`` -> ``64``): the LSN a checkpoint covers is in [0, 2**63)."""
    with fk.Checkpointer(tmp_path) as ck:
        assert ck.save({"a": 1}, lsn=2**63 - 1).lsn == 2**63 - 1
        assert ck.save({"a": 1}, lsn=0).lsn == 0
        with pytest.raises(ValueError, match=r"^lsn must be in \[0, 2\*\*63\), got 9223372036854775808$"):
            ck.save({"a": 1}, lsn=2**63)
        assert [c.lsn for c in ck.list()] == [2**63 - 1, 0]


def test_checkpoint_info_is_immutable():
    """Kills the mutant ``dataclass(frozen=True)`` -> ``frozen=False``: a CheckpointInfo
    handed out (``list``, ``last_recovered``) cannot be changed by its holder, and hashes."""
    import dataclasses

    info = fk.recover.CheckpointInfo(1, 2.0, 3, 4)
    with pytest.raises(dataclasses.FrozenInstanceError):
        info.id = 5
    assert hash(info) == hash(fk.recover.CheckpointInfo(1, 2.0, 3, 4))


def test_stats_count_saves_failures_bytes_time_recoveries_and_fallbacks(tmp_path):
    """Kills the mutants of the ``stats`` counters (each initial ``0`` -> ``1``, ``+= 1`` ->
    ``+= 2``, ``perf_counter() - t0`` -> ``+ t0``, the fallbacks' ``skipped = 0``), checked
    against what the calls returned."""
    import time

    ck = fk.Checkpointer(tmp_path / "ck", retain=5)
    assert ck.stats == {"saves": 0, "save_failures": 0, "bytes_written": 0, "save_seconds": 0.0,
                        "recoveries": 0, "recover_fallbacks": 0}
    t0 = time.perf_counter()
    infos = [ck.save({"a": np.arange(1000 * i)}) for i in range(1, 4)]
    elapsed = time.perf_counter() - t0
    other = fk.Checkpointer(tmp_path / "ck")  # a second writer: its save fails on the lock
    with pytest.raises(fk.CheckpointLockedError):
        other.save({"a": 0})
    assert other.stats["save_failures"] == 1 and other.stats["saves"] == 0
    st = ck.stats
    assert (st["saves"], st["save_failures"], st["bytes_written"]) == (3, 0, sum(i.size for i in infos))
    assert 0 < st["save_seconds"] <= elapsed
    with open(os.path.join(tmp_path / "ck", f"ckpt-{infos[-1].id:012d}.fkc"), "r+b") as f:
        f.seek(100)
        f.write(b"\xff\xff")   # the newest is corrupt: recovery falls back one
    with pytest.warns(fk.CheckpointWarning):
        exact_equal(ck.recover(), {"a": np.arange(2000)})
    exact_equal(ck.load(infos[0].id), {"a": np.arange(1000)})
    assert (ck.stats["recoveries"], ck.stats["recover_fallbacks"]) == (1, 1)
    ck.close()
    other.close()


def test_constructor_defaults_and_checks(tmp_path):
    """Kills the mutants of ``fsync=True`` -> ``False`` (the default LocalStore syncs), of
    ``store_options is not None and not isinstance(...)`` (drop ``not``: a dict for a local
    path is refused for the right reason) and of the chunk size check (``or`` -> ``and``,
    ``<=`` -> ``<``, ``1 << 12`` / ``1 << 30`` off by one): a power of two in [4096, 2**30]."""
    assert fk.Checkpointer(tmp_path / "a").store.fsync is True
    with pytest.raises(TypeError, match="store_options applies only to an object-store URL path"):
        fk.Checkpointer(tmp_path / "b", store_options={})
    with pytest.raises(TypeError, match="store_options must be a dict or None, got list"):
        fk.Checkpointer(tmp_path / "b", store_options=[])
    for good in (4096, 1 << 20, 1 << 30):
        assert fk.Checkpointer(tmp_path / "c", chunk_size=good).chunk_size == good
    for bad in (2048, 3 * 4096, (1 << 30) + 4096, 1 << 31):
        with pytest.raises(ValueError, match=rf"chunk_size must be a power of two in \[4096, 2\*\*30\], got {bad}$"):
            fk.Checkpointer(tmp_path / "c", chunk_size=bad)


def test_defaults_of_save_recover_load_and_recover_with(tmp_path):
    """Kills the mutants of the keyword defaults: ``save(incremental=False)``,
    ``recover(mmap=False)``, ``load(mmap=False)`` and ``recover_with(mmap=False, verify=True,
    skip_corrupt=False)`` flipped: by default a save is full, states are private copies
    (writeable arrays), a damaged chunk is detected and a damaged journal record raises."""
    a = np.arange(1 << 16, dtype=np.int64)
    with fk.Journal(tmp_path / "wal", fsync="never", segment_bytes=4096) as j:
        with fk.Checkpointer(tmp_path / "ck", retain=3, chunk_size=4096) as ck:
            first = ck.save({"a": a})
            assert not ck.save({"a": a}).incremental      # a second save is full unless asked
            assert ck.recover()["a"].flags.writeable
            assert ck.load(first.id)["a"].flags.writeable
            ck.save({"a": a}, lsn=j.append(b"r0"))
            j.append_many([b"r%d" % i for i in range(1, 200)])
            state, recs = ck.recover_with(j)
            assert state["a"].flags.writeable and [lsn for lsn, _ in recs] == list(range(2, 201))
        segs = j.segments()
    with open(segs[1][1], "r+b") as f:  # a durable record of the second segment damaged
        f.seek(fk.recover._journal.SEGMENT_HEADER_SIZE + 40)
        b = f.read(1)
        f.seek(-1, 1)
        f.write(bytes([b[0] ^ 1]))
    r = fk.Journal(tmp_path / "wal", readonly=True)
    ck = fk.Checkpointer(tmp_path / "ck")
    with pytest.raises(fk.CorruptJournalError, match="is damaged"):
        ck.recover_with(r)
    newest = sorted(n for n in os.listdir(tmp_path / "ck") if n.endswith(".fkc"))[-1]
    with open(tmp_path / "ck" / newest, "r+b") as f:  # a chunk of the array: found by verification
        f.seek(-4000, 2)
        b = f.read(1)
        f.seek(-1, 1)
        f.write(bytes([b[0] ^ 1]))
    with pytest.warns(fk.CheckpointWarning, match="skipping checkpoint"):
        with pytest.warns(fk.JournalWarning, match="is damaged"):
            ck.recover_with(r, skip_corrupt=True)
    assert ck.last_recovered.lsn is None  # fell back past the damaged one


def test_old_and_foreign_meta_sections(tmp_path):
    """Kills the mutants in ``_info_of`` and ``_resume_chain`` about META contents:
    ``not isinstance(m, dict) or ...`` -> ``and`` (a META that is not a dict, or whose time is
    not a float, is malformed: left out of ``list``), the lsn check's ``or`` -> ``and`` (a
    negative LSN is malformed), ``m.get("time", 0.0)`` -> ``1.0`` and ``written`` ``0`` ->
    ``1`` (a META without time lists with time 0.0, nothing written), and ``isinstance(chain,
    int) and 0 <= chain`` -> ``or`` (a foreign ``chain`` does not resume a chain, nor break
    the save)."""
    d = tmp_path / "ck"
    d.mkdir()
    _write_checkpoint(d, 1, {"meta": "no time"})                 # listed, time 0.0
    _write_checkpoint(d, 2, ["not", "a", "dict"])                # malformed
    _write_checkpoint(d, 3, {"time": "noon", "meta": None})      # malformed
    _write_checkpoint(d, 4, {"time": 1.0, "meta": None, "lsn": -1})  # malformed
    _write_checkpoint(d, 5, {"time": 2.0, "meta": None, "chain": "x"})
    ck = fk.Checkpointer(d, retain=10, full_every=2)
    infos = ck.list()
    assert [c.id for c in infos] == [1, 5]
    assert (infos[0].time, infos[0].written, infos[0].meta) == (0.0, 0, "no time")
    info = ck.save({"x": 2}, incremental=True)   # chain "x": not resumed, a full save
    assert not info.incremental and info.id == 6
    ck.close()


def test_recover_with_a_checkpoint_covering_the_last_record(tmp_path):
    """Kills the mutant ``journal.next_lsn < start`` -> ``<=`` in ``recover_with``: a
    checkpoint taken after the last record leaves nothing to replay, which is not an error."""
    with fk.Journal(tmp_path / "wal", fsync="never") as j:
        lsn = j.append_many([b"a", b"b"])
        with fk.Checkpointer(tmp_path / "ck") as ck:
            ck.save({"n": 2}, lsn=lsn)
            assert ck.recover_with(j) == ({"n": 2}, [])


def test_a_corrupt_only_checkpoint_warns_once_at_the_callers_line(tmp_path):
    """Kills the mutants ``vanished = False`` -> ``True`` (every pass would rescan and warn
    again, up to 100 times) and ``stacklevel=3`` -> ``4`` (the warning names the caller's line)."""
    with fk.Checkpointer(tmp_path) as ck:
        info = ck.save({"a": 1})
    with open(os.path.join(tmp_path, f"ckpt-{info.id:012d}.fkc"), "r+b") as f:
        f.seek(100)
        f.write(b"\xff\xff")
    ck = fk.Checkpointer(tmp_path)
    with pytest.warns(fk.CheckpointWarning, match="skipping checkpoint") as rec:
        with pytest.raises(fk.NoCheckpointError, match=r"\(1 corrupt skipped\)"):
            ck.recover()
    assert len(rec) == 1 and rec[0].filename == __file__


def test_close_waits_for_pending_async_saves_and_they_commit_in_order(tmp_path):
    """Kills the mutants ``executor.shutdown(wait=True)`` -> ``False`` in ``close`` (pending
    ``save_async`` writes complete before close returns) and ``ThreadPoolExecutor(1)`` -> ``2``
    (one worker: saves commit in the order they were made, so the newest id holds the newest
    state)."""
    ck = fk.Checkpointer(tmp_path, retain=100)
    futs = [ck.save_async({"i": i, "a": np.full(50_000, i)}) for i in range(30)]
    ck.close()
    assert all(f.done() for f in futs)
    assert [f.result().id for f in futs] == list(range(1, 31))
    assert fk.Checkpointer(tmp_path).recover()["i"] == 29


def test_async_saves_run_one_at_a_time_in_call_order(tmp_path):
    """Kills ``ThreadPoolExecutor(1)`` -> ``2`` in ``save_async`` deterministically: while the
    first save is held inside its commit, the second has not started (with two workers it
    would, and then race the third for the lock: out of order)."""
    ck = fk.Checkpointer(tmp_path, retain=10)
    commit, entered, held, release = ck._commit, [], threading.Event(), threading.Event()

    def holding_commit(enc, *args):
        entered.append(len(entered))
        if len(entered) == 1:
            held.set()
            assert release.wait(30)
        return commit(enc, *args)

    ck._commit = holding_commit
    try:
        futs = [ck.save_async({"i": i}) for i in range(3)]
        assert held.wait(30)
        done, _ = concurrent.futures.wait(futs[1:], timeout=0.3)  # bounded: nothing may finish
        assert entered == [0] and not done
        release.set()
        assert [f.result(30).id for f in futs] == [1, 2, 3] and entered == [0, 1, 2]
    finally:
        release.set()
        ck.close()
    assert fk.Checkpointer(tmp_path).recover() == {"i": 2}


def test_the_largest_checkpoint_id_is_listed(tmp_path):
    """Kills the mutant ``_MAX_ID = 2**63 - 1`` -> ``- 2``: ids are in [1, 2**63 - 1), so
    2**63 - 2 is the largest canonical one (its successor still fits the format)."""
    _write_checkpoint(tmp_path, 2**63 - 2, {"time": 1.0, "meta": None}, state={"big": True})
    ck = fk.Checkpointer(tmp_path)
    assert [c.id for c in ck.list()] == [2**63 - 2]
    assert ck.recover() == {"big": True}


def test_a_foreign_directory_is_skipped_with_its_reason(tmp_path):
    """Kills the mutant ``e.strerror or e`` -> ``and`` in ``_reason``: the warning gives the
    error's name, code and the system's message, then the path."""
    with fk.Checkpointer(tmp_path) as ck:
        ck.save({"a": 1})
    os.mkdir(tmp_path / "ckpt-000000000002.fkc")
    with pytest.warns(fk.CheckpointWarning,
                      match=r"a directory, not a checkpoint file \(IsADirectoryError EISDIR: Is a directory\) \["):
        assert fk.Checkpointer(tmp_path).recover() == {"a": 1}


def test_verify_none_is_the_old_spelling_of_true(tmp_path):
    """Kills the mutant ``verify = True`` -> ``False`` for ``verify=None``: it still hashes
    every chunk, so a damaged array chunk makes recovery fall back."""
    a = np.arange(1 << 16, dtype=np.int64)
    with fk.Checkpointer(tmp_path, chunk_size=4096) as ck:
        ck.save({"a": a})
        ck.save({"a": a + 1})
    with open(tmp_path / "ckpt-000000000002.fkc", "r+b") as f:
        f.seek(-4000, 2)   # inside the array's data, not the framing
        b = f.read(1)
        f.seek(-1, 1)
        f.write(bytes([b[0] ^ 1]))
    ck = fk.Checkpointer(tmp_path)
    with pytest.warns(fk.CheckpointWarning, match="skipping checkpoint"):
        exact_equal(ck.recover(verify=None), {"a": a})
    with pytest.raises(fk.CorruptCheckpointError):
        ck.load(2, verify=None)


def test_a_store_without_path_or_url_names_checkpoints_by_name():
    """Kills the mutant ``isinstance(url, str) and not path`` -> ``or`` in ``_where_name``: a
    store that is neither a directory nor an object-store URL names entries by their name."""
    ck = fk.Checkpointer(MemoryStore())
    ck.save({"a": 1})
    with pytest.raises(fk.NoCheckpointError, match=r"^no checkpoint 9 \(ckpt-000000000009\.fkc\)$"):
        ck.load(9)
    ck.store.objects["ckpt-000000000002.fkc"] = b"not a checkpoint"
    with pytest.warns(fk.CheckpointWarning, match=r"^skipping checkpoint ckpt-000000000002\.fkc: "):
        assert ck.recover() == {"a": 1}


def test_incremental_saves_to_a_store_without_file_descriptors_are_full():
    """Kills the mutant ``self._base_checked = True`` -> ``False`` in ``_resume_chain``: the
    chain is looked for once; a store whose files have no descriptor gets whole images, so
    later incremental saves of the same Checkpointer stay full (and say so)."""
    ck = fk.Checkpointer(MemoryStore(), retain=5)
    infos = [ck.save({"a": np.arange(10_000) + i}, incremental=True) for i in range(3)]
    assert [i.incremental for i in infos] == [False, False, False]
    exact_equal(ck.recover(), {"a": np.arange(10_000) + 2})


class _PrunedAtEveryListing(LocalStore):
    """A real directory where another process commits checkpoint 2 before each listing and its
    retention deletes it right after (done here, on the real file): every pass of a recovery
    lists it and then finds it gone."""

    def __init__(self, path, image):
        super().__init__(path)
        self.image = image
        self.listings = 0

    def list(self):
        self.listings += 1
        where = os.path.join(self.path, "ckpt-000000000002.fkc")
        if self.listings % 2:            # the pass's listing: committed ...
            with open(where, "wb") as f:
                f.write(self.image)
            names = super().list()
            os.unlink(where)             # ... and pruned before the reader gets to it
            return names
        return super().list()            # the check "is it still listed?": no


def test_recovery_gives_up_after_100_passes_against_a_writer_pruning_at_every_listing(tmp_path):
    """Kills the mutant ``_RESCANS = 100`` -> ``101``: recovery lists again when what it chose
    vanished, at most 100 times (two listings each), then reports no checkpoint instead of
    looping for as long as the writer keeps pruning."""
    with fk.Checkpointer(tmp_path, retain=2) as ck:
        ck.save({"n": 1})
        ck.save({"n": 2})
    image = (tmp_path / "ckpt-000000000002.fkc").read_bytes()
    store = _PrunedAtEveryListing(tmp_path, image)
    with pytest.raises(fk.NoCheckpointError):
        fk.Checkpointer(store).recover()
    assert store.listings == 2 * 100
