# Shared by the TAP tests (use FindBin; use lib "$FindBin::Bin/lib"):
# real crash detection.  A crash-restart leaves pg_postmaster_start_time()
# as it was (the postmaster survives it), but it ends every session and
# leaves its trace in the server log; these helpers look at both.
package LifecycleTest;
use strict;
use warnings;
use Exporter 'import';
use PostgreSQL::Test::Utils;
use Test::More;

our @EXPORT = qw(crash_watch no_crash no_crash_since);

# What the postmaster logs when a server process crashes.
my $crash_re = qr/terminated by signal|terminating any other active server processes|was terminated by exception/;

# Before a risky step: where the server log ends now, and a sentinel session
# that a crash-restart would end.  Pass the result to no_crash().
sub crash_watch
{
    my ($node, $dbname) = @_;
    return {
        node => $node,
        offset => -s $node->logfile,
        sentinel => $node->background_psql($dbname // 'postgres', on_error_stop => 0),
    };
}

# After it: two tests, the sentinel still answers and the log shows no crash.
sub no_crash
{
    my ($watch, $name) = @_;
    local $Test::Builder::Level = $Test::Builder::Level + 1;
    # A new connection first: the postmaster handles the death of a crashed
    # process (and ends the others) before it lets us in, so that the
    # sentinel cannot answer in the moment in between.
    $watch->{node}->psql('postgres', 'SELECT 1');
    my ($out, $ret) = eval { $watch->{sentinel}->query('SELECT 1') };
    my $why = $@ || $watch->{sentinel}{stderr};
    eval { $watch->{sentinel}->quit };
    ok(defined $out && $out eq '1' && !$ret, "$name: no crash-restart (a session opened before still answers)")
      or diag($why);
    no_crash_since($watch->{node}, $watch->{offset}, $name);
}

# One test: no crash in the server log since byte $offset.
sub no_crash_since
{
    my ($node, $offset, $name) = @_;
    local $Test::Builder::Level = $Test::Builder::Level + 1;
    my @crashes = grep { /$crash_re/ } split /\n/, slurp_file($node->logfile, $offset);
    ok(!@crashes, "$name: no crash in the server log") or diag(join("\n", @crashes));
}

1;
