#!/usr/bin/env bash
# make test-citus: pg_lifecycle on a real Citus cluster (SPEC.md §6).
#
# Builds Citus once from ../shared/vendor/citus-<version>.tar.gz into a cache
# outside the clone and installs it into the host PostgreSQL
# (test/citus_build.sh), builds and installs pg_lifecycle, starts a
# coordinator and two workers on localhost (as the postgres OS user, each with
# its own port and socket directory under a throwaway work directory,
# shared_preload_libraries = 'citus,pg_lifecycle'), runs the pg_regress suite
# in test/citus/ against the coordinator (the tests connect to the workers
# themselves), stops the clusters — also when something fails — and prints
# "N passed, N failed" as its last line.
#
# Host installs (ours and the other suites') share /tmp/pg_lifecycle_host.lock:
# the build + install and the test run hold it.
#
# For development: CITUS_TESTS="softdelete_citus" picks tests (CITUS_SPECS the
# isolation specs of test/citus/specs, "" for none); SKIP_BUILD=1
# skips the package checks, builds and installs; KEEP_TEST_OUTPUT=1 keeps the
# work directory; CITUS_PORT (default 56300) is the coordinator's port, the
# workers use the next two.
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
LOCK=${PG_LIFECYCLE_HOST_LOCK:-/tmp/pg_lifecycle_host.lock}

fail() { echo "$1" >&2; echo "0 passed, 1 failed"; exit 1; }

# Outside the lock: packages and the Citus build (once; its install only adds
# Citus's own files).  Then the rest runs again under the lock.
if [ -z "${PG_LIFECYCLE_CITUS_LOCKED:-}" ]; then
    if [ -z "${SKIP_BUILD:-}" ]; then
        bash test/deps.sh || fail "packages missing"
        bash test/citus_build.sh || fail "citus build failed"
    fi
    PG_LIFECYCLE_CITUS_LOCKED=1 exec flock "$LOCK" bash "$0" "$@"
fi
# The servers started below must not inherit the lock: flock(1) hands its
# descriptor to us, and a server that outlived the run would hold the lock for
# everybody.  flock itself keeps it until we exit.
for fd in /proc/$$/fd/*; do
    n=${fd##*/}
    [ "$n" -gt 2 ] && [ "$(readlink "$fd")" = "$(realpath "$LOCK")" ] && eval "exec $n>&-"
done
. test/common.sh
if [ -z "${SKIP_BUILD:-}" ]; then
    echo "== build and install pg_lifecycle"
    # -j2 at most: the machine is shared.
    { make -s -j2 >/dev/null && make -s install >/dev/null; } || fail "build failed"
fi

PORT=${CITUS_PORT:-56300}
PORTS=("$PORT" $((PORT + 1)) $((PORT + 2)))
NAMES=(coordinator worker1 worker2)

make_workdir citus
cleanup() {
    stop_clusters
    if [ "${KEEP_TEST_OUTPUT:-}" = "" ]; then rm -rf "$WORK"; else echo "test output kept in $WORK"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

cp -r test/citus "$WORK/suite"
[ "$(id -u)" -eq 0 ] && chown -R postgres: "$WORK"

psql_on() {  # psql_on NODE-INDEX SQL
    as_pg "$PGBIN/psql" -X -q -v ON_ERROR_STOP=1 -h "$WORK/${NAMES[$1]}" -p "${PORTS[$1]}" -d postgres -Atc "$2"
}

echo "== start a Citus cluster: coordinator :${PORTS[0]}, workers :${PORTS[1]} :${PORTS[2]}"
for i in 0 1 2; do
    dir=$WORK/${NAMES[$i]}
    as_pg "$PGBIN/initdb" -D "$dir/data" -A trust -U postgres --no-sync >/dev/null || fail "initdb failed"
    cat >> "$dir/data/postgresql.conf" <<EOF
port = ${PORTS[$i]}
listen_addresses = '127.0.0.1'
unix_socket_directories = '$dir'
shared_preload_libraries = 'citus,pg_lifecycle'
max_connections = 100
max_worker_processes = 16
max_prepared_transactions = 100
wal_level = logical
fsync = off
# Maintenance is driven by hand in the tests; the pg_lifecycle worker stays off.
lifecycle.enabled = off
citus.log_remote_commands = off
EOF
    as_pg "$PGBIN/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w start >/dev/null ||
        { cat "$dir/server.log"; fail "${NAMES[$i]} did not start"; }
done
for i in 0 1 2; do
    psql_on $i "CREATE EXTENSION citus" >/dev/null || fail "CREATE EXTENSION citus failed on ${NAMES[$i]}"
done
psql_on 0 "SELECT citus_set_coordinator_host('127.0.0.1', ${PORTS[0]})" >/dev/null || fail "citus_set_coordinator_host failed"
psql_on 0 "SELECT citus_add_node('127.0.0.1', ${PORTS[1]})" >/dev/null || fail "citus_add_node failed"
psql_on 0 "SELECT citus_add_node('127.0.0.1', ${PORTS[2]})" >/dev/null || fail "citus_add_node failed"
# Created on the coordinator, propagated by Citus to the workers.
psql_on 0 "CREATE EXTENSION pg_lifecycle" >/dev/null || fail "CREATE EXTENSION pg_lifecycle failed"
for i in 1 2; do
    [ "$(psql_on $i "SELECT count(*) FROM pg_extension WHERE extname = 'pg_lifecycle'")" = 1 ] ||
        fail "pg_lifecycle did not reach ${NAMES[$i]}"
done
echo "citus $(psql_on 0 "SELECT extversion FROM pg_extension WHERE extname = 'citus'"), nodes: $(psql_on 0 "SELECT string_agg(nodeport::text, ' ' ORDER BY nodeport) FROM pg_dist_node")"

CITUS_TESTS=${CITUS_TESTS:-$(cd test/citus/sql && ls *.sql | sed 's/\.sql$//' | tr '\n' ' ')}
echo "== pg_regress (Citus): $CITUS_TESTS"
mkdir -p "$WORK/regress"; [ "$(id -u)" -eq 0 ] && chown postgres: "$WORK/regress"
# The tests reach each node through these (psql's \getenv).
(cd "$WORK" && as_pg env PG_LIFECYCLE_COORDINATOR="${PORTS[0]}" PG_LIFECYCLE_WORKER1="${PORTS[1]}" \
    PG_LIFECYCLE_WORKER2="${PORTS[2]}" PG_LIFECYCLE_WORK="$WORK" \
    "$PGXS_SRC/test/regress/pg_regress" --bindir="$PGBIN" --inputdir="$WORK/suite" \
    --outputdir="$WORK/regress" --use-existing --dbname=postgres \
    --host="$WORK/coordinator" --port="${PORTS[0]}" $CITUS_TESTS) > "$WORK/regress.log" 2>&1
rc=$?
cat "$WORK/regress.log"
ok=$(grep -cE '\.\.\. ok|^ok [0-9]+' "$WORK/regress.log")
bad=$(grep -cE '\.\.\. FAILED|^not ok [0-9]+' "$WORK/regress.log")
[ $rc -ne 0 ] && [ "$bad" -eq 0 ] && bad=1
# Isolation specs (test/citus/specs), against the same cluster.
CITUS_SPECS=${CITUS_SPECS-$(cd test/citus/specs 2>/dev/null && ls *.spec 2>/dev/null | sed 's/\.spec$//' | tr '\n' ' ')}
if [ -n "${CITUS_SPECS// /}" ]; then
    echo "== pg_isolation_regress (Citus): $CITUS_SPECS"
    mkdir -p "$WORK/isolation"; [ "$(id -u)" -eq 0 ] && chown postgres: "$WORK/isolation"
    (cd "$WORK" && as_pg "$PGXS_SRC/test/isolation/pg_isolation_regress" --bindir="$PGBIN" --inputdir="$WORK/suite" \
        --outputdir="$WORK/isolation" --use-existing --dbname=postgres \
        --host="$WORK/coordinator" --port="${PORTS[0]}" $CITUS_SPECS) > "$WORK/isolation.log" 2>&1
    irc=$?
    cat "$WORK/isolation.log"
    ok=$((ok + $(grep -cE '\.\.\. ok|^ok [0-9]+' "$WORK/isolation.log")))
    ibad=$(grep -cE '\.\.\. FAILED|^not ok [0-9]+' "$WORK/isolation.log")
    [ $irc -ne 0 ] && [ "$ibad" -eq 0 ] && ibad=1
    bad=$((bad + ibad))
    if [ $irc -ne 0 ] && [ -f "$WORK/isolation/regression.diffs" ]; then
        echo "---- isolation regression.diffs (first 300 lines)"
        head -300 "$WORK/isolation/regression.diffs"
    fi
fi
# A crash-restart on any node counts as one more failure.
for i in 0 1 2; do
    if grep -E 'terminated by signal|terminating any other active server processes' "$WORK/${NAMES[$i]}/server.log"; then
        echo "---- ${NAMES[$i]}: crash-restart during the suite"
        bad=$((bad + 1))
    fi
done
if [ $rc -ne 0 ] && [ -f "$WORK/regress/regression.diffs" ]; then
    echo "---- regression.diffs (first 300 lines)"
    head -300 "$WORK/regress/regression.diffs"
fi
echo "$ok passed, $bad failed"
[ "$bad" -eq 0 ] && [ "$ok" -gt 0 ]
