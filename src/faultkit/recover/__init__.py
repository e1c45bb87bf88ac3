"""Recover: durable, checksummed, atomic checkpoints with a native codec.

``Checkpointer`` saves state trees (builtins and numpy arrays) to a directory
so that a crash at any instant leaves the previous checkpoint intact, detects
any corruption, never runs code when loading, maps large arrays without
copying and can write only what changed.  ``Journal`` is the write-ahead log beside it:
records with LSNs, durable when appended, replayed after the checkpoint that
covers them (``Checkpointer.recover_with``).  Formats: docs/FORMAT.md.
"""
from faultkit.recover.checkpointer import CheckpointInfo, Checkpointer
from faultkit.recover.journal import Journal
from faultkit.recover.codec import FORMAT_VERSION, dumps, loads, register_type, unregister_type
from faultkit.recover.store import LocalStore, Store, StoreLock
from faultkit.recover.objstore import ObjectStore  # obstore is imported on first use

__all__ = [
    "Checkpointer",
    "CheckpointInfo",
    "Journal",
    "Store",
    "StoreLock",
    "LocalStore",
    "ObjectStore",
    "register_type",
    "unregister_type",
    "dumps",
    "loads",
    "FORMAT_VERSION",
]
