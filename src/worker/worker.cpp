/*
 * worker.cpp — the per-database worker: one maintenance pass every
 * lifecycle.naptime, back to back while a backlog remains, each batch in its
 * own transaction.
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
    if (gucs::worker_nice <= applied) return;  /* raising it back needs privileges */
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
 * backends are running statements it pauses twenty times as long as its last
 * batch took (at most 200 ms), so it uses at most a twenty-first of the time it
 * would otherwise — a batch writes WAL that the application's commits then
 * wait to flush, so the pause bounds its WAL rate too; on an idle server it
 * goes full speed. */
constexpr int64 busy_pause_factor = 20;

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

void worker_main(Oid dboid) {
    pqsignal(SIGTERM, die);
    pqsignal(SIGHUP, SignalHandlerForConfigReload);
    BackgroundWorkerUnblockSignals();
    pg_call([dboid] { BackgroundWorkerInitializeConnectionByOid(dboid, InvalidOid, 0); });
    /* Whatever the database's or the bootstrap role's defaults say (a
     * database owner may set search_path for the database): every name in
     * the worker's SQL resolves in pg_catalog, or is schema-qualified. */
    pg_call([] { SetConfigOption("search_path", bridge::pinned_search_path, PGC_SUSET, PGC_S_OVERRIDE); });

    if (!claim_database()) pg_call([] { proc_exit(0); }); /* another worker serves it */
    apply_nice();

    OwnTransactions exec;
    for (;;) {
        bridge::check_for_interrupts();
        reload_config_if_asked();

        long wait_ms = gucs::naptime_ms;
        if (gucs::enabled && !pg_call([] { return RecoveryInProgress(); })) {
            if (!extension_installed()) pg_call([] { proc_exit(0); }); /* launcher retries after naptime */
            set_activity("pg_lifecycle: maintenance pass");
            TimestampTz deadline = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), std::max(gucs::naptime_ms, 1000));
            PassOutcome pass = run_pass(exec, deadline);
            std::string error;
            exec.run([&pass] { record_pass(pass); }, error);
            set_activity(nullptr);
            if (pass.backlog) wait_ms = 0; /* keep going: the next pass starts at once */
        }
        pg_call([wait_ms] {
            (void)WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH, wait_ms, PG_WAIT_EXTENSION);
            ResetLatch(MyLatch);
        });
    }
}

}  // namespace

}  // namespace pg_lifecycle::worker

extern "C" void lifecycle_worker_main(Datum arg) {
    pg_lifecycle::bridge::entry_guard([arg] { pg_lifecycle::worker::worker_main(DatumGetObjectId(arg)); });
}
