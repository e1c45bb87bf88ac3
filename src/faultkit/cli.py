"""The ``faultkit`` command: ``faultkit demo`` tours the library with real calls;
``faultkit bench`` runs the benchmark suite against the peer libraries.

Each subcommand is a function ``cmd_<name>(args) -> int`` registered in
:func:`build_parser`; the pillars add theirs there.
"""
from __future__ import annotations

import argparse
import pathlib
import subprocess
import sys
import time

import faultkit as fk


def cmd_demo(args: argparse.Namespace) -> int:
    """A short tour of what faultkit does, every line computed by a real call."""
    out = print
    out(f"faultkit {fk.__version__}: detect, contain, recover, balance\n")

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
