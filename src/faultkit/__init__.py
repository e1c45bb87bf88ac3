"""faultkit: detect, contain, recover from and balance around failures, at C speed.

The public API is re-exported here; each pillar is a package
(``faultkit.detect``, ``faultkit.contain``, ``faultkit.recover``,
``faultkit.balance``), with :class:`Cluster` and :class:`Node` above them.
``faultkit.ring`` and ``faultkit.transport`` are the old paths of
``faultkit.balance`` and ``faultkit.detect.transport``, kept as aliases.

Names load on first use (PEP 562), so ``import faultkit`` costs what the
errors module costs; ``fk.HashRing`` imports the balance pillar (and numpy)
the first time it is read, ``fk.Node`` the runtime (and asyncio).
"""
import importlib as _importlib
from typing import TYPE_CHECKING

from faultkit.errors import (
    BulkheadFullError,
    CheckpointLockedError,
    CheckpointWarning,
    CircuitOpenError,
    CorruptCheckpointError,
    CorruptJournalError,
    EmptyRingError,
    FaultkitError,
    IsolationRefusedError,
    JournalLockedError,
    JournalWarning,
    MembershipError,
    NoCheckpointError,
    NoLiveNodeError,
    StoreError,
)

# The one place the version is written: pyproject.toml reads it from here (dynamic = ["version"]).
__version__ = "0.1.0"

# Every other public name, and the module that defines it.
_LAZY = {
    # faultkit._common.xxh3
    "hash64": "faultkit._common.xxh3",
    "hash64_many": "faultkit._common.xxh3",
    # faultkit.detect
    "Event": "faultkit.detect",
    "PhiAccrualDetector": "faultkit.detect",
    "TimeoutDetector": "faultkit.detect",
    # faultkit.balance
    "BoundedLoad": "faultkit.balance",
    "HashRing": "faultkit.balance",
    "Maglev": "faultkit.balance",
    "Rendezvous": "faultkit.balance",
    "jump_hash": "faultkit.balance",
    "moved_fraction": "faultkit.balance",
    # faultkit.contain
    "Bulkhead": "faultkit.contain",
    "CircuitBreaker": "faultkit.contain",
    "FailureDomains": "faultkit.contain",
    "IsolationPolicy": "faultkit.contain",
    "OutlierDetector": "faultkit.contain",
    # faultkit.recover
    "Checkpointer": "faultkit.recover",
    "CheckpointInfo": "faultkit.recover",
    "Journal": "faultkit.recover",
    "LocalStore": "faultkit.recover",
    "ObjectStore": "faultkit.recover",
    "Store": "faultkit.recover",
    "register_type": "faultkit.recover",
    # faultkit.cluster
    "Cluster": "faultkit.cluster",
    # faultkit.run
    "Node": "faultkit.run",
    "StaticMembership": "faultkit.run",
    "EtcdMembership": "faultkit.run",
    "Member": "faultkit.run",
    "Membership": "faultkit.run",
}
_SUBMODULES = frozenset(("balance", "bench", "cli", "cluster", "contain", "demo", "detect", "errors", "recover",
                         "ring", "run", "transport"))

__all__ = [
    "__version__",
    # hashing
    "hash64",
    "hash64_many",
    # detect
    "TimeoutDetector",
    "PhiAccrualDetector",
    "Event",
    # balance
    "HashRing",
    "Rendezvous",
    "Maglev",
    "jump_hash",
    "BoundedLoad",
    "moved_fraction",
    # contain
    "FailureDomains",
    "IsolationPolicy",
    "CircuitBreaker",
    "Bulkhead",
    "OutlierDetector",
    # errors
    "FaultkitError",
    "EmptyRingError",
    "NoLiveNodeError",
    "NoCheckpointError",
    "CorruptCheckpointError",
    "CheckpointLockedError",
    "CircuitOpenError",
    "BulkheadFullError",
    "IsolationRefusedError",
    "CheckpointWarning",
    "StoreError",
    "CorruptJournalError",
    "JournalLockedError",
    "JournalWarning",
    "MembershipError",
    # recover
    "Checkpointer",
    "CheckpointInfo",
    "Journal",
    "Store",
    "LocalStore",
    "ObjectStore",
    "register_type",
    # together
    "Cluster",
    # run (loaded on first use: it needs asyncio)
    "Node",
    "StaticMembership",
    "EtcdMembership",
    "Membership",
    "Member",
]


def __getattr__(name: str):
    module = _LAZY.get(name)
    if module is not None:
        value = getattr(_importlib.import_module(module), name)
    elif name in _SUBMODULES:
        value = _importlib.import_module(f"faultkit.{name}")
    else:
        raise AttributeError(f"module 'faultkit' has no attribute {name!r}")
    globals()[name] = value  # the next read is a plain attribute
    return value


def __dir__() -> list:
    return sorted(set(globals()) | set(__all__) | _SUBMODULES)


if TYPE_CHECKING:  # what type checkers and IDEs see: the names, eagerly
    from faultkit._common.xxh3 import hash64, hash64_many
    from faultkit.detect import Event, PhiAccrualDetector, TimeoutDetector
    from faultkit.balance import BoundedLoad, HashRing, Maglev, Rendezvous, jump_hash, moved_fraction
    from faultkit.contain import Bulkhead, CircuitBreaker, FailureDomains, IsolationPolicy, OutlierDetector
    from faultkit.recover import CheckpointInfo, Checkpointer, Journal, LocalStore, ObjectStore, Store, register_type
    from faultkit.cluster import Cluster
    from faultkit.run import EtcdMembership, Member, Membership, Node, StaticMembership
