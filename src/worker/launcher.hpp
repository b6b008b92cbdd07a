/*
 * launcher.hpp — the pg_lifecycle background workers: a launcher and a
 * bounded pool of per-database workers, as autovacuum does it.
 *
 * One launcher (registered at preload) keeps, in shared memory, a table of the
 * databases that allow connections: whether each has the extension (learnt by
 * the workers that visit it, and from CREATE / DROP EXTENSION in it), when it
 * is next due, whether it waits for a background-worker slot or is skipped as
 * read-only.  It rescans pg_database every lifecycle.naptime and starts at most
 * lifecycle.max_workers workers at a time, for the databases that are due,
 * the longest-waiting first.  A worker serves one database: one pass, and more
 * while a backlog remains and no other database waits for a worker; then it
 * records when its database is next due and exits.  A database found without
 * the extension is visited again only after 10 minutes (or at once after a
 * CREATE EXTENSION in it).  Workers claim their database in shared memory, so
 * there is never more than one per database, even across a launcher restart.
 */
#pragma once

#include "bridge/pg.hpp"

#include <string>

namespace pg_lifecycle::worker {

/* From _PG_init: the worker's settings (settings.cpp). */
void init();
/* From _PG_init, in pass order: the job_runs_purge task (maintenance.cpp). */
void register_history_task();
/* From _PG_init while shared_preload_libraries is processed. */
void register_launcher();

/* Claim the current database for this worker; false if another worker has it
 * or the database is paused. */
bool claim_database();

/* What a worker learnt about its database (MyDatabaseId). */
void report_extension(bool installed);
/* The database cannot be written (default_transaction_read_only, or a batch
 * failed with 25006): true when this starts a new episode (warn once). */
bool report_read_only(const std::string& reason);
void report_writable();
/* A pass ended at `finished` (its job_runs row, if any, committed): counted
 * for health(); last_pass_end is the pass's finished_at. */
void report_pass_done(TimestampTz finished);
/* The database is next due at `due`. */
void report_next_due(TimestampTz due);
/* Whether another database waits for a worker while the pool is full (or
 * short of slots): a worker with a backlog then leaves its turn. */
bool others_waiting();
/* The round-robin position of the pass, kept across worker processes. */
uint32 load_resume_point();
void save_resume_point(uint32 at);

/* CREATE / DROP EXTENSION pg_lifecycle committed in the current database:
 * visit it at once. */
void extension_changed();

/* The launcher's view of a database, as a jsonb text for health(); empty
 * without preload. */
std::string database_state_json(Oid dboid);

/* Keep workers away from a database for up to `seconds` and wait (up to 10 s)
 * for its worker to leave: for DROP / RENAME DATABASE and CREATE DATABASE …
 * TEMPLATE, which need it to have no other sessions.  False without preload. */
bool pause_database(Oid dboid, int seconds);
void resume_database(Oid dboid);

/* The ProcessUtility hook that does it (database_commands.cpp). */
void install_utility_hook();

}  // namespace pg_lifecycle::worker
