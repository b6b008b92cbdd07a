/*
 * functions.cpp — lifecycle.soft_delete_enable/soft_delete_disable/restore/
 * purge/soft_unique, and the two helpers used inside soft-deleting
 * statements (current_delete_event, current_actor).
 */
#include "bridge/function.hpp"
#include "bridge/security.hpp"
#include "bridge/spi.hpp"
#include "gucs.hpp"
#include "softdelete/softdelete.hpp"

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
        throw Error(sqlstate::wrong_object_state,
                    fmt::format("soft delete is not enabled on table {}", bridge::qualified_relation_name(relid)),
                    {}, "See lifecycle.soft_delete_tables; enable it with lifecycle.soft_delete_enable().");
    }
    return *info;
}

/* Runs body with lifecycle.include_deleted on, in a GUC nest level whose
 * changes (ours, and whatever the table's triggers set) are rolled back
 * afterwards. */
void with_deleted_rows_visible(const std::function<void()>& body) {
    int nest = pg_call([] {
        int n = NewGUCNestLevel();
        (void)set_config_option("lifecycle.include_deleted", "on", PGC_USERSET, PGC_S_SESSION, GUC_ACTION_SAVE,
                                true, 0, false);
        return n;
    });
    try {
        body();
    } catch (...) {
        AtEOXact_GUC(false, nest);
        throw;
    }
    AtEOXact_GUC(false, nest);
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
    for (uint64 i = 0; i < bridge::processed_rows(); ++i) cols.push_back(*bridge::result_text(i, 1));
    return cols;
}

/* Copies of the named columns of result row `r` (types alongside); false if one is NULL. */
bool copy_columns(SPITupleTable* tuptable, uint64 r, const std::vector<std::string>& cols, std::vector<Oid>& types,
                  std::vector<Datum>& values) {
    bool has_null = false;
    for (const auto& col : cols) {
        int attnum = pg_call([&] { return SPI_fnumber(tuptable->tupdesc, col.c_str()); });
        Oid type = pg_call([&] { return SPI_gettypeid(tuptable->tupdesc, attnum); });
        bool isnull;
        Datum d = pg_call([&] {
            Datum v = SPI_getbinval(tuptable->vals[r], tuptable->tupdesc, attnum, &isnull);
            int16 len;
            bool byval;
            get_typlenbyval(type, &len, &byval);
            return isnull ? v : datumCopy(v, byval, len);
        });
        has_null = has_null || isnull;
        types.push_back(type);
        values.push_back(d);
    }
    return !has_null;
}

/* A key value of type `from` as a value of type `to`, through their text
 * forms (22P02 naming the column when it does not fit). */
Datum convert_id(Datum id, Oid from, Oid to, const std::string& column, const std::string& table) {
    std::string text = pg_call([&] {
        if (from == UNKNOWNOID || from == CSTRINGOID) return std::string(DatumGetCString(id));
        Oid out;
        bool varlena;
        getTypeOutputInfo(from, &out, &varlena);
        return std::string(OidOutputFunctionCall(out, id));
    });
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

/* A parent a restored row references, to be checked once the restore is done. */
struct ParentCheck {
    ForeignKey fk;
    std::vector<Oid> types;
    std::vector<Datum> values;
};

/* Key values of `n` result rows for each of `table`'s foreign keys into
 * enabled tables. */
void remember_parents(std::vector<ParentCheck>& checks, Oid table, SPITupleTable* tuptable, uint64 n) {
    for (const ForeignKey& fk : outgoing_fks(table)) {
        if (lookup(fk.referenced) == nullptr) continue;
        for (uint64 r = 0; r < n; ++r) {
            ParentCheck check{fk, {}, {}};
            if (copy_columns(tuptable, r, fk.referencing_cols, check.types, check.values)) {
                checks.push_back(std::move(check));
            }
        }
    }
}

/* Restores the rows of `table` matching `where` (with params) that carry
 * delete_event `event`, then, recursively, the rows its ON DELETE CASCADE
 * children lost in the same event.  Returns the number of rows restored. */
int64 restore_rows(Oid table, const std::string& where, std::vector<Oid> types, std::vector<Datum> values,
                   int64 event, std::vector<ParentCheck>& checks) {
    int n = static_cast<int>(values.size());
    types.push_back(INT8OID);
    values.push_back(Int64GetDatum(event));
    std::string sql = fmt::format(
        "UPDATE {} SET deleted_at = NULL, deleted_by = NULL, delete_event = NULL "
        "WHERE {} AND deleted_at IS NOT NULL AND delete_event OPERATOR(pg_catalog.=) ${} RETURNING *",
        bridge::qualified_relation_name(table), where, n + 1);
    {
        /* As the caller, whose settings the table's triggers see. */
        bridge::CallersSearchPath callers;
        bridge::execute_sql(sql, static_cast<int>(values.size()), types.data(), values.data(), nullptr, false);
    }
    uint64 restored = bridge::processed_rows();
    if (restored == 0) return 0;
    remember_parents(checks, table, SPI_tuptable, restored);

    /* Copy what the children need out of this result before running more SQL. */
    std::vector<ForeignKey> fks;
    for (const ForeignKey& fk : incoming_fks(table)) {
        /* Any foreign key, not only ON DELETE CASCADE: rows an application
         * deleted itself, child by child, in the same transaction as their
         * parent (ORMs that cascade in code) share its event. */
        if (lookup(fk.referencing) != nullptr) fks.push_back(fk);
    }
    struct ChildWork {
        const ForeignKey* fk;
        std::vector<Oid> types;
        std::vector<Datum> values;
    };
    std::vector<ChildWork> work;
    SPITupleTable* tuptable = SPI_tuptable;
    for (uint64 r = 0; r < restored; ++r) {
        for (const ForeignKey& fk : fks) {
            ChildWork w{&fk, {}, {}};
            if (copy_columns(tuptable, r, fk.referenced_cols, w.types, w.values)) work.push_back(std::move(w));
        }
    }
    int64 total = static_cast<int64>(restored);
    for (auto& w : work) {
        std::string child_where;
        for (size_t i = 0; i < w.fk->referencing_cols.size(); ++i) {
            child_where += fmt::format("{}${} {} {}", i ? " AND " : "", i + 1, w.fk->eq_ops[i],
                                       bridge::quote_ident(w.fk->referencing_cols[i]));
        }
        total += restore_rows(w.fk->referencing, child_where, w.types, w.values, event, checks);
    }
    return total;
}

void check_parents(const std::vector<ParentCheck>& checks) {
    for (const ParentCheck& c : checks) {
        check_parent_not_deleted(c.fk, c.types, c.values, fmt::format("Foreign key \"{}\".", c.fk.name));
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
    std::string sql = fmt::format("SELECT x.deleted_at IS NOT NULL FROM {} x WHERE {} FOR SHARE OF x", parent, where);
    {
        bridge::AsRole as_owner(bridge::relation_owner(fk.referenced), SECURITY_NOFORCE_RLS);
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

/* lifecycle.soft_delete_enable(tbl regclass, retention interval, hide boolean) RETURNS void */
LIFECYCLE_FUNCTION(lifecycle_soft_delete_enable) {
    bridge::require_arg(fcinfo, 0, "tbl");
    bridge::require_arg(fcinfo, 2, "hide");
    Oid relid = PG_GETARG_OID(0);
    bridge::require_table(relid, "Soft delete");
    std::string table = bridge::qualified_relation_name(relid);
    bridge::require_owner(relid, "enable soft delete on it");
    if (!PG_ARGISNULL(1)) {
        Interval* retention = PG_GETARG_INTERVAL_P(1);
        if (bridge::interval_sign(retention) <= 0) throw Error(sqlstate::invalid_parameter_value, "retention must be a positive interval",
                                   {}, "Pass NULL to keep soft-deleted rows until purged by hand.");
    }

    bridge::SpiConnection spi;
    if (softdelete::primary_key_columns(relid).empty()) {
        throw Error(sqlstate::wrong_object_state, fmt::format("table {} has no primary key", table),
                    "Soft delete restores rows by their primary key.", "ALTER TABLE … ADD PRIMARY KEY (…);");
    }
    /* The three columns: added when missing, checked when present. */
    for (const auto& col : softdelete::soft_columns) {
        AttrNumber attnum = pg_call([&] { return get_attnum(relid, col.name); });
        if (attnum == InvalidAttrNumber) {
            bridge::execute_sql(fmt::format("ALTER TABLE {} ADD COLUMN {} {}", table, col.name, col.sql_type), false);
        } else if (!softdelete::soft_column_type_ok(col.name, pg_call([&] { return get_atttype(relid, attnum); }))) {
            throw Error(sqlstate::datatype_mismatch,
                        fmt::format("column \"{}\" of table {} must be of type {}", col.name, table, col.sql_type),
                        {}, "Rename or drop the column, then enable soft delete again.");
        }
    }
    softdelete::install_triggers(relid);

    static bridge::Statement upsert(
        "INSERT INTO lifecycle.soft_delete_tables (tbl, retention, hide) VALUES ($1, $2, $3) "
        "ON CONFLICT (tbl) DO UPDATE SET retention = EXCLUDED.retention, hide = EXCLUDED.hide",
        {REGCLASSOID, INTERVALOID, BOOLOID});
    Datum values[3] = {ObjectIdGetDatum(relid), PG_ARGISNULL(1) ? (Datum)0 : PG_GETARG_DATUM(1), PG_GETARG_DATUM(2)};
    char nulls[4] = "   ";
    if (PG_ARGISNULL(1)) nulls[1] = 'n';
    {
        bridge::AsRole as_owner(bridge::extension_owner());
        upsert.execute(values, nulls, false);
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
        throw Error(sqlstate::wrong_object_state, fmt::format("soft delete is not enabled on table {}", table),
                    {}, "See lifecycle.soft_delete_tables for the tables it is enabled on.");
    }
    softdelete::remove_triggers(relid);
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
    if (pk.size() != 1) {
        throw Error(sqlstate::feature_not_supported,
                    fmt::format("lifecycle.restore needs a single-column primary key; {} has {} columns", table,
                                pk.size()));
    }
    std::string pk_col = bridge::quote_ident(pk[0]);
    /* The id as a value of the key's type (drivers send text, other widths). */
    Oid pk_type = pg_call([&] { return get_atttype(relid, get_attnum(relid, pk[0].c_str())); });
    if (id_type != pk_type) {
        id = softdelete::convert_id(id, id_type, pk_type, pk[0], table);
        id_type = pk_type;
    }
    std::string eq = bridge::equality_operator(pk_type);
    int64 total = 0;
    softdelete::RestoreScope restoring;
    softdelete::with_deleted_rows_visible([&] {
        std::string find = fmt::format("SELECT delete_event, deleted_at IS NOT NULL FROM {} WHERE {} {} $1", table,
                                       pk_col, eq);
        bridge::execute_sql(find, 1, &id_type, &id, nullptr, true, 2);
        if (bridge::processed_rows() == 0) {
            std::string shown = pg_call([&] {
                Oid out;
                bool varlena;
                getTypeOutputInfo(id_type, &out, &varlena);
                return std::string(OidOutputFunctionCall(out, id));
            });
            throw Error(sqlstate::invalid_parameter_value, fmt::format("no row with {} = {} in table {}", pk[0], shown, table));
        }
        bool deleted = DatumGetBool(*bridge::result_datum(0, 2));
        if (!deleted) return; /* live already: nothing to restore */
        std::optional<int64> event = bridge::result_int64(0, 1);

        std::vector<softdelete::ParentCheck> checks;
        if (event) {
            total = softdelete::restore_rows(relid, fmt::format("{} {} $1", pk_col, eq), {id_type}, {id}, *event,
                                             checks);
        } else {
            /* Deleted by hand, without an event: just the row. */
            bridge::CallersSearchPath callers;
            bridge::execute_sql(fmt::format("UPDATE {} SET deleted_at = NULL, deleted_by = NULL WHERE {} {} $1 RETURNING *",
                                            table, pk_col, eq),
                                1, &id_type, &id, nullptr, false);
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
            throw Error(sqlstate::invalid_parameter_value,
                        fmt::format("table {} has no retention: pass older_than", bridge::qualified_relation_name(relid)),
                        {}, "lifecycle.purge('t', '0') purges every soft-deleted row.");
        }
        older_than = DatumGetIntervalP(*r);
    }
    if (bridge::interval_sign(older_than) < 0) throw Error(sqlstate::invalid_parameter_value, "older_than must not be negative");

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
            int64 rows = softdelete::purge_batch(leaf, older_than, batch);
            total += rows;
            if (rows < batch) break;
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
            throw Error(sqlstate::undefined_column, fmt::format("column \"{}\" of relation {} does not exist", col, table));
        }
        cols += (i ? ", " : "") + bridge::quote_ident(col);
        name_part += (i ? "_" : "") + col;
    }
    std::string index = pg_call([&] {
        return std::string(ChooseRelationName(get_rel_name(relid), name_part.c_str(), "live_key",
                                              get_rel_namespace(relid), false));
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
            throw Error(sqlstate::wrong_object_state, "extension \"pg_lifecycle\" is not installed in this database");
        }
        event = DatumGetInt64(pg_call([seq] { return DirectFunctionCall1(nextval_oid, ObjectIdGetDatum(seq)); }));
        lxid = my_lxid;
    }
    PG_RETURN_INT64(event);
}

/* lifecycle.actor when set, else current_user: recorded in deleted_by. */
LIFECYCLE_FUNCTION(lifecycle_current_actor) {
    (void)fcinfo;
    if (gucs::actor != nullptr && gucs::actor[0] != '\0') return bridge::text_datum(gucs::actor);
    return pg_call([] { return PointerGetDatum(cstring_to_text(GetUserNameFromId(GetUserId(), false))); });
}
