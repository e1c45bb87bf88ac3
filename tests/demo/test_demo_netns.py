"""``faultkit demo --netns``: each rack on a host of its own (a network namespace the demo
makes), one rack cut off by a real network partition while it keeps running, and healed.
Nothing acknowledged is lost, every fault is detected and routed around, and the
namespaces are gone afterwards."""
import json
import os
import subprocess
import sys

import pytest

from faultkit.demo.hosts import netns_unusable

REASON = netns_unusable()
pytestmark = [pytest.mark.skipif(REASON is not None, reason=REASON or ""), pytest.mark.timeout(240),
              pytest.mark.slow]


def test_a_partitioned_rack_loses_no_acknowledged_write_and_the_namespaces_go():
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
    p = subprocess.Popen([sys.executable, "-m", "faultkit", "demo", "--json", "--netns", "--duration", "14",
                          "--rate", "200", "--faults", "partition@4:r1,kill@9:w0"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        out, err = p.communicate(timeout=200)
    finally:
        if p.poll() is None:
            p.kill()
            p.communicate()
    assert p.returncode == 0, err[-3000:]
    rep = json.loads(out)
    assert rep["lost_acknowledged_writes"] == 0 and rep["stale_reads"] == 0 and rep["wrong_values"] == 0
    assert rep["options"]["netns"] is True
    part, kill = rep["faults"]
    assert (part["kind"], part["target"], part["workers"]) == ("partition", "r1", ["w2", "w3"])
    assert part["detected_by"] is not None and part["routable_after_s"] is not None, part
    assert "node dead" in part["signals"] and "node alive" in part["signals"], part   # cut, then healed
    assert part["recovered"] == []                   # nobody restarted: the rack kept running
    assert kill["detected_by"] is not None and kill["routable_after_s"] is not None, kill
    # every acknowledged write is on all three replicas after the catch-up
    assert set(rep["audit"]["replicas_holding_each_acknowledged_write"]) == {"3", "2", "1", "0"}
    assert rep["audit"]["replicas_holding_each_acknowledged_write"]["3"] == rep["keys_with_acknowledged_writes"]
    assert rep["leftover_processes"] == [] and rep["unexpected_exits"] == []
    left = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert f"fk{p.pid % 100000}" not in left, left
