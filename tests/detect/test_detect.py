"""faultkit.detect: state machines on replayed intervals, phi against Akka, bad input."""
import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import faultkit as fk
from faultkit.detect import _table as _detect
from faultkit.detect import Event, PhiAccrualDetector, TimeoutDetector

from akka_phi_reference import AkkaPhiDetector, akka_phi


class FakeClock:
    def __init__(self, t=0.0):
        self.t = t

    def __call__(self):
        return self.t


def changes(events):
    """The events as 4-field Events (name, old, new, at), joins (``joining -> alive``) left out."""
    return [Event(*e[:4]) for e in events if e.old != "joining"]


def replay(det, name, arrivals):
    for t in arrivals:
        det.heartbeat(name, t)


# ---- TimeoutDetector: the seed's semantics plus a suspect stage -------------

def test_timeout_alive_suspect_dead_and_back():
    det = TimeoutDetector(5.0, suspect_after=2.0)
    det.add("a")
    det.add("b")
    replay(det, "a", [0.0, 1.0, 2.0])
    replay(det, "b", [0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0])
    assert changes(det.scan(3.9)) == []
    assert changes(det.scan(4.0)) == [Event("a", "alive", "suspect", 4.0)]
    assert det.state("a") == "suspect" and det.state("b") == "alive"
    assert changes(det.scan(6.9)) == []
    assert changes(det.scan(7.0)) == [Event("a", "suspect", "dead", 7.0)]
    assert det.alive_mask().tolist() == [False, True]
    det.heartbeat("a", 7.5)
    assert det.state("a") == "alive"  # the heartbeat itself revives
    assert changes(det.scan(7.5)) == [Event("a", "dead", "alive", 7.5)]
    # one scan long after: both crossings reported, at their crossing times
    evs = changes(det.scan(100.0))
    assert evs == [Event("a", "alive", "suspect", 9.5), Event("a", "suspect", "dead", 12.5),
                   Event("b", "alive", "suspect", 8.0), Event("b", "suspect", "dead", 11.0)]
    assert changes(det.scan(200.0)) == []


def test_timeout_without_suspect_stage_goes_straight_to_dead():
    det = TimeoutDetector()  # 5 s, the seed's default
    det.add("x")
    det.heartbeat("x", 10.0)
    assert changes(det.scan(14.999)) == []
    assert changes(det.scan(15.0)) == [Event("x", "alive", "dead", 15.0)]


def test_never_heard_components_stay_joining_without_a_join_timeout():
    det = TimeoutDetector(1.0, join_timeout=math.inf)
    det.add("quiet", 0.0)
    assert det.scan(1e6) == [] and det.state("quiet") == "joining"
    assert det.alive_mask().tolist() == [True]
    assert det.last_heartbeat("quiet") is None
    assert det.deadlines("quiet") == (math.inf, math.inf)


def test_injected_clock_is_used_when_now_is_omitted():
    clock = FakeClock(100.0)
    det = TimeoutDetector(2.0, clock=clock)
    det.add("n")
    det.heartbeat("n")
    clock.t = 101.0
    assert changes(det.scan()) == []
    clock.t = 102.5
    assert changes(det.scan()) == [Event("n", "alive", "dead", 102.0)]


def test_listeners_get_every_event_after_the_update():
    det = TimeoutDetector(1.0)
    seen = []

    @det.add_listener
    def on_event(ev):
        seen.append((ev, det.state(ev.name)))

    det.add("a")
    det.heartbeat("a", 0.0)
    det.scan(5.0)
    assert [(Event(*e[:4]), st) for e, st in seen] == [(Event("a", "joining", "alive", 0.0), "dead"),
                                                      (Event("a", "alive", "dead", 1.0), "dead")]
    det.remove_listener(on_event)
    assert det.listeners == []
    with pytest.raises(ValueError, match=r"<function .*\.on_event at 0x[0-9a-f]+> is not a listener"):
        det.remove_listener(on_event)
    with pytest.raises(TypeError, match=r"listener must be callable, not int"):
        det.add_listener(3)


def test_remove_reuses_ids_and_drops_pending_events():
    det = TimeoutDetector(1.0)
    ids = [det.add(n) for n in "abc"]
    assert ids == [0, 1, 2]
    for n in "abc":
        det.heartbeat(n, 0.0)
    det.scan(2.0)
    det.heartbeat("b", 3.0)  # pending recovery of b
    det.remove("b")
    assert "b" not in det and len(det) == 2
    assert det.add("d") == 1 and det.name(1) == "d"
    assert changes(det.scan(3.0)) == []  # b's pending recovery is gone, d never heard
    assert det.state("d") == "joining"
    with pytest.raises(KeyError, match="b"):
        det.state("b")
    with pytest.raises(IndexError, match=r"ids\[0\] = 7 is not a component id; nothing was recorded"):
        det.heartbeat_many(np.array([7]), np.array([4.0]))


def test_alive_mask_marks_removed_ids_false():
    det = TimeoutDetector(1.0)
    det.add_many(["a", "b", "c"])
    det.remove("b")
    assert det.alive_mask().tolist() == [True, False, True]


@settings(max_examples=60, deadline=None)
@given(intervals=st.lists(st.floats(0.0, 4.0), min_size=1, max_size=30),
       timeout=st.floats(0.5, 3.0), frac=st.floats(0.1, 0.9),
       scans=st.lists(st.floats(0.0, 10.0), min_size=1, max_size=10))
def test_timeout_matches_a_pure_python_state_machine(intervals, timeout, frac, scans):
    """Replay random arrivals and scans; compare with the seed's dict-and-loop semantics."""
    suspect = timeout * frac
    det = TimeoutDetector(timeout, suspect)
    det.add("n")
    t, state, last, got, want = 0.0, "joining", None, [], []
    events = sorted([(t := t + iv, "hb") for iv in intervals] +
                    [(s * len(intervals), "scan") for s in scans])
    for when, kind in events:
        if kind == "hb":
            if state != "alive":
                want.append((state, "alive"))
            state, last = "alive", when
            det.heartbeat("n", when)
        else:
            if last is not None:
                if state == "alive" and when >= last + suspect:
                    want.append(("alive", "suspect"))
                    state = "suspect"
                if state == "suspect" and when >= last + timeout:
                    want.append(("suspect", "dead"))
                    state = "dead"
            got += [(e.old, e.new) for e in det.scan(when)]
    got += [(e.old, e.new) for e in det.scan(max(w for w, _ in events))]
    assert got == want
    assert det.state("n") == state


def test_many_components_scan_finds_exactly_the_expired():
    rng = np.random.default_rng(1)
    n = 5000
    det = TimeoutDetector(10.0)
    ids = det.add_many(range(n))
    times = rng.uniform(0, 100, n)
    det.heartbeat_many(ids, times)
    now = 80.0
    evs = changes(det.scan(now))
    assert sorted(e.name for e in evs) == np.flatnonzero(times + 10.0 <= now).tolist()
    assert all(e.at == times[e.name] + 10.0 for e in evs)
    assert changes(det.scan(now)) == []
    assert (det.alive_mask() == (times + 10.0 > now)).all()
    sus, dead = det.deadlines_all()
    assert (dead == times + 10.0).all() and (sus == dead).all()
    assert det.deadlines(17) == (sus[17], dead[17])


def test_heartbeat_many_repeats_apply_in_order_and_stale_ones_are_ignored():
    det = TimeoutDetector(1.0)
    det.add_many("ab")
    stale = det.heartbeat_many(np.array([0, 1, 0, 0]), np.array([1.0, 1.0, 3.0, 2.0]))
    assert stale == 1
    assert det.last_heartbeat("a") == 3.0
    assert det.heartbeat_many(np.array([0]), np.array([0.5])) == 1


# ---- bad input -------------------------------------------------------------

@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf, -1.0])
def test_bad_times_raise_and_leave_the_table_alone(bad):
    det = TimeoutDetector(1.0, 0.5)
    det.add("a")
    det.heartbeat("a", 1.0)
    before = (det.deadlines("a"), det.state("a"))
    with pytest.raises(ValueError, match=rf"time must be finite and >= 0, got {bad!r}"):
        det.heartbeat("a", bad)
    with pytest.raises(ValueError, match=rf"now must be finite and >= 0, got {bad!r}"):
        det.scan(bad)
    with pytest.raises(ValueError, match="nothing was recorded"):
        det.heartbeat_many(np.array([0, 0]), np.array([2.0, bad]))
    assert (det.deadlines("a"), det.state("a")) == before


def test_backwards_times_raise():
    det = TimeoutDetector(1.0)
    det.add("a")
    det.heartbeat("a", 5.0)
    with pytest.raises(ValueError, match="before its last heartbeat"):
        det.heartbeat("a", 4.0)
    assert det.last_heartbeat("a") == 5.0
    det.scan(10.0)
    with pytest.raises(ValueError, match="before the previous scan"):
        det.scan(9.0)


def test_heartbeat_many_validates_all_ids_before_writing():
    det = TimeoutDetector(1.0)
    det.add_many("abc")
    for bad in (3, -1, 2**40):
        with pytest.raises(IndexError, match="nothing was recorded"):
            det.heartbeat_many(np.array([0, 1, bad]), np.array([1.0, 1.0, 1.0]))
        assert det.last_heartbeat("a") is None
    with pytest.raises(ValueError, match="entries"):
        det.heartbeat_many(np.array([0, 1]), np.array([1.0]))
    with pytest.raises(TypeError, match=r"ids must be a 1-D integer array, not 1-D float64"):
        det.heartbeat_many(np.array([0.0]), np.array([1.0]))
    with pytest.raises(IndexError, match=r"id 18446744073709551615 is out of range"):
        det.heartbeat_many(np.array([2**64 - 1], dtype=np.uint64), np.array([1.0]))


def test_heartbeat_many_rejects_a_removed_id_before_writing():
    det = PhiAccrualDetector()
    det.add_many("abc")
    det.remove("b")
    with pytest.raises(IndexError, match="nothing was recorded"):
        det.heartbeat_many(np.array([0, 1, 2]), np.array([1.0, 1.0, 1.0]))
    assert det.last_heartbeat("a") is None
    det.add("d")  # reuses id 1: every slot in use again
    assert det.heartbeat_many(np.array([0, 1, 2]), np.array([1.0, 1.0, 1.0])) == 0
    assert det.last_heartbeat("d") == 1.0


@settings(max_examples=40, deadline=None)
@given(estimator=st.sampled_from(["window", "ewma"]),
       max_sample_size=st.integers(1, 9),
       rows=st.lists(st.lists(st.floats(0.0, 12.0), min_size=3, max_size=3),
                     min_size=1, max_size=25))
def test_heartbeat_many_matches_single_heartbeats_bit_for_bit(estimator, max_sample_size, rows):
    """The batch loop's inlined fast path and beat() keep identical statistics and deadlines."""
    one = PhiAccrualDetector(3.0, suspect_threshold=1.0, estimator=estimator,
                             max_sample_size=max_sample_size, acceptable_heartbeat_pause=0.5)
    many = PhiAccrualDetector(3.0, suspect_threshold=1.0, estimator=estimator,
                              max_sample_size=max_sample_size, acceptable_heartbeat_pause=0.5)
    ids = np.array(many.add_many(range(3)))
    one.add_many(range(3))
    t = np.zeros(3)
    for row in rows:
        t = t + np.array(row)
        many.heartbeat_many(ids, t)
        for i in range(3):
            one.heartbeat(i, float(t[i]))
        for i in range(3):
            assert many.deadlines(i) == one.deadlines(i)
            assert many.phi(i, float(t[i]) + 1.0) == one.phi(i, float(t[i]) + 1.0)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(estimator=st.sampled_from(["window", "ewma"]),
       threshold=st.floats(0.4, 10.0), suspect_frac=st.one_of(st.none(), st.floats(0.05, 0.95)),
       min_std=st.floats(0.01, 1.0), pause=st.floats(0.0, 2.0),
       n=st.integers(1, 600), seed=st.integers(0, 2**32 - 1), rounds=st.integers(1, 12))
def test_batched_heartbeats_and_scans_match_single_heartbeats(estimator, threshold, suspect_frac,
                                                              min_std, pause, n, seed, rounds):
    """heartbeat_many lowers a block's bound to a floor (std at min_std), beat() to the deadline:
    scans must report the same events either way, and exactly the crossings due by the deadlines."""
    kw = dict(suspect_threshold=None if suspect_frac is None else threshold * suspect_frac,
              estimator=estimator, max_sample_size=5, min_std_deviation=min_std,
              acceptable_heartbeat_pause=pause, wall_clock=lambda: 0.0)
    many, one = PhiAccrualDetector(threshold, **kw), PhiAccrualDetector(threshold, **kw)
    ids = many.add_many(range(n), 0.0)
    one.add_many(range(n), 0.0)
    rng = np.random.default_rng(seed)
    last = np.zeros(n)
    now = 0.0
    for _ in range(rounds):
        step = float(rng.uniform(0.1, 4.0))
        # who beats this round: most, some twice (in order), a few fall silent for a while
        who = ids[rng.random(n) < 0.8]
        who = np.concatenate([who, who[rng.random(len(who)) < 0.1]])
        rng.shuffle(who)
        times = np.empty(len(who))
        for k, i in enumerate(who):  # per component increasing, in [last, now + step]
            last[i] = times[k] = float(rng.uniform(max(last[i], now), now + step))
        now += step
        assert many.heartbeat_many(who, times) == 0
        for i, t in zip(who.tolist(), times.tolist()):
            one.heartbeat(i, t)
        sus, _ = many.deadlines_all()
        due = sus[(sus >= now) & np.isfinite(sus)]
        # now, exactly at the earliest deadline still ahead (the boundary), and later
        for probe in (now, float(due.min()) if due.size else now, now + float(rng.uniform(0.0, 6.0))):
            probe = max(probe, now)
            sus, dead = many.deadlines_all()
            states = [many.state(i) for i in range(n)]
            crossings = []
            for i in range(n):
                if states[i] == "joining" and dead[i] <= probe:  # never heard: the join deadline
                    crossings.append((i, "joining", "dead", dead[i]))
                if states[i] == "alive" and sus[i] <= probe:
                    if kw["suspect_threshold"] is not None:
                        crossings.append((i, "alive", "suspect", sus[i]))
                        states[i] = "suspect"
                    else:
                        crossings.append((i, "alive", "dead", dead[i]))
                        continue
                if states[i] == "suspect" and dead[i] <= probe:
                    crossings.append((i, "suspect", "dead", dead[i]))
            got = many.scan(probe)
            assert got == one.scan(probe)
            assert [tuple(e[:4]) for e in got if e.new != "alive"] == crossings
            now = probe


def test_unknown_names_and_bad_arguments():
    det = TimeoutDetector(1.0)
    with pytest.raises(KeyError, match="ghost"):
        det.heartbeat("ghost", 1.0)
    with pytest.raises(KeyError, match="ghost"):
        det.remove("ghost")
    det.add("a")
    with pytest.raises(ValueError, match="already tracked"):
        det.add("a")
    with pytest.raises(TypeError, match=r"unhashable type: 'list'"):
        det.add([1])
    with pytest.raises(TypeError, match=r"must be real number, not str"):
        det.heartbeat("a", "soon")
    with pytest.raises(ValueError, match="timeout"):
        TimeoutDetector(0)
    with pytest.raises(ValueError, match="suspect_after"):
        TimeoutDetector(1.0, 2.0)
    with pytest.raises(TypeError, match=r"timeout must be a number, not str"):
        TimeoutDetector("5")
    with pytest.raises(ValueError, match="suspect_threshold"):
        PhiAccrualDetector(8.0, suspect_threshold=9.0)
    with pytest.raises(ValueError, match="max_sample_size"):
        PhiAccrualDetector(max_sample_size=0)
    with pytest.raises(ValueError, match="estimator"):
        PhiAccrualDetector(estimator="median")
    with pytest.raises(ValueError, match="min_std_deviation"):
        PhiAccrualDetector(min_std_deviation=math.nan)
    with pytest.raises(ValueError, match="ewma_alpha"):
        PhiAccrualDetector(estimator="ewma", ewma_alpha=1.5)
    with pytest.raises(IndexError, match=r"id 5 is not a component id"):
        det.name(5)
    with pytest.raises(IndexError, match=r"id 99 is not in the table"):
        det._table.state(99)


# ---- phi accrual against Akka ----------------------------------------------

def test_phi_function_is_akkas():
    for t, m, s in [(0.0, 1.0, 0.1), (1.0, 1.0, 0.1), (5.0, 4.0, 0.2), (50.0, 4.0, 0.2)]:
        assert _detect.phi(t, m, s) == akka_phi(t, m, s)


@pytest.mark.parametrize("threshold", [0.1, 1.0, 3.0, 8.0, 16.0])
def test_crossing_point_inverts_phi(threshold):
    y = _detect.crossing_y(threshold)
    assert akka_phi(y, 0.0, 1.0) == pytest.approx(threshold, rel=1e-12)
    assert akka_phi(y - 1e-6, 0.0, 1.0) < threshold < akka_phi(y + 1e-6, 0.0, 1.0)


def test_first_heartbeat_seeds_akkas_window():
    det = PhiAccrualDetector()
    det.add("n")
    det.heartbeat("n", 0.0)
    # window {0.75, 1.25}: mean 1, std 0.25; phi at mean + pause is -log10(1/2)
    assert det.phi("n", 4.0) == pytest.approx(math.log10(2), rel=1e-12)
    ref = AkkaPhiDetector()
    ref.heartbeat(0.0)
    for t in (0.5, 3.0, 4.0, 5.0, 6.0, 7.0):
        assert det.phi("n", t) == ref.phi(t)


histories = st.lists(
    st.one_of(st.floats(0.001, 3.0), st.floats(3.0, 30.0)), min_size=1, max_size=60)


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(intervals=histories,
       max_sample_size=st.integers(1, 12),
       threshold=st.floats(0.5, 12.0),
       min_std=st.floats(0.01, 0.5),
       pause=st.floats(0.0, 4.0),
       first=st.floats(0.05, 3.0),
       probes=st.lists(st.floats(0.0, 40.0), min_size=1, max_size=5))
def test_phi_equals_akka_reference_on_random_histories(intervals, max_sample_size, threshold,
                                                        min_std, pause, first, probes):
    kw = dict(max_sample_size=max_sample_size, min_std_deviation=min_std,
              acceptable_heartbeat_pause=pause, first_heartbeat_estimate=first)
    det = PhiAccrualDetector(threshold, **kw)
    ref = AkkaPhiDetector(threshold, **kw)
    det.add("n")
    t = 1.0
    for iv in [0.0] + intervals:
        t += iv
        det.heartbeat("n", t)
        ref.heartbeat(t)
        for p in probes:
            want = ref.phi(t + p)
            got = det.phi("n", t + p)
            assert got == pytest.approx(want, rel=1e-9, abs=1e-300), (t, p)
    assert det.phi_all(t + probes[0])[0] == pytest.approx(ref.phi(t + probes[0]), rel=1e-9)


def test_intervals_while_dead_do_not_enter_the_window():
    det = PhiAccrualDetector(max_sample_size=4)
    ref = AkkaPhiDetector(max_sample_size=4)
    det.add("n")
    arrivals = [0, 1, 2, 3, 60, 61, 62]  # 57 s of silence: phi far above 8
    for t in arrivals:
        det.heartbeat("n", t)
        ref.heartbeat(t)
    assert 57.0 not in ref.history.intervals
    assert det.phi("n", 63.5) == ref.phi(63.5)


def test_phi_states_follow_thresholds_and_recover():
    det = PhiAccrualDetector(8.0, suspect_threshold=3.0)
    ref = AkkaPhiDetector(8.0)
    det.add("n")
    for t in np.arange(0.0, 20.0, 1.0):
        det.heartbeat("n", float(t))
        ref.heartbeat(float(t))
    assert changes(det.scan(19.0)) == []
    s, d = det.deadlines("n")
    assert ref.phi(s) == pytest.approx(3.0, rel=1e-9)
    assert ref.phi(d) == pytest.approx(8.0, rel=1e-9)
    evs = det.scan(d + 1)
    assert [(e.old, e.new) for e in evs] == [("alive", "suspect"), ("suspect", "dead")]
    assert evs[0].at == s and evs[1].at == d
    det.heartbeat("n", d + 2)
    assert changes(det.scan(d + 2)) == [Event("n", "dead", "alive", d + 2)]


def test_ewma_estimator_tracks_mean_and_variance():
    det = PhiAccrualDetector(50.0, estimator="ewma", ewma_alpha=0.5, acceptable_heartbeat_pause=0.0,
                             min_std_deviation=1e-6)
    det.add("n")
    det.heartbeat("n", 0.0)
    mean, var = 1.0, 0.0625  # seeded as Akka's first window: mean e, std e/4
    t = 0.0
    for iv in [1.0, 2.0, 0.5, 1.5]:
        t += iv
        det.heartbeat("n", t)
        d = iv - mean
        mean += 0.5 * d
        var = 0.5 * (var + 0.5 * d * d)
    assert det.phi("n", t + 1.3) == pytest.approx(akka_phi(1.3, mean, math.sqrt(var)), rel=1e-12)


@pytest.mark.parametrize("estimator", ["window", "ewma"])
def test_incarnation_restart_reseeds_statistics(estimator):
    det = PhiAccrualDetector(estimator=estimator)
    det.add("n")
    for t in range(0, 50, 5):  # 5 s intervals
        det.heartbeat("n", float(t), incarnation=1)
    fresh = PhiAccrualDetector(estimator=estimator)
    fresh.add("n")
    fresh.heartbeat("n", 50.0)
    det.heartbeat("n", 50.0, incarnation=2)
    assert det.incarnation("n") == 2
    assert det.phi("n", 52.0) == fresh.phi("n", 52.0)
    assert det.deadlines("n") == fresh.deadlines("n")
    det.heartbeat("n", 51.0, incarnation=1)  # an older incarnation does not reseed
    assert det.incarnation("n") == 2


def test_phi_all_and_alive_mask_line_up_with_ids():
    det = PhiAccrualDetector()
    ids = det.add_many(["a", "b", "c"])
    det.heartbeat_many(ids, np.zeros(3))
    det.remove("b")
    phi = det.phi_all(2.0)
    assert phi[0] == det.phi("a", 2.0) and math.isnan(phi[1])
    out = np.empty(3)
    assert det.phi_all(2.0, out=out) is out
    with pytest.raises(ValueError, match="length 2, expected 3"):
        det.phi_all(2.0, out=np.empty(2))
    with pytest.raises(TypeError, match="float64"):
        det.phi_all(2.0, out=np.empty(3, dtype=np.float32))
    with pytest.raises(ValueError, match="C-contiguous"):
        det.phi_all(2.0, out=np.empty(6)[::2])


def test_memory_per_component_is_as_documented():
    n = 4096
    for det, per in [(TimeoutDetector(), 17), (PhiAccrualDetector(estimator="ewma"), 33)]:
        det.add_many(range(n))
        det.heartbeat_many(np.arange(n), np.zeros(n))
        det.scan(0.0)  # hands the join events over (and their memory back)
        assert det.memory_bytes() / n == pytest.approx(per, rel=0.05)
    det = PhiAccrualDetector()
    det.add_many(range(n))
    for t in range(3):
        det.heartbeat_many(np.arange(n), np.full(n, float(t)))
    det.scan(2.0)
    # 65 bytes + a window of 4 doubles (2 seeds + 2 intervals)
    assert det.memory_bytes() / n == pytest.approx(65 + 32, rel=0.05)


def test_public_names():
    assert fk.TimeoutDetector is TimeoutDetector and fk.PhiAccrualDetector is PhiAccrualDetector
    assert fk.Event is Event


def test_heartbeat_through_the_class_matches_the_instance_fast_path():
    det = TimeoutDetector(1.0)
    det.add("a")
    TimeoutDetector.heartbeat(det, "a", 3.0)
    assert det.last_heartbeat("a") == 3.0
    with pytest.raises(ValueError, match="incarnation"):
        det.heartbeat("a", 4.0, incarnation=-1)
    with pytest.raises(ValueError, match="incarnation"):
        det.heartbeat("a", 4.0, incarnation=True)
    assert det.last_heartbeat("a") == 3.0
    clock = FakeClock(7.0)
    det2 = TimeoutDetector(1.0, clock=clock)
    det2.add("b")
    det2.heartbeat("b", incarnation=5)
    assert det2.last_heartbeat("b") == 7.0 and det2.incarnation("b") == 5


@pytest.mark.parametrize("threshold", [0.2, 0.5, 3.0, 8.0])
@pytest.mark.parametrize("nudge", [-2, -1, 0, 1, 2])
def test_window_decision_at_the_crossing_time_is_phis(threshold, nudge):
    """A heartbeat arriving within ulps of the dead deadline joins the window iff Akka's phi < threshold."""
    det = PhiAccrualDetector(threshold, acceptable_heartbeat_pause=0.5, max_sample_size=5)
    ref = AkkaPhiDetector(threshold, acceptable_heartbeat_pause=0.5, max_sample_size=5)
    det.add("n")
    for t in (0.0, 1.1, 2.0, 3.2):
        det.heartbeat("n", t)
        ref.heartbeat(t)
    t = det.deadlines("n")[1]
    for _ in range(abs(nudge)):
        t = math.nextafter(t, math.copysign(math.inf, nudge))
    det.heartbeat("n", t)
    ref.heartbeat(t)
    for probe in (0.5, 1.0, 2.0):
        assert det.phi("n", t + probe) == pytest.approx(ref.phi(t + probe), rel=1e-12)
