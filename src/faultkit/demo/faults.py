"""The fault schedule and the process supervisor: starts, kills, pauses, restarts and finally
reaps every worker process."""
from __future__ import annotations

import asyncio
import os
import random
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

from faultkit.recover._journal import SEGMENT_HEADER_SIZE
from faultkit.recover.checkpointer import _FILE as _CHECKPOINT
from faultkit.recover.journal import _SEGMENT

#: The kinds of fault, and what each does to its target.
KINDS = {
    "kill": "SIGKILL one worker; the supervisor restarts it",
    "rack": "SIGKILL every worker of one rack; the supervisor restarts them",
    "pause": "SIGSTOP one worker, SIGCONT it later (a gray failure: alive but silent)",
    "fast": "SIGKILL one worker and start its warm spare at once, faster than the detector",
    "stop": "stop one worker gracefully (SIGTERM: it leaves); the supervisor starts it again",
    "partition": "cut one rack's network link for a while (--netns only): its workers keep running, "
                 "unheard, and miss the writes meanwhile",
    "damage": "SIGKILL one worker and damage its disk (a byte flipped in its newest checkpoint and one "
               "in its journal's records); it restarts from the checkpoint before, skipping the damaged "
               "records, and takes back what they held from its peers",
}
#: Seconds a killed or stopped worker stays down before its restart, and a
#: paused one stays stopped: longer than detection (about 1 s at the demo's
#: 0.2 s heartbeats), so the outage is seen and routed around first.
DOWN_FOR = {"kill": 2.0, "rack": 2.5, "pause": 2.0, "stop": 1.5, "fast": 0.0, "damage": 2.0, "partition": 3.0}
#: The default schedule, as fractions of the load's duration.
DEFAULT_AT = (("kill", 0.12), ("rack", 0.28), ("pause", 0.46), ("fast", 0.62), ("stop", 0.76),
              ("damage", 0.9))
_SPEC = re.compile(r"^(?P<kind>[a-z]+)@(?P<at>[0-9]+(?:\.[0-9]*)?)s?(?::(?P<target>[A-Za-z0-9_-]+))?$")


@dataclass
class Fault:
    """One fault: ``kind`` at ``at`` seconds into the load, on ``target`` (a worker, or a
    rack for ``rack`` and ``partition``).  The rest is filled in as it happens (monotonic times)."""

    kind: str
    at: float
    target: Optional[str] = None
    workers: list = field(default_factory=list)
    injected: Optional[float] = None
    restarted: Optional[float] = None
    signals: list = field(default_factory=list)   # (t, worker, what)
    routable: Optional[float] = None
    keys_moved: int = 0
    inc_before: dict = field(default_factory=dict)  # worker -> incarnation before the fault
    damaged: list = field(default_factory=list)     # what a damage fault changed on disk


def parse_faults(spec: str, *, duration: float, workers: list, racks: list, seed: int,
                 rack_of: Callable[[str], str]) -> list:
    """The fault list for ``--faults``: ``"default"``, ``"none"``, or a comma list of
    ``KIND@SECONDS[:TARGET]`` (e.g. ``kill@3:w1,rack@8:r2,pause@14``); ValueError naming
    the bad part.  Targets left out are drawn with ``seed``, each in a rack the previous
    fault did not hit where possible."""
    if not isinstance(spec, str):
        raise TypeError(f"faults must be a str, not {type(spec).__name__}")
    spec = spec.strip()
    if spec == "none":
        return []
    if spec == "default":
        items = [(k, round(f * duration, 2), None) for k, f in DEFAULT_AT]
    else:
        items = []
        for part in spec.split(","):
            m = _SPEC.match(part.strip())
            if not m:
                raise ValueError(f"fault {part.strip()!r}: expected KIND@SECONDS[:TARGET] with KIND one of "
                                 f"{', '.join(KINDS)} (or the presets 'default', 'none')")
            kind, at, target = m["kind"], float(m["at"]), m["target"]
            if kind not in KINDS:
                raise ValueError(f"fault {part.strip()!r}: unknown kind {kind!r}; one of {', '.join(KINDS)}")
            items.append((kind, at, target))
    rng = random.Random(seed)
    out: list = []
    last_rack: Optional[str] = None
    for kind, at, target in sorted(items, key=lambda x: x[1]):
        if not 0 < at < duration:
            raise ValueError(f"fault {kind}@{at:g}: the time must be inside the load's duration (0, {duration:g}) s")
        if target is None:
            if kind in ("rack", "partition"):
                pool = racks
            else:
                pool = [w for w in workers if rack_of(w) != last_rack] or workers
            target = rng.choice([t for t in pool if t != last_rack] or pool)
        if kind in ("rack", "partition"):
            if target not in racks:
                raise ValueError(f"fault {kind}@{at:g}: {target!r} is not a rack (racks: {', '.join(racks)})")
            hit = [w for w in workers if rack_of(w) == target]
            last_rack = target
        else:
            if target not in workers:
                raise ValueError(f"fault {kind}@{at:g}: {target!r} is not a worker (workers: {', '.join(workers)})")
            hit = [target]
            last_rack = rack_of(target)
        out.append(Fault(kind, at, target, hit))
    for a, b in zip(out, out[1:]):
        if b.at - a.at < DOWN_FOR[a.kind] + 1.0:
            raise ValueError(f"faults {a.kind}@{a.at:g} and {b.kind}@{b.at:g} are too close: leave at least "
                             f"{DOWN_FOR[a.kind] + 1.0:g} s for the first to end")
    return out


def flip_byte(path: str, lo: int, hi: int, rng: random.Random) -> int:
    """Invert one byte of ``path`` at a random offset in ``[lo, hi)``; the offset."""
    off = rng.randrange(lo, hi)
    with open(path, "r+b") as f:
        f.seek(off)
        b = f.read(1)
        f.seek(off)
        f.write(bytes([b[0] ^ 0xFF]))
        f.flush()
        os.fsync(f.fileno())
    return off


def damage_disk(data: str, rng: random.Random) -> list:
    """Damage a stopped worker's data directory ``data`` as failing media would: one byte
    flipped inside its newest local checkpoint (the middle half: data, not the footer) and
    one in its newest journal segment: inside its records (durable ones: the segment is
    preallocated with zeros past them), or in its header when it holds none yet (a
    restart starts a new segment).  Returns what was changed."""
    done = []
    ckpt = os.path.join(data, "ckpt")
    names = sorted((n for n in os.listdir(ckpt) if _CHECKPOINT.match(n)),
                   key=lambda n: int(_CHECKPOINT.match(n).group(1))) if os.path.isdir(ckpt) else []
    if names:
        path = os.path.join(ckpt, names[-1])
        size = os.path.getsize(path)
        off = flip_byte(path, size // 4, max(size // 4 + 1, 3 * size // 4), rng)
        done.append(f"checkpoint {names[-1]}: byte {off}")
    wal = os.path.join(data, "wal")
    header = SEGMENT_HEADER_SIZE
    names = sorted(n for n in os.listdir(wal) if _SEGMENT.match(n))  # fixed-width LSNs
    if names:
        path = os.path.join(wal, names[-1])
        with open(path, "rb") as f:
            used = len(f.read().rstrip(b"\0"))
        lo, hi = (header + (used - header) // 4, used) if used > header + 64 else (0, header)
        done.append(f"journal {names[-1]}: byte {flip_byte(path, lo, hi, rng)}")
    return done


class Supervisor:
    """Starts worker processes (each in its own session), signals them, restarts them,
    and reaps all of them on every exit path.

    Every PID ever started is kept in ``pids``; :meth:`reap_all` kills each
    one still running by PID (SIGKILL to its process group) and waits for it;
    ``leftover`` lists any that would not die.
    """

    def __init__(self, config_path: str, log_dir: str, env: Optional[dict] = None, *,
                 hosts: Any = None, rack_of: Optional[Callable[[str], str]] = None) -> None:
        self.config_path = config_path
        self.log_dir = log_dir
        self.env = env
        self.hosts = hosts            # demo.hosts.Hosts with --netns: workers start on their rack's host
        self.rack_of = rack_of
        self.procs: dict = {}          # worker -> current Popen
        self.spares: dict = {}         # worker -> warm spare Popen (standby)
        self.pids: dict = {}           # worker -> every PID it had
        self.all: list = []            # every Popen, to reap
        self.leftover: list = []
        self.down: set = set()         # workers a fault took down on purpose, until their restart
        self.unexpected: list = []     # (monotonic time, worker, exit status, end of its log)

    def _popen(self, name: str, standby: bool) -> subprocess.Popen:
        log = open(os.path.join(self.log_dir, f"{name}.log"), "ab")
        cmd = [sys.executable, "-m", "faultkit.demo.worker", name, self.config_path]
        if self.hosts is not None:
            cmd = self.hosts.exec_prefix(self.rack_of(name)) + cmd  # exec: the PID stays the worker's
        if standby:
            cmd.append("--standby")
        try:
            p = subprocess.Popen(cmd, stdin=subprocess.PIPE if standby else subprocess.DEVNULL,
                                 stdout=subprocess.PIPE if standby else subprocess.DEVNULL, stderr=log,
                                 start_new_session=True, env=self.env)
        finally:
            log.close()
        self.all.append(p)
        self.pids.setdefault(name, []).append(p.pid)
        return p

    def data_dir(self, name: str) -> str:
        """Worker ``name``'s data directory (journal, local checkpoints)."""
        return os.path.join(self.log_dir, name)

    def start(self, name: str) -> subprocess.Popen:
        p = self.procs[name] = self._popen(name, False)
        return p

    async def prepare_spare(self, name: str, timeout: float = 30.0) -> None:
        """Start a warm spare for ``name``: imported and waiting for :meth:`promote_spare`."""
        p = self.spares[name] = self._popen(name, True)
        loop = asyncio.get_running_loop()
        line = await asyncio.wait_for(loop.run_in_executor(None, p.stdout.readline), timeout)
        if line.strip() != b"standby":
            raise RuntimeError(f"spare of {name} did not start (exit {p.poll()})")

    def promote_spare(self, name: str) -> None:
        p = self.spares.pop(name)
        p.stdin.write(b"go\n")
        p.stdin.flush()
        self.procs[name] = p

    def signal(self, name: str, sig: int) -> None:
        p = self.procs[name]
        if p.poll() is None:
            os.kill(p.pid, sig)

    async def wait_exit(self, name: str, timeout: float = 10.0) -> Optional[int]:
        """Wait (bounded) for the current process of ``name`` to exit; its status or None."""
        p = self.procs[name]
        end = time.monotonic() + timeout
        while p.poll() is None and time.monotonic() < end:
            await asyncio.sleep(0.01)
        return p.poll()

    def check(self) -> list:
        """Restart every worker that exited when no fault took it down (and record it in
        ``unexpected``: a crash is a finding, not a fault of the schedule); the restarted."""
        out = []
        for name, p in list(self.procs.items()):
            if name not in self.down and p.poll() is not None:
                self.unexpected.append((time.monotonic(), name, p.returncode, self.log_tail(name, 600)))
                self.start(name)
                out.append(name)
        return out

    def log_tail(self, name: str, size: int = 1500) -> str:
        """The end of worker ``name``'s log (its stderr)."""
        try:
            with open(os.path.join(self.log_dir, f"{name}.log"), "rb") as f:
                f.seek(0, os.SEEK_END)
                f.seek(max(0, f.tell() - size))
                return f.read().decode("utf-8", "replace")
        except OSError as e:
            return f"(no log: {e})"

    def running(self) -> list:
        return [p.pid for p in self.all if p.poll() is None]

    def reap_all(self, grace: float = 0.0) -> list:
        """Kill every process still running by PID (its whole process group) and wait for it."""
        if grace:
            for p in self.all:
                if p.poll() is None:
                    try:
                        os.kill(p.pid, signal.SIGCONT)
                        os.kill(p.pid, signal.SIGTERM)
                    except ProcessLookupError:
                        pass
            end = time.monotonic() + grace
            while time.monotonic() < end and any(p.poll() is None for p in self.all):
                time.sleep(0.02)
        for p in self.all:
            if p.poll() is None:
                try:
                    os.killpg(p.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                except PermissionError:  # pragma: no cover - the group is gone, the pid reused
                    pass
        leftover = []
        for p in self.all:
            try:
                p.wait(5.0)
            except subprocess.TimeoutExpired:
                leftover.append(p.pid)
            for f in (p.stdin, p.stdout):
                if f is not None:
                    try:
                        f.close()
                    except OSError:
                        pass
        self.leftover = leftover
        return leftover


async def inject(fault: Fault, sup: Supervisor, t0: float, *, before: Callable[[Fault], Any] = lambda f: None,
                 clock: Callable[[], float] = time.monotonic) -> None:
    """Run one fault at its time: ``before(fault)``, inject it, wait, bring the workers back."""
    if fault.kind == "fast":
        # The spare must be warm before the kill: start it a little ahead.
        await asyncio.sleep(max(0.0, t0 + fault.at - 2.0 - clock()))
        await sup.prepare_spare(fault.target)
    await asyncio.sleep(max(0.0, t0 + fault.at - clock()))
    before(fault)
    fault.injected = clock()
    if fault.kind == "partition":
        sup.hosts.cut(fault.target)
        await asyncio.sleep(max(0.0, fault.injected + DOWN_FOR[fault.kind] - clock()))
        sup.hosts.heal(fault.target)
        fault.restarted = clock()
        return
    if fault.kind != "pause":
        sup.down.update(fault.workers)
    if fault.kind in ("kill", "rack", "fast", "damage"):
        for w in fault.workers:
            sup.signal(w, signal.SIGKILL)
        for w in fault.workers:
            await sup.wait_exit(w)
        if fault.kind == "damage":
            rng = random.Random(f"{fault.target}@{fault.at}")
            fault.damaged = damage_disk(sup.data_dir(fault.target), rng)
        if fault.kind == "fast":
            sup.promote_spare(fault.target)
            sup.down.difference_update(fault.workers)
            fault.restarted = clock()
            return
    elif fault.kind == "pause":
        sup.signal(fault.target, signal.SIGSTOP)
    elif fault.kind == "stop":
        sup.signal(fault.target, signal.SIGTERM)
        await sup.wait_exit(fault.target)
    await asyncio.sleep(max(0.0, fault.injected + DOWN_FOR[fault.kind] - clock()))
    if fault.kind == "pause":
        sup.signal(fault.target, signal.SIGCONT)
    else:
        for w in fault.workers:
            sup.start(w)
        sup.down.difference_update(fault.workers)
    fault.restarted = clock()


def detection(fault: Fault) -> Optional[tuple]:
    """The first signal after the injection that says something is wrong with a target:
    ``(t, worker, what)``, or None."""
    bad = ("node dead", "node suspect", "node left", "node restarted", "breaker open", "ejected",
           "isolated", "reply incarnation", "node removed")
    for t, w, what in fault.signals:
        if what in bad:
            return t, w, what
    return None
