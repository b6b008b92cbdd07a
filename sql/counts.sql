-- Exact pagination counts (SPEC §4): count_enable/count_disable/count/
-- count_estimate, filters and ranges checked against count(*) in the same
-- transaction, writes of every kind, partitions, soft delete, privileges and
-- row-level security, DDL guards, and every documented error.
SET client_min_messages = warning;   -- the same whether or not an earlier file created it
CREATE EXTENSION IF NOT EXISTS pg_lifecycle;
RESET client_min_messages;
\set SHOW_CONTEXT never

CREATE OR REPLACE FUNCTION err(sql text) RETURNS text LANGUAGE plpgsql AS $$
DECLARE st text; msg text; hnt text;
BEGIN
    EXECUTE sql;
    RETURN 'no error';
EXCEPTION WHEN OTHERS THEN
    GET STACKED DIAGNOSTICS st = RETURNED_SQLSTATE, msg = MESSAGE_TEXT, hnt = PG_EXCEPTION_HINT;
    RETURN concat_ws(' | ', st, msg, nullif(hnt, ''));
END $$;

-- lifecycle.count next to count(*) with the same filter (cond) and range on
-- created_at: the number when they agree, MISMATCH otherwise.
CREATE OR REPLACE FUNCTION cmp(tbl regclass, filter jsonb, cond text,
                               since timestamptz DEFAULT NULL, until timestamptz DEFAULT NULL)
RETURNS text LANGUAGE plpgsql AS $$
DECLARE a bigint; b bigint; q text;
BEGIN
    a := lifecycle.count(tbl, filter, since, until);
    q := format('SELECT count(*) FROM %s WHERE %s', tbl, cond);
    IF since IS NOT NULL THEN q := q || format(' AND created_at >= %L', since); END IF;
    IF until IS NOT NULL THEN q := q || format(' AND created_at < %L', until); END IF;
    EXECUTE q INTO b;
    RETURN CASE WHEN a = b THEN a::text ELSE format('MISMATCH count=%s count(*)=%s', a, b) END;
END $$;

SET TIME ZONE 'UTC';

-- An audit log: 3 outcomes, 5 users (one NULL), one row every 7 minutes.
CREATE TABLE audit_log (
    id         bigserial PRIMARY KEY,
    user_id    text,
    outcome    text NOT NULL,
    action     text NOT NULL DEFAULT 'GET',
    created_at timestamptz NOT NULL
);
CREATE INDEX audit_log_created_at ON audit_log (created_at);
INSERT INTO audit_log (user_id, outcome, created_at)
SELECT CASE WHEN g % 5 = 0 THEN NULL ELSE 'u-' || (g % 5) END,
       (ARRAY['success', 'error', 'permission_denied'])[1 + g % 3],
       '2024-01-01 00:00:00+00'::timestamptz + g * interval '7 minutes'
  FROM generate_series(1, 3000) g;

-- Enabling initialises the summaries from the rows already there.
SELECT lifecycle.count_enable('audit_log', '{outcome,user_id}', 'created_at', '1 hour');
SELECT tbl, dimensions, time_column, bucket, live_column, lattice FROM lifecycle.count_tables;
SELECT tgname, tgenabled FROM pg_trigger WHERE tgrelid = 'audit_log'::regclass AND NOT tgisinternal ORDER BY tgname;
SELECT relname FROM pg_class WHERE relnamespace = 'lifecycle'::regnamespace AND relname ~ '^count_[0-9]+_' AND relkind = 'r'
 ORDER BY relname COLLATE "C";
SELECT count(*) AS summary_rows_not_deltas FROM lifecycle.count_1_delta;

-- Filters: none, one value, several values, several dimensions, JSON null.
SELECT cmp('audit_log', '{}', 'true') AS all_rows;
SELECT cmp('audit_log', '{"outcome": "error"}', $$outcome = 'error'$$) AS errors;
SELECT cmp('audit_log', '{"outcome": ["error", "permission_denied"]}',
           $$outcome IN ('error', 'permission_denied')$$) AS failures;
SELECT cmp('audit_log', '{"outcome": ["error", "permission_denied"], "user_id": "u-2"}',
           $$outcome IN ('error', 'permission_denied') AND user_id = 'u-2'$$) AS failures_u2;
SELECT cmp('audit_log', '{"user_id": null}', 'user_id IS NULL') AS anonymous;
SELECT cmp('audit_log', '{"user_id": ["u-1", null]}', $$(user_id = 'u-1' OR user_id IS NULL)$$) AS u1_or_anonymous;
SELECT cmp('audit_log', '{"user_id": []}', 'false') AS empty_list;
SELECT cmp('audit_log', '{"user_id": "nobody"}', $$user_id = 'nobody'$$) AS no_match;

-- Ranges on the time column: half-open, exact at the edges (on, just before
-- and just after bucket boundaries, inside one bucket, open-ended).
SELECT cmp('audit_log', '{}', 'true', '2024-01-02 00:00', '2024-01-05 00:00') AS aligned;
SELECT cmp('audit_log', '{}', 'true', '2024-01-02 00:07', '2024-01-05 13:14') AS on_row_edges;
SELECT cmp('audit_log', '{}', 'true', '2024-01-02 00:06:59.999999', '2024-01-05 13:14:00.000001') AS around_row_edges;
SELECT cmp('audit_log', '{"outcome": "error"}', $$outcome = 'error'$$, '2024-01-03 10:15', '2024-01-03 10:50') AS inside_one_bucket;
SELECT cmp('audit_log', '{"outcome": "error"}', $$outcome = 'error'$$, '2024-01-03 10:15') AS since_only;
SELECT cmp('audit_log', '{"user_id": "u-3"}', $$user_id = 'u-3'$$, NULL, '2024-01-03 10:15') AS until_only;
SELECT cmp('audit_log', '{}', 'true', '2024-01-03 10:15', '2024-01-03 10:15') AS empty_range;
SELECT cmp('audit_log', '{}', 'true', '2024-01-04', '2024-01-03') AS reversed_range;
SELECT cmp('audit_log', '{}', 'true', '-infinity', 'infinity') AS infinite_range;
SELECT cmp('audit_log', '{}', 'true', '2023-01-01', '2030-01-01') AS wider_than_the_data;

-- Writes: own uncommitted rows count, rolled-back ones never do.
BEGIN;
INSERT INTO audit_log (user_id, outcome, created_at) VALUES ('u-9', 'error', '2024-01-03 10:20');
SELECT cmp('audit_log', '{"user_id": "u-9"}', $$user_id = 'u-9'$$) AS own_insert_seen;
SELECT cmp('audit_log', '{"outcome": "error"}', $$outcome = 'error'$$, '2024-01-03 10:15', '2024-01-03 10:50') AS own_insert_in_range;
ROLLBACK;
SELECT cmp('audit_log', '{"user_id": "u-9"}', $$user_id = 'u-9'$$) AS rolled_back;

-- Subtransactions: a savepoint rolled back takes its deltas with it.
BEGIN;
INSERT INTO audit_log (user_id, outcome, created_at) VALUES ('u-9', 'error', '2024-01-03 10:20');
SAVEPOINT s1;
INSERT INTO audit_log (user_id, outcome, created_at) VALUES ('u-9', 'error', '2024-01-03 10:21');
DELETE FROM audit_log WHERE user_id = 'u-1' AND created_at < '2024-01-02';
SELECT cmp('audit_log', '{"user_id": "u-9"}', $$user_id = 'u-9'$$) AS in_savepoint,
       cmp('audit_log', '{"user_id": "u-1"}', $$user_id = 'u-1'$$) AS u1_in_savepoint;
ROLLBACK TO SAVEPOINT s1;
SELECT cmp('audit_log', '{"user_id": "u-9"}', $$user_id = 'u-9'$$) AS after_rollback_to,
       cmp('audit_log', '{"user_id": "u-1"}', $$user_id = 'u-1'$$) AS u1_after_rollback_to;
COMMIT;
SELECT cmp('audit_log', '{"user_id": "u-9"}', $$user_id = 'u-9'$$) AS committed;

-- UPDATEs that move rows between dimension values and between buckets;
-- updates that change neither write no delta.
UPDATE audit_log SET outcome = 'success' WHERE outcome = 'error' AND user_id = 'u-2' AND created_at < '2024-01-02';
UPDATE audit_log SET created_at = created_at + interval '3 days' WHERE user_id = 'u-3' AND created_at < '2024-01-01 12:00';
UPDATE audit_log SET user_id = NULL WHERE user_id = 'u-4' AND outcome = 'success' AND created_at < '2024-01-02';
SELECT count(*) AS deltas_before FROM lifecycle.count_1_delta \gset
UPDATE audit_log SET action = 'POST' WHERE user_id = 'u-1';
SELECT count(*) - :deltas_before AS deltas_of_an_update_of_no_counted_column FROM lifecycle.count_1_delta;
SELECT cmp('audit_log', '{"outcome": "error", "user_id": "u-2"}', $$outcome = 'error' AND user_id = 'u-2'$$) AS moved_outcome,
       cmp('audit_log', '{"user_id": "u-3"}', $$user_id = 'u-3'$$, '2024-01-04', '2024-01-05') AS moved_bucket,
       cmp('audit_log', '{"user_id": null}', 'user_id IS NULL') AS moved_to_null;

-- DELETE, a multi-row INSERT ... SELECT, INSERT ... ON CONFLICT and COPY.
DELETE FROM audit_log WHERE id % 11 = 0;
INSERT INTO audit_log (user_id, outcome, created_at)
SELECT 'u-7', 'permission_denied', '2024-01-06 00:00:00+00'::timestamptz + g * interval '1 second' FROM generate_series(1, 500) g;
INSERT INTO audit_log (id, user_id, outcome, created_at) VALUES (1, 'u-8', 'error', '2024-01-01 00:00')
    ON CONFLICT (id) DO UPDATE SET outcome = 'error', user_id = 'u-8';
COPY audit_log (user_id, outcome, created_at) FROM STDIN;
u-8	error	2024-01-02 03:04:05+00
u-8	success	2024-01-02 03:04:06+00
\N	error	2024-01-02 03:04:07+00
\.
SELECT cmp('audit_log', '{}', 'true') AS all_rows,
       cmp('audit_log', '{"user_id": "u-8"}', $$user_id = 'u-8'$$) AS copied_and_upserted,
       cmp('audit_log', '{"outcome": "permission_denied"}', $$outcome = 'permission_denied'$$, '2024-01-06 00:00:30', '2024-01-06 00:04:00') AS bulk_in_range;

-- REPEATABLE READ: the snapshot's count, whatever commits meanwhile (the
-- other side is in test/isolation/specs/counts_fold.spec); here, a fold
-- inside the transaction changes nothing it sees.
BEGIN ISOLATION LEVEL REPEATABLE READ;
SELECT cmp('audit_log', '{"outcome": "error"}', $$outcome = 'error'$$) AS rr_before_fold;
SELECT task, target, rows > 0 AS folded FROM lifecycle.run_maintenance() WHERE task = 'count_fold';
SELECT cmp('audit_log', '{"outcome": "error"}', $$outcome = 'error'$$) AS rr_after_fold;
COMMIT;

-- The fold: deltas move into the summaries; counts are the same after it.
SELECT count(*) AS deltas_left FROM lifecycle.count_1_delta;
SELECT task, target, rows FROM lifecycle.run_maintenance() WHERE task = 'count_fold';
SELECT cmp('audit_log', '{}', 'true') AS all_rows,
       cmp('audit_log', '{"outcome": ["error", "permission_denied"], "user_id": "u-2"}',
           $$outcome IN ('error', 'permission_denied') AND user_id = 'u-2'$$) AS failures_u2,
       cmp('audit_log', '{}', 'true', '2024-01-02 00:07', '2024-01-05 13:14') AS range;
SELECT (SELECT count(*) FROM lifecycle.count_1_s0 WHERE lc_n = 0) + (SELECT count(*) FROM lifecycle.count_1_s1 WHERE lc_n = 0)
     + (SELECT count(*) FROM lifecycle.count_1_s2 WHERE lc_n = 0) + (SELECT count(*) FROM lifecycle.count_1_s3 WHERE lc_n = 0)
       AS zero_groups_kept;

-- TRUNCATE: rolled back, then for real.
BEGIN;
TRUNCATE audit_log;
SELECT cmp('audit_log', '{}', 'true') AS truncated;
ROLLBACK;
SELECT cmp('audit_log', '{}', 'true') AS truncate_rolled_back;

-- count_estimate: the planner's estimate for any SELECT.
ANALYZE audit_log;
SELECT lifecycle.count_estimate('SELECT * FROM audit_log') BETWEEN 3000 AND 3600 AS estimate_close;
SELECT lifecycle.count_estimate($$SELECT 1 FROM audit_log WHERE outcome = 'error' AND action = 'POST';$$) > 0 AS estimate_positive;
SELECT lifecycle.count_estimate('VALUES (1), (2), (3)') AS values_rows;
SELECT lifecycle.count_estimate('WITH x AS (SELECT * FROM audit_log) SELECT * FROM x LIMIT 10') AS limited;

-- Errors.
SELECT err($$SELECT lifecycle.count('audit_log', '{"outcom": "error"}')$$) AS unknown_dimension;
SELECT err($$SELECT lifecycle.count('audit_log', '["error"]')$$) AS array_filter;
SELECT err($$SELECT lifecycle.count('audit_log', '"error"')$$) AS string_filter;
SELECT err($$SELECT lifecycle.count('audit_log', '{"outcome": {"eq": "error"}}')$$) AS object_value;
SELECT err($$SELECT lifecycle.count('audit_log', '{"outcome": [["error"]]}')$$) AS nested_array;
SELECT err($$SELECT lifecycle.count('audit_log', NULL)$$) AS null_filter;
SELECT err($$SELECT lifecycle.count(NULL)$$) AS null_table;
SELECT err($$SELECT lifecycle.count('pg_class')$$) AS table_not_enabled;
SELECT err($$SELECT lifecycle.count('no_such_table')$$) AS no_such_table;
SELECT err($$SELECT lifecycle.count_estimate('DELETE FROM audit_log')$$) AS estimate_of_delete;
SELECT err($$SELECT lifecycle.count_estimate('SELECT 1; SELECT 2')$$) AS estimate_of_two;
SELECT err($$SELECT lifecycle.count_estimate('WITH d AS (DELETE FROM audit_log RETURNING 1) SELECT * FROM d')$$) AS estimate_of_cte_delete;
SELECT err($$SELECT lifecycle.count_estimate('SELECT * FROM no_such_table')$$) AS estimate_of_missing_table;
SELECT err($$SELECT lifecycle.count_enable('audit_log', '{outcome}')$$) AS already_enabled;
SELECT err($$SELECT lifecycle.count_disable('pg_class')$$) AS disable_not_enabled;

CREATE TABLE e (id int, t timestamp, tz timestamptz, j json, lc_n int, a text);
CREATE VIEW e_view AS SELECT * FROM e;
SELECT err($$SELECT lifecycle.count_enable('e', '{nope}')$$) AS unknown_column;
SELECT err($$SELECT lifecycle.count_enable('e', '{id,id}')$$) AS listed_twice;
SELECT err($$SELECT lifecycle.count_enable('e', '{ctid}')$$) AS system_column;
SELECT err($$SELECT lifecycle.count_enable('e', '{j}')$$) AS json_dimension;
SELECT err($$SELECT lifecycle.count_enable('e', '{lc_n}')$$) AS reserved_name;
SELECT err($$SELECT lifecycle.count_enable('e', '{id}', 'nope')$$) AS unknown_time_column;
SELECT err($$SELECT lifecycle.count_enable('e', '{id}', 't')$$) AS timestamp_without_tz;
SELECT err($$SELECT lifecycle.count_enable('e', '{id}', 'tz', '1 month')$$) AS month_bucket;
SELECT err($$SELECT lifecycle.count_enable('e', '{id}', 'tz', '-1 hour')$$) AS negative_bucket;
SELECT err($$SELECT lifecycle.count_enable('e', '{id}', 'tz', NULL)$$) AS null_bucket;
SELECT err($$SELECT lifecycle.count_enable('e', '{tz}', 'tz')$$) AS time_column_as_dimension;
SELECT err($$SELECT lifecycle.count_enable('e', NULL)$$) AS null_dimensions;
SELECT err($$SELECT lifecycle.count_enable('e', '{NULL}')$$) AS null_dimension;
SELECT err($$SELECT lifecycle.count_enable('e_view')$$) AS a_view;
SELECT err($$SELECT lifecycle.count_enable(NULL)$$) AS null_table;

-- A table without dimensions or time column: only {} and no range.
SELECT lifecycle.count_enable('e');
INSERT INTO e (id) SELECT g FROM generate_series(1, 10) g;
SELECT lifecycle.count('e') AS e_rows;
SELECT err($$SELECT lifecycle.count('e', '{"id": 1}')$$) AS no_dimensions;
SELECT err($$SELECT lifecycle.count('e', '{}', now())$$) AS range_without_time_column;

-- Typed dimensions: values are read with the column type's input function.
CREATE TABLE typed (n int, b boolean, d numeric, created_at timestamptz);
SELECT lifecycle.count_enable('typed', '{n,b,d}');
INSERT INTO typed SELECT g % 4, g % 2 = 0, (g % 3) / 2.0, NULL FROM generate_series(1, 100) g;
SELECT cmp('typed', '{"n": 2, "b": true}', 'n = 2 AND b') AS int_and_bool,
       cmp('typed', '{"d": [0.5, "1.0"]}', 'd IN (0.5, 1.0)') AS numeric_equal_not_identical;
SELECT err($$SELECT lifecycle.count('typed', '{"n": "two"}')$$) AS bad_value;

-- DDL that would make counts wrong is refused; other DDL is fine.
SELECT err('ALTER TABLE audit_log RENAME COLUMN outcome TO result') AS rename_dimension;
SELECT err('ALTER TABLE audit_log DROP COLUMN user_id') AS drop_dimension;
SELECT err('ALTER TABLE audit_log ALTER COLUMN created_at TYPE timestamp') AS retype_time_column;
SELECT err('ALTER TABLE audit_log DISABLE TRIGGER ALL') AS disable_triggers;
SELECT err('DROP TRIGGER lifecycle_count_1_ins ON audit_log') AS drop_trigger;
SELECT err('DROP TABLE lifecycle.count_1_delta') AS drop_count_table;
SELECT err('CREATE TABLE audit_child () INHERITS (audit_log)') AS inheritance_child;
ALTER TABLE audit_log ADD COLUMN note text;
ALTER TABLE audit_log RENAME COLUMN action TO verb;
SELECT cmp('audit_log', '{}', 'true') AS after_other_ddl;

-- Privileges: SELECT on the table is needed; the summaries are not readable.
CREATE ROLE counts_reader;
CREATE ROLE counts_stranger;
GRANT SELECT ON audit_log TO counts_reader;
SET ROLE counts_reader;
SELECT cmp('audit_log', '{"outcome": "error"}', $$outcome = 'error'$$) AS reader;
SELECT err('SELECT count(*) FROM lifecycle.count_1_s0') AS summaries_hidden;
SELECT err($$SELECT lifecycle.count_enable('typed')$$) AS enable_not_owner;
SELECT err($$SELECT lifecycle.count_disable('audit_log')$$) AS disable_not_owner;
SET ROLE counts_stranger;
SELECT err($$SELECT lifecycle.count('audit_log', '{"outcome": "error"}')$$) AS stranger;
RESET ROLE;
-- Column privileges: like count(*), the columns filtered on are needed.
GRANT SELECT (outcome) ON audit_log TO counts_stranger;
SET ROLE counts_stranger;
SELECT lifecycle.count('audit_log', '{"outcome": "error"}') = (SELECT count(*) FROM audit_log WHERE outcome = 'error') AS column_privilege;
SELECT err($$SELECT lifecycle.count('audit_log', '{"user_id": "u-1"}')$$) AS column_not_granted;
RESET ROLE;

-- Row-level security: count falls back to counting what the caller sees.
ALTER TABLE audit_log ENABLE ROW LEVEL SECURITY;
CREATE POLICY own_rows ON audit_log FOR SELECT USING (user_id = 'u-1');
SET ROLE counts_reader;
SELECT lifecycle.count('audit_log') AS rls_count, (SELECT count(*) FROM audit_log) AS rls_count_star,
       lifecycle.count('audit_log', '{"outcome": "error"}', '2024-01-02', '2024-01-03') AS rls_ranged,
       (SELECT count(*) FROM audit_log WHERE outcome = 'error' AND created_at >= '2024-01-02' AND created_at < '2024-01-03') AS rls_ranged_star;
RESET ROLE;
SELECT cmp('audit_log', '{}', 'true') AS owner_not_subject_to_rls;
DROP POLICY own_rows ON audit_log;
ALTER TABLE audit_log DISABLE ROW LEVEL SECURITY;

-- Partitioned tables: rows routed from the parent, written to a partition
-- directly, moved across partitions; ATTACH, DETACH, DROP, TRUNCATE of a
-- partition; DROP of a partition with something else.
CREATE TABLE events (id bigint, kind text, created_at timestamptz NOT NULL) PARTITION BY RANGE (created_at);
CREATE TABLE events_2024 PARTITION OF events FOR VALUES FROM ('2024-01-01') TO ('2025-01-01');
CREATE TABLE events_2025 PARTITION OF events FOR VALUES FROM ('2025-01-01') TO ('2026-01-01') PARTITION BY LIST (kind);
CREATE TABLE events_2025_a PARTITION OF events_2025 FOR VALUES IN ('a');
CREATE TABLE events_2025_other PARTITION OF events_2025 DEFAULT;
INSERT INTO events SELECT g, (ARRAY['a', 'b', 'c'])[1 + g % 3], '2024-06-01'::timestamptz + g * interval '1 hour'
  FROM generate_series(1, 6000) g;
SELECT lifecycle.count_enable('events', '{kind}', 'created_at', '1 day');
SELECT part, id FROM lifecycle.count_parts ORDER BY part::text COLLATE "C";
INSERT INTO events_2024 VALUES (0, 'z', '2024-07-01');
UPDATE events SET created_at = created_at + interval '6 months' WHERE id BETWEEN 4000 AND 4100;
SELECT cmp('events', '{}', 'true') AS all_rows, cmp('events', '{"kind": "a"}', $$kind = 'a'$$) AS kind_a,
       cmp('events', '{"kind": "a"}', $$kind = 'a'$$, '2024-12-20 05:00', '2025-01-10') AS across_partitions;
CREATE TABLE events_2026 (LIKE events);
INSERT INTO events_2026 SELECT g, 'a', '2026-03-01'::timestamptz + g * interval '1 minute' FROM generate_series(1, 500) g;
ALTER TABLE events ATTACH PARTITION events_2026 FOR VALUES FROM ('2026-01-01') TO ('2027-01-01');
SELECT cmp('events', '{}', 'true') AS attached, cmp('events', '{"kind": "a"}', $$kind = 'a'$$) AS attached_a;
INSERT INTO events VALUES (1, 'b', '2026-05-05');
ALTER TABLE events DETACH PARTITION events_2025;
SELECT cmp('events', '{}', 'true') AS detached, cmp('events', '{"kind": "a"}', $$kind = 'a'$$) AS detached_a;
SELECT count(*) AS triggers_left_on_detached FROM pg_trigger WHERE tgrelid = 'events_2025_a'::regclass;
INSERT INTO events_2025_a VALUES (2, 'a', '2025-02-02');   -- not counted: not a partition any more
ALTER TABLE events ATTACH PARTITION events_2025 FOR VALUES FROM ('2025-01-01') TO ('2026-01-01');
SELECT cmp('events', '{}', 'true') AS reattached, cmp('events', '{"kind": "a"}', $$kind = 'a'$$) AS reattached_a;
BEGIN;
DROP TABLE events_2025_a;
SELECT cmp('events', '{}', 'true') AS dropped, cmp('events', '{"kind": "a"}', $$kind = 'a'$$) AS dropped_a;
ROLLBACK;
SELECT cmp('events', '{}', 'true') AS drop_rolled_back;
TRUNCATE events_2026;
SELECT cmp('events', '{}', 'true') AS partition_truncated, cmp('events', '{"kind": "a"}', $$kind = 'a'$$) AS partition_truncated_a;
CREATE SCHEMA counts_other;
CREATE TABLE counts_other.events_2027 PARTITION OF events FOR VALUES FROM ('2027-01-01') TO ('2028-01-01');
INSERT INTO events VALUES (3, 'c', '2027-05-05'), (4, 'c', '2027-05-06');
SELECT cmp('events', '{"kind": "c"}', $$kind = 'c'$$) AS created_partition;
DROP SCHEMA counts_other CASCADE;
SELECT cmp('events', '{}', 'true') AS dropped_by_cascade, cmp('events', '{"kind": "c"}', $$kind = 'c'$$) AS dropped_by_cascade_c;
SELECT task, target, rows > 0 AS folded FROM lifecycle.run_maintenance() WHERE task = 'count_fold' ORDER BY target::text;
SELECT cmp('events', '{}', 'true') AS folded, cmp('events', '{"kind": "a"}', $$kind = 'a'$$, '2024-12-20 05:00', '2025-01-10') AS folded_range;
BEGIN;
TRUNCATE events;
SELECT cmp('events', '{}', 'true') AS parent_truncated;
ROLLBACK;

-- Soft delete (SPEC §1): a DELETE is an UPDATE of deleted_at; only live rows
-- count, also after restore and after soft delete is disabled.
CREATE TABLE docs (id int PRIMARY KEY, folder text, created_at timestamptz NOT NULL);
INSERT INTO docs SELECT g, 'f' || (g % 3), '2024-03-01'::timestamptz + g * interval '10 minutes' FROM generate_series(1, 300) g;
SELECT lifecycle.soft_delete_enable('docs', hide => true);
SELECT lifecycle.count_enable('docs', '{folder}', 'created_at');
SELECT live_column FROM lifecycle.count_tables WHERE tbl = 'docs'::regclass;
DELETE FROM docs WHERE id <= 30;
SET lifecycle.include_deleted = on;
SELECT cmp('docs', '{}', 'deleted_at IS NULL') AS live_rows, cmp('docs', '{"folder": "f1"}', $$folder = 'f1' AND deleted_at IS NULL$$) AS live_f1,
       cmp('docs', '{}', 'deleted_at IS NULL', '2024-03-01 01:05', '2024-03-01 09:55') AS live_in_range;
RESET lifecycle.include_deleted;
SELECT lifecycle.count('docs') AS count, (SELECT count(*) FROM docs) AS count_star_hidden;
SELECT lifecycle.restore('docs', 7) AS restored;
SELECT lifecycle.count('docs') AS after_restore, (SELECT count(*) FROM docs) AS count_star;
SELECT lifecycle.soft_delete_disable('docs');
SELECT lifecycle.count('docs') AS soft_delete_disabled, (SELECT count(*) FROM docs) AS count_star;

-- A table with deleted_at simulating soft delete, registered after counting
-- began (the registry is read when counting).
CREATE TABLE notes (id int PRIMARY KEY, created_at timestamptz NOT NULL DEFAULT '2024-05-05', deleted_at timestamptz);
SELECT lifecycle.count_enable('notes');
INSERT INTO notes (id) SELECT g FROM generate_series(1, 20) g;
UPDATE notes SET deleted_at = '2024-05-06' WHERE id <= 5;
SELECT lifecycle.count('notes') AS not_registered, (SELECT count(*) FROM notes) AS count_star;
SELECT lifecycle.soft_delete_enable('notes', hide => false);
SELECT lifecycle.count('notes') AS registered_live, (SELECT count(*) FROM notes WHERE deleted_at IS NULL) AS live_star;
UPDATE notes SET deleted_at = NULL WHERE id = 1;
SELECT lifecycle.count('notes') AS cleared_deleted_at;
SELECT lifecycle.soft_delete_disable('notes');
-- A deleted_at column added later, with a default: rows it marks are not live.
CREATE TABLE later (id int PRIMARY KEY);
INSERT INTO later SELECT generate_series(1, 10);
SELECT lifecycle.count_enable('later');
ALTER TABLE later ADD COLUMN deleted_at timestamptz DEFAULT '2024-01-01';
SELECT live_column FROM lifecycle.count_tables WHERE tbl = 'later'::regclass;
SELECT lifecycle.soft_delete_enable('later', hide => false);
SELECT lifecycle.count('later') AS all_deleted_by_default, (SELECT count(*) FROM later WHERE deleted_at IS NULL) AS live_star;
SELECT lifecycle.soft_delete_disable('later');

-- count_disable removes triggers and count tables; dropping a counted table
-- removes them too.
SELECT lifecycle.count_disable('typed');
SELECT count(*) AS typed_triggers FROM pg_trigger WHERE tgrelid = 'typed'::regclass;
SELECT err($$SELECT lifecycle.count('typed')$$) AS typed_after_disable;
DROP TABLE events;
SELECT tbl FROM lifecycle.count_tables ORDER BY id;
SELECT count(*) AS parts_left FROM lifecycle.count_parts;

-- Clean up, so that other files do not depend on this one.
SELECT lifecycle.count_disable(tbl) FROM lifecycle.count_tables ORDER BY id;
SELECT count(*) AS count_tables_left FROM pg_class
 WHERE relnamespace = 'lifecycle'::regnamespace AND relname ~ '^count_[0-9]+_';
DROP TABLE audit_log, e, typed, docs, notes, later CASCADE;
DROP ROLE counts_reader;
DROP ROLE counts_stranger;
DROP FUNCTION cmp(regclass, jsonb, text, timestamptz, timestamptz);
RESET TIME ZONE;
