-- Refresh-token families (SPEC §2): token_family_create, token_rotate (every
-- status), token_family_revoke, token_families_revoke_user, security_events,
-- the reuse grace and retention settings, the token_purge task, the server key,
-- storage (no table holds a token), privileges, bad arguments.
-- Tokens, uuids and times are never printed: statuses, booleans, counts.
SET client_min_messages = warning;   -- the same whether or not an earlier file created it
CREATE EXTENSION IF NOT EXISTS pg_lifecycle;
RESET client_min_messages;
\set SHOW_CONTEXT never

CREATE FUNCTION tokens_err(sql text) RETURNS text LANGUAGE plpgsql AS $$
DECLARE st text; msg text; hnt text;
BEGIN
    EXECUTE sql;
    RETURN 'no error';
EXCEPTION WHEN OTHERS THEN
    GET STACKED DIAGNOSTICS st = RETURNED_SQLSTATE, msg = MESSAGE_TEXT, hnt = PG_EXCEPTION_HINT;
    RETURN concat_ws(' | ', st, msg, nullif(hnt, ''));
END $$;

-- The relations: lifecycle.token_families has exactly the SPEC columns.
SELECT attname, format_type(atttypid, atttypmod) FROM pg_attribute
 WHERE attrelid = 'lifecycle.token_families'::regclass AND attnum > 0 ORDER BY attnum;
SELECT attname, format_type(atttypid, atttypmod) FROM pg_attribute
 WHERE attrelid = 'lifecycle.security_events'::regclass AND attnum > 0 AND NOT attisdropped ORDER BY attnum;
SHOW lifecycle.token_reuse_grace;
SHOW lifecycle.token_retention;
-- A generous grace window, so that a slow machine cannot turn a replay below into reuse.
SET lifecycle.token_reuse_grace = '10min';

------------------------------------------------------------------------------
-- token_family_create: a family at generation 1 and its first token.
------------------------------------------------------------------------------
SELECT family_id AS f1, token AS a1, statement_timestamp() AS t_created
  FROM lifecycle.token_family_create('tok-alice', 'laptop', '1 day') \gset
SELECT length(:'a1') AS token_length, :'a1' ~ '^[A-Za-z0-9_-]+$' AS url_safe;
SELECT user_id, device_fingerprint, generation, expires_at - created_at AS ttl, last_used_at = created_at AS unused,
       created_at = :'t_created' AS created_then, revoked_at, revoked_reason
  FROM lifecycle.token_families WHERE family_id = :'f1';
-- The default ttl is 30 days; the device is optional.
SELECT family_id AS f0 FROM lifecycle.token_family_create('tok-alice') \gset
SELECT device_fingerprint, expires_at - created_at AS ttl FROM lifecycle.token_families WHERE family_id = :'f0';
-- Every token is distinct (128 random bits from pg_strong_random per token).
SELECT count(DISTINCT token) AS distinct_tokens, count(DISTINCT family_id) AS families
  FROM generate_series(1, 20) g, LATERAL lifecycle.token_family_create('tok-many-' || g);

------------------------------------------------------------------------------
-- token_rotate: rotated, replayed, reuse_detected, revoked, expired, invalid.
------------------------------------------------------------------------------
-- rotated: the current token gives a new one, generation + 1.
SELECT status, family_id = :'f1' AS same_family, user_id, token <> :'a1' AS new_token, generation,
       statement_timestamp() AS t_rotated
  FROM lifecycle.token_rotate(:'a1') \gset
SELECT :'status' AS status, :'same_family' AS same_family, :'user_id' AS user_id, :'new_token' AS new_token,
       :'generation' AS generation;
SELECT token AS a2 FROM lifecycle.token_rotate(:'a1') \gset
-- (that was a replay of a1: a2 is the token the rotation above returned)
SELECT generation, last_used_at = :'t_rotated' AS used_at_rotation FROM lifecycle.token_families WHERE family_id = :'f1';

-- replayed: the previous token, within the grace window, gives the same new
-- token again (a lost response, another tab) — as often as it is retried.
SELECT status, token = :'a2' AS same_token, generation FROM lifecycle.token_rotate(:'a1');
SELECT status, token = :'a2' AS same_token, generation FROM lifecycle.token_rotate(:'a1');
SELECT generation FROM lifecycle.token_families WHERE family_id = :'f1';

-- The new token rotates on; its predecessor is now the one replayable token.
SELECT token AS a3 FROM lifecycle.token_rotate(:'a2') \gset
SELECT status, token = :'a3' AS same_token, generation FROM lifecycle.token_rotate(:'a2');

-- reuse_detected (replay after grace): the previous token once the grace
-- window has passed revokes the whole family; the status is returned, not
-- raised, so the revocation commits with the caller's transaction.
UPDATE lifecycle.token_family_state SET rotated_at = rotated_at - interval '11 minutes' WHERE family_id = :'f1';
BEGIN;
SELECT status, family_id = :'f1' AS same_family, user_id, token, generation FROM lifecycle.token_rotate(:'a2');
COMMIT;
SELECT generation, revoked_at IS NOT NULL AS revoked, revoked_reason FROM lifecycle.token_families WHERE family_id = :'f1';
SELECT event_type, severity, user_id, family_id = :'f1' AS same_family, detail - 'seconds_since_rotation' AS detail,
       (detail->>'seconds_since_rotation')::float8 >= 660 AS after_grace
  FROM lifecycle.security_events WHERE family_id = :'f1' ORDER BY id;

-- revoked: every token of a revoked family, current or not; revocation never
-- reopens the replay of the previous token.
SELECT status, token, generation FROM lifecycle.token_rotate(:'a3');
SELECT status, token, generation FROM lifecycle.token_rotate(:'a2');
SELECT status, token, generation FROM lifecycle.token_rotate(:'a1');
SELECT count(*) AS events FROM lifecycle.security_events WHERE family_id = :'f1';

-- reuse_detected (older ancestor): any token older than the previous one,
-- even within the grace window.
SELECT family_id AS f2, token AS b1 FROM lifecycle.token_family_create('tok-bob', 'phone') \gset
SELECT token AS b2 FROM lifecycle.token_rotate(:'b1') \gset
SELECT token AS b3 FROM lifecycle.token_rotate(:'b2') \gset
SELECT status, generation FROM lifecycle.token_rotate(:'b1');
SELECT revoked_reason FROM lifecycle.token_families WHERE family_id = :'f2';
SELECT event_type, severity, detail - 'seconds_since_rotation' AS detail
  FROM lifecycle.security_events WHERE family_id = :'f2' ORDER BY id;
SELECT status FROM lifecycle.token_rotate(:'b3');

-- The revocation is part of the caller's transaction: rolled back with it, it
-- did not happen (a caller that wants it kept commits, since nothing is raised).
SELECT family_id AS f3, token AS c1 FROM lifecycle.token_family_create('tok-carol') \gset
SELECT token AS c2 FROM lifecycle.token_rotate(:'c1') \gset
SELECT token AS c3 FROM lifecycle.token_rotate(:'c2') \gset
BEGIN;
SELECT status FROM lifecycle.token_rotate(:'c1');
ROLLBACK;
SELECT revoked_reason, (SELECT count(*) FROM lifecycle.security_events WHERE family_id = :'f3') AS events
  FROM lifecycle.token_families WHERE family_id = :'f3';
-- Nor does it raise inside a caller's plpgsql block.
SELECT set_config('tokens.c1', :'c1', false) IS NOT NULL AS set;
DO $$
DECLARE r record;
BEGIN
    SELECT * INTO r FROM lifecycle.token_rotate(current_setting('tokens.c1'));
    RAISE NOTICE 'status %, token %', r.status, coalesce(r.token, 'NULL');
END $$;
SELECT revoked_reason FROM lifecycle.token_families WHERE family_id = :'f3';

-- A rotation that rolled back issued nothing: its token is invalid, and the
-- token it was given is still current.
SELECT family_id AS f4, token AS d1 FROM lifecycle.token_family_create('tok-dave') \gset
BEGIN;
SELECT token AS d_lost FROM lifecycle.token_rotate(:'d1') \gset
ROLLBACK;
SELECT status FROM lifecycle.token_rotate(:'d_lost');
SELECT status, token <> :'d_lost' AS another_token, generation FROM lifecycle.token_rotate(:'d1');
-- ... also once the family has moved on past that generation.
SELECT token AS d2 FROM lifecycle.token_rotate(:'d1') \gset
SELECT token AS d3 FROM lifecycle.token_rotate(:'d2') \gset
SELECT status FROM lifecycle.token_rotate(:'d_lost');
SELECT revoked_at IS NULL AS live FROM lifecycle.token_families WHERE family_id = :'f4';

-- Inside one transaction, a retry of the token just rotated is a replay.
BEGIN;
SELECT token AS d4 FROM lifecycle.token_rotate(:'d3') \gset
SELECT status, token = :'d4' AS same_token FROM lifecycle.token_rotate(:'d3');
COMMIT;

-- expired: a family past expires_at, whichever of its tokens is presented.
SELECT family_id AS f5, token AS e1 FROM lifecycle.token_family_create('tok-erin', ttl => '1 hour') \gset
SELECT token AS e2 FROM lifecycle.token_rotate(:'e1') \gset
UPDATE lifecycle.token_family_state SET expires_at = now() - interval '1 second' WHERE family_id = :'f5';
SELECT status, family_id = :'f5' AS same_family, user_id, token, generation FROM lifecycle.token_rotate(:'e2');
SELECT status FROM lifecycle.token_rotate(:'e1');
SELECT revoked_at IS NULL AS not_revoked FROM lifecycle.token_families WHERE family_id = :'f5';

-- invalid: anything that is not a token this server issued — never an error.
SELECT t AS presented, status, family_id, user_id, token, generation
  FROM unnest(ARRAY['', 'garbage', repeat('A', 66), repeat('A', 65), repeat('A', 67),
                    'not/url+safe==']) t, LATERAL lifecycle.token_rotate(t);
-- One character changed anywhere in a valid token: the key id, the family,
-- the nonce, or the MAC.
WITH flips AS (
    SELECT pos, overlay(:'d4' placing CASE WHEN substr(:'d4', pos, 1) = 'A' THEN 'B' ELSE 'A' END
                        from pos for 1) AS t
      FROM unnest(ARRAY[1, 2, 10, 30, 40, 50, 60, 65]) pos)
SELECT pos, status FROM flips, LATERAL lifecycle.token_rotate(t) ORDER BY pos;
-- The last character carries 4 unused bits: a non-canonical spelling is invalid too.
SELECT status FROM lifecycle.token_rotate(left(:'d4', 65) ||
    CASE WHEN right(:'d4', 1) IN ('A', 'Q', 'g', 'w') THEN chr(ascii(right(:'d4', 1)) + 1)
         ELSE chr(ascii(right(:'d4', 1)) - 1) END);
SELECT status, generation FROM lifecycle.token_rotate(:'d4');   -- untouched by all that

------------------------------------------------------------------------------
-- The device fingerprint: recorded on rotation; a change is a security event
-- (the rotation still succeeds: fingerprints are client-reported).
------------------------------------------------------------------------------
SELECT family_id AS f6, token AS g1 FROM lifecycle.token_family_create('tok-gina', 'laptop') \gset
SELECT token AS g2 FROM lifecycle.token_rotate(:'g1', 'laptop') \gset
SELECT token AS g3 FROM lifecycle.token_rotate(:'g2') \gset
SELECT status FROM lifecycle.token_rotate(:'g3', 'phone');
SELECT device_fingerprint, generation FROM lifecycle.token_families WHERE family_id = :'f6';
SELECT event_type, severity, detail FROM lifecycle.security_events WHERE family_id = :'f6' ORDER BY id;

------------------------------------------------------------------------------
-- token_family_revoke and token_families_revoke_user.
------------------------------------------------------------------------------
SELECT family_id AS h1, token AS h1t FROM lifecycle.token_family_create('tok-hank', 'laptop') \gset
SELECT family_id AS h2, token AS h2t FROM lifecycle.token_family_create('tok-hank', 'phone') \gset
SELECT family_id AS h3, token AS h3t FROM lifecycle.token_family_create('tok-hank', 'tablet') \gset
SELECT family_id AS h4 FROM lifecycle.token_family_create('tok-hank', 'old', '1 hour') \gset
UPDATE lifecycle.token_family_state SET expires_at = now() - interval '1 second' WHERE family_id = :'h4';
-- true iff the family was live; the reason is recorded.
SELECT lifecycle.token_family_revoke(:'h1', 'logout') AS revoked,
       lifecycle.token_family_revoke(:'h1', 'logout') AS again,
       lifecycle.token_family_revoke(:'h4', 'logout') AS expired_one,
       lifecycle.token_family_revoke('00000000-0000-0000-0000-000000000000', 'logout') AS unknown;
SELECT device_fingerprint, revoked_reason FROM lifecycle.token_families WHERE user_id = 'tok-hank' ORDER BY created_at, device_fingerprint;
SELECT status FROM lifecycle.token_rotate(:'h1t');
-- Every live family of a user, as one bulk revocation recorded in security_events.
SELECT family_id AS i1 FROM lifecycle.token_family_create('tok-ivan') \gset
SELECT lifecycle.token_families_revoke_user('tok-hank', 'password_changed') AS revoked;
SELECT device_fingerprint, revoked_reason FROM lifecycle.token_families WHERE user_id = 'tok-hank' ORDER BY created_at, device_fingerprint;
SELECT event_type, severity, family_id, detail->>'reason' AS reason, detail->'families' AS families,
       jsonb_array_length(detail->'family_ids') AS listed,
       detail->'family_ids' @> to_jsonb(ARRAY[:'h2', :'h3']) AS lists_them
  FROM lifecycle.security_events WHERE user_id = 'tok-hank' ORDER BY id;
SELECT status FROM lifecycle.token_rotate(:'h2t');
SELECT lifecycle.token_families_revoke_user('tok-hank', 'again') AS revoked_again,
       lifecycle.token_families_revoke_user('tok-nobody', 'x') AS unknown_user;
SELECT count(*) AS bulk_events FROM lifecycle.security_events WHERE event_type = 'token_families_revoked'
   AND user_id IN ('tok-hank', 'tok-nobody');
SELECT revoked_at IS NULL AS other_user_live FROM lifecycle.token_families WHERE family_id = :'i1';

------------------------------------------------------------------------------
-- lifecycle.token_reuse_grace: '0' replays only presentations concurrent
-- with the rotation (see the isolation tests), so a retry is reuse.
------------------------------------------------------------------------------
SET lifecycle.token_reuse_grace = '0';
SELECT family_id AS j1, token AS j1t FROM lifecycle.token_family_create('tok-judy') \gset
SELECT token AS j2t FROM lifecycle.token_rotate(:'j1t') \gset
SELECT status FROM lifecycle.token_rotate(:'j1t');
SELECT detail->>'cause' AS cause, detail->'grace_seconds' AS grace_seconds FROM lifecycle.security_events WHERE family_id = :'j1';
SET lifecycle.token_reuse_grace = '1 hour';
SELECT family_id AS j2, token AS k1t FROM lifecycle.token_family_create('tok-judy') \gset
SELECT token AS k2t FROM lifecycle.token_rotate(:'k1t') \gset
UPDATE lifecycle.token_family_state SET rotated_at = rotated_at - interval '59 minutes' WHERE family_id = :'j2';
SELECT status, token = :'k2t' AS same_token FROM lifecycle.token_rotate(:'k1t');
RESET lifecycle.token_reuse_grace;
SHOW lifecycle.token_reuse_grace;
SET lifecycle.token_reuse_grace = '10min';
SELECT tokens_err($$SET lifecycle.token_reuse_grace = '-1s'$$);
SELECT tokens_err($$SET lifecycle.token_reuse_grace = 'soon'$$);
SELECT tokens_err($$SET lifecycle.token_retention = '1 day'$$);        -- a server-wide setting (sighup)
ALTER SYSTEM SET lifecycle.token_retention = '0';
-- Only a superuser sets the grace window (PGC_SUSET): an application cannot widen it.
CREATE ROLE tokens_nobody;
SET ROLE tokens_nobody;
SELECT tokens_err($$SET lifecycle.token_reuse_grace = '1 year'$$);
RESET ROLE;

------------------------------------------------------------------------------
-- Retention: the worker's token_purge task removes revoked and expired
-- families (and their token chains) once dead for lifecycle.token_retention.
------------------------------------------------------------------------------
UPDATE lifecycle.token_family_state SET revoked_at = now() - interval '31 days' WHERE family_id IN (:'f1', :'h1');
UPDATE lifecycle.token_family_state SET expires_at = now() - interval '31 days' WHERE family_id = :'f5';
UPDATE lifecycle.token_family_state SET revoked_at = now() - interval '29 days' WHERE family_id = :'f2';
SELECT task, target, rows FROM lifecycle.run_maintenance() WHERE task = 'token_purge';
SELECT count(*) FILTER (WHERE family_id IN (:'f1', :'h1', :'f5')) AS purged_left,
       count(*) FILTER (WHERE family_id = :'f2') AS recent_kept
  FROM lifecycle.token_families;
SELECT count(*) AS chain_left FROM lifecycle.token_chain WHERE family_id IN (:'f1', :'h1', :'f5');
SELECT status, family_id, user_id FROM lifecycle.token_rotate(:'a3');   -- its family is gone: invalid
SELECT rows FROM lifecycle.run_maintenance() WHERE task = 'token_purge';

------------------------------------------------------------------------------
-- Storage: no table holds an issued token, nor its MAC (the part only the
-- server key can compute).  Every table of the schema is searched as text.
------------------------------------------------------------------------------
SELECT family_id AS s1, token AS s1t FROM lifecycle.token_family_create('tok-sam') \gset
SELECT token AS s2t FROM lifecycle.token_rotate(:'s1t') \gset
-- tokens_found(needle): rows of any table of schema lifecycle whose text contains needle.
CREATE FUNCTION tokens_found(needle text) RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE
    t regclass;
    n bigint;
    total bigint := 0;
BEGIN
    FOR t IN SELECT c.oid FROM pg_class c WHERE c.relnamespace = 'lifecycle'::regnamespace AND c.relkind = 'r' LOOP
        EXECUTE format('SELECT count(*) FROM %s x WHERE strpos(x::text, $1) > 0', t) INTO n USING needle;
        total := total + n;
    END LOOP;
    RETURN total;
END $$;
-- Bytes [from, from + 15] of a token's 49 (key id 1, family 2-17, nonce 18-33,
-- MAC 34-49), in hex as bytea shows them.
CREATE FUNCTION tokens_part(tok text, from_byte int) RETURNS text LANGUAGE sql AS $$
    SELECT encode(substr(decode(translate(tok, '-_', '+/') || '==', 'base64'), from_byte, 16), 'hex')
$$;
SELECT tokens_found(:'s1t') AS first_token, tokens_found(tokens_part(:'s1t', 34)) AS its_mac,
       tokens_found(:'s2t') AS second_token, tokens_found(tokens_part(:'s2t', 34)) AS its_mac;
-- (the search finds what is there: the family id, and the nonces)
SELECT tokens_found(:'s1') > 0 AS family_id_found, tokens_found(tokens_part(:'s1t', 18)) > 0 AS nonce_found,
       tokens_part(:'s1t', 2) = replace(:'s1', '-', '') AS token_names_its_family;

------------------------------------------------------------------------------
-- The server key: $PGDATA/pg_lifecycle_token.key, created on first use.
-- token_keys() lists it (fingerprint, never the key); token_key_rotate() adds a
-- minting key — earlier tokens still verify — or, with retire_old, also
-- retires every other key, invalidating every token issued so far.
------------------------------------------------------------------------------
SELECT count(*) FILTER (WHERE state = 'minting') AS minting_keys,
       bool_and(fingerprint ~ '^[0-9a-f]{16}$' OR state = 'retired') AS fingerprints_look_right
  FROM lifecycle.token_keys();
SELECT key_id AS k0 FROM lifecycle.token_keys() WHERE state = 'minting' \gset
SELECT lifecycle.token_key_rotate() = :k0 + 1 AS new_key;
SELECT key_id - :k0 AS key, state FROM lifecycle.token_keys() WHERE key_id >= :k0 ORDER BY key_id;
SELECT status FROM lifecycle.token_rotate(:'s2t');                      -- issued with the old key: still valid
SELECT token AS s3t FROM lifecycle.token_rotate(:'s2t') \gset
SELECT status, token = :'s3t' AS same_token FROM lifecycle.token_rotate(:'s2t');  -- replays the new-key token
SELECT family_id AS s2, token AS n1t FROM lifecycle.token_family_create('tok-sam') \gset
SELECT count(*) AS recorded FROM lifecycle.token_key_fingerprints WHERE key_id IN (:k0, :k0 + 1);
SELECT lifecycle.token_key_rotate(retire_old => true) = :k0 + 2 AS new_key;
SELECT key_id - :k0 AS key, state, fingerprint IS NULL AS no_fingerprint
  FROM lifecycle.token_keys() WHERE key_id >= :k0 ORDER BY key_id;
SELECT status FROM lifecycle.token_rotate(:'s3t');   -- issued under a retired key
SELECT status FROM lifecycle.token_rotate(:'n1t');
SELECT family_id AS s3, token AS m1t FROM lifecycle.token_family_create('tok-sam') \gset
SELECT status FROM lifecycle.token_rotate(:'m1t');
SELECT tokens_err($$SELECT lifecycle.token_key_rotate(NULL)$$);

------------------------------------------------------------------------------
-- Bad arguments: clear errors (22004 NULL, 22023 bad value), nothing changed.
------------------------------------------------------------------------------
SELECT (SELECT count(*) FROM lifecycle.token_family_state) AS families_before,
       (SELECT count(*) FROM lifecycle.security_events) AS events_before \gset
SELECT tokens_err($$SELECT * FROM lifecycle.token_family_create(NULL)$$);
SELECT tokens_err($$SELECT * FROM lifecycle.token_family_create('')$$);
SELECT tokens_err($$SELECT * FROM lifecycle.token_family_create('u', '')$$);
SELECT tokens_err($$SELECT * FROM lifecycle.token_family_create('u', NULL, NULL)$$);
SELECT tokens_err($$SELECT * FROM lifecycle.token_family_create('u', NULL, '0')$$);
SELECT tokens_err($$SELECT * FROM lifecycle.token_family_create('u', NULL, '-1 day')$$);
SELECT tokens_err($$SELECT * FROM lifecycle.token_family_create('u', NULL, 'forever')$$);
SELECT tokens_err($$SELECT * FROM lifecycle.token_rotate(NULL)$$);
SELECT tokens_err(format('SELECT * FROM lifecycle.token_rotate(%L, %L)', :'m1t', ''));
SELECT tokens_err($$SELECT * FROM lifecycle.token_rotate(NULL, 'laptop')$$);
SELECT tokens_err($$SELECT lifecycle.token_family_revoke(NULL, 'x')$$);
SELECT tokens_err(format('SELECT lifecycle.token_family_revoke(%L, NULL)', :'s3'));
SELECT tokens_err(format('SELECT lifecycle.token_family_revoke(%L, %L)', :'s3', ''));
SELECT tokens_err($$SELECT lifecycle.token_family_revoke('not-a-uuid', 'x')$$);
SELECT tokens_err($$SELECT lifecycle.token_families_revoke_user(NULL, 'x')$$);
SELECT tokens_err($$SELECT lifecycle.token_families_revoke_user('', 'x')$$);
SELECT tokens_err($$SELECT lifecycle.token_families_revoke_user('tok-sam', NULL)$$);
SELECT tokens_err($$SELECT lifecycle.token_families_revoke_user('tok-sam', '')$$);
SELECT (SELECT count(*) FROM lifecycle.token_family_state) = :families_before AS families_unchanged,
       (SELECT count(*) FROM lifecycle.security_events) = :events_before AS events_unchanged,
       (SELECT revoked_at IS NULL FROM lifecycle.token_families WHERE family_id = :'s3') AS still_live;

------------------------------------------------------------------------------
-- Privileges: EXECUTE is revoked from PUBLIC; an application role needs only
-- EXECUTE on the four functions and cannot read or change the tables.
------------------------------------------------------------------------------
SET ROLE tokens_nobody;
SELECT tokens_err($$SELECT * FROM lifecycle.token_family_create('x')$$);
SELECT tokens_err($$SELECT * FROM lifecycle.token_rotate('x')$$);
SELECT tokens_err($$SELECT lifecycle.token_family_revoke('00000000-0000-0000-0000-000000000000', 'x')$$);
SELECT tokens_err($$SELECT lifecycle.token_families_revoke_user('x', 'x')$$);
RESET ROLE;
GRANT EXECUTE ON FUNCTION lifecycle.token_family_create(text, text, interval, interval), lifecycle.token_rotate(text, text),
                          lifecycle.token_family_revoke(uuid, text),
                          lifecycle.token_families_revoke_user(text, text) TO tokens_nobody;
SET ROLE tokens_nobody;
SELECT family_id AS p1, token AS p1t FROM lifecycle.token_family_create('tok-pat', 'laptop') \gset
SELECT status, generation FROM lifecycle.token_rotate(:'p1t');
SELECT lifecycle.token_family_revoke(:'p1', 'logout') AS revoked;
SELECT tokens_err($$SELECT count(*) FROM lifecycle.token_families$$);
SELECT tokens_err($$SELECT count(*) FROM lifecycle.token_family_state$$);
SELECT tokens_err($$SELECT count(*) FROM lifecycle.security_events$$);
SELECT tokens_err($$UPDATE lifecycle.token_family_state SET revoked_at = NULL$$);
SELECT tokens_err($$SELECT lifecycle.token_key_rotate()$$);
SELECT tokens_err($$SELECT * FROM lifecycle.token_keys()$$);
SELECT tokens_err($$SELECT * FROM lifecycle.user_token_families('tok-pat')$$);
RESET ROLE;
-- user_token_families: a user's live families, for a "signed-in devices" page.
GRANT EXECUTE ON FUNCTION lifecycle.user_token_families(text) TO tokens_nobody;
SET ROLE tokens_nobody;
SELECT family_id AS p2, token AS p2t FROM lifecycle.token_family_create('tok-pat', 'phone') \gset
SELECT family_id AS p3 FROM lifecycle.token_family_create('tok-pat', 'tablet', ttl => '1 day') \gset
SELECT status FROM lifecycle.token_rotate(:'p2t');
SELECT device_fingerprint, generation, family_id = :'p2' OR family_id = :'p3' AS known
  FROM lifecycle.user_token_families('tok-pat') ORDER BY device_fingerprint;   -- the revoked laptop is not listed
SELECT count(*) AS nobody FROM lifecycle.user_token_families('tok-nobody');
-- An inactivity lifetime (Auth0's "inactivity expiration"): unused longer than
-- that, the family is expired; each rotation slides it.
SELECT family_id AS p4, token AS p4t FROM lifecycle.token_family_create('tok-pat', 'kiosk', '30 days', '1 hour') \gset
SELECT status, token FROM lifecycle.token_rotate(:'p4t') \gset p4_
SELECT :'p4_status' AS first_rotation;
RESET ROLE;
UPDATE lifecycle.token_family_state SET idle_expires_at = now() - interval '1 second' WHERE family_id = :'p4';
SET ROLE tokens_nobody;
SELECT count(*) AS kiosk_listed FROM lifecycle.user_token_families('tok-pat') WHERE device_fingerprint = 'kiosk';
SELECT status FROM lifecycle.token_rotate(:'p4_token');                     -- idle too long
RESET ROLE;
SELECT idle_timeout FROM lifecycle.token_families WHERE family_id = :'p4';
SELECT tokens_err($$SELECT * FROM lifecycle.token_family_create('tok-pat', NULL, '1 day', '-1 hour')$$) AS bad_idle;
REVOKE ALL ON FUNCTION lifecycle.token_family_create(text, text, interval, interval), lifecycle.token_rotate(text, text),
                       lifecycle.token_family_revoke(uuid, text),
                       lifecycle.token_families_revoke_user(text, text),
                       lifecycle.user_token_families(text) FROM tokens_nobody;
DROP ROLE tokens_nobody;

-- Clean up what this file created.
DELETE FROM lifecycle.token_chain c USING lifecycle.token_family_state f
 WHERE c.family_id = f.family_id AND f.user_id LIKE 'tok-%';
DELETE FROM lifecycle.token_family_state WHERE user_id LIKE 'tok-%';
DELETE FROM lifecycle.security_events WHERE user_id LIKE 'tok-%';
DROP FUNCTION tokens_found(text);
DROP FUNCTION tokens_part(text, int);
DROP FUNCTION tokens_err(text);
