// Writing and reading whole checkpoint files; see codec_io.h and docs/FORMAT.md.
#include "faultkit/codec_io.h"

#include <errno.h>
#include <unistd.h>

#include <cstring>
#include <string>
#include <system_error>
#include <unordered_map>

namespace faultkit {
namespace codec {

void FdSink::write(const uint8_t* data, size_t n) {
    while (n) {
        // Linux write(2) moves at most ~2 GiB per call; chunks keep us far below.
        ssize_t w = ::write(fd_, data, n);
        if (w < 0) {
            if (errno == EINTR) continue;
            throw std::system_error(errno, std::generic_category(), "checkpoint write");
        }
        if (w == 0) throw std::system_error(EIO, std::generic_category(), "checkpoint write made no progress");
        data += w;
        n -= static_cast<size_t>(w);
        position += static_cast<uint64_t>(w);
    }
}

namespace {

alignas(64) const uint8_t kZeros[kAlign] = {};

void pad(Sink& sink) {
    uint64_t r = sink.position % kAlign;
    if (r) sink.write(kZeros, kAlign - r);
}

// Write a section stored whole in this file (META, TREE, or a blob in a full save).
void write_local(Sink& sink, Layout& l, uint32_t kind, Span s, uint64_t cs, BlobMap* map) {
    pad(sink);
    Section sec;
    sec.kind = kind;
    sec.offset = s.size ? sink.position : 0;
    sec.length = s.size;
    sec.stored = s.size;
    sec.first_chunk = l.chunks.size();
    sec.n_chunks = chunk_count(s.size, cs);
    for (uint64_t k = 0; k < sec.n_chunks; ++k) {
        uint64_t len = chunk_len(sec, k, cs);
        const uint8_t* p = s.data + k * cs;
        Chunk c;
        c.hash = xxh3_64(p, len, 0);  // hash first: the write then reads the chunk from cache
        c.offset = sink.position;
        sink.write(p, len);
        l.chunks.push_back(c);
        if (map) map->chunks.push_back({c.hash, l.header.id, 0, c.offset});
    }
    sec.checksum = hash_of_hashes(l.chunks.data() + sec.first_chunk, sec.n_chunks);
    l.sections.push_back(sec);
}

}  // namespace

WriteResult write_checkpoint(Sink& sink, uint64_t id, Span meta, Span tree, const std::vector<Span>& blobs,
                             uint64_t chunk_size, const ChunkMap* base, ChunkMap* out_map) {
    const uint64_t cs = chunk_size;
    if (cs < kMinChunkSize || cs > kMaxChunkSize || (cs & (cs - 1)))
        throw CodecError("chunk size must be a power of two in [4096, 2**30], got " + std::to_string(cs));
    if (base && base->chunk_size != cs) base = nullptr;  // a different chunking shares nothing

    Layout l;
    l.header.id = id;
    l.header.chunk_size = cs;
    l.header.flags = base ? kFlagIncremental : 0;
    uint8_t head[kHeaderSize];
    encode_header(head, l.header);
    sink.position = 0;
    sink.write(head, kHeaderSize);

    WriteResult res;
    if (out_map) {
        out_map->chunk_size = cs;
        out_map->blobs.assign(blobs.size(), BlobMap{});
    }
    write_local(sink, l, kSectionMeta, meta, cs, nullptr);
    write_local(sink, l, kSectionTree, tree, cs, nullptr);

    std::unordered_map<uint64_t, uint32_t> ref_index;  // checkpoint id -> 1-based ref
    for (size_t b = 0; b < blobs.size(); ++b) {
        Span s = blobs[b];
        BlobMap* map = out_map ? &out_map->blobs[b] : nullptr;
        if (map) map->length = s.size;
        const BlobMap* old = (base && b < base->blobs.size() && base->blobs[b].length == s.size) ? &base->blobs[b] : nullptr;
        if (!old) {
            write_local(sink, l, kSectionBlob, s, cs, map);
            res.chunks_written += chunk_count(s.size, cs);
            res.blob_bytes_written += s.size;
            continue;
        }
        pad(sink);
        Section sec;
        sec.kind = kSectionBlob;
        sec.length = s.size;
        sec.first_chunk = l.chunks.size();
        sec.n_chunks = chunk_count(s.size, cs);
        if (old->chunks.size() != sec.n_chunks) throw CodecError("base chunk map is inconsistent");
        for (uint64_t k = 0; k < sec.n_chunks; ++k) {
            uint64_t len = chunk_len(sec, k, cs);
            const uint8_t* p = s.data + k * cs;
            Chunk c;
            c.hash = xxh3_64(p, len, 0);
            const ChunkLoc& o = old->chunks[k];
            if (o.hash == c.hash) {
                auto it = ref_index.find(o.id);
                if (it == ref_index.end()) {
                    l.refs.push_back({o.id, o.toc_checksum});
                    it = ref_index.emplace(o.id, static_cast<uint32_t>(l.refs.size())).first;
                }
                c.ref = it->second;
                c.offset = o.offset;
                if (map) map->chunks.push_back(o);
                res.chunks_referenced += 1;
            } else {
                if (sec.stored == 0) sec.offset = sink.position;
                c.offset = sink.position;
                sink.write(p, len);
                sec.stored += len;
                if (map) map->chunks.push_back({c.hash, id, 0, c.offset});
                res.chunks_written += 1;
                res.blob_bytes_written += len;
            }
            l.chunks.push_back(c);
        }
        sec.checksum = hash_of_hashes(l.chunks.data() + sec.first_chunk, sec.n_chunks);
        l.sections.push_back(sec);
    }
    // The header (already written) keeps the incremental flag whenever a base
    // was given, even if every chunk changed: readers accept zero refs.

    pad(sink);
    ByteBuffer toc;
    encode_toc(toc, l);
    l.toc_offset = sink.position;
    l.toc_length = toc.size();
    l.toc_checksum = xxh3_64(toc.data(), toc.size(), 0);
    sink.write(toc.data(), toc.size());
    l.file_size = sink.position + kFooterSize;
    uint8_t foot[kFooterSize];
    encode_footer(foot, l);
    sink.write(foot, kFooterSize);

    if (out_map) {
        for (BlobMap& m : out_map->blobs)
            for (ChunkLoc& c : m.chunks)
                if (c.id == id) c.toc_checksum = l.toc_checksum;
    }
    res.file_size = l.file_size;
    res.toc_checksum = l.toc_checksum;
    return res;
}

ChunkMap chunk_map_of(const Layout& l) {
    ChunkMap m;
    m.chunk_size = l.header.chunk_size;
    for (size_t i = 2; i < l.sections.size(); ++i) {
        const Section& s = l.sections[i];
        BlobMap b;
        b.length = s.length;
        b.chunks.reserve(s.n_chunks);
        for (uint64_t k = 0; k < s.n_chunks; ++k) {
            const Chunk& c = l.chunks[s.first_chunk + k];
            if (c.ref == 0) {
                b.chunks.push_back({c.hash, l.header.id, l.toc_checksum, c.offset});
            } else {
                const Ref& r = l.refs[c.ref - 1];
                b.chunks.push_back({c.hash, r.id, r.toc_checksum, c.offset});
            }
        }
        m.blobs.push_back(std::move(b));
    }
    return m;
}

void verify_local_chunks(const Layout& l, size_t index, FileView file) {
    const Section& s = l.sections.at(index);
    const uint64_t cs = l.header.chunk_size;
    for (uint64_t k = 0; k < s.n_chunks; ++k) {
        const Chunk& c = l.chunks[s.first_chunk + k];
        if (c.ref) continue;
        uint64_t len = chunk_len(s, k, cs);
        if (c.offset > file.size || len > file.size - c.offset) throw CodecError("chunk out of bounds");
        if (xxh3_64(file.data + c.offset, len, 0) != c.hash)
            throw CodecError("section " + std::to_string(index) + " chunk " + std::to_string(k) + " checksum mismatch");
    }
}

void assemble_section(const Layout& l, size_t index, FileView file, const std::vector<FileView>& refs, uint8_t* out,
                      bool verify) {
    const Section& s = l.sections.at(index);
    const uint64_t cs = l.header.chunk_size;
    if (refs.size() != l.refs.size()) throw CodecError("wrong number of referenced files");
    for (uint64_t k = 0; k < s.n_chunks; ++k) {
        const Chunk& c = l.chunks[s.first_chunk + k];
        uint64_t len = chunk_len(s, k, cs);
        FileView src = c.ref ? refs[c.ref - 1] : file;
        // Referenced data must lie between that file's header and footer.
        if (src.size < kHeaderSize + kFooterSize || c.offset < kHeaderSize || c.offset > src.size - kFooterSize ||
            len > src.size - kFooterSize - c.offset)
            throw CodecError("section " + std::to_string(index) + " chunk " + std::to_string(k) + " is out of bounds");
        const uint8_t* p = src.data + c.offset;
        if ((verify || c.ref) && xxh3_64(p, len, 0) != c.hash)
            throw CodecError("section " + std::to_string(index) + " chunk " + std::to_string(k) +
                             (c.ref ? " (in checkpoint " + std::to_string(l.refs[c.ref - 1].id) + ")" : std::string()) +
                             " checksum mismatch");
        std::memcpy(out + k * cs, p, len);
    }
}

}  // namespace codec
}  // namespace faultkit
