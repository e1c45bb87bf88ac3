"""Balance: consistent hashing at C speed, with failover that never rebuilds.

``HashRing`` (XXH3-64 points, virtual nodes, float weights) is a Cython class
over the C++ core in ``csrc/faultkit/ring.h``.  Every balancer here exposes
the same failover contract, which :mod:`faultkit.contain` relies on:
``nodes`` (index i is node i in every array), ``mark_down``/``mark_up``,
``mark_down_many``/``mark_up_many``, ``set_alive(mask)``, ``alive_mask()``,
``is_up(node)`` and ``distribution()``.
"""
from faultkit._balance import MAGLEV_TABLE_SIZE, Maglev, Rendezvous, jump_hash
from faultkit._ring import HashRing

__all__ = ["HashRing", "Rendezvous", "Maglev", "jump_hash", "MAGLEV_TABLE_SIZE"]
