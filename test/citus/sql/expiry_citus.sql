-- Row expiry and soft-delete retention on a Citus cluster (coordinator + 2
-- workers): registered on the coordinator, swept on every shard.
\getenv w1 PG_LIFECYCLE_WORKER1
\getenv w2 PG_LIFECYCLE_WORKER2
\getenv coord PG_LIFECYCLE_COORDINATOR
SET client_min_messages = warning;

-- grants: a distributed table with an index on the expiry column, 4 shards;
-- resets: a distributed table without one; codes: a reference table.
CREATE TABLE grants (id bigint PRIMARY KEY, user_id text, expires_at timestamptz NOT NULL);
CREATE INDEX ON grants (expires_at);
SELECT create_distributed_table('grants', 'id', shard_count => 4);
CREATE TABLE resets (token text PRIMARY KEY, expires_at timestamptz NOT NULL);
SELECT create_distributed_table('resets', 'token', shard_count => 4);
-- owned by a role that cannot log in: the batches still run as it, on the shards
CREATE ROLE expiry_owner NOLOGIN;
ALTER TABLE resets OWNER TO expiry_owner;
CREATE TABLE codes (code text PRIMARY KEY, created_at timestamptz NOT NULL);
SELECT create_reference_table('codes');
INSERT INTO grants SELECT g, 'u' || (g % 7), CASE WHEN g <= 60 THEN now() - interval '1 hour'
                                                   ELSE now() + interval '1 hour' END
  FROM generate_series(1, 100) g;
INSERT INTO resets SELECT 't' || g, CASE WHEN g % 2 = 0 THEN now() - interval '1 minute'
                                         ELSE now() + interval '1 day' END
  FROM generate_series(1, 50) g;
INSERT INTO codes SELECT 'c' || g, now() - g * interval '1 day' FROM generate_series(1, 10) g;

SELECT lifecycle.expire_enable('grants', 'expires_at');
SELECT lifecycle.expire_enable('resets', 'expires_at', batch_size => 4);
SELECT lifecycle.expire_enable('codes', 'created_at', after => '5 days 12 hours');
SELECT tbl, column_name, after, batch_size FROM lifecycle.expire_tables ORDER BY tbl::text;
-- the expired rows are spread over both workers
SELECT count(DISTINCT nodeport) AS nodes_with_expired_grants
  FROM pg_dist_shard s JOIN pg_dist_shard_placement p USING (shardid)
 WHERE s.logicalrelid = 'grants'::regclass
   AND s.shardid IN (SELECT get_shard_id_for_distribution_column('grants', g) FROM generate_series(1, 60) g);
-- health() counts the backlog through the coordinator
SELECT lifecycle.health() -> 'backlog' -> 'expired_rows' AS backlog;

-- One pass by hand sweeps every shard.
SELECT task, target, rows FROM lifecycle.run_maintenance() WHERE task = 'expire' ORDER BY target::text;
SELECT count(*) AS grants_left, count(*) FILTER (WHERE expires_at <= now()) AS expired_left FROM grants;
SELECT count(*) AS resets_left, count(*) FILTER (WHERE expires_at <= now()) AS expired_left FROM resets;
SELECT code FROM codes ORDER BY created_at DESC;
-- nothing left to do: a second pass deletes nothing
SELECT task, target, rows FROM lifecycle.run_maintenance() WHERE task = 'expire' ORDER BY target::text;

-- The rows are gone from the shards themselves (each worker's own view).
\c postgres - 127.0.0.1 :w1
SET client_min_messages = warning;
SELECT count(*) = 0 AS registered_nowhere_else FROM lifecycle.expire_tables;
-- registering on a worker is refused: the coordinator sweeps every shard
SELECT lifecycle.expire_enable('grants', 'expires_at');
\c postgres - 127.0.0.1 :coord
SET client_min_messages = warning;
SELECT sum(result::int) AS expired_on_shards
  FROM run_command_on_placements('grants', 'SELECT count(*) FROM %s WHERE expires_at <= now()');
SELECT sum(result::int) AS live_on_shards
  FROM run_command_on_placements('grants', 'SELECT count(*) FROM %s');

-- A distributed soft-delete table: expiry soft-deletes (the rows stay,
-- hidden), and the retention purge hard-deletes them later, on every shard.
CREATE TABLE invites (id bigint PRIMARY KEY, expires_at timestamptz NOT NULL);
SELECT create_distributed_table('invites', 'id', shard_count => 4);
SELECT lifecycle.soft_delete_enable('invites', retention => '1 hour');
SELECT lifecycle.expire_enable('invites', 'expires_at', batch_size => 3);
INSERT INTO invites SELECT g, now() + CASE WHEN g <= 12 THEN -interval '1 minute' ELSE interval '1 day' END
  FROM generate_series(1, 20) g;
SELECT task, target, rows FROM lifecycle.run_maintenance() WHERE task = 'expire' ORDER BY target::text;
SELECT count(*) AS live_invites FROM invites;
SET lifecycle.include_deleted = on;
SELECT count(*) AS all_invites, count(deleted_at) AS soft_deleted FROM invites;
-- deleted two hours ago (the application's own soft delete, back-dated): due for the purge
UPDATE invites SET deleted_at = now() - interval '2 hours' WHERE id <= 5;
RESET lifecycle.include_deleted;
SELECT task, target, rows FROM lifecycle.run_maintenance() WHERE task = 'soft_delete_purge' ORDER BY target::text;
SET lifecycle.include_deleted = on;
SELECT count(*) AS all_invites, count(deleted_at) AS soft_deleted, min(id) FILTER (WHERE deleted_at IS NOT NULL)
  FROM invites;
RESET lifecycle.include_deleted;
-- lifecycle.purge by hand: every soft-deleted row, on every shard
SELECT lifecycle.purge('invites', '0') AS purged;
SET lifecycle.include_deleted = on;
SELECT count(*) AS all_invites, count(deleted_at) AS soft_deleted FROM invites;
RESET lifecycle.include_deleted;
-- a reference table cannot be purged: its placements' rows are not in the same places
CREATE TABLE tags (name text PRIMARY KEY);
SELECT create_reference_table('tags');
SELECT lifecycle.soft_delete_enable('tags');
INSERT INTO tags VALUES ('a'), ('b');
DELETE FROM tags WHERE name = 'a';
SELECT lifecycle.purge('tags', '0');
-- what the hint says
SET lifecycle.include_deleted = on;
SET lifecycle.hard_delete = on;
DELETE FROM tags WHERE deleted_at IS NOT NULL;
RESET lifecycle.hard_delete;
SELECT name, deleted_at IS NOT NULL AS deleted FROM tags;
RESET lifecycle.include_deleted;
SELECT lifecycle.soft_delete_disable('tags');
DROP TABLE tags;

-- The background worker on the coordinator sweeps the shards too.
ALTER SYSTEM SET lifecycle.naptime = '200ms';
ALTER SYSTEM SET lifecycle.enabled = on;
SELECT pg_reload_conf();
INSERT INTO grants SELECT g, 'w', now() - interval '1 minute' FROM generate_series(1001, 1040) g;
DO $$
BEGIN
    FOR i IN 1 .. 600 LOOP
        EXIT WHEN (SELECT count(*) FROM grants WHERE expires_at <= now()) = 0;
        PERFORM pg_sleep(0.1);
    END LOOP;
END $$;
SELECT count(*) AS expired_left_after_worker FROM grants WHERE expires_at <= now();
SELECT status, rows > 0 AS did_work FROM lifecycle.job_runs
 WHERE task = 'expire' AND target = 'public.grants' ORDER BY id DESC LIMIT 1;
ALTER SYSTEM RESET lifecycle.naptime;
ALTER SYSTEM RESET lifecycle.enabled;
SELECT pg_reload_conf();
-- the worker leaves (before the next test drives maintenance by hand)
DO $$
BEGIN
    FOR i IN 1 .. 600 LOOP
        EXIT WHEN NOT EXISTS (SELECT FROM pg_stat_activity WHERE backend_type = 'pg_lifecycle worker');
        PERFORM pg_sleep(0.1);
    END LOOP;
END $$;
SELECT count(*) AS workers_left FROM pg_stat_activity WHERE backend_type = 'pg_lifecycle worker';

SELECT lifecycle.expire_disable('grants');
SELECT lifecycle.expire_disable('resets');
SELECT lifecycle.expire_disable('codes');
SELECT lifecycle.expire_disable('invites');
SELECT lifecycle.soft_delete_disable('invites');
DROP TABLE grants, resets, codes, invites;
DROP ROLE expiry_owner;
