/*
 * tables.cpp — the count tables (count_N_delta, the summaries) and the lattice of
 * summaries chosen from the dimensions' cardinality.
 */
#include "counts/counts.hpp"
#include "softdelete/softdelete.hpp"
#include "softdelete/citus.hpp"

#include <algorithm>
#include <unordered_map>

namespace pg_lifecycle::counts {

using bridge::pg_call;

/* ------------------------------------------------------------------------
 * The count tables and the lattice of summaries
 * ------------------------------------------------------------------------ */

void create_counts_tables(const Config& cfg, Oid table_owner, bool with_delta) {
    std::string base = relation_display_name(cfg.relid);
    std::string dims = cfg.dim_list();
    std::string sep = dims.empty() ? "" : ", ";
    std::string owner =
        bridge::quote_ident(pg_call([table_owner] { return std::string(GetUserNameFromId(table_owner, false)); }));
    auto run = [](const std::string& sql) { bridge::execute_sql(sql, false); };

    /* CREATE TABLE AS copies each dimension's type, typmod and collation, so
     * equality on the copies is equality on the table's columns. */
    if (with_delta) {
        run(fmt::format(
            "CREATE TABLE {} WITH (autovacuum_vacuum_scale_factor = 0, autovacuum_vacuum_threshold = 1000, "
            "autovacuum_vacuum_insert_scale_factor = 0, autovacuum_vacuum_insert_threshold = 1000) AS "
            "SELECT {}{}{}{}true AS lc_live, 0::bigint AS lc_delta FROM {} WITH NO DATA",
            cfg.delta(), cfg.citus_dist.empty() ? "" : bridge::quote_ident(cfg.citus_dist) + " AS lc_dist, ", dims, sep,
            cfg.has_time() ? "NULL::pg_catalog.timestamptz AS lc_bucket, " : "", base));
        run(fmt::format("ALTER TABLE {} ALTER lc_live SET NOT NULL, ALTER lc_delta SET NOT NULL", cfg.delta()));
        run(fmt::format(
            "COMMENT ON TABLE {} IS {}", cfg.delta(),
            quote_literal_str(fmt::format("pg_lifecycle: count deltas of {}, folded by the worker", base))));
        run(fmt::format("ALTER TABLE {} OWNER TO {}", cfg.delta(), owner));
    }
    for (const auto& s : cfg.lattice) {
        std::string sd = cfg.dim_list(s);
        std::string ssep = sd.empty() ? "" : ", ";
        std::string name = cfg.summary(s.no);
        /* Timed summaries grow at their end (new buckets) and are updated
         * there; the others are updated anywhere: room for HOT updates. */
        run(fmt::format(
            "CREATE TABLE {} WITH (fillfactor = {}) AS SELECT {}{}0::pg_catalog.int2 AS lc_level, "
            "NULL::pg_catalog.timestamptz AS lc_bucket, true AS lc_live, 0::bigint AS lc_n FROM {} WITH NO DATA",
            name, s.timed ? 90 : 70, sd, ssep, base));
        run(fmt::format(
            "ALTER TABLE {} ALTER lc_level SET NOT NULL, ALTER lc_live SET NOT NULL, ALTER lc_n SET NOT NULL", name));
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
        run(fmt::format(
            "COMMENT ON TABLE {} IS {}", name,
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
    stats.execute(&key, nullptr, false); /* a snapshot that sees what ANALYZE wrote */
    std::vector<double> nd(cfg.dims.size(), 0);
    double rows = 0;
    for (uint64 i = 0; i < bridge::processed_rows(); ++i) {
        std::string name = bridge::required_text(i, 1);
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
