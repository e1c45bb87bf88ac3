// Which pages of a memory range were written since the last look, without
// reading them: Linux userfaultfd asynchronous write protection plus the
// PAGEMAP_SCAN ioctl of /proc/self/pagemap (both Linux >= 6.7; the mechanism
// CRIU and Wine's GetWriteWatch use).  No Python.
//
// arm() registers a page range with a userfaultfd in write-protect mode
// (UFFD_FEATURE_WP_ASYNC: the kernel resolves each first write to a protected
// page itself by clearing the page's protection bit -- no handler thread,
// nothing waits -- and that covers writes made by the kernel on the process's
// behalf too, e.g. read(2) into the buffer).  collect() asks PAGEMAP_SCAN for
// the pages whose protection is gone and re-protects them in the same atomic
// walk, so a write racing with collect() either is reported now or leaves
// its page unprotected for the next collect().
//
// What counts as "possibly changed" is deliberately wider than "written":
// every page that is not present (swapped out, discarded by
// madvise(MADV_DONTNEED), never populated) is reported too, so content that
// changes without a write fault (zero-fill after a discard) is never taken
// for clean.  Writes that bypass the page tables -- through a page the
// kernel pinned (faulting it writable) before a collect() and writes after
// it: a device through a long-term pinned buffer (RDMA, io_uring registered
// buffers), direct I/O or process_vm_writev in flight -- are not seen; nor
// are writes through another mapping of the same memory, which is why arm()
// accepts only private anonymous memory.
//
// Any failure means "cannot vouch for this range": arm() and collect() return
// an errno value and the caller must hash the memory itself.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace faultkit {
namespace track {

class WriteTracker {
public:
    // Opens a userfaultfd (user-mode-only, so unprivileged processes may
    // too) with asynchronous write protection, and /proc/self/pagemap, then
    // checks on two pages of its own that exactly the written one is
    // reported.  available() is false, with reason(), if anything fails, or
    // once someone else closed either descriptor (every call then returns
    // EBADF: see owned()).
    WriteTracker() noexcept;
    ~WriteTracker();
    WriteTracker(const WriteTracker&) = delete;
    WriteTracker& operator=(const WriteTracker&) = delete;

    bool available() const noexcept { return uffd_ >= 0 && pagemap_ >= 0; }
    const std::string& reason() const noexcept { return reason_; }
    static uint64_t page_size() noexcept;

    // Start tracking the pages holding [addr, addr + len): all become clean.
    // 0 on success; EEXIST if they overlap a range this tracker already
    // tracks; EINVAL for an empty range or memory that is not private,
    // anonymous and writable (checked in /proc/self/maps); EBUSY if another
    // userfaultfd registered them; other errno values from the kernel.
    int arm(uint64_t addr, uint64_t len);

    // The chunks of [addr, addr + len) (chunk k = bytes [k*chunk, (k+1)*chunk))
    // holding a page written, or not present, since arm() or the last
    // collect(): dirty[k] = 1 for them (others untouched; n_dirty must be
    // ceil(len / chunk)).  Those pages are protected again.  The range must be
    // the one given to arm().  0 on success; on any failure an errno value and
    // the range is no longer tracked (disarmed) -- report everything dirty.
    int collect(uint64_t addr, uint64_t len, uint64_t chunk, uint8_t* dirty, uint64_t n_dirty);

    // Stop tracking a range given to arm() (its pages lose their protection).
    // 0, or ENOENT if it is not tracked, or the kernel's errno (the range is
    // forgotten either way).
    int disarm(uint64_t addr, uint64_t len);

    // Disarm every range and close the descriptors (also run by the
    // destructor); available() is false afterwards.
    void close() noexcept;

    size_t tracked() const noexcept { return ranges_.size(); }

private:
    struct Range {
        uint64_t start, end;  // page-aligned
    };
    bool page_range(uint64_t addr, uint64_t len, Range& r) const noexcept;
    ptrdiff_t find(const Range& r) const noexcept;
    void forget(size_t i);
    // The descriptors act on the address space of the process that opened
    // them: in a forked child every call fails (ECHILD) and touches nothing.
    bool forked() const noexcept;
    // Whether both descriptors are still the files this tracker opened.
    // Someone may close them (os.closerange) and the numbers be reused, by
    // another tracker's userfaultfd say.  Closing ours dropped every
    // registration; scanning memory another tracker registered since would
    // steal that tracker's writes (PAGEMAP_SCAN re-protects pages whoever
    // registered them), and unregistering through a reused number would
    // drop its registrations.  If not, the tracker gives everything up
    // (available() false) without touching a descriptor that is not its own.
    bool owned() noexcept;

    struct FileId {
        uint64_t dev = 0, ino = 0;
    };
    static bool identify(int fd, FileId& id) noexcept;

    int pid_;
    int uffd_ = -1;
    int pagemap_ = -1;
    FileId uffd_id_, pagemap_id_;  // what the descriptors referred to when opened
    std::string reason_;
    std::vector<Range> ranges_;
    std::vector<uint64_t> regions_;  // PAGEMAP_SCAN output: (start, end, categories) triples
};

}  // namespace track
}  // namespace faultkit
