"""IsolationPolicy driven by a real detector's events on replayed times."""
import pytest

import faultkit as fk
from faultkit.contain import FailureDomains, IsolationPolicy
from faultkit.detect import Event, TimeoutDetector


def fleet(racks=4, hosts=4):
    d = FailureDomains()
    for r in range(racks):
        for h in range(hosts):
            d.assign(f"r{r}h{h}", f"eu/az0/r{r}/h{h}")
    return d


class Clock:
    def __init__(self, t=0.0):
        self.t = t

    def __call__(self):
        return self.t


def monitored(d, timeout=5.0):
    det = TimeoutDetector(timeout=timeout)
    for s in d.services:
        det.add(s)
        det.heartbeat(s, now=0.0)
    return det


def beat(det, services, now):
    for s in services:
        det.heartbeat(s, now=now)


def test_correlated_failures_isolate_the_rack_and_recovery_restores_it():
    d = fleet()
    ring = fk.HashRing(d.services)
    d.attach(ring)
    det = monitored(d)
    clock = Clock()
    policy = IsolationPolicy(d, level="rack", min_failed=2, window=10.0, hold=20.0, clock=clock)
    policy.watch(det)
    everyone = d.services
    rack1 = d.members("eu/az0/r1")
    # r1h0 goes silent at 0; r1h1 at 3: dead at 5 and 8, 3 s apart.
    beat(det, [s for s in everyone if s != "r1h0"], 3.0)
    assert [e.name for e in det.scan(now=6.0) if e.old != "joining"] == ["r1h0"]
    assert d.isolated == []  # one failure is not correlated
    beat(det, [s for s in everyone if s not in ("r1h0", "r1h1")], 6.0)
    det.scan(now=9.0)
    assert d.isolated == ["eu/az0/r1"]
    assert [x.action for x in policy.decisions] == ["isolate"]
    assert not any(ring.is_up(s) for s in rack1)  # the healthy rest of r1 too
    assert ring.alive_mask().sum() == 12
    # Both recover at 12; the rack must stay healthy for hold=20 s.
    beat(det, everyone, 12.0)
    det.scan(now=12.0)
    assert d.isolated == ["eu/az0/r1"]
    assert policy.tick(31.9) == []
    restored = policy.tick(32.0)
    assert [x.action for x in restored] == ["restore"] and sorted(restored[0].services) == rack1
    assert d.isolated == [] and ring.alive_mask().all()


def test_failures_further_apart_than_the_window_do_not_isolate():
    d = fleet()
    policy = IsolationPolicy(d, min_failed=2, window=10.0)
    policy.on_event(Event("r0h0", "alive", "dead", 100.0))
    policy.on_event(Event("r0h1", "alive", "dead", 110.5))
    assert d.isolated == []
    # Out of time order across services: a failure at 101 pairs with 100.
    policy.on_event(Event("r0h2", "alive", "suspect", 101.0))
    assert d.isolated == ["eu/az0/r0"]
    decision = policy.decisions[-1]
    assert decision.action == "isolate" and "r0h0" in decision.reason and "r0h2" in decision.reason


def test_a_new_failure_restarts_the_hold():
    d = fleet()
    policy = IsolationPolicy(d, min_failed=2, window=5.0, hold=10.0)
    for s in ("r2h0", "r2h1"):
        policy.on_event(Event(s, "alive", "dead", 0.0))
    for s in ("r2h0", "r2h1"):
        policy.on_event(Event(s, "dead", "alive", 1.0))
    policy.on_event(Event("r2h3", "alive", "suspect", 8.0))
    assert policy.tick(11.0) == [] and d.isolated == ["eu/az0/r2"]
    policy.on_event(Event("r2h3", "suspect", "alive", 12.0))
    assert policy.tick(21.9) == []
    assert [x.action for x in policy.tick(22.0)] == ["restore"]


def test_restore_share_below_one():
    d = fleet()
    policy = IsolationPolicy(d, min_failed=3, window=5.0, hold=0.0, restore_share=0.75)
    for s in ("r3h0", "r3h1", "r3h2"):
        policy.on_event(Event(s, "alive", "dead", 0.0))
    assert d.isolated == ["eu/az0/r3"]
    policy.on_event(Event("r3h0", "dead", "alive", 1.0))  # 2 of 4 healthy
    assert d.isolated == ["eu/az0/r3"]
    made = policy.on_event(Event("r3h1", "dead", "alive", 2.0))  # 3 of 4: restore at once
    assert [x.action for x in made] == ["restore"] and d.isolated == []


def test_cap_refuses_and_reports_past_max_isolated_fraction():
    d = fleet(racks=4)
    seen = []
    policy = IsolationPolicy(d, min_failed=2, window=10.0, max_isolated_fraction=0.5)
    policy.add_listener(seen.append)
    for r in range(4):  # every rack fails: the monitor is probably the one cut off
        for h in range(2):
            policy.on_event(Event(f"r{r}h{h}", "alive", "dead", 1.0 + r))
    assert d.isolated == ["eu/az0/r0", "eu/az0/r1"]  # 50%: at the cap, not over it
    assert d.isolated_fraction() == 0.5
    refusals = policy.refusals
    assert {x.domain for x in refusals} == {"eu/az0/r2", "eu/az0/r3"}
    assert "over max_isolated_fraction=0.5" in refusals[0].reason
    assert seen == policy.decisions
    with pytest.raises(fk.IsolationRefusedError, match="75% of services"):
        policy.isolate("eu/az0/r2", now=5.0)
    assert d.isolated == ["eu/az0/r0", "eu/az0/r1"]


def test_manual_isolation_and_unknown_services():
    d = fleet()
    policy = IsolationPolicy(d, hold=5.0, clock=Clock(100.0))
    assert policy.on_event(Event("not-in-domains", "alive", "dead", 0.0)) == []
    assert sorted(policy.isolate("eu/az0/r0")) == ["r0h0", "r0h1", "r0h2", "r0h3"]
    assert policy.isolated == ["eu/az0/r0"]
    assert [x.action for x in policy.tick(105.0)] == ["restore"]
    with pytest.raises(KeyError, match=r"unknown domain 'eu/az9'"):
        policy.isolate("eu/az9")


@pytest.mark.parametrize("kwargs, error, match", [
    ({"level": "shelf"}, ValueError, r"unknown level 'shelf'; levels are \('region', 'zone', 'rack', 'host'\)"),
    ({"min_failed": 0}, ValueError, r"min_failed must be >= 1, got 0"),
    ({"min_failed": 1.5}, TypeError, r"min_failed must be an int, not float"),
    ({"window": -1}, ValueError, r"window must be a finite number of seconds >= 0, got -1\.0"),
    ({"window": float("inf")}, ValueError, r"window must be a finite number of seconds >= 0, got inf"),
    ({"restore_share": 0}, ValueError, r"restore_share must be in \(0, 1\], got 0\.0"),
    ({"restore_share": 1.1}, ValueError, r"restore_share must be in \(0, 1\], got 1\.1"),
    ({"hold": -1}, ValueError, r"hold must be a finite number of seconds >= 0, got -1\.0"),
    ({"max_isolated_fraction": 0}, ValueError, r"max_isolated_fraction must be in \(0, 1\], got 0\.0"),
    ({"max_isolated_fraction": 2}, ValueError, r"max_isolated_fraction must be in \(0, 1\], got 2\.0"),
    ({"max_isolated_fraction": "half"}, TypeError, r"max_isolated_fraction must be a number, not str"),
    ({"clock": None}, TypeError, r"clock must be callable, not NoneType"),
])
def test_bad_arguments(kwargs, error, match):
    with pytest.raises(error, match=match):
        IsolationPolicy(fleet(), **kwargs)
    with pytest.raises(TypeError, match=r"domains must be a FailureDomains, not str"):
        IsolationPolicy("domains")


def test_failed_states_choose_what_counts_and_graceful_states_never_do():
    d = fleet()
    policy = IsolationPolicy(d, min_failed=2, window=10.0, failed_states=("dead",))
    policy.on_event(Event("r0h0", "alive", "suspect", 1.0))
    policy.on_event(Event("r0h1", "alive", "suspect", 2.0))
    assert d.isolated == []  # suspicion is not failure here
    policy.on_event(Event("r0h0", "suspect", "dead", 4.0))
    policy.on_event(Event("r0h0", "dead", "restarted", 5.0))  # a restart ends the failure
    policy.on_event(Event("r0h1", "suspect", "dead", 6.0))
    assert d.isolated == []
    policy.on_event(Event("r0h2", "alive", "left", 6.5))       # a graceful leave is no failure
    assert d.isolated == []
    policy.on_event(Event("r0h3", "alive", "dead", 7.0))
    assert d.isolated == ["eu/az0/r0"]
    for bad, exc in (((), ValueError), (("left",), ValueError), ("dead", TypeError)):
        with pytest.raises(exc, match="failed_states"):
            IsolationPolicy(d, failed_states=bad)


# ---- mutants that survived the suite once (issue #21); each test names the one it kills

def test_failures_exactly_window_apart_are_within_the_window():
    """Kills: the isolation window's boundary moved to exclude exactly ``window`` seconds
    (``<= self.window`` -> ``<`` in ``_correlated``, either comparison)."""
    d = fleet()
    policy = IsolationPolicy(d, min_failed=2, window=10.0)
    policy.on_event(Event("r0h0", "alive", "dead", 100.0))
    policy.on_event(Event("r0h1", "alive", "dead", 110.0))   # exactly window later
    assert d.isolated == ["eu/az0/r0"]
    policy.on_event(Event("r1h0", "alive", "dead", 100.0))
    policy.on_event(Event("r1h1", "alive", "dead", 110.0 + 1e-9))  # just past it
    assert d.isolated == ["eu/az0/r0"]

    # The span extends to every failure up to exactly window after its first: a refused
    # isolation (over the cap) keeps the failures, so the third one joins the span.
    d = fleet()
    policy = IsolationPolicy(d, min_failed=2, window=10.0, max_isolated_fraction=0.2)
    policy.on_event(Event("r0h0", "alive", "dead", 100.0))
    policy.on_event(Event("r0h1", "alive", "dead", 104.0))
    policy.on_event(Event("r0h2", "alive", "dead", 110.0))
    assert [x.reason.split(":")[0] for x in policy.refusals] == [
        "2 services failed within 10 s", "3 services failed within 10 s"]


def test_alive_events_leave_domains_the_policy_did_not_isolate_alone():
    """Kills: an *alive* event starting (or restarting) the hold of a domain the policy did
    not isolate (the ``domain in self._mine`` / ``self._mine[domain] is None`` guards of
    ``on_event``), which would restore an operator's isolation or delay a due restore."""
    d = fleet()
    policy = IsolationPolicy(d, min_failed=2, window=10.0, hold=5.0)
    d.isolate("eu/az0/r1")                     # an operator's isolation, not the policy's
    policy.on_event(Event("r1h0", "alive", "dead", 0.0))
    policy.on_event(Event("r1h0", "dead", "alive", 1.0))
    policy.on_event(Event("r2h0", "joining", "alive", 1.0))  # a domain nobody isolated
    assert policy.isolated == [] and policy.tick(100.0) == []
    assert d.isolated == ["eu/az0/r1"] and [x.action for x in policy.decisions] == []

    # A domain the policy isolated, healthy since 1.0: a later alive event (a member that
    # was never down rejoining) must not push its restore from 11.0 to later.
    d = fleet()
    policy = IsolationPolicy(d, min_failed=2, window=10.0, hold=10.0)
    for s in ("r3h0", "r3h1"):
        policy.on_event(Event(s, "alive", "dead", 0.0))
    for s in ("r3h0", "r3h1"):
        policy.on_event(Event(s, "dead", "alive", 1.0))
    policy.on_event(Event("r3h2", "alive", "restarted", 5.0))
    assert policy.tick(10.9) == []
    assert [x.action for x in policy.tick(11.0)] == ["restore"] and d.isolated == []


def test_max_isolated_fraction_of_one_is_accepted():
    """Kills: ``0 < max_isolated_fraction <= 1`` -> ``< 1`` (the documented upper bound,
    "isolate anything", refused)."""
    d = fleet(racks=2, hosts=2)
    policy = IsolationPolicy(d, min_failed=2, window=10.0, max_isolated_fraction=1)
    for s in d.services:
        policy.on_event(Event(s, "alive", "dead", 0.0))
    assert d.isolated == ["eu/az0/r0", "eu/az0/r1"] and policy.refusals == []


@pytest.mark.parametrize("failed, tail", [(5, ""), (6, ", ...")])
def test_isolation_reason_names_at_most_five_services(failed, tail):
    """Kills: the reason's ``", ..."`` appended past 6 names instead of 5 (``> 5`` -> ``> 6``)
    and the name list cut elsewhere than 5."""
    d = fleet(racks=1, hosts=8)
    policy = IsolationPolicy(d, min_failed=failed, window=10.0, max_isolated_fraction=1)
    for h in range(failed):
        policy.on_event(Event(f"r0h{h}", "alive", "dead", float(h)))
    [decision] = policy.decisions
    names = ", ".join(f"r0h{h}" for h in range(5))
    assert decision.reason == f"{failed} services failed within 10 s: {names}{tail}"


def test_defaults_and_boundary_arguments():
    """Kills: the documented ``window`` default 10.0 -> 11.0; ``min_failed=1`` refused
    (``min_failed < 1`` -> ``< 2``); ``window=0`` refused (``window >= 0`` -> ``>= 1``)."""
    d = fleet()
    policy = IsolationPolicy(d)                               # window=10 s, min_failed=2
    policy.on_event(Event("r0h0", "alive", "dead", 0.0))
    policy.on_event(Event("r0h1", "alive", "dead", 10.5))     # inside 11 s, not 10 s
    assert d.isolated == []
    policy = IsolationPolicy(d, min_failed=1)
    policy.on_event(Event("r2h0", "alive", "dead", 0.0))      # one failure is enough
    assert d.isolated == ["eu/az0/r2"]
    d = fleet()
    policy = IsolationPolicy(d, window=0)                     # only simultaneous failures
    policy.on_event(Event("r1h0", "alive", "dead", 5.0))
    policy.on_event(Event("r1h1", "alive", "dead", 5.0))
    assert d.isolated == ["eu/az0/r1"]


def test_the_span_stops_at_the_first_failure_past_the_window():
    """Kills: ``j += 1`` -> ``j += 2`` in ``_correlated``: stepping over a failure would take
    the one after it (outside the window) into the span."""
    d = fleet()
    policy = IsolationPolicy(d, min_failed=2, window=10.0, max_isolated_fraction=0.2)
    for s, t in (("r0h0", 100.0), ("r0h1", 104.0), ("r0h3", 120.0), ("r0h2", 106.0)):
        policy.on_event(Event(s, "alive", "dead", t))
    last = policy.refusals[-1].reason
    assert last.startswith("3 services failed within 10 s: ") and "r0h3" not in last


# ---------------------------------------------------------------- mutants of a full run (docs/mutation.md)

def test_default_hold_is_envoys_30_seconds_and_repr_names_the_settings():
    """Kills the mutants ``DEFAULT_HOLD = 30.0`` -> ``31.0`` (Envoy's base_ejection_time, as
    documented) and ``__repr__`` -> ``return None``."""
    d = fleet()
    policy = IsolationPolicy(d, clock=Clock())
    assert policy.hold == 30.0 == fk.contain.policy.DEFAULT_HOLD
    d.isolate("eu/az0/r2")
    assert repr(policy) == "IsolationPolicy(level='rack', min_failed=2, window=10, isolated=[])"


def test_a_domain_isolated_by_someone_else_is_not_adopted_by_the_policy():
    """Kills the mutant ``_is_isolated_domain`` -> ``return None``: failures in a domain that
    is already isolated (by an operator, through FailureDomains) make no decision, and the
    policy does not restore what it did not isolate."""
    d = fleet()
    policy = IsolationPolicy(d, min_failed=2, window=10.0, hold=5.0, clock=Clock())
    d.isolate("eu/az0/r1")
    assert policy.on_event(Event("r1h0", "alive", "dead", 1.0)) == []
    assert policy.on_event(Event("r1h1", "alive", "dead", 2.0)) == []
    for s in ("r1h0", "r1h1"):
        policy.on_event(Event(s, "dead", "alive", 3.0))
    assert policy.tick(100.0) == [] and policy.decisions == []
    assert d.isolated == ["eu/az0/r1"]


def test_the_reason_lists_exactly_the_burst():
    """Kills the mutant ``j = i + m`` -> ``i - m`` in ``_correlated``: the services named are
    those of the first window holding ``min_failed`` failures, not later ones (events may
    arrive out of time order: here the later failures are known first)."""
    d = fleet(racks=4, hosts=5)
    policy = IsolationPolicy(d, min_failed=2, window=10.0, clock=Clock())
    for s, at in (("r0h2", 50.0), ("r0h3", 70.0), ("r0h4", 90.0), ("r0h0", 0.0)):
        assert policy.on_event(Event(s, "alive", "dead", at)) == []  # no two within 10 s yet
    [decision] = policy.on_event(Event("r0h1", "alive", "dead", 1.0))
    assert decision.action == "isolate" and decision.domain == "eu/az0/r0"
    assert decision.reason == "2 services failed within 10 s: r0h0, r0h1"
