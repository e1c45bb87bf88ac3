"""A real S3 server for tests and benchmarks: ``moto[server]`` as a subprocess, and a cuttable TCP proxy.

``MotoServer()`` starts ``python -m moto.server`` on a free 127.0.0.1 port,
waits until it answers HTTP, and ``stop()`` kills it by PID.  ``CutProxy``
forwards TCP to it and can cut every connection once a chosen number of
client-to-server bytes has passed (a real connection reset mid-request).
"""
import asyncio
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid

CREDENTIALS = {"access_key_id": "testing", "secret_access_key": "testing"}
REGION = "us-east-1"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class MotoServer:
    """``moto.server`` on 127.0.0.1:``port`` (a subprocess; ``stop()`` kills it by PID)."""

    def __init__(self, timeout: float = 30.0):
        self.port = free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"moto.server exited with {self.proc.returncode}")
            try:
                urllib.request.urlopen(self.endpoint + "/moto-api/", timeout=1).close()
                return
            except (urllib.error.URLError, ConnectionError, OSError) as e:
                if time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(f"moto.server did not answer on {self.endpoint} within {timeout} s") from e
                time.sleep(0.05)

    def bucket(self, endpoint: str = None) -> str:
        """Create a fresh bucket (an unsigned PUT, which moto accepts); returns its name."""
        name = "fk-" + uuid.uuid4().hex[:16]
        req = urllib.request.Request(f"{endpoint or self.endpoint}/{name}", method="PUT", data=b"")
        urllib.request.urlopen(req, timeout=10).close()
        return name

    def options(self, endpoint: str = None, **extra) -> dict:
        """ObjectStore keyword arguments for this server."""
        return dict(endpoint=endpoint or self.endpoint, region=REGION, config=dict(CREDENTIALS), **extra)

    def env(self) -> dict:
        """Environment variables an S3 client reads to reach this server."""
        return {"AWS_ACCESS_KEY_ID": CREDENTIALS["access_key_id"],
                "AWS_SECRET_ACCESS_KEY": CREDENTIALS["secret_access_key"], "AWS_REGION": REGION,
                "AWS_ENDPOINT_URL": self.endpoint, "AWS_ALLOW_HTTP": "true"}

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=30)


class CutProxy:
    """TCP proxy 127.0.0.1:``port`` -> ``target_port``, run on its own event-loop thread.

    ``cut_after(n)``: once ``n`` more client-to-server bytes have been
    forwarded (over all connections), forward exactly up to that byte, then
    reset every open connection; afterwards new connections are reset at
    once until ``heal()`` (``once=True``: only the connections open at the cut
    die, new ones pass).  ``sent`` counts client-to-server bytes forwarded;
    ``direction="down"`` counts (and cuts) server-to-client bytes instead
    (``received``).
    """

    def __init__(self, target_port: int):
        self.target_port = target_port
        self.port = free_port()
        self.sent = 0
        self.received = 0
        self.cuts = 0  # how many times the connections were cut
        self._down = False
        self._limit = None
        self._dead = False
        self._once = False
        self._writers = set()
        self._loop = asyncio.new_event_loop()
        started = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(started,), daemon=True, name="cut-proxy")
        self._thread.start()
        if not started.wait(10):
            raise RuntimeError("proxy did not start")

    def _run(self, started):
        asyncio.set_event_loop(self._loop)
        self._server = self._loop.run_until_complete(asyncio.start_server(self._handle, "127.0.0.1", self.port))
        started.set()
        self._loop.run_forever()

    def cut_after(self, n: int, *, once: bool = False, direction: str = "up") -> None:
        if direction not in ("up", "down"):
            raise ValueError(f"direction must be 'up' or 'down', got {direction!r}")

        def set_():
            self._down = direction == "down"
            self._limit = (self.received if self._down else self.sent) + n
            self._once = once
        self._loop.call_soon_threadsafe(set_)

    def heal(self) -> None:
        def set_():
            self._limit = None
            self._dead = False
        self._loop.call_soon_threadsafe(set_)

    @property
    def dead(self) -> bool:
        return self._dead

    def _kill_all(self):
        for w in list(self._writers):
            try:
                w.transport.abort()
            except Exception:
                pass
        self._writers.clear()

    async def _handle(self, reader, writer):
        if self._dead:
            writer.transport.abort()
            return
        try:
            ur, uw = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            writer.transport.abort()
            return
        self._writers.update((writer, uw))

        async def up():
            while True:
                data = await reader.read(65536)
                if not data:
                    break
                if self._limit is not None and not self._down and self.sent + len(data) >= self._limit:
                    keep = self._limit - self.sent
                    if keep:
                        uw.write(data[:keep])
                        await uw.drain()
                    self.sent += keep
                    self._limit = None
                    self._dead = not self._once
                    self.cuts += 1
                    self._kill_all()
                    return
                uw.write(data)
                await uw.drain()
                self.sent += len(data)
            uw.write_eof() if uw.can_write_eof() else None

        async def down():
            while True:
                data = await ur.read(65536)
                if not data:
                    break
                if self._limit is not None and self._down and self.received + len(data) >= self._limit:
                    keep = self._limit - self.received
                    if keep:
                        writer.write(data[:keep])
                        await writer.drain()
                    self.received += keep
                    self._limit = None
                    self._dead = not self._once
                    self.cuts += 1
                    self._kill_all()
                    return
                writer.write(data)
                await writer.drain()
                self.received += len(data)
            writer.close()

        try:
            await asyncio.gather(up(), down())
        except (ConnectionError, OSError, asyncio.CancelledError):
            pass
        finally:
            for w in (writer, uw):
                self._writers.discard(w)
                try:
                    w.transport.abort()
                except Exception:
                    pass

    def close(self) -> None:
        async def shutdown():
            self._server.close()
            self._kill_all()
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        asyncio.run_coroutine_threadsafe(shutdown(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()
