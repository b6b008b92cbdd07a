/*
 * expire.cpp — row expiry: lifecycle.expire_enable/expire_disable and the
 * "expire" task, which deletes expired rows with ordinary DELETEs (so soft
 * delete, foreign-key cascades and triggers apply), in batches that skip
 * locked rows, as the table's owner, under a short lock_timeout.
 */
#include "bridge/function.hpp"
#include "bridge/security.hpp"
#include "bridge/spi.hpp"
#include "expiry/expiry.hpp"
#include "softdelete/softdelete.hpp"
#include "worker/tasks.hpp"

#include <unordered_map>

namespace pg_lifecycle::expiry {

using bridge::pg_call;

namespace {


/* Where each table's next batch starts scanning (per process). */
std::unordered_map<Oid, ItemPointerData> resume_points;

ItemPointerData resume_after(Oid table) {
    auto it = resume_points.find(table);
    if (it != resume_points.end()) return it->second;
    ItemPointerData start{};
    ItemPointerSet(&start, 0, 0);
    return start;
}

void resume_at(Oid table, const ItemPointerData* tid) {
    if (tid == nullptr) {
        resume_points.erase(table);
    } else {
        resume_points[table] = *tid;
    }
}

class ExpireTask final : public worker::Task {
public:
    const char* name() const override { return "expire"; }

    void collect(std::vector<worker::Unit>& out) const override {
        bridge::execute_sql(
            "SELECT e.tbl, c.relkind::text FROM lifecycle.expire_tables e JOIN pg_catalog.pg_class c ON c.oid = e.tbl "
            "ORDER BY c.relkind = 'p', e.tbl",  /* a partition's own registration comes before its parent's */
            true);
        std::vector<std::pair<Oid, bool>> registered;
        for (uint64 i = 0; i < bridge::processed_rows(); ++i) {
            Oid relid = DatumGetObjectId(*bridge::result_datum(i, 1));
            registered.emplace_back(relid, bridge::result_text(i, 2).value_or("") == "p");
        }
        auto add = [&](Oid target, Oid config) {
            for (const auto& u : out) {
                if (u.task == this && u.target == target) return;
            }
            out.push_back(worker::Unit{this, target, config, bridge::qualified_relation_name(target)});
        };
        for (auto [relid, partitioned] : registered) {
            if (!partitioned) {
                add(relid, relid);
                continue;
            }
            /* One unit per leaf partition: the same round-robin fairness as tables. */
            List* leaves = pg_call([relid] { return find_all_inheritors(relid, NoLock, nullptr); });
            ListCell* lc;
            foreach (lc, leaves) {
                Oid leaf = lfirst_oid(lc);
                if (pg_call([leaf] { return get_rel_relkind(leaf); }) == RELKIND_RELATION) add(leaf, relid);
            }
        }
    }

    worker::BatchResult run_batch(const worker::Unit& unit) const override {
        static bridge::Statement config(
            "SELECT column_name::text, after, batch_size FROM lifecycle.expire_tables WHERE tbl = $1", {OIDOID});
        Datum key = ObjectIdGetDatum(unit.config);
        config.execute(&key, nullptr, true, 1);
        if (bridge::processed_rows() == 0) return {0, false}; /* disabled since the pass began */
        std::string column = *bridge::result_text(0, 1);
        Datum after = pg_call([] {
            bool isnull;
            return datumCopy(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2, &isnull), false, 16);
        });
        int64 batch = *bridge::result_int64(0, 3);
        if (pg_call([&unit] { return get_rel_relkind(unit.target); }) == '\0') return {0, false}; /* dropped */

        std::string table = bridge::qualified_relation_name(unit.target);
        std::string col = bridge::quote_ident(column);
        /* On a soft-delete table the DELETE keeps the rows: pick live ones only
         * (with hide on, the planner hook adds the same test). */
        const char* live = softdelete::lookup(unit.target) ? " AND deleted_at IS NULL" : "";
        /* Each batch resumes its scan after the last row the previous one looked
         * at (a TID range scan), so a big backlog costs one pass over the table,
         * not one per batch; a short batch ends the sweep and the next one starts
         * again from the first block. */
        std::string sql = fmt::format(
            "WITH candidates AS (SELECT ctid FROM ONLY {0} WHERE ctid > $3 AND {1} <= now() - $1{2} "
            "LIMIT $2 FOR UPDATE SKIP LOCKED), "
            "deleted AS (DELETE FROM ONLY {0} WHERE ctid = ANY (ARRAY(SELECT ctid FROM candidates)) "
            "AND {1} <= now() - $1 RETURNING 1) "
            "SELECT (SELECT count(*) FROM candidates), (SELECT max(ctid) FROM candidates), "
            "(SELECT count(*) FROM deleted)",
            table, col, live);
        ItemPointerData from = resume_after(unit.target);
        Oid types[3] = {INTERVALOID, INT8OID, TIDOID};
        Datum values[3] = {after, Int64GetDatum(batch), PointerGetDatum(&from)};

        worker::set_batch_settings();
        Oid owner = bridge::relation_owner(unit.target);
        int nest = pg_call([] { return NewGUCNestLevel(); });
        {
            /* As the table's owner, like autovacuum: its triggers never run with
             * the worker's superuser rights. */
            bridge::AsRole as_owner(owner, SECURITY_RESTRICTED_OPERATION);
            bridge::execute_cached(sql, 3, types, values, nullptr, false);
        }
        pg_call([nest] { AtEOXact_GUC(false, nest); });
        int64 candidates = bridge::result_int64(0, 1).value_or(0);
        auto last = bridge::result_datum(0, 2);
        int64 rows = bridge::result_int64(0, 3).value_or(0);
        bool more = candidates >= batch && last.has_value();
        resume_at(unit.target, more ? reinterpret_cast<const ItemPointerData*>(DatumGetPointer(*last)) : nullptr);
        return {rows, more};
    }
};

const ExpireTask expire_task;

}  // namespace

void register_expire_task() { worker::register_task(expire_task); }

}  // namespace pg_lifecycle::expiry

using namespace pg_lifecycle;
using bridge::pg_call;

/* lifecycle.expire_enable(tbl regclass, column_name name, after interval, batch_size integer) RETURNS void */
LIFECYCLE_FUNCTION(lifecycle_expire_enable) {
    bridge::require_arg(fcinfo, 0, "tbl");
    bridge::require_arg(fcinfo, 1, "column_name");
    bridge::require_arg(fcinfo, 2, "after");
    bridge::require_arg(fcinfo, 3, "batch_size");
    Oid relid = PG_GETARG_OID(0);
    std::string column = NameStr(*PG_GETARG_NAME(1));
    Interval* after = PG_GETARG_INTERVAL_P(2);
    int32 batch_size = PG_GETARG_INT32(3);

    bridge::require_table(relid, "Row expiry");
    std::string table = bridge::qualified_relation_name(relid);
    bridge::require_owner(relid, "enable expiry on it");

    AttrNumber attnum = pg_call([&] { return get_attnum(relid, column.c_str()); });
    if (attnum == InvalidAttrNumber) {
        throw Error(sqlstate::undefined_column,
                    fmt::format("column \"{}\" of relation {} does not exist", column, table));
    }
    Oid type = pg_call([&] { return get_atttype(relid, attnum); });
    if (type != TIMESTAMPTZOID && type != TIMESTAMPOID && type != DATEOID) {
        throw Error(sqlstate::datatype_mismatch,
                    fmt::format("column \"{}\" of relation {} is not a timestamp", column, table),
                    fmt::format("Its type is {}.", pg_call([type] { return std::string(format_type_be(type)); })),
                    "Expiry needs a timestamptz, timestamp or date column.");
    }
    if (bridge::interval_sign(after) < 0) {
        throw Error(sqlstate::invalid_parameter_value, "after must not be negative",
                    {}, "A row expires when column + after <= now().");
    }
    if (batch_size < 1 || batch_size > 1000000) {
        throw Error(sqlstate::invalid_parameter_value,
                    fmt::format("batch_size must be between 1 and 1000000, not {}", batch_size));
    }

    static bridge::Statement upsert(
        "INSERT INTO lifecycle.expire_tables (tbl, column_name, after, batch_size) VALUES ($1, $2, $3, $4) "
        "ON CONFLICT (tbl) DO UPDATE SET column_name = EXCLUDED.column_name, after = EXCLUDED.after, "
        "batch_size = EXCLUDED.batch_size",
        {REGCLASSOID, NAMEOID, INTERVALOID, INT4OID});
    bridge::SpiConnection spi;
    Oid ext_owner = bridge::extension_owner();
    Datum values[4] = {ObjectIdGetDatum(relid), PG_GETARG_DATUM(1), IntervalPGetDatum(after), Int32GetDatum(batch_size)};
    bridge::AsRole as_owner(ext_owner);
    upsert.execute(values, nullptr, false);
    PG_RETURN_VOID();
}

/* lifecycle.expire_disable(tbl regclass) RETURNS void */
LIFECYCLE_FUNCTION(lifecycle_expire_disable) {
    bridge::require_arg(fcinfo, 0, "tbl");
    Oid relid = PG_GETARG_OID(0);
    bridge::require_table(relid, "Row expiry");
    std::string table = bridge::qualified_relation_name(relid);
    bridge::require_owner(relid, "disable expiry on it");

    static bridge::Statement remove("DELETE FROM lifecycle.expire_tables WHERE tbl = $1", {REGCLASSOID});
    bridge::SpiConnection spi;
    Oid ext_owner = bridge::extension_owner();
    Datum key = ObjectIdGetDatum(relid);
    {
        bridge::AsRole as_owner(ext_owner);
        remove.execute(&key, nullptr, false);
    }
    if (bridge::processed_rows() == 0) {
        throw Error(sqlstate::wrong_object_state, fmt::format("expiry is not enabled on table {}", table),
                    {}, "See lifecycle.expire_tables for the tables it is enabled on.");
    }
    PG_RETURN_VOID();
}
