"""The checkpoint codec: user-type registry, and whole-file ``dumps``/``loads``.

The format is specified in docs/FORMAT.md; the encoder and decoder are native
(``faultkit._codec``).  Decoding never runs user code except the
``from_state`` hooks registered here.
"""
from __future__ import annotations

import threading
from typing import Any, Callable, Optional

from faultkit.recover import _codec
from faultkit.errors import CorruptCheckpointError

__all__ = ["register_type", "unregister_type", "dumps", "loads", "FORMAT_VERSION", "BLOB_THRESHOLD"]

FORMAT_VERSION: tuple = tuple(_codec.FORMAT_VERSION)
#: bytes-likes of at least this many bytes are stored as their own 64-byte
#: aligned, chunk-hashed section (like arrays) instead of inline in the tree:
#: they then take part in incremental checkpoints.  64 KiB: below that the
#: section's 64-byte records and padding cost more than they save.
BLOB_THRESHOLD = 64 * 1024

_BUILTIN = (type(None), bool, int, float, str, bytes, bytearray, memoryview, list, tuple, dict, set, frozenset)
_lock = threading.Lock()
_by_class: dict = {}  # cls -> (name, to_state)
_by_name: dict = {}  # name -> from_state


def register_type(cls: type, to_state: Callable[[Any], Any], from_state: Callable[[Any], Any], *,
                  name: Optional[str] = None) -> None:
    """Let checkpoints hold instances of ``cls`` (exact type, not subclasses).

    ``to_state(obj)`` returns a supported state tree for ``obj``;
    ``from_state(state)`` rebuilds the object from it when loading -- the only
    user code decoding ever runs.  ``name`` (default ``module.qualname`` of
    ``cls``) is what the file records, so keep it stable across versions.
    Re-registering a class or a name replaces the earlier registration.
    """
    if not isinstance(cls, type):
        raise TypeError(f"cls must be a class, got {cls!r}")
    if cls in _BUILTIN or (cls.__module__ == "numpy" and cls.__name__ == "ndarray"):
        raise ValueError(f"{cls.__name__} is supported natively and cannot be registered")
    if not callable(to_state) or not callable(from_state):
        raise TypeError("to_state and from_state must be callable")
    if name is None:
        name = f"{cls.__module__}.{cls.__qualname__}"
    if not isinstance(name, str) or not name:
        raise TypeError(f"name must be a non-empty str, got {name!r}")
    with _lock:
        old = _by_class.pop(cls, None)
        if old is not None:
            _by_name.pop(old[0], None)
        _by_class[cls] = (name, to_state)
        _by_name[name] = from_state


def unregister_type(cls: type) -> None:
    """Forget the registration of ``cls`` (``KeyError`` if it has none)."""
    with _lock:
        name, _ = _by_class.pop(cls)
        _by_name.pop(name, None)


def encode(state: Any, *, snapshot: bool = False) -> "_codec.Encoded":
    """Encode ``state`` (native); ``snapshot`` copies mutable blob buffers."""
    return _codec.encode(state, _by_class, blob_threshold=BLOB_THRESHOLD, snapshot=snapshot)


def encode_meta(meta: Any) -> "_codec.Encoded":
    """Encode a META tree (no arrays; bytes stay inline)."""
    return _codec.encode(meta, _by_class, blob_threshold=1 << 62, allow_blobs=False)


def decode_types() -> dict:
    """The name -> from_state registry the decoder consults."""
    return _by_name


def dumps(state: Any, *, meta: Any = None) -> bytes:
    """The complete checkpoint file image of ``state`` as bytes (no refs).

    ``meta`` (optional, any supported tree without arrays) is stored in the
    META section.  Raises ``TypeError`` naming the path of an unsupported
    object, e.g. ``state['users'][3]``.
    """
    return _codec.dumps(encode(state), encode_meta({"meta": meta}))


def loads(data, *, max_size: Optional[int] = None) -> Any:
    """Decode a checkpoint file image made by :func:`dumps` (bytes-like).

    Every checksum is verified.  Arrays are views of ``data`` (read-only if
    ``data`` is).  Raises ``CorruptCheckpointError`` for anything malformed,
    and for files above ``max_size`` bytes (default: no limit).
    """
    view = memoryview(data)
    if max_size is not None and view.nbytes > max_size:
        raise CorruptCheckpointError(f"checkpoint of {view.nbytes} bytes exceeds max_size={max_size}")
    layout = _codec.parse(data)
    if layout.refs:
        raise CorruptCheckpointError("an incremental checkpoint needs its base files: load it with a Checkpointer")
    return _codec.read_state(data, layout, [], _by_name, verify=True)
