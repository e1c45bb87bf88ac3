"""faultkit.transport: packet codec, authentication, replay rejection, fuzzing, UDP loopback."""
import asyncio
import hashlib
import hmac
import math
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from faultkit.detect import PhiAccrualDetector, TimeoutDetector
from faultkit.transport import (
    HAVE_NATIVE, MAX_PACKET, Beat, HeartbeatReceiver, HeartbeatSender, PacketError, decode_packet,
    encode_packet, load_key, parse_address,
)

KEY = bytes(range(32))
OTHER = bytes(range(1, 33))


def receiver(**kw):
    det = TimeoutDetector(5.0, 1.0)
    kw.setdefault("auto_add", True)
    return det, HeartbeatReceiver(det, "127.0.0.1:0", key=KEY, **kw)


def snapshot(det):
    return {n: (det.state(n), det.last_heartbeat(n), det.incarnation(n)) for n in det.names}


def test_round_trip_several_heartbeats_per_datagram():
    beats = [("n1", 7, 1, 1.5), ("nœud-2", 7, 2, 1.5), ("x" * 255, 2**63 - 1, 2**64 - 1, -0.0)]
    pkt = encode_packet(KEY, beats)
    assert decode_packet(KEY, pkt) == [Beat(*b, False) for b in beats]
    assert len(pkt) == 4 + sum(1 + len(n.encode()) + 24 for n, *_ in beats) + 32


def test_the_tag_is_hmac_sha256_of_the_body():
    pkt = encode_packet(KEY, [("a", 1, 1, 0.0)])
    assert pkt[-32:] == hmac.new(KEY, pkt[:-32], hashlib.sha256).digest()
    assert pkt[:4] == b"FK\x01\x01"


def test_encode_rejects_out_of_range_fields():
    for beats, match in (
            ([], r"a packet carries 1\.\.255 heartbeats, got 0"),
            ([("", 1, 1, 0.0)], r"name '' must be 1\.\.255 bytes of UTF-8"),
            ([("a", -1, 1, 0.0)], r"incarnation -1 / sequence 1 out of range"),
            ([("a", 2**63, 1, 0.0)], r"incarnation 9223372036854775808 / sequence 1 out of range"),
            ([("a", 1, 1, math.nan)], r"send time must be finite, got nan"),
            ([("é" * 200, 1, 1, 0.0)], r"name 'é{200}' must be 1\.\.255 bytes of UTF-8"),
            ([(f"n{i:03d}" * 10, 1, i, 0.0) for i in range(60)], r"packet of 3936 bytes exceeds 1400")):
        with pytest.raises(ValueError, match=match):
            encode_packet(KEY, beats)
    with pytest.raises(ValueError, match=r"key must be at least 16 bytes, got 5"):
        encode_packet(b"short", [("a", 1, 1, 0.0)])


def test_receiver_records_and_counts():
    det, rx = receiver()
    assert rx.handle(encode_packet(KEY, [("a", 1, 1, 0.0), ("b", 1, 1, 0.0)]), now=10.0) == 2
    assert det.names == ["a", "b"] and det.last_heartbeat("a") == 10.0
    assert rx.stats["packets"] == 1 and rx.stats["heartbeats"] == 2
    assert det.incarnation("a") == 1


def test_replays_are_dropped_and_counted():
    det, rx = receiver()
    p1 = encode_packet(KEY, [("a", 5, 1, 0.0)])
    p2 = encode_packet(KEY, [("a", 5, 2, 0.0)])
    assert rx.handle(p1, now=1.0) == 1
    assert rx.handle(p2, now=2.0) == 1
    before = snapshot(det)
    assert rx.handle(p1, now=3.0) == 0 and rx.handle(p2, now=3.0) == 0
    assert rx.stats["replayed"] == 2 and snapshot(det) == before
    old_life = encode_packet(KEY, [("a", 4, 99, 0.0)])  # an earlier incarnation
    assert rx.handle(old_life, now=3.0) == 0
    new_life = encode_packet(KEY, [("a", 6, 1, 0.0)])   # a restart: sequence starts over
    assert rx.handle(new_life, now=3.0) == 1 and det.incarnation("a") == 6


def test_failing_on_join_is_counted_not_raised(caplog):
    joined = []

    def on_join(name):
        joined.append(name)
        raise RuntimeError("application bug")

    det, rx = receiver(on_join=on_join)
    with caplog.at_level("ERROR", logger="faultkit.transport"):
        assert rx.handle(encode_packet(KEY, [("a", 1, 1, 0.0), ("b", 1, 1, 0.0)]), now=1.0) == 2
        assert rx.handle(encode_packet(KEY, [("a", 1, 2, 0.0)]), now=2.0) == 1  # not a join
    assert joined == ["a", "b"] and det.last_heartbeat("b") == 1.0
    assert rx.stats["callback_errors"] == 2 and rx.stats["heartbeats"] == 3
    assert "on_join callback failed for 'a'" in caplog.text


def test_max_skew_drops_heartbeats_sent_outside_the_window():
    wall = [1000.0]
    det, rx = receiver(max_skew=30.0, wall_clock=lambda: wall[0])
    assert rx.handle(encode_packet(KEY, [("a", 1, 1, 990.0)]), now=1.0) == 1
    captured = [encode_packet(KEY, [("a", 1, seq, 990.0 + seq)]) for seq in range(2, 6)]
    # the receiver restarts and forgets its sequence numbers; "a" has died
    det, rx = receiver(max_skew=30.0, wall_clock=lambda: wall[0])
    wall[0] = 1100.0
    before = snapshot(det)
    assert sum(rx.handle(p, now=2.0) for p in captured) == 0
    assert rx.stats["stale"] == 4 and snapshot(det) == before
    assert rx.handle(encode_packet(KEY, [("a", 1, 9, 1129.5)]), now=2.0) == 1  # within 30 s
    assert rx.handle(encode_packet(KEY, [("b", 1, 1, 1069.5)]), now=2.0) == 0  # 30.5 s old
    assert rx.handle(encode_packet(KEY, [("b", 1, 2, 1070.5)]), now=2.0) == 1  # 29.5 s old
    assert rx.stats["stale"] == 5


def test_receiver_rejects_bad_options():
    det = TimeoutDetector(5.0)
    for bad, exc in ((0, ValueError), (-1.0, ValueError), (math.inf, ValueError),
                     (math.nan, ValueError), ("5", TypeError), (True, TypeError)):
        with pytest.raises(exc, match="max_skew"):
            HeartbeatReceiver(det, "127.0.0.1:0", key=KEY, max_skew=bad)
    with pytest.raises(TypeError, match="on_join"):
        HeartbeatReceiver(det, "127.0.0.1:0", key=KEY, on_join=42)
    with pytest.raises(TypeError, match="wall_clock"):
        HeartbeatReceiver(det, "127.0.0.1:0", key=KEY, wall_clock=None)


def test_unknown_names_are_refused_by_default():
    det = TimeoutDetector(5.0, 1.0)
    rx = HeartbeatReceiver(det, "127.0.0.1:0", key=KEY)
    assert rx.auto_add is False
    det.add("known")
    assert rx.handle(encode_packet(KEY, [("known", 1, 1, 0.0), ("stranger", 1, 1, 0.0)]), now=1.0) == 1
    assert rx.stats["unknown"] == 1 and "stranger" not in det


def test_wrong_key_oversized_and_malformed_are_dropped():
    det, rx = receiver()
    rx.handle(encode_packet(KEY, [("a", 1, 1, 0.0)]), now=1.0)
    before = snapshot(det)
    rx.handle(encode_packet(OTHER, [("a", 1, 2, 0.0)]), now=2.0)
    rx.handle(b"\x00" * (MAX_PACKET + 1), now=2.0)
    rx.handle(b"", now=2.0)
    rx.handle(b"FK\x02\x01" + b"\x00" * 60, now=2.0)
    # authenticated but inconsistent: a count that does not match the body
    body = b"FK\x01\x02" + b"\x01a" + struct.pack(">QQd", 1, 3, 0.0)
    rx.handle(body + hmac.new(KEY, body, hashlib.sha256).digest(), now=2.0)
    assert snapshot(det) == before
    assert rx.stats["unauthenticated"] == 1 and rx.stats["oversized"] == 1
    assert rx.stats["malformed"] == 3


def _fuzz_setup():
    det = PhiAccrualDetector(suspect_threshold=3.0)
    rx = HeartbeatReceiver(det, "127.0.0.1:0", key=KEY, auto_add=True)
    good = [encode_packet(KEY, [("a", 3, s, 0.0), ("b", 3, s, 0.0)]) for s in range(1, 4)]
    for i, p in enumerate(good):
        rx.handle(p, now=float(i))
    return det, rx, good


@settings(max_examples=300, deadline=None)
@given(data=st.data())
def test_fuzzed_packets_never_raise_and_never_change_a_state(data):
    det, rx, good = _fuzz_setup()
    before = snapshot(det)
    base = data.draw(st.sampled_from(good))
    kind = data.draw(st.sampled_from(["random", "truncate", "flip", "wrong_key", "replay", "extend"]))
    if kind == "random":
        pkt = data.draw(st.binary(max_size=2000))
    elif kind == "truncate":
        pkt = base[:data.draw(st.integers(0, len(base) - 1))]
    elif kind == "flip":
        bits = data.draw(st.lists(st.integers(0, len(base) * 8 - 1), min_size=1, max_size=8, unique=True))
        b = bytearray(base)
        for bit in bits:
            b[bit // 8] ^= 1 << (bit % 8)
        pkt = bytes(b)
    elif kind == "wrong_key":
        seq = data.draw(st.integers(4, 2**64 - 1))
        pkt = encode_packet(OTHER, [("a", 3, seq, 0.0), ("evil", 3, seq, 0.0)])
    elif kind == "replay":
        pkt = base
    else:
        pkt = base + data.draw(st.binary(min_size=1, max_size=64))
    assert rx.handle(pkt, now=2.5) == 0
    assert snapshot(det) == before and det.names == ["a", "b"]
    assert rx.stats["heartbeats"] == 6


def test_forged_tags_are_rejected_in_place():
    det, rx, good = _fuzz_setup()
    forged = good[0][:-32] + bytes(32)
    assert rx.handle(forged, now=9.0) == 0 and rx.stats["unauthenticated"] == 1


def test_key_file_and_addresses(tmp_path):
    k = tmp_path / "k"
    k.write_bytes(b"0123456789abcdef0123\n")
    assert load_key(k) == b"0123456789abcdef0123"
    k.write_bytes(b"short\n")
    with pytest.raises(ValueError, match="16 bytes"):
        load_key(k)
    assert parse_address("127.0.0.1:7946") == ("127.0.0.1", 7946)
    assert parse_address("[::1]:80") == ("::1", 80)
    for bad, match in (("nohost", "address must be host:port, got 'nohost'"),
                       (":80", "address must be host:port, got ':80'"),
                       ("h:x", "port must be an integer in 'h:x'"),
                       ("h:70000", r"port must be in \[0, 65535\], got 70000")):
        with pytest.raises(ValueError, match=match):
            parse_address(bad)
    with pytest.raises(ValueError, match=r"interval must be a finite number of seconds > 0, got 0"):
        HeartbeatSender("a", "127.0.0.1:1", 0, key=KEY)
    with pytest.raises(TypeError, match=r"detector must be a faultkit detector, not object"):
        HeartbeatReceiver(object(), "127.0.0.1:0", key=KEY)


def test_sender_splits_names_over_datagrams():
    names = [f"component-{i:05d}" for i in range(200)]
    s = HeartbeatSender(names, "127.0.0.1:9", 1.0, key=KEY, incarnation=9)
    pkts = s.packets()
    assert len(pkts) > 1 and all(len(p) <= MAX_PACKET for p in pkts)
    got = [b for p in pkts for b in decode_packet(KEY, p)]
    assert [b[0] for b in got] == names and {b[1] for b in got} == {9}
    assert [b[2] for b in got] == sorted(b[2] for b in got)


def test_udp_loopback_in_one_event_loop():
    async def main():
        det = TimeoutDetector(5.0)
        async with HeartbeatReceiver(det, "127.0.0.1:0", key=KEY, auto_add=True) as rx:
            host, port = rx.address
            async with HeartbeatSender(["n1", "n2"], f"{host}:{port}", 3600.0, key=KEY) as tx:
                for _ in range(200):  # bounded wait for the first round
                    if rx.stats["heartbeats"] >= 2:
                        break
                    await asyncio.sleep(0.01)
                tx.send_now()
                evil = HeartbeatSender("n1", f"{host}:{port}", 3600.0, key=OTHER)
                await evil.start()
                evil.send_now()
                for _ in range(200):
                    if rx.stats["heartbeats"] >= 4 and rx.stats["unauthenticated"] >= 2:
                        break
                    await asyncio.sleep(0.01)
                evil.close()
        return det, rx

    det, rx = asyncio.run(main())
    assert sorted(det.names) == ["n1", "n2"]
    assert rx.stats["heartbeats"] == 4 and rx.stats["unauthenticated"] == 2  # evil: start + send_now


# ---- leaves: bit 63 of the incarnation field ---------------------------------

def test_a_leave_is_an_entry_whose_incarnation_has_bit_63_set():
    # built by hand, as a native receiver would read it: version 1, one entry
    body = b"FK\x01\x01" + b"\x02n1" + struct.pack(">QQd", 7 | 2**63, 3, 1.5)
    pkt = body + hmac.new(KEY, body, hashlib.sha256).digest()
    assert decode_packet(KEY, pkt) == [Beat("n1", 7, 3, 1.5, True)]
    assert encode_packet(KEY, [("n1", 7, 3, 1.5, True)]) == pkt
    assert encode_packet(KEY, [Beat("n1", 7, 3, 1.5)]) == encode_packet(KEY, [("n1", 7, 3, 1.5)])
    top = encode_packet(KEY, [("n1", 2**63 - 1, 1, 0.0, True)])
    assert struct.unpack_from(">Q", top, 7)[0] == 2**64 - 1
    assert decode_packet(KEY, top) == [Beat("n1", 2**63 - 1, 1, 0.0, True)]
    with pytest.raises(ValueError, match="incarnation"):
        encode_packet(KEY, [("n1", 2**63, 1, 0.0, True)])


def test_a_leave_marks_the_member_left_at_once_and_late_heartbeats_do_not_revive_it():
    det, rx = receiver()
    rx.handle(encode_packet(KEY, [("a", 5, 1, 0.0), ("b", 5, 1, 0.0)]), now=1.0)
    assert rx.handle(encode_packet(KEY, [("a", 5, 3, 0.0, True)]), now=1.5) == 0
    assert det.state("a") == "left" and rx.stats["leaves"] == 1
    assert [(e.name, e.old, e.new, e.incarnation) for e in det.scan(1.5) if e.old != "joining"] \
        == [("a", "alive", "left", 5)]
    # a heartbeat of that life sent before the leave, arriving after it
    assert rx.handle(encode_packet(KEY, [("a", 5, 2, 0.0)]), now=1.6) == 0
    assert rx.stats["replayed"] == 1  # its sequence is below the leave's
    # the same leave again (UDP duplicates): dropped as a replay, nothing changes
    assert rx.handle(encode_packet(KEY, [("a", 5, 3, 0.0, True)]), now=1.7) == 0
    assert rx.stats["replayed"] == 2 and det.scan(1.7) == []
    # a later sequence of the same life (a sender bug or a forged order): ignored, counted
    assert rx.handle(encode_packet(KEY, [("a", 5, 4, 0.0)]), now=1.8) == 0
    assert rx.stats["after_leave"] == 1 and det.state("a") == "left"
    # silence never turns a left member dead
    assert [e.name for e in det.scan(100.0)] == ["b", "b"]  # b: suspect, dead
    # the process restarts: a higher incarnation comes back as a restart
    assert rx.handle(encode_packet(KEY, [("a", 6, 1, 0.0)]), now=101.0) == 1
    evs = det.scan(101.0)
    assert [(e.old, e.new, e.old_incarnation, e.incarnation) for e in evs] == [("left", "restarted", 5, 6)]
    # the old life's leave (delayed) does not take the new one out
    assert rx.handle(encode_packet(KEY, [("a", 5, 9, 0.0, True)]), now=102.0) == 0
    assert det.state("a") == "alive" and rx.stats["replayed"] == 3


def test_leaves_of_unknown_names_never_add_them():
    det, rx = receiver()
    assert rx.handle(encode_packet(KEY, [("ghost", 1, 1, 0.0, True)]), now=1.0) == 0
    assert "ghost" not in det and rx.stats["unknown"] == 1 and rx.stats["leaves"] == 0


def test_sender_stop_sends_a_signed_leave_and_close_can_too():
    async def main():
        det = TimeoutDetector(60.0)
        det.add_many(["n1", "n2", "n3"])
        async with HeartbeatReceiver(det, "127.0.0.1:0", key=KEY) as rx:
            host, port = rx.address
            tx = HeartbeatSender(["n1", "n2"], f"{host}:{port}", 3600.0, key=KEY, incarnation=4)
            await tx.start()
            for _ in range(500):  # bounded wait for the first round
                if rx.stats["heartbeats"] >= 2:
                    break
                await asyncio.sleep(0.01)
            await tx.stop()
            assert tx.stats["sent"] == 1 + 3  # one round, then the leave three times
            await tx.stop()  # idempotent
            other = HeartbeatSender("n3", f"{host}:{port}", 3600.0, key=KEY, incarnation=2)
            await other.start()
            other.close(leave=True)
            for _ in range(500):
                if all(det.state(n) == "left" for n in ("n1", "n2", "n3")):
                    break
                await asyncio.sleep(0.01)
            return det, rx

    det, rx = asyncio.run(main())
    assert [det.state(n) for n in ("n1", "n2", "n3")] == ["left"] * 3
    assert rx.stats["leaves"] == 3 and rx.stats["unauthenticated"] == 0
    with pytest.raises(ValueError, match="repeats"):
        asyncio.run(HeartbeatSender("a", "127.0.0.1:9", key=KEY).stop(repeats=0))


# ---- signed but malformed (issue #21): a valid HMAC never makes a bad body acceptable

def _signed(body):
    return body + hmac.new(KEY, body, hashlib.sha256).digest()


_E = struct.pack(">QQd", 1, 1, 0.0)
SIGNED_MALFORMED = [
    ("a count larger than the entries", b"FK\x01\x03\x01a" + _E),
    ("a count smaller than the entries", b"FK\x01\x01" + (b"\x01a" + _E) * 2),
    ("a count of zero", b"FK\x01\x00\x01a" + _E),
    ("an empty name", b"FK\x01\x01\x00a" + _E),
    ("a name running past the end", b"FK\x01\x01\xff" + b"a" + _E),
    ("a name that is not UTF-8", b"FK\x01\x01\x01\xff" + _E),
    ("a NaN send time", b"FK\x01\x01\x01a" + struct.pack(">QQd", 1, 1, math.nan)),
    ("an infinite send time", b"FK\x01\x01\x01a" + struct.pack(">QQd", 1, 1, -math.inf)),
    ("a trailing byte", b"FK\x01\x01\x01a" + _E + b"\x00"),
    ("another version", b"FK\x02\x01\x01a" + _E),
    ("another magic", b"KF\x01\x01\x01a" + _E),
]


@pytest.mark.parametrize("what, body", SIGNED_MALFORMED, ids=[w for w, _ in SIGNED_MALFORMED])
def test_a_signed_malformed_body_is_refused_by_the_decoder(what, body):
    with pytest.raises(PacketError, match="^malformed: ") as e:
        decode_packet(KEY, _signed(body))
    assert e.value.reason == "malformed"


@pytest.mark.parametrize("native", [False, pytest.param(True, marks=pytest.mark.skipif(
    not HAVE_NATIVE, reason="this build has no native receive path"))])
def test_signed_malformed_packets_over_udp_are_dropped_and_counted_and_the_receiver_goes_on(native):
    import socket

    async def main():
        det = TimeoutDetector(5.0)
        async with HeartbeatReceiver(det, "127.0.0.1:0", key=KEY, auto_add=True, native=native) as rx:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                for _, body in SIGNED_MALFORMED:
                    s.sendto(_signed(body), rx.address)
                s.sendto(encode_packet(KEY, [("good", 1, 1, 0.0)]), rx.address)  # sent last
                for _ in range(1000):  # bounded wait for the good one, processed after the rest
                    if rx.stats["heartbeats"] >= 1:
                        break
                    await asyncio.sleep(0.01)
        return det, rx

    det, rx = asyncio.run(main())
    assert list(det.names) == ["good"] and rx.stats["heartbeats"] == 1 and rx.stats["packets"] == 1
    assert rx.stats["malformed"] == len(SIGNED_MALFORMED)


@given(st.binary(max_size=120))
@settings(max_examples=300, deadline=None)
def test_handle_never_raises_on_any_signed_body(body):
    det, rx = receiver()
    before = dict(rx.stats)
    got = rx.handle(_signed(b"FK\x01" + body), now=1.0)
    changed = {k: rx.stats[k] - before.get(k, 0) for k in rx.stats if rx.stats[k] != before.get(k, 0)}
    try:
        beats = decode_packet(KEY, _signed(b"FK\x01" + body))
    except PacketError as e:
        assert got == 0 and changed == {e.reason: 1} and list(det.names) == []
    else:
        assert changed["packets"] == 1 and got == changed.get("heartbeats", 0) <= len(beats)
