-- The pg_lifecycle walk-through run by `make demo`.
\pset footer off
\set VERBOSITY default
\echo
\echo '### Installing: one statement, everything lives in schema lifecycle'
\echo 'postgres=# CREATE EXTENSION pg_lifecycle;'
CREATE EXTENSION pg_lifecycle;
SELECT extname, extversion, extnamespace::regnamespace AS schema FROM pg_extension WHERE extname = 'pg_lifecycle';

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
