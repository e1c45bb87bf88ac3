"""faultkit.Node in one process: arguments, the control packet, events, routing,
and the watcher quorum beyond the full mesh (real sockets on 127.0.0.1)."""
import asyncio

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from node_procs import free_udp_port

import faultkit as fk
from faultkit.run.node import decode_control, encode_control

KEY = b"k" * 32
WAIT = 30.0


async def _until(pred, timeout=WAIT, what=""):
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while not pred():
        if loop.time() > end:
            raise AssertionError(f"not {what} within {timeout} s")
        await asyncio.sleep(0.02)


def _members(n, prefix="m"):
    return {f"{prefix}{i}": f"127.0.0.1:{free_udp_port()}" for i in range(n)}


# ---- arguments -------------------------------------------------------------
@pytest.mark.parametrize("kw, exc, match", [
    ({"key": b"short"}, ValueError, "at least 16 bytes"),
    ({"key": "text" * 8}, TypeError, "key must be bytes"),
    ({"interval": 0}, ValueError, "interval"),
    ({"interval": float("nan")}, ValueError, "interval"),
    ({"tick": -1}, ValueError, "tick"),
    ({"full_mesh": 0}, ValueError, "full_mesh"),
    ({"watchers": True}, ValueError, "watchers"),
    ({"membership": ["a"]}, TypeError, "membership"),
    ({"domain": ""}, ValueError, "domain"),
    ({"detector": object()}, TypeError, "detector"),
    ({"join_timeout": 0}, ValueError, "join_timeout"),
    ({"bind": "nohost"}, ValueError, "host:port"),
])
def test_bad_arguments(kw, exc, match):
    args = {"key": KEY}
    args.update(kw)
    with pytest.raises(exc, match=match):
        fk.Node("a", **args)


@pytest.mark.parametrize("name, exc", [("", ValueError), ("a b", ValueError), ("a/b", ValueError),
                                       ("x" * 256, ValueError), (3, TypeError)])
def test_bad_names(name, exc):
    with pytest.raises(exc, match="name"):
        fk.Node(name, key=KEY)


def test_static_membership_validates():
    with pytest.raises(ValueError, match="at least one"):
        fk.StaticMembership({})
    with pytest.raises(ValueError, match="host:port"):
        fk.StaticMembership({"a": "nowhere"})
    with pytest.raises(TypeError, match="mapping"):
        fk.StaticMembership(["a"])
    m = fk.StaticMembership({"a": ("127.0.0.1:1", "eu/az1/r1/h1"), "b": ("127.0.0.1", 2)})
    assert m.members["a"].domain == "eu/az1/r1/h1" and m.members["b"].address == ("127.0.0.1", 2)


def test_etcd_membership_validates():
    with pytest.raises(ValueError, match="http://host:port"):
        fk.EtcdMembership("127.0.0.1:2379")
    with pytest.raises(ValueError, match="ttl"):
        fk.EtcdMembership("http://127.0.0.1:2379", ttl=0.5)
    with pytest.raises(ValueError, match="prefix"):
        fk.EtcdMembership("http://127.0.0.1:2379", prefix="")


def test_not_started():
    node = fk.Node("a", key=KEY)
    with pytest.raises(RuntimeError, match="not started"):
        node.route("k")
    with pytest.raises(RuntimeError, match="not started"):
        node.tick()


def test_detection_bound_follows_the_interval():
    b1 = fk.Node("a", key=KEY, interval=1.0).detection_bound
    b2 = fk.Node("a", key=KEY, interval=0.2).detection_bound
    assert 3.0 < b1 < 6.0            # Akka's defaults at 1 s: pause 3 s plus the tail of the normal
    assert b2 == pytest.approx(b1 * 0.2, rel=1e-6)
    assert fk.Node("a", key=KEY, detector=fk.TimeoutDetector(2.5)).detection_bound == 2.5


# ---- the control packet ----------------------------------------------------
def test_control_packet_roundtrip_and_tamper():
    pkt = encode_control(KEY, 2, "a", 7, 9, ["b", "c\u00e9"])
    assert decode_control(KEY, pkt) == (2, "a", 7, 9, ["b", "c\u00e9"])
    assert decode_control(b"x" * 32, pkt) is None
    for i in range(len(pkt)):
        bad = bytearray(pkt)
        bad[i] ^= 1
        assert decode_control(KEY, bytes(bad)) is None
    assert decode_control(KEY, pkt[:-1]) is None


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=1600))
def test_control_decode_never_raises(data):
    assert decode_control(KEY, b"FN\x01" + data) is None   # a forged tag cannot pass
    assert decode_control(KEY, data) is None


# ---- in-process clusters -----------------------------------------------------
def test_events_iterator_listener_and_replay():
    members = _members(3)

    async def main():
        nodes = [fk.Node(n, key=KEY, membership=members, interval=0.05) for n in members]
        for n in nodes:
            await n.start()
        a = nodes[0]
        got = []

        async def consume():
            async for ev in a.events():
                got.append(ev)
        task = asyncio.create_task(consume())
        seen = []
        a.add_listener(seen.append)
        a.add_listener(lambda ev: 1 / 0)  # a failing listener is counted, not raised
        await _until(lambda: all(s == "alive" for s in a.view().values()), what="all alive")
        await nodes[2].stop()
        await _until(lambda: a.view()["m2"] == "left", what="m2 left")
        # A replayed leave (or anything forged) changes nothing.
        pkt = encode_control(KEY, 1, "m1", nodes[1].incarnation, 1, [])
        a._control(pkt)
        a._control(pkt)
        assert a.stats["control_dropped"] >= 1
        await a.stop()
        await asyncio.wait_for(task, 5)      # stop() ends the iterator
        await nodes[1].stop()
        assert ("m2", "left") in [(e.name, e.new) for e in got]
        assert [(e.name, e.new) for e in seen] == [(e.name, e.new) for e in got]
        assert a.stats["listener_errors"] == len(seen)
        assert a.routable() == ["m0"]

    asyncio.run(main())


def test_replicas_and_domains():
    members = {f"h{i}": (f"127.0.0.1:{free_udp_port()}", f"eu/az1/r{i % 3}/h{i}") for i in range(6)}

    async def main():
        node = fk.Node("h0", key=KEY, membership=members, domain="eu/az1/r0/h0", interval=0.05)
        await node.start()
        try:
            reps = node.replicas("some-key", 3)
            assert len({node.cluster.domains.domain_of(r, "rack") for r in reps}) == 3
            with pytest.raises(ValueError, match="n must be"):
                node.replicas("k", 0)
        finally:
            await node.stop()

    asyncio.run(main())


def test_request_failures_reported_to_a_node_eject_the_member_from_routing():
    members = {f"h{i}": (f"127.0.0.1:{free_udp_port()}", f"eu/az1/r{i % 3}/h{i}") for i in range(6)}

    async def main():
        node = fk.Node("h0", key=KEY, membership=members, domain="eu/az1/r0/h0", interval=0.05)
        await node.start()
        try:
            assert "h4" in node.routable()
            for _ in range(5):  # Envoy's default: five consecutive errors eject
                node.report("h4", ok=False, latency=0.5)
            assert "h4" not in node.routable()
            assert all(node.route(f"k{i}") != "h4" for i in range(200))
        finally:
            await node.stop()

    asyncio.run(main())


def test_domain_mismatch_is_refused():
    members = {"a": (f"127.0.0.1:{free_udp_port()}", "eu/az1/r0/h0")}

    async def main():
        node = fk.Node("a", key=KEY, membership=members, domain="eu/az1/r1/h0")
        with pytest.raises(ValueError, match="domain"):
            await node.start()

    asyncio.run(main())


def test_watchers_quorum_routes_around_a_crashed_node_and_ignores_one_bad_observer():
    """Eight Nodes with full_mesh=4: each is watched by 3 peers (rendezvous), and routed
    around only when 2 of them report it.  One watcher with a trigger-happy detector
    (dead 20 ms after each heartbeat) keeps reporting its targets: alone, it moves nothing."""
    members = _members(8)
    names = sorted(members)

    async def main():
        nodes = {}
        for n in names:
            det = fk.TimeoutDetector(0.02) if n == "m7" else None
            nodes[n] = fk.Node(n, key=KEY, membership=members, interval=0.05, full_mesh=4, watchers=3,
                               detector=det)
        for node in nodes.values():
            await node.start()
        ws = nodes["m0"].watchers_of("m3")
        assert len(ws) == 3 and "m3" not in ws
        assert all(nodes[n].watchers_of("m3") == ws for n in names)   # everyone agrees, no talk
        # each Node heartbeats only its 3 watchers
        assert len(nodes["m0"]._targets) == 3
        healthy = [n for n in names if n != "m7"]
        await _until(lambda: all(nodes[n].routable() == names for n in healthy), what="all routable")
        await asyncio.sleep(0.5)   # m7's false reports circulate; nobody acts on them alone
        assert nodes["m7"]._mine, "the bad observer reports someone"
        assert all(nodes[n].routable() == names for n in healthy)
        # Crash a node that m7 does not watch (no leave message): its watchers agree.
        victim = next(n for n in healthy if "m7" not in nodes["m0"].watchers_of(n))
        await nodes[victim].stop(leave=False)
        rest = [n for n in healthy if n != victim]
        await _until(lambda: all(victim not in nodes[n].routable() for n in rest + ["m7"]), what="routed around")
        non_watchers = [n for n in rest if n not in nodes["m0"].watchers_of(victim)]
        assert non_watchers and all(nodes[n].view()[victim] == "dead" for n in non_watchers)
        for n in names:
            await nodes[n].stop()

    asyncio.run(main())


# ---- holding a restarted member out of routing -------------------------------
def test_hold_restarted_keeps_a_fast_restart_out_of_routing_until_released():
    """b restarts within a heartbeat or two (never seen dead): a Node with
    hold_restarted holds it out of routing at the restarted event, until release()."""
    with pytest.raises(TypeError, match="hold_restarted must be a bool"):
        fk.Node("a", key=KEY, hold_restarted=1)

    async def main():
        members = _members(3, "h")
        a = fk.Node("h0", key=KEY, membership=members, interval=0.05, hold_restarted=True)
        c = fk.Node("h2", key=KEY, membership=members, interval=0.05)   # the default: no hold
        b = fk.Node("h1", key=KEY, membership=members, interval=0.05)
        seen = []
        a.add_listener(lambda ev: seen.append((ev.new, a.cluster.why_unroutable(ev.name))))
        for n in (a, b, c):
            await n.start()
        try:
            await _until(lambda: a.view()["h1"] == "alive" and c.view()["h1"] == "alive", what="h1 alive")
            await b.stop(leave=False)                     # a crash, as far as the peers can tell
            await asyncio.sleep(0.01)                     # the socket closes on the next loop turn
            b = fk.Node("h1", key=KEY, membership=members, interval=0.05, incarnation=b.incarnation + 1)
            await b.start()
            await _until(lambda: ("restarted", ["held"]) in seen, what="h1 restarted and held")
            assert "dead" not in [e for e, _ in seen]
            assert a.held == ["h1"] and "h1" not in a.routable()
            assert all(a.route(f"k{i}") != "h1" for i in range(200))
            await _until(lambda: "h1" in c.routable(), what="c routes to h1")   # c does not hold
            a.release("h1")
            assert a.held == [] and "h1" in a.routable()
            a.hold("h2")
            assert a.cluster.why_unroutable("h2") == ["held"]
            a.release("h2")
            with pytest.raises(KeyError, match="'nobody' is not a member"):
                a.hold("nobody")
            with pytest.raises(KeyError, match="'nobody' is not a member"):
                a.release("nobody")
        finally:
            for n in (a, b, c):
                await n.stop()
    asyncio.run(main())
