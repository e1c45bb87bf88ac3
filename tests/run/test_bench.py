"""faultkit bench: runs from an installed package, prints one table or JSON, draws a plot."""
import json
import subprocess
import sys

import pytest

from faultkit import bench
from faultkit.bench.timing import compare


def test_compare_gives_both_sides_the_same_rounds():
    calls = {"a": 0, "b": 0}

    def a():
        calls["a"] += 1

    def b():
        calls["b"] += 1
        return [0] * 100

    for mode in ("natural", "charged", "off"):
        ta, tb = compare(a, b, rounds=4, round_time=0.001, gc_mode=mode)
        assert len(ta.per_call) == len(tb.per_call) == 4
        assert ta.loops >= 1 and tb.loops >= 1 and all(t > 0 for t in ta.per_call + tb.per_call)
        if mode == "charged":
            assert ta.loops >= 10 and tb.loops >= 10
    assert calls["a"] > 0 and calls["b"] > 0


@pytest.mark.parametrize("kwargs,match", [
    (dict(gc_mode="sometimes"), "gc_mode must be one of"),
    (dict(rounds=0), "rounds must be an int >= 1"),
])
def test_compare_rejects_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        compare(lambda: None, lambda: None, **kwargs)


@pytest.mark.parametrize("kwargs,match", [
    (dict(scale=0), "scale must be a number in"),
    (dict(pillars=["detect", "gossip"]), r"unknown pillar\(s\) \['gossip'\]"),
    (dict(repeat=0), "repeat must be an int >= 1, got 0"),
    (dict(repeat=True), "repeat must be an int >= 1, got True"),
])
def test_run_rejects_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        bench.run(**kwargs)


@pytest.mark.slow
def test_quick_bench_from_the_installed_package_prints_json_and_a_plot(tmp_path):
    plot = tmp_path / "bench.png"
    proc = subprocess.run(
        [sys.executable, "-m", "faultkit", "bench", "--quick", "--scale", "0.003", "--rounds", "1",
         "--json", "--plot", str(plot)],
        cwd=tmp_path, capture_output=True, text=True, timeout=600,
    )
    if proc.returncode == 2 and "needs matplotlib" in proc.stderr:
        pytest.skip("matplotlib is not installed")
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    rows = doc["rows"]
    assert {r["pillar"] for r in rows} == set(bench.PILLARS)
    for r in rows:
        assert r["faultkit_s"] > 0 and r["peer_s"] > 0
        assert r["ratio"] == pytest.approx(r["peer_s"] / r["faultkit_s"])
    # the peers measured in this run are named, and the GC-sensitive rows come in both modes
    assert any(r["peer"].startswith("msgspec") and r["gc"] == "off" for r in rows)
    assert any(r["peer"].startswith("msgspec") and r["gc"] == "charged" for r in rows)
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "recover: decode vs" in proc.stderr  # progress while it runs


def test_repeat_reports_medians_and_the_spread_between_runs():
    rows = bench.run(scale=0.003, rounds=1, pillars=["hash"], repeat=3)
    assert rows
    for r in rows:
        assert r.runs == 3 and len(r.ratio_runs) == 3
        assert r.ratio == sorted(r.ratio_runs)[1]                      # the median run
        assert r.spread == pytest.approx(max(r.ratio_runs) / min(r.ratio_runs))


def test_headlines_compare_flags_a_ratio_outside_the_recorded_spread():
    import importlib.util
    import pathlib

    path = pathlib.Path(__file__).resolve().parents[2] / "tools" / "headlines.py"
    if not path.exists():
        pytest.skip("tools/ is not in this tree (an installed wheel's test run)")
    spec = importlib.util.spec_from_file_location("headlines", path)
    headlines = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(headlines)
    row = dict(pillar="p", case="c", peer="x", gc="natural", ratio=10.0, spread=1.2)
    recorded = {"rows": [row, dict(row, peer="y")]}
    later = {"rows": [dict(row, ratio=11.9), dict(row, peer="y", ratio=12.1)]}
    lines, outside = headlines.compare(recorded, later)
    assert outside == 1
    assert lines[0].startswith("within") and lines[1].startswith("OUTSIDE")
    lines, outside = headlines.compare(recorded, {"rows": [dict(row, ratio=8.4)]})
    assert outside == 1 and lines[1].startswith("missing")
