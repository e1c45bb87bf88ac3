"""The live-replica kernel (balance._spread over csrc/faultkit/balance/spread.h) against a
plain-Python reference of the same rules, on random tables and masks."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from faultkit import hash64
from faultkit.balance._spread import SpreadTable


def reference(dom_hash, groups, live, key, n):
    """Rendezvous over domains (ties: higher index first), then each domain's best live
    member (ties: lower index first), then the fill round by round."""
    kh = hash64(key)
    order = sorted(range(len(dom_hash)), key=lambda d: (hash64(int(dom_hash[d]) ^ kh), d), reverse=True)
    ranked = []
    for d in order:
        members = [(j, h) for j, h in groups[d] if live[j]]
        if members:
            ranked.append([j for j, h in sorted(members, key=lambda jh: (-hash64(int(jh[1]) ^ kh), jh[0]))])
    out = [r[0] for r in ranked][:n]
    depth = 1
    while len(out) < n and any(depth < len(r) for r in ranked):
        for r in ranked:
            if depth < len(r) and len(out) < n:
                out.append(r[depth])
        depth += 1
    return out


@settings(max_examples=150, deadline=None)
@given(sizes=st.lists(st.integers(1, 5), min_size=1, max_size=9), seed=st.integers(0, 2**32 - 1),
       n=st.integers(0, 12), p_live=st.floats(0.0, 1.0))
def test_choose_matches_the_reference(sizes, seed, n, p_live):
    rng = np.random.default_rng(seed)
    dom_hash = rng.integers(0, 2**63, len(sizes), dtype=np.uint64)
    offsets = np.concatenate([[0], np.cumsum(sizes)])
    svc_hash = rng.integers(0, 2**63, int(offsets[-1]), dtype=np.uint64)
    members = [f"m{j}" for j in range(len(svc_hash))]
    groups = [[(j, svc_hash[j]) for j in range(offsets[d], offsets[d + 1])] for d in range(len(sizes))]
    live = rng.random(len(svc_hash)) < p_live
    table = SpreadTable(dom_hash, offsets, svc_hash, members).live(live)
    assert table.live_members == int(live.sum())
    for i in range(20):
        key = f"key-{seed}-{i}"
        assert table.choose(key, n) == [members[j] for j in reference(dom_hash, groups, live, key, n)]
    # ints and bytes hash as faultkit.hash64 does
    assert table.choose(7, n) == [members[j] for j in reference(dom_hash, groups, live, 7, n)]


def test_a_long_request_and_bad_input():
    table = SpreadTable([1, 2], [0, 40, 80], np.arange(80, dtype=np.uint64),
                        list(range(80))).live(np.ones(80, bool))
    got = table.choose("k", 100)  # past the stack buffer: every member, once
    assert sorted(got) == list(range(80))
    with pytest.raises(ValueError, match="n must be"):
        table.choose("k", -1)
    with pytest.raises(TypeError, match=r"key must be str, bytes-like or int, not float"):
        table.choose(1.5, 2)
    with pytest.raises(ValueError, match="offsets"):
        SpreadTable([1], [0, 3], [1, 2], ["a", "b"])
    with pytest.raises(ValueError, match="members"):
        SpreadTable([1], [0, 2], [1, 2], ["a"])
    with pytest.raises(ValueError, match="mask"):
        SpreadTable([1], [0, 2], [1, 2], ["a", "b"]).live([True])
