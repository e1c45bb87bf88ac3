"""Detect: the heartbeat receive path under a flood, before (Python) and after (native).

Configuration (recorded in docs/benchmarks.md with the figures):
- Key of 32 bytes; genuine datagrams carry one heartbeat ("n1", 67 bytes + 32-byte tag = 99
  bytes... as encode_packet makes them); forged ones are the same framing under another key
  (right length, wrong HMAC); garbage is 200 random bytes.
- In memory (one thread, so one core): the Python path is ``HeartbeatReceiver.handle`` (decode,
  verify with ``hmac``, count) or ``decode_packet`` for genuine datagrams; the native path is
  ``_recv.Receiver.process`` over the same list of bytes (copy, frame check, budget, MAC,
  entries as tuples).  Both start from the same bytes objects and end with the same verdicts.
  "native, every MAC" sets budgets so high that every forged datagram is verified: the cost
  when the attacker could spoof a known-good source (the worst case).
- Live (loopback): the receiver's process pinned to CPU 0, a flood process
  (tests/support/flood.py, sendmmsg) pinned to CPU 1, sending at most 2,000,000 datagrams
  for at most 4 s, while the receiver's event loop sends a genuine heartbeat every 10 ms from
  its own socket.  Reported: datagrams the receiver handled per second of its own CPU time
  (both threads: "per core"), per second of wall time, the kernel's drops (sent - handled), and
  whether every genuine heartbeat was recorded.

Compare within a group: ``pytest benchmarks/test_transport.py --benchmark-group-by=group``.
"""
import asyncio
import os
import pathlib
import socket
import subprocess
import sys
import time

import pytest

import faultkit as fk
from faultkit.detect import transport as tr

KEY = bytes(range(32))
N = 4096
FLOOD = pathlib.Path(__file__).resolve().parents[1] / "tests" / "support" / "flood.py"
native_only = pytest.mark.skipif(not tr.HAVE_NATIVE, reason="no native receive path in this build")


def _forged(n=N):
    other = bytes(range(1, 33))
    return [tr.encode_packet(other, [("n1", 1 << 40, s, 1.0)]) for s in range(1, n + 1)]


def _garbage(n=N):
    return [os.urandom(200) for _ in range(n)]


def _genuine(n=N):
    return [tr.encode_packet(KEY, [("n1", 1 << 40, s, 1.0)]) for s in range(1, n + 1)]


def _python_handle(datagrams):
    det = fk.TimeoutDetector(5.0)
    rx = tr.HeartbeatReceiver(det, "127.0.0.1:0", key=KEY, native=False)

    def run():
        h = rx.handle
        for d in datagrams:
            h(d, 0.0)
    return run


def _native(datagrams, **budgets):
    from faultkit.detect import _recv
    rx = _recv.Receiver(KEY, tr.MAX_PACKET, **budgets)
    clock = [0.0]

    def run():
        clock[0] += 1.0
        return rx.process(datagrams, clock[0], port=9)
    return run


NO_BUDGET = dict(source_rate=1e12, source_burst=1e12, unknown_rate=1e12, unknown_burst=1e12,
                 fail_limit=2**31)


def _rate(benchmark, n=N):
    benchmark.extra_info["datagrams_per_s"] = round(n / benchmark.stats.stats.median)


@pytest.mark.benchmark(group="transport: forged datagrams in memory (4096)")
def test_forged_python(benchmark):
    benchmark(_python_handle(_forged()))
    _rate(benchmark)


@native_only
@pytest.mark.benchmark(group="transport: forged datagrams in memory (4096)")
def test_forged_native_budgets(benchmark):
    benchmark(_native(_forged()))
    _rate(benchmark)


@native_only
@pytest.mark.benchmark(group="transport: forged datagrams in memory (4096)")
def test_forged_native_every_mac(benchmark):
    benchmark(_native(_forged(), **NO_BUDGET))
    _rate(benchmark)


@pytest.mark.benchmark(group="transport: 200-byte garbage in memory (4096)")
def test_garbage_python(benchmark):
    benchmark(_python_handle(_garbage()))
    _rate(benchmark)


@native_only
@pytest.mark.benchmark(group="transport: 200-byte garbage in memory (4096)")
def test_garbage_native(benchmark):
    benchmark(_native(_garbage()))
    _rate(benchmark)


@pytest.mark.benchmark(group="transport: genuine datagrams decoded in memory (4096)")
def test_genuine_python_decode(benchmark):
    data = _genuine()

    def run():
        for d in data:
            tr.decode_packet(KEY, d)
    benchmark(run)
    _rate(benchmark)


@native_only
@pytest.mark.benchmark(group="transport: genuine datagrams decoded in memory (4096)")
def test_genuine_native_decode(benchmark):
    benchmark(_native(_genuine()))
    _rate(benchmark)


# ---- live: a flood process against the receiver on loopback --------------------

def _live(native, kind, total=2_000_000, seconds=4.0):
    async def main():
        det = fk.TimeoutDetector(0.5)
        det.add("n1")
        rx = tr.HeartbeatReceiver(det, "127.0.0.1:0", key=KEY, native=native)
        port = (await rx.start())[1]
        genuine = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        genuine.connect(("127.0.0.1", port))
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(
            [str(pathlib.Path(tr.__file__).resolve().parents[2]), os.environ.get("PYTHONPATH", "")]))
        flood = subprocess.Popen([sys.executable, str(FLOOD), str(port), kind, str(total), str(seconds)],
                                 stdout=subprocess.PIPE, text=True, env=env,
                                 preexec_fn=lambda: os.sched_setaffinity(0, {1}))
        seq, cpu0, t0 = 0, time.process_time(), time.perf_counter()
        try:
            while flood.poll() is None:
                seq += 1
                genuine.send(tr.encode_packet(KEY, [("n1", 1, seq, time.time())]))
                await asyncio.sleep(0.01)
            t1 = time.perf_counter()
            out = flood.communicate()[0]
            for _ in range(500):  # bounded: let the receiver drain the socket
                before = sum(rx.stats.values())
                await asyncio.sleep(0.02)
                if sum(rx.stats.values()) == before:
                    break
            cpu = time.process_time() - cpu0
        finally:
            if flood.poll() is None:
                flood.kill()
            flood.wait()
            rx.close()
            genuine.close()
        await asyncio.sleep(0)  # batches handed over before close()
        s = rx.stats
        handled = sum(s[k] for k in ("packets", "oversized", "malformed", "unauthenticated", "budget",
                                     "penalised"))
        sent = int(out.split()[1])
        return dict(sent=sent, handled=handled, dropped=sent + seq - handled, cpu_s=round(cpu, 3),
                    wall_s=round(t1 - t0, 3), per_cpu_s=round(handled / cpu), per_wall_s=round(handled / (t1 - t0)),
                    genuine_sent=seq, genuine_recorded=s["heartbeats"], rcvbuf=rx.rcvbuf, stats=dict(s))

    return asyncio.run(main())


@pytest.mark.skipif(os.cpu_count() is None or os.cpu_count() < 2, reason="needs two CPUs to pin")
@pytest.mark.parametrize("kind", ["forged", "garbage"])
@pytest.mark.parametrize("native", [False, pytest.param(True, marks=native_only)], ids=["python", "native"])
@pytest.mark.benchmark(group="transport: live flood on loopback, receiver pinned to one core")
def test_live_flood(benchmark, native, kind):
    mask = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {0})
    result = {}
    try:
        benchmark.pedantic(lambda: result.update(_live(native, kind)), rounds=1, iterations=1)
    finally:
        os.sched_setaffinity(0, mask)
    benchmark.extra_info.update({k: v for k, v in result.items() if k != "stats"})
    print(f"\n{'native' if native else 'python'} {kind}: {result}")
    assert result["handled"] > 0
    if native:
        assert result["genuine_recorded"] == result["genuine_sent"]


# ---- capacity: drain a socket the flood has filled ------------------------------
# On loopback the sender pays for the whole network stack, so one flood process
# cannot send faster than ~150-600k datagrams/s and a live test measures the
# sender.  To measure the receiver's own capacity, the flood first fills a
# socket nobody reads (receive buffer forced large, root only: SO_RCVBUFFORCE),
# with a genuine heartbeat from another socket every 1000 datagrams; then one
# thread drains it: the native path with recvmmsg + filter + entries as tuples
# (``_recv.Receiver.run``, what the receiver thread loops on), the Python path
# with asyncio's datagram transport and ``HeartbeatReceiver.datagram_received``
# (the real pre-existing path).  Both on CPU 0.

FILL = 200_000


def _filled_socket(kind):
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, tr._SO_RCVBUFFORCE, 512 << 20)
    except (OSError, TypeError):
        sock.close()
        pytest.skip("needs SO_RCVBUFFORCE (root) to queue a flood")
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    genuine = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    genuine.connect(("127.0.0.1", port))
    from faultkit.detect._recv import send_many
    flood = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    flood.connect(("127.0.0.1", port))
    pkts = _forged(64) if kind == "forged" else _garbage(64)
    n_genuine = 0
    for _ in range(FILL // 1000):
        send_many(flood.fileno(), pkts, 1000)
        n_genuine += 1
        genuine.send(tr.encode_packet(KEY, [("n1", 1, n_genuine, 1.0)]))
    flood.close()
    genuine.close()
    return sock, FILL + n_genuine, n_genuine


def _drain_native(sock, budgets):
    from faultkit.detect._recv import Receiver
    rx = Receiver(KEY, tr.MAX_PACKET, **budgets)
    r, w = os.pipe()
    got = 0
    t0, c0 = time.perf_counter(), time.thread_time()
    while True:
        before = rx.counts()["datagrams"]
        got += len(rx.run(sock.fileno(), r, 0.0, 4096))
        if rx.counts()["datagrams"] == before:
            break
    t, c = time.perf_counter() - t0, time.thread_time() - c0
    os.close(r)
    os.close(w)
    return rx.counts()["datagrams"], got, t, c


def _drain_python(sock):
    det = fk.TimeoutDetector(3600.0)
    det.add("n1")
    rx = tr.HeartbeatReceiver(det, "127.0.0.1:0", key=KEY, native=False)

    async def main():
        loop = asyncio.get_running_loop()
        t0, c0 = time.perf_counter(), time.thread_time()
        transport, _ = await loop.create_datagram_endpoint(lambda: rx, sock=sock)
        while True:
            before = sum(rx.stats.values())
            await asyncio.sleep(0)
            await asyncio.sleep(0)
            if sum(rx.stats.values()) == before:
                break
        t, c = time.perf_counter() - t0, time.thread_time() - c0
        transport.close()
        return t, c

    t, c = asyncio.run(main())
    s = rx.stats
    handled = s["packets"] + s["malformed"] + s["unauthenticated"] + s["oversized"]
    return handled, s["heartbeats"], t, c


@pytest.mark.parametrize("kind", ["forged", "garbage"])
@pytest.mark.parametrize("path", ["python", pytest.param("native", marks=native_only),
                                  pytest.param("native-every-mac", marks=native_only)])
@pytest.mark.benchmark(group="transport: drain a flooded socket, one thread on CPU 0")
def test_drain_capacity(benchmark, path, kind):
    if path == "native-every-mac" and kind == "garbage":
        pytest.skip("garbage never reaches the MAC")
    mask = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {0})
    result = {}
    try:
        sock, queued, n_genuine = _filled_socket(kind)
        try:
            def run():
                if path == "python":
                    handled, recorded, t, c = _drain_python(sock)
                else:
                    handled, recorded, t, c = _drain_native(sock, NO_BUDGET if path.endswith("mac") else {})
                result.update(queued=queued, handled=handled, genuine=n_genuine, recorded=recorded,
                              seconds=round(t, 4), per_s=round(handled / t), per_cpu_s=round(handled / c))
            benchmark.pedantic(run, rounds=1, iterations=1)
        finally:
            sock.close()
    finally:
        os.sched_setaffinity(0, mask)
    benchmark.extra_info.update(result)
    print(f"\ndrain {path} {kind}: {result}")
    assert result["handled"] == result["queued"]  # nothing was lost in the socket
    assert result["recorded"] == result["genuine"]  # every genuine heartbeat made it
