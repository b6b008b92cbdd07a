# Shared by the bench/<capability>.sh scripts: a throwaway cluster with
# pg_lifecycle preloaded, psql/pgbench helpers, latency percentiles from
# pgbench's per-transaction logs, and the result line
#   <name>: ours=<x> baseline=<y> ratio=<r> target=<t> PASS|FAIL
# Sourced, never run.  bench/run.sh builds and installs the extension first;
# a script run on its own uses whatever is installed.

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$BENCH_DIR/.." && pwd)
. "$ROOT/test/common.sh"

BENCH_PORT=${BENCH_PORT:-56180}
BENCH_DB=bench

# bench_start_cluster NAME [extra postgresql.conf lines...]
# Sets WORK (owned by postgres), DATA, SOCK; stops the cluster and removes
# WORK on exit (KEEP_BENCH_OUTPUT=1 keeps it).
bench_start_cluster() {
    # Write back what earlier runs left in the page cache, so that its
    # writeback does not slow this run's fsyncs.
    sync
    make_workdir "bench_$1"
    shift
    trap bench_cleanup EXIT
    trap 'exit 130' INT TERM
    DATA=$WORK/data
    SOCK=$WORK
    as_pg "$PGBIN/initdb" -D "$DATA" -A trust --no-sync >/dev/null || return 1
    {
        cat <<CONF
port = $BENCH_PORT
listen_addresses = ''
unix_socket_directories = '$SOCK'
shared_preload_libraries = 'pg_lifecycle'
max_worker_processes = 16
max_connections = 100
shared_buffers = 1GB
effective_cache_size = 8GB
work_mem = 16MB
maintenance_work_mem = 512MB
max_wal_size = 4GB
min_wal_size = 1GB
checkpoint_timeout = 15min
wal_buffers = 16MB
log_min_messages = warning
CONF
        local line
        for line in "$@"; do echo "$line"; done
    } >> "$DATA/postgresql.conf"
    as_pg "$PGBIN/pg_ctl" -D "$DATA" -l "$WORK/server.log" -w start >/dev/null || {
        echo "bench: the cluster did not start" >&2; tail -20 "$WORK/server.log" >&2; return 1; }
    as_pg "$PGBIN/createdb" -h "$SOCK" -p "$BENCH_PORT" "$BENCH_DB" || return 1
}

bench_cleanup() {
    stop_clusters
    if [ -z "${KEEP_BENCH_OUTPUT:-}" ]; then rm -rf "$WORK"; else echo "# bench output kept in $WORK"; fi
}

# bench_sql SQL...: run statements, unaligned tuples-only output, stop on error.
bench_sql() {
    as_pg "$PGBIN/psql" -X -q -A -t -v ON_ERROR_STOP=1 -h "$SOCK" -p "$BENCH_PORT" -d "$BENCH_DB" -c "$*"
}

# bench_sql_file FILE|- [psql -v assignments...]  (- reads the script from stdin)
bench_sql_file() {
    local f=$1; shift
    as_pg "$PGBIN/psql" -X -q -A -t -v ON_ERROR_STOP=1 -h "$SOCK" -p "$BENCH_PORT" -d "$BENCH_DB" "$@" -f "$f"
}

# bench_timed_ms SQL: server-side elapsed time of one statement (psql \timing), in ms.
bench_timed_ms() {
    printf '\\timing on\n%s;\n' "$*" |
        as_pg "$PGBIN/psql" -X -q -v ON_ERROR_STOP=1 -h "$SOCK" -p "$BENCH_PORT" -d "$BENCH_DB" |
        sed -n 's/^Time: \([0-9.]*\) ms.*/\1/p' | tail -1
}

# bench_copy FILE...: copy pgbench scripts into WORK where postgres can read them.
bench_copy() {
    local f
    for f in "$@"; do cp "$f" "$WORK/"; done
    [ "$(id -u)" -eq 0 ] && chown postgres: "$WORK"/*
    return 0
}

# bench_pgbench LOGPREFIX pgbench-args...: runs pgbench with per-transaction
# logs ($WORK/LOGPREFIX.*); its own summary goes to $WORK/LOGPREFIX.out.
bench_pgbench() {
    local prefix=$1; shift
    (cd "$WORK" && as_pg "$PGBIN/pgbench" -h "$SOCK" -p "$BENCH_PORT" -n -l --log-prefix="$WORK/$prefix" \
        "$@" "$BENCH_DB") > "$WORK/$prefix.out" 2>&1
}

# bench_log_stats LOGPREFIX FROM TO: transactions of pgbench logs
# LOGPREFIX.* that completed within [FROM, TO] (epoch seconds, fractional):
# prints "<count> <tps> <p50 ms> <p99 ms> <failed>".
bench_log_stats() {
    local prefix=$1 from=$2 to=$3 lat="$WORK/$1.window" bad
    cat "$WORK/$prefix".[0-9]* |
        awk -v from="$from" -v to="$to" '
            { t = $5 + $6 / 1e6 }
            t >= from && t <= to { if ($3 ~ /^[0-9]+$/) print $3 / 1000.0; else print "F" }' > "$lat"
    bad=$(grep -c '^F' "$lat")
    grep -v '^F' "$lat" | sort -n |
        awk -v from="$from" -v to="$to" -v bad="$bad" '
            { v[NR] = $1 }
            END {
                n = NR
                if (n == 0) { print 0, 0, 0, 0, bad; exit }
                i50 = int(n * 0.50 + 0.999999); i99 = int(n * 0.99 + 0.999999)
                printf "%d %.1f %.3f %.3f %d\n", n, n / (to - from), v[i50], v[i99], bad }'
}

# bench_log_span LOGPREFIX: "<first> <last>" completion time (epoch s) in the logs.
bench_log_span() {
    cat "$WORK/$1".[0-9]* |
        awk 'NR == 1 { lo = hi = $5 + $6 / 1e6 }
             { t = $5 + $6 / 1e6; if (t < lo) lo = t; if (t > hi) hi = t }
             END { printf "%.6f %.6f\n", lo, hi }'
}

now_s() { date +%s.%N; }

# cpu_ticks: "<busy> <total>" jiffies of the whole machine so far (/proc/stat).
cpu_ticks() { awk '/^cpu / { t = 0; for (i = 2; i <= NF; i++) t += $i; print t - $5 - $6, t }' /proc/stat; }

# proc_cpu_s PID: user+system CPU seconds used so far by one process.
proc_cpu_s() {
    awk -v hz="$(getconf CLK_TCK)" '{ sub(/^.*\) /, ""); printf "%.2f\n", ($12 + $13) / hz }' "/proc/$1/stat" 2>/dev/null || echo 0
}

# calc EXPR: floating-point arithmetic.
calc() { awk "BEGIN { printf \"%.6f\\n\", $* }" | sed -e "s/0*$//" -e "s/\\.$//"; }

f0() { printf '%.0f' "$1"; }
f2() { printf '%.2f' "$1"; }
f3() { printf '%.3f' "$1"; }

# bench_result NAME OURS BASELINE TARGET [higher|lower]
# higher (default): ratio = ours/baseline, PASS when ratio >= target.
# lower: ratio = ours/baseline, PASS when ratio <= target (printed as <=target).
bench_result() {
    local name=$1 ours=$2 base=$3 target=$4 sense=${5:-higher} ratio verdict shown
    ratio=$(awk -v o="$ours" -v b="$base" 'BEGIN { if (b == 0) print "nan"; else printf "%.3f", o / b }')
    if [ "$sense" = lower ]; then
        shown="<=$target"
        verdict=$(awk -v r="$ratio" -v t="$target" 'BEGIN { print (r != "nan" && r + 0 <= t + 0) ? "PASS" : "FAIL" }')
    else
        shown=$target
        verdict=$(awk -v r="$ratio" -v t="$target" 'BEGIN { print (r != "nan" && r + 0 >= t + 0) ? "PASS" : "FAIL" }')
    fi
    echo "$name: ours=$ours baseline=$base ratio=$ratio target=$shown $verdict"
}
