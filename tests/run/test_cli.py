"""The faultkit command runs as a real process and does what it prints."""
import subprocess
import sys

import faultkit as fk
from faultkit.cli import main


def run(*args):
    return subprocess.run([sys.executable, "-m", "faultkit", *args],
                          capture_output=True, text=True, timeout=120)


def test_tour_runs_and_prints_real_hashes():
    r = run("tour", "--keys", "1000")
    assert r.returncode == 0, r.stderr
    assert f"{fk.hash64('user:42'):#018x}" in r.stdout
    assert "1,000 distinct values" in r.stdout


def test_bad_arguments_exit_2_with_a_message():
    r = run("tour", "--keys", "-5")
    assert r.returncode == 2 and "must be positive, got -5" in r.stderr
    r = run("nosuch")
    assert r.returncode == 2 and "invalid choice" in r.stderr


def test_bench_without_directory_is_a_clean_error(tmp_path, capsys):
    assert main(["bench", "--pytest", str(tmp_path / "missing")]) == 2
    assert "no benchmark directory" in capsys.readouterr().err


def test_tour_tours_the_detectors():
    r = run("tour", "--keys", "1000")
    assert r.returncode == 0, r.stderr
    assert "db-1 alive -> suspect at t=2" in r.stdout
    assert "db-1 dead -> alive at t=6 (its heartbeat)" in r.stdout
    assert "phi(n1, t=23.523) = 8.000" in r.stdout


def test_tour_tours_recover():
    r = run("tour", "--keys", "1000")
    assert r.returncode == 0, r.stderr
    assert "recover() fell back to step 1; weights equal to save #1: True" in r.stdout
    assert "skipping checkpoint <dir>/ckpt-000000000002.fkc" in r.stdout
    assert "TypeError: state['users'][3]" in r.stdout
    assert "writeable=False" in r.stdout


def test_monitor_and_beat_reject_bad_keys_and_addresses(tmp_path):
    short = tmp_path / "short"
    short.write_text("tiny")
    r = run("monitor", "--bind", "127.0.0.1:0", "--key-file", str(short))
    assert r.returncode == 2 and "at least 16 bytes" in r.stderr
    r = run("beat", "--name", "n1", "--target", "127.0.0.1:7946", "--key-file", str(tmp_path / "none"))
    assert r.returncode == 2 and "No such file" in r.stderr
    key = tmp_path / "key"
    key.write_text("0123456789abcdef0123456789abcdef")
    r = run("beat", "--name", "n1", "--target", "no-port", "--key-file", str(key))
    assert r.returncode == 2 and "host:port" in r.stderr
    r = run("monitor", "--key-file", str(key), "--timeout", "-1")
    assert r.returncode == 2 and "must be a finite number > 0" in r.stderr
