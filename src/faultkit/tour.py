"""``faultkit tour``: the API tour, each section a function printing results of real calls.

:func:`tour` runs them all: :func:`cluster_story` (the pillars together), then
one section per pillar (``hashing_tour``, ``detect_tour``, ``balance_tour``,
``contain_tour``, ``recover_tour``).  Each takes ``out`` (a ``print``-like
callable, so tests capture the lines) and ``keys`` (the size of the bulk
examples).  Time is replayed through injected clocks (explicit ``now``), so the tour
shows minutes of cluster life in well under a second and never sleeps.
"""
from __future__ import annotations

import logging
import tempfile
import time
import warnings
from typing import Callable

import numpy as np

import faultkit as fk

Out = Callable[[str], None]


def cluster_story(out: Out = print, *, keys: int = 100_000, seed: int = 7) -> None:
    """A 60-node cluster loses two hosts of one rack; watch detection, isolation,
    routing and recovery follow, each step computed by the library."""
    rng = np.random.default_rng(seed)
    zones, racks, hosts = 3, 4, 5
    paths = {f"svc-{z}{r}{h}": f"eu/az{z}/r{r}/h{h}"
             for z in range(zones) for r in range(racks) for h in range(hosts)}
    with tempfile.TemporaryDirectory(prefix="faultkit-tour-") as tmp:
        clock = lambda: 0.0
        detector = fk.PhiAccrualDetector(suspect_threshold=3.0, clock=clock)
        cluster = fk.Cluster(paths, detector=detector, clock=clock,
                             checkpointer=fk.Checkpointer(tmp, fsync=False))
        nodes = cluster.nodes
        out(f"cluster: {len(nodes)} services in {zones} zones x {racks} racks x {hosts} hosts; "
            "XXH3 ring (160 vnodes each), phi-accrual detector (Akka defaults, suspect at phi 3), "
            "rack isolation policy (2 failures in 10 s)")

        key_list = [f"user:{i}" for i in range(keys)]
        before = cluster.route_many(key_list)

        # A service checkpoints the state it owns; its replacement recovers it.
        victim = "svc-120"
        owned = np.flatnonzero(before == nodes.index(victim))
        state = {"owner": victim, "keys": owned.astype(np.int64),
                 "balances": rng.normal(100.0, 15.0, owned.size)}
        info = cluster.save(state)

        # One heartbeat a second from everyone, with network jitter, for a minute;
        # from t=30 s two hosts of rack eu/az1/r2 fall silent.
        failed = {"svc-120", "svc-121"}
        lines = []
        joined = []
        cluster.add_listener(lambda e: joined.append(e.at) if e.old == "joining" else lines.append(
            (e.at, f"  t={e.at:6.2f} s  {e.name} {e.old} -> {e.new}")))
        cluster.policy.add_listener(lambda d: lines.append(
            (d.at, f"  t={d.at:6.2f} s  policy: {d.action} {d.domain} "
                   f"({len(d.services)} services): {d.reason}")))
        arrivals = np.arange(1.0, 61.0)
        for t in arrivals:
            jitter = rng.normal(0.0, 0.05, len(nodes)).clip(-0.2, 0.2)
            for node, dt in zip(nodes, jitter):
                if not (t >= 30.0 and node in failed):
                    cluster.heartbeat(node, t + dt + 0.2)
            cluster.tick(t + 0.5)
        out(f"  t={max(joined):6.2f} s  {len(joined)} services joined by then "
            "(first heartbeats: joining -> alive)")
        out(f"  t= 30.00 s  {', '.join(sorted(failed))} stop sending heartbeats")
        for _, line in sorted(lines, key=lambda x: x[0]):
            out(line)

        after = cluster.route_many(key_list)
        moved = before != after
        rack = {n for n, p in paths.items() if p.startswith("eu/az1/r2/")}
        from_rack = {nodes[i] for i in np.unique(before[moved]).tolist()} <= rack
        out(f"  routing: {moved.mean():.2%} of {keys:,} keys moved, all of them from rack "
            f"eu/az1/r2: {from_rack}; unroutable now: {len(cluster.unroutable())}")

        reps = [cluster.placement(k, 3) for k in key_list[:2000]]
        reachable = min(sum(cluster.is_routable(n) for n in r) for r in reps)
        out(f"  placement: 3 replicas in 3 racks per key; with the rack out, every key "
            f"keeps >= {reachable} reachable replicas")

        got = cluster.recover()
        same = (got["owner"] == victim and np.array_equal(got["keys"], state["keys"])
                and np.array_equal(got["balances"], state["balances"]))
        out(f"  recovery: {victim}'s checkpoint #{info.id} ({info.size:,} bytes, XXH3-checked) "
            f"restored by its replacement, bit-exact: {same}")
        cluster.checkpointer.close()


def tour(out: Out = print, *, keys: int = 1_000_000) -> None:
    """The whole tour: the cluster story, then each pillar on its own.

    ``keys`` sizes the bulk examples (hashing, routing)."""
    out(f"faultkit {fk.__version__}: detect, contain, recover, balance\n")
    cluster_story(out)
    out("")
    hashing_tour(out, keys=keys)
    detect_tour(out, keys=keys)
    balance_tour(out, keys=keys)
    contain_tour(out, keys=keys)
    recover_tour(out, keys=keys)


def hashing_tour(out: Out = print, *, keys: int = 1_000_000) -> None:
    """Hashing: XXH3-64 of a few keys, and of many at once."""
    out("hashing (XXH3-64, bit-identical to xxhash.xxh3_64_intdigest)")
    for key in ("user:42", b"\x00\x01", 2**40):
        out(f"  hash64({key!r:>12}) = {fk.hash64(key):#018x}")
    key_list = [f"session-{i:08d}" for i in range(keys)]
    t0 = time.perf_counter()
    hashes = fk.hash64_many(key_list)
    dt = time.perf_counter() - t0
    out(f"  hash64_many over {len(key_list):,} keys: {dt * 1e3:.1f} ms "
        f"({dt / max(len(key_list), 1) * 1e9:.0f} ns a key); "
        f"{len(set(hashes.tolist())):,} distinct values")


def detect_tour(out: Out = print, *, keys: int = 1_000_000) -> None:
    """Detect: replay heartbeats through both detectors (an injected clock, no sleeping)."""

    out("\ndetect (heartbeats replayed with explicit times; nothing sleeps)")
    det = fk.TimeoutDetector(timeout=5.0, suspect_after=2.0)
    for name in ("db-1", "db-2"):
        det.add(name, now=0.0)
        det.heartbeat(name, now=0.0)
    det.heartbeat("db-2", now=4.0)
    for ev in det.scan(now=5.5):
        out(f"  timeout 5 s: {ev.name} {ev.old} -> {ev.new} at t={ev.at:g}")
    det.heartbeat("db-1", now=6.0)
    for ev in det.scan(now=6.0):
        why = " (its heartbeat)" if ev.new == "alive" else ""
        out(f"  timeout 5 s: {ev.name} {ev.old} -> {ev.new} at t={ev.at:g}{why}")

    phi = fk.PhiAccrualDetector(suspect_threshold=3.0)  # Akka Cluster's defaults
    phi.add("n1", now=0.0)
    for t in range(20):
        phi.heartbeat("n1", now=float(t))
    s, d = phi.deadlines("n1")
    out(f"  phi accrual (threshold 8, Akka defaults): after 1 s heartbeats, n1 would be "
        f"suspect at t={s:.3f}, dead at t={d:.3f}")
    for t in (21.0, 23.0, s, d):
        out(f"    phi(n1, t={t:.3f}) = {phi.phi('n1', now=t) + 0.0:.3f}")

    n = keys
    big = fk.TimeoutDetector(timeout=5.0)
    ids = big.add_many(range(n))
    times = np.random.default_rng(0).uniform(0.0, 1.0, n)
    t0 = time.perf_counter()
    big.heartbeat_many(ids, times)
    t1 = time.perf_counter()
    events = big.scan(now=3.0)
    t2 = time.perf_counter()
    out(f"  {n:,} components: heartbeat_many {(t1 - t0) * 1e3:.1f} ms, "
        f"scan with nothing expiring {(t2 - t1) * 1e6:.0f} us ({len(events)} events), "
        f"{big.memory_bytes() / n:.0f} bytes a component")


def balance_tour(out: Out = print, *, keys: int = 1_000_000) -> None:
    """Balance: a ring's lookups, failover without a rebuild, and the other balancers."""

    out("\nbalance (consistent hashing; every balancer routes around down nodes)")
    nodes = [f"cache-{i}" for i in range(100)]
    ring = fk.HashRing(nodes)
    out(f"  HashRing: {len(ring)} nodes x {ring.vnodes} vnodes = {ring.num_points:,} XXH3 points; "
        f"get('user:42') -> {ring.get('user:42')}, get_n('user:42', 3) -> {ring.get_n('user:42', 3)}")
    keys = [f"session-{i:08d}" for i in range(keys)]
    t0 = time.perf_counter()
    owners = ring.get_many(keys)
    dt = time.perf_counter() - t0
    load = np.bincount(owners, minlength=len(ring))
    out(f"  get_many over {len(keys):,} keys: {dt * 1e3:.1f} ms "
        f"({dt / max(len(keys), 1) * 1e9:.0f} ns a key); max/mean load {load.max() / load.mean():.3f}")
    ring.mark_down("cache-7")
    after = ring.get_many(keys)
    moved = owners != after
    out(f"  mark_down('cache-7'): {moved.mean():.2%} of keys moved, all of them cache-7's: "
        f"{bool((owners[moved] == 7).all())}")
    ring.mark_up("cache-7")
    out(f"  mark_up('cache-7'): every key back where it was: {bool((ring.get_many(keys) == owners).all())}")
    bigger = fk.HashRing(nodes + ["cache-100"])
    sample = keys[:100_000]
    out(f"  add a 101st node: {fk.moved_fraction(ring, bigger, sample):.2%} of keys move "
        f"(ideal 1/101 = {1 / 101:.2%})")
    maglev = fk.Maglev(nodes)
    share = np.array(list(maglev.distribution().values()))
    m_before = maglev.get_many(sample)
    maglev.mark_down("cache-7")
    m_moved = m_before != maglev.get_many(sample)
    maglev.mark_up("cache-7")
    out(f"  Maglev mark_down('cache-7') without a rebuild: {m_moved.mean():.2%} of keys moved, "
        f"all of them cache-7's: {bool((m_before[m_moved] == 7).all())}; mark_up restores all: "
        f"{bool((maglev.get_many(sample) == m_before).all())}")
    out(f"  Maglev (table 65537): max/mean share {share.max() / share.mean():.4f}; "
        f"Rendezvous weighted 1:2:1 -> "
        f"{fk.Rendezvous(['a', 'b', 'c'], [1.0, 2.0, 1.0]).distribution()}")
    out(f"  jump_hash(2**40, 100) = {fk.jump_hash(2**40, 100)}; "
        f"ketama ring of 2 memcached servers sends 'foo' to "
        f"{fk.HashRing.ketama(['10.0.0.1:11211', '10.0.0.2:11211']).get('foo')}")
    bounded = fk.BoundedLoad(fk.HashRing(nodes[:10], vnodes=8), factor=1.25)
    for i in range(10_000):
        bounded.acquire(f"req-{i}")
    peak = max(bounded.loads().values())
    out(f"  BoundedLoad(factor=1.25) over a skewed 10-node ring: 10,000 requests, "
        f"peak load {peak} <= ceil(1.25 x 1,000) = 1,250")


def contain_tour(out: Out = print, *, keys: int = 1_000_000) -> None:
    """Contain: domains, isolation reaching a ring, placement, the policy, breaker, bulkhead."""

    from faultkit.detect import Event

    out("\ncontain (failure domains, isolation, placement, circuit breakers, bulkheads)")
    domains = fk.FailureDomains()
    for z in range(3):
        for r in range(10):
            for h in range(20):
                domains.assign(f"svc-{z}-{r}-{h}", f"eu/az{z}/r{r}/h{h}")
    ring = fk.HashRing(domains.services)
    domains.attach(ring)
    keys = [f"session-{i:08d}" for i in range(min(keys, 200_000))]
    before = ring.get_many(keys)
    t0 = time.perf_counter()
    newly = domains.isolate("eu/az1/r4")
    dt = time.perf_counter() - t0
    after = ring.get_many(keys)
    moved = before != after
    rack = {ring.index(s) for s in domains.members("eu/az1/r4")}
    out(f"  {len(domains)} services in 3 zones x 10 racks; isolate('eu/az1/r4') marks "
        f"{len(newly)} down in one bulk update ({dt * 1e6:.0f} us): {moved.mean():.2%} of "
        f"keys moved, all from that rack: {set(before[moved].tolist()) <= rack}")
    domains.restore("eu/az1/r4")
    out(f"  restore: every key back: {bool((ring.get_many(keys) == before).all())}")
    br = domains.blast_radius("eu/az1")
    out(f"  blast_radius('eu/az1'): {len(br.services)} services, {br.share:.1%} of the keyspace")
    sample = keys[:20_000]
    placed = domains.place_many(sample, 3, spread="rack")
    racks = np.array([[domains.domain_of(s, "rack") for s in row] for row in placed])
    survives = all((racks != r).any(axis=1).all() for r in domains.domains("rack"))
    out(f"  place('user:42', 3, spread='rack') -> {domains.place('user:42', 3)}; over "
        f"{len(sample):,} keys, losing any one of {len(domains.domains('rack'))} racks keeps "
        f"a replica of every key: {survives}")
    policy = fk.IsolationPolicy(domains, level="rack", min_failed=2, window=10.0)
    log = logging.getLogger("faultkit.contain")
    level = log.level
    log.setLevel(logging.ERROR)  # the refusals are summed up below, not logged one by one
    for t, svc in enumerate(["svc-2-7-0", "svc-2-7-5"]):
        decisions = policy.on_event(Event(svc, "alive", "dead", 100.0 + 3 * t))
    out(f"  IsolationPolicy: 2 deaths in rack eu/az2/r7 within 10 s -> "
        f"{decisions[0].action} {decisions[0].domain} ({len(decisions[0].services)} services)")
    for z in (0, 1):
        for r in range(10):
            for svc in (f"svc-{z}-{r}-0", f"svc-{z}-{r}-1"):
                policy.on_event(Event(svc, "alive", "dead", 200.0 + r))
    log.setLevel(level)
    refused = sorted({d.domain for d in policy.refusals})
    out(f"  ... then every rack of zones az0 and az1 fails: {len(refused)} racks refused past "
        f"max_isolated_fraction=0.5, {domains.isolated_fraction():.0%} of services isolated")

    clock = [0.0]
    breaker = fk.CircuitBreaker(minimum_calls=10, reset_timeout=30.0, clock=lambda: clock[0])
    transitions = []
    breaker.add_listener(lambda b, old, new: transitions.append(f"{old}->{new}@{clock[0]:g}s"))

    def flaky(i):
        if i % 2:
            raise ConnectionError("dependency down")
        return i

    for i in range(12):
        try:
            breaker.call(flaky, i)
        except (ConnectionError, fk.CircuitOpenError):
            pass
    clock[0] = 30.0
    for _ in range(10):
        breaker.call(flaky, 0)
    out(f"  CircuitBreaker: 50% failures over 10 calls, then 10 good trial calls 30 s later: "
        f"{', '.join(transitions)}")
    n = 200_000
    call = breaker.call
    t0 = time.perf_counter()
    for _ in range(n):
        call(int)
    t1 = time.perf_counter()
    for _ in range(n):
        int()
    t2 = time.perf_counter()
    out(f"  breaker.call overhead: {((t1 - t0) - (t2 - t1)) / n * 1e9:.0f} ns a call, no lock "
        f"held while the call runs (peers: docs/benchmarks.md)")
    bulkhead = fk.Bulkhead(2)
    with bulkhead, bulkhead:
        try:
            bulkhead.call(int)
        except fk.BulkheadFullError as exc:
            out(f"  Bulkhead(2) with 2 calls in flight: {exc}")


def recover_tour(out: Out = print, *, keys: int = 1_000_000) -> None:
    """Recover: checkpoint, corrupt the newest file, recover from the one before; incremental; mmap."""


    out("\nrecover (durable checkpoints in a temporary directory)")
    n = max(keys, 1000)
    with tempfile.TemporaryDirectory(prefix="faultkit-tour-") as d:
        ck = fk.Checkpointer(d, retain=3)
        weights = np.arange(n, dtype=np.float64)
        users = [{"id": i, "name": f"user{i}"} for i in range(1000)]
        t0 = time.perf_counter()
        first = ck.save({"step": 1, "weights": weights, "users": users})
        dt = time.perf_counter() - t0
        out(f"  save #{first.id}: {first.size / 2**20:.1f} MiB with fsync in {dt * 1e3:.1f} ms, "
            f"checksum {first.checksum:#018x}")
        weights[: n // 100] += 1.0  # change 1% of the array
        second = ck.save({"step": 2, "weights": weights, "users": users}, incremental=True)
        out(f"  incremental save #{second.id} after changing 1%: wrote {second.written / 2**20:.2f} MiB "
            f"of {weights.nbytes / 2**20:.1f} MiB ({second.size / 2**20:.2f} MiB file)")
        path = f"{d}/ckpt-{second.id:012d}.fkc"
        with open(path, "r+b") as f:  # a bit flip on disk
            f.seek(second.size // 2)
            byte = f.read(1)
            f.seek(second.size // 2)
            f.write(bytes([byte[0] ^ 0x10]))
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            state = ck.recover()
        for w in caught:
            out(f"  warning: {str(w.message).replace(d, '<dir>')}")
        out(f"  recover() fell back to step {state['step']}; weights equal to save #1: "
            f"{bool(np.array_equal(state['weights'], np.arange(n, dtype=np.float64)))}")
        t0 = time.perf_counter()
        mapped = ck.load(first.id, mmap=True)
        dt = time.perf_counter() - t0
        out(f"  load(mmap=True) in {dt * 1e6:.0f} us: weights writeable={mapped['weights'].flags.writeable} "
            f"(a read-only map of the file, no copy)")
        try:
            ck.save({"users": [1, 2, 3, object()]})
        except TypeError as e:
            out(f"  TypeError: {e}")
        ck.close()
