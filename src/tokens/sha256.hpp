/*
 * sha256.hpp — SHA-256 (FIPS 180-4) and HMAC-SHA-256 (RFC 2104) for the
 * refresh-token MACs and key fingerprints.  Pure C++: no PostgreSQL header.
 */
#pragma once

#include <cstddef>
#include <cstdint>

namespace pg_lifecycle::tokens {

/* Each key's HMAC state after its ipad and opad blocks is computed once
 * (HmacKey), so a MAC of a short message costs two compressions.  Checked
 * against the FIPS 180-4 and RFC 4231 test vectors in test/unit. */
class Sha256 {
public:
    Sha256();
    void update(const std::uint8_t* data, std::size_t len);
    void final(std::uint8_t out[32]);
    /* Resume from a state after `blocks` whole blocks (for HMAC). */
    static Sha256 resume(const std::uint32_t state[8], std::uint64_t blocks);
    void state(std::uint32_t out[8]) const;

private:
    std::uint32_t h_[8];
    std::uint64_t length_ = 0; /* bytes hashed so far */
    std::uint8_t buf_[64] = {};
    std::size_t used_ = 0;
};

struct HmacKey {
    std::uint32_t inner[8];
    std::uint32_t outer[8];
};
HmacKey hmac_sha256_key(const std::uint8_t* key, std::size_t len);
void hmac_sha256(const HmacKey& key, const std::uint8_t* msg, std::size_t len, std::uint8_t out[32]);

}  // namespace pg_lifecycle::tokens
