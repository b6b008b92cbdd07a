/*
 * keys.cpp — the key ring file, its per-backend cache, the fingerprints each
 * database records, HMAC and randomness (see keys.hpp).
 *
 * Writers of the key file (creation on first use, lifecycle.token_key_rotate)
 * hold a cluster-wide advisory lock until their transaction ends and replace
 * the file with durable_rename(), so readers — which take no lock — see
 * either the old or the new file, never a partial one.
 */
#include "tokens/keys.hpp"

#include "bridge/spi.hpp"
#include "bridge/pg.hpp"

#include <algorithm>
#include <cerrno>
#include <fcntl.h>
#include <string>
#include <sys/stat.h>
#include <unistd.h>

namespace pg_lifecycle::tokens::keys {

using bridge::pg_call;

namespace {

constexpr const char* key_file_name = "pg_lifecycle_token.key";
constexpr std::size_t max_key_file_size = std::size_t{64} * 1024;
constexpr std::size_t fingerprint_len = 8;

/* What this backend knows about the key file. */
struct Cache {
    bool loaded = false;
    bool exists = false;
    dev_t dev = 0;
    ino_t ino = 0;
    off_t size = 0;
    struct timespec mtime {};
    std::uint64_t version = 0; /* bumped on every (re)load */
    std::vector<KeyEntry> keys;
    /* Checked against this database's fingerprints (0: not yet). */
    std::uint64_t checked_version = 0;
    bool minting_recorded = false;
    std::uint64_t warned_version = 0;
    TimestampTz checked_at = 0; /* when the file was last stat()ed */
};

/* How often a backend looks at the key file for changes (one stat()). */
constexpr int64 recheck_interval_us = 1000000;

Cache cache;

[[noreturn]] void io_error(const std::string& what, int err) {
    throw Error(ERRCODE_IO_ERROR, fmt::format("could not {} \"{}\": {}", what, key_file_path(), std::strerror(err)));
}

void wipe(std::vector<KeyEntry>& keys) {
    for (auto& k : keys) {
        explicit_bzero(k.key.data(), k.key.size());
        explicit_bzero(&k.hmac, sizeof k.hmac);
    }
    keys.clear();
}

/* Reads the key file; returns false if it does not exist. */
bool read_key_file(std::string& text, struct stat& st) {
    std::string path = key_file_path();
    int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        if (errno == ENOENT) return false;
        io_error("open token key file", errno);
    }
    if (::fstat(fd, &st) != 0) {
        int e = errno;
        ::close(fd);
        io_error("stat token key file", e);
    }
    if ((st.st_mode & S_IRWXO) != 0) {
        ::close(fd);
        throw Error(sqlstate::object_not_in_prerequisite_state,
                    fmt::format("token key file \"{}\" is accessible to other users", path),
                    "It holds the key that makes refresh tokens valid.", fmt::format("chmod 0600 {}", path));
    }
    if (static_cast<std::size_t>(st.st_size) > max_key_file_size) {
        ::close(fd);
        throw Error(sqlstate::object_not_in_prerequisite_state,
                    fmt::format("token key file \"{}\" is too large", path));
    }
    text.assign(static_cast<std::size_t>(st.st_size), '\0');
    std::size_t got = 0;
    while (got < text.size()) {
        ssize_t n = ::read(fd, text.data() + got, text.size() - got);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) {
            int e = n < 0 ? errno : EIO;
            ::close(fd);
            explicit_bzero(text.data(), text.size());
            io_error("read token key file", e);
        }
        got += static_cast<std::size_t>(n);
    }
    ::close(fd);
    return true;
}

/* Parses text into keys or throws 55000 naming the line. */
std::vector<KeyEntry> parse_or_throw(std::string& text) {
    KeyFileParse parsed = parse_key_file(text);
    explicit_bzero(text.data(), text.size());
    if (!parsed.error.empty()) {
        throw Error(sqlstate::object_not_in_prerequisite_state,
                    fmt::format("token key file \"{}\" is malformed at line {}: {}", key_file_path(), parsed.error_line,
                                parsed.error),
                    {}, "Each line is \"<key id> <64 hex digits>\" or \"<key id> retired\"; # starts a comment.");
    }
    return std::move(parsed.keys);
}

bool same_file(const struct stat& st) {
    return cache.exists && st.st_dev == cache.dev && st.st_ino == cache.ino && st.st_size == cache.size &&
           st.st_mtim.tv_sec == cache.mtime.tv_sec && st.st_mtim.tv_nsec == cache.mtime.tv_nsec;
}

/* Makes the cache match the file: one stat() when nothing changed; without
 * force, at most once per recheck_interval_us. */
void refresh(bool force = true) {
    TimestampTz now = GetCurrentTimestamp();
    if (!force && cache.loaded && now - cache.checked_at < recheck_interval_us && now >= cache.checked_at) return;
    cache.checked_at = now;
    struct stat st {};
    std::string path = key_file_path();
    if (::stat(path.c_str(), &st) != 0) {
        if (errno != ENOENT) io_error("stat token key file", errno);
        if (cache.loaded && !cache.exists) return;
        wipe(cache.keys);
        cache.loaded = true;
        cache.exists = false;
        ++cache.version;
        return;
    }
    if (cache.loaded && same_file(st)) return;

    std::string text;
    struct stat fst {};
    std::vector<KeyEntry> keys;
    bool exists = read_key_file(text, fst);
    if (exists) keys = parse_or_throw(text);
    wipe(cache.keys);
    cache.keys = std::move(keys);
    cache.loaded = true;
    cache.exists = exists;
    cache.dev = fst.st_dev;
    cache.ino = fst.st_ino;
    cache.size = fst.st_size;
    cache.mtime = fst.st_mtim;
    ++cache.version;
}

std::string fingerprint(const KeyEntry& k) {
    std::uint8_t out[32];
    hmac_sha256(k.hmac, reinterpret_cast<const std::uint8_t*>(fingerprint_label.data()), fingerprint_label.size(), out);
    return to_hex(out, fingerprint_len);
}

struct Recorded {
    int key_id;
    std::string fingerprint;
};

/* Of these key ids, the ones a live family's current token was minted with:
 * a key missing from the file matters only if tokens issued with it are still
 * in use (a key minted by a call made before the key file was copied into a
 * restored cluster, say, may have issued none). */
std::vector<int> keys_in_use(const std::vector<int>& ids) {
    static bridge::Statement in_use(
        "SELECT DISTINCT current_key FROM lifecycle.token_family_state "
        "WHERE current_key OPERATOR(pg_catalog.=) ANY ($1) AND revoked_at IS NULL "
        "AND expires_at OPERATOR(pg_catalog.>) pg_catalog.now() ORDER BY 1",
        {INT2ARRAYOID});
    Datum arr = bridge::pg_call([&ids] {
        Datum* elems = static_cast<Datum*>(palloc(sizeof(Datum) * (ids.size() + 1)));
        for (size_t i = 0; i < ids.size(); ++i) elems[i] = Int16GetDatum(static_cast<int16>(ids[i]));
        return PointerGetDatum(
            construct_array(elems, static_cast<int>(ids.size()), INT2OID, sizeof(int16), true, TYPALIGN_SHORT));
    });
    in_use.execute(&arr, nullptr, true);
    std::vector<int> out;
    for (uint64 i = 0; i < bridge::processed_rows(); ++i) out.push_back(static_cast<int>(bridge::required_int64(i, 1)));
    return out;
}

std::vector<Recorded> recorded_fingerprints() {
    static bridge::Statement select_fps(
        "SELECT key_id, fingerprint FROM lifecycle.token_key_fingerprints ORDER BY key_id", {});
    select_fps.execute(nullptr, nullptr, false);
    std::vector<Recorded> out;
    for (uint64 i = 0; i < bridge::processed_rows(); ++i) {
        out.push_back(
            Recorded{static_cast<int>(bridge::result_int64(i, 1).value_or(0)), bridge::result_text(i, 2).value_or("")});
    }
    return out;
}

const KeyEntry* entry(int id) {
    for (const auto& k : cache.keys) {
        if (k.id == id) return &k;
    }
    return nullptr;
}

[[noreturn]] void mismatch(int id, const std::string& in_file, const std::string& recorded) {
    throw Error(sqlstate::object_not_in_prerequisite_state,
                fmt::format("token key {} in \"{}\" is not the key this database's refresh tokens were issued with", id,
                            key_file_path()),
                fmt::format("Its fingerprint is {}; lifecycle.token_key_fingerprints records {}.", in_file, recorded),
                "Put back the key file of the server that issued the tokens (the primary this server was cloned "
                "from). To invalidate every issued token instead, run "
                "SELECT lifecycle.token_key_rotate(retire_old => true).");
}

void require_primary(const char* action) {
    if (pg_call([] { return RecoveryInProgress(); })) {
        throw Error(ERRCODE_READ_ONLY_SQL_TRANSACTION, fmt::format("cannot {} on a standby", action),
                    "A hot standby is read-only; refresh tokens are issued and rotated on the primary.");
    }
}

void lock_key_file() {
    pg_call([] {
        LOCKTAG tag;
        /* Cluster-wide (database 0): the key file is shared by every database. */
        SET_LOCKTAG_ADVISORY(tag, InvalidOid, 0x706c6966 /* "plif" */, 0x746b6579 /* "tkey" */, 2);
        (void)LockAcquire(&tag, ExclusiveLock, false, false);
    });
}

/* Replaces the key file with keys (tmp file, fsync, durable_rename). */
void write_key_file(const std::vector<KeyEntry>& keys) {
    std::string text = format_key_file(keys);
    std::string path = key_file_path();
    std::string tmp = path + ".tmp";
    int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, S_IRUSR | S_IWUSR);
    if (fd < 0) {
        int e = errno;
        explicit_bzero(text.data(), text.size());
        io_error("create token key file", e);
    }
    bool ok = ::fchmod(fd, S_IRUSR | S_IWUSR) == 0;
    std::size_t done = 0;
    while (ok && done < text.size()) {
        ssize_t n = ::write(fd, text.data() + done, text.size() - done);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) {
            ok = false;
            break;
        }
        done += static_cast<std::size_t>(n);
    }
    int e = errno;
    explicit_bzero(text.data(), text.size());
    if (ok && ::fsync(fd) != 0) {
        ok = false;
        e = errno;
    }
    ::close(fd);
    if (!ok) {
        ::unlink(tmp.c_str());
        io_error("write token key file", e ? e : EIO);
    }
    pg_call([&] { (void)durable_rename(tmp.c_str(), path.c_str(), ERROR); });
}

/* The next key id: above every id in the file and in this database; once 255
 * is taken, the lowest id neither lists (ids freed by hand). */
int next_key_id(const std::vector<KeyEntry>& keys, const std::vector<Recorded>& recorded) {
    auto taken = [&](int id) {
        for (const auto& k : keys)
            if (k.id == id) return true;
        for (const auto& r : recorded)
            if (r.key_id == id) return true;
        return false;
    };
    int top = 0;
    for (int id = 1; id <= max_key_id; ++id)
        if (taken(id)) top = id;
    if (top < max_key_id) return top + 1;
    for (int id = 1; id <= max_key_id; ++id)
        if (!taken(id)) return id;
    throw Error(sqlstate::object_not_in_prerequisite_state,
                fmt::format("every token key id from 1 to {} is taken", max_key_id),
                fmt::format("Ids are listed in \"{}\" and in lifecycle.token_key_fingerprints.", key_file_path()),
                "To reuse the id of a retired key, delete its line from the key file and its row from "
                "lifecycle.token_key_fingerprints in every database.");
}

/* Adds a new minting key to the file (under the lock, re-reading it first);
 * with only_if_none, only when the file has no minting key (first use: a
 * concurrent first use may have created one while we waited for the lock).
 * Returns the new id, or 0 if none was needed. */
int add_key(bool retire_old, bool only_if_none) {
    lock_key_file();
    std::string text;
    struct stat st {};
    std::vector<KeyEntry> keys;
    if (read_key_file(text, st)) keys = parse_or_throw(text);
    if (only_if_none && minting_key(keys) != nullptr) {
        wipe(keys);
        refresh();
        return 0;
    }
    std::vector<Recorded> recorded = recorded_fingerprints();
    KeyEntry fresh;
    fresh.id = next_key_id(keys, recorded);
    random_bytes(fresh.key.data(), fresh.key.size());
    if (retire_old) {
        for (auto& k : keys) {
            k.retired = true;
            explicit_bzero(k.key.data(), k.key.size());
        }
        /* Keys this database used that the file has lost are retired too. */
        for (const auto& r : recorded) {
            bool listed = false;
            for (const auto& k : keys) listed = listed || k.id == r.key_id;
            if (!listed) keys.push_back(KeyEntry{r.key_id, true, {}});
        }
    }
    keys.push_back(fresh);
    write_key_file(keys);
    wipe(keys);
    explicit_bzero(fresh.key.data(), fresh.key.size());
    refresh();
    return fresh.id;
}

void record_minting_key() {
    static bridge::Statement insert_fp(
        "INSERT INTO lifecycle.token_key_fingerprints (key_id, fingerprint) VALUES ($1, $2) "
        "ON CONFLICT (key_id) DO NOTHING",
        {INT2OID, TEXTOID});
    static bridge::Statement select_fp("SELECT fingerprint FROM lifecycle.token_key_fingerprints WHERE key_id = $1",
                                       {INT2OID});
    const KeyEntry& k = minting();
    std::string fp = fingerprint(k);
    Datum values[2] = {Int16GetDatum(static_cast<int16>(k.id)), bridge::text_datum(fp)};
    insert_fp.execute(values, nullptr, false);
    select_fp.execute(values, nullptr, false);
    std::string recorded = bridge::result_text(0, 1).value_or("");
    if (recorded != fp) mismatch(k.id, fp, recorded);
}

void forget_on_abort(XactEvent event, void*) noexcept {
    if (event == XACT_EVENT_ABORT || event == XACT_EVENT_PARALLEL_ABORT) {
        cache.checked_version = 0;
        cache.minting_recorded = false;
    }
}

void forget_on_subabort(SubXactEvent event, SubTransactionId, SubTransactionId, void*) noexcept {
    if (event == SUBXACT_EVENT_ABORT_SUB) {
        cache.checked_version = 0;
        cache.minting_recorded = false;
    }
}

}  // namespace

std::string key_file_path() { return std::string(DataDir) + "/" + key_file_name; }

/* pg_strong_random, drawn 512 bytes at a time: one call per 32 tokens
 * instead of one per token.  The pool belongs to the process that filled it
 * (checked by pid, so a forked child never reuses its parent's bytes), and
 * bytes are wiped as they are handed out. */
void random_bytes(std::uint8_t* out, std::size_t len) {
    static std::uint8_t pool[512];
    static std::size_t left = 0;
    static pid_t owner = 0;
    if (owner != MyProcPid) {
        left = 0;
        owner = MyProcPid;
    }
    while (len > 0) {
        if (left == 0) {
            if (!pg_strong_random(pool, sizeof pool)) {
                throw Error(sqlstate::internal_error, "could not generate random bytes (pg_strong_random failed)");
            }
            left = sizeof pool;
        }
        std::size_t take = std::min(len, left);
        std::uint8_t* from = pool + (sizeof pool - left);
        std::memcpy(out, from, take);
        explicit_bzero(from, take);
        out += take;
        len -= take;
        left -= take;
    }
}

Bytes16 mac(const KeyEntry& key, const Bytes16& family, const Bytes16& nonce) {
    auto msg = mac_message(static_cast<std::uint8_t>(key.id), family, nonce);
    std::uint8_t full[32];
    hmac_sha256(key.hmac, msg.data(), msg.size(), full);
    Bytes16 out;
    std::memcpy(out.data(), full, out.size());
    explicit_bzero(full, sizeof full);
    return out;
}

bool verify(const TokenParts& parts) {
    const KeyEntry* k = find(parts.key_id);
    if (k == nullptr && entry(parts.key_id) == nullptr) {
        /* A key added since this backend last looked?  (A changed file is
         * checked against this database's fingerprints before use.) */
        refresh(true);
        ring_for(true);
        k = find(parts.key_id);
    }
    if (k == nullptr) return false;
    Bytes16 expected = mac(*k, parts.family, parts.nonce);
    return equal_constant_time(expected.data(), parts.mac.data(), mac_len);
}

const KeyEntry* find(int key_id) {
    const KeyEntry* k = entry(key_id);
    return (k != nullptr && !k->retired) ? k : nullptr;
}

const KeyEntry& minting() {
    const KeyEntry* k = minting_key(cache.keys);
    if (k == nullptr) throw Error(sqlstate::internal_error, "pg_lifecycle: no minting token key");
    return *k;
}

const std::vector<KeyEntry>& ring_for(bool mint) {
    refresh(false);
    if (cache.checked_version == cache.version && (!mint || cache.minting_recorded)) return cache.keys;

    if (mint && minting_key(cache.keys) == nullptr) {
        /* First use (or every key retired by hand): create a key. */
        require_primary("create the refresh-token key");
        add_key(false, true);
    }
    std::vector<Recorded> recorded = recorded_fingerprints();
    std::vector<int> missing;
    for (const auto& r : recorded) {
        const KeyEntry* k = entry(r.key_id);
        if (k == nullptr) {
            missing.push_back(r.key_id);
        } else if (!k->retired) {
            std::string fp = fingerprint(*k);
            if (fp != r.fingerprint) mismatch(k->id, fp, r.fingerprint);
        }
    }
    if (!missing.empty()) missing = keys_in_use(missing);
    if (!missing.empty() && cache.warned_version != cache.version) {
        cache.warned_version = cache.version;
        std::string ids;
        for (int id : missing) ids += (ids.empty() ? "" : ", ") + std::to_string(id);
        std::string msg = fmt::format(
            "refresh-token key(s) {} of this database, with which live tokens were "
            "issued, are missing from \"{}\"",
            ids, key_file_path());
        pg_call([&msg] {
            ereport(WARNING, (errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE), errmsg("%s", msg.c_str()),
                              errdetail("Tokens issued with them are rejected as invalid."),
                              errhint("Copy their lines from the key file of the server that issued them (the "
                                      "primary this server was cloned from).")));
        });
    }
    if (mint) record_minting_key();
    cache.checked_version = cache.version;
    cache.minting_recorded = mint;
    return cache.keys;
}

int rotate(bool retire_old) {
    require_primary("rotate the refresh-token key");
    int id = add_key(retire_old, false);
    cache.checked_version = 0;
    ring_for(true);
    return id;
}

std::vector<KeyInfo> describe() {
    refresh();
    std::vector<Recorded> recorded = recorded_fingerprints();
    const KeyEntry* mint = minting_key(cache.keys);
    std::vector<KeyInfo> out;
    for (const auto& k : cache.keys) {
        const char* state = k.retired ? "retired" : (&k == mint ? "minting" : "verifying");
        out.push_back(KeyInfo{k.id, k.retired ? std::string() : fingerprint(k), state});
    }
    for (const auto& r : recorded) {
        if (entry(r.key_id) == nullptr) out.push_back(KeyInfo{r.key_id, r.fingerprint, "missing"});
    }
    std::sort(out.begin(), out.end(), [](const KeyInfo& a, const KeyInfo& b) { return a.key_id < b.key_id; });
    return out;
}

void register_callbacks() {
    pg_call([] {
        RegisterXactCallback(forget_on_abort, nullptr);
        RegisterSubXactCallback(forget_on_subabort, nullptr);
    });
}

}  // namespace pg_lifecycle::tokens::keys
