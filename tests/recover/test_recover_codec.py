"""The checkpoint codec: exact round trips, unsupported types, registered types, limits, versions."""
import collections
import struct
import sys

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import faultkit as fk
from faultkit.recover import _codec
from faultkit.recover import dumps, loads, register_type, unregister_type
from recover_format_ref import varint
from recover_util import arrays, exact_equal, float_bits, states


@given(states)
@settings(max_examples=300, deadline=None)
def test_round_trip_is_exact(state):
    exact_equal(state, loads(dumps(state)))


@given(arrays())
@settings(max_examples=200, deadline=None)
def test_arrays_keep_dtype_byte_order_shape_and_bits(a):
    b = loads(dumps(a))
    exact_equal(a, b)
    assert b.flags.c_contiguous


@given(float_bits)
def test_every_float_bit_pattern_survives(x):
    y = loads(dumps([x]))[0]
    assert struct.pack("<d", x) == struct.pack("<d", y)


def test_specific_values():
    nan_payload = struct.unpack("<d", struct.pack("<Q", 0x7FF0000000000001))[0]  # signalling NaN
    state = {
        "neg0": -0.0, "nan": nan_payload, "big": 2**1000 + 1, "neg": -(2**64), "i64min": -(2**63),
        "surrogate": "a\ud800b", "emoji": "\U0001F600", "empty": {}, (1, "t"): frozenset({b"k"}),
        "large_bytes": b"\x01" * 200_000, "large_ba": bytearray(b"\x02" * 70_000),
        "f_order": np.asfortranarray(np.arange(12.0).reshape(3, 4)), "strided": np.arange(20, dtype=">i4")[::3],
        "scalar0d": np.array(3.5, dtype=">f8"), "empty_arr": np.zeros((0, 5), dtype="<c16"),
    }
    out = loads(dumps(state))
    exact_equal({k: (v.copy(order="C") if isinstance(v, np.ndarray) else v) for k, v in state.items()}, out)


def test_dict_order_and_key_types_kept():
    d = {3: "a", "x": 1, (1, 2): None, 2.5: [], b"k": 0, None: 1, True: 2, frozenset({1}): 3}
    out = loads(dumps(d))
    assert list(out.items()) == list(d.items())
    assert [type(k) for k in out] == [type(k) for k in d]


def test_unsupported_type_names_the_path():
    class Foo:
        pass

    with pytest.raises(TypeError, match=r"state\['users'\]\[3\]: .*Foo"):
        dumps({"users": [1, 2, 3, Foo()]})
    with pytest.raises(TypeError, match=r"state\[0\]\['k'\]\[1\]"):
        dumps([{"k": (1, object())}])
    # subclasses of builtins and numpy scalars are not silently coerced
    with pytest.raises(TypeError, match="OrderedDict"):
        dumps({"o": collections.OrderedDict()})
    with pytest.raises(TypeError, match=r"state\['x'\]"):
        dumps({"x": np.float64(1.0)})
    with pytest.raises(TypeError, match="dtype kind 'O'"):
        dumps([np.array([None, 1], dtype=object)])


def test_cycles_and_depth_are_refused():
    a = []
    a.append(a)
    with pytest.raises(ValueError, match="nested deeper than 1000"):
        dumps(a)
    deep = []
    for _ in range(990):
        deep = [deep]
    out = loads(dumps(deep))
    for _ in range(990):
        assert type(out) is list and len(out) == 1
        out = out[0]
    assert out == []


class Point:
    def __init__(self, x, y):
        self.x, self.y = x, y

    def __eq__(self, other):
        return type(other) is Point and (self.x, self.y) == (other.x, other.y)


def test_register_type_round_trips_and_is_the_only_code_run():
    register_type(Point, lambda p: (p.x, p.y), lambda s: Point(*s), name="test.Point")
    try:
        state = {"p": [Point(1, 2.5), Point("a", np.arange(3))]}
        out = loads(dumps(state))
        assert out["p"][0] == Point(1, 2.5) and out["p"][1].x == "a"
        assert np.array_equal(out["p"][1].y, np.arange(3))
        blob = dumps(state)
    finally:
        unregister_type(Point)
    with pytest.raises(fk.CorruptCheckpointError, match="unknown registered type 'test.Point'"):
        loads(blob)
    with pytest.raises(TypeError, match="Point"):
        dumps(Point(1, 2))


def test_register_type_validates():
    with pytest.raises(TypeError, match=r"cls must be a class, got 'notaclass'"):
        register_type("notaclass", str, str)
    with pytest.raises(ValueError, match="natively"):
        register_type(dict, dict, dict)
    with pytest.raises(TypeError, match=r"to_state and from_state must be callable"):
        register_type(Point, 1, 2)
    with pytest.raises(TypeError, match=r"name must be a non-empty str, got ''"):
        register_type(Point, str, str, name="")


def test_newer_major_version_is_rejected_clearly():
    blob = bytearray(dumps([1]))
    blob[8:10] = (2).to_bytes(2, "little")
    with pytest.raises(fk.CorruptCheckpointError, match=r"version 2\.0 is newer than this reader \(1\.0\)"):
        loads(bytes(blob))


def test_layout_fields():
    blob = dumps({"a": np.arange(100_000)}, meta={"m": 1})
    lay = _codec.parse(blob)
    assert lay.version == (1, 0) and lay.file_size == len(blob) and lay.blob_count == 1
    assert lay.refs == () and not lay.incremental
    assert _codec.read_meta(blob, lay, None) == {"meta": {"m": 1}}


def test_arrays_are_64_byte_aligned_and_views_of_the_buffer():
    blob = bytearray(dumps({"a": np.arange(1000, dtype="<f8"), "b": np.ones(7, dtype="<i2")}))
    out = loads(blob)
    for a in out.values():
        offset = a.__array_interface__["data"][0] - np.frombuffer(blob, np.uint8).__array_interface__["data"][0]
        assert offset % 64 == 0
    assert out["a"].flags.writeable  # a writable buffer gives writable arrays
    assert not loads(bytes(blob))["a"].flags.writeable


def test_max_size():
    blob = dumps(list(range(100)))
    with pytest.raises(fk.CorruptCheckpointError, match="max_size"):
        loads(blob, max_size=10)
    assert loads(blob, max_size=len(blob)) == list(range(100))


@pytest.mark.parametrize("bad", [b"", b"\x00" * 200, b"not a checkpoint" * 10])
def test_garbage_is_a_clean_error(bad):
    with pytest.raises(fk.CorruptCheckpointError):
        loads(bad)


@pytest.mark.parametrize("nbytes", [241, 4096, (1 << 20) + 13, 3 << 20])
def test_chunk_hashes_are_xxh3_64_bit_for_bit(nbytes):
    """Every chunk checksum equals python-xxhash's XXH3-64 of the chunk (the AVX2 kernel included)."""
    import xxhash
    from recover_format_ref import read_toc

    rng = np.random.default_rng(nbytes)
    blob = dumps({"b": rng.bytes(nbytes), "a": rng.integers(0, 255, nbytes, dtype=np.uint8)[1:]})
    chunk_size, sections, chunks = read_toc(blob)
    checked = 0
    for _kind, _, _offset, length, _stored, checksum, first, n, _ in sections:
        for k in range(n):
            h, ref, _, off = chunks[first + k]
            size = min(chunk_size, length - k * chunk_size)
            assert ref == 0 and h == xxhash.xxh3_64_intdigest(blob[off:off + size])
            checked += 1
        hashes = b"".join(struct.pack("<Q", chunks[first + k][0]) for k in range(n))
        assert checksum == xxhash.xxh3_64_intdigest(hashes)
    assert checked >= 2 + 2 * (nbytes // chunk_size)


# ---------------------------------------------------------------- dict tables

def ref_tree(v):
    """docs/FORMAT.md's tree encoding of None/bool/int64/float/str/list/tuple/dict (the spec, in Python)."""
    if v is None:
        return b"\x00"
    if v is False or v is True:
        return b"\x02" if v else b"\x01"
    if type(v) is int:
        return b"\x03" + struct.pack("<q", v)
    if type(v) is float:
        return b"\x05" + struct.pack("<d", v)
    if type(v) is str:
        b = v.encode("utf-8", "surrogatepass")
        return b"\x06" + varint(len(b)) + b
    if type(v) in (list, tuple):
        return (b"\x10" if type(v) is list else b"\x11") + varint(len(v)) + b"".join(ref_tree(x) for x in v)
    if type(v) is dict:
        return b"\x12" + varint(len(v)) + b"".join(ref_tree(k) + ref_tree(x) for k, x in v.items())
    raise TypeError(type(v))


def tree_of(state):
    return _codec.encode(state, {}, blob_threshold=1 << 62).tree_bytes()


# A dict's history: inserts, deletes and re-inserts of str keys (CPython's
# "unicode" tables) or of mixed keys (its "general" tables), around the
# encoder's small-dict size (16) -- deleted entries stay in the table as holes.
dict_ops = st.lists(st.tuples(st.booleans(), st.one_of(st.integers(0, 40), st.text(max_size=3)),
                              st.integers(-(2**63), 2**63 - 1)),
                    max_size=80)


@given(dict_ops, st.booleans())
@settings(max_examples=300, deadline=None)
def test_dicts_encode_their_items_in_order_whatever_their_table(ops, str_keys):
    d = {}
    for insert, key, value in ops:
        key = str(key) if str_keys else key
        if insert:
            d[key] = value
        else:
            d.pop(key, None)
    assert tree_of(d) == ref_tree(d)
    assert tree_of([d, {"k": d}]) == ref_tree([d, {"k": d}])
    assert list(loads(dumps(d)).items()) == list(d.items())


def test_split_table_dicts_and_dict_subtleties():
    class Obj:
        def __init__(self, i):
            self.a, self.b, self.c = i, str(i), [i]

    objs = [Obj(i) for i in range(3)]
    split = [vars(o) for o in objs]  # instance dicts sharing one keys table
    del objs[1].b
    objs[2].z = 9
    for d in split + [dict.fromkeys(range(16)), dict.fromkeys(range(17)), dict.fromkeys("abcdefghijklmnopq"),
                      {"x": 1, 2: "y"}, {}]:
        assert tree_of(d) == ref_tree(d)
    big = {str(i): i for i in range(1000)}
    for i in range(0, 1000, 3):
        del big[str(i)]
    assert tree_of(big) == ref_tree(big)


def test_decoded_dict_keys_are_exact_for_every_short_length():
    # The decoder caches short ASCII keys by their length and bytes: keys of
    # every length up to past the cached limit, differing in one byte at any
    # position (or not ASCII), must come back exactly.
    for n in range(41):
        base = "k" * n
        keys = [base] + [base[:i] + c + base[i + 1:] for i in range(n) for c in ("j", "\xe9", "\U0001F600")]
        d = {k: i for i, k in enumerate(keys)}
        out = loads(dumps([d, d]))
        assert list(out[0].items()) == list(d.items()) and list(out[1].items()) == list(d.items())
        assert out[0].keys() == out[1].keys()


def test_repeated_and_colliding_dict_keys_encode_exactly():
    # The encoder caches small dicts' short ASCII keys by object: shared key
    # objects, equal keys in distinct objects, keys around the cached length
    # (22 bytes), non-ASCII and non-str keys, and far more keys than slots.
    shared = [("k" * n) for n in range(26)]
    records = []
    for i in range(2000):
        d = {shared[i % 26]: i, "x" + str(i % 97): None, "\xe9t\xe9": 1.5, i % 7: [shared[(i * 5) % 26]]}
        d["".join(["id"])] = i  # an equal key in a fresh object each time
        records.append(d)
    assert tree_of(records) == ref_tree(records)
    assert loads(dumps(records)) == records
    # the cache pins its keys only while encoding
    before = [sys.getrefcount(k) for k in shared]
    dumps(records)
    assert [sys.getrefcount(k) for k in shared] == before


def test_gc_callbacks_cannot_free_what_the_walk_is_reading():
    # The walk reads small dicts' items by borrowed reference; encoding a big
    # int allocates an object tracked by the cyclic GC, so a collection (and
    # any gc.callbacks entry or finalizer) could run mid-walk, empty the dict
    # and free the values not yet encoded (heap-use-after-free under ASan).
    # No collection may run during the walk: the state encodes as it was when
    # the walk began.  The collection may still fire before dumps() (a tracer
    # such as coverage's allocates too): then the walk sees the emptied dict.
    # Either way the blob holds one whole version, never a mix.
    import gc
    victim = {}
    fired = []

    def callback(phase, info):
        if phase == "start" and victim:
            fired.append(dict(victim))
            victim.clear()

    old = gc.get_threshold()
    gc.callbacks.append(callback)
    try:
        for trial in range(3):
            victim.update({"a": 2**100 + trial, "b": "".join(["\u00e9x"] * 50),
                           "c": bytes(range(200))})
            expected = dict(victim)
            gc.set_threshold(1, 1, 1)
            try:
                blob = dumps({"state": victim})
            finally:
                gc.set_threshold(*old)
            got = loads(blob)
            if fired:  # fired before the walk began (or after it ended): then it emptied victim
                assert fired == [expected] and victim == {}
                assert got in ({"state": expected}, {"state": {}}), "the walk saw a half-cleared dict"
                if got["state"]:
                    exact_equal({"state": expected}, got)
            else:
                assert victim == expected
                exact_equal({"state": expected}, got)
            fired.clear()
            victim.clear()
    finally:
        gc.callbacks.remove(callback)
        gc.set_threshold(*old)


# ---------------------------------------------------------------- decoder dict templates

# Keys that look alike to the decoder's caches: equal bytes in str and bytes,
# non-ASCII, around the key cache's length limit (32 bytes), ints, tuples.
record_keys = st.sampled_from(["id", "name", "\xe9", "\U0001F600", "k" * 32, "k" * 33, b"id", b"name", 0, 1, ("id",)])
record_values = st.one_of(st.none(), st.booleans(), st.integers(-5, 10**6), st.floats(allow_nan=False), st.text(max_size=3),
                          st.lists(st.integers(0, 3), max_size=2), st.dictionaries(st.sampled_from(["id", "x"]), st.none()))
record_shapes = st.lists(st.lists(record_keys, min_size=0, max_size=18), min_size=1, max_size=4)


@given(record_shapes, st.lists(st.integers(0, 3), min_size=1, max_size=40), st.lists(record_values, min_size=18, max_size=18))
@settings(max_examples=300, deadline=None)
def test_records_decode_exactly_whatever_their_shapes(shapes, order, values):
    # Dicts repeating a key sequence are made from a template dict: runs of one
    # shape, shapes alternating, duplicate keys, str vs bytes keys of the same
    # bytes, more items than a template takes (16), values that are containers.
    records = []
    for j, s in enumerate(order):
        keys = shapes[s % len(shapes)]
        records.append({k: values[(i + j) % len(values)] for i, k in enumerate(keys)})
    exact_equal(loads(dumps(records)), records)


def test_template_dicts_are_tracked_when_they_hold_containers():
    import gc
    records = [{"id": i, "tags": ["a"]} for i in range(50)] + [{"id": i, "x": None} for i in range(50)]
    out = loads(dumps(records))
    assert out == records
    assert all(gc.is_tracked(d) for d in out[:50])  # a cycle through the list must be findable
    lst = out[10]["tags"]
    lst.append(out[10])  # now a cycle; the collector must reclaim it
    import weakref

    class Probe:
        pass
    probe = Probe()
    lst.append(probe)
    ref = weakref.ref(probe)
    del probe, lst, out
    gc.collect()
    assert ref() is None


def test_template_dicts_keep_reference_counts_balanced():
    # The template's placeholders are replaced in each copy, and its keys are
    # shared by every copy: no reference to a key or a placeholder may leak or
    # be dropped.  Counted on a key string (no str here is immortal) and, where
    # None is mortal (before 3.12), on None, the placeholder.
    records = [{"id": None, "name": "n", "x": None} for _ in range(2000)]
    blob = dumps(records)
    out = loads(blob)
    key = next(iter(out[0]))
    assert all(next(iter(d)) is key for d in out)  # one key object, shared by every copy
    assert sys.getrefcount(key) >= 2000
    del out
    assert sys.getrefcount(key) <= 3  # ours, getrefcount's argument, maybe the decoder's key cache
    if sys.version_info < (3, 12):
        before = sys.getrefcount(None)
        out = loads(blob)
        assert sys.getrefcount(None) - before >= 3990  # two placeholders a record
        del out
        assert abs(sys.getrefcount(None) - before) < 100


def test_repeated_keys_in_a_corrupt_tree_never_become_a_template():
    from recover_format_ref import frame
    from faultkit.recover import codec

    def d(*items):
        return b"\x12" + varint(len(items)) + b"".join(ref_tree(k) + ref_tree(v) for k, v in items)

    # the same two-key sequence with a repeated key, three times in a row, then a proper one
    tree = b"\x10" + varint(4) + d(("a", 1), ("a", 2)) + d(("a", 3), ("a", 4)) + d(("a", 5), ("a", 6)) + d(("a", 7), ("b", 8))
    blob = frame(codec.encode_meta({"meta": None}).tree_bytes(), tree)
    # A repeated key is not what any writer produces: rejected (docs/FORMAT.md), not "last one wins".
    with pytest.raises(fk.CorruptCheckpointError, match="duplicate keys in a dict"):
        loads(blob)
    tree = b"\x10" + varint(4) + d(("a", 1), ("b", 2)) * 3 + d(("a", 7), ("b", 8))
    blob = frame(codec.encode_meta({"meta": None}).tree_bytes(), tree)
    assert loads(blob) == [{"a": 1, "b": 2}] * 3 + [{"a": 7, "b": 8}]


def test_many_distinct_keys_between_records():
    # Keys evicted from the key cache come back as new str objects: the
    # template no longer matches and is rebuilt; results stay exact.
    records = []
    for i in range(3000):
        records.append({"id": i, "name": "n"})
        records.append({f"key{i}": i, f"other{i % 600}": None})
    exact_equal(loads(dumps(records)), records)
