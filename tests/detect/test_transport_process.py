"""Two real processes on loopback: `faultkit monitor` watches `faultkit beat`.

No assertion reads the test machine's wall clock for a duration: every wait is for a line
(bounded by WAIT, generous for a loaded 2-core machine), and what is asserted is the order
of events and the detector's own arithmetic on the times it prints.  Those times are
time.monotonic() readings of the monitor, comparable with this process's (one system
clock), so causality can be checked too: an event the monitor printed happened before this
process read it, and a heartbeat sent after SIGCONT arrived after SIGCONT was sent.  The
children are killed in a finally.
"""
import os
import queue
import re
import signal
import threading
import time

import pytest
from cli_procs import spawn, stop

pytestmark = pytest.mark.skipif(not hasattr(signal, "SIGSTOP"), reason="needs POSIX signals")

INTERVAL, SUSPECT, TIMEOUT = 0.05, 1.0, 2.0
WAIT = 20.0   # longest we wait for any one line (a bound on waiting, never asserted)
MS = 1e-3     # the monitor prints times rounded to the millisecond
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
        out.expect(r" n1 joining -> alive$")

        def transitions(since):
            """(old, new, at) of every n1 state change in the lines read, from index since."""
            return [(m.group(2), m.group(3), float(m.group(1)))
                    for m in map(EVENT.match, out.seen[since:]) if m]

        def suspected_then_dead(since):
            """The crossing time of the last suspicion, after checking the transitions since
            `since` are suspicions (a heartbeat delayed by load may clear one) ending in death."""
            got = transitions(since)
            assert got and got[-1][:2] == ("suspect", "dead") and got[-2][:2] == ("alive", "suspect"), got
            assert {(o, n) for o, n, _ in got[:-1]} <= {("alive", "suspect"), ("suspect", "alive")}, got
            return got[-2][2]

        # SIGSTOP: suspect, then dead, both counted from the last heartbeat before the stop
        mark = len(out.seen)
        beat.send_signal(signal.SIGSTOP)
        dead = out.event("suspect", "dead", after=0.0)
        read_dead = time.monotonic()
        suspect = suspected_then_dead(mark)
        assert dead - suspect == pytest.approx(TIMEOUT - SUSPECT, abs=2 * MS)  # one last heartbeat
        assert dead <= read_dead + MS  # printed after it happened

        # SIGCONT: the next heartbeat brings it back; it was sent after SIGCONT was
        mark = len(out.seen)
        t_cont = time.monotonic()
        beat.send_signal(signal.SIGCONT)
        back = out.event("dead", "alive", after=0.0)
        assert [(o, n) for o, n, _ in transitions(mark)] == [("dead", "alive")]
        assert dead <= t_cont + MS and t_cont <= back + MS

        # SIGKILL: suspect then dead again, TIMEOUT after the last heartbeat
        mark = len(out.seen)
        beat.send_signal(signal.SIGKILL)
        beat.wait(timeout=10)
        dead = out.event("suspect", "dead", after=0.0)
        read_dead = time.monotonic()
        suspect = suspected_then_dead(mark)
        assert dead - suspect == pytest.approx(TIMEOUT - SUSPECT, abs=2 * MS)
        assert back <= suspect - SUSPECT + MS  # the last heartbeat came after the one that revived it
        assert dead <= read_dead + MS
        assert mon.poll() is None, mon.stderr.read()
    finally:
        for p in procs:
            stop(p)
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
            stop(p)
            for f in (p.stdout, p.stderr):
                f.close()
