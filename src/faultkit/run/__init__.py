"""Run: :class:`Node`, the asyncio runtime that runs the pillars in a live service,
and the membership backends it runs over (a static list, or etcd).

Imported on first use of ``faultkit.Node`` (it needs asyncio), so
``import faultkit`` stays cheap.
"""
from faultkit.run.etcd import EtcdMembership
from faultkit.run.membership import Member, Membership, StaticMembership
from faultkit.run.node import Node

__all__ = ["Node", "Member", "Membership", "StaticMembership", "EtcdMembership"]
