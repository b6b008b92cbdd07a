/*
 * softdelete.hpp — soft delete (SPEC.md §1): which tables are enabled, as
 * seen by this backend, and the pieces that act on them.
 *
 * A DELETE on an enabled table is turned into an UPDATE by the planner hook
 * (planner.cpp); the BEFORE DELETE trigger soft_delete_guard does the same
 * when the library is not preloaded; the AFTER UPDATE trigger
 * soft_delete_cascade follows foreign keys (triggers.cpp); the SQL functions
 * are in functions.cpp; the retention task in retention.cpp.
 */
#pragma once

#include "bridge/pg.hpp"

#include <string>
#include <vector>

namespace pg_lifecycle::softdelete {

/* An enabled table (or a partition of one), with its columns. */
struct TableInfo {
    Oid relid;
    Oid registered;           /* the table named in soft_delete_tables (itself or an ancestor) */
    bool hide;
    AttrNumber deleted_at;
    AttrNumber deleted_by;
    AttrNumber delete_event;
};

/* The enabled-table entry for relid, or nullptr.  The pointer is valid until
 * the next PostgreSQL call that may process invalidations: copy what you need. */
const TableInfo* lookup(Oid relid);
/* Whether any table in this database is enabled (cheap; loads the registry). */
bool any_enabled();
/* OIDs of lifecycle.current_actor() and lifecycle.current_delete_event(). */
Oid actor_function();
Oid event_function();
/* Make every backend reload the registry (after it changed) and replan
 * statements on relid. */
void invalidate(Oid relid);

/* A foreign key, top-level (not one of its per-partition clones). */
struct ForeignKey {
    Oid constraint;
    std::string name;
    Oid referencing;                           /* the child table */
    Oid referenced;                            /* the parent table */
    char on_delete;                            /* confdeltype: a r c n d */
    std::vector<std::string> referencing_cols;
    std::vector<std::string> referenced_cols;
};
/* Keys referencing relid or one of its partition ancestors. */
std::vector<ForeignKey> incoming_fks(Oid relid);
/* Whether any foreign key references the table or an ancestor (no copy). */
bool has_incoming_fks(Oid relid);
/* Keys of relid (or its ancestors) referencing other tables. */
std::vector<ForeignKey> outgoing_fks(Oid relid);

/* True inside foreign-key (RI) checks and actions, which must see every row. */
bool in_ri_context();

void init();  /* GUC-independent hooks and callbacks, from _PG_init */
void register_retention_task();

/* One purge batch of `table` (a leaf or plain table): hard-deletes up to
 * `batch` rows soft-deleted longer ago than `older_than`.  Returns the rows. */
int64 purge_batch(Oid table, Interval* older_than, int batch);

}  // namespace pg_lifecycle::softdelete
