// Writing and reading whole checkpoint files (docs/FORMAT.md).  Portable
// C++17 plus POSIX write(2); no Python.  Callers may run these without any
// interpreter lock: they touch only the spans and buffers they are given.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <vector>

#include "faultkit/recover/codec_buffer.h"
#include "faultkit/recover/codec_format.h"

namespace faultkit {
namespace codec {

struct Span {
    const uint8_t* data = nullptr;
    uint64_t size = 0;
};

// Where output bytes go.  `write` must write all of them or throw.
class Sink {
public:
    virtual ~Sink() = default;
    virtual void write(const uint8_t* data, size_t n) = 0;
    // Hint: about `n` bytes will be written in all (an upper bound).
    virtual void expect(uint64_t n) { (void)n; }
    // All bytes are written; drop anything expect() reserved beyond them.
    virtual void finish() {}
    uint64_t position = 0;
};

// Writes to a POSIX file descriptor at its current offset (retries on EINTR
// and short writes; throws std::system_error on failure).
class FdSink final : public Sink {
public:
    explicit FdSink(int fd) : fd_(fd) {}
    void write(const uint8_t* data, size_t n) override;
    // Linux: fallocate(FALLOC_FL_KEEP_SIZE) the expected size first, as
    // np.save does -- the filesystem then allocates the file's blocks in one
    // go instead of page by page during the writes (twice as fast on ext4).
    void expect(uint64_t n) override;
    void finish() override;

private:
    int fd_;
    uint64_t start_ = 0;
    uint64_t reserved_ = 0;
};

// Appends to a ByteBuffer (the in-memory dumps()).
class MemorySink final : public Sink {
public:
    explicit MemorySink(ByteBuffer& out) : out_(out) {}
    void write(const uint8_t* data, size_t n) override {
        out_.put_bytes(data, n);
        position += n;
    }

private:
    ByteBuffer& out_;
};

// Writes into a caller-provided buffer of fixed size (throws if it would overflow).
class BufferSink final : public Sink {
public:
    BufferSink(uint8_t* data, uint64_t size) : data_(data), size_(size) {}
    void write(const uint8_t* data, size_t n) override {
        if (n > size_ - position) throw CodecError("output buffer too small");
        std::memcpy(data_ + position, data, n);
        position += n;
    }

private:
    uint8_t* data_;
    uint64_t size_;
};

// The exact size of the file write_checkpoint produces without a base.
uint64_t full_file_size(Span meta, Span tree, const std::vector<Span>& blobs, uint64_t chunk_size);

// Where every chunk of every blob of a checkpoint lives: the base an
// incremental save compares against.
struct ChunkLoc {
    uint64_t hash = 0;
    uint64_t id = 0;  // checkpoint holding the bytes
    uint64_t toc_checksum = 0;  // that checkpoint's identity
    uint64_t offset = 0;  // absolute offset in it
};
struct BlobMap {
    uint64_t length = 0;
    std::vector<ChunkLoc> chunks;
};
struct ChunkMap {
    uint64_t chunk_size = 0;
    std::vector<BlobMap> blobs;
};

struct WriteResult {
    uint64_t file_size = 0;
    uint64_t toc_checksum = 0;
    uint64_t chunks_written = 0;
    uint64_t chunks_referenced = 0;
    uint64_t blob_bytes_written = 0;
    uint64_t blob_bytes_hashed = 0;  // blob bytes read to hash them
};

// Write a complete checkpoint file to `sink`: header, META and TREE sections,
// one BLOB section per span (each 64-byte aligned), TOC, footer.  With a
// `base`, a blob chunk whose hash equals the base's chunk at the same index
// (same blob index and length, same chunk size) is referenced, not written.
// `out_map` (optional) receives where every blob chunk now lives.
// `dirty` (optional, aligned with `blobs`): for blob b, nullptr, or
// ceil(size / chunk_size) bytes where 0 says "chunk k is unchanged since the
// base hashed it" -- its hash is taken from the base instead of read (only
// used when the base has that blob with the same length).  The caller vouches
// for that claim (write tracking, write_tracker.h).
WriteResult write_checkpoint(Sink& sink, uint64_t id, Span meta, Span tree,
                             const std::vector<Span>& blobs, uint64_t chunk_size,
                             const ChunkMap* base, ChunkMap* out_map,
                             const std::vector<const uint8_t*>* dirty = nullptr);

// The chunk map of an already written file (to continue an incremental chain).
ChunkMap chunk_map_of(const Layout& l);

// A file image: the buffer of the checkpoint itself (refs empty) or of a file it references.
struct FileView {
    const uint8_t* data = nullptr;
    uint64_t size = 0;
};

// Check the hashes of the chunks of section `index` stored in `file`
// (throws CodecError naming the section and chunk on a mismatch).
void verify_local_chunks(const Layout& l, size_t index, FileView file);

// Copy the logical bytes of section `index` into `out` (its length bytes),
// fetching referenced chunks from `refs` (aligned with l.refs) and checking
// every chunk's bounds and, if `verify`, its hash.
void assemble_section(const Layout& l, size_t index, FileView file,
                      const std::vector<FileView>& refs, uint8_t* out, bool verify);

}  // namespace codec
}  // namespace faultkit
