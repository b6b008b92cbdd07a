#!/usr/bin/env bash
# Builds Citus from the vendored source tarball (../shared/vendor/citus-*.tar.gz,
# beside the clone) once per PostgreSQL version, in a cache outside the clone,
# and installs it into that PostgreSQL (its pkglibdir and sharedir, as Citus's
# own `make install` does).  Used by test/citus.sh (make test-citus).
#
# Cache: $PG_LIFECYCLE_CITUS_CACHE (default /var/cache/pg_lifecycle/citus)/<PostgreSQL version>/
#   citus-<version>/  the configured, built source tree
#   built             stamp: the tarball's sha256 it was built from
# A second run only checks the stamp and that citus.so is still installed
# (reinstalling from the cached tree when PostgreSQL's packages were reinstalled).
set -euo pipefail
cd "$(dirname "$0")/.."
. test/pg_config.sh

CITUS_VERSION=${CITUS_VERSION:-13.2.2}
TARBALL=${CITUS_TARBALL:-../shared/vendor/citus-$CITUS_VERSION.tar.gz}
[ -f "$TARBALL" ] || { echo "citus: $TARBALL not found (the shared vendor directory beside the clone)" >&2; exit 1; }
TARBALL=$(realpath "$TARBALL")

PGVER=$("$PG_CONFIG" --version | awk '{print $2}')
CACHE=${PG_LIFECYCLE_CITUS_CACHE:-/var/cache/pg_lifecycle/citus}/$PGVER
SRC=$CACHE/citus-$CITUS_VERSION
SUM=$(sha256sum "$TARBALL" | awk '{print $1}')
PKGLIB=$("$PG_CONFIG" --pkglibdir)
SHARE=$("$PG_CONFIG" --sharedir)

installed() {
    [ -f "$PKGLIB/citus.so" ] && [ -f "$SHARE/extension/citus.control" ] &&
        grep -q "default_version = '${CITUS_VERSION%.*}" "$SHARE/extension/citus.control"
}

if [ -f "$CACHE/built" ] && [ "$(cat "$CACHE/built")" = "$SUM" ]; then
    if installed; then
        echo "citus: $CITUS_VERSION for PostgreSQL $PGVER already built and installed ($CACHE)"
        exit 0
    fi
    echo "citus: reinstalling the cached build ($CACHE)"
    make -C "$SRC" -s install >/dev/null
    exit 0
fi

# Build dependencies (libcurl, lz4, zstd; the server headers come with make test's packages).
packages=(make gcc postgresql-server-dev-"$(pg_major)" libcurl4-openssl-dev liblz4-dev libzstd-dev libkrb5-dev)
missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    echo "citus: installing missing packages: ${missing[*]}"
    [ "$(id -u)" -eq 0 ] || { echo "citus: not root; install them with: sudo apt-get install -y ${missing[*]}" >&2; exit 1; }
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q
    apt-get install -y -q -o DPkg::Lock::Timeout=600 --no-install-recommends "${missing[@]}"
fi

echo "citus: building $CITUS_VERSION for PostgreSQL $PGVER in $CACHE (once; about 2-5 minutes)"
rm -rf "$CACHE"
mkdir -p "$CACHE"
tar xzf "$TARBALL" -C "$CACHE"
# The one patch: PostgreSQL 15.20's commands/dbcommands.h declares
# have_createdb_privilege(), which Citus's pg_version_compat.h also defines
# (static) for PostgreSQL 15.  Rename Citus's copy and point the old name at it.
compat=$SRC/src/include/pg_version_compat.h
grep -q '^have_createdb_privilege(void)' "$compat" || { echo "citus: patch target not found in $compat" >&2; exit 1; }
sed -i 's/^have_createdb_privilege(void)$/citus_have_createdb_privilege(void)/' "$compat"
sed -i 's/^typedef bool TU_UpdateIndexes;$/#define have_createdb_privilege() citus_have_createdb_privilege()\n\ntypedef bool TU_UpdateIndexes;/' "$compat"
grep -q 'define have_createdb_privilege() citus_have_createdb_privilege()' "$compat" || { echo "citus: patch failed" >&2; exit 1; }

(cd "$SRC" && ./configure -q PG_CONFIG="$PG_CONFIG" >/dev/null)
nice -n 19 make -C "$SRC" -s -j"${CITUS_JOBS:-2}" >/dev/null
make -C "$SRC" -s install >/dev/null
echo "$SUM" > "$CACHE/built"
installed || { echo "citus: installed files not found after make install" >&2; exit 1; }
echo "citus: built and installed"
