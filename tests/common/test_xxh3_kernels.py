"""The XXH3 kernels of csrc/faultkit/common/xxh3.h (portable, AVX2, AVX-512),
each forced through the internal _hash64_path / _hash64_ints_path and checked
bit for bit against python-xxhash across every length class of XXH3 and the
long loop's block, stripe and last-stripe edges; a kernel is skipped only
where this CPU lacks it."""
import numpy as np
import pytest
import xxhash
from hypothesis import given, settings, strategies as st

import faultkit as fk
from faultkit._common import xxh3 as _xxh3

KERNELS = ["scalar", "avx2", "avx512", "best"]
AVAILABLE = _xxh3._hash64_paths()
SEEDS = [0, 1, 0x9E3779B185EBCA87, 2**64 - 1]
seeds = st.integers(min_value=0, max_value=2**64 - 1)

BLOCK = 1024  # bytes of input per scramble with the default 192-byte secret
STRIPE = 64
# Lengths of every class: 0, 1-3, 4-8, 9-16, 17-128, 129-240, then the long
# loop: one partial block, exact blocks and one past them, each stripe count of
# the last block, several KiB, and over 1 MiB.
LENGTHS = sorted({
    0, 1, 2, 3, 4, 5, 7, 8, 9, 15, 16, 17, 31, 32, 33, 64, 65, 96, 97, 127, 128,
    129, 144, 239, 240, 241, 255, 256, 257, 511, 512, 1023,
    *(BLOCK * k + d for k in (1, 2, 3, 4) for d in (-1, 0, 1)),
    *(BLOCK + STRIPE * s + d for s in range(16) for d in (0, 1, 63)),
    5000, 8192, 65536 + 17,
    (1 << 20) - 1, 1 << 20, (1 << 20) + 1, (1 << 20) + STRIPE, (1 << 20) + STRIPE + 1,
    3 * (1 << 20) + 999,
})
BUF = np.random.default_rng(11).integers(0, 256, max(LENGTHS), dtype=np.uint8).tobytes()


def kernel(name):
    if name not in AVAILABLE:
        pytest.skip(f"this CPU or build has no {name} XXH3 kernel")
    return name


def ref(data, seed):
    return xxhash.xxh3_64_intdigest(data, seed)


def test_portable_kernel_is_always_there():
    assert AVAILABLE[:2] == ["best", "scalar"]


@pytest.mark.parametrize("name", KERNELS)
@pytest.mark.parametrize("seed", SEEDS)
def test_every_length_class_and_long_loop_edge(name, seed):
    path = kernel(name)
    view = memoryview(BUF)
    for n in LENGTHS:
        # Both ends of the buffer, so the last stripe reads right up to its end.
        for data in (view[:n], view[len(BUF) - n:]):
            assert _xxh3._hash64_path(data, seed, path) == ref(data, seed), (n, seed)


@pytest.mark.parametrize("name", KERNELS)
@given(data=st.binary(min_size=200, max_size=6000), seed=seeds)
@settings(max_examples=80, deadline=None)
def test_random_inputs_and_seeds(name, data, seed):
    assert _xxh3._hash64_path(data, seed, kernel(name)) == ref(data, seed)


@pytest.mark.parametrize("name", KERNELS)
@given(values=st.lists(st.integers(min_value=0, max_value=2**64 - 1), max_size=40), seed=seeds)
@settings(max_examples=60, deadline=None)
def test_integer_kernels(name, values, seed):
    arr = np.array(values, dtype=np.uint64)
    got = _xxh3._hash64_ints_path(arr, seed, kernel(name)).tolist()
    assert got == [ref(v.to_bytes(8, "little"), seed) for v in values]


def test_public_calls_use_the_best_kernel():
    # hash64, hash64_many and the checkpoint codec's chunk checksums all run
    # xxh3.h's dispatch; equal to the reference whatever kernel it chose.
    chunk = BUF[: (1 << 20) + 5]
    assert fk.hash64(chunk) == ref(chunk, 0) == _xxh3._hash64_path(chunk, 0, "best")
    assert fk.hash64_many([chunk, chunk[:300]], 7).tolist() == [ref(chunk, 7), ref(chunk[:300], 7)]
    ints = np.arange(1001, dtype=np.uint64) * np.uint64(0x9E3779B97F4A7C15)
    assert fk.hash64_many(ints, 3).tolist() == [ref(int(v).to_bytes(8, "little"), 3) for v in ints]


def test_bad_kernel_names():
    with pytest.raises(ValueError, match="'sse9'"):
        _xxh3._hash64_path(b"x", 0, "sse9")
    with pytest.raises(ValueError, match="'sse9'"):
        _xxh3._hash64_ints_path(np.zeros(1, dtype=np.uint64), 0, "sse9")
