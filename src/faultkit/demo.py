"""``faultkit demo``: the tour, each section a function printing results of real calls.

Time is replayed through injected clocks (explicit ``now``), so the tour
shows minutes of cluster life in well under a second and never sleeps.
"""
from __future__ import annotations

import tempfile
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
    with tempfile.TemporaryDirectory(prefix="faultkit-demo-") as tmp:
        clock = lambda: 0.0  # noqa: E731 - every call below passes its time
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
        cluster.add_listener(lambda e: lines.append(
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
