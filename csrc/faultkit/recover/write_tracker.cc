// Write tracking with userfaultfd async write protection and PAGEMAP_SCAN;
// see write_tracker.h.
#include "faultkit/recover/write_tracker.h"

#include <errno.h>

#include <cstring>

#ifdef __linux__
#include <fcntl.h>
#include <linux/userfaultfd.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>
#endif

namespace faultkit {
namespace track {

#if defined(__linux__) && defined(__NR_userfaultfd)

namespace {

// Kernel ABI constants newer than some build hosts' headers (values from
// include/uapi/linux/userfaultfd.h and fs.h of Linux 6.7+; they never change).
#ifndef UFFD_USER_MODE_ONLY
#define UFFD_USER_MODE_ONLY 1
#endif
#ifndef UFFD_FEATURE_WP_UNPOPULATED
#define UFFD_FEATURE_WP_UNPOPULATED (1ULL << 13)
#endif
#ifndef UFFD_FEATURE_WP_ASYNC
#define UFFD_FEATURE_WP_ASYNC (1ULL << 15)
#endif

struct ScanArg {  // struct pm_scan_arg
    uint64_t size, flags, start, end, walk_end, vec, vec_len, max_pages;
    uint64_t category_inverted, category_mask, category_anyof_mask, return_mask;
};
static_assert(sizeof(ScanArg) == 96, "pm_scan_arg is 96 bytes");
constexpr unsigned long kPagemapScan = _IOWR('f', 16, ScanArg);  // PAGEMAP_SCAN
constexpr uint64_t kScanWpMatching = 1u << 0;  // PM_SCAN_WP_MATCHING
constexpr uint64_t kScanCheckWpAsync = 1u << 1;  // PM_SCAN_CHECK_WPASYNC
constexpr uint64_t kPageIsWritten = 1u << 1;  // PAGE_IS_WRITTEN
constexpr uint64_t kPageIsPresent = 1u << 3;  // PAGE_IS_PRESENT
constexpr size_t kRegions = 512;  // output records per scan call

int err_or(int fallback) { return errno ? errno : fallback; }

// Read a whole /proc file (sizes are not known in advance).
bool read_file(const char* path, std::string& out) {
    int fd = ::open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return false;
    out.clear();
    char buf[16384];
    for (;;) {
        ssize_t n = ::read(fd, buf, sizeof buf);
        if (n < 0) {
            if (errno == EINTR) continue;
            ::close(fd);
            return false;
        }
        if (n == 0) break;
        out.append(buf, static_cast<size_t>(n));
    }
    ::close(fd);
    return true;
}

bool parse_hex(const char*& p, const char* end, uint64_t& v) {
    const char* start = p;
    v = 0;
    while (p < end) {
        char c = *p;
        int d = (c >= '0' && c <= '9') ? c - '0' : (c >= 'a' && c <= 'f') ? c - 'a' + 10 : -1;
        if (d < 0) break;
        if (v >> 60) return false;
        v = v * 16 + static_cast<uint64_t>(d);
        ++p;
    }
    return p > start;
}

// Whether [start, end) is covered, without gaps, by mappings that are
// readable, writable, private and anonymous (device 00:00, inode 0): memory
// nobody else can write through another mapping, and not backed by a file
// whose contents could change underneath.
bool private_anonymous(uint64_t start, uint64_t end) {
    std::string maps;
    if (!read_file("/proc/self/maps", maps)) return false;
    uint64_t covered = start;  // [start, covered) verified so far
    const char* p = maps.data();
    const char* const stop = p + maps.size();
    while (p < stop && covered < end) {
        const char* eol =
            static_cast<const char*>(std::memchr(p, '\n', static_cast<size_t>(stop - p)));
        if (!eol) eol = stop;
        // "lo-hi perms offset dev inode path"
        uint64_t lo, hi, offset;
        const char* q = p;
        bool ok = parse_hex(q, eol, lo) && q < eol && *q++ == '-' && parse_hex(q, eol, hi) &&
                  q < eol && *q++ == ' ';
        if (ok && hi > covered && lo < end) {
            if (lo > covered) return false;  // a gap
            ok = eol - q >= 5 && q[0] == 'r' && q[1] == 'w' && q[3] == 'p' && q[4] == ' ';
            q += 5;
            ok = ok && parse_hex(q, eol, offset) && q < eol && *q++ == ' ';
            ok = ok && eol - q >= 6 && std::memcmp(q, "00:00 ", 6) == 0;
            q += 6;
            ok = ok && q < eol && *q == '0' && (q + 1 == eol || q[1] == ' ');
            if (!ok) return false;
            covered = hi;
        }
        p = eol + 1;
    }
    return covered >= end;
}

}  // namespace

uint64_t WriteTracker::page_size() noexcept {
    static const uint64_t ps = [] {
        long v = ::sysconf(_SC_PAGESIZE);
        return v > 0 ? static_cast<uint64_t>(v) : 4096u;
    }();
    return ps;
}

WriteTracker::WriteTracker() noexcept : pid_(::getpid()) {
    try {
        regions_.resize(3 * kRegions);
    } catch (...) {
        reason_ = "out of memory";
        return;
    }
    int fd =
        static_cast<int>(::syscall(__NR_userfaultfd, O_CLOEXEC | O_NONBLOCK | UFFD_USER_MODE_ONLY));
    if (fd < 0) {
        reason_ = std::string("userfaultfd: ") + std::strerror(errno);
        return;
    }
    struct uffdio_api api;
    std::memset(&api, 0, sizeof api);
    api.api = UFFD_API;
    api.features = UFFD_FEATURE_WP_ASYNC | UFFD_FEATURE_WP_UNPOPULATED;
    if (::ioctl(fd, UFFDIO_API, &api) != 0 || !(api.features & UFFD_FEATURE_WP_ASYNC)) {
        reason_ = std::string("userfaultfd lacks asynchronous write protection (Linux >= 6.7): ") +
                  std::strerror(errno ? errno : ENOTSUP);
        ::close(fd);
        return;
    }
    int pm = ::open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC);
    if (pm < 0) {
        reason_ = std::string("/proc/self/pagemap: ") + std::strerror(errno);
        ::close(fd);
        return;
    }
    if (!identify(fd, uffd_id_) || !identify(pm, pagemap_id_)) {
        reason_ = std::string("fstat: ") + std::strerror(errno);
        ::close(fd);
        ::close(pm);
        return;
    }
    uffd_ = fd;
    pagemap_ = pm;
    // Self-test on two pages of our own: only the written one may be reported.
    const uint64_t ps = page_size();
    void* mem = ::mmap(nullptr, 2 * ps, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (mem == MAP_FAILED) {
        reason_ = std::string("mmap: ") + std::strerror(errno);
    } else {
        volatile uint8_t* b = static_cast<uint8_t*>(mem);
        b[0] = 1;
        b[ps] = 1;
        uint64_t a = reinterpret_cast<uintptr_t>(mem);
        uint8_t d1[2] = {0, 0}, d2[2] = {0, 0};
        int e = arm(a, 2 * ps);
        if (!e) {
            b[ps] = 2;
            e = collect(a, 2 * ps, ps, d1, 2);
        }
        if (!e) e = collect(a, 2 * ps, ps, d2, 2);
        if (e) {
            reason_ = std::string("write tracking self-test: ") + std::strerror(e);
        } else if (d1[0] || !d1[1] || d2[0] || d2[1]) {
            reason_ = "write tracking self-test: the kernel reported the wrong pages";
        }
        disarm(a, 2 * ps);
        ::munmap(mem, 2 * ps);
    }
    if (!reason_.empty()) {
        ::close(uffd_);
        ::close(pagemap_);
        uffd_ = pagemap_ = -1;
    }
}

WriteTracker::~WriteTracker() { close(); }

void WriteTracker::close() noexcept {
    if (!forked() && uffd_ >= 0 && !owned()) return;  // gave up, closing only its own descriptors
    if (forked()) {
        ranges_.clear();  // another process's registrations: not ours to touch
    } else {
        while (!ranges_.empty())
            disarm(ranges_.back().start, ranges_.back().end - ranges_.back().start);
    }
    if (uffd_ >= 0) ::close(uffd_);
    if (pagemap_ >= 0) ::close(pagemap_);
    uffd_ = pagemap_ = -1;
    if (reason_.empty()) reason_ = "closed";
}

bool WriteTracker::forked() const noexcept { return ::getpid() != pid_; }

bool WriteTracker::identify(int fd, FileId& id) noexcept {
    struct stat st;
#if defined(__x86_64__) || defined(__aarch64__)
    // The system call, not glibc's fstat: since glibc 2.33 that is an exported
    // symbol of its own (fstat@GLIBC_2.33), which would raise a wheel's
    // manylinux floor.  On these architectures the kernel's struct stat is
    // glibc's.
    if (::syscall(SYS_fstat, fd, &st) != 0) return false;
#else
    if (::fstat(fd, &st) != 0) return false;
#endif
    id.dev = static_cast<uint64_t>(st.st_dev);
    id.ino = static_cast<uint64_t>(st.st_ino);
    return true;
}

bool WriteTracker::owned() noexcept {
    if (uffd_ < 0) return false;
    FileId u, p;
    const bool uffd_ok = identify(uffd_, u) && u.dev == uffd_id_.dev && u.ino == uffd_id_.ino;
    const bool pm_ok =
        identify(pagemap_, p) && p.dev == pagemap_id_.dev && p.ino == pagemap_id_.ino;
    if (uffd_ok && pm_ok) return true;
    if (uffd_ok) {  // still ours: release our registrations, as close() would
        for (const Range& r : ranges_) {
            struct uffdio_range u2 = {r.start, r.end - r.start};
            ::ioctl(uffd_, UFFDIO_UNREGISTER, &u2);
        }
        ::close(uffd_);
    }
    if (pm_ok) ::close(pagemap_);
    ranges_.clear();
    uffd_ = pagemap_ = -1;
    reason_ = "a write tracker descriptor was closed by someone else";
    return false;
}

bool WriteTracker::page_range(uint64_t addr, uint64_t len, Range& r) const noexcept {
    const uint64_t ps = page_size();
    if (len == 0 || addr + len < addr || addr + len > UINT64_MAX - ps) return false;
    r.start = addr & ~(ps - 1);
    r.end = (addr + len + ps - 1) & ~(ps - 1);
    return true;
}

ptrdiff_t WriteTracker::find(const Range& r) const noexcept {
    for (size_t i = 0; i < ranges_.size(); ++i)
        if (ranges_[i].start == r.start && ranges_[i].end == r.end)
            return static_cast<ptrdiff_t>(i);
    return -1;
}

void WriteTracker::forget(size_t i) {
    ranges_[i] = ranges_.back();
    ranges_.pop_back();
}

int WriteTracker::arm(uint64_t addr, uint64_t len) {
    if (!available()) return ENOTSUP;
    if (forked()) return ECHILD;  // the fds act on the parent's address space
    if (!owned()) return EBADF;
    Range r;
    if (!page_range(addr, len, r)) return EINVAL;
    for (const Range& o : ranges_)
        if (o.start < r.end && r.start < o.end) return EEXIST;
    if (!private_anonymous(r.start, r.end)) return EINVAL;
    struct uffdio_register reg;
    std::memset(&reg, 0, sizeof reg);
    reg.range.start = r.start;
    reg.range.len = r.end - r.start;
    reg.mode = UFFDIO_REGISTER_MODE_WP;
    errno = 0;
    if (::ioctl(uffd_, UFFDIO_REGISTER, &reg) != 0) return err_or(EINVAL);
    try {
        ranges_.push_back(r);
    } catch (...) {
        struct uffdio_range u = {r.start, r.end - r.start};
        ::ioctl(uffd_, UFFDIO_UNREGISTER, &u);
        return ENOMEM;
    }
    int e = 0;
    if (!(reg.ioctls & (1ULL << _UFFDIO_WRITEPROTECT))) {
        e = ENOTSUP;
    } else {
        struct uffdio_writeprotect wp;
        std::memset(&wp, 0, sizeof wp);
        wp.range.start = r.start;
        wp.range.len = r.end - r.start;
        wp.mode = UFFDIO_WRITEPROTECT_MODE_WP;
        errno = 0;
        if (::ioctl(uffd_, UFFDIO_WRITEPROTECT, &wp) != 0) e = err_or(EIO);
    }
    if (e) disarm(addr, len);
    return e;
}

int WriteTracker::collect(uint64_t addr, uint64_t len, uint64_t chunk, uint8_t* dirty,
                          uint64_t n_dirty) {
    if (!available()) return ENOTSUP;
    if (forked()) return ECHILD;
    if (!owned()) return EBADF;
    Range r;
    if (!page_range(addr, len, r) || chunk == 0 || dirty == nullptr ||
        n_dirty != (len - 1) / chunk + 1)
        return EINVAL;
    ptrdiff_t at = find(r);
    if (at < 0) return ENOENT;
    const uint64_t lo_addr = addr, hi_addr = addr + len;
    uint64_t s = r.start;
    while (s < r.end) {
        ScanArg arg;
        std::memset(&arg, 0, sizeof arg);
        arg.size = sizeof arg;
        arg.flags = kScanWpMatching | kScanCheckWpAsync;
        arg.start = s;
        arg.end = r.end;
        arg.vec = reinterpret_cast<uintptr_t>(regions_.data());
        arg.vec_len = kRegions;
        // Match pages written or not present: (categories ^ PRESENT) & (WRITTEN | PRESENT).
        arg.category_inverted = kPageIsPresent;
        arg.category_anyof_mask = kPageIsWritten | kPageIsPresent;
        arg.return_mask = kPageIsWritten | kPageIsPresent;
        errno = 0;
        long n = ::ioctl(pagemap_, kPagemapScan, &arg);
        if (n < 0 || static_cast<uint64_t>(n) > kRegions) {
            // Pages may have been protected without being reported: give the range up.
            int e = err_or(EIO);
            disarm(addr, len);
            return e;
        }
        for (long i = 0; i < n; ++i) {
            uint64_t rs = regions_[3 * i], re = regions_[3 * i + 1];
            if (rs >= re || rs < s || re > r.end) {
                disarm(addr, len);
                return EIO;
            }
            uint64_t a = rs > lo_addr ? rs : lo_addr, b = re < hi_addr ? re : hi_addr;
            if (a >= b) continue;  // page-rounding slack outside the caller's bytes
            for (uint64_t k = (a - lo_addr) / chunk, last = (b - 1 - lo_addr) / chunk; k <= last;
                 ++k)
                dirty[k] = 1;
        }
        if (arg.walk_end <= s || arg.walk_end > r.end) {  // no progress, or past the range
            disarm(addr, len);
            return EIO;
        }
        s = arg.walk_end;
    }
    return 0;
}

int WriteTracker::disarm(uint64_t addr, uint64_t len) {
    Range r;
    if (!page_range(addr, len, r)) return EINVAL;
    ptrdiff_t at = find(r);
    if (at < 0) return ENOENT;
    forget(static_cast<size_t>(at));
    if (forked() || uffd_ < 0) return 0;
    if (!owned()) return EBADF;
    struct uffdio_range u = {r.start, r.end - r.start};
    errno = 0;
    return ::ioctl(uffd_, UFFDIO_UNREGISTER, &u) == 0 ? 0 : err_or(EIO);
}

#else  // not Linux

uint64_t WriteTracker::page_size() noexcept { return 4096; }
WriteTracker::WriteTracker() noexcept : pid_(0) { reason_ = "write tracking needs Linux >= 6.7"; }
WriteTracker::~WriteTracker() {}
void WriteTracker::close() noexcept {}
bool WriteTracker::forked() const noexcept { return false; }
bool WriteTracker::identify(int, FileId&) noexcept { return false; }
bool WriteTracker::owned() noexcept { return false; }
bool WriteTracker::page_range(uint64_t, uint64_t, Range&) const noexcept { return false; }
ptrdiff_t WriteTracker::find(const Range&) const noexcept { return -1; }
void WriteTracker::forget(size_t) {}
int WriteTracker::arm(uint64_t, uint64_t) { return ENOTSUP; }
int WriteTracker::collect(uint64_t, uint64_t, uint64_t, uint8_t*, uint64_t) { return ENOTSUP; }
int WriteTracker::disarm(uint64_t, uint64_t) { return ENOENT; }

#endif

}  // namespace track
}  // namespace faultkit
