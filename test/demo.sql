-- The pg_lifecycle walk-through run by `make demo`.
\pset footer off
\set VERBOSITY default
\echo
\echo '### Installing: one statement, everything lives in schema lifecycle'
\echo 'postgres=# CREATE EXTENSION pg_lifecycle;'
CREATE EXTENSION pg_lifecycle;
SELECT extname, extversion, extnamespace::regnamespace AS schema FROM pg_extension WHERE extname = 'pg_lifecycle';

\echo
\echo '### 1. Soft delete: a plain DELETE keeps the row, reports it, hides it, cascades, and can be undone exactly'
CREATE TABLE users (id int PRIMARY KEY, email text NOT NULL);
CREATE TABLE posts (id int PRIMARY KEY, user_id int NOT NULL REFERENCES users ON DELETE CASCADE, title text);
CREATE TABLE comments (id int PRIMARY KEY, post_id int NOT NULL REFERENCES posts ON DELETE CASCADE, body text);
INSERT INTO users VALUES (1, 'ann@example.com'), (2, 'bob@example.com');
INSERT INTO posts VALUES (10, 1, 'Hello'), (11, 1, 'Again'), (20, 2, 'Bob here');
INSERT INTO comments VALUES (100, 10, 'nice'), (101, 11, 'spam'), (200, 20, 'hi');
SELECT lifecycle.soft_delete_enable(t) FROM unnest('{users,posts,comments}'::regclass[]) t;
\echo 'A moderator deletes one spam comment first:'
\set QUIET off
DELETE FROM comments WHERE id = 101;
\echo 'Then Ann deletes her account: the command tag says how many rows were soft-deleted, as ORMs check'
DELETE FROM users WHERE id = 1;
\set QUIET on
\echo 'Hidden everywhere:'
SELECT (SELECT count(*) FROM users) AS users, (SELECT count(*) FROM posts) AS posts,
       (SELECT count(*) FROM comments) AS comments;
\echo 'But kept, with one delete_event for the statement and its cascade (SET lifecycle.include_deleted = on):'
SET lifecycle.include_deleted = on;
SELECT 'users' AS tbl, id, deleted_by, delete_event FROM users WHERE deleted_at IS NOT NULL
UNION ALL SELECT 'posts', id, deleted_by, delete_event FROM posts WHERE deleted_at IS NOT NULL
UNION ALL SELECT 'comments', id, deleted_by, delete_event FROM comments WHERE deleted_at IS NOT NULL ORDER BY 4, 1, 2;
RESET lifecycle.include_deleted;
\echo 'Restoring Ann brings back exactly what her DELETE took — not the spam comment deleted earlier:'
SELECT lifecycle.restore('users', 1) AS rows_restored;
SELECT id, title FROM posts ORDER BY id;
SELECT id, body FROM comments ORDER BY id;

\echo
\echo '### 3. Expiry and sessions, swept by a background worker (here lifecycle.naptime = 1s)'
\echo 'A table of password-reset links; two expire in a second, one in an hour:'
CREATE TABLE password_resets (token text PRIMARY KEY, user_id text, expires_at timestamptz NOT NULL);
INSERT INTO password_resets VALUES ('r1', 'alice', now() + interval '1 second'),
                                   ('r2', 'bob',   now() + interval '1 second'),
                                   ('r3', 'carol', now() + interval '1 hour');
SELECT lifecycle.expire_enable('password_resets', 'expires_at');
\echo 'A session with a 2-second idle timeout:'
SELECT lifecycle.session_create('alice', ttl => '1 hour', idle_timeout => '2 seconds',
                                device_id => 'laptop', ip => '192.0.2.7') AS sid \gset
SELECT lifecycle.session_touch(:'sid') AS touch_while_active;
\echo '... 2.5 seconds without activity ...'
SELECT pg_sleep(2.5);
\echo 'The session is dead at once, swept or not:'
SELECT lifecycle.session_touch(:'sid') AS touch_after_idle;
\echo 'Waiting for the worker to sweep (it runs every naptime in every database with the extension):'
DO $$
BEGIN
    FOR i IN 1..50 LOOP
        EXIT WHEN NOT EXISTS (SELECT 1 FROM password_resets WHERE expires_at <= now())
              AND EXISTS (SELECT 1 FROM lifecycle.sessions WHERE ended_at IS NOT NULL);
        PERFORM pg_sleep(0.2);
    END LOOP;
END $$;
SELECT token, user_id FROM password_resets;
SELECT user_id, device_id, end_reason, ended_at - last_activity_at AS idle_for
  FROM lifecycle.sessions WHERE session_id = :'sid';
\echo 'What the worker did (lifecycle.job_runs), and its health report:'
SELECT task, target, rows, status FROM lifecycle.job_runs WHERE task <> 'pass' ORDER BY id;
SELECT jsonb_pretty(lifecycle.health() - 'last_pass' - 'naptime') AS health;
