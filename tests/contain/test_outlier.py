"""OutlierDetector: Envoy's outlier detection on replayed request results (explicit times)."""
import math

import numpy as np
import pytest

import faultkit as fk
from faultkit.contain import Ejection, OutlierDetector


def hosts(n):
    return [f"h{i}" for i in range(n)]


def test_consecutive_errors_eject_at_the_fifth_and_a_success_resets_the_count():
    od = OutlierDetector(hosts(20))
    for _ in range(4):
        assert od.report("h1", False, now=1.0) is None
    assert od.report("h1", True, now=1.0) is None  # the run is broken
    for _ in range(4):
        assert od.report("h1", False, now=2.0) is None
    e = od.report("h1", False, now=2.0)
    assert e == Ejection("h1", "eject", "consecutive_errors", 2.0, 32.0, 1)
    assert od.is_ejected("h1") and od.ejected == ["h1"] and od.ejected_until("h1") == 32.0
    # results of requests that were in flight do not eject it again
    assert od.report("h1", False, now=3.0) is None


def test_ejection_time_grows_per_ejection_and_is_capped():
    od = OutlierDetector(hosts(20), interval=1e9)  # no sweeps: no decay in this test
    t, spans = 0.0, []
    for _ in range(12):
        for _ in range(5):
            e = od.report("h0", False, now=t)
        spans.append(e.until - t)
        assert od.tick(e.until - 0.001) == []      # not a moment early
        back = od.tick(e.until)                     # trial traffic when the time is up
        assert back == [Ejection("h0", "return", "time_up", e.until, None, e.count)]
        assert not od.is_ejected("h0")
        t = e.until
    assert spans == [30.0 * k for k in range(1, 11)] + [300.0, 300.0]
    assert od.ejection_count("h0") == 12


def test_a_healthy_interval_forgives_one_ejection():
    od = OutlierDetector(hosts(20), interval=10.0)
    od.tick(0.0)
    for _ in range(5):
        od.report("h0", False, now=1.0)
    assert od.ejection_count("h0") == 1
    od.tick(10.0)    # sweep while ejected: no decay
    od.tick(31.0)    # back in routing; this sweep's interval had the ejection in it
    assert od.ejection_count("h0") == 1
    od.tick(41.0)    # a whole interval in routing: forgiven once
    assert od.ejection_count("h0") == 0


def test_max_ejection_percent_caps_ejections_but_one_host_may_always_go():
    od = OutlierDetector(hosts(20))  # 10 %: two of twenty
    made = [od.report(h, False, now=0.0) for h in ("h0", "h1", "h2") for _ in range(5)]
    assert [e.host for e in made if e is not None] == ["h0", "h1"]
    assert od.ejected == ["h0", "h1"] and not od.is_ejected("h2")
    small = OutlierDetector(hosts(5))  # 10 % of 5 is half a host: still one
    made = [small.report(h, False, now=0.0) for h in ("h0", "h1") for _ in range(5)]
    assert [e.host for e in made if e is not None] == ["h0"]
    none = OutlierDetector(hosts(5), max_ejection_percent=0.0)
    assert [none.report("h0", False, now=0.0) for _ in range(5)][-1] is not None


def _interval(od, rates, t, volume=100):
    for h, rate in rates.items():
        good = round(rate * volume)
        for k in range(volume):
            od.report(h, k < good, now=t)


def test_success_rate_ejects_below_mean_minus_1_9_stdev():
    od = OutlierDetector(hosts(10), consecutive_errors=None, max_ejection_percent=100.0)
    od.tick(0.0)
    rates = {f"h{i}": 0.99 for i in range(9)}
    rates["h9"] = 0.80
    _interval(od, rates, 1.0)
    xs = np.array(list(rates.values()))
    assert 0.80 < xs.mean() - 1.9 * xs.std()  # the rule says h9 goes, nobody else
    made = od.tick(10.0)
    assert [(e.host, e.reason) for e in made] == [("h9", "success_rate")]
    # counters start over each interval: the same rates again eject nobody new
    _interval(od, {h: r for h, r in rates.items() if h != "h9"}, 11.0)
    assert od.tick(20.0) == []


def test_success_rate_needs_minimum_hosts_and_request_volume():
    od = OutlierDetector(hosts(10), consecutive_errors=None, max_ejection_percent=100.0)
    od.tick(0.0)
    rates = {f"h{i}": 1.0 for i in range(4)}
    rates["h9"] = 0.0
    _interval(od, {h: r for h, r in rates.items() if h != "h9"}, 1.0)
    _interval(od, {"h9": 0.0}, 1.0, volume=99)  # below the request volume: not judged
    assert od.tick(10.0) == []
    _interval(od, {f"h{i}": 1.0 for i in range(4)} | {"h9": 0.0}, 11.0)  # 5 hosts with volume
    assert [e.host for e in od.tick(20.0)] == ["h9"]


def test_latency_outliers_are_ejected_only_when_enabled():
    def run(**kw):
        od = OutlierDetector(hosts(8), consecutive_errors=None, **kw)
        od.tick(0.0)
        for i in range(8):
            lat = 0.500 if i == 3 else 0.010 + 0.001 * i
            for _ in range(100):
                od.report(f"h{i}", True, lat, now=1.0)
        return od.tick(10.0)

    assert run() == []
    assert [(e.host, e.reason) for e in run(latency_stdev_factor=1.9)] == [("h3", "latency")]


def test_hosts_and_bad_arguments():
    od = OutlierDetector(["a"])
    od.add("b")
    with pytest.raises(ValueError, match="already"):
        od.add("b")
    with pytest.raises(KeyError, match="zz"):
        od.report("zz", False)
    with pytest.raises(TypeError, match="ok"):
        od.report("a", 0)
    with pytest.raises(ValueError, match="latency"):
        od.report("a", True, -1.0)
    with pytest.raises(ValueError, match="latency"):
        od.report("a", True, math.nan)
    for kw, exc, match in (
            (dict(consecutive_errors=0), ValueError, r"consecutive_errors must be >= 1, got 0"),
            (dict(consecutive_errors=2.0), TypeError, r"consecutive_errors must be an int, not float"),
            (dict(interval=0), ValueError, r"interval must be > 0 and finite, got 0"),
            (dict(base_ejection_time=-1), ValueError, r"base_ejection_time must be > 0 and finite, got -1"),
            (dict(max_ejection_time=10.0), ValueError,
             r"max_ejection_time \(10\.0\) must be >= base_ejection_time \(30\.0\)"),
            (dict(max_ejection_percent=101), ValueError, r"max_ejection_percent must be in \[0, 100\], got 101"),
            (dict(success_rate_minimum_hosts=0), ValueError, r"success_rate_minimum_hosts must be >= 1, got 0"),
            (dict(success_rate_stdev_factor="x"), TypeError, r"success_rate_stdev_factor must be a number, not str"),
            (dict(clock=1), TypeError, r"clock must be callable, not int")):
        with pytest.raises(exc, match=match):
            OutlierDetector(**kw)
    assert math.isinf(OutlierDetector(max_ejection_time=math.inf).max_ejection_time)
    for _ in range(5):
        od.report("a", False, now=0.0)
    od.remove("a")
    assert od.ejected == [] and "a" not in od and len(od) == 1
    assert fk.OutlierDetector is OutlierDetector
    assert "OutlierDetector(1 hosts" in repr(od)


def test_equal_mean_latencies_eject_nobody_whatever_the_volume():
    """Kills: a host's latency sum starting (``__init__``) or restarting (``_sweep``) at 1.0
    instead of 0.0, which biases hosts with fewer results, and ``v > limit`` -> ``>=`` in
    ``_outliers`` (with every mean equal the stdev is 0 and nobody is beyond it)."""
    od = OutlierDetector(hosts(8), consecutive_errors=None, latency_stdev_factor=1.0,
                         max_ejection_percent=100.0)
    od.tick(0.0)
    for interval in (1, 2):
        for i in range(8):
            for _ in range(100 if i == 0 else 1000):
                od.report(f"h{i}", True, 0.015625, now=10.0 * interval - 9.0)  # exact in binary
        assert od.tick(10.0 * interval) == []
    assert od.ejected == []


def test_int_options_accept_their_lower_bound():
    """Kills: ``value < low`` -> ``<=`` in ``_int`` (each int option's documented minimum refused)."""
    od = OutlierDetector(hosts(2), consecutive_errors=1, success_rate_minimum_hosts=1,
                         success_rate_request_volume=1)
    assert (od.success_rate_minimum_hosts, od.success_rate_request_volume) == (1, 1)
    e = od.report("h0", False, now=0.0)            # one error is enough
    assert (e.host, e.reason) == ("h0", "consecutive_errors")


def test_latency_of_a_host_below_the_request_volume_is_not_judged():
    """Kills: ``h.latency_n >= vol and h.ejected_until is None`` -> ``or`` in ``_sweep``:
    a host with too few latencies (here 50 < 100) must not be judged on them."""
    od = OutlierDetector(hosts(8), consecutive_errors=None, latency_stdev_factor=1.0)
    od.tick(0.0)
    for i in range(8):
        for _ in range(50 if i == 3 else 100):
            od.report(f"h{i}", True, 0.5 if i == 3 else 0.015625, now=1.0)
    assert od.tick(10.0) == [] and od.ejected == []


def test_manual_ejection_and_no_forgiveness_for_the_interval_it_happened_in():
    """Kills: ``eject`` refusing a host that is not ejected and re-ejecting one that is
    (``ejected_until is not None`` -> ``is None``), and ``_eject`` not marking the interval
    (``ejected_in_interval = True`` -> ``False``): an ejection shorter than the interval
    would be forgiven by the sweep that ends that very interval."""
    od = OutlierDetector(hosts(2), interval=10.0, base_ejection_time=5.0, max_ejection_time=100.0,
                         max_ejection_percent=100.0)
    od.tick(0.0)
    e = od.eject("h0", now=1.0)
    assert (e.host, e.reason, e.until, e.count) == ("h0", "manual", 6.0, 1)
    assert od.eject("h0", now=2.0) is None and od.ejection_count("h0") == 1
    od.tick(10.0)                       # back at 6 < 10; the sweep at 10 must not forgive it
    assert not od.is_ejected("h0") and od.ejection_count("h0") == 1
    assert od.eject("h0", now=11.0).until == 11.0 + 2 * 5.0
