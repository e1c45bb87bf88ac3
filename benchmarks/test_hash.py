"""XXH3-64: faultkit against python-xxhash and builtin hash(), in one run.

Per-call benchmarks hash the same 1,000 16-byte str keys in a loop, so the
figure per key is the call cost from Python (what a service pays per request).
Compare within a group: ``faultkit bench -k hash`` or
``pytest benchmarks/test_hash.py --benchmark-group-by=group``.
"""
import pytest
import xxhash

import faultkit as fk
from conftest import BULK

xxh3 = xxhash.xxh3_64_intdigest


@pytest.mark.benchmark(group="hash: 1,000 str keys, one call each")
def test_faultkit_hash64(benchmark, keys_small):
    h = fk.hash64

    def run():
        for k in keys_small:
            h(k)

    benchmark(run)


@pytest.mark.benchmark(group="hash: 1,000 str keys, one call each")
def test_xxhash_encode_then_hash(benchmark, keys_small):
    def run():
        for k in keys_small:
            xxh3(k.encode())

    benchmark(run)


@pytest.mark.benchmark(group="hash: 1,000 str keys, one call each")
def test_xxhash_bytes_already_encoded(benchmark, keys_small):
    encoded = [k.encode() for k in keys_small]

    def run():
        for k in encoded:
            xxh3(k)

    benchmark(run)


@pytest.mark.benchmark(group="hash: 1,000 str keys, one call each")
def test_builtin_hash(benchmark, keys_small):
    def run():
        for k in keys_small:
            hash(k)

    benchmark(run)


@pytest.mark.benchmark(group="hash: 1M str keys, bulk")
def test_faultkit_hash64_many(benchmark, keys_1m):
    out = benchmark.pedantic(fk.hash64_many, (keys_1m,), **BULK)
    assert out.shape == (len(keys_1m),)


@pytest.mark.benchmark(group="hash: 1M str keys, bulk")
def test_xxhash_python_loop(benchmark, keys_1m):
    benchmark.pedantic(lambda: [xxh3(k.encode()) for k in keys_1m], **BULK)
