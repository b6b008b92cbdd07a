-- pgbench script of bench/tokens.sh: each client rotates its own family's
-- current token (fetched once from bench_tokens at the client's first run).
\if :started = 0
SELECT token AS tok FROM bench_tokens WHERE impl = 'ours' AND client = :client_id \gset
\set started 1
\endif
SELECT token AS tok FROM lifecycle.token_rotate(:tok) \gset
