#!/usr/bin/env bash
# make test: install what is missing, build, install, then run the pg_regress,
# isolation, TAP and C++ unit suites, each on throwaway clusters started as
# the postgres OS user with pg_lifecycle preloaded.  Prints the tally of all
# suites as "N passed, N failed" on the last line; exits non-zero on failure.
#
# For development: SUITES="lint regress isolation tap clients unit" picks suites;
# REGRESS_TESTS, ISOLATION_TESTS and TAP_TESTS (space-separated names) pick
# tests; SKIP_BUILD=1 skips the package check, build and install;
# KEEP_TEST_OUTPUT=1 keeps the work directory; SD_MODEL_SEED, SD_MODEL_ROUNDS
# and SD_MODEL_STEPS set the soft delete model test's run (041_softdelete_model.pl;
# make test-model-long runs it at length).
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

SUITES=${SUITES:-lint regress isolation tap clients unit}
want() { [[ " $SUITES " == *" $1 "* ]]; }

if [ -z "${SKIP_BUILD:-}" ]; then
    bash test/deps.sh || { echo "0 passed, 1 failed"; exit 1; }
fi
. test/common.sh
if [ -z "${SKIP_BUILD:-}" ]; then
    echo "== build and install"
    build_and_install && make -s selftest >/dev/null || { echo "build failed"; echo "0 passed, 1 failed"; exit 1; }
fi

make_workdir test
cleanup() {
    stop_clusters
    if [ "${KEEP_TEST_OUTPUT:-}" = "" ]; then rm -rf "$WORK"; else echo "test output kept in $WORK"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# The pg_regress, isolation and TAP suites are the Makefile's installcheck
# (temp instances with test/pg_lifecycle.conf), run by the postgres OS user in
# a copy of the tree it owns; modification times are kept, so what was built
# above is up to date there.  One make per suite (and per TAP file): each has
# its own log and tally.  The temp instances' socket directories go in the
# work directory too (TMPDIR), which that user can write.
tar --exclude=./.git --exclude=./build -cf - . | tar -C "$WORK" -xf -
[ "$(id -u)" -eq 0 ] && chown -R postgres: "$WORK"
unset MAKEFLAGS MFLAGS MAKELEVEL   # this script's own make calls stand alone
installcheck() {  # installcheck LOG VARIABLE=VALUE...: make installcheck of one suite
    local log=$1; shift
    (cd "$WORK" && as_pg env TMPDIR="$WORK" make -s installcheck PG_CONFIG="$PG_CONFIG" REGRESS= ISOLATION= \
        TAP_TESTS= "$@") > "$log" 2>&1
}

PASSED=0
FAILED=0
tally() {  # tally SUITE PASSED FAILED
    echo "-- $1: $2 passed, $3 failed"
    PASSED=$((PASSED + $2))
    FAILED=$((FAILED + $3))
}

# Count pg_regress-style result lines; a run that fails with no result line
# (the instance did not start, say) counts as one failure.
count_regress() {  # count_regress NAME LOG RC
    local ok bad
    ok=$(grep -cE '\.\.\. ok|^ok [0-9]+' "$2")
    bad=$(grep -cE '\.\.\. FAILED|^not ok [0-9]+' "$2")
    [ "$3" -ne 0 ] && [ "$bad" -eq 0 ] && bad=1
    tally "$1" "$ok" "$bad"
}

# A crash-restart need not show in the results (the test that crashed may
# even expect an error), but the temp instance's server log tells: a crash
# there counts one more failure for the suite.
check_crash_log() {  # check_crash_log NAME POSTMASTER_LOG
    local hits
    hits=$(grep -E 'terminated by signal|terminating any other active server processes|was terminated by exception' "$2" 2>/dev/null)
    [ -z "$hits" ] && return 0
    echo "---- $2: crash-restart during the suite"
    echo "$hits"
    tally "$1 (crash-restart during the suite)" 0 1
}

show_diffs() {
    [ -f "$1" ] && { echo "---- $1 (first 200 lines)"; head -200 "$1"; }
}

# Ports of the temp instances (they listen on a private socket directory only;
# pg_regress picks a free port when none is given).
port_opt() { [ -n "${1:-}" ] && echo "EXTRA_REGRESS_OPTS=--port=$1"; }

if want lint; then
echo "== lint (test/lint.sh)"
if bash test/lint.sh; then tally lint 1 0; else tally lint 0 1; fi
fi

if want regress; then
REGRESS_TESTS=${REGRESS_TESTS:-$(cd sql && ls *.sql | sed 's/\.sql$//' | tr '\n' ' ')}
echo "== pg_regress (make installcheck): $REGRESS_TESTS"
installcheck "$WORK/regress.log" REGRESS="$REGRESS_TESTS" $(port_opt "${REGRESS_PORT:-}")
rc=$?
cat "$WORK/regress.log"
count_regress regress "$WORK/regress.log" $rc
check_crash_log regress "$WORK/log/postmaster.log"
[ $rc -ne 0 ] && show_diffs "$WORK/regression.diffs"
fi

if want isolation; then
ISOLATION_TESTS=${ISOLATION_TESTS:-$(cd test/isolation/specs && ls *.spec 2>/dev/null | sed 's/\.spec$//' | tr '\n' ' ')}
echo "== isolation (make installcheck): $ISOLATION_TESTS"
installcheck "$WORK/isolation.log" ISOLATION="$ISOLATION_TESTS" $(port_opt "${ISOLATION_PORT:-}")
rc=$?
cat "$WORK/isolation.log"
count_regress isolation "$WORK/isolation.log" $rc
check_crash_log isolation "$WORK/output_iso/log/postmaster.log"
[ $rc -ne 0 ] && show_diffs "$WORK/output_iso/regression.diffs"
fi

if want tap; then
echo "== TAP (make installcheck)"
tap_ok=0; tap_bad=0
tap_files=$(cd test/t && ls *.pl)
[ -n "${TAP_TESTS:-}" ] && tap_files=$TAP_TESTS
for name in $tap_files; do
    name=$(basename "$name")
    installcheck "$WORK/tap-$name.log" TAP_TESTS=1 PROVE_TESTS="test/t/$name" PROVE_FLAGS=-v
    rc=$?
    cat "$WORK/tap-$name.log"
    ok=$(grep -cE '^ *ok [0-9]+' "$WORK/tap-$name.log")
    bad=$(grep -cE '^ *not ok [0-9]+' "$WORK/tap-$name.log")
    [ $rc -ne 0 ] && [ "$bad" -eq 0 ] && bad=1
    # Each run starts with an empty tmp_check: keep this file's logs aside.
    mv "$WORK/tmp_check/log" "$WORK/tap-${name%.pl}.logs" 2>/dev/null
    if [ $rc -ne 0 ]; then
        for f in "$WORK/tap-${name%.pl}.logs"/*"${name%.pl}"*.log; do
            [ -f "$f" ] && { echo "---- $f (last 60 lines)"; tail -60 "$f"; }
        done
    fi
    tap_ok=$((tap_ok + ok)); tap_bad=$((tap_bad + bad))
done
tally TAP $tap_ok $tap_bad
fi

if want clients; then
echo "== clients (test/clients: application code through real drivers)"
if /usr/bin/python3 -c 'import sqlalchemy, asyncpg' 2>/dev/null; then
    cdir="$WORK/clients"; mkdir -p "$cdir"; [ "$(id -u)" -eq 0 ] && chown postgres: "$cdir"
    port=${CLIENTS_PORT:-56170}
    as_pg "$PGBIN/initdb" -D "$cdir/data" -A trust >/dev/null 2>&1
    printf "shared_preload_libraries = 'pg_lifecycle'\nlifecycle.enabled = off\nport = %s\nunix_socket_directories = '%s'\nlisten_addresses = ''\n" \
        "$port" "$cdir" >> "$cdir/data/postgresql.conf"
    c_ok=0; c_bad=0
    if as_pg "$PGBIN/pg_ctl" -D "$cdir/data" -l "$cdir/log" -w start >/dev/null; then
        for t in "$WORK"/test/clients/*.py; do
            as_pg /usr/bin/python3 "$t" "postgresql+asyncpg://postgres@/postgres?host=$cdir&port=$port" \
                > "$cdir/$(basename "$t").log" 2>&1
            rc=$?
            cat "$cdir/$(basename "$t").log"
            ok=$(grep -cE '^ok [0-9]+' "$cdir/$(basename "$t").log")
            bad=$(grep -cE '^not ok [0-9]+' "$cdir/$(basename "$t").log")
            [ $rc -ne 0 ] && [ "$bad" -eq 0 ] && bad=1
            c_ok=$((c_ok + ok)); c_bad=$((c_bad + bad))
        done
        as_pg "$PGBIN/pg_ctl" -D "$cdir/data" -m fast -w stop >/dev/null
    else
        cat "$cdir/log"; c_bad=1
    fi
    tally clients $c_ok $c_bad
    check_crash_log clients "$cdir/log"
else
    echo "clients: python3-sqlalchemy / python3-asyncpg not installed, skipped"
fi
fi

if want unit; then
echo "== C++ unit tests (ctest)"
unit_log="$WORK/unit.log"
{
    cmake -S "$ROOT" -B "$ROOT/build" -DCMAKE_BUILD_TYPE=Debug >/dev/null &&
    cmake --build "$ROOT/build" -j"$(nproc)" --target unit_tests >/dev/null &&
    (cd "$ROOT/build" && ctest --output-on-failure)
} > "$unit_log" 2>&1
rc=$?
cat "$unit_log"
line=$(grep -E 'tests passed, [0-9]+ tests? failed out of [0-9]+' "$unit_log" | tail -1)
if [ -n "$line" ]; then
    total=$(echo "$line" | sed -E 's/.*out of ([0-9]+).*/\1/')
    bad=$(echo "$line" | sed -E 's/.*passed, ([0-9]+) tests? failed.*/\1/')
    tally unit $((total - bad)) "$bad"
else
    tally unit 0 1
fi
fi

echo
echo "$PASSED passed, $FAILED failed"
[ "$FAILED" -eq 0 ] && [ "$PASSED" -gt 0 ]
