# The background worker on a primary (SPEC.md §3): one launcher serving every
# database that has the extension (workers come and go: the pool of
# 012_worker_pool.pl), a database created later picked up without
# configuration, an error in one task recorded while the others go on, SIGTERM
# of a worker, crash-restart after kill -9 of a backend, lifecycle.enabled, and
# DDL that needs a database to itself while a worker serves it.  A worker is
# kept in a database when a test needs one there by a table whose DELETE
# trigger sleeps while public.hold says so (hold_worker / release_worker).
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

# poll_query_until, bounded by $secs instead of the 180s default, so that a
# failure shows up quickly.
sub wait_until {
    my ($node, $db, $query, $expected, $secs) = @_;
    local $PostgreSQL::Test::Utils::timeout_default = $secs // 20;
    return $node->poll_query_until($db, $query, $expected);
}

# SQL giving the pid of the worker serving $db.
sub worker_pid_sql {
    my ($db) = @_;
    return qq{SELECT pid FROM pg_stat_activity WHERE backend_type = 'pg_lifecycle worker' AND datname = '$db'};
}

# An expiry table with $expired rows already expired and $live rows that are not.
sub expiry_table {
    my ($node, $db, $table, $expired, $live) = @_;
    $node->safe_psql($db, qq{
        CREATE TABLE $table (id serial PRIMARY KEY, expires_at timestamptz NOT NULL);
        SELECT lifecycle.expire_enable('$table', 'expires_at');
        INSERT INTO $table (expires_at) SELECT now() - interval '1 hour' FROM generate_series(1, $expired);
        INSERT INTO $table (expires_at) SELECT now() + interval '1 day' FROM generate_series(1, $live);
    });
}

# Keep a worker busy in $db: a table whose expired rows' DELETE trigger
# sleeps while public.hold.held; returns when the worker sleeps in it.
sub hold_worker {
    my ($node, $db) = @_;
    $node->safe_psql($db, q{
        CREATE TABLE IF NOT EXISTS hold (held boolean NOT NULL);
        DELETE FROM hold;
        INSERT INTO hold VALUES (true);
        CREATE OR REPLACE FUNCTION slow_delete() RETURNS trigger LANGUAGE plpgsql AS
            $$BEGIN IF (SELECT held FROM public.hold) THEN PERFORM pg_catalog.pg_sleep(0.2); END IF; RETURN OLD; END$$;
        CREATE TABLE IF NOT EXISTS slow (id serial PRIMARY KEY, expires_at timestamptz NOT NULL);
        DROP TRIGGER IF EXISTS slow ON slow;
        CREATE TRIGGER slow BEFORE DELETE ON slow FOR EACH ROW EXECUTE FUNCTION slow_delete();
        INSERT INTO slow (expires_at) SELECT now() - interval '1 hour' FROM generate_series(1, 1000);
        SELECT lifecycle.expire_enable('slow', 'expires_at');
    });
    return held_worker($node, $db);
}

# Waits for a worker sleeping in $db's slow table; true if there is one.
sub held_worker {
    my ($node, $db, $not_pid) = @_;
    return wait_until($node, 'postgres', qq{
        SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'pg_lifecycle worker' AND datname = '$db'
           AND wait_event = 'PgSleep' AND pid <> } . ($not_pid // 0), '1', 20);
}

sub release_worker {
    my ($node, $db) = @_;
    $node->safe_psql($db, 'UPDATE hold SET held = false');
    ok(wait_until($node, $db, 'SELECT count(*) FROM slow', '0', 30), "$db: the slow table is swept once released");
}

sub count_rows {
    my ($node, $db, $table) = @_;
    return $node->safe_psql($db, qq{
        SELECT count(*) FILTER (WHERE expires_at <= now()) || '/' || count(*) FILTER (WHERE expires_at > now())
          FROM $table});
}

my $node = PostgreSQL::Test::Cluster->new('worker');
$node->init;
$node->append_conf('postgresql.conf', qq{
shared_preload_libraries = 'pg_lifecycle'
max_worker_processes = 16
lifecycle.naptime = '${naptime_ms}ms'
restart_after_crash = on
});
$node->start;

########################################################################
# 1. Two databases served at once, each by its own worker.
########################################################################
for my $db (qw(db1 db2)) {
    $node->safe_psql('postgres', "CREATE DATABASE $db");
    $node->safe_psql($db, 'CREATE EXTENSION pg_lifecycle');
}
expiry_table($node, 'db1', 't', 30, 7);
expiry_table($node, 'db2', 't', 50, 11);

ok(wait_until($node, 'db1', q{SELECT (lifecycle._worker_state()->>'workers_started')::int > 0}, 't'),
   'a worker was started for db1');
ok(wait_until($node, 'db2', q{SELECT (lifecycle._worker_state()->>'workers_started')::int > 0}, 't'),
   'a worker was started for db2');
is($node->safe_psql('postgres',
       q{SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'pg_lifecycle launcher'}),
   '1', 'exactly one launcher');

ok(wait_until($node, 'db1', 'SELECT count(*) = 0 FROM t WHERE expires_at <= now()'), 'db1: expired rows swept');
ok(wait_until($node, 'db2', 'SELECT count(*) = 0 FROM t WHERE expires_at <= now()'), 'db2: expired rows swept');
is(count_rows($node, 'db1', 't'), '0/7', 'db1: unexpired rows stay');
is(count_rows($node, 'db2', 't'), '0/11', 'db2: unexpired rows stay');
# A pass is recorded in job_runs when it ends, just after its last batch commits.
ok(wait_until($node, 'db1', q{SELECT sum(rows) FROM lifecycle.job_runs WHERE task = 'expire' AND target = 'public.t' AND status = 'ok'},
              '30'), 'db1: job_runs has the expire row(s) with the 30 rows swept');
ok(wait_until($node, 'db2', q{SELECT sum(rows) FROM lifecycle.job_runs WHERE task = 'expire' AND target = 'public.t' AND status = 'ok'},
              '50'), 'db2: job_runs has the expire row(s) with the 50 rows swept');
ok($node->safe_psql('db1', q{SELECT count(*) > 0 FROM lifecycle.job_runs WHERE task = 'pass' AND status = 'ok'}) eq 't',
   'db1: passes are recorded');
is($node->safe_psql('postgres', q{
    SELECT coalesce(max(n), 0) <= 1 FROM (SELECT count(*) AS n FROM pg_stat_activity
                                           WHERE backend_type = 'pg_lifecycle worker' GROUP BY datname) s}),
   't', 'never two workers for one database');

ok(wait_until($node, 'db1', q{SELECT (h->'worker'->>'passes')::int > 0 AND h->'worker'->>'next_pass_due' IS NOT NULL
                                 FROM lifecycle.health() h}, 't'),
   'health() counts the passes of db1 and says when the next one is due');

########################################################################
# 2. A database created later is picked up without configuration.
########################################################################
$node->safe_psql('postgres', 'CREATE DATABASE db3');
$node->safe_psql('db3', 'CREATE EXTENSION pg_lifecycle');
expiry_table($node, 'db3', 't', 20, 3);
ok(wait_until($node, 'db3', 'SELECT count(*) = 0 FROM t WHERE expires_at <= now()'), 'db3: expired rows swept');
is(count_rows($node, 'db3', 't'), '0/3', 'db3: unexpired rows stay');
is($node->safe_psql('db3', q{SELECT (lifecycle._worker_state()->>'workers_started')::int > 0}), 't',
   'db3 got a worker');
ok(wait_until($node, 'db3', q{SELECT sum(rows) FROM lifecycle.job_runs WHERE task = 'expire' AND status = 'ok'}, '20'),
   'db3: job_runs records the sweep');

########################################################################
# 3. An error in one task is recorded; the other tasks still run.
########################################################################
$node->safe_psql('db2', q{
    CREATE TABLE bad_t (id serial PRIMARY KEY, expires_at timestamptz NOT NULL);
    CREATE FUNCTION bad_t_refuse() RETURNS trigger LANGUAGE plpgsql AS
        $$BEGIN IF OLD.id <= 5 THEN RAISE EXCEPTION 'bad_t refuses deletes'; END IF; RETURN OLD; END$$;
    CREATE TRIGGER refuse BEFORE DELETE ON bad_t FOR EACH ROW EXECUTE FUNCTION bad_t_refuse();
    CREATE TABLE good_t (id serial PRIMARY KEY, expires_at timestamptz NOT NULL);
});
my ($expired_sid, $idle_sid, $live_sid) = split /\n/, $node->safe_psql('db2', q{
    SELECT lifecycle.session_create('alice', ttl => '1 second');
    SELECT lifecycle.session_create('bob', ttl => '1 day', idle_timeout => '1 second');
    SELECT lifecycle.session_create('carol', ttl => '1 day');
});
$node->safe_psql('db2', q{
    INSERT INTO bad_t (expires_at) SELECT now() - interval '1 hour' FROM generate_series(1, 8);  -- 1-5 refuse
    INSERT INTO good_t (expires_at) SELECT now() - interval '1 hour' FROM generate_series(1, 8);
    INSERT INTO good_t (expires_at) SELECT now() + interval '1 day' FROM generate_series(1, 2);
    SELECT lifecycle.expire_enable('bad_t', 'expires_at');
    SELECT lifecycle.expire_enable('good_t', 'expires_at');
});
ok(wait_until($node, 'db2', 'SELECT count(*) = 0 FROM good_t WHERE expires_at <= now()'),
   'good_t swept next to a failing table');
is(count_rows($node, 'db2', 'good_t'), '0/2', 'good_t: unexpired rows stay');
ok(wait_until($node, 'db2', q{
    SELECT count(*) >= 2 FROM lifecycle.job_runs
     WHERE task = 'expire' AND target = 'public.bad_t' AND status = 'error'}),
   'bad_t: its failure is recorded, and again on the next pass');
like($node->safe_psql('db2', q{
    SELECT error FROM lifecycle.job_runs WHERE target = 'public.bad_t' AND status = 'error' ORDER BY id DESC LIMIT 1}),
     qr/^P0001: bad_t refuses deletes/, 'job_runs.error carries the trigger\'s SQLSTATE and message');
ok(wait_until($node, 'db2', 'SELECT count(*) = 5 FROM bad_t'),
   'bad_t: the rows whose DELETE does not fail are swept around the ones that fail');
is($node->safe_psql('db2', 'SELECT string_agg(id::text, \',\' ORDER BY id) FROM bad_t'), '1,2,3,4,5',
   'bad_t: the refused rows are still there (each refused DELETE rolled back)');
ok(wait_until($node, 'db2', q{SELECT sum(rows) FROM lifecycle.job_runs WHERE task = 'expire' AND target = 'public.bad_t'},
              '3'), 'bad_t: job_runs counts the 3 rows deleted next to the errors');
my $last_error = $node->safe_psql('db2',
    q{SELECT concat_ws('|', h->'last_error'->>'task', h->'last_error'->>'target', h->'last_error'->>'error')
        FROM lifecycle.health() h});
like($last_error, qr/^expire\|public\.bad_t\|P0001: bad_t refuses deletes/, 'health() shows the last error');
ok(wait_until($node, 'db2', "SELECT end_reason FROM lifecycle.sessions WHERE session_id = '$expired_sid'", 'expired'),
   'a session past its ttl is closed as expired despite the failing task');
is($node->safe_psql('db2', "SELECT ended_at = expires_at FROM lifecycle.sessions WHERE session_id = '$expired_sid'"),
   't', 'it ended when it expired');
ok(wait_until($node, 'db2', "SELECT end_reason FROM lifecycle.sessions WHERE session_id = '$idle_sid'", 'idle'),
   'an idle session is closed as idle');
is($node->safe_psql('db2', "SELECT ended_at IS NULL FROM lifecycle.sessions WHERE session_id = '$live_sid'"),
   't', 'a live session stays open');
ok(wait_until($node, 'db2', q{SELECT sum(rows) FROM lifecycle.job_runs WHERE task = 'session_close' AND status = 'ok'}, '2'),
   'job_runs records the sessions closed');

########################################################################
# 4. SIGTERM ends a worker promptly; the launcher starts a new one.
########################################################################
my $watch = crash_watch($node);
ok(hold_worker($node, 'db1'), 'a worker busy in db1');
my $db1_pid = $node->safe_psql('postgres', worker_pid_sql('db1'));
like($db1_pid, qr/^\d+$/, 'db1 worker running before SIGTERM');
my $t0 = time;
ok(kill('TERM', $db1_pid), 'SIGTERM sent to the db1 worker');
usleep(10_000) while kill(0, $db1_pid) && time - $t0 < 10;
my $elapsed = time - $t0;
ok(!kill(0, $db1_pid), 'the worker process is gone');
cmp_ok($elapsed, '<', 1.0, sprintf('it exited within a second (%.3fs)', $elapsed));
is($node->safe_psql('postgres', "SELECT count(*) FROM pg_stat_activity WHERE pid = $db1_pid"),
   '0', 'its pid is gone from pg_stat_activity');
ok(held_worker($node, 'db1', $db1_pid), 'a new worker serves db1');
release_worker($node, 'db1');
$node->safe_psql('db1', q{INSERT INTO t (expires_at) SELECT now() - interval '1 minute' FROM generate_series(1, 4)});
ok(wait_until($node, 'db1', 'SELECT count(*) = 0 FROM t WHERE expires_at <= now()'), 'the new worker sweeps');
no_crash($watch, 'SIGTERM of a worker is no crash');

########################################################################
# 5. kill -9 of a backend: crash-restart, and the worker comes back.
########################################################################
my $log_offset = -s $node->logfile;
my $victim = $node->background_psql('db1');
my $victim_pid = $victim->query_safe('SELECT pg_backend_pid()');
like($victim_pid, qr/^\d+$/, 'a backend to kill');
ok(kill('KILL', $victim_pid), 'kill -9 of the backend');
eval { $victim->quit };    # its connection is gone
{
    local $PostgreSQL::Test::Utils::timeout_default = 30;
    $log_offset = $node->wait_for_log(qr/all server processes terminated; reinitializing/, $log_offset);
}
pass('the postmaster does a crash-restart');
ok(wait_until($node, 'postgres', 'SELECT 1', '1', 30), 'the server accepts connections again');
is(count_rows($node, 'db1', 't'), '0/7', 'committed rows survived the crash');
ok(wait_until($node, 'postgres',
       q{SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'pg_lifecycle launcher'}, '1', 20),
   'the launcher is back');
ok(wait_until($node, 'db1', q{SELECT (lifecycle._worker_state()->>'workers_started')::int > 0}, 't', 20),
   'a worker serves db1 after the crash');
$node->safe_psql('db1', q{INSERT INTO t (expires_at) SELECT now() - interval '1 minute' FROM generate_series(1, 6)});
ok(wait_until($node, 'db1', 'SELECT count(*) = 0 FROM t WHERE expires_at <= now()'), 'and it sweeps new expired rows');
is(count_rows($node, 'db1', 't'), '0/7', 'unexpired rows still stay');

########################################################################
# 6. lifecycle.enabled = off stops sweeping; on again resumes it.
########################################################################
$node->safe_psql('postgres', 'ALTER SYSTEM SET lifecycle.enabled = off');
$node->reload;
ok(wait_until($node, 'db1', q{SELECT current_setting('lifecycle.enabled')}, 'off', 10), 'lifecycle.enabled is off');
# Let a pass that was under way when the worker reloaded finish.
usleep(3 * $naptime_ms * 1000);
my $last_pass = $node->safe_psql('db1', q{SELECT coalesce(max(id), 0) FROM lifecycle.job_runs WHERE task = 'pass'});
$node->safe_psql('db1', q{INSERT INTO t (expires_at) SELECT now() - interval '1 minute' FROM generate_series(1, 9)});
usleep(6 * $naptime_ms * 1000);
is(count_rows($node, 'db1', 't'), '9/7', 'with lifecycle.enabled off, expired rows stay for several naptimes');
is($node->safe_psql('db1', "SELECT count(*) FROM lifecycle.job_runs WHERE task = 'pass' AND id > $last_pass"),
   '0', 'and no pass runs');
is($node->safe_psql('db1', q{SELECT h->>'enabled' FROM lifecycle.health() h}), 'false', 'health() says disabled');
$node->safe_psql('postgres', 'ALTER SYSTEM RESET lifecycle.enabled');
$node->reload;
ok(wait_until($node, 'db1', 'SELECT count(*) = 0 FROM t WHERE expires_at <= now()'),
   'lifecycle.enabled on again: the rows are swept');
is(count_rows($node, 'db1', 't'), '0/7', 'unexpired rows still stay');

########################################################################
# 7. Statements that need a database to themselves are not blocked by its
#    worker: RENAME, CREATE DATABASE ... TEMPLATE and DROP DATABASE (no FORCE).
########################################################################
ok(hold_worker($node, 'db3'), 'db3 is served (a worker busy in it) before the DDL');
my ($rc, $out, $err) = $node->psql('postgres', 'ALTER DATABASE db3 RENAME TO db3_renamed');
is($rc, 0, 'ALTER DATABASE ... RENAME works while a worker serves it') or diag($err);
ok(held_worker($node, 'db3_renamed'), 'the renamed database gets a worker again');
($rc, $out, $err) = $node->psql('postgres', 'CREATE DATABASE db4 TEMPLATE db3_renamed');
is($rc, 0, 'CREATE DATABASE ... TEMPLATE works from a served database') or diag($err);
ok(held_worker($node, 'db3_renamed'), 'and it gets a worker again');
($rc, $out, $err) = $node->psql('postgres', 'DROP DATABASE db3_renamed');
is($rc, 0, 'DROP DATABASE without FORCE works while a worker serves it') or diag($err);
($rc, $out, $err) = $node->psql('postgres', 'DROP DATABASE db4');
is($rc, 0, 'and for the copy') or diag($err);
is($node->safe_psql('postgres', "SELECT count(*) FROM pg_database WHERE datname IN ('db3_renamed', 'db4')"), '0',
   'both are gone');

$node->stop;
done_testing();
