/*
 * triggers.cpp — the two row triggers soft_delete_enable puts on a table.
 *
 *  soft_delete_guard    BEFORE DELETE FOR EACH ROW.  A DELETE reaches the
 *                       table only when the planner hook did not convert it
 *                       (library not preloaded in this backend yet, or
 *                       lifecycle.hard_delete).  It soft-deletes the row with
 *                       an UPDATE and skips the delete, so no row is ever
 *                       removed by accident; the statement then reports 0.
 *  soft_delete_cascade  AFTER UPDATE FOR EACH ROW WHEN (OLD.deleted_at IS NULL
 *                       AND NEW.deleted_at IS NOT NULL AND a foreign key
 *                       references the table): the foreign keys that
 *                       reference the row — ON DELETE CASCADE into enabled
 *                       tables soft-deletes the children with the same
 *                       delete_event; RESTRICT / NO ACTION with live children
 *                       raises 23503; SET NULL / SET DEFAULT leave them.
 */
#include "bridge/function.hpp"
#include "bridge/security.hpp"
#include "bridge/spi.hpp"
#include "gucs.hpp"
#include "softdelete/softdelete.hpp"

extern "C" Datum lifecycle_current_actor(PG_FUNCTION_ARGS);

namespace pg_lifecycle::softdelete {

using bridge::pg_call;

namespace {

TriggerData* trigger_data(FunctionCallInfo fcinfo, const char* name) {
    if (!CALLED_AS_TRIGGER(fcinfo)) {
        throw Error(sqlstate::trigger_protocol_violated, fmt::format("{} must be called as a trigger", name));
    }
    return reinterpret_cast<TriggerData*>(fcinfo->context);
}

/* Values of the named columns of a row, for SPI parameters. */
struct RowKey {
    std::vector<Datum> values;
    std::vector<Oid> types;
    std::string text;  /* "(a, b)=(1, 2)" for messages */
    bool has_null = false;
};

RowKey row_key(Relation rel, HeapTuple tuple, const std::vector<std::string>& cols) {
    RowKey key;
    std::string names, vals;
    for (const auto& col : cols) {
        int attnum = pg_call([&] { return SPI_fnumber(RelationGetDescr(rel), col.c_str()); });
        if (attnum <= 0) throw Error(sqlstate::undefined_column, fmt::format("column \"{}\" not found", col));
        bool isnull = false;
        Datum d = pg_call([&] { return heap_getattr(tuple, attnum, RelationGetDescr(rel), &isnull); });
        if (isnull) key.has_null = true;
        key.values.push_back(d);
        key.types.push_back(pg_call([&] { return SPI_gettypeid(RelationGetDescr(rel), attnum); }));
        char* v = pg_call([&] { return SPI_getvalue(tuple, RelationGetDescr(rel), attnum); });
        const char* sep = names.empty() ? "" : ", ";
        names += sep + col;
        vals += sep + std::string(v ? v : "null");
    }
    key.text = fmt::format("({})=({})", names, vals);
    return key;
}

/* "$1 OPERATOR(s.=) col1 AND ..." with the key's own operators: parameters
 * hold the referenced row's values. */
std::string where_key(const ForeignKey& fk, int first_param) {
    std::string out;
    for (size_t i = 0; i < fk.referencing_cols.size(); ++i) {
        out += fmt::format("{}${} {} {}", i ? " AND " : "", first_param + i, fk.eq_ops[i],
                           bridge::quote_ident(fk.referencing_cols[i]));
    }
    return out;
}

void cascade_cpp(FunctionCallInfo fcinfo) {
    TriggerData* td = trigger_data(fcinfo, "soft_delete_cascade");
    Relation rel = td->tg_relation;
    Oid relid = RelationGetRelid(rel);
    HeapTuple row = td->tg_newtuple;
    std::vector<ForeignKey> fks = incoming_fks(relid);
    if (fks.empty()) return;

    const TableInfo* self = lookup(relid);
    if (self == nullptr) return;
    bool isnull;
    Datum deleted_at = pg_call([&] { return heap_getattr(row, self->deleted_at, RelationGetDescr(rel), &isnull); });
    Datum deleted_by = pg_call([&] { return heap_getattr(row, self->deleted_by, RelationGetDescr(rel), &isnull); });
    bool by_null = isnull;
    Datum event = pg_call([&] { return heap_getattr(row, self->delete_event, RelationGetDescr(rel), &isnull); });
    bool event_null = isnull;

    bridge::SpiConnection spi;
    for (const ForeignKey& fk : fks) {
        if (fk.on_delete == FKCONSTR_ACTION_SETNULL || fk.on_delete == FKCONSTR_ACTION_SETDEFAULT) continue;
        const TableInfo* child = lookup(fk.referencing);
        bool child_enabled = child != nullptr;
        if (fk.on_delete == FKCONSTR_ACTION_CASCADE && !child_enabled) continue; /* its rows stay linked */

        RowKey key = row_key(rel, row, fk.referenced_cols);
        if (key.has_null) continue;
        std::string child_name = bridge::qualified_relation_name(fk.referencing);
        Oid child_owner = bridge::relation_owner(fk.referencing);
        int n = static_cast<int>(key.values.size());

        if (fk.on_delete == FKCONSTR_ACTION_CASCADE) {
            std::vector<Oid> types = key.types;
            types.insert(types.end(), {TIMESTAMPTZOID, TEXTOID, INT8OID});
            std::string sql = fmt::format(
                "UPDATE {} SET deleted_at = ${}, deleted_by = ${}, delete_event = ${} WHERE {} AND deleted_at IS NULL",
                child_name, n + 1, n + 2, n + 3, where_key(fk, 1));
            SPIPlanPtr plan = bridge::cached_plan(sql, static_cast<int>(types.size()), types.data());
            std::vector<Datum> values = key.values;
            values.insert(values.end(), {deleted_at, deleted_by, event});
            std::string nulls(n, ' ');
            nulls += std::string(" ") + (by_null ? "n" : " ") + (event_null ? "n" : " ");
            /* As the child's owner and outside row-level security, like the
             * foreign key's own cascade: the child's triggers see the
             * session's settings (the statement's text is fully qualified). */
            bridge::CallersSearchPath callers;
            bridge::AsRole as_owner(child_owner, SECURITY_NOFORCE_RLS);
            int rc = bridge::execute_plan(plan, values.data(), nulls.c_str(), false, 0);
            if (rc < 0) throw Error(sqlstate::internal_error, "pg_lifecycle: cascade failed");
        } else {
            /* RESTRICT / NO ACTION: live children forbid the delete. */
            std::string sql = fmt::format("SELECT 1 FROM {} WHERE {}{} LIMIT 1", child_name,
                                          where_key(fk, 1),
                                          child_enabled ? " AND deleted_at IS NULL" : "");
            SPIPlanPtr plan = bridge::cached_plan(sql, static_cast<int>(key.types.size()), key.types.data());
            int rc;
            {
                bridge::AsRole as_owner(child_owner, SECURITY_NOFORCE_RLS);
                rc = bridge::execute_plan(plan, key.values.data(), nullptr, true, 1);
            }
            if (rc < 0) throw Error(sqlstate::internal_error, "pg_lifecycle: restrict check failed");
            if (SPI_processed > 0) {
                std::string parent_name = pg_call([&] { return std::string(RelationGetRelationName(rel)); });
                std::string child_rel = pg_call([&] { return std::string(get_rel_name(fk.referencing)); });
                throw Error(sqlstate::foreign_key_violation,
                            fmt::format("update or delete on table \"{}\" violates foreign key constraint \"{}\" on "
                                        "table \"{}\"", parent_name, fk.name, child_rel),
                            fmt::format("Key {} is still referenced from table \"{}\".", key.text, child_rel));
            }
        }
    }
}

/* One delete_event per statement for the safety net: statements run by the
 * guard's own UPDATEs advance the command counter, so it keys on the
 * statement's start instead. */
LocalTransactionId guard_lxid = InvalidLocalTransactionId;
TimestampTz guard_statement = 0;
int64 guard_event = 0;
bool guard_warned = false;

Datum guard_cpp(FunctionCallInfo fcinfo) {
    TriggerData* td = trigger_data(fcinfo, "soft_delete_guard");
    if (!TRIGGER_FIRED_BEFORE(td->tg_event) || !TRIGGER_FIRED_FOR_ROW(td->tg_event) ||
        !TRIGGER_FIRED_BY_DELETE(td->tg_event)) {
        throw Error(sqlstate::trigger_protocol_violated, "soft_delete_guard must be a BEFORE DELETE FOR EACH ROW trigger");
    }
    Relation rel = td->tg_relation;
    Oid relid = RelationGetRelid(rel);
    HeapTuple row = td->tg_trigtuple;
    const TableInfo* found = lookup(relid);
    if (found == nullptr) return PointerGetDatum(row); /* not enabled (any more) */
    TableInfo info = *found;

    bool isnull;
    pg_call([&] { (void)heap_getattr(row, info.deleted_at, RelationGetDescr(rel), &isnull); });
    bool deleted = !isnull;
    /* Our own purge removes rows that are soft-deleted already, also where a
     * foreign key cascades from a purged row. */
    if (deleted && (purging(relid) || (purge_in_progress() && in_ri_context()))) return PointerGetDatum(row);
    if (hard_delete_honoured(relid)) return PointerGetDatum(row);
    if (in_ri_context()) {
        /* ON DELETE CASCADE from a parent that is being hard-deleted. */
        std::string table = bridge::qualified_relation_name(relid);
        throw Error(sqlstate::foreign_key_violation, fmt::format("hard delete cascades into soft-delete table {}", table),
                    "Its rows are protected by pg_lifecycle and are never removed by accident.",
                    "Enable soft delete on the referenced table too, or delete or purge the referencing rows first.");
    }
    if (hard_delete_requested()) refuse_hard_delete(relid);
    if (deleted) return PointerGetDatum(nullptr); /* already deleted: nothing to do */

    Oid seq = event_sequence();
    if (!OidIsValid(seq)) return PointerGetDatum(nullptr);
    bridge::SpiConnection spi;
    LocalTransactionId lxid = compat::my_lxid();
    TimestampTz statement = GetCurrentStatementStartTimestamp();
    if (lxid != guard_lxid || statement != guard_statement) {
        guard_event = DatumGetInt64(pg_call([seq] { return DirectFunctionCall1(nextval_oid, ObjectIdGetDatum(seq)); }));
        guard_lxid = lxid;
        guard_statement = statement;
        guard_warned = false;
    }
    std::string sql = fmt::format(
        "UPDATE ONLY {} SET deleted_at = pg_catalog.now(), deleted_by = $3, delete_event = $2 "
        "WHERE ctid OPERATOR(pg_catalog.=) $1",
        bridge::qualified_relation_name(relid));
    Oid types[3] = {TIDOID, INT8OID, TEXTOID};
    /* The actor is the caller; the UPDATE runs as the table's owner, since
     * DELETE privilege (already checked) is all a soft delete needs. */
    Datum actor = pg_call([] { return DirectFunctionCall1(lifecycle_current_actor, (Datum)0); });
    Datum values[3] = {PointerGetDatum(&row->t_self), Int64GetDatum(guard_event), actor};
    {
        /* The table's own triggers see the session's settings. */
        bridge::CallersSearchPath callers;
        bridge::AsRole as_owner(bridge::relation_owner(relid));
        bridge::execute_sql(sql, 3, types, values, nullptr, false);
    }
    if (!guard_warned) {
        guard_warned = true;
        std::string table = bridge::qualified_relation_name(relid);
        bool preloaded = gucs::preloaded;
        pg_call([&table, preloaded] {
            ereport(WARNING,
                    (errmsg("pg_lifecycle soft-deleted rows of %s, but this DELETE reports 0 rows", table.c_str()),
                     preloaded ? errdetail("The DELETE reached the table, and its trigger kept the rows.")
                               : errdetail("pg_lifecycle is not in shared_preload_libraries, so the DELETE reached "
                                           "the table and its trigger kept the rows."),
                     preloaded ? 0 : errhint("Add pg_lifecycle to shared_preload_libraries for exact row counts.")));
        });
    }
    return PointerGetDatum(nullptr); /* skip the physical delete */
}

}  // namespace

}  // namespace pg_lifecycle::softdelete

using namespace pg_lifecycle;

LIFECYCLE_FUNCTION(lifecycle_soft_delete_guard) { return softdelete::guard_cpp(fcinfo); }

/* lifecycle._soft_delete_referenced(tbl oid) RETURNS boolean — in the cascade
 * trigger's WHEN, so that a table no foreign key references queues no event. */
LIFECYCLE_FUNCTION(lifecycle_soft_delete_referenced) {
    PG_RETURN_BOOL(softdelete::has_incoming_fks(PG_GETARG_OID(0)));
}

LIFECYCLE_FUNCTION(lifecycle_soft_delete_cascade) {
    softdelete::cascade_cpp(fcinfo);
    return PointerGetDatum(nullptr);
}
