// Byte-buffer primitives of the checkpoint codec (docs/FORMAT.md): a growable
// little-endian writer and a bounds-checked reader.  Portable C++17, no Python.
//
// The reader never trusts a length: every take/skip is checked against the
// bytes that remain, and a failed check throws CodecError (the binding maps it
// to CorruptCheckpointError).  Counts of elements are checked against the
// remaining bytes before anything is allocated for them.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <new>
#include <stdexcept>
#include <string>

#include "faultkit/common/endian.h"

namespace faultkit {
namespace codec {

// Malformed, truncated or inconsistent input.  The message says what and where.
class CodecError : public std::runtime_error {
public:
    using std::runtime_error::runtime_error;
};

// A format version this reader cannot read (newer major).
class VersionError : public CodecError {
public:
    using CodecError::CodecError;
};

// A growable byte buffer (malloc/realloc, geometric growth).  Appends never
// fail silently: running out of memory throws std::bad_alloc.
class ByteBuffer {
public:
    ByteBuffer() = default;
    explicit ByteBuffer(size_t capacity) { reserve(capacity); }
    ByteBuffer(const ByteBuffer&) = delete;
    ByteBuffer& operator=(const ByteBuffer&) = delete;
    ByteBuffer(ByteBuffer&& o) noexcept : data_(o.data_), size_(o.size_), cap_(o.cap_) {
        o.data_ = nullptr;
        o.size_ = o.cap_ = 0;
    }
    ByteBuffer& operator=(ByteBuffer&& o) noexcept {
        if (this != &o) {
            std::free(data_);
            data_ = o.data_;
            size_ = o.size_;
            cap_ = o.cap_;
            o.data_ = nullptr;
            o.size_ = o.cap_ = 0;
        }
        return *this;
    }
    ~ByteBuffer() { std::free(data_); }

    const uint8_t* data() const { return data_; }
    uint8_t* data() { return data_; }
    size_t size() const { return size_; }
    size_t capacity() const { return cap_; }
    void clear() { size_ = 0; }

    // Make room for n more bytes (the fast path is one compare).
    void ensure(size_t n) {
        if (n > cap_ - size_) grow(n);
    }
    void reserve(size_t n) {
        if (n > cap_) grow(n - size_);
    }

    // Room for n more bytes; returns where they go and counts them as written.
    uint8_t* extend(size_t n) {
        ensure(n);
        uint8_t* p = data_ + size_;
        size_ += n;
        return p;
    }
    // Unchecked writers at a cursor (the caller has ensure()d the room); each
    // returns the end of what it wrote.  The put_* functions below load
    // data_/size_ once and store size_ once: byte stores may alias any
    // member, so writing through data_[size_++] would reload both each time.
    static uint8_t* at_varint(uint8_t* p, uint64_t v) {
        while (v >= 0x80) {
            *p++ = static_cast<uint8_t>(v | 0x80);
            v >>= 7;
        }
        *p++ = static_cast<uint8_t>(v);
        return p;
    }
    static uint8_t* at_bytes(uint8_t* d, const void* src, size_t n) {
        const uint8_t* p = static_cast<const uint8_t*>(src);
        // Short strings (dict keys, names) dominate object trees: copy them
        // with two overlapping fixed-size moves instead of a memcpy call.
        // Never reads or writes outside [p, p + n) and [d, d + n).
        if (n >= 8 && n <= 16) {
            uint64_t a, b;
            std::memcpy(&a, p, 8);
            std::memcpy(&b, p + n - 8, 8);
            std::memcpy(d, &a, 8);
            std::memcpy(d + n - 8, &b, 8);
        } else if (n >= 4 && n < 8) {
            uint32_t a, b;
            std::memcpy(&a, p, 4);
            std::memcpy(&b, p + n - 4, 4);
            std::memcpy(d, &a, 4);
            std::memcpy(d + n - 4, &b, 4);
        } else if (n < 4) {
            for (size_t i = 0; i < n; ++i) d[i] = p[i];
        } else {
            std::memcpy(d, p, n);
        }
        return d + n;
    }

    // Room for n more bytes at the returned cursor; commit(end) then counts
    // the bytes written there (end is past the last of them, at most n on).
    uint8_t* tail(size_t n) {
        ensure(n);
        return data_ + size_;
    }
    void commit(const uint8_t* end) { size_ = static_cast<size_t>(end - data_); }

    void put_u8(uint8_t v) {
        ensure(1);
        size_t s = size_;
        data_[s] = v;
        size_ = s + 1;
    }
    void put_tag_u64(uint8_t tag, uint64_t v) {
        ensure(9);
        size_t s = size_;
        uint8_t* p = data_ + s;
        p[0] = tag;
        store_le64(p + 1, v);
        size_ = s + 9;
    }
    void put_u16(uint16_t v) { store_le16(extend(2), v); }
    void put_u32(uint32_t v) { store_le32(extend(4), v); }
    void put_u64(uint64_t v) { store_le64(extend(8), v); }
    void put_bytes(const void* src, size_t n) {
        if (n) std::memcpy(extend(n), src, n);
    }
    // LEB128 unsigned varint (1..10 bytes).
    void put_varint(uint64_t v) {
        ensure(10);
        uint8_t* b = data_;
        size_ = static_cast<size_t>(at_varint(b + size_, v) - b);
    }
    // A tag byte followed by a varint (the common "tag + length" prefix).
    void put_tag_varint(uint8_t tag, uint64_t v) {
        ensure(11);
        uint8_t* b = data_;
        uint8_t* p = b + size_;
        *p = tag;
        size_ = static_cast<size_t>(at_varint(p + 1, v) - b);
    }
    // Tag, varint length n, then n bytes: one capacity check.
    void put_tagged_bytes(uint8_t tag, const void* src, size_t n) {
        if (n > SIZE_MAX - 11) throw std::bad_alloc();
        ensure(n + 11);
        uint8_t* b = data_;
        uint8_t* p = b + size_;
        *p = tag;
        p = at_varint(p + 1, n);
        size_ = static_cast<size_t>(at_bytes(p, src, n) - b);
    }
    void pad_to(size_t alignment) {
        size_t r = size_ % alignment;
        if (r) std::memset(extend(alignment - r), 0, alignment - r);
    }

private:
    // Grow to hold at least n more bytes (geometric).
    __attribute__((noinline)) void grow(size_t n) {
        if (n > SIZE_MAX - size_) throw std::bad_alloc();
        size_t need = size_ + n;
        size_t cap = cap_ ? cap_ : 256;
        while (cap < need) {
            if (cap > (SIZE_MAX >> 1)) throw std::bad_alloc();
            cap <<= 1;
        }
        void* p = std::realloc(data_, cap);
        if (!p) throw std::bad_alloc();
        data_ = static_cast<uint8_t*>(p);
        cap_ = cap;
    }

    uint8_t* data_ = nullptr;
    size_t size_ = 0;
    size_t cap_ = 0;
};

// A bounds-checked cursor over [begin, end).  `what` names the structure
// being read so that errors say where the input went wrong.
class Reader {
public:
    Reader(const uint8_t* data, size_t size) : begin_(data), p_(data), end_(data + size) {}

    size_t remaining() const { return static_cast<size_t>(end_ - p_); }
    size_t position() const { return static_cast<size_t>(p_ - begin_); }
    bool at_end() const { return p_ == end_; }

    [[noreturn]] void fail(const char* what) const {
        throw CodecError(std::string(what) + " at byte " + std::to_string(position()));
    }

    uint8_t u8() {
        if (p_ == end_) fail("truncated: expected a byte");
        return *p_++;
    }
    uint64_t u64() {
        if (remaining() < 8) fail("truncated: expected 8 bytes");
        uint64_t v = load_le64(p_);
        p_ += 8;
        return v;
    }
    uint64_t varint() {
        if (p_ != end_ && *p_ < 0x80) return *p_++;  // one byte: most lengths and counts
        return varint_long();
    }
    uint64_t varint_long() {
        uint64_t v = 0;
        for (int shift = 0; shift < 64; shift += 7) {
            if (p_ == end_) fail("truncated varint");
            uint8_t b = *p_++;
            if (shift == 63 && (b & 0x7E)) fail("varint overflows 64 bits");
            v |= static_cast<uint64_t>(b & 0x7F) << shift;
            if (!(b & 0x80)) {
                // Canonical (shortest) form only, as writers produce it: a
                // last byte of 0 after others means redundant zero groups.
                if (b == 0 && shift) fail("non-canonical varint (redundant trailing zero byte)");
                return v;
            }
        }
        fail("varint longer than 10 bytes");
    }
    // n bytes, checked against what remains; returns their start.
    const uint8_t* take(uint64_t n) {
        if (n > remaining()) fail("length exceeds the remaining bytes");
        const uint8_t* p = p_;
        p_ += n;
        return p;
    }
    // A count of items each needing at least `min_item_bytes`: rejects counts
    // the remaining bytes cannot hold, before anything is allocated.
    uint64_t count(size_t min_item_bytes) {
        uint64_t n = varint();
        if (min_item_bytes && n > remaining() / min_item_bytes)
            fail("element count exceeds the remaining bytes");
        return n;
    }

private:
    const uint8_t* begin_;
    const uint8_t* p_;
    const uint8_t* end_;
};

}  // namespace codec
}  // namespace faultkit
