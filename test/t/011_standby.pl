# The background worker and a streaming standby (SPEC.md §3): nothing runs on
# a hot standby, run_maintenance refuses to run there, and after promotion the
# launcher starts and the promoted node's worker sweeps the expired rows.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(usleep);

my $naptime_ms = 500;

# poll_query_until, bounded by $secs instead of the 180s default.
sub wait_until {
    my ($node, $db, $query, $expected, $secs) = @_;
    local $PostgreSQL::Test::Utils::timeout_default = $secs // 20;
    return $node->poll_query_until($db, $query, $expected);
}

my $lifecycle_procs = q{
    SELECT count(*) FROM pg_stat_activity WHERE backend_type IN ('pg_lifecycle launcher', 'pg_lifecycle worker')};
my $counts = q{
    SELECT count(*) FILTER (WHERE expires_at <= now()) || '/' || count(*) FILTER (WHERE expires_at > now()) FROM t};

my $primary = PostgreSQL::Test::Cluster->new('primary');
$primary->init(allows_streaming => 1);
$primary->append_conf('postgresql.conf', qq{
shared_preload_libraries = 'pg_lifecycle'
max_worker_processes = 16
lifecycle.naptime = '${naptime_ms}ms'
});
$primary->start;

$primary->safe_psql('postgres', q{
    CREATE EXTENSION pg_lifecycle;
    CREATE TABLE t (id serial PRIMARY KEY, expires_at timestamptz NOT NULL);
    SELECT lifecycle.expire_enable('t', 'expires_at');
    INSERT INTO t (expires_at) SELECT now() - interval '1 hour' FROM generate_series(1, 3);
    INSERT INTO t (expires_at) SELECT now() + interval '1 day' FROM generate_series(1, 4);
});
# The primary's worker works: the standby's idleness below is not for want of one.
ok(wait_until($primary, 'postgres', 'SELECT count(*) = 0 FROM t WHERE expires_at <= now()'),
   'primary: its worker sweeps');

# The backup is taken before lifecycle.enabled is turned off on the primary
# (ALTER SYSTEM writes postgresql.auto.conf, which a later backup would copy):
# the standby runs with lifecycle.enabled on.
$primary->backup('base');

$primary->safe_psql('postgres', 'ALTER SYSTEM SET lifecycle.enabled = off');
$primary->reload;
ok(wait_until($primary, 'postgres', q{SELECT current_setting('lifecycle.enabled')}, 'off', 10),
   'primary: lifecycle.enabled off');
usleep(3 * $naptime_ms * 1000);    # a pass under way when the worker reloaded ends

my $standby = PostgreSQL::Test::Cluster->new('standby');
$standby->init_from_backup($primary, 'base', has_streaming => 1);
$standby->start;

# Expired rows reach the standby while the primary's worker is off.
$primary->safe_psql('postgres', q{
    INSERT INTO t (expires_at) SELECT now() - interval '1 hour' FROM generate_series(1, 25);
});
$primary->wait_for_catchup($standby);

is($standby->safe_psql('postgres', 'SELECT pg_is_in_recovery()'), 't', 'standby: in recovery');
is($standby->safe_psql('postgres', q{SELECT current_setting('lifecycle.enabled')}), 'on',
   'standby: lifecycle.enabled is on');
is($standby->safe_psql('postgres', $counts), '25/4', 'standby: the expired rows replicated');
usleep(6 * $naptime_ms * 1000);    # several naptimes
is($standby->safe_psql('postgres', $lifecycle_procs), '0', 'standby: no pg_lifecycle launcher or worker runs');
is($standby->safe_psql('postgres', q{SELECT h->'worker'->>'alive' FROM lifecycle.health() h}), 'false',
   'standby: health() reports no worker');
is($standby->safe_psql('postgres', $counts), '25/4', 'standby: the expired rows are still there');
is($primary->safe_psql('postgres', $counts), '25/4', 'primary: its worker is off, the rows are still there');

my ($ret, $stdout, $stderr) = $standby->psql('postgres', q{SELECT * FROM lifecycle.run_maintenance()},
    extra_params => ['-v', 'VERBOSITY=verbose']);
isnt($ret, 0, 'standby: run_maintenance fails');
like($stderr, qr/ERROR:  25006: lifecycle\.run_maintenance cannot run on a standby/,
     'standby: run_maintenance fails with SQLSTATE 25006');

my $last_id_before = $standby->safe_psql('postgres', q{SELECT coalesce(max(id), 0) FROM lifecycle.job_runs});

# Promotion: the postmaster starts the launcher, the launcher a worker (of
# its pool: it comes and goes, so the launcher's count of them is checked).
$primary->stop;
$standby->promote;
ok(wait_until($standby, 'postgres', 'SELECT NOT pg_is_in_recovery()'), 'standby promoted');
ok(wait_until($standby, 'postgres',
       q{SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'pg_lifecycle launcher'}, '1'),
   'promoted: the launcher starts');
ok(wait_until($standby, 'postgres', q{SELECT (lifecycle._worker_state()->>'workers_started')::int > 0}, 't'),
   'promoted: the launcher starts a worker for the database');
ok(wait_until($standby, 'postgres', 'SELECT count(*) = 0 FROM t WHERE expires_at <= now()'),
   'promoted: the worker sweeps the expired rows');
is($standby->safe_psql('postgres', $counts), '0/4', 'promoted: unexpired rows stay');
# (a pass is recorded when it ends, just after its last batch commits)
ok(wait_until($standby, 'postgres', qq{
    SELECT sum(rows) FROM lifecycle.job_runs
     WHERE task = 'expire' AND target = 'public.t' AND status = 'ok' AND id > $last_id_before}, '25'),
   'promoted: its job_runs records the 25 rows swept');

$standby->stop;
done_testing();
