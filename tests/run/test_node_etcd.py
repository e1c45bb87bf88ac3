"""Membership through a real etcd (Debian's etcd-server, started here on free
127.0.0.1 ports with a temporary data dir, stopped by PID): lease join,
expiry after SIGKILL, watch-driven rebalancing that moves only the changed
node's keys, and fail-static across an etcd stop and start."""
import asyncio
import signal

import pytest
from etcd_server import ETCD, EtcdServer
from node_procs import NodeProc, converged

import faultkit as fk
from faultkit.observe import Registry
from faultkit.run.etcd import EtcdClient

pytestmark = pytest.mark.skipif(ETCD is None, reason="etcd is not installed (Debian: apt-get install etcd-server)")

KEY = bytes.fromhex("6b" * 32)
INTERVAL, TTL = 0.2, 2.0
WAIT = 30.0


@pytest.fixture
def etcd(tmp_path):
    server = EtcdServer(tmp_path / "etcd").start()
    try:
        yield server
    finally:
        server.stop()


async def _until(pred, timeout=WAIT, what="", detail=lambda: ""):
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while not pred():
        if loop.time() > end:
            raise AssertionError(f"not {what} within {timeout} s {detail()}")
        await asyncio.sleep(0.02)


def _node(name, etcd):
    return fk.Node(name, key=KEY, bind="127.0.0.1:0", interval=INTERVAL,
                   membership=fk.EtcdMembership(etcd.endpoint, ttl=TTL, prefix="/t/"))


def test_lease_join_and_watch_driven_rebalancing(etcd):
    keys = [f"k{i}" for i in range(3000)]

    async def main():
        a, b = _node("a", etcd), _node("b", etcd)
        await a.start()
        # The lease's state, as a metrics scrape sees it.
        assert 0 < a.membership.lease_remaining <= TTL
        reg = Registry()
        reg.add(a, "a")
        got = {m.name: dict(m.samples) for m in reg.collect()}
        assert 0 < got["faultkit_node_lease_remaining_seconds"][("a",)] <= TTL
        assert got["faultkit_node_membership_healthy"] == {("a",): 1.0}
        assert got["faultkit_node_membership_operations_total"][("a", "grants")] == 1
        events = []
        a.add_listener(events.append)
        before = {k: a.route(k) for k in keys}
        assert set(before.values()) == {"a"}
        await b.start()
        await _until(lambda: "b" in a.members and a.view().get("b") == "alive", what="b joined")
        assert [e.new for e in events if e.name == "b"][:2] == ["joined", "alive"]
        after = {k: a.route(k) for k in keys}
        moved = [k for k in keys if after[k] != before[k]]
        assert moved and all(after[k] == "b" for k in moved)     # only b's keys moved, to b
        assert {k: b.route(k) for k in keys} == after            # both Nodes route alike
        # b's registration lives under its lease
        rev, kvs = EtcdClient(etcd.endpoint).range_prefix(b"/t/members/")
        assert sorted(k for k, _ in kvs) == [b"/t/members/a", b"/t/members/b"]
        await b.stop()   # graceful: leave message, then the lease is revoked
        await _until(lambda: "b" not in a.members, what="b removed")
        assert [e.new for e in events if e.name == "b"][-2:] == ["left", "removed"]
        assert {k: a.route(k) for k in keys} == before
        await a.stop()
        rev, kvs = EtcdClient(etcd.endpoint).range_prefix(b"/t/")
        assert kvs == []

    asyncio.run(main())


def test_start_without_etcd_raises(tmp_path):
    from node_procs import free_tcp_port

    node = fk.Node("a", key=KEY, bind="127.0.0.1:0",
                   membership=fk.EtcdMembership(f"http://127.0.0.1:{free_tcp_port()}", timeout=0.5))

    async def main():
        with pytest.raises(fk.MembershipError, match="etcd"):
            await node.start()

    asyncio.run(main())


def _procs(names, etcd):
    args = ["--etcd", etcd.endpoint, "--bind", "127.0.0.1:0", "--interval", str(INTERVAL),
            "--ttl", str(TTL), "--prefix", "/p/"]
    return {n: NodeProc(n, args) for n in names}


@pytest.mark.slow
def test_expiry_after_sigkill_and_fail_static(etcd):
    names = ["e1", "e2", "e3", "e4"]
    procs = _procs(names, etcd)
    try:
        alive = {n: "alive" for n in names}
        for p in procs.values():
            p.wait(converged(alive), WAIT, "all alive")

        # SIGKILL e1: routed around at once (UDP), removed when its lease expires.
        procs["e1"].proc.kill()
        truth = {n: "alive" for n in names[1:]}
        for n in names[1:]:
            procs[n].wait(converged(truth), WAIT, "e1 removed")
            assert ("e1", "alive", "dead") in procs[n].events
            assert ("e1", "dead", "removed") in procs[n].events
        rev, kvs = EtcdClient(etcd.endpoint).range_prefix(b"/p/members/")
        assert sorted(k for k, _ in kvs) == [b"/p/members/e2", b"/p/members/e3", b"/p/members/e4"]

        # etcd goes away: fail-static.  Nobody is evicted; a Node killed meanwhile is
        # routed around by reachability but stays a member.
        etcd.stop()
        for n in names[1:]:
            procs[n].wait(lambda p: p.healthy is False, WAIT, "unhealthy")
        procs["e2"].proc.kill()
        static = dict(truth, e2="dead")
        for n in ("e3", "e4"):
            procs[n].wait(converged(static), WAIT, "e2 dead, kept")
        # etcd back (same data dir and ports): healthy again, and e2's lease expires.
        etcd.start()
        for n in ("e3", "e4"):
            procs[n].wait(lambda p: p.healthy is True and p.view == {"e3": "alive", "e4": "alive"},
                          WAIT, "healthy, e2 removed")
            assert not any(e[2] == "removed" and e[0] in ("e3", "e4") for e in procs[n].events)
    finally:
        for p in procs.values():
            p.kill()


def test_sigterm_leaves_at_once(etcd):
    """A graceful stop revokes the lease: peers drop the member without waiting for the TTL."""
    procs = _procs(["g1", "g2"], etcd)
    try:
        alive = {"g1": "alive", "g2": "alive"}
        for p in procs.values():
            p.wait(converged(alive), WAIT, "all alive")
        procs["g2"].signal(signal.SIGTERM)
        procs["g1"].wait(converged({"g1": "alive"}), WAIT, "g2 removed")
        assert [e[2] for e in procs["g1"].events if e[0] == "g2"][-2:] == ["left", "removed"]
        assert procs["g2"].proc.wait(10) == 0
    finally:
        for p in procs.values():
            p.kill()


def test_watchers_share_observations_through_etcd(etcd):
    """Beyond the full mesh the watchers' verdicts are etcd keys under their leases:
    a crashed node is routed around by everyone (non-watchers too) once a quorum of
    its watchers published it, before its own lease expires."""
    names = [f"w{i}" for i in range(6)]

    async def main():
        nodes = {n: fk.Node(n, key=KEY, bind="127.0.0.1:0", interval=0.05, full_mesh=3, watchers=3,
                            membership=fk.EtcdMembership(etcd.endpoint, ttl=5, prefix="/w/"))
                 for n in names}
        for n in names:
            await nodes[n].start()
        await _until(lambda: all(len(nodes[n].members) == 6 for n in names), what="all joined")
        await _until(lambda: all(set(nodes[n].view().values()) == {"alive"} for n in names), what="all alive")
        victim = "w3"
        ws = nodes["w0"].watchers_of(victim)
        events = {n: [] for n in names}
        for n in names:
            nodes[n].add_listener(events[n].append)
        await nodes[victim].stop(leave=False)    # a crash: no leave message, the lease is not revoked
        rest = [n for n in names if n != victim]
        await _until(lambda: all(victim not in nodes[n].routable() for n in rest), what="routed around")
        rev, kvs = EtcdClient(etcd.endpoint).range_prefix(f"/w/obs/{victim}/".encode())
        observers = {k.decode().rsplit("/", 1)[1] for k, _ in kvs}
        assert len(observers & set(ws)) >= 2 and observers <= set(ws)
        assert b"/w/members/w3" in [k for k, _ in EtcdClient(etcd.endpoint).range_prefix(b"/w/members/")[1]]
        for n in rest:
            assert [e.new for e in events[n] if e.name == victim] == ["dead"]
        for n in rest:
            await nodes[n].stop()

    asyncio.run(main())


@pytest.mark.slow
def test_etcd_data_loss_does_not_evict_live_members(tmp_path):
    """etcd comes back empty (its data dir wiped) while two Nodes are paused
    (SIGSTOP): the running Node finds them gone from etcd at once, holds their
    removal one ttl, and they re-register (SIGCONT) before it ends: no eviction."""
    import shutil

    server = EtcdServer(tmp_path / "etcd").start()
    args = ["--etcd", server.endpoint, "--bind", "127.0.0.1:0", "--interval", "0.1", "--ttl", "5",
            "--prefix", "/d/"]
    procs = {n: NodeProc(n, args) for n in ("d1", "d2")}

    async def main():
        node = fk.Node("d0", key=KEY, bind="127.0.0.1:0", interval=0.1,
                       membership=fk.EtcdMembership(server.endpoint, ttl=5, prefix="/d/"))
        await node.start()
        await _until(lambda: len(node.members) == 3, what="all joined")
        await _until(lambda: set(node.view().values()) == {"alive"}, what="all heard")
        events = []
        node.add_listener(events.append)
        for p in procs.values():
            p.signal(signal.SIGSTOP)
        loop = asyncio.get_running_loop()   # the server's start and stop block: not in d0's loop
        await loop.run_in_executor(None, server.stop)
        await _until(lambda: not node.healthy, what="unhealthy")
        shutil.rmtree(server.data_dir)
        await loop.run_in_executor(None, server.start)
        await _until(lambda: node.healthy and node.membership.stats["held_evictions"] == 2, what="held")
        for p in procs.values():
            p.signal(signal.SIGCONT)
        client = EtcdClient(server.endpoint)
        await _until(lambda: len(client.range_prefix(b"/d/members/")[1]) == 3, what="re-registered")
        await _until(lambda: node.membership._hold_until is None, what="hold over")
        await _until(lambda: set(node.view().values()) == {"alive"}, what="all alive",
                     detail=lambda: (node.view(), events, node.receiver.stats, node.stats,
                                     [p.proc.poll() for p in procs.values()],
                                     [p.lines[-3:] for p in procs.values()]))
        assert [e for e in events if e.new == "removed"] == []
        assert sorted(node.members) == ["d0", "d1", "d2"]
        await node.stop()

    try:
        for p in procs.values():
            p.wait(lambda p: p.ready is not None, WAIT, "ready")
        asyncio.run(main())
    finally:
        for p in procs.values():
            p.kill()
        server.stop()
