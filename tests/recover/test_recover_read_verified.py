"""The one-pass local read (read, then hash each chunk while in cache) detects what the old two passes did."""
import os
import sys
import threading

import numpy as np
import pytest

import faultkit as fk
from faultkit.errors import CorruptCheckpointError
from faultkit.recover import _codec


def _save(tmp_path, state):
    ck = fk.Checkpointer(tmp_path, fsync=False, retain=3)
    info = ck.save(state)
    return ck, info.id, os.path.join(tmp_path, ck._name(info.id))


def test_read_verified_round_trips_writable_arrays(tmp_path):
    state = {"a": np.arange(300_000, dtype=np.float32), "b": np.ones((7, 5)), "s": "x"}
    ck, cid, _ = _save(tmp_path, state)
    out = ck.load(cid)
    assert np.array_equal(out["a"], state["a"]) and out["a"].flags.writeable
    assert np.array_equal(out["b"], state["b"]) and out["s"] == "x"


@pytest.mark.parametrize("where", ["blob", "padding", "toc"])
def test_read_verified_detects_a_flipped_byte(tmp_path, where):
    n = (1 << 19) + 1  # odd: the blob is followed by alignment padding before the TOC
    ck, cid, path = _save(tmp_path, {"a": (np.arange(n) % 251).astype(np.uint8)})
    with open(path, "rb") as f:
        buf, _ = _codec.read_verified(f.fileno(), os.path.getsize(path))
    data = bytearray(buf)
    if where == "blob":
        pos = len(data) // 2
    elif where == "padding":
        pos = bytes(data).find(bytes(range(251)) * 4) + n  # the byte after the blob
        assert data[pos] == 0
    else:
        pos = len(data) - 80  # inside the TOC, before the footer
    data[pos] ^= 0x10
    with open(path, "r+b") as f:
        f.write(data)
    with pytest.raises(CorruptCheckpointError):
        ck.load(cid)


def _native_threads():
    return set(os.listdir("/proc/self/task"))


@pytest.mark.skipif(not os.path.isdir("/proc/self/task"), reason="counts threads through /proc (Linux)")
@pytest.mark.parametrize("damage", [None, "second chunk", "last chunk", "truncated"])
def test_a_large_image_read_while_a_thread_faults_its_pages_in(tmp_path, damage):
    """From 32 MiB read_verified faults the buffer's pages in on a second thread while it
    reads: the bytes are the file's, and a damaged image fails with that thread joined."""
    a = (np.arange((36 << 20) // 8, dtype=np.uint64) * 0x9E3779B97F4A7C15)
    ck, cid, path = _save(tmp_path, {"a": a})
    size = os.path.getsize(path)
    if damage in ("second chunk", "last chunk"):
        with open(path, "r+b") as f:  # 1 MiB chunks; the TOC after the last one is a few kB
            f.seek((1 << 20) + 5 if damage == "second chunk" else size - (1 << 19))
            byte = f.read(1)
            f.seek(-1, os.SEEK_CUR)
            f.write(bytes([byte[0] ^ 0x01]))
    if damage == "truncated":
        os.truncate(path, size - (3 << 20))
    threads = _native_threads()
    if damage is None:
        out = ck.load(cid)
        assert np.array_equal(out["a"], a) and out["a"].flags.writeable
    else:
        with pytest.raises(CorruptCheckpointError, match="checksum mismatch|truncated|out of bounds"):
            ck.load(cid)
    assert _native_threads() <= threads  # the page-faulting thread was joined (others may end)


def test_read_verified_rejects_a_truncated_file(tmp_path):
    ck, cid, path = _save(tmp_path, {"a": np.arange(1000)})
    with open(path, "rb") as f:
        with pytest.raises(CorruptCheckpointError, match="truncated"):
            _codec.read_verified(f.fileno(), 10)
    with pytest.raises(ValueError, match="fd must be"):
        _codec.read_verified(-1, 10)


@pytest.mark.parametrize("huge_pages", [True, False])
@pytest.mark.parametrize("size", [0, 1, 4097, (32 << 20) + 3])  # heap below 32 MiB, fresh pages above
def test_read_buffer_constructor_gives_writable_bytes(size, huge_pages):
    buf = _codec.ReadBuffer(size, huge_pages=huge_pages)
    view = memoryview(buf)
    assert len(buf) == size and view.nbytes == size and not view.readonly and view.format == "B"
    data = np.random.default_rng(size).integers(0, 256, size, dtype=np.uint8).tobytes()
    view[:] = data
    assert bytes(buf) == data
    a = np.frombuffer(buf, np.uint8)
    assert a.flags.writeable
    if size:
        a[-1] ^= 0xFF
        assert memoryview(buf)[-1] == data[-1] ^ 0xFF


@pytest.mark.parametrize("bad, exc, match", [
    (-1, ValueError, r"size must be >= 0, got -1$"),
    (-(2 ** 80), ValueError, r"size must be >= 0, got -1208925819614629174706176"),
    (2 ** 63, ValueError, r"size must be at most 9223372036854775807, got 9223372036854775808"),
    (2 ** 80, ValueError, r"at most 9223372036854775807, got 1208925819614629174706176"),
    (1.0, TypeError, r"size must be an int, got float"),
    ("8", TypeError, r"size must be an int, got str"),
    (None, TypeError, r"size must be an int, got NoneType"),
    (True, TypeError, r"size must be an int, got bool"),
])
def test_read_buffer_constructor_rejects_bad_sizes(bad, exc, match):
    with pytest.raises(exc, match=match):
        _codec.ReadBuffer(bad)


@pytest.mark.parametrize("bad", [1, None, "yes"])
def test_read_buffer_huge_pages_must_be_a_bool(bad):
    with pytest.raises(TypeError, match=f"huge_pages must be a bool, got {type(bad).__name__}"):
        _codec.ReadBuffer(8, huge_pages=bad)
    with pytest.raises(TypeError, match="incompatible constructor arguments"):
        _codec.ReadBuffer(8, True)  # keyword-only


def test_read_buffer_constructor_reports_an_impossible_allocation():
    # 4 EiB: within PY_SSIZE_T_MAX, beyond any address space; no memory is touched.
    with pytest.raises(MemoryError, match=r"cannot allocate a ReadBuffer of 4611686018427387904 bytes"):
        _codec.ReadBuffer(2 ** 62)
    assert len(_codec.ReadBuffer(np.int64(5))) == 5  # an __index__ int is an int


@pytest.mark.parametrize("size", [0, 100, 5 << 20, (32 << 20) + 4097])
@pytest.mark.parametrize("huge_pages", [True, False])
def test_read_buffer_populate_keeps_bytes_written_before_and_during_it(size, huge_pages):
    buf = _codec.ReadBuffer(size, huge_pages=huge_pages)
    view = memoryview(buf)
    data = np.random.default_rng(size + 1).integers(0, 256, size, dtype=np.uint8).tobytes()
    half = size // 2
    view[:half] = data[:half]
    t = threading.Thread(target=buf.populate)  # as ObjectStore.get runs it: while the rest is written
    t.start()
    for p in range(half, size, 1 << 16):
        view[p:p + (1 << 16)] = data[p:p + (1 << 16)]
    t.join()
    if sys.platform == "linux" and tuple(map(int, os.uname().release.split(".")[:2])) >= (5, 14):
        assert buf.populate() is True  # MADV_POPULATE_WRITE exists: populating again changes nothing
    assert bytes(buf) == data
