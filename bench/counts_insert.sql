-- bench/counts.sh: the application's write — one audit row per request.
\set u random(1, 10000)
\set a random(1, 8)
\set o random(1, 10)
INSERT INTO :tbl (user_id, action_type, outcome, resource, duration_ms)
VALUES ('u-' || :u, (ARRAY['GET', 'POST', 'PUT', 'DELETE', 'PATCH', 'WS_CONNECT', 'WS_MESSAGE', 'LOGIN'])[:a],
        CASE WHEN :o <= 8 THEN 'success' WHEN :o = 9 THEN 'error' ELSE 'permission_denied' END,
        '/api/v1/items/' || :u, :u % 500);
