/*
 * citus_shards.cpp — running maintenance batches on the shards of a Citus
 * table (see citus_shards.hpp).  Nothing links to Citus: its catalogs and
 * master_run_on_worker() are reached with SQL, only where the citus extension
 * is installed.
 */
#include "expiry/citus_shards.hpp"

#include "bridge/spi.hpp"
#include "softdelete/citus.hpp"

namespace pg_lifecycle::expiry::citus {

using bridge::pg_call;

char partition_method(Oid relid) {
    if (!softdelete::citus::present() || !softdelete::citus::is_citus_table(relid)) return '\0';
    Oid types[1] = {OIDOID};
    Datum args[1] = {ObjectIdGetDatum(relid)};
    bridge::SpiConnection spi;
    bridge::execute_cached(
        "SELECT partmethod::pg_catalog.text FROM pg_catalog.pg_dist_partition "
        "WHERE logicalrelid::pg_catalog.oid OPERATOR(pg_catalog.=) $1",
        1, types, args, nullptr, true, 1);
    if (bridge::processed_rows() == 0) return '\0';
    std::string method = bridge::result_text(0, 1).value_or("");
    return method.empty() ? '\0' : method[0];
}

bool on_coordinator() {
    if (!softdelete::citus::present()) return true;
    bridge::SpiConnection spi;
    bridge::execute_cached("SELECT groupid::pg_catalog.int8 FROM pg_catalog.pg_dist_local_group", 0, nullptr, nullptr,
                           nullptr, true, 1);
    if (bridge::processed_rows() == 0) return true;
    return bridge::result_int64(0, 1).value_or(0) == 0;
}

std::vector<Placement> placements(Oid relid) {
    /* shard_name() qualifies the name unless the schema is public. */
    Oid types[1] = {OIDOID};
    Datum args[1] = {ObjectIdGetDatum(relid)};
    bridge::SpiConnection spi;
    bridge::execute_cached(
        "SELECT s.shardid, CASE WHEN n.nspname OPERATOR(pg_catalog.=) 'public' "
        "THEN 'public.' OPERATOR(pg_catalog.||) pg_catalog.shard_name(s.logicalrelid, s.shardid) "
        "ELSE pg_catalog.shard_name(s.logicalrelid, s.shardid) END, p.nodename::pg_catalog.text, p.nodeport "
        "FROM pg_catalog.pg_dist_shard s "
        "JOIN pg_catalog.pg_dist_shard_placement p ON p.shardid OPERATOR(pg_catalog.=) s.shardid "
        "JOIN pg_catalog.pg_class c ON c.oid OPERATOR(pg_catalog.=) s.logicalrelid::pg_catalog.oid "
        "JOIN pg_catalog.pg_namespace n ON n.oid OPERATOR(pg_catalog.=) c.relnamespace "
        "WHERE s.logicalrelid::pg_catalog.oid OPERATOR(pg_catalog.=) $1 AND p.shardstate OPERATOR(pg_catalog.=) 1 "
        "ORDER BY s.shardid, p.nodename, p.nodeport",
        1, types, args, nullptr, true);
    std::vector<Placement> out;
    for (uint64 i = 0; i < bridge::processed_rows(); ++i) {
        out.push_back(Placement{bridge::required_int64(i, 1), bridge::result_text(i, 2).value_or(""),
                                bridge::result_text(i, 3).value_or(""),
                                static_cast<int32>(bridge::result_int64(i, 4).value_or(0))});
    }
    return out;
}

std::vector<RemoteResult> run_on_placements(const std::vector<Placement>& where,
                                            const std::vector<std::string>& commands) {
    std::vector<RemoteResult> out;
    if (where.empty()) return out;
    int n = static_cast<int>(where.size());
    Datum arrays[3] = {};
    pg_call([&] {
        auto* nodes = static_cast<Datum*>(palloc(sizeof(Datum) * n));
        auto* ports = static_cast<Datum*>(palloc(sizeof(Datum) * n));
        auto* sql = static_cast<Datum*>(palloc(sizeof(Datum) * n));
        for (int i = 0; i < n; ++i) {
            nodes[i] = PointerGetDatum(cstring_to_text(where[i].node.c_str()));
            ports[i] = Int32GetDatum(where[i].port);
            sql[i] = PointerGetDatum(cstring_to_text(commands[i].c_str()));
        }
        arrays[0] = PointerGetDatum(construct_array(nodes, n, TEXTOID, -1, false, TYPALIGN_INT));
        arrays[1] = PointerGetDatum(construct_array(ports, n, INT4OID, sizeof(int32), true, TYPALIGN_INT));
        arrays[2] = PointerGetDatum(construct_array(sql, n, TEXTOID, -1, false, TYPALIGN_INT));
    });
    Oid types[3] = {TEXTARRAYOID, INT4ARRAYOID, TEXTARRAYOID};
    bridge::SpiConnection spi;
    /* master_run_on_worker returns one row per command, in their order. */
    bridge::execute_cached("SELECT success, result FROM pg_catalog.master_run_on_worker($1, $2, $3, true)", 3, types,
                           arrays, nullptr, false);
    for (uint64 i = 0; i < bridge::processed_rows(); ++i) {
        bool ok = bridge::result_datum(i, 1).has_value() && DatumGetBool(bridge::required_datum(i, 1));
        out.push_back(RemoteResult{ok, bridge::result_text(i, 2).value_or("")});
    }
    if (out.size() != where.size()) {
        throw Error(sqlstate::internal_error,
                    fmt::format("master_run_on_worker returned {} results for {} commands", out.size(), where.size()));
    }
    return out;
}

std::string literal(const std::string& value) {
    return pg_call([&] { return std::string(quote_literal_cstr(value.c_str())); });
}

std::string interval_literal(const Interval* iv) {
    return fmt::format("'{} mons {} days {} microseconds'::pg_catalog.interval", iv->month, iv->day, iv->time);
}

PlacementRows sum_placement_rows(const std::vector<Placement>& where, const std::vector<RemoteResult>& results,
                                 int64 batch) {
    PlacementRows out;
    for (size_t i = 0; i < results.size(); ++i) {
        if (!results[i].success) {
            if (out.error.empty()) {
                out.error = fmt::format("shard {} on {}:{}: {}", where[i].shard, where[i].node, where[i].port,
                                        results[i].result);
            }
            continue;
        }
        int64 rows = std::strtoll(results[i].result.c_str(), nullptr, 10);
        out.rows += rows;
        out.more = out.more || rows >= batch;
    }
    if (!out.error.empty() && out.rows == 0) throw Error(sqlstate::internal_error, out.error);
    return out;
}

}  // namespace pg_lifecycle::expiry::citus
