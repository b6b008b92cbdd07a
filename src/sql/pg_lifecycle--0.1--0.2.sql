-- pg_lifecycle 0.1 -> 0.2
\echo Use "ALTER EXTENSION pg_lifecycle UPDATE" to load this file. \quit

------------------------------------------------------------------------------
-- Security model (SPEC §5): trigger and event-trigger functions are not
-- executable by PUBLIC; run_maintenance is SECURITY DEFINER with a pinned
-- search_path; soft delete refuses TRUNCATE and DDL that would remove a
-- table's protection.
------------------------------------------------------------------------------
CREATE OR REPLACE FUNCTION lifecycle.run_maintenance(max_runtime interval DEFAULT '10s')
    RETURNS TABLE(task text, target regclass, rows bigint)
    AS 'MODULE_PATHNAME', 'lifecycle_run_maintenance' LANGUAGE C
    SECURITY DEFINER SET search_path = pg_catalog, pg_temp;
REVOKE EXECUTE ON FUNCTION lifecycle.on_sql_drop() FROM PUBLIC;

CREATE FUNCTION lifecycle.soft_delete_truncate() RETURNS trigger
    AS 'MODULE_PATHNAME', 'lifecycle_soft_delete_truncate' LANGUAGE C;
REVOKE EXECUTE ON FUNCTION lifecycle.soft_delete_guard(), lifecycle.soft_delete_cascade(),
                           lifecycle.soft_delete_truncate() FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION lifecycle.on_sql_drop_soft_delete() FROM PUBLIC;
CREATE FUNCTION lifecycle.soft_delete_ddl() RETURNS event_trigger
    AS 'MODULE_PATHNAME', 'lifecycle_soft_delete_ddl' LANGUAGE C;
REVOKE EXECUTE ON FUNCTION lifecycle.soft_delete_ddl() FROM PUBLIC;
CREATE EVENT TRIGGER lifecycle_soft_delete_ddl_end ON ddl_command_end
    WHEN TAG IN ('CREATE TABLE', 'ALTER TABLE', 'ALTER TRIGGER')
    EXECUTE FUNCTION lifecycle.soft_delete_ddl();
CREATE EVENT TRIGGER lifecycle_soft_delete_sql_drop ON sql_drop
    EXECUTE FUNCTION lifecycle.soft_delete_ddl();

REVOKE EXECUTE ON FUNCTION lifecycle.count_capture(), lifecycle.count_truncate(), lifecycle.count_ddl() FROM PUBLIC;

-- Tables enabled under 0.1 get the TRUNCATE trigger (soft_delete_enable is
-- idempotent: it adds what is missing and keeps the settings).
SELECT lifecycle.soft_delete_enable(tbl, retention, hide) FROM lifecycle.soft_delete_tables;
