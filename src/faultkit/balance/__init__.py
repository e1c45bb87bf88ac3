"""Balance: consistent hashing at C speed, and failover around down nodes.

- :class:`HashRing` (XXH3-64 or ketama points, virtual nodes, float weights),
  :class:`Rendezvous` (weighted HRW), :class:`Maglev` and :func:`jump_hash`:
  Cython shells (``_ring``, ``_choose``) over the C++ core in
  ``csrc/faultkit/balance/``.
- :class:`BoundedLoad` and :func:`moved_fraction` (:mod:`.bounded`): plain
  Python on top.

Every balancer exposes the same failover contract, which
:mod:`faultkit.contain` relies on: ``nodes`` (index i is node i in every
array), ``mark_down``/``mark_up``, ``mark_down_many``/``mark_up_many``,
``set_alive(mask)``, ``alive_mask()``, ``is_up(node)`` and ``distribution()``.
"""
from faultkit.balance._choose import MAGLEV_TABLE_SIZE, Maglev, Rendezvous, jump_hash
from faultkit.balance._ring import HashRing
from faultkit.balance.bounded import DEFAULT_BALANCE_FACTOR, BoundedLoad, moved_fraction

__all__ = [
    "HashRing",
    "Rendezvous",
    "Maglev",
    "jump_hash",
    "MAGLEV_TABLE_SIZE",
    "BoundedLoad",
    "moved_fraction",
    "DEFAULT_BALANCE_FACTOR",
]
