#!/usr/bin/env bash
# make test PG=N for a PostgreSQL major version this Debian 12 machine has no
# package of: runs the whole suite (test/run.sh) inside a Debian chroot that
# ships it — trixie for 17, sid for 18 — as in CONVENTIONS.md ("Other
# PostgreSQL versions").
#
# The chroot is set up once and cached outside the clone, under
# /var/cache/pg_lifecycle/chroots/<release> (PG_LIFECYCLE_CHROOTS overrides);
# a run bind-mounts the source read-only, builds a copy of it inside the chroot
# (the clone's own objects stay those of the host's version) and unmounts
# everything it mounted, also when it fails or is interrupted.  Runs of the
# same chroot are serialised with a lock.  Needs root.
#
# The environment variables test/run.sh knows (SUITES, REGRESS_PORT,
# ISOLATION_PORT, KEEP_TEST_OUTPUT, ...) are passed through.
set -euo pipefail
cd "$(dirname "$0")/.."
SRC=$PWD

PG=${1:?usage: test/chroot.sh MAJOR_VERSION [--setup-only]}
case "$PG" in
    17) RELEASE=trixie ;;
    18) RELEASE=sid ;;
    *) echo "pg_lifecycle: no chroot known for PostgreSQL $PG (17: trixie, 18: sid)" >&2
       echo "0 passed, 1 failed"; exit 1 ;;
esac
fail() { echo "pg_lifecycle: $*" >&2; echo "0 passed, 1 failed"; exit 1; }
[ "$(id -u)" -eq 0 ] || fail "make test PG=$PG sets up a chroot and needs root"

CACHE=${PG_LIFECYCLE_CHROOTS:-/var/cache/pg_lifecycle/chroots}
R=$CACHE/$RELEASE
mkdir -p "$CACHE"
exec 9>"$CACHE/$RELEASE.lock"
flock 9

PACKAGES=(postgresql-$PG postgresql-server-dev-$PG postgresql-client-$PG
          make g++ cmake libboost-dev libfmt-dev libipc-run-perl libgtest-dev perl procps python3-sqlalchemy python3-asyncpg)

# Everything mounted below $R, innermost last; unmounted in reverse order.
MOUNTED=()
unmount_all() {
    local i
    for ((i = ${#MOUNTED[@]} - 1; i >= 0; i--)); do
        umount "${MOUNTED[i]}" 2>/dev/null || umount -l "${MOUNTED[i]}" 2>/dev/null ||
            echo "pg_lifecycle: could not unmount ${MOUNTED[i]}" >&2
    done
    MOUNTED=()
}
trap unmount_all EXIT
trap 'exit 130' INT TERM
mount_system() {
    mount -t proc proc "$R/proc" && MOUNTED+=("$R/proc")
    local d
    for d in sys dev dev/pts dev/shm; do
        mkdir -p "$R/$d"
        mount --bind "/$d" "$R/$d" && MOUNTED+=("$R/$d")
    done
}

setup() {
    echo "== setting up a $RELEASE chroot for PostgreSQL $PG in $R (once)"
    local start=$SECONDS
    if ! command -v debootstrap >/dev/null; then
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q debootstrap ||
            { apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q debootstrap; } || return 1
    fi
    # The mirror the host's apt uses.
    local mirror
    mirror=$(awk '/^URIs:/ {print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)
    [ -n "$mirror" ] || mirror=$(awk '$1 == "deb" {print $2; exit}' /etc/apt/sources.list 2>/dev/null || true)
    [ -n "$mirror" ] || mirror=http://deb.debian.org/debian
    rm -rf "$R"
    debootstrap --variant=minbase "$RELEASE" "$R" "$mirror" > "$CACHE/$RELEASE.debootstrap.log" 2>&1 ||
        { tail -20 "$CACHE/$RELEASE.debootstrap.log"; return 1; }
    echo "-- debootstrap: $((SECONDS - start)) s"
    printf 'Acquire::Check-Valid-Until "false";\nAcquire::Check-Date "false";\n' > "$R/etc/apt/apt.conf.d/99dates"
    printf '#!/bin/sh\nexit 101\n' > "$R/usr/sbin/policy-rc.d"; chmod +x "$R/usr/sbin/policy-rc.d"
    mkdir -p "$R/etc/postgresql-common"
    echo 'create_main_cluster = false' > "$R/etc/postgresql-common/createcluster.conf"
    mount_system
    chroot "$R" env DEBIAN_FRONTEND=noninteractive apt-get update -q > "$CACHE/$RELEASE.apt.log" 2>&1 &&
    chroot "$R" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
        "${PACKAGES[@]}" >> "$CACHE/$RELEASE.apt.log" 2>&1 ||
        { tail -20 "$CACHE/$RELEASE.apt.log"; unmount_all; return 1; }
    chroot "$R" apt-get clean
    unmount_all
    echo "$PG" > "$R/.pg_lifecycle-ready"
    echo "-- chroot set up in $((SECONDS - start)) s"
}

# Mounts left under $R by a run that was killed (we hold the lock: no run is
# using them) are removed first; setup's rm -rf must never reach into them.
mounts_under_root() { awk -v r="$R/" 'index($2, r) == 1 {print $2}' /proc/mounts | sort -r; }
for m in $(mounts_under_root); do umount "$m" 2>/dev/null || umount -l "$m"; done
[ -z "$(mounts_under_root)" ] || fail "could not unmount what a previous run left mounted under $R"

[ -f "$R/.pg_lifecycle-ready" ] || setup || fail "setting up the $RELEASE chroot failed (logs in $CACHE)"
[ "${2:-}" = "--setup-only" ] && exit 0

echo "== PostgreSQL $PG in the $RELEASE chroot $R"
mount_system
mkdir -p "$R/build/src"
mount --bind "$SRC" "$R/build/src" && MOUNTED+=("$R/build/src")
mount -o remount,bind,ro "$R/build/src" || true

# Pass test/run.sh's settings through a clean environment.
envs=(PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LANG=C.UTF-8
      PG_CONFIG=/usr/lib/postgresql/$PG/bin/pg_config)
for v in SUITES REGRESS_TESTS ISOLATION_TESTS TAP_TESTS KEEP_TEST_OUTPUT REGRESS_PORT ISOLATION_PORT \
         SD_MODEL_SEED SD_MODEL_ROUNDS SD_MODEL_STEPS; do
    [ -n "${!v:-}" ] && envs+=("$v=${!v}")
done
rc=0
chroot "$R" env -i "${envs[@]}" bash -c '
    set -e
    rm -rf /build/work && mkdir -p /build/work
    tar -C /build/src --exclude=./build --exclude=./.git -cf - . | tar -C /build/work -xf -
    cd /build/work
    make -s clean >/dev/null 2>&1 || true
    exec bash test/run.sh' || rc=$?
exit $rc
