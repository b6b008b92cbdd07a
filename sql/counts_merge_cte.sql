-- Exact counts (SPEC §4) after a MERGE inside WITH (PostgreSQL 17+: MERGE
-- ... RETURNING in a CTE) on a counted partitioned table: rows it moves
-- between partitions, rows it inserts before updating others, a CTE the
-- outer query does not read to the end.  Before 17 the statements are
-- syntax errors (expected/counts_merge_cte_1.out).
SET client_min_messages = warning;
CREATE EXTENSION IF NOT EXISTS pg_lifecycle;
RESET client_min_messages;
\set SHOW_CONTEXT never
\set VERBOSITY terse
SET TIME ZONE 'UTC';

CREATE TABLE mc (id int, k text, t timestamptz NOT NULL) PARTITION BY LIST (k);
CREATE TABLE mc_a PARTITION OF mc FOR VALUES IN ('a');
CREATE TABLE mc_b PARTITION OF mc FOR VALUES IN ('b');
INSERT INTO mc SELECT g, 'a', '2024-01-01'::timestamptz + g * interval '1 minute' FROM generate_series(1, 10) g;
SELECT lifecycle.count_enable('mc', '{k}', 't');
CREATE FUNCTION mc_check() RETURNS text LANGUAGE sql AS $$
    SELECT string_agg(format('%s:%s/%s', k, lifecycle.count('mc', jsonb_build_object('k', k)),
                             (SELECT count(*) FROM mc WHERE mc.k = v.k)), ' ' ORDER BY k)
      FROM (VALUES ('a'), ('b')) v(k)
$$;

-- Moves two rows (an UPDATE action only).
WITH m AS (MERGE INTO mc USING (VALUES (1), (2)) v(id) ON mc.id = v.id
           WHEN MATCHED THEN UPDATE SET k = 'b' RETURNING mc.id)
SELECT count(*) AS moved FROM m;
SELECT mc_check() AS after_move;
-- Inserts one row, then updates others in place and moves one.
WITH m AS (MERGE INTO mc USING (VALUES (100, 'a'), (3, 'a'), (4, 'b')) v(id, k) ON mc.id = v.id
           WHEN MATCHED THEN UPDATE SET k = v.k, t = mc.t + interval '1 second'
           WHEN NOT MATCHED THEN INSERT VALUES (v.id, v.k, '2024-01-02') RETURNING mc.id)
SELECT count(*) AS merged FROM m;
SELECT mc_check() AS after_insert_update;
-- The outer query reads one row of the CTE: the MERGE still runs to the end.
WITH m AS (MERGE INTO mc USING (VALUES (5), (6), (7)) v(id) ON mc.id = v.id
           WHEN MATCHED THEN UPDATE SET k = 'b' RETURNING mc.id)
SELECT 1 AS one FROM m LIMIT 1;
SELECT mc_check() AS after_partial_read;
-- A MERGE CTE beside another statement, rolled back to a savepoint.
BEGIN;
SAVEPOINT s;
WITH m AS (MERGE INTO mc USING (VALUES (8)) v(id) ON mc.id = v.id WHEN MATCHED THEN UPDATE SET k = 'b' RETURNING mc.id)
SELECT count(*) AS moved FROM m;
SELECT mc_check() AS in_savepoint;
ROLLBACK TO SAVEPOINT s;
SELECT mc_check() AS rolled_back;
COMMIT;
SELECT count(*) AS fold_units FROM lifecycle.run_maintenance() WHERE task = 'count_fold';
SELECT mc_check() AS after_fold;
DROP TABLE mc;
DROP FUNCTION mc_check();
