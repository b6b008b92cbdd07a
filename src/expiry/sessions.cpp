/*
 * sessions.cpp — lifecycle.sessions: session_create/touch/end,
 * sessions_end_user, and the worker tasks that close dead sessions and remove
 * ended ones after lifecycle.session_history_retention.
 *
 * A session is dead as soon as expires_at or idle_expires_at
 * (last_activity_at + idle_timeout) has passed, whether or not the worker has
 * swept it: every function below tests that itself.
 */
#include "bridge/function.hpp"
#include "bridge/security.hpp"
#include "bridge/spi.hpp"
#include "expiry/expiry.hpp"
#include "gucs.hpp"
#include "worker/tasks.hpp"

namespace pg_lifecycle::expiry {

using bridge::pg_call;

namespace {

/* How a session that is no longer live ends: at the moment it died, for the
 * reason it died, unless it was live — then now, for the caller's reason. */
#define DEAD "(expires_at <= pg_catalog.now() OR idle_expires_at <= pg_catalog.now())"  /* NULL, not false, when live without idle timeout */
#define END_AT "CASE WHEN " DEAD " THEN least(expires_at, idle_expires_at) ELSE pg_catalog.now() END"
#define END_REASON                                                                            \
    "CASE WHEN expires_at <= pg_catalog.now() AND expires_at <= coalesce(idle_expires_at, 'infinity') " \
    "THEN 'expired' WHEN idle_expires_at <= pg_catalog.now() THEN 'idle' ELSE $2 END"
#define WAS_LIVE "(expires_at > pg_catalog.now() AND (idle_expires_at IS NULL OR idle_expires_at > pg_catalog.now()))"

int compare_to_zero(Interval* iv) { return bridge::interval_sign(iv); }

Oid sessions_relid() {
    return bridge::extension_relation("sessions");
}

/* Closes dead sessions: ended_at is when they died, end_reason expired or idle. */
class SessionClose final : public worker::Task {
public:
    const char* name() const override { return "session_close"; }
    void collect(std::vector<worker::Unit>& out) const override {
        Oid rel = sessions_relid();
        out.push_back(worker::Unit{this, rel, rel, "lifecycle.sessions"});
    }
    worker::BatchResult run_batch(const worker::Unit&) const override {
        static bridge::Statement close(
            "WITH dead AS (SELECT session_id FROM lifecycle.sessions WHERE ended_at IS NULL AND " DEAD
            " LIMIT $1 FOR UPDATE SKIP LOCKED) "
            "UPDATE lifecycle.sessions s SET ended_at = least(s.expires_at, s.idle_expires_at), "
            "end_reason = CASE WHEN s.expires_at <= coalesce(s.idle_expires_at, 'infinity') "
            "THEN 'expired' ELSE 'idle' END "
            "FROM dead WHERE s.session_id = dead.session_id AND s.ended_at IS NULL "
            "AND (s.expires_at <= pg_catalog.now() OR s.idle_expires_at <= pg_catalog.now())",
            {INT4OID});
        constexpr int batch = 1000;
        Datum limit = Int32GetDatum(batch);
        worker::set_batch_settings();
        close.execute(&limit, nullptr, false);
        int64 rows = static_cast<int64>(bridge::processed_rows());
        return {rows, rows >= batch};
    }
};

/* Removes sessions that ended longer ago than lifecycle.session_history_retention. */
class SessionPurge final : public worker::Task {
public:
    const char* name() const override { return "session_purge"; }
    void collect(std::vector<worker::Unit>& out) const override {
        Oid rel = sessions_relid();
        out.push_back(worker::Unit{this, rel, rel, "lifecycle.sessions"});
    }
    worker::BatchResult run_batch(const worker::Unit&) const override {
        static bridge::Statement purge(
            "DELETE FROM lifecycle.sessions WHERE ctid = ANY (ARRAY(SELECT ctid FROM lifecycle.sessions "
            "WHERE ended_at < pg_catalog.now() - $1 LIMIT $2 FOR UPDATE SKIP LOCKED)) AND ended_at < pg_catalog.now() - $1",
            {INTERVALOID, INT4OID});
        constexpr int batch = 1000;
        Datum values[2] = {IntervalPGetDatum(gucs::interval_value(gucs::session_history_retention)),
                           Int32GetDatum(batch)};
        worker::set_batch_settings();
        purge.execute(values, nullptr, false);
        int64 rows = static_cast<int64>(bridge::processed_rows());
        return {rows, rows >= batch};
    }
};

const SessionClose session_close;
const SessionPurge session_purge;

}  // namespace

void register_session_tasks() {
    worker::register_task(session_close);
    worker::register_task(session_purge);
}

}  // namespace pg_lifecycle::expiry

using namespace pg_lifecycle;
using bridge::pg_call;

/* lifecycle.session_create(user_id, ttl, idle_timeout, device_id, ip, user_agent, mfa_verified) RETURNS uuid */
LIFECYCLE_FUNCTION(lifecycle_session_create) {
    bridge::require_arg(fcinfo, 0, "user_id");
    bridge::require_arg(fcinfo, 1, "ttl");
    bridge::require_arg(fcinfo, 6, "mfa_verified");
    if (VARSIZE_ANY_EXHDR(PG_GETARG_TEXT_PP(0)) == 0) {
        throw Error(sqlstate::invalid_parameter_value, "user_id must not be empty");
    }
    if (expiry::compare_to_zero(PG_GETARG_INTERVAL_P(1)) <= 0) {
        throw Error(sqlstate::invalid_parameter_value, "ttl must be a positive interval");
    }
    if (!PG_ARGISNULL(2) && expiry::compare_to_zero(PG_GETARG_INTERVAL_P(2)) <= 0) {
        throw Error(sqlstate::invalid_parameter_value, "idle_timeout must be a positive interval",
                    {}, "Pass NULL for a session without an idle timeout.");
    }
    static bridge::Statement insert(
        "INSERT INTO lifecycle.sessions (user_id, expires_at, idle_timeout, idle_expires_at, device_id, ip, "
        "user_agent, mfa_verified) VALUES ($1, pg_catalog.now() + $2, $3, pg_catalog.now() + $3, $4, $5, $6, $7) RETURNING session_id",
        {TEXTOID, INTERVALOID, INTERVALOID, TEXTOID, INETOID, TEXTOID, BOOLOID});
    Datum values[7];
    char nulls[8] = "       ";
    for (int i = 0; i < 7; ++i) {
        values[i] = PG_ARGISNULL(i) ? (Datum)0 : PG_GETARG_DATUM(i);
        if (PG_ARGISNULL(i)) nulls[i] = 'n';
    }
    bridge::SpiConnection spi;
    insert.execute(values, nulls, false, 1);
    /* The uuid is copied out of SPI's memory (into the caller's) before SPI_finish. */
    pg_uuid_t* out = pg_call([] {
        bool isnull;
        Datum d = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);
        auto* u = static_cast<pg_uuid_t*>(SPI_palloc(UUID_LEN));
        std::memcpy(u, DatumGetUUIDP(d), UUID_LEN);
        return u;
    });
    return UUIDPGetDatum(out);
}

/* lifecycle.session_touch(session_id uuid) RETURNS boolean */
LIFECYCLE_FUNCTION(lifecycle_session_touch) {
    bridge::require_arg(fcinfo, 0, "session_id");
    static bridge::Statement touch(
        "UPDATE lifecycle.sessions SET last_activity_at = pg_catalog.now(), idle_expires_at = pg_catalog.now() + idle_timeout "
        "WHERE session_id = $1 AND ended_at IS NULL AND expires_at > pg_catalog.now() "
        "AND (idle_expires_at IS NULL OR idle_expires_at > pg_catalog.now())",
        {UUIDOID});
    Datum id = PG_GETARG_DATUM(0);
    bridge::SpiConnection spi;
    touch.execute(&id, nullptr, false);
    PG_RETURN_BOOL(bridge::processed_rows() == 1);
}

/* lifecycle.session_end(session_id uuid, reason text) RETURNS boolean: true iff it was live. */
LIFECYCLE_FUNCTION(lifecycle_session_end) {
    bridge::require_arg(fcinfo, 0, "session_id");
    bridge::require_arg(fcinfo, 1, "reason");
    static bridge::Statement end(
        "UPDATE lifecycle.sessions SET ended_at = " END_AT ", end_reason = " END_REASON
        " WHERE session_id = $1 AND ended_at IS NULL RETURNING " WAS_LIVE,
        {UUIDOID, TEXTOID});
    Datum values[2] = {PG_GETARG_DATUM(0), PG_GETARG_DATUM(1)};
    bridge::SpiConnection spi;
    end.execute(values, nullptr, false);
    bool live = bridge::processed_rows() == 1 && DatumGetBool(bridge::result_datum(0, 1).value_or(BoolGetDatum(false)));
    PG_RETURN_BOOL(live);
}

/* lifecycle.sessions_end_user(user_id text, reason text) RETURNS bigint: live sessions ended. */
LIFECYCLE_FUNCTION(lifecycle_sessions_end_user) {
    bridge::require_arg(fcinfo, 0, "user_id");
    bridge::require_arg(fcinfo, 1, "reason");
    static bridge::Statement end_all(
        "WITH ended AS (UPDATE lifecycle.sessions SET ended_at = " END_AT ", end_reason = " END_REASON
        " WHERE user_id = $1 AND ended_at IS NULL RETURNING " WAS_LIVE " AS live) "
        "SELECT pg_catalog.count(*) FILTER (WHERE live) FROM ended",
        {TEXTOID, TEXTOID});
    Datum values[2] = {PG_GETARG_DATUM(0), PG_GETARG_DATUM(1)};
    bridge::SpiConnection spi;
    end_all.execute(values, nullptr, false);
    PG_RETURN_INT64(bridge::result_int64(0, 1).value_or(0));
}
