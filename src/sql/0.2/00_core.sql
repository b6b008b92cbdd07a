-- pg_lifecycle 0.2 — every object lives in schema lifecycle (created by CREATE EXTENSION).
-- Built from src/sql/0.2/*.sql, concatenated in name order by the Makefile.
\echo Use "CREATE EXTENSION pg_lifecycle" to load this file. \quit

COMMENT ON SCHEMA lifecycle IS 'pg_lifecycle: soft delete, token families, expiry, exact counts';
GRANT USAGE ON SCHEMA lifecycle TO PUBLIC;
