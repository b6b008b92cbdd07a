-- bench/counts.sh: an audit log of :rows rows over one year (2024), like the
-- seeds' user_actions: 3 outcomes, 8 action types, 10k users; a primary key
-- and an index on created_at.  Built with one INSERT ... SELECT.
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
SELECT '2024-01-01 00:00:00+00'::timestamptz + (g::float8 / :rows) * interval '366 days',
       'u-' || (g::bigint * 7919 % 10000),
       (ARRAY['GET', 'POST', 'PUT', 'DELETE', 'PATCH', 'WS_CONNECT', 'WS_MESSAGE', 'LOGIN'])[1 + g % 8],
       CASE WHEN g % 10 < 8 THEN 'success' WHEN g % 10 = 8 THEN 'error' ELSE 'permission_denied' END,
       '/api/v1/items/' || (g % 1000),
       (g % 500)
  FROM generate_series(1, :rows) g;
CREATE INDEX ON :tbl (created_at);
VACUUM (ANALYZE) :tbl;
