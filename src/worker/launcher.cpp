/*
 * launcher.cpp — shared state, the launcher background worker, and starting
 * per-database workers (see launcher.hpp).
 */
#include "worker/launcher.hpp"

#include "bridge/guard.hpp"
#include "gucs.hpp"

#include <unordered_map>
#include <vector>

extern "C" {
PGDLLEXPORT void lifecycle_launcher_main(Datum arg);
}

namespace pg_lifecycle::worker {

using bridge::pg_call;

namespace {

/* Which database each running worker serves. */
struct DatabaseSlot {
    Oid dboid;
    pid_t pid;
};

/* A database whose worker must stay away for a while (DROP/RENAME DATABASE …). */
struct DatabasePause {
    Oid dboid;
    TimestampTz until;
};
constexpr int max_pauses = 16;

struct SharedState {
    slock_t mutex;
    DatabasePause pauses[max_pauses];
    int nslots;
    DatabaseSlot slots[FLEXIBLE_ARRAY_MEMBER];
};

SharedState* shared = nullptr;
shmem_request_hook_type prev_shmem_request_hook = nullptr;
shmem_startup_hook_type prev_shmem_startup_hook = nullptr;

Size shared_size() {
    return add_size(offsetof(SharedState, slots), mul_size(max_worker_processes, sizeof(DatabaseSlot)));
}

extern "C" void lifecycle_shmem_request(void) {
    bridge::entry_guard([] {
        if (prev_shmem_request_hook) prev_shmem_request_hook();
        pg_call([] { RequestAddinShmemSpace(shared_size()); });
    });
}

extern "C" void lifecycle_shmem_startup(void) {
    bridge::entry_guard([] {
        if (prev_shmem_startup_hook) prev_shmem_startup_hook();
        pg_call([] {
            bool found = false;
            LWLockAcquire(AddinShmemInitLock, LW_EXCLUSIVE);
            shared = static_cast<SharedState*>(ShmemInitStruct("pg_lifecycle", shared_size(), &found));
            if (!found) {
                SpinLockInit(&shared->mutex);
                shared->nslots = max_worker_processes;
                for (int i = 0; i < shared->nslots; ++i) shared->slots[i] = DatabaseSlot{InvalidOid, 0};
                for (auto& p : shared->pauses) p = DatabasePause{InvalidOid, 0};
            }
            LWLockRelease(AddinShmemInitLock);
        });
    });
}

/* True if some live worker has claimed dboid. */
bool database_served(Oid dboid) {
    bool served = false;
    SpinLockAcquire(&shared->mutex);
    for (int i = 0; i < shared->nslots; ++i) {
        if (shared->slots[i].dboid == dboid && shared->slots[i].pid != 0) served = true;
    }
    SpinLockRelease(&shared->mutex);
    return served;
}

bool database_paused(Oid dboid) {
    TimestampTz now = GetCurrentTimestamp();
    bool paused = false;
    SpinLockAcquire(&shared->mutex);
    for (const auto& p : shared->pauses) {
        if (p.dboid == dboid && p.until > now) paused = true;
    }
    SpinLockRelease(&shared->mutex);
    return paused;
}

extern "C" void release_database(int code, Datum arg) {
    (void)code;
    int slot = DatumGetInt32(arg);
    SpinLockAcquire(&shared->mutex);
    if (shared->slots[slot].pid == MyProcPid) shared->slots[slot] = DatabaseSlot{InvalidOid, 0};
    SpinLockRelease(&shared->mutex);
}

/* Databases a worker may serve: not templates, connections allowed. */
std::vector<Oid> list_databases() {
    std::vector<Oid> dbs;
    pg_call([&dbs] {
        SetCurrentStatementStartTimestamp();
        StartTransactionCommand();
        (void)GetTransactionSnapshot();
        Relation rel = table_open(DatabaseRelationId, AccessShareLock);
        TableScanDesc scan = table_beginscan_catalog(rel, 0, nullptr);
        HeapTuple tup;
        while ((tup = heap_getnext(scan, ForwardScanDirection)) != nullptr) {
            auto* db = (Form_pg_database)GETSTRUCT(tup);
            if (db->datistemplate || !db->datallowconn || db->datconnlimit == DATCONNLIMIT_INVALID_DB) continue;
            dbs.push_back(db->oid); /* `dbs` lives above the PG_TRY: a longjmp cannot skip it */
        }
        table_endscan(scan);
        table_close(rel, AccessShareLock);
        CommitTransactionCommand();
    });
    return dbs;
}

struct Tracked {
    BackgroundWorkerHandle* handle = nullptr;
    TimestampTz last_start = 0;
};

bool start_worker(Oid dboid, Tracked& t) {
    BackgroundWorker bgw{};
    bgw.bgw_flags = BGWORKER_SHMEM_ACCESS | BGWORKER_BACKEND_DATABASE_CONNECTION;
    bgw.bgw_start_time = BgWorkerStart_RecoveryFinished;
    bgw.bgw_restart_time = BGW_NEVER_RESTART; /* the launcher restarts it */
    std::snprintf(bgw.bgw_library_name, BGW_MAXLEN, "pg_lifecycle");
    std::snprintf(bgw.bgw_function_name, BGW_MAXLEN, "lifecycle_worker_main");
    std::snprintf(bgw.bgw_name, BGW_MAXLEN, "pg_lifecycle worker for database %u", dboid);
    std::snprintf(bgw.bgw_type, BGW_MAXLEN, "pg_lifecycle worker");
    bgw.bgw_main_arg = ObjectIdGetDatum(dboid);
    bgw.bgw_notify_pid = MyProcPid;
    BackgroundWorkerHandle* handle = nullptr;
    bool ok = pg_call([&] {
        MemoryContext old = MemoryContextSwitchTo(TopMemoryContext);
        bool r = RegisterDynamicBackgroundWorker(&bgw, &handle);
        MemoryContextSwitchTo(old);
        return r;
    });
    t.last_start = GetCurrentTimestamp();
    if (!ok) return false;
    if (t.handle) pfree(t.handle);
    t.handle = handle;
    return true;
}

bool handle_alive(const Tracked& t) {
    if (t.handle == nullptr) return false;
    pid_t pid;
    BgwHandleStatus st = GetBackgroundWorkerPid(t.handle, &pid);
    return st == BGWH_STARTED || st == BGWH_NOT_YET_STARTED;
}

void launcher_main(Datum) {
    pqsignal(SIGTERM, die);
    pqsignal(SIGHUP, SignalHandlerForConfigReload);
    BackgroundWorkerUnblockSignals();
    pg_call([] { BackgroundWorkerInitializeConnection(nullptr, nullptr, 0); });
    pg_call([] { ereport(LOG, (errmsg("pg_lifecycle launcher started"))); });

    std::unordered_map<Oid, Tracked> tracked;
    bool warned_no_slot = false;
    for (;;) {
        bridge::check_for_interrupts();
        if (ConfigReloadPending) {
            ConfigReloadPending = false;
            pg_call([] { ProcessConfigFile(PGC_SIGHUP); });
        }
        if (gucs::enabled) {
            TimestampTz now = GetCurrentTimestamp();
            for (Oid db : list_databases()) {
                Tracked& t = tracked[db];
                if (database_served(db) || handle_alive(t) || database_paused(db)) continue;
                /* A worker that exited (no extension there, or stopped) is started
                 * again after naptime at the earliest. */
                if (t.last_start != 0 && !TimestampDifferenceExceeds(t.last_start, now, gucs::naptime_ms)) continue;
                if (!start_worker(db, t) && !warned_no_slot) {
                    warned_no_slot = true;
                    pg_call([] {
                        ereport(WARNING, (errmsg("pg_lifecycle: no background worker slot left for a database worker"),
                                          errhint("Increase max_worker_processes.")));
                    });
                }
            }
        }
        pg_call([] {
            (void)WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
                            std::max(gucs::naptime_ms / 2, 100), PG_WAIT_EXTENSION);
            ResetLatch(MyLatch);
        });
    }
}

}  // namespace

void register_launcher() {
    prev_shmem_request_hook = shmem_request_hook;
    shmem_request_hook = lifecycle_shmem_request;
    prev_shmem_startup_hook = shmem_startup_hook;
    shmem_startup_hook = lifecycle_shmem_startup;

    BackgroundWorker bgw{};
    bgw.bgw_flags = BGWORKER_SHMEM_ACCESS | BGWORKER_BACKEND_DATABASE_CONNECTION;
    bgw.bgw_start_time = BgWorkerStart_RecoveryFinished; /* nothing runs on a standby */
    bgw.bgw_restart_time = 1;
    std::snprintf(bgw.bgw_library_name, BGW_MAXLEN, "pg_lifecycle");
    std::snprintf(bgw.bgw_function_name, BGW_MAXLEN, "lifecycle_launcher_main");
    std::snprintf(bgw.bgw_name, BGW_MAXLEN, "pg_lifecycle launcher");
    std::snprintf(bgw.bgw_type, BGW_MAXLEN, "pg_lifecycle launcher");
    pg_call([&bgw] { RegisterBackgroundWorker(&bgw); });
}

bool claim_database() {
    if (shared == nullptr || database_paused(MyDatabaseId)) return false;
    int mine = -1;
    bool taken = false;
    SpinLockAcquire(&shared->mutex);
    for (int i = 0; i < shared->nslots; ++i) {
        const DatabaseSlot& s = shared->slots[i];
        if (s.dboid == MyDatabaseId && s.pid != 0 && s.pid != MyProcPid) taken = true;
        if (mine < 0 && s.pid == 0) mine = i;
    }
    if (!taken && mine >= 0) shared->slots[mine] = DatabaseSlot{MyDatabaseId, MyProcPid};
    SpinLockRelease(&shared->mutex);
    if (taken || mine < 0) return false;
    pg_call([mine] { on_shmem_exit(release_database, Int32GetDatum(mine)); });
    return true;
}

bool pause_database(Oid dboid, int seconds) {
    if (shared == nullptr) return false;
    TimestampTz now = GetCurrentTimestamp();
    TimestampTz until = TimestampTzPlusMilliseconds(now, seconds * 1000);
    pid_t worker = 0;
    SpinLockAcquire(&shared->mutex);
    DatabasePause* slot = nullptr;
    for (auto& p : shared->pauses) {
        if (p.dboid == dboid) slot = &p;
    }
    for (auto& p : shared->pauses) {
        if (slot == nullptr && (p.dboid == InvalidOid || p.until <= now)) slot = &p;
    }
    if (slot != nullptr) *slot = DatabasePause{dboid, until};
    for (int i = 0; i < shared->nslots; ++i) {
        if (shared->slots[i].dboid == dboid && shared->slots[i].pid != 0) worker = shared->slots[i].pid;
    }
    SpinLockRelease(&shared->mutex);
    if (slot == nullptr) return false;
    if (worker != 0) kill(worker, SIGTERM);
    /* Wait (interruptibly) for it to leave the database. */
    for (int waited = 0; waited < 10000 && database_served(dboid); waited += 20) {
        bridge::check_for_interrupts();
        pg_call([] {
            (void)WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH, 20, PG_WAIT_EXTENSION);
            ResetLatch(MyLatch);
        });
    }
    return true;
}

void resume_database(Oid dboid) {
    if (shared == nullptr) return;
    SpinLockAcquire(&shared->mutex);
    for (auto& p : shared->pauses) {
        if (p.dboid == dboid) p = DatabasePause{InvalidOid, 0};
    }
    SpinLockRelease(&shared->mutex);
}

}  // namespace pg_lifecycle::worker

extern "C" void lifecycle_launcher_main(Datum arg) {
    pg_lifecycle::bridge::entry_guard([arg] { pg_lifecycle::worker::launcher_main(arg); });
}
