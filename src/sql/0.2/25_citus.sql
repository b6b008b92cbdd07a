
------------------------------------------------------------------------------
-- §6 Soft delete on a Citus cluster
------------------------------------------------------------------------------

-- _current_delete_event() as a STABLE function, for soft deletes of Citus
-- tables: Citus refuses VOLATILE functions in a distributed UPDATE and
-- evaluates STABLE ones once, on the node that received the statement, so
-- every shard gets the same event.  (Its value is the transaction's event,
-- which is stable within the transaction.)
CREATE FUNCTION lifecycle._citus_delete_event() RETURNS bigint
    AS 'MODULE_PATHNAME', 'lifecycle_current_delete_event' LANGUAGE C STABLE;

-- Expiry of a distributed table: the coordinator's expire task runs one batch
-- on every shard, on the node that holds it, through this function (as the
-- table's owner, which the caller must be).  Internal.
CREATE FUNCTION lifecycle._expire_shard(shard regclass, column_name name, after interval, batch_size integer,
                                        state text)
    RETURNS text AS 'MODULE_PATHNAME', 'lifecycle_expire_shard' LANGUAGE C VOLATILE;

-- Soft-delete retention and lifecycle.purge of a distributed table: one purge
-- batch on a shard, on the node that holds it (as the table's owner, which
-- the caller must be).  Internal.
CREATE FUNCTION lifecycle._purge_shard(shard regclass, older_than interval, batch_size integer)
    RETURNS bigint AS 'MODULE_PATHNAME', 'lifecycle_purge_shard' LANGUAGE C VOLATILE;

-- The session tasks on a distributed lifecycle.sessions: one batch ('close' or
-- 'purge') on a shard, on the node that holds it.  Internal, for the
-- extension's owner.
CREATE FUNCTION lifecycle._sessions_shard(task text, shard regclass, retention interval)
    RETURNS bigint AS 'MODULE_PATHNAME', 'lifecycle_sessions_shard' LANGUAGE C VOLATILE;
REVOKE EXECUTE ON FUNCTION lifecycle._sessions_shard(text, regclass, interval) FROM PUBLIC;

-- token_purge on distributed token tables: one batch on colocated shards of
-- token_family_state and token_chain, on the node that holds them.  Internal,
-- for the extension's owner.
CREATE FUNCTION lifecycle._token_purge_shard(state regclass, chain regclass, retention interval)
    RETURNS bigint AS 'MODULE_PATHNAME', 'lifecycle_token_purge_shard' LANGUAGE C VOLATILE;
REVOKE EXECUTE ON FUNCTION lifecycle._token_purge_shard(regclass, regclass, interval) FROM PUBLIC;

-- Exact counts of a Citus table: the fold compacts each placement of its
-- deltas (count_N_delta, colocated with the table) on the node that holds it,
-- called there through run_command_on_placements.  Runs as the shard's
-- owner; only for shards of our count deltas.
CREATE FUNCTION lifecycle._count_compact(shard regclass) RETURNS bigint
    AS 'MODULE_PATHNAME', 'lifecycle_count_compact' LANGUAGE C STRICT;
REVOKE EXECUTE ON FUNCTION lifecycle._count_compact(regclass) FROM PUBLIC;
