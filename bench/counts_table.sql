-- bench/counts.sh: an audit log of :rows rows over the :days days before
-- :'t0', like the seeds' user_actions: 3 outcomes (80% success), 8 action
-- types, :users users (spread by a hash, independent of the other columns);
-- a primary key, an index on created_at and one on (user_id, created_at)
-- (the application's "actions of this user" page needs it).  Built with one
-- INSERT ... SELECT.
SET client_min_messages = warning;
DROP TABLE IF EXISTS :tbl;
CREATE TABLE :tbl (
    id          bigserial PRIMARY KEY,
    created_at  timestamptz NOT NULL DEFAULT now(),
    user_id     text NOT NULL,
    action_type text NOT NULL,
    outcome     text NOT NULL,
    resource    text NOT NULL,
    duration_ms integer
);
INSERT INTO :tbl (created_at, user_id, action_type, outcome, resource, duration_ms)
SELECT :'t0'::timestamptz - (:days * interval '1 day') * (1 - g::float8 / :rows),
       'u-' || (abs(hashint8(g)) % :users),
       (ARRAY['GET', 'POST', 'PUT', 'DELETE', 'PATCH', 'WS_CONNECT', 'WS_MESSAGE', 'LOGIN'])[1 + abs(hashint8(-g)) % 8],
       CASE WHEN abs(hashint8(g * 3 + 1)) % 10 < 8 THEN 'success' WHEN abs(hashint8(g * 3 + 1)) % 10 = 8 THEN 'error'
            ELSE 'permission_denied' END,
       '/api/v1/items/' || (g % 1000),
       (g % 500)
  FROM generate_series(1, :rows) g;
CREATE INDEX ON :tbl (created_at);
CREATE INDEX ON :tbl (user_id, created_at);
VACUUM (ANALYZE) :tbl;
