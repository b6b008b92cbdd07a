#!/usr/bin/env bash
# bench/softdelete_restore: lifecycle.restore of a cascaded delete event
# against the soft DELETE that made it (SPEC §1 / issue 14: restore <= 3x the
# DELETE's time).  Two shapes of about 200k rows each, in one transaction per
# statement, each on fresh tables:
#   wide: one user, RESTORE_ROWS posts (ON DELETE CASCADE)
#   deep: one organisation -> RESTORE_USERS users -> posts (RESTORE_ROWS in all),
#         and each post's comments -> the posts' author (a second foreign key
#         into users) so restore has parents to check.
set -uo pipefail
. "$(dirname "$0")/common.sh"

ROWS=${RESTORE_ROWS:-200000}      # rows under the deleted parent
USERS=${RESTORE_USERS:-2000}       # users under the organisation (deep)
REPEAT=${RESTORE_REPEAT:-3}        # runs per shape, best kept

bench_start_cluster softdelete_restore "synchronous_commit = off" || exit 1
bench_sql "CREATE EXTENSION pg_lifecycle" || exit 1

make_tables() {  # make_tables SHAPE
    bench_sql_file - <<SQL || return 1
SET client_min_messages = warning;
DROP TABLE IF EXISTS posts, users, orgs CASCADE;
CREATE TABLE orgs (id int PRIMARY KEY, name text NOT NULL);
CREATE TABLE users (id int PRIMARY KEY, org_id int NOT NULL REFERENCES orgs ON DELETE CASCADE, email text NOT NULL);
CREATE INDEX ON users (org_id);
CREATE TABLE posts (id int PRIMARY KEY, user_id int NOT NULL REFERENCES users ON DELETE CASCADE,
                    editor_id int REFERENCES users ON DELETE SET NULL, body text NOT NULL);
CREATE INDEX ON posts (user_id);
CREATE INDEX ON posts (editor_id);
INSERT INTO orgs VALUES (1, 'acme'), (2, 'other');
SQL
    case $1 in
        wide) bench_sql_file - <<SQL || return 1
INSERT INTO users VALUES (1, 1, 'a@x'), (2, 2, 'b@x');
INSERT INTO posts SELECT g, 1, 2, md5(g::text) FROM generate_series(1, $ROWS) g;
SQL
            ;;
        deep) bench_sql_file - <<SQL || return 1
INSERT INTO users SELECT g, 1, 'u' || g || '@x' FROM generate_series(1, $USERS) g;
INSERT INTO users VALUES ($USERS + 1, 2, 'editor@x');
INSERT INTO posts SELECT g, 1 + g % $USERS, $USERS + 1, md5(g::text) FROM generate_series(1, $ROWS - $USERS) g;
SQL
            ;;
    esac
    bench_sql "SELECT lifecycle.soft_delete_enable(t) FROM unnest('{orgs,users,posts}'::regclass[]) t" >/dev/null &&
        bench_sql "VACUUM ANALYZE orgs, users, posts" && bench_sql "CHECKPOINT"
}

declare -A del res
for shape in wide deep; do
    del[$shape]=0; res[$shape]=0
    case $shape in wide) parent=users ;; deep) parent=orgs ;; esac
    for ((r = 1; r <= REPEAT; r++)); do
        make_tables "$shape" || exit 1
        d=$(bench_timed_ms "DELETE FROM $parent WHERE id = 1")
        n=$(bench_sql "SET lifecycle.include_deleted = on;
                       SELECT (SELECT count(*) FROM users WHERE deleted_at IS NOT NULL) +
                              (SELECT count(*) FROM posts WHERE deleted_at IS NOT NULL) +
                              (SELECT count(*) FROM orgs WHERE deleted_at IS NOT NULL)")
        t=$(bench_timed_ms "SELECT lifecycle.restore('$parent', 1)")
        left=$(bench_sql "SET lifecycle.include_deleted = on;
                          SELECT (SELECT count(*) FROM users WHERE deleted_at IS NOT NULL) +
                                 (SELECT count(*) FROM posts WHERE deleted_at IS NOT NULL) +
                                 (SELECT count(*) FROM orgs WHERE deleted_at IS NOT NULL)")
        echo "# $shape run $r: DELETE $d ms ($n rows soft-deleted), restore $t ms ($left rows still deleted)"
        [ "$left" = 0 ] || { echo "# restore left $left rows deleted"; exit 1; }
        [ "$n" -ge "$ROWS" ] || { echo "# the DELETE soft-deleted $n rows, fewer than $ROWS"; exit 1; }
        del[$shape]=$(awk -v a="${del[$shape]}" -v b="$d" 'BEGIN { print (a == 0 || b < a) ? b : a }')
        res[$shape]=$(awk -v a="${res[$shape]}" -v b="$t" 'BEGIN { print (a == 0 || b < a) ? b : a }')
    done
done

echo "# rows=$ROWS users=$USERS synchronous_commit=off; best of $REPEAT runs per shape"
bench_result softdelete_restore_wide_time "$(f0 "${res[wide]}")" "$(f0 "${del[wide]}")" 3 lower
bench_result softdelete_restore_deep_time "$(f0 "${res[deep]}")" "$(f0 "${del[deep]}")" 3 lower
