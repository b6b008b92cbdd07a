#!/usr/bin/env bash
# make test PG=N: the whole suite against PostgreSQL N.  On this machine when
# it has (or its distribution ships: Debian 12 has 15) that version, or when
# PG_CONFIG already points at it; otherwise in a Debian chroot that ships it
# (test/chroot.sh: 17 in trixie, 18 in sid).
set -uo pipefail
cd "$(dirname "$0")/.."
N=${1:?usage: test/versions.sh MAJOR_VERSION}
case "$N" in ''|*[!0-9]*) echo "pg_lifecycle: PG=$N is not a major version" >&2; echo "0 passed, 1 failed"; exit 1 ;; esac

if [ -n "${PG_CONFIG:-}" ]; then
    have=$("$PG_CONFIG" --version 2>/dev/null | sed -nE 's/^PostgreSQL ([0-9]+).*/\1/p')
    [ "$have" = "$N" ] && exec bash test/run.sh
    unset PG_CONFIG    # another version: PG=N decides
fi
if [ -x "/usr/lib/postgresql/$N/bin/pg_config" ] || [ "$N" = 15 ]; then
    PG=$N exec bash test/run.sh
fi
case "$N" in
    17|18) exec bash test/chroot.sh "$N" ;;
esac
echo "pg_lifecycle: PostgreSQL $N is neither installed nor known to test/chroot.sh (17, 18)" >&2
echo "0 passed, 1 failed"
exit 1
