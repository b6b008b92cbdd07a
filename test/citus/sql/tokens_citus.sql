-- Refresh-token families on a Citus cluster: lifecycle.token_family_state and
-- lifecycle.token_chain distributed by family_id and colocated (every call
-- that names a token goes to one shard), the token functions through the
-- coordinator, and the worker's token_purge on every shard.
\getenv w1 PG_LIFECYCLE_WORKER1
\getenv coord PG_LIFECYCLE_COORDINATOR
SET client_min_messages = warning;

SELECT create_distributed_table('lifecycle.token_family_state', 'family_id', shard_count => 4);
SELECT create_distributed_table('lifecycle.token_chain', 'family_id', colocate_with => 'lifecycle.token_family_state');

CREATE ROLE tokens_app LOGIN;
GRANT EXECUTE ON FUNCTION lifecycle.token_family_create(text, text, interval, interval),
                          lifecycle.token_rotate(text, text), lifecycle.token_family_revoke(uuid, text),
                          lifecycle.token_families_revoke_user(text, text),
                          lifecycle.user_token_families(text) TO tokens_app;
SET ROLE tokens_app;
SELECT family_id AS f1, token AS t1 FROM lifecycle.token_family_create('u1', 'dev1') \gset
SELECT family_id AS f2, token AS t2 FROM lifecycle.token_family_create('u1', 'dev2', idle_timeout => '1 day') \gset
SELECT family_id AS f3, token AS t3 FROM lifecycle.token_family_create('u2', 'dev3') \gset
-- rotation, an idempotent retry within the grace window, the next rotation
SELECT status, generation, token AS t1b FROM lifecycle.token_rotate(:'t1', 'dev1') \gset
SELECT :'status' AS status, :generation AS generation;
SELECT status, generation, token = :'t1b' AS same_token FROM lifecycle.token_rotate(:'t1', 'dev1');
SELECT status, generation FROM lifecycle.token_rotate(:'t1b', 'dev1');
-- an older token again: the family is revoked
SELECT status, family_id = :'f1' AS same_family FROM lifecycle.token_rotate(:'t1', 'dev1');
SELECT status FROM lifecycle.token_rotate(:'t1b', 'dev1');
-- a rotation from another device: rotated, and a security event
SELECT status, generation FROM lifecycle.token_rotate(:'t2', 'dev2-new');
SELECT status FROM lifecycle.token_rotate('not-a-token');
SELECT device_fingerprint, generation FROM lifecycle.user_token_families('u1');
RESET ROLE;
SELECT event_type, severity, family_id = :'f1' AS f1, family_id = :'f2' AS f2
  FROM lifecycle.security_events ORDER BY id;
-- the idle expiry slid with the rotation (in UTC on Citus: a day is 24 hours)
SELECT idle_expires_at = last_used_at + interval '24 hours' AS slid
  FROM lifecycle.token_family_state WHERE family_id = :'f2';
SET ROLE tokens_app;
SELECT lifecycle.token_family_revoke(:'f2', 'logout') AS revoked;
SELECT lifecycle.token_family_revoke(:'f2', 'logout') AS revoked_again;
SELECT lifecycle.token_families_revoke_user('u2', 'password_changed') AS revoked;
SELECT count(*) AS live_u1 FROM lifecycle.user_token_families('u1');
RESET ROLE;
SELECT family_id = :'f1' AS f1, revoked_reason FROM lifecycle.token_families ORDER BY revoked_reason;

-- token_purge: families revoked longer ago than token_retention go, with their chains, on every shard
SELECT count(*) AS chain_rows FROM lifecycle.token_chain;
UPDATE lifecycle.token_family_state SET revoked_at = now() - interval '31 days' WHERE family_id IN (:'f1', :'f2');
SELECT task, rows FROM lifecycle.run_maintenance() WHERE task = 'token_purge';
SELECT count(*) AS families, count(*) FILTER (WHERE family_id = :'f3') AS f3 FROM lifecycle.token_families;
SELECT count(*) AS chain_rows FROM lifecycle.token_chain;
SELECT status FROM lifecycle.token_rotate(:'t2', 'dev2');
-- a worker node's own maintenance leaves the shards to the coordinator
\c postgres - 127.0.0.1 :w1
SET client_min_messages = warning;
SELECT task, rows FROM lifecycle.run_maintenance() WHERE task = 'token_purge';
\c postgres - 127.0.0.1 :coord
SET client_min_messages = warning;

DELETE FROM lifecycle.token_chain;
DELETE FROM lifecycle.token_family_state;
DELETE FROM lifecycle.security_events;
REVOKE ALL ON FUNCTION lifecycle.token_family_create(text, text, interval, interval),
                       lifecycle.token_rotate(text, text), lifecycle.token_family_revoke(uuid, text),
                       lifecycle.token_families_revoke_user(text, text),
                       lifecycle.user_token_families(text) FROM tokens_app;
DROP ROLE tokens_app;
