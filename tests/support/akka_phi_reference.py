"""A pure-Python transcription of Akka's PhiAccrualFailureDetector (the reference for tests).

Source: akka/akka, akka-remote/src/main/scala/akka/remote/PhiAccrualFailureDetector.scala
(commit 016c6ce3a2349648887aa3a2d62054a210832c32): ``heartbeat``, ``phi``,
``firstHeartbeat`` and ``HeartbeatHistory`` (running ``intervalSum`` and
``squaredIntervalSum``; ``:+`` drops the oldest interval when full), with times
as float seconds instead of Long milliseconds.  One documented difference,
shared with faultkit: a variance that float rounding makes negative counts as 0
(Akka's integer sums cannot go negative).
"""
import math


def _log10(x):
    """Java's Math.log10: -Infinity at 0 (Python's math.log10 raises)."""
    return -math.inf if x == 0.0 else math.log10(x)


def _exp(x):
    """Java's Math.exp: Infinity on overflow (Python's math.exp raises)."""
    try:
        return math.exp(x)
    except OverflowError:
        return math.inf


def akka_phi(time_diff, mean, std_dev):
    y = (time_diff - mean) / std_dev
    e = _exp(-y * (1.5976 + 0.070566 * y * y))
    if time_diff > mean:
        return -_log10(e / (1.0 + e))
    return -_log10(1.0 - 1.0 / (1.0 + e))


class HeartbeatHistory:
    def __init__(self, max_sample_size):
        self.max = max_sample_size
        self.intervals = []
        self.sum = 0.0
        self.sumsq = 0.0

    def append(self, x):
        if len(self.intervals) >= self.max:  # dropOldest, then :+
            old = self.intervals.pop(0)
            self.sum = self.sum - old
            self.sumsq = self.sumsq - old * old
        self.intervals.append(x)
        self.sum = self.sum + x
        self.sumsq = self.sumsq + x * x

    def mean(self):
        return self.sum / len(self.intervals)

    def std(self):
        m = self.mean()
        return math.sqrt(max(self.sumsq / len(self.intervals) - m * m, 0.0))


class AkkaPhiDetector:
    """One monitored resource, as Akka's PhiAccrualFailureDetector."""

    def __init__(self, threshold=8.0, max_sample_size=1000, min_std_deviation=0.1,
                 acceptable_heartbeat_pause=3.0, first_heartbeat_estimate=1.0):
        self.threshold = threshold
        self.max_sample_size = max_sample_size
        self.min_std = min_std_deviation
        self.pause = acceptable_heartbeat_pause
        self.first = first_heartbeat_estimate
        self.history = None
        self.timestamp = None

    def first_heartbeat(self):
        # "bootstrap with 2 entries with rather high standard deviation"
        mean = self.first
        std = mean / 4
        h = HeartbeatHistory(self.max_sample_size)
        h.append(mean - std)
        h.append(mean + std)
        return h

    def is_available(self, now):
        return self.phi(now) < self.threshold

    def heartbeat(self, now):
        if self.timestamp is None:
            self.history = self.first_heartbeat()
        else:
            interval = now - self.timestamp
            if self.is_available(now):
                self.history.append(interval)
        self.timestamp = now

    def phi(self, now):
        if self.timestamp is None:
            return 0.0
        mean = self.history.mean()
        std = max(self.history.std(), self.min_std)
        return akka_phi(now - self.timestamp, mean + self.pause, std)
