-- Row expiry (SPEC §3): expire_enable/expire_disable, run_maintenance, health,
-- job_runs, the GUCs; every bad argument gives a clear error and changes nothing.
SET client_min_messages = warning;   -- the same whether or not an earlier file created it
CREATE EXTENSION IF NOT EXISTS pg_lifecycle;
RESET client_min_messages;
DELETE FROM lifecycle.job_runs;     -- history of earlier test files
\set SHOW_CONTEXT never

-- err(sql) shows the SQLSTATE and message a client receives.
CREATE OR REPLACE FUNCTION err(sql text) RETURNS text LANGUAGE plpgsql AS $$
DECLARE st text; msg text; hnt text;
BEGIN
    EXECUTE sql;
    RETURN 'no error';
EXCEPTION WHEN OTHERS THEN
    GET STACKED DIAGNOSTICS st = RETURNED_SQLSTATE, msg = MESSAGE_TEXT, hnt = PG_EXCEPTION_HINT;
    RETURN concat_ws(' | ', st, msg, nullif(hnt, ''));
END $$;

-- Settings and their defaults (the regress cluster runs with the worker off).
SELECT name, setting, unit, context FROM pg_settings
 WHERE name IN ('lifecycle.enabled', 'lifecycle.naptime', 'lifecycle.history_retention',
                'lifecycle.session_history_retention') ORDER BY name;
ALTER SYSTEM SET lifecycle.history_retention = 'banana';
ALTER SYSTEM SET lifecycle.session_history_retention = '-1 day';
ALTER SYSTEM SET lifecycle.naptime = '10ms';
SELECT err($$SET lifecycle.naptyme = '1s'$$);

CREATE TABLE api_tokens (
    id         int PRIMARY KEY,
    expires_at timestamptz NOT NULL
);
INSERT INTO api_tokens SELECT g, now() - interval '1 hour' FROM generate_series(1, 25) g;       -- expired
INSERT INTO api_tokens SELECT g, now() + interval '1 hour' FROM generate_series(26, 30) g;      -- live
SELECT lifecycle.expire_enable('api_tokens', 'expires_at', batch_size => 10);
SELECT tbl, column_name, after, batch_size FROM lifecycle.expire_tables;

-- One pass: three batches of at most 10 rows, round-robin with the other tasks
-- (those of §3 shown; other capabilities add theirs).
SELECT * FROM lifecycle.run_maintenance()
 WHERE task IN ('expire', 'session_close', 'session_purge', 'job_runs_purge');
SELECT count(*) AS left_rows, min(id) AS first_live FROM api_tokens;
SELECT * FROM lifecycle.run_maintenance() WHERE task = 'expire';

-- job_runs: a 'pass' row per pass that did work (the second found nothing: no row), and a row per task that did work.
SELECT task, target, rows, status FROM lifecycle.job_runs WHERE task <> 'pass' ORDER BY id;
SELECT count(*) AS passes FROM lifecycle.job_runs WHERE task = 'pass';

-- after: a row expires when column + after <= now().
CREATE TABLE grace (id int PRIMARY KEY, seen timestamp NOT NULL);
INSERT INTO grace VALUES (1, localtimestamp - interval '2 hours'), (2, localtimestamp - interval '30 minutes');
SELECT lifecycle.expire_enable('grace', 'seen', after => '1 hour');
SELECT task, target, rows FROM lifecycle.run_maintenance() WHERE task = 'expire' ORDER BY target::text;
SELECT id FROM grace;

-- A date column, and re-enabling updates the settings in place.
CREATE TABLE daily (id int PRIMARY KEY, valid_until date NOT NULL);
INSERT INTO daily VALUES (1, current_date - 2), (2, current_date + 2);
SELECT lifecycle.expire_enable('daily', 'valid_until', after => '1 day', batch_size => 5);
SELECT lifecycle.expire_enable('daily', 'valid_until', batch_size => 50);
SELECT tbl, column_name, after, batch_size FROM lifecycle.expire_tables WHERE tbl = 'daily'::regclass;
SELECT rows FROM lifecycle.run_maintenance() WHERE target = 'daily'::regclass;
SELECT id FROM daily;

-- Ordinary DELETEs: foreign-key cascades and triggers apply.
CREATE TABLE invites (id int PRIMARY KEY, expires_at timestamptz NOT NULL);
CREATE TABLE invite_uses (id int PRIMARY KEY, invite_id int NOT NULL REFERENCES invites ON DELETE CASCADE);
INSERT INTO invites VALUES (1, now() - interval '1 day'), (2, now() + interval '1 day');
INSERT INTO invite_uses VALUES (10, 1), (11, 1), (20, 2);
SELECT lifecycle.expire_enable('invites', 'expires_at');
SELECT rows FROM lifecycle.run_maintenance() WHERE target = 'invites'::regclass;
SELECT id, invite_id FROM invite_uses ORDER BY id;

-- Partitioned tables: one unit per leaf partition.
CREATE TABLE events (id int, at timestamptz NOT NULL) PARTITION BY RANGE (id);
CREATE TABLE events_1 PARTITION OF events FOR VALUES FROM (0) TO (100);
CREATE TABLE events_2 PARTITION OF events FOR VALUES FROM (100) TO (200);
INSERT INTO events SELECT g, now() - interval '1 day' FROM generate_series(90, 109) g;
INSERT INTO events VALUES (50, now() + interval '1 day'), (150, now() + interval '1 day');
SELECT lifecycle.expire_enable('events', 'at');
SELECT task, target, rows FROM lifecycle.run_maintenance() WHERE task = 'expire' ORDER BY target::text;
SELECT id FROM events ORDER BY id;

-- A row whose DELETE fails is skipped and reported (a WARNING, a job_runs row
-- with status error and the rows that were deleted); the table's other rows
-- and the other tasks go on.  (A batch that fails as a whole — its table
-- locked past lock_timeout — shows rows NULL: see expiry_skip_locked.spec.)
CREATE TABLE stubborn (id int PRIMARY KEY, expires_at timestamptz NOT NULL);
CREATE FUNCTION refuse_delete() RETURNS trigger LANGUAGE plpgsql AS
    $$BEGIN IF OLD.id = 1 THEN RAISE EXCEPTION 'stubborn rows cannot be deleted'; END IF; RETURN OLD; END$$;
CREATE TRIGGER refuse BEFORE DELETE ON stubborn FOR EACH ROW EXECUTE FUNCTION refuse_delete();
INSERT INTO stubborn SELECT g, now() - interval '1 day' FROM generate_series(1, 3) g;
INSERT INTO api_tokens VALUES (100, now() - interval '1 minute');
SELECT lifecycle.expire_enable('stubborn', 'expires_at');
SELECT task, target, rows FROM lifecycle.run_maintenance() WHERE task = 'expire' ORDER BY target::text;
SELECT count(*) AS stubborn_left FROM stubborn;
SELECT count(*) AS expired_tokens_left FROM api_tokens WHERE expires_at <= now();
SELECT task, target, rows, status, error FROM lifecycle.job_runs WHERE status = 'error';

-- health(): per database; the worker is off in this cluster.
SELECT h->'worker'->'alive' AS worker_alive, h->'worker'->'passes' AS worker_passes, h->'waiting' AS waiting,
       h->'skipped' AS skipped, h->'enabled' AS enabled, h->'preloaded' AS preloaded,
       h->'backlog' AS backlog, h->'last_error'->>'error' AS last_error,
       h->'last_pass' ? 'finished_at' AS has_last_pass
  FROM lifecycle.health() h;
SELECT lifecycle.expire_disable('stubborn');

-- Bad arguments: clear errors, nothing changed.
CREATE TABLE no_ts (id int PRIMARY KEY, label text, created_at timestamptz);
CREATE VIEW a_view AS SELECT * FROM no_ts;
SELECT err($$SELECT lifecycle.expire_enable(NULL, 'created_at')$$);
SELECT err($$SELECT lifecycle.expire_enable('no_ts', NULL)$$);
SELECT err($$SELECT lifecycle.expire_enable('no_ts', 'created_at', NULL)$$);
SELECT err($$SELECT lifecycle.expire_enable('no_ts', 'created_at', batch_size => NULL)$$);
SELECT err($$SELECT lifecycle.expire_enable('no_such_table', 'created_at')$$);
SELECT err($$SELECT lifecycle.expire_enable(4000000000::oid::regclass, 'created_at')$$);
SELECT err($$SELECT lifecycle.expire_enable('no_ts', 'nope')$$);
SELECT err($$SELECT lifecycle.expire_enable('no_ts', 'label')$$);
SELECT err($$SELECT lifecycle.expire_enable('no_ts', 'created_at', after => '-1 hour')$$);
SELECT err($$SELECT lifecycle.expire_enable('no_ts', 'created_at', batch_size => 0)$$);
SELECT err($$SELECT lifecycle.expire_enable('no_ts', 'created_at', batch_size => -5)$$);
SELECT err($$SELECT lifecycle.expire_enable('no_ts', 'created_at', batch_size => 2000000)$$);
SELECT err($$SELECT lifecycle.expire_enable('a_view', 'created_at')$$);
SELECT err($$SELECT lifecycle.expire_disable(NULL)$$);
SELECT err($$SELECT lifecycle.expire_disable('no_ts')$$);
SELECT err($$SELECT * FROM lifecycle.run_maintenance(NULL)$$);
SELECT err($$SELECT * FROM lifecycle.run_maintenance('0')$$);
SELECT err($$SELECT * FROM lifecycle.run_maintenance('-1 second')$$);
SELECT tbl FROM lifecycle.expire_tables ORDER BY tbl::text;

-- Privileges: only the table's owner enables expiry; run_maintenance and
-- health are not for PUBLIC.
CREATE ROLE lifecycle_app;
GRANT USAGE ON SCHEMA public TO lifecycle_app;
CREATE TABLE app_owned (id int PRIMARY KEY, expires_at timestamptz);
ALTER TABLE app_owned OWNER TO lifecycle_app;
SET ROLE lifecycle_app;
SELECT err($$SELECT lifecycle.expire_enable('no_ts', 'created_at')$$);
SELECT err($$SELECT lifecycle.expire_disable('api_tokens')$$);
SELECT err($$SELECT * FROM lifecycle.run_maintenance()$$);
SELECT err($$SELECT lifecycle.health()$$);
SELECT err($$INSERT INTO lifecycle.expire_tables (tbl, column_name, batch_size) VALUES ('no_ts', 'created_at', 1)$$);
SELECT lifecycle.expire_enable('app_owned', 'expires_at');   -- its own table: allowed
SELECT lifecycle.expire_disable('app_owned');
RESET ROLE;

-- Expired rows are deleted as the table's owner, never as the superuser.
INSERT INTO app_owned VALUES (1, now() - interval '1 day');
CREATE TABLE deleted_by (who text);
GRANT INSERT ON deleted_by TO lifecycle_app;
CREATE FUNCTION note_deleter() RETURNS trigger LANGUAGE plpgsql AS
    $$BEGIN INSERT INTO public.deleted_by VALUES (current_user); RETURN OLD; END$$;
CREATE TRIGGER note BEFORE DELETE ON app_owned FOR EACH ROW EXECUTE FUNCTION note_deleter();
SELECT lifecycle.expire_enable('app_owned', 'expires_at');
SELECT rows FROM lifecycle.run_maintenance() WHERE target = 'app_owned'::regclass;
SELECT who FROM deleted_by;

-- Batches: each is one DELETE of at most batch_size rows over a range of the
-- table's blocks (a statement trigger logs how many rows each DELETE removed).
CREATE TABLE codes (id int PRIMARY KEY, expires_at timestamptz NOT NULL);
CREATE TABLE code_deletes (seq serial, n bigint);
CREATE FUNCTION log_code_deletes() RETURNS trigger LANGUAGE plpgsql AS
    $$BEGIN INSERT INTO public.code_deletes (n) SELECT count(*) FROM gone; RETURN NULL; END$$;
CREATE TRIGGER log_deletes AFTER DELETE ON codes REFERENCING OLD TABLE AS gone
    FOR EACH STATEMENT EXECUTE FUNCTION log_code_deletes();
INSERT INTO codes SELECT g, now() - interval '1 hour' FROM generate_series(1, 25) g;
INSERT INTO codes SELECT g, now() + interval '1 hour' FROM generate_series(26, 30) g;
SELECT lifecycle.expire_enable('codes', 'expires_at', batch_size => 10);
SELECT rows FROM lifecycle.run_maintenance() WHERE target = 'codes'::regclass;
SELECT n FROM code_deletes ORDER BY seq;
SELECT count(*) AS live, count(*) FILTER (WHERE expires_at <= now()) AS expired FROM codes;

-- Rows that a transaction has locked or updated since they were written
-- (xmax set) are locked with FOR UPDATE SKIP LOCKED by a second statement of
-- the batch; the others are deleted directly.
TRUNCATE code_deletes;
INSERT INTO codes SELECT g, now() - interval '1 hour' FROM generate_series(101, 106) g;
SELECT id AS locked_once FROM codes WHERE id IN (102, 104) ORDER BY id FOR SHARE;
SELECT rows FROM lifecycle.run_maintenance() WHERE target = 'codes'::regclass;
SELECT n FROM code_deletes ORDER BY seq;
SELECT count(*) FILTER (WHERE expires_at <= now()) AS expired FROM codes;

-- A row locked by the application after the DELETE read it makes the DELETE
-- wait; after lock_timeout the batch is undone and done again with every row
-- locked first (FOR UPDATE SKIP LOCKED), so the batch does not fail.  The
-- lock timeout is simulated by a trigger that raises it once, at the second row.
TRUNCATE code_deletes;
CREATE SEQUENCE once;
CREATE FUNCTION time_out_once() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF OLD.id = 202 AND nextval('public.once') = 1 THEN
        RAISE EXCEPTION 'simulated lock timeout' USING ERRCODE = 'lock_not_available';
    END IF;
    RETURN OLD;
END$$;
CREATE TRIGGER time_out BEFORE DELETE ON codes FOR EACH ROW EXECUTE FUNCTION time_out_once();
INSERT INTO codes SELECT g, now() - interval '1 hour' FROM generate_series(201, 203) g;
SELECT rows FROM lifecycle.run_maintenance() WHERE target = 'codes'::regclass;
SELECT n FROM code_deletes ORDER BY seq;
SELECT currval('once') AS timeouts_raised, count(*) FILTER (WHERE expires_at <= now()) AS expired FROM codes;
SELECT count(*) AS errors FROM lifecycle.job_runs WHERE target = 'public.codes' AND status = 'error';
SELECT lifecycle.expire_disable('codes');

-- With an index on the column, batches take the oldest expired rows through
-- it: when few rows are expired that reads a few index pages, not the table.
CREATE TABLE otps (id int PRIMARY KEY, expires_at timestamptz NOT NULL);
CREATE INDEX otps_expires_at ON otps (expires_at);
INSERT INTO otps SELECT g, now() + interval '1 hour' FROM generate_series(1, 1000) g;
INSERT INTO otps SELECT g, now() - interval '1 hour' FROM generate_series(1001, 1003) g;
ANALYZE otps;
SELECT lifecycle.expire_enable('otps', 'expires_at', batch_size => 10);
BEGIN;
SELECT rows FROM lifecycle.run_maintenance() WHERE target = 'otps'::regclass;
SELECT idx_scan > 0 AS through_index, n_tup_del FROM pg_stat_xact_user_tables WHERE relid = 'otps'::regclass;
COMMIT;
-- A large backlog: once the index has given more than 2% of the table (and at
-- least ten batches), one sweep over the heap's blocks takes the rest.  Rows
-- 2001-2300 are stored in id order but the higher the id the older: the index
-- batches take 2300 down to 2201 (oldest first), the sweep 2001-2200 in the
-- order they are stored.
CREATE TABLE otp_deletes (seq serial, id int);
CREATE FUNCTION log_otp_delete() RETURNS trigger LANGUAGE plpgsql AS
    $$BEGIN INSERT INTO public.otp_deletes (id) VALUES (OLD.id); RETURN NULL; END$$;
CREATE TRIGGER log_delete AFTER DELETE ON otps FOR EACH ROW EXECUTE FUNCTION log_otp_delete();
INSERT INTO otps SELECT g, now() - interval '1 hour' - g * interval '1 second' FROM generate_series(2001, 2300) g;
SELECT rows FROM lifecycle.run_maintenance() WHERE target = 'otps'::regclass;
SELECT min(id), max(id), count(*) FROM (SELECT id FROM otp_deletes ORDER BY seq LIMIT 100) first_100;
SELECT min(id), max(id), count(*), bool_and(id = prev + 1) AS in_stored_order
  FROM (SELECT id, lag(id, 1, 2000) OVER (ORDER BY seq) AS prev
          FROM (SELECT seq, id FROM otp_deletes ORDER BY seq OFFSET 100) after_100) rest;
SELECT count(*) AS expired_left FROM otps WHERE expires_at <= now();
SELECT lifecycle.expire_disable('otps');

-- A cancel (here statement_timeout) ends run_maintenance: it is neither taken
-- for a row that cannot be deleted nor recorded as one failed batch.
CREATE TABLE slow (id int PRIMARY KEY, expires_at timestamptz NOT NULL);
CREATE FUNCTION slow_delete() RETURNS trigger LANGUAGE plpgsql AS
    $$BEGIN PERFORM pg_sleep(0.5); RETURN OLD; END$$;
CREATE TRIGGER slow BEFORE DELETE ON slow FOR EACH ROW EXECUTE FUNCTION slow_delete();
INSERT INTO slow SELECT g, now() - interval '1 day' FROM generate_series(1, 3) g;
SELECT lifecycle.expire_enable('slow', 'expires_at');
SET statement_timeout = '200ms';
SELECT task, target, rows FROM lifecycle.run_maintenance() WHERE task = 'expire';
RESET statement_timeout;
SELECT count(*) AS slow_left FROM slow;
SELECT lifecycle.expire_disable('slow');

-- The row cap of a batch is internal to it.
SELECT err($$SELECT lifecycle._expire_take('(0,1)', '0', true)$$);

-- Dropping a table forgets the registration; dropping its expiry column is
-- refused (see below), after expire_disable it is fine.
DROP TABLE grace;
SELECT err('ALTER TABLE daily DROP COLUMN valid_until') AS drop_expiry_column;
SELECT lifecycle.expire_disable('daily');
ALTER TABLE daily DROP COLUMN valid_until;
SELECT tbl FROM lifecycle.expire_tables ORDER BY tbl::text;

-- job_runs is kept to lifecycle.history_retention (7 days).
INSERT INTO lifecycle.job_runs (started_at, finished_at, task, rows, status)
    SELECT now() - interval '8 days', now() - interval '8 days', 'pass', 0, 'ok' FROM generate_series(1, 3);
SELECT rows FROM lifecycle.run_maintenance() WHERE task = 'job_runs_purge';
SELECT count(*) AS old_runs FROM lifecycle.job_runs WHERE finished_at < now() - interval '7 days';

DROP TABLE api_tokens, daily, invite_uses, invites, events, stubborn, no_ts, app_owned, deleted_by, codes, code_deletes, otps, otp_deletes, slow CASCADE;
DROP SEQUENCE once;
DROP FUNCTION refuse_delete(), note_deleter(), log_code_deletes(), time_out_once(), log_otp_delete(), slow_delete();
REVOKE USAGE ON SCHEMA public FROM lifecycle_app;
DROP ROLE lifecycle_app;

-- DDL on an expiry table: a renamed expiry column is followed; dropping it or
-- giving it a type that is not a timestamp is refused (55000, with a hint).
CREATE TABLE ddl_tokens (id int PRIMARY KEY, valid_until timestamptz, note text);
INSERT INTO ddl_tokens VALUES (1, now() - interval '1 day', 'old'), (2, now() + interval '1 day', 'new');
SELECT lifecycle.expire_enable('ddl_tokens', 'valid_until');
ALTER TABLE ddl_tokens RENAME COLUMN valid_until TO expires_on;
SELECT column_name FROM lifecycle.expire_tables WHERE tbl = 'ddl_tokens'::regclass;
SELECT rows FROM lifecycle.run_maintenance() WHERE task = 'expire' AND target = 'ddl_tokens'::regclass;
SELECT id FROM ddl_tokens ORDER BY id;
SELECT err('ALTER TABLE ddl_tokens DROP COLUMN expires_on') AS drop_expiry_column;
SELECT err('ALTER TABLE ddl_tokens DROP COLUMN expires_on CASCADE') AS drop_expiry_column_cascade;
SELECT err('ALTER TABLE ddl_tokens ALTER COLUMN expires_on TYPE text') AS retype_to_text;
ALTER TABLE ddl_tokens ALTER COLUMN expires_on TYPE timestamp;                 -- still a timestamp
ALTER TABLE ddl_tokens DROP COLUMN note;                                      -- other DDL is fine
ALTER TABLE ddl_tokens RENAME TO ddl_tokens2;
SELECT tbl, column_name FROM lifecycle.expire_tables WHERE tbl = 'ddl_tokens2'::regclass;
SELECT lifecycle.expire_disable('ddl_tokens2');
ALTER TABLE ddl_tokens2 DROP COLUMN expires_on;
DROP TABLE ddl_tokens2;
