// An allocator for large arrays read at random: blocks of 2 MB or more are
// 2 MB-aligned and marked for transparent huge pages (madvise MADV_HUGEPAGE,
// Linux; elsewhere a plain aligned block), as numpy does for its own large
// arrays.  With 4 kB pages, a random access into an array much larger than
// the TLB's reach (a few MB) also misses the TLB and walks the page table;
// with 2 MB pages a 64 MB array needs 32 entries.
//
// Smaller blocks are 64-byte aligned (a cache line, enough for any element
// type here).  No Python.h, no clock.
#pragma once

#include <cstddef>
#include <cstdlib>
#include <new>

#if defined(__linux__)
#include <sys/mman.h>
#endif

namespace faultkit {

template <class T>
struct HugeAlloc {
    using value_type = T;
    static constexpr size_t HUGE = size_t{1} << 21;  // 2 MB
    static constexpr size_t LINE = 64;
    static_assert(alignof(T) <= LINE, "HugeAlloc aligns to a cache line at most");

    HugeAlloc() noexcept = default;
    template <class U>
    HugeAlloc(const HugeAlloc<U>&) noexcept {}

    T* allocate(size_t n) {
        if (n > static_cast<size_t>(-1) / sizeof(T) - HUGE) throw std::bad_alloc();
        const size_t bytes = n * sizeof(T);
        const size_t align = bytes >= HUGE ? HUGE : LINE;
        // aligned_alloc wants a size that is a multiple of the alignment.
        const size_t size = (bytes + align - 1) / align * align;
        void* p = std::aligned_alloc(align, size ? size : align);
        if (!p) throw std::bad_alloc();
#if defined(__linux__) && defined(MADV_HUGEPAGE)
        if (align == HUGE) (void)madvise(p, size, MADV_HUGEPAGE);  // a hint: failure is harmless
#endif
        return static_cast<T*>(p);
    }
    void deallocate(T* p, size_t) noexcept { std::free(p); }

    template <class U>
    bool operator==(const HugeAlloc<U>&) const noexcept {
        return true;
    }
    template <class U>
    bool operator!=(const HugeAlloc<U>&) const noexcept {
        return false;
    }
};

}  // namespace faultkit
