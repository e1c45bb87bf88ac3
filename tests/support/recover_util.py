"""Helpers for the recover tests: exact (bit-for-bit) comparison and state strategies."""
import math
import struct

import numpy as np
from hypothesis import strategies as st


def exact_equal(a, b, path="state"):
    """Assert a and b are the same tree: same types, same float bits, same array dtype/shape/bytes."""
    assert type(a) is type(b), f"{path}: {type(a).__name__} != {type(b).__name__}"
    if isinstance(a, float):
        assert struct.pack("<d", a) == struct.pack("<d", b), f"{path}: {a!r} != {b!r} (bits)"
    elif isinstance(a, np.ndarray):
        assert a.dtype.str == b.dtype.str, f"{path}: dtype {a.dtype.str} != {b.dtype.str}"
        assert a.shape == b.shape, f"{path}: shape {a.shape} != {b.shape}"
        assert a.tobytes(order="C") == b.tobytes(), f"{path}: array bytes differ"
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), f"{path}: len {len(a)} != {len(b)}"
        for i, (x, y) in enumerate(zip(a, b)):
            exact_equal(x, y, f"{path}[{i}]")
    elif isinstance(a, dict):
        assert list(a.keys()) == list(b.keys()), f"{path}: keys or their order differ"
        for k in a:
            exact_equal(a[k], b[k], f"{path}[{k!r}]")
    elif isinstance(a, memoryview):
        assert a.tobytes() == b.tobytes(), path
    else:
        assert a == b, f"{path}: {a!r} != {b!r}"


# Floats from every 64-bit pattern: NaN payloads, signalling NaNs, -0.0, subnormals.
float_bits = st.integers(0, 2**64 - 1).map(lambda u: struct.unpack("<d", struct.pack("<Q", u))[0])
floats = st.one_of(st.floats(allow_nan=True), float_bits, st.sampled_from([0.0, -0.0, math.inf, -math.inf]))
ints = st.one_of(st.integers(-(2**63), 2**63 - 1), st.integers(-(2**300), 2**300),
                 st.sampled_from([2**63, -(2**63) - 1, 2**64, -(2**64), 0, -1]))
# Every code point, lone surrogates included.
texts = st.text(alphabet=st.characters(blacklist_categories=()), max_size=20)
hashable_leaves = st.one_of(st.none(), st.booleans(), ints, texts, st.binary(max_size=20), floats.filter(lambda f: f == f))
hashables = st.recursive(hashable_leaves, lambda c: st.one_of(st.tuples(c, c), st.frozensets(c, max_size=3)), max_leaves=6)

DTYPES = [
    "|b1", "|i1", "|u1", "<i2", ">i2", "<u2", ">u2", "<i4", ">i4", "<u4", "<i8", ">i8", "<u8", ">u8",
    "<f2", ">f2", "<f4", ">f4", "<f8", ">f8", "<c8", ">c8", "<c16", ">c16",
]


@st.composite
def arrays(draw):
    dtype = np.dtype(draw(st.sampled_from(DTYPES)))
    shape = tuple(draw(st.lists(st.integers(0, 4), min_size=0, max_size=4)))
    n = int(np.prod(shape, dtype=np.int64))
    raw = draw(st.binary(min_size=n * dtype.itemsize, max_size=n * dtype.itemsize))
    a = np.frombuffer(raw, dtype=dtype).reshape(shape).copy()
    if dtype.kind == "b":
        a = a.view(np.uint8).astype(bool)  # only 0/1 are valid bools
    view = draw(st.sampled_from(["c", "t", "step"]))
    if view == "t":
        a = a.T  # Fortran order: encoded in C order
    elif view == "step" and a.ndim:
        a = a[::2]
    return a


leaves = st.one_of(
    st.none(), st.booleans(), ints, floats, texts, st.binary(max_size=40),
    st.binary(max_size=40).map(bytearray), st.binary(max_size=40).map(memoryview), arrays(),
)
states = st.recursive(
    leaves,
    lambda c: st.one_of(
        st.lists(c, max_size=4),
        st.lists(c, max_size=4).map(tuple),
        st.dictionaries(hashables, c, max_size=4),
        st.sets(hashables, max_size=4),
        st.frozensets(hashables, max_size=4),
    ),
    max_leaves=20,
)


def crash_state(n):
    """The state the crash test's child saves at step n (deterministic in n)."""
    arr = np.zeros(200_000, dtype="<f8")  # 1.6 MB: several chunks, one changes per step
    arr[(n * 7919) % arr.size] = n
    return {
        "n": n,
        "arr": arr,
        "blob": bytes([n % 256]) * 70_000,
        "tree": [{"i": i, "s": str(n), "f": n / 3} for i in range(n % 50)],
    }


def mounted_tmpfs(path, size: str):
    """Context manager: a fresh tmpfs of ``size`` (e.g. "1m") mounted on directory ``path``
    (a real file system that fills up: ENOSPC), unmounted on exit.  Skips the test when not
    root or when mount is refused (a container without CAP_SYS_ADMIN)."""
    import contextlib
    import os
    import subprocess
    import uuid

    import pytest

    @contextlib.contextmanager
    def cm():
        if os.geteuid() != 0:
            pytest.skip(f"mounting a {size} tmpfs needs root")
        os.makedirs(path, exist_ok=True)
        r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", f"fk-{uuid.uuid4().hex[:8]}", str(path)],
                           capture_output=True, text=True)
        if r.returncode != 0:
            pytest.skip(f"mount refused: {r.stderr.strip()}")
        try:
            yield path
        finally:
            subprocess.run(["umount", "-l", str(path)], check=True)

    return cm()
