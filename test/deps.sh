#!/usr/bin/env bash
# Installs the Debian packages pg_lifecycle needs to build, test and demo,
# when they are missing.  Used by `make test`, `make demo` and `make bench`; the
# PostgreSQL packages are those of the version test/pg_config.sh picks.
set -euo pipefail
. "$(dirname "$0")/pg_config.sh"
N=$(pg_major)

packages=(
    make g++ cmake                      # build
    postgresql-$N postgresql-server-dev-$N postgresql-client-$N   # server, PGXS, pg_regress, pgbench
    libboost-dev libfmt-dev             # Boost.Container, fmt
    libipc-run-perl                     # TAP tests (PostgreSQL::Test::Cluster)
    libgtest-dev                        # C++ unit tests
    python3-sqlalchemy python3-asyncpg  # client tests (test/clients)
)

missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0

echo "pg_lifecycle: installing missing packages: ${missing[*]}"
if [ "$(id -u)" -ne 0 ]; then
    echo "pg_lifecycle: not root; install them with: sudo apt-get install -y ${missing[*]}" >&2
    exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -q
# policy-rc.d keeps the package from starting the distribution's own cluster.
created_policy=0
if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
    chmod +x /usr/sbin/policy-rc.d
    created_policy=1
fi
apt-get install -y -q --no-install-recommends "${missing[@]}"
[ $created_policy -eq 1 ] && rm -f /usr/sbin/policy-rc.d
exit 0
