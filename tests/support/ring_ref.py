"""Pure-Python reference models of faultkit's balancers, for differential tests.

Written from the algorithms' descriptions, sharing no code with the package:
XXH3 comes from python-xxhash, sorting and search from the standard library.
"""
import bisect
import hashlib
import math

import numpy as np
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


# -- ketama ----------------------------------------------------------------

def ketama_hashi(data: bytes, replica: int = 0) -> int:
    """libketama's hash: MD5 digest bytes 4r..4r+3 as a little-endian uint32."""
    d = hashlib.md5(data).digest()
    return int.from_bytes(d[4 * replica:4 * replica + 4], "little")


class RefLibketama:
    """A line-by-line port of libketama's ketama.c (ketama_create_continuum
    and ketama_get_server), float32 arithmetic included.  ``servers`` is a
    list of (address, memory).  Equal points: the server listed last first
    (qsort leaves their order unspecified; faultkit fixes it this way)."""

    def __init__(self, servers):
        numservers = len(servers)
        totalmemory = sum(m for _, m in servers)
        pts = []
        for i, (addr, memory) in enumerate(servers):
            pct = np.float32(memory) / np.float32(totalmemory)
            # floorf(pct * 40.0 * (float)numservers): double product, float argument
            ks = math.floor(np.float32(float(pct) * 40.0 * float(np.float32(numservers))))
            for k in range(ks):
                name = (addr.encode() if isinstance(addr, str) else addr) + b"-%d" % k
                for h in range(4):
                    pts.append((ketama_hashi(name, h), -i, addr))
        pts.sort()
        self.points = [p for p, _, _ in pts]
        self.servers = [a for _, _, a in pts]

    def get_server_hash(self, h: int):
        """ketama_get_server's divide and conquer, verbatim."""
        mcs = self.points
        highp = len(mcs)
        maxp, lowp = highp, 0
        while True:
            midp = (lowp + highp) // 2
            if midp == maxp:
                return self.servers[0]
            midval = mcs[midp]
            midval1 = 0 if midp == 0 else mcs[midp - 1]
            if midval1 < h <= midval:
                return self.servers[midp]
            if midval < h:
                lowp = midp + 1
            else:
                highp = midp - 1
            if lowp > highp:
                return self.servers[0]

    def get_server(self, key: str):
        return self.get_server_hash(ketama_hashi(key.encode()))


# -- rendezvous and Maglev ---------------------------------------------------

class RefRendezvous:
    """Weighted HRW, logarithmic method: score_i = -w_i / ln(u_i),
    u_i = (top 52 bits of xxh3(h as 8 LE bytes, seed=xxh3(name_i, seed)) + 0.5) / 2^52;
    highest live score wins, the lower index on a tie."""

    def __init__(self, nodes, weights=None, seed=0):
        self.nodes = list(nodes)
        self.weights = list(weights) if weights is not None else [1.0] * len(self.nodes)
        self.seed = seed
        self.node_hash = [xxhash.xxh3_64_intdigest(_name_bytes(n), seed) for n in self.nodes]
        self.alive = [True] * len(self.nodes)

    def scores(self, h):
        out = []
        for i, (nh, w) in enumerate(zip(self.node_hash, self.weights)):
            bits = xxhash.xxh3_64_intdigest(h.to_bytes(8, "little"), nh) >> 12
            u = (bits + 0.5) / 2**52
            out.append((-w / math.log(u), -i))
        return out

    def ranking(self, h):
        sc = self.scores(h)
        order = sorted((i for i in range(len(self.nodes)) if self.alive[i]),
                       key=lambda i: sc[i], reverse=True)
        return [self.nodes[i] for i in order]

    def get(self, key):
        return self.ranking(key_hash(key, self.seed))[0]


SKIP_SEED_XOR = 0x5851F42D


class RefMaglev:
    """Maglev's table population (NSDI 2016, Pseudocode 1) with Envoy's
    weighting: in round r a node takes a turn only if r * w/w_max >= its
    running target, which then grows by 1.  The table holds every member;
    liveness only changes lookups: a key whose slot's node is down walks on
    to the next slot (wrapping) whose node is up."""

    def __init__(self, nodes, weights=None, table_size=65537, seed=0):
        m = table_size
        self.nodes = list(nodes)
        weights = list(weights) if weights is not None else [1.0] * len(self.nodes)
        self.alive = [True] * len(self.nodes)
        members = range(len(self.nodes))
        offset = {i: xxhash.xxh3_64_intdigest(_name_bytes(self.nodes[i]), seed) % m for i in members}
        skip = {i: xxhash.xxh3_64_intdigest(_name_bytes(self.nodes[i]), seed ^ SKIP_SEED_XOR)
                % (m - 1) + 1 for i in members}
        wmax = max(weights, default=1.0)
        norm = {i: weights[i] / wmax for i in members}
        target = {i: 0.0 for i in members}
        nxt = {i: 0 for i in members}
        table = [-1] * m
        filled = 0
        rnd = 0
        while self.nodes and filled < m:
            rnd += 1
            for i in members:
                if filled == m:
                    break
                if rnd * norm[i] < target[i]:
                    continue
                target[i] += 1.0
                c = (offset[i] + nxt[i] * skip[i]) % m
                while table[c] >= 0:
                    nxt[i] += 1
                    c = (offset[i] + nxt[i] * skip[i]) % m
                table[c] = i
                nxt[i] += 1
                filled += 1
        self.table = table
        self.seed = seed

    def serving(self, slot):
        """Index of the live node serving ``slot`` (None if none is up)."""
        m = len(self.table)
        for step in range(m):
            owner = self.table[(slot + step) % m]
            if self.alive[owner]:
                return owner
        return None

    def get(self, key):
        return self.nodes[self.serving(key_hash(key, self.seed) % len(self.table))]

    def distribution(self):
        counts = [0] * len(self.nodes)
        for slot in range(len(self.table)):
            counts[self.serving(slot)] += 1
        return {n: c / len(self.table) for n, c in zip(self.nodes, counts)}
