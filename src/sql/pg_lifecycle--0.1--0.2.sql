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
-- The worker pool (issue 12): the launcher's view of the database in
-- health() (waiting for a slot, skipped as read-only, next pass due); a
-- broken registration is reported by health() instead of making it raise.
------------------------------------------------------------------------------
-- The launcher's view of a database (default: the current one) from shared
-- memory, NULL when the library is not preloaded: for health() and the DBA.
CREATE FUNCTION lifecycle._worker_state(dboid oid DEFAULT NULL) RETURNS jsonb
    AS 'MODULE_PATHNAME', 'lifecycle_worker_state' LANGUAGE C VOLATILE;
REVOKE EXECUTE ON FUNCTION lifecycle._worker_state(oid) FROM PUBLIC;

-- health(): what the worker is doing for this database.  It never raises
-- for a broken registration: a table whose backlog cannot be read (its
-- expiry column renamed, say) shows the error in its place.
CREATE OR REPLACE FUNCTION lifecycle.health() RETURNS jsonb
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    backlog jsonb := '{}';
    worker jsonb;
    pool jsonb;
    r record;
    n bigint;
BEGIN
    FOR r IN SELECT e.tbl, e.column_name, e.after, c.relkind
               FROM lifecycle.expire_tables e JOIN pg_class c ON c.oid = e.tbl ORDER BY e.tbl::text
    LOOP
        BEGIN
            -- Capped so that health() stays cheap on a huge backlog.
            EXECUTE format('SELECT count(*) FROM (SELECT 1 FROM %s %s WHERE %I <= now() - $1 LIMIT 1000000) s',
                           CASE WHEN r.relkind = 'p' THEN '' ELSE 'ONLY' END, r.tbl, r.column_name)
                INTO n USING r.after;
            backlog := backlog || jsonb_build_object(r.tbl::text, n);
        EXCEPTION WHEN OTHERS THEN
            backlog := backlog || jsonb_build_object(r.tbl::text, jsonb_build_object('error', SQLSTATE || ': ' || SQLERRM));
        END;
    END LOOP;
    pool := lifecycle._worker_state();
    SELECT jsonb_build_object('alive', true, 'pid', pid, 'since', backend_start) INTO worker
      FROM pg_stat_activity
     WHERE backend_type = 'pg_lifecycle worker' AND datname = current_database()
     LIMIT 1;
    worker := coalesce(worker, jsonb_build_object('alive', false))
              || jsonb_build_object('next_pass_due', pool->'next_due', 'last_visit', pool->'last_visit',
                                    'passes', pool->'passes', 'last_pass_end', pool->'last_pass_end');
    RETURN jsonb_build_object(
        'database', current_database(),
        'preloaded', current_setting('shared_preload_libraries') ~ '(^|[\s,])pg_lifecycle($|[\s,])',
        'launcher_running', EXISTS (SELECT 1 FROM pg_stat_activity WHERE backend_type = 'pg_lifecycle launcher'),
        'enabled', current_setting('lifecycle.enabled', true)::boolean,
        'naptime', current_setting('lifecycle.naptime', true),
        'max_workers', current_setting('lifecycle.max_workers', true)::integer,
        'worker', worker,
        'waiting', pool->'waiting',
        'skipped', pool->'skipped',
        'last_pass', (SELECT jsonb_build_object('started_at', started_at, 'finished_at', finished_at,
                                                'rows', rows)
                        FROM lifecycle.job_runs WHERE task = 'pass' ORDER BY id DESC LIMIT 1),
        'last_error', (SELECT jsonb_build_object('at', finished_at, 'task', task, 'target', target,
                                                 'error', error)
                         FROM lifecycle.job_runs WHERE status = 'error' ORDER BY id DESC LIMIT 1),
        'backlog', jsonb_build_object(
            'expired_rows', backlog,
            'dead_sessions', (SELECT count(*) FROM lifecycle.sessions
                               WHERE ended_at IS NULL AND (expires_at <= now() OR idle_expires_at <= now()))));
END $$;
