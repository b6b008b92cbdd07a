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
#include "expiry/citus_shards.hpp"
#include "expiry/expiry.hpp"
#include "softdelete/citus.hpp"
#include "gucs.hpp"
#include "worker/tasks.hpp"

namespace pg_lifecycle::expiry {

using bridge::pg_call;

namespace {

/* How a session that is no longer live ends: at the moment it died, for the
 * reason it died, unless it was live — then now, for the caller's reason.
 * $3 is now(): Citus refuses functions that are not IMMUTABLE in a CASE and
 * in RETURNING of a distributed UPDATE. */
#define DEAD \
    "(expires_at <= pg_catalog.now() OR idle_expires_at <= pg_catalog.now())" /* NULL, not false, when live without idle timeout */
#define DEAD_AT_NOW "(expires_at <= $3 OR idle_expires_at <= $3)"
#define END_AT "CASE WHEN " DEAD_AT_NOW " THEN least(expires_at, idle_expires_at) ELSE $3 END"
#define END_REASON                                                                        \
    "CASE WHEN expires_at <= $3 AND expires_at <= coalesce(idle_expires_at, 'infinity') " \
    "THEN 'expired' WHEN idle_expires_at <= $3 THEN 'idle' ELSE $2 END"
#define WAS_LIVE "(expires_at > $3 AND (idle_expires_at IS NULL OR idle_expires_at > $3))"

int compare_to_zero(Interval* iv) { return bridge::interval_sign(iv); }

Oid sessions_relid() { return bridge::extension_relation("sessions"); }

/* The statements of the session tasks, on lifecycle.sessions or on one of
 * its shards ({0}). */
constexpr const char* close_sql = "WITH dead AS (SELECT session_id FROM {0} WHERE ended_at IS NULL AND " DEAD
                                  " LIMIT $1 FOR UPDATE SKIP LOCKED) "
                                  "UPDATE {0} s SET ended_at = least(s.expires_at, s.idle_expires_at), "
                                  "end_reason = CASE WHEN s.expires_at <= coalesce(s.idle_expires_at, 'infinity') "
                                  "THEN 'expired' ELSE 'idle' END "
                                  "FROM dead WHERE s.session_id = dead.session_id AND s.ended_at IS NULL "
                                  "AND (s.expires_at <= pg_catalog.now() OR s.idle_expires_at <= pg_catalog.now())";
constexpr const char* purge_sql =
    "DELETE FROM {0} WHERE ctid = ANY (ARRAY(SELECT ctid FROM {0} "
    "WHERE ended_at < pg_catalog.now() - $2 LIMIT $1 FOR UPDATE SKIP LOCKED)) AND ended_at < pg_catalog.now() - $2";
constexpr int session_batch = 1000;

/* One batch of a session task on a local table (lifecycle.sessions, or a shard of it). */
int64 session_batch_on(bool close, const std::string& table, Interval* retention) {
    Oid types[2] = {INT4OID, INTERVALOID};
    Datum values[2] = {Int32GetDatum(session_batch), IntervalPGetDatum(retention)};
    worker::set_batch_settings();
    bridge::execute_cached(fmt::format(fmt::runtime(close ? close_sql : purge_sql), table), close ? 1 : 2, types,
                           values, nullptr, false);
    return static_cast<int64>(bridge::processed_rows());
}

/* A session task's batch: on lifecycle.sessions, or — when it is distributed
 * (by session_id) on a Citus cluster — one batch on every shard, on the node
 * that holds it (lifecycle._sessions_shard there), from the coordinator. */
worker::BatchResult session_task_batch(bool close) {
    Interval* retention = gucs::interval_value(gucs::session_history_retention);
    Oid rel = sessions_relid();
    char method = citus::partition_method(rel);
    if (method == '\0') {
        int64 rows = session_batch_on(close, "lifecycle.sessions", retention);
        return {rows, rows >= session_batch};
    }
    if (!citus::on_coordinator()) return {0, false}; /* the coordinator does every shard */
    if (method == 'n') {
        throw Error(
            sqlstate::feature_not_supported, "lifecycle.sessions as a Citus reference table is not supported", {},
            "Distribute it by session_id: SELECT create_distributed_table('lifecycle.sessions', 'session_id').");
    }
    std::vector<citus::Placement> where = citus::placements(rel);
    std::string fn =
        bridge::quote_ident(pg_call([] { return std::string(get_namespace_name(bridge::extension_schema())); })) +
        "._sessions_shard";
    std::vector<std::string> commands;
    commands.reserve(where.size());
    for (const auto& p : where) {
        commands.push_back(fmt::format("SELECT {}({}, {}::pg_catalog.regclass, {})", fn, close ? "'close'" : "'purge'",
                                       citus::literal(p.shard), citus::interval_literal(retention)));
    }
    std::vector<citus::RemoteResult> results = citus::run_on_placements(where, commands);
    citus::PlacementRows sum = citus::sum_placement_rows(where, results, session_batch);
    return worker::BatchResult{sum.rows, sum.more, sum.error};
}

/* Closes dead sessions: ended_at is when they died, end_reason expired or idle. */
class SessionClose final : public worker::Task {
public:
    const char* name() const override { return "session_close"; }
    void collect(std::vector<worker::Unit>& out) const override {
        Oid rel = sessions_relid();
        out.push_back(worker::Unit{this, rel, rel, "lifecycle.sessions"});
    }
    worker::BatchResult run_batch(const worker::Unit&) const override { return session_task_batch(true); }
};

/* Removes sessions that ended longer ago than lifecycle.session_history_retention. */
class SessionPurge final : public worker::Task {
public:
    const char* name() const override { return "session_purge"; }
    void collect(std::vector<worker::Unit>& out) const override {
        Oid rel = sessions_relid();
        out.push_back(worker::Unit{this, rel, rel, "lifecycle.sessions"});
    }
    worker::BatchResult run_batch(const worker::Unit&) const override { return session_task_batch(false); }
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
        throw Error(sqlstate::invalid_parameter_value, "idle_timeout must be a positive interval", {},
                    "Pass NULL for a session without an idle timeout.");
    }
    static bridge::Statement insert(
        "INSERT INTO lifecycle.sessions (user_id, expires_at, idle_timeout, idle_expires_at, device_id, ip, "
        "user_agent, mfa_verified) VALUES ($1, pg_catalog.now() + $2, $3, pg_catalog.now() + $3, $4, $5, $6, $7) "
        "RETURNING session_id",
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

namespace pg_lifecycle::expiry {
/* now(), as a parameter. */
Datum session_now() {
    return TimestampTzGetDatum(pg_call([] { return GetCurrentTransactionStartTimestamp(); }));
}
}  // namespace pg_lifecycle::expiry

/* session_touch's UPDATE of a live session.  Where Citus is installed the
 * idle expiry is computed in UTC (a day of idle_timeout is 24 hours): Citus
 * refuses "now() + idle_timeout" (a STABLE operator over a column) in a
 * distributed UPDATE, while "timestamp + interval" and timezone() are
 * IMMUTABLE. */
#define TOUCH_SQL(idle_expiry, returning)                                                                 \
    "UPDATE lifecycle.sessions s SET last_activity_at = pg_catalog.now(), idle_expires_at = " idle_expiry \
    " WHERE s.session_id = $1 AND s.ended_at IS NULL AND s.expires_at > pg_catalog.now() "                \
    "AND (s.idle_expires_at IS NULL OR s.idle_expires_at > pg_catalog.now())" returning
#define IDLE_EXPIRY "pg_catalog.now() + s.idle_timeout"
#define IDLE_EXPIRY_UTC \
    "pg_catalog.timezone('UTC', pg_catalog.timezone('UTC', pg_catalog.now()) OPERATOR(pg_catalog.+) s.idle_timeout)"
#define VALIDATE_RETURNING \
    " RETURNING s.session_id, s.user_id, s.device_id, s.mfa_verified, s.created_at, s.last_activity_at, s.expires_at"

/* lifecycle.session_touch(session_id uuid) RETURNS boolean */
LIFECYCLE_FUNCTION(lifecycle_session_touch) {
    bridge::require_arg(fcinfo, 0, "session_id");
    static bridge::Statement touch(TOUCH_SQL(IDLE_EXPIRY, ""), {UUIDOID});
    static bridge::Statement touch_citus(TOUCH_SQL(IDLE_EXPIRY_UTC, ""), {UUIDOID});
    Datum id = PG_GETARG_DATUM(0);
    bridge::SpiConnection spi;
    (softdelete::citus::present() ? touch_citus : touch).execute(&id, nullptr, false);
    PG_RETURN_BOOL(bridge::processed_rows() == 1);
}

/* lifecycle.session_validate(session_id uuid) RETURNS TABLE(session_id uuid, user_id text, device_id text,
 *     mfa_verified boolean, created_at timestamptz, last_activity_at timestamptz, expires_at timestamptz):
 * session_touch that returns the live session (no row when it is dead). */
LIFECYCLE_FUNCTION(lifecycle_session_validate) {
    bridge::require_arg(fcinfo, 0, "session_id");
    static bridge::Statement validate(TOUCH_SQL(IDLE_EXPIRY, VALIDATE_RETURNING), {UUIDOID});
    static bridge::Statement validate_citus(TOUCH_SQL(IDLE_EXPIRY_UTC, VALIDATE_RETURNING), {UUIDOID});
    ReturnSetInfo* rsinfo = reinterpret_cast<ReturnSetInfo*>(fcinfo->resultinfo);
    pg_call([fcinfo] { InitMaterializedSRF(fcinfo, 0); });
    Datum id = PG_GETARG_DATUM(0);
    bridge::SpiConnection spi;
    (softdelete::citus::present() ? validate_citus : validate).execute(&id, nullptr, false);
    if (bridge::processed_rows() == 1) {
        pg_call([rsinfo] {
            Datum values[7];
            bool nulls[7];
            heap_deform_tuple(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, values, nulls);
            tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
        });
    }
    return (Datum)0;
}

/* lifecycle.session_end(session_id uuid, reason text) RETURNS boolean: true iff it was live. */
LIFECYCLE_FUNCTION(lifecycle_session_end) {
    bridge::require_arg(fcinfo, 0, "session_id");
    bridge::require_arg(fcinfo, 1, "reason");
    static bridge::Statement end("UPDATE lifecycle.sessions SET ended_at = " END_AT ", end_reason = " END_REASON
                                 " WHERE session_id = $1 AND ended_at IS NULL RETURNING " WAS_LIVE,
                                 {UUIDOID, TEXTOID, TIMESTAMPTZOID});
    Datum values[3] = {PG_GETARG_DATUM(0), PG_GETARG_DATUM(1), expiry::session_now()};
    bridge::SpiConnection spi;
    end.execute(values, nullptr, false);
    bool live = bridge::processed_rows() == 1 && DatumGetBool(bridge::result_datum(0, 1).value_or(BoolGetDatum(false)));
    PG_RETURN_BOOL(live);
}

/* lifecycle.sessions_end_user(user_id text, reason text) RETURNS bigint: live sessions ended. */
LIFECYCLE_FUNCTION(lifecycle_sessions_end_user) {
    bridge::require_arg(fcinfo, 0, "user_id");
    bridge::require_arg(fcinfo, 1, "reason");
    static bridge::Statement end_all("WITH ended AS (UPDATE lifecycle.sessions SET ended_at = " END_AT
                                     ", end_reason = " END_REASON
                                     " WHERE user_id = $1 AND ended_at IS NULL RETURNING " WAS_LIVE
                                     " AS live) "
                                     "SELECT pg_catalog.count(*) FILTER (WHERE live) FROM ended",
                                     {TEXTOID, TEXTOID, TIMESTAMPTZOID});
    Datum values[3] = {PG_GETARG_DATUM(0), PG_GETARG_DATUM(1), expiry::session_now()};
    bridge::SpiConnection spi;
    end_all.execute(values, nullptr, false);
    PG_RETURN_INT64(bridge::result_int64(0, 1).value_or(0));
}

/* lifecycle._sessions_shard(task text, shard regclass, retention interval) RETURNS bigint
 * One batch of the session_close ('close') or session_purge ('purge') task on
 * a shard of a distributed lifecycle.sessions, on the node that holds it:
 * what the coordinator's task runs on each placement.  Its owner (the
 * extension's) only. */
LIFECYCLE_FUNCTION(lifecycle_sessions_shard) {
    for (int i = 0; i < 3; ++i) bridge::require_arg(fcinfo, i, "argument");
    std::string task = bridge::text_arg(fcinfo, 0);
    Oid shard = PG_GETARG_OID(1);
    Interval* retention = PG_GETARG_INTERVAL_P(2);
    if (task != "close" && task != "purge") {
        throw Error(sqlstate::invalid_parameter_value, fmt::format("task must be close or purge, not \"{}\"", task));
    }
    bridge::require_table(shard, "Sessions");
    bridge::require_owner(shard, "maintain it");
    bool is_shard = pg_call([shard] {
        const char* name = get_rel_name(shard);
        return get_rel_namespace(shard) == bridge::extension_schema() && name != nullptr &&
               std::strncmp(name, "sessions_", 9) == 0;
    });
    if (!is_shard) {
        throw Error(sqlstate::invalid_parameter_value,
                    fmt::format("{} is not a shard of lifecycle.sessions", bridge::qualified_relation_name(shard)));
    }
    bridge::SpiConnection spi;
    PG_RETURN_INT64(expiry::session_batch_on(task == "close", bridge::qualified_relation_name(shard), retention));
}

/* lifecycle.user_sessions(user_id text) RETURNS TABLE(session_id uuid, user_id text, device_id text,
 *     mfa_verified boolean, created_at timestamptz, last_activity_at timestamptz, expires_at timestamptz):
 * the user's live sessions, newest first. */
LIFECYCLE_FUNCTION(lifecycle_user_sessions) {
    bridge::require_arg(fcinfo, 0, "user_id");
    static bridge::Statement list(
        "SELECT s.session_id, s.user_id, s.device_id, s.mfa_verified, s.created_at, s.last_activity_at, s.expires_at "
        "FROM lifecycle.sessions s WHERE s.user_id OPERATOR(pg_catalog.=) $1 AND s.ended_at IS NULL "
        "AND s.expires_at OPERATOR(pg_catalog.>) pg_catalog.now() "
        "AND (s.idle_expires_at IS NULL OR s.idle_expires_at OPERATOR(pg_catalog.>) pg_catalog.now()) "
        "ORDER BY s.created_at DESC, s.session_id",
        {TEXTOID});
    Datum user = PG_GETARG_DATUM(0);
    bridge::SpiConnection spi;
    list.execute(&user, nullptr, true);
    return bridge::return_result_rows(fcinfo);
}
