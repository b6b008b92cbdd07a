# Which PostgreSQL to build and test against, as PGXS users expect: $PG_CONFIG
# when set; else /usr/lib/postgresql/$PG/bin/pg_config when $PG (a major
# version) is set; else pg_config from the PATH (on Debian, postgresql-common's
# wrapper: the newest installed server-dev); else the newest installed
# /usr/lib/postgresql/*/bin/pg_config.  Sourced by deps.sh and common.sh;
# the Makefile and CMakeLists.txt follow the same order.  Safe under set -euo
# pipefail when nothing is installed yet (PG_CONFIG is then empty).
if [ -z "${PG_CONFIG:-}" ]; then
    if [ -n "${PG:-}" ]; then
        PG_CONFIG=/usr/lib/postgresql/$PG/bin/pg_config
    elif command -v pg_config >/dev/null 2>&1; then
        PG_CONFIG=$(command -v pg_config)
    else
        PG_CONFIG=$(ls -d /usr/lib/postgresql/*/bin/pg_config 2>/dev/null | sort -V | tail -1 || true)
    fi
fi
export PG_CONFIG

# pg_major: the major version of $PG_CONFIG's PostgreSQL, or $PG, or 15 (the
# version of Debian 12, when nothing is installed yet).
pg_major() {
    local v=""
    [ -n "$PG_CONFIG" ] && v=$("$PG_CONFIG" --version 2>/dev/null | sed -nE 's/^PostgreSQL ([0-9]+).*/\1/p')
    echo "${v:-${PG:-15}}"
}
