/*
 * settings.cpp — lifecycle.token_reuse_grace and lifecycle.token_retention,
 * and the token_purge maintenance task that removes revoked and expired
 * families after lifecycle.token_retention.
 *
 * The interval settings are parsed once, by their check hooks, into the
 * setting's "extra" (guc.c owns and frees it); the hot path reads the parsed
 * value.
 */
#include "bridge/security.hpp"
#include "bridge/spi.hpp"
#include "expiry/citus_shards.hpp"
#include "gucs.hpp"
#include "bridge/function.hpp"
#include "tokens/keys.hpp"
#include "tokens/tokens.hpp"
#include "worker/tasks.hpp"

namespace pg_lifecycle::tokens {

using bridge::pg_call;

namespace {

char* grace_text = nullptr;
char* retention_text = nullptr;
Interval grace_value{};     /* 10s until assigned */
Interval retention_value{}; /* 30 days until assigned */

extern "C" bool check_token_reuse_grace(char** newval, void** extra, GucSource) {
    return bridge::entry_guard([=] { return gucs::check_interval_setting(newval, extra, true, "10s"); });
}

extern "C" bool check_token_retention(char** newval, void** extra, GucSource) {
    return bridge::entry_guard([=] { return gucs::check_interval_setting(newval, extra, false, "30 days"); });
}

extern "C" void assign_token_reuse_grace(const char*, void* extra) {
    if (extra != nullptr) grace_value = *static_cast<Interval*>(extra);
}

extern "C" void assign_token_retention(const char*, void* extra) {
    if (extra != nullptr) retention_value = *static_cast<Interval*>(extra);
}

Oid token_families_relid() { return bridge::extension_relation("token_families"); }

/* Removes revoked and expired families, and their token chains, once they
 * have been dead for lifecycle.token_retention. */
/* The purge of families revoked or expired longer ago than the retention,
 * with their chains: on lifecycle.token_family_state / token_chain, or on a
 * shard of each ({0}, {1}). */
#define TOKEN_PURGE_SQL(state, chain)                                                                   \
    "WITH dead AS (SELECT family_id FROM " state                                                        \
    " "                                                                                                 \
    "              WHERE least(revoked_at, expires_at) < pg_catalog.now() - $1 "                        \
    "              LIMIT $2 FOR UPDATE SKIP LOCKED), "                                                  \
    "idle AS (SELECT family_id FROM " state                                                             \
    " "                                                                                                 \
    "         WHERE idle_expires_at IS NOT NULL AND idle_expires_at < pg_catalog.now() - $1 "           \
    "         LIMIT $2 FOR UPDATE SKIP LOCKED), "                                                       \
    "doomed AS (SELECT family_id FROM dead UNION SELECT family_id FROM idle), "                         \
    "families AS (DELETE FROM " state                                                                   \
    " f USING doomed d "                                                                                \
    "              WHERE f.family_id = d.family_id "                                                    \
    "                AND least(f.revoked_at, f.expires_at, f.idle_expires_at) < pg_catalog.now() - $1 " \
    "              RETURNING f.family_id), "                                                            \
    "chain AS (DELETE FROM " chain                                                                      \
    " c USING families f WHERE c.family_id = f.family_id) "                                             \
    "SELECT pg_catalog.count(*) FROM families"
constexpr const char* purge_sql_local = TOKEN_PURGE_SQL("lifecycle.token_family_state", "lifecycle.token_chain");
constexpr const char* purge_sql_shard = TOKEN_PURGE_SQL("{0}", "{1}");
constexpr int token_purge_batch = 500;

/* The purge on a Citus cluster: lifecycle.token_family_state and
 * lifecycle.token_chain distributed by family_id and colocated — one batch
 * per shard pair, on the node that holds it (lifecycle._token_purge_shard
 * there), from the coordinator only. */
worker::BatchResult citus_batch(Oid state, char method, Interval* keep) {
    namespace citus = expiry::citus;
    if (!citus::on_coordinator()) return {0, false};
    Oid chain = bridge::extension_relation("token_chain");
    Oid types[2] = {OIDOID, OIDOID};
    Datum args[2] = {ObjectIdGetDatum(state), ObjectIdGetDatum(chain)};
    bridge::execute_cached(
        "SELECT c.logicalrelid IS NOT NULL FROM pg_catalog.pg_dist_partition s "
        "LEFT JOIN pg_catalog.pg_dist_partition c ON c.logicalrelid::pg_catalog.oid OPERATOR(pg_catalog.=) $2 "
        "AND c.colocationid OPERATOR(pg_catalog.=) s.colocationid AND c.partmethod OPERATOR(pg_catalog.=) 'h' "
        "WHERE s.logicalrelid::pg_catalog.oid OPERATOR(pg_catalog.=) $1",
        2, types, args, nullptr, true, 1);
    bool colocated = bridge::processed_rows() == 1 && DatumGetBool(bridge::required_datum(0, 1));
    if (method != 'h' || !colocated) {
        throw Error(sqlstate::feature_not_supported,
                    "lifecycle.token_family_state and lifecycle.token_chain must be distributed by family_id and "
                    "colocated",
                    {},
                    "SELECT create_distributed_table('lifecycle.token_family_state', 'family_id'); "
                    "SELECT create_distributed_table('lifecycle.token_chain', 'family_id', "
                    "colocate_with => 'lifecycle.token_family_state');");
    }
    std::vector<citus::Placement> where = citus::placements(state);
    std::string fn = bridge::quote_ident(
                         bridge::pg_call([] { return std::string(get_namespace_name(bridge::extension_schema())); })) +
                     "._token_purge_shard";
    std::vector<std::string> commands;
    for (const auto& p : where) {
        Oid t[3] = {INT8OID, OIDOID, OIDOID};
        Datum a[3] = {Int64GetDatum(p.shardid), ObjectIdGetDatum(chain), ObjectIdGetDatum(state)};
        /* The chain's shard over the same hash range (colocated: on the same node). */
        bridge::execute_cached(
            "SELECT pg_catalog.shard_name($2::pg_catalog.regclass, c.shardid) FROM pg_catalog.pg_dist_shard s "
            "JOIN pg_catalog.pg_dist_shard c ON c.logicalrelid::pg_catalog.oid OPERATOR(pg_catalog.=) $2 "
            "AND c.shardminvalue OPERATOR(pg_catalog.=) s.shardminvalue "
            "WHERE s.shardid OPERATOR(pg_catalog.=) $1 AND s.logicalrelid::pg_catalog.oid OPERATOR(pg_catalog.=) $3",
            3, t, a, nullptr, true, 1);
        if (bridge::processed_rows() == 0) {
            throw Error(sqlstate::internal_error,
                        fmt::format("no shard of lifecycle.token_chain for shard {}", p.shard));
        }
        commands.push_back(fmt::format("SELECT {}({}::pg_catalog.regclass, {}::pg_catalog.regclass, {})", fn,
                                       citus::literal(p.shard), citus::literal(bridge::required_text(0, 1)),
                                       citus::interval_literal(keep)));
    }
    std::vector<citus::RemoteResult> results = citus::run_on_placements(where, commands);
    citus::PlacementRows sum = citus::sum_placement_rows(where, results, token_purge_batch);
    return worker::BatchResult{sum.rows, sum.more, sum.error};
}

class TokenPurge final : public worker::Task {
public:
    const char* name() const override { return "token_purge"; }

    void collect(std::vector<worker::Unit>& out) const override {
        Oid rel = token_families_relid();
        out.push_back(worker::Unit{this, rel, rel, "lifecycle.token_families"});
    }

    worker::BatchResult run_batch(const worker::Unit&) const override {
        static bridge::Statement purge(purge_sql_local, {INTERVALOID, INT4OID});
        /* A database not updated to 0.2 yet has no idle_expires_at. */
        static bridge::Statement purge_01(
            "WITH doomed AS (SELECT family_id FROM lifecycle.token_family_state "
            "                 WHERE least(revoked_at, expires_at) < pg_catalog.now() - $1 "
            "                 LIMIT $2 FOR UPDATE SKIP LOCKED), "
            "families AS (DELETE FROM lifecycle.token_family_state f USING doomed d "
            "              WHERE f.family_id = d.family_id AND least(f.revoked_at, f.expires_at) < pg_catalog.now() - "
            "$1 "
            "              RETURNING f.family_id), "
            "chain AS (DELETE FROM lifecycle.token_chain c USING families f WHERE c.family_id = f.family_id) "
            "SELECT pg_catalog.count(*) FROM families",
            {INTERVALOID, INT4OID});

        Interval keep = retention_value;
        Oid state = bridge::extension_relation("token_family_state");
        char method = expiry::citus::partition_method(state);
        if (method != '\0') return citus_batch(state, method, &keep);
        constexpr int batch = token_purge_batch;
        Datum values[2] = {IntervalPGetDatum(&keep), Int32GetDatum(batch)};
        worker::set_batch_settings();
        bool v02 = bridge::pg_call([state] { return get_attnum(state, "idle_expires_at") > 0; });
        (v02 ? purge : purge_01).execute(values, nullptr, false);
        int64 rows = bridge::result_int64(0, 1).value_or(0);
        return {rows, rows >= batch};
    }
};

const TokenPurge token_purge;

}  // namespace

const Interval* reuse_grace() { return &grace_value; }
const Interval* retention() { return &retention_value; }

void init() {
    grace_value.time = 10 * USECS_PER_SEC;
    retention_value.day = 30;
    pg_call([] {
        DefineCustomStringVariable(
            "lifecycle.token_reuse_grace",
            "How long after a rotation the previous refresh token may be presented again (a retry).",
            "Within it, token_rotate returns the same new token (status replayed); after it, presenting the "
            "previous token revokes the family (reuse_detected).  Presentations that began before the rotation "
            "committed are replayed whatever this is.",
            &grace_text, "10s", PGC_SUSET, 0, check_token_reuse_grace, assign_token_reuse_grace, nullptr);
        DefineCustomStringVariable(
            "lifecycle.token_retention",
            "How long revoked and expired refresh-token families are kept before the worker removes them.", nullptr,
            &retention_text, "30 days", PGC_SIGHUP, 0, check_token_retention, assign_token_retention, nullptr);
    });
    keys::register_callbacks();
}

void register_purge_task() { worker::register_task(token_purge); }

}  // namespace pg_lifecycle::tokens

using namespace pg_lifecycle;

/* lifecycle._token_purge_shard(state regclass, chain regclass, retention interval) RETURNS bigint
 * One token_purge batch on colocated shards of lifecycle.token_family_state
 * and lifecycle.token_chain, on the node that holds them: what the
 * coordinator's task runs on each.  The extension owner's only. */
LIFECYCLE_FUNCTION(lifecycle_token_purge_shard) {
    for (int i = 0; i < 3; ++i) bridge::require_arg(fcinfo, i, "argument");
    Oid state = PG_GETARG_OID(0);
    Oid chain = PG_GETARG_OID(1);
    Interval* keep = PG_GETARG_INTERVAL_P(2);
    auto check = [](Oid shard, const char* prefix) {
        bridge::require_table(shard, "Refresh-token families");
        bridge::require_owner(shard, "purge it");
        bool ok = bridge::pg_call([shard, prefix] {
            const char* name = get_rel_name(shard);
            return get_rel_namespace(shard) == bridge::extension_schema() && name != nullptr &&
                   std::strncmp(name, prefix, std::strlen(prefix)) == 0;
        });
        if (!ok) {
            throw Error(sqlstate::invalid_parameter_value,
                        fmt::format("{} is not a shard of lifecycle.{}", bridge::qualified_relation_name(shard),
                                    std::string(prefix, std::strlen(prefix) - 1)));
        }
    };
    check(state, "token_family_state_");
    check(chain, "token_chain_");
    bridge::SpiConnection spi;
    worker::set_batch_settings();
    Oid types[2] = {INTERVALOID, INT4OID};
    Datum values[2] = {IntervalPGetDatum(keep), Int32GetDatum(tokens::token_purge_batch)};
    bridge::execute_cached(fmt::format(fmt::runtime(tokens::purge_sql_shard), bridge::qualified_relation_name(state),
                                       bridge::qualified_relation_name(chain)),
                           2, types, values, nullptr, false);
    PG_RETURN_INT64(bridge::result_int64(0, 1).value_or(0));
}
