# Refresh-token families (SPEC.md §2) where a whole server is involved:
#  1. the server key: $PGDATA/pg_lifecycle_token.key, created on first use with
#     mode 0600, once even when many sessions use it first at the same moment;
#  2. storage: a pg_dump of the database holds no issued token, no MAC and not
#     the key — yet a restore (same cluster, same key) keeps every token valid;
#  3. a streaming standby: the key travels with the base backup, the families
#     can be read there, token functions refuse to run, and after promotion
#     every token keeps working;
#  4. a key file that is missing, different, malformed or readable by others:
#     never a silent mass logout or a forged token — a warning and 'invalid'
#     for a missing key (put the line back and the tokens work again), an error
#     naming the file and the fix otherwise.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use File::Copy;

sub key_file { my ($node) = @_; return $node->data_dir . '/pg_lifecycle_token.key'; }

# The MAC (bytes 34..49 of the token's 49) and the nonce (18..33), in hex.
sub token_part_hex {
    my ($token, $from) = @_;
    (my $b64 = $token) =~ tr{-_}{+/};
    $b64 .= '=' x ((4 - length($b64) % 4) % 4);
    require MIME::Base64;
    my $raw = MIME::Base64::decode_base64($b64);
    return unpack('H*', substr($raw, $from - 1, 16));
}

# token_rotate of $token on $node: "status|generation|token".
sub rotate {
    my ($node, $token, $db) = @_;
    return $node->safe_psql($db // 'postgres',
        "SELECT status || '|' || coalesce(generation::text, '') || '|' || coalesce(token, '')
           FROM lifecycle.token_rotate('$token')");
}
sub status_of { my ($r) = @_; return (split /\|/, $r)[0]; }
sub token_of  { my ($r) = @_; return (split /\|/, $r, 3)[2]; }

my $node = PostgreSQL::Test::Cluster->new('tokens');
$node->init(allows_streaming => 1);
$node->append_conf('postgresql.conf', qq{
shared_preload_libraries = 'pg_lifecycle'
max_worker_processes = 16
lifecycle.enabled = off
lifecycle.token_reuse_grace = '10min'   # replays below must not depend on how fast this machine is
});
# A check hook's parsed value (the interval settings' "extra") is freed by
# guc.c: with free() on 15, with guc_free() from 16 on — a server with such a
# setting in postgresql.conf must start, SET/RESET and reload on every version.
ok($node->start(fail_ok => 1), 'a server with lifecycle.token_reuse_grace in postgresql.conf starts')
  or die 'the server did not start';
is($node->safe_psql('postgres', 'SHOW lifecycle.token_reuse_grace'), '10min', 'its value is the configured one');
is($node->safe_psql('postgres', q{SET lifecycle.token_reuse_grace = '1min'; RESET lifecycle.token_reuse_grace;
                                   SHOW lifecycle.token_reuse_grace}),
   '10min', 'SET and RESET of an interval setting');
$node->append_conf('postgresql.conf', "lifecycle.token_reuse_grace = '9min'\n");
$node->reload;
ok($node->poll_query_until('postgres', q{SELECT current_setting('lifecycle.token_reuse_grace') = '9min'}),
   'a reload replaces the parsed value');
$node->append_conf('postgresql.conf', "lifecycle.token_reuse_grace = '10min'\n");
$node->reload;
$node->poll_query_until('postgres', q{SELECT current_setting('lifecycle.token_reuse_grace') = '10min'});
$node->safe_psql('postgres', 'CREATE EXTENSION pg_lifecycle');

########################################################################
# 1. The key is created on first use — once, under a first-use race.
########################################################################
ok(!-e key_file($node), 'no key file before the first token');
$node->safe_psql('postgres', 'CREATE TABLE issued (token text)');
$node->pgbench('--no-vacuum --client=8 --jobs=4 --transactions=20', 0, [qr{processed: 160/160}], [qr{^$}],
    'first use by 8 sessions at once',
    { '020_tokens_create' => q{INSERT INTO issued SELECT token FROM lifecycle.token_family_create('u-' || :client_id);} });
ok(-e key_file($node), 'the key file exists after the first token');
is(sprintf('%04o', (stat(key_file($node)))[2] & 07777), '0600', 'the key file has mode 0600');
is($node->safe_psql('postgres', q{SELECT count(*) || ' ' || string_agg(state, ',') FROM lifecycle.token_keys()}),
   '1 minting', 'one key, although 8 sessions used it first at the same time');
is($node->safe_psql('postgres', q{
    SELECT count(*) FILTER (WHERE r.status = 'rotated') || '/' || count(*)
      FROM issued, LATERAL lifecycle.token_rotate(issued.token) r}),
   '160/160', 'every token issued during the race rotates');

########################################################################
# 2. pg_dump holds no token, no MAC, not the key; a restore keeps tokens valid.
########################################################################
my ($family, $t1) = split /\|/, $node->safe_psql('postgres', q{
    SELECT family_id || '|' || token FROM lifecycle.token_family_create('alice', 'laptop')});
my $t2 = token_of(rotate($node, $t1));
my $t3 = token_of(rotate($node, $t2));
my @issued = ($t1, $t2, $t3);
my $dump_file = $node->basedir . '/tokens.dump.sql';
my ($dump_out, $dump_err) = run_command(['pg_dump', '--file' => $dump_file, '--dbname' => $node->connstr('postgres')]);
is($dump_err, '', 'pg_dump ran cleanly');
my $dump = slurp_file($dump_file);
like($dump, qr/COPY lifecycle\.token_family_state/, 'the dump holds the token families (for a restore)');
like($dump, qr/\Q$family\E/, 'the dump holds the family id');
like($dump, qr/\Q${\ token_part_hex($t3, 18)}\E/, "the dump holds the current token's nonce (stored)");
my $found = 0;
for my $t (@issued) {
    $found++ if index($dump, $t) >= 0;
    $found++ if index($dump, token_part_hex($t, 34)) >= 0;
}
is($found, 0, 'no issued token and no MAC of one in the dump');
my $key_text = slurp_file(key_file($node));
my ($key_hex) = $key_text =~ /^1 ([0-9a-f]{64})$/m;
ok(defined $key_hex, 'the key file lists key 1');
ok(index($dump, $key_hex) < 0, 'the key is not in the dump');

# Restored into another database of the same cluster (same key): the tokens work.
$node->safe_psql('postgres', 'CREATE DATABASE restored');
my ($out, $err) = run_command(['psql', '-X', '-q', '-v', 'ON_ERROR_STOP=1', '-d', $node->connstr('restored'),
                                 '-f', $dump_file]);
is($err, '', 'the dump restores cleanly');
is(status_of(rotate($node, $t2, 'restored')), 'replayed', 'restored: the previous token replays');
is(status_of(rotate($node, $t3, 'restored')), 'rotated', 'restored: the current token rotates');
is(status_of(rotate($node, $t1, 'restored')), 'reuse_detected', 'restored: an older token is reuse');
$node->safe_psql('postgres', 'DROP DATABASE restored');

########################################################################
# 3. A streaming standby, and its promotion.
########################################################################
my $t4 = token_of(rotate($node, $t3));
$node->backup('base');
my $standby = PostgreSQL::Test::Cluster->new('tokens_standby');
$standby->init_from_backup($node, 'base', has_streaming => 1);
# pg_basebackup keeps the key file's mode 0600; the test framework then copies
# the backup into place with a copy that does not (and the extension refuses a
# key file others can read, as PostgreSQL does with ssl_key_file).
chmod 0600, key_file($standby);
$standby->start;
my $t5 = token_of(rotate($node, $t4));    # after the backup: reaches the standby by streaming
$node->wait_for_catchup($standby);
ok(-e key_file($standby), 'the base backup carried the key file');
is($standby->safe_psql('postgres', q{SELECT fingerprint FROM lifecycle.token_keys() WHERE state = 'minting'}),
   $node->safe_psql('postgres', q{SELECT fingerprint FROM lifecycle.token_keys() WHERE state = 'minting'}),
   'standby: the same key (token_keys() compares fingerprints, read-only)');
is($standby->safe_psql('postgres', q{SELECT generation || ' ' || (revoked_at IS NULL) FROM lifecycle.token_families
                                      WHERE user_id = 'alice'}),
   '5 true', 'standby: the families can be read');
my ($rc, $stdout, $stderr) = $standby->psql('postgres', "SELECT * FROM lifecycle.token_rotate('$t5')",
                                            extra_params => ['-v', 'VERBOSITY=verbose']);
like($stderr, qr/25006: lifecycle\.token_rotate cannot run on a standby/, 'standby: token_rotate refuses (25006)');
($rc, $stdout, $stderr) = $standby->psql('postgres', q{SELECT * FROM lifecycle.token_family_create('bob')},
                                         extra_params => ['-v', 'VERBOSITY=verbose']);
like($stderr, qr/25006: lifecycle\.token_family_create cannot run on a standby/,
     'standby: token_family_create refuses (25006)');
$standby->promote;
$standby->poll_query_until('postgres', 'SELECT NOT pg_is_in_recovery()');
is(status_of(rotate($standby, $t4)), 'replayed', 'promoted: the previous token replays');
is(status_of(rotate($standby, $t5)), 'rotated', 'promoted: the current token rotates, no one is logged out');
$standby->stop;

########################################################################
# 4. Key file trouble.
########################################################################
my $t6 = $node->safe_psql('postgres', q{SELECT token FROM lifecycle.token_family_create('carol')});
my $saved = $key_text;

# Missing (a standby cloned before the key existed, then promoted): a new key
# is created for new tokens, with a new id; the old tokens are invalid — not an
# error — with a warning that says what to do.
unlink key_file($node) or die;
($rc, $stdout, $stderr) = $node->psql('postgres', "SELECT status FROM lifecycle.token_rotate('$t6')");
is($stdout, 'invalid', 'missing key: an old token is invalid');
like($stderr, qr/WARNING:  refresh-token key\(s\) 1 of this database, with which live tokens were issued, are missing from ".*pg_lifecycle_token\.key"/,
     'missing key: a warning names the key and the file');
like($stderr, qr/HINT:  Copy their lines from the key file of the server that issued them/, '... and the fix');
is($node->safe_psql('postgres', q{SELECT string_agg(key_id || ' ' || state, ', ' ORDER BY key_id) FROM lifecycle.token_keys()}),
   '1 missing, 2 minting', 'missing key: token_keys() shows it missing, and a new key 2 minting');
my $t7 = $node->safe_psql('postgres', q{SELECT token FROM lifecycle.token_family_create('carol')});
is(status_of(rotate($node, $t7)), 'rotated', 'missing key: new tokens work');
# Putting the line back revives the old tokens, and the new ones stay valid.
append_to_file(key_file($node), "1 $key_hex\n");
is(status_of(rotate($node, $t6)), 'rotated', 'key line restored: the old token rotates again');
$t7 = token_of(rotate($node, token_of(rotate($node, $t7))));
ok($t7 ne '', 'key line restored: the new family still rotates');

# A different key under a known id: an error, not forged or silently invalid tokens.
my $now = slurp_file(key_file($node));
(my $wrong = $now) =~ s/^1 [0-9a-f]{64}$/1 ${\ ('ab' x 32)}/m;
open(my $fh, '>', key_file($node)) or die; print $fh $wrong; close $fh;
($rc, $stdout, $stderr) = $node->psql('postgres', "SELECT status FROM lifecycle.token_rotate('$t7')",
                                      extra_params => ['-v', 'VERBOSITY=verbose']);
like($stderr, qr/55000: token key 1 in ".*" is not the key this database's refresh tokens were issued with/,
     'wrong key: 55000 naming the key and the file');
like($stderr, qr/HINT:  Put back the key file of the server that issued the tokens/, '... with the fix');

# Malformed.
open($fh, '>', key_file($node)) or die; print $fh "1 nonsense\n"; close $fh;
($rc, $stdout, $stderr) = $node->psql('postgres', "SELECT status FROM lifecycle.token_rotate('$t7')",
                                      extra_params => ['-v', 'VERBOSITY=verbose']);
like($stderr, qr/55000: token key file ".*" is malformed at line 1/, 'malformed key file: 55000 with the line');

# Readable by others.
open($fh, '>', key_file($node)) or die; print $fh $now; close $fh;
chmod 0644, key_file($node);
($rc, $stdout, $stderr) = $node->psql('postgres', "SELECT status FROM lifecycle.token_rotate('$t7')",
                                      extra_params => ['-v', 'VERBOSITY=verbose']);
like($stderr, qr/55000: token key file ".*" is accessible to other users/, 'world-readable key file: 55000');
like($stderr, qr/HINT:  chmod 0600/, '... with the fix');
chmod 0600, key_file($node);
is(status_of(rotate($node, $t7)), 'rotated', 'fixed: tokens work again');

# The key ring survives a restart.
$node->restart;
is($node->safe_psql('postgres', q{SELECT string_agg(key_id || ' ' || state, ', ' ORDER BY key_id) FROM lifecycle.token_keys()}),
   '1 verifying, 2 minting', 'after a restart: the same key ring');

$node->stop;
done_testing();
