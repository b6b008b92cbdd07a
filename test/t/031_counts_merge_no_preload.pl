# Exact counts without shared_preload_libraries (issue 15): rows a MERGE ...
# UPDATE moves to another partition are counted by an executor hook, which
# exists only once the library is loaded.  In a fresh backend the library is
# loaded by our first trigger call — during the MERGE, after its executor
# started — so that MERGE is refused (55000, retry) instead of miscounting;
# the retry, and every later MERGE of that backend, counts exactly.  Then the
# same cluster with shared_preload_libraries: the first MERGE is exact too.
# Every psql call below is a new connection, i.e. a fresh backend.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $node = PostgreSQL::Test::Cluster->new('merge_no_preload');
$node->init;
$node->append_conf('postgresql.conf', "lifecycle.enabled = off\n");
$node->start;

$node->safe_psql('postgres', q{
    CREATE EXTENSION pg_lifecycle;
    CREATE TABLE pm (id int, k text) PARTITION BY LIST (k);
    CREATE TABLE pm_a PARTITION OF pm FOR VALUES IN ('a');
    CREATE TABLE pm_b PARTITION OF pm FOR VALUES IN ('b');
    INSERT INTO pm SELECT g, 'a' FROM generate_series(1, 6) g;
    SELECT lifecycle.count_enable('pm', '{k}');
});

# "count(a)=count(*) count(b)=count(*)" from a new connection.
sub counts {
    return $node->safe_psql('postgres', q{
        SELECT format('%s=%s %s=%s', lifecycle.count('pm', '{"k": "a"}'), (SELECT count(*) FROM pm WHERE k = 'a'),
                      lifecycle.count('pm', '{"k": "b"}'), (SELECT count(*) FROM pm WHERE k = 'b'))});
}
my $merge = q{MERGE INTO pm USING (VALUES (%d)) v(id) ON pm.id = v.id WHEN MATCHED THEN UPDATE SET k = 'b'};

my ($rc, $out, $err) = $node->psql('postgres', sprintf($merge, 1));
isnt($rc, 0, 'fresh backend: a MERGE moving a row, run while the library loads, fails');
like($err, qr/pg_lifecycle was loaded while this MERGE on counted table public\.pm was running/,
     'with the reason (and a hint to retry)');
is(counts(), '6=6 0=0', 'and changes nothing');

($rc, $out, $err) = $node->psql('postgres', "\\set ON_ERROR_STOP 0\n" . sprintf($merge, 1) . ";\n" . sprintf($merge, 2) . ";\n");
like($err, qr/pg_lifecycle was loaded while this MERGE/, 'fresh backend: the first MERGE fails again');
is(counts(), '5=5 1=1', 'the next one in the same backend (library loaded) is counted exactly');

($rc, $out, $err) = $node->psql('postgres', "SELECT lifecycle.count('pm');\n" . sprintf($merge, 3) . ";\n");
is($rc, 0, 'fresh backend that used pg_lifecycle before: the MERGE works');
is(counts(), '4=4 2=2', 'and is counted exactly');

($rc, $out, $err) = $node->psql('postgres', "UPDATE pm SET k = 'b' WHERE id = 4");
is($rc, 0, 'fresh backend: a plain UPDATE moving a row works');
is(counts(), '3=3 3=3', 'and is counted exactly');

$node->append_conf('postgresql.conf', "shared_preload_libraries = 'pg_lifecycle'\n");
$node->restart;
($rc, $out, $err) = $node->psql('postgres', sprintf($merge, 5));
is($rc, 0, 'preloaded: the first MERGE of a fresh backend works');
is(counts(), '2=2 4=4', 'and is counted exactly');

$node->stop;
done_testing();
