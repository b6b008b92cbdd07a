/*
 * fold.cpp — the "count_fold" maintenance task: one unit per counted table;
 * each batch moves up to fold_batch delta rows into the summaries in one
 * statement (delete the deltas, add their sums to every summary of the
 * lattice, count_N_s<k>, at each of its levels), so a reader sees either all
 * of a batch's effect or none,
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

/* One statement: delete a batch of deltas, add their sums to every summary
 * (each at its levels), and return how many deltas moved and, per summary,
 * the rows that reached zero (as a tid[] text). */
std::string fold_sql(const Config& cfg) {
    std::string dims = cfg.dim_list();
    std::string sep = dims.empty() ? "" : ", ";
    std::string sql = fmt::format(
        "WITH moved AS (DELETE FROM {0} WHERE ctid = ANY (ARRAY(SELECT ctid FROM {0} LIMIT $1 FOR UPDATE SKIP LOCKED)) "
        "RETURNING {1}{2}{3}lc_live, lc_delta), ",
        cfg.delta(), dims, sep, cfg.has_time() ? "lc_bucket AS lc_fb, " : "");
    sql += fmt::format(
        "agg AS MATERIALIZED (SELECT {0}{1}{2}lc_live, pg_catalog.sum(lc_delta)::bigint AS lc_c FROM moved "
        "GROUP BY {3})",
        dims, sep, cfg.has_time() ? "lc_fb, " : "",
        numbers(static_cast<int>(cfg.dims.size()) + (cfg.has_time() ? 2 : 1)));
    std::string result = "SELECT (SELECT pg_catalog.count(*) FROM moved)";
    for (const auto& s : cfg.lattice) {
        std::string sd = cfg.dim_list(s);
        std::string keys = fmt::format("{}{}lc_level, lc_bucket, lc_live", sd, sd.empty() ? "" : ", ");
        sql += fmt::format(
            ", s{0} AS (INSERT INTO {1} AS s ({2}, lc_n) SELECT * FROM ({3}) r WHERE lc_n <> 0 "
            "ON CONFLICT ({2}) DO UPDATE SET lc_n = s.lc_n + EXCLUDED.lc_n RETURNING s.ctid AS lc_tid, s.lc_n)",
            s.no, cfg.summary(s.no), keys, summary_rows_sql(cfg, s, "agg"));
        result += fmt::format(", (SELECT pg_catalog.array_agg(lc_tid)::text FROM s{} WHERE lc_n = 0)", s.no);
    }
    return sql + " " + result;
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
            tables.push_back(DatumGetObjectId(bridge::required_datum(i, 1)));
        }
        for (Oid t : tables) out.push_back(worker::Unit{this, t, t, relation_display_name(t)});
    }

    worker::BatchResult run_batch(const worker::Unit& unit) const override {
        auto cfg = load_config(unit.target);
        if (!cfg) return {0, false};                    /* disabled since the pass began */
        if (cfg->legacy) return {0, false};             /* 0.1's schema: ALTER EXTENSION UPDATE rebuilds */
        if (!try_fold_lock(cfg->id)) return {0, false}; /* someone else is folding it */
        if (citus::kind(cfg->relid) != citus::Kind::none) return {citus::fold(*cfg), false};

        worker::set_batch_settings();
        std::string sql = fold_sql(*cfg);
        Oid types[1] = {INT4OID};
        Datum values[1] = {Int32GetDatum(fold_batch)};
        int64 moved = 0;
        {
            bridge::AsRole owner(counts_owner(*cfg), SECURITY_RESTRICTED_OPERATION);
            SPIPlanPtr plan = cached_plan(sql, 1, types);
            bridge::execute_plan(plan, values, nullptr, false, 0);
            moved = bridge::result_int64(0, 1).value_or(0);
            std::vector<std::pair<int, std::string>> zeros;
            for (const auto& s : cfg->lattice) {
                if (auto tids = bridge::result_text(0, s.no + 2)) zeros.emplace_back(s.no, *tids);
            }
            /* Groups that reached zero (rows deleted) are dropped: the rows
             * this batch wrote, found by the tids it returned (nobody else
             * writes the summaries while we hold the fold lock). */
            for (const auto& [no, tids] : zeros) {
                Oid t[1] = {TEXTOID};
                Datum v[1] = {bridge::text_datum(tids)};
                bridge::execute_sql(fmt::format("DELETE FROM {} WHERE ctid = ANY ($1::pg_catalog.tid[]) AND lc_n = 0",
                                                cfg->summary(no)),
                                    1, t, v, nullptr, false, 0);
            }
        }
        return {moved, moved >= fold_batch};
    }
};

const CountFold count_fold;

}  // namespace

void register_fold_task() { worker::register_task(count_fold); }

}  // namespace pg_lifecycle::counts
