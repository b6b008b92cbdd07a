# Exact counts and crashes (SPEC.md §4): the worker folds count deltas by
# itself; a fold held in the middle (deltas deleted, summaries half written,
# not committed) leaves every count exact for other sessions; kill -9 of the
# worker, or of a backend, in the middle of a fold makes the postmaster
# crash-restart, the fold is rolled back, counts are exact at once and again
# after the next fold.  Finally a streaming standby: count works there (a
# read function) and is exact, unfolded deltas included.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(usleep);

my $naptime_ms = 300;

sub wait_until {
    my ($node, $db, $query, $expected, $secs) = @_;
    local $PostgreSQL::Test::Utils::timeout_default = $secs // 30;
    return $node->poll_query_until($db, $query, $expected);
}

# "count/count(*)" for all rows, one dimension value and a time range.
my $exact = q{
    SELECT concat_ws(' ',
        lifecycle.count('audit') || '/' || (SELECT count(*) FROM audit),
        lifecycle.count('audit', '{"outcome": "error"}') || '/' || (SELECT count(*) FROM audit WHERE outcome = 'error'),
        lifecycle.count('audit', '{}', '2024-01-01 05:30+00', '2024-01-03 07:10+00') || '/' ||
            (SELECT count(*) FROM audit WHERE created_at >= '2024-01-01 05:30+00' AND created_at < '2024-01-03 07:10+00'))};

sub all_equal {
    my ($line) = @_;
    for my $pair (split / /, $line) {
        my ($a, $b) = split m{/}, $pair;
        return 0 unless defined $b && $a eq $b;
    }
    return 1;
}

my $deltas = q{SELECT count(*) FROM lifecycle.count_1_delta};
my $no_deltas = q{SELECT count(*) = 0 FROM lifecycle.count_1_delta};
my $worker_sql = q{SELECT pid FROM pg_stat_activity WHERE backend_type = 'pg_lifecycle worker' AND datname = 'app'};

my $node = PostgreSQL::Test::Cluster->new('counts');
$node->init(allows_streaming => 1);
$node->append_conf('postgresql.conf', qq{
shared_preload_libraries = 'pg_lifecycle'
max_worker_processes = 16
lifecycle.naptime = '${naptime_ms}ms'
restart_after_crash = on
});
$node->start;
$node->safe_psql('postgres', 'CREATE DATABASE app');
$node->safe_psql('app', q{
    CREATE EXTENSION pg_lifecycle;
    CREATE TABLE audit (id bigserial PRIMARY KEY, outcome text NOT NULL, created_at timestamptz NOT NULL);
    CREATE INDEX ON audit (created_at);
    INSERT INTO audit (outcome, created_at)
    SELECT (ARRAY['success', 'error', 'permission_denied'])[1 + g % 3], '2024-01-01 00:00+00'::timestamptz + g * interval '1 minute'
      FROM generate_series(1, 5000) g;
    SELECT lifecycle.count_enable('audit', '{outcome}', 'created_at');
    -- Holds a fold in the middle while hold_fold has a row: the summary upsert
    -- waits in this trigger, after the fold has deleted its deltas.
    CREATE TABLE hold_fold (x int);
    CREATE FUNCTION hold_fold() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        WHILE EXISTS (SELECT 1 FROM public.hold_fold) LOOP PERFORM pg_sleep(0.05); END LOOP;
        RETURN NEW;
    END $$;
    GRANT SELECT ON hold_fold TO PUBLIC;
});

########################################################################
# 1. The worker folds by itself.
########################################################################
$node->safe_psql('app', q{
    INSERT INTO audit (outcome, created_at) SELECT 'error', '2024-01-02 00:00+00'::timestamptz + g * interval '1 minute'
      FROM generate_series(1, 1000) g;
    DELETE FROM audit WHERE id % 10 = 0;
    UPDATE audit SET outcome = 'success' WHERE outcome = 'error' AND id % 7 = 0;
});
ok(wait_until($node, 'app', $no_deltas, 't'), 'the worker folds the deltas');
my $line = $node->safe_psql('app', $exact);
ok(all_equal($line), "exact after the worker's fold ($line)");
# (a pass is recorded when it ends, just after its last batch commits)
ok(wait_until($node, 'app', q{SELECT sum(rows) > 0 FROM lifecycle.job_runs WHERE task = 'count_fold' AND status = 'ok'}, 't'),
   'job_runs records the folds');

########################################################################
# 2. kill -9 of the worker in the middle of a fold.
########################################################################
$node->safe_psql('app', q{
    INSERT INTO hold_fold VALUES (1);
    CREATE TRIGGER hold BEFORE INSERT OR UPDATE ON lifecycle.count_1_s0 FOR EACH ROW EXECUTE FUNCTION hold_fold();
    INSERT INTO audit (outcome, created_at) SELECT 'denied', '2024-01-03 00:00+00'::timestamptz + g * interval '1 minute'
      FROM generate_series(1, 700) g;
    DELETE FROM audit WHERE id BETWEEN 100 AND 199;
});
ok(wait_until($node, 'postgres', q{
    SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'pg_lifecycle worker' AND datname = 'app'
       AND wait_event = 'PgSleep'}, '1'),
   'the worker is held in the middle of a fold');
my $worker_pid = $node->safe_psql('postgres', $worker_sql);
like($worker_pid, qr/^\d+$/, 'the worker has a pid');
$line = $node->safe_psql('app', $exact);
ok(all_equal($line), "exact during the held fold ($line)");
ok($node->safe_psql('app', $deltas) > 0, 'the deltas being folded are still visible to others');

# After the crash-restart the worker stays off, so that a backend folds next
# (the postmaster reads the setting now; the held worker never will).
$node->safe_psql('app', 'ALTER SYSTEM SET lifecycle.enabled = off');
$node->reload;
my $log_offset = -s $node->logfile;
ok(kill('KILL', $worker_pid), 'kill -9 of the worker mid-fold');
{
    local $PostgreSQL::Test::Utils::timeout_default = 30;
    $log_offset = $node->wait_for_log(qr/all server processes terminated; reinitializing/, $log_offset);
}
pass('the postmaster does a crash-restart');
ok(wait_until($node, 'app', 'SELECT 1', '1'), 'the server accepts connections again');
$line = $node->safe_psql('app', $exact);
ok(all_equal($line), "exact right after the crash ($line)");
ok($node->safe_psql('app', $deltas) > 0, 'the fold was rolled back: its deltas are back');

# A backend folds — run_maintenance in an open transaction — held in the
# middle, and is killed.
my $victim = $node->background_psql('app', on_error_stop => 0);
my $victim_pid = $victim->query_safe('SELECT pg_backend_pid()');
$victim->query_until(qr/started/, q{
    \echo started
    BEGIN;
    SELECT * FROM lifecycle.run_maintenance('60s');
});
ok(wait_until($node, 'postgres', qq{
    SELECT count(*) FROM pg_stat_activity WHERE pid = $victim_pid AND wait_event = 'PgSleep'}, '1'),
   'a backend is held in the middle of a fold');
$line = $node->safe_psql('app', $exact);
ok(all_equal($line), "exact while the backend folds ($line)");
$log_offset = -s $node->logfile;
ok(kill('KILL', $victim_pid), 'kill -9 of the backend mid-fold');
eval { $victim->quit };
{
    local $PostgreSQL::Test::Utils::timeout_default = 30;
    $log_offset = $node->wait_for_log(qr/all server processes terminated; reinitializing/, $log_offset);
}
ok(wait_until($node, 'app', 'SELECT 1', '1'), 'the server is back again');
$line = $node->safe_psql('app', $exact);
ok(all_equal($line), "exact after the second crash ($line)");

# Let go: the worker folds, and counts stay exact.
$node->safe_psql('app', q{
    DROP TRIGGER hold ON lifecycle.count_1_s0;
    DELETE FROM hold_fold;
    ALTER SYSTEM RESET lifecycle.enabled;
});
$node->reload;
ok(wait_until($node, 'app', $no_deltas, 't'), 'the worker folds everything after the crashes');
$line = $node->safe_psql('app', $exact);
ok(all_equal($line), "exact after the fold ($line)");
is($node->safe_psql('app', q{SELECT (SELECT count(*) FROM lifecycle.count_1_s0 WHERE lc_n < 0) + (SELECT count(*) FROM lifecycle.count_1_s1 WHERE lc_n < 0)}), '0',
   'no group counted below zero (nothing subtracted twice)');

########################################################################
# 3. A streaming standby: count is a read function and works there.
########################################################################
$node->backup('base');
my $standby = PostgreSQL::Test::Cluster->new('counts_standby');
$standby->init_from_backup($node, 'base', has_streaming => 1);
$standby->start;
$node->safe_psql('app', 'ALTER SYSTEM SET lifecycle.enabled = off');
$node->reload;
ok(wait_until($node, 'app', q{SELECT current_setting('lifecycle.enabled')}, 'off'), 'primary worker off');
usleep(3 * $naptime_ms * 1000);
$node->safe_psql('app', q{
    INSERT INTO audit (outcome, created_at) SELECT 'error', '2024-01-01 12:00+00'::timestamptz + g * interval '1 second'
      FROM generate_series(1, 300) g;
});
$node->wait_for_catchup($standby);
ok($standby->safe_psql('app', $deltas) > 0, 'standby: unfolded deltas replicated');
$line = $standby->safe_psql('app', $exact);
ok(all_equal($line), "standby: exact with unfolded deltas ($line)");
$node->safe_psql('app', 'SELECT count(*) FROM lifecycle.run_maintenance()');
$node->wait_for_catchup($standby);
is($standby->safe_psql('app', $deltas), '0', 'standby: the fold replicated');
$line = $standby->safe_psql('app', $exact);
ok(all_equal($line), "standby: exact after the fold ($line)");
my ($rc, $out, $err) = $standby->psql('app', q{SELECT lifecycle.count_enable('hold_fold')});
like($err, qr/read-only transaction|recovery/, 'standby: count_enable is refused (read-only)');

$standby->stop;
$node->stop;
done_testing();
