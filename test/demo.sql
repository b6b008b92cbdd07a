-- The pg_lifecycle walk-through run by `make demo`.
\pset footer off
\set VERBOSITY default
\echo
\echo '### Installing: one statement, everything lives in schema lifecycle'
\echo 'postgres=# CREATE EXTENSION pg_lifecycle;'
CREATE EXTENSION pg_lifecycle;
SELECT extname, extversion, extnamespace::regnamespace AS schema FROM pg_extension WHERE extname = 'pg_lifecycle';
