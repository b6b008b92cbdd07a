-- pgbench script of bench/tokens.sh: a bare single-row UPDATE ... WHERE pk,
-- each client on its own row.
UPDATE bench_rows SET n = n + 1 WHERE id = :client_id;
