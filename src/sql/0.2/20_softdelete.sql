
------------------------------------------------------------------------------
-- §1 Soft delete
------------------------------------------------------------------------------

-- Tables whose DELETEs are soft (configuration: kept by pg_dump).
CREATE TABLE lifecycle.soft_delete_tables (
    tbl        regclass PRIMARY KEY,
    retention  interval CHECK (retention > '0'),
    hide       boolean NOT NULL DEFAULT true,
    enabled_at timestamptz NOT NULL DEFAULT now(),
    flag       name       -- a legacy boolean column kept in step with deleted_at (is_deleted)
);
COMMENT ON TABLE lifecycle.soft_delete_tables IS 'pg_lifecycle: tables whose DELETE keeps the row (lifecycle.soft_delete_enable)';
SELECT pg_catalog.pg_extension_config_dump('lifecycle.soft_delete_tables', '');
GRANT SELECT ON lifecycle.soft_delete_tables TO PUBLIC;   -- which tables are protected is not a secret

-- One delete_event id per soft-deleting transaction (its cascades share it).
-- Each session takes 32 ids at a time: the ids are unique but not in the
-- order of time across sessions, and a session that ends leaves its unused
-- ones out.  One id per transaction then costs no shared-buffer lock most
-- of the time (many sessions soft-deleting at once wait on nothing).
CREATE SEQUENCE lifecycle.delete_event_seq CACHE 32;
-- Dumped: after a restore new delete events never reuse an old event's id.
SELECT pg_catalog.pg_extension_config_dump('lifecycle.delete_event_seq', '');
GRANT USAGE ON SEQUENCE lifecycle.delete_event_seq TO PUBLIC;

CREATE FUNCTION lifecycle.soft_delete_enable(tbl regclass, retention interval DEFAULT NULL, hide boolean DEFAULT true,
                                             flag name DEFAULT NULL)
    RETURNS void AS 'MODULE_PATHNAME', 'lifecycle_soft_delete_enable' LANGUAGE C;
CREATE FUNCTION lifecycle.soft_delete_disable(tbl regclass)
    RETURNS void AS 'MODULE_PATHNAME', 'lifecycle_soft_delete_disable' LANGUAGE C;
CREATE FUNCTION lifecycle.restore(tbl regclass, id anyelement)
    RETURNS bigint AS 'MODULE_PATHNAME', 'lifecycle_restore' LANGUAGE C;
-- The id as text (or an untyped literal / parameter, as drivers bind it):
-- converted to the key's type.
CREATE FUNCTION lifecycle.restore(tbl regclass, id text)
    RETURNS bigint AS 'MODULE_PATHNAME', 'lifecycle_restore' LANGUAGE C;
CREATE FUNCTION lifecycle.purge(tbl regclass, older_than interval DEFAULT NULL)
    RETURNS bigint AS 'MODULE_PATHNAME', 'lifecycle_purge' LANGUAGE C;
CREATE FUNCTION lifecycle.soft_unique(tbl regclass, columns name[])
    RETURNS name AS 'MODULE_PATHNAME', 'lifecycle_soft_unique' LANGUAGE C;

-- Used inside soft-deleting statements: the statement's delete_event and actor.
CREATE FUNCTION lifecycle._current_delete_event() RETURNS bigint
    AS 'MODULE_PATHNAME', 'lifecycle_current_delete_event' LANGUAGE C VOLATILE;
CREATE FUNCTION lifecycle._current_actor() RETURNS text
    AS 'MODULE_PATHNAME', 'lifecycle_current_actor' LANGUAGE C STABLE;

-- Row triggers put on enabled tables by soft_delete_enable:
--   soft_delete_guard   BEFORE DELETE: the safety net when a DELETE reaches the
--                       table (library not preloaded): soft-deletes the row itself.
--   soft_delete_cascade AFTER UPDATE, when a row goes from live to deleted:
--                       foreign-key cascade / restrict for the soft delete
--                       (an UPDATE of deleted_at by the application itself
--                       gets an event and an actor first); and when the
--                       application's own UPDATE brings a row back: the rows
--                       its event took come back too.
CREATE FUNCTION lifecycle.soft_delete_guard() RETURNS trigger
    AS 'MODULE_PATHNAME', 'lifecycle_soft_delete_guard' LANGUAGE C;
CREATE FUNCTION lifecycle.soft_delete_cascade() RETURNS trigger
    AS 'MODULE_PATHNAME', 'lifecycle_soft_delete_cascade' LANGUAGE C;
--   soft_delete_truncate BEFORE TRUNCATE (on the table and each partition):
--                       refuses TRUNCATE unless lifecycle.hard_delete is
--                       honoured for the table's owner.
-- Not executable by PUBLIC: only soft_delete_enable (as the extension's owner)
-- puts them on tables, and each acts only on a registered table.
CREATE FUNCTION lifecycle.soft_delete_truncate() RETURNS trigger
    AS 'MODULE_PATHNAME', 'lifecycle_soft_delete_truncate' LANGUAGE C;
--   soft_delete_flag    BEFORE INSERT OR UPDATE, on tables enabled with a flag
--                       (its argument): keeps the flag equal to
--                       "deleted_at IS NOT NULL"; an application that sets
--                       only the flag soft-deletes / restores the row.
CREATE FUNCTION lifecycle.soft_delete_flag() RETURNS trigger
    AS 'MODULE_PATHNAME', 'lifecycle_soft_delete_flag' LANGUAGE C;
REVOKE EXECUTE ON FUNCTION lifecycle.soft_delete_guard(), lifecycle.soft_delete_cascade(),
                           lifecycle.soft_delete_truncate(), lifecycle.soft_delete_flag() FROM PUBLIC;
-- Internal, in soft_delete_cascade's WHEN: does a foreign key reference the
-- row's table (or an ancestor)?  When none does, no trigger event is queued.
CREATE FUNCTION lifecycle._soft_delete_referenced(tbl oid) RETURNS boolean
    AS 'MODULE_PATHNAME', 'lifecycle_soft_delete_referenced' LANGUAGE C STABLE STRICT;

-- Forget registrations of dropped tables.
CREATE FUNCTION lifecycle.soft_delete_forget() RETURNS event_trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_event_trigger_dropped_objects()
                WHERE classid = 'pg_class'::regclass AND objsubid = 0) THEN
        DELETE FROM lifecycle.soft_delete_tables s
         WHERE NOT EXISTS (SELECT 1 FROM pg_class c WHERE c.oid = s.tbl);
    END IF;
END $$;
REVOKE EXECUTE ON FUNCTION lifecycle.soft_delete_forget() FROM PUBLIC;
CREATE EVENT TRIGGER lifecycle_sql_drop_soft_delete ON sql_drop
    EXECUTE FUNCTION lifecycle.soft_delete_forget();

-- Refuses DDL that would remove a table's protection (its columns, its
-- triggers); gives new partitions the TRUNCATE trigger.
CREATE FUNCTION lifecycle.soft_delete_ddl() RETURNS event_trigger
    AS 'MODULE_PATHNAME', 'lifecycle_soft_delete_ddl' LANGUAGE C;
REVOKE EXECUTE ON FUNCTION lifecycle.soft_delete_ddl() FROM PUBLIC;
CREATE EVENT TRIGGER lifecycle_soft_delete_ddl_end ON ddl_command_end
    WHEN TAG IN ('CREATE TABLE', 'ALTER TABLE', 'ALTER TRIGGER')
    EXECUTE FUNCTION lifecycle.soft_delete_ddl();
CREATE EVENT TRIGGER lifecycle_soft_delete_sql_drop ON sql_drop
    EXECUTE FUNCTION lifecycle.soft_delete_ddl();
