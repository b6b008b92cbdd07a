#!/usr/bin/env bash
# make installcheck as root (the Makefile calls this with the make command):
# PostgreSQL refuses to run as root, and the postgres OS user may not be able
# to read or write this tree, so the suites run as that user in a copy of the
# tree it owns, under ${TMPDIR:-/tmp} (and with TMPDIR there, for the temp
# instances' socket directories).  The copy is removed when every suite
# passed; otherwise it is kept, with the results and server logs.
#   usage: test/as_postgres.sh MAKE [ARGUMENTS...]
set -euo pipefail
cd "$(dirname "$0")/.."
[ $# -ge 1 ] || { echo "usage: test/as_postgres.sh MAKE [ARGUMENTS...]" >&2; exit 2; }
id postgres >/dev/null 2>&1 ||
    { echo "pg_lifecycle: make installcheck as root runs as the postgres OS user, and there is none" >&2; exit 1; }

work=$(mktemp -d "${TMPDIR:-/tmp}/pg_lifecycle_installcheck.XXXXXX")
chmod 755 "$work"
# Modification times are kept, so what is built here is up to date there.
tar --exclude=./.git --exclude=./build -cf - . | tar -C "$work" -xf -
chown -R postgres: "$work"

make=$1; shift
rc=0
runuser -u postgres -- env TMPDIR="$work" "$make" -C "$work" "$@" || rc=$?
if [ $rc -eq 0 ]; then
    rm -rf "$work"
else
    echo "pg_lifecycle: results and server logs kept in $work" >&2
fi
exit $rc
