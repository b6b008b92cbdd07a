#!/usr/bin/env bash
# The rules of the security model that a grep can hold (README "Security
# model"): prints one line per violation and exits non-zero if there is any.
#  - SQL is prepared and executed only in src/bridge/spi.cpp, where every
#    statement runs with search_path pinned (StatementScope);
#  - the current role is switched only in src/bridge/security.cpp (AsRole:
#    a security-restricted operation whose settings are rolled back);
#  - our schema is never looked up by its name;
#  - every SECURITY DEFINER function of the current version pins search_path.
cd "$(dirname "$0")/.."
bad=0
report() { echo "lint: $1"; bad=1; }

while IFS= read -r hit; do report "SQL run outside the bridge: $hit"; done < <(
    grep -rnE 'SPI_(execute|prepare|exec\(|cursor_open)' src --include='*.cpp' --include='*.hpp' | grep -v '^src/bridge/spi\.cpp:')
while IFS= read -r hit; do report "role switched outside bridge::AsRole: $hit"; done < <(
    grep -rn 'SetUserIdAndSecContext' src --include='*.cpp' --include='*.hpp' | grep -v '^src/bridge/security\.cpp:')
while IFS= read -r hit; do report "schema looked up by name: $hit"; done < <(
    grep -rn 'get_namespace_oid("lifecycle"' src --include='*.cpp' --include='*.hpp')
version=$(sed -n "s/^default_version = '\(.*\)'/\1/p" pg_lifecycle.control)
while IFS= read -r hit; do report "SECURITY DEFINER without a pinned search_path: $hit"; done < <(
    grep -rn 'SECURITY DEFINER' "src/sql/$version" | grep -v 'SECURITY DEFINER SET search_path = pg_catalog, pg_temp')
[ $bad -eq 0 ] && echo "lint: ok"
exit $bad
