"""The ``faultkit`` command: ``faultkit demo`` tours the library with real calls;
``faultkit bench`` runs the benchmark suite against the peer libraries;
``faultkit monitor`` / ``faultkit beat`` receive / send heartbeats over UDP.

Each subcommand is a function ``cmd_<name>(args) -> int`` registered in
:func:`build_parser`; the pillars add theirs there.
"""
from __future__ import annotations

import argparse
import logging
import pathlib
import subprocess
import sys
import time

import faultkit as fk


def cmd_demo(args: argparse.Namespace) -> int:
    """A short tour of what faultkit does, every line computed by a real call."""
    out = print
    out(f"faultkit {fk.__version__}: detect, contain, recover, balance\n")

    from faultkit.demo import cluster_story

    cluster_story(out)
    out("")

    out("hashing (XXH3-64, bit-identical to xxhash.xxh3_64_intdigest)")
    for key in ("user:42", b"\x00\x01", 2**40):
        out(f"  hash64({key!r:>12}) = {fk.hash64(key):#018x}")
    keys = [f"session-{i:08d}" for i in range(args.keys)]
    t0 = time.perf_counter()
    hashes = fk.hash64_many(keys)
    dt = time.perf_counter() - t0
    out(f"  hash64_many over {len(keys):,} keys: {dt * 1e3:.1f} ms "
        f"({dt / max(len(keys), 1) * 1e9:.0f} ns a key); "
        f"{len(set(hashes.tolist())):,} distinct values")
    _demo_detect(args)
    _demo_balance(args)
    _demo_contain(args)
    _demo_recover(args)
    return 0


def _demo_detect(args: argparse.Namespace) -> None:
    """Detect: replay heartbeats through both detectors (an injected clock, no sleeping)."""
    import numpy as np

    out = print
    out("\ndetect (heartbeats replayed with explicit times; nothing sleeps)")
    det = fk.TimeoutDetector(timeout=5.0, suspect_after=2.0)
    for name in ("db-1", "db-2"):
        det.add(name)
        det.heartbeat(name, now=0.0)
    det.heartbeat("db-2", now=4.0)
    for ev in det.scan(now=5.5):
        out(f"  timeout 5 s: {ev.name} {ev.old} -> {ev.new} at t={ev.at:g}")
    det.heartbeat("db-1", now=6.0)
    for ev in det.scan(now=6.0):
        why = " (its heartbeat)" if ev.new == "alive" else ""
        out(f"  timeout 5 s: {ev.name} {ev.old} -> {ev.new} at t={ev.at:g}{why}")

    phi = fk.PhiAccrualDetector(suspect_threshold=3.0)  # Akka Cluster's defaults
    phi.add("n1")
    for t in range(20):
        phi.heartbeat("n1", now=float(t))
    s, d = phi.deadlines("n1")
    out(f"  phi accrual (threshold 8, Akka defaults): after 1 s heartbeats, n1 would be "
        f"suspect at t={s:.3f}, dead at t={d:.3f}")
    for t in (21.0, 23.0, s, d):
        out(f"    phi(n1, t={t:.3f}) = {phi.phi('n1', now=t) + 0.0:.3f}")

    n = args.keys
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


def _demo_balance(args: argparse.Namespace) -> None:
    """Balance: a ring's lookups, failover without a rebuild, and the other balancers."""
    import numpy as np

    out = print
    out("\nbalance (consistent hashing; every balancer routes around down nodes)")
    nodes = [f"cache-{i}" for i in range(100)]
    ring = fk.HashRing(nodes)
    out(f"  HashRing: {len(ring)} nodes x {ring.vnodes} vnodes = {ring.num_points:,} XXH3 points; "
        f"get('user:42') -> {ring.get('user:42')}, get_n('user:42', 3) -> {ring.get_n('user:42', 3)}")
    keys = [f"session-{i:08d}" for i in range(args.keys)]
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


def _demo_contain(args: argparse.Namespace) -> None:
    """Contain: domains, isolation reaching a ring, placement, the policy, breaker, bulkhead."""
    import numpy as np

    from faultkit.detect import Event

    out = print
    out("\ncontain (failure domains, isolation, placement, circuit breakers, bulkheads)")
    domains = fk.FailureDomains()
    for z in range(3):
        for r in range(10):
            for h in range(20):
                domains.assign(f"svc-{z}-{r}-{h}", f"eu/az{z}/r{r}/h{h}")
    ring = fk.HashRing(domains.services)
    domains.attach(ring)
    keys = [f"session-{i:08d}" for i in range(min(args.keys, 200_000))]
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
    for i in range(10):
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


def _demo_recover(args: argparse.Namespace) -> None:
    """Recover: checkpoint, corrupt the newest file, recover from the one before; incremental; mmap."""
    import tempfile
    import warnings

    import numpy as np

    out = print
    out("\nrecover (durable checkpoints in a temporary directory)")
    n = max(args.keys, 1000)
    with tempfile.TemporaryDirectory(prefix="faultkit-demo-") as d:
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


def cmd_bench(args: argparse.Namespace) -> int:
    """Run benchmarks/ with pytest-benchmark (needs a source checkout and the bench extra)."""
    root = pathlib.Path(args.path)
    if not root.is_dir():
        print(f"faultkit bench: no benchmark directory at {root} "
              "(run from a source checkout, or pass --path)", file=sys.stderr)
        return 2
    try:
        import pytest_benchmark  # noqa: F401
    except ImportError:
        print("faultkit bench: needs pytest-benchmark: pip install 'faultkit[bench]'",
              file=sys.stderr)
        return 2
    cmd = [sys.executable, "-m", "pytest", str(root), "--benchmark-only",
           "--benchmark-columns=min,median,mean,ops,rounds", *args.pytest_args]
    return subprocess.call(cmd)


def _make_detector(args: argparse.Namespace):
    if args.detector == "timeout":
        return fk.TimeoutDetector(args.timeout, args.suspect_after)
    return fk.PhiAccrualDetector(
        args.threshold, suspect_threshold=args.suspect_threshold,
        acceptable_heartbeat_pause=args.acceptable_pause,
        first_heartbeat_estimate=args.first_estimate, min_std_deviation=args.min_std)


def cmd_monitor(args: argparse.Namespace) -> int:
    """Receive heartbeats on --bind and print every state change as it happens."""
    import asyncio

    from faultkit.transport import HeartbeatReceiver, load_key

    try:
        key = load_key(args.key_file)
        det = _make_detector(args)
    except (OSError, ValueError, TypeError) as e:
        print(f"faultkit monitor: {e}", file=sys.stderr)
        return 2

    def say(text: str) -> None:
        print(text, flush=True)

    det.add_listener(lambda ev: say(f"{ev.at:.3f} {ev.name} {ev.old} -> {ev.new}"))

    async def run() -> None:
        receiver = HeartbeatReceiver(det, args.bind, key=key,
                                     on_join=lambda n: say(f"{time.monotonic():.3f} {n} joined"))
        host, port = await receiver.start()
        say(f"listening on {host}:{port} ({det!r})")
        try:
            while True:
                await asyncio.sleep(args.scan_interval)
                det.scan()
        finally:
            receiver.close()

    try:
        asyncio.run(run())
    except OSError as e:
        print(f"faultkit monitor: cannot bind {args.bind}: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        pass
    return 0


def cmd_beat(args: argparse.Namespace) -> int:
    """Send heartbeats for --name to --target every --interval seconds, until stopped."""
    import asyncio

    from faultkit.transport import HeartbeatSender, load_key

    try:
        key = load_key(args.key_file)
        sender = HeartbeatSender(args.name, args.target, args.interval, key=key,
                                 incarnation=args.incarnation)
    except (OSError, ValueError, TypeError) as e:
        print(f"faultkit beat: {e}", file=sys.stderr)
        return 2

    async def run() -> None:
        await sender.start()
        print(f"beating {', '.join(sender.names)} -> {args.target} every {sender.interval:g} s "
              f"(incarnation {sender.incarnation})", flush=True)
        try:
            await asyncio.Event().wait()
        finally:
            sender.close()

    try:
        asyncio.run(run())
    except KeyboardInterrupt:
        pass
    return 0


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a finite number > 0, got {text}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="faultkit", description=__doc__.split("\n")[0])
    parser.add_argument("--version", action="version", version=f"faultkit {fk.__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("demo", help="tour the library with real calls")
    p.add_argument("--keys", type=_positive_int, default=1_000_000,
                   help="keys for the bulk examples (default 1,000,000)")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("bench", help="run the benchmarks against the peer libraries")
    p.add_argument("--path", default="benchmarks", help="benchmark directory (default ./benchmarks)")
    p.add_argument("pytest_args", nargs=argparse.REMAINDER, help="passed on to pytest")
    p.set_defaults(func=cmd_bench)

    p = sub.add_parser("monitor", help="receive heartbeats over UDP and print state changes")
    p.add_argument("--bind", default="127.0.0.1:7946", help="host:port to listen on (port 0: any)")
    p.add_argument("--key-file", required=True, help="file holding the shared HMAC key (>= 16 bytes)")
    p.add_argument("--detector", choices=("timeout", "phi"), default="timeout")
    p.add_argument("--timeout", type=_positive_float, default=5.0,
                   help="timeout detector: dead after this many silent seconds (default 5)")
    p.add_argument("--suspect-after", type=_positive_float, default=None,
                   help="timeout detector: suspect after this many silent seconds")
    p.add_argument("--threshold", type=_positive_float, default=8.0, help="phi: dead threshold (8)")
    p.add_argument("--suspect-threshold", type=_positive_float, default=None,
                   help="phi: suspect threshold")
    p.add_argument("--acceptable-pause", type=float, default=3.0,
                   help="phi: acceptable heartbeat pause, seconds (3)")
    p.add_argument("--first-estimate", type=_positive_float, default=1.0,
                   help="phi: first heartbeat interval estimate, seconds (1)")
    p.add_argument("--min-std", type=_positive_float, default=0.1,
                   help="phi: minimum standard deviation, seconds (0.1)")
    p.add_argument("--scan-interval", type=_positive_float, default=0.1,
                   help="seconds between scans (0.1)")
    p.set_defaults(func=cmd_monitor)

    p = sub.add_parser("beat", help="send heartbeats over UDP")
    p.add_argument("--name", required=True, action="append",
                   help="component name (repeat for several in one datagram)")
    p.add_argument("--target", default="127.0.0.1:7946", help="monitor's host:port")
    p.add_argument("--key-file", required=True, help="file holding the shared HMAC key (>= 16 bytes)")
    p.add_argument("--interval", type=_positive_float, default=1.0,
                   help="seconds between heartbeats (default 1, Akka's heartbeat-interval)")
    p.add_argument("--incarnation", type=int, default=None,
                   help="incarnation number (default: start time in ms)")
    p.set_defaults(func=cmd_beat)
    return parser


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {value}")
    return value


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
