-- Soft delete on a Citus cluster (coordinator + 2 workers): distributed and
-- reference tables, enabled before and after they are distributed.
\getenv w1 PG_LIFECYCLE_WORKER1
\getenv w2 PG_LIFECYCLE_WORKER2
\getenv coord PG_LIFECYCLE_COORDINATOR
SET client_min_messages = warning;
SELECT count(*) AS workers FROM pg_dist_node WHERE groupid > 0;

-- users: enabled after create_distributed_table; posts: enabled before
-- (colocated with users, ON DELETE CASCADE along the distribution column).
CREATE TABLE users (id bigint PRIMARY KEY, name text);
SELECT create_distributed_table('users', 'id', shard_count => 4);
SELECT lifecycle.soft_delete_enable('users');
CREATE TABLE posts (user_id bigint REFERENCES users (id) ON DELETE CASCADE, id bigint, title text,
                    PRIMARY KEY (user_id, id));
SELECT lifecycle.soft_delete_enable('posts');
SELECT create_distributed_table('posts', 'user_id', colocate_with => 'users');
-- countries: a reference table enabled before create_reference_table;
-- currencies: enabled after.
CREATE TABLE countries (code text PRIMARY KEY, name text);
SELECT lifecycle.soft_delete_enable('countries');
SELECT create_reference_table('countries');
CREATE TABLE currencies (code text PRIMARY KEY, name text);
SELECT create_reference_table('currencies');
SELECT lifecycle.soft_delete_enable('currencies');
SELECT tbl, hide FROM lifecycle.soft_delete_tables ORDER BY tbl::text;

INSERT INTO users SELECT g, 'user ' || g FROM generate_series(1, 20) g;
INSERT INTO posts SELECT u, p, 'post ' || u || '/' || p FROM generate_series(1, 20) u, generate_series(1, 3) p;
INSERT INTO countries VALUES ('fr', 'France'), ('de', 'Germany'), ('it', 'Italy');
INSERT INTO currencies VALUES ('eur', 'Euro'), ('chf', 'Swiss franc');

-- A single-shard DELETE through the coordinator: reported, kept, hidden, cascaded.
\set QUIET off
DELETE FROM users WHERE id = 1;
-- deleting it again is a no-op, not counted
DELETE FROM users WHERE id = 1;
-- a multi-shard DELETE (rows on both workers): one delete event for all
DELETE FROM users WHERE id BETWEEN 2 AND 9;
DELETE FROM users WHERE id BETWEEN 1 AND 10;
DELETE FROM countries WHERE code = 'fr';
DELETE FROM countries WHERE code IN ('fr', 'de');
DELETE FROM currencies;
\set QUIET on
SELECT count(*) AS live_users FROM users;
SELECT count(*) AS live_posts FROM posts;
SELECT count(*) AS visible_deleted FROM users WHERE deleted_at IS NOT NULL;
SELECT id FROM users WHERE id <= 11 ORDER BY id;
SELECT u.id, count(p.id) FROM users u LEFT JOIN posts p ON p.user_id = u.id WHERE u.id IN (1, 10, 11) GROUP BY u.id ORDER BY u.id;
SELECT code FROM countries ORDER BY code;
SELECT count(*) AS currencies FROM currencies;
-- the rows are all there, with one event per statement
SET lifecycle.include_deleted = on;
SELECT count(*) AS all_users, count(deleted_at) AS deleted_users, count(DISTINCT delete_event) AS events,
       count(*) FILTER (WHERE deleted_by = current_user) AS by_me FROM users;
SELECT count(*) AS all_posts, count(deleted_at) AS deleted_posts FROM posts;
SELECT count(*) AS posts_with_their_users_event
  FROM posts p JOIN users u ON u.id = p.user_id
 WHERE p.delete_event = u.delete_event AND p.deleted_at IS NOT NULL;
SELECT code, deleted_at IS NOT NULL AS deleted FROM countries ORDER BY code;
RESET lifecycle.include_deleted;

-- The shards themselves, read on each worker: the rows are there.
\c postgres - 127.0.0.1 :w1
SET citus.override_table_visibility = off;
SET client_min_messages = warning;
SELECT (SELECT count(*) FROM pg_class WHERE relname ~ '^users_[0-9]+$') > 0 AS has_user_shards;
\c postgres - 127.0.0.1 :coord
SET client_min_messages = warning;

-- restore brings back the row and what its event took along
SELECT lifecycle.restore('users', 1);
SELECT lifecycle.restore('users', '5');
SELECT lifecycle.restore('countries', 'fr'::text);
SELECT count(*) AS live_users FROM users;
SELECT count(*) AS live_posts FROM posts;
SELECT code FROM countries ORDER BY code;
SELECT lifecycle.restore('users', 1);

-- Updates do not reach hidden rows
UPDATE users SET name = 'renamed' WHERE id IN (1, 2);
SET lifecycle.include_deleted = on;
SELECT id, name FROM users WHERE id IN (1, 2) ORDER BY id;
RESET lifecycle.include_deleted;

-- Prepared statements
PREPARE del(bigint) AS DELETE FROM users WHERE id = $1;
\set QUIET off
EXECUTE del(11); EXECUTE del(11); EXECUTE del(12); EXECUTE del(13); EXECUTE del(14); EXECUTE del(15); EXECUTE del(16);
\set QUIET on
SELECT count(*) AS live_users FROM users;

-- A transaction: one event for everything it deletes
BEGIN;
DELETE FROM users WHERE id = 17;
DELETE FROM users WHERE id = 18;
COMMIT;
SET lifecycle.include_deleted = on;
SELECT count(DISTINCT delete_event) AS events FROM users WHERE id IN (17, 18);
RESET lifecycle.include_deleted;
