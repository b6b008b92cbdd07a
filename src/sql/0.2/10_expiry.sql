------------------------------------------------------------------------------
-- §3 Expiry, sessions and the background worker
------------------------------------------------------------------------------

-- Tables whose expired rows the worker deletes (configuration: kept by pg_dump).
CREATE TABLE lifecycle.expire_tables (
    tbl         regclass PRIMARY KEY,
    column_name name     NOT NULL,
    after       interval NOT NULL DEFAULT '0',
    batch_size  integer  NOT NULL CHECK (batch_size BETWEEN 1 AND 1000000),
    enabled_at  timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE lifecycle.expire_tables IS 'pg_lifecycle: tables swept by row expiry (lifecycle.expire_enable)';
SELECT pg_catalog.pg_extension_config_dump('lifecycle.expire_tables', '');

-- One row per maintenance pass (task 'pass') and per task that did work or failed.
CREATE TABLE lifecycle.job_runs (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    started_at  timestamptz NOT NULL,
    finished_at timestamptz NOT NULL,
    task        text NOT NULL,
    target      text,
    rows        bigint,
    status      text NOT NULL CHECK (status IN ('ok', 'error')),
    error       text
);
CREATE INDEX job_runs_finished_at ON lifecycle.job_runs (finished_at);
CREATE INDEX job_runs_errors ON lifecycle.job_runs (id) WHERE status = 'error';
CREATE INDEX job_runs_passes ON lifecycle.job_runs (id) WHERE task = 'pass';
COMMENT ON TABLE lifecycle.job_runs IS 'pg_lifecycle: history of maintenance passes, kept for lifecycle.history_retention';
-- The history survives a dump/restore.
SELECT pg_catalog.pg_extension_config_dump('lifecycle.job_runs', '');
SELECT pg_catalog.pg_extension_config_dump('lifecycle.job_runs_id_seq', '');

CREATE TABLE lifecycle.sessions (
    session_id       uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    user_id          text NOT NULL,
    device_id        text,
    ip               inet,
    user_agent       text,
    mfa_verified     boolean NOT NULL DEFAULT false,
    created_at       timestamptz NOT NULL DEFAULT now(),
    last_activity_at timestamptz NOT NULL DEFAULT now(),
    expires_at       timestamptz NOT NULL,
    idle_timeout     interval,
    idle_expires_at  timestamptz,      -- last_activity_at + idle_timeout, kept by session_create/touch
    ended_at         timestamptz,
    end_reason       text,
    CHECK ((ended_at IS NULL) = (end_reason IS NULL))
) WITH (fillfactor = 80);            -- room for HOT updates by session_touch
CREATE INDEX sessions_user_live ON lifecycle.sessions (user_id) WHERE ended_at IS NULL;
CREATE INDEX sessions_expires_live ON lifecycle.sessions (expires_at) WHERE ended_at IS NULL;
CREATE INDEX sessions_idle_live ON lifecycle.sessions (idle_expires_at)
    WHERE ended_at IS NULL AND idle_expires_at IS NOT NULL;
CREATE INDEX sessions_ended ON lifecycle.sessions (ended_at) WHERE ended_at IS NOT NULL;
COMMENT ON TABLE lifecycle.sessions IS 'pg_lifecycle: sessions, live and ended (history kept for lifecycle.session_history_retention)';
-- Sessions survive a dump/restore: users stay signed in, the history stays.
SELECT pg_catalog.pg_extension_config_dump('lifecycle.sessions', '');

CREATE FUNCTION lifecycle.expire_enable(tbl regclass, column_name name, after interval DEFAULT '0',
                                        batch_size integer DEFAULT 1000)
    RETURNS void AS 'MODULE_PATHNAME', 'lifecycle_expire_enable' LANGUAGE C;
CREATE FUNCTION lifecycle.expire_disable(tbl regclass)
    RETURNS void AS 'MODULE_PATHNAME', 'lifecycle_expire_disable' LANGUAGE C;

-- Internal to the expire task's batches: the row cap of their DELETE (raises 55000 anywhere else).
CREATE FUNCTION lifecycle._expire_take("row" tid, row_xmax xid, expired boolean)
    RETURNS boolean AS 'MODULE_PATHNAME', 'lifecycle_expire_take' LANGUAGE C VOLATILE;

-- Security definer: it maintains the extension's own tables too; each table's
-- batches run as that table's owner (a security-restricted operation).
CREATE FUNCTION lifecycle.run_maintenance(max_runtime interval DEFAULT '10s')
    RETURNS TABLE(task text, target regclass, rows bigint)
    AS 'MODULE_PATHNAME', 'lifecycle_run_maintenance' LANGUAGE C
    SECURITY DEFINER SET search_path = pg_catalog, pg_temp;
REVOKE EXECUTE ON FUNCTION lifecycle.run_maintenance(interval) FROM PUBLIC;

CREATE FUNCTION lifecycle.session_create(user_id text, ttl interval DEFAULT '30 days',
                                         idle_timeout interval DEFAULT NULL, device_id text DEFAULT NULL,
                                         ip inet DEFAULT NULL, user_agent text DEFAULT NULL,
                                         mfa_verified boolean DEFAULT false)
    RETURNS uuid AS 'MODULE_PATHNAME', 'lifecycle_session_create' LANGUAGE C VOLATILE
    SECURITY DEFINER SET search_path = pg_catalog, pg_temp;
CREATE FUNCTION lifecycle.session_touch(session_id uuid)
    RETURNS boolean AS 'MODULE_PATHNAME', 'lifecycle_session_touch' LANGUAGE C VOLATILE
    SECURITY DEFINER SET search_path = pg_catalog, pg_temp;
CREATE FUNCTION lifecycle.session_end(session_id uuid, reason text DEFAULT 'logout')
    RETURNS boolean AS 'MODULE_PATHNAME', 'lifecycle_session_end' LANGUAGE C VOLATILE
    SECURITY DEFINER SET search_path = pg_catalog, pg_temp;
CREATE FUNCTION lifecycle.sessions_end_user(user_id text, reason text DEFAULT 'logout_all')
    RETURNS bigint AS 'MODULE_PATHNAME', 'lifecycle_sessions_end_user' LANGUAGE C VOLATILE
    SECURITY DEFINER SET search_path = pg_catalog, pg_temp;
REVOKE EXECUTE ON FUNCTION lifecycle.session_create(text, interval, interval, text, inet, text, boolean),
                           lifecycle.session_touch(uuid), lifecycle.session_end(uuid, text),
                           lifecycle.sessions_end_user(text, text) FROM PUBLIC;

-- session_touch that returns the live session (no row when it is dead), and
-- the "signed-in devices" list.
CREATE FUNCTION lifecycle.session_validate(session_id uuid)
    RETURNS TABLE(session_id uuid, user_id text, device_id text, mfa_verified boolean, created_at timestamptz,
                  last_activity_at timestamptz, expires_at timestamptz)
    AS 'MODULE_PATHNAME', 'lifecycle_session_validate' LANGUAGE C VOLATILE ROWS 1
    SECURITY DEFINER SET search_path = pg_catalog, pg_temp;
CREATE FUNCTION lifecycle.user_sessions(user_id text)
    RETURNS TABLE(session_id uuid, user_id text, device_id text, mfa_verified boolean, created_at timestamptz,
                  last_activity_at timestamptz, expires_at timestamptz)
    -- C, not SQL: Citus cannot plan a SQL function's parameters in a query
    -- over every shard of a distributed lifecycle.sessions.
    AS 'MODULE_PATHNAME', 'lifecycle_user_sessions' LANGUAGE C STABLE
    SECURITY DEFINER SET search_path = pg_catalog, pg_temp;
REVOKE EXECUTE ON FUNCTION lifecycle.session_validate(uuid), lifecycle.user_sessions(text) FROM PUBLIC;

-- health(): what the worker is doing for this database.
-- The launcher's view of a database (default: the current one) from shared
-- memory, NULL when the library is not preloaded: for health() and the DBA.
CREATE FUNCTION lifecycle._worker_state(dboid oid DEFAULT NULL) RETURNS jsonb
    AS 'MODULE_PATHNAME', 'lifecycle_worker_state' LANGUAGE C VOLATILE;
REVOKE EXECUTE ON FUNCTION lifecycle._worker_state(oid) FROM PUBLIC;

-- health(): what the worker is doing for this database.  It never raises
-- for a broken registration: a table whose backlog cannot be read (its
-- expiry column renamed, say) shows the error in its place.
CREATE FUNCTION lifecycle.health() RETURNS jsonb
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
REVOKE EXECUTE ON FUNCTION lifecycle.health() FROM PUBLIC;

-- A dropped table takes its registration with it; dropping the expiry column
-- of a table that stays is refused (the worker could not expire its rows).
CREATE FUNCTION lifecycle.expire_sql_drop() RETURNS event_trigger
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
REVOKE EXECUTE ON FUNCTION lifecycle.expire_sql_drop() FROM PUBLIC;
CREATE EVENT TRIGGER lifecycle_sql_drop ON sql_drop EXECUTE FUNCTION lifecycle.expire_sql_drop();

-- An expiry column renamed is followed; retyped to something that is not a
-- timestamp, refused.
CREATE FUNCTION lifecycle.expire_ddl_end() RETURNS event_trigger
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
REVOKE EXECUTE ON FUNCTION lifecycle.expire_ddl_end() FROM PUBLIC;
CREATE EVENT TRIGGER lifecycle_ddl_end_expiry ON ddl_command_end WHEN TAG IN ('ALTER TABLE')
    EXECUTE FUNCTION lifecycle.expire_ddl_end();
