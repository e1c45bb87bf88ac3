// Writing and reading whole checkpoint files; see codec_io.h and docs/FORMAT.md.
#include "faultkit/recover/codec_io.h"

#include <errno.h>
#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <memory>
#include <string>
#include <system_error>
#include <thread>
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
        if (w == 0)
            throw std::system_error(EIO, std::generic_category(),
                                    "checkpoint write made no progress");
        data += w;
        n -= static_cast<size_t>(w);
        position += static_cast<uint64_t>(w);
    }
}

void FdSink::expect(uint64_t n) {
#if defined(__linux__) && defined(FALLOC_FL_KEEP_SIZE)
    off_t here = ::lseek(fd_, 0, SEEK_CUR);
    if (here < 0 || n == 0 || n > static_cast<uint64_t>(INT64_MAX)) return;
    start_ = static_cast<uint64_t>(here);
    // Best effort: filesystems without fallocate (tmpfs on old kernels, NFS) just skip it.
    if (::fallocate(fd_, FALLOC_FL_KEEP_SIZE, here, static_cast<off_t>(n)) == 0) reserved_ = n;
#else
    (void)n;
#endif
}

void FdSink::finish() {
    // Blocks reserved past the end (an incremental save wrote less than the
    // bound) are released by truncating to the size actually written.
    if (reserved_ > position) {
        if (::ftruncate(fd_, static_cast<off_t>(start_ + position)) != 0)
            throw std::system_error(errno, std::generic_category(), "checkpoint truncate");
    }
    reserved_ = 0;
}

namespace {

alignas(64) const uint8_t kZeros[kAlign] = {};

// Below this many bytes of blobs, hashing on a helper thread is not worth
// starting one; above it the hash (~15-20 GB/s) overlaps the writes.  A
// thread costs ~50 us to start on an idle machine, but when the other cores
// are busy the helper may wait a scheduler tick (~4 ms) to run, and the
// join waits with it: incremental saves hashing the few MiB write tracking
// leaves took 4-5 ms instead of ~1 ms in a third of the rounds with 4 MiB
// (split on two threads) and never with 3 MiB (inline).  16 MiB hashes in
// ~1 ms inline.
constexpr uint64_t kParallelHashMin = 16u << 20;
// Largest single write(2): bounded so a huge blob does not become one call.
constexpr uint64_t kMaxWrite = 64u << 20;

void pad(Sink& sink) {
    uint64_t r = sink.position % kAlign;
    if (r) sink.write(kZeros, kAlign - r);
}

struct HashJob {
    const uint8_t* data;
    uint64_t len;
    uint64_t hash;
};

void hash_jobs(HashJob* jobs, size_t n) {
    for (size_t i = 0; i < n; ++i) jobs[i].hash = chunk_hash(jobs[i].data, jobs[i].len);
}

// Hashes jobs on a helper thread (or inline if no thread can be started);
// join() -- also run by the destructor, so no exit path leaves it running.
class Hasher {
public:
    Hasher(HashJob* jobs, size_t n) {
        if (!n) return;
        try {
            thread_ = std::thread(hash_jobs, jobs, n);
        } catch (const std::system_error&) {
            hash_jobs(jobs, n);
        }
    }
    Hasher(const Hasher&) = delete;
    Hasher& operator=(const Hasher&) = delete;
    void join() {
        if (thread_.joinable()) thread_.join();
    }
    ~Hasher() { join(); }

private:
    std::thread thread_;
};

// Hash all jobs now, on this thread and a helper (halves).
void hash_now(std::vector<HashJob>& jobs, uint64_t bytes) {
    if (bytes < kParallelHashMin || jobs.size() < 2) {
        hash_jobs(jobs.data(), jobs.size());
        return;
    }
    size_t half = jobs.size() / 2;
    Hasher helper(jobs.data(), half);
    hash_jobs(jobs.data() + half, jobs.size() - half);
    helper.join();
}

// Write a section stored whole in this file, hashing inline (META, TREE).
void write_small(Sink& sink, Layout& l, uint32_t kind, Span s, uint64_t cs) {
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
        Chunk c;
        c.hash = chunk_hash(s.data + k * cs, len);
        c.offset = sink.position;
        sink.write(s.data + k * cs, len);
        l.chunks.push_back(c);
    }
    sec.checksum = hash_of_hashes(l.chunks.data() + sec.first_chunk, sec.n_chunks);
    l.sections.push_back(sec);
}

}  // namespace

// The plan: every blob chunk gets a job (its hash).  Blobs with a usable base
// are hashed first (both threads), compared with the base, and only their
// changed chunks written.  Blobs without one are written whole while a helper
// thread hashes them: the write does not need the hash, only the TOC does.
WriteResult write_checkpoint(Sink& sink, uint64_t id, Span meta, Span tree,
                             const std::vector<Span>& blobs, uint64_t chunk_size,
                             const ChunkMap* base, ChunkMap* out_map,
                             const std::vector<const uint8_t*>* dirty) {
    const uint64_t cs = chunk_size;
    if (cs < kMinChunkSize || cs > kMaxChunkSize || (cs & (cs - 1)))
        throw CodecError("chunk size must be a power of two in [4096, 2**30], got " +
                         std::to_string(cs));
    if (base && base->chunk_size != cs) base = nullptr;  // a different chunking shares nothing

    Layout l;
    l.header.id = id;
    l.header.chunk_size = cs;
    l.header.flags = base ? kFlagIncremental : 0;

    // Jobs: the chunks of incremental blobs (hashed up front), then of whole ones.
    std::vector<const BlobMap*> old(blobs.size(), nullptr);
    std::vector<size_t> first_job(blobs.size());
    std::vector<HashJob> inc_jobs, full_jobs;
    uint64_t inc_bytes = 0, full_bytes = 0;
    for (size_t b = 0; b < blobs.size(); ++b) {
        const Span& s = blobs[b];
        if (base && b < base->blobs.size() && base->blobs[b].length == s.size) {
            old[b] = &base->blobs[b];
            if (old[b]->chunks.size() != chunk_count(s.size, cs))
                throw CodecError("base chunk map is inconsistent");
        }
        std::vector<HashJob>& jobs = old[b] ? inc_jobs : full_jobs;
        first_job[b] = jobs.size();
        for (uint64_t off = 0; off < s.size; off += cs)
            jobs.push_back({s.data + off, std::min(cs, s.size - off), 0});
        (old[b] ? inc_bytes : full_bytes) += s.size;
    }

    // Chunks a `dirty` mask vouches for (unchanged since the base hashed
    // them) take the base's hash; only the rest are read.
    WriteResult res;
    if (dirty) {
        std::vector<HashJob> todo;
        std::vector<size_t> where;
        uint64_t todo_bytes = 0;
        for (size_t b = 0; b < blobs.size(); ++b) {
            if (!old[b]) continue;
            const uint8_t* mask = b < dirty->size() ? (*dirty)[b] : nullptr;
            for (uint64_t k = 0; k < old[b]->chunks.size(); ++k) {
                HashJob& j = inc_jobs[first_job[b] + k];
                if (mask && !mask[k]) {
                    j.hash = old[b]->chunks[k].hash;
                } else {
                    todo.push_back(j);
                    where.push_back(first_job[b] + k);
                    todo_bytes += j.len;
                }
            }
        }
        hash_now(todo, todo_bytes);
        for (size_t i = 0; i < todo.size(); ++i) inc_jobs[where[i]].hash = todo[i].hash;
        res.blob_bytes_hashed = todo_bytes + full_bytes;
    } else {
        hash_now(inc_jobs, inc_bytes);
        res.blob_bytes_hashed = inc_bytes + full_bytes;
    }

    // The exact file size, so the sink can reserve it (and need not trim it).
    auto align = [](uint64_t x) { return (x + kAlign - 1) / kAlign * kAlign; };
    uint64_t size = align(align(kHeaderSize) + meta.size) + tree.size;
    uint64_t n_chunks = chunk_count(meta.size, cs) + chunk_count(tree.size, cs) + inc_jobs.size() +
                        full_jobs.size();
    std::vector<uint64_t> ref_ids;
    for (size_t b = 0; b < blobs.size(); ++b) {
        uint64_t stored = blobs[b].size;
        if (old[b]) {
            stored = 0;
            for (uint64_t k = 0; k < old[b]->chunks.size(); ++k) {
                const HashJob& j = inc_jobs[first_job[b] + k];
                const ChunkLoc& o = old[b]->chunks[k];
                if (j.hash != o.hash) {
                    stored += j.len;
                } else if (std::find(ref_ids.begin(), ref_ids.end(), o.id) == ref_ids.end()) {
                    ref_ids.push_back(o.id);
                }
            }
        }
        size = align(size) + stored;
    }
    size = align(size) + kTocCountsSize + (2 + blobs.size()) * kSectionRecord +
           n_chunks * kChunkRecord + ref_ids.size() * kRefRecord + kFooterSize;
    const uint64_t bound = size;
    sink.position = 0;
    sink.expect(bound);
    uint8_t head[kHeaderSize];
    encode_header(head, l.header);
    sink.write(head, kHeaderSize);
    std::unique_ptr<Hasher> hasher;
    if (full_bytes >= kParallelHashMin) {
        hasher = std::make_unique<Hasher>(full_jobs.data(), full_jobs.size());
    } else {
        hash_jobs(full_jobs.data(), full_jobs.size());
    }

    write_small(sink, l, kSectionMeta, meta, cs);
    write_small(sink, l, kSectionTree, tree, cs);

    std::unordered_map<uint64_t, uint32_t> ref_index;  // checkpoint id -> 1-based ref
    for (size_t b = 0; b < blobs.size(); ++b) {
        const Span& s = blobs[b];
        pad(sink);
        Section sec;
        sec.kind = kSectionBlob;
        sec.length = s.size;
        sec.first_chunk = l.chunks.size();
        sec.n_chunks = chunk_count(s.size, cs);
        if (!old[b]) {  // whole: big writes; hashes arrive from the helper
            sec.offset = s.size ? sink.position : 0;
            sec.stored = s.size;
            for (uint64_t k = 0; k < sec.n_chunks; ++k)
                l.chunks.push_back(Chunk{0, 0, sec.offset + k * cs});
            for (uint64_t off = 0; off < s.size; off += kMaxWrite)
                sink.write(s.data + off, std::min(kMaxWrite, s.size - off));
            res.chunks_written += sec.n_chunks;
            res.blob_bytes_written += s.size;
        } else {
            for (uint64_t k = 0; k < sec.n_chunks; ++k) {
                const HashJob& j = inc_jobs[first_job[b] + k];
                const ChunkLoc& o = old[b]->chunks[k];
                Chunk c;
                c.hash = j.hash;
                if (o.hash == c.hash) {
                    auto it = ref_index.find(o.id);
                    if (it == ref_index.end()) {
                        l.refs.push_back({o.id, o.toc_checksum});
                        it = ref_index.emplace(o.id, static_cast<uint32_t>(l.refs.size())).first;
                    }
                    c.ref = it->second;
                    c.offset = o.offset;
                    res.chunks_referenced += 1;
                } else {
                    if (sec.stored == 0) sec.offset = sink.position;
                    c.offset = sink.position;
                    sink.write(j.data, j.len);
                    sec.stored += j.len;
                    res.chunks_written += 1;
                    res.blob_bytes_written += j.len;
                }
                l.chunks.push_back(c);
            }
        }
        l.sections.push_back(sec);
    }
    if (hasher) hasher->join();
    // Fill in the hashes of whole blobs, then every blob section's checksum.
    for (size_t b = 0; b < blobs.size(); ++b) {
        Section& sec = l.sections[2 + b];
        if (!old[b])
            for (uint64_t k = 0; k < sec.n_chunks; ++k)
                l.chunks[sec.first_chunk + k].hash = full_jobs[first_job[b] + k].hash;
        sec.checksum = hash_of_hashes(l.chunks.data() + sec.first_chunk, sec.n_chunks);
    }
    // The header (already written) keeps the incremental flag whenever a base
    // was given, even if every chunk changed: readers accept zero refs.

    pad(sink);
    ByteBuffer toc;
    encode_toc(toc, l);
    l.toc_offset = sink.position;
    l.toc_length = toc.size();
    l.toc_checksum = chunk_hash(toc.data(), toc.size());
    sink.write(toc.data(), toc.size());
    l.file_size = sink.position + kFooterSize;
    uint8_t foot[kFooterSize];
    encode_footer(foot, l);
    sink.write(foot, kFooterSize);
    sink.finish();

    if (out_map) {
        *out_map = chunk_map_of(l);
    }
    res.file_size = l.file_size;
    res.toc_checksum = l.toc_checksum;
    return res;
}

uint64_t full_file_size(Span meta, Span tree, const std::vector<Span>& blobs, uint64_t cs) {
    auto align = [](uint64_t x) { return (x + kAlign - 1) / kAlign * kAlign; };
    uint64_t pos = kHeaderSize;
    uint64_t chunks = 0;
    auto add = [&](const Span& s) {
        pos = align(pos) + s.size;
        chunks += chunk_count(s.size, cs);
    };
    add(meta);
    add(tree);
    for (const Span& b : blobs) add(b);
    pos = align(pos);
    return pos + kTocCountsSize + (2 + blobs.size()) * kSectionRecord + chunks * kChunkRecord +
           kFooterSize;
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
        if (c.offset > file.size || len > file.size - c.offset)
            throw CodecError("chunk out of bounds");
        if (chunk_hash(file.data + c.offset, len) != c.hash)
            throw CodecError("section " + std::to_string(index) + " chunk " + std::to_string(k) +
                             " checksum mismatch");
    }
}

void assemble_section(const Layout& l, size_t index, FileView file,
                      const std::vector<FileView>& refs, uint8_t* out, bool verify) {
    const Section& s = l.sections.at(index);
    const uint64_t cs = l.header.chunk_size;
    if (refs.size() != l.refs.size()) throw CodecError("wrong number of referenced files");
    for (uint64_t k = 0; k < s.n_chunks; ++k) {
        const Chunk& c = l.chunks[s.first_chunk + k];
        uint64_t len = chunk_len(s, k, cs);
        FileView src = c.ref ? refs[c.ref - 1] : file;
        // Referenced data must lie between that file's header and footer.
        if (src.size < kHeaderSize + kFooterSize || c.offset < kHeaderSize ||
            c.offset > src.size - kFooterSize || len > src.size - kFooterSize - c.offset)
            throw CodecError("section " + std::to_string(index) + " chunk " + std::to_string(k) +
                             " is out of bounds");
        const uint8_t* p = src.data + c.offset;
        if ((verify || c.ref) && chunk_hash(p, len) != c.hash)
            throw CodecError("section " + std::to_string(index) + " chunk " + std::to_string(k) +
                             (c.ref
                                  ? " (in checkpoint " + std::to_string(l.refs[c.ref - 1].id) + ")"
                                  : std::string()) +
                             " checksum mismatch");
        std::memcpy(out + k * cs, p, len);
    }
}

}  // namespace codec
}  // namespace faultkit
