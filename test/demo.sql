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

-- Demo fragment for test/demo.sql: refresh-token families (SPEC §2).
-- Shows a rotation, a replay, a detected reuse and the revoked family.
-- (Assumes CREATE EXTENSION pg_lifecycle has run.  Tokens are shown by their last 12 characters:
-- the first 22 encode the key id and the family id, the same for every token of a family.)
\echo
\echo '### 2. Refresh-token families: rotation, idempotent retries, reuse detection'
\echo 'Login: alice gets a token family on her laptop and its first refresh token:'
SELECT family_id AS fam, token AS t1 FROM lifecycle.token_family_create('alice', 'laptop') \gset
SELECT :'fam' AS family_id, '…' || right(:'t1', 12) AS token, length(:'t1') AS length;

\echo 'Her laptop refreshes: the token is rotated, generation 2:'
SELECT status, '…' || right(token, 12) AS new_token, generation FROM lifecycle.token_rotate(:'t1');
SELECT token AS t2 FROM lifecycle.token_rotate(:'t1') \gset

\echo 'A second tab (or a retry after a lost response) presents the old token again, within'
\echo 'lifecycle.token_reuse_grace (10s): it is replayed — the SAME new token, no logout:'
SELECT status, '…' || right(token, 12) AS token, token = :'t2' AS same_as_the_rotation, generation
  FROM lifecycle.token_rotate(:'t1');

\echo 'The laptop keeps going: t2 -> t3.'
SELECT token AS t3 FROM lifecycle.token_rotate(:'t2') \gset

\echo 'An attacker who copied t1 earlier presents it now. t1 is two generations old: reuse.'
\echo 'token_rotate returns the outcome (it does not raise), so the revocation commits:'
SELECT status, user_id, token, generation FROM lifecycle.token_rotate(:'t1');

\echo 'The whole family is revoked, so the laptop''s current token t3 no longer works either:'
SELECT status FROM lifecycle.token_rotate(:'t3');
SELECT user_id, device_fingerprint, generation, revoked_reason FROM lifecycle.token_families WHERE family_id = :'fam';
\echo 'and the security event says what happened:'
SELECT event_type, severity, user_id, detail->>'cause' AS cause,
       detail->'presented_generation' AS presented, detail->'current_generation' AS current
  FROM lifecycle.security_events WHERE family_id = :'fam';

\echo 'Nothing stored lets anyone present a token: the tables hold nonces, the MAC needs the server key'
\echo '($PGDATA/pg_lifecycle_token.key, created on first use); token_keys() shows its fingerprint only:'
SELECT key_id, fingerprint, state FROM lifecycle.token_keys();
\echo '"Log out everywhere" after a password change revokes every live family of a user:'
SELECT count(*) AS new_families FROM unnest(ARRAY['phone', 'tablet']) d, LATERAL lifecycle.token_family_create('alice', d);
SELECT lifecycle.token_families_revoke_user('alice', 'password_changed') AS revoked;

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

-- make demo, §4: exact pagination counts.  (Runs after CREATE EXTENSION pg_lifecycle;
-- the worker folds count deltas every lifecycle.naptime.)
\echo
\echo '### 4. Exact pagination counts'
\echo 'An audit log of 2,000,000 rows over 2024 (the seeds'' user_actions), counted by outcome and action type:'
CREATE TABLE audit_log (
    id          bigserial PRIMARY KEY,
    created_at  timestamptz NOT NULL DEFAULT now(),
    user_id     text NOT NULL,
    action_type text NOT NULL,
    outcome     text NOT NULL
);
INSERT INTO audit_log (created_at, user_id, action_type, outcome)
SELECT '2024-01-01 00:00+00'::timestamptz + (g / 2000000.0) * interval '366 days', 'u-' || (g % 1000),
       (ARRAY['GET', 'POST', 'PUT', 'DELETE'])[1 + g % 4],
       CASE WHEN g % 10 < 8 THEN 'success' WHEN g % 10 = 8 THEN 'error' ELSE 'permission_denied' END
  FROM generate_series(1, 2000000) g;
CREATE INDEX ON audit_log (created_at);
VACUUM ANALYZE audit_log;
SELECT lifecycle.count_enable('audit_log', '{outcome,action_type}', 'created_at', '1 hour');

-- count and count(*) side by side, each timed on the server (clock_timestamp).
CREATE FUNCTION pg_temp.side_by_side(filter jsonb, cond text, since timestamptz DEFAULT NULL,
                                     until timestamptz DEFAULT NULL)
RETURNS TABLE ("lifecycle.count" bigint, count_ms numeric, "count(*)" bigint, count_star_ms numeric)
LANGUAGE plpgsql AS $$
DECLARE t0 timestamptz; q text := 'SELECT count(*) FROM audit_log WHERE ' || cond;
BEGIN
    IF since IS NOT NULL THEN q := q || format(' AND created_at >= %L', since); END IF;
    IF until IS NOT NULL THEN q := q || format(' AND created_at < %L', until); END IF;
    PERFORM lifecycle.count('audit_log', filter, since, until);       -- warm
    t0 := clock_timestamp();
    "lifecycle.count" := lifecycle.count('audit_log', filter, since, until);
    count_ms := round((extract(epoch FROM clock_timestamp() - t0) * 1000)::numeric, 3);
    t0 := clock_timestamp();
    EXECUTE q INTO "count(*)";
    count_star_ms := round((extract(epoch FROM clock_timestamp() - t0) * 1000)::numeric, 3);
    RETURN NEXT;
END $$;

\echo
\echo 'The paginated list of failed POSTs, and its total (meta.total), exact:'
\echo '  SELECT lifecycle.count(''audit_log'', ''{"outcome": ["error", "permission_denied"], "action_type": "POST"}'')'
SELECT * FROM pg_temp.side_by_side('{"outcome": ["error", "permission_denied"], "action_type": "POST"}',
                                   $$outcome IN ('error', 'permission_denied') AND action_type = 'POST'$$);
\echo 'The same over a time range whose edges are not on bucket boundaries (March 2024):'
SELECT * FROM pg_temp.side_by_side('{"outcome": "error"}', $$outcome = 'error'$$,
                                   '2024-03-01 00:17:23+00', '2024-03-31 05:41:07+00');

\echo
\echo 'Exact in the caller''s transaction: an uncommitted insert is counted here, and nowhere else;'
\echo 'after ROLLBACK it never was.'
BEGIN;
INSERT INTO audit_log (created_at, user_id, action_type, outcome)
SELECT '2024-03-15 12:00+00', 'u-1', 'POST', 'error' FROM generate_series(1, 3);
SELECT * FROM pg_temp.side_by_side('{"outcome": "error", "action_type": "POST"}', $$outcome = 'error' AND action_type = 'POST'$$);
ROLLBACK;
SELECT * FROM pg_temp.side_by_side('{"outcome": "error", "action_type": "POST"}', $$outcome = 'error' AND action_type = 'POST'$$);

\echo
\echo 'Writers append deltas; the worker folds them into the summaries (lifecycle.job_runs):'
SELECT format('lifecycle.count_%s_delta', id) AS delta FROM lifecycle.count_tables WHERE tbl = 'audit_log'::regclass \gset
UPDATE audit_log SET outcome = 'error' WHERE id % 1000 = 1;
SELECT count(*) AS unfolded_deltas FROM :delta;
SELECT format($$DO 'BEGIN FOR i IN 1..100 LOOP EXIT WHEN NOT EXISTS (SELECT 1 FROM %s); PERFORM pg_sleep(0.1); END LOOP; END'$$, :'delta') \gexec
SELECT count(*) AS unfolded_deltas_after_a_pass FROM :delta;
SELECT * FROM pg_temp.side_by_side('{"outcome": "error"}', $$outcome = 'error'$$);

\echo
\echo 'A filter on something that is not a dimension: the planner''s estimate instead of a scan.'
SELECT lifecycle.count_estimate($$SELECT 1 FROM audit_log WHERE user_id = 'u-42'$$) AS estimate,
       (SELECT count(*) FROM audit_log WHERE user_id = 'u-42') AS exact;
\echo 'And a key that is not a dimension is an error that names them:'
\set ON_ERROR_STOP 0
SELECT lifecycle.count('audit_log', '{"user_id": "u-42"}');
\set ON_ERROR_STOP 1
