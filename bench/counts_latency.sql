-- bench/counts.sh: average server-side time of a statement returning one
-- value, run :n times (after one warm-up run), in milliseconds.
CREATE OR REPLACE FUNCTION pg_temp.avg_ms(sql text, n int) RETURNS numeric LANGUAGE plpgsql AS $$
DECLARE t0 timestamptz; r bigint;
BEGIN
    EXECUTE sql INTO r;
    t0 := clock_timestamp();
    FOR i IN 1..n LOOP EXECUTE sql INTO r; END LOOP;
    RETURN round((extract(epoch FROM clock_timestamp() - t0) * 1000 / n)::numeric, 3);
END $$;
SELECT pg_temp.avg_ms(:'sql', :n);
