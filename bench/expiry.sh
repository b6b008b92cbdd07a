#!/usr/bin/env bash
# bench/expiry.sh — SPEC.md §3 "Cost": the worker removes expired rows at
# >= 0.5x the rate of one bulk DELETE ... WHERE col < now() of the same rows,
# while a concurrent session_touch load keeps >= 90% of its idle throughput
# and its p99 latency within 2x the idle figure.
#
#  (a) sweep rate: a table of 2M rows, 1M of them expired (interleaved with
#      the live ones), a primary key and an index on expires_at.  Baseline: one
#      DELETE FROM t WHERE expires_at < now(), timed by psql.  Ours: the same
#      table rebuilt, expire_enable() with the default batch_size, and the
#      time from that call to the end of the worker's last batch that deleted
#      rows (nothing subtracted: the wait for the worker's next pass is
#      included).  The end is read from lifecycle.job_runs (polled every
#      100 ms), then checked: no expired row is left.
#  (b) concurrent load: pgbench, 8 clients, calling session_touch on random
#      sessions out of 100k, idle (before and after; baseline = their mean)
#      and while the worker sweeps a fresh 1M-expired-of-2M table (expiry
#      enabled 2 s into the run).  The figures come from pgbench's
#      per-transaction logs: idle over each run after its first 2 s, the
#      other over the window in which the worker was
#      deleting (from its first batch to its last, per lifecycle.job_runs, cut
#      at the end of the load); the overlap is printed.
#
#  (c) the same table (issue 12): 8 clients touch (UPDATE the expiry of) live
#      rows of a fresh 1M-expired-of-2M table, idle (expiry not enabled;
#      before and after, baseline = their mean) and while the worker sweeps
#      its expired rows (enabled 2 s into the run).  Touch tps and p99 over
#      the window in which the worker was deleting, and the rate at which it
#      deleted while the load ran, against (a)'s bulk DELETE rate.
#
# Lines: expiry_sweep_rate, expiry_touch_tps, expiry_touch_p99,
# expiry_same_table_touch_tps (>= 0.9), expiry_same_table_touch_p99 (<= 2),
# expiry_same_table_sweep_rate (>= 0.05); raw figures on '#' lines.
# EXPIRY_CASES="a c" (say) runs some cases only (default "a b c"; (a) always runs).  Run by bench/run.sh (which builds and installs first), or
# alone against the installed extension.  About 4 minutes (longer while the
# sweep is slow: (a) waits up to 240 s for it).
set -euo pipefail
. "$(dirname "$0")/common.sh"

ROWS=${EXPIRY_ROWS:-2000000}          # half of them expired
SESSIONS=${EXPIRY_SESSIONS:-100000}
CLIENTS=${EXPIRY_CLIENTS:-8}
DURATION=${EXPIRY_DURATION:-20}       # seconds of each pgbench run
WARMUP=2                              # seconds left out at the start of the idle run
NAPTIME=${EXPIRY_NAPTIME:-200ms}
EXPIRED=$((ROWS / 2))
CASES=" ${EXPIRY_CASES:-a b c} "           # (b) and (c) may be left out; (c) needs (a)'s bulk rate

echo "# expiry: $(nproc) CPUs, load average at start $(cut -d' ' -f1-3 /proc/loadavg) (other work on the machine skews the figures)"
bench_start_cluster expiry "lifecycle.enabled = on" "lifecycle.naptime = '$NAPTIME'"
bench_copy "$BENCH_DIR/expiry_table.sql" "$BENCH_DIR/expiry_touch.sql" "$BENCH_DIR/expiry_touch_live.sql"
bench_sql "CREATE EXTENSION pg_lifecycle"

# The pool serves the database from its first pass on (CREATE EXTENSION tells
# the launcher); workers come and go, so their CPU is not measured per process:
# workers_started counts how many the launcher started for the database.
workers_started() {
    bench_sql "SELECT lifecycle._worker_state()->>'workers_started'"
}
for _ in $(seq 1 300); do
    [ "$(bench_sql "SELECT lifecycle._worker_state()->>'extension'")" = installed ] && break
    sleep 0.1
done
[ "$(bench_sql "SELECT lifecycle._worker_state()->>'extension'")" = installed ] ||
    { echo "expiry: the pg_lifecycle launcher did not visit the database" >&2; exit 1; }

build_table() {  # build_table NAME
    bench_sql_file "$WORK/expiry_table.sql" -v tbl="$1" -v rows="$ROWS"
    local n
    n=$(bench_sql "SELECT count(*) FROM $1 WHERE expires_at < now()")
    [ "$n" -eq "$EXPIRED" ] || { echo "expiry: $1 has $n expired rows, not $EXPIRED" >&2; exit 1; }
}

expired_left() {  # expired_left NAME: t when no expired row is left
    bench_sql "SELECT NOT EXISTS (SELECT 1 FROM $1 WHERE expires_at < now())"
}

# worker_window NAME: "<rows> <first batch start> <last batch end> <passes>"
# (epoch seconds) of the worker's expire task on table NAME, from job_runs.
worker_window() {
    bench_sql "SELECT coalesce(sum(rows), 0), extract(epoch FROM min(started_at)), extract(epoch FROM max(finished_at)),
                      count(*)
                 FROM lifecycle.job_runs WHERE task = 'expire' AND target = 'public.$1' AND rows > 0" | tr '|' ' '
}

autovacuums() {  # autovacuums NAME
    bench_sql "SELECT autovacuum_count FROM pg_stat_user_tables WHERE relid = '$1'::regclass"
}

############################################################################
# (a) sweep rate
############################################################################
build_table sweep_base
base_ms=$(bench_timed_ms "DELETE FROM sweep_base WHERE expires_at < now()")
[ "$(expired_left sweep_base)" = t ] || { echo "expiry: the bulk DELETE left expired rows" >&2; exit 1; }
bench_sql "DROP TABLE sweep_base"
base_rate=$(calc "$EXPIRED / ($base_ms / 1000)")
echo "# expiry (a) baseline: one DELETE FROM t WHERE expires_at < now(): $EXPIRED rows of $ROWS in" \
     "$(f3 "$(calc "$base_ms / 1000")") s ($(f0 "$base_rate") rows/s)"

build_table sweep
cpu0=$(workers_started)
t0=$(now_s)
bench_sql "SELECT lifecycle.expire_enable('sweep', 'expires_at')" >/dev/null
enabled=$(bench_sql "SELECT extract(epoch FROM clock_timestamp())")   # after its commit
# The sweep is over when a pass that ended after the last recorded one found
# nothing to do (a pass that did work records a 'pass' row in job_runs, with
# the same finished_at, before the launcher's state counts it as the last
# pass; one that found nothing records none).
# Polled in job_runs and the launcher's state, not in the table: during the
# sweep the expires_at index fills with dead entries that an index-only probe
# does not clean up, so "is any expired row left?" takes up to 200 ms, and such
# a client statement running most of the time makes the worker yield (see (b)).
deadline=$(calc "$t0 + 240")
until [ "$(bench_sql "SELECT coalesce(max(finished_at) < (lifecycle._worker_state()->>'last_pass_end')::timestamptz, false)
                        FROM lifecycle.job_runs WHERE task = 'pass' AND started_at > to_timestamp($enabled)")" = t ]; do
    if awk -v n="$(now_s)" -v d="$deadline" 'BEGIN { exit !(n > d) }'; then
        echo "expiry: the worker had not removed the expired rows after 240 s" >&2
        bench_sql "SELECT lifecycle.health()" >&2
        exit 1
    fi
    sleep 0.1
done
[ "$(expired_left sweep)" = t ] || { echo "expiry: the worker's sweep ended with expired rows left" >&2; exit 1; }
# Ours ends with the commit of the last batch that deleted rows.
t1=$(bench_sql "SELECT extract(epoch FROM max(finished_at)) FROM lifecycle.job_runs
                 WHERE task = 'expire' AND target = 'public.sweep' AND rows > 0")
cpu1=$(workers_started)
ours_s=$(calc "$t1 - $t0")
ours_rate=$(calc "$EXPIRED / $ours_s")
read -r w_rows w_from w_to w_passes <<<"$(worker_window sweep)"
live=$(bench_sql "SELECT count(*) FROM sweep")
echo "# expiry (a) ours: the worker (batch_size 1000, naptime $NAPTIME): $EXPIRED rows of $ROWS gone" \
     "$(f3 "$ours_s") s after expire_enable, by the end of its last batch ($(f0 "$ours_rate") rows/s)"
echo "# expiry (a) ours: by job_runs, $w_rows rows from its first batch to its last in $(f3 "$(calc "$w_to - $w_from")") s" \
     "($(f0 "$(calc "$w_rows / ($w_to - $w_from)")") rows/s) over $w_passes passes; $((cpu1 - cpu0)) worker process(es) started;" \
     "autovacuums of the table meanwhile: $(autovacuums sweep); live rows left: $live"
bench_result expiry_sweep_rate "$(printf '%.0f' "$ours_rate")" "$(printf '%.0f' "$base_rate")" 0.5
bench_sql "SELECT lifecycle.expire_disable('sweep')" >/dev/null
bench_sql "DROP TABLE sweep"

if [[ "$CASES" == *" b "* ]]; then
############################################################################
# (b) session_touch load, idle and during a sweep
############################################################################
bench_sql "CREATE TABLE sids AS
             SELECT g AS k, lifecycle.session_create('user-' || (g % 10000)) AS sid
               FROM generate_series(1, $SESSIONS) g"
bench_sql "ALTER TABLE sids ADD PRIMARY KEY (k)"
bench_sql "VACUUM (ANALYZE) sids"
bench_sql "VACUUM (ANALYZE) lifecycle.sessions"
build_table sweep_load    # ends with a CHECKPOINT

pgbench_args=(-c "$CLIENTS" -j 2 -T "$DURATION" -D nsessions="$SESSIONS" -f "$WORK/expiry_touch.sql")

# Idle: the worker runs its passes every naptime, with nothing to expire.
# Measured before and after the run with the sweep (the machine is shared:
# the baseline is the mean of the two).
idle_run() {  # idle_run PREFIX: sets idle_tps idle_p99, prints a '#' line
    local c0 c1 lo hi n p50 bad cpu
    c0=$(cpu_ticks)
    bench_pgbench "$1" "${pgbench_args[@]}" || { cat "$WORK/$1.out" >&2; exit 1; }
    c1=$(cpu_ticks)
    read -r lo hi <<<"$(bench_log_span "$1")"
    read -r n idle_tps p50 idle_p99 bad <<<"$(bench_log_stats "$1" "$(calc "$lo + $WARMUP")" "$hi")"
    cpu=$(awk -v a="$c0" -v b="$c1" 'BEGIN { split(a, x, " "); split(b, y, " "); printf "%.0f", 100 * (y[1] - x[1]) / (y[2] - x[2]) }')
    echo "# expiry (b) $1: $CLIENTS clients, $n touches in $(f2 "$(calc "$hi - $lo - $WARMUP")") s: $idle_tps tps," \
         "p50 $p50 ms, p99 $idle_p99 ms, $bad failed; machine CPU busy $cpu%"
}
idle_run idle_before
idle1_tps=$idle_tps idle1_p99=$idle_p99

# During the sweep: the load starts, expiry is enabled WARMUP s later.
bench_sql "CHECKPOINT"
c0=$(cpu_ticks)
cpu0=$(workers_started)
bench_pgbench load "${pgbench_args[@]}" &
load_pid=$!
sleep "$WARMUP"
bench_sql "SELECT lifecycle.expire_enable('sweep_load', 'expires_at')" >/dev/null
wait "$load_pid" || { cat "$WORK/load.out" >&2; exit 1; }
c1=$(cpu_ticks)
cpu1=$(workers_started)
load_cpu=$(awk -v a="$c0" -v b="$c1" 'BEGIN { split(a, x, " "); split(b, y, " "); printf "%.0f", 100 * (y[1] - x[1]) / (y[2] - x[2]) }')
read -r lo hi <<<"$(bench_log_span load)"
# Stop the sweep (when it outlasts the load) and wait for the worker to record
# the pass that was running, so that job_runs holds the whole window.
t_end=$(now_s)
left=$(bench_sql "SELECT count(*) FROM sweep_load WHERE expires_at < now()")
bench_sql "SELECT lifecycle.expire_disable('sweep_load')" >/dev/null
for _ in $(seq 1 300); do
    [ "$(bench_sql "SELECT coalesce((lifecycle._worker_state()->>'last_pass_end')::timestamptz >= to_timestamp($t_end), false)")" = t ] && break
    sleep 0.1
done
read -r s_rows s_from s_to s_passes <<<"$(worker_window sweep_load)"
[ -n "$s_from" ] || { echo "expiry: the worker deleted nothing from sweep_load" >&2; exit 1; }
from=$s_from
to=$(awk -v a="$s_to" -v b="$hi" 'BEGIN { printf "%.6f", (a < b) ? a : b }')
overlap=$(calc "$to - $from")
read -r load_n load_tps load_p50 load_p99 load_bad <<<"$(bench_log_stats load "$from" "$to")"
load_s=$(calc "$hi - $lo")
echo "# expiry (b) sweep: the worker removed $s_rows rows in $(f2 "$(calc "$s_to - $s_from")") s" \
     "($(f0 "$(calc "$s_rows / ($s_to - $s_from)")") rows/s) over $s_passes passes ($((cpu1 - cpu0)) worker process(es) started during the load run);" \
     "it overlapped the load for $(f2 "$overlap") s of its $(f2 "$load_s") s run, from ${WARMUP} s in ($(f0 "$(calc "100 * $overlap / $load_s")")%);" \
     "expired rows left when the load ended: $left (expiry then disabled)"
echo "# expiry (b) during the sweep: $load_n touches in $(f2 "$overlap") s: $load_tps tps, p50 $load_p50 ms, p99 $load_p99 ms," \
     "$load_bad failed; machine CPU busy $load_cpu% over the whole run"

bench_sql "DROP TABLE sweep_load"
bench_sql "CHECKPOINT"
idle_run idle_after
idle_tps=$(printf '%.1f' "$(calc "($idle1_tps + $idle_tps) / 2")")
idle_p99=$(printf '%.3f' "$(calc "($idle1_p99 + $idle_p99) / 2")")
bench_result expiry_touch_tps "$load_tps" "$idle_tps" 0.9
bench_result expiry_touch_p99 "$load_p99" "$idle_p99" 2.0 lower
bench_sql "DROP TABLE sids"
fi

############################################################################
# (c) the same table: the application touches the live rows of the table the
#     worker sweeps
############################################################################
if [[ "$CASES" == *" c "* ]]; then
build_table sweep_same    # ends with a CHECKPOINT
same_args=(-c "$CLIENTS" -j 2 -T "$DURATION" -D nlive="$((ROWS - EXPIRED))" -f "$WORK/expiry_touch_live.sql")

same_idle_run() {  # same_idle_run PREFIX: sets idle_tps idle_p99, prints a '#' line
    local lo hi n p50 bad
    bench_pgbench "$1" "${same_args[@]}" || { cat "$WORK/$1.out" >&2; exit 1; }
    read -r lo hi <<<"$(bench_log_span "$1")"
    read -r n idle_tps p50 idle_p99 bad <<<"$(bench_log_stats "$1" "$(calc "$lo + $WARMUP")" "$hi")"
    echo "# expiry (c) $1: $CLIENTS clients touching live rows of sweep_same, $n touches in" \
         "$(f2 "$(calc "$hi - $lo - $WARMUP")") s: $idle_tps tps, p50 $p50 ms, p99 $idle_p99 ms, $bad failed"
}
# Idle before: expiry not yet enabled, the 1M expired rows still there.
same_idle_run same_idle_before
same1_tps=$idle_tps same1_p99=$idle_p99

bench_sql "CHECKPOINT"
cpu0=$(workers_started)
bench_pgbench same_load "${same_args[@]}" &
load_pid=$!
sleep "$WARMUP"
bench_sql "SELECT lifecycle.expire_enable('sweep_same', 'expires_at')" >/dev/null
wait "$load_pid" || { cat "$WORK/same_load.out" >&2; exit 1; }
cpu1=$(workers_started)
read -r lo hi <<<"$(bench_log_span same_load)"
t_end=$(now_s)
left=$(bench_sql "SELECT count(*) FROM sweep_same WHERE expires_at < now()")
bench_sql "SELECT lifecycle.expire_disable('sweep_same')" >/dev/null
for _ in $(seq 1 300); do
    [ "$(bench_sql "SELECT coalesce((lifecycle._worker_state()->>'last_pass_end')::timestamptz >= to_timestamp($t_end), false)")" = t ] && break
    sleep 0.1
done
read -r s_rows s_from s_to s_passes <<<"$(worker_window sweep_same)"
[ -n "$s_from" ] || { echo "expiry: the worker deleted nothing from sweep_same" >&2; exit 1; }
# The rows the worker deleted while the load ran, over the time from its first
# batch to the end of its last batch or of the load, whichever came first.
to=$(awk -v a="$s_to" -v b="$hi" 'BEGIN { printf "%.6f", (a < b) ? a : b }')
in_load_rows=$(bench_sql "SELECT coalesce(sum(rows), 0) FROM lifecycle.job_runs
                           WHERE task = 'expire' AND target = 'public.sweep_same' AND rows > 0
                             AND finished_at <= to_timestamp($to)")
same_window=$(calc "$to - $s_from")
same_rate=$(calc "$in_load_rows / $same_window")
read -r load_n load_tps load_p50 load_p99 load_bad <<<"$(bench_log_stats same_load "$s_from" "$to")"
echo "# expiry (c) sweep under the load: $in_load_rows rows deleted in $(f2 "$same_window") s while the load ran" \
     "($(f0 "$same_rate") rows/s; bulk DELETE: $(f0 "$base_rate") rows/s); all: $s_rows rows in $(f2 "$(calc "$s_to - $s_from")") s" \
     "over $s_passes unit runs, $((cpu1 - cpu0)) worker process(es) started; expired rows left when the load ended: $left"
echo "# expiry (c) during the sweep: $load_n touches in $(f2 "$same_window") s: $load_tps tps, p50 $load_p50 ms," \
     "p99 $load_p99 ms, $load_bad failed"
bench_sql "CHECKPOINT"
same_idle_run same_idle_after
idle_tps=$(printf '%.1f' "$(calc "($same1_tps + $idle_tps) / 2")")
idle_p99=$(printf '%.3f' "$(calc "($same1_p99 + $idle_p99) / 2")")
bench_result expiry_same_table_touch_tps "$load_tps" "$idle_tps" 0.9
bench_result expiry_same_table_touch_p99 "$load_p99" "$idle_p99" 2.0 lower
bench_result expiry_same_table_sweep_rate "$(printf '%.0f' "$same_rate")" "$(printf '%.0f' "$base_rate")" 0.05
fi
