# The library with and without preload: CREATE EXTENSION and the bridge work
# either way, and a C++ error leaves the server up (no crash-restart).  The
# bridge's test library is found through test/selftest/selftest.conf (written
# by make installcheck).
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use FindBin;
use lib "$FindBin::Bin/lib";
use LifecycleTest;

my $preloaded = PostgreSQL::Test::Cluster->new('preloaded');
$preloaded->init;
$preloaded->append_conf('postgresql.conf', "shared_preload_libraries = 'pg_lifecycle'");
$preloaded->append_conf('postgresql.conf', slurp_file("$FindBin::Bin/../selftest/selftest.conf"));
$preloaded->start;

my $plain = PostgreSQL::Test::Cluster->new('plain');
$plain->init;
$plain->append_conf('postgresql.conf', slurp_file("$FindBin::Bin/../selftest/selftest.conf"));
$plain->start;

for my $node ($preloaded, $plain) {
    my $name = $node->name;
    $node->safe_psql('postgres', q{
        CREATE EXTENSION pg_lifecycle;
        CREATE FUNCTION selftest_raise(kind text, arg text DEFAULT NULL) RETURNS text
            AS 'pg_lifecycle_selftest', 'pg_lifecycle_selftest_raise' LANGUAGE C;
    });
    is($node->safe_psql('postgres', q{SELECT extversion FROM pg_extension WHERE extname = 'pg_lifecycle'}),
       '0.2', "$name: extension created");

    my $watch = crash_watch($node);
    my ($ret, $stdout, $stderr) = $node->psql('postgres', q{SELECT selftest_raise('cpp', 'x')},
        extra_params => ['-v', 'VERBOSITY=verbose']);
    isnt($ret, 0, "$name: C++ error reaches the client as an error");
    like($stderr, qr/ERROR:  22023: selftest: bad value "x"/, "$name: with its SQLSTATE");
    ($ret, $stdout, $stderr) = $node->psql('postgres', q{SELECT selftest_raise('spi', 'SELECT 1/0')},
        extra_params => ['-v', 'VERBOSITY=verbose']);
    like($stderr, qr/ERROR:  22012: division by zero/, "$name: PostgreSQL error from guarded C++ keeps its SQLSTATE");
    no_crash($watch, "$name, C++ errors");
}

like($preloaded->safe_psql('postgres', 'SHOW shared_preload_libraries'), qr/pg_lifecycle/,
     'preloaded cluster has the library preloaded');

$preloaded->stop;
$plain->stop;
done_testing();
