
------------------------------------------------------------------------------
-- §6 Soft delete on a Citus cluster
------------------------------------------------------------------------------

-- current_delete_event() as a STABLE function, for soft deletes of Citus
-- tables: Citus refuses VOLATILE functions in a distributed UPDATE and
-- evaluates STABLE ones once, on the node that received the statement, so
-- every shard gets the same event.  (Its value is the transaction's event,
-- which is stable within the transaction.)
CREATE FUNCTION lifecycle._citus_delete_event() RETURNS bigint
    AS 'MODULE_PATHNAME', 'lifecycle_current_delete_event' LANGUAGE C STABLE;

-- Exact counts of a Citus table: the fold compacts each placement of its
-- deltas (count_N_delta, colocated with the table) on the node that holds it,
-- called there through run_command_on_placements.  Runs as the shard's
-- owner; only for shards of our count deltas.
CREATE FUNCTION lifecycle._count_compact(shard regclass) RETURNS bigint
    AS 'MODULE_PATHNAME', 'lifecycle_count_compact' LANGUAGE C STRICT;
REVOKE EXECUTE ON FUNCTION lifecycle._count_compact(regclass) FROM PUBLIC;
