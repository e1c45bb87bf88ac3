"""A writer SIGKILLed at random instants never leaves an unrecoverable or torn checkpoint."""
import os
import random
import select
import signal
import subprocess
import sys
import textwrap
import time
import warnings

import pytest

import faultkit as fk
from recover_util import crash_state, exact_equal

SUPPORT = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "support")
CHILD = textwrap.dedent("""
    import sys
    sys.path.insert(0, sys.argv[3])
    import faultkit as fk
    from recover_util import crash_state
    ck = fk.Checkpointer(sys.argv[1], retain=3, fsync=True, full_every=4, chunk_size=65536)
    n = int(sys.argv[2])
    print("ready", flush=True)
    while True:
        ck.save(crash_state(n), incremental=n % 3 != 0, meta={"n": n})
        print(n, flush=True)  # printed only once the save has committed
        n += 1
""")


def read_lines(proc, deadline):
    """Lines the child printed so far, waiting until `deadline` for at least one."""
    lines = []
    fd = proc.stdout.fileno()
    while True:
        timeout = max(0.0, deadline - time.monotonic())
        ready, _, _ = select.select([fd], [], [], timeout)
        if not ready:
            return lines
        chunk = os.read(fd, 65536)
        if not chunk:
            return lines
        lines += chunk.decode().split()
        deadline = time.monotonic()  # got something: drain without waiting


@pytest.mark.slow
def test_sigkill_at_random_instants_always_recovers_a_committed_checkpoint(tmp_path):
    rng = random.Random(1234)
    committed = -1
    next_n = 0
    recoveries = 0
    for _ in range(14):
        proc = subprocess.Popen([sys.executable, "-c", CHILD, str(tmp_path), str(next_n), SUPPORT],
                                stdout=subprocess.PIPE)
        try:
            got = []
            while "ready" not in got:
                more = read_lines(proc, time.monotonic() + 30)
                assert more or proc.poll() is None, "child died before it was ready"
                got += more
            # Let it commit a random number of saves, then kill it at a random instant.
            want = rng.randint(0, 3)
            while sum(1 for x in got if x != "ready") < want:
                got += read_lines(proc, time.monotonic() + 30)
            time.sleep(rng.uniform(0, 0.03))
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
        got += read_lines(proc, time.monotonic())
        done = [int(x) for x in got if x != "ready"]
        if done:
            committed = max(committed, max(done))
        if committed < 0:
            continue
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # a committed checkpoint is never corrupt
            state = fk.Checkpointer(tmp_path).recover()
        n = state["n"]
        assert n >= committed, f"recovered step {n}, but step {committed} had committed"
        exact_equal(crash_state(n), state)
        recoveries += 1
        next_n = n + 1
    assert recoveries >= 10
    # no temporary files survive the next writer's start
    ck = fk.Checkpointer(tmp_path)
    ck.save(crash_state(0))
    ck.close()
    assert not [f for f in os.listdir(tmp_path) if ".tmp-" in f]
