// See packet_filter.h.
#include "faultkit/detect/packet_filter.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <stdexcept>
#include <string>

namespace faultkit::detect {

namespace {

uint64_t load_be64(const uint8_t* p) {
    uint64_t v = 0;
    for (int i = 0; i < 8; ++i) v = (v << 8) | p[i];
    return v;
}

double load_be_double(const uint8_t* p) {
    uint64_t bits = load_be64(p);
    double d;
    std::memcpy(&d, &bits, sizeof d);
    return d;
}

uint64_t hash_source(const SourceKey& k) {
    // FNV-1a over the key's bytes: a table index, not a security boundary
    // (an attacker choosing ports can only collide within a probe window,
    // whose stalest unknown entry is then replaced).
    uint64_t h = 1469598103934665603ull;
    auto mix = [&h](uint8_t b) { h = (h ^ b) * 1099511628211ull; };
    for (uint8_t b : k.addr) mix(b);
    mix(static_cast<uint8_t>(k.port >> 8));
    mix(static_cast<uint8_t>(k.port));
    mix(k.family);
    return h ^ (h >> 29);
}

bool same_source(const SourceKey& a, const SourceKey& b) {
    return a.port == b.port && a.family == b.family && std::memcmp(a.addr, b.addr, sizeof a.addr) == 0;
}

constexpr uint32_t kProbe = 16;

}  // namespace

bool frame_ok(const uint8_t* data, size_t n, bool truncated, size_t max_packet, Verdict* why) {
    if (truncated || n > max_packet) {
        *why = kOversized;
        return false;
    }
    *why = kMalformed;
    if (n < kMinPacket || data[0] != 'F' || data[1] != 'K' || data[2] != kVersion) return false;
    const size_t count = data[3];
    const size_t end = n - kTagSize;
    size_t pos = kHeadSize;
    for (size_t i = 0; i < count; ++i) {
        if (pos >= end) return false;
        const size_t len = data[pos];
        if (len == 0 || end - pos - 1 < len + kEntrySize) return false;
        pos += 1 + len + kEntrySize;
    }
    return count != 0 && pos == end;
}

bool utf8_ok(const uint8_t* s, size_t n) {
    size_t i = 0;
    while (i < n) {
        const uint8_t c = s[i];
        if (c < 0x80) {
            ++i;
            continue;
        }
        size_t need;
        uint8_t lo = 0x80, hi = 0xBF;
        if (c >= 0xC2 && c <= 0xDF) {
            need = 1;
        } else if (c >= 0xE0 && c <= 0xEF) {
            need = 2;
            if (c == 0xE0) lo = 0xA0;
            if (c == 0xED) hi = 0x9F;  // no surrogates
        } else if (c >= 0xF0 && c <= 0xF4) {
            need = 3;
            if (c == 0xF0) lo = 0x90;
            if (c == 0xF4) hi = 0x8F;  // <= U+10FFFF
        } else {
            return false;
        }
        if (n - i - 1 < need) return false;
        if (s[i + 1] < lo || s[i + 1] > hi) return false;
        for (size_t k = 2; k <= need; ++k)
            if (s[i + k] < 0x80 || s[i + k] > 0xBF) return false;
        i += need + 1;
    }
    return true;
}

PacketFilter::PacketFilter(const uint8_t* key, size_t key_len, size_t max_packet, const BudgetConfig& cfg)
    : max_packet_(max_packet), cfg_(cfg) {
    auto finite_pos = [](double v) { return std::isfinite(v) && v > 0; };
    if (max_packet < kMinPacket || max_packet > 65507)
        throw std::invalid_argument("max_packet must be in [" + std::to_string(kMinPacket) + ", 65507], got " +
                                    std::to_string(max_packet));
    if (!finite_pos(cfg.source_rate) || !finite_pos(cfg.source_burst) || !finite_pos(cfg.unknown_rate) ||
        !finite_pos(cfg.unknown_burst) || !(std::isfinite(cfg.penalty) && cfg.penalty >= 0))
        throw std::invalid_argument("budget rates, bursts and the penalty must be finite and positive");
    if (cfg.fail_limit == 0) throw std::invalid_argument("fail_limit must be >= 1");
    if (cfg.max_sources < kProbe || (cfg.max_sources & (cfg.max_sources - 1)) != 0 || cfg.max_sources > (1u << 24))
        throw std::invalid_argument("max_sources must be a power of two in [16, 2**24], got " +
                                    std::to_string(cfg.max_sources));
    mac_ = std::make_unique<HmacSha256>(key, key_len);
    sources_.resize(cfg.max_sources);
    unknown_tokens_ = cfg.unknown_burst;
}

PacketFilter::Source& PacketFilter::lookup(const SourceKey& src, double now) {
    const uint32_t mask = cfg_.max_sources - 1;
    const uint32_t start = static_cast<uint32_t>(hash_source(src)) & mask;
    Source* empty = nullptr;
    Source* victim = nullptr;
    for (uint32_t i = 0; i < kProbe; ++i) {
        Source& s = sources_[(start + i) & mask];
        if (!s.used) {
            if (empty == nullptr) empty = &s;
            continue;
        }
        if (same_source(s.key, src)) return s;
        // Prefer forgetting an unknown source; among equals, the stalest.
        if (victim == nullptr || (victim->good && !s.good) ||
            (victim->good == s.good && s.last_seen < victim->last_seen))
            victim = &s;
    }
    Source& s = empty != nullptr ? *empty : *victim;
    s = Source{};
    s.key = src;
    s.used = true;
    s.tokens = cfg_.source_burst;
    s.refilled = now;
    s.last_seen = now;
    return s;
}

Verdict PacketFilter::process(const uint8_t* data, size_t n, bool truncated, const SourceKey& src, double now,
                              std::vector<Entry>& out, std::string& names) {
    Verdict why;
    if (!frame_ok(data, n, truncated, max_packet_, &why)) {
        ++counts_[why];
        return why;
    }
    Source& s = lookup(src, now);
    s.last_seen = now;
    if (!s.good) {
        if (now < s.penalised_until) {
            ++counts_[kPenalised];
            return kPenalised;
        }
        // Refill both buckets (time never runs backwards here: a clock step
        // back only delays the refill).
        if (now > s.refilled) {
            s.tokens = std::min(cfg_.source_burst, s.tokens + (now - s.refilled) * cfg_.source_rate);
            s.refilled = now;
        }
        if (unknown_refilled_ < 0) unknown_refilled_ = now;
        if (now > unknown_refilled_) {
            unknown_tokens_ =
                std::min(cfg_.unknown_burst, unknown_tokens_ + (now - unknown_refilled_) * cfg_.unknown_rate);
            unknown_refilled_ = now;
        }
        if (s.tokens < 1.0 || unknown_tokens_ < 1.0) {
            ++counts_[kBudget];
            return kBudget;
        }
        s.tokens -= 1.0;
        unknown_tokens_ -= 1.0;
    }
    const size_t body = n - kTagSize;
    if (!mac_->verify(data, body, data + body)) {
        if (!s.good && ++s.fails >= cfg_.fail_limit) {
            s.penalised_until = now + cfg_.penalty;
            s.fails = 0;
        }
        ++counts_[kUnauthenticated];
        return kUnauthenticated;
    }
    // Authenticated: the framing walk above proved every offset below in range.
    const size_t first = out.size();
    const size_t names_first = names.size();
    const size_t count = data[3];
    size_t pos = kHeadSize;
    for (size_t i = 0; i < count; ++i) {
        const size_t len = data[pos];
        const uint8_t* name = data + pos + 1;
        const uint8_t* f = name + len;
        Entry e;
        e.name_off = static_cast<uint32_t>(names.size());
        e.name_len = static_cast<uint32_t>(len);
        e.incarnation_raw = load_be64(f);
        e.sequence = load_be64(f + 8);
        e.sent = load_be_double(f + 16);
        if (!std::isfinite(e.sent) || !utf8_ok(name, len)) {
            out.resize(first);
            names.resize(names_first);
            ++counts_[kMalformed];
            return kMalformed;
        }
        names.append(reinterpret_cast<const char*>(name), len);
        out.push_back(e);
        pos += 1 + len + kEntrySize;
    }
    s.good = true;
    s.fails = 0;
    ++counts_[kAccepted];
    return kAccepted;
}

size_t PacketFilter::known_good() const {
    size_t k = 0;
    for (const Source& s : sources_) k += s.used && s.good;
    return k;
}

size_t PacketFilter::tracked() const {
    size_t k = 0;
    for (const Source& s : sources_) k += s.used;
    return k;
}

void PacketFilter::reset_sources() {
    for (Source& s : sources_) s = Source{};
    unknown_tokens_ = cfg_.unknown_burst;
    unknown_refilled_ = -1.0;
}

}  // namespace faultkit::detect
