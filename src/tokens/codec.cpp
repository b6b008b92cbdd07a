/*
 * codec.cpp — token layout, base64url, key file format (see codec.hpp).
 * Pure C++: no PostgreSQL header.
 */
#include "tokens/codec.hpp"

#include <algorithm>
#include <cstring>

namespace pg_lifecycle::tokens {

namespace {

constexpr char alphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/* 0..63, or -1 for a character outside the URL-safe alphabet. */
int decode_char(unsigned char c) {
    if (c >= 'A' && c <= 'Z') return c - 'A';
    if (c >= 'a' && c <= 'z') return c - 'a' + 26;
    if (c >= '0' && c <= '9') return c - '0' + 52;
    if (c == '-') return 62;
    if (c == '_') return 63;
    return -1;
}

/* Encodes len bytes into out, which has room for (len * 4 + 2) / 3 characters. */
void encode_into(const std::uint8_t* data, std::size_t len, char* out) {
    std::size_t o = 0;
    std::size_t i = 0;
    for (; i + 3 <= len; i += 3) {
        std::uint32_t v = (std::uint32_t{data[i]} << 16) | (std::uint32_t{data[i + 1]} << 8) | data[i + 2];
        out[o++] = alphabet[(v >> 18) & 63];
        out[o++] = alphabet[(v >> 12) & 63];
        out[o++] = alphabet[(v >> 6) & 63];
        out[o++] = alphabet[v & 63];
    }
    if (len - i == 1) {
        std::uint32_t v = std::uint32_t{data[i]} << 16;
        out[o++] = alphabet[(v >> 18) & 63];
        out[o++] = alphabet[(v >> 12) & 63];
    } else if (len - i == 2) {
        std::uint32_t v = (std::uint32_t{data[i]} << 16) | (std::uint32_t{data[i + 1]} << 8);
        out[o++] = alphabet[(v >> 18) & 63];
        out[o++] = alphabet[(v >> 12) & 63];
        out[o++] = alphabet[(v >> 6) & 63];
    }
}

/* Decodes text into out (room for text.size() * 3 / 4 bytes); false if text
 * is not canonical unpadded base64url. */
bool decode_into(std::string_view text, std::uint8_t* out) {
    if (text.size() % 4 == 1) return false;
    std::size_t o = 0;
    std::uint32_t acc = 0;
    int bits = 0;
    for (unsigned char c : text) {
        int v = decode_char(c);
        if (v < 0) return false;
        acc = (acc << 6) | static_cast<std::uint32_t>(v);
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            out[o++] = static_cast<std::uint8_t>((acc >> bits) & 0xFF);
        }
    }
    /* Canonical form: the bits left over must be zero. */
    return (acc & ((1u << bits) - 1)) == 0;
}

int hex_value(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

std::string_view trim(std::string_view s) {
    while (!s.empty() && (s.front() == ' ' || s.front() == '\t' || s.front() == '\r')) s.remove_prefix(1);
    while (!s.empty() && (s.back() == ' ' || s.back() == '\t' || s.back() == '\r')) s.remove_suffix(1);
    return s;
}

}  // namespace

std::string base64url_encode(const std::uint8_t* data, std::size_t len) {
    std::string out((len * 4 + 2) / 3, '\0');
    encode_into(data, len, out.data());
    return out;
}

std::optional<std::vector<std::uint8_t>> base64url_decode(std::string_view text) {
    std::vector<std::uint8_t> out(text.size() * 3 / 4);
    if (!decode_into(text, out.data())) return std::nullopt;
    return out;
}

void encode_token(const TokenParts& parts, char out[token_text_len]) {
    std::uint8_t raw[raw_token_len];
    raw[0] = parts.key_id;
    std::memcpy(raw + 1, parts.family.data(), family_len);
    std::memcpy(raw + 1 + family_len, parts.nonce.data(), nonce_len);
    std::memcpy(raw + 1 + family_len + nonce_len, parts.mac.data(), mac_len);
    encode_into(raw, raw_token_len, out);
}

std::string encode_token(const TokenParts& parts) {
    std::string out(token_text_len, '\0');
    encode_token(parts, out.data());
    return out;
}

std::optional<TokenParts> decode_token(std::string_view text) {
    if (text.size() != token_text_len) return std::nullopt;
    std::uint8_t raw[raw_token_len]{};
    if (!decode_into(text, raw)) return std::nullopt;
    TokenParts p;
    p.key_id = raw[0];
    std::memcpy(p.family.data(), raw + 1, family_len);
    std::memcpy(p.nonce.data(), raw + 1 + family_len, nonce_len);
    std::memcpy(p.mac.data(), raw + 1 + family_len + nonce_len, mac_len);
    return p;
}

std::array<std::uint8_t, mac_message_len> mac_message(std::uint8_t key_id, const Bytes16& family,
                                                      const Bytes16& nonce) {
    std::array<std::uint8_t, mac_message_len> m{};
    std::memcpy(m.data(), mac_label.data(), mac_label.size());
    m[mac_label.size()] = key_id;
    std::memcpy(m.data() + mac_label.size() + 1, family.data(), family_len);
    std::memcpy(m.data() + mac_label.size() + 1 + family_len, nonce.data(), nonce_len);
    return m;
}

bool equal_constant_time(const std::uint8_t* a, const std::uint8_t* b, std::size_t len) {
    volatile std::uint8_t diff = 0;
    for (std::size_t i = 0; i < len; ++i) diff = diff | static_cast<std::uint8_t>(a[i] ^ b[i]);
    return diff == 0;
}

std::string to_hex(const std::uint8_t* data, std::size_t len) {
    static constexpr char digits[] = "0123456789abcdef";
    std::string out(len * 2, '\0');
    for (std::size_t i = 0; i < len; ++i) {
        out[2 * i] = digits[data[i] >> 4];
        out[2 * i + 1] = digits[data[i] & 15];
    }
    return out;
}

KeyFileParse parse_key_file(std::string_view text) {
    KeyFileParse r;
    int lineno = 0;
    auto fail = [&](std::string msg) {
        r.keys.clear();
        r.error = std::move(msg);
        r.error_line = lineno;
        return r;
    };
    while (!text.empty()) {
        ++lineno;
        std::size_t nl = text.find('\n');
        std::string_view line = trim(text.substr(0, nl));
        text.remove_prefix(nl == std::string_view::npos ? text.size() : nl + 1);
        if (line.empty() || line.front() == '#') continue;

        std::size_t sp = line.find_first_of(" \t");
        if (sp == std::string_view::npos) return fail("expected \"<key id> <64 hex digits>\" or \"<key id> retired\"");
        std::string_view id_text = line.substr(0, sp);
        std::string_view rest = trim(line.substr(sp));

        int id = 0;
        if (id_text.empty() || id_text.size() > 3) return fail("a key id must be a number from 1 to 255");
        for (char c : id_text) {
            if (c < '0' || c > '9') return fail("a key id must be a number from 1 to 255");
            id = id * 10 + (c - '0');
        }
        if (id < 1 || id > max_key_id) return fail("a key id must be a number from 1 to 255");
        for (const auto& k : r.keys) {
            if (k.id == id) return fail("key id " + std::to_string(id) + " is listed twice");
        }

        KeyEntry e;
        e.id = id;
        if (rest == "retired") {
            e.retired = true;
        } else {
            if (rest.size() != 2 * key_len) return fail("a key must be 64 hex digits (256 bits)");
            for (std::size_t i = 0; i < key_len; ++i) {
                int hi = hex_value(rest[2 * i]);
                int lo = hex_value(rest[2 * i + 1]);
                if (hi < 0 || lo < 0) return fail("a key must be 64 hex digits (256 bits)");
                e.key[i] = static_cast<std::uint8_t>(hi * 16 + lo);
            }
        }
        if (!e.retired) e.hmac = hmac_sha256_key(e.key.data(), e.key.size());
        r.keys.push_back(e);
    }
    std::sort(r.keys.begin(), r.keys.end(), [](const KeyEntry& a, const KeyEntry& b) { return a.id < b.id; });
    return r;
}

std::string format_key_file(std::vector<KeyEntry> keys) {
    std::sort(keys.begin(), keys.end(), [](const KeyEntry& a, const KeyEntry& b) { return a.id < b.id; });
    std::string out =
        "# pg_lifecycle refresh-token keys: \"<key id> <256-bit key, 64 hex digits>\" or \"<key id> retired\".\n"
        "# Every listed key verifies tokens; the highest key id with a key mints new ones.\n"
        "# Keep this file secret (mode 0600) and identical on the primary and every standby.\n";
    for (const auto& k : keys) {
        out += std::to_string(k.id);
        out += ' ';
        out += k.retired ? std::string("retired") : to_hex(k.key.data(), k.key.size());
        out += '\n';
    }
    return out;
}

const KeyEntry* minting_key(const std::vector<KeyEntry>& keys) {
    const KeyEntry* best = nullptr;
    for (const auto& k : keys) {
        if (!k.retired && (best == nullptr || k.id > best->id)) best = &k;
    }
    return best;
}

}  // namespace pg_lifecycle::tokens
