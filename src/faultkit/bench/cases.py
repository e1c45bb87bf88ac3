"""What ``faultkit bench`` measures: each case is faultkit's call and the peers' calls
that do the same work, built outside the timer.

A case's factories return the zero-argument callable that is timed; a peer whose
library is not installed is skipped (``pip install 'faultkit[bench]'`` installs
them all).  ``scale`` multiplies the data sizes (1.0 is the size the README's
figures use; ``--quick`` runs 0.1).
"""
from __future__ import annotations

import importlib
import os
import pickle
import tempfile
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Iterator, List, Tuple

import numpy as np

import faultkit as fk

__all__ = ["Case", "all_cases", "PILLARS"]

Factory = Callable[[], Callable[[], Any]]
PILLARS = ("hash", "balance", "detect", "contain", "recover")


@dataclass
class Case:
    """One comparison: ``ours`` against each of ``peers`` ({label: (module, factory)})."""

    pillar: str
    name: str
    config: str
    ours: Factory
    peers: Dict[str, Tuple[str, Factory]]
    gc_modes: Tuple[str, ...] = ("natural",)
    cleanup: List[Callable[[], None]] = field(default_factory=list)


def _keys(n: int, seed: int = 0) -> List[str]:
    rng = np.random.default_rng(seed)
    return [f"{v:016x}" for v in rng.integers(0, 2**63, n, dtype=np.int64).tolist()]


def _mod(name: str) -> Any:
    return importlib.import_module(name)


def _kept(fn: Callable[[], Any]) -> Callable[[], None]:
    """``fn`` whose result lives until the next call, as a program keeps what it decoded:
    so the collector has the result to traverse, whoever paused it."""
    box: List[Any] = [None]

    def run() -> None:
        box[0] = fn()
    return run


def _n(base: int, scale: float, floor: int = 1000) -> int:
    return max(floor, int(base * scale))


# ------------------------------------------------------------------ hash

def hash_cases(scale: float) -> Iterator[Case]:
    keys = _keys(1000)

    def ours():
        h = fk.hash64
        return lambda: [h(k) for k in keys]

    def xxh():
        f = _mod("xxhash").xxh3_64_intdigest
        return lambda: [f(k.encode()) for k in keys]

    yield Case("hash", "hash64(str), 1,000 16-char keys", "XXH3-64, seed 0", ours,
               {"xxhash.xxh3_64_intdigest(k.encode())": ("xxhash", xxh)})


# ------------------------------------------------------------------ balance

def balance_cases(scale: float) -> Iterator[Case]:
    nodes100 = [f"node-{i}" for i in range(100)]
    nodes1000 = [f"10.0.{i // 256}.{i % 256}:11211" for i in range(1000)]
    keys = _keys(1000, seed=1)

    def ring_get():
        get = fk.HashRing(nodes100).get
        return lambda: [get(k) for k in keys]

    def uh_default():
        get = _mod("uhashring").HashRing(nodes100).get_node
        return lambda: [get(k) for k in keys]

    def uh_xxh3():
        xxh3 = _mod("xxhash").xxh3_64_intdigest
        get = _mod("uhashring").HashRing(nodes100, hash_fn=lambda k: xxh3(k.encode())).get_node
        return lambda: [get(k) for k in keys]

    yield Case("balance", "HashRing.get(str), 100 nodes, 1,000 keys", "faultkit XXH3 ring, 160 vnodes", ring_get,
               {"uhashring (its default, MD5 in Python)": ("uhashring", uh_default),
                "uhashring with an XXH3 hash_fn (same hash)": ("uhashring", uh_xxh3)})

    def ketama_get():
        get = fk.HashRing.ketama(nodes100, compat="uhashring").get
        return lambda: [get(k) for k in keys]

    def uh_ketama():
        get = _mod("uhashring").HashRing(nodes100, hash_fn="ketama").get_node
        return lambda: [get(k) for k in keys]

    yield Case("balance", "ketama get(str), 100 nodes, 1,000 keys", "ketama against ketama (both MD5)",
               ketama_get, {"uhashring ketama": ("uhashring", uh_ketama)})

    n = _n(1_000_000, scale)
    hashes = np.random.default_rng(2).integers(0, 2**64 - 1, n, dtype=np.uint64)

    def get_many():
        ring = fk.HashRing(nodes100)
        return lambda: ring.get_many(hashes)

    def searchsorted():
        points, _ = fk.HashRing(nodes100).points()
        return lambda: np.searchsorted(points, hashes)

    yield Case("balance", f"HashRing.get_many, {n:,} uint64 hashes", "100 nodes; the peer only searches",
               get_many, {"np.searchsorted over the ring's points": ("numpy", searchsorted)})

    def build():
        return lambda: fk.HashRing(nodes1000)

    def uh_build():
        ring_cls = _mod("uhashring").HashRing
        return lambda: ring_cls(nodes1000)

    yield Case("balance", "build, 1,000 nodes x 160 vnodes", "XXH3 ring vs uhashring's default", build,
               {"uhashring": ("uhashring", uh_build)})

    def add_remove():
        ring = fk.HashRing(nodes1000)

        def run():
            ring.add("extra:11211")
            ring.remove("extra:11211")
        return run

    def uh_add_remove():
        ring = _mod("uhashring").HashRing(nodes1000)

        def run():
            ring.add_node("extra:11211")
            ring.remove_node("extra:11211")
        return run

    yield Case("balance", "add + remove one node, 1,000 nodes", "incremental vs uhashring", add_remove,
               {"uhashring": ("uhashring", uh_add_remove)})

    # fastring (Rust, PyO3; CPython >= 3.13 only): the same algorithm as fk.HashRing -- XXH3-64
    # of each key, binary search over sorted XXH3-64 vnode points (its points hash
    # name + "#" + the vnode index, ours name and index differently, so owners differ but the
    # work does not).  Equal work: the same 100 nodes, 160 vnodes each (its default is 128),
    # the same 1,000 keys, node names returned.
    def fr_ring():
        ring = _mod("fastring").HashRing(virtual_nodes=160)
        for node in nodes100:
            ring.add_node(node)
        return ring

    def fr_get():
        get = fr_ring().get_node
        return lambda: [get(k) for k in keys]

    yield Case("balance", "HashRing.get(str) vs fastring, 100 nodes x 160 vnodes, 1,000 keys",
               "both XXH3-64 rings, binary search; a Python loop of single calls", ring_get,
               {"fastring.HashRing.get_node (Rust)": ("fastring", fr_get)})

    def ring_batch():
        ring = fk.HashRing(nodes100)
        names = ring.nodes
        return lambda: [names[i] for i in ring.get_many(keys).tolist()]

    def fr_batch():
        ring = fr_ring()
        return lambda: ring.get_node_batch(keys)

    yield Case("balance", "batch of 1,000 str keys -> node names, 100 nodes x 160 vnodes",
               "get_many (indices) mapped to names vs fastring's get_node_batch", ring_batch,
               {"fastring.HashRing.get_node_batch (Rust)": ("fastring", fr_batch)})

    jkeys = np.random.default_rng(3).integers(0, 2**63, _n(1_000_000, scale), dtype=np.int64).astype(np.uint64)

    def jump_array():
        return lambda: fk.jump_hash(jkeys, 1000)

    def jump_loop():
        h = _mod("jump").hash
        ints = jkeys.tolist()
        return lambda: [h(k, 1000) for k in ints]

    yield Case("balance", f"jump_hash, {len(jkeys):,}-key array, 1,000 buckets",
               "the peer has no array call: a Python loop, so this is mostly call overhead",
               jump_array, {"jump.hash per key": ("jump", jump_loop)})


# ------------------------------------------------------------------ detect

def detect_cases(scale: float) -> Iterator[Case]:
    n = _n(1_000_000, scale)
    rng = np.random.default_rng(4)
    ids = rng.integers(0, n, n).astype(np.int64)
    times = np.sort(rng.uniform(0.0, 1.0, n))

    def timeout_beats():
        det = fk.TimeoutDetector(5.0)
        det.add_many(range(n))
        return lambda: det.heartbeat_many(ids, times)

    def phi_beats():
        det = fk.PhiAccrualDetector()
        det.add_many(range(n))
        return lambda: det.heartbeat_many(ids, times)

    def scatter():
        last = np.zeros(n)

        def run():
            last[ids] = times
        return run

    yield Case("detect", f"TimeoutDetector.heartbeat_many, {n:,} random ids", "a deadline per id",
               timeout_beats, {"numpy scatter last[ids] = times": ("numpy", scatter)})
    yield Case("detect", f"PhiAccrualDetector.heartbeat_many, {n:,} random ids", "the default window estimator",
               phi_beats, {"numpy scatter last[ids] = times": ("numpy", scatter)})

    def scan():
        det = fk.TimeoutDetector(5.0)
        det.heartbeat_many(det.add_many(range(n)), np.full(n, 1.0))
        det.scan(1.0)
        return lambda: det.scan(2.0)

    def flatnonzero():
        deadline = np.full(n, 6.0)
        return lambda: np.flatnonzero(deadline <= 2.0)

    yield Case("detect", f"TimeoutDetector.scan, {n:,} components, nothing expiring", "", scan,
               {"np.flatnonzero(deadline <= now)": ("numpy", flatnonzero)})


# ------------------------------------------------------------------ contain

def _ok(x: int) -> int:
    return x


def contain_cases(scale: float) -> Iterator[Case]:
    def ours():
        call = fk.CircuitBreaker().call
        return lambda: call(_ok, 1)

    def pybreaker():
        call = _mod("pybreaker").CircuitBreaker().call
        return lambda: call(_ok, 1)

    def circuitbreaker():
        f = _mod("circuitbreaker").circuit(_ok)
        return lambda: f(1)

    yield Case("contain", "CircuitBreaker.call, closed, success", "one protected call a timed call", ours,
               {"pybreaker .call": ("pybreaker", pybreaker),
                "circuitbreaker @circuit": ("circuitbreaker", circuitbreaker)})


# ------------------------------------------------------------------ recover

def recover_cases(scale: float) -> Iterator[Case]:
    tmp = tempfile.TemporaryDirectory(prefix="faultkit-bench-")
    root = tmp.name
    mib = max(1, int(256 * scale))
    per = (mib << 20) // 8 // 4
    rng = np.random.default_rng(5)
    arrays = {f"a{i}": rng.random(per, dtype=np.float32) for i in range(8)}
    raw = b"".join(a.tobytes() for a in arrays.values())
    cfg = f"8 float32 arrays, {mib} MiB, page cache, no fsync for anyone"

    def save(recycle: bool) -> Factory:
        def make():
            ck = fk.Checkpointer(os.path.join(root, f"ck-{recycle}"), retain=1, fsync=False, recycle=recycle)
            return lambda: ck.save(arrays)
        return make

    def np_savez():
        path = os.path.join(root, "a.npz")
        return lambda: np.savez(path, **arrays)

    def st_save():
        save_file = _mod("safetensors.numpy").save_file
        path = os.path.join(root, "a.safetensors")
        return lambda: save_file(arrays, path)

    def pickle_dump():
        path = os.path.join(root, "a.pkl")

        def run():
            with open(path, "wb") as f:
                pickle.dump(arrays, f, protocol=5)
        return run

    def plain_write():
        path = os.path.join(root, "a.raw")

        def run():
            with open(path, "wb") as f:
                f.write(raw)
        return run

    yield Case("recover", "save, into the file retention freed (default)", cfg, save(True),
               {"np.savez": ("numpy", np_savez), "safetensors save_file": ("safetensors", st_save),
                "pickle.dump(protocol=5)": ("pickle", pickle_dump)})
    yield Case("recover", "save(recycle=False), into a new file", cfg, save(False),
               {"a plain write of the same bytes": ("os", plain_write),
                "safetensors save_file": ("safetensors", st_save)})

    def recover():
        ck = fk.Checkpointer(os.path.join(root, "ck-r"), retain=1, fsync=False)
        ck.save(arrays)
        return lambda: ck.recover()

    def st_load():
        mod = _mod("safetensors.numpy")
        path = os.path.join(root, "r.safetensors")
        mod.save_file(arrays, path)
        return lambda: mod.load_file(path)

    def np_load():
        path = os.path.join(root, "r.npz")
        np.savez(path, **arrays)

        def run():
            with np.load(path) as z:
                return {k: z[k] for k in z.files}
        return run

    yield Case("recover", "recover(), every chunk hash verified", cfg, recover,
               {"safetensors load_file (no checksum)": ("safetensors", st_load),
                "np.load of an .npz, every array read": ("numpy", np_load)})

    n = _n(100_000, scale)
    records = [{"id": i, "name": f"user{i:06d}", "score": i * 0.5, "active": i % 2 == 0, "tags": ["a", "b"]}
               for i in range(n)]
    dcfg = f"{n:,} small dicts in memory, each result kept until the next call"

    def enc():
        return _kept(lambda: fk.recover.dumps(records))

    def msgspec_enc():
        enc = _mod("msgspec").msgpack.encode
        return _kept(lambda: enc(records))

    def orjson_enc():
        dumps = _mod("orjson").dumps
        return _kept(lambda: dumps(records))

    def pickle_enc():
        return _kept(lambda: pickle.dumps(records, protocol=5))

    yield Case("recover", "encode", dcfg, enc,
               {"msgspec.msgpack": ("msgspec", msgspec_enc), "orjson": ("orjson", orjson_enc),
                "pickle": ("pickle", pickle_enc)}, gc_modes=("charged", "off"))

    def dec():
        blob = fk.recover.dumps(records)
        return _kept(lambda: fk.recover.loads(blob))

    def msgspec_dec():
        m = _mod("msgspec").msgpack
        blob = m.encode(records)
        return _kept(lambda: m.decode(blob))

    def orjson_dec():
        o = _mod("orjson")
        blob = o.dumps(records)
        return _kept(lambda: o.loads(blob))

    def pickle_dec():
        blob = pickle.dumps(records, protocol=5)
        return _kept(lambda: pickle.loads(blob))

    yield Case("recover", "decode", dcfg, dec,
               {"msgspec.msgpack": ("msgspec", msgspec_dec), "orjson": ("orjson", orjson_dec),
                "pickle": ("pickle", pickle_dec)}, gc_modes=("charged", "off"),
               cleanup=[tmp.cleanup])


def all_cases(scale: float, pillars: Tuple[str, ...] = PILLARS) -> Iterator[Case]:
    """Every case of the given pillars, sizes multiplied by ``scale``."""
    makers = {"hash": hash_cases, "balance": balance_cases, "detect": detect_cases,
              "contain": contain_cases, "recover": recover_cases}
    for p in pillars:
        yield from makers[p](scale)
