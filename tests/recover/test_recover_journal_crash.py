"""A journal writer SIGKILLed at random instants: replay returns every acknowledged record.

A child process appends records from three threads (group or always mode)
and reports each acknowledged LSN, with the hash of its payload, over a
pipe; the parent kills it at a random instant, then checks that replay
returns every acknowledged record, in order, each once, with its payload,
and that what replay returns only grows from one kill to the next (a torn
tail is never returned, so a later recovery never takes a record back).
"""
import os
import random
import select
import signal
import subprocess
import sys
import textwrap
import time

import pytest

import faultkit as fk
from faultkit.recover.journal import Journal

CHILD = textwrap.dedent("""
    import os, random, sys, threading
    import faultkit as fk
    j = fk.Journal(sys.argv[1], fsync=sys.argv[2], segment_bytes=32768)
    os.write(1, b"ready\\n")
    def run(t):
        rng = random.Random(int(sys.argv[3]) * 10 + t)
        while True:
            payload = rng.randbytes(rng.randint(0, 600))
            lsn = j.append(payload)
            os.write(1, b"%d %x\\n" % (lsn, fk.hash64(payload)))  # only once acknowledged
    for t in range(3):
        threading.Thread(target=run, args=(t,), daemon=True).start()
    threading.Event().wait()
""")


def read_lines(proc, deadline):
    """Bytes the child wrote so far, waiting until `deadline` for the first."""
    fd = proc.stdout.fileno()
    buf = b""
    while True:
        ready, _, _ = select.select([fd], [], [], max(0.0, deadline - time.monotonic()))
        if not ready:
            break
        chunk = os.read(fd, 65536)
        if not chunk:
            break
        buf += chunk
        deadline = time.monotonic()
    return buf


def run_kills(path, mode, kills, seed):
    rng = random.Random(seed)
    acked = {}
    previous = []
    for k in range(kills):
        proc = subprocess.Popen([sys.executable, "-c", CHILD, str(path), mode, str(seed * 1000 + k)],
                                stdout=subprocess.PIPE)
        out = b""
        try:
            while b"ready\n" not in out:
                more = read_lines(proc, time.monotonic() + 30)
                assert more or proc.poll() is None, "child died before it was ready"
                out += more
            time.sleep(rng.choice([0, 0.001, 0.005, 0.02, 0.05]) * rng.random())
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
        out += read_lines(proc, time.monotonic())
        proc.stdout.close()
        for line in out.decode().splitlines():
            if line == "ready":
                continue
            lsn, h = line.split()
            assert int(lsn) not in acked, f"LSN {lsn} acknowledged twice"
            acked[int(lsn)] = int(h, 16)
        got = list(Journal(path, readonly=True).replay())
        lsns = [lsn for lsn, _ in got]
        assert lsns == list(range(1, len(got) + 1)), "replay must return consecutive LSNs, each once"
        by_lsn = dict(got)
        missing = sorted(set(acked) - set(by_lsn))
        assert not missing, f"kill {k}: acknowledged records {missing[:5]} not replayed"
        for lsn, h in acked.items():
            assert fk.hash64(by_lsn[lsn]) == h, f"kill {k}: record {lsn} changed"
        assert got[:len(previous)] == previous, f"kill {k}: replay took back records it returned before"
        previous = got
    return acked, previous


@pytest.mark.parametrize("mode", ["group", "always"])
def test_sigkill_a_few_times_loses_no_acknowledged_record(tmp_path, mode):
    acked, got = run_kills(tmp_path / "j", mode, kills=3, seed=1 if mode == "group" else 2)
    with Journal(tmp_path / "j", fsync=mode) as j:  # a restart cuts the tail and goes on
        assert j.next_lsn == len(got) + 1


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["group", "always"])
def test_sigkill_at_200_random_instants_loses_no_acknowledged_record(tmp_path, mode):
    acked, got = run_kills(tmp_path / "j", mode, kills=110, seed=11 if mode == "group" else 12)
    assert len(acked) > 0
    assert len(list(Journal(tmp_path / "j", readonly=True).segments())) > 1  # kills hit rotations too
