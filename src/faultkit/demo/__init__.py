"""``faultkit demo``: a replicated key-value service on real processes, faults under load,
and the proof that no acknowledged write was lost.

The parts, one purpose each (docs/demo.md walks through them):

- :mod:`faultkit.demo.common`: the layout, partitions, placement and wire format every process shares;
- :mod:`faultkit.demo.worker`: one worker process (a ``faultkit.Node``, a journal, checkpoints, a TCP server);
- :mod:`faultkit.demo.front`: the front end (breakers, retries, hedged reads, who is in sync);
- :mod:`faultkit.demo.load`: the load generator and the read-back check;
- :mod:`faultkit.demo.faults`: the fault schedule and the process supervisor;
- :mod:`faultkit.demo.report`: the progress line, timeline, tables, JSON and plot;
- :mod:`faultkit.demo.hosts`: ``--netns``: racks on hosts of their own (network namespaces), and partitions;
- this module: the options and :func:`run`, which puts them together.
"""
from __future__ import annotations

import asyncio
import json
import math
import os
import re
import secrets
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from typing import Any, Optional

__all__ = ["Options", "run", "main"]

_ETCD = re.compile(r"^etcd://(?P<host>[A-Za-z0-9.-]+):(?P<port>[0-9]{1,5})$")
_S3 = re.compile(r"^s3://(?P<bucket>[a-z0-9][a-z0-9.-]{1,61}[a-z0-9])(?:/(?P<prefix>[^\s]*))?$")


@dataclass
class Options:
    """The demo's options (the ``faultkit demo`` flags); :meth:`check` validates them.

    Defaults: 6 workers in 3 racks, 30 s of load at 300 operations a
    second, the default fault schedule, phi-accrual detection over 0.2 s
    heartbeats, static membership and local checkpoints (no server).
    ``unsafe`` turns off what the demo's correctness rests on (workers
    acknowledge before journaling and serve reads without catching up; the
    front end keeps no record of missed writes and holds no restarted
    worker): the read-back then finds lost writes, and the exit status is 1.
    ``netns`` runs each rack on a host of its own (a network namespace, root
    only; :mod:`faultkit.demo.hosts`), which the ``partition`` fault can cut off.
    """

    workers: int = 6
    racks: int = 3
    duration: float = 30.0
    rate: float = 300.0
    faults: str = "default"
    detector: str = "phi"
    interval: float = 0.2
    membership: Optional[str] = None
    store: Optional[str] = None
    s3_endpoint: Optional[str] = None
    keys: int = 1000
    seed: int = 0
    json: bool = False
    plot: Optional[str] = None
    keep: bool = False
    unsafe: bool = False
    netns: bool = False

    def check(self) -> "Options":
        """ValueError/TypeError naming the first bad option."""
        def integer(name: str, v: Any, lo: int, hi: int) -> None:
            if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
                raise ValueError(f"--{name} must be an integer in [{lo}, {hi}], got {v!r}")

        def number(name: str, v: Any, lo: float, hi: float) -> None:
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or not lo <= v <= hi:
                raise ValueError(f"--{name} must be a number in [{lo:g}, {hi:g}], got {v!r}")
        integer("racks", self.racks, 3, 16)
        integer("workers", self.workers, self.racks, 64)
        number("duration", self.duration, 2.0, 3600.0)
        number("rate", self.rate, 1.0, 5000.0)
        number("interval", self.interval, 0.05, 5.0)
        integer("keys", self.keys, 1, 1_000_000)
        integer("seed", self.seed, 0, 2**63 - 1)
        for flag in ("unsafe", "netns"):
            if not isinstance(getattr(self, flag), bool):
                raise TypeError(f"{flag} must be a bool, got {getattr(self, flag)!r}")
        if self.detector not in ("phi", "timeout"):
            raise ValueError(f"--detector must be 'phi' or 'timeout', got {self.detector!r}")
        if self.membership is not None and not _ETCD.match(self.membership):
            raise ValueError(f"--membership must be etcd://HOST:PORT, got {self.membership!r}")
        if self.store is not None and not _S3.match(self.store):
            raise ValueError(f"--store must be s3://BUCKET[/PREFIX], got {self.store!r}")
        if self.s3_endpoint is not None:
            if self.store is None:
                raise ValueError("--s3-endpoint needs --store s3://...")
            if not re.match(r"^https?://[^\s/]+(:[0-9]+)?/?$", self.s3_endpoint):
                raise ValueError(f"--s3-endpoint must be http(s)://HOST[:PORT], got {self.s3_endpoint!r}")
        if self.plot is not None:
            if not self.plot.endswith(".png"):
                raise ValueError(f"--plot must name a .png file, got {self.plot!r}")
            parent = os.path.dirname(os.path.abspath(self.plot))
            if not os.path.isdir(parent):
                raise ValueError(f"--plot: no directory {parent!r}")
        from faultkit.demo.common import Layout  # noqa: F401 - cheap import check of the package
        from faultkit.demo.faults import parse_faults
        names = [f"w{i}" for i in range(self.workers)]
        rack_of = lambda n: f"r{int(n[1:]) * self.racks // self.workers}"  # Layout.rack
        self.schedule = parse_faults(self.faults, duration=self.duration, workers=names,
                                     racks=[f"r{i}" for i in range(self.racks)], seed=self.seed, rack_of=rack_of)
        if self.netns and (self.membership or self.store):
            raise ValueError("--netns runs on the static membership and local checkpoints: etcd and S3 "
                             "servers on this host's 127.0.0.1 are out of the namespaces' reach")
        if not self.netns and any(f.kind == "partition" for f in self.schedule):
            raise ValueError("fault partition needs --netns (racks on hosts of their own, to cut one off)")
        return self


def run(opts: Options, out=None) -> dict:
    """Run the demo with ``opts`` (validated); returns the report dict.

    Every worker process is killed by PID on the way out, whatever happens
    (an exception, Ctrl-C); the report's ``leftover_processes`` lists any
    that survived that, and must be empty."""
    from faultkit.demo.faults import Supervisor
    from faultkit.demo import report as rep

    opts.check()
    hosts = None
    if opts.netns:
        from faultkit.demo.hosts import Hosts, netns_unusable
        why = netns_unusable()
        if why is not None:
            raise RuntimeError(f"--netns: {why}")
    tmp = tempfile.mkdtemp(prefix="faultkit-demo-")
    sup: Optional[Supervisor] = None
    result: dict = {}
    t_start = time.monotonic()
    try:
        from faultkit.demo.common import Layout
        layout = Layout(opts.workers, opts.racks)
        if opts.netns:
            hosts = Hosts(layout.rack_names).create()
            layout.hosts = {w: hosts.host(layout.rack(w)) for w in layout.names}
            layout.hosts["front"] = hosts.host("front")
        cfg = {"layout": layout.to_json(), "dir": tmp, "key": secrets.token_hex(32), "interval": opts.interval,
               "detector": opts.detector, "checkpoint_every": 2.0, "etcd": None, "store": None,
               "unsafe": opts.unsafe}
        if opts.membership:
            m = _ETCD.match(opts.membership)
            cfg.update(etcd=f"http://{m['host']}:{m['port']}", etcd_prefix=f"/faultkit-demo/{secrets.token_hex(4)}/",
                       etcd_ttl=10.0)
        if opts.store:
            run_id = secrets.token_hex(4)
            cfg["store"] = f"{opts.store.rstrip('/')}/demo-{run_id}"
            so: dict = {"lease_duration": 3.0}
            if opts.s3_endpoint:
                so["endpoint"] = opts.s3_endpoint.rstrip("/")  # credentials: the usual AWS_* variables
            cfg["store_options"] = so
        config_path = os.path.join(tmp, "config.json")
        with open(config_path, "w") as f:
            json.dump(cfg, f)
        sup = Supervisor(config_path, tmp, hosts=hosts, rack_of=layout.rack)
        progress = out or rep.Progress(sys.stderr if opts.json else sys.stdout)
        if hosts is not None:
            hosts.enter()  # this process is the front end's host from here on
        result = asyncio.run(_main(opts, layout, cfg, sup, progress))
    finally:
        if sup is not None:
            leftover = sup.reap_all(grace=0.0)
            result["leftover_processes"] = leftover
            result["worker_pids"] = sup.pids
        if hosts is not None:
            hosts.leave()
            hosts.destroy()
        result["wall_seconds"] = round(time.monotonic() - t_start, 2)
        if not opts.keep:
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            result["dir"] = tmp
    return result


async def _main(opts: Options, layout: Any, cfg: dict, sup: Any, progress: Any) -> dict:
    import faultkit as fk
    from faultkit.demo.common import PARTITIONS, make_detector, partition_of
    from faultkit.demo.faults import DOWN_FOR, detection, inject
    from faultkit.demo.front import Router
    from faultkit.demo.load import Load
    from faultkit.demo import report as rep

    clock = time.monotonic
    timeline: list = []
    faults = opts.schedule

    def signal(t: float, w: str, what: str) -> None:
        timeline.append((t, w, what))
        for f in faults:
            if f.injected is not None and f.routable is None and w in f.workers:
                f.signals.append((t, w, what))

    for w in layout.names:
        sup.start(w)
    if cfg["etcd"]:
        membership: Any = fk.EtcdMembership(cfg["etcd"], prefix=cfg["etcd_prefix"], ttl=cfg["etcd_ttl"])
    else:
        membership = fk.StaticMembership(layout.members())
    node = fk.Node("front", key=bytes.fromhex(cfg["key"]), membership=membership,
                   bind=f"{layout.host('front')}:{layout.udp['front']}", domain=layout.path("front"),
                   interval=opts.interval, detector=make_detector(opts.detector, opts.interval),
                   hold_restarted=not opts.unsafe)
    await node.start()
    # The demo's time scale is seconds, not minutes: an ejected worker gets
    # trial traffic after 2 s (Envoy's default: 30 s), and a rack isolated
    # after 2 of its workers died is restored 3 s after both are back (30 s).
    node.cluster.outliers.base_ejection_time = 2.0
    node.cluster.outliers.max_ejection_time = 6.0
    if node.cluster.policy is not None:
        node.cluster.policy.hold = 3.0

        def isolated(d: Any) -> None:
            for w in d.services:
                signal(clock(), w, "isolated" if d.action == "isolate" else f"rack {d.action}d")
        node.cluster.policy.add_listener(isolated)
    router = Router(layout, node, signal=signal, unsafe=opts.unsafe)
    sync_task = asyncio.ensure_future(router.sync_loop())
    try:
        # Up: every worker answers and has caught up, and the Node hears everyone.
        where = (f"{opts.racks + 1} network namespaces (a host per rack, one for the front end)"
                 if opts.netns else "127.0.0.1")
        progress.say(f"faultkit demo: {opts.workers} workers in {opts.racks} racks on {where}, "
                     f"{PARTITIONS} partitions x 3 replicas (one per rack), writes acknowledged after 2 journals; "
                     f"{opts.detector} detector, {opts.interval:g} s heartbeats (dead within "
                     f"{node.detection_bound:.2f} s); membership {'etcd' if cfg['etcd'] else 'static'}, "
                     f"checkpoints {'in ' + opts.store if opts.store else 'on local disk'}")
        end = clock() + 60.0
        while clock() < end:
            sts = await asyncio.gather(*(router.status(w) for w in layout.names))
            if all(s and s.get("ready") for s in sts) and all(v == "alive" for n, v in node.view().items()):
                break
            dead = [w for w in layout.names if sup.procs[w].poll() is not None]
            if dead:
                tail = sup.log_tail(dead[0])
                raise RuntimeError(f"worker(s) {dead} exited at start; {dead[0]}'s log ends:\n{tail}")
            await asyncio.sleep(0.1)
        else:
            raise RuntimeError(f"the cluster did not come up within 60 s: {node.view()}")
        progress.say(f"cluster up in {clock() - progress.t0:.1f} s; load: {opts.rate:g} ops/s, half writes, "
                     f"{opts.keys} keys, {opts.duration:g} s; faults: "
                     + (", ".join(f"{f.kind} {f.target} at {f.at:g}s" for f in faults) or "none"))

        load = Load(router, rate=opts.rate, keys=opts.keys, seed=opts.seed)
        keys_in = [0] * PARTITIONS
        for k in load.keys:
            keys_in[partition_of(k)] += 1
        prev = router.primaries()

        def before(f: Any) -> None:  # the incarnations a restart must replace
            f.inc_before = {w: router.incarnation.get(w) for w in f.workers}

        def watch(now: float) -> None:
            """Every 0.1 s: keys whose first read replica moved off a faulty worker, faults
            whose workers are back (restarted if they were killed, in sync, routable),
            and workers that exited without a fault (restarted, reported)."""
            nonlocal prev
            cur = router.primaries()
            for p, (a, b) in enumerate(zip(prev, cur)):
                if a is not None and a != b:
                    for f in faults:
                        if f.injected is not None and f.routable is None and a in f.workers:
                            f.keys_moved += keys_in[p]
            prev = cur
            for f in faults:
                if f.restarted is not None and f.routable is None and detection(f) is not None \
                        and all(router.in_sync(w) for w in f.workers) \
                        and (f.kind in ("pause", "partition")
                             or all(router.incarnation.get(w) != f.inc_before.get(w)
                                                      for w in f.workers)):
                    f.routable = now
            for w in sup.check():
                signal(now, w, "exited unexpectedly, restarted")

        t0 = clock()
        load_task = asyncio.ensure_future(load.run(opts.duration))
        fault_tasks = [asyncio.ensure_future(inject(f, sup, t0, before=before)) for f in faults]
        last_print = 0.0
        while not load_task.done():
            await asyncio.sleep(0.1)
            now = clock()
            watch(now)
            if now - last_print >= progress.every:
                last_print = now
                progress.line(rep.progress_text(now - t0, load, router, faults))
        await load_task
        # A fault injected near the end still brings its workers back (a restart, a SIGCONT):
        # wait for that, bounded, before settling; only a fault stuck past the bound is cancelled.
        if fault_tasks:
            _, stuck = await asyncio.wait(fault_tasks, timeout=max(DOWN_FOR.values()) + 10.0)
            for t in stuck:
                t.cancel()
        errors = [t.exception() for t in fault_tasks if t.done() and not t.cancelled() and t.exception()]
        if errors:
            raise errors[0]
        progress.done()
        # Settle: every worker up, caught up and routable (bounded), then read everything back.
        end = clock() + 20.0
        while clock() < end and not (all(router.in_sync(w) for w in layout.names)
                                     and all(f.routable is not None for f in faults)):
            await asyncio.sleep(0.1)
            watch(clock())
        settled = clock() - (t0 + opts.duration)
        verdict = await load.verify()
        audit = await _audit(router, layout, load)
        result = rep.build(opts, layout, node, router, load, faults, timeline, t0, verdict, audit, settled)
        result["unexpected_exits"] = [{"at": round(t - t0, 3), "worker": w, "status": st, "log_tail": tail}
                                      for t, w, st, tail in sup.unexpected]
        return result
    finally:
        sync_task.cancel()
        router.close()
        await node.stop()


async def _audit(router: Any, layout: Any, load: Any) -> dict:
    """Per replica: does each in-sync worker hold every acknowledged write of its partitions?"""
    from faultkit.demo.common import PARTITIONS, partition_of
    by_p: dict = {}
    for k, (ver, _) in load.acked.items():
        by_p.setdefault(partition_of(k), []).append((k, ver))
    copies = {3: 0, 2: 0, 1: 0, 0: 0}
    for p in range(PARTITIONS):
        held = []
        for w in layout.placement(p):
            try:
                ans = await asyncio.wait_for(router.conns[w].call({"op": "scan", "p": p, "since": 0}), 5.0)
                held.append({k: v for k, v, _ in ans["items"]})
            except (OSError, asyncio.TimeoutError, KeyError, ValueError):
                held.append({})
        for k, ver in by_p.get(p, []):
            n = sum(1 for h in held if h.get(k, 0) >= ver)
            copies[n] = copies.get(n, 0) + 1
    return {"replicas_holding_each_acknowledged_write": copies}


def main(opts: Options) -> int:
    """Run, print the report (text or ``--json``), draw ``--plot``; the exit status."""
    from faultkit.demo import report as rep
    try:
        result = run(opts)
    except KeyboardInterrupt:
        print("faultkit demo: interrupted; every worker process was killed", file=sys.stderr)
        return 130
    except (RuntimeError, OSError) as e:
        print(f"faultkit demo: {e}", file=sys.stderr)
        return 1
    if opts.json:
        print(json.dumps(result, indent=1, sort_keys=True))
    else:
        print(rep.text(result))
    if opts.plot:
        try:
            rep.plot(result, opts.plot)
        except ImportError:
            print("faultkit demo: --plot needs matplotlib: pip install 'faultkit[plot]'", file=sys.stderr)
            return 2
        print(f"plot written to {opts.plot}", file=sys.stderr if opts.json else sys.stdout)
    bad = result.get("lost_acknowledged_writes", 1) != 0 or result.get("leftover_processes")
    return 1 if bad else 0
