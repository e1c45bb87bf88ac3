"""Bounded loads and movement: plain Python over any balancer.

:class:`BoundedLoad` caps every node's share of assignments at ``factor``
times the average (Mirrokni, Thorup and Zadimoghaddam, SODA 2018);
:func:`moved_fraction` measures how many keys a membership change moved.
"""
import math as _math
import numbers as _numbers
import threading as _threading

import numpy as _np
from typing import Any as _Any, Dict as _Dict, Hashable as _Hashable

from faultkit.errors import NoLiveNodeError as _NoLiveNodeError

# Mirrokni et al.'s c = 1 + eps: with eps = 0.25 no node holds more than 1.25x
# the average, and an insertion or deletion moves O(1/eps^2) keys in expectation.
DEFAULT_BALANCE_FACTOR = 1.25

__all__ = ["BoundedLoad", "moved_fraction", "DEFAULT_BALANCE_FACTOR"]


class BoundedLoad:
    """Consistent hashing with bounded loads (Mirrokni, Thorup, Zadimoghaddam,
    "Consistent Hashing with Bounded Loads", SODA 2018).

    ``BoundedLoad(balancer, factor=1.25)`` over a :class:`HashRing` or
    :class:`Rendezvous` (anything with ``get_n`` and the failover contract).
    :meth:`acquire` assigns a key to the first live node in its preference
    order (ring order from its hash, or rendezvous ranking) whose load is
    below the capacity ``ceil(factor * m / n)``, where ``m`` counts the
    assignments including this one and ``n`` the live nodes; so right after
    every acquire no live node holds more than ``ceil(factor * average)``.
    :meth:`release` ends an assignment.  Loads count in-flight work, so a
    release can leave a node above the bound for the smaller total until its
    own work drains (the paper's re-insertions are not forced on callers).
    Thread-safe: one lock guards the load table.
    """

    def __init__(self, balancer: _Any, factor: float = DEFAULT_BALANCE_FACTOR) -> None:
        if not hasattr(balancer, "get_n") or not hasattr(balancer, "alive_mask"):
            raise TypeError(
                f"balancer must have get_n and alive_mask (HashRing, Rendezvous), "
                f"not {type(balancer).__name__}")
        if isinstance(factor, bool) or not isinstance(factor, _numbers.Real):
            raise TypeError(f"factor must be a number, not {type(factor).__name__}")
        if not _math.isfinite(factor) or factor <= 1.0:
            raise ValueError(f"factor must be finite and > 1, got {factor!r}")
        self.balancer = balancer
        self.factor = float(factor)
        self._loads: _Dict[_Hashable, int] = {}
        self._total = 0
        self._lock = _threading.Lock()

    def capacity(self, extra: int = 1) -> int:
        """The per-node cap for ``total + extra`` assignments over the live nodes."""
        live = int(self.balancer.alive_mask().sum())
        if live == 0:
            raise _NoLiveNodeError("all nodes are marked down")
        return _math.ceil(self.factor * (self._total + extra) / live)

    def acquire(self, key: _Any) -> _Hashable:
        """Assign ``key`` to a node (returned) and count it in that node's load."""
        with self._lock:
            cap = self.capacity()
            loads = self._loads
            node = self.balancer.get(key)
            if loads.get(node, 0) >= cap:
                node = self._walk(key, cap)
            loads[node] = loads.get(node, 0) + 1
            self._total += 1
            return node

    def _walk(self, key: _Any, cap: int) -> _Hashable:
        live = int(self.balancer.alive_mask().sum())
        n = 2
        while True:
            n = min(n, live)
            for node in self.balancer.get_n(key, n):
                if self._loads.get(node, 0) < cap:
                    return node
            if n == live:  # cannot happen: total < live * cap leaves room
                raise RuntimeError("no node below capacity")
            n *= 4

    def release(self, node: _Hashable) -> None:
        """End one assignment to ``node`` (``KeyError`` if it holds none)."""
        with self._lock:
            count = self._loads.get(node, 0)
            if count <= 0:
                raise KeyError(f"node {node!r} holds no acquired keys")
            if count == 1:
                del self._loads[node]
            else:
                self._loads[node] = count - 1
            self._total -= 1

    def load(self, node: _Hashable) -> int:
        """Assignments ``node`` holds now."""
        return self._loads.get(node, 0)

    def loads(self) -> _Dict[_Hashable, int]:
        """``{node: assignments}`` for every node of the balancer (0 included)."""
        with self._lock:
            return {node: self._loads.get(node, 0) for node in self.balancer.nodes}

    @property
    def total(self) -> int:
        """Assignments held now."""
        return self._total

    def __repr__(self) -> str:
        return f"BoundedLoad(factor={self.factor}, total={self._total})"


def moved_fraction(before: _Any, after: _Any, keys: _Any) -> float:
    """Fraction of ``keys`` whose node differs between balancers ``before``
    and ``after`` (any two of HashRing, Rendezvous, Maglev).  ``keys`` is a
    list of keys or a ``uint64`` array of hashes, as their ``get_many`` takes;
    both balancers must use the same key hashing (seed, ketama or not)."""
    a = before.get_many(keys)
    b = after.get_many(keys)
    if a.shape[0] == 0:
        return 0.0
    # Translate after's indices into before's index space (-1: a new node).
    index = {node: i for i, node in enumerate(before.nodes)}
    remap = _np.array([index.get(node, -1) for node in after.nodes] or [-1], dtype=_np.int64)
    return float(_np.mean(remap[b] != a))
