/*
 * launcher.hpp — the pg_lifecycle background workers.
 *
 * One launcher (registered at preload) watches pg_database and keeps one
 * worker per database that allows connections; a worker whose database lacks
 * the extension exits and is tried again after lifecycle.naptime.  Workers
 * claim their database in shared memory, so there is never more than one per
 * database, even across a launcher restart.
 */
#pragma once

#include "bridge/pg.hpp"

namespace pg_lifecycle::worker {

/* From _PG_init while shared_preload_libraries is processed. */
void register_launcher();

/* Claim the current database for this worker; false if another worker has it
 * or the database is paused. */
bool claim_database();

/* Keep workers away from a database for up to `seconds` and wait (up to 10 s)
 * for its worker to leave: for DROP / RENAME DATABASE and CREATE DATABASE …
 * TEMPLATE, which need it to have no other sessions.  False without preload. */
bool pause_database(Oid dboid, int seconds);
void resume_database(Oid dboid);

/* The ProcessUtility hook that does it (ddl.cpp). */
void install_utility_hook();

}  // namespace pg_lifecycle::worker
