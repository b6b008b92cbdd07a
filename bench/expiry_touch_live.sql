-- bench/expiry.sh (c): the application touches one live row (odd id) of the
-- table the worker is sweeping, extending its expiry as a session refresh does.
\set k 2 * random(0, :nlive - 1) + 1
UPDATE sweep_same SET expires_at = now() + interval '1 day' WHERE id = :k;
