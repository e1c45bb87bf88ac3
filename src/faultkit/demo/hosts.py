"""Racks as hosts (``faultkit demo --netns``): a network namespace per rack and one for the
front end, joined by veth pairs to a bridge in a hub namespace, so a rack can be cut off.

Linux only, as root (``ip netns``, from iproute2).  Everything is created in
namespaces of the demo's own: nothing on the host's interfaces or routes
changes.  Addresses are ``10.214.0.0/24`` inside them: rack ``r<k>`` is
``10.214.0.<k + 1>``, the front end ``10.214.0.254``.  Every worker of a rack
shares its rack's namespace (one host, several processes, distinct ports).

The demo process itself moves into the front end's namespace for the run
(:meth:`Hosts.enter`, ``setns(2)`` on its main thread, before any other thread
or socket exists) and back at the end; workers are started through ``ip netns
exec``, which keeps their PID, so the supervisor still signals them by PID.
A partition (:meth:`Hosts.cut`) sets the hub's end of a rack's veth down:
the rack's processes keep running, and neither side hears the other until
:meth:`Hosts.heal`.
"""
from __future__ import annotations

import ctypes
import os
import shutil
import subprocess
from typing import Optional

__all__ = ["Hosts", "netns_unusable", "SUBNET"]

SUBNET = "10.214.0"
FRONT_HOST = f"{SUBNET}.254"
_CLONE_NEWNET = 0x40000000


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=check, timeout=30)


def netns_unusable() -> Optional[str]:
    """Why ``--netns`` cannot run here (None when it can): not Linux, not root, no ``ip``,
    or the kernel refuses a namespace."""
    if not os.path.exists("/proc/self/ns/net"):
        return "network namespaces need Linux"
    if os.geteuid() != 0:
        return "creating network namespaces needs root"
    if shutil.which("ip") is None:
        return "the ip command (iproute2) is not installed"
    probe = f"fkprobe{os.getpid()}"
    r = _ip("netns", "add", probe, check=False)
    if r.returncode != 0:
        return f"`ip netns add` refused: {r.stderr.strip()}"
    _ip("netns", "del", probe, check=False)
    return None


def _setns(path: str) -> None:
    """Move the calling thread into the network namespace at ``path`` (setns(2))."""
    libc = ctypes.CDLL(None, use_errno=True)
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        if libc.setns(fd, _CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"setns({path}): {os.strerror(err)}")
    finally:
        os.close(fd)


class Hosts:
    """The namespaces of one demo run: ``racks`` rack hosts and a front-end host.

    ``tag`` (default from the PID) keeps runs apart.  :meth:`create` builds them
    (undoing what it made if a step fails); :meth:`destroy` kills any process
    still inside and deletes them, and is safe to call twice."""

    def __init__(self, racks: list, *, tag: Optional[str] = None) -> None:
        self.racks = list(racks)
        self.tag = tag or f"fk{os.getpid() % 100000}"
        self.hub = f"{self.tag}hub"
        self.created: list = []
        self._home: Optional[int] = None

    def ns(self, rack: str) -> str:
        """The namespace name of ``rack`` (or ``"front"``)."""
        return f"{self.tag}{rack}"

    def host(self, rack: str) -> str:
        """The IPv4 address of ``rack``'s host (``"front"``: the front end's)."""
        if rack == "front":
            return FRONT_HOST
        return f"{SUBNET}.{self.racks.index(rack) + 1}"

    def create(self) -> "Hosts":
        try:
            _ip("netns", "add", self.hub)
            self.created.append(self.hub)
            _ip("-n", self.hub, "link", "add", "br0", "type", "bridge")
            _ip("-n", self.hub, "link", "set", "br0", "up")
            for rack in self.racks + ["front"]:
                ns = self.ns(rack)
                _ip("netns", "add", ns)
                self.created.append(ns)
                # The pair is made in the hub; one end then moves into the host's namespace.
                _ip("-n", self.hub, "link", "add", f"v{rack}", "type", "veth", "peer", "name", "eth0")
                _ip("-n", self.hub, "link", "set", "eth0", "netns", ns)
                _ip("-n", self.hub, "link", "set", f"v{rack}", "master", "br0")
                _ip("-n", self.hub, "link", "set", f"v{rack}", "up")
                _ip("-n", ns, "addr", "add", f"{self.host(rack)}/24", "dev", "eth0")
                _ip("-n", ns, "link", "set", "eth0", "up")
                _ip("-n", ns, "link", "set", "lo", "up")
        except (OSError, subprocess.SubprocessError) as e:
            self.destroy()
            detail = getattr(e, "stderr", "") or e
            raise RuntimeError(f"could not build the demo's network namespaces: {detail}") from None
        return self

    def exec_prefix(self, rack: str) -> list:
        """The command prefix that runs a program on ``rack``'s host."""
        return ["ip", "netns", "exec", self.ns(rack)]

    def enter(self) -> None:
        """Move this process's main thread into the front end's namespace (call before
        any other thread or socket exists); :meth:`leave` moves it back."""
        self._home = os.open("/proc/self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
        _setns(f"/var/run/netns/{self.ns('front')}")

    def leave(self) -> None:
        if self._home is None:
            return
        try:
            _setns(f"/proc/self/fd/{self._home}")
        finally:
            os.close(self._home)
            self._home = None

    def cut(self, rack: str) -> None:
        """Partition ``rack`` from everyone (its link to the hub goes down)."""
        _ip("-n", self.hub, "link", "set", f"v{rack}", "down")

    def heal(self, rack: str) -> None:
        _ip("-n", self.hub, "link", "set", f"v{rack}", "up")

    def destroy(self) -> None:
        """Kill every process still in the namespaces (SIGKILL by PID) and delete them."""
        for ns in reversed(self.created):
            r = _ip("netns", "pids", ns, check=False)
            for pid in r.stdout.split():
                try:
                    os.kill(int(pid), 9)
                except (ProcessLookupError, ValueError):
                    pass
            _ip("netns", "del", ns, check=False)
        self.created = []
