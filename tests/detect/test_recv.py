"""The native receive path (faultkit.detect._recv): equal to decode_packet, budgets, penalties,
known-good sources, the source table, leaves passed through, and the receiver thread."""
import asyncio
import hashlib
import hmac
import socket
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from faultkit.detect import TimeoutDetector
from faultkit.detect import transport as tr

pytestmark = pytest.mark.skipif(not tr.HAVE_NATIVE, reason="this build has no native receive path")

KEY = bytes(range(32))
OTHER = bytes(range(1, 33))
UNLIMITED = dict(source_rate=1e12, source_burst=1e12, unknown_rate=1e12, unknown_burst=1e12,
                 fail_limit=2**31)


def native(**kw):
    from faultkit.detect import _recv
    return _recv.Receiver(KEY, tr.MAX_PACKET, **kw)


def signed(body):
    return body + hmac.new(KEY, body, hashlib.sha256).digest()


def reference(data):
    """What decode_packet makes of data: (reason or None, entries with raw incarnations)."""
    try:
        beats = tr.decode_packet(KEY, data)
    except tr.PacketError as e:
        return e.reason, []
    return None, [(b.name, b.incarnation | (tr.LEAVE_BIT if b.leave else 0), b.sequence, b.sent)
                  for b in beats]


GOOD = [tr.encode_packet(KEY, [("a", 3, s, 0.5), ("nœud", 2**63 - 1, 2**64 - s, -1e300)]) for s in range(1, 4)]


@settings(max_examples=400, deadline=None)
@given(data=st.data())
def test_native_accepts_exactly_what_decode_packet_accepts(data):
    kind = data.draw(st.sampled_from(["random", "truncate", "flip", "wrong_key", "extend", "good", "crafted"]))
    base = data.draw(st.sampled_from(GOOD))
    if kind == "random":
        pkt = data.draw(st.binary(max_size=1500))
    elif kind == "truncate":
        pkt = base[:data.draw(st.integers(0, len(base) - 1))]
    elif kind == "flip":
        b = bytearray(base)
        for bit in data.draw(st.lists(st.integers(0, len(base) * 8 - 1), min_size=1, max_size=4, unique=True)):
            b[bit // 8] ^= 1 << (bit % 8)
        pkt = bytes(b)
    elif kind == "wrong_key":
        pkt = tr.encode_packet(OTHER, [("a", 3, 9, 0.0)])
    elif kind == "extend":
        pkt = base + data.draw(st.binary(min_size=1, max_size=64))
    elif kind == "good":
        pkt = base
    else:  # signed with the key, but any framing, names, counts and fields
        count = data.draw(st.integers(0, 4))
        entries = data.draw(st.lists(st.tuples(st.binary(max_size=8), st.integers(0, 2**64 - 1),
                                               st.integers(0, 2**64 - 1),
                                               st.floats(allow_nan=True, allow_infinity=True)),
                                     max_size=4))
        body = b"FK\x01" + bytes([count])
        for name, inc, seq, sent in entries:
            body += bytes([len(name)]) + name + struct.pack(">QQd", inc, seq, sent)
        pkt = signed(body)
    want_reason, want = reference(pkt)
    got = native(**UNLIMITED).process([pkt], 1.0)
    assert got == want
    rx = native(**UNLIMITED)
    rx.process([pkt], 1.0)
    counts = rx.counts()
    if want_reason is None:
        assert counts["packets"] == 1
    else:  # the native path checks framing before the MAC: a misframed forgery is "malformed"
        reasons = {want_reason, "malformed"} if want_reason == "unauthenticated" else {want_reason}
        assert sum(counts[r] for r in reasons) == 1 and counts["packets"] == 0


def test_leave_entries_pass_bit_63_through():
    pkt = tr.encode_packet(KEY, [("n1", 7, 3, 1.5, True), ("n2", 7, 4, 1.5)])
    assert native().process([pkt], 1.0) == [("n1", 7 | 2**63, 3, 1.5), ("n2", 7, 4, 1.5)]
    top = signed(b"FK\x01\x01\x01x" + struct.pack(">QQd", 2**64 - 1, 1, 0.0))
    assert native().process([top], 1.0) == [("x", 2**64 - 1, 1, 0.0)]


def test_invalid_utf8_names_are_malformed_even_when_signed():
    for name in (b"\xff", b"\xc0\x80", b"\xed\xa0\x80", b"\xf4\x90\x80\x80", b"\xe2\x82"):
        pkt = signed(b"FK\x01\x01" + bytes([len(name)]) + name + struct.pack(">QQd", 1, 1, 0.0))
        rx = native()
        assert rx.process([pkt], 1.0) == [] and rx.counts()["malformed"] == 1
        with pytest.raises(tr.PacketError, match="malformed"):
            tr.decode_packet(KEY, pkt)


def test_a_source_has_a_budget_of_mac_verifications():
    rx = native(source_rate=1.0, source_burst=5.0, fail_limit=1000)
    forged = tr.encode_packet(OTHER, [("a", 1, 1, 0.0)])
    rx.process([forged] * 10, 1.0, port=1)
    assert rx.counts()["unauthenticated"] == 5 and rx.counts()["budget"] == 5
    rx.process([forged] * 3, 2.0, port=1)  # one token back after a second
    assert rx.counts()["unauthenticated"] == 6 and rx.counts()["budget"] == 7
    rx.process([forged], 2.0, port=2)  # another source has its own bucket
    assert rx.counts()["unauthenticated"] == 7


def test_unknown_sources_share_one_budget():
    rx = native(unknown_rate=1.0, unknown_burst=10.0, fail_limit=1000)
    forged = tr.encode_packet(OTHER, [("a", 1, 1, 0.0)])
    for port in range(1, 31):
        rx.process([forged], 1.0, port=port)
    assert rx.counts()["unauthenticated"] == 10 and rx.counts()["budget"] == 20


def test_a_failing_source_is_penalised_before_the_mac_then_forgiven():
    rx = native(fail_limit=3, penalty=2.0)
    forged = tr.encode_packet(OTHER, [("a", 1, 1, 0.0)])
    genuine = tr.encode_packet(KEY, [("a", 1, 1, 0.0)])
    rx.process([forged] * 10, 1.0, port=1)
    assert rx.counts()["unauthenticated"] == 3 and rx.counts()["penalised"] == 7
    assert rx.process([genuine], 2.9, port=1) == []  # still penalised: not even verified
    assert rx.counts()["penalised"] == 8
    assert rx.process([genuine], 3.0, port=1) == [("a", 1, 1, 0.0)]  # the penalty is over
    assert rx.process([genuine], 3.0, port=2) == [("a", 1, 1, 0.0)]  # other sources never were


def test_known_good_sources_are_always_verified():
    rx = native(source_rate=1.0, source_burst=1.0, unknown_rate=1.0, unknown_burst=1.0, fail_limit=1)
    genuine = tr.encode_packet(KEY, [("a", 1, 1, 0.0)])
    forged = tr.encode_packet(OTHER, [("a", 1, 1, 0.0)])
    assert rx.process([genuine], 1.0, address=b"\x7f\x00\x00\x01", port=5) != []
    assert rx.known_good == 1
    # spent budgets and failures do not stop a known-good source's genuine datagrams
    rx.process([forged] * 50, 1.0, address=b"\x7f\x00\x00\x01", port=5)
    assert rx.counts()["unauthenticated"] == 50 and rx.counts()["penalised"] == 0
    assert len(rx.process([genuine] * 20, 1.0, address=b"\x7f\x00\x00\x01", port=5)) == 20
    rx.reset_sources()
    assert rx.known_good == 0 and rx.tracked == 0


def test_the_source_table_is_bounded_and_keeps_known_good_sources():
    rx = native(max_sources=16, fail_limit=1000)
    genuine = tr.encode_packet(KEY, [("a", 1, 1, 0.0)])
    forged = tr.encode_packet(OTHER, [("a", 1, 1, 0.0)])
    rx.process([genuine], 1.0, port=1)
    for port in range(2, 2000):
        rx.process([forged], 1.0 + port * 1e-3, port=port)
    assert rx.tracked == 16 and rx.known_good == 1
    assert rx.process([genuine], 5.0, port=1) != []


def test_oversized_and_bad_arguments():
    from faultkit.detect import _recv
    rx = _recv.Receiver(KEY, 100)
    rx.process([b"FK\x01\x01" + b"\0" * 97, b"", b"x" * 61], 1.0)
    assert rx.counts()["oversized"] == 1 and rx.counts()["malformed"] == 2
    with pytest.raises(ValueError, match="max_packet"):
        _recv.Receiver(KEY, 10)
    with pytest.raises(ValueError, match="max_sources"):
        _recv.Receiver(KEY, 1400, max_sources=1000)
    with pytest.raises(ValueError, match="finite and positive"):
        _recv.Receiver(KEY, 1400, source_rate=-1.0)
    with pytest.raises(ValueError, match="now"):
        rx.process([], float("nan"))
    with pytest.raises(TypeError, match="bytes"):
        rx.process(["text"], 1.0)
    det = TimeoutDetector(5.0)
    with pytest.raises(TypeError, match="native"):
        tr.HeartbeatReceiver(det, "127.0.0.1:0", key=KEY, native="yes")
    with pytest.raises(ValueError, match="unknown budget options"):
        tr.HeartbeatReceiver(det, "127.0.0.1:0", key=KEY, budgets={"speed": 1})
    with pytest.raises(ValueError, match="native receive path only"):
        tr.HeartbeatReceiver(det, "127.0.0.1:0", key=KEY, native=False, budgets={"penalty": 1.0})
    with pytest.raises(ValueError, match="rcvbuf"):
        tr.HeartbeatReceiver(det, "127.0.0.1:0", key=KEY, rcvbuf=-1)
    with pytest.raises(ValueError, match="fail_limit"):
        tr.HeartbeatReceiver(det, "127.0.0.1:0", key=KEY, budgets={"fail_limit": 0})


@pytest.mark.parametrize("native_path", [True, False], ids=["native", "python"])
def test_live_receiver_records_leaves_drops_oversized_and_closes(native_path):
    async def main():
        det = TimeoutDetector(60.0)
        det.add_many(["n1", "n2"])
        rx = tr.HeartbeatReceiver(det, "127.0.0.1:0", key=KEY, native=native_path, max_packet=200)
        async with rx:
            assert rx.native is native_path and rx.rcvbuf > 0
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s.connect(rx.address)
            s.send(tr.encode_packet(KEY, [("n1", 4, 1, 0.0), ("n2", 4, 1, 0.0)]))
            s.send(b"x" * 300)
            s.send(tr.encode_packet(KEY, [("n1", 4, 2, 0.0, True)]))
            for _ in range(500):  # bounded wait
                if det.state("n1") == "left" and rx.stats["oversized"] == 1:
                    break
                await asyncio.sleep(0.01)
            s.close()
        rx.close()  # idempotent
        return det, rx

    det, rx = asyncio.run(main())
    assert det.state("n1") == "left" and det.state("n2") == "alive"
    assert rx.stats["leaves"] == 1 and rx.stats["heartbeats"] == 2 and rx.stats["oversized"] == 1
    assert rx.stats["packets"] == 2


def test_rcvbuf_is_reported_and_force_falls_back():
    async def main():
        det = TimeoutDetector(5.0)
        out = []
        for force in (False, True):
            async with tr.HeartbeatReceiver(det, "127.0.0.1:0", key=KEY, rcvbuf=4 << 20,
                                            rcvbuf_force=force) as rx:
                out.append(rx.rcvbuf)
        return out

    plain, forced = asyncio.run(main())
    assert plain > 0 and forced >= plain  # Linux doubles what it grants; forced passes rmem_max


def test_a_stalled_event_loop_bounds_the_queue_and_counts_the_backlog(monkeypatch):
    import threading
    import time

    monkeypatch.setattr(tr, "MAX_INFLIGHT", 2)

    async def main():
        det = TimeoutDetector(60.0)
        det.add("n1")
        async with tr.HeartbeatReceiver(det, "127.0.0.1:0", key=KEY) as rx:
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s.connect(rx.address)

            def send_paced():  # one datagram per batch: wait for the thread to take each
                for seq in range(1, 6):
                    s.send(tr.encode_packet(KEY, [("n1", 1, seq, 0.0)]))
                    for _ in range(2000):  # bounded
                        if rx._received >= seq:
                            break
                        time.sleep(0.005)

            sender = threading.Thread(target=send_paced)
            sender.start()
            sender.join(timeout=30)  # the event loop is stalled here, on purpose
            s.close()
            assert rx._received == 5
            for _ in range(500):  # bounded: the held-back counts come with the next batch
                if rx.stats["backlog"] == 3:
                    break
                await asyncio.sleep(0.01)
            return rx.stats

    stats = asyncio.run(main())
    assert stats["heartbeats"] == 2 and stats["backlog"] == 3 and stats["packets"] == 5
