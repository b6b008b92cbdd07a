/*
 * functions.cpp — lifecycle.soft_delete_enable/soft_delete_disable/restore/
 * purge/soft_unique, and the two helpers used inside soft-deleting
 * statements (_current_delete_event, _current_actor).
 */
#include "bridge/function.hpp"
#include "bridge/security.hpp"
#include "bridge/spi.hpp"
#include "gucs.hpp"
#include "softdelete/citus.hpp"
#include "softdelete/softdelete.hpp"

#include <algorithm>
#include <deque>
#include <functional>

namespace pg_lifecycle::softdelete {

using bridge::pg_call;

namespace {

struct ColumnSpec {
    const char* name;
    Oid type;
    const char* sql_type;
};
constexpr ColumnSpec soft_columns[] = {{"deleted_at", TIMESTAMPTZOID, "timestamptz"},
                                       {"deleted_by", TEXTOID, "text"},
                                       {"delete_event", INT8OID, "bigint"}};

const TableInfo& require_enabled(Oid relid) {
    const TableInfo* info = lookup(relid);
    if (info == nullptr) {
        throw Error(sqlstate::object_not_in_prerequisite_state,
                    fmt::format("soft delete is not enabled on table {}", bridge::qualified_relation_name(relid)), {},
                    "See lifecycle.soft_delete_tables; enable it with lifecycle.soft_delete_enable().");
    }
    return *info;
}

/* Runs body with lifecycle.include_deleted on, in a GUC nest level whose
 * changes (ours, and whatever the table's triggers set) are rolled back
 * afterwards. */
void with_deleted_rows_visible(const std::function<void()>& body) {
    bridge::with_setting("lifecycle.include_deleted", "on", body);
}

std::vector<std::string> primary_key_columns(Oid relid) {
    static bridge::Statement pk(
        "SELECT a.attname::pg_catalog.text FROM pg_catalog.pg_index i "
        "CROSS JOIN LATERAL pg_catalog.unnest(i.indkey) WITH ORDINALITY k(attnum, n) "
        "JOIN pg_catalog.pg_attribute a ON a.attrelid OPERATOR(pg_catalog.=) i.indrelid "
        "AND a.attnum OPERATOR(pg_catalog.=) k.attnum "
        "WHERE i.indrelid OPERATOR(pg_catalog.=) $1 AND i.indisprimary ORDER BY k.n",
        {OIDOID});
    Datum key = ObjectIdGetDatum(relid);
    pk.execute(&key, nullptr, true);
    std::vector<std::string> cols;
    for (uint64 i = 0; i < bridge::processed_rows(); ++i) cols.push_back(bridge::required_text(i, 1));
    return cols;
}

/* The flag column must be a boolean column of the table other than the
 * three soft-delete columns. */
void check_flag_column(Oid relid, const std::string& flag, const std::string& table) {
    AttrNumber att = pg_call([&] { return get_attnum(relid, flag.c_str()); });
    if (att <= 0) {
        throw Error(sqlstate::undefined_column, fmt::format("column \"{}\" of table {} does not exist", flag, table),
                    {}, "flag names the application's own boolean column (is_deleted, say), which must exist.");
    }
    for (const auto& col : soft_columns) {
        if (flag == col.name) {
            throw Error(
                sqlstate::invalid_parameter_value,
                fmt::format("column \"{}\" of table {} cannot be the flag: soft delete keeps it itself", flag, table));
        }
    }
    if (pg_call([&] { return get_atttype(relid, att); }) != BOOLOID) {
        throw Error(sqlstate::datatype_mismatch,
                    fmt::format("column \"{}\" of table {} must be of type boolean to be the flag", flag, table));
    }
}

/* A value's text form. */
std::string value_text(Datum value, Oid type) {
    return pg_call([&] {
        if (type == UNKNOWNOID || type == CSTRINGOID) return std::string(DatumGetCString(value));
        Oid out;
        bool varlena;
        getTypeOutputInfo(type, &out, &varlena);
        return std::string(OidOutputFunctionCall(out, value));
    });
}

/* A key value of type `from` as a value of type `to`, through their text
 * forms (22P02 naming the column when it does not fit). */
Datum convert_id(Datum id, Oid from, Oid to, const std::string& column, const std::string& table) {
    if (from == to) return id;
    std::string text = value_text(id, from);
    try {
        return pg_call([&] {
            Oid in, ioparam;
            getTypeInputInfo(to, &in, &ioparam);
            return OidInputFunctionCall(in, const_cast<char*>(text.c_str()), ioparam, -1);
        });
    } catch (const bridge::PgError& e) {
        std::string type = pg_call([to] { return std::string(format_type_be(to)); });
        throw Error(sqlstate::invalid_text_representation,
                    fmt::format("id \"{}\" is not a valid value of key column \"{}\" of table {}", text, column, table),
                    fmt::format("The key's type is {}: {}", type, e.what()));
    }
}

std::string composite_key_hint(const std::vector<std::string>& pk) {
    std::string object, names;
    for (size_t i = 0; i < pk.size(); ++i) {
        object += fmt::format("{}\"{}\": …", i ? ", " : "", pk[i]);
        names += fmt::format("{}{}", i ? ", " : "", pk[i]);
    }
    return fmt::format("Pass the key as a JSON object, '{{{}}}', or as an array in key order ({}).", object, names);
}

/* A composite key given as a JSON object naming every key column. */
std::vector<Datum> key_from_json(Datum id, Oid id_type, const std::vector<std::string>& pk,
                                 const std::vector<Oid>& types, const std::string& table) {
    std::string text = value_text(id, id_type);
    Datum json;
    try {
        json = pg_call([&] {
            Oid in, ioparam;
            getTypeInputInfo(JSONBOID, &in, &ioparam);
            return OidInputFunctionCall(in, const_cast<char*>(text.c_str()), ioparam, -1);
        });
    } catch (const bridge::PgError& e) {
        throw Error(
            sqlstate::invalid_text_representation,
            fmt::format("the key of table {} has {} columns: \"{}\" is not a JSON object", table, pk.size(), text),
            e.what(), composite_key_hint(pk));
    }
    Oid jsonb = JSONBOID;
    bridge::execute_sql("SELECT pg_catalog.jsonb_typeof($1) OPERATOR(pg_catalog.=) 'object'", 1, &jsonb, &json, nullptr,
                        true, 1);
    if (!DatumGetBool(bridge::result_datum(0, 1).value_or(BoolGetDatum(false)))) {
        throw Error(
            sqlstate::invalid_parameter_value,
            fmt::format("the key of table {} has {} columns: \"{}\" is not a JSON object", table, pk.size(), text), {},
            composite_key_hint(pk));
    }
    bridge::execute_sql("SELECT e.key, e.value FROM pg_catalog.jsonb_each_text($1) AS e", 1, &jsonb, &json, nullptr,
                        true);
    std::vector<std::optional<std::string>> found(pk.size());
    for (uint64 r = 0; r < bridge::processed_rows(); ++r) {
        std::string name = bridge::required_text(r, 1);
        auto at = std::find(pk.begin(), pk.end(), name);
        if (at == pk.end()) {
            throw Error(sqlstate::invalid_parameter_value,
                        fmt::format("\"{}\" is not a column of the primary key of table {}", name, table), {},
                        composite_key_hint(pk));
        }
        std::optional<std::string> value = bridge::result_text(r, 2);
        if (!value) {
            throw Error(sqlstate::null_value_not_allowed, fmt::format("key column \"{}\" is null", name), {},
                        composite_key_hint(pk));
        }
        found[static_cast<size_t>(at - pk.begin())] = std::move(value);
    }
    std::vector<Datum> values;
    for (size_t i = 0; i < pk.size(); ++i) {
        if (!found[i]) {
            throw Error(sqlstate::invalid_parameter_value,
                        fmt::format("key column \"{}\" of table {} is missing", pk[i], table), {},
                        composite_key_hint(pk));
        }
        values.push_back(convert_id(bridge::text_datum(*found[i]), TEXTOID, types[i], pk[i], table));
    }
    return values;
}

/* A composite key given as an array of its values in key order. */
std::vector<Datum> key_from_array(Datum id, Oid element, const std::vector<std::string>& pk,
                                  const std::vector<Oid>& types, const std::string& table) {
    Datum* elems = nullptr;
    bool* nulls = nullptr;
    int n = 0;
    pg_call([&] {
        ArrayType* array = DatumGetArrayTypeP(id);
        int16 len;
        bool byval;
        char align;
        get_typlenbyvalalign(element, &len, &byval, &align);
        if (ARR_NDIM(array) <= 1) deconstruct_array(array, element, len, byval, align, &elems, &nulls, &n);
        else n = -1;
    });
    if (n < 0) {
        throw Error(sqlstate::invalid_parameter_value,
                    fmt::format("the key of table {} has {} columns: pass a one-dimensional array", table, pk.size()),
                    {}, composite_key_hint(pk));
    }
    if (n != static_cast<int>(pk.size())) {
        throw Error(sqlstate::invalid_parameter_value,
                    fmt::format("the key of table {} has {} columns; the array has {}", table, pk.size(), n), {},
                    composite_key_hint(pk));
    }
    std::vector<Datum> values;
    for (size_t i = 0; i < pk.size(); ++i) {
        if (nulls[i]) {
            throw Error(sqlstate::null_value_not_allowed, fmt::format("key column \"{}\" is null", pk[i]), {},
                        composite_key_hint(pk));
        }
        values.push_back(convert_id(elems[i], element, types[i], pk[i], table));
    }
    return values;
}

/* The primary key value(s) restore's id names, as values of the key
 * columns' types: a single-column key from any type a driver sends (an
 * untyped parameter, text, another integer width), a composite key from a
 * JSON object naming its columns (jsonb, json, or text holding one) or an
 * array of its values in key order. */
std::vector<Datum> key_values(Datum id, Oid id_type, const std::vector<std::string>& pk, const std::vector<Oid>& types,
                              const std::string& table) {
    if (pk.empty()) {
        throw Error(sqlstate::object_not_in_prerequisite_state, fmt::format("table {} has no primary key", table),
                    "Soft delete restores rows by their primary key.", "ALTER TABLE … ADD PRIMARY KEY (…);");
    }
    if (pk.size() == 1) return {convert_id(id, id_type, types[0], pk[0], table)};
    Oid element = pg_call([id_type] { return get_element_type(id_type); });
    if (element != InvalidOid) return key_from_array(id, element, pk, types, table);
    switch (id_type) {
        case JSONBOID:
        case JSONOID:
        case TEXTOID:
        case VARCHAROID:
        case UNKNOWNOID:
        case CSTRINGOID: return key_from_json(id, id_type, pk, types, table);
        default:
            throw Error(sqlstate::datatype_mismatch,
                        fmt::format("the key of table {} has {} columns; a value of type {} cannot name a row", table,
                                    pk.size(), pg_call([id_type] { return std::string(format_type_be(id_type)); })),
                        {}, composite_key_hint(pk));
    }
}

/* Values of some columns of many rows, one vector per column: what a
 * set-based step of a restore passes on as arrays. */
struct KeyColumns {
    std::vector<Oid> types;
    std::vector<std::vector<Datum>> columns;
    size_t rows() const { return columns.empty() ? 0 : columns[0].size(); }
};

/* Copies of the named columns of the first `n` rows of a result, leaving out
 * rows where one of them is NULL (they reference nothing / nothing
 * references them). */
KeyColumns collect_keys(SPITupleTable* tuptable, uint64 n, const std::vector<std::string>& cols) {
    KeyColumns keys;
    size_t ncols = cols.size();
    std::vector<int> attnums(ncols);
    std::vector<int16> lens(ncols);
    std::vector<char> byvals(ncols);
    keys.types.resize(ncols);
    keys.columns.resize(ncols);
    for (size_t c = 0; c < ncols; ++c) {
        attnums[c] = pg_call([&] { return SPI_fnumber(tuptable->tupdesc, cols[c].c_str()); });
        if (attnums[c] <= 0) {
            throw Error(sqlstate::internal_error, fmt::format("restore: column \"{}\" is not in the result", cols[c]));
        }
        keys.types[c] = pg_call([&] { return SPI_gettypeid(tuptable->tupdesc, attnums[c]); });
        pg_call([&] {
            bool byval;
            get_typlenbyval(keys.types[c], &lens[c], &byval);
            byvals[c] = byval;
        });
        keys.columns[c].reserve(n);
    }
    std::vector<Datum> row(ncols);
    for (uint64 r = 0; r < n; ++r) {
        bool has_null = pg_call([&] {
            bool any_null = false;
            for (size_t c = 0; c < ncols && !any_null; ++c) {
                bool isnull;
                Datum v = SPI_getbinval(tuptable->vals[r], tuptable->tupdesc, attnums[c], &isnull);
                any_null = isnull;
                if (!isnull) row[c] = datumCopy(v, byvals[c], lens[c]);
            }
            return any_null;
        });
        if (has_null) continue;
        for (size_t c = 0; c < ncols; ++c) keys.columns[c].push_back(row[c]);
    }
    return keys;
}

/* Rows [from, from + count) of one column as an array parameter. */
Datum key_array(const KeyColumns& keys, size_t c, size_t from, size_t count) {
    return pg_call([&] {
        int16 len;
        bool byval;
        char align;
        get_typlenbyvalalign(keys.types[c], &len, &byval, &align);
        return PointerGetDatum(construct_array(const_cast<Datum*>(keys.columns[c].data() + from),
                                               static_cast<int>(count), keys.types[c], len, byval, align));
    });
}

Oid array_type_of(Oid type) {
    Oid array = pg_call([type] { return get_array_type(type); });
    if (array == InvalidOid) {
        throw Error(sqlstate::feature_not_supported,
                    fmt::format("lifecycle.restore cannot pass keys of type {}: it has no array type",
                                pg_call([type] { return std::string(format_type_be(type)); })));
    }
    return array;
}

/* Key values per statement of a set-based step: big enough that a statement's
 * planning is noise, small enough to bound a statement's parameter memory. */
constexpr size_t keys_per_statement = 50000;

/* "EXISTS (SELECT FROM ROWS FROM (unnest($1), …) k(k1, …) WHERE k.k1 op x.col1 AND …)":
 * the rows of alias `x` whose `cols` match one of the key tuples passed as
 * arrays $1…$n, with the key's own operators: `<key value> op <column>`, or
 * `<column> op <key value>` when !key_on_left. */
std::string matches_keys(const std::string& x, const std::vector<std::string>& cols,
                         const std::vector<std::string>& ops, bool key_on_left = true) {
    std::string args, names, conds;
    for (size_t i = 0; i < cols.size(); ++i) {
        args += fmt::format("{}pg_catalog.unnest(${})", i ? ", " : "", i + 1);
        names += fmt::format("{}k{}", i ? ", " : "", i + 1);
        std::string key = fmt::format("k.k{}", i + 1), column = fmt::format("{}.{}", x, bridge::quote_ident(cols[i]));
        conds +=
            fmt::format("{}{} {} {}", i ? " AND " : "", key_on_left ? key : column, ops[i], key_on_left ? column : key);
    }
    return fmt::format("EXISTS (SELECT FROM ROWS FROM ({}) AS k({}) WHERE {})", args, names, conds);
}

/* Runs `sql` (whose $1…$n are the key columns as arrays, `extra` the
 * parameters after them) once per slice of keys_per_statement keys; `each`
 * reads each statement's result.  */
void for_key_slices(const std::string& sql, const KeyColumns& keys, const std::vector<Oid>& extra_types,
                    const std::vector<Datum>& extra_values, bool read_only, const std::function<void()>& each) {
    size_t ncols = keys.types.size();
    std::vector<Oid> types;
    for (Oid t : keys.types) types.push_back(array_type_of(t));
    types.insert(types.end(), extra_types.begin(), extra_types.end());
    for (size_t from = 0; from < keys.rows(); from += keys_per_statement) {
        size_t count = std::min(keys_per_statement, keys.rows() - from);
        std::vector<Datum> values;
        for (size_t c = 0; c < ncols; ++c) values.push_back(key_array(keys, c, from, count));
        values.insert(values.end(), extra_values.begin(), extra_values.end());
        bridge::execute_sql(sql, static_cast<int>(values.size()), types.data(), values.data(), nullptr, read_only);
        each();
        bridge::free_result();
    }
}

/* Parents that rows restored through one foreign key reference, checked
 * once the restore is done. */
struct ParentCheck {
    ForeignKey fk;
    KeyColumns keys;
};

/* For each of `table`'s foreign keys into enabled tables, the key values of
 * the first `n` result rows. */
void remember_parents(std::vector<ParentCheck>& checks, Oid table, SPITupleTable* tuptable, uint64 n) {
    for (const ForeignKey& fk : outgoing_fks(table)) {
        if (lookup(fk.referenced) == nullptr) continue;
        KeyColumns keys = collect_keys(tuptable, n, fk.referencing_cols);
        if (keys.rows() > 0) checks.push_back({fk, std::move(keys)});
    }
}

/* One set-based step of a restore: rows of `table` whose `cols` match one of
 * `keys` (with `ops`) and that carry delete_event `event`. */
struct RestoreStep {
    Oid table;
    std::vector<std::string> cols;
    std::vector<std::string> ops;
    KeyColumns keys;
};

/* Restores the rows of the first step that carry delete_event `event`, then,
 * breadth first and a statement per table, foreign key and slice of keys,
 * the rows of enabled tables that reference restored rows through any
 * foreign key and carry the same event (rows an ORM deleted child by child in
 * the parent's transaction share its event; rows deleted by another event
 * stay deleted).  Returns the number of rows restored. */
int64 restore_event(RestoreStep first, int64 event, std::vector<ParentCheck>& checks) {
    std::deque<RestoreStep> steps;
    steps.push_back(std::move(first));
    int64 total = 0;
    while (!steps.empty()) {
        RestoreStep step = std::move(steps.front());
        steps.pop_front();
        /* "Deleted by this event" is written as a CASE, which the planner
         * cannot estimate from the columns' statistics: those usually predate
         * the delete (every row live at the last ANALYZE), would make it take
         * the condition for "no row", and pick a nested loop of every key
         * over every candidate row (quadratic: 20 s for a 200k-row restore). */
        std::string sql = fmt::format(
            "UPDATE {} x SET deleted_at = NULL, deleted_by = NULL, delete_event = NULL "
            "WHERE {} AND CASE WHEN x.delete_event OPERATOR(pg_catalog.=) ${} THEN x.deleted_at IS NOT NULL "
            "ELSE false END RETURNING x.*",
            bridge::qualified_relation_name(step.table), matches_keys("x", step.cols, step.ops), step.cols.size() + 1);
        std::vector<ForeignKey> children;
        for (const ForeignKey& fk : incoming_fks(step.table)) {
            if (lookup(fk.referencing) != nullptr) children.push_back(fk);
        }
        /* As the caller, whose settings the table's triggers see. */
        bridge::CallersSearchPath callers;
        for_key_slices(sql, step.keys, {INT8OID}, {Int64GetDatum(event)}, false, [&] {
            uint64 restored = bridge::processed_rows();
            if (restored == 0) return;
            total += static_cast<int64>(restored);
            SPITupleTable* tuptable = SPI_tuptable;
            remember_parents(checks, step.table, tuptable, restored);
            for (const ForeignKey& fk : children) {
                KeyColumns keys = collect_keys(tuptable, restored, fk.referenced_cols);
                if (keys.rows() > 0) {
                    steps.push_back({fk.referencing, fk.referencing_cols, fk.eq_ops, std::move(keys)});
                }
            }
        });
    }
    return total;
}

/* " FOR SHARE OF x", except on a Citus table: Citus refuses FOR SHARE in a
 * query that is not routed to one shard.  There a concurrent soft delete of
 * the parent still reaches the restored rows through its cascade, which
 * waits for their row locks (citus.hpp). */
const char* citus_lock_clause(Oid parent) { return citus::is_citus_table(parent) ? "" : " FOR SHARE OF x"; }

/* A restored row must not reference a row that is still deleted: for each
 * foreign key, one statement per slice of keys reads (FOR SHARE, as the
 * parent's owner and outside row-level security, as a foreign-key check
 * does) the parents the restored rows reference. */
void check_parents(const std::vector<ParentCheck>& checks) {
    for (const ParentCheck& c : checks) {
        std::string parent = bridge::qualified_relation_name(c.fk.referenced);
        /* The keys hold referencing values; the foreign key's operators
         * are `referenced op referencing`. */
        std::string sql = fmt::format("SELECT x.deleted_at IS NOT NULL FROM {} x WHERE {}{}", parent,
                                      matches_keys("x", c.fk.referenced_cols, c.fk.eq_ops, false),
                                      citus_lock_clause(c.fk.referenced));
        bridge::AsKeyActionOwner as_owner(bridge::relation_owner(c.fk.referenced));
        for_key_slices(sql, c.keys, {}, {}, false, [&] {
            for (uint64 r = 0; r < bridge::processed_rows(); ++r) {
                if (DatumGetBool(bridge::result_datum(r, 1).value_or(BoolGetDatum(false)))) {
                    throw Error(sqlstate::foreign_key_violation,
                                fmt::format("cannot restore a row of {}: its parent row in {} is still deleted",
                                            bridge::qualified_relation_name(c.fk.referencing), parent),
                                fmt::format("Foreign key \"{}\".", c.fk.name), "Restore the parent row first.");
                }
            }
        });
    }
}
}  // namespace

/* A restored row must not reference a row that is still deleted (in an
 * enabled table).  The parent is read with FOR SHARE, which conflicts with a
 * concurrent soft delete of it, as the parent's owner and outside row-level
 * security, as a foreign-key check reads it; a concurrent uncommitted soft
 * delete is waited for and seen. */
void check_parent_not_deleted(const ForeignKey& fk, const std::vector<Oid>& types, const std::vector<Datum>& values,
                              const std::string& detail) {
    std::string parent = bridge::qualified_relation_name(fk.referenced);
    std::string where;
    for (size_t i = 0; i < fk.referenced_cols.size(); ++i) {
        where += fmt::format("{}x.{} {} ${}", i ? " AND " : "", bridge::quote_ident(fk.referenced_cols[i]),
                             fk.eq_ops[i], i + 1);
    }
    std::string sql = fmt::format("SELECT x.deleted_at IS NOT NULL FROM {} x WHERE {}{}", parent, where,
                                  citus_lock_clause(fk.referenced));
    {
        bridge::AsKeyActionOwner as_owner(bridge::relation_owner(fk.referenced));
        bridge::execute_sql(sql, static_cast<int>(values.size()), types.data(), values.data(), nullptr, false, 1);
    }
    if (bridge::processed_rows() > 0 && DatumGetBool(bridge::result_datum(0, 1).value_or(BoolGetDatum(false)))) {
        throw Error(sqlstate::foreign_key_violation,
                    fmt::format("cannot restore a row of {}: its parent row in {} is still deleted",
                                bridge::qualified_relation_name(fk.referencing), parent),
                    detail, "Restore the parent row first.");
    }
}

}  // namespace pg_lifecycle::softdelete

using namespace pg_lifecycle;
using bridge::pg_call;

/* lifecycle.soft_delete_enable(tbl regclass, retention interval, hide boolean, flag name) RETURNS void */
LIFECYCLE_FUNCTION(lifecycle_soft_delete_enable) {
    bridge::require_arg(fcinfo, 0, "tbl");
    bridge::require_arg(fcinfo, 2, "hide");
    Oid relid = PG_GETARG_OID(0);
    bridge::require_table(relid, "Soft delete");
    std::string table = bridge::qualified_relation_name(relid);
    bridge::require_owner(relid, "enable soft delete on it");
    if (!PG_ARGISNULL(1)) {
        Interval* retention = PG_GETARG_INTERVAL_P(1);
        if (bridge::interval_sign(retention) <= 0)
            throw Error(sqlstate::invalid_parameter_value, "retention must be a positive interval", {},
                        "Pass NULL to keep soft-deleted rows until purged by hand.");
    }

    bridge::SpiConnection spi;
    if (softdelete::primary_key_columns(relid).empty()) {
        throw Error(sqlstate::object_not_in_prerequisite_state, fmt::format("table {} has no primary key", table),
                    "Soft delete restores rows by their primary key.", "ALTER TABLE … ADD PRIMARY KEY (…);");
    }
    /* The three columns: added when missing, checked when present. */
    for (const auto& col : softdelete::soft_columns) {
        AttrNumber attnum = pg_call([&] { return get_attnum(relid, col.name); });
        if (attnum == InvalidAttrNumber) {
            bridge::execute_sql(fmt::format("ALTER TABLE {} ADD COLUMN {} {}", table, col.name, col.sql_type), false);
        } else if (!softdelete::soft_column_type_ok(col.name, pg_call([&] { return get_atttype(relid, attnum); }))) {
            throw Error(sqlstate::datatype_mismatch,
                        fmt::format("column \"{}\" of table {} must be of type {}", col.name, table, col.sql_type), {},
                        "Rename or drop the column, then enable soft delete again.");
        }
    }
    /* A legacy boolean flag (is_deleted): rows where it and deleted_at
     * disagree are made deleted (either one says so), then the flag trigger
     * keeps them in step. */
    std::optional<std::string> flag;
    if (PG_NARGS() > 3 && !PG_ARGISNULL(3)) {
        flag = pg_call([fcinfo] { return std::string(NameStr(*PG_GETARG_NAME(3))); });
        softdelete::check_flag_column(relid, *flag, table);
        std::string f = bridge::quote_ident(*flag);
        softdelete::with_deleted_rows_visible([&] {
            bridge::CallersSearchPath callers;
            bridge::execute_sql(
                fmt::format("UPDATE {0} SET deleted_at = CASE WHEN deleted_at IS NULL THEN pg_catalog.now() "
                            "ELSE deleted_at END, {1} = true WHERE {1} IS DISTINCT FROM (deleted_at IS NOT NULL) "
                            "AND ({1} OR deleted_at IS NOT NULL)",
                            table, f),
                false);
            bridge::execute_sql(fmt::format("UPDATE {0} SET {1} = false WHERE {1} IS NULL", table, f), false);
        });
    }
    /* On a Citus table Citus propagates our triggers to the shards (citus.hpp). */
    softdelete::citus::with_triggers_allowed([&] {
        softdelete::install_triggers(relid, DatumGetBool(PG_GETARG_DATUM(2)));
        softdelete::set_flag_trigger(relid, flag);
    });

    static bridge::Statement upsert(
        "INSERT INTO lifecycle.soft_delete_tables (tbl, retention, hide) VALUES ($1, $2, $3) "
        "ON CONFLICT (tbl) DO UPDATE SET retention = EXCLUDED.retention, hide = EXCLUDED.hide",
        {REGCLASSOID, INTERVALOID, BOOLOID});
    static bridge::Statement upsert_flag(
        "INSERT INTO lifecycle.soft_delete_tables (tbl, retention, hide, flag) VALUES ($1, $2, $3, $4) "
        "ON CONFLICT (tbl) DO UPDATE SET retention = EXCLUDED.retention, hide = EXCLUDED.hide, flag = EXCLUDED.flag",
        {REGCLASSOID, INTERVALOID, BOOLOID, NAMEOID});
    Datum values[4] = {ObjectIdGetDatum(relid), PG_ARGISNULL(1) ? (Datum)0 : PG_GETARG_DATUM(1), PG_GETARG_DATUM(2),
                       flag ? PG_GETARG_DATUM(3) : (Datum)0};
    char nulls[5] = "    ";
    if (PG_ARGISNULL(1)) nulls[1] = 'n';
    if (!flag) nulls[3] = 'n';
    {
        bridge::AsRole as_owner(bridge::extension_owner());
        /* SQL objects of 0.1 (before ALTER EXTENSION UPDATE) have no flag. */
        (PG_NARGS() > 3 ? upsert_flag : upsert).execute(values, nulls, false);
    }
    softdelete::invalidate(relid);
    PG_RETURN_VOID();
}

/* lifecycle.soft_delete_disable(tbl regclass) RETURNS void: DELETE is hard again; the rows and columns stay. */
LIFECYCLE_FUNCTION(lifecycle_soft_delete_disable) {
    bridge::require_arg(fcinfo, 0, "tbl");
    Oid relid = PG_GETARG_OID(0);
    bridge::require_table(relid, "Soft delete");
    std::string table = bridge::qualified_relation_name(relid);
    bridge::require_owner(relid, "disable soft delete on it");
    static bridge::Statement remove("DELETE FROM lifecycle.soft_delete_tables WHERE tbl = $1", {REGCLASSOID});
    bridge::SpiConnection spi;
    Datum key = ObjectIdGetDatum(relid);
    {
        bridge::AsRole as_owner(bridge::extension_owner());
        remove.execute(&key, nullptr, false);
    }
    if (bridge::processed_rows() == 0) {
        throw Error(sqlstate::object_not_in_prerequisite_state,
                    fmt::format("soft delete is not enabled on table {}", table), {},
                    "See lifecycle.soft_delete_tables for the tables it is enabled on.");
    }
    softdelete::citus::with_triggers_allowed([&] { softdelete::remove_triggers(relid); });
    softdelete::invalidate(relid);
    PG_RETURN_VOID();
}

/* lifecycle.restore(tbl regclass, id anyelement) RETURNS bigint: rows restored, cascade included. */
LIFECYCLE_FUNCTION(lifecycle_restore) {
    bridge::require_arg(fcinfo, 0, "tbl");
    bridge::require_arg(fcinfo, 1, "id");
    Oid relid = PG_GETARG_OID(0);
    bridge::require_table(relid, "Soft delete");
    softdelete::require_enabled(relid);
    std::string table = bridge::qualified_relation_name(relid);
    Oid id_type = pg_call([fcinfo] { return get_fn_expr_argtype(fcinfo->flinfo, 1); });
    Datum id = PG_GETARG_DATUM(1);

    bridge::SpiConnection spi;
    std::vector<std::string> pk = softdelete::primary_key_columns(relid);
    softdelete::KeyColumns key;
    for (const std::string& col : pk) {
        key.types.push_back(pg_call([&] { return get_atttype(relid, get_attnum(relid, col.c_str())); }));
    }
    /* The id as values of the key's types (drivers send text, other widths;
     * a composite key comes as a JSON object or an array). */
    std::vector<Datum> values = softdelete::key_values(id, id_type, pk, key.types, table);
    std::vector<std::string> ops, quoted;
    std::string where, shown_cols, shown_values;
    for (size_t i = 0; i < pk.size(); ++i) {
        ops.push_back(bridge::equality_operator(key.types[i]));
        quoted.push_back(bridge::quote_ident(pk[i]));
        key.columns.push_back({values[i]});
        where += fmt::format("{}{} {} ${}", i ? " AND " : "", quoted[i], ops[i], i + 1);
        shown_cols += fmt::format("{}{}", i ? ", " : "", pk[i]);
        shown_values += fmt::format("{}{}", i ? ", " : "", softdelete::value_text(values[i], key.types[i]));
    }
    int nkey = static_cast<int>(pk.size());
    int64 total = 0;
    softdelete::RestoreScope restoring;
    softdelete::with_deleted_rows_visible([&] {
        std::string find = fmt::format("SELECT delete_event, deleted_at IS NOT NULL FROM {} WHERE {}", table, where);
        bridge::execute_sql(find, nkey, key.types.data(), values.data(), nullptr, true, 2);
        if (bridge::processed_rows() == 0) {
            throw Error(sqlstate::invalid_parameter_value,
                        nkey == 1
                            ? fmt::format("no row with {} = {} in table {}", shown_cols, shown_values, table)
                            : fmt::format("no row with ({}) = ({}) in table {}", shown_cols, shown_values, table));
        }
        bool deleted = DatumGetBool(bridge::required_datum(0, 2));
        if (!deleted) return; /* live already: nothing to restore */
        std::optional<int64> event = bridge::result_int64(0, 1);

        std::vector<softdelete::ParentCheck> checks;
        if (event) {
            total = softdelete::restore_event({relid, pk, ops, std::move(key)}, *event, checks);
        } else {
            /* Deleted by hand, without an event: just the row. */
            bridge::CallersSearchPath callers;
            bridge::execute_sql(
                fmt::format("UPDATE {} SET deleted_at = NULL, deleted_by = NULL WHERE {} RETURNING *", table, where),
                nkey, key.types.data(), values.data(), nullptr, false);
            total = static_cast<int64>(bridge::processed_rows());
            softdelete::remember_parents(checks, relid, SPI_tuptable, bridge::processed_rows());
        }
        softdelete::check_parents(checks);
    });
    PG_RETURN_INT64(total);
}

/* lifecycle.purge(tbl regclass, older_than interval) RETURNS bigint: rows hard-deleted. */
LIFECYCLE_FUNCTION(lifecycle_purge) {
    bridge::require_arg(fcinfo, 0, "tbl");
    Oid relid = PG_GETARG_OID(0);
    char kind = bridge::require_table(relid, "Soft delete");
    softdelete::require_enabled(relid);
    bridge::require_owner(relid, "purge it");
    bridge::SpiConnection spi;
    Interval* older_than = nullptr;
    if (!PG_ARGISNULL(1)) {
        older_than = PG_GETARG_INTERVAL_P(1);
    } else {
        static bridge::Statement retention("SELECT retention FROM lifecycle.soft_delete_tables WHERE tbl = $1",
                                           {REGCLASSOID});
        Oid registered = softdelete::lookup(relid)->registered;
        Datum key = ObjectIdGetDatum(registered);
        retention.execute(&key, nullptr, true, 1);
        auto r = bridge::processed_rows() ? bridge::result_datum(0, 1) : std::nullopt;
        if (!r) {
            throw Error(
                sqlstate::invalid_parameter_value,
                fmt::format("table {} has no retention: pass older_than", bridge::qualified_relation_name(relid)), {},
                "lifecycle.purge('t', '0') purges every soft-deleted row.");
        }
        older_than = DatumGetIntervalP(*r);
    }
    if (bridge::interval_sign(older_than) < 0)
        throw Error(sqlstate::invalid_parameter_value, "older_than must not be negative");

    std::vector<Oid> leaves{relid};
    if (kind == RELKIND_PARTITIONED_TABLE) {
        leaves.clear();
        List* all = pg_call([relid] { return find_all_inheritors(relid, NoLock, nullptr); });
        ListCell* lc;
        foreach (lc, all) {
            Oid leaf = lfirst_oid(lc);
            if (pg_call([leaf] { return get_rel_relkind(leaf); }) == RELKIND_RELATION) leaves.push_back(leaf);
        }
    }
    constexpr int batch = 1000;
    int64 total = 0;
    for (Oid leaf : leaves) {
        for (;;) {
            bridge::check_for_interrupts();
            softdelete::PurgeResult r = softdelete::purge_any(leaf, older_than, batch);
            total += r.rows;
            if (!r.error.empty()) throw Error(sqlstate::internal_error, r.error);
            if (!r.more) break;
        }
    }
    PG_RETURN_INT64(total);
}

/* lifecycle.soft_unique(tbl regclass, columns name[]) RETURNS name: a unique index over live rows. */
LIFECYCLE_FUNCTION(lifecycle_soft_unique) {
    bridge::require_arg(fcinfo, 0, "tbl");
    bridge::require_arg(fcinfo, 1, "columns");
    Oid relid = PG_GETARG_OID(0);
    bridge::require_table(relid, "Soft delete");
    softdelete::require_enabled(relid);
    std::string table = bridge::qualified_relation_name(relid);
    ArrayType* arr = PG_GETARG_ARRAYTYPE_P(1);
    Datum* elems;
    bool* nulls;
    int n;
    pg_call([&] { deconstruct_array(arr, NAMEOID, NAMEDATALEN, false, TYPALIGN_CHAR, &elems, &nulls, &n); });
    if (n == 0) throw Error(sqlstate::invalid_parameter_value, "columns must name at least one column");
    std::string cols, name_part;
    for (int i = 0; i < n; ++i) {
        if (nulls[i]) throw Error(sqlstate::null_value_not_allowed, "columns must not contain NULL");
        std::string col = NameStr(*DatumGetName(elems[i]));
        if (pg_call([&] { return get_attnum(relid, col.c_str()); }) == InvalidAttrNumber) {
            throw Error(sqlstate::undefined_column,
                        fmt::format("column \"{}\" of relation {} does not exist", col, table));
        }
        cols += (i ? ", " : "") + bridge::quote_ident(col);
        name_part += (i ? "_" : "") + col;
    }
    std::string index = pg_call([&] {
        return std::string(
            ChooseRelationName(get_rel_name(relid), name_part.c_str(), "live_key", get_rel_namespace(relid), false));
    });
    {
        bridge::SpiConnection spi;
        bridge::execute_sql(fmt::format("CREATE UNIQUE INDEX {} ON {} ({}) WHERE deleted_at IS NULL",
                                        bridge::quote_ident(index), table, cols),
                            false);
    }
    /* After SPI_finish, which frees what was allocated while connected. */
    return pg_call([&] { return DirectFunctionCall1(namein, CStringGetDatum(index.c_str())); });
}

/* One delete_event per transaction: the planner puts this call in every
 * soft-deleting statement's target list; every row soft-deleted in the
 * transaction — by one statement and its cascade, or by an ORM's one
 * statement per child, or by a trigger's writes in between — gets the same
 * id, so one restore of the parent brings them back along the foreign keys. */
LIFECYCLE_FUNCTION(lifecycle_current_delete_event) {
    (void)fcinfo;
    static LocalTransactionId lxid = InvalidLocalTransactionId;
    static int64 event = 0;
    LocalTransactionId my_lxid = compat::my_lxid();
    if (my_lxid != lxid) {
        Oid seq = softdelete::event_sequence();
        if (!OidIsValid(seq)) {
            throw Error(sqlstate::object_not_in_prerequisite_state,
                        "extension \"pg_lifecycle\" is not installed in this database");
        }
        event = DatumGetInt64(pg_call([seq] { return DirectFunctionCall1(nextval_oid, ObjectIdGetDatum(seq)); }));
        /* On a Citus worker: its group id above 2^48, unique across nodes. */
        event += softdelete::citus::event_offset();
        lxid = my_lxid;
    }
    PG_RETURN_INT64(event);
}

/* lifecycle.actor when set, else current_user: recorded in deleted_by.  A
 * soft DELETE of many rows calls it for each row: the value is kept for the
 * call site (fn_extra, in the statement's memory) while the role and
 * lifecycle.actor stay the same. */
LIFECYCLE_FUNCTION(lifecycle_current_actor) {
    struct Memo {
        Oid user;
        char* actor; /* lifecycle.actor when computed ("" if unset) */
        Datum value;
    };
    const char* actor = gucs::actor != nullptr ? gucs::actor : "";
    Oid user = GetUserId();
    FmgrInfo* flinfo = fcinfo->flinfo;
    auto* memo = flinfo != nullptr ? static_cast<Memo*>(flinfo->fn_extra) : nullptr;
    if (memo != nullptr && memo->user == user && std::strcmp(memo->actor, actor) == 0) return memo->value;
    return pg_call([&] {
        Datum value = PointerGetDatum(actor[0] != '\0' ? cstring_to_text(actor)
                                                         : cstring_to_text(GetUserNameFromId(user, false)));
        if (flinfo == nullptr) return value;
        MemoryContext old = MemoryContextSwitchTo(flinfo->fn_mcxt);
        if (memo == nullptr) memo = static_cast<Memo*>(palloc0(sizeof(Memo)));
        memo->user = user;
        memo->actor = pstrdup(actor);
        memo->value = datumCopy(value, false, -1);
        MemoryContextSwitchTo(old);
        flinfo->fn_extra = memo;
        return memo->value;
    });
}
