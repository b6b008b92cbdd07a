/*
 * retention.cpp — hard-deleting soft-deleted rows: one purge batch (shared by
 * lifecycle.purge and the worker), and the worker's "soft_delete_purge" task
 * for tables enabled with a retention.
 */
#include "bridge/security.hpp"
#include "bridge/spi.hpp"
#include "expiry/citus_shards.hpp"
#include "gucs.hpp"
#include "bridge/function.hpp"
#include "softdelete/softdelete.hpp"
#include "worker/tasks.hpp"

#include <algorithm>

namespace pg_lifecycle::softdelete {

using bridge::pg_call;

namespace {

/* The tables purge_batch's own statements hard-delete from, while it runs. */
std::vector<Oid> purge_tables;
int purge_depth = 0;

class PurgeScope {
public:
    explicit PurgeScope(std::vector<Oid> tables) : saved_(std::move(purge_tables)) {
        purge_tables = std::move(tables);
        ++purge_depth;
    }
    ~PurgeScope() {
        purge_tables = std::move(saved_);
        --purge_depth;
    }
    PurgeScope(const PurgeScope&) = delete;
    PurgeScope& operator=(const PurgeScope&) = delete;

private:
    std::vector<Oid> saved_;
};

/* "p.a OPERATOR(s.=) c.x AND ..." for a foreign key from c to p. */
std::string join_condition(const ForeignKey& fk) {
    std::string out;
    for (size_t i = 0; i < fk.referencing_cols.size(); ++i) {
        out += fmt::format("{}p.{} {} c.{}", i ? " AND " : "", bridge::quote_ident(fk.referenced_cols[i]), fk.eq_ops[i],
                           bridge::quote_ident(fk.referencing_cols[i]));
    }
    return out;
}

bool restricts(const ForeignKey& fk) {
    return fk.on_delete == FKCONSTR_ACTION_RESTRICT || fk.on_delete == FKCONSTR_ACTION_NOACTION;
}

/* A purge error that concerns some rows only (a live row further down a
 * cascade, a trigger that refuses): the batch is redone row by row. */
bool is_row_error(int code) {
    int category = ERRCODE_TO_CATEGORY(code);
    return category == ERRCODE_TO_CATEGORY(ERRCODE_INTEGRITY_CONSTRAINT_VIOLATION) ||
           category == ERRCODE_TO_CATEGORY(ERRCODE_TRIGGERED_ACTION_EXCEPTION) ||
           category == ERRCODE_TO_CATEGORY(ERRCODE_RAISE_EXCEPTION) ||
           category == ERRCODE_TO_CATEGORY(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE);
}

/* The latest version of the row of `table` at `tid`, as this transaction sees
 * it now: a foreign-key action (SET NULL, SET DEFAULT) of a row purged before
 * it may have updated it since its ctid was read. */
Datum latest_version(Oid table, Datum tid_array) {
    return pg_call([&] {
        Datum* elems;
        bool* nulls;
        int n;
        deconstruct_array(DatumGetArrayTypeP(tid_array), TIDOID, sizeof(ItemPointerData), false, TYPALIGN_SHORT, &elems,
                          &nulls, &n);
        auto* tid = static_cast<ItemPointer>(palloc(sizeof(ItemPointerData)));
        ItemPointerCopy(reinterpret_cast<ItemPointer>(DatumGetPointer(elems[0])), tid);
        Relation rel = table_open(table, AccessShareLock);
        Snapshot snapshot = RegisterSnapshot(GetLatestSnapshot());
        TableScanDesc scan = table_beginscan_tid(rel, snapshot);
        table_tuple_get_latest_tid(scan, tid);
        table_endscan(scan);
        UnregisterSnapshot(snapshot);
        table_close(rel, AccessShareLock);
        Datum one = PointerGetDatum(tid);
        return PointerGetDatum(construct_array(&one, 1, TIDOID, sizeof(ItemPointerData), false, TYPALIGN_SHORT));
    });
}

}  // namespace

bool purging(Oid relid) {
    return purge_depth > 0 && std::find(purge_tables.begin(), purge_tables.end(), relid) != purge_tables.end();
}

bool purge_in_progress() { return purge_depth > 0; }

/* Hard-deletes up to `batch` rows of `table` soft-deleted longer ago than
 * older_than.  A row that live rows of a protected table still reference
 * (through any foreign key: one that would cascade into them or forbid the
 * delete, and one that would set their link to NULL or its default, since a
 * live row's link is never lost), or rows of an unprotected table through a
 * RESTRICT / NO ACTION key, stays: only rows somebody deleted are removed.
 * Soft-deleted rows of protected tables whose RESTRICT / NO ACTION key
 * references a purged row go with it, in the same statement (a writable CTE
 * each), so that the foreign keys' checks and actions run once all of them
 * are gone: an action of a removed child cannot update a purged row before
 * it is removed (its ctid would be stale).  CASCADE and SET NULL are done by
 * the foreign key itself, whose cascade may only remove soft-deleted rows. */
int64 purge_batch(Oid table, Interval* older_than, int batch) {
    std::string name = bridge::qualified_relation_name(table);
    std::vector<Oid> scope_tables{table};
    std::string keep_referenced;
    std::vector<std::pair<std::string, std::string>> children; /* (child name, join condition) */
    for (const ForeignKey& fk : incoming_fks(table)) {
        bool protected_child = lookup(fk.referencing) != nullptr;
        if (!protected_child && !restricts(fk)) continue;
        std::string child = bridge::qualified_relation_name(fk.referencing);
        std::string join = join_condition(fk);
        if (protected_child) {
            keep_referenced +=
                fmt::format(" AND NOT EXISTS (SELECT 1 FROM {} c WHERE {} AND c.deleted_at IS NULL)", child, join);
            if (restricts(fk)) {
                children.emplace_back(child, join);
                scope_tables.push_back(fk.referencing);
            }
        } else {
            keep_referenced += fmt::format(" AND NOT EXISTS (SELECT 1 FROM {} c WHERE {})", child, join);
        }
    }
    std::string candidates_sql = fmt::format(
        "SELECT pg_catalog.array_agg(ctid) FROM (SELECT p.ctid FROM ONLY {} p "
        "WHERE p.deleted_at OPERATOR(pg_catalog.<) (pg_catalog.now() OPERATOR(pg_catalog.-) $1){} "
        "LIMIT $2 FOR UPDATE OF p SKIP LOCKED) x",
        name, keep_referenced);
    std::string purge_sql;
    for (size_t i = 0; i < children.size(); ++i) {
        purge_sql += fmt::format(
            "{}c{} AS (DELETE FROM {} c USING ONLY {} p WHERE p.ctid OPERATOR(pg_catalog.=) ANY ($1) "
            "AND {} AND c.deleted_at IS NOT NULL) ",
            i ? ", " : "WITH ", i, children[i].first, name, children[i].second);
    }
    purge_sql +=
        fmt::format("DELETE FROM ONLY {} WHERE ctid OPERATOR(pg_catalog.=) ANY ($1) AND deleted_at IS NOT NULL", name);

    PurgeScope scope(scope_tables);
    int nest = pg_call([] {
        int n = NewGUCNestLevel();
        (void)set_config_option("lifecycle.include_deleted", "on", PGC_USERSET, PGC_S_SESSION, GUC_ACTION_SAVE, true, 0,
                                false);
        return n;
    });
    int64 rows = 0;
    try {
        Oid types[2] = {INTERVALOID, INT4OID};
        Datum values[2] = {IntervalPGetDatum(older_than), Int32GetDatum(batch)};
        bridge::execute_sql(candidates_sql, 2, types, values, nullptr, false);
        auto found = bridge::processed_rows() ? bridge::result_datum(0, 1) : std::nullopt;
        if (found) {
            Datum ctids = pg_call([&found] { return datumCopy(*found, false, -1); });
            auto delete_rows = [&](Datum which) {
                Oid tid_array = TIDARRAYOID;
                bridge::execute_sql(purge_sql, 1, &tid_array, &which, nullptr, false);
                return static_cast<int64>(bridge::processed_rows());
            };
            bool done =
                bridge::in_subtransaction([&] { rows = delete_rows(ctids); },
                                          [](const bridge::PgError& e) { return is_row_error(e.sqlerrcode()); });
            if (!done) {
                /* Some row cannot go (a live row further down a cascade, a
                 * trigger): each row on its own, the others are purged. */
                rows = 0;
                std::vector<Datum> each;
                pg_call([&] {
                    Datum* elems;
                    bool* nulls;
                    int n;
                    deconstruct_array(DatumGetArrayTypeP(ctids), TIDOID, sizeof(ItemPointerData), false, TYPALIGN_SHORT,
                                      &elems, &nulls, &n);
                    for (int i = 0; i < n; ++i) {
                        each.push_back(PointerGetDatum(
                            construct_array(&elems[i], 1, TIDOID, sizeof(ItemPointerData), false, TYPALIGN_SHORT)));
                    }
                });
                for (Datum one : each) {
                    (void)bridge::in_subtransaction(
                        [&] { rows += delete_rows(latest_version(table, one)); },
                        [](const bridge::PgError& e) { return is_row_error(e.sqlerrcode()); });
                }
            }
        }
    } catch (...) {
        AtEOXact_GUC(false, nest);
        throw;
    }
    AtEOXact_GUC(false, nest);
    return rows;
}

PurgeResult purge_any(Oid table, Interval* older_than, int batch) {
    namespace citus = expiry::citus;
    char method = citus::partition_method(table);
    if (method == '\0') {
        int64 rows = purge_batch(table, older_than, batch);
        return {rows, rows >= batch, {}};
    }
    if (method == 'n') {
        throw Error(
            sqlstate::feature_not_supported,
            fmt::format("purging Citus reference table {} is not supported", bridge::qualified_relation_name(table)),
            "A purge picks rows by their physical position, which differs between a reference table's "
            "placements.",
            "Enable soft delete on it without a retention; as its owner, delete its soft-deleted rows "
            "with lifecycle.hard_delete and lifecycle.include_deleted on.");
    }
    /* A distributed table: one batch on every shard placement, on the node
     * that holds it (as the current role: the worker's, or lifecycle.purge's
     * caller, the table's owner); each placement's batch commits there on
     * its own. */
    std::vector<citus::Placement> where = citus::placements(table);
    std::string fn =
        bridge::quote_ident(pg_call([] { return std::string(get_namespace_name(bridge::extension_schema())); })) +
        "._purge_shard";
    std::vector<std::string> commands;
    for (const auto& p : where) {
        commands.push_back(fmt::format("SELECT {}({}::pg_catalog.regclass, {}, {})", fn, citus::literal(p.shard),
                                       citus::interval_literal(older_than), batch));
    }
    std::vector<citus::RemoteResult> results = citus::run_on_placements(where, commands);
    citus::PlacementRows sum = citus::sum_placement_rows(where, results, batch);
    return PurgeResult{sum.rows, sum.more, sum.error};
}

namespace {

/* One unit per leaf of each table enabled with a retention. */
class SoftDeletePurge final : public worker::Task {
public:
    const char* name() const override { return "soft_delete_purge"; }

    void collect(std::vector<worker::Unit>& out) const override {
        bridge::execute_sql(
            "SELECT s.tbl, c.relkind = 'p' FROM lifecycle.soft_delete_tables s "
            "JOIN pg_catalog.pg_class c ON c.oid = s.tbl WHERE s.retention IS NOT NULL ORDER BY s.tbl",
            true);
        std::vector<std::pair<Oid, bool>> tables;
        for (uint64 i = 0; i < bridge::processed_rows(); ++i) {
            tables.emplace_back(DatumGetObjectId(bridge::required_datum(i, 1)),
                                DatumGetBool(bridge::required_datum(i, 2)));
        }
        for (auto [relid, partitioned] : tables) {
            if (!partitioned) {
                out.push_back(worker::Unit{this, relid, relid, bridge::qualified_relation_name(relid)});
                continue;
            }
            List* leaves = pg_call([relid] { return find_all_inheritors(relid, NoLock, nullptr); });
            ListCell* lc;
            foreach (lc, leaves) {
                Oid leaf = lfirst_oid(lc);
                if (pg_call([leaf] { return get_rel_relkind(leaf); }) == RELKIND_RELATION) {
                    out.push_back(worker::Unit{this, leaf, relid, bridge::qualified_relation_name(leaf)});
                }
            }
        }
    }

    worker::BatchResult run_batch(const worker::Unit& unit) const override {
        static bridge::Statement retention("SELECT retention FROM lifecycle.soft_delete_tables WHERE tbl = $1",
                                           {OIDOID});
        Datum key = ObjectIdGetDatum(unit.config);
        retention.execute(&key, nullptr, true, 1);
        if (bridge::processed_rows() == 0) return {0, false};
        auto r = bridge::result_datum(0, 1);
        if (!r) return {0, false};
        Interval* older_than = DatumGetIntervalP(pg_call([&r] { return datumCopy(*r, false, 16); }));
        if (pg_call([&unit] { return get_rel_relkind(unit.target); }) == '\0') return {0, false};
        constexpr int batch = 1000;
        worker::set_batch_settings();
        PurgeResult purged;
        char method = expiry::citus::partition_method(unit.target);
        if (method != '\0' && method != 'n') {
            /* A distributed table: as the worker's own role (the table's owner
             * may not log in); _purge_shard works as the shard's owner. */
            purged = purge_any(unit.target, older_than, batch);
        } else {
            /* As the table's owner (hard delete is the owner's right), like autovacuum. */
            bridge::AsRole as_owner(bridge::relation_owner(unit.target), SECURITY_RESTRICTED_OPERATION);
            purged = purge_any(unit.target, older_than, batch);
        }
        return {purged.rows, purged.more, purged.error};
    }
};

const SoftDeletePurge soft_delete_purge;

}  // namespace

void register_retention_task() { worker::register_task(soft_delete_purge); }

}  // namespace pg_lifecycle::softdelete

using namespace pg_lifecycle;

/* lifecycle._purge_shard(shard regclass, older_than interval, batch_size integer) RETURNS bigint
 * One purge batch on a shard of a distributed soft-delete table, on the node
 * that holds it: what the coordinator's purge runs on each placement.  The
 * caller must own the shard (or be a superuser, as the worker is); the batch
 * runs as the shard's owner. */
LIFECYCLE_FUNCTION(lifecycle_purge_shard) {
    for (int i = 0; i < 3; ++i) bridge::require_arg(fcinfo, i, "argument");
    Oid shard = PG_GETARG_OID(0);
    Interval* older_than = PG_GETARG_INTERVAL_P(1);
    int32 batch = PG_GETARG_INT32(2);
    bridge::require_table(shard, "Soft delete");
    bridge::require_owner(shard, "purge it");
    if (softdelete::lookup(shard) == nullptr) {
        throw Error(sqlstate::object_not_in_prerequisite_state,
                    fmt::format("soft delete is not enabled on {}", bridge::qualified_relation_name(shard)));
    }
    if (batch < 1 || bridge::interval_sign(older_than) < 0) {
        throw Error(sqlstate::invalid_parameter_value, "batch_size must be positive and older_than not negative");
    }
    bridge::SpiConnection spi;
    worker::set_batch_settings();
    int64 rows;
    {
        bridge::AsRole as_owner(bridge::relation_owner(shard), SECURITY_RESTRICTED_OPERATION);
        rows = softdelete::purge_batch(shard, older_than, batch);
    }
    PG_RETURN_INT64(rows);
}
