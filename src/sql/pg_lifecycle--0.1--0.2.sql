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

------------------------------------------------------------------------------
-- Dump/restore loses nothing (SPEC §0): sessions, the job history and the
-- delete-event sequence are in the dump too.
------------------------------------------------------------------------------
SELECT pg_catalog.pg_extension_config_dump('lifecycle.job_runs', '');
SELECT pg_catalog.pg_extension_config_dump('lifecycle.job_runs_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('lifecycle.sessions', '');
SELECT pg_catalog.pg_extension_config_dump('lifecycle.delete_event_seq', '');

------------------------------------------------------------------------------
-- DDL on expiry tables: a renamed expiry column is followed, a dropped or
-- retyped one refused (SPEC §3).
------------------------------------------------------------------------------
-- A dropped table takes its registration with it; dropping the expiry column
-- of a table that stays is refused (the worker could not expire its rows).
CREATE OR REPLACE FUNCTION lifecycle.on_sql_drop() RETURNS event_trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    r record;
BEGIN
    IF EXISTS (SELECT 1 FROM pg_event_trigger_dropped_objects() WHERE classid = 'pg_class'::regclass) THEN
        DELETE FROM lifecycle.expire_tables e WHERE NOT EXISTS (SELECT 1 FROM pg_class c WHERE c.oid = e.tbl::oid);
        FOR r IN SELECT e.tbl, e.column_name FROM lifecycle.expire_tables e
                  WHERE NOT EXISTS (SELECT 1 FROM pg_attribute a WHERE a.attrelid = e.tbl::oid
                                       AND a.attname = e.column_name AND NOT a.attisdropped)
        LOOP
            RAISE EXCEPTION 'column "%" of table % is the expiry column of pg_lifecycle', r.column_name, r.tbl
                USING ERRCODE = '55000',
                      DETAIL = 'The worker deletes the table''s rows whose expiry column has passed.',
                      HINT = format('Call lifecycle.expire_disable(%L) first.', r.tbl::text);
        END LOOP;
    END IF;
END $$;

-- An expiry column renamed is followed; retyped to something that is not a
-- timestamp, refused.
CREATE FUNCTION lifecycle.on_ddl_end_expiry() RETURNS event_trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    r record;
    renamed name;
BEGIN
    FOR r IN SELECT e.tbl, e.column_name FROM lifecycle.expire_tables e
              WHERE EXISTS (SELECT 1 FROM pg_class c WHERE c.oid = e.tbl::oid)
                AND NOT EXISTS (SELECT 1 FROM pg_attribute a WHERE a.attrelid = e.tbl::oid
                                   AND a.attname = e.column_name AND NOT a.attisdropped)
    LOOP
        SELECT a.attname INTO renamed
          FROM pg_event_trigger_ddl_commands() d
          JOIN pg_attribute a ON a.attrelid = d.objid AND a.attnum = d.objsubid
         WHERE d.classid = 'pg_class'::regclass AND d.objid = r.tbl::oid AND d.objsubid > 0
           AND NOT a.attisdropped
         LIMIT 1;
        IF renamed IS NULL THEN
            RAISE EXCEPTION 'column "%" of table % is the expiry column of pg_lifecycle', r.column_name, r.tbl
                USING ERRCODE = '55000', HINT = format('Call lifecycle.expire_disable(%L) first.', r.tbl::text);
        END IF;
        UPDATE lifecycle.expire_tables SET column_name = renamed WHERE tbl = r.tbl;
    END LOOP;
    FOR r IN SELECT e.tbl, e.column_name, format_type(a.atttypid, a.atttypmod) AS type
               FROM lifecycle.expire_tables e JOIN pg_attribute a ON a.attrelid = e.tbl::oid
                AND a.attname = e.column_name AND NOT a.attisdropped
              WHERE a.atttypid NOT IN ('timestamptz'::regtype, 'timestamp'::regtype, 'date'::regtype)
    LOOP
        RAISE EXCEPTION 'column "%" of table % is the expiry column of pg_lifecycle and must stay a timestamp',
                        r.column_name, r.tbl
            USING ERRCODE = '55000', DETAIL = format('Its type would be %s.', r.type),
                  HINT = format('Call lifecycle.expire_disable(%L) first.', r.tbl::text);
    END LOOP;
END $$;
REVOKE EXECUTE ON FUNCTION lifecycle.on_ddl_end_expiry() FROM PUBLIC;
CREATE EVENT TRIGGER lifecycle_ddl_end_expiry ON ddl_command_end WHEN TAG IN ('ALTER TABLE')
    EXECUTE FUNCTION lifecycle.on_ddl_end_expiry();

------------------------------------------------------------------------------
-- The extension's own life cycle: dump/restore and DROP EXTENSION
------------------------------------------------------------------------------
-- Our triggers created by a restore whose dump lacked our configuration (a
-- schema-only or --schema dump) attach their table again.
CREATE FUNCTION lifecycle.on_create_trigger() RETURNS event_trigger
    AS 'MODULE_PATHNAME', 'lifecycle_on_create_trigger' LANGUAGE C;
-- DROP EXTENSION pg_lifecycle takes the count tables (not members) with it.
CREATE FUNCTION lifecycle.on_drop_extension() RETURNS event_trigger
    AS 'MODULE_PATHNAME', 'lifecycle_on_drop_extension' LANGUAGE C;
REVOKE EXECUTE ON FUNCTION lifecycle.on_create_trigger(), lifecycle.on_drop_extension() FROM PUBLIC;
CREATE EVENT TRIGGER lifecycle_create_trigger ON ddl_command_end WHEN TAG IN ('CREATE TRIGGER')
    EXECUTE FUNCTION lifecycle.on_create_trigger();
CREATE EVENT TRIGGER lifecycle_drop_extension ON ddl_command_start WHEN TAG IN ('DROP EXTENSION')
    EXECUTE FUNCTION lifecycle.on_drop_extension();

------------------------------------------------------------------------------
-- §4 Exact counts: facets and timelines; DETACH ... CONCURRENTLY refused on
-- counted tables (issue 15)
------------------------------------------------------------------------------
CREATE FUNCTION lifecycle.count_by(tbl regclass, dimension name, filter jsonb DEFAULT '{}',
                                   since timestamptz DEFAULT NULL, until timestamptz DEFAULT NULL)
    RETURNS TABLE (value text, count bigint) AS 'MODULE_PATHNAME', 'lifecycle_count_by' LANGUAGE C STABLE ROWS 10;
CREATE FUNCTION lifecycle.count_series(tbl regclass, step interval, filter jsonb DEFAULT '{}',
                                       since timestamptz DEFAULT NULL, until timestamptz DEFAULT NULL)
    RETURNS TABLE (bucket_start timestamptz, count bigint) AS 'MODULE_PATHNAME', 'lifecycle_count_series' LANGUAGE C STABLE ROWS 24;
CREATE EVENT TRIGGER lifecycle_count_alter_start ON ddl_command_start
    WHEN TAG IN ('ALTER TABLE')
    EXECUTE FUNCTION lifecycle.count_ddl();
