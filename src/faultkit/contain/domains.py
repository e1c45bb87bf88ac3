"""Failure domains: a hierarchy of regions, zones, racks and hosts.

A service is assigned a path such as ``"eu/az1/r3/h7"``: one segment per
level.  Every prefix of a path is a domain (``"eu"``, ``"eu/az1"``,
``"eu/az1/r3"``, ``"eu/az1/r3/h7"``) whose members are all the services
below it.  Isolating a domain takes all its members out of routing on every
attached balancer in one bulk update per balancer; restoring puts them back.
:meth:`FailureDomains.place` spreads replicas over distinct domains of one
level, so that losing any one such domain loses no key.
"""
from __future__ import annotations

from typing import Any, Hashable, Iterable, NamedTuple, Optional, Sequence

import numpy as np

from faultkit._common.xxh3 import hash64, hash64_many

__all__ = ["FailureDomains", "BlastRadius", "DEFAULT_LEVELS"]

# The usual physical hierarchy of a datacenter fleet (as in Ceph's CRUSH map
# types region > zone/datacenter > rack > host).
DEFAULT_LEVELS = ("region", "zone", "rack", "host")

# Service names are hashed with this seed, domain paths with seed 0, so a
# service named like a domain never shares its hash.
_SERVICE_SEED = 0x5EC7_1CE5
# Keys per block in place_many: bounds its temporary arrays to ~N_DOMAINS x
# 16 K x 16 bytes.
_PLACE_BLOCK = 1 << 14
# Detector states that are evidence of a fault (joining, leaving and left are not).
_FAULTY_STATES = ("suspect", "dead")


class BlastRadius(NamedTuple):
    """What failing ``domain`` takes down: its ``services`` and the ``share`` of
    a balancer's keyspace they serve now (None when no balancer is given)."""

    domain: str
    services: list
    share: Optional[float]


class _Placement(NamedTuple):
    # Placement tables of one spread level, rebuilt after membership changes.
    names: list            # domains at the level, sorted
    hashes: np.ndarray     # uint64 hash of each domain path
    services: list         # per domain: its services, sorted by hash
    svc_hashes: list       # per domain: uint64 array of those hashes
    offsets: np.ndarray    # per domain: index of its first service in `flat`
    flat: list             # every service, domain after domain


class FailureDomains:
    """A failure-domain tree over services, with isolation, placement and fault lookup.

    ``levels`` names the levels from the widest down (default ``("region",
    "zone", "rack", "host")``); every path has exactly one segment per level.
    ``detector`` is optional: anything with ``state(service)`` returning
    ``"alive"``, ``"suspect"`` or ``"dead"`` (a :mod:`faultkit.detect`
    detector); :meth:`detect_fault` answers from it.
    """

    def __init__(self, levels: Sequence[str] = DEFAULT_LEVELS, *,
                 detector: Any = None) -> None:
        if isinstance(levels, str):
            raise TypeError("levels must be a sequence of level names, not a str")
        levels = tuple(levels)
        if not levels:
            raise ValueError("levels must name at least one level")
        for name in levels:
            if not isinstance(name, str) or not name or "/" in name:
                raise ValueError(f"level names must be non-empty str without '/', got {name!r}")
        if len(set(levels)) != len(levels):
            raise ValueError(f"level names must be distinct, got {levels!r}")
        self._levels = levels
        self._path: dict[Hashable, tuple[str, ...]] = {}
        # every domain (path prefix) -> its members, in assignment order
        self._members: dict[str, dict[Hashable, None]] = {}
        self._isolated: set[str] = set()
        self._balancers: list = []
        self._placements: dict[int, _Placement] = {}
        self.detector = detector

    # -- levels and paths ----------------------------------------------------
    @property
    def levels(self) -> tuple:
        """The level names, widest first."""
        return self._levels

    def _level(self, level: str) -> int:
        try:
            return self._levels.index(level)
        except ValueError:
            raise ValueError(f"unknown level {level!r}; levels are {self._levels!r}") from None

    def _parse(self, path: str, *, full: bool) -> tuple[str, ...]:
        if not isinstance(path, str):
            raise TypeError(f"a domain path must be a str, not {type(path).__name__}")
        parts = tuple(path.split("/"))
        if any(not p for p in parts):
            raise ValueError(f"domain path {path!r} has an empty segment")
        if len(parts) > len(self._levels):
            raise ValueError(f"domain path {path!r} has {len(parts)} levels; at most "
                             f"{len(self._levels)} ({'/'.join(self._levels)})")
        if full and len(parts) != len(self._levels):
            raise ValueError(f"service path {path!r} has {len(parts)} levels; it needs "
                             f"{len(self._levels)} ({'/'.join(self._levels)})")
        return parts

    def _domain(self, domain: str) -> str:
        self._parse(domain, full=False)
        if domain not in self._members:
            raise KeyError(f"unknown domain {domain!r}")
        return domain

    def _service_path(self, service: Hashable) -> tuple[str, ...]:
        try:
            return self._path[service]
        except KeyError:
            raise KeyError(f"unknown service {service!r}") from None
        except TypeError:
            raise TypeError(f"services must be hashable, not {type(service).__name__}") from None

    # -- membership ------------------------------------------------------------
    def assign(self, service: Hashable, path: str, *, strict: bool = False) -> None:
        """Put ``service`` at ``path`` (one segment per level, e.g. ``"eu/az1/r3/h7"``).

        Re-assigning a service moves it (attached balancers follow if that
        changes whether it is isolated); with ``strict=True`` that is a
        ``ValueError`` instead (the seed's "already assigned" check).
        """
        parts = self._parse(path, full=True)
        hash(service)
        old = self._path.get(service)
        if old is not None:
            if strict:
                raise ValueError(f"service {service!r} is already assigned to {'/'.join(old)!r}")
            if old == parts:
                return
        was_isolated = old is not None and self.is_isolated(service)
        if old is not None:
            self._unlink(service, old)
        self._path[service] = parts
        for i in range(1, len(parts) + 1):
            self._members.setdefault("/".join(parts[:i]), {})[service] = None
        self._placements.clear()
        now_isolated = self.is_isolated(service)
        if old is not None and was_isolated != now_isolated:
            self._route([service], up=not now_isolated)

    def assign_many(self, pairs: Iterable[tuple[Hashable, str]], *, strict: bool = False) -> None:
        """:meth:`assign` each ``(service, path)`` pair."""
        for service, path in pairs:
            self.assign(service, path, strict=strict)

    def remove(self, service: Hashable) -> None:
        """Forget ``service`` (``KeyError`` if unknown).  Attached balancers are not touched."""
        self._unlink(service, self._service_path(service))
        del self._path[service]
        self._placements.clear()

    def _unlink(self, service: Hashable, parts: tuple[str, ...]) -> None:
        for i in range(1, len(parts) + 1):
            prefix = "/".join(parts[:i])
            members = self._members[prefix]
            del members[service]
            if not members:
                del self._members[prefix]
                self._isolated.discard(prefix)  # an empty domain is not isolated

    def __len__(self) -> int:
        return len(self._path)

    def __contains__(self, service: object) -> bool:
        try:
            return service in self._path
        except TypeError:
            return False

    @property
    def services(self) -> list:
        """Every assigned service, in assignment order."""
        return list(self._path)

    def domain_of(self, service: Hashable, level: Optional[str] = None) -> str:
        """The domain of ``service`` at ``level`` (default: its full path)."""
        parts = self._service_path(service)
        if level is None:
            return "/".join(parts)
        return "/".join(parts[: self._level(level) + 1])

    def members(self, domain: str) -> list:
        """Every service in ``domain``'s subtree (``KeyError`` if no service is in it)."""
        return list(self._members[self._domain(domain)])

    def domains(self, level: str) -> list:
        """The domains at ``level`` that hold services, sorted."""
        depth = self._level(level) + 1
        return sorted(d for d in self._members if d.count("/") + 1 == depth)

    # -- isolation -------------------------------------------------------------
    def isolate(self, domain: str) -> list:
        """Take every service of ``domain`` out of routing; returns those newly isolated.

        Each attached balancer gets one ``mark_down_many`` with the services
        it holds.  Isolating an isolated domain changes nothing.
        """
        domain = self._domain(domain)
        if domain in self._isolated:
            return []
        newly = self._not_covered(domain)
        self._isolated.add(domain)
        self._route(newly, up=False)
        return newly

    def restore(self, domain: str) -> list:
        """Undo :meth:`isolate` of ``domain``; returns the services back in routing.

        Members still inside another isolated domain stay out.  Restoring a
        domain that is not isolated changes nothing.
        """
        domain = self._domain(domain)
        if domain not in self._isolated:
            return []
        self._isolated.discard(domain)
        back = self._not_covered(domain)
        self._route(back, up=True)
        return back

    def _not_covered(self, domain: str) -> list:
        # Members of ``domain`` inside no isolated domain (other than itself):
        # an isolated ancestor covers them all, an isolated descendant its own
        # members.  Linear in the members and the isolated domains.
        members = self._members[domain]
        inner = []
        for other in self._isolated:
            if other == domain:
                continue
            if domain.startswith(other + "/"):
                return []
            if other.startswith(domain + "/"):
                inner.append(other)
        if not inner:
            return list(members)
        covered: set = set()
        for other in inner:
            covered.update(self._members[other])
        return [s for s in members if s not in covered]

    def is_isolated(self, service: Hashable) -> bool:
        """Whether ``service`` is inside an isolated domain."""
        parts = self._service_path(service)
        if not self._isolated:
            return False
        return any("/".join(parts[:i]) in self._isolated for i in range(1, len(parts) + 1))

    @property
    def isolated(self) -> list:
        """The isolated domains, sorted."""
        return sorted(self._isolated)

    def isolated_services(self) -> list:
        """Every service inside an isolated domain."""
        seen: dict[Hashable, None] = {}
        for d in sorted(self._isolated):
            seen.update(self._members[d])
        return list(seen)

    def isolated_fraction(self) -> float:
        """The share of all services that are isolated (0.0 with no services)."""
        return len(self.isolated_services()) / len(self._path) if self._path else 0.0

    # -- balancers -------------------------------------------------------------
    def attach(self, balancer: Any) -> None:
        """Make isolation reach ``balancer`` (a HashRing, Rendezvous, Maglev or any
        object with ``nodes``, ``is_up``, ``mark_down_many`` and ``mark_up_many``).

        Services already isolated are marked down on it now.  Only services
        that are nodes of the balancer are touched; others are skipped.  On a
        HashRing, Rendezvous or Maglev no key of another domain moves: only
        the isolated services' keys do, and restoring moves exactly them back.
        """
        for attr in ("nodes", "is_up", "mark_down_many", "mark_up_many"):
            if not hasattr(balancer, attr):
                raise TypeError(f"a balancer needs .{attr}; {type(balancer).__name__} has none")
        if any(b is balancer for b in self._balancers):
            return
        self._balancers.append(balancer)
        down = self.isolated_services()
        if down:
            self._mark(balancer, down, up=False)

    def detach(self, balancer: Any) -> None:
        """Stop updating ``balancer`` (``ValueError`` if not attached); its marks stay as they are."""
        for i, b in enumerate(self._balancers):
            if b is balancer:
                del self._balancers[i]
                return
        raise ValueError(f"{balancer!r} is not attached")

    @property
    def balancers(self) -> list:
        """The attached balancers."""
        return list(self._balancers)

    def _route(self, services: list, *, up: bool) -> None:
        if services:
            for b in self._balancers:
                self._mark(b, services, up=up)

    @staticmethod
    def _mark(balancer: Any, services: list, *, up: bool) -> None:
        # is_up() raises KeyError for a node the balancer does not hold: a
        # dict lookup per service, where set(balancer.nodes) would copy and
        # hash all of a 100,000-node ring's names on every isolation.
        mine = []
        for s in services:
            try:
                balancer.is_up(s)
            except KeyError:
                continue
            mine.append(s)
        if mine:
            (balancer.mark_up_many if up else balancer.mark_down_many)(mine)

    # -- faults ------------------------------------------------------------------
    def detect_fault(self, service: Hashable) -> tuple[bool, str]:
        """``(faulty, domain)`` for ``service``, from the detector's states.

        ``faulty`` is whether the detector reports it ``"suspect"`` or
        ``"dead"`` (a member joining, leaving or left is not faulty).
        ``domain`` is the widest domain containing it whose members are all
        faulty (a dead rack reports the rack), or its own full path when only
        it is (or when it is healthy).
        """
        parts = self._service_path(service)
        if self.detector is None:
            raise RuntimeError("detect_fault needs a detector: FailureDomains(detector=...)")
        if self.detector.state(service) not in _FAULTY_STATES:
            return False, "/".join(parts)
        for i in range(1, len(parts) + 1):
            domain = "/".join(parts[:i])
            if all(self._faulty(s) for s in self._members[domain]):
                return True, domain
        return True, "/".join(parts)  # pragma: no cover - the leaf always qualifies

    def _faulty(self, service: Hashable) -> bool:
        try:
            return self.detector.state(service) in _FAULTY_STATES
        except KeyError:  # the detector does not monitor it: no evidence of a fault
            return False

    def blast_radius(self, domain: str, balancer: Any = None) -> BlastRadius:
        """The services of ``domain`` and the share of ``balancer``'s keyspace they serve
        now (its ``distribution()``); ``balancer`` defaults to the first attached one."""
        members = self.members(domain)
        if balancer is None and self._balancers:
            balancer = self._balancers[0]
        if balancer is None:
            return BlastRadius(domain, members, None)
        dist = balancer.distribution()
        return BlastRadius(domain, members, float(sum(dist.get(s, 0.0) for s in members)))

    # -- placement ------------------------------------------------------------------
    def _placement(self, depth: int) -> _Placement:
        p = self._placements.get(depth)
        if p is not None:
            return p
        names = sorted(d for d in self._members if d.count("/") + 1 == depth)
        services, svc_hashes, offsets, flat = [], [], [], []
        for d in names:
            members = list(self._members[d])
            try:
                h = np.array([hash64(s, _SERVICE_SEED) for s in members], dtype=np.uint64)
            except TypeError:
                bad = next(s for s in members if not isinstance(s, (str, bytes, int)))
                raise TypeError(f"placement hashes services: they must be str, bytes or "
                                f"int, not {type(bad).__name__} ({bad!r})") from None
            order = np.argsort(h, kind="stable")
            offsets.append(len(flat))
            members = [members[i] for i in order.tolist()]
            flat.extend(members)
            services.append(members)
            svc_hashes.append(h[order])
        p = _Placement(names, np.array([hash64(d) for d in names], dtype=np.uint64),
                       services, svc_hashes, np.array(offsets, dtype=np.int64), flat)
        self._placements[depth] = p
        return p

    def _placement_for(self, n: int, spread: str) -> _Placement:
        if isinstance(n, bool) or not isinstance(n, int):
            raise TypeError(f"n must be an int, not {type(n).__name__}")
        p = self._placement(self._level(spread) + 1)
        if not 1 <= n <= len(p.names):
            raise ValueError(f"cannot place {n} replicas in distinct {spread} domains: "
                             f"there are {len(p.names)}")
        return p

    def place(self, key: Any, n: int, *, spread: str = "rack") -> list:
        """``n`` services for ``key``, each in a different domain at level ``spread``.

        Rendezvous (highest-random-weight) hashing twice: the ``n`` domains at
        that level with the highest score ``XXH3(le64(hash64(key) ^
        hash64(domain)))``, best first, then in each the service with the
        highest such score.  Deterministic, and minimal movement: adding or
        removing a domain or a service moves only the replicas whose winner
        changes.  ``ValueError`` if there are fewer than ``n`` such domains.
        Isolation does not change placement (routing follows isolation).
        Services must be ``str``, ``bytes`` or ``int`` to be placed.
        """
        p = self._placement_for(n, spread)
        kh = np.uint64(hash64(key))
        scores = hash64_many(p.hashes ^ kh)
        chosen = np.argsort(scores, kind="stable")[::-1][:n]
        out = []
        for d in chosen.tolist():
            s = hash64_many(p.svc_hashes[d] ^ kh)
            out.append(p.services[d][int(np.argmax(s))])
        return out

    def place_many(self, keys: Sequence[Any], n: int, *, spread: str = "rack") -> list:
        """:meth:`place` for every key (vectorized): a list of lists of services."""
        p = self._placement_for(n, spread)
        kh_all = hash64_many(list(keys) if not isinstance(keys, (list, tuple)) else keys)
        idx = np.empty((len(kh_all), n), dtype=np.int64)
        for lo in range(0, len(kh_all), _PLACE_BLOCK):
            kh = kh_all[lo: lo + _PLACE_BLOCK]
            scores = hash64_many((kh[:, None] ^ p.hashes[None, :]).ravel()).reshape(len(kh), -1)
            chosen = np.argsort(scores, axis=1, kind="stable")[:, ::-1][:, :n]
            block = idx[lo: lo + len(kh)]
            for d in np.unique(chosen).tolist():
                rows, cols = np.nonzero(chosen == d)
                s = hash64_many((kh[rows, None] ^ p.svc_hashes[d][None, :]).ravel())
                best = np.argmax(s.reshape(len(rows), -1), axis=1)
                block[rows, cols] = p.offsets[d] + best
        flat = p.flat
        return [[flat[i] for i in row] for row in idx.tolist()]

    def __repr__(self) -> str:
        return (f"FailureDomains(levels={self._levels!r}, {len(self._path)} services, "
                f"{len(self._isolated)} isolated domains)")
