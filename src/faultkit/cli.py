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
    return 0


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
