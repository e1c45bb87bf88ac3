"""ObjectStore against a real S3 server (moto[server] as a subprocess), with real connection cuts."""
import json
import os
import random
import subprocess
import sys
import textwrap
import threading
import time
import warnings

import numpy as np
import pytest

pytest.importorskip("obstore")
pytest.importorskip("moto.server")

import obstore

import faultkit as fk
from faultkit.errors import CheckpointLockedError, CheckpointWarning, NoCheckpointError, StoreError
from faultkit.recover.objstore import ObjectStore
from recover_util import exact_equal
from s3_server import CutProxy, MotoServer

# The subprocesses import the same faultkit as this process (source tree or installed wheel).
SRC = os.path.dirname(os.path.dirname(fk.__file__))


@pytest.fixture(scope="module")
def s3():
    server = MotoServer()
    yield server
    server.stop()


class Clock:
    """An injected lease clock (seconds)."""

    def __init__(self, t=1_000_000.0):
        self.t = t

    def __call__(self):
        return self.t


def ckpt(s3, url, *, clock=None, **kw):
    opts = s3.options(renew=False, backoff=0.01, max_backoff=0.05, part_size=5 << 20)
    if clock is not None:
        opts["clock"] = clock
    opts.update(kw.pop("store_options", {}))
    return fk.Checkpointer(url, store_options=opts, **kw)


def data_keys(store):
    return sorted(k for k in store._list_keys(".data"))


def state(seed, n=1_500_000):  # 12 MiB of float64: three 5 MiB parts
    rng = np.random.default_rng(seed)
    return {"step": seed, "w": rng.random(n), "names": [f"n{i}" for i in range(100)], "blob": b"x" * 70_000}


def test_save_and_recover_across_processes(s3):
    url = f"s3://{s3.bucket()}/run"
    script = textwrap.dedent(f"""
        import os, signal, sys
        sys.path.insert(0, {os.path.abspath(SRC)!r})
        import numpy as np, faultkit as fk
        ck = fk.Checkpointer({url!r}, retain=5)  # configuration from the environment only
        rng = np.random.default_rng(7)
        w = rng.random(1_500_000)
        ck.save({{"step": 1, "w": w}})
        w[:1000] = 0.5
        info = ck.save({{"step": 2, "w": w}}, incremental=True)
        assert info.incremental and info.size < 2 << 20, info
        np.save(sys.argv[1], w)
        os.kill(os.getpid(), signal.SIGKILL)  # crash holding the lease
    """)
    out = os.path.join(os.environ.get("TMPDIR", "/tmp"), f"objstore-{os.getpid()}.npy")
    env = dict(os.environ, **s3.env())
    p = subprocess.run([sys.executable, "-c", script, out], env=env, timeout=120, capture_output=True)
    assert p.returncode == -9, p.stderr.decode()[-2000:]
    try:
        w = np.load(out)
    finally:
        os.unlink(out)
    clock = Clock(time.time())  # the subprocess judged its lease by the real clock
    ck = ckpt(s3, url, clock=clock, retain=5)
    st = ck.recover()
    assert st["step"] == 2 and st["w"].flags.writeable
    exact_equal(st["w"], w)
    assert [i.id for i in ck.list()] == [1, 2]
    # The crashed writer's lease is live until it expires, then a new writer takes over.
    with pytest.raises(CheckpointLockedError, match="locked by another writer"):
        ck.save({"step": 3})
    clock.t += 31  # past its expiry
    assert ck.save({"step": 3, "w": w}, incremental=True).id == 3
    ck.close()
    exact_equal(ckpt(s3, url).recover()["w"], w)


def test_two_writers_race_one_wins(s3):
    url = f"s3://{s3.bucket()}/race"
    n = 8
    stores = [ObjectStore(url, **s3.options(renew=False)) for _ in range(n)]
    barrier = threading.Barrier(n)
    results = [None] * n

    def take(i):
        barrier.wait()
        try:
            results[i] = stores[i].lock()
        except CheckpointLockedError as e:
            results[i] = e

    threads = [threading.Thread(target=take, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    winners = [r for r in results if not isinstance(r, Exception)]
    assert len(winners) == 1, results
    # The same through Checkpointers: the loser's save raises, the winner's state is the one stored.
    url2 = f"s3://{s3.bucket()}/race2"
    a, b = ckpt(s3, url2), ckpt(s3, url2)
    a.save({"who": "a"})
    with pytest.raises(CheckpointLockedError, match="locked by another writer"):
        b.save({"who": "b"})
    assert ckpt(s3, url2).recover() == {"who": "a"}
    a.close()
    assert b.save({"who": "b"}).id == 2  # released: the next writer takes it at once
    b.close()


def test_expired_lease_is_stolen_and_old_writer_fenced(s3):
    url = f"s3://{s3.bucket()}/fence"
    clock = Clock()
    old = ckpt(s3, url, clock=clock)
    old.save(state(1))
    clock.t += 10  # lease still live (30 s)
    with pytest.raises(CheckpointLockedError):
        ckpt(s3, url, clock=clock).save({"x": 1})
    clock.t += 25  # past expiry: the old writer stalled (GC pause, SIGSTOP, partition)
    new = ckpt(s3, url, clock=clock)
    assert new.save(state(2)).id == 2
    before = data_keys(new.store)
    # The old writer wakes up: both a small (inline) and a large (multipart) commit are refused.
    with pytest.raises(CheckpointLockedError, match="fenced"):
        old.save(state(3))
    with pytest.raises(CheckpointLockedError, match="fenced"):
        old.save({"small": 1})
    assert data_keys(new.store) == before  # its uploaded data object was removed
    assert new.recover()["step"] == 2
    assert new.save(state(4)).id == 3
    old.close()  # releasing a lost lease leaves the new holder's lease alone
    assert new.save({"x": 5}).id == 4
    new.close()
    assert ckpt(s3, url).recover() == {"x": 5}


@pytest.mark.parametrize("large", [True, False], ids=["multipart", "inline"])
def test_upload_cut_at_random_offsets_keeps_previous_newest(s3, large):
    bucket = s3.bucket()
    url = f"s3://{bucket}/cut"
    proxy = CutProxy(s3.port)
    rnd = random.Random(1234 + large)
    try:
        opts = s3.options(endpoint=f"http://127.0.0.1:{proxy.port}", retries=1, backoff=0.01, max_backoff=0.02,
                          renew=False, part_size=5 << 20, client_options={"timeout": "20s"})
        ck = fk.Checkpointer(url, store_options=opts)
        first = state(0) if large else {"step": 0}
        ck.save(first)
        reader = ckpt(s3, url)
        keys = data_keys(reader.store)
        assert len(keys) == (1 if large else 0)
        size = 12 << 20 if large else 200
        for k in range(4):
            nxt = state(k + 1) if large else {"step": k + 1, "pad": "p" * 150}
            proxy.cut_after(rnd.randrange(1, size))
            with pytest.raises(StoreError, match="failed"):
                ck.save(nxt)
            assert proxy.dead
            proxy.heal()
            exact_equal(reader.recover(), first)  # the previous checkpoint is still the newest
            assert reader.store.list() == ["ckpt-000000000001.fkc"]
            assert data_keys(reader.store) == keys  # no partial (or complete) upload visible
        # Healed: the same writer commits the next id, and a cut that heals at once is retried away.
        proxy.cut_after(rnd.randrange(1, size), once=True)
        nxt = state(9) if large else {"step": 9}
        assert ck.save(nxt).id == 2
        exact_equal(reader.recover(), nxt)
        ck.close()
    finally:
        proxy.close()


def _rewrite(store, key, fn):
    data = bytes(obstore.get(store._store, key).bytes())
    obstore.put(store._store, key, fn(data))


def test_corrupt_and_partial_objects_are_skipped(s3):
    url = f"s3://{s3.bucket()}/corrupt"
    ck = ckpt(s3, url, retain=10)
    states = [state(i) for i in range(5)]
    for s in states[:4]:
        ck.save(s)
    ck.save({"small": True})  # id 5, inline
    st = ck.store
    ptr = lambda name: json.loads(bytes(obstore.get(st._store, name).bytes())[8:])["data"]
    # 5: inline object with a flipped byte; 4: data object truncated; 3: data object bit flip;
    # 2: garbage pointer record; 1 intact.
    _rewrite(st, "ckpt-000000000005.fkc", lambda d: d[:100] + bytes([d[100] ^ 1]) + d[101:])
    _rewrite(st, ptr("ckpt-000000000004.fkc"), lambda d: d[: len(d) // 2])
    _rewrite(st, ptr("ckpt-000000000003.fkc"), lambda d: d[:5000] + bytes([d[5000] ^ 0x40]) + d[5001:])
    obstore.put(st._store, "ckpt-000000000002.fkc", b"\x89FKPTR1\n{not json")
    reader = ckpt(s3, url)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        got = reader.recover()
    exact_equal(got, states[0])
    msgs = [str(w.message) for w in caught if issubclass(w.category, CheckpointWarning)]
    assert len(msgs) == 4, msgs
    assert all(url in m for m in msgs)
    assert any("malformed pointer" in m for m in msgs)
    assert any("ended after" in m or "holds" in m for m in msgs)
    # A missing data object is corrupt, not "vanished".
    obstore.delete(st._store, ptr("ckpt-000000000001.fkc"))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(NoCheckpointError, match="5 corrupt skipped"):
            reader.recover()
    assert any("ckpt-000000000001.fkc" in str(w.message) and "missing" in str(w.message) for w in caught)
    ck.close()


def test_retention_keeps_referenced_bases(s3):
    url = f"s3://{s3.bucket()}/retain"
    ck = ckpt(s3, url, retain=2, full_every=4)
    w = np.random.default_rng(3).random(1_500_000)
    infos, saved = [], {}
    for step in range(1, 7):
        w[step * 1000:(step + 1) * 1000] = step
        infos.append(ck.save({"w": w, "step": step}, incremental=True))
        saved[step] = w.copy()
        if step == 4:
            # 1 is the full base of 2..4: kept although older than retain.
            assert ck.store.list() == [ck._name(i) for i in (1, 3, 4)]
    assert [i.incremental for i in infos] == [False, True, True, True, False, True]
    assert all(i.size < (2 << 20) for i in infos if i.incremental)
    assert ck.store.list() == [ck._name(i) for i in (5, 6)]
    assert len(data_keys(ck.store)) == 1  # 6 is inline (small), 5 is the only data object left
    ck.close()
    # A fresh writer (knowing no references) applies retention from the stored chunk maps:
    # 7 keeps 6 (holds the chunks step 6 changed) and 5 (the rest).
    ck2 = ckpt(s3, url, retain=1, full_every=4)
    assert ck2.save({"w": w, "step": 7}, incremental=True).incremental
    assert ck2.store.list() == [ck2._name(i) for i in (5, 6, 7)]
    exact_equal(ckpt(s3, url).load(6)["w"], saved[6])
    exact_equal(ckpt(s3, url).load(7)["w"], w)
    exact_equal(ckpt(s3, url).load(5)["w"], saved[5])
    ck2.close()


def test_mmap_recover_maps_a_local_cache(s3, tmp_path):
    url = f"s3://{s3.bucket()}/mmap"
    ck = ckpt(s3, url)
    s = state(5)
    ck.save(s)
    cache = tmp_path / "cache"
    reader = ckpt(s3, url, store_options={"cache_dir": str(cache)})
    got = reader.recover(mmap=True)
    exact_equal(got["w"], s["w"])
    assert not got["w"].flags.writeable
    files = os.listdir(cache)
    assert len(files) == 1 and files[0].startswith("ckpt-000000000001.fkc.")
    reader.recover(mmap=True)  # same ETag: served from the cache
    assert os.listdir(cache) == files
    ck.close()


def test_large_objects_stream_in_parts(s3):
    url = f"s3://{s3.bucket()}/parts"
    ck = ckpt(s3, url)
    info = ck.save_async(state(1)).result()
    (key,) = data_keys(ck.store)
    meta = obstore.head(ck.store._store, key)
    assert meta["size"] == info.size
    assert meta["e_tag"].strip('"').endswith("-3")  # 12 MiB in 5 MiB parts: a multipart upload
    ck.close()
    exact_equal(ckpt(s3, url).recover(), state(1))


@pytest.mark.parametrize("expires", ["Infinity", "NaN", "1e300", '"soon"', "null"])
def test_garbage_lease_does_not_lock_forever(s3, expires):
    url = f"s3://{s3.bucket()}/garbage"
    st = ObjectStore(url, **s3.options(renew=False))
    obstore.put(st._store, ".lease", ('{"owner": "x", "expires": %s}' % expires).encode())
    st.lock().release()
    obstore.put(st._store, ".lease", b"\xff not json at all")
    st.lock().release()


def test_errors_and_bad_arguments(s3, tmp_path):
    with pytest.raises(ValueError, match="unsupported object-store URL scheme 'ftp'"):
        ObjectStore("ftp://host/x")
    with pytest.raises(TypeError, match="url must be a str"):
        ObjectStore(b"s3://x")
    with pytest.raises(ValueError, match="lease_duration must be a positive"):
        ObjectStore("s3://b/p", lease_duration=0)
    with pytest.raises(ValueError, match="part_size must be in"):
        ObjectStore("s3://b/p", part_size=1024)
    with pytest.raises(TypeError, match="retries must be an int"):
        ObjectStore("s3://b/p", retries=1.5)
    with pytest.raises(TypeError, match="store_options applies only"):
        fk.Checkpointer(str(tmp_path), store_options={})
    with pytest.raises(TypeError, match="store_options must be a dict"):
        fk.Checkpointer("s3://b/p", store_options=[1])
    st = ObjectStore(f"s3://{s3.bucket()}/p", **s3.options(renew=False))
    with pytest.raises(ValueError, match="bad object name"):
        st.get("../x")
    with pytest.raises(FileNotFoundError):
        st.get("absent")
    # A non-retryable failure is a StoreError with the cause: no such bucket.
    ck = ckpt(s3, "s3://no-such-bucket-fk/x")
    with pytest.raises(StoreError, match="taking the lease") as ei:
        ck.save({"x": 1})
    assert ei.value.__cause__ is not None
    # A write callback that fails is reported as itself, and nothing is committed.
    st.lock()

    def bad(f):
        f.write(b"y" * (6 << 20))
        raise KeyError("boom")

    with pytest.raises(KeyError, match="boom"):
        st.put_atomic("obj", bad)
    assert st.list() == [] and data_keys(st) == []


def test_renewal_extends_the_lease_and_expiry_is_by_the_clock(s3):
    url = f"s3://{s3.bucket()}/renew"
    clock = Clock()
    a = ObjectStore(url, **s3.options(renew=False, clock=clock, lease_duration=30))
    b = ObjectStore(url, **s3.options(renew=False, clock=clock, lease_duration=30))
    lease = a.lock()
    tag = lease.e_tag
    clock.t += 25
    lease.renew()  # now expires 30 s after this
    assert lease.e_tag != tag
    clock.t += 15  # 40 s after taking it: live only thanks to the renewal
    with pytest.raises(CheckpointLockedError, match="expires in 15.0 s"):
        b.lock()
    lease.fence()  # renewed 15 s ago (>= 30/2): fence renews again
    clock.t += 29.9
    with pytest.raises(CheckpointLockedError):
        b.lock()
    clock.t += 0.2  # expired: b takes it, a is fenced at its next check
    b.lock()
    with pytest.raises(CheckpointLockedError, match="fenced"):
        lease.fence()
    with pytest.raises(CheckpointLockedError, match="fenced"):
        a.put_atomic("obj", lambda f: f.write(b"late"))
    assert a.list() == []


def test_cleanup_removes_unreferenced_data_objects(s3):
    url = f"s3://{s3.bucket()}/orphans"
    ck = ckpt(s3, url)
    ck.save(state(1))
    (kept,) = data_keys(ck.store)
    ck.close()
    orphan = ".data/ckpt-000000000002.fkc." + "ab" * 16  # a fenced or failed writer's upload
    loser = ".data/ckpt-000000000001.fkc." + "cd" * 16  # the losing upload of a committed name
    foreign = ".data/notes.txt"  # not ours: never touched
    for key in (orphan, loser, foreign):
        obstore.put(ck.store._store, key, b"x" * 100)
    ck2 = ckpt(s3, url)
    ck2.save({"small": 1})  # taking the lease runs cleanup()
    assert data_keys(ck2.store) == sorted([kept, foreign])
    ck2.close()


@pytest.mark.parametrize("mmap", [False, True], ids=["copy", "mmap"])
def test_download_cut_is_retried_or_reported(s3, mmap, tmp_path):
    url = f"s3://{s3.bucket()}/dlcut"
    s = state(3)
    ck = ckpt(s3, url)
    size = ck.save(s).size
    ck.close()
    proxy = CutProxy(s3.port)
    rnd = random.Random(99 + mmap)
    try:
        opts = s3.options(endpoint=f"http://127.0.0.1:{proxy.port}", retries=2, backoff=0.01, max_backoff=0.02,
                          renew=False, cache_dir=str(tmp_path / "c"))
        reader = fk.Checkpointer(url, store_options=opts)
        reader.list()  # connections warm; next: cut the data download once, mid-body
        cut = rnd.randrange(64 << 10, 10 << 20)
        proxy.cut_after(cut, once=True, direction="down")
        exact_equal(reader.recover(mmap=mmap), s)
        # obstore resumed the cut body with a ranged request (or faultkit restarted it)
        assert proxy.cuts == 1 and proxy.received >= size
        # A cut that does not heal is a StoreError, not a corrupt checkpoint or an older state.
        proxy.cut_after(rnd.randrange(64 << 10, 10 << 20), direction="down")
        with pytest.raises(StoreError, match="failed"):
            fk.Checkpointer(url, store_options=dict(opts, cache_dir=str(tmp_path / "d"))).recover(mmap=mmap)
    finally:
        proxy.close()


def test_index_reads_only_the_table_of_contents(s3):
    # 48 MB in 4 KiB chunks: a 281 KB table of contents, longer than the 256 KiB tail read first.
    url = f"s3://{s3.bucket()}/index"
    ck = ckpt(s3, url, chunk_size=4096)
    w = np.random.default_rng(11).random(6_000_000)
    info = ck.save({"w": w}, meta={"epoch": 3})
    ck.close()
    reader = ckpt(s3, url, chunk_size=4096)
    buf = reader.store.get_index(reader._name(1))
    assert len(buf) == info.size
    assert bytes(buf[(32 << 20):(32 << 20) + 4096]) == bytes(4096)  # array bytes were not fetched
    (listed,) = reader.list()
    assert (listed.id, listed.size, listed.checksum, listed.meta) == (1, info.size, info.checksum, {"epoch": 3})
    assert reader.save({"w": w}, incremental=True).incremental  # chain resumed from the index
    exact_equal(reader.recover()["w"], w)
    reader.close()


@pytest.mark.parametrize("size", [0, 70_000, 12 << 20, (33 << 20) + 5],
                         ids=["empty", "inline", "pointer", "pointer-huge-pages"])
def test_get_returns_a_writable_buffer_equal_to_what_was_put(s3, size):
    st = ObjectStore(f"s3://{s3.bucket()}/get", **s3.options(renew=False, part_size=5 << 20))
    data = np.random.default_rng(size).integers(0, 256, size, dtype=np.uint8).tobytes()
    lease = st.lock()
    try:
        assert st.put_atomic("obj", lambda f: f.write(data)) == size
    finally:
        lease.release()
    kind, _, _ = st._head("obj")
    assert kind == ("inline" if size <= 5 << 20 else "pointer")
    buf = st.get("obj")
    view = memoryview(buf)
    assert len(buf) == size and not view.readonly
    assert bytes(buf) == data
    if size:
        view[0] ^= 0xFF  # writable in place, and a private copy: the stored object is unchanged
        view[-1] ^= 0xFF
        assert bytes(view[1:-1]) == data[1:-1] and view[0] == data[0] ^ 0xFF
        assert bytes(st.get("obj")) == data


def test_recovered_arrays_are_writable_copies(s3):
    url = f"s3://{s3.bucket()}/writable"
    ck = ckpt(s3, url)
    s = state(8)
    ck.save(s)
    ck.close()
    reader = ckpt(s3, url)
    got = reader.recover()
    exact_equal(got, s)
    assert got["w"].flags.writeable
    got["w"][:10] = -1.0  # the buffer the download filled is the arrays' memory; writing it is safe
    again = reader.recover()
    exact_equal(again, s)
    reader.close()
