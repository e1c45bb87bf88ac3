"""The ``faultkit`` command: ``faultkit demo`` runs a replicated service on real
processes under faults (:mod:`faultkit.demo`); ``faultkit tour`` tours the API with
real calls (:mod:`faultkit.tour`);
``faultkit bench`` measures faultkit against the peer libraries (:mod:`faultkit.bench`);
``faultkit monitor`` / ``faultkit beat`` receive / send heartbeats over UDP.

Each subcommand is a function ``cmd_<name>(args) -> int`` registered in
:func:`build_parser`; the pillars add theirs there.
"""
from __future__ import annotations

import argparse
import json
import os
import pathlib
import subprocess
import sys
import time
from typing import Any, List, Optional

import faultkit as fk

PILLARS = ("hash", "balance", "detect", "contain", "recover")  # faultkit.bench.PILLARS, without importing it


def cmd_tour(args: argparse.Namespace) -> int:
    """A short tour of what faultkit does, every line computed by a real call."""
    from faultkit.tour import tour

    tour(print, keys=args.keys)
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    """A replicated key-value service on real processes, faults under load, and the read-back."""
    from faultkit.demo import Options, main

    opts = Options(workers=args.workers, racks=args.racks, duration=args.duration, rate=args.rate,
                   faults=args.faults, detector=args.detector, interval=args.interval,
                   membership=args.membership, store=args.store, s3_endpoint=args.s3_endpoint,
                   keys=args.keys, seed=args.seed, json=args.json, plot=args.plot, keep=args.keep,
                   unsafe=args.unsafe, netns=args.netns)
    try:
        opts.check()
    except (TypeError, ValueError) as e:
        print(f"faultkit demo: {e}", file=sys.stderr)
        return 2
    return main(opts)


def cmd_bench(args: argparse.Namespace) -> int:
    """faultkit against the installed peer libraries, one table of ratios (faultkit.bench)."""
    if args.pytest is not None:
        return _bench_pytest(args)
    from faultkit import bench

    scale = args.scale if args.scale is not None else (0.1 if args.quick else 1.0)
    rounds = args.rounds if args.rounds is not None else (3 if args.quick else 7)

    def progress(text: str) -> None:
        print(text, file=sys.stderr, flush=True)

    progress(f"faultkit bench: scale {scale:g}, {rounds} rounds a side, pillars {', '.join(args.only)}")
    try:
        rows = bench.run(scale=scale, rounds=rounds, pillars=args.only, progress=progress,
                         repeat=args.repeat)
    except ValueError as e:
        print(f"faultkit bench: {e}", file=sys.stderr)
        return 2
    if args.json:
        print(bench.to_json(rows, scale=scale, rounds=rounds, repeat=args.repeat,
                            loadavg=_loadavg()))
    else:
        print(bench.format_table(rows))
    if args.plot:
        try:
            bench.plot(rows, args.plot)
        except ImportError:
            print("faultkit bench: --plot needs matplotlib: pip install 'faultkit[bench]'", file=sys.stderr)
            return 2
        progress(f"faultkit bench: plot written to {args.plot}")
    return 0


def _loadavg() -> Optional[List[float]]:
    """The 1, 5 and 15 minute load averages, or None where the OS has none."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except (AttributeError, OSError):
        return None


def _bench_pytest(args: argparse.Namespace) -> int:
    """The repository's pytest-benchmark files (a source checkout and the bench extra)."""
    root = pathlib.Path(args.pytest)
    if not root.is_dir():
        print(f"faultkit bench: no benchmark directory at {root}", file=sys.stderr)
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
        cluster = _monitor_cluster(args.domains, det) if args.domains else None
    except (OSError, ValueError, TypeError) as e:
        print(f"faultkit monitor: {e}", file=sys.stderr)
        return 2

    def say(text: str) -> None:
        print(text, flush=True)

    def report(ev: "fk.Event") -> None:
        if args.json:
            from faultkit.observe import record
            say(json.dumps(record("monitor", ev), sort_keys=True))
            return
        line = f"{ev.at:.3f} {ev.name} {ev.old} -> {ev.new}"
        if ev.new == "restarted":
            line += f" (incarnation {ev.old_incarnation} -> {ev.incarnation})"
        say(line)

    def report_decision(d: "fk.contain.Decision") -> None:
        if args.json:
            from faultkit.observe import decision_record
            say(json.dumps(decision_record("monitor", d), sort_keys=True))
            return
        say(f"{d.at:.3f} {d.action} {d.domain}: {d.reason}")

    live = None
    if not args.json and not args.plain and sys.stdout.isatty():
        try:
            import rich  # noqa: F401
        except ImportError:
            pass
        else:
            from faultkit.observe.live import LiveView
            live = LiveView(det, cluster=cluster)
    if live is None:
        det.add_listener(report)
    else:
        det.add_listener(live.event)
    if cluster is not None and cluster.policy is not None:
        cluster.policy.add_listener(report_decision if live is None else live.decision)
    scan = det.scan if cluster is None else cluster.tick

    async def run() -> None:
        # The monitor has no member list: every authenticated name is a member.
        on_join = (lambda n: None) if live else (lambda n: say(f"{time.monotonic():.3f} {n} joined"))
        receiver = HeartbeatReceiver(det, args.bind, key=key, max_skew=args.max_skew, auto_add=True,
                                     on_join=on_join)
        host, port = await receiver.start()
        if live is None:
            say(f"listening on {host}:{port} ({det!r})")
        else:
            live.title = f"faultkit monitor on {host}:{port}"
        server = None
        if args.metrics is not None:
            from faultkit.observe import Registry
            from faultkit.observe.prometheus import serve

            reg = Registry()
            reg.add(det, "monitor")
            reg.add(receiver, "monitor")
            if cluster is not None:
                reg.add(cluster, "monitor")
            server, mport = serve(reg, args.metrics, args.metrics_addr)
            say(f"metrics on http://{args.metrics_addr}:{mport}/metrics")
        try:
            if live is None:
                while True:
                    await asyncio.sleep(args.scan_interval)
                    scan()
            from rich.live import Live

            with Live(live.render(time.monotonic()), auto_refresh=False, screen=False) as view:
                shown = 0.0
                while True:
                    await asyncio.sleep(args.scan_interval)
                    scan()
                    now = time.monotonic()
                    if now - shown >= 0.25:  # redraw at most 4 times a second
                        view.update(live.render(now), refresh=True)
                        shown = now
        finally:
            receiver.close()
            if server is not None:
                server.shutdown()

    try:
        asyncio.run(run())
    except OSError as e:
        print(f"faultkit monitor: cannot bind {args.bind}: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        pass
    return 0


def _monitor_cluster(path: str, det: Any) -> "fk.Cluster":
    """The Cluster a monitor keeps over ``det`` from a JSON file ``{member: domain path}``:
    isolation decisions and routing per member (requests are not seen: no outlier ejection)."""
    with open(path, encoding="utf-8") as f:
        try:
            mapping = json.load(f)
        except ValueError as e:
            raise ValueError(f"{path}: not JSON: {e}") from None
    if not isinstance(mapping, dict) or not mapping:
        raise ValueError(f"{path}: expected a JSON object {{member: \"region/zone/rack/host\"}}, "
                         f"got {type(mapping).__name__}")
    bad = next((v for v in mapping.values() if not isinstance(v, str)), None)
    if bad is not None:
        raise ValueError(f"{path}: domain paths must be strings, got {bad!r}")
    return fk.Cluster(mapping, detector=det, outliers=False)


def cmd_beat(args: argparse.Namespace) -> int:
    """Send heartbeats for --name to --target every --interval seconds, until stopped.

    SIGTERM or SIGINT stops it gracefully: it sends a leave (the monitor
    reports ``left`` at once) before exiting; SIGKILL looks like a crash.
    """
    import asyncio
    import signal

    from faultkit.transport import HeartbeatSender, load_key

    try:
        key = load_key(args.key_file)
        sender = HeartbeatSender(args.name, args.target, args.interval, key=key,
                                 incarnation=args.incarnation)
    except (OSError, ValueError, TypeError) as e:
        print(f"faultkit beat: {e}", file=sys.stderr)
        return 2

    async def run() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            try:
                loop.add_signal_handler(sig, stop.set)
            except (NotImplementedError, RuntimeError):  # pragma: no cover - not on POSIX
                pass
        await sender.start()
        print(f"beating {', '.join(sender.names)} -> {args.target} every {sender.interval:g} s "
              f"(incarnation {sender.incarnation})", flush=True)
        try:
            await stop.wait()
            await sender.stop()
            print(f"left (incarnation {sender.incarnation})", flush=True)
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


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {text!r}") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"a port is 0-65535, got {text}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="faultkit", description=__doc__.split("\n")[0])
    parser.add_argument("--version", action="version", version=f"faultkit {fk.__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("demo", help="a replicated service on real processes, faults under load, "
                                    "and the proof that nothing acknowledged is lost")
    p.add_argument("--workers", type=int, default=6, help="worker processes (default 6)")
    p.add_argument("--racks", type=int, default=3, help="racks they are spread over (default 3, at least 3)")
    p.add_argument("--duration", type=float, default=30.0, help="seconds of load (default 30)")
    p.add_argument("--rate", type=float, default=300.0, help="operations a second, half writes (default 300)")
    p.add_argument("--faults", default="default",
                   help="'default', 'none', or KIND@SECONDS[:TARGET],... with KIND kill, rack, pause, fast, "
                        "stop, damage, partition (--netns) (e.g. kill@3:w1,rack@8:r2)")
    p.add_argument("--detector", default="phi", help="phi (default) or timeout")
    p.add_argument("--interval", type=float, default=0.2, help="heartbeat interval, seconds (default 0.2)")
    p.add_argument("--membership", default=None, metavar="etcd://HOST:PORT",
                   help="membership through etcd instead of the static list")
    p.add_argument("--store", default=None, metavar="s3://BUCKET/PREFIX",
                   help="checkpoints in an S3 bucket instead of local disk (journals stay local)")
    p.add_argument("--s3-endpoint", default=None, metavar="URL", help="an S3-compatible server's URL")
    p.add_argument("--keys", type=int, default=1000, help="distinct keys the load uses (default 1000)")
    p.add_argument("--seed", type=int, default=0, help="seed of the load and of fault targets (default 0)")
    p.add_argument("--json", action="store_true", help="print a JSON report instead of the tables")
    p.add_argument("--plot", metavar="FILE.png", help="draw throughput and latency with the faults (matplotlib)")
    p.add_argument("--keep", action="store_true", help="keep the data directory and worker logs")
    p.add_argument("--netns", action="store_true",
                   help="run each rack on a host of its own (a network namespace; Linux, root), which "
                        "the partition fault can cut off")
    p.add_argument("--unsafe", action="store_true",
                   help="acknowledge writes before journaling them and skip every catch-up: shows what the "
                        "read-back catches (lost writes, exit status 1)")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("tour", help="tour the library's API with real calls")
    p.add_argument("--keys", type=_positive_int, default=1_000_000,
                   help="keys for the bulk examples (default 1,000,000)")
    p.set_defaults(func=cmd_tour)

    p = sub.add_parser("bench", help="faultkit against the peer libraries, one table of ratios")
    p.add_argument("--quick", action="store_true", help="small sizes and 3 rounds (about a minute)")
    p.add_argument("--scale", type=_positive_float, default=None,
                   help="data sizes relative to the full run (default 1, --quick 0.1)")
    p.add_argument("--rounds", type=_positive_int, default=None, help="rounds a side (default 7, --quick 3)")
    p.add_argument("--repeat", type=_positive_int, default=1,
                   help="run everything K times; report medians and the run-to-run spread (default 1)")
    p.add_argument("--only", nargs="+", default=list(PILLARS), choices=PILLARS, metavar="PILLAR",
                   help=f"pillars to run (default all: {' '.join(PILLARS)})")
    p.add_argument("--json", action="store_true", help="print the rows as JSON instead of a table")
    p.add_argument("--plot", metavar="FILE.png", help="draw the ratios per pillar (needs matplotlib)")
    p.add_argument("--pytest", metavar="DIR", default=None,
                   help="instead, run a checkout's pytest-benchmark directory (e.g. benchmarks)")
    p.add_argument("pytest_args", nargs=argparse.REMAINDER, help="with --pytest: passed on to pytest")
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
    p.add_argument("--max-skew", type=_positive_float, default=None,
                   help="drop heartbeats sent more than this many seconds from this host's "
                        "wall clock (bounds replays; needs synced clocks; default off)")
    p.add_argument("--json", action="store_true",
                   help="print each event as one JSON object (wall and monotonic time) per line")
    p.add_argument("--plain", action="store_true",
                   help="print events as lines even on a terminal (default there: a live table, "
                        "with faultkit[cli])")
    p.add_argument("--metrics", type=_port, default=None, metavar="PORT",
                   help="also serve Prometheus metrics on PORT (0: any free port; needs "
                        "faultkit[prometheus])")
    p.add_argument("--metrics-addr", default="127.0.0.1",
                   help="address for --metrics (default 127.0.0.1)")
    p.add_argument("--domains", metavar="FILE.json", default=None,
                   help="JSON object {member: \"region/zone/rack/host\"}: also show each member's "
                        "domain and routing, and isolate domains (a Cluster's default policy)")
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
