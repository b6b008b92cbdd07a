# Privilege escalation through the background worker (and the code around
# it), attempted by an ORDINARY role, mallory: she plants objects of her own
# (functions, operators, triggers, a look-alike schema, an advisory lock) and
# lets the worker — which connects as the bootstrap superuser — or another
# session run into them.  After each attack the test checks that mallory did
# not gain anything: she is not a superuser, and no payload of hers ran as a
# superuser or as another role (each payload writes a marker row into
# public.pwned, a table she owns, only when it runs like that; the marker
# records the backend type, so a failure says who ran it).
#
# Every scenario has its own database(s), dropped when it ends, and mallory is
# made NOSUPERUSER again between scenarios, so one scenario's success does not
# leak into the next.  A scenario that dies is reported as a failure and the
# others still run; the cluster is stopped at the end.
#
#  1. the issue's reproduction: an operator public.=(oid, regclass) (an exact
#     match that pg_catalog does not have) used by the worker's own queries;
#  2. a database mallory owns, with search_path = public, pg_catalog set on it:
#     her public.now(), =(oid,oid), <, <=, - shadow pg_catalog's in every
#     statement of the worker, with expiry, soft-delete retention and counts on;
#  3. a trigger on mallory's table (or on her count delta table) that makes a
#     session-level SET search_path inside the worker's batch: after it, the
#     worker's superuser statements would resolve to her shadows (one database
#     each for expiry, the soft-delete purge and the count fold);
#  4. a look-alike lifecycle.soft_delete_tables (and _current_actor /
#     _current_delete_event) in a database WITHOUT the extension: a superuser's
#     DELETE there must be an ordinary DELETE and run none of her code; the
#     same with the registry as a view, read when any statement is planned;
#  5. an advisory lock held by mallory must not stop the count fold of
#     another role's table;
#  6. DROP DATABASE, ALTER DATABASE RENAME / SET TABLESPACE and CREATE
#     DATABASE ... TEMPLATE that mallory is not allowed to run (with and
#     without CREATEDB) must not stop the database's worker;
#  7. (not through the worker) the SQL-callable functions that switch to the
#     extension's owner: expire_disable / soft_delete_disable with her
#     public.=(regclass, regclass), count_enable / count_disable with her
#     session's search_path = public, pg_catalog and public.=(int, int).
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time usleep);

my $node = PostgreSQL::Test::Cluster->new('security');
$node->init;
$node->append_conf('postgresql.conf', q{
shared_preload_libraries = 'pg_lifecycle'
lifecycle.naptime = '1s'
max_worker_processes = 16
});
$node->start;
$node->safe_psql('postgres', q{
    CREATE ROLE mallory LOGIN;
    CREATE ROLE alice LOGIN;
});

########################################################################
# Helpers
########################################################################

# As the superuser, with pg_catalog first whatever the database says (in a
# database of mallory's the search_path set on it would put her functions
# first for our own checks too).
sub su {
    my ($db, $sql) = @_;
    return $node->safe_psql($db, "SET search_path = pg_catalog, public;\n$sql");
}

# As an ordinary role.
sub as {
    my ($role, $db, $sql) = @_;
    return $node->safe_psql($db, $sql, extra_params => [ '-U', $role ]);
}

# As an ordinary role, not dying on error: (exit code, stdout, stderr).
sub try_as {
    my ($role, $db, $sql) = @_;
    my ($out, $err);
    my $rc = $node->psql($db, $sql, extra_params => [ '-U', $role ], stdout => \$out, stderr => \$err);
    return ($rc, $out, $err);
}

# Polls $sql (as the superuser) until it returns $expected; false after $secs.
sub poll {
    my ($db, $sql, $expected, $secs) = @_;
    my $deadline = time + ($secs // 15);
    my $got = '';
    while (1) {
        $got = eval { su($db, $sql) } // '';
        return 1 if $got eq $expected;
        if (time > $deadline) {
            diag("poll on $db gave up after ${\($secs // 15)}s: '$sql' returned '$got', expected '$expected'");
            return 0;
        }
        usleep(200_000);
    }
}

sub server_now {
    my ($db) = @_;
    return su($db, 'SELECT clock_timestamp()');
}

# Waits for $n maintenance passes of $db's workers that start from now on
# (counted by the launcher: a pass that finds nothing to do writes no
# job_runs row).  $since (when the scenario's action began) must be before.
# The worker serves every database of the cluster in turn (lifecycle.max_workers
# at a time, a naptime apart), so $n passes of one database take several
# naptimes per database on a loaded machine: 40 s by default.
sub wait_passes {
    my ($db, $since, $n, $secs) = @_;
    my $base = su($db, q{SELECT coalesce((lifecycle._worker_state()->>'passes')::int, 0)});
    return poll($db, qq{SELECT (lifecycle._worker_state()->>'passes')::int >= $base + $n + 1}, 't', $secs // 40);
}

sub mallory_is_super {
    return $node->safe_psql('postgres', q{SELECT rolsuper FROM pg_roles WHERE rolname = 'mallory'});
}

# The payload markers of $db: "scenario|role|backend type" lines, '' if none.
sub markers {
    my ($db) = @_;
    return su($db, q{SELECT coalesce(string_agg(DISTINCT scenario || '|' || who || '|' || coalesce(backend, '?'), E'\n'), '')
                       FROM public.pwned});
}

# The table of markers and public.lc_pwn(tag), which mallory's payloads call:
# it writes a marker when it runs as a superuser or as another role than
# mallory, and, as a superuser, makes mallory one.  Its own search_path is
# pinned, so it resolves to pg_catalog whatever the caller's is.
my $marker_sql = q{
CREATE TABLE public.pwned (scenario text, who text, backend text);
GRANT INSERT ON public.pwned TO PUBLIC;
CREATE FUNCTION public.lc_pwn(tag text) RETURNS void LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp AS $f$
DECLARE
    su boolean;
BEGIN
    SELECT rolsuper INTO su FROM pg_roles WHERE rolname = current_user;
    IF su OR current_user <> 'mallory' THEN
        INSERT INTO public.pwned
        SELECT tag, current_user, backend_type FROM pg_stat_activity WHERE pid = pg_backend_pid();
    END IF;
    IF su THEN
        EXECUTE 'ALTER ROLE mallory SUPERUSER';
    END IF;
END $f$;
};

# A function of mallory's (in public unless $name is qualified) that calls
# lc_pwn($tag), then returns $result.
sub shadow_fn {
    my ($name, $args, $ret, $tag, $result) = @_;
    $name = "public.$name" unless $name =~ /\./;
    return "CREATE FUNCTION $name($args) RETURNS $ret LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp "
      . "AS \$f\$ BEGIN PERFORM public.lc_pwn('$tag'); RETURN $result; END \$f\$;\n";
}

# Shadows of what the worker's SQL uses, planted in public.  They only
# win over pg_catalog's when public comes first in the search_path (they are
# exact matches of pg_catalog's own).
sub shadows_sql {
    my ($s) = @_;
    return shadow_fn('now', '', 'timestamptz', "$s: public.now()", 'now()')
      . shadow_fn('lc_eq_oid', 'oid, oid', 'boolean', "$s: public.=(oid,oid)", '$1 = $2')
      . "CREATE OPERATOR public.= (LEFTARG = oid, RIGHTARG = oid, FUNCTION = public.lc_eq_oid);\n"
      . shadow_fn('lc_lt_ts', 'timestamptz, timestamptz', 'boolean', "$s: public.<(timestamptz,timestamptz)", '$1 < $2')
      . "CREATE OPERATOR public.< (LEFTARG = timestamptz, RIGHTARG = timestamptz, FUNCTION = public.lc_lt_ts);\n"
      . shadow_fn('lc_le_ts', 'timestamptz, timestamptz', 'boolean', "$s: public.<=(timestamptz,timestamptz)", '$1 <= $2')
      . "CREATE OPERATOR public.<= (LEFTARG = timestamptz, RIGHTARG = timestamptz, FUNCTION = public.lc_le_ts);\n"
      . shadow_fn('lc_mi_ts', 'timestamptz, interval', 'timestamptz', "$s: public.-(timestamptz,interval)", '$1 - $2')
      . "CREATE OPERATOR public.- (LEFTARG = timestamptz, RIGHTARG = interval, FUNCTION = public.lc_mi_ts);\n";
}

# A database with the extension, where mallory may create in public.
sub new_db {
    my ($db, %opt) = @_;
    $node->safe_psql('postgres', "CREATE DATABASE $db" . ($opt{owner} ? " OWNER $opt{owner}" : ''));
    $opt{before_extension}->() if $opt{before_extension};
    $node->safe_psql($db, 'CREATE EXTENSION pg_lifecycle') unless $opt{no_extension};
    $node->safe_psql($db, 'GRANT CREATE ON SCHEMA public TO mallory') unless $opt{owner};
}

# The end of a scenario: its databases dropped (their workers and mallory's
# objects with them) and mallory an ordinary role again.
sub reset_scenario {
    for my $db (@_) {
        eval { $node->safe_psql('postgres', "DROP DATABASE IF EXISTS $db WITH (FORCE)"); 1 }
          or diag("dropping $db: $@");
    }
    $node->safe_psql('postgres', 'ALTER ROLE mallory NOSUPERUSER NOCREATEDB');
}

# Runs one scenario; one that dies counts as a failure and the next runs.
sub scenario {
    my ($name, $body, @dbs) = @_;
    note("---- $name");
    eval { $body->(); 1 } or do { fail("$name: the scenario ran to its end"); diag($@); };
    eval { reset_scenario(@dbs); 1 } or diag("reset after $name: $@");
}

sub no_escalation {
    my ($s, $db, $what) = @_;
    is(mallory_is_super(), 'f', "$s: mallory is not a superuser after $what");
    is(markers($db), '', "$s: none of mallory's payloads ran as a superuser or as another role ($db)");
}

########################################################################
# 1. The issue's reproduction: public.=(oid, regclass), an exact match that
#    pg_catalog lacks, used by the worker's queries on the registry.
########################################################################
scenario('s1', sub {
    new_db('sec1');
    as('mallory', 'sec1', $marker_sql . q{
CREATE FUNCTION public.pwn(oid, regclass) RETURNS bool LANGUAGE plpgsql AS $$
BEGIN
    PERFORM public.lc_pwn('s1: public.=(oid,regclass)');
    IF (SELECT rolsuper FROM pg_catalog.pg_roles WHERE rolname = current_user) THEN
        EXECUTE 'ALTER ROLE mallory SUPERUSER';
    END IF;
    RETURN $1 OPERATOR(pg_catalog.=) $2::oid;
END $$;
CREATE OPERATOR public.= (LEFTARG = oid, RIGHTARG = regclass, FUNCTION = public.pwn);
CREATE TABLE public.t (id int PRIMARY KEY, ts timestamptz);
INSERT INTO public.t VALUES (1, now() - interval '1 hour'), (2, now() + interval '1 day');
});
    my $since = server_now('sec1');
    as('mallory', 'sec1', q{SELECT lifecycle.expire_enable('public.t', 'ts')});
    ok(wait_passes('sec1', $since, 3), 's1: the worker ran passes over the planted operator');
    ok(poll('sec1', 'SELECT string_agg(id::text, \',\') FROM public.t', '2', 10), 's1: the expired row was swept');
    no_escalation('s1', 'sec1', 'the worker ran over her table');
}, 'sec1');

########################################################################
# 2. A database owned by mallory, with search_path = public, pg_catalog set
#    on it (a database owner may): every connection to it — the worker's too
#    — resolves unqualified names to her public functions and operators first.
#    Expiry, a soft-delete retention and counts on her tables make every task
#    of the worker touch them.
########################################################################
scenario('s2', sub {
    new_db('sec2', owner => 'mallory', before_extension => sub {
        as('mallory', 'sec2', 'ALTER DATABASE sec2 SET search_path = public, pg_catalog');
    });
    # Her own calls of the lifecycle functions with pg_catalog first: this
    # scenario is about what the worker does (see 7 for these functions).
    as('mallory', 'sec2', $marker_sql . shadows_sql('s2') . q{
SET search_path = pg_catalog, public;
CREATE TABLE public.t1 (id int PRIMARY KEY, ts timestamptz);
INSERT INTO public.t1 VALUES (1, now() - interval '1 hour'), (2, now() - interval '1 minute'), (3, now() + interval '1 day');
CREATE TABLE public.t2 (id int PRIMARY KEY, note text);
INSERT INTO public.t2 SELECT g, 'n' FROM generate_series(1, 5) g;
CREATE TABLE public.t3 (id int PRIMARY KEY, kind text);
});
    my $since = server_now('sec2');
    my $t3 = as('mallory', 'sec2', q{
SET search_path = pg_catalog, public;
SELECT lifecycle.expire_enable('public.t1', 'ts');
SELECT lifecycle.soft_delete_enable('public.t2', retention => '1 second');
DELETE FROM public.t2 WHERE id <= 2;
SELECT lifecycle.count_enable('public.t3', '{kind}');
INSERT INTO public.t3 SELECT g, CASE WHEN g % 2 = 0 THEN 'a' ELSE 'b' END FROM generate_series(1, 6) g;
SELECT id FROM lifecycle.count_tables WHERE tbl = 'public.t3'::regclass;
});
    ($t3) = $t3 =~ /(\d+)\s*$/;
    ok(poll('sec2', 'SELECT string_agg(id::text, \',\' ORDER BY id) FROM public.t1', '3'), 's2: expired rows swept');
    ok(poll('sec2', 'SET lifecycle.include_deleted = on; SELECT string_agg(id::text, \',\' ORDER BY id) FROM public.t2',
            '3,4,5'), 's2: soft-deleted rows purged after their retention');
    ok(poll('sec2', "SELECT count(*) FROM lifecycle.count_${t3}_delta", '0'), 's2: count deltas folded');
    ok(wait_passes('sec2', $since, 4), 's2: the worker ran passes in her database');
    no_escalation('s2', 'sec2', 'the worker served a database whose search_path she set');
}, 'sec2');

########################################################################
# 3. A trigger of mallory's makes a session-level SET search_path = public,
#    pg_catalog inside the worker's batch.  If the setting outlived the batch,
#    the worker's next superuser statements (the collecting queries,
#    session_close, job_runs_purge ...) would call her shadows.  Her shadows
#    are exact matches of pg_catalog's, so only such a leak makes them win
#    (public.=(oid, regclass) of 1 would not tell the two flaws apart).
########################################################################
my $leak_sql = q{
CREATE FUNCTION public.lc_leak() RETURNS trigger LANGUAGE plpgsql AS $f$
BEGIN
    PERFORM pg_catalog.set_config('search_path', 'public, pg_catalog', false);
    RETURN OLD;
END $f$;
};

# 3a. Expiry: BEFORE DELETE row trigger on the expired table.
scenario('s3a', sub {
    new_db('sec3a');
    as('mallory', 'sec3a', $marker_sql . shadows_sql('s3a') . $leak_sql . q{
CREATE TABLE public.e (id int PRIMARY KEY, ts timestamptz);
CREATE TRIGGER a_leak BEFORE DELETE ON public.e FOR EACH ROW EXECUTE FUNCTION public.lc_leak();
INSERT INTO public.e SELECT g, now() - interval '1 hour' FROM generate_series(1, 5) g;
INSERT INTO public.e VALUES (6, now() + interval '1 day');
SELECT lifecycle.expire_enable('public.e', 'ts');
});
    ok(poll('sec3a', 'SELECT string_agg(id::text, \',\') FROM public.e', '6'), 's3a: the expired rows were deleted');
    ok(wait_passes('sec3a', server_now('sec3a'), 3), 's3a: the worker ran passes after the trigger fired');
    no_escalation('s3a', 'sec3a', 'her trigger changed search_path in an expiry batch');
}, 'sec3a');

# 3b. Soft-delete purge: BEFORE DELETE row trigger on the purged table.
scenario('s3b', sub {
    new_db('sec3b');
    as('mallory', 'sec3b', $marker_sql . shadows_sql('s3b') . $leak_sql . q{
CREATE TABLE public.p (id int PRIMARY KEY, note text);
CREATE TRIGGER a_leak BEFORE DELETE ON public.p FOR EACH ROW EXECUTE FUNCTION public.lc_leak();
INSERT INTO public.p SELECT g, 'n' FROM generate_series(1, 5) g;
SELECT lifecycle.soft_delete_enable('public.p', retention => '1 second');
DELETE FROM public.p WHERE id <= 2;
});
    ok(poll('sec3b', 'SET lifecycle.include_deleted = on; SELECT string_agg(id::text, \',\' ORDER BY id) FROM public.p',
            '3,4,5'), 's3b: the soft-deleted rows were purged');
    ok(wait_passes('sec3b', server_now('sec3b'), 3), 's3b: the worker ran passes after the trigger fired');
    no_escalation('s3b', 'sec3b', 'her trigger changed search_path in a purge batch');
}, 'sec3b');

# 3c. Count fold: the delta table is owned by the counted table's owner, so
#     she can put a BEFORE DELETE row trigger on it; the fold deletes from it.
scenario('s3c', sub {
    new_db('sec3c');
    my $id = as('mallory', 'sec3c', $marker_sql . shadows_sql('s3c') . $leak_sql . q{
CREATE TABLE public.c (id int PRIMARY KEY, kind text);
SELECT lifecycle.count_enable('public.c', '{kind}');
SELECT id FROM lifecycle.count_tables WHERE tbl = 'public.c'::regclass;
});
    ($id) = $id =~ /(\d+)\s*$/;
    # A fix may take the delta table away from her: then there is no trigger
    # to plant, and the rest checks that the fold still works.
    my ($rc, $out, $err) = try_as('mallory', 'sec3c',
        "CREATE TRIGGER a_leak BEFORE DELETE ON lifecycle.count_${id}_delta FOR EACH ROW EXECUTE FUNCTION public.lc_leak()");
    note("s3c: mallory could not put a trigger on lifecycle.count_${id}_delta: $err") if $rc != 0;
    as('mallory', 'sec3c', q{INSERT INTO public.c SELECT g, CASE WHEN g % 2 = 0 THEN 'a' ELSE 'b' END FROM generate_series(1, 6) g});
    ok(poll('sec3c', "SELECT count(*) FROM lifecycle.count_${id}_delta", '0'), 's3c: the deltas were folded');
    ok(wait_passes('sec3c', server_now('sec3c'), 3), 's3c: the worker ran passes after the trigger fired');
    is(as('mallory', 'sec3c', q{SELECT lifecycle.count('public.c', '{"kind": "a"}')}), '3', 's3c: the counts are right');
    no_escalation('s3c', 'sec3c', 'her trigger changed search_path in a count fold');
}, 'sec3c');

########################################################################
# 4. A look-alike schema "lifecycle" in a database WITHOUT the extension
#    (mallory may create schemas there).  The library is preloaded, so the
#    soft-delete planner hook runs in every backend of every database.
########################################################################

# 4a. A registry table listing the superuser's public.victim, and
#     _current_actor() / _current_delete_event() that escalate (and 0.1's
#     current_actor() / current_delete_event(), which the library also
#     looks for).  victim has
#     columns named like soft delete's own (an application's soft delete).
scenario('s4a', sub {
    new_db('sec4a', no_extension => 1);
    su('sec4a', q{
GRANT CREATE ON DATABASE sec4a TO mallory;
GRANT CREATE ON SCHEMA public TO mallory;
CREATE TABLE public.victim (id int PRIMARY KEY, note text, deleted_at timestamptz, deleted_by text, delete_event bigint);
INSERT INTO public.victim (id, note) VALUES (1, 'one'), (2, 'two'), (3, 'three');
});
    as('mallory', 'sec4a', $marker_sql . q{
CREATE SCHEMA lifecycle;
CREATE TABLE lifecycle.soft_delete_tables (tbl regclass PRIMARY KEY, hide boolean, retention interval, enabled_at timestamptz);
INSERT INTO lifecycle.soft_delete_tables VALUES ('public.victim', true, NULL, now());
} . shadow_fn('lifecycle._current_actor', '', 'text', 's4a: lifecycle._current_actor()', "'mallory'")
  . shadow_fn('lifecycle._current_delete_event', '', 'bigint', 's4a: lifecycle._current_delete_event()', '1')
  . shadow_fn('lifecycle.current_actor', '', 'text', 's4a: lifecycle.current_actor()', "'mallory'")
  . shadow_fn('lifecycle.current_delete_event', '', 'bigint', 's4a: lifecycle.current_delete_event()', '1'));
    my $out = su('sec4a', 'DELETE FROM public.victim WHERE id = 1 RETURNING id');
    is($out, '1', 's4a: the superuser\'s DELETE reports the row');
    is(su('sec4a', q{SET lifecycle.include_deleted = on;
                     SELECT string_agg(id::text || ':' || coalesce(deleted_by, '-'), ',' ORDER BY id) FROM public.victim}),
       '2:-,3:-', 's4a: the row was really deleted (no extension here: an ordinary DELETE)');
    no_escalation('s4a', 'sec4a', 'a superuser deleted from a table her look-alike registry lists');
}, 'sec4a');

# 4b. The registry as a view over a function of hers: read whenever a
#     statement is planned, so any statement of a superuser would run it.
scenario('s4b', sub {
    new_db('sec4b', no_extension => 1);
    su('sec4b', q{
GRANT CREATE ON DATABASE sec4b TO mallory;
GRANT CREATE ON SCHEMA public TO mallory;
CREATE TABLE public.victim (id int PRIMARY KEY, note text);
INSERT INTO public.victim VALUES (1, 'one'), (2, 'two');
});
    as('mallory', 'sec4b', $marker_sql . shadow_fn('lc_hide', '', 'boolean', 's4b: registry view', 'true') . q{
CREATE SCHEMA lifecycle;
CREATE VIEW lifecycle.soft_delete_tables AS
    SELECT 'public.victim'::regclass AS tbl, public.lc_hide() AS hide, NULL::interval AS retention, now() AS enabled_at;
});
    is(su('sec4b', 'SELECT count(*) FROM public.victim'), '2', 's4b: the superuser reads victim');
    is(su('sec4b', 'DELETE FROM public.victim WHERE id = 1 RETURNING id'), '1', 's4b: and deletes a row');
    no_escalation('s4b', 'sec4b', 'a superuser ran statements in a database with her look-alike registry view');
}, 'sec4b');

########################################################################
# 5. mallory holds the fold's advisory lock key (class 0x4C434E54 =
#    1279479380, the table's count id) in a session of her own: the fold of
#    alice's table must still happen.
########################################################################
scenario('s5', sub {
    new_db('sec5');
    su('sec5', 'GRANT CREATE ON SCHEMA public TO alice');
    my $id = as('alice', 'sec5', q{
CREATE TABLE public.ac (id serial PRIMARY KEY, kind text);
SELECT lifecycle.count_enable('public.ac', '{kind}');
GRANT INSERT ON public.ac TO mallory;
GRANT USAGE ON SEQUENCE public.ac_id_seq TO mallory;
SELECT id FROM lifecycle.count_tables WHERE tbl = 'public.ac'::regclass;
});
    ($id) = $id =~ /(\d+)\s*$/;
    my $bg = $node->background_psql('sec5', extra_params => [ '-U', 'mallory' ]);
    my $ok = eval {
        $bg->query_safe("SELECT pg_advisory_lock(1279479380, $id)");
        is($bg->query_safe('SELECT count(*) FROM pg_locks WHERE locktype = \'advisory\' AND pid = pg_backend_pid()'),
           '1', 's5: mallory holds the advisory lock');
        as('alice', 'sec5', q{INSERT INTO public.ac (kind) SELECT CASE WHEN g % 2 = 0 THEN 'a' ELSE 'b' END FROM generate_series(1, 10) g});
        as('mallory', 'sec5', q{INSERT INTO public.ac (kind) VALUES ('a')});
        ok(poll('sec5', "SELECT count(*) FROM lifecycle.count_${id}_delta", '0', 10),
           's5: the fold empties alice\'s deltas while mallory holds the advisory lock');
        is(as('alice', 'sec5', q{SELECT lifecycle.count('public.ac', '{"kind": "a"}')}), '6', 's5: the counts are right');
        1;
    };
    my $err = $@;
    eval { $bg->quit };
    die $err unless $ok;
}, 'sec5');

########################################################################
# 6. Statements that need a database to themselves, run by mallory who may
#    not run them: they fail with a permission error, and must not stop the
#    database's worker (on an error the pause would last 60 s).
########################################################################
scenario('s6', sub {
    # database => [statement, the error it must fail with]
    my %stmt = (
        sec6a => [ 'DROP DATABASE sec6a', qr/must be owner of database sec6a/ ],
        sec6b => [ 'ALTER DATABASE sec6b RENAME TO sec6b_renamed', qr/must be owner of database sec6b/ ],
        sec6c => [ 'CREATE DATABASE sec6c_copy TEMPLATE sec6c', qr/permission denied to create database/ ],
        # With CREATEDB, but sec6d is no template and not hers.
        sec6d => [ 'CREATE DATABASE sec6d_copy TEMPLATE sec6d', qr/permission denied to copy database "sec6d"/ ],
        sec6e => [ 'ALTER DATABASE sec6e SET TABLESPACE pg_default', qr/must be owner of database sec6e/ ],
    );
    my @dbs = sort keys %stmt;
    my $log_offset = -s $node->logfile;
    for my $db (@dbs) {
        new_db($db);
        su($db, q{
CREATE TABLE public.t6 (id serial PRIMARY KEY, ts timestamptz);
SELECT lifecycle.expire_enable('public.t6', 'ts');
});
    }
    for my $db (@dbs) {
        ok(poll($db, q{SELECT (lifecycle._worker_state()->>'passes')::int > 0}, 't'), "s6: $db is served by the pool");
    }
    for my $db (@dbs) {
        my ($sql, $error) = @{ $stmt{$db} };
        su('postgres', 'ALTER ROLE mallory CREATEDB') if $db eq 'sec6d';
        my ($rc, $out, $err) = try_as('mallory', 'postgres', $sql);
        su('postgres', 'ALTER ROLE mallory NOCREATEDB') if $db eq 'sec6d';
        isnt($rc, 0, "s6: mallory's '$sql' fails");
        like($err, $error, "s6: ... with a permission error");
        su($db, q{INSERT INTO public.t6 (ts) SELECT now() - interval '1 minute' FROM generate_series(1, 5)});
    }
    # A few naptimes for all of them at once.
    my %swept;
    my $deadline = time + 6;
    while (time < $deadline && grep { !$swept{$_} } @dbs) {
        for my $db (grep { !$swept{$_} } @dbs) {
            $swept{$db} = 1 if su($db, 'SELECT count(*) FROM public.t6') eq '0';
        }
        usleep(200_000);
    }
    for my $db (@dbs) {
        ok($swept{$db}, "s6: $db: rows that expired after mallory's failed '$stmt{$db}[0]' are swept within a few naptimes");
    }
    my @stopped = grep { /terminating background worker "pg_lifecycle worker"/ } split /\n/, slurp_file($node->logfile, $log_offset);
    is(scalar(@stopped), 0, "s6: mallory's statements stopped no worker");
}, 'sec6a', 'sec6b', 'sec6c', 'sec6d', 'sec6e');

########################################################################
# 7. Not through the worker: the functions an ordinary role calls on her own
#    table, which run SQL as the extension's owner (a superuser).
########################################################################

# 7a. public.=(regclass, regclass): pg_catalog has no such operator, so hers
#     is the exact match for "tbl = $1" on a regclass column.
scenario('s7a', sub {
    new_db('sec7a');
    as('mallory', 'sec7a', $marker_sql
          . shadow_fn('lc_eq_regclass', 'regclass, regclass', 'boolean', 's7a: public.=(regclass,regclass)', '$1::oid = $2::oid')
          . q{
CREATE OPERATOR public.= (LEFTARG = regclass, RIGHTARG = regclass, FUNCTION = public.lc_eq_regclass);
CREATE TABLE public.t (id int PRIMARY KEY, ts timestamptz);
SELECT lifecycle.expire_enable('public.t', 'ts');
SELECT lifecycle.expire_disable('public.t');
SELECT lifecycle.soft_delete_enable('public.t');
SELECT lifecycle.soft_delete_disable('public.t');
});
    no_escalation('s7a', 'sec7a', 'expire_disable / soft_delete_disable with her =(regclass, regclass)');
}, 'sec7a');

# 7b. Her session's search_path puts public first: public.=(int, int).
scenario('s7b', sub {
    new_db('sec7b');
    as('mallory', 'sec7b', $marker_sql
          . shadow_fn('lc_eq_int', 'integer, integer', 'boolean', 's7b: public.=(int,int)', '$1 = $2')
          . q{
CREATE OPERATOR public.= (LEFTARG = integer, RIGHTARG = integer, FUNCTION = public.lc_eq_int);
CREATE TABLE public.c (id int PRIMARY KEY, kind text);
SET search_path = public, pg_catalog;
SELECT lifecycle.count_enable('public.c', '{kind}');
SELECT lifecycle.count_disable('public.c');
});
    no_escalation('s7b', 'sec7b', 'count_enable / count_disable with search_path = public, pg_catalog');
}, 'sec7b');

eval { $node->stop; 1 } or diag("stopping the cluster: $@");
done_testing();
