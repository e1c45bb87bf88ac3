"""fk.hash64 / fk.hash64_many: bit-identical to python-xxhash's XXH3-64, clean errors."""
import threading

import numpy as np
import pytest
import xxhash
from hypothesis import given, settings, strategies as st

import faultkit as fk

seeds = st.integers(min_value=0, max_value=2**64 - 1)


def ref(data: bytes, seed: int = 0) -> int:
    return xxhash.xxh3_64_intdigest(data, seed)


@pytest.mark.parametrize("seed", [0, 1, 0x9E3779B185EBCA87, 2**64 - 1])
def test_every_length_0_to_4096(seed):
    # One random buffer, every prefix length: covers each size class of XXH3
    # (0, 1-3, 4-8, 9-16, 17-128, 129-240, long with 1..4 blocks) and their edges.
    buf = np.random.default_rng(seed & 0xFFFF).integers(0, 256, 4097, dtype=np.uint8).tobytes()
    for n in range(len(buf)):
        assert fk.hash64(buf[:n], seed) == ref(buf[:n], seed), n


@given(st.binary(max_size=5000), seeds)
@settings(max_examples=500)
def test_random_bytes_and_seeds(data, seed):
    assert fk.hash64(data, seed) == ref(data, seed)
    assert fk.hash64(bytearray(data), seed) == ref(data, seed)
    assert fk.hash64(memoryview(data), seed) == ref(data, seed)


@given(st.text(max_size=300), seeds)
def test_str_hashes_as_utf8(text, seed):
    assert fk.hash64(text, seed) == ref(text.encode("utf-8"), seed)


@given(st.integers(min_value=-(2**63), max_value=2**64 - 1), seeds)
def test_int_hashes_as_8_byte_little_endian(value, seed):
    data = (value & (2**64 - 1)).to_bytes(8, "little")
    assert fk.hash64(value, seed) == ref(data, seed)


def test_int_edges():
    assert fk.hash64(0) == ref(bytes(8))
    assert fk.hash64(-1) == fk.hash64(2**64 - 1) == ref(b"\xff" * 8)
    assert fk.hash64(True) == fk.hash64(1)
    assert fk.hash64(-(2**63)) == ref((2**63).to_bytes(8, "little"))


def test_str_subclass_and_non_contiguous_buffer():
    class S(str):
        pass

    assert fk.hash64(S("abc")) == ref(b"abc")
    arr = np.arange(10, dtype=np.uint8)
    assert fk.hash64(memoryview(arr)) == ref(arr.tobytes())
    with pytest.raises(BufferError, match=r"memoryview: underlying buffer is not C-contiguous"):
        fk.hash64(memoryview(arr)[::2])


@pytest.mark.parametrize("bad", [None, 1.5, [], {}, (b"a",), object()])
def test_bad_key_types(bad):
    with pytest.raises(TypeError, match=type(bad).__name__):
        fk.hash64(bad)


@pytest.mark.parametrize("bad", [2**64, -(2**63) - 1, 10**30, -(10**30)])
def test_int_out_of_range(bad):
    with pytest.raises(OverflowError, match=str(bad)):
        fk.hash64(bad)


def test_bad_seed():
    with pytest.raises(TypeError, match="float"):
        fk.hash64(b"x", 1.0)
    with pytest.raises(OverflowError, match=r"seed -1 is outside \[0, 2\*\*64 - 1\]"):
        fk.hash64(b"x", -1)
    with pytest.raises(OverflowError, match=r"seed 18446744073709551616 is outside \[0, 2\*\*64 - 1\]"):
        fk.hash64(b"x", 2**64)


def test_lone_surrogate_is_a_clean_error():
    with pytest.raises(UnicodeEncodeError, match=r"'utf-8' codec can't encode character '\\ud800' in position 0: surrogates not"):
        fk.hash64("\ud800")


# ---- hash64_many -------------------------------------------------------------


@given(st.lists(st.one_of(st.text(max_size=40), st.binary(max_size=300)), max_size=60), seeds)
def test_many_equals_one_by_one(keys, seed):
    out = fk.hash64_many(keys, seed)
    assert out.dtype == np.uint64 and out.shape == (len(keys),)
    assert out.tolist() == [fk.hash64(k, seed) for k in keys]
    assert fk.hash64_many(tuple(keys), seed).tolist() == out.tolist()


def test_many_mixed_key_types():
    keys = ["a", b"b", bytearray(b"c"), 7, -7, memoryview(b"d")]
    assert fk.hash64_many(keys).tolist() == [fk.hash64(k) for k in keys]


def test_many_long_keys_release_the_gil_and_stay_correct():
    keys = [bytes([i % 251]) * 1000 for i in range(300)]  # 300 KB: over the GIL threshold
    assert fk.hash64_many(keys, 3).tolist() == [ref(k, 3) for k in keys]


def test_many_numpy_integer_arrays():
    vals = np.array([0, 1, -1, 2**62, -(2**63)], dtype=np.int64)
    expect = [fk.hash64(int(v)) for v in vals]
    assert fk.hash64_many(vals).tolist() == expect
    assert fk.hash64_many(vals.view(np.uint64)).tolist() == expect
    assert fk.hash64_many(vals[::-1]).tolist() == expect[::-1]  # non-contiguous input


def test_many_out_parameter():
    out = np.zeros(3, dtype=np.uint64)
    assert fk.hash64_many(["a", "b", "c"], out=out) is out
    assert out.tolist() == [ref(b"a"), ref(b"b"), ref(b"c")]
    with pytest.raises(ValueError, match="length 3"):
        fk.hash64_many(["a"], out=out)
    with pytest.raises(TypeError, match=r"out must be a 1-D numpy uint64 array"):
        fk.hash64_many(["a"], out=np.zeros(1, dtype=np.int64))
    with pytest.raises(ValueError, match="contiguous"):
        fk.hash64_many(["a", "b"], out=np.zeros(4, dtype=np.uint64)[::2])


def test_many_empty():
    assert fk.hash64_many([]).shape == (0,)
    assert fk.hash64_many(np.array([], dtype=np.uint64)).shape == (0,)


def test_many_bad_input():
    with pytest.raises(TypeError, match="NoneType"):
        fk.hash64_many(["a", None])
    with pytest.raises(TypeError, match="set"):
        fk.hash64_many({"a"})
    with pytest.raises(TypeError, match="str"):
        fk.hash64_many("abc")
    with pytest.raises(TypeError, match="float64"):
        fk.hash64_many(np.zeros(3))
    with pytest.raises(TypeError, match="2-D"):
        fk.hash64_many(np.zeros((2, 2), dtype=np.uint64))
    with pytest.raises(OverflowError, match=r"int key 1180591620717411303424 is outside the 64-bit range \[-2\*\*63, 2\*\*64 - 1\]"):
        fk.hash64_many([1, 2**70])


def test_many_while_another_thread_mutates_the_list():
    # The call snapshots the list, so a concurrent mutation cannot free a key
    # whose bytes are being hashed without the GIL.
    keys = [("k%d" % i) * 200 for i in range(2000)]
    expect = [ref(k.encode()) for k in keys]
    stop = threading.Event()

    def mutate():
        while not stop.is_set():
            keys.append(keys.pop(0) + "")

    t = threading.Thread(target=mutate)
    t.start()
    try:
        for _ in range(20):
            got = set(fk.hash64_many(keys).tolist())
            assert got <= set(expect) | {ref((k + "").encode()) for k in keys}
    finally:
        stop.set()
        t.join()
