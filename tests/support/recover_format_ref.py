"""A pure-Python writer of checkpoint format 1.0, written from docs/FORMAT.md.

Used to check the native reader against the specification, and to frame
arbitrary (e.g. mutated) trees with valid checksums for fuzzing the decoder.
"""
import struct

import xxhash

MAGIC = b"\x89FKCKPT\n"
END_MAGIC = b"FKCKEND\n"


def h(data: bytes) -> int:
    return xxhash.xxh3_64_intdigest(bytes(data))


def varint(n: int) -> bytes:
    """LEB128, as the tree encodes lengths and counts."""
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def frame(meta_tree: bytes, tree: bytes, blobs=(), *, chunk_size=1 << 20, id=0) -> bytes:
    header = bytearray(MAGIC + struct.pack("<HHIQQQ", 1, 0, 64, 0, id, chunk_size) + bytes(16))
    header += struct.pack("<Q", h(header))
    out = bytearray(header)
    sections, chunks = [], []

    def pad():
        out.extend(bytes(-len(out) % 64))

    for kind, data in [(1, meta_tree), (2, tree)] + [(3, b) for b in blobs]:
        pad()
        offset = len(out) if data else 0
        first = len(chunks)
        n = -(-len(data) // chunk_size)
        for k in range(n):
            piece = data[k * chunk_size:(k + 1) * chunk_size]
            chunks.append((h(piece), 0, len(out)))
            out.extend(piece)
        checksum = h(b"".join(struct.pack("<Q", c[0]) for c in chunks[first:]))
        sections.append(struct.pack("<IIQQQQQQQ", kind, 0, offset, len(data), len(data), checksum, first, n, 0))
    pad()
    toc = struct.pack("<QQQQ", len(sections), len(chunks), 0, 0) + b"".join(sections)
    toc += b"".join(struct.pack("<QIIQ", ch, ref, 0, off) for ch, ref, off in chunks)
    toc_offset = len(out)
    out.extend(toc)
    footer = struct.pack("<QQQQQQ", toc_offset, len(toc), h(toc), len(out) + 64, id, 0)
    footer += struct.pack("<Q", h(footer)) + END_MAGIC
    out.extend(footer)
    return bytes(out)


def read_toc(blob: bytes):
    """(chunk_size, sections, chunks) of a file, parsed per docs/FORMAT.md (no validation)."""
    chunk_size = struct.unpack_from("<Q", blob, 32)[0]
    toc_offset, toc_length = struct.unpack_from("<QQ", blob, len(blob) - 64)
    ns, nc, nr, _ = struct.unpack_from("<QQQQ", blob, toc_offset)
    p = toc_offset + 32
    sections = [struct.unpack_from("<IIQQQQQQQ", blob, p + 64 * i) for i in range(ns)]
    p += 64 * ns
    chunks = [struct.unpack_from("<QIIQ", blob, p + 24 * i) for i in range(nc)]
    return chunk_size, sections, chunks
