"""A bounded UDP flood, run as its own process by the flood tests and benchmarks.

    python flood.py PORT KIND TOTAL SECONDS [SOCKETS]

KIND: ``forged`` (right length and framing, an HMAC under another key),
``garbage`` (200 random bytes) or ``genuine-replay`` is not offered: only
what a process without the key can make.  Sends at most TOTAL datagrams and
stops after SECONDS, from SOCKETS source sockets (distinct source ports,
round-robin), as fast as the kernel takes them (sendmmsg through
faultkit.detect._recv where built, else socket.send).  Prints
``sent N seconds S`` on its last line.
"""
import os
import socket
import sys
import time

from faultkit.detect.transport import encode_packet

CHUNK = 4096  # datagrams per send call: the time bound is checked between chunks


def datagrams(kind):
    if kind == "forged":
        other = b"not-the-key-" * 3
        # the genuine sender's name and framing; only the tag is wrong
        return [encode_packet(other, [("n1", 1 << 40, seq, time.time())]) for seq in range(1, 65)]
    if kind == "garbage":
        return [os.urandom(200) for _ in range(64)]
    raise SystemExit(f"unknown kind {kind!r}")


def main(argv):
    port, kind, total, seconds = int(argv[1]), argv[2], int(argv[3]), float(argv[4])
    nsock = int(argv[5]) if len(argv) > 5 else 1
    pkts = datagrams(kind)
    socks = []
    for _ in range(nsock):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.connect(("127.0.0.1", port))
        socks.append(s)
    try:
        from faultkit.detect._recv import send_many
    except ImportError:  # pragma: no cover - build without the native module
        send_many = None
    sent, i, t0 = 0, 0, time.monotonic()
    while sent < total and time.monotonic() - t0 < seconds:
        s = socks[i % nsock]
        i += 1
        n = min(CHUNK, total - sent)
        if send_many is not None:
            sent += send_many(s.fileno(), pkts, n)
        else:
            for k in range(n):
                try:
                    s.send(pkts[k % len(pkts)])
                    sent += 1
                except OSError:
                    pass
    print(f"sent {sent} seconds {time.monotonic() - t0:.3f}", flush=True)


if __name__ == "__main__":
    main(sys.argv)
