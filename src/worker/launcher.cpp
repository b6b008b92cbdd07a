/*
 * launcher.cpp — shared state, the launcher background worker and its pool
 * of per-database workers (see launcher.hpp).
 */
#include "worker/launcher.hpp"

#include "bridge/guard.hpp"
#include "gucs.hpp"

#include <algorithm>
#include <utility>
#include <vector>

extern "C" {
PGDLLEXPORT void lifecycle_launcher_main(Datum arg);
}

namespace pg_lifecycle::worker {

using bridge::pg_call;

namespace {

enum class Extension : uint8 { unknown, installed, absent };

/* A database the launcher knows of. */
struct DatabaseEntry {
    Oid dboid;
    Extension extension;
    bool seen;            /* in the launcher's last scan of pg_database */
    bool no_slot;         /* a worker could not be registered: waiting for a slot */
    bool read_only;       /* skipped: it cannot be written */
    pid_t worker;         /* the worker that has claimed it, or 0 */
    TimestampTz next_due; /* when it should next get a worker */
    TimestampTz waiting_since;
    TimestampTz last_visit; /* when a worker last started serving it */
    uint32 starts;          /* workers started for it */
    uint32 resume_at;       /* round-robin position of its passes */
    uint32 passes;          /* passes ended since the server started */
    TimestampTz last_pass_end;
    char read_only_reason[120];
};

/* A database whose worker must stay away for a while (DROP/RENAME DATABASE …). */
struct DatabasePause {
    Oid dboid;
    TimestampTz until;
};
constexpr int max_pauses = 16;
constexpr int max_databases = 4096;
/* A database found without the extension is visited again after this long
 * (CREATE EXTENSION in it tells the launcher at once). */
constexpr int64 absent_recheck_ms = int64{10} * 60 * 1000;

struct SharedState {
    slock_t mutex;
    Latch* launcher_latch;
    DatabasePause pauses[max_pauses];
    int ndatabases;
    bool table_full_warned;
    DatabaseEntry databases[max_databases];
};

SharedState* shared = nullptr;
shmem_request_hook_type prev_shmem_request_hook = nullptr;
shmem_startup_hook_type prev_shmem_startup_hook = nullptr;

Size shared_size() { return sizeof(SharedState); }

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
                std::memset(static_cast<void*>(shared), 0, shared_size());
                SpinLockInit(&shared->mutex);
                shared->launcher_latch = nullptr;
                shared->ndatabases = 0;
            }
            LWLockRelease(AddinShmemInitLock);
        });
    });
}

/* Callers hold the mutex. */
DatabaseEntry* find_entry(Oid dboid) {
    for (int i = 0; i < shared->ndatabases; ++i) {
        if (shared->databases[i].dboid == dboid) return &shared->databases[i];
    }
    return nullptr;
}

DatabaseEntry* add_entry(Oid dboid, TimestampTz now) {
    if (shared->ndatabases == max_databases) return nullptr;
    DatabaseEntry* e = &shared->databases[shared->ndatabases++];
    std::memset(static_cast<void*>(e), 0, sizeof(*e));
    e->dboid = dboid;
    e->extension = Extension::unknown;
    e->next_due = now;
    e->seen = true;
    return e;
}

void wake_launcher() {
    SpinLockAcquire(&shared->mutex);
    Latch* latch = shared->launcher_latch;
    SpinLockRelease(&shared->mutex);
    if (latch != nullptr) SetLatch(latch);
}

bool database_paused_locked(Oid dboid, TimestampTz now) {
    for (const auto& p : shared->pauses) {
        if (p.dboid == dboid && p.until > now) return true;
    }
    return false;
}

/* True if some live worker has claimed dboid. */
bool database_served(Oid dboid) {
    SpinLockAcquire(&shared->mutex);
    DatabaseEntry* e = find_entry(dboid);
    bool served = e != nullptr && e->worker != 0;
    SpinLockRelease(&shared->mutex);
    return served;
}

extern "C" void release_database(int code, Datum arg) {
    (void)code;
    Oid dboid = DatumGetObjectId(arg);
    SpinLockAcquire(&shared->mutex);
    DatabaseEntry* e = find_entry(dboid);
    if (e != nullptr && e->worker == MyProcPid) e->worker = 0;
    Latch* latch = shared->launcher_latch;
    SpinLockRelease(&shared->mutex);
    if (latch != nullptr) SetLatch(latch); /* its place in the pool is free */
}

extern "C" void forget_launcher(int code, Datum arg) {
    (void)code;
    (void)arg;
    SpinLockAcquire(&shared->mutex);
    if (shared->launcher_latch == MyLatch) shared->launcher_latch = nullptr;
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

/* The table follows pg_database: new databases are due at once (a first
 * visit tells whether they have the extension), dropped ones are forgotten. */
void sync_databases(const std::vector<Oid>& dbs) {
    TimestampTz now = GetCurrentTimestamp();
    bool full = false;
    SpinLockAcquire(&shared->mutex);
    for (int i = 0; i < shared->ndatabases; ++i) shared->databases[i].seen = false;
    for (Oid db : dbs) {
        DatabaseEntry* e = find_entry(db);
        if (e == nullptr) e = add_entry(db, now);
        if (e == nullptr) {
            full = true;
            continue;
        }
        e->seen = true;
    }
    for (int i = 0; i < shared->ndatabases;) {
        DatabaseEntry& e = shared->databases[i];
        if (!e.seen && e.worker == 0) {
            e = shared->databases[--shared->ndatabases];
        } else {
            ++i;
        }
    }
    bool warn = full && !shared->table_full_warned;
    if (warn) shared->table_full_warned = true;
    SpinLockRelease(&shared->mutex);
    if (warn) {
        pg_call([] {
            ereport(WARNING,
                    (errmsg("pg_lifecycle: more than %d databases; the others are not served", max_databases)));
        });
    }
}

/* A worker the launcher started and has not seen exit. */
struct Started {
    Oid dboid;
    BackgroundWorkerHandle* handle;
};

bool start_worker(Oid dboid, BackgroundWorkerHandle** handle) {
    BackgroundWorker bgw{};
    bgw.bgw_flags = BGWORKER_SHMEM_ACCESS | BGWORKER_BACKEND_DATABASE_CONNECTION;
    bgw.bgw_start_time = BgWorkerStart_RecoveryFinished;
    bgw.bgw_restart_time = BGW_NEVER_RESTART; /* the launcher starts another when the database is due */
    std::snprintf(bgw.bgw_library_name, BGW_MAXLEN, "pg_lifecycle");
    std::snprintf(bgw.bgw_function_name, BGW_MAXLEN, "lifecycle_worker_main");
    std::snprintf(bgw.bgw_name, BGW_MAXLEN, "pg_lifecycle worker for database %u", dboid);
    std::snprintf(bgw.bgw_type, BGW_MAXLEN, "pg_lifecycle worker");
    bgw.bgw_main_arg = ObjectIdGetDatum(dboid);
    bgw.bgw_notify_pid = MyProcPid;
    return pg_call([&] {
        MemoryContext old = MemoryContextSwitchTo(TopMemoryContext);
        bool r = RegisterDynamicBackgroundWorker(&bgw, handle);
        MemoryContextSwitchTo(old);
        return r;
    });
}

/* Forget the workers that have exited; returns the pids of the live ones
 * (0 for one not started yet). */
std::vector<pid_t> prune_started(std::vector<Started>& started) {
    std::vector<pid_t> pids;
    for (size_t i = 0; i < started.size();) {
        pid_t pid = 0;
        BgwHandleStatus st = GetBackgroundWorkerPid(started[i].handle, &pid);
        if (st == BGWH_STARTED || st == BGWH_NOT_YET_STARTED) {
            pids.push_back(st == BGWH_STARTED ? pid : 0);
            ++i;
        } else {
            pfree(started[i].handle);
            started[i] = started.back();
            started.pop_back();
        }
    }
    return pids;
}

struct Candidate {
    Oid dboid;
    TimestampTz due;
};

/* One round: start workers for the databases that are due, oldest due first,
 * while the pool has room.  Returns when the launcher should look again. */
TimestampTz launch_round(std::vector<Started>& started) {
    TimestampTz now = GetCurrentTimestamp();
    TimestampTz next = TimestampTzPlusMilliseconds(now, gucs::naptime_ms);
    std::vector<pid_t> live = prune_started(started);

    std::vector<Candidate> due;
    int running = 0;
    SpinLockAcquire(&shared->mutex);
    for (int i = 0; i < shared->ndatabases; ++i) {
        const DatabaseEntry& e = shared->databases[i];
        /* Workers of an earlier launcher (or not registered by us) count too. */
        if (e.worker != 0 && std::find(live.begin(), live.end(), e.worker) == live.end()) ++running;
        if (e.worker != 0 || database_paused_locked(e.dboid, now)) continue;
        bool pending = false;
        for (const auto& s : started) pending = pending || s.dboid == e.dboid;
        if (pending) continue;
        if (e.next_due <= now) {
            due.push_back(Candidate{e.dboid, e.next_due});
        } else if (e.next_due < next) {
            next = e.next_due;
        }
    }
    SpinLockRelease(&shared->mutex);
    running += static_cast<int>(live.size());
    if (!gucs::enabled) return next;

    std::sort(due.begin(), due.end(), [](const Candidate& a, const Candidate& b) { return a.due < b.due; });
    size_t k = 0;
    for (; k < due.size() && running < gucs::max_workers; ++k) {
        BackgroundWorkerHandle* handle = nullptr;
        if (!start_worker(due[k].dboid, &handle)) break;
        started.push_back(Started{due[k].dboid, handle});
        ++running;
        SpinLockAcquire(&shared->mutex);
        if (DatabaseEntry* e = find_entry(due[k].dboid)) {
            e->no_slot = false;
            e->starts++;
            e->last_visit = now;
            /* Provisional: the worker sets it when it leaves; this holds if it
             * dies first. */
            e->next_due = TimestampTzPlusMilliseconds(now, gucs::naptime_ms);
        }
        SpinLockRelease(&shared->mutex);
    }
    if (k < due.size() && running < gucs::max_workers) {
        /* No background worker slot: this database and the ones after it wait
         * for the next round; each says so once per episode. */
        std::vector<Oid> newly;
        SpinLockAcquire(&shared->mutex);
        for (size_t j = k; j < due.size(); ++j) {
            DatabaseEntry* e = find_entry(due[j].dboid);
            if (e == nullptr || e->no_slot) continue;
            e->no_slot = true;
            e->waiting_since = now;
            newly.push_back(e->dboid);
        }
        SpinLockRelease(&shared->mutex);
        for (Oid db : newly) {
            pg_call([db] {
                ereport(WARNING,
                        (errmsg("pg_lifecycle: no background worker slot for database %u (max_worker_processes = %d "
                                "is in use); retrying every round",
                                db, max_worker_processes),
                         errhint("Increase max_worker_processes (see the pg_lifecycle README, \"Sizing\").")));
            });
        }
        next = std::min(next, TimestampTzPlusMilliseconds(now, std::min(gucs::naptime_ms, 1000)));
    }
    return next;
}

void launcher_main(Datum) {
    pqsignal(SIGTERM, die);
    pqsignal(SIGHUP, SignalHandlerForConfigReload);
    BackgroundWorkerUnblockSignals();
    pg_call([] { BackgroundWorkerInitializeConnection(nullptr, nullptr, 0); });
    pg_call([] { ereport(LOG, (errmsg("pg_lifecycle launcher started"))); });
    SpinLockAcquire(&shared->mutex);
    shared->launcher_latch = MyLatch;
    SpinLockRelease(&shared->mutex);
    pg_call([] { on_shmem_exit(forget_launcher, 0); });

    std::vector<Started> started;
    TimestampTz next_scan = 0;
    for (;;) {
        bridge::check_for_interrupts();
        if (ConfigReloadPending) {
            ConfigReloadPending = false;
            pg_call([] { ProcessConfigFile(PGC_SIGHUP); });
        }
        TimestampTz now = GetCurrentTimestamp();
        if (now >= next_scan) {
            sync_databases(list_databases());
            next_scan = TimestampTzPlusMilliseconds(now, gucs::naptime_ms);
        }
        TimestampTz next = std::min(launch_round(started), next_scan);
        long wait_ms =
            static_cast<long>(std::clamp<int64>((next - GetCurrentTimestamp()) / 1000, 10, gucs::naptime_ms));
        pg_call([wait_ms] {
            (void)WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH, wait_ms, PG_WAIT_EXTENSION);
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
    if (shared == nullptr) return false;
    TimestampTz now = GetCurrentTimestamp();
    bool claimed = false;
    SpinLockAcquire(&shared->mutex);
    if (!database_paused_locked(MyDatabaseId, now)) {
        DatabaseEntry* e = find_entry(MyDatabaseId);
        if (e == nullptr) e = add_entry(MyDatabaseId, now);
        if (e != nullptr && (e->worker == 0 || e->worker == MyProcPid)) {
            e->worker = MyProcPid;
            claimed = true;
        }
    }
    SpinLockRelease(&shared->mutex);
    if (claimed) pg_call([] { on_shmem_exit(release_database, ObjectIdGetDatum(MyDatabaseId)); });
    return claimed;
}

void report_extension(bool installed) {
    if (shared == nullptr) return;
    TimestampTz now = GetCurrentTimestamp();
    SpinLockAcquire(&shared->mutex);
    if (DatabaseEntry* e = find_entry(MyDatabaseId)) {
        e->extension = installed ? Extension::installed : Extension::absent;
        if (!installed) {
            e->next_due = TimestampTzPlusMilliseconds(now, std::max<int64>(absent_recheck_ms, gucs::naptime_ms));
            e->read_only = false;
        }
    }
    SpinLockRelease(&shared->mutex);
}

bool report_read_only(const std::string& reason) {
    if (shared == nullptr) return true;
    bool fresh = false;
    SpinLockAcquire(&shared->mutex);
    if (DatabaseEntry* e = find_entry(MyDatabaseId)) {
        fresh = !e->read_only;
        e->read_only = true;
        std::snprintf(e->read_only_reason, sizeof(e->read_only_reason), "%s", reason.c_str());
    }
    SpinLockRelease(&shared->mutex);
    return fresh;
}

void report_writable() {
    if (shared == nullptr) return;
    SpinLockAcquire(&shared->mutex);
    if (DatabaseEntry* e = find_entry(MyDatabaseId)) e->read_only = false;
    SpinLockRelease(&shared->mutex);
}

void report_pass_done(TimestampTz finished) {
    if (shared == nullptr) return;
    SpinLockAcquire(&shared->mutex);
    if (DatabaseEntry* e = find_entry(MyDatabaseId)) {
        e->passes++;
        e->last_pass_end = finished;
    }
    SpinLockRelease(&shared->mutex);
}

void report_next_due(TimestampTz due) {
    if (shared == nullptr) return;
    SpinLockAcquire(&shared->mutex);
    if (DatabaseEntry* e = find_entry(MyDatabaseId)) e->next_due = due;
    SpinLockRelease(&shared->mutex);
}

bool others_waiting() {
    if (shared == nullptr) return false;
    TimestampTz now = GetCurrentTimestamp();
    int serving = 0;
    bool waiting = false, short_of_slots = false;
    SpinLockAcquire(&shared->mutex);
    for (int i = 0; i < shared->ndatabases; ++i) {
        const DatabaseEntry& e = shared->databases[i];
        if (e.worker != 0) {
            ++serving;
            continue;
        }
        if (e.next_due <= now && !database_paused_locked(e.dboid, now)) {
            waiting = true;
            short_of_slots = short_of_slots || e.no_slot;
        }
    }
    SpinLockRelease(&shared->mutex);
    return waiting && (short_of_slots || serving >= gucs::max_workers);
}

uint32 load_resume_point() {
    if (shared == nullptr) return 0;
    SpinLockAcquire(&shared->mutex);
    DatabaseEntry* e = find_entry(MyDatabaseId);
    uint32 at = e ? e->resume_at : 0;
    SpinLockRelease(&shared->mutex);
    return at;
}

void save_resume_point(uint32 at) {
    if (shared == nullptr) return;
    SpinLockAcquire(&shared->mutex);
    if (DatabaseEntry* e = find_entry(MyDatabaseId)) e->resume_at = at;
    SpinLockRelease(&shared->mutex);
}

void extension_changed() {
    if (shared == nullptr) return;
    TimestampTz now = GetCurrentTimestamp();
    SpinLockAcquire(&shared->mutex);
    DatabaseEntry* e = find_entry(MyDatabaseId);
    if (e == nullptr) e = add_entry(MyDatabaseId, now);
    if (e != nullptr) {
        e->extension = Extension::unknown;
        e->next_due = now;
    }
    SpinLockRelease(&shared->mutex);
    wake_launcher();
}

std::string database_state_json(Oid dboid) {
    if (shared == nullptr) return {};
    DatabaseEntry copy{};
    bool known = false, launcher = false;
    SpinLockAcquire(&shared->mutex);
    launcher = shared->launcher_latch != nullptr;
    if (DatabaseEntry* e = find_entry(dboid)) {
        copy = *e;
        known = true;
    }
    SpinLockRelease(&shared->mutex);
    auto ts = [](TimestampTz t) -> std::string {
        if (t == 0) return "null";
        return fmt::format("\"{}\"", pg_call([t] { return std::string(timestamptz_to_str(t)); }));
    };
    auto quote = [](const std::string& s) {
        std::string out = "\"";
        for (char c : s) {
            if (c == '"' || c == '\\') out += '\\';
            if (static_cast<unsigned char>(c) < 0x20) continue;
            out += c;
        }
        return out + "\"";
    };
    if (!known) {
        return fmt::format("{{\"launcher_running\": {}, \"known\": false, \"waiting\": null, \"skipped\": null}}",
                           launcher ? "true" : "false");
    }
    std::string waiting = copy.no_slot
                              ? quote(fmt::format("no background worker slot (max_worker_processes = {} is in use)",
                                                  max_worker_processes))
                              : "null";
    std::string skipped = copy.read_only ? quote(fmt::format("read-only database: {}", copy.read_only_reason)) : "null";
    const char* ext = copy.extension == Extension::installed ? "\"installed\""
                      : copy.extension == Extension::absent  ? "\"absent\""
                                                             : "\"unknown\"";
    return fmt::format(
        "{{\"launcher_running\": {}, \"known\": true, \"extension\": {}, \"worker_pid\": {}, \"next_due\": {}, "
        "\"last_visit\": {}, \"workers_started\": {}, \"passes\": {}, \"last_pass_end\": {}, "
        "\"waiting\": {}, \"waiting_since\": {}, \"skipped\": {}}}",
        launcher ? "true" : "false", ext, copy.worker != 0 ? std::to_string(copy.worker) : "null", ts(copy.next_due),
        ts(copy.last_visit), copy.starts, copy.passes, ts(copy.last_pass_end), waiting,
        copy.no_slot ? ts(copy.waiting_since) : "null", skipped);
}

bool pause_database(Oid dboid, int seconds) {
    if (shared == nullptr) return false;
    TimestampTz now = GetCurrentTimestamp();
    TimestampTz until = TimestampTzPlusMilliseconds(now, static_cast<int64>(seconds) * 1000);
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
    if (DatabaseEntry* e = find_entry(dboid)) worker = e->worker;
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
