"""Two real processes on loopback: `faultkit monitor` watches `faultkit beat`.

The one test here that sleeps (it has to: real processes, real sockets).
Bounds are generous for a loaded 2-core machine; every wait is bounded, and
the children are killed in a finally.  Event times printed by the monitor are
time.monotonic() readings, comparable with this process's (one system clock).
"""
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time

import pytest

pytestmark = pytest.mark.skipif(not hasattr(signal, "SIGSTOP"), reason="needs POSIX signals")

INTERVAL, SUSPECT, TIMEOUT = 0.05, 1.0, 2.0
SLACK = 1.0   # scheduling delay we tolerate on a loaded machine, seconds
WAIT = 20.0   # longest we wait for any one line
EVENT = re.compile(r"^(\d+\.\d+) n1 (\w+) -> (\w+)$")


class Output:
    """Lines of a child's stdout, read on a thread, with bounded waits."""

    def __init__(self, proc):
        self.q = queue.Queue()
        self.seen = []
        threading.Thread(target=self._pump, args=(proc.stdout,), daemon=True).start()

    def _pump(self, f):
        for line in f:
            self.q.put(line.rstrip("\n"))

    def expect(self, pattern, timeout=WAIT):
        rx = re.compile(pattern)
        end = time.monotonic() + timeout
        while True:
            left = end - time.monotonic()
            try:
                line = self.q.get(timeout=max(left, 0.001))
            except queue.Empty:
                raise AssertionError(f"no line matching {pattern!r} in {timeout} s; saw {self.seen}") from None
            self.seen.append(line)
            m = rx.search(line)
            if m:
                return m

    def event(self, old, new, *, after):
        """The next `n1 old -> new` event whose crossing time is >= after."""
        while True:
            m = self.expect(rf"^(\d+\.\d+) n1 {old} -> {new}$")
            if float(m.group(1)) >= after:
                return float(m.group(1))


def spawn(*args):
    return subprocess.Popen([sys.executable, "-m", "faultkit", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, bufsize=1)


def test_monitor_sees_a_stopped_sender_suspected_dead_and_back(tmp_path):
    key = tmp_path / "key"
    key.write_text(os.urandom(32).hex())
    procs = []
    try:
        mon = spawn("monitor", "--bind", "127.0.0.1:0", "--key-file", str(key),
                    "--suspect-after", str(SUSPECT), "--timeout", str(TIMEOUT),
                    "--scan-interval", "0.02")
        procs.append(mon)
        out = Output(mon)
        port = int(out.expect(r"listening on 127\.0\.0\.1:(\d+)").group(1))
        beat = spawn("beat", "--name", "n1", "--target", f"127.0.0.1:{port}",
                     "--key-file", str(key), "--interval", str(INTERVAL))
        procs.append(beat)
        out.expect(r" n1 joined$")
        time.sleep(0.3)  # a few heartbeats' history

        # SIGSTOP: suspect, then dead, both crossings from the last heartbeat before the stop
        beat.send_signal(signal.SIGSTOP)
        t_stop = time.monotonic()
        dead = out.event("suspect", "dead", after=t_stop)
        seen_dead = time.monotonic()
        suspect = max(float(m.group(1)) for m in map(EVENT.match, out.seen)
                      if m and m.group(3) == "suspect" and float(m.group(1)) <= dead)
        assert dead - suspect == pytest.approx(TIMEOUT - SUSPECT, abs=2e-3)
        assert t_stop - INTERVAL - SLACK + TIMEOUT <= dead <= t_stop + TIMEOUT + SLACK
        assert seen_dead <= t_stop + TIMEOUT + WAIT

        # SIGCONT: the next heartbeat brings it back
        beat.send_signal(signal.SIGCONT)
        t_cont = time.monotonic()
        back = out.event("dead", "alive", after=t_cont - 0.01)
        assert back <= t_cont + SLACK + 5.0

        # SIGKILL: suspect then dead again, within the configured bounds
        time.sleep(0.3)
        beat.send_signal(signal.SIGKILL)
        t_kill = time.monotonic()
        beat.wait(timeout=10)
        dead = out.event("suspect", "dead", after=t_kill)
        assert t_kill - INTERVAL - SLACK + TIMEOUT <= dead <= t_kill + TIMEOUT + SLACK
        assert mon.poll() is None, mon.stderr.read()
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
            p.wait(timeout=10)
            for f in (p.stdout, p.stderr):
                f.close()


# A heartbeat interval longer than a `faultkit beat` process takes to start, so
# a respawn right after SIGKILL sends its first heartbeat within the interval in
# which the killed one would have sent its next: the receiver never sees a gap
# (the timeout is far longer still) and only the incarnation tells it.
RESTART_INTERVAL, RESTART_TIMEOUT = 5.0, 60.0


def test_fast_restart_is_reported_restarted_and_a_stop_is_reported_left(tmp_path):
    key = tmp_path / "key"
    key.write_text(os.urandom(32).hex())
    procs = []
    try:
        mon = spawn("monitor", "--bind", "127.0.0.1:0", "--key-file", str(key),
                    "--timeout", str(RESTART_TIMEOUT), "--scan-interval", "0.02")
        procs.append(mon)
        out = Output(mon)
        port = int(out.expect(r"listening on 127\.0\.0\.1:(\d+)").group(1))
        args = ("beat", "--name", "n1", "--target", f"127.0.0.1:{port}", "--key-file", str(key),
                "--interval", str(RESTART_INTERVAL))
        first = spawn(*args)
        procs.append(first)
        inc1 = int(Output(first).expect(r"\(incarnation (\d+)\)").group(1))
        out.expect(r" n1 joining -> alive$")

        first.send_signal(signal.SIGKILL)  # a crash: no leave
        first.wait(timeout=10)
        second = spawn(*args)
        procs.append(second)
        beat_out = Output(second)
        inc2 = int(beat_out.expect(r"\(incarnation (\d+)\)").group(1))
        assert inc2 > inc1  # start time in ms
        m = out.expect(r" n1 (\w+) -> restarted \(incarnation (\d+) -> (\d+)\)$")
        assert (m.group(1), int(m.group(2)), int(m.group(3))) == ("alive", inc1, inc2)
        # nothing but the restart was reported in between: no suspicion, no death
        assert not [line for line in out.seen if " -> dead" in line or " -> suspect" in line]

        second.send_signal(signal.SIGTERM)  # a graceful stop: a signed leave
        out.expect(r" n1 alive -> left$")
        beat_out.expect(rf"^left \(incarnation {inc2}\)$")
        assert second.wait(timeout=10) == 0
        assert mon.poll() is None
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
            p.wait(timeout=10)
            for f in (p.stdout, p.stderr):
                f.close()
