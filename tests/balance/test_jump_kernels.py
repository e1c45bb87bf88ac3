"""The array kernels of fk.jump_hash (csrc/faultkit/jump.h: portable, AVX2, AVX-512),
each run explicitly through the internal _jump_hash_path and checked bit for bit
against the jump package; a kernel is skipped only where this CPU lacks it."""
import pathlib
import subprocess
import sys

import jump
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import faultkit as fk
from faultkit.balance import _choose as _balance

KERNELS = ["portable", "avx2", "avx512", "best"]
AVAILABLE = _balance._jump_hash_paths()
MUL = 2862933555777941757
MASK = 2**64 - 1
MUL_INV = pow(MUL, -1, 2**64)

u64 = st.integers(min_value=0, max_value=MASK)
buckets = st.one_of(st.just(1), st.integers(min_value=1, max_value=2**31 - 1),
                    st.integers(min_value=1, max_value=5000))


def kernel(name):
    if name not in AVAILABLE:
        pytest.skip(f"this CPU or build has no {name} jump kernel")
    return lambda keys, n: _balance._jump_hash_path(keys, n, name)


def reference(keys, n):
    return [jump.hash(k, n) for k in keys.tolist()]


def keys_reaching(states, steps):
    """Keys whose LCG state after `steps` rounds is each of `states`."""
    out = []
    for s in states:
        for _ in range(steps):
            s = ((s - 1) * MUL_INV) & MASK
        out.append(s)
    return out


def cpu_flags():
    try:
        text = pathlib.Path("/proc/cpuinfo").read_text()
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith("flags"):
            return set(line.split(":", 1)[1].split())
    return None


@pytest.mark.parametrize("name", KERNELS)
@given(keys=st.lists(u64, max_size=300), n=buckets)
@settings(max_examples=60, deadline=None)
def test_kernel_matches_package(name, keys, n):
    run = kernel(name)
    arr = np.array(keys, dtype=np.uint64)
    assert run(arr, n).tolist() == reference(arr, n)


@pytest.mark.parametrize("name", KERNELS)
@pytest.mark.parametrize("length", [0, 1, 7, 8, 9, 15, 17, 63, 64, 65, 1023, 1025, 5003])
def test_kernel_lengths(name, length):
    run = kernel(name)
    rng = np.random.default_rng(length)
    arr = rng.integers(0, MASK, length, dtype=np.uint64, endpoint=True)
    for n in (1, 7, 1000, 2**31 - 1):
        assert run(arr, n).tolist() == reference(arr, n)


@pytest.mark.parametrize("name", KERNELS)
def test_kernel_many_chunks(name):
    """Enough keys for the AVX-512 kernel's queue to be topped up and drained
    many times (it takes input in chunks of 1,024)."""
    run = kernel(name)
    arr = np.random.default_rng(3).integers(0, MASK, 40_000, dtype=np.uint64, endpoint=True)
    for n in (1000, 123_457):
        assert run(arr, n).tolist() == reference(arr, n)


@pytest.mark.parametrize("name", KERNELS)
def test_kernel_extreme_divisors(name):
    """Keys whose LCG state makes the divisor (state >> 33) + 1 equal to 1 or to
    2^31 (the largest) at each of the first rounds, and the ends of the key range."""
    run = kernel(name)
    rng = np.random.default_rng(11)
    low = [int(x) for x in rng.integers(0, 2**33, 64, dtype=np.uint64)]  # divisor 1
    high = [MASK - int(x) for x in rng.integers(0, 2**33, 64, dtype=np.uint64)]  # divisor 2^31
    keys = [0, 1, MASK, MASK - 1, 2**63, 2**63 - 1]
    for steps in (1, 2, 3, 4):
        keys += keys_reaching(low + high, steps)
    arr = np.array(keys, dtype=np.uint64)
    for n in (1, 2, 1000, 2**20, 2**31 - 1):
        assert run(arr, n).tolist() == reference(arr, n)


def test_kernels_agree_with_public_form():
    arr = np.random.default_rng(5).integers(0, MASK, 10_007, dtype=np.uint64, endpoint=True)
    want = fk.jump_hash(arr, 977)
    for name in AVAILABLE:
        assert (_balance._jump_hash_path(arr, 977, name) == want).all(), name
    assert (fk.jump_hash(arr[::3], 977) == want[::3]).all()  # strided input is copied


def test_this_cpu_runs_the_kernels_it_has():
    """A kernel the CPU supports must be available (so the tests above run it)."""
    flags = cpu_flags()
    if flags is None:
        pytest.skip("no /proc/cpuinfo")
    assert "portable" in AVAILABLE and "best" in AVAILABLE
    if {"avx2", "fma"} <= flags:
        assert "avx2" in AVAILABLE
    if {"avx512f", "avx512dq", "avx512vl"} <= flags:
        assert "avx512" in AVAILABLE


SMALL_STACK = r"""
import threading, numpy as np
from faultkit.balance import _choose as _balance
threading.stack_size(32768)  # the smallest Python allows
keys = np.random.default_rng(1).integers(0, 2**64 - 1, 20_000, dtype=np.uint64, endpoint=True)
want = {p: _balance._jump_hash_path(keys, 1000, p) for p in _balance._jump_hash_paths()}
got = {}
def run():
    for p in want:
        got[p] = _balance._jump_hash_path(keys, 1000, p)
t = threading.Thread(target=run)
t.start()
t.join()
assert all((got[p] == want[p]).all() for p in want), "mismatch"
print("ok", sorted(got))
"""


def test_kernels_run_on_a_small_thread_stack():
    """The kernels keep their buffers off the stack: a thread with Python's
    smallest stack (32 KiB) runs every kernel (in a child: a crash is a failure,
    not a dead test run)."""
    r = subprocess.run([sys.executable, "-c", SMALL_STACK], capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0, (r.returncode, r.stderr[-2000:])
    assert r.stdout.startswith("ok")


def test_kernel_selector_bad_input():
    arr = np.zeros(3, dtype=np.uint64)
    with pytest.raises(ValueError, match="unknown jump kernel"):
        _balance._jump_hash_path(arr, 3, "sse9")
    with pytest.raises(TypeError, match="1-D uint64"):
        _balance._jump_hash_path(arr.view(np.int64), 3, "portable")
    with pytest.raises(ValueError, match="num_buckets"):
        _balance._jump_hash_path(arr, 0, "portable")
    with pytest.raises(TypeError, match="num_buckets"):
        _balance._jump_hash_path(arr, 3.0, "portable")


def unaligned(values, dtype):
    """A C-contiguous array of `values` starting one byte past an 8-byte boundary."""
    dt = np.dtype(dtype)
    raw = np.zeros(len(values) * 8 + 8, np.uint8)
    arr = raw[1:1 + len(values) * 8].view(dt)
    arr[:] = values
    assert not arr.flags.aligned and arr.flags.c_contiguous
    return arr


@pytest.mark.parametrize("dtype", [">u8", ">i8", "<u8", "<i8"])
@pytest.mark.parametrize("align", [True, False], ids=["aligned", "unaligned"])
def test_array_keys_of_any_byte_order_and_alignment(dtype, align):
    """Array keys are their integer values, whatever the array's byte order or
    alignment (an unaligned uint64_t* would be undefined behaviour in C++)."""
    rng = np.random.default_rng(17)
    vals = rng.integers(0, MASK, 301, dtype=np.uint64, endpoint=True)
    if "i" in dtype:
        vals = vals.view(np.int64)
    arr = np.array(vals, dtype=dtype) if align else unaligned(vals, dtype)
    for n in (1, 1000, 2**31 - 1):
        want = [jump.hash(int(k) & MASK, n) for k in vals.tolist()]
        assert fk.jump_hash(arr, n).tolist() == want
        assert fk.hash64_many(arr).tolist() == [fk.hash64(int(k)) for k in vals.tolist()]
    if dtype == "<u8":
        with pytest.raises(ValueError, match="aligned"):  # written by C++ through an int pointer
            fk.hash64_many(arr, out=unaligned(np.zeros(len(vals), np.uint64), np.uint64))
        for name in AVAILABLE:
            assert _balance._jump_hash_path(arr, 1000, name).tolist() == [jump.hash(int(k), 1000) for k in vals.tolist()]
