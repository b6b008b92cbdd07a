-- Security model (SPEC §5): no role gains a privilege through the extension,
-- no role can touch a table it could not touch directly, nobody can crash the
-- server, lifecycle.hard_delete is honoured only for the table's owner as seen
-- from outside, protection cannot be lost by DDL, TRUNCATE or upsert.
-- Every attack is made by an ordinary role; public.pwned records a payload
-- that ran as somebody else.  (The worker, a look-alike schema, DROP DATABASE
-- and the fold lock are tried in test/t/050_security.pl.)
SET client_min_messages = warning;
CREATE EXTENSION IF NOT EXISTS pg_lifecycle;
DROP ROLE IF EXISTS regress_lc_mallory;
DROP ROLE IF EXISTS regress_lc_alice;
RESET client_min_messages;
\set SHOW_CONTEXT never
SELECT current_user AS su \gset

CREATE ROLE regress_lc_alice LOGIN;
CREATE ROLE regress_lc_mallory LOGIN;
GRANT CREATE ON SCHEMA public TO regress_lc_alice, regress_lc_mallory;

CREATE FUNCTION public.sec_err(sql text) RETURNS text LANGUAGE plpgsql AS $$
DECLARE st text; msg text; det text; hnt text;
BEGIN
    EXECUTE sql;
    RETURN 'no error';
EXCEPTION WHEN OTHERS THEN
    GET STACKED DIAGNOSTICS st = RETURNED_SQLSTATE, msg = MESSAGE_TEXT, det = PG_EXCEPTION_DETAIL,
                            hnt = PG_EXCEPTION_HINT;
    RETURN concat_ws(' | ', st, msg, nullif(det, ''), nullif(hnt, ''));
END $$;

-- Payloads write here when they run as anybody but mallory.
CREATE TABLE public.pwned (attack text, ran_as text);
GRANT INSERT, SELECT, DELETE ON public.pwned TO PUBLIC;

------------------------------------------------------------------------------
-- 1. Code of a less privileged role never runs as another role.
------------------------------------------------------------------------------
\c - regress_lc_mallory
-- mallory's payload: harmless for herself, an escalation as anybody else.
CREATE FUNCTION public.pwn(attack text) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    IF current_user <> 'regress_lc_mallory' THEN
        INSERT INTO public.pwned VALUES (attack, current_user);
    END IF;
END $$;
CREATE FUNCTION public.pwn_eq_regclass(regclass, regclass) RETURNS bool LANGUAGE plpgsql AS $$
BEGIN PERFORM public.pwn('=(regclass,regclass)'); RETURN $1::oid OPERATOR(pg_catalog.=) $2::oid; END $$;
CREATE OPERATOR public.= (LEFTARG = regclass, RIGHTARG = regclass, FUNCTION = public.pwn_eq_regclass);
CREATE FUNCTION public.pwn_eq_int(int, int) RETURNS bool LANGUAGE plpgsql AS $$
BEGIN PERFORM public.pwn('=(int,int)'); RETURN $1 OPERATOR(pg_catalog.=) $2; END $$;
CREATE OPERATOR public.= (LEFTARG = int, RIGHTARG = int, FUNCTION = public.pwn_eq_int);
CREATE FUNCTION public.pwn_eq_text(text, text) RETURNS bool LANGUAGE plpgsql AS $$
BEGIN PERFORM public.pwn('=(text,text)'); RETURN $1 OPERATOR(pg_catalog.=) $2; END $$;
CREATE OPERATOR public.= (LEFTARG = text, RIGHTARG = text, FUNCTION = public.pwn_eq_text);
CREATE FUNCTION public.now() RETURNS timestamptz LANGUAGE plpgsql AS $$
BEGIN PERFORM public.pwn('now()'); RETURN pg_catalog.now(); END $$;
CREATE FUNCTION public.pwn_count_step(bigint) RETURNS bigint LANGUAGE plpgsql AS $$
BEGIN PERFORM public.pwn('count(*)'); RETURN $1 + 1; END $$;
CREATE AGGREGATE public.count(*) (SFUNC = public.pwn_count_step, STYPE = bigint, INITCOND = '0');
CREATE FUNCTION public.pwn_sum_step(numeric, bigint) RETURNS numeric LANGUAGE plpgsql AS $$
BEGIN PERFORM public.pwn('sum(bigint)'); RETURN coalesce($1, 0) + $2; END $$;
CREATE AGGREGATE public.sum(bigint) (SFUNC = public.pwn_sum_step, STYPE = numeric);

-- alice's tables, which mallory may use as granted.
\c - regress_lc_alice
CREATE TABLE a_parent (id int PRIMARY KEY, note text);
CREATE TABLE a_child (id int PRIMARY KEY, parent_id int REFERENCES a_parent ON DELETE CASCADE);
INSERT INTO a_parent SELECT g, 'p' || g FROM generate_series(1, 10) g;
INSERT INTO a_child SELECT g, g FROM generate_series(1, 10) g;
SELECT lifecycle.soft_delete_enable('a_parent'), lifecycle.soft_delete_enable('a_child');
CREATE TABLE a_events (id int, kind text);
SELECT lifecycle.count_enable('a_events', '{kind}');
GRANT SELECT, INSERT, UPDATE, DELETE ON a_parent, a_child, a_events TO regress_lc_mallory;

\c - regress_lc_mallory
-- Operators and functions in mallory's schema, first on her search_path.
SET search_path = public, pg_catalog;
-- The cascade (run as a_child's owner).
DELETE FROM a_parent WHERE id = 1;
-- restore's check of the parent (run as its owner).
SELECT lifecycle.restore('a_parent', 1);
-- count (summaries read as their owner).
SELECT lifecycle.count('a_events', '{"kind": "x"}');
-- count capture of a statement too big for the fast path (run as the owner).
INSERT INTO a_events SELECT g, 'x' FROM generate_series(1, 100) g;
UPDATE a_events SET kind = 'y' WHERE id <= 50;
DELETE FROM a_events WHERE id > 90;
SELECT lifecycle.count('a_events', '{"kind": "y"}') AS y, lifecycle.count('a_events') AS all_rows;
-- The registry (written as the extension's owner): mallory's own tables.
CREATE TABLE m_table (id int PRIMARY KEY, ts timestamptz, kind text);
SELECT lifecycle.soft_delete_enable('m_table');
SELECT lifecycle.soft_delete_disable('m_table');
SELECT lifecycle.expire_enable('m_table', 'ts');
SELECT lifecycle.expire_disable('m_table');
SELECT lifecycle.count_enable('m_table', '{kind}');
SELECT lifecycle.count_disable('m_table');
SELECT lifecycle.count_enable('m_table', '{kind}');
DROP TABLE m_table;                       -- the DROP event triggers
RESET search_path;

\c - :su
SELECT attack, ran_as FROM public.pwned ORDER BY 1, 2;   -- nothing ran as anybody else
DELETE FROM public.pwned;

------------------------------------------------------------------------------
-- 2. Nobody can crash the server or reach another table's counts through the
--    trigger functions.
------------------------------------------------------------------------------
SELECT p.proname, has_function_privilege('regress_lc_mallory', p.oid, 'EXECUTE') AS mallory_may_execute
  FROM pg_proc p WHERE p.pronamespace = 'lifecycle'::regnamespace AND p.prorettype IN
       ('trigger'::regtype, 'event_trigger'::regtype) ORDER BY 1;
SELECT id AS a_events_id FROM lifecycle.count_tables WHERE tbl::oid = 'a_events'::regclass::oid \gset
\c - regress_lc_mallory
CREATE TABLE m_fake (x point, y point, z point);
SELECT sec_err(format($$CREATE TRIGGER fake AFTER INSERT ON m_fake REFERENCING NEW TABLE AS n FOR EACH STATEMENT
                    EXECUTE FUNCTION lifecycle.count_capture(%L, '', '', 'x')$$, :a_events_id)) AS capture_trigger;
SELECT sec_err($$CREATE TRIGGER fake2 BEFORE TRUNCATE ON m_fake EXECUTE FUNCTION lifecycle.count_truncate('1')$$) AS truncate_trigger;
SELECT sec_err($$CREATE TRIGGER fake3 BEFORE DELETE ON m_fake FOR EACH ROW EXECUTE FUNCTION lifecycle.soft_delete_guard()$$) AS guard_trigger;
SELECT sec_err($$CREATE TRIGGER fake4 AFTER UPDATE ON m_fake FOR EACH ROW EXECUTE FUNCTION lifecycle.soft_delete_cascade()$$) AS cascade_trigger;
\c - :su
-- Even a trigger a superuser puts on a table that is not counted, pointing at
-- another table's count id with other types, neither crashes nor writes there.
CREATE TABLE not_counted (kind point);
SELECT sec_err(format($$CREATE TRIGGER fake AFTER INSERT ON not_counted REFERENCING NEW TABLE AS n FOR EACH STATEMENT
                    EXECUTE FUNCTION lifecycle.count_capture(%L, '', '', 'kind')$$, :a_events_id)) AS superuser_trigger;
SELECT sec_err($$INSERT INTO not_counted VALUES ('(1,2)')$$) AS insert_into_not_counted;
SELECT sec_err($$INSERT INTO not_counted SELECT point(g, g) FROM generate_series(1, 100) g$$) AS bulk_insert_into_not_counted;
SELECT lifecycle.count('a_events') = (SELECT count(*) FROM a_events) AS a_events_exact;
DROP TABLE not_counted;

------------------------------------------------------------------------------
-- 3. lifecycle.hard_delete is honoured only for the table's owner as seen from
--    outside: not through a foreign-key cascade, a SECURITY DEFINER function,
--    run_maintenance or a database/role default.
------------------------------------------------------------------------------
\c - regress_lc_mallory
CREATE TABLE m_parent (id int PRIMARY KEY);
INSERT INTO m_parent SELECT generate_series(1, 3);
GRANT REFERENCES ON m_parent TO regress_lc_alice;
\c - regress_lc_alice
CREATE TABLE a_kept (id int PRIMARY KEY, m_id int REFERENCES m_parent ON DELETE CASCADE);
INSERT INTO a_kept SELECT g, g FROM generate_series(1, 3) g;
SELECT lifecycle.soft_delete_enable('a_kept');
CREATE FUNCTION a_cleanup(int) RETURNS bigint LANGUAGE sql SECURITY DEFINER
    AS $$ WITH d AS (DELETE FROM public.a_kept WHERE id = $1 RETURNING 1) SELECT count(*) FROM d $$;
GRANT EXECUTE ON FUNCTION a_cleanup(int) TO regress_lc_mallory;
\c - regress_lc_mallory
SET lifecycle.hard_delete = on;
SELECT sec_err('DELETE FROM public.a_kept WHERE id = 3') AS direct;
SELECT sec_err('DELETE FROM m_parent WHERE id = 1') AS through_cascade;
SELECT sec_err('SELECT public.a_cleanup(2)') AS through_security_definer;
RESET lifecycle.hard_delete;
\c - regress_lc_alice
SET lifecycle.include_deleted = on;
SELECT id, deleted_at IS NOT NULL AS deleted FROM a_kept ORDER BY id;   -- all three still there
RESET lifecycle.include_deleted;
-- The owner herself: directly yes, through her own SECURITY DEFINER function or
-- a cascade no.
SET lifecycle.hard_delete = on;
SELECT sec_err('SELECT public.a_cleanup(2)') AS own_security_definer;
DELETE FROM a_kept WHERE id = 3;
RESET lifecycle.hard_delete;
SET lifecycle.include_deleted = on;
SELECT id, deleted_at IS NOT NULL AS deleted FROM a_kept ORDER BY id;
RESET lifecycle.include_deleted;
\c - :su
-- Not as a default for a database or a role: that would reach the worker and
-- every session with the wrong identity.
SELECT sec_err($$ALTER ROLE regress_lc_alice SET lifecycle.hard_delete = on$$) AS role_default;
SELECT sec_err(format('ALTER DATABASE %I SET lifecycle.hard_delete = on', current_database())) AS database_default;
-- run_maintenance expires rows of a soft-delete table softly, whoever asks.
\c - regress_lc_alice
CREATE TABLE a_tokens (id int PRIMARY KEY, expires_at timestamptz);
INSERT INTO a_tokens VALUES (1, now() - interval '1 day'), (2, now() + interval '1 day');
SELECT lifecycle.soft_delete_enable('a_tokens'), lifecycle.expire_enable('a_tokens', 'expires_at');
\c - :su
SET lifecycle.hard_delete = on;
SELECT rows FROM lifecycle.run_maintenance() WHERE task = 'expire' AND target::oid = 'a_tokens'::regclass::oid;
RESET lifecycle.hard_delete;
SET lifecycle.include_deleted = on;
SELECT id, deleted_at IS NOT NULL AS deleted FROM a_tokens ORDER BY id;   -- 1 soft-deleted, not gone
RESET lifecycle.include_deleted;
SELECT prosecdef, proconfig FROM pg_proc WHERE oid = 'lifecycle.run_maintenance'::regproc::oid;

------------------------------------------------------------------------------
-- 4. Protection cannot be lost by DDL, TRUNCATE or an upsert.
------------------------------------------------------------------------------
\c - regress_lc_alice
CREATE TABLE a_doc (id int PRIMARY KEY, title text);
INSERT INTO a_doc VALUES (1, 'one'), (2, 'two');
SELECT lifecycle.soft_delete_enable('a_doc');
SELECT sec_err('ALTER TABLE a_doc DROP COLUMN deleted_at') AS drop_deleted_at;
SELECT sec_err('ALTER TABLE a_doc DROP COLUMN deleted_at CASCADE') AS drop_deleted_at_cascade;
SELECT sec_err('ALTER TABLE a_doc DROP COLUMN delete_event') AS drop_delete_event;
SELECT sec_err('ALTER TABLE a_doc DROP COLUMN deleted_by') AS drop_deleted_by;
SELECT sec_err('ALTER TABLE a_doc ALTER COLUMN delete_event TYPE text') AS retype_delete_event;
SELECT sec_err('ALTER TABLE a_doc ALTER COLUMN deleted_at TYPE timestamp') AS retype_deleted_at;
SELECT sec_err('ALTER TABLE a_doc RENAME COLUMN deleted_at TO removed_at') AS rename_deleted_at;
SELECT sec_err('DROP TRIGGER lifecycle_soft_delete_guard ON a_doc') AS drop_guard;
SELECT sec_err('DROP TRIGGER lifecycle_soft_delete_cascade ON a_doc') AS drop_cascade;
SELECT sec_err('ALTER TABLE a_doc DISABLE TRIGGER lifecycle_soft_delete_guard') AS disable_guard;
SELECT sec_err('ALTER TABLE a_doc DISABLE TRIGGER ALL') AS disable_all;
SELECT sec_err('ALTER TRIGGER lifecycle_soft_delete_guard ON a_doc RENAME TO x') AS rename_guard;
-- Other DDL is fine.
ALTER TABLE a_doc ADD COLUMN body text;
ALTER TABLE a_doc RENAME COLUMN body TO content;
-- TRUNCATE, directly or by CASCADE, only with hard_delete as the owner.
SELECT sec_err('TRUNCATE a_doc') AS truncate_protected;
CREATE TABLE a_plain (id int PRIMARY KEY);
CREATE TABLE a_ref (id int PRIMARY KEY, plain_id int REFERENCES a_plain);
SELECT lifecycle.soft_delete_enable('a_ref');
SELECT sec_err('TRUNCATE a_plain CASCADE') AS truncate_cascade;
CREATE TABLE a_parted (id int, region text, PRIMARY KEY (id, region)) PARTITION BY LIST (region);
CREATE TABLE a_parted_eu PARTITION OF a_parted FOR VALUES IN ('eu');
SELECT lifecycle.soft_delete_enable('a_parted');
CREATE TABLE a_parted_us PARTITION OF a_parted FOR VALUES IN ('us');    -- created after enabling
INSERT INTO a_parted VALUES (1, 'eu'), (2, 'us');
SELECT sec_err('TRUNCATE a_parted') AS truncate_partitioned;
SELECT sec_err('TRUNCATE a_parted_eu') AS truncate_partition;
SELECT sec_err('TRUNCATE a_parted_us') AS truncate_later_partition;
SET lifecycle.include_deleted = on;
SELECT (SELECT count(*) FROM a_doc) AS doc_rows, (SELECT count(*) FROM a_parted) AS parted_rows;
RESET lifecycle.include_deleted;
\c - regress_lc_mallory
SET lifecycle.hard_delete = on;
SELECT sec_err('TRUNCATE public.a_doc') AS mallory_truncate;   -- no TRUNCATE privilege anyway
\c - regress_lc_alice
SET lifecycle.hard_delete = on;
TRUNCATE a_parted_us;
RESET lifecycle.hard_delete;
SELECT count(*) AS parted_after_owner_truncate FROM a_parted;
-- An upsert or MERGE never modifies a hidden row silently.
DELETE FROM a_doc WHERE id = 1;
SELECT sec_err($$INSERT INTO a_doc (id, title) VALUES (1, 'upserted') ON CONFLICT (id) DO UPDATE SET title = EXCLUDED.title$$) AS upsert_hidden;
INSERT INTO a_doc (id, title) VALUES (1, 'ignored') ON CONFLICT (id) DO NOTHING;
INSERT INTO a_doc (id, title) VALUES (2, 'upserted') ON CONFLICT (id) DO UPDATE SET title = EXCLUDED.title;
SELECT sec_err($$MERGE INTO a_doc d USING (VALUES (1, 'merged')) v(id, title) ON d.id = v.id
             WHEN MATCHED THEN UPDATE SET title = v.title$$) AS merge_hidden;
SET lifecycle.include_deleted = on;
SELECT id, title, deleted_at IS NOT NULL AS deleted FROM a_doc ORDER BY id;
RESET lifecycle.include_deleted;

------------------------------------------------------------------------------
-- 5. Purge removes only rows that were deleted.
------------------------------------------------------------------------------
CREATE TABLE a_folder (id int PRIMARY KEY);
CREATE TABLE a_file (id int PRIMARY KEY, folder_id int REFERENCES a_folder ON DELETE CASCADE);
CREATE TABLE a_tag (id int PRIMARY KEY, folder_id int REFERENCES a_folder);   -- NO ACTION
SELECT lifecycle.soft_delete_enable('a_folder'), lifecycle.soft_delete_enable('a_file'),
       lifecycle.soft_delete_enable('a_tag');
INSERT INTO a_folder VALUES (1), (2), (3);
INSERT INTO a_file VALUES (10, 1), (20, 2);
DELETE FROM a_folder WHERE id IN (1, 2, 3);            -- cascades to files 10 and 20
INSERT INTO a_file VALUES (11, 1);                     -- a live file in a deleted folder
INSERT INTO a_tag VALUES (30, 3);                      -- a live tag on a deleted folder
SELECT lifecycle.purge('a_folder', '0') AS purged;     -- folder 2 (and file 20); 1 and 3 have live rows
SET lifecycle.include_deleted = on;
SELECT 'folder' AS t, id, deleted_at IS NOT NULL AS deleted FROM a_folder
UNION ALL SELECT 'file', id, deleted_at IS NOT NULL FROM a_file
UNION ALL SELECT 'tag', id, deleted_at IS NOT NULL FROM a_tag ORDER BY 1, 2;
RESET lifecycle.include_deleted;

------------------------------------------------------------------------------
-- 6. Settings a table owner's code changes inside maintenance do not survive.
------------------------------------------------------------------------------
CREATE TABLE a_old (id int PRIMARY KEY, at timestamptz);
SELECT lifecycle.soft_delete_enable('a_old', retention => '1 second');
CREATE FUNCTION a_meddle() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_catalog.set_config('search_path', 'public, pg_catalog', false);
    PERFORM pg_catalog.set_config('work_mem', '77kB', false);
    PERFORM pg_catalog.set_config('lifecycle.include_deleted', 'on', false);
    RETURN OLD;
END $$;
CREATE TRIGGER a_meddle BEFORE DELETE ON a_old FOR EACH ROW EXECUTE FUNCTION a_meddle();
INSERT INTO a_old VALUES (1, now());
DELETE FROM a_old WHERE id = 1;
SET lifecycle.include_deleted = on;
UPDATE a_old SET deleted_at = now() - interval '1 hour';
RESET lifecycle.include_deleted;
\c - :su
SELECT rows FROM lifecycle.run_maintenance() WHERE task = 'soft_delete_purge' AND target::oid = 'a_old'::regclass::oid;
SHOW work_mem;
SHOW search_path;
SHOW lifecycle.include_deleted;
SELECT attack, ran_as FROM public.pwned ORDER BY 1, 2;

------------------------------------------------------------------------------
-- 7. Smaller points.
------------------------------------------------------------------------------
\c - regress_lc_alice
SELECT lifecycle.soft_unique('a_doc', '{title}') AS unique_index;
\c - :su

-- Clean up (the tables go with their owners).
SET client_min_messages = warning;
DROP OWNED BY regress_lc_alice, regress_lc_mallory CASCADE;
DROP ROLE regress_lc_alice;
DROP ROLE regress_lc_mallory;
DROP TABLE public.pwned;
DROP FUNCTION public.sec_err(text);
RESET client_min_messages;
