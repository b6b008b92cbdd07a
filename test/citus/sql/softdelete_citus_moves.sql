-- Soft delete keeps protecting a distributed table across a shard split and a
-- shard move (Citus creates the new shards with the table's triggers): a
-- DELETE through the coordinator or received by the worker that now holds the
-- shard keeps the rows and hides them, the cascade along a colocated key
-- still happens, restore brings them back.
\getenv w1 PG_LIFECYCLE_WORKER1
\getenv w2 PG_LIFECYCLE_WORKER2
\getenv coord PG_LIFECYCLE_COORDINATOR
SET client_min_messages = warning;
CREATE TABLE members (id bigint PRIMARY KEY, name text);
SELECT create_distributed_table('members', 'id', shard_count => 2);
SELECT lifecycle.soft_delete_enable('members');
CREATE TABLE badges (member_id bigint REFERENCES members (id) ON DELETE CASCADE, id bigint, PRIMARY KEY (member_id, id));
SELECT create_distributed_table('badges', 'member_id', colocate_with => 'members');
SELECT lifecycle.soft_delete_enable('badges');
INSERT INTO members SELECT g, 'm' || g FROM generate_series(1, 40) g;
INSERT INTO badges SELECT m, b FROM generate_series(1, 40) m, generate_series(1, 2) b;

-- Split the first shard (block_writes) into one shard on each worker.
SELECT citus_split_shard_by_split_points(
         (SELECT min(shardid) FROM pg_dist_shard WHERE logicalrelid = 'members'::regclass),
         ARRAY[(SELECT ((shardminvalue::bigint + shardmaxvalue::bigint) / 2)::text FROM pg_dist_shard
                 WHERE shardid = (SELECT min(shardid) FROM pg_dist_shard WHERE logicalrelid = 'members'::regclass))],
         ARRAY[(SELECT nodeid FROM pg_dist_node WHERE nodeport = :w1), (SELECT nodeid FROM pg_dist_node WHERE nodeport = :w2)],
         shard_transfer_mode => 'block_writes');
SELECT count(*) AS member_shards FROM pg_dist_shard WHERE logicalrelid = 'members'::regclass;
-- Move the last shard to the other worker (logical replication).
SELECT s.shardid AS move_shard, p.nodeport AS move_from, CASE WHEN p.nodeport = :w1 THEN :w2 ELSE :w1 END AS move_to
  FROM pg_dist_shard s JOIN pg_dist_shard_placement p USING (shardid)
 WHERE s.logicalrelid = 'members'::regclass ORDER BY s.shardid DESC LIMIT 1 \gset
SELECT citus_move_shard_placement(:move_shard, '127.0.0.1', :move_from, '127.0.0.1', :move_to,
                                  shard_transfer_mode => 'force_logical');
CALL citus_cleanup_orphaned_resources();
-- every shard of both tables, on whichever node holds it, has our guard trigger
-- (Citus names it after the shard)
SELECT 'members' AS tbl, success, result AS guard_triggers, count(*) AS placements
  FROM run_command_on_placements('members', $$SELECT count(*) FROM pg_trigger WHERE tgrelid = '%s'::regclass
                                             AND tgname LIKE 'lifecycle_soft_delete_guard%%'$$)
 GROUP BY success, result
UNION ALL
SELECT 'badges', success, result, count(*)
  FROM run_command_on_placements('badges', $$SELECT count(*) FROM pg_trigger WHERE tgrelid = '%s'::regclass
                                            AND tgname LIKE 'lifecycle_soft_delete_guard%%'$$)
 GROUP BY success, result;

-- A DELETE of every member through the coordinator: soft, on every shard.
\set QUIET off
DELETE FROM members WHERE id <= 20;
DELETE FROM members WHERE id <= 20;
\set QUIET on
SELECT count(*) AS live_members FROM members;
SELECT count(*) AS live_badges FROM badges;
SET lifecycle.include_deleted = on;
SELECT count(*) AS kept_members, count(deleted_at) AS deleted_members FROM members;
SELECT count(*) AS kept_badges, count(deleted_at) AS deleted_badges FROM badges;
RESET lifecycle.include_deleted;
-- A DELETE received by the worker that got the moved shard.
\c postgres - 127.0.0.1 :move_to
SET client_min_messages = warning;
\set QUIET off
DELETE FROM members WHERE id > 20;
\set QUIET on
SELECT count(*) AS live_members FROM members;
\c postgres - 127.0.0.1 :coord
SET client_min_messages = warning;
SET lifecycle.include_deleted = on;
SELECT count(*) AS kept_members, count(deleted_at) AS deleted_members FROM members;
SELECT count(*) AS kept_badges, count(deleted_at) AS deleted_badges FROM badges;
RESET lifecycle.include_deleted;
-- restore of members on the split and the moved shards, their badges with them
SELECT sum(lifecycle.restore('members', g)) AS restored FROM generate_series(1, 40) g;
SELECT count(*) AS live_members FROM members;
SELECT count(*) AS live_badges FROM badges;
DROP TABLE badges, members;
