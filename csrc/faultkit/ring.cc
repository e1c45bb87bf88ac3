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
    const uint64_t buckets = uint64_t{1} << bits_;
    index_.assign(buckets + 1, 0);
    uint32_t i = 0;
    scan_ = 0;
    for (uint64_t b = 0; b < buckets; ++b) {
        index_[b] = i;
        const uint32_t start = i;
        while (i < size_ && (points_[i] >> shift_) == b) ++i;
        scan_ = std::max(scan_, i - start);
    }
    index_[buckets] = size_;
    // Padding: the scan reads up to scan_ points past a bucket start (which
    // is at most size_), and a position of size_ wraps to owner 0.
    const uint32_t pad = std::max<uint32_t>(scan_, 1);
    points_.resize(size_ + pad, kTop);
    owners_.resize(size_ + pad, size_ ? owners_[0] : 0);
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
    out.reserve(out.size() + count);
    for (uint32_t j = 0; j < count; ++j) out.push_back({xxh3_64_u64(j, node_seed), owner});
}

void ring_ketama_node_points(const char* name, size_t name_len, uint32_t hashes, int32_t owner,
                             std::vector<RingPoint>& out) {
    std::string buf(name, name_len);
    buf.push_back('-');
    const size_t prefix = buf.size();
    out.reserve(out.size() + size_t{hashes} * 4);
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
    if (high_owner_first)
        std::sort(pts.begin(), pts.end(), [](const RingPoint& a, const RingPoint& b) {
            return a.point < b.point || (a.point == b.point && a.owner > b.owner);
        });
    else
        std::sort(pts.begin(), pts.end(), [](const RingPoint& a, const RingPoint& b) {
            return a.point < b.point || (a.point == b.point && a.owner < b.owner);
        });
}

RingTable* ring_from_sorted(const std::vector<RingPoint>& pts) {
    std::vector<uint64_t> points(pts.size());
    std::vector<int32_t> owners(pts.size());
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
    std::vector<uint64_t> points(total);
    std::vector<int32_t> owners(total);
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
    points.reserve(n_old);
    owners.reserve(n_old);
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
