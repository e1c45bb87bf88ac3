"""The faultkit exception tree: one base class, narrow subclasses.

Every error faultkit raises on purpose is a ``FaultkitError`` or one of the
builtin exceptions a Python programmer expects for the case (``TypeError``
for a wrong type, ``ValueError`` for a bad value, ``KeyError`` for an unknown
name).  Subclasses that are also "lookup" or "value" errors inherit from that
builtin too, so callers can catch either.
"""

__all__ = [
    "FaultkitError",
    "EmptyRingError",
    "NoLiveNodeError",
    "NoCheckpointError",
    "CorruptCheckpointError",
    "CheckpointLockedError",
    "CheckpointWarning",
    "StoreError",
    "CorruptJournalError",
    "JournalLockedError",
    "JournalWarning",
    "CircuitOpenError",
    "BulkheadFullError",
    "IsolationRefusedError",
    "MembershipError",
]


class FaultkitError(Exception):
    """Base class of every faultkit-specific error."""


# Balance
class EmptyRingError(FaultkitError, LookupError):
    """A lookup on a balancer that has no nodes."""


class NoLiveNodeError(FaultkitError, LookupError):
    """A lookup on a balancer whose nodes are all marked down."""


# Recover
class NoCheckpointError(FaultkitError, LookupError):
    """Recovery found no valid checkpoint."""


class CorruptCheckpointError(FaultkitError, ValueError):
    """A checkpoint failed its checksum, framing or version checks."""


class CheckpointLockedError(FaultkitError):
    """Another writer holds the checkpoint directory's lock."""


class CheckpointWarning(FaultkitError, UserWarning):
    """Recovery skipped a corrupt, torn or unreadable checkpoint (the message names it and why)."""


class StoreError(FaultkitError, OSError):
    """A checkpoint store failed for good: retries exhausted on a transport fault, or a non-retryable
    error from the object store (the message names the object; ``__cause__`` is the underlying error)."""


class CorruptJournalError(FaultkitError, ValueError):
    """A journal record or segment that had been durable is damaged, or records are missing.

    ``segment`` is the path of the segment file (or None) and ``lsn`` the LSN
    of the first record that could not be read (or None).
    """

    def __init__(self, message: str, *, segment=None, lsn=None):
        super().__init__(message)
        self.segment = segment
        self.lsn = lsn


class JournalLockedError(CheckpointLockedError):
    """Another writer holds the journal directory's lock."""


class JournalWarning(FaultkitError, UserWarning):
    """Replay or recovery skipped damaged journal records (the message names the segment and LSN)."""


# Contain
class CircuitOpenError(FaultkitError):
    """A call was refused because its circuit breaker is open."""


class BulkheadFullError(FaultkitError):
    """A call was refused because its bulkhead is at capacity."""


class IsolationRefusedError(FaultkitError):
    """Isolating a domain would exceed the cap on how much may be isolated."""


# Run
class MembershipError(FaultkitError):
    """A membership backend (etcd) could not be reached or answered with an error."""
