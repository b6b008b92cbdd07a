/*
 * sha256.cpp — SHA-256 and HMAC-SHA-256 (see sha256.hpp).
 * Pure C++: no PostgreSQL header.
 */
#include "tokens/sha256.hpp"

#include <algorithm>
#include <cstring>

namespace pg_lifecycle::tokens {

namespace {

constexpr std::uint32_t sha256_k[64] = {
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
    0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
    0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
    0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
    0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
    0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
    0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
    0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2};

constexpr std::uint32_t sha256_init[8] = {0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a,
                                          0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19};

inline std::uint32_t rotr(std::uint32_t x, int n) { return (x >> n) | (x << (32 - n)); }

void sha256_compress(std::uint32_t h[8], const std::uint8_t block[64]) {
    std::uint32_t w[64];
    for (std::size_t i = 0; i < 16; ++i) {
        w[i] = (std::uint32_t{block[4 * i]} << 24) | (std::uint32_t{block[4 * i + 1]} << 16) |
               (std::uint32_t{block[4 * i + 2]} << 8) | std::uint32_t{block[4 * i + 3]};
    }
    for (int i = 16; i < 64; ++i) {
        std::uint32_t s0 = rotr(w[i - 15], 7) ^ rotr(w[i - 15], 18) ^ (w[i - 15] >> 3);
        std::uint32_t s1 = rotr(w[i - 2], 17) ^ rotr(w[i - 2], 19) ^ (w[i - 2] >> 10);
        w[i] = w[i - 16] + s0 + w[i - 7] + s1;
    }
    std::uint32_t a = h[0], b = h[1], c = h[2], d = h[3], e = h[4], f = h[5], g = h[6], hh = h[7];
    for (int i = 0; i < 64; ++i) {
        std::uint32_t S1 = rotr(e, 6) ^ rotr(e, 11) ^ rotr(e, 25);
        std::uint32_t ch = (e & f) ^ (~e & g);
        std::uint32_t t1 = hh + S1 + ch + sha256_k[i] + w[i];
        std::uint32_t S0 = rotr(a, 2) ^ rotr(a, 13) ^ rotr(a, 22);
        std::uint32_t maj = (a & b) ^ (a & c) ^ (b & c);
        std::uint32_t t2 = S0 + maj;
        hh = g;
        g = f;
        f = e;
        e = d + t1;
        d = c;
        c = b;
        b = a;
        a = t1 + t2;
    }
    h[0] += a;
    h[1] += b;
    h[2] += c;
    h[3] += d;
    h[4] += e;
    h[5] += f;
    h[6] += g;
    h[7] += hh;
}

}  // namespace

Sha256::Sha256() { std::memcpy(h_, sha256_init, sizeof h_); }

Sha256 Sha256::resume(const std::uint32_t state[8], std::uint64_t blocks) {
    Sha256 s;
    std::memcpy(s.h_, state, sizeof s.h_);
    s.length_ = blocks * 64;
    return s;
}

void Sha256::state(std::uint32_t out[8]) const { std::memcpy(out, h_, sizeof h_); }

void Sha256::update(const std::uint8_t* data, std::size_t len) {
    length_ += len;
    if (used_ > 0) {
        std::size_t take = std::min(len, sizeof buf_ - used_);
        std::memcpy(buf_ + used_, data, take);
        used_ += take;
        data += take;
        len -= take;
        if (used_ < sizeof buf_) return;
        sha256_compress(h_, buf_);
        used_ = 0;
    }
    for (; len >= 64; data += 64, len -= 64) sha256_compress(h_, data);
    std::memcpy(buf_, data, len);
    used_ = len;
}

void Sha256::final(std::uint8_t out[32]) {
    std::uint64_t bits = length_ * 8;
    buf_[used_++] = 0x80;
    if (used_ > 56) {
        std::memset(buf_ + used_, 0, 64 - used_);
        sha256_compress(h_, buf_);
        used_ = 0;
    }
    std::memset(buf_ + used_, 0, 56 - used_);
    for (int i = 0; i < 8; ++i) buf_[56 + i] = static_cast<std::uint8_t>(bits >> (56 - 8 * i));
    sha256_compress(h_, buf_);
    for (std::size_t i = 0; i < 8; ++i) {
        out[4 * i] = static_cast<std::uint8_t>(h_[i] >> 24);
        out[4 * i + 1] = static_cast<std::uint8_t>(h_[i] >> 16);
        out[4 * i + 2] = static_cast<std::uint8_t>(h_[i] >> 8);
        out[4 * i + 3] = static_cast<std::uint8_t>(h_[i]);
    }
    std::memset(buf_, 0, sizeof buf_);
}

HmacKey hmac_sha256_key(const std::uint8_t* key, std::size_t len) {
    std::uint8_t k[64] = {};
    if (len > 64) {
        Sha256 s;
        s.update(key, len);
        s.final(k);
    } else {
        std::memcpy(k, key, len);
    }
    std::uint8_t pad[64];
    HmacKey out;
    for (int i = 0; i < 64; ++i) pad[i] = static_cast<std::uint8_t>(k[i] ^ 0x36);
    std::memcpy(out.inner, sha256_init, sizeof out.inner);
    sha256_compress(out.inner, pad);
    for (int i = 0; i < 64; ++i) pad[i] = static_cast<std::uint8_t>(k[i] ^ 0x5c);
    std::memcpy(out.outer, sha256_init, sizeof out.outer);
    sha256_compress(out.outer, pad);
    std::memset(k, 0, sizeof k);
    std::memset(pad, 0, sizeof pad);
    return out;
}

void hmac_sha256(const HmacKey& key, const std::uint8_t* msg, std::size_t len, std::uint8_t out[32]) {
    std::uint8_t inner[32];
    Sha256 in = Sha256::resume(key.inner, 1);
    in.update(msg, len);
    in.final(inner);
    Sha256 outer = Sha256::resume(key.outer, 1);
    outer.update(inner, sizeof inner);
    outer.final(out);
}

}  // namespace pg_lifecycle::tokens
