"""LocalStore recycling: the file retention deletes becomes the next write's temporary file.

A recycled write must produce the same bytes as a fresh one, must never
overwrite a file a reader still has open or mapped (or another link of it),
and must keep the commit protocol: on failure no temporary file is left and
the previous checkpoint stays intact.
"""
import errno
import os

import numpy as np
import pytest

import faultkit as fk
from faultkit.recover import LocalStore, store as store_mod
from faultkit.recover import checkpointer as ck_mod
from recover_util import exact_equal

CHUNK = 1 << 16
# Array sizes (bytes) around the chunk and 64-byte alignment boundaries, so
# that recycled spares are sometimes larger, smaller and equal in size to
# the file written over them.
SIZES = [0, 8, 64 * 8, CHUNK - 8, CHUNK, CHUNK + 8, 3 * CHUNK + 4104, 5 * CHUNK, 8, 2 * CHUNK - 8]


def states():
    rng = np.random.default_rng(7)
    for i, n in enumerate(SIZES):
        yield {"i": i, "a": rng.integers(0, 255, n, dtype=np.uint8), "s": "x" * (i * 37)}


@pytest.fixture
def fixed_time(monkeypatch):
    """Checkpoint files embed time.time(); pin it so two runs write the same bytes."""
    monkeypatch.setattr(ck_mod.time, "time", lambda: 1234.5)


def names(path):
    return sorted(os.listdir(path))


def test_recycled_files_are_bit_exact_with_fresh_ones(tmp_path, fixed_time):
    fresh = fk.Checkpointer(tmp_path / "fresh", retain=1, fsync=False, chunk_size=CHUNK, recycle=False)
    recyc = fk.Checkpointer(tmp_path / "recyc", retain=1, fsync=False, chunk_size=CHUNK)
    reused = 0
    for state in states():
        spare = tmp_path / "recyc" / ".spare"
        spare_ino = os.stat(spare).st_ino if spare.exists() else None
        a, b = fresh.save(state), recyc.save(state)
        name = f"ckpt-{b.id:012d}.fkc"
        if spare_ino is not None:
            reused += os.stat(tmp_path / "recyc" / name).st_ino == spare_ino
        assert (tmp_path / "fresh" / name).read_bytes() == (tmp_path / "recyc" / name).read_bytes()
        assert (a.size, a.checksum) == (b.size, b.checksum) == (os.path.getsize(tmp_path / "recyc" / name), b.checksum)
        exact_equal(state, recyc.recover())
    assert reused == len(SIZES) - 2  # every save after the second reused the spare
    assert ".spare" not in names(tmp_path / "fresh") and ".spare" in names(tmp_path / "recyc")
    assert [n for n in names(tmp_path / "recyc") if "tmp" in n] == []
    fresh.close()
    recyc.close()


def test_incremental_saves_over_recycled_files(tmp_path, fixed_time):
    a = np.zeros(8 * CHUNK // 8)
    outs = {}
    for recycle in (False, True):
        d = tmp_path / str(recycle)
        with fk.Checkpointer(d, retain=1, fsync=False, full_every=3, chunk_size=CHUNK, recycle=recycle) as ck:
            b = a.copy()
            for step in range(7):
                b[(step * 977) % b.size] = step
                ck.save({"a": b}, incremental=True)
                exact_equal({"a": b}, ck.recover())
        outs[recycle] = {n: (d / n).read_bytes() for n in names(d) if n.endswith(".fkc")}
    assert outs[True] == outs[False]


def test_a_mapped_checkpoint_is_never_overwritten(tmp_path):
    ck = fk.Checkpointer(tmp_path, retain=1, fsync=False, chunk_size=CHUNK)
    ck.save({"a": np.full(4 * CHUNK // 8, 1.0)})
    held = ck.recover(mmap=True)  # arrays backed by the map of checkpoint 1
    first = os.stat(tmp_path / "ckpt-000000000001.fkc").st_ino
    for n in range(2, 6):
        ck.save({"a": np.full(4 * CHUNK // 8, float(n))})
        # checkpoint 1 is pruned (and becomes the spare) but is still mapped
        # here, so the next save must not write over it
        assert np.all(held["a"] == 1.0)
    assert all(os.stat(tmp_path / n).st_ino != first for n in names(tmp_path) if n.endswith(".fkc"))
    exact_equal({"a": np.full(4 * CHUNK // 8, 5.0)}, ck.recover())
    ck.close()


def test_an_open_descriptor_or_another_link_blocks_reuse(tmp_path):
    ck = fk.Checkpointer(tmp_path / "ck", retain=1, fsync=False, chunk_size=CHUNK)
    ck.save([1])
    fd = os.open(tmp_path / "ck" / "ckpt-000000000001.fkc", os.O_RDONLY)  # a reader mid-read
    before = os.pread(fd, 1 << 20, 0)
    ck.save([2])  # 1 -> spare
    ck.save([3] * 1000)  # spare refused: someone has it open
    assert os.pread(fd, 1 << 20, 0) == before
    os.close(fd)
    os.link(tmp_path / "ck" / "ckpt-000000000003.fkc", tmp_path / "backup.fkc")
    backup = (tmp_path / "backup.fkc").read_bytes()
    ck.save([4])  # 3 -> spare (still linked as backup.fkc)
    ck.save([5] * 2000)  # must not write into backup.fkc
    assert (tmp_path / "backup.fkc").read_bytes() == backup
    assert ck.recover() == [5] * 2000
    ck.close()


def _failing_write(after):
    """A writer that writes `after` bytes, then fails as a full disk would."""
    def write(f):
        f.write(b"\xab" * after)
        raise OSError(errno.ENOSPC, "No space left on device")
    return write


@pytest.mark.parametrize("after", [0, 100, 1 << 20])
def test_a_failed_recycled_write_leaves_no_temp_and_the_last_object_intact(tmp_path, after):
    store = LocalStore(tmp_path)
    store.put_atomic("a", lambda f: f.write(b"1" * 300_000))
    store.put_atomic("b", lambda f: f.write(b"2" * 1000))
    store.delete("a")  # becomes the spare
    assert names(tmp_path) == [".spare", "b"]
    with pytest.raises(OSError) as e:
        store.put_atomic("c", _failing_write(after))
    assert e.value.errno == errno.ENOSPC
    assert names(tmp_path) == ["b"]  # the spare was used (and is gone); no temp file
    assert bytes(store.get("b")) == b"2" * 1000


def test_a_checkpoint_save_failing_with_enospc_keeps_the_previous_one(tmp_path, monkeypatch):
    ck = fk.Checkpointer(tmp_path, retain=1, fsync=True, chunk_size=CHUNK)
    for n in range(3):
        ck.save({"n": n, "a": np.full(CHUNK, n, dtype=np.uint8)})
    assert ".spare" in names(tmp_path)

    def enospc(fd, *args, **kwargs):
        os.write(fd, b"\0" * 4096)
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(ck_mod._codec, "write", enospc)
    with pytest.raises(OSError, match="No space left"):
        ck.save({"n": 9, "a": np.zeros(CHUNK, dtype=np.uint8)})
    monkeypatch.undo()
    assert names(tmp_path) == [".lock", "ckpt-000000000003.fkc"]
    exact_equal({"n": 2, "a": np.full(CHUNK, 2, dtype=np.uint8)}, ck.recover())
    assert ck.save({"n": 10}).id == 4  # and saving works again
    ck.close()


def test_without_leases_the_store_stops_recycling(tmp_path, monkeypatch):
    store = LocalStore(tmp_path)
    store.put_atomic("a", lambda f: f.write(b"1" * 5000))
    store.delete("a")

    real = store_mod.fcntl.fcntl

    def no_leases(fd, cmd, *args):
        if cmd == store_mod._F_SETLEASE:
            raise OSError(errno.EINVAL, "Invalid argument")
        return real(fd, cmd, *args)

    monkeypatch.setattr(store_mod.fcntl, "fcntl", no_leases)
    assert store.put_atomic("b", lambda f: f.write(b"2" * 10)) == 10
    assert not store.recycle and names(tmp_path) == ["b"]
    store.delete("b")
    assert names(tmp_path) == []  # unlinked, not kept


def test_recycle_false_unlinks_at_once(tmp_path):
    store = LocalStore(tmp_path, recycle=False)
    store.put_atomic("a", lambda f: f.write(b"1"))
    store.delete("a")
    store.delete("missing")
    assert names(tmp_path) == [] and "recycle=False" in repr(store)


def test_the_largest_deleted_object_is_kept_as_the_spare(tmp_path):
    store = LocalStore(tmp_path)
    for name, n in (("a", 10), ("b", 5000), ("c", 100)):
        store.put_atomic(name, lambda f, n=n: f.write(b"x" * n))
    for name in ("a", "b", "c"):
        store.delete(name)
    assert names(tmp_path) == [".spare"] and os.path.getsize(tmp_path / ".spare") == 5000
    assert store.list() == []
    assert store.put_atomic("d", lambda f: f.write(b"y" * 7)) == 7  # written over the 5000-byte spare
    assert bytes(store.get("d")) == b"y" * 7 and names(tmp_path) == ["d"]


def test_with_fsync_the_spare_is_durably_renamed_before_it_is_overwritten(tmp_path, monkeypatch):
    store = LocalStore(tmp_path, fsync=True)
    store.put_atomic("a", lambda f: f.write(b"1" * 5000))
    store.delete("a")
    events = []
    real = store._fsync_dir
    monkeypatch.setattr(store, "_fsync_dir", lambda: (events.append("dir fsync"), real())[1])
    store.put_atomic("b", lambda f: (events.append("write"), f.write(b"2" * 10))[1])
    assert events == ["dir fsync", "write", "dir fsync"]  # before the first byte, and the commit's
    assert names(tmp_path) == ["b"] and bytes(store.get("b")) == b"2" * 10


# ---- foreign entries under the spare's name, and a really full disk (issue #21)

def test_a_directory_named_like_the_spare_or_a_temp_file_is_left_alone(tmp_path):
    # Not a spare this store made: never renamed, opened or removed, and saves go on.
    (tmp_path / ".spare").mkdir()
    (tmp_path / ".spare" / "keep").write_bytes(b"k")
    temp_dir = tmp_path / ".ckpt-000000000009.fkc.tmp-1-abcd1234"
    temp_dir.mkdir()
    with fk.Checkpointer(tmp_path, retain=1) as ck:   # cleanup() skips the temp-named directory
        for n in range(3):
            ck.save([n] * 100)   # retention cannot turn a checkpoint into the spare either
        assert ck.recover() == [2] * 100
    assert names(tmp_path) == [".ckpt-000000000009.fkc.tmp-1-abcd1234", ".lock", ".spare",
                               "ckpt-000000000003.fkc"]
    assert (tmp_path / ".spare" / "keep").read_bytes() == b"k"


def test_a_symlink_named_like_the_spare_is_never_written_through(tmp_path):
    # Before the fix, the first save renamed the link, opened it (following it) and wrote
    # the checkpoint over the link's target.
    victim = tmp_path / "victim"
    victim.write_bytes(b"precious" * 100)
    d = tmp_path / "ck"
    d.mkdir()
    os.symlink(victim, d / ".spare")
    with fk.Checkpointer(d, retain=1) as ck:
        for n in range(3):
            ck.save([n] * 100)
    assert victim.read_bytes() == b"precious" * 100
    for n in os.listdir(d):
        assert not os.path.islink(d / n) or n == ".spare", n
    assert fk.Checkpointer(d).recover() == [2] * 100


def test_a_really_full_disk_fails_the_save_and_keeps_the_previous_checkpoint(tmp_path):
    # A 1 MiB tmpfs: the first save fits, a 2 MiB one hits ENOSPC in the kernel.
    from recover_util import mounted_tmpfs

    with mounted_tmpfs(tmp_path / "tiny", "1m") as d:
        for recycle in (True, False):
            ck = fk.Checkpointer(d / f"r{recycle}", retain=1, recycle=recycle)
            ck.save({"n": 1, "a": np.full(1000, 1, dtype=np.uint8)})
            with pytest.raises(OSError) as e:
                ck.save({"n": 2, "a": np.zeros(2 << 20, dtype=np.uint8)})
            assert e.value.errno == errno.ENOSPC
            assert names(d / f"r{recycle}") == [".lock", "ckpt-000000000001.fkc"]  # no temp left
            exact_equal({"n": 1, "a": np.full(1000, 1, dtype=np.uint8)}, ck.recover())
            info = ck.save({"n": 3, "a": np.full(1000, 3, dtype=np.uint8)})  # room again: saves go on
            assert info.id == 2   # the failed save committed nothing, not even its id
            exact_equal({"n": 3, "a": np.full(1000, 3, dtype=np.uint8)}, fk.Checkpointer(d / f"r{recycle}").recover())
            ck.close()
