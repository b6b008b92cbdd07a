/*
 * codec.hpp — the pure C++ half of refresh-token families (SPEC.md §2): the
 * token's layout and its URL-safe text form, constant-time comparison, and
 * the key file's format.  No PostgreSQL header: unit-tested on its own
 * (test/unit/tokens_test.cpp).
 *
 * A token is base64url, without padding, of 49 bytes:
 *
 *     key id (1) | family id (16, the family's uuid) | nonce (16) | mac (16)
 *
 * The nonce is 128 bits from pg_strong_random, fresh for every token.  The
 * mac is the first 16 bytes of HMAC-SHA-256(key, mac_message(...)) under the
 * server key the key id names; it is never stored.  The database keeps the
 * family id and the nonces, which without the key do not let anyone present
 * a valid token.
 *
 * The key file ($PGDATA/pg_lifecycle_token.key) is text, one key per line:
 *
 *     # comment
 *     1 retired
 *     2 3f9c...(64 hex digits: 256 bits)
 *
 * Every listed key verifies; the highest key id that has key material mints.
 * "retired" keeps the id taken but its tokens are rejected.
 */
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "tokens/sha256.hpp"

namespace pg_lifecycle::tokens {

inline constexpr std::size_t family_len = 16;
inline constexpr std::size_t nonce_len = 16;
inline constexpr std::size_t mac_len = 16;
inline constexpr std::size_t key_len = 32;
inline constexpr std::size_t raw_token_len = 1 + family_len + nonce_len + mac_len; /* 49 */
/* ceil(49 * 4 / 3) characters, no padding. */
inline constexpr std::size_t token_text_len = (raw_token_len * 4 + 2) / 3; /* 66 */
inline constexpr int max_key_id = 255;

using Bytes16 = std::array<std::uint8_t, 16>;
using KeyBytes = std::array<std::uint8_t, key_len>;

struct TokenParts {
    std::uint8_t key_id = 0;
    Bytes16 family{};
    Bytes16 nonce{};
    Bytes16 mac{};
};

/* base64url (RFC 4648 §5) without padding.  Decoding is strict: only the
 * URL-safe alphabet, no padding, and the unused low bits of the last
 * character must be zero, so every byte string has exactly one text form. */
std::string base64url_encode(const std::uint8_t* data, std::size_t len);
std::optional<std::vector<std::uint8_t>> base64url_decode(std::string_view text);

/* Writes the token's text form into out (exactly token_text_len characters,
 * not NUL-terminated). */
void encode_token(const TokenParts& parts, char out[token_text_len]);
std::string encode_token(const TokenParts& parts);
/* Any text that is not exactly a token's text form gives nullopt. */
std::optional<TokenParts> decode_token(std::string_view text);

/* The message the mac is computed over: a domain-separation label, the key
 * id, the family id and the nonce. */
inline constexpr std::string_view mac_label = "pg_lifecycle refresh token v1";
inline constexpr std::size_t mac_message_len = mac_label.size() + 1 + family_len + nonce_len;
std::array<std::uint8_t, mac_message_len> mac_message(std::uint8_t key_id, const Bytes16& family, const Bytes16& nonce);
/* What the key's fingerprint is an HMAC of (see keys.cpp). */
inline constexpr std::string_view fingerprint_label = "pg_lifecycle key fingerprint";

/* Compares in time that depends only on len. */
bool equal_constant_time(const std::uint8_t* a, const std::uint8_t* b, std::size_t len);

/* Lower-case hex. */
std::string to_hex(const std::uint8_t* data, std::size_t len);

/* ---- the key file ---- */

struct KeyEntry {
    int id = 0;
    bool retired = false;
    KeyBytes key{}; /* all zero when retired */
    HmacKey hmac{}; /* derived from key (parse_key_file fills it) */
};

struct KeyFileParse {
    std::vector<KeyEntry> keys; /* sorted by id */
    std::string error;          /* empty when the text is well-formed */
    int error_line = 0;
};

KeyFileParse parse_key_file(std::string_view text);
/* The text of a key file holding keys (sorted by id on output). */
std::string format_key_file(std::vector<KeyEntry> keys);
/* The entry that mints new tokens: the highest id with key material. */
const KeyEntry* minting_key(const std::vector<KeyEntry>& keys);

}  // namespace pg_lifecycle::tokens
