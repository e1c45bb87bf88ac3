"""How much of the key space a routing change moved, estimated from fixed probe keys.

Consistent hashing promises that a change moves few keys (about ``1/n`` for
one node of ``n``); :class:`MoveMeter` checks that promise on a live service.
It looks up a fixed set of ``probes`` 64-bit key hashes before and after each
change (one vectorised ``get_many``) and reports the fraction whose node
changed.  The probes are a golden-ratio sequence over the 64-bit hash space
(``i * 0x9E3779B97F4A7C15 mod 2**64``, Knuth's multiplicative spacing; its top
32 bits for a ketama ring), which covers the ring more evenly than random keys; the estimate's standard error is
at most ``sqrt(f * (1 - f) / probes)`` for a moved fraction ``f`` (0.0016 for
``f = 0.01`` with the default 4,096 probes).

A key counts as moved when its node changed, when its node was removed, and
when no node serves it before or after (every node down, or none in the
balancer) but one did on the other side.  Nodes are compared by name, so a membership change that renumbers
the nodes is measured correctly.
"""
from __future__ import annotations

from typing import Any, Optional, Sequence

import numpy as np

from faultkit.errors import EmptyRingError, NoLiveNodeError

__all__ = ["MoveMeter", "DEFAULT_PROBES"]

#: Probe keys per lookup: 4,096 costs one ``get_many`` of 4,096 hashes per change
#: (about 20 us on a 100-node HashRing, 50 us on Maglev, 3 ms on a 100-node Rendezvous).
DEFAULT_PROBES = 4096

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_NONE = -1      # no live node served the key
_GONE = -2      # the key's node was removed


class MoveMeter:
    """Measures the fraction of probe keys each routing change of ``balancer`` moves.

    ``balancer`` has ``get_many(uint64 array)`` returning node indices without
    side effects (HashRing, Maglev, Rendezvous); ``probes`` (default 4,096) is
    the number of probe keys, at least 1.  Call :meth:`measure` after every
    change with the balancer's current node list; the first call only records.
    """

    __slots__ = ("balancer", "probes", "_keys", "_owners", "_nodes")

    def __init__(self, balancer: Any, *, probes: int = DEFAULT_PROBES) -> None:
        if isinstance(probes, bool) or not isinstance(probes, int) or probes < 1:
            raise ValueError(f"probes must be an int >= 1, got {probes!r}")
        if not callable(getattr(balancer, "get_many", None)):
            raise TypeError(f"balancer needs get_many; {type(balancer).__name__} has none")
        self.balancer = balancer
        self.probes = probes
        self._keys = np.arange(probes, dtype=np.uint64) * _GOLDEN  # wraps mod 2**64
        if getattr(balancer, "compat", None) is not None:  # a ketama ring hashes keys to 32 bits
            self._keys >>= np.uint64(32)
        self._owners: Optional[np.ndarray] = None
        self._nodes: Sequence[Any] = ()

    def _lookup(self) -> np.ndarray:
        try:
            return np.asarray(self.balancer.get_many(self._keys), dtype=np.int64)
        except (NoLiveNodeError, EmptyRingError):  # every node down, or none at all
            return np.full(self.probes, _NONE, dtype=np.int64)

    @property
    def started(self) -> bool:
        """Whether :meth:`measure` has recorded a starting point."""
        return self._owners is not None

    def measure(self, nodes: Sequence[Any]) -> Optional[float]:
        """The fraction (0 to 1) of probe keys whose node changed since the last call;
        ``None`` on the first call.  ``nodes``: the balancer's node list now (index i is
        node i of ``get_many``'s answers)."""
        owners = self._lookup()
        before, old_nodes = self._owners, self._nodes
        self._owners, self._nodes = owners, list(nodes)
        if before is None:
            return None
        if list(old_nodes) != self._nodes:
            # Renumber the old answers into the new node list; the extra last entry
            # keeps "no live node" (-1 indexes it) apart from "node removed".
            where = {n: i for i, n in enumerate(self._nodes)}
            table = np.array([where.get(n, _GONE) for n in old_nodes] + [_NONE], dtype=np.int64)
            before = table[before]
        return float(np.count_nonzero(owners != before)) / self.probes
