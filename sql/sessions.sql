-- Sessions (SPEC §3): session_create/touch/end, sessions_end_user, the worker's
-- session_close and session_purge tasks, privileges, bad arguments.
SET client_min_messages = warning;   -- the same whether or not an earlier file created it
CREATE EXTENSION IF NOT EXISTS pg_lifecycle;
RESET client_min_messages;
\set SHOW_CONTEXT never

CREATE OR REPLACE FUNCTION err(sql text) RETURNS text LANGUAGE plpgsql AS $$
DECLARE st text; msg text; hnt text;
BEGIN
    EXECUTE sql;
    RETURN 'no error';
EXCEPTION WHEN OTHERS THEN
    GET STACKED DIAGNOSTICS st = RETURNED_SQLSTATE, msg = MESSAGE_TEXT, hnt = PG_EXCEPTION_HINT;
    RETURN concat_ws(' | ', st, msg, nullif(hnt, ''));
END $$;

-- A session: expires after ttl; no idle timeout unless asked.
SELECT lifecycle.session_create('alice', '1 hour', device_id => 'laptop', ip => '192.0.2.7',
                                user_agent => 'Firefox', mfa_verified => true) AS s1 \gset
SELECT user_id, device_id, ip, user_agent, mfa_verified, expires_at - created_at AS ttl,
       idle_timeout, idle_expires_at, ended_at, end_reason
  FROM lifecycle.sessions WHERE session_id = :'s1';

-- session_touch: true and slides last activity while live.
UPDATE lifecycle.sessions SET last_activity_at = now() - interval '5 minutes' WHERE session_id = :'s1';
BEGIN;
SELECT lifecycle.session_touch(:'s1');
SELECT last_activity_at = now() AS touched_now FROM lifecycle.sessions WHERE session_id = :'s1';
COMMIT;
SELECT lifecycle.session_touch('00000000-0000-0000-0000-000000000000');   -- unknown: false

-- Idle timeout: touch slides idle_expires_at; once idle too long, the session is
-- dead at once, before any sweep.
SELECT lifecycle.session_create('alice', '1 day', idle_timeout => '15 minutes') AS s2 \gset
SELECT idle_expires_at - last_activity_at AS idle_window FROM lifecycle.sessions WHERE session_id = :'s2';
UPDATE lifecycle.sessions SET last_activity_at = now() - interval '10 minutes',
                              idle_expires_at = now() + interval '5 minutes' WHERE session_id = :'s2';
BEGIN;
SELECT lifecycle.session_touch(:'s2');
SELECT idle_expires_at = now() + interval '15 minutes' AS slid FROM lifecycle.sessions WHERE session_id = :'s2';
COMMIT;
UPDATE lifecycle.sessions SET idle_expires_at = now() - interval '1 second' WHERE session_id = :'s2';
SELECT lifecycle.session_touch(:'s2') AS touch_idle;
SELECT ended_at IS NULL AS not_swept_yet FROM lifecycle.sessions WHERE session_id = :'s2';

-- Past expires_at: dead at once too.
SELECT lifecycle.session_create('bob', '1 hour') AS s3 \gset
UPDATE lifecycle.sessions SET expires_at = now() - interval '1 minute' WHERE session_id = :'s3';
SELECT lifecycle.session_touch(:'s3') AS touch_expired;

-- The sweep closes dead sessions at the moment they died, with the reason.
SELECT task, target, rows FROM lifecycle.run_maintenance() WHERE task LIKE 'session%';
SELECT session_id = :'s2' AS is_s2, end_reason,
       ended_at = least(expires_at, idle_expires_at) AS ended_when_it_died
  FROM lifecycle.sessions WHERE session_id IN (:'s2', :'s3') ORDER BY is_s2;
SELECT lifecycle.session_touch(:'s3') AS touch_closed;

-- session_end: true iff the session was live.
BEGIN;
SELECT lifecycle.session_end(:'s1') AS ended_live, lifecycle.session_end(:'s1') AS ended_again;
SELECT end_reason, ended_at = now() AS ended_now FROM lifecycle.sessions WHERE session_id = :'s1';
COMMIT;
SELECT lifecycle.session_create('carol', '1 hour') AS s4 \gset
SELECT lifecycle.session_end(:'s4', 'password_changed');
SELECT end_reason FROM lifecycle.sessions WHERE session_id = :'s4';
-- A dead but unswept session is closed for the reason it died, and reported not live.
SELECT lifecycle.session_create('carol', '1 hour') AS s5 \gset
UPDATE lifecycle.sessions SET expires_at = now() - interval '1 minute' WHERE session_id = :'s5';
SELECT lifecycle.session_end(:'s5');
SELECT end_reason FROM lifecycle.sessions WHERE session_id = :'s5';

-- sessions_end_user: ends every live session of a user, returns how many were live.
SELECT count(lifecycle.session_create('dave', '1 hour')) FROM generate_series(1, 3);
SELECT lifecycle.session_create('dave', '1 hour', idle_timeout => '1 minute') AS s6 \gset
UPDATE lifecycle.sessions SET idle_expires_at = now() - interval '1 second' WHERE session_id = :'s6';
SELECT lifecycle.session_create('erin', '1 hour') AS s7 \gset
SELECT lifecycle.sessions_end_user('dave');
SELECT end_reason, count(*) FROM lifecycle.sessions WHERE user_id = 'dave' GROUP BY end_reason ORDER BY 1;
SELECT lifecycle.sessions_end_user('dave', 'again');
SELECT lifecycle.sessions_end_user('nobody');
SELECT lifecycle.session_touch(:'s7') AS other_user_untouched;

-- Ended sessions stay as history for lifecycle.session_history_retention (30 days).
UPDATE lifecycle.sessions SET ended_at = now() - interval '31 days' WHERE session_id IN (:'s1', :'s4');
SELECT rows FROM lifecycle.run_maintenance() WHERE task = 'session_purge';
SELECT count(*) FILTER (WHERE session_id IN (:'s1', :'s4')) AS purged_left,
       count(*) AS total FROM lifecycle.sessions;

-- Bad arguments: clear errors, nothing changed.
SELECT count(*) AS before FROM lifecycle.sessions \gset
SELECT err($$SELECT lifecycle.session_create(NULL)$$);
SELECT err($$SELECT lifecycle.session_create('')$$);
SELECT err($$SELECT lifecycle.session_create('u', NULL)$$);
SELECT err($$SELECT lifecycle.session_create('u', '0')$$);
SELECT err($$SELECT lifecycle.session_create('u', '-1 day')$$);
SELECT err($$SELECT lifecycle.session_create('u', '1 day', idle_timeout => '0')$$);
SELECT err($$SELECT lifecycle.session_create('u', '1 day', mfa_verified => NULL)$$);
SELECT err($$SELECT lifecycle.session_create('u', '1 day', ip => 'not-an-ip')$$);
SELECT err($$SELECT lifecycle.session_touch(NULL)$$);
SELECT err($$SELECT lifecycle.session_touch('not-a-uuid')$$);
SELECT err($$SELECT lifecycle.session_end(NULL)$$);
SELECT err($$SELECT lifecycle.session_end('00000000-0000-0000-0000-000000000000', NULL)$$);
SELECT err($$SELECT lifecycle.sessions_end_user(NULL)$$);
SELECT err($$SELECT lifecycle.sessions_end_user('u', NULL)$$);
SELECT count(*) = :before AS unchanged FROM lifecycle.sessions;

-- Privileges: not for PUBLIC; an application role needs only EXECUTE, and
-- cannot read or change lifecycle.sessions directly.
CREATE ROLE session_app;
SET ROLE session_app;
SELECT err($$SELECT lifecycle.session_create('frank')$$);
RESET ROLE;
GRANT EXECUTE ON FUNCTION lifecycle.session_create(text, interval, interval, text, inet, text, boolean),
                          lifecycle.session_touch(uuid), lifecycle.session_end(uuid, text),
                          lifecycle.sessions_end_user(text, text) TO session_app;
SET ROLE session_app;
SELECT lifecycle.session_create('frank', '1 hour') AS s8 \gset
SELECT lifecycle.session_touch(:'s8'), lifecycle.session_end(:'s8', 'logout');
SELECT err($$SELECT count(*) FROM lifecycle.sessions$$);
SELECT err($$UPDATE lifecycle.sessions SET expires_at = 'infinity'$$);
RESET ROLE;
-- session_validate: touch and return the live session (no row when dead);
-- user_sessions: the user's live sessions, newest first.  Also for the app role.
GRANT EXECUTE ON FUNCTION lifecycle.session_validate(uuid), lifecycle.user_sessions(text) TO session_app;
SET ROLE session_app;
SELECT lifecycle.session_create('grace', '1 hour', idle_timeout => '10 minutes', device_id => 'phone',
                                mfa_verified => true) AS g1 \gset
SELECT lifecycle.session_create('grace', '1 hour', device_id => 'laptop') AS g2 \gset
SELECT user_id, device_id, mfa_verified, session_id = :'g1' AS same_id, expires_at > now() AS live
  FROM lifecycle.session_validate(:'g1');
SELECT device_id FROM lifecycle.user_sessions('grace');                  -- newest first
SELECT lifecycle.session_end(:'g2', 'logout');
SELECT count(*) AS validate_ended FROM lifecycle.session_validate(:'g2');
SELECT device_id FROM lifecycle.user_sessions('grace');
SELECT count(*) AS unknown FROM lifecycle.session_validate('00000000-0000-0000-0000-000000000000');
SELECT count(*) AS nobody FROM lifecycle.user_sessions('nobody');
RESET ROLE;
-- An idle session is dead for session_validate at once, as for session_touch.
UPDATE lifecycle.sessions SET last_activity_at = now() - interval '11 minutes',
                              idle_expires_at = now() - interval '1 minute' WHERE session_id = :'g1';
SELECT count(*) AS validate_idle FROM lifecycle.session_validate(:'g1');
SELECT count(*) AS listed_idle FROM lifecycle.user_sessions('grace');
REVOKE ALL ON FUNCTION lifecycle.session_create(text, interval, interval, text, inet, text, boolean),
                       lifecycle.session_touch(uuid), lifecycle.session_end(uuid, text),
                       lifecycle.sessions_end_user(text, text), lifecycle.session_validate(uuid),
                       lifecycle.user_sessions(text) FROM session_app;
DROP ROLE session_app;
DELETE FROM lifecycle.sessions;
