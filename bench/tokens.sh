#!/usr/bin/env bash
# bench/tokens.sh — SPEC.md §2 "Cost": lifecycle.token_rotate throughput is
# >= 1.5x a plpgsql implementation of the same semantics in the same harness,
# and >= 0.6x a bare single-row UPDATE ... WHERE pk (8 clients).
#
# One pgbench harness, 8 clients, -M prepared, each client on its own family
# (or its own row), three scripts run in interleaved rounds:
#   ours      SELECT token FROM lifecycle.token_rotate(:tok) \gset   (the next call presents the new token)
#   plpgsql   the same against bench/tokens_baseline.sql: a random token, looked up by its SHA-256,
#             marked used, a child inserted, the family bumped; reuse detection, replays, revocation
#             and security events as ours; SECURITY DEFINER with a pinned search_path like ours
#   update    UPDATE bench_rows SET n = n + 1 WHERE id = :client_id
# Every run is checked: the families moved on by exactly the transactions
# pgbench counted, none was revoked (a failed rotation would make the next
# calls cheap 'invalid's and flatter the figure).
#
# The cluster runs with synchronous_commit = off.  With it on, every variant is
# bound by the same WAL flush per commit on this machine (~3k commits/s) and
# the ratios say nothing about the implementations; the figures with it on
# are printed too, on '#' lines.  Each result line is the round (of 5) whose
# ratio is the median one.
#
# Lines: tokens_rotate_vs_plpgsql, tokens_rotate_vs_update; raw figures on '#'
# lines.  Run by bench/run.sh (which builds and installs first), or alone
# against the installed extension.  About 3 minutes.
set -euo pipefail
. "$(dirname "$0")/common.sh"

CLIENTS=${TOKENS_CLIENTS:-8}
DURATION=${TOKENS_DURATION:-10}       # seconds of each pgbench run
ROUNDS=${TOKENS_ROUNDS:-5}
THREADS=$(( $(nproc) < CLIENTS ? $(nproc) : CLIENTS ))

bench_start_cluster tokens "synchronous_commit = off" "lifecycle.enabled = off"
bench_copy "$BENCH_DIR/tokens_baseline.sql" "$BENCH_DIR/tokens_rotate.sql" "$BENCH_DIR/tokens_rotate_plpgsql.sql" \
           "$BENCH_DIR/tokens_update.sql"
bench_sql "CREATE EXTENSION pg_lifecycle"
bench_sql_file "$WORK/tokens_baseline.sql" >/dev/null
bench_sql "CREATE TABLE bench_tokens (impl text, client int, token text, PRIMARY KEY (impl, client));
           CREATE TABLE bench_rows (id int PRIMARY KEY, n bigint NOT NULL DEFAULT 0) WITH (fillfactor = 80);
           INSERT INTO bench_rows (id) SELECT g FROM generate_series(0, $CLIENTS - 1) g;"

# fresh_families TAG: a new family per client for both implementations; the
# clients fetch their first token from bench_tokens.
fresh_families() {
    bench_sql "DELETE FROM bench_tokens;
               INSERT INTO bench_tokens SELECT 'ours', g, (lifecycle.token_family_create('$1-' || g)).token
                 FROM generate_series(0, $CLIENTS - 1) g;
               INSERT INTO bench_tokens SELECT 'plpgsql', g, (baseline.token_family_create('$1-' || g)).token
                 FROM generate_series(0, $CLIENTS - 1) g;"
}

# progress IMPL TAG: "<rotations> <revoked families>" of the families TAG-*.
progress() {
    case $1 in
        ours) bench_sql "SELECT coalesce(sum(generation - 1), 0), count(*) FILTER (WHERE revoked_at IS NOT NULL)
                           FROM lifecycle.token_families WHERE user_id LIKE '$2-%'" | tr '|' ' ';;
        plpgsql) bench_sql "SELECT coalesce(sum(generation - 1), 0), count(*) FILTER (WHERE revoked_at IS NOT NULL)
                              FROM baseline.families WHERE user_id LIKE '$2-%'" | tr '|' ' ';;
        update) echo "$(bench_sql "SELECT sum(n) FROM bench_rows") 0";;
    esac
}

# run IMPL TAG SECONDS: prints the tps of one pgbench run, after checking it.
run() {
    local impl=$1 tag=$2 secs=$3 script before after done_n tps revoked
    case $impl in
        ours) script=tokens_rotate.sql;;
        plpgsql) script=tokens_rotate_plpgsql.sql;;
        update) script=tokens_update.sql;;
    esac
    before=$(progress "$impl" "$tag" | cut -d' ' -f1)
    # pgbench itself rather than bench_pgbench: that one always writes a log line
    # per transaction (-l), client CPU that every variant pays alike on this
    # 2-CPU machine, which pulls all the ratios towards 1.
    (cd "$WORK" && as_pg "$PGBIN/pgbench" -h "$SOCK" -p "$BENCH_PORT" -n -M prepared -c "$CLIENTS" -j "$THREADS" \
        -T "$secs" -D started=0 -f "$WORK/$script" "$BENCH_DB") > "$WORK/tokens_$impl.out" 2>&1 ||
        { echo "tokens: pgbench failed for $impl:" >&2; tail -5 "$WORK/tokens_$impl.out" >&2; exit 1; }
    tps=$(sed -n 's/^tps = \([0-9.]*\) .*/\1/p' "$WORK/tokens_$impl.out")
    done_n=$(sed -n 's/^number of transactions actually processed: \([0-9]*\).*/\1/p' "$WORK/tokens_$impl.out")
    read -r after revoked < <(progress "$impl" "$tag")
    if [ "$((after - before))" -ne "$done_n" ] || [ "$revoked" -ne 0 ]; then
        echo "tokens: $impl did $((after - before)) rotations for $done_n transactions, $revoked families revoked" >&2
        exit 1
    fi
    printf '%.0f\n' "$tps"
}

# Warm-up (caches, plans), not counted.
fresh_families warm
for impl in update ours plpgsql; do run "$impl" warm 3 >/dev/null; done

# Rounds of the three runs back to back, in alternating order; each comparison
# is reported from the round where its ratio is the median one (a pair measured
# seconds apart, so a load change on this shared machine between rounds does
# not skew it).
rounds=()
for r in $(seq 1 "$ROUNDS"); do
    fresh_families "r$r"
    if [ $((r % 2)) -eq 1 ]; then
        u=$(run update "r$r" "$DURATION"); o=$(run ours "r$r" "$DURATION"); p=$(run plpgsql "r$r" "$DURATION")
    else
        p=$(run plpgsql "r$r" "$DURATION"); o=$(run ours "r$r" "$DURATION"); u=$(run update "r$r" "$DURATION")
    fi
    echo "# tokens round $r (tps, $CLIENTS clients, ${DURATION}s each): token_rotate=$o plpgsql=$p update=$u" \
         "ratios $(calc "$o / $p") $(calc "$o / $u")"
    rounds+=("$o $p $u")
done

# median_round COLUMN: "<ours> <baseline>" of the round with the median ours/baseline ratio.
median_round() {
    printf '%s\n' "${rounds[@]}" |
        awk -v c="$1" '{ print $1 / $c, $1, $c }' | sort -g |
        awk '{ v[NR] = $2 " " $3 } END { print v[int((NR + 1) / 2)] }'
}
read -r ours_p plpgsql < <(median_round 2)
read -r ours_u update < <(median_round 3)

# For the record: the same with synchronous_commit = on (one short round).
bench_sql "ALTER SYSTEM SET synchronous_commit = on" >/dev/null
bench_sql "SELECT pg_reload_conf()" >/dev/null
fresh_families sync
u=$(run update sync 5); o=$(run ours sync 5); p=$(run plpgsql sync 5)
echo "# tokens with synchronous_commit = on (tps, 5s each, all bound by WAL flushes): token_rotate=$o plpgsql=$p update=$u"

bench_result tokens_rotate_vs_plpgsql "$ours_p" "$plpgsql" 1.5
bench_result tokens_rotate_vs_update "$ours_u" "$update" 0.6
