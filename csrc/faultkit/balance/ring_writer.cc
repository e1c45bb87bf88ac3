// The segmented ring's writer: changes (add, remove, renumber, assign)
// that rewrite only the segments they touch, relinking their neighbours'
// sentinels, then publish one new snapshot.
#include <algorithm>
#include <cstring>
#include <memory>
#include <stdexcept>
#include <vector>

#include "faultkit/balance/ring_internal.h"

namespace faultkit {

using namespace ring_detail;

namespace {

// After a change placed new segments at `touched` (a fresh flag each, in
// `fresh`): give each new segment the owner of the first point after it,
// and give each touched range's predecessors (back to the previous nonempty
// segment) the first owner at or after it, copying an old predecessor only
// if its sentinel changes (when a segment's first point changed).
void relink(std::vector<const RingSegment*>& dir, const std::vector<uint32_t>& touched,
            std::vector<uint8_t>& fresh, std::vector<const RingSegment*>& built,
            std::vector<const RingSegment*>& replaced) {
    const uint32_t mask = static_cast<uint32_t>(dir.size()) - 1;
    const auto owned = [&](uint32_t j) { return const_cast<RingSegment*>(dir[j]); };
    for (uint32_t t : touched)
        SegmentBuilder::set_sentinel(owned(t), first_owner_from(dir, (t + 1) & mask));
    for (uint32_t t : touched) {
        const int32_t v = first_owner_from(dir, t);
        uint32_t j = t;
        do {
            j = (j - 1) & mask;
            if (SegmentBuilder::sentinel(dir[j]) != v) {
                if (fresh[j]) {
                    SegmentBuilder::set_sentinel(owned(j), v);
                } else {
                    built.push_back(nullptr);  // grow first, so the copy is never unowned
                    RingSegment* c = SegmentBuilder::resentinel(dir[j], v);
                    built.back() = c;
                    replaced.push_back(dir[j]);
                    dir[j] = c;
                    fresh[j] = 1;
                }
            }
        } while (dir[j]->count() == 0 && j != t);
    }
}

void check_owners(const std::vector<RingPoint>& pts, size_t slots) {
    for (const RingPoint& p : pts)
        if (p.owner < 0 || static_cast<size_t>(p.owner) >= slots)
            throw std::invalid_argument("ring point owner outside the slot map");
}
}  // namespace

std::shared_ptr<RingSnapshot> SegmentedRing::assign(std::vector<RingPoint>& pts,
                                                    bool high_owner_first,
                                                    std::vector<int32_t> slot_index) {
    std::lock_guard<std::mutex> lock(mu_);
    rebuild_all(pts, std::move(slot_index), high_owner_first);
    return cur_;
}

std::shared_ptr<RingSnapshot> SegmentedRing::add(std::vector<RingPoint>& pts,
                                                 std::vector<int32_t> slot_index) {
    std::lock_guard<std::mutex> lock(mu_);
    check_owners(pts, slot_index.size());
    const RingSnapshot& cur = *cur_;
    const size_t total = size_t{cur.size_} + pts.size();
    if (total > kMaxRingPoints) throw std::overflow_error("too many ring points");
    // Many points at once (or a ring that outgrows its directory): one fresh
    // partition of everything costs less than merging segment by segment.
    if (cur.size_ == 0 || pts.size() > cur.size_ / 4 ||
        (total > (size_t{kGrowAvg} << cur.bits_) && cur.bits_ < kMaxDirBits)) {
        collect(cur, pts);
        rebuild_all(pts, std::move(slot_index), high_first_);
        return cur_;
    }
    const bool high_first = high_first_;
    std::sort(pts.begin(), pts.end(), [high_first](const RingPoint& a, const RingPoint& b) {
        return point_less(a.point, a.owner, b.point, b.owner, high_first);
    });
    auto next = successor(cur);
    auto link = std::make_shared<RetiredSegments>();
    next->size_ = static_cast<uint32_t>(total);
    const int gshift = cur.gshift_;
    const auto position = [gshift](const RingSegment* seg, uint64_t h) {
        return seg->position(SegmentBuilder::bucket(h, gshift), h);
    };
    Built built;
    built.segs.reserve(pts.size());
    std::vector<const RingSegment*> replaced;
    replaced.reserve(pts.size());
    std::vector<uint32_t> touched;
    touched.reserve(pts.size());
    std::vector<uint8_t> fresh(cur.dir_.size(), 0);
    for (size_t a = 0; a < pts.size();) {
        const uint32_t i = static_cast<uint32_t>(pts[a].point >> cur.shift_);
        size_t b = a + 1;
        while (b < pts.size() && (pts[b].point >> cur.shift_) == i) ++b;
        const RingSegment* old = cur.dir_[i];
        RingSegment* s = SegmentBuilder::alloc(static_cast<uint32_t>(old->count() + (b - a)));
        built.segs.push_back(s);
        RingPoint* r = SegmentBuilder::records(s);
        const RingPoint* o = old->records();
        const uint32_t n_old = old->count();
        uint32_t x = 0, k = 0;
        // Each new point goes after the old points below it (and, unless
        // high_first, after the old points equal to it): find that position
        // with the old segment's index and copy the run before it at once.
        for (size_t y = a; y < b; ++y) {
            const uint64_t p = pts[y].point;
            uint32_t at;
            if (high_first)
                at = position(old, p);  // before the old points equal to p
            else if (p == kTop || ((p + 1) >> cur.shift_) != i)
                at = n_old;  // p is the top of this segment's range
            else
                at = position(old, p + 1);  // after those equal to p
            if (at < x) at = x;  // cannot happen (pts are sorted); keeps the copy in bounds
            std::memcpy(r + k, o + x, (at - x) * sizeof(RingPoint));
            k += at - x;
            x = at;
            r[k++] = pts[y];
        }
        std::memcpy(r + k, o + x, (n_old - x) * sizeof(RingPoint));
        k += n_old - x;
        r[k] = {kTop, 0};
        SegmentBuilder::copy_index(s, old);
        for (size_t y = a; y < b; ++y) SegmentBuilder::shift_index(s, pts[y].point, +1, gshift);
        next->dir_[i] = s;
        touched.push_back(i);
        fresh[i] = 1;
        if (old != SegmentBuilder::empty()) replaced.push_back(old);
        a = b;
    }
    relink(next->dir_, touched, fresh, built.segs, replaced);
    std::vector<uint32_t> per_slot(slot_points_);
    per_slot.resize(slot_index.size(), 0);
    for (const RingPoint& p : pts) ++per_slot[p.owner];
    next->set_slot_index(std::move(slot_index));
    tail_->segs.reserve(tail_->segs.size() + replaced.size());
    tail_->segs.insert(tail_->segs.end(), replaced.begin(), replaced.end());  // no throw
    built.committed = true;
    last_written_ = static_cast<uint32_t>(built.segs.size());
    slot_points_.swap(per_slot);
    publish(std::move(next), std::move(link));
    return cur_;
}

std::shared_ptr<RingSnapshot> SegmentedRing::remove(const std::vector<RingPoint>& hint,
                                                    const uint8_t* drop, size_t drop_len,
                                                    std::vector<int32_t> slot_index) {
    std::lock_guard<std::mutex> lock(mu_);
    const RingSnapshot& cur = *cur_;
    if (drop_len != cur.slot_index_.size())
        throw std::invalid_argument("drop mask length differs from the slot count");
    const auto dropped = [drop, drop_len](int32_t o) {
        return o >= 0 && static_cast<size_t>(o) < drop_len && drop[o] != 0;
    };
    auto next = successor(cur);
    auto link = std::make_shared<RetiredSegments>();
    const int gshift = cur.gshift_;
    Built built;
    std::vector<const RingSegment*> replaced;
    std::vector<uint32_t> touched;
    std::vector<uint8_t> fresh(cur.dir_.size(), 0);
    uint64_t removed = 0;
    uint64_t expected = 0;  // the dropped owners' points
    for (size_t x = 0; x < drop_len && x < slot_points_.size(); ++x)
        if (drop[x]) expected += slot_points_[x];
    // A new segment i: the old one without the records at the sorted
    // positions `gone` (runs between them are copied at once).
    std::vector<uint32_t> gone;
    const auto rewrite = [&](uint32_t i) {
        const RingSegment* old = cur.dir_[i];
        const RingPoint* o = old->records();
        const uint32_t n_old = old->count();
        const uint32_t kept = n_old - static_cast<uint32_t>(gone.size());
        removed += gone.size();
        replaced.push_back(old);
        touched.push_back(i);
        fresh[i] = 1;
        built.segs.push_back(nullptr);  // grow first, so the new segment is never unowned
        if (kept == 0) {  // an empty range: a stub (relink sets its sentinel)
            RingSegment* st = SegmentBuilder::stub(0);
            built.segs.back() = st;
            next->dir_[i] = st;
            return;
        }
        RingSegment* s = SegmentBuilder::alloc(kept);
        built.segs.back() = s;
        RingPoint* r = SegmentBuilder::records(s);
        SegmentBuilder::copy_index(s, old);
        uint32_t x = 0, k = 0;
        for (uint32_t at : gone) {
            std::memcpy(r + k, o + x, (at - x) * sizeof(RingPoint));
            k += at - x;
            SegmentBuilder::shift_index(s, o[at].point, -1, gshift);
            x = at + 1;
        }
        std::memcpy(r + k, o + x, (n_old - x) * sizeof(RingPoint));
        r[kept] = {kTop, 0};
        next->dir_[i] = s;
    };
    // Fast path: find each hinted point with the old segment's index.
    std::vector<RingPoint> pts(hint);
    std::sort(pts.begin(), pts.end(), [](const RingPoint& a, const RingPoint& b) {
        return a.point < b.point || (a.point == b.point && a.owner < b.owner);
    });
    bool exact = true;
    for (size_t a = 0; a < pts.size() && exact;) {
        const uint32_t i = static_cast<uint32_t>(pts[a].point >> cur.shift_);
        const RingSegment* seg = cur.dir_[i];
        const RingPoint* o = seg->records();
        const uint32_t n_old = seg->count();
        gone.clear();
        size_t b = a;
        for (; b < pts.size() && (pts[b].point >> cur.shift_) == i; ++b) {
            const uint64_t p = pts[b].point;
            uint32_t at = seg->position(SegmentBuilder::bucket(p, gshift), p);
            if (!gone.empty() && at <= gone.back()) at = gone.back() + 1;
            while (at < n_old && o[at].point == p && o[at].owner != pts[b].owner) ++at;
            if (at >= n_old || o[at].point != p || !dropped(o[at].owner)) {
                exact = false;  // not there, or not a dropped owner's: a wrong hint
                break;
            }
            gone.push_back(at);
        }
        if (exact) rewrite(i);
        a = b;
    }
    // A wrong hint, or dropped owners with points it missed: start over and
    // filter every segment by owner.
    if (!exact || removed != expected) {
        for (const RingSegment* seg : built.segs) SegmentBuilder::free(seg);
        built.segs.clear();
        replaced.clear();
        touched.clear();
        std::fill(fresh.begin(), fresh.end(), 0);
        removed = 0;
        next->dir_ = cur.dir_;
        for (uint32_t i = 0; i < cur.dir_.size(); ++i) {
            const RingSegment* seg = cur.dir_[i];
            gone.clear();
            for (uint32_t x = 0; x < seg->count(); ++x)
                if (dropped(seg->records()[x].owner)) gone.push_back(x);
            if (!gone.empty()) rewrite(i);
        }
    }
    next->size_ = static_cast<uint32_t>(cur.size_ - removed);
    if (next->size_ == 0 || (next->size_ < (size_t{kShrinkAvg} << cur.bits_) && cur.bits_ > 1 &&
                             choose_bits(next->size_) < cur.bits_)) {
        std::vector<RingPoint> all;
        all.reserve(next->size_);
        for (const RingSegment* seg : cur.dir_)
            for (uint32_t x = 0; x < seg->count(); ++x)
                if (!dropped(seg->records()[x].owner)) all.push_back(seg->records()[x]);
        rebuild_all(all, std::move(slot_index), high_first_);  // `built` is freed unpublished
        return cur_;
    }
    relink(next->dir_, touched, fresh, built.segs, replaced);
    std::vector<uint32_t> per_slot(slot_points_);
    per_slot.resize(slot_index.size(), 0);
    for (size_t x = 0; x < drop_len && x < per_slot.size(); ++x)
        if (drop[x]) per_slot[x] = 0;
    next->set_slot_index(std::move(slot_index));
    tail_->segs.reserve(tail_->segs.size() + replaced.size());
    tail_->segs.insert(tail_->segs.end(), replaced.begin(), replaced.end());
    built.committed = true;
    last_written_ = static_cast<uint32_t>(built.segs.size());
    slot_points_.swap(per_slot);
    publish(std::move(next), std::move(link));
    return cur_;
}

std::shared_ptr<RingSnapshot> SegmentedRing::renumber(const int32_t* remap, size_t remap_len,
                                                      std::vector<int32_t> slot_index) {
    std::lock_guard<std::mutex> lock(mu_);
    if (remap_len != cur_->slot_index_.size())
        throw std::invalid_argument("remap length differs from the slot count");
    std::vector<RingPoint> pts;
    collect(*cur_, pts);
    for (RingPoint& p : pts) {
        const int32_t to = remap[p.owner];  // owners are < remap_len (checked when added)
        if (to < 0 || static_cast<size_t>(to) >= slot_index.size())
            throw std::invalid_argument("remap sends a slot outside the new slot map");
        p.owner = to;
    }
    rebuild_all(pts, std::move(slot_index), high_first_);
    return cur_;
}

}  // namespace faultkit
