/*
 * tasks.hpp — the maintenance pass and the tasks that plug into it.
 *
 * Each capability registers Task objects at load time (module.cpp).  A pass
 * asks every task for its units of work (one per target relation), then runs
 * them round-robin, one bounded batch at a time, until no unit has work left
 * or the pass's deadline is reached.  Every batch runs in its own transaction
 * (the worker) or subtransaction (lifecycle.run_maintenance), so an error in
 * one unit is recorded and the others go on.
 */
#pragma once

#include "bridge/guard.hpp"

#include <functional>
#include <string>
#include <vector>

namespace pg_lifecycle::worker {

class Task;

/* One target of one task in one pass. */
struct Unit {
    const Task* task;
    Oid target; /* the relation the batches work on */
    Oid config; /* the relation whose configuration applies (a partition's root) */
    std::string target_name;
};

struct BatchResult {
    int64 rows; /* rows processed by this batch */
    bool more;  /* work may remain for this unit */
    /* Set when some rows could not be processed while the batch did the
     * others (recorded like a failure, but the unit goes on). */
    std::string error = {};
};

class Task {
public:
    virtual ~Task() = default;
    virtual const char* name() const = 0;
    /* Append this pass's units (called inside a transaction, SPI connected). */
    virtual void collect(std::vector<Unit>& out) const = 0;
    /* Run one bounded batch (inside a transaction, SPI connected). */
    virtual BatchResult run_batch(const Unit& unit) const = 0;
};

void register_task(const Task& task);

/* Where batches run: the worker's own transactions, or subtransactions of the
 * caller's transaction for run_maintenance. */
class Executor {
public:
    virtual ~Executor() = default;
    /* Runs body with SPI connected; returns false and fills `error` if it failed
     * (the work of body is then rolled back). */
    virtual bool run(const std::function<void()>& body, std::string& error) = 0;
    /* Called between batches: interrupts, configuration reload. */
    virtual void between_batches() = 0;
    /* Tell someone that a unit failed (the server log, or the caller). */
    virtual void report_failure(const Unit& unit, const std::string& error) = 0;
};

struct UnitOutcome {
    Unit unit;
    int64 rows = 0;
    bool more = true;
    bool failed = false; /* a batch failed: the unit stopped */
    std::string error;   /* why it failed, or the first rows it could not process */
    TimestampTz started = 0;
    TimestampTz finished = 0;
};

struct PassOutcome {
    std::vector<UnitOutcome> units;
    TimestampTz started = 0;
    TimestampTz finished = 0;
    bool backlog = false; /* some unit stopped at the deadline with work left */
    std::string error;    /* collecting the units failed */
};

PassOutcome run_pass(Executor& exec, TimestampTz deadline);
/* Where the next pass resumes its round (kept by the worker pool across
 * processes). */
uint32 pass_resume_point();
void set_pass_resume_point(uint32 at);
/* Whether the pass processed rows or met an error. */
bool pass_did_something(const PassOutcome& pass);
/* Insert the pass into lifecycle.job_runs (inside a transaction, SPI
 * connected); a pass that found nothing to do writes nothing. */
void record_pass(const PassOutcome& pass);

/* Helpers for tasks. */
std::string describe_error(const std::exception& e);
/* "expire on public.t failed: 23503: ..." */
std::string describe_failure(const Unit& unit, const std::string& error);
/* The settings of a maintenance batch, for the current batch only (reverted
 * after it, also in run_maintenance): lock_timeout = 100ms, so application
 * traffic is never blocked for long, and synchronous_commit = off — a batch
 * lost in a crash is simply done again. */
void set_batch_settings();

}  // namespace pg_lifecycle::worker
