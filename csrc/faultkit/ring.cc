// Building, merging and querying consistent-hash ring tables (see ring.h).
#include "faultkit/ring.h"

#include <algorithm>
#include <cstring>
#include <string>

#include "faultkit/md5.h"
#include "faultkit/xxh3.h"

namespace faultkit {

namespace {

constexpr uint64_t kTop = ~uint64_t{0};

}  // namespace

void RingTable::finish() {
    size_ = static_cast<uint32_t>(points_.size());
    // Index bits: 2^bits >= 2 * size, within [1, kMaxIndexBits].
    bits_ = 1;
    while (bits_ < kMaxIndexBits && (uint64_t{1} << bits_) < 2 * uint64_t{size_}) ++bits_;
    shift_ = 64 - bits_;
    const uint32_t buckets = uint32_t{1} << bits_;
    index_.resize(size_t{buckets} + 1);
    // One pass over the points: bucket b starts at the first point whose top
    // bits are >= b.
    uint32_t b = 0, prev_start = 0;
    scan_ = 0;
    for (uint32_t i = 0; i < size_; ++i) {
        const uint32_t pb = static_cast<uint32_t>(points_[i] >> shift_);
        while (b <= pb) {
            if (b) scan_ = std::max(scan_, i - prev_start);
            prev_start = i;
            index_[b++] = i;
        }
    }
    scan_ = std::max(scan_, size_ - prev_start);
    while (b <= buckets) index_[b++] = size_;
    // One sentinel: position() reads the point at a bucket's start, which
    // can be size_ (the end), and a position of size_ wraps to owner 0.
    points_.push_back(kTop);
    owners_.push_back(size_ ? owners_[0] : 0);
}

uint32_t RingTable::bisect(uint32_t lo, uint32_t hi, uint64_t h) const noexcept {
    const uint64_t* p = points_.data();
    return static_cast<uint32_t>(std::lower_bound(p + lo, p + hi, h) - p);
}

int32_t RingTable::live_owners_n(uint64_t h, const uint8_t* alive, int32_t n, int32_t* out,
                                 uint8_t* seen) const noexcept {
    if (size_ == 0 || n <= 0) return 0;
    uint32_t pos = position(h);
    if (pos >= size_) pos = 0;
    int32_t found = 0;
    for (uint32_t step = 0; step < size_ && found < n; ++step) {
        const int32_t o = owners_[pos];
        if (++pos == size_) pos = 0;
        if (alive != nullptr && !alive[o]) continue;
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

void RingTable::live_owner_many(const uint64_t* hashes, size_t count, const uint8_t* alive,
                                int32_t* out) const noexcept {
    if (size_ == 0) {
        for (size_t i = 0; i < count; ++i) out[i] = -1;
        return;
    }
    if (alive == nullptr) {
        for (size_t i = 0; i < count; ++i) out[i] = owners_[position(hashes[i])];
        return;
    }
    for (size_t i = 0; i < count; ++i) {
        const uint32_t pos = position(hashes[i]);
        const int32_t o = owners_[pos];
        out[i] = alive[o] ? o : live_owner_from(pos, alive);
    }
}

void RingTable::distribution(const uint8_t* alive, int32_t n_nodes, double* out) const noexcept {
    for (int32_t i = 0; i < n_nodes; ++i) out[i] = 0.0;
    if (size_ == 0) return;
    // Walk backwards from the last point so the "next live owner" of each
    // point is known when its arc (from the previous point, exclusive, up to
    // it, inclusive) is credited.  Two laps settle the wrap-around.
    int32_t next_live = -1;
    for (uint32_t k = 0; k < size_; ++k) {  // lap 1: find the live owner after the top
        const int32_t o = owners_[k];
        if (alive == nullptr || alive[o]) {
            next_live = o;
            break;
        }
    }
    if (next_live < 0) return;  // nothing is up
    constexpr double kSpan = 18446744073709551616.0;  // 2^64
    for (uint32_t k = size_; k-- > 0;) {
        const int32_t o = owners_[k];
        if (alive == nullptr || alive[o]) next_live = o;
        const uint64_t arc = k ? points_[k] - points_[k - 1] : points_[0] - points_[size_ - 1];
        double share = static_cast<double>(arc) / kSpan;
        if (k == 0 && size_ == 1) share = 1.0;
        if (next_live >= 0 && next_live < n_nodes) out[next_live] += share;
    }
}

void ring_node_points(const char* name, size_t name_len, uint64_t seed, uint32_t count,
                      int32_t owner, std::vector<RingPoint>& out) {
    const uint64_t node_seed = xxh3_64(name, name_len, seed);
    for (uint32_t j = 0; j < count; ++j) out.push_back({xxh3_64_u64(j, node_seed), owner});
}

void ring_ketama_node_points(const char* name, size_t name_len, uint32_t hashes, int32_t owner,
                             std::vector<RingPoint>& out) {
    std::string buf(name, name_len);
    buf.push_back('-');
    const size_t prefix = buf.size();
    uint8_t d[16];
    for (uint32_t k = 0; k < hashes; ++k) {
        buf.resize(prefix);
        buf += std::to_string(k);
        md5(buf.data(), buf.size(), d);
        for (int h = 0; h < 4; ++h) {
            const uint64_t p = uint64_t{d[4 * h]} | (uint64_t{d[4 * h + 1]} << 8) |
                               (uint64_t{d[4 * h + 2]} << 16) | (uint64_t{d[4 * h + 3]} << 24);
            out.push_back({p << 32, owner});
        }
    }
}

void ring_sort(std::vector<RingPoint>& pts, bool high_owner_first) {
    const auto less = [high_owner_first](const RingPoint& a, const RingPoint& b) {
        return a.point < b.point ||
               (a.point == b.point && (high_owner_first ? a.owner > b.owner : a.owner < b.owner));
    };
    const size_t n = pts.size();
    if (n < 4096) {
        std::sort(pts.begin(), pts.end(), less);
        return;
    }
    // Points are hash values, spread evenly: one stable counting pass on the
    // top 16 bits leaves buckets of a few points, each finished by insertion
    // sort (std::sort for a rare crowded bucket).
    constexpr int kBits = 16;
    std::vector<uint32_t> start((size_t{1} << kBits) + 1, 0);
    for (const RingPoint& p : pts) ++start[(p.point >> (64 - kBits)) + 1];
    for (size_t b = 1; b < start.size(); ++b) start[b] += start[b - 1];
    std::vector<RingPoint> out(n);
    {
        std::vector<uint32_t> fill(start.begin(), start.end() - 1);
        for (const RingPoint& p : pts) out[fill[p.point >> (64 - kBits)]++] = p;
    }
    for (size_t b = 0; b + 1 < start.size(); ++b) {
        RingPoint* lo = out.data() + start[b];
        RingPoint* hi = out.data() + start[b + 1];
        if (hi - lo > 32) {
            std::sort(lo, hi, less);
            continue;
        }
        for (RingPoint* i = lo + 1; i < hi; ++i) {
            const RingPoint v = *i;
            RingPoint* j = i;
            for (; j > lo && less(v, j[-1]); --j) *j = j[-1];
            *j = v;
        }
    }
    pts.swap(out);
}

RingTable* ring_from_sorted(const std::vector<RingPoint>& pts) {
    std::vector<uint64_t> points;
    std::vector<int32_t> owners;
    points.reserve(pts.size() + 1);  // + the sentinel finish() appends
    owners.reserve(pts.size() + 1);
    points.resize(pts.size());
    owners.resize(pts.size());
    for (size_t i = 0; i < pts.size(); ++i) {
        points[i] = pts[i].point;
        owners[i] = pts[i].owner;
    }
    return new RingTable(std::move(points), std::move(owners));
}

RingTable* ring_merge(const RingTable& old, const std::vector<RingPoint>& added,
                      bool high_owner_first) {
    const uint32_t n_old = old.size();
    const size_t total = n_old + added.size();
    std::vector<uint64_t> points;
    std::vector<int32_t> owners;
    points.reserve(total + 1);  // + the sentinel finish() appends
    owners.reserve(total + 1);
    points.resize(total);
    owners.resize(total);
    const uint64_t* op = old.points();
    const int32_t* oo = old.owners();
    size_t i = 0, j = 0, k = 0;
    while (i < n_old && j < added.size()) {
        const bool take_added = high_owner_first ? added[j].point <= op[i] : added[j].point < op[i];
        if (take_added) {
            points[k] = added[j].point;
            owners[k++] = added[j++].owner;
        } else {
            points[k] = op[i];
            owners[k++] = oo[i++];
        }
    }
    for (; i < n_old; ++i, ++k) {
        points[k] = op[i];
        owners[k] = oo[i];
    }
    for (; j < added.size(); ++j, ++k) {
        points[k] = added[j].point;
        owners[k] = added[j].owner;
    }
    return new RingTable(std::move(points), std::move(owners));
}

RingTable* ring_remap(const RingTable& old, const int32_t* remap, int32_t n_nodes) {
    const uint32_t n_old = old.size();
    const uint64_t* op = old.points();
    const int32_t* oo = old.owners();
    std::vector<uint64_t> points;
    std::vector<int32_t> owners;
    points.reserve(n_old + 1);  // + the sentinel finish() appends
    owners.reserve(n_old + 1);
    for (uint32_t i = 0; i < n_old; ++i) {
        const int32_t o = oo[i];
        if (o < 0 || o >= n_nodes) return nullptr;
        const int32_t to = remap[o];
        if (to < 0) continue;
        points.push_back(op[i]);
        owners.push_back(to);
    }
    return new RingTable(std::move(points), std::move(owners));
}

}  // namespace faultkit
