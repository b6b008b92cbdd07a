-- Sessions on a Citus cluster: lifecycle.sessions distributed by session_id
-- (every call that names a session goes to one shard), the session functions
-- through the coordinator, and the worker's session tasks on every shard.
\getenv w1 PG_LIFECYCLE_WORKER1
\getenv w2 PG_LIFECYCLE_WORKER2
\getenv coord PG_LIFECYCLE_COORDINATOR
SET client_min_messages = warning;

SELECT create_distributed_table('lifecycle.sessions', 'session_id', shard_count => 4);
SELECT partmethod, (SELECT count(*) FROM pg_dist_shard WHERE logicalrelid = 'lifecycle.sessions'::regclass) AS shards
  FROM pg_dist_partition WHERE logicalrelid = 'lifecycle.sessions'::regclass;

-- An application role with only the documented grants.
CREATE ROLE sessions_app LOGIN;
GRANT EXECUTE ON FUNCTION lifecycle.session_create(text, interval, interval, text, inet, text, boolean),
                          lifecycle.session_touch(uuid), lifecycle.session_end(uuid, text),
                          lifecycle.sessions_end_user(text, text), lifecycle.session_validate(uuid),
                          lifecycle.user_sessions(text) TO sessions_app;
SET ROLE sessions_app;
SELECT lifecycle.session_create('u1', idle_timeout => '30 minutes', device_id => 'phone') AS s1 \gset
SELECT lifecycle.session_create('u1', device_id => 'laptop', mfa_verified => true) AS s2 \gset
SELECT lifecycle.session_create('u1', ttl => '1 hour', idle_timeout => '1 day', device_id => 'tablet') AS s3 \gset
SELECT lifecycle.session_create('u2', device_id => 'desktop') AS s4 \gset
SELECT count(*) FROM lifecycle.sessions;  -- no privilege on the table itself
RESET ROLE;
-- sessions go to every shard (session ids are random: 40 of them)
SELECT count(lifecycle.session_create('u9')) FROM generate_series(1, 40);
SELECT count(DISTINCT get_shard_id_for_distribution_column('lifecycle.sessions', session_id)) AS shards_used
  FROM lifecycle.sessions;
DELETE FROM lifecycle.sessions WHERE user_id = 'u9';

SET ROLE sessions_app;
SELECT lifecycle.session_touch(:'s1') AS touched;
SELECT user_id, device_id, mfa_verified FROM lifecycle.session_validate(:'s2');
SELECT device_id FROM lifecycle.user_sessions('u1');
SELECT count(*) AS u2_sessions FROM lifecycle.user_sessions('u2');
RESET ROLE;
-- touching slides the idle expiry: idle_timeout after the last activity (in UTC on Citus)
SELECT device_id, idle_expires_at = last_activity_at + idle_timeout AS slid
  FROM lifecycle.sessions WHERE session_id IN (:'s1', :'s3') ORDER BY device_id;
SET ROLE sessions_app;
SELECT lifecycle.session_touch(:'s3') AS touched;
RESET ROLE;
SELECT idle_expires_at = last_activity_at + interval '24 hours' AS a_day_is_24_hours
  FROM lifecycle.sessions WHERE session_id = :'s3';

-- logout, and a session that is already over
SET ROLE sessions_app;
SELECT lifecycle.session_end(:'s2') AS ended;
SELECT lifecycle.session_end(:'s2') AS ended_again;
SELECT lifecycle.session_touch(:'s2') AS touched_after_logout;
SELECT count(*) AS validated_after_logout FROM lifecycle.session_validate(:'s2');
RESET ROLE;
-- s1 dies of idleness, s3 of its ttl: dead at once, before the worker sweeps them
UPDATE lifecycle.sessions SET idle_expires_at = now() - interval '1 minute' WHERE session_id = :'s1';
UPDATE lifecycle.sessions SET expires_at = now() - interval '1 minute' WHERE session_id = :'s3';
SET ROLE sessions_app;
SELECT lifecycle.session_touch(:'s1') AS idle_touched, lifecycle.session_touch(:'s3') AS expired_touched;
SELECT count(*) AS live_u1 FROM lifecycle.user_sessions('u1');
RESET ROLE;
SELECT lifecycle.health() -> 'backlog' -> 'dead_sessions' AS dead_sessions;

-- The coordinator's session_close closes them on their shards.
SELECT task, target, rows FROM lifecycle.run_maintenance() WHERE task LIKE 'session%' ORDER BY task;
SELECT device_id, end_reason, ended_at = least(expires_at, idle_expires_at) AS ended_when_it_died
  FROM lifecycle.sessions WHERE user_id = 'u1' ORDER BY device_id;
-- logout everywhere
SET ROLE sessions_app;
SELECT lifecycle.session_create('u2', device_id => 'phone') IS NOT NULL AS created;
SELECT lifecycle.sessions_end_user('u2', 'password_changed') AS ended;
SELECT lifecycle.sessions_end_user('u2', 'password_changed') AS ended_again;
RESET ROLE;
SELECT end_reason, count(*) FROM lifecycle.sessions WHERE user_id = 'u2' GROUP BY 1;

-- session_purge removes the history older than session_history_retention, on every shard
UPDATE lifecycle.sessions SET ended_at = now() - interval '31 days' WHERE user_id = 'u1' AND ended_at IS NOT NULL;
SELECT task, target, rows FROM lifecycle.run_maintenance() WHERE task LIKE 'session%' ORDER BY task;
SELECT user_id, count(*) FROM lifecycle.sessions GROUP BY 1 ORDER BY 1;
SELECT sum(result::int) AS rows_on_shards
  FROM run_command_on_placements('lifecycle.sessions', 'SELECT count(*) FROM %s');

-- A worker node's own maintenance leaves the shards to the coordinator.
\c postgres - 127.0.0.1 :w1
SET client_min_messages = warning;
SELECT task, rows FROM lifecycle.run_maintenance() WHERE task LIKE 'session%' ORDER BY task;
-- the shard function is the extension owner's
CREATE ROLE sessions_intruder LOGIN;
SET ROLE sessions_intruder;
SELECT lifecycle._sessions_shard('purge', 'lifecycle.sessions', '0');
RESET ROLE;
DROP ROLE sessions_intruder;
\c postgres - 127.0.0.1 :coord
SET client_min_messages = warning;

DELETE FROM lifecycle.sessions;
REVOKE ALL ON FUNCTION lifecycle.session_create(text, interval, interval, text, inet, text, boolean),
                       lifecycle.session_touch(uuid), lifecycle.session_end(uuid, text),
                       lifecycle.sessions_end_user(text, text), lifecycle.session_validate(uuid),
                       lifecycle.user_sessions(text) FROM sessions_app;
DROP ROLE sessions_app;
