// The heartbeat receive filter: what a receiver thread does with each datagram
// before anything reaches Python.
//
// Order of the checks, cheapest first, so that what cannot be genuine costs
// no MAC (wire format: src/faultkit/detect/transport.py, version 1):
//   1. size: truncated or > max_packet -> OVERSIZED; too short -> MALFORMED;
//   2. framing: magic "FK", version 1, count 1..255, and a walk of the name
//      lengths that must end exactly at the tag -> MALFORMED;
//   3. the source (address, port): a known-good source (one that has sent a
//      MAC-valid datagram) is always verified; any other source must be out
//      of its penalty (-> PENALISED) and have a token in its own bucket and
//      in the bucket shared by all unknown sources (-> BUDGET);
//   4. HMAC-SHA256 through OpenSSL -> UNAUTHENTICATED; an unknown source
//      failing `fail_limit` times in a row is penalised for `penalty` seconds
//      (its datagrams are dropped before the MAC);
//   5. fields: send times finite, names valid UTF-8 -> MALFORMED; otherwise
//      ACCEPTED and its entries appended to the output.
//
// Incarnation fields are passed through raw (all 64 bits): bit 63 marks a
// leave, which the Python layer interprets exactly as decode_packet does.
//
// No Python.h, no clock: `now` is passed in (seconds, monotonic).  Not
// thread-safe: one filter per receiver thread.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "faultkit/detect/hmac_sha256.h"

namespace faultkit::detect {

enum Verdict : uint8_t {
    kAccepted = 0,
    kOversized,
    kMalformed,
    kUnauthenticated,
    kBudget,
    kPenalised,
    kNumVerdicts
};

constexpr size_t kHeadSize = 4;    // "FK", version, count
constexpr size_t kEntrySize = 24;  // incarnation, sequence, send time
constexpr size_t kTagSize = HmacSha256::kTagSize;
constexpr size_t kMinPacket = kHeadSize + 1 + 1 + kEntrySize + kTagSize;  // one 1-byte name
constexpr uint8_t kVersion = 1;

// One accepted entry; the name is names[name_off, name_off + name_len).
struct Entry {
    uint32_t name_off;
    uint32_t name_len;
    uint64_t incarnation_raw;  // bit 63: leave
    uint64_t sequence;
    double sent;
};

// A datagram's source: address family, up to 16 address bytes, port.
struct SourceKey {
    uint8_t addr[16];
    uint16_t port;
    uint8_t family;
};

struct BudgetConfig {
    // Per unknown source: MAC verifications per second and burst.  A sender
    // with a few thousand names sends a few dozen datagrams a round; 1000/s
    // with a burst of 256 covers any sender at a 10 ms interval.
    double source_rate = 1000.0;
    double source_burst = 256.0;
    // Shared by every source not yet known good: caps what many-port floods
    // can make the verifier do (about 0.5 us a verification: 10% of a core).
    double unknown_rate = 200000.0;
    double unknown_burst = 20000.0;
    // Consecutive failures that penalise an unknown source, and for how long.
    uint32_t fail_limit = 8;
    double penalty = 2.0;
    // Sources tracked at once (a power of two); beyond, the stalest unknown
    // source in a probe window is forgotten.
    uint32_t max_sources = 4096;
};

// True iff `data[0, n)` is framed as a version-1 packet (steps 1-2, no MAC);
// `*why` says why not.  Exposed for tests.
bool frame_ok(const uint8_t* data, size_t n, bool truncated, size_t max_packet, Verdict* why);

// Strict UTF-8 (Unicode Table 3-7: no overlongs, surrogates or > U+10FFFF),
// what Python's "utf-8" codec accepts.
bool utf8_ok(const uint8_t* s, size_t n);

class PacketFilter {
  public:
    // Throws std::invalid_argument for a bad config, std::runtime_error if
    // OpenSSL refuses the key.
    PacketFilter(const uint8_t* key, size_t key_len, size_t max_packet, const BudgetConfig& cfg);

    // Steps 1-5 for one datagram arriving from `src` at `now`.  Accepted
    // entries are appended to `out` with their names appended to `names`.
    Verdict process(const uint8_t* data, size_t n, bool truncated, const SourceKey& src, double now,
                    std::vector<Entry>& out, std::string& names);

    // Datagrams by verdict since construction.
    const uint64_t* counts() const { return counts_; }
    // Sources currently known good / tracked.
    size_t known_good() const;
    size_t tracked() const;
    // Forget every source (known good, penalties, buckets).
    void reset_sources();

  private:
    struct Source {
        SourceKey key;
        bool used = false;
        bool good = false;
        uint32_t fails = 0;
        double tokens = 0.0;
        double refilled = 0.0;
        double penalised_until = 0.0;
        double last_seen = 0.0;
    };

    Source& lookup(const SourceKey& src, double now);

    std::unique_ptr<HmacSha256> mac_;
    size_t max_packet_;
    BudgetConfig cfg_;
    std::vector<Source> sources_;
    double unknown_tokens_;
    double unknown_refilled_ = -1.0;
    uint64_t counts_[kNumVerdicts] = {};
};

}  // namespace faultkit::detect
