"""Detect: the heartbeat table against numpy and per-object Python detectors, N = 1,000,000.

Configuration (recorded in docs/benchmarks.md with the figures):
- TimeoutDetector(timeout=5.0, suspect_after=2.0); PhiAccrualDetector with Akka Cluster's
  defaults (threshold 8, window estimator, max_sample_size 1000), suspect_threshold 3.
- 1M components, each with heartbeats at three rounds (t = u, u + 1, u + 2, u ~ U[0, 1)),
  so each phi window holds 2 seed intervals + 2 real ones.
- Scans run at a `now` at which nothing expires (the steady state of a healthy fleet).
- The peers get their inputs precomputed for free (deadline array; last/mean/std arrays).
- The per-object pure-Python phi detector is measured over 10,000 components and its time
  scaled by 100 to 1M (it is linear in N; running it at 1M takes ~minutes).

Compare within a group: ``pytest benchmarks/test_detect.py --benchmark-group-by=group``.
"""
import asyncio
import math
import resource
import subprocess
import sys
import time

import numpy as np
import pytest

import faultkit as fk
from faultkit.transport import HeartbeatReceiver

N = 1_000_000
N_PY = 10_000  # per-object Python detector: measured here, scaled to N
NOW = 3.5      # last heartbeats in [2, 3); nothing crosses a threshold before t = 4
THRESHOLD = 8.0


def _fill(det, n=N, seed=0):
    ids = det.add_many(range(n))
    u = np.random.default_rng(seed).uniform(0.0, 1.0, n)
    for k in range(3):
        det.heartbeat_many(ids, u + k)  # t = u, u + 1, u + 2
    return ids, u + 2.0


@pytest.fixture(scope="module")
def timeout_1m():
    det = fk.TimeoutDetector(5.0, suspect_after=2.0)
    ids, last = _fill(det)
    det.scan(0.0)
    return det, ids, last


@pytest.fixture(scope="module")
def phi_1m():
    det = fk.PhiAccrualDetector(THRESHOLD, suspect_threshold=3.0)
    ids, last = _fill(det)
    det.scan(0.0)
    return det, ids, last


def _numpy_stats(det, last):
    """last, mean + pause, std arrays of a filled detector (given to the numpy peer for free)."""
    mean_adj = np.empty(len(last))
    std = np.empty(len(last))
    # all components saw the same intervals (1, 1) after the seeds (0.75, 1.25)
    w = np.array([0.75, 1.25, 1.0, 1.0])
    mean_adj[:] = w.mean() + det.acceptable_heartbeat_pause
    std[:] = max(w.std(), det.min_std_deviation)
    return last, mean_adj, std


def numpy_phi(now, last, mean_adj, std):
    """Akka's phi (logistic approximation) for every component, vectorized."""
    t = now - last
    y = (t - mean_adj) / std
    with np.errstate(over="ignore"):
        e = np.exp(-y * (1.5976 + 0.070566 * y * y))
    with np.errstate(all="ignore"):
        return np.where(t > mean_adj, -np.log10(e / (1.0 + e)), -np.log10(1.0 - 1.0 / (1.0 + e)))


class PyPhiDetector:
    """A per-object pure-Python phi accrual detector (Akka's formula), one per component."""

    __slots__ = ("last", "intervals", "sum", "sumsq", "pause", "min_std")

    def __init__(self, pause=3.0, min_std=0.1):
        self.last = None
        self.intervals, self.sum, self.sumsq = [], 0.0, 0.0
        self.pause, self.min_std = pause, min_std
        for x in (0.75, 1.25):
            self.add(x)

    def add(self, x):
        self.intervals.append(x)
        self.sum += x
        self.sumsq += x * x

    def heartbeat(self, now):
        if self.last is not None:
            self.add(now - self.last)
        self.last = now

    def phi(self, now):
        n = len(self.intervals)
        mean = self.sum / n
        std = max(math.sqrt(max(self.sumsq / n - mean * mean, 0.0)), self.min_std)
        t, m = now - self.last, mean + self.pause
        y = (t - m) / std
        e = math.exp(-y * (1.5976 + 0.070566 * y * y))
        if t > m:
            return -math.log10(e / (1.0 + e))
        return -math.log10(1.0 - 1.0 / (1.0 + e))


def _peak_rss_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# ---- scan with nothing expiring -------------------------------------------

@pytest.mark.benchmark(group="detect: scan 1M, nothing expiring")
def test_scan_timeout_faultkit(benchmark, timeout_1m):
    det, _, _ = timeout_1m
    assert benchmark(det.scan, NOW) == []
    benchmark.extra_info.update(table_bytes=det.memory_bytes(), peak_rss_mb=_peak_rss_mb())


@pytest.mark.benchmark(group="detect: scan 1M, nothing expiring")
def test_scan_timeout_numpy_deadlines(benchmark, timeout_1m):
    _, _, last = timeout_1m
    deadline = last + 2.0  # the suspect deadline, precomputed
    assert benchmark(lambda: np.flatnonzero(deadline <= NOW)).size == 0


@pytest.mark.benchmark(group="detect: phi scan 1M, nothing expiring")
def test_scan_phi_faultkit(benchmark, phi_1m):
    det, _, _ = phi_1m
    assert benchmark(det.scan, NOW) == []
    benchmark.extra_info.update(table_bytes=det.memory_bytes(), peak_rss_mb=_peak_rss_mb())


@pytest.mark.benchmark(group="detect: phi scan 1M, nothing expiring")
def test_scan_phi_numpy_all_phi(benchmark, phi_1m):
    det, _, last = phi_1m
    stats = _numpy_stats(det, last)
    np.testing.assert_allclose(numpy_phi(NOW, *stats)[:100], det.phi_all(NOW)[:100], rtol=1e-9)
    assert benchmark(lambda: np.flatnonzero(numpy_phi(NOW, *stats) >= 3.0)).size == 0


@pytest.mark.benchmark(group="detect: phi scan 1M, nothing expiring")
def test_scan_phi_python_objects_10k_x100(benchmark):
    rng = np.random.default_rng(0)
    dets = {}
    for i, u in enumerate(rng.uniform(0.0, 1.0, N_PY).tolist()):
        d = dets[i] = PyPhiDetector()
        for k in range(3):
            d.heartbeat(u + k)

    def scan():
        return [name for name, d in dets.items() if d.phi(NOW) >= 3.0]

    assert benchmark(scan) == []
    benchmark.extra_info["scaled_to_1m_s"] = benchmark.stats.stats.min * (N / N_PY)


# ---- heartbeats -------------------------------------------------------------

def _rounds(ids, start):
    rng = np.random.default_rng(1)
    perm = rng.permutation(ids)
    t = [start]

    def setup():
        t[0] += 1.0
        return (perm, np.full(len(perm), t[0])), {}

    return setup


@pytest.mark.benchmark(group="detect: heartbeat_many 1M random ids")
def test_heartbeat_many_timeout_faultkit(benchmark, timeout_1m):
    det, ids, _ = timeout_1m
    benchmark.pedantic(det.heartbeat_many, setup=_rounds(ids, 10.0), rounds=15)


@pytest.mark.benchmark(group="detect: heartbeat_many 1M random ids")
def test_heartbeat_many_phi_window_faultkit(benchmark, phi_1m):
    det, ids, _ = phi_1m
    benchmark.pedantic(det.heartbeat_many, setup=_rounds(ids, 10.0), rounds=15)


@pytest.mark.benchmark(group="detect: heartbeat_many 1M random ids")
def test_heartbeat_many_phi_ewma_faultkit(benchmark):
    det = fk.PhiAccrualDetector(THRESHOLD, suspect_threshold=3.0, estimator="ewma")
    ids, _ = _fill(det)
    benchmark.pedantic(det.heartbeat_many, setup=_rounds(ids, 10.0), rounds=15)
    benchmark.extra_info.update(table_bytes=det.memory_bytes())


@pytest.mark.benchmark(group="detect: heartbeat_many 1M random ids")
def test_heartbeat_many_numpy_scatter(benchmark, timeout_1m):
    _, ids, _ = timeout_1m
    last = np.zeros(N)

    def scatter(perm, times):
        last[perm] = times

    benchmark.pedantic(scatter, setup=_rounds(ids, 10.0), rounds=15)


@pytest.mark.benchmark(group="detect: heartbeat, 1,000 single calls")
def test_heartbeat_single_faultkit(benchmark):
    det = fk.TimeoutDetector(5.0)
    names = [f"node-{i:06d}" for i in range(1000)]
    det.add_many(names)
    t = [0.0]

    def run():
        t[0] += 1.0
        now, hb = t[0], det.heartbeat
        for n in names:
            hb(n, now)

    benchmark(run)


@pytest.mark.benchmark(group="detect: heartbeat, 1,000 single calls")
def test_heartbeat_single_python_dict(benchmark):
    """The seed's table: a dict of last-heartbeat times."""
    last = {}
    names = [f"node-{i:06d}" for i in range(1000)]
    t = [0.0]

    def run():
        t[0] += 1.0
        now = t[0]
        for n in names:
            last[n] = now

    benchmark(run)


# ---- receiver over loopback ---------------------------------------------------

SENDER = r"""
import socket, sys, time
from faultkit.transport import encode_packet
port, per, secs = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
key = bytes(range(32))
names = [f"n{i:04d}" for i in range(per)]
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
seq, end = 0, time.monotonic() + secs
while time.monotonic() < end:
    for _ in range(64):
        seq += 1
        s.sendto(encode_packet(key, [(n, 1, seq, 0.0) for n in names]), ("127.0.0.1", port))
"""


def _receiver_rate(per_datagram, secs=2.0):
    async def main():
        det = fk.TimeoutDetector(5.0)
        async with HeartbeatReceiver(det, "127.0.0.1:0", key=bytes(range(32)), auto_add=True) as rx:
            port = rx.address[1]
            proc = subprocess.Popen([sys.executable, "-c", SENDER, str(port), str(per_datagram),
                                     str(secs + 1.0)])
            try:
                await asyncio.sleep(0.5)  # warm-up: sender started, names added
                h0, p0, t0 = rx.stats["heartbeats"], rx.stats["packets"], time.perf_counter()
                await asyncio.sleep(secs)
                h1, p1, t1 = rx.stats["heartbeats"], rx.stats["packets"], time.perf_counter()
            finally:
                proc.kill()
                proc.wait(timeout=10)
            return (h1 - h0) / (t1 - t0), (p1 - p0) / (t1 - t0), dict(rx.stats)

    return asyncio.run(main())


@pytest.mark.parametrize("per_datagram", [1, 32])
@pytest.mark.benchmark(group="detect: receiver on loopback, one sender process")
def test_receiver_heartbeats_per_second(benchmark, per_datagram):
    result = {}

    def run():
        result["hb"], result["pkts"], result["stats"] = _receiver_rate(per_datagram)

    benchmark.pedantic(run, rounds=1, iterations=1)
    benchmark.extra_info.update(heartbeats_per_s=round(result["hb"]),
                                datagrams_per_s=round(result["pkts"]),
                                dropped=result["stats"]["unauthenticated"] + result["stats"]["malformed"])
    print(f"\nreceiver, {per_datagram} heartbeat(s) a datagram: {result['hb']:,.0f} heartbeats/s, "
          f"{result['pkts']:,.0f} datagrams/s; stats {result['stats']}")
    assert result["hb"] > 0
