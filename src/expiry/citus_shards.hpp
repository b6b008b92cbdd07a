/*
 * citus_shards.hpp — maintenance of Citus tables over their shards (SPEC.md
 * §6): row expiry, soft-delete retention and the session tasks, when the
 * table they work on is a Citus table.
 *
 * The design: the registration stays on the coordinator (lifecycle.expire_tables,
 * lifecycle.soft_delete_tables), and the coordinator's worker (or
 * run_maintenance there) does the work.  A batch of a distributed table is one
 * batch on every shard placement, run in parallel on the node that holds it
 * through Citus's master_run_on_worker (a new connection per placement, as the
 * table's owner; each placement's batch commits on its node on its own).  On
 * that node the batch is the single-server batch on the shard, a local heap
 * table: skip locked, the row cap, the sweep over block ranges (whose position
 * the coordinator keeps per shard and hands back with the next batch).
 * Reference tables are changed through Citus by value (every placement gets
 * the same rows), see expire.cpp.
 */
#pragma once

#include "bridge/pg.hpp"

#include <string>
#include <vector>

namespace pg_lifecycle::expiry::citus {

/* pg_dist_partition.partmethod of relid ('h' hash, 'r' range, 'a' append,
 * 'n' reference or Citus local table), or '\0' for a table Citus does not
 * know (also when Citus is not installed). */
char partition_method(Oid relid);

/* Whether this node is the coordinator (Citus group 0) or Citus is absent. */
bool on_coordinator();

struct Placement {
    int64 shardid;
    std::string shard; /* schema-qualified, quoted shard relation name */
    std::string node;
    int32 port;
};
/* The active placements of a distributed table's shards. */
std::vector<Placement> placements(Oid relid);

struct RemoteResult {
    bool success;
    std::string result; /* the command's single value, or the error message */
};
/* Runs commands[i] on placements[i]'s node, in parallel, each in its own
 * connection and transaction (Citus's master_run_on_worker), as the current
 * user. */
std::vector<RemoteResult> run_on_placements(const std::vector<Placement>& where,
                                            const std::vector<std::string>& commands);

/* The rows each placement's batch reports (a count as its single value),
 * summed; `more` once one of them filled its batch of `batch` rows.  The first
 * failed placement is named in `error` (the others are still summed); all of
 * them failing with nothing done is an error (XX000). */
struct PlacementRows {
    int64 rows = 0;
    bool more = false;
    std::string error;
};
PlacementRows sum_placement_rows(const std::vector<Placement>& where, const std::vector<RemoteResult>& results,
                                 int64 batch);

/* A SQL literal. */
std::string literal(const std::string& value);
/* An interval as a literal that any IntervalStyle reads back exactly. */
std::string interval_literal(const Interval* iv);

}  // namespace pg_lifecycle::expiry::citus
