-- bench/expiry.sh: an expiry table of :rows rows, every other one (by id, so
-- expired and live rows share every heap page) expired 7 to 30 days ago, the
-- others expiring in 1 to 24 days; a primary key and an index on expires_at.
SET client_min_messages = warning;
DROP TABLE IF EXISTS :tbl;
CREATE TABLE :tbl (
    id         bigint PRIMARY KEY,
    expires_at timestamptz NOT NULL,
    payload    text NOT NULL
);
INSERT INTO :tbl
SELECT g,
       CASE WHEN g % 2 = 0 THEN now() - interval '30 days' + g * interval '1 second'
            ELSE now() + interval '1 day' + g * interval '1 second' END,
       md5(g::text)
  FROM generate_series(1, :rows) g;
CREATE INDEX ON :tbl (expires_at);
VACUUM (ANALYZE) :tbl;
CHECKPOINT;
