/*
 * common.cpp — what the parts of exact counts share: the configuration of a
 * counted table, the SQL of the count_N tables, plans cached by their text,
 * scans of the counted table (enable, partition DDL, rebuild), our triggers,
 * and the reconciliation that event triggers run after DDL.
 */
#include "counts/counts.hpp"
#include "softdelete/softdelete.hpp"
#include "softdelete/citus.hpp"

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
        throw Error(sqlstate::object_not_in_prerequisite_state, "extension \"pg_lifecycle\" is not installed in this database",
                    {}, "CREATE EXTENSION pg_lifecycle;");
    }
    return nsp;
}

Oid lifecycle_relation(const std::string& name) { return bridge::extension_relation(name.c_str()); }

std::string Config::table_name(const char* kind) const { return fmt::format("count_{}_{}", id, kind); }
std::string Config::delta() const { return "lifecycle." + table_name("delta"); }
std::string Config::summary(int no) const { return "lifecycle." + table_name(fmt::format("s{}", no).c_str()); }

std::vector<std::string> Config::count_tables() const {
    std::vector<std::string> out{delta()};
    for (const auto& s : lattice) out.push_back(summary(s.no));
    return out;
}

int64 Config::fine_usecs() const {
    if (!has_time()) return 0;
    if (legacy || citus_coarse) return bucket_usecs;  /* 0.1's and Citus's deltas are by bucket */
    constexpr int64 minute = 60 * USECS_PER_SEC;
    return bucket_usecs % minute == 0 ? bucket_usecs / 60 : bucket_usecs;
}

std::vector<std::string> Config::lattice_text() const {
    std::vector<std::string> out;
    for (const auto& s : lattice) {
        std::string t = s.timed ? "t" : "u";
        for (size_t d : s.dims) t += " " + std::to_string(d + 1);
        out.push_back(t);
    }
    return out;
}

void Config::set_lattice(const std::vector<std::string>& text) {
    lattice.clear();
    for (const auto& t : text) {
        Summary s;
        s.no = static_cast<int>(lattice.size());
        s.timed = !t.empty() && t[0] == 't';
        size_t pos = 1;
        while (pos < t.size()) {
            while (pos < t.size() && t[pos] == ' ') ++pos;
            size_t end = pos;
            while (end < t.size() && t[end] != ' ') ++end;
            if (end > pos) {
                size_t d = std::stoul(t.substr(pos, end - pos));
                if (d >= 1 && d <= dims.size()) s.dims.push_back(d - 1);
            }
            pos = end;
        }
        lattice.push_back(std::move(s));
    }
}

std::string Config::dim_list(const Summary& s) const {
    std::string out;
    for (size_t d : s.dims) {
        if (!out.empty()) out += ", ";
        out += bridge::quote_ident(dims[d]);
    }
    return out;
}

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

/* Columns: id, tbl, time_column, bucket::text, bucket usecs, dimensions, live_column, lattice. */
#define CONFIG_COLUMNS_WITHOUT_LATTICE                                                              \
    "SELECT id, tbl::oid, time_column::text, bucket::text, "                                        \
    "(extract(epoch FROM bucket) * 1000000)::bigint, dimensions, live_column, "
#define CONFIG_COLUMNS CONFIG_COLUMNS_WITHOUT_LATTICE "lattice FROM lifecycle.count_tables "
/* The schema of 0.1, run by this library until ALTER EXTENSION UPDATE. */
#define CONFIG_COLUMNS_0_1 CONFIG_COLUMNS_WITHOUT_LATTICE "NULL::pg_catalog.text[] FROM lifecycle.count_tables "

Config config_from_row(uint64 row) {
    Config c;
    c.legacy = !bridge::result_datum(row, 8).has_value();
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
    std::vector<std::string> lattice;
    if (auto arr = bridge::result_datum(row, 8)) {
        pg_call([&] {
            Datum* elems;
            bool* nulls;
            int n;
            deconstruct_array(DatumGetArrayTypeP(*arr), TEXTOID, -1, false, TYPALIGN_INT, &elems, &nulls, &n);
            for (int i = 0; i < n; ++i) {
                if (!nulls[i]) lattice.emplace_back(TextDatumGetCString(elems[i]));
            }
        });
    }
    c.set_lattice(lattice);
    return c;
}

std::vector<Config> configs_from_result() {
    std::vector<Config> out;
    for (uint64 i = 0; i < bridge::processed_rows(); ++i) out.push_back(config_from_row(i));
    return out;
}

}  // namespace

bool has_lattice_column() {
    Oid tables = lifecycle_relation("count_tables");
    return OidIsValid(tables) && pg_call([tables] { return get_attnum(tables, "lattice"); }) > 0;
}

std::optional<Config> load_config(Oid relid) {
    static bridge::Statement by_table(CONFIG_COLUMNS "WHERE tbl = $1", {OIDOID});
    static bridge::Statement by_table_0_1(CONFIG_COLUMNS_0_1 "WHERE tbl = $1", {OIDOID});
    Datum key = ObjectIdGetDatum(relid);
    (has_lattice_column() ? by_table : by_table_0_1).execute(&key, nullptr, true, 1);
    if (bridge::processed_rows() == 0) return std::nullopt;
    return config_from_row(0);
}

std::optional<Config> load_config_by_id(int32 id) {
    static bridge::Statement by_id(CONFIG_COLUMNS "WHERE id = $1", {INT4OID});
    static bridge::Statement by_id_0_1(CONFIG_COLUMNS_0_1 "WHERE id = $1", {INT4OID});
    Datum key = Int32GetDatum(id);
    (has_lattice_column() ? by_id : by_id_0_1).execute(&key, nullptr, true, 1);
    if (bridge::processed_rows() == 0) return std::nullopt;
    return config_from_row(0);
}

std::vector<Config> load_all_configs() {
    static bridge::Statement all(CONFIG_COLUMNS "ORDER BY id", {});
    static bridge::Statement all_0_1(CONFIG_COLUMNS_0_1 "ORDER BY id", {});
    (has_lattice_column() ? all : all_0_1).execute(nullptr, nullptr, true);
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
    pg_call([] { CacheRegisterRelcacheCallback(config_cache_callback, (Datum)0); });
    init_capture();
}

/* ------------------------------------------------------------------------
 * SQL pieces
 * ------------------------------------------------------------------------ */

std::string live_expression(Oid relid) {
    AttrNumber att = pg_call([relid] { return get_attnum(relid, softdelete::deleted_at_column); });
    return att > 0 ? fmt::format("({} IS NULL)", softdelete::deleted_at_column) : "true";
}

std::string bucket_expression(const Config& cfg, int param) {
    /* $param is the fine width: see bucket_interval. */
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
    if (cfg.bucket_usecs > 0) return Int64GetDatum(cfg.fine_usecs());
    Config c = cfg;
    c.bucket_usecs = bucket_usecs_of(cfg.bucket_text);
    return Int64GetDatum(c.fine_usecs());
}

Oid counts_owner(const Config& cfg) {
    Oid delta = lifecycle_relation(cfg.table_name("delta"));
    if (delta == InvalidOid) {
        throw Error(sqlstate::object_not_in_prerequisite_state,
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

std::string summary_rows_sql(const Config& cfg, const Config::Summary& s, const std::string& source) {
    std::string sd = cfg.dim_list(s);
    std::string sep = sd.empty() ? "" : ", ";
    if (!s.timed) {
        return fmt::format(
            "SELECT {0}{1}0::pg_catalog.int2 AS lc_level, NULL::pg_catalog.timestamptz AS lc_bucket, lc_live, "
            "pg_catalog.sum(lc_c)::bigint AS lc_n FROM {2} GROUP BY {0}{1}lc_live",
            sd, sep, source);
    }
    if (!cfg.has_fine()) {
        return fmt::format(
            "SELECT {0}{1}(CASE WHEN GROUPING(lc_fb) = 0 THEN 1 ELSE 0 END)::pg_catalog.int2 AS lc_level, "
            "lc_fb AS lc_bucket, lc_live, pg_catalog.sum(lc_c)::bigint AS lc_n FROM {2} "
            "GROUP BY GROUPING SETS (({0}{1}lc_live), ({0}{1}lc_fb, lc_live))",
            sd, sep, source);
    }
    return fmt::format(
        "SELECT {0}{1}(CASE WHEN GROUPING(lc_fb) = 0 THEN 2 WHEN GROUPING(lc_cb) = 0 THEN 1 ELSE 0 END)::pg_catalog.int2 "
        "AS lc_level, CASE WHEN GROUPING(lc_fb) = 0 THEN lc_fb ELSE lc_cb END AS lc_bucket, lc_live, "
        "pg_catalog.sum(lc_c)::bigint AS lc_n "
        "FROM (SELECT *, lifecycle.count_bucket(lc_fb, {3}::bigint) AS lc_cb FROM {2}) src_c "
        "GROUP BY GROUPING SETS (({0}{1}lc_live), ({0}{1}lc_cb, lc_live), ({0}{1}lc_fb, lc_live))",
        sd, sep, source, cfg.bucket_usecs);
}

namespace {

/* The dimensions a summary's rows are computed from: the union of the timed
 * summaries' dimensions for a timed one (one scan fills them all), its own
 * for the others. */
std::vector<size_t> source_dims(const Config& cfg, const Config::Summary& s) {
    if (!s.timed) return s.dims;
    std::vector<size_t> out;
    for (const auto& t : cfg.lattice) {
        if (!t.timed) continue;
        for (size_t d : t.dims) {
            if (std::find(out.begin(), out.end(), d) == out.end()) out.push_back(d);
        }
    }
    std::sort(out.begin(), out.end());
    return out;
}

/* The counted table's rows grouped by `dims` (and the fine bucket when
 * timed) and live: the source of summary_rows_sql. */
std::string table_source(const Config& cfg, const std::vector<size_t>& dims, bool timed) {
    std::string cols, group;
    int n = 0;
    for (size_t d : dims) {
        cols += bridge::quote_ident(cfg.dims[d]) + ", ";
        group += (n ? ", " : "") + std::to_string(n + 1);
        ++n;
    }
    if (timed) {
        cols += bucket_expression(cfg, 1) + " AS lc_fb, ";
        group += (n ? ", " : "") + std::to_string(n + 1);
        ++n;
    }
    group += (n ? ", " : "") + std::to_string(n + 1);
    return fmt::format("(SELECT {}{} AS lc_live, pg_catalog.count(*) AS lc_c FROM {} GROUP BY {})", cols,
                       live_expression(cfg.relid), relation_display_name(cfg.relid), group);
}

std::string summary_columns(const Config& cfg, const Config::Summary& s) {
    std::string sd = cfg.dim_list(s);
    return fmt::format("{}{}lc_level, lc_bucket, lc_live, lc_n", sd, sd.empty() ? "" : ", ");
}

}  // namespace

void drop_count_tables(const Config& cfg) {
    std::string list;
    for (const auto& t : cfg.count_tables()) list += (list.empty() ? "" : ", ") + t;
    for (const char* old : {"bucket", "total"}) {  /* 0.1's summaries, until ALTER EXTENSION UPDATE */
        if (cfg.legacy && lifecycle_relation(cfg.table_name(old)) != InvalidOid) list += ", lifecycle." + cfg.table_name(old);
    }
    bridge::execute_sql("DROP TABLE IF EXISTS " + list, false);
}

void truncate_counts(const Config& cfg) {
    if (citus::kind(cfg.relid) != citus::Kind::none) {
        citus::truncate(cfg);
        return;
    }
    std::string list;
    for (const auto& t : cfg.count_tables()) list += (list.empty() ? "" : ", ") + t;
    bridge::AsRole owner(counts_owner(cfg), SECURITY_RESTRICTED_OPERATION);
    bridge::execute_sql("TRUNCATE " + list, false);
}

void rebuild(const Config& cfg) {
    truncate_counts(cfg);
    if (citus::kind(cfg.relid) != citus::Kind::none) {
        citus::fill(cfg);
        return;
    }
    bridge::AsRole owner(counts_owner(cfg), SECURITY_RESTRICTED_OPERATION);
    DeletedRowsVisible all_rows;
    /* One statement (one scan of the table) per source: every timed summary
     * is filled from one grouping of the table by the fine bucket. */
    bool timed_done = false;
    for (const auto& s : cfg.lattice) {
        bool timed = s.timed;
        if (timed && timed_done) continue;
        timed_done = timed_done || timed;
        std::string sql = fmt::format("WITH src AS MATERIALIZED {} ", table_source(cfg, source_dims(cfg, s), timed));
        int k = 0;
        for (const auto& t : cfg.lattice) {
            if (timed ? !t.timed : t.no != s.no) continue;
            sql += fmt::format(", i{} AS (INSERT INTO {} ({}) {}) ", k, cfg.summary(t.no), summary_columns(cfg, t),
                               summary_rows_sql(cfg, t, "src"));
            ++k;
        }
        sql += "SELECT 1";
        Oid types[1] = {INT8OID};
        Datum values[1] = {cfg.has_time() ? bucket_interval(cfg) : (Datum)0};
        execute_fresh(sql, timed ? 1 : 0, types, values);
    }
}

bool summaries_match_snapshot(const Config& cfg) {
    bridge::AsRole owner(counts_owner(cfg), SECURITY_RESTRICTED_OPERATION);
    DeletedRowsVisible all_rows;
    pg_call([] { CommandCounterIncrement(); });
    for (const auto& s : cfg.lattice) {
        std::string columns = summary_columns(cfg, s);
        std::string sql = fmt::format(
            "WITH a AS ({0}), t AS (SELECT {1} FROM {2}) "
            "SELECT NOT EXISTS (SELECT {1} FROM a EXCEPT ALL SELECT {1} FROM t) "
            "AND NOT EXISTS (SELECT {1} FROM t EXCEPT ALL SELECT {1} FROM a)",
            summary_rows_sql(cfg, s, table_source(cfg, source_dims(cfg, s), s.timed) + " src0"), columns,
            cfg.summary(s.no));
        Oid types[1] = {INT8OID};
        Datum values[1] = {cfg.has_time() ? bucket_interval(cfg) : (Datum)0};
        bridge::execute_sql(sql, s.timed ? 1 : 0, types, values, nullptr, false, 1);
        if (bridge::processed_rows() != 1 || !DatumGetBool(bridge::result_datum(0, 1).value_or(BoolGetDatum(false)))) {
            return false;
        }
    }
    return true;
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
    /* On a Citus table, Citus copies them to every shard. */
    softdelete::citus::with_triggers_allowed([&] {
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
    });
}

void drop_triggers(const Config& cfg, Oid rel) {
    std::string table = relation_display_name(rel);
    OwnDdl own;
    bridge::AsRole ext(bridge::extension_owner());
    softdelete::citus::with_triggers_allowed([&] {
        for (const auto& t : trigger_specs) {
            bridge::execute_sql(
                fmt::format("DROP TRIGGER IF EXISTS lifecycle_count_{}_{} ON {}", cfg.id, t.suffix, table), false);
        }
    });
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

namespace pg_lifecycle::counts {

/* ------------------------------------------------------------------------
 * The count tables and the lattice of summaries
 * ------------------------------------------------------------------------ */

void create_counts_tables(const Config& cfg, Oid table_owner, bool with_delta) {
    std::string base = relation_display_name(cfg.relid);
    std::string dims = cfg.dim_list();
    std::string sep = dims.empty() ? "" : ", ";
    std::string owner = bridge::quote_ident(pg_call([table_owner] { return std::string(GetUserNameFromId(table_owner, false)); }));
    auto run = [](const std::string& sql) { bridge::execute_sql(sql, false); };

    /* CREATE TABLE AS copies each dimension's type, typmod and collation, so
     * equality on the copies is equality on the table's columns. */
    if (with_delta) {
    run(fmt::format("CREATE TABLE {} WITH (autovacuum_vacuum_scale_factor = 0, autovacuum_vacuum_threshold = 1000, "
                    "autovacuum_vacuum_insert_scale_factor = 0, autovacuum_vacuum_insert_threshold = 1000) AS "
                    "SELECT {}{}{}{}true AS lc_live, 0::bigint AS lc_delta FROM {} WITH NO DATA",
                    cfg.delta(), cfg.citus_dist.empty() ? "" : bridge::quote_ident(cfg.citus_dist) + " AS lc_dist, ", dims,
                    sep, cfg.has_time() ? "NULL::pg_catalog.timestamptz AS lc_bucket, " : "", base));
    run(fmt::format("ALTER TABLE {} ALTER lc_live SET NOT NULL, ALTER lc_delta SET NOT NULL", cfg.delta()));
    run(fmt::format("COMMENT ON TABLE {} IS {}", cfg.delta(),
                    quote_literal_str(fmt::format("pg_lifecycle: count deltas of {}, folded by the worker", base))));
    run(fmt::format("ALTER TABLE {} OWNER TO {}", cfg.delta(), owner));
    }
    for (const auto& s : cfg.lattice) {
        std::string sd = cfg.dim_list(s);
        std::string ssep = sd.empty() ? "" : ", ";
        std::string name = cfg.summary(s.no);
        /* Timed summaries grow at their end (new buckets) and are updated
         * there; the others are updated anywhere: room for HOT updates. */
        run(fmt::format("CREATE TABLE {} WITH (fillfactor = {}) AS SELECT {}{}0::pg_catalog.int2 AS lc_level, "
                        "NULL::pg_catalog.timestamptz AS lc_bucket, true AS lc_live, 0::bigint AS lc_n FROM {} WITH NO DATA",
                        name, s.timed ? 90 : 70, sd, ssep, base));
        run(fmt::format("ALTER TABLE {} ALTER lc_level SET NOT NULL, ALTER lc_live SET NOT NULL, ALTER lc_n SET NOT NULL",
                        name));
        /* One index each: by time first for a timed summary (a range of
         * buckets, the dimensions tested inside the index), by dimensions
         * first for the others (one probe per filter value). */
        if (s.timed) {
            run(fmt::format("CREATE UNIQUE INDEX ON {} (lc_level, lc_bucket{}{}, lc_live) NULLS NOT DISTINCT", name,
                            ssep, sd));
        } else {
            run(fmt::format("CREATE UNIQUE INDEX ON {} ({}{}lc_level, lc_bucket, lc_live) NULLS NOT DISTINCT", name, sd,
                            ssep));
        }
        std::string what = sd.empty() ? std::string("all rows") : "(" + sd + ")";
        run(fmt::format("COMMENT ON TABLE {} IS {}", name,
                        quote_literal_str(fmt::format("pg_lifecycle: counts of {} by {}{}", base, what,
                                                      s.timed ? ", all time, per bucket and per fine bucket" : ", all time"))));
        run(fmt::format("ALTER TABLE {} OWNER TO {}", name, owner));
    }
}

namespace {
/* A dimension with at most this many distinct values is "low-cardinality":
 * it gets summaries per bucket and per fine bucket. */
constexpr double low_cardinality_max = 100;
/* The combination of the low-cardinality dimensions is a timed summary while
 * it has at most this many groups. */
constexpr double low_combination_max = 10000;
/* A summary that names a high-cardinality dimension is kept (all time only)
 * when its groups average at least this many rows; below that an index on
 * the table starting with the dimension counts them about as fast. */
constexpr double rows_per_group_min = 8;
}  // namespace

std::vector<size_t> choose_lattice(Config& cfg) {
    cfg.lattice.clear();
    bool timed = cfg.has_time();
    auto add = [&](std::vector<size_t> dims, bool t) {
        Config::Summary s;
        s.no = static_cast<int>(cfg.lattice.size());
        s.dims = std::move(dims);
        s.timed = t;
        cfg.lattice.push_back(std::move(s));
    };
    add({}, timed);
    if (cfg.dims.empty()) return {};

    std::string table = relation_display_name(cfg.relid);
    bridge::execute_sql(fmt::format("ANALYZE {} ({})", table, cfg.dim_list()), false);
    static bridge::Statement stats(
        "SELECT s.attname::text, s.n_distinct::float8, GREATEST(c.reltuples::float8, 0::float8) "
        "FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace "
        "JOIN pg_catalog.pg_stats s ON s.schemaname = n.nspname AND s.tablename = c.relname "
        "AND s.inherited = (c.relkind = 'p') WHERE c.oid = $1",
        {OIDOID});
    Datum key = ObjectIdGetDatum(cfg.relid);
    pg_call([] { CommandCounterIncrement(); });
    stats.execute(&key, nullptr, false);  /* a snapshot that sees what ANALYZE wrote */
    std::vector<double> nd(cfg.dims.size(), 0);
    double rows = 0;
    for (uint64 i = 0; i < bridge::processed_rows(); ++i) {
        std::string name = *bridge::result_text(i, 1);
        double n = DatumGetFloat8(bridge::result_datum(i, 2).value_or(Float8GetDatum(0)));
        rows = DatumGetFloat8(bridge::result_datum(i, 3).value_or(Float8GetDatum(0)));
        for (size_t d = 0; d < cfg.dims.size(); ++d) {
            if (cfg.dims[d] == name) nd[d] = n;
        }
    }
    if (rows <= 0) {
        bridge::execute_sql(fmt::format("SELECT pg_catalog.count(*)::float8 FROM {}", table), true, 1);
        rows = DatumGetFloat8(bridge::result_datum(0, 1).value_or(Float8GetDatum(0)));
    }
    for (auto& n : nd) {
        if (n < 0) n = -n * rows;
    }
    std::vector<size_t> low, high;
    double low_groups = 1;
    for (size_t d = 0; d < cfg.dims.size(); ++d) {
        if (nd[d] <= low_cardinality_max) {
            low.push_back(d);
            low_groups *= std::max(nd[d], 1.0);
        } else {
            high.push_back(d);
        }
    }
    for (size_t d : low) add({d}, timed);
    if (low.size() >= 2) add(low, timed && low_groups <= low_combination_max);
    for (size_t h : high) {
        std::vector<size_t> with_low{h};
        with_low.insert(with_low.end(), low.begin(), low.end());
        if (std::min(rows, nd[h] * low_groups) * rows_per_group_min <= rows) {
            add(with_low, false);
        } else if (nd[h] * rows_per_group_min <= rows) {
            add({h}, false);
        }
    }
    return high;
}

void index_high_dimensions(const Config& cfg, const std::vector<size_t>& high) {
    static bridge::Statement indexed(
        "SELECT 1 FROM pg_catalog.pg_index i JOIN pg_catalog.pg_attribute a ON a.attrelid = i.indrelid "
        "AND a.attnum = i.indkey[0] WHERE i.indrelid = $1 AND a.attname = $2 AND i.indpred IS NULL LIMIT 1",
        {OIDOID, TEXTOID});
    std::string table = relation_display_name(cfg.relid);
    for (size_t h : high) {
        const std::string& dim = cfg.dims[h];
        Datum values[2] = {ObjectIdGetDatum(cfg.relid), bridge::text_datum(dim)};
        indexed.execute(values, nullptr, true, 1);
        if (bridge::processed_rows() > 0) continue;
        std::string cols = bridge::quote_ident(dim);
        if (cfg.has_time()) cols += ", " + bridge::quote_ident(cfg.time_column);
        bridge::execute_sql(fmt::format("CREATE INDEX ON {} ({})", table, cols), false);
        pg_call([&] {
            ereport(NOTICE, (errmsg("created an index on %s (%s) for counts filtered by \"%s\"", table.c_str(),
                                    cols.c_str(), dim.c_str()),
                             errdetail("The dimension has too many distinct values for summaries by time.")));
        });
    }
}

}  // namespace pg_lifecycle::counts
