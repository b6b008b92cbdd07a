-- pg_lifecycle 0.1 -> 0.2
\echo Use "ALTER EXTENSION pg_lifecycle UPDATE" to load this file. \quit

------------------------------------------------------------------------------
-- Names (README, "Names of SQL functions"): the functions only the extension
-- calls start with an underscore, event-trigger functions are named after
-- their capability.  Renamed, not re-created: the same OIDs, so the event
-- triggers and the soft-deleting statements' plans that use them keep working.
------------------------------------------------------------------------------
ALTER FUNCTION lifecycle.current_delete_event() RENAME TO _current_delete_event;
ALTER FUNCTION lifecycle.current_actor() RENAME TO _current_actor;
ALTER FUNCTION lifecycle.on_sql_drop() RENAME TO expire_sql_drop;
ALTER FUNCTION lifecycle.on_sql_drop_soft_delete() RENAME TO soft_delete_forget;

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
REVOKE EXECUTE ON FUNCTION lifecycle.expire_sql_drop() FROM PUBLIC;

CREATE FUNCTION lifecycle.soft_delete_truncate() RETURNS trigger
    AS 'MODULE_PATHNAME', 'lifecycle_soft_delete_truncate' LANGUAGE C;
REVOKE EXECUTE ON FUNCTION lifecycle.soft_delete_guard(), lifecycle.soft_delete_cascade(),
                           lifecycle.soft_delete_truncate() FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION lifecycle.soft_delete_forget() FROM PUBLIC;
CREATE FUNCTION lifecycle.soft_delete_ddl() RETURNS event_trigger
    AS 'MODULE_PATHNAME', 'lifecycle_soft_delete_ddl' LANGUAGE C;
REVOKE EXECUTE ON FUNCTION lifecycle.soft_delete_ddl() FROM PUBLIC;
CREATE EVENT TRIGGER lifecycle_soft_delete_ddl_end ON ddl_command_end
    WHEN TAG IN ('CREATE TABLE', 'ALTER TABLE', 'ALTER TRIGGER')
    EXECUTE FUNCTION lifecycle.soft_delete_ddl();
CREATE EVENT TRIGGER lifecycle_soft_delete_sql_drop ON sql_drop
    EXECUTE FUNCTION lifecycle.soft_delete_ddl();

REVOKE EXECUTE ON FUNCTION lifecycle.count_capture(), lifecycle.count_truncate(), lifecycle.count_ddl() FROM PUBLIC;


------------------------------------------------------------------------------
-- Dump/restore loses nothing (SPEC §0): sessions, the job history and the
-- delete-event sequence are in the dump too.
------------------------------------------------------------------------------
SELECT pg_catalog.pg_extension_config_dump('lifecycle.job_runs', '');
SELECT pg_catalog.pg_extension_config_dump('lifecycle.job_runs_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('lifecycle.sessions', '');
SELECT pg_catalog.pg_extension_config_dump('lifecycle.delete_event_seq', '');
-- Each session takes 32 delete-event ids at a time (see the install script).
ALTER SEQUENCE lifecycle.delete_event_seq CACHE 32;

------------------------------------------------------------------------------
-- DDL on expiry tables: a renamed expiry column is followed, a dropped or
-- retyped one refused (SPEC §3).
------------------------------------------------------------------------------
-- A dropped table takes its registration with it; dropping the expiry column
-- of a table that stays is refused (the worker could not expire its rows).
CREATE OR REPLACE FUNCTION lifecycle.expire_sql_drop() RETURNS event_trigger
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

------------------------------------------------------------------------------
-- The extension's own life cycle: dump/restore and DROP EXTENSION
------------------------------------------------------------------------------
-- Our triggers created by a restore whose dump lacked our configuration (a
-- schema-only or --schema dump) attach their table again.
CREATE FUNCTION lifecycle.extension_reattach() RETURNS event_trigger
    AS 'MODULE_PATHNAME', 'lifecycle_extension_reattach' LANGUAGE C;
-- DROP EXTENSION pg_lifecycle takes the count tables (not members) with it.
CREATE FUNCTION lifecycle.extension_drop() RETURNS event_trigger
    AS 'MODULE_PATHNAME', 'lifecycle_extension_drop' LANGUAGE C;
REVOKE EXECUTE ON FUNCTION lifecycle.extension_reattach(), lifecycle.extension_drop() FROM PUBLIC;
CREATE EVENT TRIGGER lifecycle_create_trigger ON ddl_command_end WHEN TAG IN ('CREATE TRIGGER')
    EXECUTE FUNCTION lifecycle.extension_reattach();
CREATE EVENT TRIGGER lifecycle_drop_extension ON ddl_command_start WHEN TAG IN ('DROP EXTENSION')
    EXECUTE FUNCTION lifecycle.extension_drop();

------------------------------------------------------------------------------
-- Token families with an inactivity lifetime (SPEC §2): token_family_create
-- gains idle_timeout; the grants on the old signature carry over.
------------------------------------------------------------------------------
ALTER TABLE lifecycle.token_family_state ADD COLUMN idle_timeout interval, ADD COLUMN idle_expires_at timestamptz;
CREATE INDEX token_family_state_idle_dead ON lifecycle.token_family_state (idle_expires_at)
    WHERE idle_expires_at IS NOT NULL;
CREATE OR REPLACE VIEW lifecycle.token_families AS
    SELECT family_id, user_id, device_fingerprint, generation, created_at, last_used_at, expires_at,
           revoked_at, revoked_reason, idle_timeout
      FROM lifecycle.token_family_state;
DO $do$
DECLARE
    grantees text[];
    g text;
BEGIN
    SELECT pg_catalog.array_agg(a.grantee::regrole::text) INTO grantees
      FROM pg_proc p, aclexplode(p.proacl) a
     WHERE p.oid = 'lifecycle.token_family_create(text, text, interval)'::regprocedure
       AND a.privilege_type = 'EXECUTE' AND a.grantee <> 0 AND a.grantee <> p.proowner;
    DROP FUNCTION lifecycle.token_family_create(text, text, interval);
    CREATE FUNCTION lifecycle.token_family_create(user_id text, device_fingerprint text DEFAULT NULL,
                                                  ttl interval DEFAULT '30 days', idle_timeout interval DEFAULT NULL)
        RETURNS TABLE(family_id uuid, token text)
        AS 'MODULE_PATHNAME', 'lifecycle_token_family_create' LANGUAGE C VOLATILE ROWS 1
        SECURITY DEFINER SET search_path = pg_catalog, pg_temp;
    REVOKE EXECUTE ON FUNCTION lifecycle.token_family_create(text, text, interval, interval) FROM PUBLIC;
    FOREACH g IN ARRAY coalesce(grantees, '{}') LOOP
        EXECUTE pg_catalog.format('GRANT EXECUTE ON FUNCTION lifecycle.token_family_create(text, text, interval, '
                                  'interval) TO %s', g);
    END LOOP;
END $do$;

------------------------------------------------------------------------------
-- Adoption (SPEC §1-§3): restore with an id bound as text, a session's
-- validation and a user's sessions and token families.
------------------------------------------------------------------------------
-- The id as text (or an untyped literal / parameter, as drivers bind it):
-- converted to the key's type.
CREATE FUNCTION lifecycle.restore(tbl regclass, id text)
    RETURNS bigint AS 'MODULE_PATHNAME', 'lifecycle_restore' LANGUAGE C;

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

-- A user's live families (the "signed-in devices" page).
CREATE FUNCTION lifecycle.user_token_families(user_id text)
    RETURNS TABLE(family_id uuid, device_fingerprint text, generation integer, created_at timestamptz,
                  last_used_at timestamptz, expires_at timestamptz)
    -- C, not SQL: Citus cannot plan a SQL function's parameters in a query
    -- over every shard of a distributed lifecycle.token_family_state.
    AS 'MODULE_PATHNAME', 'lifecycle_user_token_families' LANGUAGE C STABLE
    SECURITY DEFINER SET search_path = pg_catalog, pg_temp;
REVOKE EXECUTE ON FUNCTION lifecycle.user_token_families(text) FROM PUBLIC;

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

------------------------------------------------------------------------------
-- Adoption (issue 14): a legacy boolean flag (is_deleted) kept in step with
-- deleted_at, named by soft_delete_enable(..., flag => 'is_deleted').
------------------------------------------------------------------------------
ALTER TABLE lifecycle.soft_delete_tables ADD COLUMN flag name;
DROP FUNCTION lifecycle.soft_delete_enable(regclass, interval, boolean);
CREATE FUNCTION lifecycle.soft_delete_enable(tbl regclass, retention interval DEFAULT NULL, hide boolean DEFAULT true,
                                             flag name DEFAULT NULL)
    RETURNS void AS 'MODULE_PATHNAME', 'lifecycle_soft_delete_enable' LANGUAGE C;
CREATE FUNCTION lifecycle.soft_delete_flag() RETURNS trigger
    AS 'MODULE_PATHNAME', 'lifecycle_soft_delete_flag' LANGUAGE C;
REVOKE EXECUTE ON FUNCTION lifecycle.soft_delete_flag() FROM PUBLIC;

------------------------------------------------------------------------------
-- §4 Exact counts: a lattice of summaries per counted table (issue 15, part
-- B) in place of count_<id>_bucket and count_<id>_total; the deltas' buckets
-- become the fine ones.  Every counted table is rebuilt from its rows (under
-- a SHARE lock: its writers wait meanwhile).
------------------------------------------------------------------------------
ALTER TABLE lifecycle.count_tables ADD COLUMN lattice text[] NOT NULL DEFAULT '{}';
CREATE FUNCTION lifecycle._count_relayout() RETURNS void
    AS 'MODULE_PATHNAME', 'lifecycle_count_relayout' LANGUAGE C VOLATILE;
SELECT lifecycle._count_relayout();
DROP FUNCTION lifecycle._count_relayout();

------------------------------------------------------------------------------
-- Keep last: tables enabled under 0.1 get the triggers of 0.2 — the TRUNCATE
-- trigger, and the cascade trigger that also handles an application's own
-- soft delete and restore by UPDATE (dropped here, re-created by
-- soft_delete_enable, which adds what is missing and keeps the settings).
------------------------------------------------------------------------------
DO $$
DECLARE r record;
BEGIN
    FOR r IN SELECT tbl FROM lifecycle.soft_delete_tables LOOP
        EXECUTE pg_catalog.format('DROP TRIGGER IF EXISTS lifecycle_soft_delete_cascade ON %s', r.tbl);
    END LOOP;
END $$;
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

-- §6 Soft delete on a Citus cluster: the STABLE twin of _current_delete_event().
CREATE FUNCTION lifecycle._citus_delete_event() RETURNS bigint
    AS 'MODULE_PATHNAME', 'lifecycle_current_delete_event' LANGUAGE C STABLE;

-- §6 Expiry and retention of distributed tables: a batch on one shard, run by
-- the coordinator on the node that holds it.
CREATE FUNCTION lifecycle._expire_shard(shard regclass, column_name name, after interval, batch_size integer,
                                        state text)
    RETURNS text AS 'MODULE_PATHNAME', 'lifecycle_expire_shard' LANGUAGE C VOLATILE;
CREATE FUNCTION lifecycle._purge_shard(shard regclass, older_than interval, batch_size integer)
    RETURNS bigint AS 'MODULE_PATHNAME', 'lifecycle_purge_shard' LANGUAGE C VOLATILE;
CREATE FUNCTION lifecycle._sessions_shard(task text, shard regclass, retention interval)
    RETURNS bigint AS 'MODULE_PATHNAME', 'lifecycle_sessions_shard' LANGUAGE C VOLATILE;
REVOKE EXECUTE ON FUNCTION lifecycle._sessions_shard(text, regclass, interval) FROM PUBLIC;
CREATE FUNCTION lifecycle._token_purge_shard(state regclass, chain regclass, retention interval)
    RETURNS bigint AS 'MODULE_PATHNAME', 'lifecycle_token_purge_shard' LANGUAGE C VOLATILE;
REVOKE EXECUTE ON FUNCTION lifecycle._token_purge_shard(regclass, regclass, interval) FROM PUBLIC;

-- §6 Exact counts on a Citus cluster: each placement of a Citus table's deltas
-- compacted on its node by the fold.
CREATE FUNCTION lifecycle._count_compact(shard regclass) RETURNS bigint
    AS 'MODULE_PATHNAME', 'lifecycle_count_compact' LANGUAGE C STRICT;
REVOKE EXECUTE ON FUNCTION lifecycle._count_compact(regclass) FROM PUBLIC;
