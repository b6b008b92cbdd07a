# ALTER EXTENSION pg_lifecycle UPDATE: a database created with the frozen 0.1
# script, in use, upgraded to the current version, has the same objects as a
# fresh install and its data still works.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $node = PostgreSQL::Test::Cluster->new('upgrade');
$node->init;
$node->append_conf('postgresql.conf', "shared_preload_libraries = 'pg_lifecycle'\nlifecycle.enabled = off\n");
$node->start;

my $current = $node->safe_psql('postgres',
    q{SELECT default_version FROM pg_available_extensions WHERE name = 'pg_lifecycle'});

$node->safe_psql('postgres', 'CREATE DATABASE old; CREATE DATABASE fresh');
$node->safe_psql('old', q{
    CREATE EXTENSION pg_lifecycle VERSION '0.1';
    CREATE TABLE users (id int PRIMARY KEY, email text);
    CREATE TABLE posts (id int PRIMARY KEY, user_id int REFERENCES users ON DELETE CASCADE);
    INSERT INTO users SELECT g, 'u' || g FROM generate_series(1, 3) g;
    INSERT INTO posts SELECT g, g FROM generate_series(1, 3) g;
    SELECT lifecycle.soft_delete_enable('users'), lifecycle.soft_delete_enable('posts');
    CREATE TABLE events (id int, kind text);
    SELECT lifecycle.count_enable('events', '{kind}');
    INSERT INTO events SELECT g, 'k' || (g % 3) FROM generate_series(1, 30) g;
    SELECT lifecycle.session_create('u2');
});
is($node->safe_psql('old', q{SELECT extversion FROM pg_extension WHERE extname = 'pg_lifecycle'}), '0.1',
   'created at 0.1');
# The new library in a database still at 0.1: the planner turns the DELETE
# into an UPDATE with 0.1's current_actor() and current_delete_event() (had it
# not found them, the guard trigger would soft-delete the row and RETURNING
# would give nothing).
is($node->safe_psql('old', 'DELETE FROM users WHERE id = 1 RETURNING id'), '1',
   'a soft DELETE at 0.1 is rewritten by the planner (its RETURNING reports the row)');

# The functions 0.2 renames keep their OIDs (event triggers and plans that use
# them keep working); the old names are gone.
my %renamed = (current_delete_event => '_current_delete_event', current_actor => '_current_actor',
               on_sql_drop => 'expire_sql_drop', on_sql_drop_soft_delete => 'soft_delete_forget');
my $oid_of = sub {
    my ($name) = @_;
    return $node->safe_psql('old', qq{SELECT coalesce((SELECT p.oid FROM pg_proc p
        WHERE p.pronamespace = 'lifecycle'::regnamespace AND p.proname = '$name'), 0)});
};
my %oid_before = map { $_ => $oid_of->($_) } keys %renamed;
isnt($oid_before{$_}, '0', "0.1 has lifecycle.$_()") for sort keys %renamed;

$node->safe_psql('old', 'ALTER EXTENSION pg_lifecycle UPDATE');
is($node->safe_psql('old', q{SELECT extversion FROM pg_extension WHERE extname = 'pg_lifecycle'}), $current,
   "updated to $current");
for my $old_name (sort keys %renamed) {
    is($oid_of->($renamed{$old_name}), $oid_before{$old_name},
       "lifecycle.$old_name() renamed to $renamed{$old_name}(), same OID");
    is($oid_of->($old_name), '0', "lifecycle.$old_name() is gone");
}
is($node->safe_psql('old', q{SELECT count(*) FROM pg_proc WHERE pronamespace = 'lifecycle'::regnamespace
                               AND (proname ~ '^on_' OR proname ~ '^current_')}), '0',
   'no function named on_* or current_* is left');
$node->safe_psql('fresh', 'CREATE EXTENSION pg_lifecycle');

# Every object of the extension, described by what users see of it.
my $objects = q{
    SELECT 'function ' || p.oid::regprocedure || ' returns ' || pg_get_function_result(p.oid)
           || ' secdef=' || p.prosecdef || ' volatile=' || p.provolatile::text || ' strict=' || p.proisstrict
           || ' config=' || coalesce(p.proconfig::text, '') || ' acl=' || coalesce(p.proacl::text, '')
           || ' src=' || md5(p.prosrc)
      FROM pg_proc p WHERE p.pronamespace = 'lifecycle'::regnamespace
    UNION ALL
    SELECT 'relation ' || c.relname || ' kind=' || c.relkind::text || ' acl=' || coalesce(c.relacl::text, '')
           || ' options=' || coalesce(c.reloptions::text, '')
      FROM pg_class c WHERE c.relnamespace = 'lifecycle'::regnamespace AND c.relname !~ '^count_[0-9]+_'
    UNION ALL
    SELECT 'column ' || c.relname || '.' || a.attname || ' ' || format_type(a.atttypid, a.atttypmod)
           || ' notnull=' || a.attnotnull || ' default=' || coalesce(pg_get_expr(d.adbin, d.adrelid), '')
      FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid
      LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
     WHERE c.relnamespace = 'lifecycle'::regnamespace AND c.relname !~ '^count_[0-9]+_'
       AND a.attnum > 0 AND NOT a.attisdropped
    UNION ALL
    SELECT 'index ' || pg_get_indexdef(i.indexrelid)
      FROM pg_index i JOIN pg_class c ON c.oid = i.indrelid
     WHERE c.relnamespace = 'lifecycle'::regnamespace AND c.relname !~ '^count_[0-9]+_'
    UNION ALL
    SELECT 'constraint ' || conrelid::regclass || ' ' || pg_get_constraintdef(oid)
      FROM pg_constraint WHERE connamespace = 'lifecycle'::regnamespace AND conrelid::regclass::text !~ 'count_[0-9]+_'
    UNION ALL
    SELECT 'event trigger ' || evtname || ' ' || evtevent || ' ' || evtfoid::regproc::text || ' ' || coalesce(evttags::text, '')
      FROM pg_event_trigger
    UNION ALL
    SELECT 'view ' || c.relname || ' ' || md5(pg_get_viewdef(c.oid))
      FROM pg_class c WHERE c.relnamespace = 'lifecycle'::regnamespace AND c.relkind = 'v'
    UNION ALL
    SELECT 'sequence ' || s.seqrelid::regclass || ' ' || format_type(s.seqtypid, NULL) || ' start=' || s.seqstart
           || ' increment=' || s.seqincrement || ' cache=' || s.seqcache || ' cycle=' || s.seqcycle
      FROM pg_sequence s JOIN pg_class c ON c.oid = s.seqrelid WHERE c.relnamespace = 'lifecycle'::regnamespace
    UNION ALL
    SELECT 'config dump ' || unnest(extconfig)::regclass FROM pg_extension WHERE extname = 'pg_lifecycle'
    ORDER BY 1
};
my $old = $node->safe_psql('old', $objects);
my $fresh = $node->safe_psql('fresh', $objects);
is($old, $fresh, 'the upgraded database has the objects of a fresh install');

# The triggers of tables enabled under 0.1 are those of a table enabled now.
$node->safe_psql('fresh', q{CREATE TABLE users (id int PRIMARY KEY, email text);
                            SELECT lifecycle.soft_delete_enable('users');});
my $triggers = q{SELECT tgname || ' ' || pg_get_triggerdef(oid) FROM pg_trigger
                  WHERE tgrelid = 'users'::regclass AND NOT tgisinternal ORDER BY 1};
is($node->safe_psql('old', $triggers), $node->safe_psql('fresh', $triggers),
   'a table enabled under 0.1 has the triggers of one enabled now');

# The data still works.
is($node->safe_psql('old', q{SELECT lifecycle.restore('users', 1)}), '2', 'restore of a 0.1 delete (with its cascade)');
is($node->safe_psql('old', q{SET lifecycle.actor = 'upgraded';
                             DELETE FROM users WHERE id = 3 RETURNING id;
                             SET lifecycle.include_deleted = on;
                             SELECT deleted_by || ' ' || (delete_event IS NOT NULL) FROM posts WHERE id = 3}),
   "3\nupgraded true", 'a soft DELETE after the update, with its actor, event and cascade');
is($node->safe_psql('old', q{SELECT lifecycle.count('events', '{"kind": "k1"}')}), '10', 'a count');
$node->safe_psql('old', q{INSERT INTO events VALUES (31, 'k1')});
is($node->safe_psql('old', q{SELECT lifecycle.count('events', '{"kind": "k1"}')}), '11', 'a count after a new row');
is($node->safe_psql('old', q{SELECT count(*) FROM lifecycle.run_maintenance() WHERE rows IS NULL}), '0',
   'a maintenance pass without errors');
my ($ret, $out, $err) = $node->psql('old', 'TRUNCATE users CASCADE');
like($err, qr/cannot truncate soft-delete table/, 'a table enabled under 0.1 is protected from TRUNCATE');

$node->stop;
done_testing();
