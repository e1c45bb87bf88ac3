"""Run one faultkit.Node and print what it sees as JSON lines on stdout.

    python node_runner.py NAME --key-hex HEX (--members JSON | --etcd URL --bind HOST:PORT)
                          [--interval S] [--tick S] [--ttl S] [--prefix P] [--domain PATH]
                          [--full-mesh N] [--watchers K] [--standby]

Lines: {"ready": ...} once started; {"event": [name, old, new], "at": t} per
Node event; {"view": {...}, "routable": [...], "healthy": b, "t": t}
whenever the view, the routable set or the backend's health changes (and
every 5 s); {"stopped": true} after a graceful stop on SIGTERM.  With
--standby the process imports everything, prints {"standby": true} and
starts only when a line arrives on stdin (a restart within one interval).
Times are time.monotonic(), comparable across processes on one host.
"""
import argparse
import asyncio
import json
import signal
import sys
import time

import faultkit as fk


def out(obj):
    sys.stdout.write(json.dumps(obj, sort_keys=True) + "\n")
    sys.stdout.flush()


async def main(args):
    key = bytes.fromhex(args.key_hex)
    if args.etcd:
        membership = fk.EtcdMembership(args.etcd, prefix=args.prefix, ttl=args.ttl)
    else:
        membership = fk.StaticMembership({n: tuple(v) if isinstance(v, list) else v
                                          for n, v in json.loads(args.members).items()})
    node = fk.Node(args.name, key=key, bind=args.bind, membership=membership, domain=args.domain,
                   interval=args.interval, tick=args.tick, full_mesh=args.full_mesh, watchers=args.watchers)
    if args.standby:
        out({"standby": True})
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
    node.add_listener(lambda ev: out({"event": [ev.name, ev.old, ev.new], "at": ev.at}))
    await node.start()
    out({"ready": True, "name": node.name, "incarnation": node.incarnation,
         "address": list(node.address), "bound": node.detection_bound})
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    last, last_t = None, 0.0
    while not stop.is_set():
        snap = {"view": node.view(), "routable": node.routable(), "healthy": node.healthy,
                "partitioned": node.partitioned}
        now = time.monotonic()
        if snap != last or now - last_t > 5:
            out(dict(snap, t=now))
            last, last_t = snap, now
        try:
            await asyncio.wait_for(stop.wait(), node.tick_interval)
        except asyncio.TimeoutError:
            pass
    await node.stop()
    out({"stopped": True})


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("name")
    p.add_argument("--key-hex", required=True)
    p.add_argument("--members")
    p.add_argument("--etcd")
    p.add_argument("--bind")
    p.add_argument("--prefix", default="/faultkit/")
    p.add_argument("--ttl", type=float, default=5.0)
    p.add_argument("--domain")
    p.add_argument("--interval", type=float, default=1.0)
    p.add_argument("--tick", type=float)
    p.add_argument("--full-mesh", type=int, default=64)
    p.add_argument("--watchers", type=int, default=3)
    p.add_argument("--standby", action="store_true")
    a = p.parse_args()
    if not a.members and not a.etcd:
        p.error("give --members or --etcd")
    asyncio.run(main(a))
