"""Node processes for tests: start tests/support/node_runner.py, follow its JSON
lines on a thread, wait (bounded) for a predicate on what it printed."""
import json
import os
import pathlib
import signal
import socket
import subprocess
import sys
import threading
import time

RUNNER = pathlib.Path(__file__).with_name("node_runner.py")
KEY_HEX = "6b" * 32


def free_udp_port(host="127.0.0.1"):
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def free_tcp_port(host="127.0.0.1"):
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


class NodeProc:
    """One node_runner.py child.  ``view``/``routable``: its latest; ``events``: all so far."""

    def __init__(self, name, args, *, prefix=(), env=None, standby=False):
        self.name = name
        cmd = [*prefix, sys.executable, str(RUNNER), name, "--key-hex", KEY_HEX, *args]
        if standby:
            cmd.append("--standby")
        e = dict(os.environ)
        e["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)
        e.update(env or {})
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True, env=e)
        self.lines, self.events = [], []
        self.view, self.routable, self.healthy, self.ready = None, None, None, None
        self.partitioned = None
        self.cond = threading.Condition()
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self):
        for line in self.proc.stdout:
            try:
                msg = json.loads(line)
            except ValueError:
                continue
            with self.cond:
                self.lines.append(msg)
                if "event" in msg:
                    self.events.append(tuple(msg["event"]))
                if "view" in msg:
                    self.view, self.routable, self.healthy = msg["view"], msg["routable"], msg["healthy"]
                    self.partitioned = msg.get("partitioned")
                if "ready" in msg:
                    self.ready = msg
                self.cond.notify_all()
        with self.cond:
            self.cond.notify_all()

    def wait(self, pred, timeout, what=""):
        """Wait until pred(self) is true; AssertionError after ``timeout`` seconds."""
        end = time.monotonic() + timeout
        with self.cond:
            while not pred(self):
                left = end - time.monotonic()
                if left <= 0:
                    err = self.proc.stderr.read() if self.proc.poll() is not None else ""
                    raise AssertionError(f"{self.name}: not {what} within {timeout} s; view {self.view}, "
                                         f"events {self.events[-10:]}, stderr {err[-2000:]}")
                self.cond.wait(min(left, 0.5))
        return time.monotonic()

    def go(self):
        """Start a --standby process."""
        self.proc.stdin.write("go\n")
        self.proc.stdin.flush()

    def signal(self, sig):
        self.proc.send_signal(sig)

    def kill(self):
        if self.proc.poll() is None:
            try:
                self.proc.send_signal(signal.SIGCONT)
            except ProcessLookupError:
                pass
            self.proc.kill()
        self.proc.wait(10)


def converged(expected):
    """Predicate: the process's view equals ``expected`` and its routable set follows it."""
    routable = sorted(n for n, s in expected.items() if s in ("alive", "suspect", "joining"))

    def pred(p):
        return p.view == expected and p.routable == routable
    return pred
