#!/usr/bin/env bash
# bench/softdelete_instructions: what a soft DELETE costs beyond the
# hand-written UPDATE t SET deleted_at = now() WHERE id = $1 AND deleted_at IS NULL,
# counted in CPU instructions (valgrind's callgrind) instead of time: the
# count does not move with the machine's load, which makes bench/softdelete's
# single-row tps ratio noisy on a shared machine.
#
# Each variant runs in a single-user backend (postgres --single, the library
# preloaded) on a copy of the same data directory: N prepared single-row
# statements (one transaction each), for N = 200 and N = 2200; the
# difference divided by 2000 is the steady cost of one statement (start-up,
# first-use caches and planning cancel out).  Bulk: one statement over 50k
# rows, minus a run of SELECT 1.  The lines compare instructions (lower is
# better): single-row against 1/0.95 (the throughput target if all of a
# statement's time were instructions), bulk against 1.2 (the time target).
# Needs valgrind (installed when missing and run as root).
set -uo pipefail
. "$(dirname "$0")/common.sh"

ROWS=${SOFTDELETE_INSTR_ROWS:-100000}
if ! command -v valgrind >/dev/null; then
    if [ "$(id -u)" -eq 0 ]; then
        apt-get install -y -q valgrind >/dev/null 2>&1 || { apt-get update -q >/dev/null 2>&1 && apt-get install -y -q valgrind >/dev/null 2>&1; }
    fi
    command -v valgrind >/dev/null || { echo "# softdelete_instructions: valgrind is not installed, skipped"; exit 0; }
fi

bench_start_cluster softdelete_instr "synchronous_commit = off" "lifecycle.enabled = off" || exit 1
bench_sql "CREATE EXTENSION pg_lifecycle" || exit 1
for v in hand ours; do
    bench_sql_file - <<SQL || exit 1
CREATE TABLE t_$v (id int PRIMARY KEY, owner_id int NOT NULL, body text NOT NULL,
                   deleted_at timestamptz, deleted_by text, delete_event bigint);
INSERT INTO t_$v SELECT g, g % 1000, md5(g::text) FROM generate_series(1, $ROWS) g;
SQL
done
bench_sql "SELECT lifecycle.soft_delete_enable('t_ours')" >/dev/null || exit 1
bench_sql "VACUUM ANALYZE" || exit 1
as_pg "$PGBIN/pg_ctl" -D "$DATA" -w stop >/dev/null || exit 1

# instructions VARIANT INPUT: callgrind's instruction total of a single-user
# backend reading INPUT, on a fresh copy of the data directory.
instructions() {
    local copy="$WORK/copy_$1"
    rm -rf "$copy" && cp -a "$DATA" "$copy" || return 1
    as_pg valgrind --tool=callgrind --callgrind-out-file="$WORK/cg_$1.out" \
        "$PGBIN/postgres" --single -D "$copy" bench < "$2" > "$WORK/single_$1.log" 2>&1 || {
        tail -5 "$WORK/single_$1.log" >&2; return 1; }
    rm -rf "$copy"
    sed -n 's/^\(summary\|totals\): \([0-9]*\).*/\2/p' "$WORK/cg_$1.out" | head -1
}

statement() {
    case $1 in
        hand) echo "UPDATE t_hand SET deleted_at = now() WHERE id = \$1 AND deleted_at IS NULL" ;;
        ours) echo "DELETE FROM t_ours WHERE id = \$1" ;;
    esac
}

declare -A per_stmt per_row
for v in hand ours; do
    declare -A total=()
    for n in 200 2200; do
        in="$WORK/in_${v}_$n"
        { echo "PREPARE s(int) AS $(statement "$v")"
          for ((i = 1; i <= n; i++)); do echo "EXECUTE s($(( (i * 7919) % ROWS + 1 )))"; done; } > "$in"
        total[$n]=$(instructions "${v}_$n" "$in") || exit 1
    done
    per_stmt[$v]=$(( (total[2200] - total[200]) / 2000 ))
    case $v in
        hand) bulk="UPDATE t_hand SET deleted_at = now() WHERE id <= $((ROWS / 2)) AND deleted_at IS NULL" ;;
        ours) bulk="DELETE FROM t_ours WHERE id <= $((ROWS / 2))" ;;
    esac
    echo "$bulk" > "$WORK/bulk_$v"
    echo "SELECT 1" > "$WORK/bulk_none"
    b=$(instructions "bulk_$v" "$WORK/bulk_$v") || exit 1
    z=$(instructions "bulk_none_$v" "$WORK/bulk_none") || exit 1
    per_row[$v]=$(( (b - z) / (ROWS / 2) ))
    echo "# $v: ${per_stmt[$v]} instructions per single-row statement, ${per_row[$v]} per row of a $((ROWS / 2))-row statement"
done
bench_result softdelete_single_instructions "${per_stmt[ours]}" "${per_stmt[hand]}" 1.053 lower
bench_result softdelete_bulk_instructions "${per_row[ours]}" "${per_row[hand]}" 1.2 lower
