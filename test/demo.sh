#!/usr/bin/env bash
# make demo: install what is missing, build, install, start a throwaway
# cluster with pg_lifecycle preloaded, walk through test/demo.sql, stop it.
set -euo pipefail
cd "$(dirname "$0")/.."

bash test/deps.sh
. test/common.sh
echo "== building and installing pg_lifecycle"
build_and_install

make_workdir demo
trap 'stop_clusters; rm -rf "$WORK"' EXIT
PORT=${DEMO_PORT:-56170}
as_pg initdb -D "$WORK/data" -A trust --no-sync >/dev/null
cat >> "$WORK/data/postgresql.conf" <<CONF
port = $PORT
listen_addresses = ''
unix_socket_directories = '$WORK'
shared_preload_libraries = 'pg_lifecycle'
lifecycle.naptime = '1s'
CONF
as_pg pg_ctl -D "$WORK/data" -l "$WORK/server.log" -w start >/dev/null
echo "== throwaway cluster on port $PORT (socket in $WORK), pg_lifecycle preloaded"
cp test/demo.sql "$WORK/demo.sql"; [ "$(id -u)" -eq 0 ] && chown postgres: "$WORK/demo.sql"
as_pg psql -X -h "$WORK" -p "$PORT" -d postgres -v ON_ERROR_STOP=1 -f "$WORK/demo.sql"
echo "== stopping the cluster"
