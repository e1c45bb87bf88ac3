// The checkpoint file format, version 1.0 (specified in docs/FORMAT.md):
// constants, the fixed-size records, and a validating parser of a file's
// framing (header, footer, table of contents).  Portable C++17, no Python.
//
//   file   = header(64) | section data, each stored run 64-byte aligned | TOC | footer(64)
//   TOC    = counts(32) | sections(64 each) | chunks(24 each) | refs(16 each)
//
// Every section is a list of chunks of `chunk_size` bytes (the last may be
// shorter); each chunk record carries the XXH3-64 of its bytes and where they
// are stored (this file, or a referenced earlier checkpoint).  A section's
// checksum is the XXH3-64 of its chunk hashes (little-endian u64s).
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "faultkit/common/xxh3.h"
#include "faultkit/recover/codec_buffer.h"
#include "faultkit/recover/codec_hash.h"

namespace faultkit {
namespace codec {

inline constexpr uint8_t kMagic[8] = {0x89, 'F', 'K', 'C', 'K', 'P', 'T', '\n'};
inline constexpr uint8_t kEndMagic[8] = {'F', 'K', 'C', 'K', 'E', 'N', 'D', '\n'};
inline constexpr uint16_t kVersionMajor = 1;
inline constexpr uint16_t kVersionMinor = 0;
inline constexpr size_t kHeaderSize = 64;
inline constexpr size_t kFooterSize = 64;
inline constexpr size_t kAlign = 64;  // cache line; also what np.load/mmap need (8..16)
inline constexpr size_t kTocCountsSize = 32;
inline constexpr size_t kSectionRecord = 64;
inline constexpr size_t kChunkRecord = 24;
inline constexpr size_t kRefRecord = 16;
// Chunks: 1 MiB by default -- small enough that hashing a chunk leaves it in
// L2 for the write that follows, large enough that the chunk table of a
// 256 MiB array is 6 KiB.  Readers accept any power of two in [4 KiB, 1 GiB].
inline constexpr uint64_t kDefaultChunkSize = 1u << 20;
inline constexpr uint64_t kMinChunkSize = 1u << 12;
inline constexpr uint64_t kMaxChunkSize = 1u << 30;

inline constexpr uint64_t kFlagIncremental = 1;  // header flag: some chunks are references

enum SectionKind : uint32_t { kSectionMeta = 1, kSectionTree = 2, kSectionBlob = 3 };

// Tags of the object-tree encoding (the TREE and META sections).
enum Tag : uint8_t {
    kTagNone = 0x00,
    kTagFalse = 0x01,
    kTagTrue = 0x02,
    kTagInt64 = 0x03,  // 8 bytes, two's complement
    kTagBigInt = 0x04,  // varint n, n bytes little-endian two's complement
    kTagFloat = 0x05,  // 8 bytes, IEEE-754 binary64 bits
    kTagStr = 0x06,  // varint n, n bytes UTF-8 (lone surrogates as in "surrogatepass")
    kTagBytes = 0x07,  // varint n, n bytes
    kTagByteArray = 0x08,
    kTagMemoryView = 0x09,
    kTagBlobBytes = 0x0A,  // varint blob index (a BLOB section)
    kTagBlobByteArray = 0x0B,
    kTagBlobMemoryView = 0x0C,
    kTagList = 0x10,  // varint n, n values
    kTagTuple = 0x11,
    kTagDict = 0x12,  // varint n, n (key, value) pairs in insertion order
    kTagSet = 0x13,
    kTagFrozenSet = 0x14,
    kTagArray = 0x20,  // u8 m, m bytes dtype.str, varint ndim, ndim varint dims, varint blob index
    kTagCustom = 0x30,  // varint n, n bytes UTF-8 type name, then one value (its state)
};

inline constexpr size_t kMaxDepth = 1000;  // nesting limit, encode and decode
inline constexpr size_t kMaxNdim = 64;  // numpy's NPY_MAXDIMS (2.x)

struct Header {
    uint16_t major = kVersionMajor;
    uint16_t minor = kVersionMinor;
    uint64_t flags = 0;
    uint64_t id = 0;
    uint64_t chunk_size = kDefaultChunkSize;
};

struct Section {
    uint32_t kind = 0;
    uint32_t flags = 0;
    uint64_t offset = 0;  // where this file's stored bytes of the section start (0: none)
    uint64_t length = 0;  // logical length in bytes
    uint64_t stored = 0;  // bytes of it stored in this file
    uint64_t checksum = 0;  // XXH3-64 of the chunk hashes
    uint64_t first_chunk = 0;
    uint64_t n_chunks = 0;
};

struct Chunk {
    uint64_t hash = 0;  // XXH3-64 of the chunk's bytes
    uint32_t ref = 0;  // 0: this file; i > 0: refs[i - 1]
    uint64_t offset = 0;  // absolute offset in the file that stores it
};

struct Ref {
    uint64_t id = 0;  // checkpoint id of the referenced file
    uint64_t toc_checksum = 0;  // its footer's TOC checksum (identity)
};

struct Layout {
    Header header;
    std::vector<Section> sections;
    std::vector<Chunk> chunks;
    std::vector<Ref> refs;
    uint64_t toc_offset = 0;
    uint64_t toc_length = 0;
    uint64_t toc_checksum = 0;
    uint64_t file_size = 0;
};

inline uint64_t chunk_count(uint64_t length, uint64_t chunk_size) {
    return length / chunk_size + (length % chunk_size ? 1 : 0);
}

inline uint64_t chunk_len(const Section& s, uint64_t i, uint64_t chunk_size) {
    uint64_t start = i * chunk_size;
    uint64_t rest = s.length - start;
    return rest < chunk_size ? rest : chunk_size;
}

inline uint64_t hash_of_hashes(const Chunk* chunks, uint64_t n) {
    // XXH3-64 of the chunk hashes as consecutive little-endian u64s.
    std::vector<uint8_t> buf(n * 8);
    for (uint64_t i = 0; i < n; ++i) store_le64(buf.data() + 8 * i, chunks[i].hash);
    return chunk_hash(buf.data(), buf.size());
}

inline void encode_header(uint8_t out[kHeaderSize], const Header& h) {
    std::memset(out, 0, kHeaderSize);
    std::memcpy(out, kMagic, 8);
    store_le16(out + 8, h.major);
    store_le16(out + 10, h.minor);
    store_le32(out + 12, static_cast<uint32_t>(kHeaderSize));
    store_le64(out + 16, h.flags);
    store_le64(out + 24, h.id);
    store_le64(out + 32, h.chunk_size);
    store_le64(out + 56, xxh3_64(out, 56, 0));
}

inline void encode_footer(uint8_t out[kFooterSize], const Layout& l) {
    std::memset(out, 0, kFooterSize);
    store_le64(out + 0, l.toc_offset);
    store_le64(out + 8, l.toc_length);
    store_le64(out + 16, l.toc_checksum);
    store_le64(out + 24, l.file_size);
    store_le64(out + 32, l.header.id);
    store_le64(out + 48, xxh3_64(out, 48, 0));
    std::memcpy(out + 56, kEndMagic, 8);
}

// Serialise the TOC of `l` (counts, sections, chunks, refs) into `out`.
inline void encode_toc(ByteBuffer& out, const Layout& l) {
    out.put_u64(l.sections.size());
    out.put_u64(l.chunks.size());
    out.put_u64(l.refs.size());
    out.put_u64(0);
    for (const Section& s : l.sections) {
        out.put_u32(s.kind);
        out.put_u32(s.flags);
        out.put_u64(s.offset);
        out.put_u64(s.length);
        out.put_u64(s.stored);
        out.put_u64(s.checksum);
        out.put_u64(s.first_chunk);
        out.put_u64(s.n_chunks);
        out.put_u64(0);  // reserved
    }
    for (const Chunk& c : l.chunks) {
        out.put_u64(c.hash);
        out.put_u32(c.ref);
        out.put_u32(0);
        out.put_u64(c.offset);
    }
    for (const Ref& r : l.refs) {
        out.put_u64(r.id);
        out.put_u64(r.toc_checksum);
    }
}

// Parse and validate the framing of a whole file image `buf[0..n)`: magic,
// version, header and footer checksums, size, TOC checksum and every record's
// consistency.  Section contents are not hashed here (see verify_chunk).
// `check_padding` false skips only the final zero-padding scan: for a reader
// that has read the header, footer and TOC but not yet the sections, and
// parses again with it true once it has.
inline Layout parse_layout(const uint8_t* buf, size_t n, bool check_padding = true) {
    Layout l;
    if (n < kHeaderSize + kFooterSize)
        throw CodecError("truncated: " + std::to_string(n) +
                         " bytes is shorter than header + footer");
    if (std::memcmp(buf, kMagic, 8) != 0) throw CodecError("bad magic: not a faultkit checkpoint");
    l.header.major = load_le16(buf + 8);
    l.header.minor = load_le16(buf + 10);
    if (l.header.major > kVersionMajor) {
        throw VersionError("checkpoint format version " + std::to_string(l.header.major) + "." +
                           std::to_string(l.header.minor) + " is newer than this reader (" +
                           std::to_string(kVersionMajor) + "." + std::to_string(kVersionMinor) +
                           "); upgrade faultkit to read it");
    }
    if (load_le64(buf + 56) != xxh3_64(buf, 56, 0)) throw CodecError("header checksum mismatch");
    if (l.header.major != kVersionMajor)
        throw CodecError("unsupported format major version " + std::to_string(l.header.major));
    if (load_le32(buf + 12) != kHeaderSize) throw CodecError("bad header size");
    l.header.flags = load_le64(buf + 16);
    l.header.id = load_le64(buf + 24);
    l.header.chunk_size = load_le64(buf + 32);
    uint64_t cs = l.header.chunk_size;
    if (cs < kMinChunkSize || cs > kMaxChunkSize || (cs & (cs - 1)))
        throw CodecError("bad chunk size " + std::to_string(cs));

    const uint8_t* f = buf + n - kFooterSize;
    if (std::memcmp(f + 56, kEndMagic, 8) != 0)
        throw CodecError("bad end magic: truncated or torn file");
    if (load_le64(f + 48) != xxh3_64(f, 48, 0)) throw CodecError("footer checksum mismatch");
    l.toc_offset = load_le64(f + 0);
    l.toc_length = load_le64(f + 8);
    l.toc_checksum = load_le64(f + 16);
    l.file_size = load_le64(f + 24);
    if (l.file_size != n)
        throw CodecError("file size " + std::to_string(n) + " differs from the recorded " +
                         std::to_string(l.file_size));
    if (load_le64(f + 32) != l.header.id) throw CodecError("footer id differs from header id");
    uint64_t data_end = n - kFooterSize;
    if (l.toc_offset < kHeaderSize || l.toc_offset > data_end ||
        l.toc_length != data_end - l.toc_offset)
        throw CodecError("TOC out of bounds");
    const uint8_t* toc = buf + l.toc_offset;
    if (chunk_hash(toc, l.toc_length) != l.toc_checksum) throw CodecError("TOC checksum mismatch");
    if (l.toc_length < kTocCountsSize) throw CodecError("TOC too short");

    uint64_t ns = load_le64(toc), nc = load_le64(toc + 8), nr = load_le64(toc + 16);
    uint64_t body = l.toc_length - kTocCountsSize;
    if (ns > body / kSectionRecord || nc > body / kChunkRecord || nr > body / kRefRecord ||
        ns * kSectionRecord + nc * kChunkRecord + nr * kRefRecord != body)
        throw CodecError("TOC counts disagree with its length");
    if (ns < 2) throw CodecError("missing META or TREE section");
    if (nr > 0xFFFFFFFEu) throw CodecError("too many refs");

    const uint8_t* p = toc + kTocCountsSize;
    l.sections.resize(ns);
    uint64_t next_chunk = 0;
    for (uint64_t i = 0; i < ns; ++i, p += kSectionRecord) {
        Section& s = l.sections[i];
        s.kind = load_le32(p);
        s.flags = load_le32(p + 4);
        s.offset = load_le64(p + 8);
        s.length = load_le64(p + 16);
        s.stored = load_le64(p + 24);
        s.checksum = load_le64(p + 32);
        s.first_chunk = load_le64(p + 40);
        s.n_chunks = load_le64(p + 48);
        uint32_t want = i == 0 ? kSectionMeta : i == 1 ? kSectionTree : kSectionBlob;
        if (s.kind != want)
            throw CodecError("section " + std::to_string(i) + " has kind " +
                             std::to_string(s.kind));
        if (s.first_chunk != next_chunk || s.n_chunks > nc - next_chunk ||
            s.n_chunks != chunk_count(s.length, cs))
            throw CodecError("section " + std::to_string(i) + " chunk range is inconsistent");
        if (s.stored > s.length || s.offset % kAlign ||
            (s.stored && (s.offset < kHeaderSize || s.offset > l.toc_offset ||
                          s.stored > l.toc_offset - s.offset)))
            throw CodecError("section " + std::to_string(i) + " is out of bounds");
        next_chunk += s.n_chunks;
    }
    if (next_chunk != nc) throw CodecError("chunks not covered by sections");

    l.chunks.resize(nc);
    for (uint64_t i = 0; i < nc; ++i, p += kChunkRecord) {
        Chunk& c = l.chunks[i];
        c.hash = load_le64(p);
        c.ref = load_le32(p + 8);
        c.offset = load_le64(p + 16);
        if (c.ref > nr)
            throw CodecError("chunk " + std::to_string(i) + " references a missing ref");
    }
    l.refs.resize(nr);
    for (uint64_t i = 0; i < nr; ++i, p += kRefRecord) {
        l.refs[i].id = load_le64(p);
        l.refs[i].toc_checksum = load_le64(p + 8);
    }
    if (nr && !(l.header.flags & kFlagIncremental))
        throw CodecError("refs in a non-incremental file");

    // Local chunks tile their section's stored run exactly, in order; META and
    // TREE are always local.  Stored runs do not overlap, and every byte between
    // them (alignment padding) must be zero: so each byte of the file is
    // covered by a checksum or by this check.
    std::vector<std::pair<uint64_t, uint64_t>> runs;
    for (uint64_t i = 0; i < ns; ++i) {
        const Section& s = l.sections[i];
        uint64_t local = 0;
        for (uint64_t k = 0; k < s.n_chunks; ++k) {
            const Chunk& c = l.chunks[s.first_chunk + k];
            uint64_t len = chunk_len(s, k, cs);
            if (c.ref == 0) {
                if (c.offset != s.offset + local || len > s.stored - local)
                    throw CodecError("section " + std::to_string(i) + " chunk " +
                                     std::to_string(k) + " is out of place");
                local += len;
            } else if (i < 2) {
                throw CodecError("META/TREE sections must be stored locally");
            }
        }
        if (local != s.stored)
            throw CodecError("section " + std::to_string(i) +
                             " stored size disagrees with its chunks");
        if (hash_of_hashes(l.chunks.data() + s.first_chunk, s.n_chunks) != s.checksum)
            throw CodecError("section " + std::to_string(i) + " checksum mismatch");
        if (s.stored) runs.emplace_back(s.offset, s.stored);
    }
    std::sort(runs.begin(), runs.end());
    if (!check_padding) return l;
    uint64_t pos = kHeaderSize;
    runs.emplace_back(l.toc_offset, 0);
    for (const auto& run : runs) {
        if (run.first < pos) throw CodecError("sections overlap");
        for (uint64_t b = pos; b < run.first; ++b)
            if (buf[b]) throw CodecError("nonzero padding at byte " + std::to_string(b));
        pos = run.first + run.second;
    }
    return l;
}

// True when section `s` is stored whole and contiguous in this file, so its
// bytes can be used (or mapped) in place.
inline bool section_contiguous(const Layout& l, const Section& s) {
    if (s.stored != s.length) return false;
    for (uint64_t k = 0; k < s.n_chunks; ++k) {
        const Chunk& c = l.chunks[s.first_chunk + k];
        if (c.ref != 0 || c.offset != s.offset + k * l.header.chunk_size) return false;
    }
    return true;
}

}  // namespace codec
}  // namespace faultkit
