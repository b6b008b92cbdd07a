-- Soft delete on Citus, continued: statements received by a worker, delete
-- events across nodes, hide => false, re-enabling, TRUNCATE, disabling, and
-- a join of a distributed table with a local soft-delete table.
\getenv w1 PG_LIFECYCLE_WORKER1
\getenv w2 PG_LIFECYCLE_WORKER2
\getenv coord PG_LIFECYCLE_COORDINATOR
SET client_min_messages = warning;
CREATE TABLE accounts (id bigint PRIMARY KEY, name text);
SELECT create_distributed_table('accounts', 'id', shard_count => 4);
SELECT lifecycle.soft_delete_enable('accounts');
CREATE TABLE sessions_log (account_id bigint REFERENCES accounts (id) ON DELETE CASCADE, id bigint, at text,
                           PRIMARY KEY (account_id, id));
SELECT create_distributed_table('sessions_log', 'account_id', colocate_with => 'accounts');
SELECT lifecycle.soft_delete_enable('sessions_log');
INSERT INTO accounts SELECT g, 'account ' || g FROM generate_series(1, 10) g;
INSERT INTO sessions_log SELECT a, s, 'x' FROM generate_series(1, 10) a, generate_series(1, 2) s;

-- A DELETE received by a worker (Citus syncs the metadata to the workers).
\c postgres - 127.0.0.1 :w1
SET client_min_messages = warning;
\set QUIET off
DELETE FROM accounts WHERE id = 1;
DELETE FROM accounts WHERE id = 1;
DELETE FROM accounts WHERE id IN (2, 3, 4, 5);
\set QUIET on
SELECT count(*) AS live_accounts FROM accounts;
SELECT count(*) AS live_sessions FROM sessions_log;
-- events drawn on worker 1 carry its group id above 2^48
SET lifecycle.include_deleted = on;
SELECT id, delete_event >> 48 = (SELECT groupid FROM pg_dist_local_group) AS workers_event
  FROM accounts WHERE id <= 5 ORDER BY id;
SELECT count(DISTINCT delete_event) AS events FROM sessions_log WHERE deleted_at IS NOT NULL;
RESET lifecycle.include_deleted;
-- the same rows, seen from worker 2 and from the coordinator
\c postgres - 127.0.0.1 :w2
SELECT count(*) AS live_accounts FROM accounts;
\c postgres - 127.0.0.1 :coord
SET client_min_messages = warning;
SELECT count(*) AS live_accounts FROM accounts;
-- a delete on the coordinator: its own event range (group 0)
DELETE FROM accounts WHERE id = 6;
SET lifecycle.include_deleted = on;
SELECT delete_event >> 48 AS group_of_event FROM accounts WHERE id = 6;
SELECT count(DISTINCT delete_event) AS distinct_events, count(*) AS deleted FROM accounts WHERE deleted_at IS NOT NULL;
RESET lifecycle.include_deleted;
-- restore, through the coordinator, of a row a worker deleted
SELECT lifecycle.restore('accounts', 2);
SELECT count(*) AS live_accounts FROM accounts;
SELECT count(*) AS live_sessions FROM sessions_log;

-- hide => false: deleted rows stay visible, a DELETE still counts only live rows
CREATE TABLE notes (id bigint PRIMARY KEY, body text);
SELECT create_distributed_table('notes', 'id', shard_count => 4);
SELECT lifecycle.soft_delete_enable('notes', hide => false);
INSERT INTO notes SELECT g, 'note' FROM generate_series(1, 6) g;
\set QUIET off
DELETE FROM notes WHERE id <= 3;
DELETE FROM notes WHERE id <= 4;
\set QUIET on
SELECT count(*) AS visible, count(deleted_at) AS deleted FROM notes;
-- enabled again with hide => true: every shard hides them
SELECT lifecycle.soft_delete_enable('notes');
SELECT count(*) AS visible FROM notes;
\c postgres - 127.0.0.1 :w2
SELECT count(*) AS visible_from_worker FROM notes;
\c postgres - 127.0.0.1 :coord
SET client_min_messages = warning;

-- TRUNCATE of a protected distributed table is refused (by each shard's trigger)
TRUNCATE notes;
SELECT count(*) AS still_there FROM notes;
-- disabled: DELETE is hard again
SELECT lifecycle.soft_delete_disable('notes');
\set QUIET off
DELETE FROM notes WHERE id = 6;
\set QUIET on
SET lifecycle.include_deleted = on;
SELECT count(*) AS rows_left FROM notes;
RESET lifecycle.include_deleted;

-- A local soft-delete table joined with a distributed one
CREATE TABLE labels (id bigint PRIMARY KEY, account_id bigint, name text);
SELECT lifecycle.soft_delete_enable('labels');
INSERT INTO labels VALUES (1, 7, 'a'), (2, 7, 'b'), (3, 8, 'c');
DELETE FROM labels WHERE id = 2;
SELECT a.id, count(l.id) AS labels FROM accounts a LEFT JOIN labels l ON l.account_id = a.id
 WHERE a.id IN (7, 8, 9) GROUP BY a.id ORDER BY a.id;
