"""Corruption is always detected and recovery falls back; the decoder gives only clean errors."""
import os
import shutil
import warnings

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import faultkit as fk
from faultkit.recover import dumps, loads
from recover_format_ref import frame, varint
from recover_util import exact_equal, states

OLD = {"gen": "old", "a": np.arange(5000, dtype="<f8"), "b": b"\x07" * 70_000, "items": [1, "x", None]}
NEW = {"gen": "new", "a": np.arange(5000, dtype="<f8") * 2, "b": b"\x08" * 70_000, "items": [2, "y", 3.5]}
NEW_BLOB = dumps(NEW)


@pytest.fixture(scope="module")
def pristine(tmp_path_factory):
    d = tmp_path_factory.mktemp("pristine")
    with fk.Checkpointer(d, chunk_size=4096) as ck:
        ck.save(OLD)
        ck.save(NEW)
    return d


def damaged_dir(pristine, tmp_path, damage):
    d = tmp_path / "ck"
    shutil.copytree(pristine, d)
    p = d / "ckpt-000000000002.fkc"
    data = bytearray(p.read_bytes())
    data = damage(data)
    p.write_bytes(bytes(data))
    return d


def assert_falls_back(d):
    with pytest.warns(fk.CheckpointWarning, match="ckpt-000000000002.fkc"):
        exact_equal(OLD, fk.Checkpointer(d).recover())
    with pytest.raises(fk.CorruptCheckpointError):
        fk.Checkpointer(d).load(2)


@given(pos=st.integers(0, len(NEW_BLOB) - 1), bit=st.integers(0, 7))
@settings(max_examples=300, deadline=None)
def test_any_bit_flip_is_detected(pos, bit):
    data = bytearray(NEW_BLOB)
    data[pos] ^= 1 << bit
    with pytest.raises(fk.CorruptCheckpointError):
        loads(bytes(data))


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(frac=st.floats(0, 1), bit=st.integers(0, 7))
def test_bit_flip_in_a_file_falls_back(pristine, tmp_path_factory, frac, bit):
    tmp = tmp_path_factory.mktemp("flip")

    def flip(data):
        data[min(int(frac * len(data)), len(data) - 1)] ^= 1 << bit
        return data

    assert_falls_back(damaged_dir(pristine, tmp, flip))


@pytest.mark.parametrize("keep", [0, 1, 63, 64, 100, 4096, 0.5, -64, -1])
def test_truncation_is_detected(pristine, tmp_path, keep):
    def cut(data):
        n = int(keep * len(data)) if isinstance(keep, float) else (keep if keep >= 0 else len(data) + keep)
        return data[:n]

    assert_falls_back(damaged_dir(pristine, tmp_path, cut))


@pytest.mark.parametrize("page", [0, 1, 2, 5, -1])
def test_zeroed_page_is_detected(pristine, tmp_path, page):
    def zero(data):
        start = (page % ((len(data) + 4095) // 4096)) * 4096
        data[start:start + 4096] = bytes(len(data[start:start + 4096]))
        return data

    assert_falls_back(damaged_dir(pristine, tmp_path, zero))


def test_appended_junk_is_detected(pristine, tmp_path):
    assert_falls_back(damaged_dir(pristine, tmp_path, lambda d: d + b"\x00" * 64))


def test_swapped_files_are_detected(pristine, tmp_path):
    d = tmp_path / "ck"
    shutil.copytree(pristine, d)
    a, b = d / "ckpt-000000000001.fkc", d / "ckpt-000000000002.fkc"
    tmp = d / "swap"
    os.rename(a, tmp)
    os.rename(b, a)
    os.rename(tmp, b)
    with pytest.warns(fk.CheckpointWarning) as rec:
        with pytest.raises(fk.NoCheckpointError):
            fk.Checkpointer(d).recover()
    messages = " ".join(str(w.message) for w in rec)
    assert "holds checkpoint 1, not 2" in messages and "holds checkpoint 2, not 1" in messages


def test_newer_version_file_is_skipped_with_a_clear_warning(pristine, tmp_path):
    def bump(data):
        data[8:10] = (7).to_bytes(2, "little")
        return data

    d = damaged_dir(pristine, tmp_path, bump)
    with pytest.warns(fk.CheckpointWarning, match="newer than this reader"):
        exact_equal(OLD, fk.Checkpointer(d).recover())


def test_all_corrupt_raises_no_checkpoint(pristine, tmp_path):
    d = tmp_path / "ck"
    shutil.copytree(pristine, d)
    for p in d.glob("*.fkc"):
        p.write_bytes(b"\x00" * 10)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", fk.CheckpointWarning)
        with pytest.raises(fk.NoCheckpointError, match="2 corrupt skipped"):
            fk.Checkpointer(d).recover()


# ---- decoder fuzzing: only CorruptCheckpointError, never a crash or another error

SEED_STATES = [OLD, [1, 2.5, "x", b"y", {"k": (None, True)}, {1, 2}], np.arange(10)]
SEED_BLOBS = [dumps(s) for s in SEED_STATES]


@given(st.binary(max_size=600))
@settings(max_examples=400, deadline=None)
def test_fuzz_random_bytes(data):
    with pytest.raises(fk.CorruptCheckpointError):
        loads(data)


@st.composite
def mutated(draw):
    """(seed index, a seed blob after 1-8 random set/insert/delete edits)."""
    i = draw(st.integers(0, len(SEED_BLOBS) - 1))
    blob = bytearray(SEED_BLOBS[i])
    for _ in range(draw(st.integers(1, 8))):
        op = draw(st.sampled_from(["set", "insert", "delete"]))
        pos = draw(st.integers(0, len(blob) - 1))
        if op == "set":
            blob[pos] = draw(st.integers(0, 255))
        elif op == "insert":
            blob[pos:pos] = draw(st.binary(min_size=1, max_size=8))
        elif len(blob) > 1:
            del blob[pos:pos + draw(st.integers(1, 8))]
    return i, bytes(blob)


@given(mutated())
@settings(max_examples=300, deadline=None)
def test_fuzz_mutated_blobs(case):
    """Every byte is checksummed: a load that succeeds means the edits cancelled out."""
    i, data = case
    try:
        got = loads(data)
    except fk.CorruptCheckpointError:
        return
    assert data == SEED_BLOBS[i], "an edited file loaded"
    exact_equal(SEED_STATES[i], got)


@st.composite
def resealed(draw):
    """A mutated tree framed with valid checksums: exercises the tree decoder itself.

    Returns (original state, original tree, mutated tree, framed file)."""
    from faultkit.recover import codec

    state = draw(states)
    enc = codec.encode(state)
    original = enc.tree_bytes()
    tree = bytearray(original)
    for _ in range(draw(st.integers(1, 4))):
        pos = draw(st.integers(0, max(len(tree) - 1, 0)))
        if tree:
            tree[pos] = draw(st.integers(0, 255))
        if draw(st.booleans()):
            del tree[pos:]
    blobs = [bytes(draw(st.binary(max_size=64))) for _ in range(enc.blob_count)]
    blob = frame(codec.encode_meta({"meta": None}).tree_bytes(), bytes(tree), blobs, chunk_size=4096)
    return state, original, bytes(tree), blobs, blob


def _has_set(value) -> bool:
    if isinstance(value, (set, frozenset)):
        return True
    if isinstance(value, (list, tuple)):
        return any(_has_set(v) for v in value)
    if isinstance(value, dict):
        return any(_has_set(k) or _has_set(v) for k, v in value.items())
    return False


@given(resealed())
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_fuzz_tree_decoder_behind_valid_checksums(case):
    """What the decoder accepts is exactly what the tree describes (docs/FORMAT.md: the
    encoding is canonical, so the decoder is the encoder's inverse): an unchanged tree gives
    the original state back; a changed one that decodes re-encodes to the same tree bytes
    (sets aside, whose item order is the set's own; NaN keys make no two sets equal), and
    survives a round trip unchanged."""
    from faultkit.recover import codec

    state, original, tree, blobs, blob = case
    try:
        got = loads(blob)
    except fk.CorruptCheckpointError:
        return
    if tree == original and not codec.encode(state).blob_count:
        exact_equal(state, got)
    again = codec.encode(got)
    back = loads(dumps(got))
    if not _has_set(got):  # compared as encoded bytes: NaN keys are equal to nothing
        assert codec.encode(back).tree_bytes() == again.tree_bytes()
        if not again.blob_count:
            assert again.tree_bytes() == tree, "a non-canonical tree was accepted"
    assert len(dumps(back)) == len(dumps(got))


@given(states)
@settings(max_examples=100, deadline=None)
def test_reference_framing_is_read_by_the_native_reader(state):
    """Files framed by the Python reference writer (docs/FORMAT.md) decode to the same state."""
    from faultkit.recover import codec

    enc = codec.encode(state)
    if enc.blob_count:
        return  # blobs need the arrays' bytes, which only the native side holds
    blob = frame(codec.encode_meta({"meta": None}).tree_bytes(), enc.tree_bytes(), chunk_size=4096)
    assert blob == dumps_with_chunk(state, 4096)
    exact_equal(state, loads(blob))


def dumps_with_chunk(state, chunk_size):
    from faultkit.recover import _codec
    from faultkit.recover import codec

    return _codec.dumps(codec.encode(state), codec.encode_meta({"meta": None}), chunk_size=chunk_size)


def _framed(tree: bytes) -> bytes:
    from faultkit.recover import codec

    return frame(codec.encode_meta({"meta": None}).tree_bytes(), tree, chunk_size=4096)


@pytest.mark.parametrize("tree, reason", [
    (b"\x10\x01" * 1001 + b"\x00", "depth limit"),                 # lists nested 1001 deep
    (b"\x10" + varint(2**40), "count exceeds"),                    # a list claiming 2**40 items
    (b"\x12" + varint(2**62), "count exceeds"),                    # a dict claiming 2**62 pairs
    (b"\x06" + varint(2**63), "length exceeds"),                   # a str longer than the file
    (b"\x04" + varint(5) + b"\x01", "length exceeds"),             # a big int cut short
    (b"\x06\x02\xff\xfe", "invalid UTF-8"),
    (b"\x12\x01\x10\x00\x00", "bad dict key"),                      # an unhashable (list) key
    (b"\x20\x03<f8\x01\x02\x00", "missing blob"),                   # an array without its blob
    (b"\x20\x03<O8\x00\x00", "bad array dtype"),                    # object dtype refused unparsed
    (b"\x30\x03abc\x00", "unknown registered type 'abc'"),
    (b"\x7f", "unknown tag"),
    (b"\x00\x00", "trailing bytes"),
])
def test_decoder_limits_and_malformed_trees(tree, reason):
    with pytest.raises(fk.CorruptCheckpointError, match=reason):
        loads(_framed(tree))


def test_array_shape_must_match_its_blob():
    from faultkit.recover import codec

    meta = codec.encode_meta({"meta": None}).tree_bytes()
    tree = b"\x20\x03<f8\x01" + varint(3) + b"\x00"  # 3 float64 = 24 bytes
    assert loads(frame(meta, tree, [bytes(24)], chunk_size=4096)).shape == (3,)
    for blob in (bytes(16), bytes(32)):
        with pytest.raises(fk.CorruptCheckpointError, match="shape disagrees"):
            loads(frame(meta, tree, [blob], chunk_size=4096))
    huge = b"\x20\x03<f8\x02" + varint(2**62) + varint(2**62) + b"\x00"  # product overflows
    with pytest.raises(fk.CorruptCheckpointError, match="shape.s size overflows"):
        loads(frame(meta, huge, [bytes(8)], chunk_size=4096))
