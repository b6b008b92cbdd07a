/*
 * api.cpp — the SQL functions of exact counts (SPEC.md §4):
 * lifecycle.count_enable, count_disable, count and count_estimate.
 */
#include "bridge/function.hpp"
#include "counts/counts.hpp"
#include "counts/filter.hpp"

#include <cmath>

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
        throw Error(make_sqlstate("42809"), fmt::format("\"{}\" is not a table", relation_display_name(relid)), {},
                    "Exact counts work on plain and partitioned tables.");
    }
    return kind;
}

AttrNumber column_attnum(Oid relid, const std::string& column, const std::string& table) {
    AttrNumber att = pg_call([&] { return get_attnum(relid, column.c_str()); });
    if (att == InvalidAttrNumber) {
        throw Error(sqlstate::undefined_column, fmt::format("column \"{}\" of relation {} does not exist", column, table));
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
            ereport(ERROR, (errcode(ERRCODE_INVALID_PARAMETER_VALUE), errmsg("%s must be a one-dimensional array", what)));
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

void create_counts_tables(const Config& cfg, Oid table_owner) {
    std::string base = relation_display_name(cfg.relid);
    std::string dims = cfg.dim_list();
    std::string sep = dims.empty() ? "" : ", ";
    std::string owner = bridge::quote_ident(pg_call([table_owner] { return std::string(GetUserNameFromId(table_owner, false)); }));
    auto run = [](const std::string& sql) { bridge::execute_sql(sql, false); };

    /* CREATE TABLE AS copies each dimension's type, typmod and collation, so
     * equality on the copies is equality on the table's columns. */
    run(fmt::format("CREATE TABLE {} WITH (autovacuum_vacuum_scale_factor = 0, autovacuum_vacuum_threshold = 1000, "
                    "autovacuum_vacuum_insert_scale_factor = 0, autovacuum_vacuum_insert_threshold = 1000) AS "
                    "SELECT {}{}{}true AS lc_live, 0::bigint AS lc_delta FROM {} WITH NO DATA",
                    cfg.delta(), dims, sep, cfg.has_time() ? "NULL::pg_catalog.timestamptz AS lc_bucket, " : "", base));
    run(fmt::format("ALTER TABLE {} ALTER lc_live SET NOT NULL, ALTER lc_delta SET NOT NULL", cfg.delta()));
    auto literal = [](const std::string& text) {
        return pg_call([&] {
            char* q = quote_literal_cstr(text.c_str());
            std::string out(q);
            pfree(q);
            return out;
        });
    };
    run(fmt::format("COMMENT ON TABLE {} IS {}", cfg.delta(),
                    literal(fmt::format("pg_lifecycle: count deltas of {}, folded by the worker", base))));
    if (cfg.has_time()) {
        run(fmt::format("CREATE TABLE {} WITH (fillfactor = 70) AS SELECT {}{}NULL::pg_catalog.timestamptz AS lc_bucket, "
                        "true AS lc_live, 0::bigint AS lc_n FROM {} WITH NO DATA",
                        cfg.bucket(), dims, sep, base));
        run(fmt::format("ALTER TABLE {} ALTER lc_live SET NOT NULL, ALTER lc_n SET NOT NULL", cfg.bucket()));
        run(fmt::format("CREATE UNIQUE INDEX ON {} ({}{}lc_bucket, lc_live) NULLS NOT DISTINCT", cfg.bucket(), dims, sep));
        /* Covering indexes, one per dimension and one on the bucket alone, so
         * that a ranged count is an index-only scan whatever it filters on. */
        for (size_t i = 0; i < cfg.dims.size(); ++i) {
            run(fmt::format("CREATE INDEX ON {} ({}, lc_bucket) INCLUDE ({}{}lc_live, lc_n)", cfg.bucket(),
                            bridge::quote_ident(cfg.dims[i]), dims, sep));
        }
        run(fmt::format("CREATE INDEX ON {} (lc_bucket) INCLUDE ({}{}lc_live, lc_n)", cfg.bucket(), dims, sep));
        run(fmt::format("ALTER TABLE {} OWNER TO {}", cfg.bucket(), owner));
    }
    run(fmt::format("CREATE TABLE {} WITH (fillfactor = 70) AS SELECT {}{}true AS lc_live, 0::bigint AS lc_n FROM {} "
                    "WITH NO DATA",
                    cfg.total(), dims, sep, base));
    run(fmt::format("ALTER TABLE {} ALTER lc_live SET NOT NULL, ALTER lc_n SET NOT NULL", cfg.total()));
    run(fmt::format("CREATE UNIQUE INDEX ON {} ({}{}lc_live) NULLS NOT DISTINCT", cfg.total(), dims, sep));
    for (size_t i = 1; i < cfg.dims.size(); ++i) {
        run(fmt::format("CREATE INDEX ON {} ({})", cfg.total(), bridge::quote_ident(cfg.dims[i])));
    }
    run(fmt::format("ALTER TABLE {} OWNER TO {}", cfg.delta(), owner));
    run(fmt::format("ALTER TABLE {} OWNER TO {}", cfg.total(), owner));
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
    if (!PG_ARGISNULL(2)) {
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

    bridge::SpiConnection spi;
    if (load_config(relid)) {
        throw Error(sqlstate::wrong_object_state, fmt::format("the rows of table {} are already counted", table), {},
                    fmt::format("To change dimensions or buckets, call lifecycle.count_disable('{}') first.", table));
    }
    if (kind == RELKIND_RELATION) {
        if (has_inheritance_children(relid)) {
            throw Error(sqlstate::wrong_object_state,
                        fmt::format("table {} has inheritance children", table),
                        "count(*) on it counts their rows too, which its statement triggers do not see.",
                        "Use declarative partitioning, or count each table of the hierarchy.");
        }
    }
    /* Writers wait while the summaries are filled from the existing rows. */
    bridge::execute_sql(fmt::format("LOCK TABLE {} IN SHARE MODE", table), false);
    if (cfg.has_time()) {
        /* The rows of the partial buckets at the edges of a range are counted
         * in the table: that needs an index that starts with the time column. */
        static bridge::Statement indexed(
            "SELECT 1 FROM pg_catalog.pg_index i JOIN pg_catalog.pg_attribute a ON a.attrelid = i.indrelid "
            "AND a.attnum = i.indkey[0] WHERE i.indrelid = $1 AND a.attname = $2 AND i.indpred IS NULL LIMIT 1",
            {OIDOID, TEXTOID});
        Datum values[2] = {ObjectIdGetDatum(relid), bridge::text_datum(cfg.time_column)};
        indexed.execute(values, nullptr, true, 1);
        if (bridge::processed_rows() == 0) {
            bridge::execute_sql(fmt::format("CREATE INDEX ON {} ({})", table, bridge::quote_ident(cfg.time_column)), false);
            pg_call([&] {
                ereport(NOTICE, (errmsg("created an index on %s (%s) for counts over time ranges", table.c_str(),
                                        cfg.time_column.c_str())));
            });
        }
    }

    OwnDdl own;
    Oid table_owner = bridge::relation_owner(relid);
    {
        static bridge::Statement insert(
            "INSERT INTO lifecycle.count_tables (tbl, dimensions, time_column, bucket, live_column) "
            "VALUES ($1, $2, $3, $4, $5) RETURNING id",
            {REGCLASSOID, NAMEARRAYOID, NAMEOID, INTERVALOID, BOOLOID});
        cfg.live_column = pg_call([relid] { return get_attnum(relid, "deleted_at"); }) > 0;
        Datum values[5] = {ObjectIdGetDatum(relid), PG_GETARG_DATUM(1), cfg.has_time() ? PG_GETARG_DATUM(2) : (Datum)0,
                           cfg.has_time() ? PG_GETARG_DATUM(3) : (Datum)0, BoolGetDatum(cfg.live_column)};
        char nulls[6] = "     ";
        if (!cfg.has_time()) nulls[2] = nulls[3] = 'n';
        bridge::AsRole ext(bridge::extension_owner());
        insert.execute(values, nulls, false);
        cfg.id = static_cast<int32>(*bridge::result_int64(0, 1));
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
        throw Error(sqlstate::wrong_object_state, fmt::format("the rows of table {} are not counted", table), {},
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
    bridge::execute_sql(cfg->has_time() ? fmt::format("DROP TABLE IF EXISTS {}, {}, {}", cfg->delta(), cfg->bucket(), cfg->total())
                                         : fmt::format("DROP TABLE IF EXISTS {}, {}", cfg->delta(), cfg->total()),
                        false);
    remove.execute(&key, nullptr, false);
    registry_changed();
    PG_RETURN_VOID();
}

namespace {

/* SELECT on the table, or on every column the count reads (as count(*) would
 * need): 42501 otherwise. */
void require_select(Oid relid, const Config& cfg, const Filter& filter, bool ranged, const std::string& table) {
    Oid user = GetUserId();
    bool ok = pg_call([&] { return pg_class_aclcheck(relid, user, ACL_SELECT) == ACLCHECK_OK; });
    if (!ok) {
        ok = pg_call([&] { return pg_attribute_aclcheck_all(relid, user, ACL_SELECT, ACLMASK_ANY) == ACLCHECK_OK; });
        std::vector<std::string> columns;
        for (const auto& c : filter.conditions) columns.push_back(cfg.dims[c.dimension]);
        if (ranged) columns.push_back(cfg.time_column);
        for (const auto& col : columns) {
            if (!ok) break;
            ok = pg_call([&] {
                AttrNumber att = get_attnum(relid, col.c_str());
                return att > 0 && pg_attribute_aclcheck(relid, att, user, ACL_SELECT) == ACLCHECK_OK;
            });
        }
    }
    if (!ok) {
        throw Error(sqlstate::insufficient_privilege, fmt::format("permission denied for table {}", table), {},
                    "lifecycle.count needs the SELECT privilege that count(*) on the table would need.");
    }
}

/* Whether soft delete (SPEC.md §1) protects the table: then only live rows
 * (deleted_at IS NULL) count.  Its registry may not exist (yet). */
bool soft_delete_registered(Oid relid) {
    if (lifecycle_relation("soft_delete_tables") == InvalidOid) return false;
    if (pg_call([relid] { return get_attnum(relid, "deleted_at"); }) <= 0) return false;
    static bridge::Statement registered("SELECT 1 FROM lifecycle.soft_delete_tables WHERE tbl = $1", {REGCLASSOID});
    Datum key = ObjectIdGetDatum(relid);
    bridge::AsRole ext(bridge::extension_owner());
    registered.execute(&key, nullptr, true, 1);
    return bridge::processed_rows() > 0;
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
                return PointerGetDatum(construct_array(elems, static_cast<int>(c.values.size()), type, len, byval, align));
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

int64 run_count(const std::string& sql, const std::vector<Oid>& types, const std::vector<Datum>& values) {
    /* Planned for the values at hand each time: a generic plan cannot know how
     * narrow a time range or how rare a value is. */
    SPIPlanPtr plan = cached_plan(sql, static_cast<int>(types.size()), types.data(), CURSOR_OPT_CUSTOM_PLAN);
    int rc = bridge::execute_plan(plan, values.data(), nullptr, true, 1);
    if (rc != SPI_OK_SELECT || bridge::processed_rows() != 1) {
        throw Error(sqlstate::internal_error, fmt::format("pg_lifecycle: count query failed: {}", sql));
    }
    return bridge::result_int64(0, 1).value_or(0);
}

TimestampTz bin(TimestampTz ts, int64 stride) { return bucket_start(ts, stride); }

}  // namespace

/* lifecycle.count(tbl regclass, filter jsonb, since timestamptz, until timestamptz) RETURNS bigint */
LIFECYCLE_FUNCTION(lifecycle_count) {
    bridge::require_arg(fcinfo, 0, "tbl");
    bridge::require_arg(fcinfo, 1, "filter");
    Oid relid = PG_GETARG_OID(0);
    counted_table_kind(relid);
    std::string table = relation_display_name(relid);
    std::string filter_text = pg_call([fcinfo] {
        Jsonb* jb = PG_GETARG_JSONB_P(1);
        return std::string(JsonbToCString(nullptr, &jb->root, VARSIZE(jb)));
    });
    bool has_since = !PG_ARGISNULL(2), has_until = !PG_ARGISNULL(3);
    TimestampTz since = has_since ? PG_GETARG_TIMESTAMPTZ(2) : DT_NOBEGIN;
    TimestampTz until = has_until ? PG_GETARG_TIMESTAMPTZ(3) : DT_NOEND;

    bridge::SpiConnection spi;
    auto cfg = load_config(relid);
    if (!cfg) {
        throw Error(sqlstate::wrong_object_state, fmt::format("the rows of table {} are not counted", table), {},
                    fmt::format("Call lifecycle.count_enable('{}') first (its owner can).", table));
    }
    Filter filter = parse_filter(filter_text, cfg->dims, table);
    bool ranged = has_since || has_until;
    if (ranged && !cfg->has_time()) {
        throw Error(sqlstate::invalid_parameter_value,
                    fmt::format("table {} is counted without a time column: since and until cannot be used", table),
                    {}, "Enable it with lifecycle.count_enable(..., time_column => ...) to count time ranges.");
    }
    require_select(relid, *cfg, filter, ranged, table);
    if (since >= until) PG_RETURN_INT64(0);

    bool soft = soft_delete_registered(relid);
    std::vector<Oid> types;
    std::vector<Datum> values;
    std::string where = filter_sql(*cfg, filter, relid, 1, types, values);
    std::string tcol = cfg->has_time() ? bridge::quote_ident(cfg->time_column) : std::string();

    /* An exact count(*) on the table itself, as the caller: RLS, column
     * privileges and soft delete's own visibility rules all apply. */
    auto count_table = [&](std::optional<TimestampTz> lo, std::optional<TimestampTz> hi) {
        std::vector<Oid> t = types;
        std::vector<Datum> v = values;
        std::string sql = fmt::format("SELECT pg_catalog.count(*) FROM {} WHERE {}", table, where);
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
        if (soft) sql += " AND deleted_at IS NULL";
        return run_count(sql, t, v);
    };

    /* Row-level security: the summaries cannot tell which rows the caller may
     * see, so count what count(*) would, exactly (and at its cost). */
    int rls = pg_call([relid] { return check_enable_rls(relid, InvalidOid, false); });
    if (rls == RLS_ENABLED) {
        std::optional<TimestampTz> lo, hi;
        if (has_since) lo = since;
        if (has_until) hi = until;
        PG_RETURN_INT64(count_table(lo, hi));
    }

    std::string live = soft ? " AND lc_live" : "";
    Oid owner = counts_owner(*cfg);
    int64 total = 0;
    if (!ranged) {
        std::string sql = fmt::format(
            "SELECT (coalesce((SELECT pg_catalog.sum(lc_n) FROM {} WHERE {}{}), 0) + "
            "coalesce((SELECT pg_catalog.sum(lc_delta) FROM {} WHERE {}{}), 0))::bigint",
            cfg->total(), where, live, cfg->delta(), where, live);
        bridge::AsRole as_owner(owner, SECURITY_RESTRICTED_OPERATION);
        total = run_count(sql, types, values);
        PG_RETURN_INT64(total);
    }

    /* Whole buckets inside [since, until) come from the summaries; the rows in
     * the partial buckets at either edge are counted in the table (through its
     * time column's index, when it has one). */
    int64 stride = cfg->bucket_usecs;
    TimestampTz first = has_since && !TIMESTAMP_NOT_FINITE(since)
                            ? (bin(since, stride) == since ? since : bin(since, stride) + stride)
                            : DT_NOBEGIN;
    TimestampTz end = has_until && !TIMESTAMP_NOT_FINITE(until) ? bin(until, stride) : DT_NOEND;
    if (has_since && since == DT_NOEND) PG_RETURN_INT64(0);
    if (has_until && until == DT_NOBEGIN) PG_RETURN_INT64(0);
    if (first >= end) {
        std::optional<TimestampTz> lo, hi;
        if (has_since) lo = since;
        if (has_until) hi = until;
        PG_RETURN_INT64(count_table(lo, hi));
    }
    {
        std::vector<Oid> t = types;
        std::vector<Datum> v = values;
        t.push_back(TIMESTAMPTZOID);
        v.push_back(TimestampTzGetDatum(first));
        t.push_back(TIMESTAMPTZOID);
        v.push_back(TimestampTzGetDatum(end));
        size_t lo = t.size() - 1, hi = t.size();
        std::string sql = fmt::format(
            "SELECT (coalesce((SELECT pg_catalog.sum(lc_n) FROM {0} WHERE {1} AND lc_bucket >= ${3} AND lc_bucket < ${4}{2}), 0) + "
            "coalesce((SELECT pg_catalog.sum(lc_delta) FROM {5} WHERE {1} AND lc_bucket >= ${3} AND lc_bucket < ${4}{2}), 0))::bigint",
            cfg->bucket(), where, live, lo, hi, cfg->delta());
        bridge::AsRole as_owner(owner, SECURITY_RESTRICTED_OPERATION);
        total = run_count(sql, t, v);
    }
    if (has_since && since < first) total += count_table(since, first);
    if (has_until && end < until) total += count_table(end, until);
    PG_RETURN_INT64(total);
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
    if (own_ddl_depth > 0 || config_for_relation(rel) != nullptr) return;  /* ours, or attached already */
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
            throw Error(sqlstate::wrong_object_state,
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
        throw Error(sqlstate::wrong_object_state,
                    fmt::format("table {} has pg_lifecycle's count trigger \"{}\" but is not counted", table,
                                trigger_name),
                    "Its configuration was not restored (a schema-only or partial dump?).",
                    fmt::format("Drop its lifecycle_count_{}_* triggers and call lifecycle.count_enable('{}').", id,
                                table));
    }
    bridge::require_owner(rel, "count its rows");
    Config cfg;
    cfg.id = id;
    cfg.relid = rel;
    cfg.time_column = args[1];
    cfg.bucket_text = args[2];
    for (size_t i = 3; i < args.size(); ++i) cfg.dims.push_back(args[i]);
    if (cfg.has_time()) cfg.bucket_usecs = bucket_usecs_of(cfg.bucket_text);
    cfg.live_column = pg_call([rel] { return get_attnum(rel, "deleted_at"); }) > 0;

    OwnDdl own;
    {
        static bridge::Statement insert(
            "INSERT INTO lifecycle.count_tables (id, tbl, dimensions, time_column, bucket, live_column) "
            "VALUES ($1, $2, $3::pg_catalog.name[], $4, $5::pg_catalog.interval, $6)",
            {INT4OID, REGCLASSOID, TEXTARRAYOID, NAMEOID, TEXTOID, BOOLOID});
        Datum dims = pg_call([&cfg] {
            Datum* elems = static_cast<Datum*>(palloc(sizeof(Datum) * (cfg.dims.size() + 1)));
            for (size_t i = 0; i < cfg.dims.size(); ++i) elems[i] = CStringGetTextDatum(cfg.dims[i].c_str());
            return PointerGetDatum(
                construct_array(elems, static_cast<int>(cfg.dims.size()), TEXTOID, -1, false, TYPALIGN_INT));
        });
        Datum values[6] = {Int32GetDatum(id), ObjectIdGetDatum(rel), dims,
                           cfg.has_time() ? pg_call([&] { return DirectFunctionCall1(namein, CStringGetDatum(cfg.time_column.c_str())); }) : (Datum)0,
                           cfg.has_time() ? bridge::text_datum(cfg.bucket_text) : (Datum)0, BoolGetDatum(cfg.live_column)};
        char nulls[7] = "      ";
        if (!cfg.has_time()) nulls[3] = nulls[4] = 'n';
        bridge::AsRole ext(bridge::extension_owner());
        try {
            insert.execute(values, nulls, false);
        } catch (const bridge::PgError& e) {
            if (e.sqlerrcode() != ERRCODE_UNIQUE_VIOLATION) throw;
            throw Error(sqlstate::wrong_object_state,
                        fmt::format("cannot attach the counts of table {}: count id {} is in use here", table, id),
                        "The dump's count ids clash with this database's.",
                        fmt::format("Drop the table's lifecycle_count_{}_* triggers and call lifecycle.count_enable('{}').",
                                    id, table));
        }
        /* Keep the identity ahead of the ids taken by hand. */
        bridge::execute_sql("SELECT pg_catalog.setval(pg_catalog.pg_get_serial_sequence('lifecycle.count_tables', "
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
