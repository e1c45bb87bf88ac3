"""The accuracy study's simulation (benchmarks/detection_study.py) measures what it claims."""
import importlib.util
import pathlib

import pytest

import faultkit as fk

STUDY = pathlib.Path(__file__).resolve().parents[2] / "benchmarks" / "detection_study.py"
pytestmark = pytest.mark.skipif(not STUDY.exists(), reason="needs the source checkout")


@pytest.fixture(scope="module")
def study():
    spec = importlib.util.spec_from_file_location("detection_study", STUDY)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_timeouts_trade_mistakes_for_detection_time(study):
    _, delay, _ = study.scenarios()["lossy"]
    rates, times = [], []
    for t in (1.5, 3.0, 8.0):
        rate, det_time, fed = study.simulate(lambda t=t: fk.TimeoutDetector(t), delay, 0.10,
                                             components=50, hours=0.2, seed=1)
        rates.append(rate)
        times.append(det_time)
        # crash uniform in the second after the last send, delay ~0.2 s: detection ~ t - 0.3
        assert t - 1.0 < det_time < t
    assert rates[0] > rates[1] > rates[2] == 0.0
    # 10% loss at 1 heartbeat/s: a 1.5 s timeout errs on about every lost heartbeat
    assert 0.7 * 360 < rates[0] < 1.3 * 360


def test_simulation_is_deterministic(study):
    _, delay, loss = study.scenarios()["heavy-tailed"]
    make = lambda: fk.PhiAccrualDetector(8.0, acceptable_heartbeat_pause=0.0)
    a = study.simulate(make, delay, loss, components=20, hours=0.05, seed=3)
    b = study.simulate(make, delay, loss, components=20, hours=0.05, seed=3)
    assert a == b and a[2] > 0
