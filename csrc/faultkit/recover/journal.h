// The write-ahead journal: segment and record framing, the scanner that finds
// the valid prefix of a segment, and the writer (memory-mapped segments,
// rotation, group commit).  No Python; never reads a clock; every length read
// from a file is checked against the bytes that hold it.  Format: docs/FORMAT.md,
// "Journal".
//
// In never mode records are written into a MAP_SHARED mapping of a
// preallocated segment, so an acknowledged append survives the death of its
// process without a system call per append.  In the durable modes records are
// framed into a buffer that the next sync writes with one pwrite before its
// fdatasync (group commit batches the system calls too).
#pragma once

#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace faultkit {
namespace journal {

constexpr uint16_t VERSION_MAJOR = 1;
constexpr uint16_t VERSION_MINOR = 0;
constexpr size_t SEGMENT_HEADER_SIZE = 64;
constexpr size_t RECORD_HEADER_SIZE = 32;
// Largest payload of one record: 1 GiB (the length field is a u32; a record
// this size already costs a second of disk time).
constexpr uint32_t MAX_RECORD = 1u << 30;
constexpr uint16_t KIND_BYTES = 0;  // payload is the caller's bytes
constexpr uint16_t KIND_STATE = 1;  // payload is a checkpoint-codec image (faultkit.recover.dumps)
constexpr uint16_t KIND_SEAL = 0xFFFF;  // ends a segment; lsn = next LSN (not consumed), length 0

// Returned by Writer::append(may_rotate=false) when the record needs a new segment.
constexpr int WOULD_ROTATE = -1;

enum Mode : int { MODE_NEVER = 0, MODE_GROUP = 1, MODE_ALWAYS = 2 };

inline size_t padded(size_t len) { return (len + 7) & ~static_cast<size_t>(7); }
inline size_t frame_size(size_t len) { return RECORD_HEADER_SIZE + padded(len); }

struct SegmentHeader {
    uint16_t major = 0, minor = 0;
    uint64_t journal_id = 0;
    uint64_t first_lsn = 0;
};

enum HeaderStatus : int {
    HEADER_OK = 0,
    HEADER_SHORT = 1,
    HEADER_MAGIC = 2,
    HEADER_VERSION = 3,
    HEADER_CHECKSUM = 4
};

void write_segment_header(uint8_t* out, uint64_t journal_id, uint64_t first_lsn);
// Parses the 64-byte header at `p` (`n` bytes available).  HEADER_VERSION:
// the major version is newer than this reader's (fields major/minor are set).
int parse_segment_header(const uint8_t* p, size_t n, SegmentHeader* out);

// Frames a record at `out` (frame_size(len) bytes): header, payload, zero padding.
void frame_record(uint8_t* out, uint64_t seed, uint64_t lsn, uint64_t durable, uint16_t kind,
                  const uint8_t* data, uint32_t len);

struct Record {
    uint64_t lsn = 0;
    uint64_t durable = 0;
    uint32_t length = 0;
    uint16_t kind = 0;
    size_t payload = 0;  // offset of the payload in the segment
    size_t frame = 0;  // bytes the whole frame takes
};

// Whether a valid record (header check, bounds, checksum) starts at `pos`.
bool check_record(const uint8_t* buf, size_t len, size_t pos, uint64_t seed, Record* out);

enum NextStatus : int {
    NEXT_RECORD = 0,  // *out is the record with the expected LSN
    NEXT_SEAL = 1,  // the segment's seal: it ends here
    NEXT_END = 2,  // no valid record here and no later record proves damage: a torn or empty tail
    NEXT_DAMAGED = 3,  // no valid record here, but a later one proves this one was durable
};

// The next record of a segment at `pos` expecting LSN `expected`.  When none
// is valid there, looks ahead (8-byte steps) for a valid record whose LSN is
// >= expected and whose durable field is >= expected: one written after the
// missing record had been made durable, which a torn tail cannot produce.
// `*resume_lsn` then gets the highest such record's lsn + 1.
int next_record(const uint8_t* buf, size_t len, size_t pos, uint64_t seed, uint64_t expected,
                Record* out, uint64_t* resume_lsn);

struct Segment {
    int fd = -1;
    uint8_t* map = nullptr;  // never mode only
    size_t size = 0;  // the file's preallocated size (bytes)
    size_t used = 0;  // bytes framed so far, header included (durable modes: some may be pending)
    uint64_t first_lsn = 0;
    std::string path;
    ~Segment();
};

// One journal's writer.  Thread-safe: appends serialize on a mutex (held for
// the copy only); waiting for durability holds no lock while it syncs.  An
// error from fdatasync or msync is sticky (the kernel may have dropped the
// dirty pages it failed to write: the journal must be reopened and recovered).
// Every function returns 0 or an errno value.
class Writer {
public:
    Writer() = default;
    ~Writer();
    Writer(const Writer&) = delete;
    Writer& operator=(const Writer&) = delete;

    // Starts a new segment in `dir` whose first record gets `first_lsn`;
    // `durable` = the LSN up to which earlier segments are known durable.
    int open(const std::string& dir, uint64_t seed, int mode, uint64_t segment_bytes,
             uint64_t first_lsn, uint64_t durable);
    // Frames one record; *lsn gets its LSN.  EBADF when closed; ENOSPC etc.
    // from a rotation that could not create its segment (nothing appended).
    // With may_rotate false, returns WOULD_ROTATE instead of rotating (so a
    // caller holding a lock of its own, e.g. the GIL, can drop it first).
    int append(const uint8_t* data, uint32_t len, uint16_t kind, uint64_t* lsn,
               bool may_rotate = true);
    // Frames n records with consecutive LSNs under one lock; *last gets the
    // last one's LSN.  Stops at the first failure (records before it stay
    // appended: *last says how far it got, 0 if none).
    int append_many(const uint8_t* const* data, const uint32_t* lens, size_t n, uint16_t kind,
                    uint64_t* last);
    // Blocks until `lsn` is durable in the writer's mode (never: returns at once).
    int wait_durable(uint64_t lsn);
    // Makes every appended record durable whatever the mode.
    int sync();
    // Syncs the active segment (in every mode), seals it, syncs the seal and
    // trims the file to its used size.  Idempotent.
    int close();

    // The flusher: a thread that syncs, on request, whatever is appended and
    // not yet durable (group commit without a blocked caller: asyncio
    // appends), and after every advance of the durable LSN writes 8 bytes
    // (the value 1) to every notify fd (eventfds or pipes an event loop
    // watches).  Idempotent; close() stops it.
    int start_flusher();
    // Asks the flusher for a sync of everything appended so far (requests
    // made during a sync get the next one).
    void request_sync();
    void add_notify_fd(int fd);
    void remove_notify_fd(int fd);

    uint64_t next_lsn();
    uint64_t durable_lsn();
    std::string segment_path();
    int mode() const { return mode_; }
    uint64_t syncs();  // fdatasync calls made so far (group commit shares them)
    uint64_t appended_bytes();  // framed bytes of every record appended so far
    int error();

private:
    int rotate_locked(size_t need);
    int create_segment(uint64_t first_lsn, size_t size, std::shared_ptr<Segment>* out);
    int seal_locked(Segment& seg, bool sync);
    int frame_locked(const uint8_t* data, uint32_t len, uint16_t kind, bool may_rotate = true);
    int sync_segment(Segment& seg);
    int flush_locked();  // durable modes: write the pending records to the active segment
    void advanced_locked();  // durable_ moved or an error was set: wake waiters, notify fds
    void flusher_loop();

    std::mutex mu_;
    std::condition_variable cv_;
    std::string dir_;
    uint64_t seed_ = 0;
    int mode_ = MODE_GROUP;
    size_t segment_bytes_ = 0;
    std::shared_ptr<Segment> seg_;
    uint64_t next_lsn_ = 1;
    uint64_t durable_ = 0;
    bool syncing_ = false;
    uint64_t syncs_ = 0;
    uint64_t appended_bytes_ = 0;
    int error_ = 0;
    bool closed_ = true;
    std::condition_variable flusher_cv_;
    std::thread flusher_;
    bool flusher_stop_ = false;
    bool sync_requested_ = false;
    std::vector<int> notify_fds_;
    std::vector<uint8_t> pending_;  // durable modes: framed records not yet written to the file
};

}  // namespace journal
}  // namespace faultkit
