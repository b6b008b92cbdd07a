/*
 * tasks.cpp — the task registry and the round-robin maintenance pass.
 */
#include "worker/tasks.hpp"

#include "bridge/spi.hpp"

#include <array>

namespace pg_lifecycle::worker {

namespace {

constexpr int max_tasks = 16;
std::array<const Task*, max_tasks> registered{};
int n_registered = 0;

}  // namespace

void register_task(const Task& task) {
    for (int i = 0; i < n_registered; ++i) {
        if (registered[i] == &task) return;
    }
    if (n_registered == max_tasks) throw Error(sqlstate::internal_error, "too many pg_lifecycle tasks");
    registered[n_registered++] = &task;
}

std::string describe_error(const std::exception& e) {
    if (auto* pg = dynamic_cast<const bridge::PgError*>(&e)) {
        return fmt::format("{}: {}", sqlstate_text(pg->sqlerrcode()), pg->what());
    }
    if (auto* err = dynamic_cast<const Error*>(&e)) {
        return fmt::format("{}: {}", sqlstate_text(err->code()), err->what());
    }
    return fmt::format("XX000: {}", e.what());
}

std::string describe_failure(const Unit& unit, const std::string& error) {
    return fmt::format("{} on {} failed: {}", unit.task ? unit.task->name() : "collecting", unit.target_name, error);
}

void set_batch_settings() {
    bridge::pg_call([] {
        (void)set_config_option("lock_timeout", "100ms", PGC_USERSET, PGC_S_SESSION, GUC_ACTION_LOCAL, true, 0, false);
        (void)set_config_option("synchronous_commit", "off", PGC_USERSET, PGC_S_SESSION, GUC_ACTION_LOCAL, true, 0,
                                false);
    });
}

namespace {
size_t resume_at = 0;
}  // namespace

uint32 pass_resume_point() { return static_cast<uint32>(resume_at); }
void set_pass_resume_point(uint32 at) { resume_at = at; }

PassOutcome run_pass(Executor& exec, TimestampTz deadline) {
    PassOutcome pass;
    pass.started = GetCurrentTimestamp();

    std::vector<Unit> units;
    if (!exec.run(
            [&] {
                for (int i = 0; i < n_registered; ++i) registered[i]->collect(units);
            },
            pass.error)) {
        exec.report_failure(Unit{nullptr, InvalidOid, InvalidOid, "its tasks"}, pass.error);
        pass.finished = GetCurrentTimestamp();
        return pass;
    }
    for (auto& u : units) pass.units.push_back(UnitOutcome{u});

    /* Round-robin: one batch per unit with work left, until none has any or the
     * deadline passes.  A failed unit is not retried in this pass.  A pass cut
     * short by its deadline is resumed by the next one at the unit where it
     * stopped, so the units at the end of the list are never starved. */
    const size_t n = pass.units.size();
    const size_t start = n ? resume_at % n : 0;
    resume_at = 0;
    bool any_more = n > 0;
    while (any_more) {
        any_more = false;
        for (size_t k = 0; k < n; ++k) {
            size_t idx = (start + k) % n;
            UnitOutcome& u = pass.units[idx];
            if (!u.more || u.failed) continue;
            if (GetCurrentTimestamp() >= deadline) {
                pass.backlog = true;
                resume_at = idx;
                any_more = false;
                break;
            }
            exec.between_batches();
            if (u.started == 0) u.started = GetCurrentTimestamp();
            BatchResult r{0, false};
            if (exec.run([&] { r = u.unit.task->run_batch(u.unit); }, u.error)) {
                u.rows += r.rows;
                u.more = r.more;
                if (!r.error.empty()) {
                    if (u.error.empty()) u.error = r.error;
                    exec.report_failure(u.unit, r.error);
                }
            } else {
                u.failed = true;
                u.more = false;
                exec.report_failure(u.unit, u.error);
            }
            u.finished = GetCurrentTimestamp();
            any_more = any_more || u.more;
        }
    }
    pass.finished = GetCurrentTimestamp();
    return pass;
}

bool pass_did_something(const PassOutcome& pass) {
    if (!pass.error.empty()) return true;
    for (const auto& u : pass.units) {
        if (u.rows > 0 || !u.error.empty()) return true;
    }
    return false;
}

void record_pass(const PassOutcome& pass) {
    if (!pass_did_something(pass)) return; /* an idle pass writes nothing (no WAL every naptime) */
    static bridge::Statement insert(
        "INSERT INTO lifecycle.job_runs (started_at, finished_at, task, target, rows, status, error) "
        "VALUES ($1, $2, $3, $4, $5, $6, $7)",
        {TIMESTAMPTZOID, TIMESTAMPTZOID, TEXTOID, TEXTOID, INT8OID, TEXTOID, TEXTOID});

    auto insert_row = [&](TimestampTz started, TimestampTz finished, const char* task, const std::string* target,
                          int64 rows, const std::string& error) {
        Datum values[7];
        char nulls[8] = "       ";
        values[0] = TimestampTzGetDatum(started);
        values[1] = TimestampTzGetDatum(finished);
        values[2] = bridge::text_datum(task);
        if (target) values[3] = bridge::text_datum(*target);
        else nulls[3] = 'n';
        values[4] = Int64GetDatum(rows);
        values[5] = bridge::text_datum(error.empty() ? "ok" : "error");
        if (!error.empty()) values[6] = bridge::text_datum(error);
        else nulls[6] = 'n';
        insert.execute(values, nulls, false);
    };

    int64 total = 0;
    std::string first_error = pass.error;
    for (const auto& u : pass.units) {
        total += u.rows;
        if (!u.error.empty() && first_error.empty()) first_error = u.error;
        if (u.rows > 0 || !u.error.empty()) {
            insert_row(u.started, u.finished, u.unit.task->name(), &u.unit.target_name, u.rows, u.error);
        }
    }
    insert_row(pass.started, pass.finished, "pass", nullptr, total, pass.error);
}

}  // namespace pg_lifecycle::worker
