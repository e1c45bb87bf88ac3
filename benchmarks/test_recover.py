"""Checkpoints: faultkit against np.save/np.load, pickle protocol 5 and msgspec, in one run.

Compare within a group: ``faultkit bench -k recover --benchmark-group-by=group``.
Array-heavy cases write 256 MiB of float64 to a temporary directory a few
rounds each (page cache, no fsync for anyone); object-heavy cases encode and
decode 100,000 small dicts in memory.  faultkit's saves run with its default
file recycling and, as a second contender, without it (``fresh-file``).
"""
import gc
import os
import pickle

import msgspec
import numpy as np
import pytest

import faultkit as fk
from faultkit.recover import dumps, loads

BIG = 256 << 20  # bytes
SMALL = 16 << 20
# Each round of a write benchmark starts with os.sync(), untimed: otherwise a
# round runs while the kernel is still writing back earlier rounds' (or
# earlier tests') dirty pages, and which contender pays for that is luck.
ROUNDS = dict(rounds=5, iterations=1, warmup_rounds=1, setup=os.sync)


@pytest.fixture(scope="module")
def big():
    return np.random.default_rng(0).random(BIG // 8)


@pytest.fixture(scope="module")
def records():
    return [{"id": i, "name": f"user{i:06d}", "score": i * 0.5, "active": i % 2 == 0, "tags": ["a", "b"]}
            for i in range(100_000)]


@pytest.fixture
def workdir(tmp_path):
    return tmp_path


# ---------------------------------------------------------------- array-heavy save

@pytest.mark.benchmark(group="recover: save 256 MiB float64, no fsync")
@pytest.mark.parametrize("recycle", [True, False], ids=["recycled", "fresh-file"])
def test_save_faultkit(benchmark, big, workdir, recycle):
    # recycled (the default): from the third round on, each save overwrites
    # the file retention deleted the round before; fresh-file: every save
    # allocates a new file, as np.save and pickle do.
    ck = fk.Checkpointer(workdir / "ck", retain=1, fsync=False, recycle=recycle)
    info = benchmark.pedantic(ck.save, args=({"a": big},), **ROUNDS)
    assert info.size > BIG
    if recycle:
        assert os.path.exists(workdir / "ck" / ".spare")
    ck.close()


@pytest.mark.benchmark(group="recover: save 256 MiB float64, no fsync")
def test_save_numpy(benchmark, big, workdir):
    benchmark.pedantic(np.save, args=(os.path.join(workdir, "a.npy"), big), **ROUNDS)


@pytest.mark.benchmark(group="recover: save 256 MiB float64, no fsync")
def test_save_pickle5(benchmark, big, workdir):
    def run():
        with open(os.path.join(workdir, "a.pkl"), "wb") as f:
            pickle.dump({"a": big}, f, protocol=5)

    benchmark.pedantic(run, **ROUNDS)


# ---------------------------------------------------------------- incremental

@pytest.mark.benchmark(group="recover: save 256 MiB after changing 1% of it")
@pytest.mark.parametrize("fsync", [False, True], ids=["page-cache", "fsync"])
@pytest.mark.parametrize("incremental,recycle,track", [(True, True, True), (True, True, False), (False, True, True),
                                                       (False, False, True)],
                         ids=["incremental", "incremental-untracked", "full", "full-fresh-file"])
def test_save_after_1pct_change(benchmark, big, workdir, incremental, recycle, track, fsync):
    # incremental: the kernel's write tracking says which chunks to hash
    # (Linux >= 6.7; elsewhere the same as incremental-untracked, which
    # hashes all 256 MiB to find the changed chunks).
    a = big.copy()
    ck = fk.Checkpointer(workdir / "inc", retain=2, fsync=fsync, full_every=1_000, recycle=recycle,
                         track_writes=track)
    full = ck.save({"a": a}, incremental=incremental)
    step = [0]
    infos = []

    def run():
        step[0] += 1
        n = a.size // 100
        start = (step[0] * 7 * n) % (a.size - n)
        a[start:start + n] += 1.0  # 1% of the array, contiguous
        infos.append(ck.save({"a": a}, incremental=incremental))

    rounds = dict(ROUNDS, rounds=3) if fsync else ROUNDS  # a durable 256 MiB write takes seconds
    benchmark.pedantic(run, **rounds)
    if incremental:
        assert all(i.incremental for i in infos)
        assert max(i.written for i in infos) <= 0.05 * full.written
    benchmark.extra_info["bytes_written"] = max(i.written for i in infos)
    benchmark.extra_info["bytes_hashed"] = ck._last_write.get("blob_bytes_hashed")
    ck.close()


# ---------------------------------------------------------------- zero-copy restore

def _mmap_restore_cases():
    return [pytest.param(BIG, id="256MiB"), pytest.param(SMALL, id="16MiB")]


# recover(mmap=True) verifies every chunk hash by default (it reads the
# mapped bytes once): its peer is np.load(mmap_mode="r") plus one read of the
# same bytes ("numpy-read").  verify=False (the opt-out) maps without reading:
# its peer is np.load(mmap_mode="r") alone.

def _read_all(a: np.ndarray):
    # One pass over the bytes at memory speed (vectorized OR of 8-byte words).
    return np.bitwise_or.reduce(a.reshape(-1).view(np.uint64))


@pytest.mark.parametrize("size", _mmap_restore_cases())
@pytest.mark.parametrize("verify", [True, False], ids=["verified", "verify-false"])
@pytest.mark.benchmark(group="recover: restore with mmap")
def test_restore_mmap_faultkit(benchmark, big, workdir, size, verify):
    with fk.Checkpointer(workdir / "mm", fsync=False) as ck:
        ck.save({"a": big[: size // 8]})
        out = benchmark(ck.recover, mmap=True, verify=verify)
    assert out["a"].nbytes == size and not out["a"].flags.writeable and not out["a"].flags.owndata


@pytest.mark.parametrize("size", _mmap_restore_cases())
@pytest.mark.parametrize("read", [True, False], ids=["numpy-read", "numpy"])
@pytest.mark.benchmark(group="recover: restore with mmap")
def test_restore_mmap_numpy(benchmark, big, workdir, size, read):
    path = os.path.join(workdir, "a.npy")
    np.save(path, big[: size // 8])

    def run():
        out = np.load(path, mmap_mode="r")
        if read:
            _read_all(out)
        return out

    out = benchmark(run)
    assert out.nbytes == size


# ---------------------------------------------------------------- object-heavy

@pytest.mark.benchmark(group="recover: encode 100k small dicts")
def test_encode_faultkit(benchmark, records):
    benchmark(dumps, records)


@pytest.mark.benchmark(group="recover: encode 100k small dicts")
def test_encode_msgspec(benchmark, records):
    benchmark(msgspec.msgpack.Encoder().encode, records)


@pytest.mark.benchmark(group="recover: encode 100k small dicts")
def test_encode_pickle5(benchmark, records):
    benchmark(pickle.dumps, records, protocol=5)


# Decoding builds 200k containers.  faultkit's loads() pauses the cyclic collector while it
# builds them, so the young collection they make due runs at the program's next allocation;
# a single timed call would leave it outside faultkit's timer while msgspec and pickle pay
# theirs inside.  So every side runs DECODE_LOOPS calls per round inside the timer, keeping
# each result alive until the next call (as a program keeps what it decoded), and the group
# is measured twice: "charged" (the collector on; each side pays what its allocations make
# due, the last call's deferred collection aside) and "off" (the collector off for everyone).
DECODE_LOOPS = 10
GC_MODES = ("charged", "off")


def _decode_bench(benchmark, gc_mode, decode, blob):
    box = [None]

    def run():
        box[0] = decode(blob)
    was = gc.isenabled()
    if gc_mode == "off":
        gc.disable()
    try:
        benchmark.pedantic(run, rounds=5, warmup_rounds=1, iterations=DECODE_LOOPS)
    finally:
        if was:
            gc.enable()
    return box[0]


@pytest.mark.parametrize("gc_mode", GC_MODES)
@pytest.mark.benchmark(group="recover: decode 100k small dicts")
def test_decode_faultkit(benchmark, records, gc_mode):
    assert _decode_bench(benchmark, gc_mode, loads, dumps(records)) == records


@pytest.mark.parametrize("gc_mode", GC_MODES)
@pytest.mark.benchmark(group="recover: decode 100k small dicts")
def test_decode_msgspec(benchmark, records, gc_mode):
    decode = msgspec.msgpack.Decoder().decode
    assert _decode_bench(benchmark, gc_mode, decode, msgspec.msgpack.encode(records)) == records


@pytest.mark.parametrize("gc_mode", GC_MODES)
@pytest.mark.benchmark(group="recover: decode 100k small dicts")
def test_decode_pickle5(benchmark, records, gc_mode):
    assert _decode_bench(benchmark, gc_mode, pickle.loads, pickle.dumps(records, protocol=5)) == records
