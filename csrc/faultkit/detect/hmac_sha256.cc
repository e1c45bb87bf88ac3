// See hmac_sha256.h.  OpenSSL does all the cryptography.
#include "faultkit/detect/hmac_sha256.h"

#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/params.h>

#include <stdexcept>

#if OPENSSL_VERSION_NUMBER < 0x30000000L
#error "faultkit's native verifier needs OpenSSL >= 3 (EVP_MAC); setup.py should not have built it"
#endif

namespace faultkit::detect {

HmacSha256::HmacSha256(const uint8_t* key, size_t key_len) {
    if (key == nullptr || key_len == 0) throw std::runtime_error("HMAC key must not be empty");
    EVP_MAC* mac = EVP_MAC_fetch(nullptr, "HMAC", nullptr);
    if (mac == nullptr) throw std::runtime_error("OpenSSL has no HMAC");
    EVP_MAC_CTX* ctx = EVP_MAC_CTX_new(mac);
    if (ctx == nullptr) {
        EVP_MAC_free(mac);
        throw std::runtime_error("EVP_MAC_CTX_new failed");
    }
    char digest[] = "SHA256";
    OSSL_PARAM params[] = {OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, digest, 0),
                           OSSL_PARAM_construct_end()};
    if (EVP_MAC_init(ctx, key, key_len, params) != 1) {
        EVP_MAC_CTX_free(ctx);
        EVP_MAC_free(mac);
        throw std::runtime_error("OpenSSL refused HMAC-SHA256 with this key");
    }
    mac_ = mac;
    ctx_ = ctx;
}

HmacSha256::~HmacSha256() {
    EVP_MAC_CTX_free(static_cast<EVP_MAC_CTX*>(ctx_));
    EVP_MAC_free(static_cast<EVP_MAC*>(mac_));
}

bool HmacSha256::compute(const uint8_t* data, size_t n, uint8_t out[kTagSize]) {
    auto* ctx = static_cast<EVP_MAC_CTX*>(ctx_);
    size_t len = 0;
    // No key: the provider restarts from the keyed inner state it kept.
    return EVP_MAC_init(ctx, nullptr, 0, nullptr) == 1 && EVP_MAC_update(ctx, data, n) == 1 &&
           EVP_MAC_final(ctx, out, &len, kTagSize) == 1 && len == kTagSize;
}

bool HmacSha256::verify(const uint8_t* data, size_t n, const uint8_t tag[kTagSize]) {
    uint8_t mine[kTagSize];
    if (!compute(data, n, mine)) return false;
    return CRYPTO_memcmp(mine, tag, kTagSize) == 0;
}

}  // namespace faultkit::detect
