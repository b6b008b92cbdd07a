/*
 * maintenance.cpp — lifecycle.run_maintenance() (one pass from SQL, each
 * batch in a subtransaction of the caller's transaction) and the history task
 * that keeps lifecycle.job_runs bounded.
 */
#include "bridge/function.hpp"
#include "bridge/security.hpp"
#include "bridge/spi.hpp"
#include "gucs.hpp"
#include "worker/launcher.hpp"
#include "worker/tasks.hpp"

namespace pg_lifecycle::worker {

using bridge::pg_call;

namespace {

class Subtransactions final : public Executor {
public:
    bool run(const std::function<void()>& body, std::string& error) override {
        try {
            return bridge::in_subtransaction(
                [&body] {
                    /* A GUC nest level, so settings made by the batch (SET LOCAL
                     * lock_timeout) do not pass up to the caller's transaction
                     * when the subtransaction is released. */
                    int nest = pg_call([] { return NewGUCNestLevel(); });
                    {
                        bridge::SpiConnection spi;
                        body();
                    }
                    pg_call([nest] { AtEOXact_GUC(false, nest); });
                },
                [&error](const bridge::PgError& e) {
                    /* A cancel (statement_timeout, pg_cancel_backend) or a
                     * shutdown ends run_maintenance itself, not just a batch. */
                    if (ERRCODE_TO_CATEGORY(e.sqlerrcode()) == ERRCODE_TO_CATEGORY(ERRCODE_OPERATOR_INTERVENTION)) {
                        return false;
                    }
                    error = describe_error(e);
                    return true;
                });
        } catch (const bridge::PgError&) {
            throw; /* not handled above: it ends run_maintenance */
        } catch (const std::exception& e) {
            /* A C++ error: the subtransaction was rolled back before it got here. */
            error = describe_error(e);
            return false;
        }
    }

    void between_batches() override { bridge::check_for_interrupts(); }

    void report_failure(const Unit& unit, const std::string& error) override {
        std::string msg = describe_failure(unit, error);
        pg_call([&msg] { ereport(WARNING, (errmsg("pg_lifecycle maintenance: %s", msg.c_str()))); });
    }
};

/* Keeps lifecycle.job_runs to lifecycle.history_retention. */
class HistoryPurge final : public Task {
public:
    const char* name() const override { return "job_runs_purge"; }

    void collect(std::vector<Unit>& out) const override {
        Oid rel = bridge::extension_relation("job_runs");
        out.push_back(Unit{this, rel, rel, "lifecycle.job_runs"});
    }

    BatchResult run_batch(const Unit&) const override {
        static bridge::Statement purge(
            "DELETE FROM lifecycle.job_runs WHERE id IN (SELECT id FROM lifecycle.job_runs "
            "WHERE finished_at < pg_catalog.now() - $1 ORDER BY id LIMIT $2)",
            {INTERVALOID, INT4OID});
        constexpr int batch = 5000;
        Datum values[2] = {IntervalPGetDatum(gucs::interval_value(gucs::history_retention)), Int32GetDatum(batch)};
        set_batch_settings();
        purge.execute(values, nullptr, false);
        int64 rows = static_cast<int64>(bridge::processed_rows());
        return {rows, rows >= batch};
    }
};

const HistoryPurge history_purge;

Interval* positive_interval_arg(FunctionCallInfo fcinfo, int n, const char* name) {
    bridge::require_arg(fcinfo, n, name);
    Interval* iv = PG_GETARG_INTERVAL_P(n);
    if (bridge::interval_sign(iv) <= 0) {
        throw Error(sqlstate::invalid_parameter_value, fmt::format("{} must be a positive interval", name));
    }
    return iv;
}

}  // namespace

void register_history_task() { register_task(history_purge); }

}  // namespace pg_lifecycle::worker

using namespace pg_lifecycle;

/* lifecycle.run_maintenance(max_runtime interval) RETURNS TABLE(task text, target regclass, rows bigint) */
LIFECYCLE_FUNCTION(lifecycle_run_maintenance) {
    Interval* max_runtime = worker::positive_interval_arg(fcinfo, 0, "max_runtime");
    if (bridge::pg_call([] { return RecoveryInProgress(); })) {
        throw Error(ERRCODE_READ_ONLY_SQL_TRANSACTION, "lifecycle.run_maintenance cannot run on a standby",
                    "A hot standby is read-only; maintenance runs on the primary and replicates.");
    }
    TimestampTz deadline = bridge::pg_call([max_runtime] {
        return DatumGetTimestampTz(DirectFunctionCall2(
            timestamptz_pl_interval, TimestampTzGetDatum(GetCurrentTimestamp()), IntervalPGetDatum(max_runtime)));
    });

    worker::Subtransactions exec;
    worker::PassOutcome pass = worker::run_pass(exec, deadline);
    if (!pass.error.empty()) {
        throw Error(sqlstate::internal_error, fmt::format("maintenance pass failed: {}", pass.error));
    }
    {
        bridge::SpiConnection spi;
        worker::record_pass(pass);
    }

    ReturnSetInfo* rsinfo = reinterpret_cast<ReturnSetInfo*>(fcinfo->resultinfo);
    bridge::pg_call([fcinfo] { InitMaterializedSRF(fcinfo, 0); });
    for (const auto& u : pass.units) {
        Datum values[3] = {bridge::text_datum(u.unit.task->name()), ObjectIdGetDatum(u.unit.target),
                           Int64GetDatum(u.rows)};
        bool nulls[3] = {false, false, u.failed};
        bridge::pg_call([&] { tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls); });
    }
    return (Datum)0;
}

/* lifecycle._worker_state(dboid oid DEFAULT NULL) RETURNS jsonb: the
 * launcher's view of a database (the current one by default), NULL when the
 * library is not preloaded; for health(). */
LIFECYCLE_FUNCTION(lifecycle_worker_state) {
    Oid dboid = PG_ARGISNULL(0) ? MyDatabaseId : PG_GETARG_OID(0);
    std::string json = worker::database_state_json(dboid);
    if (json.empty()) PG_RETURN_NULL();
    return bridge::pg_call([&json] { return DirectFunctionCall1(jsonb_in, CStringGetDatum(json.c_str())); });
}
