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
    MAX_PACKET, HeartbeatReceiver, HeartbeatSender, decode_packet, encode_packet,
    load_key, parse_address,
)

KEY = bytes(range(32))
OTHER = bytes(range(1, 33))


def receiver(**kw):
    det = TimeoutDetector(5.0, 1.0)
    return det, HeartbeatReceiver(det, "127.0.0.1:0", key=KEY, **kw)


def snapshot(det):
    return {n: (det.state(n), det.last_heartbeat(n), det.incarnation(n)) for n in det.names}


def test_round_trip_several_heartbeats_per_datagram():
    beats = [("n1", 7, 1, 1.5), ("nœud-2", 7, 2, 1.5), ("x" * 255, 2**63 - 1, 2**64 - 1, -0.0)]
    pkt = encode_packet(KEY, beats)
    assert decode_packet(KEY, pkt) == beats
    assert len(pkt) == 4 + sum(1 + len(n.encode()) + 24 for n, *_ in beats) + 32


def test_the_tag_is_hmac_sha256_of_the_body():
    pkt = encode_packet(KEY, [("a", 1, 1, 0.0)])
    assert pkt[-32:] == hmac.new(KEY, pkt[:-32], hashlib.sha256).digest()
    assert pkt[:4] == b"FK\x01\x01"


def test_encode_rejects_out_of_range_fields():
    for beats in ([], [("", 1, 1, 0.0)], [("a", -1, 1, 0.0)], [("a", 2**63, 1, 0.0)],
                  [("a", 1, 1, math.nan)], [("é" * 200, 1, 1, 0.0)],
                  [(f"n{i:03d}" * 10, 1, i, 0.0) for i in range(60)]):
        with pytest.raises(ValueError):
            encode_packet(KEY, beats)
    with pytest.raises(ValueError):
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


def test_unknown_names_can_be_refused():
    det, rx = receiver(auto_add=False)
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
    rx = HeartbeatReceiver(det, "127.0.0.1:0", key=KEY)
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
    for bad in ("nohost", ":80", "h:x", "h:70000"):
        with pytest.raises(ValueError):
            parse_address(bad)
    with pytest.raises(ValueError):
        HeartbeatSender("a", "127.0.0.1:1", 0, key=KEY)
    with pytest.raises(TypeError):
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
        async with HeartbeatReceiver(det, "127.0.0.1:0", key=KEY) as rx:
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
