/*
 * keys.hpp — the server key that MACs refresh tokens (SPEC.md §2).
 *
 * The key ring lives in $PGDATA/pg_lifecycle_token.key (format: codec.hpp),
 * outside every table, so no copy of the database's tables lets anyone present
 * a valid token.  It is shared by every database of the cluster, created with
 * mode 0600 on first use, cached per backend and re-read when the file
 * changes (checked with one stat() per call).
 *
 * Each database records the fingerprint of every key it has minted with in
 * lifecycle.token_key_fingerprints (an HMAC of a constant under the key: it
 * does not reveal the key).  That catches a server whose key file is not the
 * one its tokens were issued with — a standby promoted without the file, a
 * restore onto another cluster — instead of silently logging every user out.
 */
#pragma once

#include "bridge/pg.hpp"
#include "tokens/codec.hpp"

#include <vector>

namespace pg_lifecycle::tokens::keys {

/* The ring, loaded and checked against this database's fingerprints.  With
 * mint = true it also has a minting key (the file is created, or a key
 * added, when there is none) whose fingerprint is recorded.  SPI connected. */
const std::vector<KeyEntry>& ring_for(bool mint);

/* The key that mints (after ring_for(true)). */
const KeyEntry& minting();
/* The usable (not retired) key with this id, or nullptr. */
const KeyEntry* find(int key_id);

/* The first mac_len bytes of HMAC-SHA-256(key, mac_message(...)). */
Bytes16 mac(const KeyEntry& key, const Bytes16& family, const Bytes16& nonce);
/* True iff parts.mac is the mac of parts under a usable key (after
 * ring_for(true): a key id it does not know makes it re-read the file). */
bool verify(const TokenParts& parts);

/* Bytes from pg_strong_random. */
void random_bytes(std::uint8_t* out, std::size_t len);

/* lifecycle.token_key_rotate: adds a minting key; retire_old retires every
 * other key.  Returns the new key id.  SPI connected. */
int rotate(bool retire_old);

struct KeyInfo {
    int key_id;
    std::string fingerprint; /* empty when unknown */
    const char* state;       /* minting, verifying, retired, missing */
};
/* Every key this server or this database knows of.  Read-only (works on a
 * standby).  SPI connected. */
std::vector<KeyInfo> describe();

/* Path of the key file, for messages. */
std::string key_file_path();

/* Forget what was checked in this transaction when it aborts (module init). */
void register_callbacks();

}  // namespace pg_lifecycle::tokens::keys
