/*
 * citus.hpp — soft delete on a Citus cluster (SPEC.md §6).  Citus is found
 * at run time (the citus extension in this database); nothing links to it.
 *
 * How the pieces fit (citus.cpp has the details):
 *  - the coordinator's registry names the distributed or reference table;
 *    every shard of it (and its shell table on the workers) carries our
 *    triggers, which Citus propagates to the shards it creates, moves or
 *    splits.  A node recognises a shard (or a shell table) of an enabled table
 *    by our guard trigger on it: its argument says whether rows are hidden;
 *  - a DELETE on a Citus table becomes the soft-deleting UPDATE before Citus
 *    plans it, with STABLE functions for the event and the actor (Citus
 *    evaluates them once, on the node that received the statement) and
 *    "deleted_at IS NULL" as a real WHERE clause (Citus drops security quals
 *    when it writes the shard queries);
 *  - each node hides deleted rows of the shards it plans: the hook adds the
 *    security qual there.  lifecycle.include_deleted on the node that
 *    received the statement travels in the shard query as a qual that is
 *    always true, "(deleted_at IS NULL OR deleted_at IS NOT NULL)", which the
 *    shard's node reads as "show deleted rows of this relation";
 *  - the cascade is the AFTER UPDATE trigger on each shard: colocated
 *    foreign keys are real foreign keys between shards on the same node;
 *  - delete events drawn on a worker carry its Citus group id in the bits
 *    above 2^48, so they never collide with another node's.
 */
#pragma once

#include "bridge/pg.hpp"

#include <functional>
#include <optional>

namespace pg_lifecycle::softdelete::citus {

/* Whether the citus extension is installed in this database. */
bool present();
/* Forget what is cached (the registry is being reloaded). */
void reset();

/* For a relation that is not in this node's registry: if it is a Citus table
 * or a shard of one and carries our guard trigger, whether its deleted rows
 * are hidden; else nullopt. */
std::optional<bool> marked(Oid relid);
/* Whether relid is a Citus table (distributed, reference or local in metadata). */
bool is_citus_table(Oid relid);

/* Whether relid is a Citus table, a shard of one, or a table Citus is
 * creating (its triggers are copies of an enabled table's: nothing to
 * register on this node). */
bool copy_of_citus_table(Oid relid);

/* lifecycle._citus_delete_event() (STABLE): InvalidOid when not installed. */
Oid stable_event_function();
/* The guard trigger's argument list for a table enabled with `hide`:
 * "" (hidden, as on a single node) or "'show'". */
const char* guard_arguments(bool hide);
/* Whether the guard trigger of relid has the arguments for `hide`. */
bool guard_arguments_match(Oid relid, bool hide);

/* Added to a delete event drawn on this node: its Citus group id << 48 (0
 * on the coordinator and without Citus). */
int64 event_offset();

/* Runs body with citus.enable_unsafe_triggers on (our triggers on a Citus
 * table), in a GUC nest level rolled back afterwards. */
void with_triggers_allowed(const std::function<void()>& body);

/* The qual "(deleted_at IS NULL OR deleted_at IS NOT NULL)" on rti. */
Node* show_deleted_qual(int rti, AttrNumber deleted_at);
/* Whether q's own quals hold that qual for rti. */
bool shows_deleted(Query* q, int rti, AttrNumber deleted_at);

/* Refuses (0A000) a query that reads both a Citus table and a local
 * soft-delete table whose deleted rows are hidden: Citus's planning of such
 * a join crashed the server with the hiding qual on the local table. */
void refuse_local_join(Query* q);

/* From _PG_init: lets create_distributed_table / create_reference_table
 * distribute a table that is already enabled (our triggers go to the shards). */
void init();

}  // namespace pg_lifecycle::softdelete::citus
