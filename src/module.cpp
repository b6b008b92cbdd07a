/*
 * module.cpp — _PG_init: GUCs, hooks and background-worker registration, and
 * nothing else.
 */
#include "bridge/guard.hpp"
#include "bridge/spi.hpp"
#include "counts/counts.hpp"
#include "expiry/expiry.hpp"
#include "extension/extension.hpp"
#include "gucs.hpp"
#include "softdelete/softdelete.hpp"
#include "tokens/tokens.hpp"
#include "worker/launcher.hpp"

#include <cstdlib>

extern "C" {
PG_MODULE_MAGIC;
void _PG_init(void);
}

namespace pg_lifecycle::gucs {

bool enabled = true;
int naptime_ms = 10000;
int worker_nice = 10;
int max_workers = 2;
char* history_retention = nullptr;
char* session_history_retention = nullptr;
bool include_deleted = false;
bool hard_delete = false;
char* actor = nullptr;
bool preloaded = false;

Interval* interval_value(const char* text) {
    return bridge::pg_call([text] {
        return DatumGetIntervalP(DirectFunctionCall3(interval_in, CStringGetDatum(text),
                                                     ObjectIdGetDatum(InvalidOid), Int32GetDatum(-1)));
    });
}

bool check_interval_setting(char** newval, void** extra, bool allow_zero, const char* example) {
    Interval parsed;
    try {
        parsed = *interval_value(*newval);
    } catch (const bridge::PgError& e) {
        /* interval_in has no side effects: reporting its message is all there is to do. */
        GUC_check_errdetail("%s", e.what());
        return false;
    }
    int sign = bridge::interval_sign(&parsed);
    if (sign < 0 || (sign == 0 && !allow_zero)) {
        GUC_check_errdetail("The value must be %s interval, such as '%s'.",
                            allow_zero ? "zero or a positive" : "a positive", example);
        return false;
    }
    /* Freed by guc.c: free() on 15, guc_free() from 16 on (compat.hpp). */
    auto* out = static_cast<Interval*>(guc_malloc(LOG, sizeof(Interval)));
    if (out == nullptr) {
        GUC_check_errdetail("out of memory");
        return false;
    }
    *out = parsed;
    *extra = out;
    return true;
}

}  // namespace pg_lifecycle::gucs

namespace {

using namespace pg_lifecycle;

/* Plans embed what these settings decide (hidden rows, soft or hard DELETE):
 * a change must replan cached statements. */
extern "C" void assign_plan_setting(bool newval, void* extra) {
    (void)extra;
    static bool first = true;  /* the boot value needs no reset */
    if (!first) ResetPlanCache();
    first = false;
    (void)newval;
}

/* lifecycle.hard_delete can be turned on only by a session for itself (SET,
 * SET LOCAL, set_config, connection options) — never as a default in
 * postgresql.conf or by ALTER DATABASE / ALTER ROLE ... SET, which would reach
 * sessions, the worker and code run as the table's owner that did not ask
 * for it. */
extern "C" bool check_hard_delete(bool* newval, void** extra, GucSource source) {
    (void)extra;
    if (!*newval) return true;
    switch (source) {
        case PGC_S_CLIENT:
        case PGC_S_OVERRIDE:
        case PGC_S_INTERACTIVE:
        case PGC_S_SESSION:
            return true;
        default:
            GUC_check_errcode(ERRCODE_INSUFFICIENT_PRIVILEGE);
            GUC_check_errdetail("lifecycle.hard_delete can only be turned on by a session for itself (SET or SET "
                                "LOCAL), not as a default for a database, a role, a function or the server.");
            return false;
    }
}

extern "C" bool check_positive_interval(char** newval, void** extra, GucSource source) {
    (void)source;
    return bridge::entry_guard([=] { return gucs::check_interval_setting(newval, extra, false, "7 days"); });
}

void define_gucs() {
    bridge::pg_call([] {
        DefineCustomBoolVariable("lifecycle.enabled", "Whether the pg_lifecycle background worker does maintenance.",
                                 nullptr, &gucs::enabled, true, PGC_SIGHUP, 0, nullptr, nullptr, nullptr);
        DefineCustomIntVariable("lifecycle.naptime", "Time between maintenance passes of the pg_lifecycle worker.",
                                "Also how soon a database that installs the extension is picked up.",
                                &gucs::naptime_ms, 10000, 100, 24 * 3600 * 1000, PGC_SIGHUP, GUC_UNIT_MS,
                                nullptr, nullptr, nullptr);
        DefineCustomIntVariable("lifecycle.worker_nice", "CPU priority (nice value) of the pg_lifecycle workers.",
                                "Workers use idle CPU fully but yield to application backends under load. "
                                "A worker can only raise its value; lowering it takes effect when it restarts.",
                                &gucs::worker_nice, 10, 0, 19, PGC_SIGHUP, 0, nullptr, nullptr, nullptr);
        DefineCustomIntVariable("lifecycle.max_workers",
                                "Maximum number of pg_lifecycle worker processes running at once.",
                                "Each takes a max_worker_processes slot while it serves a database; the "
                                "launcher hands them the databases that are due, one at a time.",
                                &gucs::max_workers, 2, 1, 256, PGC_SIGHUP, 0, nullptr, nullptr, nullptr);
        DefineCustomStringVariable("lifecycle.history_retention",
                                   "How long lifecycle.job_runs keeps the history of maintenance passes.", nullptr,
                                   &gucs::history_retention, "7 days", PGC_SIGHUP, 0, check_positive_interval,
                                   nullptr, nullptr);
        DefineCustomStringVariable("lifecycle.session_history_retention",
                                   "How long ended sessions stay in lifecycle.sessions before the worker removes them.",
                                   nullptr, &gucs::session_history_retention, "30 days", PGC_SIGHUP, 0,
                                   check_positive_interval, nullptr, nullptr);
        DefineCustomBoolVariable("lifecycle.include_deleted", "Show soft-deleted rows to queries.",
                                 "Off: rows deleted from a table with hide = true are invisible to SELECT, UPDATE "
                                 "and DELETE.", &gucs::include_deleted, false, PGC_USERSET, 0, nullptr,
                                 assign_plan_setting, nullptr);
        DefineCustomBoolVariable("lifecycle.hard_delete", "DELETE on soft-delete tables removes rows for real.",
                                 "Honoured only for the table's owner (or a superuser) acting directly, and only "
                                 "when a session sets it for itself.",
                                 &gucs::hard_delete, false, PGC_USERSET, 0, check_hard_delete, assign_plan_setting,
                                 nullptr);
        DefineCustomStringVariable("lifecycle.actor", "Recorded in deleted_by by soft deletes (empty: current_user).",
                                   nullptr, &gucs::actor, "", PGC_USERSET, 0, nullptr, nullptr, nullptr);
    });
}

void init_cpp() {
    gucs::preloaded = process_shared_preload_libraries_in_progress;
    define_gucs();
    /* Each capability: its settings, hooks and maintenance tasks.  The pass
     * runs tasks in the order they are registered here. */
    expiry::register_expire_task();
    softdelete::register_retention_task();
    expiry::register_session_tasks();
    tokens::init();
    worker::register_history_task();
    counts::init();
    softdelete::init();
    /* Only now, with every lifecycle.* setting defined: a misspelt one in
     * postgresql.conf is reported (reserving earlier would drop the values of
     * settings defined later). */
    bridge::pg_call([] { MarkGUCPrefixReserved("lifecycle"); });
    /* The launcher exists only when preloaded; the SQL functions work either way. */
    if (process_shared_preload_libraries_in_progress) {
        worker::register_launcher();
        worker::install_utility_hook();
        extension::install_utility_hook();
    }
}

}  // namespace

extern "C" void _PG_init(void) {
    pg_lifecycle::bridge::entry_guard(init_cpp);
}
