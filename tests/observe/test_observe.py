"""faultkit.observe: the metrics model, Prometheus over HTTP, OpenTelemetry, event records.

The Prometheus tests scrape a real HTTP endpoint and parse it with prometheus_client's own
parser; the monitor test runs `faultkit monitor --metrics` and `faultkit beat` as real
processes and SIGKILLs the sender.  Waits are bounded polls, never asserted durations.
"""
import json
import logging
import os
import signal
import subprocess
import sys
import time
import urllib.request

import cli_procs
import pytest

import faultkit as fk
from faultkit.observe import JsonLinesFormatter, Registry, log_events, record

WAIT = 20.0  # the longest any poll waits (a bound, never asserted)


def scrape(port):
    from prometheus_client.parser import text_string_to_metric_families

    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
        text = r.read().decode()
    out = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def value(samples, metric, **labels):
    return samples.get((metric, tuple(sorted(labels.items()))))


class Clock:
    def __init__(self):
        self.t = 0.0

    def __call__(self):
        return self.t


def test_breaker_metrics_follow_its_calls_and_trips_over_http():
    pytest.importorskip("prometheus_client")
    from faultkit.observe.prometheus import serve

    clock = Clock()
    br = fk.CircuitBreaker(failure_rate=0.5, minimum_calls=4, window_size=4, clock=clock)
    reg = Registry()
    reg.add(br, "payments")
    server, port = serve(reg, 0)
    try:
        for _ in range(2):
            br.call(lambda: None)
        got = scrape(port)
        assert value(got, "faultkit_breaker_calls_total", name="payments", outcome="success") == 2
        assert value(got, "faultkit_breaker_state", name="payments", state="closed") == 1
        for _ in range(2):
            with pytest.raises(ZeroDivisionError):
                br.call(lambda: 1 / 0)
        assert br.state == "open"
        with pytest.raises(fk.CircuitOpenError):
            br.call(lambda: None)
        got = scrape(port)
        assert value(got, "faultkit_breaker_state", name="payments", state="open") == 1
        assert value(got, "faultkit_breaker_state", name="payments", state="closed") == 0
        assert value(got, "faultkit_breaker_calls_total", name="payments", outcome="failure") == 2
        assert value(got, "faultkit_breaker_rejections_total", name="payments") == 1
        assert value(got, "faultkit_breaker_transitions_total", name="payments") == 1
    finally:
        server.shutdown()


def test_detector_cluster_checkpointer_and_journal_metrics(tmp_path):
    clock = Clock()
    det = fk.TimeoutDetector(timeout=2.0, suspect_after=1.0, clock=clock)
    reg = Registry(clock=clock)
    reg.add(det, "edge")
    for n in ("a", "b"):
        det.add(n)
        det.heartbeat(n)
    clock.t = 1.5
    det.heartbeat("b")
    det.scan()
    got = {m.name: m for m in reg.collect()}
    members = dict((v[1], x) for v, x in got["faultkit_detector_members"].samples)
    assert members == {"alive": 1, "suspect": 1}
    silence = dict((v[1], x) for v, x in got["faultkit_detector_silence_seconds"].samples)
    assert silence == {"a": 1.5, "b": 0.0}
    trans = dict((v[1], x) for v, x in got["faultkit_detector_transitions_total"].samples)
    assert trans["suspect"] == 1

    cluster = fk.Cluster({"n1": "eu/az1/r1/h1", "n2": "eu/az1/r2/h2"})
    reg.add(cluster, "kv")
    cluster.heartbeat_many(["n1", "n2"], [0.0, 0.0])
    got = {m.name: m for m in reg.collect()}
    assert got["faultkit_cluster_routable"].samples == [(("kv",), 2.0)]
    assert got["faultkit_cluster_live_fraction"].samples == [(("kv",), 1.0)]

    ck = fk.Checkpointer(tmp_path / "ck")
    reg.add(ck, "kv")
    info = ck.save({"x": 1})
    ck.recover()
    got = {m.name: m for m in reg.collect()}
    assert got["faultkit_checkpoint_saves_total"].samples == [(("kv",), 1.0)]
    assert got["faultkit_checkpoint_written_bytes_total"].samples == [(("kv",), float(info.size))]
    assert got["faultkit_checkpoint_recoveries_total"].samples == [(("kv",), 1.0)]
    assert got["faultkit_checkpoint_fallbacks_total"].samples == [(("kv",), 0.0)]

    j = fk.Journal(tmp_path / "wal", fsync="always")
    try:
        reg.add(j, "kv")
        for rec in (b"one", b"two"):
            j.append(rec)
        got = {m.name: m for m in reg.collect()}
        assert got["faultkit_journal_next_lsn"].samples == [(("kv",), float(j.next_lsn))]
        assert got["faultkit_journal_durable_lsn"].samples[0][1] >= 1
        framed = sum(fk.recover._journal.frame_size(len(r)) for r in (b"one", b"two"))
        assert got["faultkit_journal_appended_bytes_total"].samples == [(("kv",), float(framed))]
        assert got["faultkit_journal_stored_bytes"].samples == [
            (("kv",), float(sum(size for _, _, size in j.segments())))]
        assert got["faultkit_journal_failed"].samples == [(("kv",), 0.0)]
    finally:
        j.close()


def test_bulkhead_metrics_count_in_flight_and_refusals():
    bh = fk.Bulkhead(1)
    reg = Registry()
    reg.add(bh, "db")
    with bh:
        got = {m.name: dict(m.samples) for m in reg.collect()}
        assert got["faultkit_bulkhead_in_flight"] == {("db",): 1.0}
        with pytest.raises(fk.BulkheadFullError):
            bh.acquire()
    got = {m.name: dict(m.samples) for m in reg.collect()}
    assert got["faultkit_bulkhead_in_flight"] == {("db",): 0.0}
    assert got["faultkit_bulkhead_rejections_total"] == {("db",): 1.0}
    assert got["faultkit_bulkhead_capacity"] == {("db",): 1.0}


def test_a_corrupt_newest_checkpoint_counts_as_a_fallback(tmp_path):
    ck = fk.Checkpointer(tmp_path)
    reg = Registry()
    reg.add(ck, "kv")
    ck.save({"v": 1})
    newest = ck.save({"v": 2})
    path = tmp_path / f"ckpt-{newest.id:012d}.fkc"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.warns(fk.CheckpointWarning):
        assert fk.Checkpointer(tmp_path).recover() == {"v": 1}
    reader = fk.Checkpointer(tmp_path)
    reg.add(reader, "reader")
    with pytest.warns(fk.CheckpointWarning):
        reader.recover()
    got = {m.name: dict(m.samples) for m in reg.collect()}
    assert got["faultkit_checkpoint_fallbacks_total"][("reader",)] == 1


def test_registry_rejects_what_it_cannot_read():
    reg = Registry()
    with pytest.raises(TypeError, match="no metrics for dict objects"):
        reg.add({}, "x")
    br = fk.CircuitBreaker()
    with pytest.raises(ValueError, match="name must be a non-empty str, got ''"):
        reg.add(br, "")
    reg.add(br, "a")
    with pytest.raises(ValueError, match="name 'a' is already registered for a CircuitBreaker"):
        reg.add(fk.CircuitBreaker(), "a")
    with pytest.raises(ValueError, match="per_member_limit must be an int >= 0, got -1"):
        Registry(per_member_limit=-1)
    reg.remove(br)
    assert reg.collect() == []
    with pytest.raises(KeyError, match="is not registered"):
        reg.remove(br)


def test_per_member_gauges_stop_at_the_limit():
    det = fk.PhiAccrualDetector()
    reg = Registry(per_member_limit=2)
    reg.add(det, "big")
    for n in ("a", "b", "c"):
        det.add(n)
        det.heartbeat(n, now=0.0)
    names = {m.name for m in reg.collect()}
    assert "faultkit_detector_members" in names and "faultkit_detector_phi" not in names


def test_opentelemetry_sdk_reads_the_same_figures():
    pytest.importorskip("opentelemetry.sdk")
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader

    from faultkit.observe.otel import instrument

    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    br = fk.CircuitBreaker(failure_rate=0.5, minimum_calls=2, window_size=2)
    reg = Registry()
    reg.add(br, "payments")
    instrument(reg, provider.get_meter("faultkit"), max_age=0.0)
    br.call(lambda: None)
    with pytest.raises(ZeroDivisionError):
        br.call(lambda: 1 / 0)

    def points():
        data = reader.get_metrics_data()
        out = {}
        for rm in data.resource_metrics:
            for sm in rm.scope_metrics:
                for m in sm.metrics:
                    for p in m.data.data_points:
                        out[(m.name, tuple(sorted(p.attributes.items())))] = p.value
        return out

    got = points()
    assert got[("faultkit.breaker.calls", (("name", "payments"), ("outcome", "failure")))] == 1
    assert got[("faultkit.breaker.state", (("name", "payments"), ("state", "open")))] == 1
    provider.shutdown()


def test_events_are_logged_as_structured_records_and_json_lines(caplog):
    det = fk.TimeoutDetector(timeout=1.0)
    log_events(det, "edge")
    det.add("a")
    det.heartbeat("a", now=0.0)
    with caplog.at_level(logging.INFO, logger="faultkit.events"):
        det.scan(now=5.0)
    recs = [r for r in caplog.records if r.name == "faultkit.events"]
    assert [r.getMessage() for r in recs] == ["edge a: joining -> alive", "edge a: alive -> dead"]
    rec = recs[1].faultkit
    assert (rec["source"], rec["member"], rec["old"], rec["new"], rec["at"]) == ("edge", "a", "alive", "dead", 1.0)
    assert abs(rec["wall"] - time.time()) < 3600 and rec["monotonic"] > 0
    line = JsonLinesFormatter().format(recs[1])
    assert json.loads(line) == rec
    with pytest.raises(TypeError, match="int has no add_listener"):
        log_events(3, "x")
    ev = fk.Event("a", "alive", "dead", 1.0)
    assert record("s", ev, wall=1.0, monotonic=2.0) == {
        "source": "s", "member": "a", "old": "alive", "new": "dead", "at": 1.0, "wall": 1.0, "monotonic": 2.0}


@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs POSIX signals")
def test_monitor_serves_metrics_that_turn_dead_when_the_sender_is_killed(tmp_path):
    pytest.importorskip("prometheus_client")
    key = tmp_path / "key"
    key.write_text(os.urandom(32).hex())
    procs = []

    def spawn(*args):
        p = cli_procs.spawn(*args)
        procs.append(p)
        return p

    def line_matching(proc, prefix):
        end = time.monotonic() + WAIT
        while time.monotonic() < end:
            line = proc.stdout.readline()
            if line.startswith(prefix):
                return line.strip()
        raise AssertionError(f"no line starting {prefix!r}")

    def poll(cond):
        end = time.monotonic() + WAIT
        while time.monotonic() < end:
            got = scrape(mport)
            if cond(got):
                return got
            time.sleep(0.05)
        raise AssertionError(f"condition never held; last scrape {got}")

    try:
        mon = spawn("monitor", "--bind", "127.0.0.1:0", "--key-file", str(key), "--timeout", "1.0",
                    "--scan-interval", "0.02", "--metrics", "0", "--json")
        port = int(line_matching(mon, "listening on").split(":")[1].split()[0])
        mport = int(line_matching(mon, "metrics on").rsplit(":", 1)[1].split("/")[0])
        beat = spawn("beat", "--name", "n1", "--target", f"127.0.0.1:{port}", "--key-file", str(key),
                     "--interval", "0.05")
        got = poll(lambda g: value(g, "faultkit_detector_members", name="monitor", state="alive") == 1)
        assert value(got, "faultkit_heartbeat_datagrams_total", name="monitor", fate="packets") >= 1
        beat.send_signal(signal.SIGKILL)
        beat.wait(timeout=10)
        got = poll(lambda g: value(g, "faultkit_detector_members", name="monitor", state="dead") == 1)
        assert value(got, "faultkit_detector_members", name="monitor", state="alive") is None
        assert value(got, "faultkit_detector_transitions_total", name="monitor", state="dead") == 1
        assert value(got, "faultkit_detector_silence_seconds", name="monitor", member="n1") >= 1.0
        dead = json.loads(line_matching(mon, '{"at"'))  # events as JSON lines; the first is the join
        while dead["new"] != "dead":
            dead = json.loads(line_matching(mon, '{"at"'))
        assert dead["member"] == "n1" and dead["old"] == "alive"
    finally:
        for p in procs:
            cli_procs.stop(p)


def test_docs_list_every_metric():
    import pathlib

    from faultkit.observe.metrics import families

    doc = pathlib.Path(__file__).resolve().parents[2] / "docs" / "observe.md"
    if not doc.exists():
        pytest.skip("docs/ is not in this tree")
    text = doc.read_text()
    missing = [n for n, *_ in families() if f"`{n}`" not in text]
    assert not missing, f"docs/observe.md lacks {missing}"


@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs POSIX signals")
def test_live_monitor_in_a_real_terminal_shows_a_killed_sender_turn_dead(tmp_path):
    """`faultkit monitor` in tmux (a real pty: the live table), `faultkit beat` SIGKILLed."""
    import shutil
    import socket

    pytest.importorskip("rich")
    tmux = shutil.which("tmux")
    if tmux is None:
        pytest.skip("tmux is not installed")
    key = tmp_path / "key"
    key.write_text(os.urandom(32).hex())
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    sock = f"fk-test-{os.getpid()}-{port}"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
    cmd = (f"{sys.executable} -m faultkit monitor --bind 127.0.0.1:{port} --key-file {key} "
           f"--timeout 1.0 --scan-interval 0.02")
    tm = [tmux, "-L", sock]

    def screen():
        return subprocess.run([*tm, "capture-pane", "-p", "-t", "mon"], capture_output=True,
                              text=True, timeout=10).stdout

    def until(pred, what):
        end = time.monotonic() + WAIT
        text = ""
        while time.monotonic() < end:
            text = screen()
            if pred(text):
                return text
            time.sleep(0.1)
        raise AssertionError(f"never saw {what}; screen:\n{text}")

    def row(text, member):
        return next((ln for ln in text.splitlines() if f" {member} " in ln and "│" in ln), "")

    beat = None
    subprocess.run([*tm, "new-session", "-d", "-s", "mon", "-x", "160", "-y", "40"], check=True,
                   env=env, timeout=10)
    try:
        subprocess.run([*tm, "send-keys", "-t", "mon", f"export PYTHONPATH={env['PYTHONPATH']}; {cmd}",
                        "Enter"], check=True, timeout=10)
        until(lambda t: f"faultkit monitor on 127.0.0.1:{port}" in t, "the live table's title")
        beat = subprocess.Popen([sys.executable, "-m", "faultkit", "beat", "--name", "n1", "--target",
                                 f"127.0.0.1:{port}", "--key-file", str(key), "--interval", "0.05"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        until(lambda t: "alive" in row(t, "n1"), "n1 alive")
        beat.send_signal(signal.SIGKILL)
        beat.wait(timeout=10)
        text = until(lambda t: "dead" in row(t, "n1"), "n1 dead")
        assert "n1: suspect -> dead" in text or "n1: alive -> dead" in text  # the event list
        subprocess.run([*tm, "send-keys", "-t", "mon", "C-c"], timeout=10)
        until(lambda t: "faultkit monitor on" in t, "the table kept on screen after Ctrl-C")
    finally:
        if beat is not None and beat.poll() is None:
            beat.kill()
            beat.wait(timeout=10)
        subprocess.run([*tm, "kill-server"], capture_output=True, timeout=10)
