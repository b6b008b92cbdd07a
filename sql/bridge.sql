-- The C++ <-> PostgreSQL bridge: errors cross in both directions with their
-- SQLSTATE, C++ destructors run on the way out, and the backend survives.
CREATE EXTENSION pg_lifecycle;
SELECT nspname FROM pg_namespace WHERE nspname = 'lifecycle';

CREATE FUNCTION selftest_raise(kind text, arg text DEFAULT NULL) RETURNS text
    AS 'pg_lifecycle_selftest', 'pg_lifecycle_selftest_raise' LANGUAGE C;
CREATE FUNCTION selftest_live() RETURNS int
    AS 'pg_lifecycle_selftest', 'pg_lifecycle_selftest_live' LANGUAGE C;

-- err(sql) runs a statement and shows the error fields a client receives.
CREATE FUNCTION err(sql text) RETURNS text LANGUAGE plpgsql AS $$
DECLARE st text; msg text; det text; hnt text; con text;
BEGIN
    EXECUTE sql;
    RETURN 'no error';
EXCEPTION WHEN OTHERS THEN
    GET STACKED DIAGNOSTICS st = RETURNED_SQLSTATE, msg = MESSAGE_TEXT, det = PG_EXCEPTION_DETAIL,
                            hnt = PG_EXCEPTION_HINT, con = CONSTRAINT_NAME;
    RETURN concat_ws(' | ', st, msg, nullif(det, ''), nullif(hnt, ''), nullif(con, ''));
END $$;

SELECT pg_backend_pid() AS pid0 \gset
\set SHOW_CONTEXT never

-- An error raised in C++: SQLSTATE, message, detail and hint reach the client.
SELECT selftest_raise('cpp', 'v');
SELECT err('SELECT selftest_raise(''cpp'', ''v'')');
SELECT selftest_raise('std');
SELECT err('SELECT selftest_raise(''std'')');
SELECT selftest_raise('bad_alloc');
SELECT err('SELECT selftest_raise(''bad_alloc'')');
SELECT selftest_raise('unknown');
SELECT err('SELECT selftest_raise(''unknown'')');
SELECT selftest_raise('huge');
SELECT err('SELECT selftest_raise(''huge'')');
SELECT selftest_raise('nope');
SELECT err('SELECT selftest_raise(''nope'')');
SELECT selftest_raise(NULL);
SELECT err('SELECT selftest_raise(NULL)');

-- PostgreSQL's own errors raised inside guarded C++ code come back unchanged.
SELECT selftest_raise('pg', '12');
SELECT selftest_raise('pg', 'twelve');
SELECT err('SELECT selftest_raise(''pg'', ''twelve'')');
SELECT selftest_raise('spi', 'SELECT 1/0');
SELECT err('SELECT selftest_raise(''spi'', ''SELECT 1/0'')');
SELECT selftest_raise('spi', 'SELECT * FROM no_such_table');
SELECT err('SELECT selftest_raise(''spi'', ''SELECT * FROM no_such_table'')');
CREATE TABLE parent (id int PRIMARY KEY);
CREATE TABLE child (id int PRIMARY KEY, parent_id int CONSTRAINT child_parent_fk REFERENCES parent);
SELECT selftest_raise('spi', 'INSERT INTO child VALUES (1, 99)');
SELECT err('SELECT selftest_raise(''spi'', ''INSERT INTO child VALUES (1, 99)'')');
SELECT selftest_raise('spi', 'INSERT INTO parent VALUES (1), (2)');
SELECT selftest_raise('spi_param', '21');
SELECT selftest_raise('spi_param', 'x');
SELECT err('SELECT selftest_raise(''spi_param'', ''x'')');

-- An error raised by nested guarded C++ (SQL -> C++ -> SPI -> C++) keeps its SQLSTATE.
SELECT selftest_raise('spi', $$SELECT selftest_raise('cpp', 'nested')$$);
SELECT err('SELECT selftest_raise(''spi'', $$SELECT selftest_raise(''cpp'', ''nested'')$$)');

-- Boost.Container over palloc.
SELECT selftest_raise('vector', '1000000');

-- Query cancel inside a C++ loop unwinds it.
SET statement_timeout = '200ms';
SELECT selftest_raise('spin');
RESET statement_timeout;

-- Identifier quoting is PostgreSQL's.
SELECT selftest_raise('quote', 'plain'), selftest_raise('quote', 'Mixed Case'), selftest_raise('quote', 'select');

-- plpgsql can trap our errors and go on; the subtransaction rolls back cleanly.
DO $$
BEGIN
    PERFORM selftest_raise('cpp', 'trapped');
EXCEPTION WHEN invalid_parameter_value THEN
    RAISE NOTICE 'trapped % (%)', SQLERRM, SQLSTATE;
END $$;
DO $$
BEGIN
    PERFORM selftest_raise('spi', 'INSERT INTO parent VALUES (3), (3)');
EXCEPTION WHEN unique_violation THEN
    RAISE NOTICE 'trapped % (%)', SQLERRM, SQLSTATE;
END $$;
SELECT count(*) AS parents_after_failed_calls FROM parent;

-- Every C++ object was destroyed, and this is still the same backend.
SELECT selftest_live() AS live_cpp_objects;
SELECT pg_backend_pid() = :pid0 AS same_backend;
SELECT 1 AS still_working;
