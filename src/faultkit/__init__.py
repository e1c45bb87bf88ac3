"""faultkit: detect, contain, recover from and balance around failures, at C speed.

The public API is re-exported here; each pillar is a package
(``faultkit.detect``, ``faultkit.contain``, ``faultkit.recover``,
``faultkit.balance``), with :class:`Cluster` above them.  ``faultkit.ring``
and ``faultkit.transport`` are the old paths of ``faultkit.balance`` and
``faultkit.detect.transport``, kept as aliases.
"""

from faultkit._common.xxh3 import hash64, hash64_many
from faultkit.detect import Event, PhiAccrualDetector, TimeoutDetector

# Balance
from faultkit.balance import BoundedLoad, HashRing, Maglev, Rendezvous, jump_hash, moved_fraction

# Contain
from faultkit.contain import Bulkhead, CircuitBreaker, FailureDomains, IsolationPolicy, OutlierDetector
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
from faultkit.recover import (
    Checkpointer,
    CheckpointInfo,
    Journal,
    LocalStore,
    ObjectStore,
    Store,
    register_type,
)

# Together (imports the pillars, so it comes last)
from faultkit.cluster import Cluster

# The one place the version is written: pyproject.toml reads it from here (dynamic = ["version"]).
__version__ = "0.1.0"

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
]

_RUN_NAMES = frozenset(("Node", "StaticMembership", "EtcdMembership", "Member", "Membership"))


def __getattr__(name: str):  # PEP 562: faultkit.run loads asyncio only when asked for
    if name in _RUN_NAMES:
        from faultkit import run

        return getattr(run, name)
    raise AttributeError(f"module 'faultkit' has no attribute {name!r}")
