/*
 * families.cpp — refresh-token families (SPEC.md §2): token_family_create,
 * token_rotate, token_family_revoke, token_families_revoke_user, and the key
 * functions token_key_rotate and token_keys.
 *
 * State: lifecycle.token_family_state holds one row per family with its
 * current token's nonce and key id and the previous token's nonce;
 * lifecycle.token_chain holds the nonce of every token ever issued (to tell a
 * superseded ancestor from a token that was never issued).  Tokens themselves
 * are never stored: see codec.hpp for their layout and keys.hpp for the key.
 *
 * token_rotate first tries the common case in one UPDATE (the presented token
 * is the live family's current one); otherwise it locks the family row (FOR
 * NO KEY UPDATE) and classifies the token.  Either way the row lock orders
 * concurrent calls: of N concurrent rotations of the current token one
 * rotates and the others, once it commits, find their token to be the
 * previous one and replay.  Outcomes are returned, never raised, so a
 * revocation for reuse commits with the caller's transaction.
 *
 * Every time these functions record is the start of the calling statement
 * (statement_timestamp()), so a long transaction cannot stretch the reuse
 * grace window.
 */
#include "bridge/function.hpp"
#include "bridge/spi.hpp"
#include "softdelete/citus.hpp"
#include "tokens/keys.hpp"
#include "tokens/tokens.hpp"

namespace pg_lifecycle::tokens {

using bridge::pg_call;

namespace {

/* ---- argument checks ---- */

/* The text of argument n without copying (detoasted in the current context). */
std::string_view text_view(FunctionCallInfo fcinfo, int n) {
    text* t = pg_call([&] { return PG_GETARG_TEXT_PP(n); });
    return {VARDATA_ANY(t), VARSIZE_ANY_EXHDR(t)};
}

std::string_view required_text(FunctionCallInfo fcinfo, int n, const char* name) {
    bridge::require_arg(fcinfo, n, name);
    std::string_view v = text_view(fcinfo, n);
    if (v.empty()) throw Error(sqlstate::invalid_parameter_value, fmt::format("{} must not be empty", name));
    return v;
}

/* NULL, or non-empty text. */
bool optional_text(FunctionCallInfo fcinfo, int n, const char* name) {
    if (PG_ARGISNULL(n)) return false;
    if (text_view(fcinfo, n).empty()) {
        throw Error(sqlstate::invalid_parameter_value, fmt::format("{} must not be empty", name), {},
                    "Pass NULL when it is not known.");
    }
    return true;
}

void require_primary(const char* function) {
    if (pg_call([] { return RecoveryInProgress(); })) {
        throw Error(ERRCODE_READ_ONLY_SQL_TRANSACTION, fmt::format("{} cannot run on a standby", function),
                    "A hot standby is read-only; refresh tokens are issued, rotated and revoked on the primary.");
    }
}

/* ---- values ---- */

Bytes16 random16() {
    Bytes16 b;
    keys::random_bytes(b.data(), b.size());
    return b;
}

/* A version-4 uuid from pg_strong_random, as gen_random_uuid() makes them. */
Bytes16 random_uuid() {
    Bytes16 b = random16();
    b[6] = static_cast<std::uint8_t>((b[6] & 0x0f) | 0x40);
    b[8] = static_cast<std::uint8_t>((b[8] & 0x3f) | 0x80);
    return b;
}

Datum uuid_datum(const Bytes16& b) {
    auto* u = static_cast<pg_uuid_t*>(pg_call([] { return palloc(sizeof(pg_uuid_t)); }));
    std::memcpy(u->data, b.data(), UUID_LEN);
    return UUIDPGetDatum(u);
}

Datum bytea_datum(const Bytes16& b) {
    auto* v = static_cast<bytea*>(pg_call([] { return palloc(VARHDRSZ + 16); }));
    SET_VARSIZE(v, VARHDRSZ + 16);
    std::memcpy(VARDATA(v), b.data(), 16);
    return PointerGetDatum(v);
}

/* A 16-byte bytea Datum, or nullopt if NULL or not 16 bytes. */
std::optional<Bytes16> bytes16(std::optional<Datum> d) {
    if (!d) return std::nullopt;
    bytea* v = pg_call([&] { return DatumGetByteaPP(*d); });
    if (VARSIZE_ANY_EXHDR(v) != 16) return std::nullopt;
    Bytes16 out;
    std::memcpy(out.data(), VARDATA_ANY(v), 16);
    return out;
}

bool same(const Bytes16& a, const std::optional<Bytes16>& b) {
    return b && equal_constant_time(a.data(), b->data(), 16);
}

TimestampTz plus(TimestampTz t, const Interval* iv) {
    return pg_call([t, iv] {
        return DatumGetTimestampTz(DirectFunctionCall2(timestamptz_pl_interval, TimestampTzGetDatum(t),
                                                       IntervalPGetDatum(const_cast<Interval*>(iv))));
    });
}

int compare_to_zero(const Interval* iv) { return bridge::interval_sign(iv); }

/* ---- the result row of token_rotate ---- */

struct Outcome {
    const char* status = "invalid";
    std::optional<Bytes16> family;
    std::optional<Datum> user_id; /* a text Datum */
    bool has_token = false;
    char token[token_text_len] = {};
    std::optional<int32> generation;
};

void put_outcome(FunctionCallInfo fcinfo, const Outcome& o) {
    auto* rsinfo = reinterpret_cast<ReturnSetInfo*>(fcinfo->resultinfo);
    Datum values[5] = {bridge::text_datum(o.status), o.family ? uuid_datum(*o.family) : Datum(0),
                       o.user_id.value_or(Datum(0)),
                       o.has_token ? bridge::text_datum(std::string_view(o.token, token_text_len)) : Datum(0),
                       Int32GetDatum(o.generation.value_or(0))};
    bool nulls[5] = {false, !o.family, !o.user_id, !o.has_token, !o.generation};
    pg_call([&] { tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls); });
}

/* A tuplestore for the result; the executor's expected row type when it has
 * one (cheaper than looking the function's result type up again). */
void init_srf(FunctionCallInfo fcinfo) {
    pg_call([fcinfo] {
        auto* rsinfo = reinterpret_cast<ReturnSetInfo*>(fcinfo->resultinfo);
        bool expected = rsinfo != nullptr && IsA(rsinfo, ReturnSetInfo) && rsinfo->expectedDesc != nullptr;
        InitMaterializedSRF(fcinfo, expected ? MAT_SRF_USE_EXPECTED_DESC : 0);
    });
}

/* The token of (key, family, nonce). */
void mint(const KeyEntry& key, const Bytes16& family, const Bytes16& nonce, char out[token_text_len]) {
    TokenParts p;
    p.key_id = static_cast<std::uint8_t>(key.id);
    p.family = family;
    p.nonce = nonce;
    p.mac = keys::mac(key, family, nonce);
    encode_token(p, out);
}

/* ---- token_rotate ---- */

/* The family row, locked. */
struct Family {
    Datum user_id;
    std::optional<Datum> device_fingerprint;
    int32 generation;
    Bytes16 current_nonce;
    std::optional<Bytes16> previous_nonce;
    int current_key;
    std::optional<TimestampTz> rotated_at;
    TimestampTz expires_at;
    std::optional<TimestampTz> idle_expires_at;
    bool revoked;
    TransactionId xmin;
};

std::optional<Family> lock_family(const Bytes16& family_id) {
    static bridge::Statement lock(
        "SELECT user_id, device_fingerprint, generation, current_nonce, previous_nonce, current_key, rotated_at, "
        "expires_at, revoked_at IS NOT NULL, xmin, idle_expires_at "
        "FROM lifecycle.token_family_state WHERE family_id = $1 FOR NO KEY UPDATE",
        {UUIDOID});
    Datum id = uuid_datum(family_id);
    lock.execute(&id, nullptr, false);
    if (bridge::processed_rows() == 0) return std::nullopt;
    Family f;
    f.user_id = bridge::required_datum(0, 1);
    f.device_fingerprint = bridge::result_datum(0, 2);
    f.generation = DatumGetInt32(bridge::required_datum(0, 3));
    auto cur = bytes16(bridge::result_datum(0, 4));
    if (!cur) throw Error(sqlstate::internal_error, "pg_lifecycle: malformed current_nonce in token_family_state");
    f.current_nonce = *cur;
    f.previous_nonce = bytes16(bridge::result_datum(0, 5));
    f.current_key = DatumGetInt16(bridge::required_datum(0, 6));
    auto rotated = bridge::result_datum(0, 7);
    if (rotated) f.rotated_at = DatumGetTimestampTz(*rotated);
    f.expires_at = DatumGetTimestampTz(bridge::required_datum(0, 8));
    f.revoked = DatumGetBool(bridge::required_datum(0, 9));
    f.xmin = DatumGetTransactionId(bridge::required_datum(0, 10));
    if (auto idle = bridge::result_datum(0, 11)) f.idle_expires_at = DatumGetTimestampTz(*idle);
    return f;
}

/* The generation of an earlier token of the family, if it was ever issued. */
std::optional<int32> ancestor_generation(const Bytes16& family_id, const Bytes16& nonce) {
    static bridge::Statement find("SELECT generation FROM lifecycle.token_chain WHERE family_id = $1 AND nonce = $2",
                                  {UUIDOID, BYTEAOID});
    Datum values[2] = {uuid_datum(family_id), bytea_datum(nonce)};
    find.execute(values, nullptr, false);
    if (bridge::processed_rows() == 0) return std::nullopt;
    return static_cast<int32>(bridge::required_int64(0, 1));
}

/* True if the last change to the family row committed after the calling
 * statement took its snapshot: the caller presented its token concurrently
 * with that rotation, before it could have seen it. */
bool changed_after_statement_began(TransactionId xmin, Snapshot snapshot) {
    if (snapshot == nullptr || !TransactionIdIsNormal(xmin)) return false;
    return pg_call(
        [xmin, snapshot] { return !TransactionIdIsCurrentTransactionId(xmin) && XidInMVCCSnapshot(xmin, snapshot); });
}

/* The rotation's UPDATE that also records the presented device (Citus; the
 * security event is a statement of its own there). */
bridge::Statement& rotate_citus_device_update() {
    static bridge::Statement update(
        "UPDATE lifecycle.token_family_state SET generation = generation + 1, "
        "previous_nonce = current_nonce, current_nonce = $2, current_key = $3, rotated_at = $4, last_used_at = $4, "
        "device_fingerprint = $6, idle_expires_at = "
        "pg_catalog.timezone('UTC', pg_catalog.timezone('UTC', $4) OPERATOR(pg_catalog.+) idle_timeout) "
        "WHERE family_id = $1 AND current_nonce = $5 AND revoked_at IS NULL AND expires_at > $4 "
        "AND (idle_expires_at IS NULL OR idle_expires_at > $4) "
        "AND generation < 2147483647 RETURNING generation, user_id",
        {UUIDOID, BYTEAOID, INT2OID, TIMESTAMPTZOID, BYTEAOID, TEXTOID});
    return update;
}

/* Revokes the family for reuse and records why (severity high). */
void revoke_for_reuse(const Bytes16& family_id, const Family& f, const char* cause, int32 presented_generation,
                      std::optional<Datum> device, TimestampTz ts) {
#define REUSE_REVOKE                                                                              \
    "UPDATE lifecycle.token_family_state SET revoked_at = $1, revoked_reason = 'reuse_detected' " \
    "WHERE family_id = $3"
#define REUSE_EVENT                                                                                          \
    "INSERT INTO lifecycle.security_events (occurred_at, event_type, severity, user_id, family_id, detail) " \
    "VALUES ($1, 'token_reuse_detected', 'high', $2, $3, jsonb_strip_nulls(pg_catalog.jsonb_build_object("   \
    "'cause', $4::text, 'presented_generation', $5::integer, 'current_generation', $6::integer, "            \
    "'seconds_since_rotation', extract(epoch FROM $1 - $7::timestamptz)::float8, "                           \
    "'grace_seconds', extract(epoch FROM $8::interval)::float8, "                                            \
    "'device_fingerprint', $9::text, 'family_device_fingerprint', $10::text)))"
    static bridge::Statement revoke(
        "WITH revoked AS (" REUSE_REVOKE ") " REUSE_EVENT,
        {TIMESTAMPTZOID, TEXTOID, UUIDOID, TEXTOID, INT4OID, INT4OID, TIMESTAMPTZOID, INTERVALOID, TEXTOID, TEXTOID});
    /* On Citus, two statements: Citus fails on a modifying CTE over a
     * distributed table in an INSERT into a local one. */
    static bridge::Statement revoke_citus(REUSE_REVOKE, {TIMESTAMPTZOID, TEXTOID, UUIDOID});
    static bridge::Statement event_citus(REUSE_EVENT, {TIMESTAMPTZOID, TEXTOID, UUIDOID, TEXTOID, INT4OID, INT4OID,
                                                       TIMESTAMPTZOID, INTERVALOID, TEXTOID, TEXTOID});
    Interval grace = *reuse_grace();
    Datum values[10] = {TimestampTzGetDatum(ts),
                        f.user_id,
                        uuid_datum(family_id),
                        bridge::text_datum(cause),
                        Int32GetDatum(presented_generation),
                        Int32GetDatum(f.generation),
                        TimestampTzGetDatum(f.rotated_at.value_or(0)),
                        IntervalPGetDatum(&grace),
                        device.value_or(0),
                        f.device_fingerprint.value_or(0)};
    char nulls[11] = "          ";
    if (!f.rotated_at) nulls[6] = 'n';
    if (!device) nulls[8] = 'n';
    if (!f.device_fingerprint) nulls[9] = 'n';
    if (softdelete::citus::present()) {
        revoke_citus.execute(values, nulls, false);
        event_citus.execute(values, nulls, false);
    } else {
        revoke.execute(values, nulls, false);
    }
    /* The server log too (not the client: LOG), for whoever watches it. */
    Datum family = uuid_datum(family_id);
    pg_call([family, cause] {
        char* text = DatumGetCString(DirectFunctionCall1(uuid_out, family));
        ereport(LOG, (errmsg("pg_lifecycle: refresh-token reuse detected (%s): family %s revoked", cause, text),
                      errhidestmt(true)));
    });
}

/* The common case in one statement: the presented token is the live family's
 * current one.  Rotates (the chain row, the family row, and a device change
 * event if the fingerprint changed) and returns the new generation and the
 * user, or nothing — then the caller classifies the token under a lock.  A
 * rotation that commits while this waits for the row makes the recheck of
 * current_nonce fail, so a concurrent loser also ends up on that path. */
std::optional<std::pair<int32, Datum>> rotate_if_current(const Bytes16& family_id, const Bytes16& presented,
                                                         const Bytes16& nonce, int key_id, std::optional<Datum> device,
                                                         TimestampTz ts) {
    /* The hot path: no device fingerprint presented. */
#define ROTATE_SQL(idle_expiry)                                                                                  \
    "UPDATE lifecycle.token_family_state SET generation = generation + 1, "                                      \
    "previous_nonce = current_nonce, current_nonce = $2, current_key = $3, rotated_at = $4, last_used_at = $4, " \
    "idle_expires_at = " idle_expiry                                                                             \
    " "                                                                                                          \
    "WHERE family_id = $1 AND current_nonce = $5 AND revoked_at IS NULL AND expires_at > $4 "                    \
    "AND (idle_expires_at IS NULL OR idle_expires_at > $4) "                                                     \
    "AND generation < 2147483647 RETURNING generation, user_id"
    /* With one: recorded, and a change is a security event. */
#define ROTATE_DEVICE_SQL(idle_expiry)                                                                    \
    "WITH before AS (SELECT device_fingerprint FROM lifecycle.token_family_state WHERE family_id = $1), " \
    "rotated AS (UPDATE lifecycle.token_family_state SET generation = generation + 1, "                   \
    "            previous_nonce = current_nonce, current_nonce = $2, current_key = $3, rotated_at = $4, " \
    "            last_used_at = $4, device_fingerprint = $6, idle_expires_at = " idle_expiry              \
    " "                                                                                                   \
    "            WHERE family_id = $1 AND current_nonce = $5 AND revoked_at IS NULL AND expires_at > $4 " \
    "              AND (idle_expires_at IS NULL OR idle_expires_at > $4) "                                \
    "              AND generation < 2147483647 "                                                          \
    "            RETURNING family_id, generation, user_id), "                                             \
    "device AS (INSERT INTO lifecycle.security_events (occurred_at, event_type, severity, user_id, "      \
    "           family_id, detail) SELECT $4, 'token_device_changed', 'medium', r.user_id, r.family_id, " \
    "           pg_catalog.jsonb_build_object('previous_device_fingerprint', b.device_fingerprint, "      \
    "                              'device_fingerprint', $6::text, 'generation', r.generation) "          \
    "           FROM rotated r, before b WHERE b.device_fingerprint <> $6) "                              \
    "SELECT generation, user_id FROM rotated"
    /* Where Citus is installed the idle expiry is computed in UTC (a day of
     * idle_timeout is 24 hours): Citus refuses "$4 + idle_timeout" (a STABLE
     * operator over a column) in a distributed UPDATE, while "timestamp +
     * interval" and timezone() are IMMUTABLE. */
    static bridge::Statement rotate_local(ROTATE_SQL("$4 + idle_timeout"),
                                          {UUIDOID, BYTEAOID, INT2OID, TIMESTAMPTZOID, BYTEAOID});
    static bridge::Statement rotate_citus(
        ROTATE_SQL("pg_catalog.timezone('UTC', pg_catalog.timezone('UTC', $4) OPERATOR(pg_catalog.+) idle_timeout)"),
        {UUIDOID, BYTEAOID, INT2OID, TIMESTAMPTZOID, BYTEAOID});
    static bridge::Statement rotate_device_local(ROTATE_DEVICE_SQL("$4 + idle_timeout"),
                                                 {UUIDOID, BYTEAOID, INT2OID, TIMESTAMPTZOID, BYTEAOID, TEXTOID});
    /* On Citus, the rotation with a device in three statements: Citus
     * silently skips a modifying CTE into a local table (security_events)
     * next to an UPDATE of a distributed one. */
    static bridge::Statement device_before(
        "SELECT device_fingerprint FROM lifecycle.token_family_state WHERE family_id = $1", {UUIDOID});
    static bridge::Statement device_event(
        "INSERT INTO lifecycle.security_events (occurred_at, event_type, severity, user_id, family_id, detail) "
        "VALUES ($1, 'token_device_changed', 'medium', $2, $3, pg_catalog.jsonb_build_object("
        "'previous_device_fingerprint', $4::text, 'device_fingerprint', $5::text, 'generation', $6::integer))",
        {TIMESTAMPTZOID, TEXTOID, UUIDOID, TEXTOID, TEXTOID, INT4OID});
    bool citus = softdelete::citus::present();
    bridge::Statement& rotate = citus ? rotate_citus : rotate_local;
    bridge::Statement& rotate_device = rotate_device_local;
    static bridge::Statement issue(
        "INSERT INTO lifecycle.token_chain (family_id, nonce, generation) VALUES ($1, $2, $3)",
        {UUIDOID, BYTEAOID, INT4OID});
    Datum values[6] = {uuid_datum(family_id),   bytea_datum(nonce),     Int16GetDatum(static_cast<int16>(key_id)),
                       TimestampTzGetDatum(ts), bytea_datum(presented), device.value_or(0)};
    int32 generation;
    Datum user_id;
    if (device && citus) {
        device_before.execute(values, nullptr, false);
        std::optional<std::string> before = bridge::processed_rows() ? bridge::result_text(0, 1) : std::nullopt;
        rotate_citus_device_update().execute(values, nullptr, false);
        if (bridge::processed_rows() == 0) return std::nullopt;
        generation = DatumGetInt32(bridge::required_datum(0, 1));
        user_id = pg_call([] {
            bool isnull;
            return datumCopy(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2, &isnull), false, -1);
        });
        std::string now_device = pg_call([&] { return std::string(TextDatumGetCString(*device)); });
        if (before && *before != now_device) {
            Datum event[6] = {
                values[3], user_id, values[0], bridge::text_datum(*before), *device, Int32GetDatum(generation)};
            device_event.execute(event, nullptr, false);
        }
    } else {
        if (device) rotate_device.execute(values, nullptr, false);
        else rotate.execute(values, nullptr, false);
        if (bridge::processed_rows() == 0) return std::nullopt;
        generation = DatumGetInt32(bridge::required_datum(0, 1));
        user_id = bridge::required_datum(0, 2);
    }
    Datum chain[3] = {values[0], values[1], Int32GetDatum(generation)};
    issue.execute(chain, nullptr, false);
    return std::make_pair(generation, user_id);
}

/* The family row as the caller's statement saw it (its snapshot), if any. */
std::optional<Family> family_as_of(const Bytes16& family_id, Snapshot snapshot) {
    static bridge::Statement read(
        "SELECT generation, current_nonce, previous_nonce, current_key, rotated_at "
        "FROM lifecycle.token_family_state WHERE family_id = $1",
        {UUIDOID});
    Datum id = uuid_datum(family_id);
    /* read_only: SPI runs the query on the active snapshot.  (On an error the
     * transaction aborts, which also clears the snapshot stack.) */
    pg_call([snapshot] { PushActiveSnapshot(snapshot); });
    read.execute(&id, nullptr, true);
    pg_call([] { PopActiveSnapshot(); });
    if (bridge::processed_rows() == 0) return std::nullopt;
    Family f{};
    f.generation = DatumGetInt32(bridge::required_datum(0, 1));
    auto cur = bytes16(bridge::result_datum(0, 2));
    if (!cur) return std::nullopt;
    f.current_nonce = *cur;
    f.previous_nonce = bytes16(bridge::result_datum(0, 3));
    f.current_key = DatumGetInt16(bridge::required_datum(0, 4));
    if (auto rotated = bridge::result_datum(0, 5)) f.rotated_at = DatumGetTimestampTz(*rotated);
    return f;
}

/* status replayed: the token (key, family, nonce) again, at its generation. */
Outcome& replay(Outcome& out, const Bytes16& family_id, int key_id, const Bytes16& nonce, int32 generation) {
    const KeyEntry* key = keys::find(key_id);
    if (key == nullptr) { /* its key has been retired since */
        out = Outcome{};
        return out;
    }
    mint(*key, family_id, nonce, out.token);
    out.has_token = true;
    out.status = "replayed";
    out.generation = generation;
    return out;
}

Outcome rotate_token(std::string_view presented, std::optional<Datum> device, TimestampTz ts, Snapshot snapshot) {
    Outcome out;
    std::optional<TokenParts> parts = decode_token(presented);
    if (!parts) return out; /* not a token at all */
    keys::ring_for(true);
    if (!keys::verify(*parts)) return out; /* not issued by this server's keys */

    {
        const KeyEntry& key = keys::minting();
        Bytes16 nonce = random16();
        if (auto r = rotate_if_current(parts->family, parts->nonce, nonce, key.id, device, ts)) {
            mint(key, parts->family, nonce, out.token);
            out.has_token = true;
            out.status = "rotated";
            out.family = parts->family;
            out.user_id = r->second;
            out.generation = r->first;
            return out;
        }
    }

    std::optional<Family> fam = lock_family(parts->family);
    if (!fam) return out; /* purged, or never committed */
    const Family& f = *fam;

    enum class Kind { current, previous, ancestor } kind;
    int32 presented_generation = 0;
    if (same(parts->nonce, f.current_nonce)) {
        kind = Kind::current;
        presented_generation = f.generation;
    } else if (same(parts->nonce, f.previous_nonce)) {
        kind = Kind::previous;
        presented_generation = f.generation - 1;
    } else if (auto g = ancestor_generation(parts->family, parts->nonce)) {
        kind = Kind::ancestor;
        presented_generation = *g;
    } else {
        return out; /* minted by a rotation that rolled back */
    }

    out.family = parts->family;
    out.user_id = f.user_id;
    out.generation = f.generation;
    if (f.revoked) {
        out.status = "revoked";
        return out;
    }
    if (f.expires_at <= ts || (f.idle_expires_at && *f.idle_expires_at <= ts)) {
        out.status = "expired";
        return out;
    }

    if (kind == Kind::current) {
        /* The fast path missed it only at the generation limit (the row is
         * locked now, so nothing else can have changed it). */
        if (f.generation == PG_INT32_MAX) {
            throw Error(sqlstate::object_not_in_prerequisite_state,
                        "refresh-token family has reached the generation limit", {},
                        "Create a new family with lifecycle.token_family_create.");
        }
        const KeyEntry& key = keys::minting();
        Bytes16 nonce = random16();
        auto r = rotate_if_current(parts->family, parts->nonce, nonce, key.id, device, ts);
        if (!r) throw Error(sqlstate::internal_error, "pg_lifecycle: could not rotate a locked, live family");
        mint(key, parts->family, nonce, out.token);
        out.has_token = true;
        out.status = "rotated";
        out.generation = r->first;
        return out;
    }

    /* A presentation that began before the family's last change committed
     * is judged by the family as it was when it arrived (the caller's
     * snapshot): it could not have known better. */
    bool concurrent = changed_after_statement_began(f.xmin, snapshot);
    if (kind == Kind::previous) {
        bool within_grace = f.rotated_at && ts < plus(*f.rotated_at, reuse_grace());
        if (concurrent || within_grace) {
            return replay(out, parts->family, f.current_key, f.current_nonce, f.generation);
        }
    } else if (concurrent) {
        /* An older ancestor now — but was it the replayable previous token
         * when it arrived, before a concurrent rotation moved the family on
         * by one?  Then the answer is what a replay would have returned then
         * (the token that is now the previous one), not a revocation. */
        std::optional<Family> then = family_as_of(parts->family, snapshot);
        if (then && then->generation + 1 == f.generation && same(parts->nonce, then->previous_nonce) &&
            then->rotated_at && ts < plus(*then->rotated_at, reuse_grace())) {
            return replay(out, parts->family, then->current_key, then->current_nonce, then->generation);
        }
    }

    revoke_for_reuse(parts->family, f, kind == Kind::previous ? "replay_after_grace" : "older_ancestor",
                     presented_generation, device, ts);
    out.status = "reuse_detected";
    return out;
}

}  // namespace

}  // namespace pg_lifecycle::tokens

using namespace pg_lifecycle;
using namespace pg_lifecycle::tokens;
using bridge::pg_call;

/* lifecycle.token_family_create(user_id text, device_fingerprint text, ttl interval, idle_timeout interval)
 *     RETURNS TABLE(family_id uuid, token text) */
LIFECYCLE_FUNCTION(lifecycle_token_family_create) {
    required_text(fcinfo, 0, "user_id");
    bool has_device = optional_text(fcinfo, 1, "device_fingerprint");
    bridge::require_arg(fcinfo, 2, "ttl");
    Interval* ttl = PG_GETARG_INTERVAL_P(2);
    if (compare_to_zero(ttl) <= 0) {
        throw Error(sqlstate::invalid_parameter_value, "ttl must be a positive interval");
    }
    /* idle_timeout: the fourth argument since 0.2 (absent when an old
     * signature calls in a database not updated yet). */
    bool has_idle = PG_NARGS() > 3 && !PG_ARGISNULL(3);
    if (has_idle && compare_to_zero(PG_GETARG_INTERVAL_P(3)) <= 0) {
        throw Error(sqlstate::invalid_parameter_value, "idle_timeout must be a positive interval", {},
                    "Pass NULL for a family without an inactivity lifetime.");
    }
    require_primary("lifecycle.token_family_create");
    init_srf(fcinfo);
    TimestampTz ts = GetCurrentStatementStartTimestamp();

    static bridge::Statement create(
        "WITH issued AS (INSERT INTO lifecycle.token_chain (family_id, nonce, generation) VALUES ($1, $2, 1)) "
        "INSERT INTO lifecycle.token_family_state (family_id, user_id, device_fingerprint, generation, created_at, "
        "last_used_at, expires_at, current_key, current_nonce, idle_timeout, idle_expires_at) "
        "VALUES ($1, $3, $4, 1, $5, $5, $5 + $6, $7, $2, $8, $5 + $8)",
        {UUIDOID, BYTEAOID, TEXTOID, TEXTOID, TIMESTAMPTZOID, INTERVALOID, INT2OID, INTERVALOID});

    bridge::SpiConnection spi;
    keys::ring_for(true);
    const KeyEntry& key = keys::minting();
    Bytes16 family = random_uuid();
    Bytes16 nonce = random16();
    Datum values[8] = {uuid_datum(family),
                       bytea_datum(nonce),
                       PG_GETARG_DATUM(0),
                       has_device ? PG_GETARG_DATUM(1) : Datum(0),
                       TimestampTzGetDatum(ts),
                       IntervalPGetDatum(ttl),
                       Int16GetDatum(static_cast<int16>(key.id)),
                       has_idle ? PG_GETARG_DATUM(3) : Datum(0)};
    char nulls[9] = "        ";
    if (!has_device) nulls[3] = 'n';
    if (!has_idle) nulls[7] = 'n';
    create.execute(values, nulls, false);

    char token[token_text_len];
    mint(key, family, nonce, token);
    auto* rsinfo = reinterpret_cast<ReturnSetInfo*>(fcinfo->resultinfo);
    Datum out[2] = {uuid_datum(family), bridge::text_datum(std::string_view(token, token_text_len))};
    bool out_nulls[2] = {false, false};
    pg_call([&] { tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, out, out_nulls); });
    return Datum(0);
}

/* lifecycle.token_rotate(token text, device_fingerprint text)
 *     RETURNS TABLE(status text, family_id uuid, user_id text, token text, generation integer) */
LIFECYCLE_FUNCTION(lifecycle_token_rotate) {
    bridge::require_arg(fcinfo, 0, "token");
    std::string_view presented = text_view(fcinfo, 0);
    std::optional<Datum> device;
    if (optional_text(fcinfo, 1, "device_fingerprint")) device = PG_GETARG_DATUM(1);
    require_primary("lifecycle.token_rotate");
    init_srf(fcinfo);
    TimestampTz ts = GetCurrentStatementStartTimestamp();
    /* The calling statement's snapshot, taken before any lock wait below. */
    Snapshot snapshot = pg_call([] { return ActiveSnapshotSet() ? GetActiveSnapshot() : nullptr; });

    bridge::SpiConnection spi;
    Outcome o = rotate_token(presented, device, ts, snapshot);
    put_outcome(fcinfo, o);
    return Datum(0);
}

/* lifecycle.token_family_revoke(family_id uuid, reason text) RETURNS boolean:
 * true iff the family was live (not revoked, not expired). */
LIFECYCLE_FUNCTION(lifecycle_token_family_revoke) {
    bridge::require_arg(fcinfo, 0, "family_id");
    required_text(fcinfo, 1, "reason");
    require_primary("lifecycle.token_family_revoke");
    static bridge::Statement revoke(
        "UPDATE lifecycle.token_family_state SET revoked_at = $3, revoked_reason = $2 "
        "WHERE family_id = $1 AND revoked_at IS NULL AND expires_at > $3",
        {UUIDOID, TEXTOID, TIMESTAMPTZOID});
    Datum values[3] = {PG_GETARG_DATUM(0), PG_GETARG_DATUM(1),
                       TimestampTzGetDatum(GetCurrentStatementStartTimestamp())};
    bridge::SpiConnection spi;
    revoke.execute(values, nullptr, false);
    PG_RETURN_BOOL(bridge::processed_rows() == 1);
}

/* lifecycle.token_families_revoke_user(user_id text, reason text) RETURNS bigint:
 * the number of live families revoked; recorded in lifecycle.security_events. */
LIFECYCLE_FUNCTION(lifecycle_token_families_revoke_user) {
    required_text(fcinfo, 0, "user_id");
    required_text(fcinfo, 1, "reason");
    require_primary("lifecycle.token_families_revoke_user");
    static bridge::Statement revoke_all(
        "WITH revoked AS (UPDATE lifecycle.token_family_state SET revoked_at = $3, revoked_reason = $2 "
        "                 WHERE user_id = $1 AND revoked_at IS NULL AND expires_at > $3 RETURNING family_id), "
        "event AS (INSERT INTO lifecycle.security_events (occurred_at, event_type, severity, user_id, detail) "
        "          SELECT $3, 'token_families_revoked', 'info', $1, pg_catalog.jsonb_build_object('reason', $2::text, "
        "                 'families', pg_catalog.count(*), 'family_ids', coalesce(pg_catalog.jsonb_agg(family_id ORDER "
        "BY family_id), "
        "                 '[]')) FROM revoked) "
        "SELECT pg_catalog.count(*) FROM revoked",
        {TEXTOID, TEXTOID, TIMESTAMPTZOID});
    Datum values[3] = {PG_GETARG_DATUM(0), PG_GETARG_DATUM(1),
                       TimestampTzGetDatum(GetCurrentStatementStartTimestamp())};
    bridge::SpiConnection spi;
    revoke_all.execute(values, nullptr, false);
    PG_RETURN_INT64(bridge::result_int64(0, 1).value_or(0));
}

/* lifecycle.token_key_rotate(retire_old boolean) RETURNS integer: the new key id. */
LIFECYCLE_FUNCTION(lifecycle_token_key_rotate) {
    bridge::require_arg(fcinfo, 0, "retire_old");
    bool retire_old = PG_GETARG_BOOL(0);
    bridge::SpiConnection spi;
    PG_RETURN_INT32(keys::rotate(retire_old));
}

/* lifecycle.token_keys() RETURNS TABLE(key_id integer, fingerprint text, state text) */
LIFECYCLE_FUNCTION(lifecycle_token_keys) {
    init_srf(fcinfo);
    std::vector<keys::KeyInfo> info;
    {
        bridge::SpiConnection spi;
        info = keys::describe();
    }
    auto* rsinfo = reinterpret_cast<ReturnSetInfo*>(fcinfo->resultinfo);
    for (const auto& k : info) {
        Datum values[3] = {Int32GetDatum(k.key_id),
                           k.fingerprint.empty() ? Datum(0) : bridge::text_datum(k.fingerprint),
                           bridge::text_datum(k.state)};
        bool nulls[3] = {false, k.fingerprint.empty(), false};
        pg_call([&] { tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls); });
    }
    return Datum(0);
}

/* lifecycle.user_token_families(user_id text) RETURNS TABLE(family_id uuid, device_fingerprint text,
 *     generation integer, created_at timestamptz, last_used_at timestamptz, expires_at timestamptz):
 * the user's live families, most recently used first. */
LIFECYCLE_FUNCTION(lifecycle_user_token_families) {
    bridge::require_arg(fcinfo, 0, "user_id");
    static bridge::Statement list(
        "SELECT f.family_id, f.device_fingerprint, f.generation, f.created_at, f.last_used_at, f.expires_at "
        "FROM lifecycle.token_family_state f WHERE f.user_id OPERATOR(pg_catalog.=) $1 AND f.revoked_at IS NULL "
        "AND f.expires_at OPERATOR(pg_catalog.>) pg_catalog.now() "
        "AND (f.idle_expires_at IS NULL OR f.idle_expires_at OPERATOR(pg_catalog.>) pg_catalog.now()) "
        "ORDER BY f.last_used_at DESC, f.family_id",
        {TEXTOID});
    Datum user = PG_GETARG_DATUM(0);
    bridge::SpiConnection spi;
    list.execute(&user, nullptr, true);
    return bridge::return_result_rows(fcinfo);
}
