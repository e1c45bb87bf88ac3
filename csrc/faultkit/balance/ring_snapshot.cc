// The segmented ring's snapshots: segment lookups, retiring segments, the
// read side (owner lookups, exports, distribution) and publication of a new
// snapshot by the writer.
#include <algorithm>
#include <atomic>
#include <memory>
#include <vector>

#include "faultkit/balance/ring_internal.h"

namespace faultkit {

using namespace ring_detail;

uint32_t RingSegment::bisect(uint32_t lo, uint32_t hi, uint64_t h) const noexcept {
    const RingPoint* r = records();
    return static_cast<uint32_t>(
        std::lower_bound(r + lo, r + hi, h,
                         [](const RingPoint& p, uint64_t v) { return p.point < v; }) -
        r);
}

RetiredSegments::~RetiredSegments() {
    for (const RingSegment* s : segs) SegmentBuilder::free(s);
    // Free the rest of the chain iteratively, not by recursive destructors:
    // while we hold the last reference to the next link, unhook its own next
    // before dropping it.  use_count() == 1 means no one else owns it (no
    // weak_ptrs exist, and a copy needs an owner); the fence orders our reads
    // of it after the release decrements of its former owners.
    std::shared_ptr<RetiredSegments> n = std::move(next);
    while (n && n.use_count() == 1) {
        std::atomic_thread_fence(std::memory_order_acquire);
        std::shared_ptr<RetiredSegments> after = std::move(n->next);
        n.reset();
        n = std::move(after);
    }
}

// -- snapshot lookups --------------------------------------------------------

RingSnapshot::Cursor RingSnapshot::locate(uint64_t h) const noexcept {
    const uint64_t g = h >> gshift_;
    const uint32_t i = static_cast<uint32_t>(g >> RingSegment::kLocalBits);
    const uint32_t pos =
        dir_[i]->position(static_cast<uint32_t>(g & (RingSegment::kBuckets - 1)), h);
    if (pos == dir_[i]->count()) return {next_nonempty(i), 0};
    return {i, pos};
}

int32_t RingSnapshot::live_owner(uint64_t h, const uint8_t* alive) const noexcept {
    if (size_ == 0) return -1;
    if (alive == nullptr) return owner(h);
    Cursor c = locate(h);
    for (uint32_t step = 0; step < size_; ++step) {
        const int32_t o = node_at(c);
        if (o >= 0 && alive[o]) return o;
        advance(c);
    }
    return -1;
}

int32_t RingSnapshot::live_owners_n(uint64_t h, const uint8_t* alive, int32_t n, int32_t* out,
                                    uint8_t* seen) const noexcept {
    if (size_ == 0 || n <= 0) return 0;
    Cursor c = locate(h);
    int32_t found = 0;
    for (uint32_t step = 0; step < size_ && found < n; ++step) {
        const int32_t o = node_at(c);
        advance(c);
        if (o < 0 || (alive != nullptr && !alive[o])) continue;
        bool dup = false;
        if (seen != nullptr) {
            dup = seen[o] != 0;
            seen[o] = 1;
        } else {
            for (int32_t j = 0; j < found; ++j) dup |= out[j] == o;
        }
        if (!dup) out[found++] = o;
    }
    if (seen != nullptr)
        for (int32_t j = 0; j < found; ++j) seen[out[j]] = 0;
    return found;
}

void RingSnapshot::live_owner_many(const uint64_t* hashes, size_t count, const uint8_t* alive,
                                   int32_t* out) const noexcept {
    if (size_ == 0) {
        for (size_t i = 0; i < count; ++i) out[i] = -1;
        return;
    }
    if (alive == nullptr) {
        // Locals, not members: stores to out (int32) could alias int members.
        const RingSegment* const* dir = dir_.data();
        const int32_t* slots = slot_index_.data();
        const int gshift = gshift_;
        const auto slot = [dir, gshift](uint64_t h) {
            const uint64_t g = h >> gshift;
            const RingSegment* seg = dir[g >> RingSegment::kLocalBits];
            const uint32_t b = static_cast<uint32_t>(g & (RingSegment::kBuckets - 1));
            return seg->records()[seg->position(b, h)].owner;
        };
        if (identity_) {  // no node removed since slots were numbered: slot = index
            for (size_t i = 0; i < count; ++i) out[i] = slot(hashes[i]);
            return;
        }
        for (size_t i = 0; i < count; ++i) out[i] = slots[slot(hashes[i])];
        return;
    }
    for (size_t i = 0; i < count; ++i) {
        const int32_t o = owner(hashes[i]);
        out[i] = o >= 0 && alive[o] ? o : live_owner(hashes[i], alive);
    }
}

void RingSnapshot::export_points(uint64_t* points, int32_t* owners) const noexcept {
    size_t k = 0;
    for (const RingSegment* seg : dir_) {
        const RingPoint* r = seg->records();
        for (uint32_t i = 0; i < seg->count(); ++i, ++k) {
            points[k] = r[i].point;
            owners[k] = slot_index(r[i].owner);
        }
    }
}

void RingSnapshot::distribution(const uint8_t* alive, int32_t n_nodes, double* out) const {
    for (int32_t i = 0; i < n_nodes; ++i) out[i] = 0.0;
    if (size_ == 0) return;
    std::vector<uint64_t> points(size_);
    std::vector<int32_t> owners(size_);
    export_points(points.data(), owners.data());
    const auto up = [&](int32_t o) { return o >= 0 && (alive == nullptr || alive[o]); };
    // Walk backwards from the last point so the "next live owner" of each
    // point is known when its arc (from the previous point, exclusive, up to
    // it, inclusive) is credited; the live owner after the top comes first.
    int32_t next_live = -1;
    for (uint32_t k = 0; k < size_ && next_live < 0; ++k)
        if (up(owners[k])) next_live = owners[k];
    if (next_live < 0) return;  // nothing is up
    constexpr double kSpan = 18446744073709551616.0;  // 2^64
    for (uint32_t k = size_; k-- > 0;) {
        if (up(owners[k])) next_live = owners[k];
        const uint64_t arc = k ? points[k] - points[k - 1] : points[0] - points[size_ - 1];
        double share = static_cast<double>(arc) / kSpan;
        if (k == 0 && size_ == 1) share = 1.0;
        if (next_live < n_nodes) out[next_live] += share;
    }
}

// -- publication ---------------------------------------------------------------

SegmentedRing::SegmentedRing()
    : cur_(std::make_shared<RingSnapshot>()), tail_(std::make_shared<RetiredSegments>()) {
    cur_->dir_.assign(2, SegmentBuilder::empty());
    cur_->retired_ = tail_;
}

SegmentedRing::~SegmentedRing() {
    std::lock_guard<std::mutex> lock(mu_);
    // Readers may still hold the current snapshot: its segments go to the
    // link it holds, freed with the last such snapshot.
    try {
        for (const RingSegment* seg : cur_->dir_)
            if (seg != SegmentBuilder::empty()) tail_->segs.push_back(seg);
    } catch (...) {  // out of memory: leak rather than free what a reader may use
    }
    cur_.reset();
    tail_.reset();
}

void SegmentedRing::set_simd(bool on) {
    std::lock_guard<std::mutex> lock(mu_);
    simd_ = on;
}

std::shared_ptr<RingSnapshot> SegmentedRing::snapshot() const {
    std::lock_guard<std::mutex> lock(mu_);
    return cur_;
}

std::shared_ptr<RingSnapshot> SegmentedRing::successor(const RingSnapshot& cur) {
    auto next = std::make_shared<RingSnapshot>();
    next->dir_ = cur.dir_;
    next->bits_ = cur.bits_;
    next->shift_ = cur.shift_;
    next->gshift_ = cur.gshift_;
    return next;
}

void SegmentedRing::publish(std::shared_ptr<RingSnapshot> next,
                            std::shared_ptr<RetiredSegments> link) noexcept {
    next->retired_ = link;
    tail_->next = link;
    tail_ = std::move(link);
    cur_ = std::move(next);
}

void SegmentedRing::collect(const RingSnapshot& s, std::vector<RingPoint>& out) const {
    out.reserve(out.size() + s.size());
    for (const RingSegment* seg : s.dir_)
        out.insert(out.end(), seg->records(), seg->records() + seg->count());
}

}  // namespace faultkit
