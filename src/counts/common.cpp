/*
 * common.cpp — what the parts of exact counts share: the configuration of a
 * counted table, the SQL of the count_N tables, plans cached by their text,
 * scans of the counted table (enable, partition DDL, rebuild), our triggers,
 * and the reconciliation that event triggers run after DDL.
 */
#include "counts/counts.hpp"

#include <algorithm>
#include <unordered_map>

namespace pg_lifecycle::counts {

using bridge::pg_call;

int own_ddl_depth = 0;

std::string quote_ident_str(const std::string& s) { return bridge::quote_ident(s); }

std::string relation_display_name(Oid relid) { return bridge::qualified_relation_name(relid); }

Oid lifecycle_namespace() {
    Oid nsp = bridge::extension_schema();
    if (!OidIsValid(nsp)) {
        throw Error(sqlstate::wrong_object_state, "extension \"pg_lifecycle\" is not installed in this database",
                    {}, "CREATE EXTENSION pg_lifecycle;");
    }
    return nsp;
}

Oid lifecycle_relation(const std::string& name) { return bridge::extension_relation(name.c_str()); }

std::string Config::table_name(const char* kind) const { return fmt::format("count_{}_{}", id, kind); }
std::string Config::delta() const { return "lifecycle." + table_name("delta"); }
std::string Config::bucket() const { return "lifecycle." + table_name("bucket"); }
std::string Config::total() const { return "lifecycle." + table_name("total"); }

std::string Config::dim_list(const char* prefix) const {
    std::string out;
    for (const auto& d : dims) {
        if (!out.empty()) out += ", ";
        out += prefix;
        out += bridge::quote_ident(d);
    }
    return out;
}

/* ------------------------------------------------------------------------
 * Configuration
 * ------------------------------------------------------------------------ */

namespace {

/* Columns: id, tbl, time_column, bucket::text, bucket usecs, dimensions, live_column. */
#define CONFIG_COLUMNS                                                                              \
    "SELECT id, tbl::oid, time_column::text, bucket::text, "                                        \
    "(extract(epoch FROM bucket) * 1000000)::bigint, dimensions, live_column FROM lifecycle.count_tables "

Config config_from_row(uint64 row) {
    Config c;
    c.id = static_cast<int32>(*bridge::result_int64(row, 1));
    c.relid = DatumGetObjectId(*bridge::result_datum(row, 2));
    c.time_column = bridge::result_text(row, 3).value_or("");
    c.bucket_text = bridge::result_text(row, 4).value_or("");
    c.bucket_usecs = bridge::result_int64(row, 5).value_or(0);
    c.live_column = DatumGetBool(*bridge::result_datum(row, 7));
    Datum dims = *bridge::result_datum(row, 6);
    pg_call([&] {
        ArrayType* arr = DatumGetArrayTypeP(dims);
        Datum* elems;
        bool* nulls;
        int n;
        deconstruct_array(arr, NAMEOID, NAMEDATALEN, false, TYPALIGN_CHAR, &elems, &nulls, &n);
        for (int i = 0; i < n; ++i) {
            if (!nulls[i]) c.dims.emplace_back(NameStr(*DatumGetName(elems[i])));
        }
    });
    return c;
}

std::vector<Config> configs_from_result() {
    std::vector<Config> out;
    for (uint64 i = 0; i < bridge::processed_rows(); ++i) out.push_back(config_from_row(i));
    return out;
}

}  // namespace

std::optional<Config> load_config(Oid relid) {
    static bridge::Statement by_table(CONFIG_COLUMNS "WHERE tbl = $1", {OIDOID});
    Datum key = ObjectIdGetDatum(relid);
    by_table.execute(&key, nullptr, true, 1);
    if (bridge::processed_rows() == 0) return std::nullopt;
    return config_from_row(0);
}

std::optional<Config> load_config_by_id(int32 id) {
    static bridge::Statement by_id(CONFIG_COLUMNS "WHERE id = $1", {INT4OID});
    Datum key = Int32GetDatum(id);
    by_id.execute(&key, nullptr, true, 1);
    if (bridge::processed_rows() == 0) return std::nullopt;
    return config_from_row(0);
}

std::vector<Config> load_all_configs() {
    static bridge::Statement all(CONFIG_COLUMNS "ORDER BY id", {});
    all.execute(nullptr, nullptr, true);
    return configs_from_result();
}

/* ------------------------------------------------------------------------
 * Which configuration a relation's triggers work for
 * ------------------------------------------------------------------------ */

namespace {

struct CachedConfig {
    bool counted;
    Config cfg;
};
std::unordered_map<Oid, CachedConfig> config_cache;
uint64 config_invalidations = 0;
Oid cached_tables_oid = InvalidOid;  /* lifecycle.count_tables and count_parts when the cache was filled */
Oid cached_parts_oid = InvalidOid;

extern "C" void config_cache_callback(Datum, Oid relid) {
    /* No allocation, no PostgreSQL call: only forget.  registry_changed()
     * names count_tables; everything is InvalidOid. */
    ++config_invalidations;
    if (relid == InvalidOid || relid == cached_tables_oid || relid == cached_parts_oid) {
        config_cache.clear();
    } else {
        config_cache.erase(relid);
    }
}

}  // namespace

void registry_changed() {
    Oid tables = lifecycle_relation("count_tables");
    pg_call([tables] {
        if (OidIsValid(tables)) CacheInvalidateRelcacheByRelid(tables);
    });
    config_cache.clear();
}

const Config* config_for_relation(Oid rel) {
    Oid tables = lifecycle_relation("count_tables");
    Oid parts = lifecycle_relation("count_parts");
    if (!OidIsValid(tables) || !OidIsValid(parts)) return nullptr;
    if (tables != cached_tables_oid || parts != cached_parts_oid) {
        config_cache.clear();  /* the extension was re-created */
        cached_tables_oid = tables;
        cached_parts_oid = parts;
    }
    auto it = config_cache.find(rel);
    if (it == config_cache.end()) {
        uint64 seen = config_invalidations;
        static bridge::Statement owner_of(
            "SELECT id FROM lifecycle.count_tables WHERE tbl OPERATOR(pg_catalog.=) $1 "
            "UNION ALL SELECT id FROM lifecycle.count_parts WHERE part OPERATOR(pg_catalog.=) $1 LIMIT 1",
            {REGCLASSOID});
        CachedConfig entry{false, {}};
        {
            bridge::SpiConnection spi;
            Datum key = ObjectIdGetDatum(rel);
            owner_of.execute(&key, nullptr, true, 1);
            if (bridge::processed_rows() > 0) {
                auto cfg = load_config_by_id(static_cast<int32>(*bridge::result_int64(0, 1)));
                if (cfg) entry = CachedConfig{true, *cfg};
            }
        }
        if (config_invalidations != seen) {
            /* Invalidated while read: use it once, keep nothing. */
            static CachedConfig once;
            once = entry;
            return once.counted ? &once.cfg : nullptr;
        }
        it = config_cache.emplace(rel, std::move(entry)).first;
    }
    return it->second.counted ? &it->second.cfg : nullptr;
}

void init() {
    register_fold_task();
    pg_call([] { CacheRegisterRelcacheCallback(config_cache_callback, (Datum)0); });
    init_capture();
}

/* ------------------------------------------------------------------------
 * SQL pieces
 * ------------------------------------------------------------------------ */

std::string live_expression(Oid relid) {
    AttrNumber att = pg_call([relid] { return get_attnum(relid, "deleted_at"); });
    return att > 0 ? "(deleted_at IS NULL)" : "true";
}

std::string bucket_expression(const Config& cfg, int param) {
    return fmt::format("lifecycle.count_bucket({}, ${})", bridge::quote_ident(cfg.time_column), param);
}

int64 bucket_usecs_of(const std::string& interval_text) {
    Interval* iv = pg_call([&] {
        return DatumGetIntervalP(DirectFunctionCall3(interval_in, CStringGetDatum(interval_text.c_str()),
                                                     ObjectIdGetDatum(InvalidOid), Int32GetDatum(-1)));
    });
    return static_cast<int64>(iv->day) * USECS_PER_DAY + iv->time;
}

Datum bucket_interval(const Config& cfg) {
    return Int64GetDatum(cfg.bucket_usecs > 0 ? cfg.bucket_usecs : bucket_usecs_of(cfg.bucket_text));
}

Oid counts_owner(const Config& cfg) {
    Oid delta = lifecycle_relation(cfg.table_name("delta"));
    if (delta == InvalidOid) {
        throw Error(sqlstate::wrong_object_state,
                    fmt::format("the counts of table {} are missing their table lifecycle.{}",
                                relation_display_name(cfg.relid), cfg.table_name("delta")),
                    {}, "Run lifecycle.count_disable and lifecycle.count_enable again.");
    }
    return bridge::relation_owner(delta);
}

namespace {

/* Runs a one-off statement with a snapshot taken now (after every commit so
 * far and our own earlier commands), like the RI triggers do: what DDL-time
 * scans need even in a REPEATABLE READ transaction. */
void execute_fresh(const std::string& sql, int nargs, const Oid* types, const Datum* values) {
    pg_call([] { CommandCounterIncrement(); });
    bridge::execute_fresh(sql, nargs, types, values, false);
}

/* While scanning the counted table, soft-deleted rows must be visible too
 * (they are counted with lc_live = false): set lifecycle.include_deleted for
 * the scope when soft delete defines it. */
class DeletedRowsVisible {
public:
    DeletedRowsVisible() {
        nest_ = pg_call([] {
            int nest = NewGUCNestLevel();
            if (GetConfigOption("lifecycle.include_deleted", true, false) != nullptr) {
                (void)set_config_option("lifecycle.include_deleted", "on", PGC_USERSET, PGC_S_SESSION,
                                        GUC_ACTION_SAVE, true, 0, false);
            }
            return nest;
        });
    }
    ~DeletedRowsVisible() {
        /* AtEOXact_GUC cannot fail for a plain restore of a boolean. */
        AtEOXact_GUC(true, nest_);
    }
    DeletedRowsVisible(const DeletedRowsVisible&) = delete;
    DeletedRowsVisible& operator=(const DeletedRowsVisible&) = delete;

private:
    int nest_;
};

}  // namespace

void scan_into_delta(const Config& cfg, Oid rel, int sign) {
    std::string table = relation_display_name(rel);
    std::string dims = cfg.dim_list();
    std::string sep = dims.empty() ? "" : ", ";
    int ngroup = static_cast<int>(cfg.dims.size()) + (cfg.has_time() ? 1 : 0) + 1;
    std::string group;
    for (int i = 1; i <= ngroup; ++i) group += (i > 1 ? ", " : "") + std::to_string(i);
    std::string sql = fmt::format(
        "INSERT INTO {} ({}{}{}lc_live, lc_delta) SELECT {}{}{}{}, pg_catalog.count(*) * $2 FROM {} GROUP BY {}",
        cfg.delta(), dims, sep, cfg.has_time() ? "lc_bucket, " : "", dims, sep,
        cfg.has_time() ? bucket_expression(cfg, 1) + ", " : "", live_expression(rel), table, group);
    Oid types[2] = {INT8OID, INT8OID};
    Datum values[2] = {cfg.has_time() ? bucket_interval(cfg) : (Datum)0, Int64GetDatum(sign)};
    bridge::AsRole owner(counts_owner(cfg), SECURITY_RESTRICTED_OPERATION);
    DeletedRowsVisible all_rows;
    execute_fresh(sql, 2, types, values);
}

void rebuild(const Config& cfg) {
    std::string dims = cfg.dim_list();
    std::string sep = dims.empty() ? "" : ", ";
    std::string table = relation_display_name(cfg.relid);
    bridge::AsRole owner(counts_owner(cfg), SECURITY_RESTRICTED_OPERATION);
    DeletedRowsVisible all_rows;
    if (cfg.has_time()) {
        bridge::execute_sql(fmt::format("TRUNCATE {}, {}, {}", cfg.delta(), cfg.bucket(), cfg.total()), false);
        int ngroup = static_cast<int>(cfg.dims.size()) + 2;
        std::string group;
        for (int i = 1; i <= ngroup; ++i) group += (i > 1 ? ", " : "") + std::to_string(i);
        std::string sql = fmt::format(
            "WITH agg AS (SELECT {0}{1}{2} AS lc_bucket, {3} AS lc_live, pg_catalog.count(*) AS lc_n FROM {4} GROUP BY {5}), "
            "b AS (INSERT INTO {6} ({0}{1}lc_bucket, lc_live, lc_n) SELECT {0}{1}lc_bucket, lc_live, lc_n FROM agg) "
            "INSERT INTO {7} ({0}{1}lc_live, lc_n) SELECT {0}{1}lc_live, pg_catalog.sum(lc_n) FROM agg GROUP BY {8}",
            dims, sep, bucket_expression(cfg, 1), live_expression(cfg.relid), table, group, cfg.bucket(),
            cfg.total(), [&] {
                std::string g;
                for (size_t i = 1; i <= cfg.dims.size() + 1; ++i) g += (i > 1 ? ", " : "") + std::to_string(i);
                return g;
            }());
        Oid types[1] = {INT8OID};
        Datum values[1] = {bucket_interval(cfg)};
        execute_fresh(sql, 1, types, values);
    } else {
        bridge::execute_sql(fmt::format("TRUNCATE {}, {}", cfg.delta(), cfg.total()), false);
        int ngroup = static_cast<int>(cfg.dims.size()) + 1;
        std::string group;
        for (int i = 1; i <= ngroup; ++i) group += (i > 1 ? ", " : "") + std::to_string(i);
        std::string sql = fmt::format(
            "INSERT INTO {} ({}{}lc_live, lc_n) SELECT {}{}{}, pg_catalog.count(*) FROM {} GROUP BY {}", cfg.total(), dims, sep,
            dims, sep, live_expression(cfg.relid), table, group);
        execute_fresh(sql, 0, nullptr, nullptr);
    }
}

bool summaries_match_snapshot(const Config& cfg) {
    std::string dims = cfg.dim_list();
    std::string sep = dims.empty() ? "" : ", ";
    int ngroup = static_cast<int>(cfg.dims.size()) + (cfg.has_time() ? 1 : 0) + 1;
    std::string group;
    for (int i = 1; i <= ngroup; ++i) group += (i > 1 ? ", " : "") + std::to_string(i);
    std::string columns = fmt::format("{}{}{}lc_live, lc_n", dims, sep, cfg.has_time() ? "lc_bucket, " : "");
    std::string sql = fmt::format(
        "WITH a AS (SELECT {0}{1}{2}{3} AS lc_live, pg_catalog.count(*) AS lc_n FROM {4} GROUP BY {5}), "
        "s AS (SELECT {6} FROM {7}) "
        "SELECT NOT EXISTS (SELECT {6} FROM a EXCEPT ALL SELECT {6} FROM s) "
        "AND NOT EXISTS (SELECT {6} FROM s EXCEPT ALL SELECT {6} FROM a)",
        dims, sep, cfg.has_time() ? bucket_expression(cfg, 1) + " AS lc_bucket, " : "", live_expression(cfg.relid),
        relation_display_name(cfg.relid), group, columns, cfg.has_time() ? cfg.bucket() : cfg.total());
    Oid types[1] = {INT8OID};
    Datum values[1] = {cfg.has_time() ? bucket_interval(cfg) : (Datum)0};
    bridge::AsRole owner(counts_owner(cfg), SECURITY_RESTRICTED_OPERATION);
    DeletedRowsVisible all_rows;
    pg_call([] { CommandCounterIncrement(); });
    bridge::execute_sql(sql, cfg.has_time() ? 1 : 0, types, values, nullptr, false, 1);
    return bridge::processed_rows() == 1 && DatumGetBool(bridge::result_datum(0, 1).value_or(BoolGetDatum(false)));
}

/* ------------------------------------------------------------------------
 * Triggers
 * ------------------------------------------------------------------------ */

namespace {

struct TriggerSpec {
    const char* suffix;
    const char* timing_event;
    const char* referencing;
    const char* function;
};

constexpr TriggerSpec trigger_specs[] = {
    {"ins", "AFTER INSERT", "REFERENCING NEW TABLE AS lifecycle_new", "count_capture"},
    {"upd", "AFTER UPDATE", "REFERENCING OLD TABLE AS lifecycle_old NEW TABLE AS lifecycle_new", "count_capture"},
    {"del", "AFTER DELETE", "REFERENCING OLD TABLE AS lifecycle_old", "count_capture"},
    {"trb", "BEFORE TRUNCATE", "", "count_truncate"},
    {"tra", "AFTER TRUNCATE", "", "count_truncate"},
};

std::string quote_literal_str(const std::string& s) {
    return pg_call([&] {
        char* q = quote_literal_cstr(s.c_str());
        std::string out(q);
        pfree(q);
        return out;
    });
}

}  // namespace

void create_triggers(const Config& cfg, Oid rel) {
    std::string table = relation_display_name(rel);
    /* Arguments of count_capture: id, time column ('' for none), bucket, dimensions. */
    std::string args = quote_literal_str(std::to_string(cfg.id)) + ", " + quote_literal_str(cfg.time_column) + ", " +
                       quote_literal_str(cfg.has_time() ? cfg.bucket_text : std::string());
    for (const auto& d : cfg.dims) args += ", " + quote_literal_str(d);
    OwnDdl own;
    bridge::AsRole ext(bridge::extension_owner());
    for (const auto& t : trigger_specs) {
        std::string name = fmt::format("lifecycle_count_{}_{}", cfg.id, t.suffix);
        bool capture = std::string_view(t.function) == "count_capture";
        bridge::execute_sql(fmt::format("CREATE TRIGGER {} {} ON {} {} FOR EACH STATEMENT EXECUTE FUNCTION "
                                        "lifecycle.{}({})",
                                        name, t.timing_event, table, t.referencing, t.function,
                                        capture ? args : quote_literal_str(std::to_string(cfg.id))),
                            false);
        /* Counts must follow every change, logical replication's included. */
        bridge::execute_sql(fmt::format("ALTER TABLE {} ENABLE ALWAYS TRIGGER {}", table, name), false);
    }
}

void drop_triggers(const Config& cfg, Oid rel) {
    std::string table = relation_display_name(rel);
    OwnDdl own;
    bridge::AsRole ext(bridge::extension_owner());
    for (const auto& t : trigger_specs) {
        bridge::execute_sql(fmt::format("DROP TRIGGER IF EXISTS lifecycle_count_{}_{} ON {}", cfg.id, t.suffix, table),
                            false);
    }
}

/* ------------------------------------------------------------------------
 * Partitions
 * ------------------------------------------------------------------------ */

std::vector<Oid> attached_partitions(Oid root) {
    static bridge::Statement tree(
        "WITH RECURSIVE t(relid, depth) AS (SELECT $1::oid, 0 UNION ALL "
        "SELECT i.inhrelid, t.depth + 1 FROM pg_catalog.pg_inherits i JOIN t ON i.inhparent = t.relid "
        "WHERE NOT i.inhdetachpending) "
        "SELECT relid FROM t WHERE depth > 0 ORDER BY depth, relid",
        {OIDOID});
    Datum key = ObjectIdGetDatum(root);
    tree.execute(&key, nullptr, true);
    std::vector<Oid> out;
    for (uint64 i = 0; i < bridge::processed_rows(); ++i) out.push_back(DatumGetObjectId(*bridge::result_datum(i, 1)));
    return out;
}

std::vector<Oid> registered_parts(const Config& cfg) {
    static bridge::Statement parts("SELECT part::oid FROM lifecycle.count_parts WHERE id = $1 ORDER BY part::oid",
                                   {INT4OID});
    Datum key = Int32GetDatum(cfg.id);
    parts.execute(&key, nullptr, true);
    std::vector<Oid> out;
    for (uint64 i = 0; i < bridge::processed_rows(); ++i) out.push_back(DatumGetObjectId(*bridge::result_datum(i, 1)));
    return out;
}

void register_part(const Config& cfg, Oid part) {
    static bridge::Statement add("INSERT INTO lifecycle.count_parts (part, id) VALUES ($1, $2)",
                                 {REGCLASSOID, INT4OID});
    Datum values[2] = {ObjectIdGetDatum(part), Int32GetDatum(cfg.id)};
    bridge::AsRole ext(bridge::extension_owner());
    add.execute(values, nullptr, false);
    registry_changed();
}

void unregister_part(Oid part) {
    static bridge::Statement remove("DELETE FROM lifecycle.count_parts WHERE part = $1", {REGCLASSOID});
    Datum key = ObjectIdGetDatum(part);
    bridge::AsRole ext(bridge::extension_owner());
    remove.execute(&key, nullptr, false);
    registry_changed();
}

}  // namespace pg_lifecycle::counts
