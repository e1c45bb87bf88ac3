"""A real etcd for tests: a subprocess on free 127.0.0.1 ports with a temporary
data dir, health-checked, stopped by PID (and restartable on the same dir/ports)."""
import json
import shutil
import signal
import subprocess
import time
import urllib.request

from node_procs import free_tcp_port

ETCD = shutil.which("etcd")


class EtcdServer:
    def __init__(self, data_dir):
        self.data_dir = str(data_dir)
        self.client_port, self.peer_port = free_tcp_port(), free_tcp_port()
        self.endpoint = f"http://127.0.0.1:{self.client_port}"
        self.proc = None

    def start(self, timeout=30.0):
        peer = f"http://127.0.0.1:{self.peer_port}"
        self.proc = subprocess.Popen(
            [ETCD, "--name", "fk", "--data-dir", self.data_dir,
             "--listen-client-urls", self.endpoint, "--advertise-client-urls", self.endpoint,
             "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
             "--initial-cluster", f"fk={peer}", "--log-level", "error"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if self.proc.poll() is not None:
                raise RuntimeError(f"etcd exited: {self.proc.stderr.read()[-2000:]!r}")
            try:
                with urllib.request.urlopen(self.endpoint + "/health", timeout=1) as r:
                    if json.loads(r.read()).get("health") == "true":
                        return self
            except OSError:
                pass
            time.sleep(0.05)
        raise RuntimeError("etcd did not become healthy")

    def stop(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self.proc = None
