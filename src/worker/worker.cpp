/*
 * worker.cpp — a per-database worker of the launcher's pool: a maintenance
 * pass (more, back to back, while a backlog remains and no other database
 * waits), each batch in its own transaction; then it exits.
 */
#include "bridge/security.hpp"
#include "bridge/spi.hpp"
#include "gucs.hpp"
#include "worker/launcher.hpp"
#include "worker/tasks.hpp"

#include <sys/resource.h>

extern "C" {
PGDLLEXPORT void lifecycle_worker_main(Datum arg);
}

namespace pg_lifecycle::worker {

using bridge::pg_call;

namespace {

/* Lower the worker's CPU priority to lifecycle.worker_nice: it then uses idle
 * CPU fully but yields to application backends when the machine is busy. */
void apply_nice() {
    static int applied = 0;
    if (gucs::worker_nice <= applied) return; /* raising it back needs privileges */
    if (setpriority(PRIO_PROCESS, 0, gucs::worker_nice) == 0) applied = gucs::worker_nice;
}

void reload_config_if_asked() {
    if (ConfigReloadPending) {
        ConfigReloadPending = false;
        pg_call([] { ProcessConfigFile(PGC_SIGHUP); });
        apply_nice();
    }
}

/* Client backends running a statement right now (any database). */
int busy_client_backends() {
    return pg_call([] {
        int busy = 0;
        pgstat_clear_backend_activity_snapshot();
        int n = pgstat_fetch_stat_numbackends();
        for (int i = 1; i <= n; ++i) {
            LocalPgBackendStatus* local = pgstat_get_local_beentry_by_index(i);
            PgBackendStatus* be = local != nullptr ? &local->backendStatus : nullptr;
            if (be != nullptr && be->st_backendType == B_BACKEND && be->st_state == STATE_RUNNING &&
                be->st_procpid != MyProcPid) {
                ++busy;
            }
        }
        return busy;
    });
}

/* Each body runs in a transaction of its own, committed on success.
 * Between batches the worker yields to application traffic: while client
 * backends are running statements it pauses `busy_pause_factor` times as long
 * as its last batch took (at most 200 ms), which keeps it at a duty cycle of
 * 1/(1 + busy_pause_factor) = 1/7 under a steady load — enough to keep draining
 * a backlog at ≥ 0.05x the rate of a bulk DELETE (bench/expiry.sh (c); 20x,
 * the earlier factor, drained at 0.026x) while a batch's WAL, which
 * the application's commits then wait to flush, and its CPU stay a small
 * share; with its lower CPU priority (worker_nice) it gets even less when the
 * CPUs are saturated.  On an idle server it goes full speed. */
constexpr int64 busy_pause_factor = 6;

class OwnTransactions final : public Executor {
public:
    bool run(const std::function<void()>& body, std::string& error) override {
        TimestampTz started = GetCurrentTimestamp();
        bool ok = run_batch(body, error);
        last_batch_us_ = GetCurrentTimestamp() - started;
        return ok;
    }

private:
    int64 last_batch_us_ = 0;

    bool run_batch(const std::function<void()>& body, std::string& error) {
        pg_call([] {
            SetCurrentStatementStartTimestamp();
            StartTransactionCommand();
            PushActiveSnapshot(GetTransactionSnapshot());
        });
        bool ok = true;
        try {
            {
                bridge::SpiConnection spi;
                body();
            }
            pg_call([] {
                PopActiveSnapshot();
                CommitTransactionCommand();
            });
        } catch (bridge::PgError& e) {
            error = describe_error(e);
            e.release(); /* its memory goes with the aborted transaction */
            ok = false;
        } catch (const std::exception& e) {
            error = describe_error(e);
            ok = false;
        }
        if (!ok) pg_call([] { AbortCurrentTransaction(); });
        return ok;
    }

public:
    void between_batches() override {
        bridge::check_for_interrupts();
        reload_config_if_asked();
        if (last_batch_us_ > 0 && busy_client_backends() > 0) {
            long pause_ms = std::min<long>(200, std::max<long>(1, last_batch_us_ * busy_pause_factor / 1000));
            pg_call([pause_ms] {
                (void)WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH, pause_ms, PG_WAIT_EXTENSION);
                ResetLatch(MyLatch);
            });
            bridge::check_for_interrupts();
        }
    }

    void report_failure(const Unit& unit, const std::string& error) override {
        std::string msg = describe_failure(unit, error);
        pg_call([&msg] { ereport(LOG, (errmsg("pg_lifecycle worker: %s", msg.c_str()))); });
    }
};

bool extension_installed() {
    return pg_call([] {
        SetCurrentStatementStartTimestamp();
        StartTransactionCommand();
        bool installed = OidIsValid(get_extension_oid("pg_lifecycle", true));
        CommitTransactionCommand();
        return installed;
    });
}

void set_activity(const char* what) {
    pg_call([what] { pgstat_report_activity(what ? STATE_RUNNING : STATE_IDLE, what); });
}

/* The first error of the pass that says the database cannot be written. */
std::string read_only_error(const PassOutcome& pass) {
    auto is_read_only = [](const std::string& e) { return e.rfind("25006:", 0) == 0; };
    if (is_read_only(pass.error)) return pass.error;
    for (const auto& u : pass.units) {
        if (is_read_only(u.error)) return u.error;
    }
    return {};
}

std::string database_name() {
    return pg_call([] {
        SetCurrentStatementStartTimestamp();
        StartTransactionCommand();
        char* name = get_database_name(MyDatabaseId);
        std::string copy = name ? name : "?";
        CommitTransactionCommand();
        return copy;
    });
}

void skip_read_only(const std::string& reason) {
    if (report_read_only(reason)) {
        std::string name = database_name();
        pg_call([&reason, &name] {
            ereport(WARNING, (errmsg("pg_lifecycle: database \"%s\" is read-only, skipped until it is writable: %s",
                                     name.c_str(), reason.c_str()),
                              errhint("lifecycle.health() shows it; the worker tries again every lifecycle.naptime.")));
        });
    }
}

/* One visit of the pool: passes while a backlog remains and no other database
 * waits for a worker, then the database's next due time, and exit. */
void worker_main(Oid dboid) {
    pqsignal(SIGTERM, die);
    pqsignal(SIGHUP, SignalHandlerForConfigReload);
    BackgroundWorkerUnblockSignals();
    pg_call([dboid] { BackgroundWorkerInitializeConnectionByOid(dboid, InvalidOid, 0); });
    /* Whatever the database's or the bootstrap role's defaults say (a
     * database owner may set search_path for the database): every name in
     * the worker's SQL resolves in pg_catalog, or is schema-qualified. */
    pg_call([] { SetConfigOption("search_path", bridge::pinned_search_path, PGC_SUSET, PGC_S_OVERRIDE); });

    if (!claim_database()) pg_call([] { proc_exit(0); }); /* another worker serves it, or it is paused */
    apply_nice();
    auto leave = [](int64 after_ms) {
        report_next_due(TimestampTzPlusMilliseconds(GetCurrentTimestamp(), after_ms));
        pg_call([] { proc_exit(0); });
    };
    if (!gucs::enabled || pg_call([] { return RecoveryInProgress(); })) leave(gucs::naptime_ms);
    bool installed = extension_installed();
    report_extension(installed);
    if (!installed) pg_call([] { proc_exit(0); }); /* visited again after 10 minutes, or at CREATE EXTENSION */
    if (pg_call([] { return DefaultXactReadOnly; })) {
        skip_read_only("default_transaction_read_only is on");
        leave(gucs::naptime_ms);
    }

    OwnTransactions exec;
    set_pass_resume_point(load_resume_point());
    for (;;) {
        bridge::check_for_interrupts();
        reload_config_if_asked();
        if (!gucs::enabled) leave(gucs::naptime_ms);

        set_activity("pg_lifecycle: maintenance pass");
        TimestampTz deadline = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), std::max(gucs::naptime_ms, 1000));
        PassOutcome pass = run_pass(exec, deadline);
        save_resume_point(pass_resume_point());
        std::string ro = read_only_error(pass);
        if (!ro.empty()) {
            set_activity(nullptr);
            skip_read_only(ro);
            leave(gucs::naptime_ms);
        }
        report_writable();
        if (pass_did_something(pass)) {
            std::string error;
            exec.run([&pass] { record_pass(pass); }, error);
        }
        report_pass_done(pass.finished); /* after its job_runs row is committed */
        set_activity(nullptr);
        bool did_work = false; /* rows processed (errors alone do not keep a process) */
        for (const auto& u : pass.units) did_work = did_work || u.rows > 0;
        if (!pass.backlog && !did_work) leave(gucs::naptime_ms); /* nothing due: no process held */
        /* A backlog: the next pass starts at once, here, unless another
         * database waits for a worker: then it is this one's turn to wait.
         * A pass that did work without a backlog left: the next pass is due
         * after naptime, likely with work again; the worker stays for it (and
         * keeps the position of its sweeps) while nobody waits. */
        if (others_waiting()) leave(pass.backlog ? 0 : gucs::naptime_ms);
        if (!pass.backlog) {
            report_next_due(TimestampTzPlusMilliseconds(GetCurrentTimestamp(), gucs::naptime_ms));
            pg_call([] {
                (void)WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH, gucs::naptime_ms,
                                PG_WAIT_EXTENSION);
                ResetLatch(MyLatch);
            });
            if (others_waiting()) leave(0);
        }
    }
}

}  // namespace

}  // namespace pg_lifecycle::worker

extern "C" void lifecycle_worker_main(Datum arg) {
    pg_lifecycle::bridge::entry_guard([arg] { pg_lifecycle::worker::worker_main(DatumGetObjectId(arg)); });
}
