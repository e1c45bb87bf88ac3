"""Pure-Python reference models of faultkit's balancers, for differential tests.

Written from the algorithms' descriptions, sharing no code with the package:
XXH3 comes from python-xxhash, sorting and search from the standard library.
"""
import bisect
import math

import xxhash

MASK64 = (1 << 64) - 1


def _name_bytes(node):
    return node.encode("utf-8") if isinstance(node, str) else bytes(node)


def key_hash(key, seed=0):
    """fk.hash64's key rules: str as UTF-8, bytes as is, int as 8 LE bytes."""
    if isinstance(key, int):
        return xxhash.xxh3_64_intdigest((key & MASK64).to_bytes(8, "little"), seed)
    if isinstance(key, str):
        key = key.encode("utf-8")
    return xxhash.xxh3_64_intdigest(bytes(key), seed)


class RefRing:
    """The XXH3 ring: node i gets max(1, round(vnodes * w)) points,
    point j = xxh3_64(j as 8 LE bytes, seed=xxh3_64(name, seed)); a hash maps
    to the first point >= it (wrapping); ties keep the older node first;
    down nodes are skipped by walking on."""

    def __init__(self, nodes, weights=None, vnodes=160, seed=0):
        self.nodes = list(nodes)
        self.weights = list(weights) if weights is not None else [1.0] * len(self.nodes)
        self.seed = seed
        pts = []
        for i, (node, w) in enumerate(zip(self.nodes, self.weights)):
            node_seed = xxhash.xxh3_64_intdigest(_name_bytes(node), seed)
            count = max(1, int(_round_half_away(vnodes * w)))
            for j in range(count):
                pts.append((xxhash.xxh3_64_intdigest(j.to_bytes(8, "little"), node_seed), i))
        pts.sort()
        self.points = [p for p, _ in pts]
        self.owners = [o for _, o in pts]
        self.alive = [True] * len(self.nodes)

    def walk(self, h):
        """Owner indices in ring order from the first point >= h (one lap)."""
        pos = bisect.bisect_left(self.points, h)
        n = len(self.points)
        for step in range(n):
            yield self.owners[(pos + step) % n]

    def get_index(self, h):
        for o in self.walk(h):
            if self.alive[o]:
                return o
        raise LookupError("no live node")

    def get(self, key):
        return self.nodes[self.get_index(key_hash(key, self.seed))]

    def get_n(self, key, n):
        out = []
        for o in self.walk(key_hash(key, self.seed)):
            if self.alive[o] and self.nodes[o] not in out:
                out.append(self.nodes[o])
                if len(out) == n:
                    break
        return out


def _round_half_away(x):
    """C's llround: halves away from zero."""
    return math.floor(x + 0.5) if x >= 0 else -math.floor(-x + 0.5)
