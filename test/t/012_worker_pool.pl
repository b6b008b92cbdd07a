# The worker pool (issue 12): 30 databases served by the default
# lifecycle.max_workers (2) at max_worker_processes = 8 — all swept within
# 3 x naptime x (databases / workers), never more than max_workers + 1
# extension processes, a parallel query gets its workers meanwhile, databases
# created and dropped during the run, a database without the extension visited
# once only; a pass that found nothing writes no job_runs row; a read-only
# database skipped with one warning and shown in health(); health() reports a
# broken registration instead of raising; a slot shortage logged once and
# shown in health().
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time usleep);
use FindBin;
use lib "$FindBin::Bin/lib";
use LifecycleTest;

my $naptime_ms = 500;
my $ndb = 30;
my $max_workers = 2;    # the default
my $bound = 3 * $naptime_ms / 1000 * $ndb / $max_workers;

sub wait_until {
    my ($node, $db, $query, $expected, $secs) = @_;
    local $PostgreSQL::Test::Utils::timeout_default = $secs // 20;
    return $node->poll_query_until($db, $query, $expected);
}

sub count_rows {
    my ($node, $db) = @_;
    return $node->safe_psql($db, q{
        SELECT count(*) FILTER (WHERE expires_at <= now()) || '/' || count(*) FILTER (WHERE expires_at > now()) FROM t});
}

my $node = PostgreSQL::Test::Cluster->new('pool');
$node->init;
$node->append_conf('postgresql.conf', qq{
shared_preload_libraries = 'pg_lifecycle'
max_worker_processes = 8
lifecycle.naptime = '${naptime_ms}ms'
});
$node->start;
my $watch = crash_watch($node);

########################################################################
# Setup: a template with the extension and a table of 100 expired and 5 live
# rows; 30 databases (and one to drop during the run) copied from it; a
# database without the extension.
########################################################################
$node->safe_psql('postgres', 'CREATE DATABASE noext');
$node->safe_psql('postgres', 'CREATE DATABASE tpl');
$node->safe_psql('tpl', q{
    CREATE EXTENSION pg_lifecycle;
    CREATE TABLE t (id serial PRIMARY KEY, expires_at timestamptz NOT NULL);
    INSERT INTO t (expires_at) SELECT now() - interval '1 hour' FROM generate_series(1, 100);
    INSERT INTO t (expires_at) SELECT now() + interval '1 day' FROM generate_series(1, 5);
});
$node->safe_psql('postgres', 'ALTER DATABASE tpl IS_TEMPLATE true');
my @dbs = map { "p$_" } 1 .. $ndb;
$node->safe_psql('postgres', join('', map { "CREATE DATABASE $_ TEMPLATE tpl;\n" } @dbs, 'victim'));
# p1 also has a long backlog (no other database may wait behind it) and a
# table for a parallel query.
$node->safe_psql('p1', q{
    CREATE TABLE backlog (id serial PRIMARY KEY, expires_at timestamptz NOT NULL);
    INSERT INTO backlog (expires_at) SELECT now() - interval '1 hour' FROM generate_series(1, 200000);
    CREATE TABLE par AS SELECT g AS x FROM generate_series(1, 200000) g;
    ANALYZE par;
});
my $noext_oid = $node->safe_psql('postgres', q{SELECT oid FROM pg_database WHERE datname = 'noext'});
ok(wait_until($node, 'p1', "SELECT lifecycle._worker_state($noext_oid)->>'extension'", 'absent'),
   'the database without the extension is known as such (one visit)');
is($node->safe_psql('p1', "SELECT lifecycle._worker_state($noext_oid)->>'workers_started'"), '1',
   'it was visited once');

########################################################################
# 1. Expiry enabled in the 31 databases: all swept within the bound.
########################################################################
my $t0 = time;
for my $db (@dbs, 'victim') {
    $node->safe_psql($db, "SELECT lifecycle.expire_enable('t', 'expires_at')");
}
$node->safe_psql('p1', "SELECT lifecycle.expire_enable('backlog', 'expires_at')");
my $enabled_s = time - $t0;

my $bg = $node->background_psql('postgres');
my ($max_procs, $noext_seen, $swept_at, $explain, $late_created, $victim_dropped) = (0, 0, undef, '', 0, 0);
my @targets = (@dbs, 'late1');
my $in_list = join(',', map { "'$_'" } @targets);
while (time - $t0 < $bound + 15) {
    my ($procs, $noext) = split /\|/, $bg->query_safe(q{
        SELECT count(*) FILTER (WHERE backend_type IN ('pg_lifecycle worker', 'pg_lifecycle launcher')),
               count(*) FILTER (WHERE backend_type = 'pg_lifecycle worker' AND datname = 'noext')
          FROM pg_stat_activity});
    $max_procs = $procs if $procs > $max_procs;
    $noext_seen += $noext;
    if ($explain && !$victim_dropped) {
        # Created and dropped while the pool runs.
        my ($rc, $out, $err) = $node->psql('postgres', 'DROP DATABASE victim');
        is($rc, 0, 'DROP DATABASE of a served database during the run') or diag($err);
        $node->safe_psql('postgres', 'CREATE DATABASE late1 TEMPLATE tpl');
        $node->safe_psql('late1', "SELECT lifecycle.expire_enable('t', 'expires_at')");
        $victim_dropped = $late_created = 1;
    }
    if (!$explain) {    # at once, while the pool works
        $explain = $node->safe_psql('p1', q{
            SET parallel_setup_cost = 0; SET parallel_tuple_cost = 0; SET min_parallel_table_scan_size = 0;
            SET max_parallel_workers_per_gather = 2;
            EXPLAIN (ANALYZE, COSTS OFF, TIMING OFF) SELECT count(*) FROM par});
    }
    # Per-database statistics are visible from any database.
    my $swept = $bg->query_safe(qq{
        SELECT count(*) FROM pg_database
         WHERE datname IN ($in_list) AND pg_stat_get_db_tuples_deleted(oid) >= 100});
    if ($late_created && $swept == scalar(@targets)) {
        $swept_at = time - $t0;
        last;
    }
    usleep(20_000);
}
ok(defined $swept_at && $swept_at <= $bound,
   sprintf('all %d databases (and one created during the run) swept within %.1fs: %s (enabling took %.1fs)',
           $ndb, $bound, defined $swept_at ? sprintf('%.1fs', $swept_at) : 'not done', $enabled_s));
my @not_swept = grep { count_rows($node, $_) ne '0/5' } @targets;
is("@not_swept", '', 'every database: the expired rows gone, the live ones kept');
cmp_ok($max_procs, '<=', $max_workers + 1,
       "at most max_workers + 1 pg_lifecycle processes at any time (saw $max_procs)");
like($explain, qr/Workers Launched: 2/, 'a parallel query launched its 2 workers meanwhile');
is($noext_seen, 0, 'no worker seen in the database without the extension during the run');
is($node->safe_psql('p1', "SELECT lifecycle._worker_state($noext_oid)->>'workers_started'"), '1',
   'it was still visited only once');
is($node->safe_psql('postgres', q{SELECT count(*) FROM pg_database WHERE datname = 'victim'}), '0',
   'the dropped database is gone');
ok(wait_until($node, 'p1', 'SELECT count(*) FROM backlog', '0', 60), 'the long backlog in p1 is swept too');
is($node->safe_psql('postgres', q{
    SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'pg_lifecycle worker' AND datname = 'noext'}), '0',
   'still no process in the database without the extension');

# CREATE EXTENSION is noticed at once (not after the 10 minutes between visits).
$node->safe_psql('noext', q{
    CREATE EXTENSION pg_lifecycle;
    CREATE TABLE t (id serial PRIMARY KEY, expires_at timestamptz NOT NULL);
    INSERT INTO t (expires_at) SELECT now() - interval '1 hour' FROM generate_series(1, 3);
    SELECT lifecycle.expire_enable('t', 'expires_at');
});
ok(wait_until($node, 'noext', 'SELECT count(*) FROM t', '0', 5), 'CREATE EXTENSION: the database is served at once');

########################################################################
# 2. A pass that found nothing to do writes no job_runs row.
########################################################################
my $runs = $node->safe_psql('p2', 'SELECT count(*) FROM lifecycle.job_runs');
my $passes = $node->safe_psql('p2', q{SELECT lifecycle.health()->'worker'->>'passes'});
ok(wait_until($node, 'p2', qq{SELECT (lifecycle.health()->'worker'->>'passes')::int >= $passes + 3}, 't'),
   'p2: idle passes go on');
is($node->safe_psql('p2', 'SELECT count(*) FROM lifecycle.job_runs'), $runs, 'p2: they write no job_runs row');
is($node->safe_psql('p2', q{SELECT lifecycle.health()->>'waiting'}), '', 'p2: health() shows no waiting');

########################################################################
# 3. A read-only database: skipped with one warning, shown in health().
########################################################################
# The expired rows are written once the worker skips the database (written
# before, a pass could sweep them before it noticed).
my $log_offset = -s $node->logfile;
$node->safe_psql('postgres', 'ALTER DATABASE p3 SET default_transaction_read_only = on');
ok(wait_until($node, 'p3', q{SELECT lifecycle.health()->>'skipped'},
              'read-only database: default_transaction_read_only is on'),
   'p3: health() says it is skipped as read-only');
$node->safe_psql('p3', q{SET default_transaction_read_only = off;
    INSERT INTO t (expires_at) SELECT now() - interval '1 hour' FROM generate_series(1, 10)});
usleep(4 * $naptime_ms * 1000);
is(count_rows($node, 'p3'), '10/5', 'p3: its expired rows stay');
my @warnings = grep { /WARNING:.*database "p3" is read-only/ } split /\n/, slurp_file($node->logfile, $log_offset);
is(scalar(@warnings), 1, 'p3: one warning for the episode, not one per pass');
my @errors = grep { /ERROR|LOG:.*pg_lifecycle worker:.*p3/ } split /\n/, slurp_file($node->logfile, $log_offset);
is(scalar(@errors), 0, 'p3: no errors logged') or diag(join("\n", @errors));
$node->safe_psql('postgres', 'ALTER DATABASE p3 RESET default_transaction_read_only');
ok(wait_until($node, 'p3', q{SELECT count(*) FROM t WHERE expires_at <= now()}, '0'), 'p3: writable again, swept');
ok(wait_until($node, 'p3', q{SELECT lifecycle.health()->>'skipped' IS NULL}, 't'), 'p3: health() no longer says skipped');

########################################################################
# 4. health() never raises: a broken registration shows in its output.  (DDL
#    cannot break one any more — a renamed expiry column is followed, dropping
#    it is refused — so the registration is broken by hand, as a restore
#    of an old dump or a manual edit could leave it.)
########################################################################
$node->safe_psql('p4', q{ALTER TABLE t RENAME COLUMN expires_at TO gone_at});
is($node->safe_psql('p4', q{SELECT column_name FROM lifecycle.expire_tables WHERE tbl = 't'::regclass}), 'gone_at',
   'p4: a renamed expiry column is followed');
$node->safe_psql('p4', q{ALTER TABLE t RENAME COLUMN gone_at TO expires_at;
                         UPDATE lifecycle.expire_tables SET column_name = 'no_such_column'});
my ($rc, $out, $err) = $node->psql('p4', q{SELECT lifecycle.health()->'backlog'->'expired_rows'->'public.t'->>'error'});
is($rc, 0, 'p4: health() does not raise with a broken registration') or diag($err);
like($out, qr/^42703: column "no_such_column" does not exist/, 'p4: it reports the broken table instead');
$node->safe_psql('p4', q{UPDATE lifecycle.expire_tables SET column_name = 'expires_at'});

########################################################################
# 5. No background worker slot: retried every round, logged once per
#    database, shown in health(); served once slots are there.
########################################################################
my $p5_oid = $node->safe_psql('postgres', q{SELECT oid FROM pg_database WHERE datname = 'p5'});
no_crash($watch, 'the pool run');
$node->stop;
# The launcher's own slot only (no logical replication launcher to take it).
$node->append_conf('postgresql.conf', "max_worker_processes = 1\nmax_logical_replication_workers = 0");
$node->start;
# Expired rows written once no worker can run (before the restart the pool
# could sweep them first).
$node->safe_psql('p5', q{INSERT INTO t (expires_at) SELECT now() - interval '1 hour' FROM generate_series(1, 7)});
ok(wait_until($node, 'p5', q{SELECT lifecycle.health()->>'waiting'},
              'no background worker slot (max_worker_processes = 1 is in use)'),
   'p5: health() says it waits for a background worker slot');
usleep(4 * $naptime_ms * 1000);
is(count_rows($node, 'p5'), '7/5', 'p5: not swept without a slot');
my $since_start = slurp_file($node->logfile);
$since_start = substr($since_start, rindex($since_start, 'pg_lifecycle launcher started'));
@warnings = grep { /WARNING:.*no background worker slot for database $p5_oid / } split /\n/, $since_start;
is(scalar(@warnings), 1, 'p5: the shortage is logged once, not every round');
$node->stop;
$node->append_conf('postgresql.conf', "max_worker_processes = 8\nmax_logical_replication_workers = 4");
$node->start;
ok(wait_until($node, 'p5', q{SELECT count(*) FROM t WHERE expires_at <= now()}, '0'), 'p5: swept once there are slots');
is($node->safe_psql('p5', q{SELECT lifecycle.health()->>'waiting' IS NULL}), 't', 'p5: health() no longer waits');

$node->stop;
done_testing();
