-- pgbench script of bench/tokens.sh: the same as tokens_rotate.sql, against
-- the plpgsql baseline (tokens_baseline.sql).
\if :started = 0
SELECT token AS tok FROM bench_tokens WHERE impl = 'plpgsql' AND client = :client_id \gset
\set started 1
\endif
SELECT token AS tok FROM baseline.token_rotate(:tok) \gset
