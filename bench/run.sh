#!/usr/bin/env bash
# make bench: install what is missing, build, install, then run every
# bench/<capability>.sh, each on its own throwaway cluster, and print their
# result lines:
#   <name>: ours=<x> baseline=<y> ratio=<r> target=<t> PASS|FAIL
# (raw figures on lines starting with '#').  Ratios are what we track: the
# absolute numbers vary from run to run on shared machines.
#
# BENCHES="expiry ..." picks scripts; SKIP_BUILD=1 skips the package check,
# build and install; KEEP_BENCH_OUTPUT=1 keeps each work directory.
# Exits non-zero when a script could not run to the end; a FAIL verdict alone
# does not change the exit status.  Not part of make test.
set -uo pipefail
cd "$(dirname "$0")/.."

if [ -z "${SKIP_BUILD:-}" ]; then
    bash test/deps.sh || exit 1
fi
. test/common.sh
if [ -z "${SKIP_BUILD:-}" ]; then
    echo "# build and install"
    build_and_install || { echo "bench: build failed" >&2; exit 1; }
fi

if [ -n "${BENCHES:-}" ]; then
    scripts=()
    for b in $BENCHES; do scripts+=("bench/$b.sh"); done
else
    scripts=()
    for f in bench/*.sh; do
        case "$(basename "$f")" in run.sh|common.sh) ;; *) scripts+=("$f") ;; esac
    done
fi

errors=0
out=$(mktemp)
trap 'rm -f "$out"' EXIT
for s in "${scripts[@]}"; do
    echo "# == $s"
    bash "$s" 2>&1 | tee -a "$out"
    rc=${PIPESTATUS[0]}
    if [ "$rc" -ne 0 ]; then
        echo "# $s exited with status $rc"
        errors=$((errors + 1))
    fi
done

pass=$(grep -cE '^[^#].* PASS$' "$out")
fail=$(grep -cE '^[^#].* FAIL$' "$out")
echo "# bench: $pass PASS, $fail FAIL, $errors script(s) failed to run"
[ "$errors" -eq 0 ]
