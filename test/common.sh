# Shared by test/run.sh, test/demo.sh and bench/run.sh: locations, running
# as the postgres OS user (PostgreSQL refuses to run as root), and cleanup of
# every cluster started under the work directory.

PG_CONFIG=${PG_CONFIG:-/usr/lib/postgresql/15/bin/pg_config}
PGBIN=$("$PG_CONFIG" --bindir)
PGXS_SRC=$(dirname "$("$PG_CONFIG" --pgxs)")/..   # .../lib/pgxs/src

# Run a command as the postgres OS user when we are root, else as ourselves.
as_pg() {
    if [ "$(id -u)" -eq 0 ]; then
        runuser -u postgres -- env PATH="$PGBIN:$PATH" "$@"
    else
        env PATH="$PGBIN:$PATH" "$@"
    fi
}

# A private work directory owned by whoever runs the clusters.
make_workdir() {
    WORK=$(mktemp -d "/tmp/pg_lifecycle_$1.XXXXXX")
    chmod 755 "$WORK"
    [ "$(id -u)" -eq 0 ] && chown postgres: "$WORK"
    return 0
}

# Stop every postmaster whose data directory is under $WORK.
stop_clusters() {
    [ -n "${WORK:-}" ] && [ -d "$WORK" ] || return 0
    local pidfile
    while IFS= read -r pidfile; do
        as_pg "$PGBIN/pg_ctl" -D "$(dirname "$pidfile")" stop -m immediate -w >/dev/null 2>&1 || true
    done < <(find "$WORK" -name postmaster.pid 2>/dev/null)
}

build_and_install() {
    make -s -j"$(nproc)" >/dev/null || return 1
    if [ -w "$("$PG_CONFIG" --pkglibdir)" ]; then
        make -s install >/dev/null || return 1
    else
        sudo make -s install >/dev/null || return 1
    fi
}
