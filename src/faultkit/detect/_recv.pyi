"""Native heartbeat receive path (private; see faultkit.detect.transport)."""
from typing import Optional

HAVE_RECVMMSG: bool
VERDICTS: tuple[str, ...]

class Receiver:
    """One receiver thread's filter: framing, per-source budgets, the MAC (OpenSSL)."""

    def __init__(self, key: bytes, max_packet: int, *, source_rate: float = 1000.0,
                 source_burst: float = 256.0, unknown_rate: float = 200000.0,
                 unknown_burst: float = 20000.0, fail_limit: int = 8, penalty: float = 2.0,
                 max_sources: int = 4096, batch: int = 64) -> None: ...
    def process(self, datagrams: list[bytes], now: float, *, address: bytes = b"",
                port: int = 0) -> list[tuple[str, int, int, float]]:
        """Filter in-memory datagrams from one source at monotonic time ``now``; the accepted
        entries as (name, raw 64-bit incarnation field, sequence, send time)."""
    def run(self, fd: int, wake_fd: int, timeout: float,
            max_datagrams: int = 4096) -> Optional[list[tuple[str, int, int, float]]]:
        """Drain socket ``fd`` (GIL released); None once ``wake_fd`` is readable."""
    def counts(self) -> dict[str, int]:
        """Datagrams by verdict since construction, plus socket errors."""
    @property
    def known_good(self) -> int: ...
    @property
    def tracked(self) -> int: ...
    def reset_sources(self) -> None:
        """Forget every source."""

def send_many(fd: int, datagrams: list[bytes], total: int) -> int:
    """Send ``total`` datagrams round-robin over connected socket ``fd``; how many were sent."""
