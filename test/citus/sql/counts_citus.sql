-- Exact counts (SPEC §4) on a Citus cluster (coordinator + 2 workers):
-- count, count_by and count_series of a distributed table (4 shards over the
-- two workers) and of a reference table, checked against count(*)/GROUP BY
-- in the caller's transaction, through writes on the coordinator and on a
-- worker, rollbacks, soft delete, TRUNCATE, a shard split and the fold.
\getenv w1 PG_LIFECYCLE_WORKER1
\getenv w2 PG_LIFECYCLE_WORKER2
\getenv coord PG_LIFECYCLE_COORDINATOR
SET client_min_messages = warning;

CREATE TABLE events (account_id bigint NOT NULL, id bigint NOT NULL, created_at timestamptz NOT NULL,
                     outcome text, action text NOT NULL, PRIMARY KEY (account_id, id));
SELECT create_distributed_table('events', 'account_id', shard_count => 4);
-- rows already there when counting starts
INSERT INTO events SELECT g % 10, g, timestamptz '2024-03-01 00:00+00' + g * interval '7 minutes',
                          (ARRAY['success', 'error', NULL])[g % 3 + 1], (ARRAY['GET', 'POST'])[g % 2 + 1]
  FROM generate_series(1, 300) g;
SELECT lifecycle.count_enable('events', '{outcome,action}', 'created_at', '1 hour');
SELECT tbl, lattice FROM lifecycle.count_tables WHERE tbl = 'events'::regclass;
-- the deltas are a distributed table colocated with the counted one
SELECT p.logicalrelid::text ~ '^lifecycle\.count_[0-9]+_delta$' AS delta_table, p.colocationid = e.colocationid AS colocated
  FROM pg_dist_partition p, pg_dist_partition e
 WHERE e.logicalrelid = 'events'::regclass AND p.logicalrelid::text LIKE 'lifecycle.count_%';

-- Compares every kind of count with count(*) / GROUP BY, in the current
-- transaction; returns the mismatches (none: an empty result).
CREATE FUNCTION check_counts(tbl regclass) RETURNS TABLE (what text, ours bigint, theirs bigint)
LANGUAGE plpgsql AS $$
DECLARE
    f jsonb;
    s timestamptz;
    u timestamptz;
    n bigint;
    m bigint;
BEGIN
    FOR f IN SELECT * FROM unnest(ARRAY['{}', '{"outcome": "error"}', '{"outcome": null}',
                                        '{"outcome": ["error", "success"], "action": "POST"}']::jsonb[]) LOOP
        FOR s, u IN SELECT * FROM (VALUES (NULL::timestamptz, NULL::timestamptz),
                                          ('2024-03-01 03:17:05+00', NULL),
                                          (NULL, '2024-03-01 09:41:00+00'),
                                          ('2024-03-01 01:00+00', '2024-03-01 13:00+00'),
                                          ('2024-03-01 02:59:59+00', '2024-03-01 03:02:01+00')) r LOOP
            n := lifecycle.count(tbl, f, s, u);
            EXECUTE format('SELECT count(*) FROM %s WHERE ($1 IS NULL OR created_at >= $1) AND ($2 IS NULL OR created_at < $2)'
                           ' AND (NOT $3 ? ''outcome'' OR outcome IS NOT DISTINCT FROM ($3->>''outcome'')'
                           '      OR outcome = ANY (SELECT jsonb_array_elements_text(CASE WHEN jsonb_typeof($3->''outcome'') = ''array'' THEN $3->''outcome'' END)))'
                           ' AND (NOT $3 ? ''action'' OR action = $3->>''action'')', tbl)
                INTO m USING s, u, f;
            IF n IS DISTINCT FROM m THEN
                what := format('count %s [%s, %s)', f, s, u); ours := n; theirs := m; RETURN NEXT;
            END IF;
        END LOOP;
    END LOOP;
    FOR what, ours, theirs IN EXECUTE format(
        'SELECT ''count_by outcome '' || coalesce(value, ''NULL''), c.count, t.count
           FROM lifecycle.count_by(%1$L, ''outcome'') c
           FULL JOIN (SELECT outcome, count(*) FROM %1$s GROUP BY 1) t ON coalesce(t.outcome, ''(null)'') = coalesce(c.value, ''(null)'')
          WHERE c.count IS DISTINCT FROM t.count', tbl) LOOP
        RETURN NEXT;
    END LOOP;
    FOR what, ours, theirs IN EXECUTE format(
        'SELECT ''count_by action '' || coalesce(value, ''NULL''), c.count, t.count
           FROM lifecycle.count_by(%1$L, ''action'', ''{"outcome": "success"}'', ''2024-03-01 05:30+00'') c
           FULL JOIN (SELECT action, count(*) FROM %1$s WHERE outcome = ''success'' AND created_at >= ''2024-03-01 05:30+00''
                      GROUP BY 1) t ON t.action = c.value
          WHERE c.count IS DISTINCT FROM t.count', tbl) LOOP
        RETURN NEXT;
    END LOOP;
    FOR what, ours, theirs IN EXECUTE format(
        'SELECT ''count_series '' || coalesce(c.bucket_start::text, t.b::text), c.count, coalesce(t.count, 0)
           FROM lifecycle.count_series(%1$L, ''2 hours'', ''{}'', ''2024-03-01 00:30+00'', ''2024-03-02 00:00+00'') c
           FULL JOIN (SELECT lifecycle.count_bucket(created_at, 7200000000) AS b, count(*) FROM %1$s
                       WHERE created_at >= ''2024-03-01 00:30+00'' AND created_at < ''2024-03-02 00:00+00'' GROUP BY 1) t
             ON t.b = c.bucket_start
          WHERE c.count IS DISTINCT FROM coalesce(t.count, 0)', tbl) LOOP
        RETURN NEXT;
    END LOOP;
END $$;

SELECT lifecycle.count('events') AS total, (SELECT count(*) FROM events) AS "count(*)";
SELECT * FROM check_counts('events');
SELECT * FROM lifecycle.count_by('events', 'outcome');

-- Writes through the coordinator: a single row (the fast path on a worker),
-- many rows over all shards, an UPDATE of a dimension, a DELETE.
INSERT INTO events VALUES (3, 1000, '2024-03-01 04:04+00', 'error', 'GET');
INSERT INTO events SELECT g % 7, g, timestamptz '2024-03-01 00:00+00' + g * interval '3 minutes', 'error', 'POST'
  FROM generate_series(1001, 1100) g;
UPDATE events SET outcome = 'success' WHERE id % 5 = 0;
DELETE FROM events WHERE id % 11 = 0;
SELECT lifecycle.count('events') AS total, (SELECT count(*) FROM events) AS "count(*)";
SELECT * FROM check_counts('events');

-- The caller's own uncommitted writes are counted, in its transaction only;
-- a rollback (of a savepoint, of the transaction) takes them back.
BEGIN;
INSERT INTO events SELECT g % 10, g, '2024-03-01 10:10+00', 'error', 'GET' FROM generate_series(2001, 2050) g;
SELECT lifecycle.count('events', '{"outcome": "error"}') AS errors_in_transaction,
       (SELECT count(*) FROM events WHERE outcome = 'error') AS "count(*)";
SAVEPOINT s;
DELETE FROM events WHERE account_id = 4;
SELECT lifecycle.count('events') AS after_delete, (SELECT count(*) FROM events) AS "count(*)";
ROLLBACK TO SAVEPOINT s;
SELECT * FROM check_counts('events');
ROLLBACK;
BEGIN;
INSERT INTO events VALUES (1, 3000, '2024-03-01 11:11+00', 'error', 'GET');
UPDATE events SET action = 'GET' WHERE account_id = 2;
SELECT * FROM check_counts('events');
ROLLBACK;
SELECT lifecycle.count('events') AS total, (SELECT count(*) FROM events) AS "count(*)";
SELECT * FROM check_counts('events');
-- REPEATABLE READ: both see the transaction's snapshot
BEGIN ISOLATION LEVEL REPEATABLE READ;
SELECT lifecycle.count('events') = (SELECT count(*) FROM events) AS same_in_repeatable_read;
INSERT INTO events VALUES (9, 3001, '2024-03-01 12:00+00', 'success', 'GET');
SELECT * FROM check_counts('events');
COMMIT;

-- Writes received by a worker (Citus syncs the metadata): counted the same way.
\c postgres - 127.0.0.1 :w1
SET client_min_messages = warning;
INSERT INTO events SELECT g % 10, g, '2024-03-01 06:30+00', 'error', 'POST' FROM generate_series(4001, 4040) g;
DELETE FROM events WHERE id = 4001;
\c postgres - 127.0.0.1 :coord
SET client_min_messages = warning;
SELECT lifecycle.count('events') AS total, (SELECT count(*) FROM events) AS "count(*)";
SELECT * FROM check_counts('events');

-- COPY through the coordinator (Citus copies into each shard).
COPY events (account_id, id, created_at, outcome, action) FROM STDIN;
1	8001	2024-03-01 05:05:00+00	error	GET
2	8002	2024-03-01 05:06:00+00	\N	POST
3	8003	2024-03-01 05:07:00+00	success	POST
4	8004	2024-03-01 05:08:00+00	error	POST
\.
SELECT * FROM check_counts('events');

-- The fold compacts each shard's deltas in place (one row per group): the
-- counts do not change.
SELECT format('lifecycle.count_%s_delta', id) AS delta FROM lifecycle.count_tables WHERE tbl = 'events'::regclass \gset
SELECT count(*) AS delta_rows_before FROM :delta \gset
SELECT sum(n) > 0 AS folded FROM (SELECT rows AS n FROM lifecycle.run_maintenance() WHERE task = 'count_fold') f;
SELECT count(*) < :delta_rows_before AS fewer_delta_rows,
       count(*) = count(DISTINCT (outcome, action, lc_bucket, lc_live, get_shard_id_for_distribution_column(:'delta', lc_dist)))
         AS one_row_per_group_and_shard
  FROM :delta;
SELECT lifecycle.count('events') AS total, (SELECT count(*) FROM events) AS "count(*)";
SELECT * FROM check_counts('events');
-- a second fold finds nothing to do
SELECT coalesce(sum(rows), 0) AS second_fold FROM lifecycle.run_maintenance() WHERE task = 'count_fold';
-- and writes after it are counted
INSERT INTO events VALUES (5, 5000, '2024-03-01 07:07+00', NULL, 'POST');
SELECT * FROM check_counts('events');

-- A shard split: the deltas are split with their shard; rows written after it
-- land in the new shards and are counted.
SELECT citus_split_shard_by_split_points(
         (SELECT min(shardid) FROM pg_dist_shard WHERE logicalrelid = 'events'::regclass),
         ARRAY[(SELECT ((shardminvalue::bigint + shardmaxvalue::bigint) / 2)::text FROM pg_dist_shard
                 WHERE shardid = (SELECT min(shardid) FROM pg_dist_shard WHERE logicalrelid = 'events'::regclass))],
         ARRAY[(SELECT nodeid FROM pg_dist_node WHERE nodeport = :w1), (SELECT nodeid FROM pg_dist_node WHERE nodeport = :w2)],
         shard_transfer_mode => 'block_writes');
SELECT count(*) AS shards FROM pg_dist_shard WHERE logicalrelid = 'events'::regclass;
SELECT lifecycle.count('events') AS total, (SELECT count(*) FROM events) AS "count(*)";
SELECT * FROM check_counts('events');
INSERT INTO events SELECT g % 10, g, '2024-03-01 08:08+00', 'success', 'GET' FROM generate_series(6001, 6040) g;
SELECT * FROM check_counts('events');

-- A shard move (logical replication, Citus's default when the table has a
-- primary key): the deltas move with their colocated shard, nothing twice.
SELECT s.shardid AS move_shard, p.nodeport AS move_from, CASE WHEN p.nodeport = :w1 THEN :w2 ELSE :w1 END AS move_to
  FROM pg_dist_shard s JOIN pg_dist_shard_placement p USING (shardid)
 WHERE s.logicalrelid = 'events'::regclass ORDER BY s.shardid LIMIT 1 \gset
SELECT citus_move_shard_placement(:move_shard, '127.0.0.1', :move_from, '127.0.0.1', :move_to,
                                  shard_transfer_mode => 'force_logical');
SELECT lifecycle.count('events') AS total, (SELECT count(*) FROM events) AS "count(*)";
SELECT * FROM check_counts('events');
INSERT INTO events SELECT g % 10, g, '2024-03-01 09:09+00', 'error', 'GET' FROM generate_series(7001, 7040) g;
SELECT * FROM check_counts('events');

-- Soft delete on the same table: only live rows count.
ALTER TABLE events ADD COLUMN deleted_at timestamptz;
SELECT lifecycle.soft_delete_enable('events');
\set QUIET off
DELETE FROM events WHERE account_id = 3;
\set QUIET on
SELECT lifecycle.count('events') AS live, (SELECT count(*) FROM events) AS "count(*)";
SELECT * FROM check_counts('events');
SELECT lifecycle.restore('events', '{"account_id": 3, "id": 1000}'::text) AS restored;
SELECT lifecycle.count('events') AS live, (SELECT count(*) FROM events) AS "count(*)";

-- TRUNCATE empties the counts with the table (soft delete allows it to the owner with hard_delete).
SET lifecycle.hard_delete = on;
TRUNCATE events;
RESET lifecycle.hard_delete;
SELECT lifecycle.count('events') AS after_truncate;
INSERT INTO events VALUES (1, 1, '2024-03-01 00:00+00', 'error', 'GET');
SELECT lifecycle.count('events') AS one;

-- An application role with SELECT on the table: exact too (it cannot read
-- the count tables, so it gets count(*) through Citus).
CREATE ROLE counts_app LOGIN;
GRANT SELECT, INSERT ON events TO counts_app;
SET ROLE counts_app;
BEGIN;
INSERT INTO events VALUES (2, 2, '2024-03-01 00:00+00', 'error', 'GET');
SELECT lifecycle.count('events') AS app_in_transaction, (SELECT count(*) FROM events) AS "count(*)";
ROLLBACK;
RESET ROLE;

-- count_disable: writes work and nothing of the counts is left on any node.
SELECT lifecycle.soft_delete_disable('events');
SELECT lifecycle.count_disable('events');
INSERT INTO events VALUES (1, 2, '2024-03-01 00:00+00', 'error', 'GET');
CALL citus_cleanup_orphaned_resources();  -- the shards the split left for deferred drop
SELECT count(*) AS count_tables_left FROM pg_dist_partition WHERE logicalrelid::text LIKE 'lifecycle.count_%';
\c postgres - 127.0.0.1 :w2
SET citus.override_table_visibility = off;
SELECT count(*) AS count_tables_left_on_w2 FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
 WHERE n.nspname = 'lifecycle' AND c.relname ~ '^count_[0-9]+_';
\c postgres - 127.0.0.1 :coord
SET client_min_messages = warning;

-- A reference table: every node has a copy, each copy's trigger counts into
-- its node's copy of the deltas.
CREATE TABLE kinds (code text PRIMARY KEY, family text, created_at timestamptz DEFAULT '2024-03-01 00:00+00');
SELECT create_reference_table('kinds');
INSERT INTO kinds (code, family) SELECT 'k' || g, (ARRAY['a', 'b', 'c'])[g % 3 + 1] FROM generate_series(1, 50) g;
SELECT lifecycle.count_enable('kinds', '{family}');
INSERT INTO kinds (code, family) SELECT 'n' || g, 'a' FROM generate_series(1, 40) g;
DELETE FROM kinds WHERE code LIKE 'k1%';
SELECT * FROM lifecycle.count_by('kinds', 'family');
SELECT family, count(*) FROM kinds GROUP BY 1 ORDER BY 1;
BEGIN;
INSERT INTO kinds (code, family) VALUES ('x', 'x');
SELECT lifecycle.count('kinds') AS in_transaction, (SELECT count(*) FROM kinds) AS "count(*)";
ROLLBACK;
\c postgres - 127.0.0.1 :w2
SET client_min_messages = warning;
INSERT INTO kinds (code, family) VALUES ('w', 'b');
\c postgres - 127.0.0.1 :coord
SET client_min_messages = warning;
SELECT lifecycle.count('kinds') AS total, (SELECT count(*) FROM kinds) AS "count(*)";
SELECT lifecycle.count('kinds', '{"family": "b"}') AS b, (SELECT count(*) FROM kinds WHERE family = 'b') AS "count(*)";
SELECT sum(n) > 0 AS folded FROM (SELECT rows AS n FROM lifecycle.run_maintenance() WHERE task = 'count_fold') f;
SELECT lifecycle.count('kinds') AS total, (SELECT count(*) FROM kinds) AS "count(*)";
SELECT lifecycle.count_disable('kinds');

-- A table owner who is not a superuser: count_enable, writes and counts in
-- its transactions.
CREATE ROLE counts_owner LOGIN;
GRANT CREATE ON SCHEMA public TO counts_owner;
SET ROLE counts_owner;
CREATE TABLE owned (tenant int NOT NULL, id int NOT NULL, state text, PRIMARY KEY (tenant, id));
SELECT create_distributed_table('owned', 'tenant', shard_count => 2);
INSERT INTO owned SELECT g % 3, g, 'new' FROM generate_series(1, 30) g;
SELECT lifecycle.count_enable('owned', '{state}');
BEGIN;
UPDATE owned SET state = 'done' WHERE id <= 10;
INSERT INTO owned VALUES (7, 100, 'done');
SELECT * FROM lifecycle.count_by('owned', 'state');
ROLLBACK;
SELECT * FROM lifecycle.count_by('owned', 'state');
SELECT lifecycle.count_disable('owned');
DROP TABLE owned;
RESET ROLE;
REVOKE CREATE ON SCHEMA public FROM counts_owner;
DROP ROLE counts_owner;

-- Distributing a table that is already counted is refused: enable after.
CREATE TABLE later (id bigint PRIMARY KEY, kind text);
SELECT lifecycle.count_enable('later', '{kind}');
SELECT create_distributed_table('later', 'id');
SELECT lifecycle.count_disable('later');
SELECT create_distributed_table('later', 'id');
SELECT lifecycle.count_enable('later', '{kind}');
INSERT INTO later SELECT g, 'x' FROM generate_series(1, 10) g;
SELECT lifecycle.count('later') AS later;

-- Refused: a partitioned distributed table.
CREATE TABLE parted (id bigint, at timestamptz, PRIMARY KEY (id, at)) PARTITION BY RANGE (at);
CREATE TABLE parted_2024 PARTITION OF parted FOR VALUES FROM ('2024-01-01') TO ('2025-01-01');
SELECT create_distributed_table('parted', 'id');
SELECT lifecycle.count_enable('parted');

DROP TABLE events, kinds, later, parted;
DROP FUNCTION check_counts(regclass);
DROP ROLE counts_app;
