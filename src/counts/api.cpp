/*
 * api.cpp — the SQL functions of exact counts (SPEC.md §4):
 * lifecycle.count_enable, count_disable, count, count_by, count_series and
 * count_estimate.  count, count_by and count_series share count_groups, the
 * one path from (filter, range, grouping) to partial counts.
 */
#include "bridge/function.hpp"
#include "counts/counts.hpp"
#include "softdelete/softdelete.hpp"
#include "counts/filter.hpp"
#include "softdelete/citus.hpp"

#include <algorithm>
#include <cmath>
#include <functional>
#include <map>

using namespace pg_lifecycle;
using namespace pg_lifecycle::counts;
using bridge::pg_call;

namespace {

/* A plain or partitioned table; 42P01 / 42809 otherwise. */
char counted_table_kind(Oid relid) {
    char kind = pg_call([relid] { return get_rel_relkind(relid); });
    if (kind == '\0') {
        throw Error(sqlstate::undefined_table, fmt::format("relation with OID {} does not exist", relid));
    }
    if (kind != RELKIND_RELATION && kind != RELKIND_PARTITIONED_TABLE) {
        throw Error(ERRCODE_WRONG_OBJECT_TYPE, fmt::format("\"{}\" is not a table", relation_display_name(relid)), {},
                    "Exact counts work on plain and partitioned tables.");
    }
    return kind;
}

AttrNumber column_attnum(Oid relid, const std::string& column, const std::string& table) {
    AttrNumber att = pg_call([&] { return get_attnum(relid, column.c_str()); });
    if (att == InvalidAttrNumber) {
        throw Error(sqlstate::undefined_column,
                    fmt::format("column \"{}\" of relation {} does not exist", column, table));
    }
    if (att < 0) {
        throw Error(sqlstate::invalid_parameter_value,
                    fmt::format("\"{}\" is a system column of relation {}", column, table), {},
                    "Dimensions and the time column must be ordinary columns.");
    }
    return att;
}

std::string type_name(Oid type) {
    return pg_call([type] { return std::string(format_type_be(type)); });
}

/* The names in a name[] argument. */
std::vector<std::string> name_array(FunctionCallInfo fcinfo, int n, const char* what) {
    std::vector<std::string> out;
    pg_call([&] {
        ArrayType* arr = PG_GETARG_ARRAYTYPE_P(n);
        if (ARR_NDIM(arr) > 1) {
            ereport(ERROR,
                    (errcode(ERRCODE_INVALID_PARAMETER_VALUE), errmsg("%s must be a one-dimensional array", what)));
        }
        Datum* elems;
        bool* nulls;
        int count;
        deconstruct_array(arr, NAMEOID, NAMEDATALEN, false, TYPALIGN_CHAR, &elems, &nulls, &count);
        for (int i = 0; i < count; ++i) {
            if (nulls[i]) {
                ereport(ERROR, (errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED), errmsg("%s must not contain NULL", what)));
            }
        }
        for (int i = 0; i < count; ++i) out.emplace_back(NameStr(*DatumGetName(elems[i])));
    });
    return out;
}

/* A text[] Datum. */
Datum text_array(const std::vector<std::string>& items) {
    return pg_call([&] {
        Datum* elems = static_cast<Datum*>(palloc(sizeof(Datum) * (items.size() + 1)));
        for (size_t i = 0; i < items.size(); ++i) elems[i] = CStringGetTextDatum(items[i].c_str());
        return PointerGetDatum(
            construct_array(elems, static_cast<int>(items.size()), TEXTOID, -1, false, TYPALIGN_INT));
    });
}

/* The rows of the partial buckets at the edges of a range are counted in
 * the table: that needs an index that starts with the time column. */
void ensure_time_index(const Config& cfg, const std::string& table) {
    if (!cfg.has_time()) return;
    static bridge::Statement indexed(
        "SELECT 1 FROM pg_catalog.pg_index i JOIN pg_catalog.pg_attribute a ON a.attrelid = i.indrelid "
        "AND a.attnum = i.indkey[0] WHERE i.indrelid = $1 AND a.attname = $2 AND i.indpred IS NULL LIMIT 1",
        {OIDOID, TEXTOID});
    Datum values[2] = {ObjectIdGetDatum(cfg.relid), bridge::text_datum(cfg.time_column)};
    indexed.execute(values, nullptr, true, 1);
    if (bridge::processed_rows() == 0) {
        bridge::execute_sql(fmt::format("CREATE INDEX ON {} ({})", table, bridge::quote_ident(cfg.time_column)), false);
        pg_call([&] {
            ereport(NOTICE, (errmsg("created an index on %s (%s) for counts over time ranges", table.c_str(),
                                    cfg.time_column.c_str())));
        });
    }
}

/* The row of lifecycle.count_tables for cfg (count_enable's arguments):
 * returns its id. */
int32 register_config(const Config& cfg, FunctionCallInfo fcinfo) {
    static bridge::Statement insert(
        "INSERT INTO lifecycle.count_tables (tbl, dimensions, time_column, bucket, live_column, lattice) "
        "VALUES ($1, $2, $3, $4, $5, $6) RETURNING id",
        {REGCLASSOID, NAMEARRAYOID, NAMEOID, INTERVALOID, BOOLOID, TEXTARRAYOID});
    static bridge::Statement insert_0_1(
        "INSERT INTO lifecycle.count_tables (tbl, dimensions, time_column, bucket, live_column) "
        "VALUES ($1, $2, $3, $4, $5) RETURNING id",
        {REGCLASSOID, NAMEARRAYOID, NAMEOID, INTERVALOID, BOOLOID});
    Datum values[6] = {ObjectIdGetDatum(cfg.relid),
                       PG_GETARG_DATUM(1),
                       cfg.has_time() ? PG_GETARG_DATUM(2) : (Datum)0,
                       cfg.has_time() ? PG_GETARG_DATUM(3) : (Datum)0,
                       BoolGetDatum(cfg.live_column),
                       text_array(cfg.lattice_text())};
    char nulls[7] = "      ";
    if (!cfg.has_time()) nulls[2] = nulls[3] = 'n';
    bridge::AsRole ext(bridge::extension_owner());
    (cfg.legacy ? insert_0_1 : insert).execute(values, nulls, false);
    return static_cast<int32>(bridge::required_int64(0, 1));
}

/* count_enable's dimensions: columns of the table, each once, not one of our
 * own column names, of a type with equality and ordering. */
void check_dimensions(const Config& cfg, Oid relid, const std::string& table) {
    for (size_t i = 0; i < cfg.dims.size(); ++i) {
        const std::string& d = cfg.dims[i];
        AttrNumber att = column_attnum(relid, d, table);
        for (size_t j = 0; j < i; ++j) {
            if (cfg.dims[j] == d) {
                throw Error(sqlstate::invalid_parameter_value, fmt::format("dimension \"{}\" is listed twice", d));
            }
        }
        for (const char* r : reserved_columns) {
            if (d == r) {
                throw Error(sqlstate::invalid_parameter_value,
                            fmt::format("column \"{}\" cannot be a dimension: pg_lifecycle uses the name", d));
            }
        }
        Oid type = pg_call([&] { return get_atttype(relid, att); });
        bool comparable = pg_call([type] {
            TypeCacheEntry* t = lookup_type_cache(type, TYPECACHE_EQ_OPR | TYPECACHE_BTREE_OPFAMILY);
            return OidIsValid(t->eq_opr) && OidIsValid(t->btree_opf);
        });
        if (!comparable) {
            throw Error(sqlstate::datatype_mismatch,
                        fmt::format("column \"{}\" of relation {} cannot be a dimension", d, table),
                        fmt::format("Its type {} has no default btree operator class.", type_name(type)),
                        "A dimension needs equality and ordering (json, for example, does not have them: jsonb does).");
        }
    }
}

/* count_enable's time column (timestamptz, not a dimension) and bucket (a
 * positive fixed-width interval), when a time column is given. */
void take_time_column(Config& cfg, FunctionCallInfo fcinfo, Oid relid, const std::string& table) {
    if (PG_ARGISNULL(2)) return;
    cfg.time_column = NameStr(*PG_GETARG_NAME(2));
    AttrNumber att = column_attnum(relid, cfg.time_column, table);
    Oid type = pg_call([&] { return get_atttype(relid, att); });
    if (type != TIMESTAMPTZOID) {
        throw Error(sqlstate::datatype_mismatch,
                    fmt::format("column \"{}\" of relation {} is not a timestamptz", cfg.time_column, table),
                    fmt::format("Its type is {}.", type_name(type)),
                    "The time column must be timestamptz: with timestamp (without time zone) the edges of a "
                    "range are ambiguous around daylight-saving changes.");
    }
    for (const auto& d : cfg.dims) {
        if (d == cfg.time_column) {
            throw Error(sqlstate::invalid_parameter_value,
                        fmt::format("column \"{}\" cannot be both a dimension and the time column", d));
        }
    }
    bridge::require_arg(fcinfo, 3, "bucket");
    Interval* bucket = PG_GETARG_INTERVAL_P(3);
    if (bucket->month != 0) {
        throw Error(sqlstate::invalid_parameter_value, "bucket must not contain months or years", {},
                    "Buckets have a fixed width, such as '1 hour' or '1 day'.");
    }
    int64 usecs = static_cast<int64>(bucket->day) * USECS_PER_DAY + bucket->time;
    if (usecs <= 0) throw Error(sqlstate::invalid_parameter_value, "bucket must be a positive interval");
    cfg.bucket_usecs = usecs;
    cfg.bucket_text = pg_call([bucket] {
        return std::string(DatumGetCString(DirectFunctionCall1(interval_out, IntervalPGetDatum(bucket))));
    });
}

/* count_enable of a Citus table (see citus.cpp). */
void enable_on_citus(Config& cfg, FunctionCallInfo fcinfo, citus::Kind on_citus, const std::string& table) {
    Oid relid = cfg.relid;
    /* A Citus table: its deltas are a Citus table too, filled through
     * Citus; everything runs as the extension's owner (Citus ties the
     * placements a transaction touched to one role's connections, and
     * our triggers are created as that role). */
    citus::prepare_enable(cfg, on_citus);
    if (!has_lattice_column()) {
        throw Error(sqlstate::object_not_in_prerequisite_state, "pg_lifecycle's schema is older than its library", {},
                    "ALTER EXTENSION pg_lifecycle UPDATE;");
    }
    OwnDdl own;
    Oid table_owner = bridge::relation_owner(relid);
    bridge::AsRole ext(bridge::extension_owner());
    bridge::execute_sql(fmt::format("LOCK TABLE {} IN SHARE MODE", table), false);
    ensure_time_index(cfg, table);
    cfg.live_column = pg_call([relid] { return get_attnum(relid, softdelete::deleted_at_column); }) > 0;
    cfg.id = register_config(cfg, fcinfo);
    create_counts_tables(cfg, table_owner);
    citus::distribute_counts(cfg, on_citus);
    registry_changed();
    create_triggers(cfg, relid);
    citus::fill(cfg);
}

/* count_enable of a local table: the lattice of summaries chosen from the
 * dimensions' cardinality, the count tables, the triggers (on every attached
 * partition too), the summaries filled from the rows, under a SHARE lock. */
void enable_local(Config& cfg, FunctionCallInfo fcinfo, char kind, const std::string& table) {
    Oid relid = cfg.relid;
    /* Writers wait while the summaries are filled from the existing rows. */
    bridge::execute_sql(fmt::format("LOCK TABLE {} IN SHARE MODE", table), false);
    ensure_time_index(cfg, table);

    /* The lattice of summaries, from the dimensions' measured cardinality. */
    index_high_dimensions(cfg, choose_lattice(cfg));

    OwnDdl own;
    Oid table_owner = bridge::relation_owner(relid);
    {
        cfg.legacy = !has_lattice_column();
        if (cfg.legacy) cfg.lattice.clear(); /* 0.1's schema until ALTER EXTENSION UPDATE: no summaries yet */
        cfg.live_column = pg_call([relid] { return get_attnum(relid, softdelete::deleted_at_column); }) > 0;
        cfg.id = register_config(cfg, fcinfo);
        bridge::AsRole ext(bridge::extension_owner());
        create_counts_tables(cfg, table_owner);
    }
    registry_changed();
    create_triggers(cfg, relid);
    if (kind == RELKIND_PARTITIONED_TABLE) {
        for (Oid part : attached_partitions(relid)) {
            create_triggers(cfg, part);
            register_part(cfg, part);
        }
    }
    rebuild(cfg);
    /* The summaries are filled from the rows committed when the lock was
     * granted, which every later transaction sees; a REPEATABLE READ or
     * SERIALIZABLE transaction whose snapshot is older may see fewer (or
     * other) rows, and would count them in its own summaries.  Refuse then. */
    if (IsolationUsesXactSnapshot() && !summaries_match_snapshot(cfg)) {
        throw Error(ERRCODE_T_R_SERIALIZATION_FAILURE,
                    fmt::format("could not enable counting of table {}: its rows changed after this transaction's "
                                "snapshot was taken",
                                table),
                    "The summaries would count rows this transaction cannot see.",
                    "Retry the transaction, or call lifecycle.count_enable in a READ COMMITTED transaction.");
    }
}

}  // namespace

/* lifecycle.count_enable(tbl regclass, dimensions name[], time_column name, bucket interval) RETURNS void */
LIFECYCLE_FUNCTION(lifecycle_count_enable) {
    bridge::require_arg(fcinfo, 0, "tbl");
    bridge::require_arg(fcinfo, 1, "dimensions");
    Oid relid = PG_GETARG_OID(0);
    char kind = counted_table_kind(relid);
    std::string table = relation_display_name(relid);
    bridge::require_owner(relid, "count its rows");

    Config cfg;
    cfg.relid = relid;
    cfg.dims = name_array(fcinfo, 1, "dimensions");
    check_dimensions(cfg, relid, table);
    take_time_column(cfg, fcinfo, relid, table);

    bridge::SpiConnection spi;
    if (load_config(relid)) {
        throw Error(sqlstate::object_not_in_prerequisite_state,
                    fmt::format("the rows of table {} are already counted", table), {},
                    fmt::format("To change dimensions or buckets, call lifecycle.count_disable('{}') first.", table));
    }
    if (kind == RELKIND_RELATION) {
        if (has_inheritance_children(relid)) {
            throw Error(sqlstate::object_not_in_prerequisite_state,
                        fmt::format("table {} has inheritance children", table),
                        "count(*) on it counts their rows too, which its statement triggers do not see.",
                        "Use declarative partitioning, or count each table of the hierarchy.");
        }
    }
    citus::Kind on_citus = citus::kind(relid);
    if (on_citus != citus::Kind::none) {
        enable_on_citus(cfg, fcinfo, on_citus, table);
    } else {
        enable_local(cfg, fcinfo, kind, table);
    }
    PG_RETURN_VOID();
}

/* lifecycle.count_disable(tbl regclass) RETURNS void */
LIFECYCLE_FUNCTION(lifecycle_count_disable) {
    bridge::require_arg(fcinfo, 0, "tbl");
    Oid relid = PG_GETARG_OID(0);
    counted_table_kind(relid);
    std::string table = relation_display_name(relid);
    bridge::require_owner(relid, "stop counting its rows");

    bridge::SpiConnection spi;
    auto cfg = load_config(relid);
    if (!cfg) {
        throw Error(sqlstate::object_not_in_prerequisite_state,
                    fmt::format("the rows of table {} are not counted", table), {},
                    "See lifecycle.count_tables for the tables that are.");
    }
    OwnDdl own;
    drop_triggers(*cfg, relid);
    for (Oid part : registered_parts(*cfg)) {
        if (pg_call([part] { return get_rel_relkind(part); }) != '\0') drop_triggers(*cfg, part);
    }
    static bridge::Statement remove("DELETE FROM lifecycle.count_tables WHERE id = $1", {INT4OID});
    Datum key = Int32GetDatum(cfg->id);
    bridge::AsRole ext(bridge::extension_owner());
    drop_count_tables(*cfg);
    remove.execute(&key, nullptr, false);
    registry_changed();
    PG_RETURN_VOID();
}

namespace {

/* SELECT on the table, or on every column the count reads (as count(*) would
 * need): 42501 otherwise. */
void require_select(Oid relid, const Config& cfg, const Filter& filter, bool ranged, const std::string& table,
                    const char* function = "count", const std::string& also = {}) {
    Oid user = GetUserId();
    bool ok = pg_call([&] { return pg_class_aclcheck(relid, user, ACL_SELECT) == ACLCHECK_OK; });
    if (!ok) {
        ok = pg_call([&] { return pg_attribute_aclcheck_all(relid, user, ACL_SELECT, ACLMASK_ANY) == ACLCHECK_OK; });
        std::vector<std::string> columns;
        for (const auto& c : filter.conditions) columns.push_back(cfg.dims[c.dimension]);
        if (ranged) columns.push_back(cfg.time_column);
        if (!also.empty()) columns.push_back(also);
        for (const auto& col : columns) {
            if (!ok) break;
            ok = pg_call([&] {
                AttrNumber att = get_attnum(relid, col.c_str());
                return att > 0 && pg_attribute_aclcheck(relid, att, user, ACL_SELECT) == ACLCHECK_OK;
            });
        }
    }
    if (!ok) {
        throw Error(
            sqlstate::insufficient_privilege, fmt::format("permission denied for table {}", table), {},
            fmt::format("lifecycle.{} needs the SELECT privilege that count(*) on the table would need.", function));
    }
}

/* The WHERE clause of a filter over columns named as the dimensions, with the
 * value arrays as parameters $first.. (appended to types/values). */
std::string filter_sql(const Config& cfg, const Filter& filter, Oid relid, int first, std::vector<Oid>& types,
                       std::vector<Datum>& values) {
    std::string where;
    int param = first;
    for (const auto& c : filter.conditions) {
        const std::string& dim = cfg.dims[c.dimension];
        std::string col = bridge::quote_ident(dim);
        std::string cond;
        if (!c.values.empty()) {
            Oid type = pg_call([&] { return getBaseType(get_atttype(relid, get_attnum(relid, dim.c_str()))); });
            Oid array_type = pg_call([type] { return get_array_type(type); });
            if (array_type == InvalidOid) {
                throw Error(sqlstate::datatype_mismatch, fmt::format("type {} has no array type", type_name(type)));
            }
            Datum array = pg_call([&] {
                Oid input, ioparam;
                int16 len;
                bool byval;
                char align;
                getTypeInputInfo(type, &input, &ioparam);
                get_typlenbyvalalign(type, &len, &byval, &align);
                Datum* elems = static_cast<Datum*>(palloc(sizeof(Datum) * c.values.size()));
                for (size_t i = 0; i < c.values.size(); ++i) {
                    elems[i] = OidInputFunctionCall(input, const_cast<char*>(c.values[i].c_str()), ioparam, -1);
                }
                return PointerGetDatum(
                    construct_array(elems, static_cast<int>(c.values.size()), type, len, byval, align));
            });
            types.push_back(array_type);
            values.push_back(array);
            cond = fmt::format("{} {} ANY (${})", col, bridge::equality_operator(type), param++);
            if (c.match_null) cond = fmt::format("({} OR {} IS NULL)", cond, col);
        } else if (c.match_null) {
            cond = col + " IS NULL";
        } else {
            cond = "false"; /* an empty list matches nothing */
        }
        where += (where.empty() ? "" : " AND ") + cond;
    }
    return where.empty() ? "true" : where;
}

/* ------------------------------------------------------------------------
 * The one path every count takes: "sum the summaries for this filter and
 * range, grouped by nothing (count), by one dimension (count_by) or by time
 * buckets (count_series)".  It yields partial groups (key as text, count)
 * from each source — summaries, visible deltas, rows at the partial edges of
 * the range, or the table itself under row-level security — that the caller
 * adds up.  Which summary of the lattice answers is chosen here
 * (pick_summary): the smallest that covers the filter and grouping.
 * ------------------------------------------------------------------------ */

/* What a count reads. */
struct CountRequest {
    Oid relid = InvalidOid;
    std::string table;
    Config cfg;
    Filter filter;
    bool soft = false;      /* only live rows count */
    std::string where;      /* the filter over the dimension columns */
    std::vector<Oid> types; /* its parameters $1.. */
    std::vector<Datum> values;
    std::optional<TimestampTz> since, until; /* [since, until); nullopt: open */
    bool citus = false;                      /* a Citus table: deltas only, read as the caller */
    bool ranged() const { return since.has_value() || until.has_value(); }
};

/* How counts are grouped. */
struct Grouping {
    enum Kind { None, Dimension, Bucket } kind = None;
    size_t dim = 0; /* Dimension: index into cfg.dims */
    int64 step = 0; /* Bucket: width in microseconds, a multiple of the table's bucket */
};

/* Partial groups: key as text (nullopt for SQL NULL, and for no grouping), count. */
using Groups = std::vector<std::pair<std::optional<std::string>, int64>>;

/* The group key over the rows of a summary or delta table (summary = true)
 * or of the counted table; may append the step parameter. */
std::string group_key(const CountRequest& rq, const Grouping& g, bool summary, std::vector<Oid>& t,
                      std::vector<Datum>& v) {
    switch (g.kind) {
        case Grouping::None: return "NULL::pg_catalog.text";
        case Grouping::Dimension:
            return fmt::format("CAST({} AS pg_catalog.text)", bridge::quote_ident(rq.cfg.dims[g.dim]));
        case Grouping::Bucket:
            t.push_back(INT8OID);
            v.push_back(Int64GetDatum(g.step));
            return fmt::format("CAST(lifecycle.count_bucket({}, ${}) AS pg_catalog.text)",
                               summary ? std::string("lc_bucket") : bridge::quote_ident(rq.cfg.time_column), t.size());
    }
    return "NULL";
}

void run_groups(const std::string& sql, const std::vector<Oid>& types, const std::vector<Datum>& values, Groups& out) {
    /* Planned for the values at hand each time: a generic plan cannot know how
     * narrow a time range or how rare a value is. */
    SPIPlanPtr plan = cached_plan(sql, static_cast<int>(types.size()), types.data(), CURSOR_OPT_CUSTOM_PLAN);
    int rc = bridge::execute_plan(plan, values.data(), nullptr, true, 0);
    if (rc != SPI_OK_SELECT)
        throw Error(sqlstate::internal_error, fmt::format("pg_lifecycle: count query failed: {}", sql));
    for (uint64 i = 0; i < bridge::processed_rows(); ++i) {
        out.emplace_back(bridge::result_text(i, 1), bridge::result_int64(i, 2).value_or(0));
    }
}

/* count(*) of the table itself in [lo, hi), grouped, as the caller: RLS,
 * column privileges and soft delete's own visibility rules all apply. */
void scan_table(const CountRequest& rq, const Grouping& g, std::optional<TimestampTz> lo, std::optional<TimestampTz> hi,
                Groups& out) {
    std::vector<Oid> t = rq.types;
    std::vector<Datum> v = rq.values;
    std::string key = group_key(rq, g, false, t, v);
    std::string sql = fmt::format("SELECT {}, pg_catalog.count(*) FROM {} WHERE {}", key, rq.table, rq.where);
    std::string tcol = rq.cfg.has_time() ? bridge::quote_ident(rq.cfg.time_column) : std::string();
    if (lo) {
        t.push_back(TIMESTAMPTZOID);
        v.push_back(TimestampTzGetDatum(*lo));
        sql += fmt::format(" AND {} >= ${}", tcol, t.size());
    }
    if (hi) {
        t.push_back(TIMESTAMPTZOID);
        v.push_back(TimestampTzGetDatum(*hi));
        sql += fmt::format(" AND {} < ${}", tcol, t.size());
    }
    if (rq.soft) sql += fmt::format(" AND {} IS NULL", softdelete::deleted_at_column);
    sql += " GROUP BY 1";
    run_groups(sql, t, v, out);
}

/* The summary that answers a request: the smallest of the lattice whose
 * dimensions cover the filter's (and the grouped one), a timed one when the
 * request needs buckets; nullptr when none does (the table then counts). */
const Config::Summary* pick_summary(const CountRequest& rq, const Grouping& g) {
    std::vector<size_t> needed;
    for (const auto& c : rq.filter.conditions) needed.push_back(c.dimension);
    if (g.kind == Grouping::Dimension) needed.push_back(g.dim);
    bool timed = rq.ranged() || g.kind == Grouping::Bucket;
    const Config::Summary* best = nullptr;
    auto rank = [](const Config::Summary& s) { return (s.timed ? 0 : 1000) + s.dims.size(); };
    for (const auto& s : rq.cfg.lattice) {
        if (timed && !s.timed) continue;
        bool covers = std::all_of(needed.begin(), needed.end(),
                                  [&](size_t d) { return std::find(s.dims.begin(), s.dims.end(), d) != s.dims.end(); });
        if (covers && (best == nullptr || rank(s) < rank(*best))) best = &s;
    }
    return best;
}

/* A range of one level of a summary: [lo, hi) of lc_bucket (nullopt: open). */
struct Piece {
    int level;
    std::optional<TimestampTz> lo, hi;
};

/* The rows of summary s for these pieces (all of level 0 when there are
 * none and the request is not by buckets, all of level 1 when it is), plus
 * the visible deltas, in [delta_lo, delta_hi) when bounded — as the counts'
 * owner. */
void read_summaries(const CountRequest& rq, const Grouping& g, const Config::Summary& s,
                    const std::vector<Piece>& pieces, bool bounded, std::optional<TimestampTz> delta_lo,
                    std::optional<TimestampTz> delta_hi, Groups& out) {
    std::vector<Oid> t = rq.types;
    std::vector<Datum> v = rq.values;
    std::string key = group_key(rq, g, true, t, v);
    std::string cond = rq.where;
    if (rq.soft) cond += " AND lc_live";
    auto bound = [&](std::optional<TimestampTz> lo, std::optional<TimestampTz> hi) {
        std::string c;
        if (lo) {
            t.push_back(TIMESTAMPTZOID);
            v.push_back(TimestampTzGetDatum(*lo));
            c += fmt::format(" AND lc_bucket >= ${}", t.size());
        }
        if (hi) {
            t.push_back(TIMESTAMPTZOID);
            v.push_back(TimestampTzGetDatum(*hi));
            c += fmt::format(" AND lc_bucket < ${}", t.size());
        }
        return c;
    };
    std::string sql;
    std::string table = rq.cfg.summary(s.no);
    auto branch = [&](int level, const std::string& range) {
        if (!sql.empty()) sql += " UNION ALL ";
        sql += fmt::format("SELECT {}, pg_catalog.sum(lc_n)::bigint FROM {} WHERE lc_level = {} AND {}{} GROUP BY 1",
                           key, table, level, cond, range);
    };
    if (!bounded) {
        branch(g.kind == Grouping::Bucket ? 1 : 0, "");
    } else {
        for (const auto& p : pieces) branch(p.level, bound(p.lo, p.hi));
    }
    std::string delta_range = bounded ? bound(delta_lo, delta_hi) : std::string();
    sql += fmt::format(" UNION ALL SELECT {}, pg_catalog.sum(lc_delta)::bigint FROM {} WHERE {}{} GROUP BY 1", key,
                       rq.cfg.delta(), cond, delta_range);
    bridge::AsRole as_owner(counts_owner(rq.cfg), SECURITY_RESTRICTED_OPERATION);
    run_groups(sql, t, v, out);
}

/* The first bucket boundary (of width `stride`) at or after ts. */
TimestampTz ceil_bucket(TimestampTz ts, int64 stride) {
    TimestampTz start = bucket_start(ts, stride);
    return start == ts ? ts : start + stride;
}

/* The visible deltas of a Citus table, in [lo, hi) when bounded, read as
 * the caller: through Citus, over the connections of the caller's
 * transaction (which wrote its own rows), so what a count(*) there sees. */
void read_deltas(const CountRequest& rq, const Grouping& g, bool bounded, std::optional<TimestampTz> lo,
                 std::optional<TimestampTz> hi, Groups& out) {
    std::vector<Oid> t = rq.types;
    std::vector<Datum> v = rq.values;
    std::string key = group_key(rq, g, true, t, v);
    std::string cond = rq.where;
    if (rq.soft) cond += " AND lc_live";
    if (bounded && lo) {
        t.push_back(TIMESTAMPTZOID);
        v.push_back(TimestampTzGetDatum(*lo));
        cond += fmt::format(" AND lc_bucket >= ${}", t.size());
    }
    if (bounded && hi) {
        t.push_back(TIMESTAMPTZOID);
        v.push_back(TimestampTzGetDatum(*hi));
        cond += fmt::format(" AND lc_bucket < ${}", t.size());
    }
    run_groups(fmt::format("SELECT {}, pg_catalog.sum(lc_delta)::bigint FROM {} WHERE {} GROUP BY 1", key,
                           rq.cfg.delta(), cond),
               t, v, out);
}

/* count_groups of a Citus table: its deltas (by bucket, compacted by the
 * fold to one row per group and bucket on each shard) for the whole buckets
 * of the range, the table for the rest of the range at either edge (at most
 * one bucket each); the table alone under row-level security or when the
 * caller may not read the deltas. */
Groups count_groups_citus(const CountRequest& rq, const Grouping& g, bool rls) {
    Groups out;
    if (rls || !citus::caller_reads_counts(rq.cfg)) {
        scan_table(rq, g, rq.since, rq.until, out);
        return out;
    }
    if (!rq.ranged()) {
        read_deltas(rq, g, false, std::nullopt, std::nullopt, out);
        return out;
    }
    int64 fine = rq.cfg.fine_usecs();
    std::optional<TimestampTz> lo, hi;
    if (rq.since) {
        if (*rq.since == DT_NOEND) {
            scan_table(rq, g, rq.since, rq.until, out);
            return out;
        }
        lo = *rq.since == DT_NOBEGIN ? *rq.since : ceil_bucket(*rq.since, fine);
    }
    if (rq.until) hi = *rq.until == DT_NOEND ? *rq.until : bucket_start(*rq.until, fine);
    if (lo && hi && *lo >= *hi) {
        scan_table(rq, g, rq.since, rq.until, out);
        return out;
    }
    read_deltas(rq, g, true, lo, hi, out);
    if (rq.since && *rq.since < *lo) scan_table(rq, g, rq.since, lo, out);
    if (rq.until && *hi < *rq.until) scan_table(rq, g, hi, rq.until, out);
    return out;
}

/* The partial groups of a count: the chosen summary — its buckets for the
 * whole buckets of the range, its fine buckets for the rest of the range but
 * the parts of a fine bucket at either edge — the table for those parts
 * (and for everything when RLS applies, or when no summary covers the
 * filter).  Rows at +/-infinity have "buckets" of their own (count_bucket
 * leaves infinite values as they are), so open ends include them. */
Groups count_groups(const CountRequest& rq, const Grouping& g) {
    Groups out;
    if (rq.since && rq.until && *rq.since >= *rq.until) return out;
    /* Row-level security: the summaries cannot tell which rows the caller may
     * see, so count what count(*) would, exactly (and at its cost). */
    int rls = pg_call([relid = rq.relid] { return check_enable_rls(relid, InvalidOid, false); });
    if (rq.citus) return count_groups_citus(rq, g, rls == RLS_ENABLED);
    const Config::Summary* s = rls == RLS_ENABLED ? nullptr : pick_summary(rq, g);
    if (s == nullptr) {
        scan_table(rq, g, rq.since, rq.until, out);
        return out;
    }
    if (!rq.ranged()) {
        read_summaries(rq, g, *s, {}, false, std::nullopt, std::nullopt, out);
        return out;
    }
    int64 coarse = rq.cfg.bucket_usecs;
    int64 fine = rq.cfg.fine_usecs();
    /* [lo_f, lo_c) fine buckets, [lo_c, hi_c) buckets, [hi_c, hi_f) fine
     * buckets; [since, lo_f) and [hi_f, until) in the table. */
    std::optional<TimestampTz> lo_c, lo_f, hi_c, hi_f;
    if (rq.since) {
        TimestampTz since = *rq.since;
        if (since == DT_NOEND) {
            /* only rows at infinity: the time column's index finds them */
            scan_table(rq, g, rq.since, rq.until, out);
            return out;
        }
        lo_c = since == DT_NOBEGIN ? since : ceil_bucket(since, coarse);
        lo_f = since == DT_NOBEGIN ? since : ceil_bucket(since, fine);
    }
    if (rq.until) {
        TimestampTz until = *rq.until; /* not -infinity: since >= until returned above */
        hi_c = until == DT_NOEND ? until : bucket_start(until, coarse);
        hi_f = until == DT_NOEND ? until : bucket_start(until, fine);
    }
    if (lo_f && hi_f && *lo_f >= *hi_f) {
        /* inside one fine bucket */
        scan_table(rq, g, rq.since, rq.until, out);
        return out;
    }
    std::vector<Piece> pieces;
    if (!(lo_c && hi_c && *lo_c >= *hi_c)) {
        pieces.push_back({1, lo_c, hi_c});
        if (lo_f && *lo_f < *lo_c) pieces.push_back({2, lo_f, lo_c});
        if (hi_f && *hi_c < *hi_f) pieces.push_back({2, hi_c, hi_f});
    } else {
        pieces.push_back({rq.cfg.has_fine() ? 2 : 1, lo_f, hi_f});
    }
    read_summaries(rq, g, *s, pieces, true, lo_f, hi_f, out);
    if (rq.since && *rq.since < *lo_f) scan_table(rq, g, rq.since, lo_f, out);
    if (rq.until && *hi_f < *rq.until) scan_table(rq, g, hi_f, rq.until, out);
    return out;
}

/* Adds up partial groups by key. */
std::map<std::optional<std::string>, int64> merge_groups(const Groups& groups) {
    std::map<std::optional<std::string>, int64> out;
    for (const auto& [k, n] : groups) out[k] += n;
    return out;
}

/* The arguments every count function shares: tbl (0), filter (filter_arg),
 * since and until (the two after it).  Checks them and the configuration;
 * `validate` checks the function's own arguments and the caller's SELECT
 * privilege. */
CountRequest prepare_count(FunctionCallInfo fcinfo, int filter_arg,
                           const std::function<void(CountRequest&)>& validate) {
    bridge::require_arg(fcinfo, 0, "tbl");
    bridge::require_arg(fcinfo, filter_arg, "filter");
    CountRequest rq;
    rq.relid = PG_GETARG_OID(0);
    counted_table_kind(rq.relid);
    rq.table = relation_display_name(rq.relid);
    std::string filter_text = pg_call([fcinfo, filter_arg] {
        Jsonb* jb = PG_GETARG_JSONB_P(filter_arg);
        return std::string(JsonbToCString(nullptr, &jb->root, VARSIZE(jb)));
    });
    if (!PG_ARGISNULL(filter_arg + 1)) rq.since = PG_GETARG_TIMESTAMPTZ(filter_arg + 1);
    if (!PG_ARGISNULL(filter_arg + 2)) rq.until = PG_GETARG_TIMESTAMPTZ(filter_arg + 2);

    auto cfg = load_config(rq.relid);
    if (!cfg) {
        throw Error(sqlstate::object_not_in_prerequisite_state,
                    fmt::format("the rows of table {} are not counted", rq.table), {},
                    fmt::format("Call lifecycle.count_enable('{}') first (its owner can).", rq.table));
    }
    rq.cfg = *cfg;
    rq.filter = parse_filter(filter_text, rq.cfg.dims, rq.table);
    if (rq.ranged() && !rq.cfg.has_time()) {
        throw Error(sqlstate::invalid_parameter_value,
                    fmt::format("table {} is counted without a time column: since and until cannot be used", rq.table),
                    {}, "Enable it with lifecycle.count_enable(..., time_column => ...) to count time ranges.");
    }
    validate(rq);
    rq.soft = softdelete::enabled_on(rq.relid); /* then only live rows count */
    rq.citus = citus::kind(rq.relid) != citus::Kind::none;
    rq.cfg.citus_coarse = rq.citus;
    rq.where = filter_sql(rq.cfg, rq.filter, rq.relid, 1, rq.types, rq.values);
    return rq;
}

}  // namespace

/* lifecycle.count(tbl regclass, filter jsonb, since timestamptz, until timestamptz) RETURNS bigint */
LIFECYCLE_FUNCTION(lifecycle_count) {
    bridge::SpiConnection spi;
    CountRequest rq = prepare_count(
        fcinfo, 1, [](CountRequest& r) { require_select(r.relid, r.cfg, r.filter, r.ranged(), r.table); });
    int64 total = 0;
    for (const auto& [key, n] : count_groups(rq, Grouping{})) total += n;
    PG_RETURN_INT64(total);
}

/* lifecycle.count_by(tbl regclass, dimension name, filter jsonb, since, until)
 *   RETURNS TABLE(value text, count bigint) — one row per value with count > 0,
 * ordered by the value (the column type's order, NULL last). */
LIFECYCLE_FUNCTION(lifecycle_count_by) {
    bridge::require_arg(fcinfo, 1, "dimension");
    std::string dimension = NameStr(*PG_GETARG_NAME(1));
    std::vector<std::pair<std::optional<std::string>, int64>> rows;
    {
        bridge::SpiConnection spi;
        Grouping g;
        g.kind = Grouping::Dimension;
        CountRequest rq = prepare_count(fcinfo, 2, [&](CountRequest& r) {
            auto it = std::find(r.cfg.dims.begin(), r.cfg.dims.end(), dimension);
            if (it == r.cfg.dims.end()) {
                throw Error(sqlstate::invalid_parameter_value,
                            fmt::format("\"{}\" is not a dimension of table {}", dimension, r.table), {},
                            r.cfg.dims.empty()
                                ? fmt::format("Table {} is counted without dimensions.", r.table)
                                : fmt::format("The dimensions of {} are: {}.", r.table, join_names(r.cfg.dims)));
            }
            g.dim = static_cast<size_t>(it - r.cfg.dims.begin());
            require_select(r.relid, r.cfg, r.filter, r.ranged(), r.table, "count_by", dimension);
        });
        auto merged = merge_groups(count_groups(rq, g));
        /* Values equal for the column's type but printed differently (numeric
         * 1.0 and 1.00, say) are one group, as in GROUP BY: regroup the text
         * keys by the type's own equality, ordered by its order. */
        Oid type = pg_call([&] { return getBaseType(get_atttype(rq.relid, get_attnum(rq.relid, dimension.c_str()))); });
        std::string type_sql = pg_call([type] { return std::string(format_type_be_qualified(type)); });
        std::vector<Datum> keys, counts;
        std::vector<bool> key_nulls;
        for (const auto& [k, n] : merged) {
            if (n == 0) continue;
            keys.push_back(k ? bridge::text_datum(*k) : (Datum)0);
            key_nulls.push_back(!k);
            counts.push_back(Int64GetDatum(n));
        }
        if (!keys.empty()) {
            Datum arrays[2] = {
                pg_call([&] {
                    int dims[1] = {static_cast<int>(keys.size())};
                    int lbs[1] = {1};
                    bool* nulls = static_cast<bool*>(palloc(sizeof(bool) * keys.size()));
                    for (size_t i = 0; i < keys.size(); ++i) nulls[i] = key_nulls[i];
                    return PointerGetDatum(
                        construct_md_array(keys.data(), nulls, 1, dims, lbs, TEXTOID, -1, false, TYPALIGN_INT));
                }),
                pg_call([&] {
                    return PointerGetDatum(construct_array(counts.data(), static_cast<int>(counts.size()), INT8OID, 8,
                                                           FLOAT8PASSBYVAL, TYPALIGN_DOUBLE));
                })};
            std::vector<Oid> t = {TEXTARRAYOID, INT8ARRAYOID};
            std::vector<Datum> v = {arrays[0], arrays[1]};
            std::string sql = fmt::format(
                "SELECT (pg_catalog.array_agg(k))[1], pg_catalog.sum(n)::bigint FROM ROWS FROM (pg_catalog.unnest($1), "
                "pg_catalog.unnest($2)) u(k, n) "
                "GROUP BY CAST(k AS {0}) HAVING pg_catalog.sum(n) > 0 ORDER BY CAST(k AS {0})",
                type_sql);
            Groups regrouped;
            {
                /* The type's input, equality and order run as the counts' owner. */
                bridge::AsRole as_owner(counts_owner(rq.cfg), SECURITY_RESTRICTED_OPERATION);
                run_groups(sql, t, v, regrouped);
            }
            rows.assign(regrouped.begin(), regrouped.end());
        }
    }
    auto* rsinfo = reinterpret_cast<ReturnSetInfo*>(fcinfo->resultinfo);
    pg_call([fcinfo] { InitMaterializedSRF(fcinfo, 0); });
    for (const auto& [k, n] : rows) {
        Datum values[2] = {k ? bridge::text_datum(*k) : (Datum)0, Int64GetDatum(n)};
        bool nulls[2] = {!k, false};
        pg_call([&] { tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls); });
    }
    return (Datum)0;
}

namespace {
constexpr int64 max_series_buckets = 1000000;

[[noreturn]] void too_many_buckets(int64 n) {
    throw Error(ERRCODE_PROGRAM_LIMIT_EXCEEDED,
                fmt::format("lifecycle.count_series would return {} buckets, more than {}", n, max_series_buckets), {},
                "Narrow the range with since and until, or use a larger step.");
}
}  // namespace

/* lifecycle.count_series(tbl regclass, step interval, filter jsonb, since, until)
 *   RETURNS TABLE(bucket_start timestamptz, count bigint) — every bucket of
 * width `step` (aligned like lifecycle.count_bucket, on 2000-01-01 00:00 UTC)
 * from the one holding `since` (or the first row) to the one holding the last
 * instant before `until` (or the last row), zeros included; then rows at
 * +/-infinity and with a NULL time, as buckets of their own, when any. */
LIFECYCLE_FUNCTION(lifecycle_count_series) {
    bridge::require_arg(fcinfo, 1, "step");
    Interval* step_iv = PG_GETARG_INTERVAL_P(1);
    std::vector<std::pair<std::optional<TimestampTz>, int64>> rows;
    {
        bridge::SpiConnection spi;
        Grouping g;
        g.kind = Grouping::Bucket;
        CountRequest rq = prepare_count(fcinfo, 2, [&](CountRequest& r) {
            if (!r.cfg.has_time()) {
                throw Error(sqlstate::invalid_parameter_value,
                            fmt::format("table {} is counted without a time column: it has no series", r.table), {},
                            "Enable it with lifecycle.count_enable(..., time_column => ...) to count time ranges.");
            }
            std::string bucket = r.cfg.bucket_text;
            int64 usecs = static_cast<int64>(step_iv->day) * USECS_PER_DAY + step_iv->time;
            if (step_iv->month != 0 || usecs <= 0 || usecs % r.cfg.bucket_usecs != 0) {
                throw Error(sqlstate::invalid_parameter_value,
                            fmt::format("step must be a positive whole multiple of the bucket of table {} ({})",
                                        r.table, bucket),
                            "Series are added up from the table's buckets; months vary in length.",
                            fmt::format("Use '{}' or a multiple of it, such as '1 day' for hourly buckets.", bucket));
            }
            g.step = usecs;
            require_select(r.relid, r.cfg, r.filter, true, r.table, "count_series");
        });
        bool finite_since = rq.since && !TIMESTAMP_NOT_FINITE(*rq.since);
        bool finite_until = rq.until && !TIMESTAMP_NOT_FINITE(*rq.until);
        if (finite_since && finite_until && *rq.since < *rq.until) {
            int64 n = (bucket_start(*rq.until - 1, g.step) - bucket_start(*rq.since, g.step)) / g.step + 1;
            if (n > max_series_buckets) too_many_buckets(n);
        }
        std::map<TimestampTz, int64> buckets;
        int64 null_bucket = 0;
        for (const auto& [k, n] : merge_groups(count_groups(rq, g))) {
            if (!k) {
                null_bucket += n;
                continue;
            }
            TimestampTz ts = pg_call([&] {
                return DatumGetTimestampTz(DirectFunctionCall3(timestamptz_in, CStringGetDatum(k->c_str()),
                                                               ObjectIdGetDatum(InvalidOid), Int32GetDatum(-1)));
            });
            buckets[ts] += n;
        }
        std::optional<TimestampTz> first, last;
        for (const auto& [ts, n] : buckets) {
            if (TIMESTAMP_NOT_FINITE(ts) || n == 0) continue;
            if (!first) first = ts;
            last = ts;
        }
        if (finite_since && (first || finite_until)) first = bucket_start(*rq.since, g.step);
        if (finite_until && (last || finite_since)) last = bucket_start(*rq.until - 1, g.step);
        if (rq.since && rq.until && *rq.since >= *rq.until) first = last = std::nullopt;
        auto infinite = [&](TimestampTz ts) {
            auto it = buckets.find(ts);
            if (it != buckets.end() && it->second != 0) rows.emplace_back(ts, it->second);
        };
        infinite(DT_NOBEGIN);
        if (first && last && *first <= *last) {
            if ((*last - *first) / g.step + 1 > max_series_buckets) too_many_buckets((*last - *first) / g.step + 1);
            for (TimestampTz ts = *first; ts <= *last; ts += g.step) {
                auto it = buckets.find(ts);
                rows.emplace_back(ts, it == buckets.end() ? 0 : it->second);
            }
        }
        infinite(DT_NOEND);
        if (null_bucket != 0) rows.emplace_back(std::nullopt, null_bucket);
    }
    auto* rsinfo = reinterpret_cast<ReturnSetInfo*>(fcinfo->resultinfo);
    pg_call([fcinfo] { InitMaterializedSRF(fcinfo, 0); });
    for (const auto& [ts, n] : rows) {
        Datum values[2] = {ts ? TimestampTzGetDatum(*ts) : (Datum)0, Int64GetDatum(n)};
        bool nulls[2] = {!ts, false};
        pg_call([&] { tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls); });
    }
    return (Datum)0;
}

/* lifecycle.count_estimate(query text) RETURNS bigint */
LIFECYCLE_FUNCTION(lifecycle_count_estimate) {
    bridge::require_arg(fcinfo, 0, "query");
    std::string query = bridge::text_arg(fcinfo, 0);
    bool is_select = pg_call([&] {
        List* stmts = raw_parser(query.c_str(), RAW_PARSE_DEFAULT);
        if (list_length(stmts) != 1) return false;
        Node* stmt = linitial_node(RawStmt, stmts)->stmt;
        if (!IsA(stmt, SelectStmt)) return false;
        auto* select = castNode(SelectStmt, stmt);
        if (select->intoClause != nullptr) return false;
        if (select->withClause != nullptr) {
            ListCell* lc;
            foreach (lc, select->withClause->ctes) {
                auto* cte = lfirst_node(CommonTableExpr, lc);
                if (!IsA(cte->ctequery, SelectStmt)) return false;
            }
        }
        return true;
    });
    if (!is_select) {
        throw Error(sqlstate::invalid_parameter_value, "count_estimate needs one SELECT statement", {},
                    "Pass the query whose rows you want estimated, such as 'SELECT * FROM audit_log WHERE ...'.");
    }
    bridge::SpiConnection spi;
    {
        /* The caller's query, planned with the caller's search_path and rights. */
        bridge::CallersSearchPath callers;
        bridge::execute_sql("EXPLAIN (FORMAT JSON) " + query, false);
    }
    auto plan = bridge::processed_rows() > 0 ? bridge::result_text(0, 1) : std::nullopt;
    auto rows = plan ? explain_plan_rows(*plan) : std::nullopt;
    if (!rows) throw Error(sqlstate::internal_error, "EXPLAIN gave no row estimate");
    PG_RETURN_INT64(static_cast<int64>(std::llround(*rows)));
}

/* lifecycle.count_bucket(ts timestamptz, width_usecs bigint) RETURNS timestamptz */
LIFECYCLE_FUNCTION(lifecycle_count_bucket) {
    int64 stride = PG_GETARG_INT64(1);
    if (stride <= 0) throw Error(sqlstate::invalid_parameter_value, "bucket width must be positive");
    PG_RETURN_TIMESTAMPTZ(bucket_start(PG_GETARG_TIMESTAMPTZ(0), stride));
}

namespace pg_lifecycle::counts {

/* A trigger of ours was created on `rel` by somebody else than our own code
 * (pg_restore of a schema-only or --schema dump, which has our triggers but
 * not our configuration): attach the counts again under the trigger's id, from
 * its arguments (id, time column, bucket, dimensions), and fill the summaries
 * from the table's rows.  Refused (55000) when that cannot be done. */
void reattach_after_restore(Oid rel, const std::string& trigger_name, const std::vector<std::string>& args) {
    if (own_ddl_depth > 0 || is_counted(rel)) return; /* ours, or attached already */
    /* A Citus shard (or shell table) of a counted table: Citus copied the
     * trigger, which finds its deltas by itself (citus.cpp). */
    if (softdelete::citus::copy_of_citus_table(rel)) return;
    std::string table = relation_display_name(rel);
    int id = 0;
    if (std::sscanf(trigger_name.c_str(), "lifecycle_count_%d_", &id) != 1 || id <= 0) return;
    bridge::SpiConnection spi;
    /* A partition of a table counted under that id: register the partition. */
    if (auto root = load_config_by_id(id); root && root->relid != rel) {
        bool partition_of = pg_call([rel, r = root->relid] {
            return get_rel_relispartition(rel) && list_member_oid(get_partition_ancestors(rel), r);
        });
        if (!partition_of) {
            throw Error(sqlstate::object_not_in_prerequisite_state,
                        fmt::format("trigger \"{}\" on table {} belongs to the counts of table {}", trigger_name, table,
                                    relation_display_name(root->relid)),
                        "pg_lifecycle's count ids differ between the dumped database and this one.",
                        "Restore a full dump (which has the extension's configuration), or drop the trigger and call "
                        "lifecycle.count_enable on the table.");
        }
        register_part(*root, rel);
        return;
    }
    if (args.size() < 3) {
        throw Error(
            sqlstate::object_not_in_prerequisite_state,
            fmt::format("table {} has pg_lifecycle's count trigger \"{}\" but is not counted", table, trigger_name),
            "Its configuration was not restored (a schema-only or partial dump?).",
            fmt::format("Drop its lifecycle_count_{}_* triggers and call lifecycle.count_enable('{}').", id, table));
    }
    bridge::require_owner(rel, "count its rows");
    Config cfg;
    cfg.id = id;
    cfg.relid = rel;
    cfg.time_column = args[1];
    cfg.bucket_text = args[2];
    for (size_t i = 3; i < args.size(); ++i) cfg.dims.push_back(args[i]);
    if (cfg.has_time()) cfg.bucket_usecs = bucket_usecs_of(cfg.bucket_text);
    cfg.live_column = pg_call([rel] { return get_attnum(rel, softdelete::deleted_at_column); }) > 0;

    index_high_dimensions(cfg, choose_lattice(cfg));
    OwnDdl own;
    {
        static bridge::Statement insert(
            "INSERT INTO lifecycle.count_tables (id, tbl, dimensions, time_column, bucket, live_column, lattice) "
            "VALUES ($1, $2, $3::pg_catalog.name[], $4, $5::pg_catalog.interval, $6, $7)",
            {INT4OID, REGCLASSOID, TEXTARRAYOID, NAMEOID, TEXTOID, BOOLOID, TEXTARRAYOID});
        Datum dims = pg_call([&cfg] {
            Datum* elems = static_cast<Datum*>(palloc(sizeof(Datum) * (cfg.dims.size() + 1)));
            for (size_t i = 0; i < cfg.dims.size(); ++i) elems[i] = CStringGetTextDatum(cfg.dims[i].c_str());
            return PointerGetDatum(
                construct_array(elems, static_cast<int>(cfg.dims.size()), TEXTOID, -1, false, TYPALIGN_INT));
        });
        Datum values[7] = {Int32GetDatum(id),
                           ObjectIdGetDatum(rel),
                           dims,
                           cfg.has_time() ? pg_call([&] {
                               return DirectFunctionCall1(namein, CStringGetDatum(cfg.time_column.c_str()));
                           })
                                          : (Datum)0,
                           cfg.has_time() ? bridge::text_datum(cfg.bucket_text) : (Datum)0,
                           BoolGetDatum(cfg.live_column),
                           text_array(cfg.lattice_text())};
        char nulls[8] = "       ";
        if (!cfg.has_time()) nulls[3] = nulls[4] = 'n';
        bridge::AsRole ext(bridge::extension_owner());
        try {
            insert.execute(values, nulls, false);
        } catch (const bridge::PgError& e) {
            if (e.sqlerrcode() != ERRCODE_UNIQUE_VIOLATION) throw;
            throw Error(
                sqlstate::object_not_in_prerequisite_state,
                fmt::format("cannot attach the counts of table {}: count id {} is in use here", table, id),
                "The dump's count ids clash with this database's.",
                fmt::format("Drop the table's lifecycle_count_{}_* triggers and call lifecycle.count_enable('{}').", id,
                            table));
        }
        /* Keep the identity ahead of the ids taken by hand. */
        bridge::execute_sql(
            "SELECT pg_catalog.setval(pg_catalog.pg_get_serial_sequence('lifecycle.count_tables', "
            "'id'), pg_catalog.max(id)) FROM lifecycle.count_tables",
            false);
        if (lifecycle_relation(cfg.table_name("delta")) == InvalidOid) {
            create_counts_tables(cfg, bridge::relation_owner(rel));
        }
    }
    registry_changed();
    lock_against_writers(cfg);
    rebuild(cfg);
    pg_call([&table] {
        ereport(WARNING, (errcode(ERRCODE_WARNING),
                          errmsg("pg_lifecycle attached the counts of table %s again from its trigger", table.c_str()),
                          errdetail("The table's counting configuration was not in the restored data; the counts "
                                    "were rebuilt from the table's rows.")));
    });
}

}  // namespace pg_lifecycle::counts

/* lifecycle._count_relayout() RETURNS void — run once by the update script
 * from 0.1: each counted table gets its lattice of summaries (chosen from its
 * dimensions' measured cardinality) in place of count_N_bucket and
 * count_N_total, filled from its rows under a SHARE lock; its deltas, whose
 * buckets were the coarse ones, are replaced by the rebuild. */
LIFECYCLE_FUNCTION(lifecycle_count_relayout) {
    bridge::SpiConnection spi;
    /* The new tables belong to the counted tables, not to the extension
     * (like the ones count_enable creates): no membership is recorded. */
    struct NotAMember {
        bool saved = creating_extension;
        NotAMember() { creating_extension = false; }
        ~NotAMember() { creating_extension = saved; }
    } not_a_member;
    OwnDdl own;
    for (Config cfg : load_all_configs()) {
        if (pg_call([&] { return get_rel_relkind(cfg.relid); }) == '\0') continue;
        lock_against_writers(cfg);
        index_high_dimensions(cfg, choose_lattice(cfg));
        {
            bridge::AsRole ext(bridge::extension_owner());
            bridge::execute_sql(fmt::format("DROP TABLE IF EXISTS lifecycle.{}, lifecycle.{}", cfg.table_name("bucket"),
                                            cfg.table_name("total")),
                                false);
            static bridge::Statement update("UPDATE lifecycle.count_tables SET lattice = $2 WHERE id = $1",
                                            {INT4OID, TEXTARRAYOID});
            Datum values[2] = {Int32GetDatum(cfg.id), text_array(cfg.lattice_text())};
            update.execute(values, nullptr, false);
            create_counts_tables(cfg, bridge::relation_owner(cfg.relid), false);
        }
        registry_changed();
        rebuild(cfg);
    }
    PG_RETURN_VOID();
}
