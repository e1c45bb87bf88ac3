// HMAC-SHA256 verification through OpenSSL's libcrypto (EVP_MAC, OpenSSL 3).
//
// Nothing cryptographic is written here: the key schedule, SHA-256 and the
// HMAC construction are OpenSSL's.  The context is keyed once; each verify()
// re-initialises it without a key (EVP_MAC_init(ctx, NULL, 0, NULL)), which
// OpenSSL's HMAC provider serves by copying the precomputed inner state, so a
// short packet costs its own SHA-256 blocks plus the outer block, not a key
// schedule.  The tag comparison is CRYPTO_memcmp (constant time).
//
// Only compiled when the build found <openssl/hmac.h> of OpenSSL >= 3
// (setup.py); without it faultkit keeps the Python verifier.  One instance is
// not thread-safe: each receiver thread owns its own.
#pragma once

#include <cstddef>
#include <cstdint>

namespace faultkit::detect {

class HmacSha256 {
  public:
    static constexpr size_t kTagSize = 32;

    // Keys the context; throws std::runtime_error if OpenSSL refuses (no HMAC
    // or SHA-256 in the loaded providers) or the key is empty.
    HmacSha256(const uint8_t* key, size_t key_len);
    ~HmacSha256();
    HmacSha256(const HmacSha256&) = delete;
    HmacSha256& operator=(const HmacSha256&) = delete;

    // HMAC-SHA256(key, data[0..n)) into out[0..32); false on an OpenSSL error.
    bool compute(const uint8_t* data, size_t n, uint8_t out[kTagSize]);
    // True iff tag[0..32) is the MAC of data[0..n), compared in constant time.
    bool verify(const uint8_t* data, size_t n, const uint8_t tag[kTagSize]);

  private:
    void* mac_ = nullptr;  // EVP_MAC*
    void* ctx_ = nullptr;  // EVP_MAC_CTX*
};

}  // namespace faultkit::detect
