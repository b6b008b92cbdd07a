/*
 * citus.cpp — exact counts of a Citus table (SPEC.md §6; see counts.hpp's
 * citus namespace and the README's "Citus" section).
 *
 * The deltas of a distributed table are themselves a distributed table,
 * lifecycle.count_N_delta, colocated with it (its distribution column lc_dist
 * has the type of the table's): each shard of the table has a shard of the
 * deltas for the same hash range on the same node.  The capture trigger,
 * which Citus copies to every shard, appends a shard's statement deltas to
 * that colocated delta shard, in the same worker transaction as the rows.
 * Citus uses one connection for a set of colocated placements within a
 * transaction, so a count read through the coordinator (SELECT ... FROM
 * count_N_delta, as the caller) runs over the connections that wrote the
 * caller's own rows and sees exactly what a count(*) sees there.  A
 * reference table's deltas are a reference table: every node's copy of the
 * table counts into that node's copy of the deltas.
 *
 * Nothing here links to Citus: its catalogs are read with SQL, and only in a
 * database where the citus extension is installed.  There are no summaries
 * on Citus: the fold compacts each delta shard in place (one row per group)
 * on the node that holds it (lifecycle._count_compact, run on every
 * placement through run_command_on_placements).
 */
#include "bridge/cache.hpp"
#include "bridge/function.hpp"
#include "counts/counts.hpp"
#include "softdelete/citus.hpp"

#include <charconv>

namespace pg_lifecycle::counts::citus {

using bridge::pg_call;

namespace {

/* Per-backend caches (in the memory context "pg_lifecycle cache" / "counts
 * Citus tables"): an entry is dropped on a relcache invalidation of its
 * relation (Citus invalidates a table's relcache when its metadata changes),
 * and everything is freed on an invalidation of every relation. */
struct StoredShardCapture {
    StoredShardCapture(const ShardCapture& sc, MemoryContext cxt)
        : cfg(sc.cfg, cxt),
          delta(sc.delta),
          delta_name(bridge::to_pstring(sc.delta_name, cxt)),
          dist_column(bridge::to_pstring(sc.dist_column, cxt)) {}
    ShardCapture get() const {
        return ShardCapture{cfg.get(), delta, bridge::to_string(delta_name), bridge::to_string(dist_column)};
    }
    StoredConfig cfg;
    Oid delta;
    bridge::pstring delta_name;
    bridge::pstring dist_column;
};
/* Trees, so that the callback's erase moves no entry. */
struct Caches {
    explicit Caches(MemoryContext cxt)
        : kinds(bridge::PallocAllocator<char>(cxt)), shards(bridge::PallocAllocator<char>(cxt)) {}
    bridge::pmap<Oid, Kind> kinds;
    bridge::pmap<Oid, StoredShardCapture> shards;
};
bridge::BackendCache<Caches> caches("counts Citus tables");
bool callback_registered = false;

extern "C" void cache_callback(Datum, Oid relid) {
    /* No allocation, no PostgreSQL call: only forget (nothing uses the
     * caches across a call that processes invalidations). */
    if (relid == InvalidOid) {
        caches.reset();
    } else if (Caches* c = caches.built()) {
        c->kinds.erase(relid);
        c->shards.erase(relid);
    }
}

void register_callback() {
    if (callback_registered) return;
    pg_call([] { CacheRegisterRelcacheCallback(cache_callback, (Datum)0); });
    callback_registered = true;
}

Kind lookup_kind(Oid relid);

}  // namespace

Kind kind(Oid relid) {
    if (relid < FirstNormalObjectId || !softdelete::citus::present()) return Kind::none;
    register_callback();
    const auto& kinds = caches.get().kinds;
    if (auto it = kinds.find(relid); it != kinds.end()) return it->second;
    Kind k = lookup_kind(relid);
    caches.get().kinds[relid] = k; /* afresh: the query may have reset the caches */
    return k;
}

namespace {

Kind lookup_kind(Oid relid) {
    static bridge::Statement method(
        "SELECT partmethod::pg_catalog.text, repmodel::pg_catalog.text FROM pg_catalog.pg_dist_partition "
        "WHERE logicalrelid::pg_catalog.oid OPERATOR(pg_catalog.=) $1",
        {OIDOID});
    Datum key = ObjectIdGetDatum(relid);
    bridge::SpiConnection spi;
    method.execute(&key, nullptr, true, 1);
    if (bridge::processed_rows() == 0) return Kind::none;
    std::string m = bridge::result_text(0, 1).value_or("");
    std::string r = bridge::result_text(0, 2).value_or("");
    if (m == "h") return Kind::distributed;
    if (m == "n" && r == "t") return Kind::reference;
    return Kind::other;
}

}  // namespace

namespace {

/* Whether a type's code is PostgreSQL's own (no role's function runs when
 * its values are grouped, hashed or compared). */
bool builtin_type(Oid type) { return type < FirstNormalObjectId; }

std::string distribution_column(Oid relid) {
    static bridge::Statement column(
        "SELECT pg_catalog.column_to_column_name(logicalrelid, partkey) FROM pg_catalog.pg_dist_partition "
        "WHERE logicalrelid::pg_catalog.oid OPERATOR(pg_catalog.=) $1",
        {OIDOID});
    Datum key = ObjectIdGetDatum(relid);
    column.execute(&key, nullptr, true, 1);
    auto name = bridge::processed_rows() > 0 ? bridge::result_text(0, 1) : std::nullopt;
    if (!name) {
        throw Error(sqlstate::internal_error,
                    fmt::format("no distribution column for table {}", relation_display_name(relid)));
    }
    return *name;
}

}  // namespace

void prepare_enable(Config& cfg, Kind k) {
    std::string table = relation_display_name(cfg.relid);
    if (k == Kind::other) {
        throw Error(sqlstate::feature_not_supported,
                    fmt::format("exact counts of Citus table {} are not supported", table),
                    "pg_lifecycle counts hash-distributed tables and reference tables; this one is a Citus local, "
                    "append- or range-distributed table.",
                    "Distribute it by hash (create_distributed_table) or make it a reference table first.");
    }
    if (pg_call([&] { return get_rel_relkind(cfg.relid); }) == RELKIND_PARTITIONED_TABLE) {
        throw Error(sqlstate::feature_not_supported,
                    fmt::format("exact counts of partitioned Citus table {} are not supported", table), {},
                    "Count a distributed table that is not partitioned.");
    }
    /* Enabling, filling and folding a Citus table's counts run as the
     * extension's owner (Citus ties the placements a transaction touched to
     * one role's connections): only PostgreSQL's own types may be read there. */
    std::vector<std::string> columns = cfg.dims;
    if (k == Kind::distributed) {
        cfg.citus_dist = distribution_column(cfg.relid);
        columns.push_back(cfg.citus_dist);
    }
    for (const auto& c : columns) {
        Oid type = pg_call([&] { return get_atttype(cfg.relid, get_attnum(cfg.relid, c.c_str())); });
        if (!builtin_type(type)) {
            throw Error(sqlstate::feature_not_supported,
                        fmt::format("column \"{}\" of Citus table {} has a user-defined type", c, table),
                        "On Citus the counts are filled and folded by the extension's owner, which runs no role's "
                        "code.",
                        "Count Citus tables by columns of PostgreSQL's built-in types.");
        }
    }
    cfg.lattice.clear(); /* no summaries on Citus: the deltas are compacted in place */
    cfg.citus_coarse = true;
}

void distribute_counts(const Config& cfg, Kind k) {
    if (k == Kind::distributed) {
        Oid types[2] = {TEXTOID, TEXTOID};
        Datum values[2] = {bridge::text_datum(cfg.delta()), bridge::text_datum(relation_display_name(cfg.relid))};
        bridge::execute_sql(
            "SELECT pg_catalog.create_distributed_table($1::pg_catalog.regclass, 'lc_dist', "
            "colocate_with => $2)",
            2, types, values, nullptr, false);
    } else {
        Oid types[1] = {TEXTOID};
        Datum values[1] = {bridge::text_datum(cfg.delta())};
        bridge::execute_sql("SELECT pg_catalog.create_reference_table($1::pg_catalog.regclass)", 1, types, values,
                            nullptr, false);
    }
}

void fill(const Config& config) {
    Config cfg = config;
    cfg.citus_coarse = true;
    Kind k = kind(cfg.relid);
    std::string dist = k == Kind::distributed ? distribution_column(cfg.relid) : std::string();
    std::string dims = cfg.dim_list();
    std::string sep = dims.empty() ? "" : ", ";
    std::string dist_col = dist.empty() ? "" : "lc_dist, ";
    std::string dist_val = dist.empty() ? "" : bridge::quote_ident(dist) + ", ";
    int ngroup = static_cast<int>(cfg.dims.size()) + (cfg.has_time() ? 1 : 0) + 1 + (dist.empty() ? 0 : 1);
    std::string group;
    for (int i = 1; i <= ngroup; ++i) group += (i > 1 ? ", " : "") + std::to_string(i);
    /* Grouped by the distribution column too: Citus runs it on each shard,
     * and every delta row lands in the delta shard colocated with its rows
     * (the fold compacts them). */
    std::string sql = fmt::format(
        "INSERT INTO {} ({}{}{}{}lc_live, lc_delta) SELECT {}{}{}{}{}, pg_catalog.count(*) FROM {} GROUP BY {}",
        cfg.delta(), dist_col, dims, sep, cfg.has_time() ? "lc_bucket, " : "", dist_val, dims, sep,
        cfg.has_time() ? bucket_expression(cfg, 1) + ", " : "", live_expression(cfg.relid),
        relation_display_name(cfg.relid), group);
    Oid types[1] = {INT8OID};
    Datum values[1] = {cfg.has_time() ? bucket_interval(cfg) : (Datum)0};
    bridge::AsRole ext(bridge::extension_owner(), SECURITY_RESTRICTED_OPERATION);
    auto run = [&] { bridge::execute_sql(sql, cfg.has_time() ? 1 : 0, types, values, nullptr, false); };
    if (pg_call([] { return GetConfigOption("lifecycle.include_deleted", true, false) != nullptr; })) {
        bridge::with_setting("lifecycle.include_deleted", "on", run);
    } else {
        run();
    }
}

void truncate(const Config& cfg) {
    bridge::AsRole ext(bridge::extension_owner());
    bridge::execute_sql("TRUNCATE " + cfg.delta(), false);
}

void refuse_distributing(Oid relid) {
    bool counted;
    {
        bridge::SpiConnection spi;
        counted = load_config(relid).has_value();
    }
    if (!counted) return;
    std::string table = relation_display_name(relid);
    throw Error(
        sqlstate::feature_not_supported,
        fmt::format("table {} cannot be distributed while its rows are counted", table),
        "Its count tables would stay on the coordinator while its rows go to the shards.",
        fmt::format("Call lifecycle.count_disable('{0}'), distribute it, then lifecycle.count_enable('{0}', ...) "
                    "again.",
                    table));
}

bool caller_reads_counts(const Config& cfg) {
    Oid delta = lifecycle_relation(cfg.table_name("delta"));
    Oid user = GetUserId();
    return OidIsValid(delta) && pg_call([&] { return pg_class_aclcheck(delta, user, ACL_SELECT) == ACLCHECK_OK; });
}

/* ------------------------------------------------------------------------
 * On the node of a shard: where its capture trigger writes
 * ------------------------------------------------------------------------ */

namespace {

/* "<name>_<shard id>": the shard id, or 0. */
int64 shard_id_of(const std::string& name, size_t* underscore) {
    size_t u = name.rfind('_');
    if (u == std::string::npos || u + 1 >= name.size()) return 0;
    int64 id = 0;
    auto [ptr, ec] = std::from_chars(name.data() + u + 1, name.data() + name.size(), id);
    if (ec != std::errc() || ptr != name.data() + name.size() || id <= 0) return 0;
    *underscore = u;
    return id;
}

std::optional<ShardCapture> find_shard(Oid rel, int id);

}  // namespace

std::optional<ShardCapture> shard_capture(Oid rel, const Trigger* trigger) {
    if (rel < FirstNormalObjectId || trigger == nullptr || trigger->tgnargs < 1) return std::nullopt;
    if (!softdelete::citus::present()) return std::nullopt;
    int id = 0;
    if (std::sscanf(trigger->tgargs[0], "%d", &id) != 1 || id <= 0) return std::nullopt;
    std::optional<ShardCapture> cached;
    const auto& shards = caches.get().shards;
    if (auto it = shards.find(rel); it != shards.end() && it->second.cfg.id() == id) cached = it->second.get();
    /* (a copy: looking the relation up may process invalidations) */
    if (cached && !pg_call([d = cached->delta] { return get_rel_name(d) != nullptr; })) cached.reset();
    if (!cached) {
        cached = find_shard(rel, id);
        if (!cached) return std::nullopt;
        Caches& c = caches.get(); /* afresh: finding it may have reset the caches */
        c.shards.insert_or_assign(rel, StoredShardCapture(*cached, caches.context()));
    }
    ShardCapture sc = *cached;
    /* The configuration travels in the capture trigger's arguments (id, time
     * column, bucket, dimensions): Citus copied the trigger from the table,
     * where count_enable created it as the extension's owner (the function
     * is not executable by PUBLIC, so nobody else can create such a
     * trigger), and the delta table named by the id is colocated with the
     * shard's table. */
    if (trigger->tgnargs >= 3) {
        sc.cfg.time_column = trigger->tgargs[1];
        sc.cfg.bucket_text = trigger->tgargs[2];
        for (int i = 3; i < trigger->tgnargs; ++i) sc.cfg.dims.emplace_back(trigger->tgargs[i]);
        if (sc.cfg.has_time()) sc.cfg.bucket_usecs = bucket_usecs_of(sc.cfg.bucket_text);
    }
    return sc;
}

namespace {

/* The delta shard colocated with shard relation rel of the table counted
 * under id, when it is on this node. */
std::optional<ShardCapture> find_shard(Oid rel, int id) {
    register_callback();
    std::string name = pg_call([rel] {
        const char* n = get_rel_name(rel);
        return std::string(n ? n : "");
    });
    size_t underscore = 0;
    int64 shardid = shard_id_of(name, &underscore);
    if (shardid == 0) return std::nullopt;
    Config cfg;
    cfg.id = id;
    Oid delta = lifecycle_relation(cfg.table_name("delta"));
    if (!OidIsValid(delta)) return std::nullopt;
    /* The shard's table, the delta shard of the same range (a table's and
     * its deltas' shards are colocated: count_enable made them so), and the
     * distribution column. */
    static bridge::Statement colocated(
        "SELECT t.logicalrelid::pg_catalog.oid, ds.shardid, "
        "pg_catalog.column_to_column_name(t.logicalrelid, t.partkey) "
        "FROM pg_catalog.pg_dist_shard ts "
        "JOIN pg_catalog.pg_dist_partition t ON t.logicalrelid OPERATOR(pg_catalog.=) ts.logicalrelid "
        "JOIN pg_catalog.pg_dist_partition d ON d.logicalrelid::pg_catalog.oid OPERATOR(pg_catalog.=) $2 "
        " AND d.colocationid OPERATOR(pg_catalog.=) t.colocationid "
        "JOIN pg_catalog.pg_dist_shard ds ON ds.logicalrelid OPERATOR(pg_catalog.=) d.logicalrelid "
        " AND ds.shardminvalue IS NOT DISTINCT FROM ts.shardminvalue "
        "WHERE ts.shardid OPERATOR(pg_catalog.=) $1",
        {INT8OID, OIDOID});
    Oid logical = InvalidOid;
    int64 delta_shard = 0;
    std::string dist;
    {
        bridge::SpiConnection spi;
        Datum values[2] = {Int64GetDatum(shardid), ObjectIdGetDatum(delta)};
        colocated.execute(values, nullptr, true, 2);
        if (bridge::processed_rows() != 1) return std::nullopt;
        logical = DatumGetObjectId(bridge::required_datum(0, 1));
        delta_shard = bridge::required_int64(0, 2);
        dist = bridge::result_text(0, 3).value_or("");
    }
    /* The shard is "<table>_<shard id>" in the table's schema. */
    bool same = pg_call([&] {
        const char* table = get_rel_name(logical);
        return table != nullptr && get_rel_namespace(logical) == get_rel_namespace(rel) &&
               std::strlen(table) == underscore && name.compare(0, underscore, table) == 0;
    });
    if (!same) return std::nullopt;
    ShardCapture sc;
    sc.delta_name = fmt::format("{}_{}", cfg.table_name("delta"), delta_shard);
    sc.delta = lifecycle_relation(sc.delta_name);
    if (!OidIsValid(sc.delta)) return std::nullopt; /* not on this node */
    sc.dist_column = dist;
    cfg.relid = logical;
    cfg.citus_coarse = true;
    sc.cfg = cfg;
    return sc;
}

}  // namespace

/* ------------------------------------------------------------------------
 * The fold: each placement of the deltas compacted on its node
 * ------------------------------------------------------------------------ */

int64 fold(const Config& cfg) {
    Oid types[1] = {TEXTOID};
    Datum values[1] = {bridge::text_datum(cfg.delta())};
    bridge::execute_sql(
        "SELECT pg_catalog.bool_and(success), pg_catalog.sum(CASE WHEN success THEN result::pg_catalog.int8 "
        "END)::pg_catalog.int8, "
        "pg_catalog.min(CASE WHEN NOT success THEN result END) FROM pg_catalog.run_command_on_placements("
        "$1::pg_catalog.regclass, 'SELECT lifecycle._count_compact(%L::pg_catalog.regclass)')",
        1, types, values, nullptr, false, 1);
    if (bridge::processed_rows() == 0) return 0;
    auto ok = bridge::result_datum(0, 1);
    if (ok && !DatumGetBool(*ok)) {
        throw Error(sqlstate::internal_error,
                    fmt::format("folding the counts of table {} failed on a node: {}", relation_display_name(cfg.relid),
                                bridge::result_text(0, 3).value_or("?")));
    }
    return bridge::result_int64(0, 2).value_or(0);
}

}  // namespace pg_lifecycle::counts::citus

using namespace pg_lifecycle;
using namespace pg_lifecycle::counts;
using bridge::pg_call;

/* lifecycle._count_compact(shard regclass) RETURNS bigint — on the node that
 * holds it, one delta shard of a Citus table's counts compacted in place:
 * the rows of each group that has several (or sums to zero) replaced by one
 * with their sum, in one statement, as the shard's owner.  Returns how many
 * rows it removed. */
LIFECYCLE_FUNCTION(lifecycle_count_compact) {
    bridge::require_arg(fcinfo, 0, "shard");
    Oid shard = PG_GETARG_OID(0);
    std::string name = pg_call([shard] {
        const char* n = get_rel_name(shard);
        return std::string(n ? n : "");
    });
    int id = 0;
    long long shardid = 0;
    int consumed = 0;
    bool ours = pg_call([shard] { return get_rel_namespace(shard); }) == lifecycle_namespace() &&
                std::sscanf(name.c_str(), "count_%d_delta_%lld%n", &id, &shardid, &consumed) == 2 &&
                consumed == static_cast<int>(name.size());
    bridge::SpiConnection spi;
    if (ours) {
        Config cfg;
        cfg.id = id;
        static bridge::Statement of_deltas(
            "SELECT 1 FROM pg_catalog.pg_dist_shard WHERE shardid OPERATOR(pg_catalog.=) $1 "
            "AND logicalrelid::pg_catalog.oid OPERATOR(pg_catalog.=) $2",
            {INT8OID, OIDOID});
        Datum values[2] = {Int64GetDatum(shardid), ObjectIdGetDatum(lifecycle_relation(cfg.table_name("delta")))};
        ours =
            softdelete::citus::present() && (of_deltas.execute(values, nullptr, true, 1), bridge::processed_rows() > 0);
    }
    if (!ours) {
        throw Error(
            sqlstate::object_not_in_prerequisite_state,
            fmt::format("relation {} is not a shard of pg_lifecycle's count deltas", name.empty() ? "?" : name));
    }
    bridge::require_owner(shard, "fold its counts");
    std::string table = relation_display_name(shard);
    std::string keys;
    bool has_dist = false;
    pg_call([&] {
        Relation r = table_open(shard, AccessShareLock);
        TupleDesc desc = RelationGetDescr(r);
        for (int i = 0; i < desc->natts; ++i) {
            Form_pg_attribute att = TupleDescAttr(desc, i);
            if (att->attisdropped) continue;
            const char* n = NameStr(att->attname);
            if (std::strcmp(n, "lc_delta") == 0) continue;
            if (std::strcmp(n, "lc_dist") == 0) {
                has_dist = true;
                continue;
            }
            char* q = const_cast<char*>(quote_identifier(n));
            keys += (keys.empty() ? "" : ", ") + std::string(q);
        }
        table_close(r, NoLock);
    });
    std::string sql = fmt::format(
        "WITH g AS (SELECT pg_catalog.array_agg(ctid) AS tids FROM {0} GROUP BY {1} "
        "HAVING pg_catalog.count(*) > 1 OR pg_catalog.sum(lc_delta) = 0), "
        "moved AS (DELETE FROM {0} WHERE ctid = ANY (ARRAY(SELECT pg_catalog.unnest(tids) FROM g)) RETURNING *), "
        "kept AS (INSERT INTO {0} ({1}, {2}lc_delta) SELECT {1}, {3}pg_catalog.sum(lc_delta) FROM moved GROUP BY {1} "
        "HAVING pg_catalog.sum(lc_delta) <> 0 RETURNING 1) "
        "SELECT (SELECT pg_catalog.count(*) FROM moved) - (SELECT pg_catalog.count(*) FROM kept)",
        table, keys, has_dist ? "lc_dist, " : "", has_dist ? "(pg_catalog.array_agg(lc_dist))[1], " : "");
    bridge::AsRole owner(bridge::relation_owner(shard), SECURITY_RESTRICTED_OPERATION);
    bridge::execute_sql(sql, false, 1);
    PG_RETURN_INT64(bridge::result_int64(0, 1).value_or(0));
}
