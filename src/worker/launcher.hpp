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

namespace pg_lifecycle::worker {

/* From _PG_init while shared_preload_libraries is processed. */
void register_launcher();

/* Claim the current database for this worker; false if another worker has it. */
bool claim_database();

}  // namespace pg_lifecycle::worker
