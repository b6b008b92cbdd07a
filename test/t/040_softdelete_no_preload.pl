# Soft delete without shared_preload_libraries (SPEC.md §1, "Safety net"): a
# DELETE on a protected table never removes a row, even when the planner hook
# is not there to turn it into an UPDATE.  The BEFORE DELETE trigger (a C
# function: calling it loads the library into the backend) soft-deletes each
# row itself and skips the physical delete, so the DELETE reports 0 rows and
# a WARNING says why.  Once loaded, the library's planner hook serves the
# rest of that session, so only the first DELETE of a fresh backend takes the
# trigger path.  Every psql call below is a new connection, i.e. a fresh
# backend without the library.
#
# Then the same cluster with session_preload_libraries (no restart), and
# finally restarted with shared_preload_libraries: DELETE reports its rows
# and warns of nothing.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $warning = qr/WARNING:  (?:01000: )?pg_lifecycle soft-deleted rows of public\.(\w+), but this DELETE reports 0 rows/;

my $node = PostgreSQL::Test::Cluster->new('no_preload');
$node->init;
$node->append_conf('postgresql.conf', "lifecycle.enabled = off\n");
$node->start;

# Runs $sql in a new connection (as $user when given) with command tags shown
# (psql -q hides them); returns (exit code, stdout, stderr).
sub run {
    my ($sql, $user) = @_;
    my %params;
    $params{connstr} = $node->connstr('postgres') . " user=$user" if defined $user;
    return $node->psql('postgres', "\\set QUIET off\n\\set VERBOSITY verbose\n$sql", %params);
}

# Every row of $table (deleted or not) as "id:deleted:deleted_by", one line
# per row, seen from a new connection.
sub rows {
    my ($table, $where) = @_;
    $where //= 'true';
    return $node->safe_psql('postgres', qq{
        SET lifecycle.include_deleted = on;
        SELECT string_agg(id || ':' || (deleted_at IS NOT NULL) || ':' || coalesce(deleted_by, '-'), ' ' ORDER BY id)
          FROM $table WHERE $where});
}

# Warnings of a stderr, as the table each names.
sub warned_tables {
    my ($err) = @_;
    my @tables = $err =~ /$warning/g;
    return join(',', @tables);
}

########################################################################
# Setup, as superuser: t (ids 1-20), parent p (1-2) <- child c (10, 11 of
# p 1; 20 of p 2; ON DELETE CASCADE), all enabled; role app may SELECT,
# INSERT, UPDATE and DELETE on t but owns nothing; role deleter may only
# SELECT and DELETE.
########################################################################
$node->safe_psql('postgres', q{
    CREATE EXTENSION pg_lifecycle;
    CREATE TABLE t (id int PRIMARY KEY, name text NOT NULL);
    CREATE TABLE p (id int PRIMARY KEY);
    CREATE TABLE c (id int PRIMARY KEY, p_id int NOT NULL REFERENCES p ON DELETE CASCADE);
    SELECT lifecycle.soft_delete_enable('t');
    SELECT lifecycle.soft_delete_enable('p');
    SELECT lifecycle.soft_delete_enable('c');
    INSERT INTO t SELECT g, 'row' || g FROM generate_series(1, 20) g;
    INSERT INTO p VALUES (1), (2);
    INSERT INTO c VALUES (10, 1), (11, 1), (20, 2);
    CREATE ROLE app LOGIN;
    GRANT SELECT, INSERT, UPDATE, DELETE ON t TO app;
    CREATE ROLE deleter LOGIN;
    GRANT SELECT, DELETE ON t TO deleter;
});
is($node->safe_psql('postgres', q{SHOW shared_preload_libraries}), '', 'the library is not preloaded');
is($node->safe_psql('postgres', q{SELECT h->>'preloaded' FROM lifecycle.health() h}), 'false',
   'health() says it is not preloaded');

########################################################################
# 1. A single-row DELETE in a fresh backend: the trigger keeps the row.
########################################################################
my ($rc, $out, $err) = run(q{
    SET lifecycle.actor = 'tap';
    SELECT count(*) AS loaded_before FROM pg_settings WHERE name = 'lifecycle.include_deleted';
    DELETE FROM t WHERE id = 1;
    DELETE FROM t WHERE id = 2;
});
is($rc, 0, 'fresh backend: DELETE succeeds') or diag("stderr: $err");
is($out, "SET\n0\nDELETE 0\nDELETE 1",
   'fresh backend: the library was not loaded; the first DELETE reports 0 rows, the next one (planner hook now loaded) 1');
is(warned_tables($err), 't', 'exactly one WARNING, naming the table, for the first DELETE');
like($err, qr/DETAIL:  pg_lifecycle is not in shared_preload_libraries/, 'the WARNING says why');
like($err, qr/HINT:  Add pg_lifecycle to shared_preload_libraries/, 'and how to fix it');
like($err, qr/WARNING:  01000: /, 'the WARNING has SQLSTATE 01000');
is(rows('t', 'id <= 3'), '1:true:tap 2:true:tap 3:false:-',
   'rows 1 and 2 still exist, soft-deleted by the actor set before the library was loaded');
is($node->safe_psql('postgres', q{
    SET lifecycle.include_deleted = on;
    SELECT count(DISTINCT delete_event) || ' ' || count(delete_event) FROM t WHERE id IN (1, 2)}),
   '2 2', 'each DELETE got its own delete_event');

# A new connection that has not loaded the library has no planner hook: the
# deleted row is not hidden there (hiding needs the library loaded); as soon
# as the library is loaded in that backend, it is.
($rc, $out, $err) = run(q{
    SELECT string_agg(id::text, ',' ORDER BY id) FROM t WHERE id <= 3;
    SELECT lifecycle._current_actor() IS NOT NULL AS loaded;
    SELECT string_agg(id::text, ',' ORDER BY id) FROM t WHERE id <= 3;
});
is($out, "1,2,3\nt\n3",
   'a fresh backend sees deleted rows 1 and 2 until the library is loaded, then hides them');

# RETURNING: the trigger skipped the delete, so no row comes back.
($rc, $out, $err) = run(q{DELETE FROM t WHERE id = 3 RETURNING id;});
is($out, 'DELETE 0', 'fresh backend: DELETE ... RETURNING returns no row and reports 0');
is(warned_tables($err), 't', 'and warns once');
is(rows('t', 'id = 3'), '3:true:postgres', 'row 3 is soft-deleted, by current_user');

########################################################################
# 2. A bulk DELETE in a fresh backend: every row kept, one event, one
# WARNING; already-deleted rows are left alone.
########################################################################
my $event1 = $node->safe_psql('postgres', q{SET lifecycle.include_deleted = on; SELECT delete_event FROM t WHERE id = 1});
($rc, $out, $err) = run(q{DELETE FROM t WHERE id BETWEEN 1 AND 8;});
is($out, 'DELETE 0', 'fresh backend: a bulk DELETE reports 0 rows');
is(warned_tables($err), 't', 'one WARNING for the whole statement');
is($node->safe_psql('postgres', q{
    SET lifecycle.include_deleted = on;
    SELECT count(*) || ' ' || count(*) FILTER (WHERE deleted_at IS NOT NULL) || ' ' || count(DISTINCT delete_event)
      FROM t WHERE id BETWEEN 4 AND 8}),
   '5 5 1', 'rows 4-8 all still exist, all soft-deleted, under one delete_event');
is($node->safe_psql('postgres', q{
    SET lifecycle.include_deleted = on;
    SELECT count(DISTINCT delete_event) FROM t WHERE id BETWEEN 1 AND 8}),
   '4', 'rows 1, 2 and 3 kept their own events (4 events over rows 1-8)');
is($node->safe_psql('postgres', q{SET lifecycle.include_deleted = on; SELECT delete_event FROM t WHERE id = 1}),
   $event1, 'row 1, deleted before, was not deleted again');
is($node->safe_psql('postgres', q{SET lifecycle.include_deleted = on; SELECT count(*) FROM t}),
   '20', 'no row of t was removed');

########################################################################
# 3. Cascade into an enabled child, from a fresh backend.
########################################################################
($rc, $out, $err) = run(q{DELETE FROM p WHERE id = 1;});
is($out, 'DELETE 0', 'fresh backend: DELETE of parent 1 reports 0 rows');
is(warned_tables($err), 'p', 'one WARNING, naming the parent only');
is(rows('p') . ' | ' . rows('c'), '1:true:postgres 2:false:- | 10:true:postgres 11:true:postgres 20:false:-',
   'parent 1 and its children 10 and 11 are soft-deleted; parent 2 and child 20 untouched');
is($node->safe_psql('postgres', q{
    SET lifecycle.include_deleted = on;
    SELECT count(*) FROM c WHERE delete_event = (SELECT delete_event FROM p WHERE id = 1)}),
   '2', 'the children carry the parent\'s delete_event');
is($node->safe_psql('postgres', q{SELECT lifecycle.restore('p'::regclass, 1)}), '3',
   'restore brings back the parent and its two children');

########################################################################
# 4. Privileges: a role that may DELETE but not UPDATE, and hard delete.
########################################################################
# The DELETE privilege is what a soft delete needs (planner.cpp), also when
# the trigger does the work.
($rc, $out, $err) = run(q{DELETE FROM t WHERE id = 9;}, 'deleter');
is($rc, 0, 'fresh backend, role with DELETE but no UPDATE privilege: DELETE succeeds')
  or diag("stderr: $err");
is($out, 'DELETE 0', 'and reports 0 rows');
is(rows('t', 'id = 9'), '9:true:deleter', 'row 9 is soft-deleted by deleter');

($rc, $out, $err) = run(q{
    SET lifecycle.hard_delete = on;
    DELETE FROM t WHERE id = 10;
}, 'app');
isnt($rc, 0, 'fresh backend, non-owner: DELETE with lifecycle.hard_delete = on fails');
like($err, qr/ERROR:  42501: permission denied to hard-delete from soft-delete table public\.t/,
     'with 42501, naming the table');
is(rows('t', 'id = 10'), '10:false:-', 'row 10 is untouched (neither removed nor soft-deleted)');

($rc, $out, $err) = run(q{
    SET lifecycle.hard_delete = on;
    DELETE FROM t WHERE id = 10;
});
is($out, "SET\nDELETE 1", 'fresh backend, owner: DELETE with lifecycle.hard_delete = on reports 1 row');
is(warned_tables($err), '', 'and no WARNING');
is(rows('t', 'id = 10'), '', 'row 10 is gone for real');

# An ordinary DELETE by the non-owner in a fresh backend soft-deletes as usual.
($rc, $out, $err) = run(q{DELETE FROM t WHERE id = 11;}, 'app');
is($out, 'DELETE 0', 'fresh backend, non-owner: DELETE reports 0 rows');
is(rows('t', 'id = 11'), '11:true:app', 'row 11 is soft-deleted by app');

########################################################################
# 5. session_preload_libraries (no restart needed): every backend loads the
# library at start, so DELETE reports its rows and hides them.
########################################################################
$node->safe_psql('postgres', q{ALTER SYSTEM SET session_preload_libraries = 'pg_lifecycle'; SELECT pg_reload_conf()});
$node->poll_query_until('postgres', q{SELECT setting = 'pg_lifecycle' FROM pg_settings WHERE name = 'session_preload_libraries'})
  or die 'session_preload_libraries not reloaded';
($rc, $out, $err) = run(q{DELETE FROM t WHERE id = 12;});
is($out, 'DELETE 1', 'session_preload_libraries: DELETE reports 1 row');
is(warned_tables($err), '', 'and no WARNING');
is($node->safe_psql('postgres', q{SELECT count(*) FROM t WHERE id = 12}), '0', 'row 12 is hidden in a new backend');
is(rows('t', 'id = 12'), '12:true:postgres', 'and soft-deleted');
$node->safe_psql('postgres', q{ALTER SYSTEM RESET session_preload_libraries; SELECT pg_reload_conf()});
$node->poll_query_until('postgres', q{SELECT setting = '' FROM pg_settings WHERE name = 'session_preload_libraries'})
  or die 'session_preload_libraries not reset';
($rc, $out, $err) = run(q{DELETE FROM t WHERE id = 13;});
is($out, 'DELETE 0', 'session_preload_libraries reset: the trigger path again (DELETE 0)');

########################################################################
# 6. The same node restarted with shared_preload_libraries: the DELETE of a
# fresh backend reports its rows and warns of nothing.
########################################################################
$node->append_conf('postgresql.conf', "shared_preload_libraries = 'pg_lifecycle'\n");
$node->restart;
is($node->safe_psql('postgres', q{SELECT h->>'preloaded' FROM lifecycle.health() h}), 'true', 'health() says preloaded');
($rc, $out, $err) = run(q{DELETE FROM t WHERE id = 14;});
is($out, 'DELETE 1', 'preloaded: DELETE reports 1 row');
is($err, '', 'preloaded: no WARNING');
($rc, $out, $err) = run(q{DELETE FROM t WHERE id BETWEEN 14 AND 17 RETURNING id;});
is($out, "15\n16\n17\nDELETE 3", 'preloaded: a bulk DELETE returns and counts the 3 live rows it soft-deleted');
is($node->safe_psql('postgres', q{SELECT string_agg(id::text, ',' ORDER BY id) FROM t WHERE id BETWEEN 12 AND 18}),
   '18', 'preloaded: a new backend hides the deleted rows at once');
is(rows('t', 'id BETWEEN 14 AND 17'), '14:true:postgres 15:true:postgres 16:true:postgres 17:true:postgres',
   'preloaded: the rows still exist, soft-deleted');
($rc, $out, $err) = run(q{DELETE FROM t WHERE id = 18;}, 'deleter');
is($out, 'DELETE 1', 'preloaded, role with DELETE but no UPDATE privilege: DELETE reports 1 row');
($rc, $out, $err) = run(q{DELETE FROM p WHERE id = 2;});
is($out, 'DELETE 1', 'preloaded: DELETE of parent 2 reports 1 row');
is(rows('c', 'id = 20'), '20:true:postgres', 'preloaded: the cascade soft-deleted child 20');
($rc, $out, $err) = run(q{
    SET lifecycle.hard_delete = on;
    DELETE FROM t WHERE id = 19;
}, 'app');
like($err, qr/ERROR:  42501: permission denied to hard-delete from soft-delete table public\.t/,
     'preloaded, non-owner: hard_delete fails with 42501');
is($node->safe_psql('postgres', q{SET lifecycle.include_deleted = on; SELECT count(*) FROM t}),
   '19', 'only row 10, hard-deleted by its owner, ever left t');

$node->stop;
done_testing();
