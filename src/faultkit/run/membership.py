"""Who belongs: the membership a :class:`~faultkit.Node` runs over.

Membership (who is in the cluster) and reachability (who answers now) are
kept apart, as in Kubernetes (node leases in etcd) and Akka (membership
gossip beside the failure detector): a backend says who belongs, the Node's
own UDP heartbeats say who is reachable.  Only the backend removes a member;
a detector only routes around it.

A backend implements :class:`Membership`:

- ``await start(me, on_change, on_observation) -> {name: Member}``: register
  ``me`` and return the current members (``me`` included); afterwards call
  ``on_change(kind, member)`` with ``kind`` ``"join"``, ``"update"`` (same
  name, new record: a restart) or ``"leave"`` (gone: left or expired), one
  member at a time, so the Node applies each change incrementally;
- ``observe(target, unreachable)``: publish this node's verdict on a node it
  watches (``shares_observations``: whether the backend carries them; the
  static list does not, the Node then sends them over its UDP socket) and
  ``on_observation(observer, target, unreachable)`` for everyone's;
- ``await stop(leave=True)``: deregister (``leave``) and release resources;
- ``healthy``: False while the backend cannot reach its store (the Node then
  keeps its last view: fail-static).

:class:`StaticMembership`, the embedded default, is a fixed list of names and
addresses: nothing joins or expires (a member that stops is routed around;
one that comes back is routed to again).
"""
from __future__ import annotations

import re
from typing import Any, Callable, Mapping, NamedTuple, Optional, Union

from faultkit.detect.transport import parse_address

__all__ = ["Member", "Membership", "StaticMembership", "OnChange", "OnObservation"]

_NAME = re.compile(r"^[^\s/]{1,255}$")


class Member(NamedTuple):
    """One member: its ``name``, the UDP ``address`` (host, port) its heartbeats
    come from and go to, its failure-domain ``domain`` path (or None) and the
    ``incarnation`` of its current life (0 when unknown: static lists)."""

    name: str
    address: tuple
    domain: Optional[str] = None
    incarnation: int = 0


OnChange = Callable[[str, Member], Any]
OnObservation = Callable[[str, str, bool], Any]


def check_name(name: Any) -> str:
    """``name`` if it is a valid member name: a str of 1..255 UTF-8 bytes without
    whitespace or ``/`` (it becomes an etcd key segment); TypeError/ValueError otherwise."""
    if not isinstance(name, str):
        raise TypeError(f"member name must be a str, not {type(name).__name__}")
    if not _NAME.match(name) or len(name.encode("utf-8")) > 255:
        raise ValueError(f"member name {name!r} must be 1..255 bytes without whitespace or '/'")
    return name


def make_member(name: Any, address: Any, domain: Any = None, incarnation: Any = 0) -> Member:
    """A validated :class:`Member` (TypeError/ValueError naming the bad field)."""
    check_name(name)
    addr = parse_address(address)
    if domain is not None and (not isinstance(domain, str) or not domain):
        raise ValueError(f"domain of {name!r} must be a non-empty str or None, got {domain!r}")
    if isinstance(incarnation, bool) or not isinstance(incarnation, int) or not 0 <= incarnation < 2**63:
        raise ValueError(f"incarnation of {name!r} must be an int in [0, 2**63), got {incarnation!r}")
    return Member(name, addr, domain, incarnation)


class Membership:
    """Base class of membership backends (see the module docstring for the contract)."""

    #: Whether :meth:`observe` reaches the other Nodes through this backend.
    shares_observations = False

    @property
    def healthy(self) -> bool:
        """False while the backend cannot reach its store (the Node stays fail-static)."""
        return True

    async def start(self, me: Member, on_change: OnChange, on_observation: OnObservation) -> dict:
        """Register ``me``; return ``{name: Member}`` (``me`` included); report later
        changes through ``on_change(kind, member)`` and ``on_observation(observer,
        target, unreachable)``.  Each backend implements it."""
        raise NotImplementedError(f"{type(self).__name__} does not implement start()")

    def observe(self, target: str, unreachable: bool) -> None:
        """Publish this node's verdict on ``target`` (a no-op where not shared)."""

    async def stop(self, leave: bool = True) -> None:
        """Deregister (when ``leave``) and release resources."""


class StaticMembership(Membership):
    """A fixed member list: ``{name: "host:port"}`` or ``{name: ("host:port", domain_path)}``.

    The embedded default: no server.  Every Node of the cluster is given the
    same list; the Node whose name it is must bind (or advertise) that
    address.  Members never join or expire; a Node's graceful leave is sent
    to its peers over UDP and they route around it until it comes back.
    """

    def __init__(self, members: Mapping[str, Union[str, tuple]]) -> None:
        if not isinstance(members, Mapping):
            raise TypeError(f"members must be a mapping name -> address, not {type(members).__name__}")
        if not members:
            raise ValueError("a static membership needs at least one member")
        self.members: dict[str, Member] = {}
        for name, spec in members.items():
            domain = None
            if isinstance(spec, (tuple, list)) and len(spec) == 2 and isinstance(spec[1], (str, type(None))) \
                    and not isinstance(spec[1], int):
                # ("host:port", domain) -- but ("host", port) is an address
                if isinstance(spec[0], str) and ":" in spec[0]:
                    spec, domain = spec[0], spec[1]
            self.members[name] = make_member(name, spec, domain)

    async def start(self, me: Member, on_change: OnChange, on_observation: OnObservation) -> dict:
        """The list, with ``me`` as the Node describes itself; ValueError if ``me`` is not
        on it or its domain differs.  Nothing changes afterwards, so the callbacks are unused."""
        if me.name not in self.members:
            raise ValueError(f"node {me.name!r} is not in the static member list {sorted(self.members)[:8]!r}")
        listed = self.members[me.name]
        if listed.domain != me.domain:
            raise ValueError(f"node {me.name!r} has domain {me.domain!r} but the list says {listed.domain!r}")
        out = dict(self.members)
        out[me.name] = me
        return out

    def __repr__(self) -> str:
        return f"StaticMembership({len(self.members)} members)"
