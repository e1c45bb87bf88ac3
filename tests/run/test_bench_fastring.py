"""The fastring rows of ``faultkit bench``: present on every Python, equal work where fastring runs (CPython >= 3.13)."""
import sys

import pytest

from faultkit.bench import cases


def _fastring_cases():
    return [c for c in cases.balance_cases(0.01) if any(m == "fastring" for m, _ in c.peers.values())]


def test_fastring_rows_exist_with_a_marker_matching_its_wheels():
    rows = _fastring_cases()
    assert [c.name.split(",")[0] for c in rows] == ["HashRing.get(str) vs fastring", "batch of 1"]
    import pathlib
    pyproject = pathlib.Path(__file__).resolve().parents[2] / "pyproject.toml"
    if not pyproject.exists():
        pytest.skip("tests run without the project's pyproject.toml beside them")
    text = pyproject.read_text()
    assert text.count("\"fastring>=0.2.1; python_version >= '3.13'\"") == 2  # the test and bench extras


@pytest.mark.skipif(sys.version_info < (3, 13), reason="fastring publishes wheels for CPython >= 3.13 only")
def test_fastring_rows_do_the_same_work():
    fastring = pytest.importorskip("fastring")
    nodes = {f"node-{i}" for i in range(100)}
    for case in _fastring_cases():
        ((_, (_, factory)),) = case.peers.items()
        ours, peer = case.ours()(), factory()()
        # Both sides map the same 1,000 keys to names of the same 100 nodes.
        assert len(ours) == len(peer) == 1000
        assert set(ours) <= nodes and set(peer) <= nodes
        assert len(set(peer)) > 50  # spread over the ring, not one node
    ring = fastring.HashRing(virtual_nodes=160)
    ring.add_node("node-0")
    assert ring.nodes["node-0"]["vnodes"] == 160
