// Unit tests for the pure part of refresh-token families (src/tokens/codec.*):
// base64url, the token layout, SHA-256 and HMAC-SHA-256 against their standard
// test vectors, constant-time comparison and the key file format.
#include "tokens/codec.hpp"

#include <gtest/gtest.h>

#include <cctype>
#include <cstring>

#include <string>
#include <vector>

using namespace pg_lifecycle::tokens;

namespace {

std::vector<std::uint8_t> bytes(const std::string& s) { return {s.begin(), s.end()}; }

std::vector<std::uint8_t> unhex(const std::string& h) {
    std::vector<std::uint8_t> out;
    for (std::size_t i = 0; i + 1 < h.size(); i += 2)
        out.push_back(static_cast<std::uint8_t>(std::stoi(h.substr(i, 2), nullptr, 16)));
    return out;
}

std::string sha256_hex(const std::vector<std::uint8_t>& msg) {
    Sha256 s;
    s.update(msg.data(), msg.size());
    std::uint8_t out[32];
    s.final(out);
    return to_hex(out, 32);
}

std::string hmac_hex(const std::vector<std::uint8_t>& key, const std::vector<std::uint8_t>& msg) {
    HmacKey k = hmac_sha256_key(key.data(), key.size());
    std::uint8_t out[32];
    hmac_sha256(k, msg.data(), msg.size(), out);
    return to_hex(out, 32);
}

TokenParts sample_parts() {
    TokenParts p;
    p.key_id = 7;
    for (int i = 0; i < 16; ++i) {
        p.family[i] = static_cast<std::uint8_t>(i);
        p.nonce[i] = static_cast<std::uint8_t>(0xf0 + i);
        p.mac[i] = static_cast<std::uint8_t>(0x80 ^ i);
    }
    return p;
}

}  // namespace

// RFC 4648 §10 vectors, in the URL-safe alphabet and without padding.
TEST(Base64Url, Rfc4648Vectors) {
    const std::pair<std::string, std::string> cases[] = {
        {"", ""},           {"f", "Zg"},          {"fo", "Zm8"},         {"foo", "Zm9v"},
        {"foob", "Zm9vYg"}, {"fooba", "Zm9vYmE"}, {"foobar", "Zm9vYmFy"}};
    for (const auto& [plain, encoded] : cases) {
        auto in = bytes(plain);
        EXPECT_EQ(base64url_encode(in.data(), in.size()), encoded);
        auto back = base64url_decode(encoded);
        ASSERT_TRUE(back.has_value()) << encoded;
        EXPECT_EQ(*back, in);
    }
}

TEST(Base64Url, UsesTheUrlSafeAlphabet) {
    std::vector<std::uint8_t> in = {0xfb, 0xff, 0xbf};  // "+/+/" in standard base64
    EXPECT_EQ(base64url_encode(in.data(), in.size()), "-_-_");
    EXPECT_EQ(*base64url_decode("-_-_"), in);
}

TEST(Base64Url, DecodingIsStrict) {
    EXPECT_FALSE(base64url_decode("Zg==").has_value());   // padding
    EXPECT_FALSE(base64url_decode("Zm9v+").has_value());  // standard alphabet
    EXPECT_FALSE(base64url_decode("Zm 9v").has_value());  // whitespace
    EXPECT_FALSE(base64url_decode("Z").has_value());      // impossible length
    EXPECT_FALSE(base64url_decode("Zh").has_value());     // non-zero unused bits: not canonical
    EXPECT_TRUE(base64url_decode("Zg").has_value());
}

TEST(Token, LayoutAndLength) {
    std::string t = encode_token(sample_parts());
    EXPECT_EQ(t.size(), token_text_len);
    EXPECT_EQ(token_text_len, 66u);
    for (char c : t) EXPECT_TRUE(std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '_') << t;
    auto raw = base64url_decode(t);
    ASSERT_TRUE(raw.has_value());
    ASSERT_EQ(raw->size(), raw_token_len);
    EXPECT_EQ((*raw)[0], 7);
    EXPECT_EQ((*raw)[1], 0);      // family
    EXPECT_EQ((*raw)[17], 0xf0);  // nonce
    EXPECT_EQ((*raw)[33], 0x80);  // mac
}

TEST(Token, RoundTrips) {
    TokenParts p = sample_parts();
    auto back = decode_token(encode_token(p));
    ASSERT_TRUE(back.has_value());
    EXPECT_EQ(back->key_id, p.key_id);
    EXPECT_EQ(back->family, p.family);
    EXPECT_EQ(back->nonce, p.nonce);
    EXPECT_EQ(back->mac, p.mac);
}

TEST(Token, RejectsAnythingElse) {
    std::string t = encode_token(sample_parts());
    EXPECT_FALSE(decode_token("").has_value());
    EXPECT_FALSE(decode_token(t.substr(1)).has_value());
    EXPECT_FALSE(decode_token(t + "A").has_value());
    std::string bad = t;
    bad[10] = '+';
    EXPECT_FALSE(decode_token(bad).has_value());
    // The last character carries 2 bits and 4 unused ones: only 4 spellings are canonical.
    std::string noncanonical = t;
    noncanonical.back() = static_cast<char>(noncanonical.back() + 1);
    EXPECT_FALSE(decode_token(noncanonical).has_value());
}

TEST(Token, MacMessageBindsEveryPart) {
    TokenParts p = sample_parts();
    auto m = mac_message(p.key_id, p.family, p.nonce);
    EXPECT_EQ(std::string(m.begin(), m.begin() + mac_label.size()), std::string(mac_label));
    EXPECT_EQ(m[mac_label.size()], 7);
    EXPECT_EQ(m[mac_label.size() + 1], p.family[0]);
    EXPECT_EQ(m[mac_label.size() + 1 + 16], p.nonce[0]);
    EXPECT_EQ(m.size(), mac_label.size() + 33);
}

// FIPS 180-4 / NIST CSRC examples.
TEST(Sha256, NistVectors) {
    EXPECT_EQ(sha256_hex(bytes("")), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
    EXPECT_EQ(sha256_hex(bytes("abc")), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    EXPECT_EQ(sha256_hex(bytes("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq")),
              "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
    EXPECT_EQ(sha256_hex(bytes("abcdefghbcdefghicdefghijdefghijkefghijklfghijklmghijklmnhijklmnoijklmnopjklmnopq"
                               "klmnopqrlmnopqrsmnopqrstnopqrstu")),
              "cf5b16a778af8380036ce59e7b0492370b249b11e8f07a51afac45037afee9d1");
    EXPECT_EQ(sha256_hex(std::vector<std::uint8_t>(1000000, 'a')),
              "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
}

TEST(Sha256, IncrementalEqualsOneShot) {
    std::vector<std::uint8_t> msg(1000);
    for (std::size_t i = 0; i < msg.size(); ++i) msg[i] = static_cast<std::uint8_t>(i * 7);
    for (std::size_t cut : {0u, 1u, 55u, 56u, 63u, 64u, 65u, 128u, 999u}) {
        Sha256 s;
        s.update(msg.data(), cut);
        s.update(msg.data() + cut, msg.size() - cut);
        std::uint8_t out[32];
        s.final(out);
        EXPECT_EQ(to_hex(out, 32), sha256_hex(msg)) << cut;
    }
}

// RFC 4231 test cases 1-4, 6 and 7 (case 5 is about truncation).
TEST(HmacSha256, Rfc4231Vectors) {
    EXPECT_EQ(hmac_hex(std::vector<std::uint8_t>(20, 0x0b), bytes("Hi There")),
              "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7");
    EXPECT_EQ(hmac_hex(bytes("Jefe"), bytes("what do ya want for nothing?")),
              "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843");
    EXPECT_EQ(hmac_hex(std::vector<std::uint8_t>(20, 0xaa), std::vector<std::uint8_t>(50, 0xdd)),
              "773ea91e36800e46854db8ebd09181a72959098b3ef8c122d9635514ced565fe");
    EXPECT_EQ(
        hmac_hex(unhex("0102030405060708090a0b0c0d0e0f10111213141516171819"), std::vector<std::uint8_t>(50, 0xcd)),
        "82558a389a443c0ea4cc819899f2083a85f0faa3e578f8077a2e3ff46729665b");
    EXPECT_EQ(
        hmac_hex(std::vector<std::uint8_t>(131, 0xaa), bytes("Test Using Larger Than Block-Size Key - Hash Key First")),
        "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54");
    EXPECT_EQ(hmac_hex(std::vector<std::uint8_t>(131, 0xaa),
                       bytes("This is a test using a larger than block-size key and a larger than block-size data. "
                             "The key needs to be hashed before being used by the HMAC algorithm.")),
              "9b09ffa71b942fcb27635fbcd5b0e944bfdc63644f0713938a7f51535c3a35e2");
}

TEST(ConstantTime, Compares) {
    std::uint8_t a[16] = {1, 2, 3}, b[16] = {1, 2, 3}, c[16] = {1, 2, 4};
    EXPECT_TRUE(equal_constant_time(a, b, 16));
    EXPECT_FALSE(equal_constant_time(a, c, 16));
    EXPECT_TRUE(equal_constant_time(a, c, 2));
}

TEST(KeyFile, ParsesKeysRetiredAndComments) {
    std::string k1(64, 'a'), k3(64, '0');
    auto r = parse_key_file("# comment\n\n3 " + k3 + "\n  1   " + k1 + "  \r\n2 retired\n");
    ASSERT_TRUE(r.error.empty()) << r.error;
    ASSERT_EQ(r.keys.size(), 3u);
    EXPECT_EQ(r.keys[0].id, 1);
    EXPECT_FALSE(r.keys[0].retired);
    EXPECT_EQ(r.keys[0].key[0], 0xaa);
    EXPECT_EQ(r.keys[1].id, 2);
    EXPECT_TRUE(r.keys[1].retired);
    EXPECT_EQ(r.keys[2].id, 3);
    // The minting key is the highest id with key material.
    ASSERT_NE(minting_key(r.keys), nullptr);
    EXPECT_EQ(minting_key(r.keys)->id, 3);
    // Each usable key's HMAC state is ready.
    auto direct = hmac_sha256_key(r.keys[0].key.data(), 32);
    EXPECT_EQ(std::memcmp(direct.inner, r.keys[0].hmac.inner, sizeof direct.inner), 0);
}

TEST(KeyFile, RejectsMalformedLines) {
    std::string k(64, 'b');
    const std::pair<std::string, int> bad[] = {
        {"1\n", 1},
        {"0 " + k + "\n", 1},
        {"256 " + k + "\n", 1},
        {"x " + k + "\n", 1},
        {"# c\n1 " + k.substr(2) + "\n", 2},
        {"1 " + std::string(63, 'b') + "g\n", 1},
        {"1 " + k + "\n1 retired\n", 2},
        {"1 retire\n", 1},
    };
    for (const auto& [text, line] : bad) {
        auto r = parse_key_file(text);
        EXPECT_FALSE(r.error.empty()) << text;
        EXPECT_EQ(r.error_line, line) << text;
        EXPECT_TRUE(r.keys.empty());
    }
}

TEST(KeyFile, FormatRoundTrips) {
    std::vector<KeyEntry> keys(2);
    keys[0].id = 5;
    keys[0].key.fill(0x5a);
    keys[1].id = 2;
    keys[1].retired = true;
    auto r = parse_key_file(format_key_file(keys));
    ASSERT_TRUE(r.error.empty()) << r.error;
    ASSERT_EQ(r.keys.size(), 2u);
    EXPECT_EQ(r.keys[0].id, 2);
    EXPECT_TRUE(r.keys[0].retired);
    EXPECT_EQ(r.keys[1].id, 5);
    EXPECT_EQ(r.keys[1].key, keys[0].key);
    EXPECT_EQ(minting_key(r.keys)->id, 5);
    // No usable key at all: nothing mints.
    std::vector<KeyEntry> retired(1);
    retired[0].id = 1;
    retired[0].retired = true;
    EXPECT_EQ(minting_key(retired), nullptr);
}
