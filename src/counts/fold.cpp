/*
 * fold.cpp — the "count_fold" maintenance task: one unit per counted table;
 * each batch moves up to fold_batch delta rows into the summaries in one
 * statement (delete the deltas, add their sums to count_N_bucket and
 * count_N_total), so a reader sees either all of a batch's effect or none,
 * and a crash mid-batch rolls it back.  Batches of one table never run at the
 * same time (a transaction-level advisory lock; a second folder skips the
 * table).  Runs as the count tables' owner in a security-restricted context.
 */
#include "counts/counts.hpp"
#include "worker/tasks.hpp"

namespace pg_lifecycle::counts {

using bridge::pg_call;

namespace {

constexpr int fold_batch = 50000;
/* Folders of one table exclude each other with a transaction-level lock on
 * the object (lifecycle.count_tables, id): no SQL function takes such a lock,
 * so no role can hold it to stop the fold (an advisory lock could be). */
bool try_fold_lock(int32 id) {
    Oid registry = lifecycle_relation("count_tables");
    return pg_call([registry, id] {
        LOCKTAG tag;
        SET_LOCKTAG_OBJECT(tag, MyDatabaseId, registry, static_cast<uint32>(id), 0);
        return LockAcquire(&tag, ExclusiveLock, false, true) != LOCKACQUIRE_NOT_AVAIL;
    });
}

std::string numbers(int n) {
    std::string out;
    for (int i = 1; i <= n; ++i) out += (i > 1 ? ", " : "") + std::to_string(i);
    return out;
}

std::string fold_sql(const Config& cfg) {
    std::string dims = cfg.dim_list();
    std::string sep = dims.empty() ? "" : ", ";
    int nd = static_cast<int>(cfg.dims.size());
    std::string moved = fmt::format(
        "WITH moved AS (DELETE FROM {0} WHERE ctid = ANY (ARRAY(SELECT ctid FROM {0} LIMIT $1 FOR UPDATE SKIP LOCKED)) "
        "RETURNING {1}{2}{3}lc_live, lc_delta), ",
        cfg.delta(), dims, sep, cfg.has_time() ? "lc_bucket, " : "");
    std::string total_keys = fmt::format("{}{}lc_live", dims, sep);
    if (!cfg.has_time()) {
        return moved + fmt::format(
            "agg AS (SELECT {0}, pg_catalog.sum(lc_delta)::bigint AS lc_n FROM moved GROUP BY {1}), "
            "t AS (INSERT INTO {2} AS s ({0}, lc_n) SELECT {0}, lc_n FROM agg WHERE lc_n <> 0 "
            "ON CONFLICT ({0}) DO UPDATE SET lc_n = s.lc_n + EXCLUDED.lc_n) "
            "SELECT (SELECT pg_catalog.count(*) FROM moved), (SELECT pg_catalog.count(*) FROM agg WHERE lc_n < 0)",
            total_keys, numbers(nd + 1), cfg.total());
    }
    std::string bucket_keys = fmt::format("{}{}lc_bucket, lc_live", dims, sep);
    return moved + fmt::format(
        "agg AS (SELECT {0}, pg_catalog.sum(lc_delta)::bigint AS lc_n FROM moved GROUP BY {1}), "
        "b AS (INSERT INTO {2} AS s ({0}, lc_n) SELECT {0}, lc_n FROM agg WHERE lc_n <> 0 "
        "ON CONFLICT ({0}) DO UPDATE SET lc_n = s.lc_n + EXCLUDED.lc_n), "
        "t AS (INSERT INTO {3} AS s ({4}, lc_n) SELECT {4}, pg_catalog.sum(lc_n)::bigint FROM agg GROUP BY {5} "
        "HAVING pg_catalog.sum(lc_n) <> 0 ON CONFLICT ({4}) DO UPDATE SET lc_n = s.lc_n + EXCLUDED.lc_n) "
        "SELECT (SELECT pg_catalog.count(*) FROM moved), (SELECT pg_catalog.count(*) FROM agg WHERE lc_n < 0)",
        bucket_keys, numbers(nd + 2), cfg.bucket(), cfg.total(), total_keys, numbers(nd + 1));
}

class CountFold final : public worker::Task {
public:
    const char* name() const override { return "count_fold"; }

    void collect(std::vector<worker::Unit>& out) const override {
        bridge::execute_sql(
            "SELECT c.tbl::oid FROM lifecycle.count_tables c JOIN pg_catalog.pg_class r ON r.oid = c.tbl ORDER BY c.id",
            true);
        std::vector<Oid> tables;
        for (uint64 i = 0; i < bridge::processed_rows(); ++i) {
            tables.push_back(DatumGetObjectId(*bridge::result_datum(i, 1)));
        }
        for (Oid t : tables) out.push_back(worker::Unit{this, t, t, relation_display_name(t)});
    }

    worker::BatchResult run_batch(const worker::Unit& unit) const override {
        auto cfg = load_config(unit.target);
        if (!cfg) return {0, false}; /* disabled since the pass began */
        if (!try_fold_lock(cfg->id)) return {0, false}; /* someone else is folding it */

        worker::set_batch_settings();
        std::string sql = fold_sql(*cfg);
        Oid types[1] = {INT4OID};
        Datum values[1] = {Int32GetDatum(fold_batch)};
        int64 moved = 0, negative = 0;
        {
            bridge::AsRole owner(counts_owner(*cfg), SECURITY_RESTRICTED_OPERATION);
            SPIPlanPtr plan = cached_plan(sql, 1, types);
            bridge::execute_plan(plan, values, nullptr, false, 0);
            moved = bridge::result_int64(0, 1).value_or(0);
            negative = bridge::result_int64(0, 2).value_or(0);
            if (negative > 0) {
                /* Groups that reached zero (rows deleted) are dropped. */
                if (cfg->has_time()) bridge::execute_sql(fmt::format("DELETE FROM {} WHERE lc_n = 0", cfg->bucket()), false);
                bridge::execute_sql(fmt::format("DELETE FROM {} WHERE lc_n = 0", cfg->total()), false);
            }
        }
        return {moved, moved >= fold_batch};
    }
};

const CountFold count_fold;

}  // namespace

void register_fold_task() { worker::register_task(count_fold); }

}  // namespace pg_lifecycle::counts
