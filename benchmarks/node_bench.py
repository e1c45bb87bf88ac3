"""faultkit.Node: CPU for heartbeats and ticks, and time to route around a SIGKILL.

    python benchmarks/node_bench.py [--peers 16,64,256] [--seconds 20] [--kills 2]

CPU: the Node under test runs alone in a process (tests/support/node_runner.py);
its N peers are simulated by one other process that signs and sends one datagram
per peer per interval, as N real peers would, and swallows what the Node sends.
The Node's CPU (utime + stime from /proc, after a warm-up) over the window,
as a percentage of one core.  Measured for the full mesh (every peer heartbeats
the Node, it heartbeats all of them) and for the default mode at that size
(beyond 64 members: 3 watchers; the simulator sends only the heartbeats of the
peers the Node watches).  The peer: the same work wired by hand from the
transport's public pieces (one HeartbeatSender per peer, a HeartbeatReceiver,
a Cluster ticked every interval/4), what a service had to write before Node.

SIGKILL: five Node processes at the defaults (1 s interval); one is killed; the
time from the kill to each survivor's dead event and to its routing change,
against the Node's detection bound plus one tick.
"""
import argparse
import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests", "support"))
from node_procs import KEY_HEX, NodeProc, converged, free_udp_port  # noqa: E402

KEY = bytes.fromhex(KEY_HEX)


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        parts = f.read().rsplit(")", 1)[1].split()
    return (int(parts[11]) + int(parts[12])) / os.sysconf("SC_CLK_TCK")


# ---- the peer simulator -------------------------------------------------------
def simulate(args):
    from faultkit.balance import Rendezvous
    from faultkit.detect.transport import encode_packet

    members = json.loads(args.members)
    names = sorted(members)
    target = members[args.target].rsplit(":", 1)
    target = (target[0], int(target[1]))
    if args.watched_only:
        rz = Rendezvous(names)
        senders = [n for n in names if n != args.target
                   and args.target in [w for w in rz.get_n(n, 4) if w != n][:3]]
    else:
        senders = [n for n in names if n != args.target]
    socks = []
    for n in senders:  # one socket per peer, bound where the Node sends to it
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        host, port = members[n].rsplit(":", 1)
        s.bind((host, int(port)))
        s.setblocking(False)
        socks.append((n, s))
    inc, seq = time.time_ns() // 1_000_000, 0
    end = time.monotonic() + args.seconds
    due = time.monotonic()
    while time.monotonic() < end:
        seq += 1
        now = time.time()
        for n, s in socks:
            s.sendto(encode_packet(KEY, [(n, inc, seq, now)]), target)
            try:
                while True:
                    s.recv(2048)
            except BlockingIOError:
                pass
        due += args.interval
        time.sleep(max(0.0, due - time.monotonic()))


# ---- the hand-wired peer -------------------------------------------------------
def manual(args):
    import faultkit as fk
    from faultkit.detect.transport import HeartbeatReceiver, HeartbeatSender

    members = json.loads(args.members)
    me = args.target

    async def main():
        det = fk.PhiAccrualDetector(acceptable_heartbeat_pause=3 * args.interval,
                                    first_heartbeat_estimate=args.interval,
                                    min_std_deviation=0.1 * args.interval)
        cluster = fk.Cluster(sorted(members), detector=det)
        recv = HeartbeatReceiver(det, members[me], key=KEY, auto_add=False)
        await recv.start()
        senders = [HeartbeatSender(me, addr, args.interval, key=KEY) for n, addr in members.items() if n != me]
        for s in senders:
            await s.start()
        end = time.monotonic() + args.seconds
        while time.monotonic() < end:
            cluster.tick()
            await asyncio.sleep(args.interval / 4)

    asyncio.run(main())


# ---- orchestration ---------------------------------------------------------------
def free_udp_ports(n):
    """n distinct free UDP ports (held open together while chosen, so none repeats)."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def measure_cpu(peers, *, mode, seconds, interval=1.0, warmup=3.0):
    ports = free_udp_ports(peers + 1)
    members = {f"p{i:03d}": f"127.0.0.1:{ports[i]}" for i in range(peers)}
    members["node"] = f"127.0.0.1:{ports[-1]}"
    mj = json.dumps(members)
    full = mode in ("mesh", "manual")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
    sim = subprocess.Popen([sys.executable, __file__, "sim", "--members", mj, "--target", "node",
                            "--interval", str(interval), "--seconds", str(seconds + warmup + 5)]
                           + ([] if full else ["--watched-only"]), env=env)
    if mode == "manual":
        proc = subprocess.Popen([sys.executable, __file__, "manual", "--members", mj, "--target", "node",
                                 "--interval", str(interval), "--seconds", str(seconds + warmup + 3)], env=env)
        pid = proc.pid
        time.sleep(1.5)
    else:
        node = NodeProc("node", ["--members", mj, "--interval", str(interval),
                                 "--full-mesh", str(100000 if full else 64)])
        node.wait(lambda p: p.ready is not None, 60, "ready")
        proc, pid = node.proc, node.proc.pid
    try:
        time.sleep(warmup)
        c0, t0 = cpu_seconds(pid), time.monotonic()
        time.sleep(seconds)
        c1, t1 = cpu_seconds(pid), time.monotonic()
        extra = {}
        if mode != "manual":
            extra["view_alive"] = sum(1 for s in (node.view or {}).values() if s == "alive")
        return dict(peers=peers, mode=mode, cpu_pct=100 * (c1 - c0) / (t1 - t0), **extra)
    finally:
        proc.kill()
        proc.wait()
        sim.kill()
        sim.wait()


def measure_kill(rounds):
    out = []
    for _ in range(rounds):
        names = [f"n{i}" for i in range(1, 6)]
        members = {n: f"127.0.0.1:{free_udp_port()}" for n in names}
        procs = {n: NodeProc(n, ["--members", json.dumps(members)]) for n in names}
        try:
            alive = {n: "alive" for n in names}
            for p in procs.values():
                p.wait(converged(alive), 60, "all alive")
            time.sleep(5)  # let the detectors' windows fill with real intervals
            bound = procs["n2"].ready["bound"]
            t_kill = time.monotonic()
            procs["n1"].proc.kill()
            truth = dict(alive, n1="dead")
            for n in names[1:]:
                t_conv = procs[n].wait(converged(truth), 60, "n1 dead")
                dead_at = next(m["at"] for m in procs[n].lines if m.get("event") == ["n1", "alive", "dead"])
                routed = next(m["t"] for m in procs[n].lines if "view" in m and m["view"].get("n1") == "dead")
                out.append(dict(bound=bound, tick=0.25, detect=dead_at - t_kill, route=routed - t_kill,
                                seen=t_conv - t_kill))
        finally:
            for p in procs.values():
                p.kill()
    return out


def main():
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd")
    for name in ("sim", "manual"):
        s = sub.add_parser(name)
        s.add_argument("--members", required=True)
        s.add_argument("--target", required=True)
        s.add_argument("--interval", type=float, default=1.0)
        s.add_argument("--seconds", type=float, default=30)
        s.add_argument("--watched-only", action="store_true")
    ap.add_argument("--peers", default="16,64,256")
    ap.add_argument("--seconds", type=float, default=20)
    ap.add_argument("--kills", type=int, default=2)
    ap.add_argument("--manual", action="store_true", help="also measure the hand-wired peer")
    a = ap.parse_args()
    if a.cmd == "sim":
        return simulate(a)
    if a.cmd == "manual":
        return manual(a)
    for peers in [int(x) for x in a.peers.split(",")]:
        modes = ["mesh"] + (["default"] if peers + 1 > 64 else []) + (["manual"] if a.manual else [])
        for mode in modes:
            print(json.dumps(measure_cpu(peers, mode=mode, seconds=a.seconds)), flush=True)
    for r in measure_kill(a.kills):
        print(json.dumps(r), flush=True)


if __name__ == "__main__":
    signal.signal(signal.SIGINT, signal.default_int_handler)
    main()
