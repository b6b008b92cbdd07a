/*
 * common.cpp — what the parts of exact counts share: names, the SQL pieces of
 * the count_N tables, plans cached by their text, scans of the counted table
 * (enable, partition DDL, rebuild).  The configuration is in config.cpp, our
 * triggers in capture_triggers.cpp, the count tables and the lattice in tables.cpp.
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

std::string quote_literal_str(const std::string& s) {
    return pg_call([&] {
        char* q = quote_literal_cstr(s.c_str());
        std::string out(q);
        pfree(q);
        return out;
    });
}

std::string relation_display_name(Oid relid) { return bridge::qualified_relation_name(relid); }

Oid lifecycle_namespace() {
    Oid nsp = bridge::extension_schema();
    if (!OidIsValid(nsp)) {
        throw Error(sqlstate::object_not_in_prerequisite_state,
                    "extension \"pg_lifecycle\" is not installed in this database", {},
                    "CREATE EXTENSION pg_lifecycle;");
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
    if (legacy || citus_coarse) return bucket_usecs; /* 0.1's and Citus's deltas are by bucket */
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
                (void)set_config_option("lifecycle.include_deleted", "on", PGC_USERSET, PGC_S_SESSION, GUC_ACTION_SAVE,
                                        true, 0, false);
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
        "SELECT {0}{1}(CASE WHEN GROUPING(lc_fb) = 0 THEN 2 WHEN GROUPING(lc_cb) = 0 THEN 1 ELSE 0 "
        "END)::pg_catalog.int2 "
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
    for (const char* old : {"bucket", "total"}) { /* 0.1's summaries, until ALTER EXTENSION UPDATE */
        if (cfg.legacy && lifecycle_relation(cfg.table_name(old)) != InvalidOid)
            list += ", lifecycle." + cfg.table_name(old);
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

}  // namespace pg_lifecycle::counts
