-- Exact counts (SPEC §4): the bugs the differential test of issue 15 found,
-- each checked against count(*): rows at +/-infinity with open-ended ranges,
-- MERGE moving rows between partitions, a TRUNCATE that failed inside a
-- savepoint, and DETACH PARTITION ... CONCURRENTLY (refused on counted
-- tables: its cancelled second phase left the partition counted).
-- count_enable in an old REPEATABLE READ snapshot is in the isolation spec
-- counts_enable_snapshot.
SET client_min_messages = warning;
CREATE EXTENSION IF NOT EXISTS pg_lifecycle;
RESET client_min_messages;
\set SHOW_CONTEXT never
SET TIME ZONE 'UTC';

CREATE FUNCTION fx_err(sql text) RETURNS text LANGUAGE plpgsql AS $$
DECLARE st text; msg text; hnt text;
BEGIN
    EXECUTE sql;
    RETURN 'no error';
EXCEPTION WHEN OTHERS THEN
    GET STACKED DIAGNOSTICS st = RETURNED_SQLSTATE, msg = MESSAGE_TEXT, hnt = PG_EXCEPTION_HINT;
    RETURN concat_ws(' | ', st, msg, nullif(hnt, ''));
END $$;

-- count over [since, until) on column t next to count(*): the number when
-- they agree, MISMATCH otherwise.
CREATE FUNCTION fx_cmp(tbl regclass, filter jsonb, cond text,
                       since timestamptz DEFAULT NULL, until timestamptz DEFAULT NULL)
RETURNS text LANGUAGE plpgsql AS $$
DECLARE a bigint; b bigint; q text;
BEGIN
    a := lifecycle.count(tbl, filter, since, until);
    q := format('SELECT count(*) FROM %s WHERE %s', tbl, cond);
    IF since IS NOT NULL THEN q := q || format(' AND t >= %L', since); END IF;
    IF until IS NOT NULL THEN q := q || format(' AND t < %L', until); END IF;
    EXECUTE q INTO b;
    RETURN CASE WHEN a = b THEN a::text ELSE format('MISMATCH count=%s count(*)=%s', a, b) END;
END $$;

-- 1. Rows at infinity and -infinity, with one end of the range open, before
-- and after a fold.
CREATE TABLE fx_inf (id int, k text, t timestamptz);
CREATE INDEX ON fx_inf (t);
INSERT INTO fx_inf VALUES (1, 'a', '2024-01-01 00:10'), (2, 'a', 'infinity'), (3, 'b', '-infinity'),
                          (4, 'b', '2024-01-02'), (5, 'b', 'infinity'), (6, 'a', NULL);
SELECT lifecycle.count_enable('fx_inf', '{k}', 't');
INSERT INTO fx_inf VALUES (7, 'a', 'infinity'), (8, 'a', '-infinity');
SELECT fx_cmp('fx_inf', '{}', 'true', '2024-01-01', NULL) AS since_finite_until_null,
       fx_cmp('fx_inf', '{}', 'true', '2024-01-01 00:30', NULL) AS since_off_boundary_until_null,
       fx_cmp('fx_inf', '{}', 'true', 'infinity', NULL) AS since_infinity,
       fx_cmp('fx_inf', '{"k": "a"}', $$k = 'a'$$, 'infinity', NULL) AS since_infinity_a,
       fx_cmp('fx_inf', '{}', 'true', '2024-01-01', 'infinity') AS until_infinity,
       fx_cmp('fx_inf', '{}', 'true', NULL, '2024-01-01 00:30') AS since_null_until_off_boundary,
       fx_cmp('fx_inf', '{}', 'true', NULL, '2024-01-01') AS since_null_until_boundary,
       fx_cmp('fx_inf', '{}', 'true', '-infinity', '2024-01-01') AS since_minus_infinity,
       fx_cmp('fx_inf', '{}', 'true', NULL, '-infinity') AS until_minus_infinity,
       fx_cmp('fx_inf', '{}', 'true', '-infinity', 'infinity') AS both_infinite;
SELECT task, rows > 0 AS folded FROM lifecycle.run_maintenance() WHERE task = 'count_fold' AND target = 'fx_inf'::regclass;
SELECT fx_cmp('fx_inf', '{}', 'true', '2024-01-01', NULL) AS folded_since_finite_until_null,
       fx_cmp('fx_inf', '{}', 'true', 'infinity', NULL) AS folded_since_infinity,
       fx_cmp('fx_inf', '{"k": "b"}', $$k = 'b'$$, NULL, '2024-01-01 00:30') AS folded_since_null_b,
       fx_cmp('fx_inf', '{}', 'true', '-infinity', NULL) AS folded_since_minus_infinity_until_null;

-- 2. MERGE ... WHEN MATCHED THEN UPDATE moving rows to another partition,
-- with and without INSERT and DELETE actions, into the root and into a
-- partition that is itself partitioned.
CREATE TABLE fx_pm (id int, k text, sub int, t timestamptz NOT NULL) PARTITION BY LIST (k);
CREATE TABLE fx_pm_a PARTITION OF fx_pm FOR VALUES IN ('a');
CREATE TABLE fx_pm_b PARTITION OF fx_pm FOR VALUES IN ('b') PARTITION BY LIST (sub);
CREATE TABLE fx_pm_b1 PARTITION OF fx_pm_b FOR VALUES IN (1);
CREATE TABLE fx_pm_b2 PARTITION OF fx_pm_b FOR VALUES IN (2);
INSERT INTO fx_pm SELECT g, CASE WHEN g <= 6 THEN 'a' ELSE 'b' END, 1 + g % 2, '2024-01-01'::timestamptz + g * interval '20 minutes'
  FROM generate_series(1, 12) g;
SELECT lifecycle.count_enable('fx_pm', '{k,sub}', 't');
CREATE FUNCTION fx_pm_check() RETURNS text LANGUAGE sql AS $$
    SELECT string_agg(fx_cmp('fx_pm', jsonb_build_object('k', k, 'sub', sub), format('k = %L AND sub = %s', k, sub)), ' ')
      FROM (VALUES ('a', 1), ('a', 2), ('b', 1), ('b', 2)) v(k, sub)
$$;
MERGE INTO fx_pm USING (VALUES (1)) v(id) ON fx_pm.id = v.id WHEN MATCHED THEN UPDATE SET k = 'b';
SELECT fx_pm_check() AS merge_update_only, fx_cmp('fx_pm', '{}', 'true') AS all_rows;
MERGE INTO fx_pm USING (VALUES (2), (100)) v(id) ON fx_pm.id = v.id
  WHEN MATCHED THEN UPDATE SET k = 'b' WHEN NOT MATCHED THEN INSERT VALUES (v.id, 'a', 2, '2024-01-01');
SELECT fx_pm_check() AS merge_update_insert, fx_cmp('fx_pm', '{}', 'true') AS all_rows;
MERGE INTO fx_pm USING (VALUES (3, 'move'), (4, 'delete')) v(id, what) ON fx_pm.id = v.id
  WHEN MATCHED AND what = 'delete' THEN DELETE WHEN MATCHED THEN UPDATE SET k = 'b';
SELECT fx_pm_check() AS merge_update_delete, fx_cmp('fx_pm', '{}', 'true') AS all_rows;
MERGE INTO fx_pm_b USING (VALUES (7)) v(id) ON fx_pm_b.id = v.id WHEN MATCHED THEN UPDATE SET sub = 3 - sub;
SELECT fx_pm_check() AS merge_into_partition, fx_cmp('fx_pm', '{}', 'true') AS all_rows;
BEGIN;
SAVEPOINT s;
MERGE INTO fx_pm USING (VALUES (5)) v(id) ON fx_pm.id = v.id WHEN MATCHED THEN UPDATE SET k = 'b', sub = 2;
SELECT fx_pm_check() AS merge_in_savepoint;
ROLLBACK TO SAVEPOINT s;
SELECT fx_pm_check() AS merge_rolled_back;
COMMIT;
-- A MERGE on a plain counted table, and a plain UPDATE moving rows, still exact.
UPDATE fx_pm SET k = 'a' WHERE id IN (7, 9);
SELECT fx_pm_check() AS plain_update_moving;
CREATE TABLE fx_plain (id int PRIMARY KEY, k text, t timestamptz);
SELECT lifecycle.count_enable('fx_plain', '{k}');
INSERT INTO fx_plain SELECT g, 'a', NULL FROM generate_series(1, 5) g;
MERGE INTO fx_plain USING (VALUES (1), (2), (9)) v(id) ON fx_plain.id = v.id
  WHEN MATCHED AND v.id = 1 THEN DELETE WHEN MATCHED THEN UPDATE SET k = 'b' WHEN NOT MATCHED THEN INSERT VALUES (v.id, 'c');
SELECT fx_cmp('fx_plain', '{"k": "a"}', $$k = 'a'$$) AS a, fx_cmp('fx_plain', '{"k": "b"}', $$k = 'b'$$) AS b,
       fx_cmp('fx_plain', '{"k": "c"}', $$k = 'c'$$) AS c;
-- A MERGE whose INSERT action runs before UPDATE actions that keep their row
-- in its partition (the join reads the source first and in order: a nested
-- loop).  PostgreSQL 18.6 (and 15.18, whose code is the same; not 15.20 or
-- 17.12) puts the row last inserted into the statement's UPDATE NEW
-- transition table in place of each such updated row, until a row is moved.
BEGIN;
SET LOCAL enable_hashjoin = off;
SET LOCAL enable_mergejoin = off;
MERGE INTO fx_pm USING (VALUES (201, 'ins'), (5, 'sub'), (6, 'move'), (9, 'sub'), (202, 'ins'), (10, 'time'), (12, 'time')) v(id, what)
  ON fx_pm.id = v.id
  WHEN MATCHED AND what = 'sub' THEN UPDATE SET sub = 3 - sub
  WHEN MATCHED AND what = 'move' THEN UPDATE SET k = 'b'
  WHEN MATCHED THEN UPDATE SET t = t + interval '1 day'
  WHEN NOT MATCHED THEN INSERT VALUES (v.id, CASE v.id WHEN 201 THEN 'b' ELSE 'a' END, 2, '2024-01-01');
COMMIT;
SELECT fx_pm_check() AS merge_insert_then_update, fx_cmp('fx_pm', '{}', 'true') AS all_rows,
       fx_cmp('fx_pm', '{}', 'true', '2024-01-02', NULL) AS since_jan_2;
SELECT task, rows > 0 AS folded FROM lifecycle.run_maintenance() WHERE task = 'count_fold' AND target = 'fx_pm'::regclass;
SELECT fx_pm_check() AS folded;

-- 3. A TRUNCATE that fails in another table's BEFORE TRUNCATE trigger inside
-- a savepoint leaves nothing behind: a later TRUNCATE of one partition in the
-- same transaction subtracts its rows.
CREATE TABLE fx_tp (id int, k text, t timestamptz NOT NULL) PARTITION BY LIST (k);
CREATE TABLE fx_tp_a PARTITION OF fx_tp FOR VALUES IN ('a');
CREATE TABLE fx_tp_b PARTITION OF fx_tp FOR VALUES IN ('b');
INSERT INTO fx_tp SELECT g, CASE WHEN g <= 5 THEN 'a' ELSE 'b' END, '2024-01-01' FROM generate_series(1, 10) g;
SELECT lifecycle.count_enable('fx_tp', '{k}', 't');
CREATE TABLE fx_other (id int);
CREATE FUNCTION fx_refuse() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RAISE EXCEPTION 'no truncate here'; END $$;
CREATE TRIGGER fx_refuse BEFORE TRUNCATE ON fx_other EXECUTE FUNCTION fx_refuse();
BEGIN;
SAVEPOINT s;
TRUNCATE fx_tp, fx_other;
ROLLBACK TO SAVEPOINT s;
TRUNCATE fx_tp_a;
SELECT fx_cmp('fx_tp', '{}', 'true') AS after_failed_truncate;
COMMIT;
SELECT fx_cmp('fx_tp', '{}', 'true') AS committed, fx_cmp('fx_tp', '{"k": "b"}', $$k = 'b'$$) AS b;
-- The same failure without a savepoint rolls the transaction back.
INSERT INTO fx_tp_a VALUES (1, 'a', '2024-01-01');
BEGIN;
TRUNCATE fx_tp, fx_other;
ROLLBACK;
TRUNCATE fx_tp_a;
SELECT fx_cmp('fx_tp', '{}', 'true') AS after_failed_truncate_xact;
-- A truncate of the parent in a committed savepoint still covers its partitions.
BEGIN;
SAVEPOINT s;
TRUNCATE fx_tp;
RELEASE SAVEPOINT s;
SELECT fx_cmp('fx_tp', '{}', 'true') AS truncated_in_released_savepoint;
ROLLBACK;

-- 4. DETACH PARTITION ... CONCURRENTLY of a counted table's partition is
-- refused (a cancelled second phase would leave the partition counted until
-- FINALIZE); plain DETACH is exact.
SELECT fx_err('ALTER TABLE fx_tp DETACH PARTITION fx_tp_b CONCURRENTLY') AS detach_concurrently;
SELECT fx_err('ALTER TABLE fx_pm_b DETACH PARTITION fx_pm_b2 CONCURRENTLY') AS detach_concurrently_sub;
SELECT fx_cmp('fx_tp', '{}', 'true') AS not_detached;
ALTER TABLE fx_tp DETACH PARTITION fx_tp_b;
SELECT fx_cmp('fx_tp', '{}', 'true') AS detached;
CREATE TABLE fx_free (id int, k text) PARTITION BY LIST (k);
CREATE TABLE fx_free_a PARTITION OF fx_free FOR VALUES IN ('a');
ALTER TABLE fx_free DETACH PARTITION fx_free_a CONCURRENTLY;   -- not counted: allowed

SELECT lifecycle.count_disable(tbl) FROM lifecycle.count_tables ORDER BY id;
DROP TABLE fx_inf, fx_pm, fx_plain, fx_tp, fx_tp_b, fx_other, fx_free, fx_free_a;
DROP FUNCTION fx_err(text), fx_cmp(regclass, jsonb, text, timestamptz, timestamptz), fx_pm_check(), fx_refuse();
RESET TIME ZONE;
