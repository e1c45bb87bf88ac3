"""Detect: turn silence into states, and carry heartbeats between hosts.

- :mod:`.detectors`: :class:`TimeoutDetector` and :class:`PhiAccrualDetector`,
  policies over one native heartbeat table (``_table``, over
  ``csrc/faultkit/detect/heartbeat.h``).
- :mod:`.transport`: :class:`~.transport.HeartbeatSender` and
  :class:`~.transport.HeartbeatReceiver`, heartbeats over UDP signed with
  HMAC-SHA256.  Imported on first use (it needs asyncio), so
  ``import faultkit`` stays cheap.
"""
from faultkit.detect.detectors import (
    ALIVE,
    DEAD,
    JOINING,
    LEAVING,
    LEFT,
    RESTARTED,
    SUSPECT,
    Event,
    PhiAccrualDetector,
    TimeoutDetector,
)

__all__ = ["Event", "TimeoutDetector", "PhiAccrualDetector", "ALIVE", "SUSPECT", "DEAD",
           "JOINING", "LEAVING", "LEFT", "RESTARTED"]

_TRANSPORT_NAMES = frozenset(
    ("HeartbeatSender", "HeartbeatReceiver", "encode_packet", "decode_packet",
     "load_key", "parse_address", "PacketError", "Beat")
)


def __getattr__(name: str):  # PEP 562: the transport loads asyncio only when asked for
    if name in _TRANSPORT_NAMES:
        from faultkit.detect import transport

        return getattr(transport, name)
    raise AttributeError(f"module 'faultkit.detect' has no attribute {name!r}")
