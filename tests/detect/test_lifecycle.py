"""Member lifecycle in the detectors: joining, restarts, leaves, join timeouts.

Every time is given explicitly (or by an injected clock); nothing sleeps.
"""
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from faultkit.detect import _table
from faultkit.detect import PhiAccrualDetector, TimeoutDetector


def timeout_det(**kw):
    kw.setdefault("join_timeout", 3.0)
    return TimeoutDetector(5.0, 2.0, clock=lambda: 0.0, wall_clock=lambda: 1000.0, **kw)


def phi_det(**kw):
    kw.setdefault("join_timeout", 3.0)
    return PhiAccrualDetector(suspect_threshold=3.0, clock=lambda: 0.0, wall_clock=lambda: 1000.0, **kw)


DETECTORS = [timeout_det, phi_det]


def kinds(events):
    return [(e.name, e.old, e.new) for e in events]


@pytest.mark.parametrize("make", DETECTORS)
def test_restart_faster_than_the_timeout_is_its_own_event(make):
    det = make()
    det.add("n", 0.0)
    for t in (0.0, 1.0, 2.0):
        det.heartbeat("n", t, incarnation=7)
    assert kinds(det.scan(2.0)) == [("n", "joining", "alive")]
    # killed and restarted within one interval: the detector never sees silence
    assert det.heartbeat("n", 2.5, incarnation=9) is True
    evs = det.scan(2.6)
    assert kinds(evs) == [("n", "alive", "restarted")]
    e = evs[0]
    assert (e.at, e.old_incarnation, e.incarnation) == (2.5, 7, 9)
    assert e.wall == pytest.approx(1000.0 - 0.1)  # the scan's wall reading less (now - at)
    assert det.state("n") == "alive" and det.incarnation("n") == 9
    # an older incarnation's heartbeat is not a restart, and changes no state
    det.heartbeat("n", 3.0, incarnation=7)
    assert det.scan(3.0) == [] and det.incarnation("n") == 9


@pytest.mark.parametrize("make", DETECTORS)
def test_restart_of_a_suspect_or_dead_member_is_reported_once(make):
    det = make()
    det.add("n", 0.0)
    det.heartbeat("n", 0.0, incarnation=1)
    evs = det.scan(100.0)
    assert [e.new for e in evs] == ["alive", "suspect", "dead"]
    det.heartbeat("n", 101.0, incarnation=2)
    evs = det.scan(101.0)
    assert kinds(evs) == [("n", "dead", "restarted")]
    assert (evs[0].old_incarnation, evs[0].incarnation) == (1, 2)
    # same incarnation after a death: a recovery, not a restart
    det.scan(200.0)
    det.heartbeat("n", 201.0, incarnation=2)
    assert kinds(det.scan(201.0)) == [("n", "dead", "alive")]


@pytest.mark.parametrize("make", DETECTORS)
def test_never_heard_within_the_join_timeout_is_dead_and_a_late_join_recovers(make):
    det = make()
    det.add("quiet", 10.0)
    assert det.state("quiet") == "joining" and det.alive_mask().tolist() == [True]
    assert det.deadlines("quiet") == (13.0, 13.0)
    assert det.scan(12.999) == []
    evs = det.scan(20.0)
    assert [(e.old, e.new, e.at) for e in evs] == [("joining", "dead", 13.0)]
    assert det.state("quiet") == "dead" and det.alive_mask().tolist() == [False]
    assert det.last_heartbeat("quiet") is None and det.deadlines("quiet") == (math.inf, math.inf)
    # heard at last: alive, with the statistics of a first heartbeat
    det.heartbeat("quiet", 30.0, incarnation=4)
    assert [(e.old, e.new, e.incarnation) for e in det.scan(30.0)] == [("dead", "alive", 4)]
    fresh = make()
    fresh.add("quiet", 30.0)
    fresh.heartbeat("quiet", 30.0)
    assert det.deadlines("quiet") == fresh.deadlines("quiet")


def test_join_timeout_defaults_are_the_dead_deadline_of_a_heartbeat_at_the_add():
    assert TimeoutDetector(4.0).join_timeout == 4.0
    det = PhiAccrualDetector()
    probe = PhiAccrualDetector()
    probe.add("x", 0.0)
    probe.heartbeat("x", 0.0)
    assert det.join_timeout == pytest.approx(probe.deadlines("x")[1], rel=1e-12)
    assert det.join_timeout == pytest.approx(1.0 + 3.0 + _table.crossing_y(8.0) * 0.25)
    assert math.isinf(TimeoutDetector(join_timeout=math.inf).join_timeout)
    for bad, exc in ((0, ValueError), (-1.0, ValueError), (math.nan, ValueError), ("3", TypeError)):
        with pytest.raises(exc, match="join_timeout"):
            TimeoutDetector(join_timeout=bad)
        with pytest.raises(exc, match="join_timeout"):
            PhiAccrualDetector(join_timeout=bad)


@pytest.mark.parametrize("make", DETECTORS)
def test_leave_is_left_at_once_and_late_heartbeats_of_that_life_are_ignored(make):
    det = make()
    det.add_many(["a", "b"], 0.0)
    for t in (0.0, 1.0):
        det.heartbeat("a", t, incarnation=3)
        det.heartbeat("b", t, incarnation=3)
    det.scan(1.0)
    assert det.leave("a", 3, now=1.5) is True
    assert det.state("a") == "left" and det.alive_mask().tolist() == [False, True]
    evs = det.scan(1.5)
    assert [(e.name, e.old, e.new, e.at, e.incarnation) for e in evs] == [("a", "alive", "left", 1.5, 3)]
    assert det.heartbeat("a", 1.6, incarnation=3) is False  # overtaken by its leave
    assert det.leave("a", 3, now=1.7) is False                # a duplicate
    assert det.state("a") == "left"
    # silence never turns a left member suspect or dead
    assert {e.name for e in det.scan(100.0)} == {"b"}
    # the same process name restarts: a restart, from left
    assert det.heartbeat("a", 101.0, incarnation=4) is True
    evs = det.scan(101.0)
    assert [(e.old, e.new, e.old_incarnation, e.incarnation) for e in evs] == [("left", "restarted", 3, 4)]
    # the old life's leave, delayed, cannot take the new life out
    assert det.leave("a", 3, now=102.0) is False and det.state("a") == "alive"
    with pytest.raises(KeyError, match=r"'nobody'"):
        det.leave("nobody")
    with pytest.raises(ValueError, match="incarnation"):
        det.leave("a", -1)
    with pytest.raises(TypeError, match="incarnation"):
        det.leave("a", 1.5)


@pytest.mark.parametrize("make", DETECTORS)
def test_leaving_drains_then_left_by_silence_or_by_leave(make):
    det = make()
    det.add_many(["a", "b", "c"], 0.0)
    for n in "abc":
        det.heartbeat(n, 0.0)
    det.scan(0.0)
    assert det.begin_leave("a", now=0.5) is True and det.begin_leave("a", now=0.6) is False
    assert det.state("a") == "leaving" and det.alive_mask().tolist() == [False, True, True]
    det.heartbeat("a", 1.0)  # still heartbeating while it drains: still leaving
    assert det.state("a") == "leaving"
    dead_at = det.deadlines("a")[1]
    evs = det.scan(dead_at + 1.0)
    got = [(e.name, e.old, e.new) for e in evs if e.name == "a"]
    assert got == [("a", "alive", "leaving"), ("a", "leaving", "left")]
    assert [e.at for e in evs if e.name == "a"][1] == dead_at
    # a leave ends a drain at once
    det.heartbeat("b", dead_at + 1.0)
    det.begin_leave("b", now=dead_at + 1.0)
    det.leave("b", now=dead_at + 1.1)
    assert [(e.old, e.new) for e in det.scan(dead_at + 1.1) if e.name == "b"] == \
        [("dead", "alive"), ("alive", "leaving"), ("leaving", "left")]
    assert det.state("b") == "left"
    # a dead member that says it leaves has left
    assert det.state("c") == "dead"
    assert det.begin_leave("c", now=dead_at + 2.0) is True and det.state("c") == "left"


@pytest.mark.parametrize("make", DETECTORS)
def test_rejoin_after_dead(make):
    det = make()
    det.add("n", 0.0)
    det.heartbeat("n", 0.0)
    assert [e.new for e in det.scan(50.0)] == ["alive", "suspect", "dead"]
    det.heartbeat("n", 60.0)
    assert kinds(det.scan(60.0)) == [("n", "dead", "alive")]
    assert det.state("n") == "alive" and det.alive_mask().tolist() == [True]


def test_a_left_member_comes_back_with_heartbeats_without_incarnations():
    det = timeout_det()
    det.add("n", 0.0)
    det.heartbeat("n", 0.0)
    det.leave("n", now=1.0)
    assert det.heartbeat("n", 2.0) is True  # the application's own heartbeat, no incarnation
    assert [(e.old, e.new) for e in det.scan(2.0)][-1] == ("left", "alive")
    ids = np.array([det.id("n")])
    det.leave("n", now=3.0)
    assert det.heartbeat_many(ids, np.array([4.0])) == 0 and det.state("n") == "alive"


def test_event_wall_follows_the_injected_wall_clock():
    wall = [5000.0]
    det = TimeoutDetector(1.0, clock=lambda: 0.0, wall_clock=lambda: wall[0])
    det.add("n", 0.0)
    det.heartbeat("n", 0.0)
    evs = det.scan(10.0)
    assert [(e.new, e.at, e.wall) for e in evs] == [("alive", 0.0, 4990.0), ("dead", 1.0, 4991.0)]
    with pytest.raises(TypeError, match="wall_clock"):
        TimeoutDetector(wall_clock=3)


# ---- the lifecycle against a pure-Python model --------------------------------

class Model:
    """One component of TimeoutDetector(timeout, suspect_after, join_timeout), written plainly."""

    def __init__(self, timeout, suspect, join, added):
        self.timeout, self.suspect, self.join = timeout, suspect, join
        # the table keeps the add time as "last" while joining
        self.state, self.last, self.inc, self.added = "joining", added, 0, added
        self.pending, self.events = [], []

    @staticmethod
    def shown(s):
        return "dead" if s == "lost" else s

    def emit(self, old, new, at, out):
        out.append((self.shown(old), self.shown(new), at))

    def heartbeat(self, t, inc):
        fresh = inc is not None and inc > self.inc
        if self.state == "left" and inc is not None and not fresh:
            return False
        if self.state not in ("joining", "lost") and t < self.last:
            raise ValueError
        old = self.state
        if fresh:
            self.inc = inc
        if fresh and old not in ("joining", "lost"):
            self.emit(old, "restarted", t, self.pending)
        elif old not in ("alive", "leaving"):
            self.emit(old, "alive", t, self.pending)
        self.state = "leaving" if old == "leaving" and not fresh else "alive"
        self.last = t
        return True

    def leave(self, t, inc):
        if inc is not None and inc < self.inc:
            return False
        if inc is not None:
            self.inc = inc
        if self.state == "left":
            return False
        self.emit(self.state, "left", t, self.pending)
        self.state = "left"
        return True

    def begin_leave(self, t):
        if self.state in ("leaving", "left"):
            return False
        if self.state not in ("alive", "suspect"):
            return self.leave(t, None)
        self.emit(self.state, "leaving", t, self.pending)
        self.state = "leaving"
        return True

    def scan(self, now):
        out, self.pending = self.pending, []
        s = self.state
        if s == "joining" and self.added + self.join <= now:
            self.emit(s, "lost", self.added + self.join, out)
            self.state = "lost"
        if s == "alive" and self.last + self.suspect <= now:
            self.emit(s, "suspect", self.last + self.suspect, out)
            self.state = s = "suspect"
        if s in ("suspect", "leaving") and self.last + self.timeout <= now:
            new = "left" if s == "leaving" else "dead"
            self.emit(s, new, self.last + self.timeout, out)
            self.state = new
        return out


OPS = st.lists(st.tuples(st.sampled_from(["hb", "hb_inc", "leave", "leave_inc", "drain", "scan"]),
                         st.floats(0.0, 4.0), st.integers(0, 4)), min_size=1, max_size=40)


@settings(max_examples=200, deadline=None)
@given(ops=OPS)
def test_timeout_lifecycle_matches_a_plain_model(ops):
    det = TimeoutDetector(3.0, 1.0, join_timeout=2.0, clock=lambda: 0.0, wall_clock=lambda: 0.0)
    det.add("n", 0.0)
    model = Model(3.0, 1.0, 2.0, 0.0)
    t = 0.0
    for op, dt, inc in ops:
        t += dt
        if op in ("hb", "hb_inc"):
            arg = inc if op == "hb_inc" else None
            assert det.heartbeat("n", t, incarnation=arg) == model.heartbeat(t, arg)
        elif op in ("leave", "leave_inc"):
            arg = inc if op == "leave_inc" else None
            assert det.leave("n", arg, now=t) == model.leave(t, arg)
        elif op == "drain":
            assert det.begin_leave("n", now=t) == model.begin_leave(t)
        else:
            assert [(e.old, e.new, e.at) for e in det.scan(t)] == model.scan(t)
        shown = "dead" if model.state == "lost" else model.state
        assert det.state("n") == shown and det.incarnation("n") == model.inc
    assert [(e.old, e.new, e.at) for e in det.scan(t + 10.0)] == model.scan(t + 10.0)
