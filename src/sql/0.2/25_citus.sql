
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
