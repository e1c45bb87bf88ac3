"""``faultkit demo`` on real processes: it reads back every acknowledged write, detects every
fault, and leaves no process behind; plus the pieces its correctness rests on."""
import json
import os
import subprocess
import sys

import pytest

from faultkit.demo import Options
from faultkit.demo.faults import parse_faults

pytestmark = pytest.mark.timeout(240)


def run_demo(*args, env=None, timeout=180):
    e = dict(os.environ)
    e["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)
    e.update(env or {})
    return subprocess.run([sys.executable, "-m", "faultkit", "demo", "--json", *args],
                          capture_output=True, text=True, timeout=timeout, env=e)


def check_report(r, *, min_acked):
    assert r.returncode == 0, r.stderr[-3000:]
    rep = json.loads(r.stdout)
    assert rep["lost_acknowledged_writes"] == 0, rep["lost_keys"]
    assert rep["acknowledged_writes"] >= min_acked, rep["phases"]
    # A read never went back behind an acknowledged write, and never saw a
    # value that was not written with the version it came with.
    assert rep["stale_reads"] == 0 and rep["wrong_values"] == 0, rep["phases"]
    kinds = [f["kind"] for f in rep["faults"]]
    assert sorted(kinds) == sorted(["kill", "rack", "pause", "fast", "stop", "damage"])
    for f in rep["faults"]:
        assert f["detected_by"] is not None, f
        assert f["routable_after_s"] is not None, f     # every worker came back and caught up
    fast = next(f for f in rep["faults"] if f["kind"] == "fast")
    assert "node restarted" in fast["signals"] or "reply incarnation" in fast["signals"], fast
    # A damaged disk: the restart skipped what failed its checksum and pulled from its peers.
    damage = next(f for f in rep["faults"] if f["kind"] == "damage")
    assert [d.split()[0] for d in damage["damaged"]] in (["checkpoint", "journal"], ["journal"]), damage
    (rec,) = damage["recovered"]
    assert any(w.startswith("journal segment") for w in rec["recovered"]["damage"]), rec
    assert rec["synced"]["unreached"] == 0, rec
    assert rep["leftover_processes"] == []
    assert rep["unexpected_exits"] == []      # no worker crashed: every exit was a fault's
    pids = [pid for ps in rep["worker_pids"].values() for pid in ps]
    assert len(pids) >= 6 + 2 + 1 + 1 + 1 + 1  # 6 first lives, 2 rack restarts, kill, fast, stop, damage
    for pid in pids:                         # every worker process is gone (none is our child now)
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                assert b"faultkit.demo.worker" not in f.read(), pid
        except FileNotFoundError:
            pass
    return rep


def test_demo_loses_no_acknowledged_write_and_reaps_every_process():
    r = run_demo("--workers", "6", "--duration", "20", "--rate", "200", "--seed", "3")
    rep = check_report(r, min_acked=600)
    assert rep["read_back"]["last_acknowledged"] + rep["read_back"]["newer_unacknowledged"] \
        == rep["keys_with_acknowledged_writes"]


@pytest.mark.slow
def test_demo_with_etcd_membership_and_s3_checkpoints(tmp_path):
    from etcd_server import ETCD, EtcdServer
    from s3_server import CREDENTIALS, REGION, MotoServer
    if ETCD is None:
        pytest.skip("etcd is not installed (Debian: apt-get install etcd-server)")
    etcd = EtcdServer(tmp_path / "etcd").start()
    try:
        moto = MotoServer()
        try:
            bucket = moto.bucket()
            r = run_demo("--duration", "20", "--rate", "200", "--membership", f"etcd://127.0.0.1:{etcd.client_port}",
                         "--store", f"s3://{bucket}/demo", "--s3-endpoint", moto.endpoint,
                         env={"AWS_ACCESS_KEY_ID": CREDENTIALS["access_key_id"],
                              "AWS_SECRET_ACCESS_KEY": CREDENTIALS["secret_access_key"], "AWS_REGION": REGION})
            rep = check_report(r, min_acked=600)
            assert rep["options"]["membership"].startswith("etcd://")
            stop = next(f for f in rep["faults"] if f["kind"] == "stop")
            assert "node removed" in stop["signals"]   # the lease was revoked: etcd saw it leave
        finally:
            moto.stop()
    finally:
        etcd.stop()


def test_bad_options_are_refused_with_the_reason():
    r = subprocess.run([sys.executable, "-m", "faultkit", "demo", "--racks", "2"], capture_output=True, text=True,
                       timeout=60, env=dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p)))
    assert r.returncode == 2 and "--racks must be an integer in [3, 16], got 2" in r.stderr
    for kw, msg in [(dict(workers=2), r"--workers must be an integer in \[3, 64\], got 2"),
                    (dict(duration=-1), r"--duration must be a number in \[2, 3600\], got -1"),
                    (dict(rate=float("nan")), r"--rate must be a number"),
                    (dict(detector="gossip"), r"--detector must be 'phi' or 'timeout', got 'gossip'"),
                    (dict(membership="http://x:1"), r"--membership must be etcd://HOST:PORT"),
                    (dict(store="/tmp/x"), r"--store must be s3://BUCKET"),
                    (dict(s3_endpoint="http://x:9"), r"--s3-endpoint needs --store"),
                    (dict(plot="out.jpg"), r"--plot must name a .png file"),
                    (dict(faults="explode@3"), r"unknown kind 'explode'"),
                    (dict(faults="kill@99"), r"inside the load's duration"),
                    (dict(faults="kill@5:w9"), r"'w9' is not a worker"),
                    (dict(faults="rack@5:w1"), r"'w1' is not a rack"),
                    (dict(faults="partition@5:w1", netns=True), r"fault partition@5: 'w1' is not a rack"),
                    (dict(faults="partition@5:r1"), r"fault partition needs --netns"),
                    (dict(netns=True, membership="etcd://127.0.0.1:2379"), r"--netns runs on the static"),
                    (dict(faults="kill@5,pause@6"), r"too close"),
                    (dict(faults="kill"), r"expected KIND@SECONDS")]:
        with pytest.raises(ValueError, match=msg):
            Options(**kw).check()
    with pytest.raises(TypeError, match="netns must be a bool, got 'yes'"):
        Options(netns="yes").check()


def test_the_cli_help_names_every_fault_kind():
    from faultkit.cli import build_parser
    from faultkit.demo.faults import KINDS

    sub = next(a for a in build_parser()._actions if a.dest == "command" or getattr(a, "choices", None))
    helptext = " ".join(sub.choices["demo"].format_help().split())
    assert all(k in helptext for k in KINDS), helptext


def test_fault_schedule_default_none_and_explicit():
    kw = dict(workers=[f"w{i}" for i in range(6)], racks=["r0", "r1", "r2"], seed=1,
              rack_of=lambda n: f"r{int(n[1:]) // 2}")
    assert parse_faults("none", duration=30, **kw) == []
    d = parse_faults("default", duration=30, **kw)
    assert [f.kind for f in d] == ["kill", "rack", "pause", "fast", "stop", "damage"]
    rack = d[1]
    assert rack.target in kw["racks"] and len(rack.workers) == 2
    assert all(f.workers == [f.target] for f in d if f.kind != "rack")
    # consecutive faults hit different racks when the target is drawn
    racks = [f.target if f.kind == "rack" else kw["rack_of"](f.target) for f in d]
    assert all(a != b for a, b in zip(racks, racks[1:]))
    e = parse_faults("pause@9:w5,kill@2:w0", duration=20, **kw)
    assert [(f.kind, f.at, f.target) for f in e] == [("kill", 2.0, "w0"), ("pause", 9.0, "w5")]
    with pytest.raises(ValueError, match="too close"):
        parse_faults("default", duration=12, **kw)


@pytest.mark.slow
def test_a_fault_that_ends_after_the_load_still_brings_its_worker_back():
    """A kill 1 s before the load ends restarts its worker 1 s after it (its fault task is
    awaited, not cancelled with the load): the worker catches up and is routable again."""
    r = run_demo("--duration", "8", "--rate", "100", "--faults", "pause@3:w1,kill@7:w3")
    assert r.returncode == 0, r.stderr[-3000:]
    rep = json.loads(r.stdout)
    assert rep["lost_acknowledged_writes"] == 0
    for f in rep["faults"]:
        assert f["routable_after_s"] is not None, f


@pytest.mark.slow
def test_unsafe_demo_loses_writes_and_says_so():
    """The check is not vacuous: with --unsafe (acknowledged from memory, no catch-up, no
    record of missed writes, no hold) restarts lose acknowledged writes, the read-back
    counts them and the exit status is 1."""
    r = run_demo("--unsafe", "--duration", "16", "--faults", "fast@5:w1,kill@10:w3")
    assert r.returncode == 1, r.stderr[-3000:]
    rep = json.loads(r.stdout)
    assert rep["lost_acknowledged_writes"] > 0 and len(rep["lost_keys"]) > 0
    assert rep["leftover_processes"] == []


def _children(pid):
    out = []
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
                with open(f"/proc/{d}/cmdline", "rb") as f:
                    cmd = f.read()
            except (OSError, ValueError, IndexError):
                continue
            if ppid == pid and b"faultkit.demo.worker" in cmd:
                out.append(int(d))
    return out


def test_ctrl_c_kills_every_worker():
    import signal
    import time
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
    p = subprocess.Popen([sys.executable, "-m", "faultkit", "demo", "--duration", "20", "--faults", "none"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                         preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        deadline = time.monotonic() + 60
        line = ""
        while "cluster up" not in line and time.monotonic() < deadline:   # event-driven: its own report
            line = p.stdout.readline()
            assert line or p.poll() is None, p.stderr.read()
        kids = _children(p.pid)
        assert len(kids) == 6
        p.send_signal(signal.SIGINT)
        _, err = p.communicate(timeout=60)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    assert p.returncode == 130 and "interrupted; every worker process was killed" in err
    for pid in kids:
        assert not os.path.exists(f"/proc/{pid}"), pid
