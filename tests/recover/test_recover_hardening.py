"""Issue #12, recovery half: foreign entries, verification by default, crafted files, small stacks."""
import json
import os
import shutil
import subprocess
import sys
import textwrap
import warnings

import numpy as np
import pytest

import faultkit as fk
from faultkit.recover import dumps, loads
from faultkit.recover import codec
from recover_format_ref import frame, varint

FIRST = "ckpt-000000000001.fkc"
NEWER = "ckpt-000000000099.fkc"


def one_good(d) -> None:
    c = fk.Checkpointer(str(d))
    c.save({"v": 1})
    c.close()


# ------------------------------------------------------------ foreign entries

def _dir(d):
    os.mkdir(d / NEWER)
    return NEWER, "a directory"


def _loop(d):
    os.symlink(NEWER, d / NEWER)  # points at itself
    return NEWER, "symlink loop"


def _dangling(d):
    os.symlink("nowhere.fkc", d / NEWER)
    return NEWER, "dangling symlink"


def _thirteen(d):
    name = "ckpt-0000000000003.fkc"  # 13 digits: int() would make it 3, i.e. ckpt-000000000003.fkc
    shutil.copy(d / FIRST, d / name)
    return name, "not a canonical checkpoint name"


def _twenty(d):
    name = "ckpt-99999999999999999999.fkc"  # 20 digits, >= 2**64
    assert int(name[5:25]) >= 2**64
    shutil.copy(d / FIRST, d / name)
    return name, "not a canonical checkpoint name"


def _max_id(d):
    name = f"ckpt-{2**63 - 1:012d}.fkc"  # would leave no next id
    shutil.copy(d / FIRST, d / name)
    return name, "not a canonical checkpoint name"


@pytest.mark.parametrize("make", [_dir, _loop, _dangling, _thirteen, _twenty, _max_id],
                         ids=["directory", "symlink-loop", "dangling-symlink", "13-digits", "20-digits", "2**63-1"])
def test_a_foreign_entry_never_hides_the_valid_checkpoint(tmp_path, make):
    one_good(tmp_path)
    entry, reason = make(tmp_path)
    ck = fk.Checkpointer(str(tmp_path), retain=1)
    assert ck.last_recovered is None
    with pytest.warns(fk.CheckpointWarning) as rec:
        state, info = ck.recover(with_info=True)
    assert state == {"v": 1} and info.id == 1
    assert ck.last_recovered == info
    msgs = [str(w.message) for w in rec if issubclass(w.category, fk.CheckpointWarning)]
    assert any(entry in m and reason in m for m in msgs), msgs
    # list() and latest() name only what loads
    assert [i.id for i in ck.list()] == [1]
    assert ck.latest().id == 1
    for i in ck.list():
        ck.load(i.id)
    # the writer keeps working, retention included (retain=1 prunes every save)
    for v in (2, 3, 4):
        saved = ck.save({"v": v})
        with warnings.catch_warnings():  # look-alike names are warned about on every recover
            warnings.simplefilter("ignore", fk.CheckpointWarning)
            assert ck.recover() == {"v": v}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", fk.CheckpointWarning)
        state, info = ck.recover(with_info=True)
    assert state == {"v": 4} and info.id == saved.id
    assert [i.id for i in ck.list()] == [saved.id]
    assert os.path.lexists(tmp_path / entry) or make in (_loop, _dangling)  # links are pruned, the rest stays
    ck.close()
    # a fresh writer after a restart too
    ck2 = fk.Checkpointer(str(tmp_path))
    ck2.save({"v": 5})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", fk.CheckpointWarning)
        assert ck2.recover() == {"v": 5}
    ck2.close()


def test_recover_with_info_reports_the_fallback(tmp_path):
    ck = fk.Checkpointer(str(tmp_path))
    ck.save({"v": 1})
    bad = ck.save({"v": 2})
    path = tmp_path / f"ckpt-{bad.id:012d}.fkc"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x40
    path.write_bytes(bytes(data))
    with pytest.warns(fk.CheckpointWarning, match=path.name):
        state, info = ck.recover(with_info=True)
    assert state == {"v": 1} and info.id == 1 and ck.last_recovered.id == 1
    with pytest.raises(TypeError, match="with_info"):
        ck.recover(with_info=1)
    ck.close()


_UNREADABLE = textwrap.dedent("""
    import json, os, pwd, shutil, sys, tempfile, warnings
    import faultkit as fk
    # import everything before dropping privileges (the interpreter's files may be root-only)
    Checkpointer, CheckpointWarning = fk.Checkpointer, fk.CheckpointWarning
    import faultkit.recover.checkpointer, faultkit.recover.store, faultkit.recover.codec
    d = sys.argv[1]
    if os.geteuid() == 0:
        nobody = pwd.getpwnam("nobody")
        os.chown(d, nobody.pw_uid, nobody.pw_gid)
        os.setgroups([])
        os.setgid(nobody.pw_gid)
        os.setuid(nobody.pw_uid)
    c = fk.Checkpointer(d)
    c.save({"v": 1})
    c.close()
    p = os.path.join(d, "ckpt-000000000099.fkc")
    shutil.copy(os.path.join(d, "ckpt-000000000001.fkc"), p)
    os.chmod(p, 0)
    try:
        open(p, "rb").close()
        print(json.dumps({"readable": True}))
        sys.exit(0)
    except PermissionError:
        pass
    ck = fk.Checkpointer(d)
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        state, info = ck.recover(with_info=True)
    out = {"state": state, "id": info.id, "warnings": [str(w.message) for w in rec
                                                     if issubclass(w.category, fk.CheckpointWarning)],
           "list": [i.id for i in ck.list()], "latest": ck.latest().id}
    out["saved"] = ck.save({"v": 2}).id
    out["after"] = ck.recover()
    ck.close()
    print(json.dumps(out))
""")


def test_an_unreadable_entry_is_skipped_with_a_warning(tmp_path):
    if os.geteuid() == 0:
        try:
            import pwd
            pwd.getpwnam("nobody")
        except (ImportError, KeyError):
            pytest.skip("running as root and there is no 'nobody' user to drop privileges to")
    d = tmp_path / "ck"
    d.mkdir()
    if os.geteuid() == 0:  # nobody must reach the directory
        for p in (tmp_path, tmp_path.parent, tmp_path.parent.parent):
            if str(p).startswith("/tmp/"):
                os.chmod(p, os.stat(p).st_mode | 0o711)
    env = dict(os.environ)  # the same faultkit as this process: installed, or on its PYTHONPATH
    r = subprocess.run([sys.executable, "-c", _UNREADABLE, str(d)], capture_output=True, text=True, timeout=120,
                       env=env)
    assert r.returncode == 0, r.stderr[-2000:]
    out = json.loads(r.stdout.strip().splitlines()[-1])
    if out.get("readable"):
        pytest.skip("a mode-0 file is readable here (privileges could not be dropped)")
    assert out["state"] == {"v": 1} and out["id"] == 1
    assert any(NEWER in m and "not readable" in m for m in out["warnings"]), out["warnings"]
    assert out["list"] == [1] and out["latest"] == 1
    assert out["saved"] == 100 and out["after"] == {"v": 2}


# ------------------------------------------------------------ verification by default

def _flip_array_bit(path, arr: np.ndarray) -> None:
    data = bytearray(path.read_bytes())
    at = data.find(arr.tobytes()[:64])
    assert at > 0
    data[at + arr.nbytes // 2] ^= 0x01
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("mmap", [False, True])
def test_a_flipped_array_bit_is_caught_by_default(tmp_path, mmap):
    ck = fk.Checkpointer(str(tmp_path))
    good = np.arange(300_000, dtype=np.float64)
    ck.save({"a": good})
    ck.save({"a": good + 1})
    _flip_array_bit(tmp_path / "ckpt-000000000002.fkc", good + 1)
    with pytest.warns(fk.CheckpointWarning, match="ckpt-000000000002.fkc"):
        state, info = ck.recover(mmap=mmap, with_info=True)
    assert info.id == 1
    np.testing.assert_array_equal(state["a"], good)
    if mmap:  # still zero-copy and read-only
        assert not state["a"].flags.writeable and not state["a"].flags.owndata
    with pytest.raises(fk.CorruptCheckpointError):
        ck.load(2, mmap=mmap)
    # the documented opt-out loads the damaged array
    bad = ck.recover(mmap=mmap, verify=False)["a"]
    assert (bad != good + 1).sum() == 1
    with pytest.raises(TypeError, match="verify"):
        ck.recover(verify="yes")
    ck.close()


def test_mmap_recover_is_zero_copy_and_verified(tmp_path):
    ck = fk.Checkpointer(str(tmp_path))
    a = np.arange(1 << 20, dtype=np.int64)
    ck.save({"a": a})
    got = ck.recover(mmap=True)["a"]
    np.testing.assert_array_equal(got, a)
    base = got
    while getattr(base, "base", None) is not None:
        base = base.base
    assert not got.flags.writeable and not got.flags.owndata
    assert not isinstance(base, (bytes, bytearray))  # a view of the map, not a copy
    ck.close()


# ------------------------------------------------------------ crafted files with valid checksums

def crafted(tree: bytes, blobs=()) -> bytes:
    return frame(codec.encode_meta({"meta": None}).tree_bytes(), tree, list(blobs), chunk_size=4096)


def array_tree(dtype: bytes, shape) -> bytes:
    return b"\x20" + bytes([len(dtype)]) + dtype + varint(len(shape)) + b"".join(varint(d) for d in shape) + b"\x00"


@pytest.mark.parametrize("shape", [(2**62, 0), (0, 2**62), (2**62, 4), (2**61, 2**61, 0), (2**60, 0, 16)])
def test_array_shapes_whose_size_overflows_are_corrupt(shape):
    with pytest.raises(fk.CorruptCheckpointError, match="shape"):
        loads(crafted(array_tree(b"<f8", shape), [b""]))


def test_empty_arrays_with_large_dims_decode_to_what_they_describe():
    a = loads(crafted(array_tree(b"<f8", (2**40, 0)), [b""]))
    assert a.shape == (2**40, 0) and a.dtype == np.float64 and a.size == 0


def test_duplicate_keys_and_set_items_are_corrupt():
    one = b"\x03" + (1).to_bytes(8, "little")
    for n in (2, 20):  # the small-dict path and the general one
        tree = b"\x12" + varint(n) + (b"\x06\x01k" + one) * n
        with pytest.raises(fk.CorruptCheckpointError, match="duplicate keys"):
            loads(crafted(tree))
    with pytest.raises(fk.CorruptCheckpointError, match="duplicate items"):
        loads(crafted(b"\x13" + varint(2) + one + one))
    assert loads(crafted(b"\x12" + varint(2) + b"\x06\x01k" + one + b"\x06\x01j" + one)) == {"k": 1, "j": 1}


def test_bool_arrays_hold_only_zero_and_one():
    assert loads(crafted(array_tree(b"|b1", (4,)), [bytes([0, 1, 1, 0])])).tolist() == [False, True, True, False]
    for bad in (bytes([0, 1, 2, 1]), bytes([0xFF, 0, 0, 0])):
        with pytest.raises(fk.CorruptCheckpointError, match="bool array"):
            loads(crafted(array_tree(b"|b1", (4,)), [bad]))


def test_non_canonical_integer_encodings_are_corrupt():
    # a varint count padded with a zero group (0x81 0x00 == 1)
    with pytest.raises(fk.CorruptCheckpointError, match="non-canonical varint"):
        loads(crafted(b"\x10\x81\x00\x02"))
    assert loads(crafted(b"\x10\x01\x02")) == [True]
    # a big int that fits in int64
    with pytest.raises(fk.CorruptCheckpointError, match="fits in int64"):
        loads(crafted(b"\x04\x01\x05"))
    # 2**64 in 10 bytes instead of 9
    big = (2**64).to_bytes(9, "little", signed=True)
    assert loads(crafted(b"\x04\x09" + big)) == 2**64
    with pytest.raises(fk.CorruptCheckpointError, match="redundant bytes"):
        loads(crafted(b"\x04\x0a" + (2**64).to_bytes(10, "little", signed=True)))
    for v in (2**63, -(2**63) - 1, 2**200, -(2**200)):
        assert loads(dumps(v)) == v


# ------------------------------------------------------------ small stacks

_DEEP = textwrap.dedent("""
    import json, sys, threading
    from faultkit.recover import dumps, loads
    deep = {}
    cur = deep
    for _ in range(999):  # 1000 nested dicts
        cur["k"] = {}
        cur = cur["k"]
    blob = dumps(deep)
    out = {}
    def attempt(size):
        def body():
            for name, f in (("loads", lambda: loads(blob)), ("dumps", lambda: dumps(deep))):
                try:
                    f()
                    out[f"{size}:{name}"] = "ok"
                except ValueError as e:
                    out[f"{size}:{name}"] = f"ValueError: {type(e).__name__}: {e}"
        threading.stack_size(size)
        t = threading.Thread(target=body)
        t.start()
        t.join()
    for size in map(int, sys.argv[1:]):
        attempt(size)
    print(json.dumps(out))
""")


@pytest.mark.parametrize("kib", [128, 256, 512, 8192])
def test_deep_nesting_in_a_small_stack_thread_is_a_value_error_not_a_crash(kib):
    env = dict(os.environ)  # the same faultkit as this process: installed, or on its PYTHONPATH
    r = subprocess.run([sys.executable, "-c", _DEEP, str(kib * 1024)], capture_output=True, text=True,
                       timeout=120, env=env)
    assert r.returncode == 0, f"crashed (rc {r.returncode}): {r.stderr[-2000:]}"
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert set(out) == {f"{kib * 1024}:loads", f"{kib * 1024}:dumps"}
    for key, v in out.items():
        assert v == "ok" or ("ValueError: ValueError" in v and "stack" in v), (key, v)
    if kib == 8192:  # a roomy stack takes the whole depth limit
        assert set(out.values()) == {"ok"}
