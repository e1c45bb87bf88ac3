"""Nodes on several hosts: each in a network namespace this test creates, joined
by veth pairs to a bridge in a hub namespace (10.213.7.0/24, inside our own
namespaces only).  One Node is SIGKILLed, one is partitioned away (its veth's
hub end set down) and healed: the minority does not evict the majority, and
everyone converges after the heal.  Namespaces are deleted in a finally."""
import json
import os
import signal
import subprocess

import pytest
from node_procs import NodeProc, converged

INTERVAL = 0.2
WAIT = 30.0
TAG = f"fk{os.getpid() % 100000}"


def _ip(*args, check=True):
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=check)


def _netns_usable():
    if not hasattr(signal, "SIGSTOP"):
        return "needs POSIX"
    try:
        r = _ip("netns", "add", f"{TAG}probe", check=False)
    except FileNotFoundError:
        return "iproute2 is not installed"
    if r.returncode != 0:
        return f"`ip netns add` refused: {r.stderr.strip()}"
    _ip("netns", "del", f"{TAG}probe", check=False)
    return None


REASON = _netns_usable()
pytestmark = pytest.mark.skipif(REASON is not None, reason=REASON or "")


@pytest.fixture
def hosts():
    names = [f"h{i}" for i in range(1, 6)]
    hub = f"{TAG}hub"
    created = []
    try:
        _ip("netns", "add", hub)
        created.append(hub)
        _ip("-n", hub, "link", "add", "br0", "type", "bridge")
        _ip("-n", hub, "link", "set", "br0", "up")
        addrs = {}
        for i, n in enumerate(names, 1):
            ns = f"{TAG}{n}"
            _ip("netns", "add", ns)
            created.append(ns)
            # the pair is made inside the hub, then one end moves into the host's namespace
            _ip("-n", hub, "link", "add", f"v{n}", "type", "veth", "peer", "name", "eth0")
            _ip("-n", hub, "link", "set", "eth0", "netns", ns)
            _ip("-n", hub, "link", "set", f"v{n}", "master", "br0")
            _ip("-n", hub, "link", "set", f"v{n}", "up")
            _ip("-n", ns, "addr", "add", f"10.213.7.{i}/24", "dev", "eth0")
            _ip("-n", ns, "link", "set", "eth0", "up")
            _ip("-n", ns, "link", "set", "lo", "up")
            addrs[n] = f"10.213.7.{i}:7946"
        yield names, addrs, hub
    finally:
        for ns in reversed(created):
            _ip("netns", "del", ns, check=False)


def test_hosts_partition_heal_and_sigkill(hosts):
    names, addrs, hub = hosts
    args = ["--members", json.dumps(addrs), "--interval", str(INTERVAL)]
    procs = {n: NodeProc(n, args, prefix=["ip", "netns", "exec", f"{TAG}{n}"]) for n in names}
    try:
        alive = {n: "alive" for n in names}
        for p in procs.values():
            p.wait(converged(alive), WAIT, "all alive")

        procs["h1"].proc.kill()
        truth = dict(alive, h1="dead")
        for n in names[1:]:
            procs[n].wait(converged(truth), WAIT, "h1 dead")

        # Partition h5 away.
        _ip("-n", hub, "link", "set", "vh5", "down")
        for n in ("h2", "h3", "h4"):
            procs[n].wait(converged(dict(truth, h5="dead")), WAIT, "h5 dead")
        procs["h5"].wait(lambda p: p.partitioned is True and p.routable == ["h5"], WAIT, "h5 cut off")
        # The minority evicts nobody: every member is still in its view, and its
        # verdicts never reach (or move) the majority.
        assert sorted(procs["h5"].view) == names
        assert not any(e[2] == "removed" for p in procs.values() for e in p.events)
        for n in ("h2", "h3", "h4"):
            assert procs[n].view["h2"] == procs[n].view["h3"] == procs[n].view["h4"] == "alive"
            assert procs[n].partitioned is False

        # Heal: everyone converges, h5 included.
        _ip("-n", hub, "link", "set", "vh5", "up")
        for n in names[1:]:
            procs[n].wait(converged(truth), WAIT, "healed")
        assert procs["h5"].partitioned is False
    finally:
        for p in procs.values():
            p.kill()
