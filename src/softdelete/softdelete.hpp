/*
 * softdelete.hpp — soft delete (SPEC.md §1): which tables are enabled, as
 * seen by this backend, and the pieces that act on them.
 *
 * A DELETE on an enabled table is turned into an UPDATE by the planner hook
 * (planner.cpp); the BEFORE DELETE trigger soft_delete_guard does the same
 * when the library is not preloaded; the AFTER UPDATE trigger
 * soft_delete_cascade follows foreign keys (triggers.cpp) — skipped by a soft
 * DELETE of a table no foreign key references (executor_start.cpp); the SQL functions
 * are in functions.cpp; the retention task in retention.cpp.
 */
#pragma once

#include "bridge/pg.hpp"

#include <optional>
#include <string>
#include <vector>

namespace pg_lifecycle::softdelete {

/* Whether a column of type `type` can be soft delete's column `name`:
 * deleted_at timestamptz, delete_event bigint, deleted_by text or varchar (an
 * ORM's String maps to varchar). */
inline bool soft_column_type_ok(const char* name, Oid type) {
    if (std::strcmp(name, "deleted_at") == 0) return type == TIMESTAMPTZOID;
    if (std::strcmp(name, "delete_event") == 0) return type == INT8OID;
    return type == TEXTOID || type == VARCHAROID;
}

/* An enabled table (or a partition of one), with its columns. */
struct TableInfo {
    Oid relid;
    Oid registered; /* the table named in soft_delete_tables (itself or an ancestor) */
    bool hide;
    AttrNumber deleted_at;
    AttrNumber deleted_by;
    AttrNumber delete_event;
};

/* The enabled-table entry for relid, or nullptr.  The pointer is valid until
 * the next PostgreSQL call that may process invalidations: copy what you need. */
const TableInfo* lookup(Oid relid);

/* The column a soft-delete table keeps its deletion time in: a row is live
 * while it IS NULL (counts count only those). */
inline constexpr const char* deleted_at_column = "deleted_at";
/* Whether soft delete is enabled on this very table (its registry row, read
 * in the current snapshot, not the cache lookup() keeps); false while the
 * registry does not exist (yet). */
bool enabled_on(Oid relid);
/* Whether any table in this database is enabled (cheap; loads the registry). */
bool any_enabled();
/* The tables named in lifecycle.soft_delete_tables. */
std::vector<Oid> registered_tables();
/* OIDs of lifecycle._current_actor() and lifecycle._current_delete_event()
 * (current_actor() and current_delete_event() in a database still at 0.1),
 * and of lifecycle.delete_event_seq (InvalidOid when not installed). */
Oid actor_function();
Oid event_function();
Oid event_sequence();
/* A function version 0.2 added (lifecycle.soft_delete_truncate), or
 * InvalidOid in a database still at 0.1: what its triggers can expect. */
Oid version_02_function();
/* Make every backend reload the registry (after it changed) and replan
 * statements on relid. */
void invalidate(Oid relid);

/* A foreign key, top-level (not one of its per-partition clones). */
struct ForeignKey {
    Oid constraint;
    std::string name;
    Oid referencing;       /* the child table */
    Oid referenced;        /* the parent table */
    char on_delete;        /* confdeltype: a r c n d */
    bool deferred = false; /* DEFERRABLE INITIALLY DEFERRED: checked at commit */
    std::vector<std::string> referencing_cols;
    std::vector<std::string> referenced_cols;
    /* The key's own "referenced = referencing" operator for each column pair,
     * as "OPERATOR(schema.name)": write `<referenced value> op <referencing
     * column>` (or the other way round with the same types), as the foreign
     * key's own checks do. */
    std::vector<std::string> eq_ops;
};
/* Keys referencing relid or one of its partition ancestors. */
std::vector<ForeignKey> incoming_fks(Oid relid);
/* Whether any foreign key references the table or an ancestor (no copy). */
bool has_incoming_fks(Oid relid);
/* Keys of relid (or its ancestors) referencing other tables. */
std::vector<ForeignKey> outgoing_fks(Oid relid);

/* Raises foreign_key_violation if the row of fk.referenced whose key columns
 * equal `values` is soft deleted (the row is locked FOR SHARE either way). */
void check_parent_not_deleted(const ForeignKey& fk, const std::vector<Oid>& types, const std::vector<Datum>& values,
                              const std::string& detail);

/* True inside foreign-key (RI) checks and actions, which must see every row. */
bool in_ri_context();

/* Whether lifecycle.hard_delete is on and honoured for relid here: only for
 * the table's owner (or a superuser) acting as the session's own role — not
 * in a foreign-key action, a SECURITY DEFINER function, the worker or any
 * security-restricted operation (SPEC.md §5). */
bool hard_delete_honoured(Oid relid);
/* lifecycle.hard_delete is on, outside a security-restricted operation (the
 * worker, run_maintenance's batches), where it is off whatever was SET. */
bool hard_delete_requested();
/* The 42501 error for lifecycle.hard_delete on where it is not honoured. */
[[noreturn]] void refuse_hard_delete(Oid relid);

/* While lifecycle.restore runs its own UPDATEs: the soft_delete_restored
 * trigger (an application's own restore) leaves them to it. */
extern int restore_depth;
struct RestoreScope {
    RestoreScope() { ++restore_depth; }
    ~RestoreScope() { --restore_depth; }
    RestoreScope(const RestoreScope&) = delete;
    RestoreScope& operator=(const RestoreScope&) = delete;
};

/* While purge_batch runs: the tables its own statements hard-delete from,
 * and whether a row reached by a foreign-key cascade may go (only rows that
 * are soft-deleted already). */
bool purging(Oid relid);
bool purge_in_progress();

/* The triggers that protect an enabled table (and each of its partitions),
 * installed and removed as the extension's owner (protection.cpp). */
/* hide: on a Citus cluster the guard trigger carries it to the shards. */
void install_triggers(Oid relid, bool hide = true);
/* The names of two of them (on partitions too: PostgreSQL clones a trigger
 * under its own name). */
inline constexpr const char* cascade_trigger = "lifecycle_soft_delete_cascade";
inline constexpr const char* flag_trigger = "lifecycle_soft_delete_flag";
void remove_triggers(Oid relid);
/* The flag trigger (soft_delete_flag) for `flag`, or none. */
void set_flag_trigger(Oid relid, const std::optional<std::string>& flag);
/* One of those triggers was created on relid by somebody else than our own
 * code (pg_restore of a dump without our configuration): register the table
 * again, with default settings, so that it is never left unprotected. */
void reattach_after_restore(Oid relid);

void init(); /* its settings (settings.cpp), hooks and callbacks, from _PG_init */
void register_retention_task();

/* One purge batch of `table` (a leaf or plain table): hard-deletes up to
 * `batch` rows soft-deleted longer ago than `older_than`.  Returns the rows. */
int64 purge_batch(Oid table, Interval* older_than, int batch);
/* One purge batch of a table: purge_batch on a local table, one batch on
 * every shard of a Citus distributed table (on the nodes that hold them);
 * refused (0A000) on a reference table. */
struct PurgeResult {
    int64 rows;
    bool more;         /* some table or shard had a full batch */
    std::string error; /* shards that failed while others were purged */
};
PurgeResult purge_any(Oid table, Interval* older_than, int batch);

}  // namespace pg_lifecycle::softdelete
