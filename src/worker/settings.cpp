/*
 * settings.cpp — the worker's settings: lifecycle.enabled, naptime,
 * worker_nice, max_workers and history_retention.
 */
#include "bridge/guard.hpp"
#include "gucs.hpp"
#include "worker/launcher.hpp"

namespace pg_lifecycle::gucs {

bool enabled = true;
int naptime_ms = 10000;
int worker_nice = 10;
int max_workers = 2;
char* history_retention = nullptr;

}  // namespace pg_lifecycle::gucs

namespace pg_lifecycle::worker {

void init() {
    bridge::pg_call([] {
        DefineCustomBoolVariable("lifecycle.enabled", "Whether the pg_lifecycle background worker does maintenance.",
                                 nullptr, &gucs::enabled, true, PGC_SIGHUP, 0, nullptr, nullptr, nullptr);
        DefineCustomIntVariable("lifecycle.naptime", "Time between maintenance passes of the pg_lifecycle worker.",
                                "Also how soon a database that installs the extension is picked up.", &gucs::naptime_ms,
                                10000, 100, 24 * 3600 * 1000, PGC_SIGHUP, GUC_UNIT_MS, nullptr, nullptr, nullptr);
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
                                   &gucs::history_retention, "7 days", PGC_SIGHUP, 0, gucs::check_positive_interval,
                                   nullptr, nullptr);
    });
}

}  // namespace pg_lifecycle::worker
