# Backup, restore and removal (SPEC §0): a pg_dump -Fc of a database using all
# four capabilities, restored into a new cluster (the key file copied), loses
# nothing — also into a database where CREATE EXTENSION ran first; a dump of
# the application's schema alone (--schema=public, or schema-only) restored
# into a database with the extension leaves no table unprotected or broken;
# DROP EXTENSION leaves nothing behind, and CREATE EXTENSION again works.
use strict;
use warnings;
use File::Copy;
use IPC::Run;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $conf = "shared_preload_libraries = 'pg_lifecycle'\nlifecycle.enabled = off\n";
my $old = PostgreSQL::Test::Cluster->new('old');
$old->init;
$old->append_conf('postgresql.conf', $conf);
$old->start;
my $new = PostgreSQL::Test::Cluster->new('new');
$new->init;
$new->append_conf('postgresql.conf', $conf);
$new->start;

$old->safe_psql('postgres', 'CREATE DATABASE app');
$old->safe_psql('app', q{
    CREATE EXTENSION pg_lifecycle;
    CREATE TABLE users (id int PRIMARY KEY, email text);
    CREATE TABLE posts (id int PRIMARY KEY, user_id int REFERENCES users ON DELETE CASCADE);
    INSERT INTO users SELECT g, 'u' || g FROM generate_series(1, 5) g;
    INSERT INTO posts SELECT g, g FROM generate_series(1, 5) g;
    SELECT lifecycle.soft_delete_enable('users', retention => '90 days'), lifecycle.soft_delete_enable('posts');
    DELETE FROM users WHERE id = 1;                  -- event 1 (with post 1)
    DELETE FROM posts WHERE id = 2;                  -- event 2
    CREATE TABLE audit (id int, outcome text, at timestamptz DEFAULT now());
    SELECT lifecycle.count_enable('audit', '{outcome}', 'at');
    INSERT INTO audit (id, outcome) SELECT g, CASE WHEN g % 3 = 0 THEN 'error' ELSE 'ok' END FROM generate_series(1, 300) g;
    CREATE TABLE tokens_tbl (id int PRIMARY KEY, expires_at timestamptz);
    SELECT lifecycle.expire_enable('tokens_tbl', 'expires_at', '1 hour');
    CREATE TABLE orders (id int PRIMARY KEY, is_deleted boolean NOT NULL DEFAULT false);
    INSERT INTO orders SELECT g FROM generate_series(1, 3) g;
    SELECT lifecycle.soft_delete_enable('orders', flag => 'is_deleted');
    DELETE FROM orders WHERE id = 1;
});
$old->safe_psql('app', q{SELECT count(*) FROM lifecycle.run_maintenance()});   # a history, folded counts
$old->safe_psql('app', q{INSERT INTO audit (id, outcome) VALUES (301, 'error')}); # and an unfolded delta
my $session = $old->safe_psql('app', q{SELECT lifecycle.session_create('u2', idle_timeout => '1 hour')});
my $token = $old->safe_psql('app', q{SELECT token FROM lifecycle.token_family_create('u3')});
my $max_event = $old->safe_psql('app', q{SET lifecycle.include_deleted = on; SELECT max(delete_event) FROM users UNION ALL SELECT max(delete_event) FROM posts ORDER BY 1 DESC LIMIT 1});
my $history = $old->safe_psql('app', q{SELECT count(*) FROM lifecycle.job_runs});
ok($history > 0, 'the old database has maintenance history');

my $dump = $old->basedir . '/app.dump';
$old->command_ok(['pg_dump', '-Fc', '-f', $dump, '-d', $old->connstr('app')], 'pg_dump -Fc');
copy($old->data_dir . '/pg_lifecycle_token.key', $new->data_dir . '/pg_lifecycle_token.key') or die "copy: $!";
chmod 0600, $new->data_dir . '/pg_lifecycle_token.key';

sub check_restored {
    my ($db, $what) = @_;
    is($new->safe_psql($db, q{SELECT lifecycle.count('audit') = (SELECT count(*) FROM audit)
                                 AND lifecycle.count('audit', '{"outcome": "error"}')
                                     = (SELECT count(*) FROM audit WHERE outcome = 'error')}),
       't', "$what: counts equal count(*)");
    is($new->safe_psql($db, qq{SELECT lifecycle.session_touch('$session')}), 't',
       "$what: a session created before the dump is still live");
    is($new->safe_psql($db, qq{SELECT status FROM lifecycle.token_rotate('$token')}), 'rotated',
       "$what: a token issued before the dump rotates (key file copied)");
    is($new->safe_psql($db, q{SELECT count(*) FROM lifecycle.job_runs}) >= $history ? 1 : 0, 1,
       "$what: the maintenance history is there");
    is($new->safe_psql($db, q{SELECT retention FROM lifecycle.soft_delete_tables WHERE tbl = 'users'::regclass}),
       '90 days', "$what: soft delete registered as before");
    is($new->safe_psql($db, q{SELECT count(*) FROM users}), '4', "$what: deleted rows stay hidden");
    # A new delete gets a new event id; restoring it does not bring back what
    # was deleted before the dump.
    $new->safe_psql($db, q{DELETE FROM users WHERE id = 2});
    is($new->safe_psql($db, q{SET lifecycle.include_deleted = on; SELECT delete_event > } . $max_event
                         . q{ FROM users WHERE id = 2}), 't', "$what: new delete events continue after the dumped ones");
    is($new->safe_psql($db, q{SELECT lifecycle.restore('users', 2)}), '1',
       "$what: restore of a new event brings back its row only, not post 2 deleted before the dump");
    is($new->safe_psql($db, q{SELECT count(*) FROM posts WHERE id = 2}), '0', "$what: post 2 stays deleted");
    is($new->safe_psql($db, q{SELECT lifecycle.expire_tables.after FROM lifecycle.expire_tables}), '01:00:00',
       "$what: expiry registered as before");
    is($new->safe_psql($db, q{SELECT flag FROM lifecycle.soft_delete_tables WHERE tbl = 'orders'::regclass}),
       'is_deleted', "$what: the flag is registered as before");
    $new->safe_psql($db, q{UPDATE orders SET is_deleted = true WHERE id = 2});
    is($new->safe_psql($db, q{SET lifecycle.include_deleted = on;
                              SELECT string_agg(id || ':' || is_deleted || ':' || (deleted_at IS NOT NULL), ',' ORDER BY id)
                                FROM orders}),
       '1:true:true,2:true:true,3:false:false', "$what: the flag is kept in step with deleted_at");
}

my ($ret, $out, $err);

# 1. Into a new database: the dump creates the extension.
$new->safe_psql('postgres', 'CREATE DATABASE fresh');
$new->command_ok(['pg_restore', '-d', $new->connstr('fresh'), $dump], 'pg_restore into an empty database');
check_restored('fresh', 'empty database');

# 2. Into a database where CREATE EXTENSION ran first.
$new->safe_psql('postgres', 'CREATE DATABASE prepared');
$new->safe_psql('prepared', 'CREATE EXTENSION pg_lifecycle');
$new->command_ok(['pg_restore', '-d', $new->connstr('prepared'), $dump],
                 'pg_restore into a database with the extension: no error');
check_restored('prepared', 'extension created first');

# 3. The application's schema alone, into a database with the extension: our
#    triggers come with the tables, our configuration does not.
for my $variant (['--schema=public'], ['--schema-only']) {
    my $name = $variant->[0];
    (my $db = "part$name") =~ s/[^a-z]//g;
    my $part = $old->basedir . "/$db.dump";
    $old->command_ok(['pg_dump', '-Fc', @$variant, '-f', $part, '-d', $old->connstr('app')], "pg_dump $name");
    $new->safe_psql('postgres', "CREATE DATABASE $db");
    $new->safe_psql($db, 'CREATE EXTENSION pg_lifecycle');
    my ($stdout, $stderr);
    IPC::Run::run(['pg_restore', '-d', $new->connstr($db), $part], '>', \$stdout, '2>', \$stderr);
    # pg_dump --schema=public dumps CREATE SCHEMA public, which exists: PostgreSQL's own error, the only one.
    my @errors = grep { /error:/ && !/schema "public" already exists/ && !/errors ignored/ } split /\n/, $stderr;
    is(join("\n", @errors), '', "pg_restore $name: no error of ours");
    $new->safe_psql($db, q{INSERT INTO audit (id, outcome) VALUES (1000, 'error')});
    is($new->safe_psql($db, q{SELECT lifecycle.count('audit', '{"outcome": "error"}')
                                 = (SELECT count(*) FROM audit WHERE outcome = 'error')}),
       't', "$name: the counted table takes inserts and its counts are exact");
    is($new->safe_psql($db, q{SELECT count(*) FROM lifecycle.soft_delete_tables WHERE tbl = 'users'::regclass}), '1',
       "$name: the soft-delete table is protected again");
    if ($name eq '--schema=public') {
        is($new->safe_psql($db, q{SELECT count(*) FROM users}), '4', "$name: deleted rows stay hidden");
    }
    $new->safe_psql($db, q{INSERT INTO users VALUES (100, 'new'); DELETE FROM users WHERE id = 100});
    is($new->safe_psql($db, q{SET lifecycle.include_deleted = on; SELECT deleted_at IS NOT NULL FROM users WHERE id = 100}),
       't', "$name: DELETE is soft");
}

# 4. A token call made in the restored cluster before the key file was copied
#    (it creates a key of its own, which issues nothing): once the file is
#    copied, old tokens work and no session warns about that key forever.
my $late = PostgreSQL::Test::Cluster->new('late');
$late->init;
$late->append_conf('postgresql.conf', $conf);
$late->start;
$late->safe_psql('postgres', 'CREATE DATABASE app');
$late->command_ok(['pg_restore', '-d', $late->connstr('app'), $dump], 'restore into a cluster without the key file');
is($late->safe_psql('app', qq{SELECT status FROM lifecycle.token_rotate('$token')}), 'invalid',
   'before the key file is copied: the old token is invalid');
$late->stop;
copy($old->data_dir . '/pg_lifecycle_token.key', $late->data_dir . '/pg_lifecycle_token.key') or die "copy: $!";
chmod 0600, $late->data_dir . '/pg_lifecycle_token.key';
$late->start;
($ret, $out, $err) = $late->psql('app', qq{SELECT status FROM lifecycle.token_rotate('$token')});
is($out, 'rotated', 'after the copy: the old token rotates');
unlike($err, qr/WARNING/, 'after the copy: no warning about the unused key made before it');
$late->stop;

# 5. DROP EXTENSION leaves nothing of its own; CREATE EXTENSION again works.
($ret, $out, $err) = $new->psql('fresh', 'DROP EXTENSION pg_lifecycle');
isnt($ret, 0, 'DROP EXTENSION without CASCADE refuses while tables are enabled');
like($err, qr/depends on/, '... naming what depends on it');
is($new->safe_psql('fresh', q{SELECT count(*) FROM pg_class WHERE relname LIKE 'count\_%\_delta'}), '1',
   '... and keeps the count tables');
$new->safe_psql('fresh', 'DROP EXTENSION pg_lifecycle CASCADE');
is($new->safe_psql('fresh', q{SELECT count(*) FROM pg_namespace WHERE nspname = 'lifecycle'}), '0', 'no schema lifecycle left');
is($new->safe_psql('fresh', q{SELECT count(*) FROM pg_class WHERE relname ~ '^count_[0-9]+_'}), '0', 'no count tables left');
is($new->safe_psql('fresh', q{SELECT count(*) FROM pg_event_trigger WHERE evtname LIKE 'lifecycle%'}), '0',
   'no event triggers left');
is($new->safe_psql('fresh', q{SELECT count(*) FROM pg_trigger WHERE tgname LIKE 'lifecycle%'}), '0',
   'no triggers left on the tables');
$new->safe_psql('fresh', q{CREATE EXTENSION pg_lifecycle;
                           SELECT lifecycle.count_enable('audit', '{outcome}');
                           SELECT lifecycle.soft_delete_enable('users');});
is($new->safe_psql('fresh', q{SELECT lifecycle.count('audit') = (SELECT count(*) FROM audit)}), 't',
   'CREATE EXTENSION again, count_enable again: exact');

$old->stop;
$new->stop;
done_testing();
