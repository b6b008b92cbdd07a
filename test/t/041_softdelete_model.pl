# Soft delete against a model (SPEC.md §1, README "Soft delete"): random
# foreign-key graphs — every ON DELETE action (CASCADE, RESTRICT, NO ACTION,
# also DEFERRABLE INITIALLY DEFERRED or IMMEDIATE, SET NULL, SET DEFAULT), cycles and
# self-references, tables with and without soft delete (hide on and off, some
# with rows deleted before enabling) — and random statements: DELETE (plain,
# RETURNING, in a CTE), an application's own soft delete (UPDATE … SET
# deleted_at = now()) and restore (SET deleted_at = NULL, under
# lifecycle.include_deleted), MERGE … WHEN MATCHED THEN DELETE (and, from 17,
# WHEN NOT MATCHED BY SOURCE THEN DELETE), lifecycle.restore,
# lifecycle.purge, hard DELETE (lifecycle.hard_delete, and tables without soft
# delete), INSERT, upserts, UPDATE, lifecycle.actor; alone or in transactions
# (savepoints, rollbacks, ORM-style one DELETE per child).  After every
# statement the test compares with the model (lib/SoftDeleteModel.pm): the
# SQLSTATE of an error, the row count reported (command tag, RETURNING,
# function result), the rows each table shows, and with include_deleted every
# row: deleted_at set or not (same value for one transaction), delete_event
# (one per transaction), deleted_by, foreign keys.
#
# Where the result depends on an order nobody promises, the model gives each
# possible result and any of them is accepted.  Statements that would reach
# a known defect (listed in lib/SoftDeleteModel.pm) are not run.
#
# A round is one random schema and SD_MODEL_STEPS steps (a statement or a
# transaction); make test runs SD_MODEL_ROUNDS = 30 rounds of 50 steps with
# a new seed each time, make test-model-long more.  SD_MODEL_SEED fixes the
# seed; round r uses seed + r.  A mismatch prints how to run that round
# alone, its statements (with the model's outcomes) and the difference.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use IPC::Run;
use Storable qw(dclone);
use Time::HiRes ();
use SoftDeleteModel;

my $seed = $ENV{SD_MODEL_SEED} // int(Time::HiRes::time() * 1000) % 1000000000;
my $rounds = $ENV{SD_MODEL_ROUNDS} // 30;
my $steps = $ENV{SD_MODEL_STEPS} // 50;
note "soft delete model: SD_MODEL_SEED=$seed SD_MODEL_ROUNDS=$rounds SD_MODEL_STEPS=$steps";

my $node = PostgreSQL::Test::Cluster->new('sd_model');
$node->init;
$node->append_conf('postgresql.conf', "shared_preload_libraries = 'pg_lifecycle'\nlifecycle.enabled = off\n");
$node->start;
$node->safe_psql('postgres', 'CREATE EXTENSION pg_lifecycle');
my $version = $node->safe_psql('postgres', 'SHOW server_version_num');
$SoftDeleteModel::current_user = $node->safe_psql('postgres', 'SELECT current_user');

########################################################################
# One psql session, statement by statement: its output (tuples and command
# tags) and its errors (SQLSTATE, VERBOSITY verbose).
########################################################################
package Session {
    sub new {
        my ($class, $node) = @_;
        my $self = bless { in => '', out => '', err => '', n => 0 }, $class;
        $self->{timer} = IPC::Run::timeout(300);
        $self->{h} = IPC::Run::start(
            [ 'psql', '-X', '-A', '-t', '-v', 'VERBOSITY=verbose', '-d', $node->connstr('postgres'), '-f', '-' ],
            '<', \$self->{in}, '>', \$self->{out}, '2>', \$self->{err}, $self->{timer});
        return $self;
    }

    # (stdout, stderr) of $sql
    sub run {
        my ($self, $sql) = @_;
        my $sep = '@@sep ' . ++$self->{n} . '@@';
        $self->{in} .= "$sql\n\\echo '$sep'\n\\warn '$sep'\n";
        $self->{timer}->start(300);
        $self->{h}->pump until $self->{out} =~ /\Q$sep\E\n/ && $self->{err} =~ /\Q$sep\E\n/;
        my ($out, $err);
        ($out) = $self->{out} =~ /\A(.*?)\Q$sep\E\n/s;
        $self->{out} =~ s/\A.*?\Q$sep\E\n//s;
        ($err) = $self->{err} =~ /\A(.*?)\Q$sep\E\n/s;
        $self->{err} =~ s/\A.*?\Q$sep\E\n//s;
        return ($out, $err);
    }

    sub quit {
        my ($self) = @_;
        $self->{in} .= "\\q\n";
        $self->{h}->finish;
    }
}

my $session = Session->new($node);

########################################################################
# Per round: the schema, the model state, the statement log.
########################################################################
my ($sc, $s, $maps, @log, $token, $failed);
my %stats;    # what the statements did, for the note at the end

sub pick { return $_[ int(rand(@_)) ]; }

sub weighted {
    my (%w) = @_;
    my $total = 0;
    $total += $_ for values %w;
    my $x = rand($total);
    for my $k (sort keys %w) {
        return $k if ($x -= $w{$k}) < 0;
    }
    return (sort keys %w)[0];
}

sub qname { my ($t) = @_; return "$sc->{name}.$sc->{tables}[$t]{name}"; }

sub sqlval { my ($v) = @_; return defined $v ? $v : 'NULL'; }

sub new_schema {
    my ($round) = @_;
    my $nt = 3 + int(rand(3));
    my %sc = (name => "m$round", tables => [], fks => []);
    for my $t (0 .. $nt - 1) {
        my $soft = rand() < 0.7 ? 1 : 0;
        push @{ $sc{tables} }, {
            name => "t$t",
            soft => $soft,
            hide => $soft && rand() < 0.8 ? 1 : 0,
            pre => $soft && rand() < 0.3 ? 1 : 0,    # has deleted_at (and deleted rows) before enabling
            cols => [],
        };
    }
    for my $t (0 .. $nt - 1) {
        my $nf = pick(0, 1, 1, 2, 2, 3);
        for my $j (0 .. $nf - 1) {
            my $parent = rand() < 0.25 ? $t : int(rand($nt));
            # ad: NO ACTION DEFERRABLE INITIALLY DEFERRED; ai: ... INITIALLY
            # IMMEDIATE (checked at once: the test never runs SET CONSTRAINTS,
            # see the known defects in lib/SoftDeleteModel.pm).
            my $act = weighted(c => 4, r => 2, a => 2, ad => 2, ai => 1, n => 1, d => 1);
            my $fk = {
                name => "t${t}_f$j", child => $t, col => "f$j", parent => $parent,
                act => $act =~ /^a/ ? 'a' : $act, deferred => $act eq 'ad' ? 1 : 0, deferrable => $act =~ /^a./ ? 1 : 0,
                default => ($act eq 'd' && rand() < 0.5) ? 0 : undef,
            };
            push @{ $sc{fks} }, $fk;
            push @{ $sc{tables}[$t]{cols} }, "f$j";
        }
    }
    for my $k (0 .. $#{ $sc{fks} }) {
        push @{ $sc{incoming}[ $sc{fks}[$k]{parent} ] }, $k;
        push @{ $sc{outgoing}[ $sc{fks}[$k]{child} ] }, $k;
    }
    $sc{incoming}[$_] //= [] for 0 .. $nt - 1;
    $sc{outgoing}[$_] //= [] for 0 .. $nt - 1;
    return \%sc;
}

# The schema's DDL and data, and the model's first state.
sub setup_sql {
    my %st = (rows => [], txn => 0, dq => [], actor => '');
    my @nrows = map { 4 + int(rand(6)) } @{ $sc->{tables} };
    my @sql = ("CREATE SCHEMA $sc->{name};");
    for my $t (0 .. $#{ $sc->{tables} }) {
        my $tab = $sc->{tables}[$t];
        my $cols = join('', map { ", $_ int" } @{ $tab->{cols} });
        push @sql, sprintf('CREATE TABLE %s (id int PRIMARY KEY, v int NOT NULL DEFAULT 0%s%s);',
                           qname($t), $cols, $tab->{pre} ? ', deleted_at timestamptz' : '');
        my @values;
        for my $id (0 .. $nrows[$t]) {
            my %fk;
            for my $k (@{ $sc->{outgoing}[$t] }) {
                my $fk = $sc->{fks}[$k];
                $fk{ $fk->{col} } = ($id == 0 || rand() < 0.25) ? undef : 1 + int(rand($nrows[ $fk->{parent} ]));
            }
            my $row = SoftDeleteModel::new_row($sc, $t, $id, int(rand(10)), \%fk);
            if ($tab->{pre} && $id > 0 && rand() < 0.25) {
                @$row{qw(st at)} = ('D', 0);
            }
            $st{rows}[$t]{$id} = $row;
            push @values, sprintf('(%d, %d%s)', $id, $row->{v}, $tab->{pre} ? ($row->{st} eq 'D' ? ", '2000-01-01 00:00+00'" : ', NULL') : '');
        }
        push @sql, sprintf('INSERT INTO %s (id, v%s) VALUES %s;', qname($t), $tab->{pre} ? ', deleted_at' : '', join(', ', @values));
    }
    for my $t (0 .. $#{ $sc->{tables} }) {
        my $tab = $sc->{tables}[$t];
        next unless @{ $tab->{cols} };
        for my $row (sort { $a->{id} <=> $b->{id} } values %{ $st{rows}[$t] }) {
            my @set = map { "$_ = " . sqlval($row->{fk}{$_}) } grep { defined $row->{fk}{$_} } @{ $tab->{cols} };
            push @sql, sprintf('UPDATE %s SET %s WHERE id = %d;', qname($t), join(', ', @set), $row->{id}) if @set;
        }
    }
    my %action = (c => 'CASCADE', r => 'RESTRICT', a => 'NO ACTION', n => 'SET NULL', d => 'SET DEFAULT');
    for my $fk (@{ $sc->{fks} }) {
        push @sql, sprintf('ALTER TABLE %s ADD CONSTRAINT %s FOREIGN KEY (%s) REFERENCES %s (id) ON DELETE %s%s;',
                           qname($fk->{child}), $fk->{name}, $fk->{col}, qname($fk->{parent}), $action{ $fk->{act} },
                           $fk->{deferred} ? ' DEFERRABLE INITIALLY DEFERRED' : $fk->{deferrable} ? ' DEFERRABLE INITIALLY IMMEDIATE' : '');
        push @sql, sprintf('ALTER TABLE %s ALTER COLUMN %s SET DEFAULT 0;', qname($fk->{child}), $fk->{col})
          if defined $fk->{default};
    }
    for my $t (0 .. $#{ $sc->{tables} }) {
        my $tab = $sc->{tables}[$t];
        push @sql, sprintf("SELECT lifecycle.soft_delete_enable('%s', hide => %s);", qname($t), $tab->{hide} ? 'true' : 'false')
          if $tab->{soft};
    }
    return (\@sql, \%st);
}

sub describe_schema {
    my @d;
    for my $t (0 .. $#{ $sc->{tables} }) {
        my $tab = $sc->{tables}[$t];
        push @d, sprintf('%s: %s', $tab->{name}, $tab->{soft} ? ('soft delete' . ($tab->{hide} ? '' : ', hide off') . ($tab->{pre} ? ', rows deleted before enabling' : '')) : 'no soft delete');
    }
    return @d;
}

########################################################################
# Comparing the database with the model.
########################################################################
sub dump_sql {
    my (@full, @visible);
    for my $t (0 .. $#{ $sc->{tables} }) {
        my $tab = $sc->{tables}[$t];
        my $fks = @{ $tab->{cols} } ? 'concat_ws(\',\', ' . join(', ', map { "coalesce($_\::text, '-')" } @{ $tab->{cols} }) . ')' : "''";
        my $soft = $tab->{soft} ? q{coalesce(deleted_at::text, '-'), coalesce(delete_event::text, '-'), coalesce(deleted_by, '-')} : q{'-', '-', '-'};
        push @full, sprintf(q{SELECT format('F|%%s|%%s|%%s|%%s|%%s|%%s|%%s', %d, id, v, %s, %s) FROM %s}, $t, $fks, $soft, qname($t));
        push @visible, sprintf(q{SELECT format('V|%%s|%%s', %d, coalesce(string_agg(id::text, ',' ORDER BY id), '')) FROM %s}, $t, qname($t));
    }
    return 'SET lifecycle.include_deleted = on; ' . join(' UNION ALL ', @full) . '; SET lifecycle.include_deleted = off; '
      . join(' UNION ALL ', @visible) . ';';
}

# Differences between the database and model state $m; the event and
# deleted_at values must map one to one onto the model's tokens (in $maps,
# extended on success).
sub compare {
    my ($m, $maps_in) = @_;
    my $mp = dclone($maps_in);
    my ($out, $err) = $session->run(dump_sql());
    return (["dump failed: $err"], $mp) if $err =~ /ERROR/;
    my (%db, %vis);
    for my $line (split /\n/, $out) {
        if ($line =~ /^F\|/) {
            my (undef, $t, $id, $v, $fks, $at, $ev, $by) = split /\|/, $line, -1;
            $db{$t}{$id} = { v => $v, fks => $fks, at => $at, ev => $ev, by => $by };
        } elsif ($line =~ /^V\|(\d+)\|(.*)$/) {
            $vis{$1} = $2;
        }
    }
    my @diffs;
    my $bind = sub {
        my ($kind, $tok, $val, $where) = @_;
        my ($fwd, $rev) = ($mp->{$kind}, $mp->{"${kind}_rev"});
        if (exists $fwd->{$tok} && $fwd->{$tok} ne $val) {
            push @diffs, "$where: $kind is $val, but the model's token $tok was $fwd->{$tok} before";
        } elsif (exists $rev->{$val} && $rev->{$val} ne $tok) {
            push @diffs, "$where: $kind $val was the model's token $rev->{$val}, here it is token $tok";
        } else {
            $fwd->{$tok} = $val;
            $rev->{$val} = $tok;
        }
    };
    for my $t (0 .. $#{ $sc->{tables} }) {
        my $tab = $sc->{tables}[$t];
        my $name = $tab->{name};
        my $mrows = $m->{rows}[$t];
        my $drows = $db{$t} // {};
        for my $id (sort { $a <=> $b } keys %$drows) {
            push @diffs, "$name $id: in the database, not in the model" unless $mrows->{$id};
        }
        for my $id (sort { $a <=> $b } keys %$mrows) {
            my $r = $mrows->{$id};
            my $d = $drows->{$id};
            unless ($d) { push @diffs, "$name $id: in the model, not in the database"; next; }
            my $mfks = join(',', map { $r->{fk}{$_} // '-' } @{ $tab->{cols} });
            push @diffs, "$name $id: v $d->{v}, model $r->{v}" if $d->{v} ne $r->{v};
            push @diffs, "$name $id: foreign keys ($d->{fks}), model ($mfks)" if $d->{fks} ne $mfks;
            next unless $tab->{soft};
            my $deleted = $d->{at} ne '-';
            if ($deleted != ($r->{st} eq 'D')) {
                push @diffs, "$name $id: " . ($deleted ? "deleted (deleted_at $d->{at})" : 'live') . ', model ' . ($r->{st} eq 'D' ? 'deleted' : 'live');
                next;
            }
            $bind->('at', $r->{at}, $d->{at}, "$name $id") if $deleted;
            if (defined $r->{ev} != ($d->{ev} ne '-')) {
                push @diffs, "$name $id: delete_event $d->{ev}, model " . ($r->{ev} // 'NULL');
            } elsif (defined $r->{ev}) {
                $bind->('ev', $r->{ev}, $d->{ev}, "$name $id");
            }
            my $mby = $r->{by} // '-';
            push @diffs, "$name $id: deleted_by $d->{by}, model $mby" if $d->{by} ne $mby;
        }
        my $mvis = join(',', SoftDeleteModel::visible_ids($sc, $m, $t, 0));
        push @diffs, "$name: visible rows ($vis{$t}), model ($mvis)" if ($vis{$t} // '') ne $mvis;
    }
    return (\@diffs, $mp);
}

sub show_state {
    my ($m) = @_;
    my @lines;
    for my $t (0 .. $#{ $sc->{tables} }) {
        my $tab = $sc->{tables}[$t];
        push @lines, "  $tab->{name}: " . join(' ', map {
            my $r = $m->{rows}[$t]{$_};
            my $fks = join(',', map { $r->{fk}{$_} // '-' } @{ $tab->{cols} });
            "$_" . ($fks ne '' ? "($fks)" : '') . ($r->{st} eq 'D' ? '[D ev=' . ($r->{ev} // '-') . " at=$r->{at}]" : '')
        } sort { $a <=> $b } keys %{ $m->{rows}[$t] });
    }
    return @lines;
}

sub report {
    my ($round_seed, $what, @detail) = @_;
    return if $failed;
    $failed = 1;
    diag "soft delete model mismatch: $what";
    diag "reproduce: SD_MODEL_SEED=$round_seed SD_MODEL_ROUNDS=1 SD_MODEL_STEPS=$steps";
    diag "schema:\n  " . join("\n  ", describe_schema());
    diag "statements (model outcome => database result):\n" . join("\n", @log);
    diag "model state before the statement:\n" . join("\n", @detail);
}

########################################################################
# Statements.  Each returns {sql, pre, post, kind, model}: model($s) gives
# the possible outcomes.  kind: how the result is read — 'tag' (command
# tag), 'returning' (ids, then the tag), 'value' (one number), 'none'.
########################################################################
sub ids_of {
    my ($t, $filter) = @_;
    return sort { $a <=> $b } grep { $_ > 0 && (!$filter || $filter->($s->{rows}[$t]{$_})) } keys %{ $s->{rows}[$t] };
}

sub max_id {
    my ($t) = @_;
    my $max = 0;
    $max < $_ and $max = $_ for keys %{ $s->{rows}[$t] };
    return $max;
}

# A WHERE clause on $t, never matching the anchor row 0, preferring rows
# for which $prefer is true.
sub predicate {
    my ($t, $prefer) = @_;
    my @pool = ids_of($t, $prefer);
    @pool = ids_of($t) unless @pool;
    @pool = (1) unless @pool;
    my @cols = @{ $sc->{tables}[$t]{cols} };
    my $form = weighted(eq => 40, in => 25, between => 15, (@cols ? (fk => 20) : ()));
    if ($form eq 'eq') {
        my $x = rand() < 0.08 ? max_id($t) + 1 : pick(@pool);
        return { sql => "id = $x", match => sub { $_[0]{id} == $x } };
    } elsif ($form eq 'in') {
        my %set = map { (pick(@pool), 1) } 1 .. 2 + int(rand(3));
        my @xs = sort { $a <=> $b } keys %set;
        return { sql => 'id IN (' . join(', ', @xs) . ')', match => sub { $set{ $_[0]{id} } } };
    } elsif ($form eq 'between') {
        my $lo = pick(@pool);
        my $hi = $lo + int(rand(4));
        return { sql => "id BETWEEN $lo AND $hi", match => sub { $_[0]{id} >= $lo && $_[0]{id} <= $hi } };
    }
    my $col = pick(@cols);
    my ($k) = grep { $sc->{fks}[$_]{col} eq $col } @{ $sc->{outgoing}[$t] };
    my @vals = grep { defined } map { $s->{rows}[$t]{$_}{fk}{$col} } ids_of($t, $prefer);
    my $x = @vals ? pick(@vals) : pick(ids_of($sc->{fks}[$k]{parent}), 1);
    return { sql => "$col = $x", match => sub { defined $_[0]{fk}{$col} && $_[0]{fk}{$col} == $x } };
}

sub matched {
    my ($m, $t, $pred, $include_deleted) = @_;
    return grep { $pred->{match}->($m->{rows}[$t]{$_}) } SoftDeleteModel::visible_ids($sc, $m, $t, $include_deleted);
}

sub live_row { return $_[0]{st} eq 'L'; }
sub deleted_row { return $_[0]{st} eq 'D'; }

sub op_delete {
    my ($t, $pred) = @_;
    $pred //= predicate($t, \&live_row);
    my $tab = $sc->{tables}[$t];
    my $form = weighted(plain => 7, returning => 2, cte => 1);
    my $where = $pred->{sql};
    my %op = (kind => 'tag');
    if ($form eq 'plain') {
        $op{sql} = sprintf('DELETE FROM %s WHERE %s;', qname($t), $where);
    } elsif ($form eq 'returning') {
        $op{sql} = sprintf('DELETE FROM %s WHERE %s RETURNING id;', qname($t), $where);
        $op{kind} = 'returning';
    } else {
        $op{sql} = sprintf('WITH d AS (DELETE FROM %s WHERE %s RETURNING id) SELECT count(*) FROM d;', qname($t), $where);
        $op{kind} = 'value';
    }
    $op{model} = sub {
        my ($m) = @_;
        my @ids = matched($m, $t, $pred, 0);
        if ($tab->{soft}) {
            my @live = grep { $m->{rows}[$t]{$_}{st} eq 'L' } @ids;
            return SoftDeleteModel::soft_delete($sc, $m, $t, \@live, scalar @live);
        }
        return map { $_->{err} ? $_ : +{ %$_, ids => [@ids] } } SoftDeleteModel::hard_delete($sc, $m, [ map { [ $t, $_ ] } @ids ]);
    };
    return \%op;
}

sub op_hard_delete {
    my ($t) = @_;
    my $pred = predicate($t, \&live_row);
    return {
        pre => ['SET lifecycle.hard_delete = on;'],
        sql => sprintf('DELETE FROM %s WHERE %s;', qname($t), $pred->{sql}),
        post => ['SET lifecycle.hard_delete = off;'],
        kind => 'tag',
        model => sub {
            my ($m) = @_;
            return SoftDeleteModel::hard_delete($sc, $m, [ map { [ $t, $_ ] } matched($m, $t, $pred, 0) ]);
        },
    };
}

sub op_legacy_delete {
    my ($t, $pred) = @_;
    $pred //= predicate($t, \&live_row);
    my $live_only = rand() < 0.3;
    return {
        sql => sprintf('UPDATE %s SET deleted_at = now() WHERE %s%s;', qname($t), $pred->{sql}, $live_only ? ' AND deleted_at IS NULL' : ''),
        kind => 'tag',
        model => sub {
            my ($m) = @_;
            my @ids = grep { !$live_only || $m->{rows}[$t]{$_}{st} eq 'L' } matched($m, $t, $pred, 0);
            my $n = dclone($m);
            my @live;
            for my $id (@ids) {
                my $r = $n->{rows}[$t]{$id};
                $r->{w} = $n->{txn};
                if ($r->{st} eq 'D') { $r->{at} = $n->{txn} } else { push @live, $id; SoftDeleteModel::owner_update($sc, $n, $t, $r) }
            }
            return SoftDeleteModel::soft_delete($sc, $n, $t, \@live, scalar @ids);
        },
    };
}

sub op_legacy_restore {
    my ($t) = @_;
    my $tab = $sc->{tables}[$t];
    my $pred = predicate($t, \&deleted_row);
    my $include = $tab->{hide} || rand() < 0.5;
    my $deleted_only = rand() < 0.5;
    return {
        pre => $include ? ['SET lifecycle.include_deleted = on;'] : [],
        sql => sprintf('UPDATE %s SET deleted_at = NULL WHERE %s%s;', qname($t), $pred->{sql}, $deleted_only ? ' AND deleted_at IS NOT NULL' : ''),
        post => $include ? ['SET lifecycle.include_deleted = off;'] : [],
        kind => 'tag',
        model => sub {
            my ($m) = @_;
            my @ids = grep { !$deleted_only || $m->{rows}[$t]{$_}{st} eq 'D' } matched($m, $t, $pred, $include);
            return SoftDeleteModel::legacy_restore($sc, $m, $t, \@ids);
        },
    };
}

sub op_restore {
    my ($t) = @_;
    my @deleted = ids_of($t, \&deleted_row);
    my $id = (@deleted && rand() < 0.8) ? pick(@deleted) : rand() < 0.5 ? pick(ids_of($t), 1) : max_id($t) + 3;
    my $arg = rand() < 0.25 ? "'$id'" : $id;    # an untyped literal, as a driver binds it
    return {
        sql => sprintf("SELECT lifecycle.restore('%s', %s);", qname($t), $arg),
        kind => 'value',
        model => sub { my ($m) = @_; return SoftDeleteModel::restore($sc, $m, $t, $id); },
    };
}

sub op_purge {
    my ($t) = @_;
    my $q = qname($t);
    return {
        sql => "SELECT lifecycle.purge('$q', '0');",
        kind => 'value',
        prepare => sub {
            # The physical order, one of the orders in which a row-by-row
            # purge may take the rows.
            my ($out) = $session->run("SET lifecycle.include_deleted = on; SELECT string_agg(id::text, ',' ORDER BY ctid) FROM ONLY $q; SET lifecycle.include_deleted = off;");
            my ($line) = grep { /^[\d,]*$/ && length } split /\n/, $out;
            return [ split /,/, $line // '' ];
        },
        model => sub {
            my ($m, $physical) = @_;
            my @ids = sort { $a <=> $b } keys %{ $m->{rows}[$t] };
            return SoftDeleteModel::purge($sc, $m, $t, [ $physical, \@ids, [ reverse @ids ] ]);
        },
    };
}

sub op_merge {
    my ($t) = @_;
    my @all = ids_of($t);
    my %src = map { (pick(@all, max_id($t) + 1), 1) } 1 .. 1 + int(rand(4));
    my @src = sort { $a <=> $b } keys %src;
    my $update = rand() < 0.5;
    my $insert = rand() < 0.3;
    my $by_source = ($version >= 170000 && rand() < 0.25) ? pick(@all, 1) : undef;
    my $sql = sprintf('MERGE INTO %s t USING (VALUES %s) v(id) ON t.id = v.id', qname($t), join(', ', map { "($_)" } @src));
    $sql .= ' WHEN MATCHED AND t.v % 2 = 0 THEN UPDATE SET v = t.v + 1' if $update;
    $sql .= ' WHEN MATCHED THEN DELETE';
    $sql .= ' WHEN NOT MATCHED THEN INSERT (id, v) VALUES (v.id, 0)' if $insert;
    $sql .= " WHEN NOT MATCHED BY SOURCE AND t.id BETWEEN 1 AND $by_source THEN DELETE" if defined $by_source;
    return {
        sql => "$sql;",
        kind => 'tag',
        model => sub {
            my ($m) = @_;
            return SoftDeleteModel::merge($sc, $m, $t, \@src, update => $update, insert => $insert, by_source => $by_source);
        },
    };
}

sub op_update {
    my ($t) = @_;
    my $pred = predicate($t);
    return {
        sql => sprintf('UPDATE %s SET v = v + 1 WHERE %s;', qname($t), $pred->{sql}),
        kind => 'tag',
        model => sub {
            my ($m) = @_;
            my $n = dclone($m);
            my @ids = matched($n, $t, $pred, 0);
            $n->{rows}[$t]{$_}{v}++, $n->{rows}[$t]{$_}{w} = $n->{txn} for @ids;
            return ({ st => $n, count => scalar @ids });
        },
    };
}

sub op_insert {
    my ($t) = @_;
    my $tab = $sc->{tables}[$t];
    my $id = max_id($t) + 1;
    my $v = int(rand(10));
    my %fk;
    for my $k (@{ $sc->{outgoing}[$t] }) {
        my $fk = $sc->{fks}[$k];
        my @parents = $fk->{parent} == $t ? (ids_of($t), $id) : ids_of($fk->{parent});
        # Often a deleted parent: a new row may reference one.
        my @deleted = ids_of($fk->{parent}, \&deleted_row);
        $fk{ $fk->{col} } = rand() < 0.2 ? undef : (@deleted && rand() < 0.5) ? pick(@deleted) : @parents ? pick(@parents) : undef;
    }
    my @cols = ('id', 'v', @{ $tab->{cols} });
    return {
        sql => sprintf('INSERT INTO %s (%s) VALUES (%s);', qname($t), join(', ', @cols),
                       join(', ', $id, $v, map { sqlval($fk{$_}) } @{ $tab->{cols} })),
        kind => 'tag',
        model => sub {
            my ($m) = @_;
            my $n = dclone($m);
            $n->{rows}[$t]{$id} = SoftDeleteModel::new_row($sc, $t, $id, $v, \%fk);
            $n->{rows}[$t]{$id}{w} = $n->{txn};
            return ({ st => $n, count => 1 });
        },
    };
}

# An upsert: never modifies a hidden row (42501 "the row is soft-deleted",
# as a row-level-security policy would); DO NOTHING does nothing there.
sub op_upsert {
    my ($t) = @_;
    my $tab = $sc->{tables}[$t];
    my $id = rand() < 0.2 ? max_id($t) + 1 : pick(ids_of($t), 1);
    my $nothing = rand() < 0.3;
    return {
        sql => sprintf('INSERT INTO %s AS t (id, v) VALUES (%d, 0) ON CONFLICT (id) DO %s;', qname($t), $id,
                       $nothing ? 'NOTHING' : 'UPDATE SET v = t.v + 1'),
        kind => 'tag',
        model => sub {
            my ($m) = @_;
            my $n = dclone($m);
            my $r = $n->{rows}[$t]{$id};
            if (!$r) {
                my %defaults = map { ($sc->{fks}[$_]{col} => $sc->{fks}[$_]{default}) } @{ $sc->{outgoing}[$t] };
                $n->{rows}[$t]{$id} = SoftDeleteModel::new_row($sc, $t, $id, 0, \%defaults);
                $n->{rows}[$t]{$id}{w} = $n->{txn};
                return ({ st => $n, count => 1 });
            }
            return ({ st => $m, count => 0 }) if $nothing;
            return ({ err => '42501' }) if $tab->{soft} && $tab->{hide} && $r->{st} eq 'D';
            $r->{v}++;
            $r->{w} = $n->{txn};
            return ({ st => $n, count => 1 });
        },
    };
}

sub op_actor {
    my $actor = pick('', 'alice', 'bob');
    return {
        sql => $actor eq '' ? 'RESET lifecycle.actor;' : "SET lifecycle.actor = '$actor';",
        kind => 'none',
        model => sub { my ($m) = @_; my $n = dclone($m); $n->{actor} = $actor; return ({ st => $n }); },
    };
}

sub random_op {
    my @soft = grep { $sc->{tables}[$_]{soft} } 0 .. $#{ $sc->{tables} };
    my $any = int(rand(scalar @{ $sc->{tables} }));
    my $kind = weighted(delete => 22, legacy_delete => 9, legacy_restore => 9, restore => 14, purge => 8, merge => 10,
                        update => 4, insert => 9, upsert => 3, hard_delete => 4, actor => 3);
    $kind = 'delete' if !@soft && $kind =~ /legacy|hard/;
    my $st = @soft ? pick(@soft) : $any;
    # Now and then restore or purge a table without soft delete (55000).
    $st = $any if $kind =~ /^(restore|purge)$/ && rand() < 0.05;
    return op_delete($any) if $kind eq 'delete';
    return op_legacy_delete($st) if $kind eq 'legacy_delete';
    return op_legacy_restore($st) if $kind eq 'legacy_restore';
    return op_restore($st) if $kind eq 'restore';
    return op_purge($st) if $kind eq 'purge';
    return op_merge($any) if $kind eq 'merge';
    return op_update($any) if $kind eq 'update';
    return op_insert($any) if $kind eq 'insert';
    return op_upsert($any) if $kind eq 'upsert';
    return op_hard_delete($st) if $kind eq 'hard_delete';
    return op_actor();
}

########################################################################
# Running a statement and checking it.
########################################################################
sub outcome_text {
    my ($o) = @_;
    return "ERROR $o->{err}" if $o->{err};
    return defined $o->{count} ? "ok $o->{count}" . ($o->{ids} ? ' [' . join(',', @{ $o->{ids} }) . ']' : '') : 'ok';
}

sub run_checked {
    my ($sql, $round_seed) = @_;
    my ($out, $err) = $session->run($sql);
    push @log, "    $sql";
    if ($err =~ /ERROR/) {
        report($round_seed, "harness statement failed: $sql", $err);
        return 0;
    }
    return 1;
}

# An outcome of a statement followed by its commit (the deferred checks).
sub commit_outcome {
    my ($o) = @_;
    return $o if $o->{err};
    my $e = SoftDeleteModel::commit_error($sc, $o->{st});
    return +{ err => $e } if $e;
    my $n = dclone($o->{st});
    $n->{dq} = [];
    return +{ %$o, st => $n };
}

# Runs $op in the current state (in a transaction or not) and checks the
# outcome and the state after it.  Returns 'ok', 'error' (the statement
# failed as the model allowed; rolled back by the caller's rules) or
# 'mismatch'.
sub execute {
    my ($op, $in_txn, $round_seed, $rollback_state, $rollback_sql) = @_;
    my $before = $s;
    if (!$in_txn) {
        $s = dclone($s);
        $s->{txn} = ++$token;
    }
    my $prep = $op->{prepare} ? $op->{prepare}->() : undef;
    local $SoftDeleteModel::known_defect;
    my @outcomes = $op->{model}->($s, $prep);
    if (my $defect = $SoftDeleteModel::known_defect) {
        # A known defect (lib/SoftDeleteModel.pm): not run.
        push @log, "    -- not run (known defect \"$defect\"): $op->{sql}";
        $stats{"not run (known defect \"$defect\")"}++;
        $s = $before;
        return 'ok';
    }
    if (!$in_txn) {
        # The commit follows at once: the deferred checks.
        @outcomes = map { commit_outcome($_) } @outcomes;
        $rollback_state = $before;
    }
    for my $pre (@{ $op->{pre} // [] }) { run_checked($pre, $round_seed) or return 'mismatch'; }
    my ($out, $err) = $session->run($op->{sql});
    my ($code) = $err =~ /ERROR:  ([0-9A-Z]{5}):/;
    # PostgreSQL 18 reports an ON DELETE RESTRICT violation as 23001
    # (restrict_violation), earlier versions as 23503: the model says 23503.
    $code = '23503' if defined $code && $code eq '23001';
    my @lines = grep { length } split /\n/, $out;
    my ($count, @ids);
    if (!$code) {
        if ($op->{kind} eq 'tag' || $op->{kind} eq 'returning') {
            ($count) = ($lines[-1] // '') =~ /^(?:DELETE|UPDATE|MERGE|INSERT 0) (\d+)$/;
            @ids = sort { $a <=> $b } @lines[ 0 .. $#lines - 1 ] if $op->{kind} eq 'returning';
        } elsif ($op->{kind} eq 'value') {
            ($count) = ($lines[0] // '') =~ /^(\d+)$/;
        }
    }
    my $actual = $code ? "ERROR $code" : defined $count ? "ok $count" . ($op->{kind} eq 'returning' ? ' [' . join(',', @ids) . ']' : '') : 'ok';
    push @log, sprintf('    %s  -- model: %s => %s', $op->{sql}, join(' | ', map { outcome_text($_) } @outcomes), $actual);
    my ($verb) = $op->{sql} =~ /^(?:WITH \w+ AS \()?(\w+(?: lifecycle\.\w+)?)/;
    $verb .= ' SET deleted_at = ' . ($op->{sql} =~ /deleted_at = NULL/ ? 'NULL' : 'now()') if $op->{sql} =~ /SET deleted_at/;
    $stats{ "$verb: " . ($code ? "error $code" : !defined $count ? 'ok' : $count == 0 ? '0 rows' : $count == 1 ? '1 row' : 'more rows') }++;
    $stats{'outcome depends on order'}++ if @outcomes > 1;
    if (!$code || !$in_txn) {
        for my $post (@{ $op->{post} // [] }) { run_checked($post, $round_seed) or return 'mismatch'; }
    }
    my @candidates;
    if ($code) {
        @candidates = grep { ($_->{err} // '') eq $code } @outcomes;
        if (@candidates) {
            $session->run($rollback_sql) if $rollback_sql;
            push @log, "    $rollback_sql" if $rollback_sql;
            @candidates = ({ st => $rollback_state });
        }
    } else {
        @candidates = grep {
            !$_->{err} && ($op->{kind} eq 'none' || (defined $count && defined $_->{count} && $_->{count} == $count))
              && ($op->{kind} ne 'returning' || join(',', @{ $_->{ids} // [] }) eq join(',', @ids))
        } @outcomes;
    }
    if (!@candidates) {
        report($round_seed, "result of `$op->{sql}`: model " . join(' or ', map { outcome_text($_) } @outcomes) . ", database $actual"
                 . ($code ? " ($err)" : ''), show_state($s));
        return 'mismatch';
    }
    my @all_diffs;
    for my $c (@candidates) {
        my ($diffs, $newmaps) = compare($c->{st}, $maps);
        if (!@$diffs) {
            $maps = $newmaps;
            $s = $c->{st};
            return $code ? 'error' : 'ok';
        }
        push @all_diffs, @$diffs, '  --';
    }
    report($round_seed, "state after `$op->{sql}` ($actual):\n  " . join("\n  ", @all_diffs), show_state($s));
    return 'mismatch';
}

# A transaction: several statements, some in savepoints, then COMMIT (the
# deferred checks) or ROLLBACK.  $ops: a generator of the next statement,
# called with the current state, until it returns undef.
sub transaction {
    my ($next_op, $round_seed) = @_;
    run_checked('BEGIN;', $round_seed) or return 0;
    $s = dclone($s);
    $s->{txn} = ++$token;
    $s->{dq} = [];
    my $begin = dclone($s);
    my $sp = 0;
    while (my $op = $next_op->()) {
        if (rand() < 0.3) {
            my $name = 'sp' . ++$sp;
            run_checked("SAVEPOINT $name;", $round_seed) or return 0;
            my $saved = dclone($s);
            my $r = execute($op, 1, $round_seed, $saved, "ROLLBACK TO SAVEPOINT $name;");
            return 0 if $r eq 'mismatch';
            next if $r eq 'error';
            if (rand() < 0.3) {
                run_checked("ROLLBACK TO SAVEPOINT $name;", $round_seed) or return 0;
                $s = $saved;
                my ($diffs) = compare($s, $maps);
                if (@$diffs) { report($round_seed, "state after ROLLBACK TO SAVEPOINT:\n  " . join("\n  ", @$diffs)); return 0; }
            } else {
                run_checked("RELEASE SAVEPOINT $name;", $round_seed) or return 0;
            }
        } else {
            my $r = execute($op, 1, $round_seed, $begin, 'ROLLBACK;');
            return 0 if $r eq 'mismatch';
            if ($r eq 'error') {
                $s->{dq} = [];
                return 1;
            }
        }
    }
    my $expected;
    if (rand() < 0.15) {
        run_checked('ROLLBACK;', $round_seed) or return 0;
        $s = $begin;
        $expected = 'ROLLBACK';
    } else {
        my $e = SoftDeleteModel::commit_error($sc, $s);
        my ($out, $err) = $session->run('COMMIT;');
        my ($code) = $err =~ /ERROR:  ([0-9A-Z]{5}):/;
        my $actual = $code ? "ERROR $code" : 'ok';
        push @log, '    COMMIT;  -- model: ' . ($e ? "ERROR $e" : 'ok') . " => $actual";
        $stats{ 'COMMIT: ' . ($code ? "error $code" : 'ok') }++;
        if (($e // '') ne ($code // '')) {
            report($round_seed, 'COMMIT: model ' . ($e ? "ERROR $e" : 'ok') . ", database $actual" . ($code ? " ($err)" : ''), show_state($s));
            return 0;
        }
        $s = $e ? $begin : $s;
    }
    $s->{dq} = [];
    my ($diffs, $newmaps) = compare($s, $maps);
    if (@$diffs) {
        report($round_seed, "state after the end of the transaction:\n  " . join("\n  ", @$diffs), show_state($s));
        return 0;
    }
    $maps = $newmaps;
    return 1;
}

# ORM style: the children of a row, one DELETE (or application soft
# delete) each, and the row itself — children first, or the parent first
# (deferred NO ACTION keys allow it).
sub orm_transaction {
    my ($round_seed) = @_;
    my @parents;
    for my $t (0 .. $#{ $sc->{tables} }) {
        for my $id (ids_of($t, \&live_row)) {
            my $kids = grep { grep { $_->{st} eq 'L' } SoftDeleteModel::children($sc, $s, $_, $id) } @{ $sc->{incoming}[$t] };
            push @parents, [ $t, $id ] if $kids;
        }
    }
    return transaction(do { my @q = (random_op()); sub { shift @q } }, $round_seed) unless @parents;
    my ($pt, $pid) = @{ pick(@parents) };
    my @kids;
    for my $k (@{ $sc->{incoming}[$pt] }) {
        my $ct = $sc->{fks}[$k]{child};
        push @kids, map { [ $ct, $_->{id} ] } grep { $_->{st} eq 'L' } SoftDeleteModel::children($sc, $s, $k, $pid);
    }
    @kids = @kids[ 0 .. 3 ] if @kids > 4;
    my @plan = (@kids, [ $pt, $pid ]);
    @plan = ([ $pt, $pid ], @kids) if rand() < 0.3;
    my $legacy = rand() < 0.3;
    my @ops = map {
        my ($t, $id) = @$_;
        my $pred = { sql => "id = $id", match => sub { $_[0]{id} == $id } };
        ($legacy && $sc->{tables}[$t]{soft}) ? op_legacy_delete($t, $pred) : op_delete($t, $pred);
    } @plan;
    return transaction(sub { shift @ops }, $round_seed);
}

########################################################################
# The rounds.
########################################################################
my $started = Time::HiRes::time();
my $total_steps = 0;
for my $round (0 .. $rounds - 1) {
    my $round_seed = $seed + $round;
    my $round_started = Time::HiRes::time();
    srand($round_seed);
    @log = ();
    $failed = 0;
    $token = 0;
    $maps = { at => {}, at_rev => {}, ev => {}, ev_rev => {} };
    $sc = new_schema($round);
    my ($setup, $st) = setup_sql();
    $s = $st;
    push @log, map { "    $_" } @$setup;
    $node->safe_psql('postgres', join("\n", @$setup));
    $session->run('RESET lifecycle.actor;');
    my ($diffs, $newmaps) = compare($s, $maps);
    if (@$diffs) {
        report($round_seed, "state after setup:\n  " . join("\n  ", @$diffs), show_state($s));
    }
    $maps = $newmaps;
    my $step = 0;
    while (!$failed && $step < $steps) {
        $step++;
        push @log, "  -- step $step";
        my $unit = weighted(single => 60, txn => 25, orm => 15);
        if ($unit eq 'single') {
            execute(random_op(), 0, $round_seed);
        } elsif ($unit eq 'txn') {
            my $n = 2 + int(rand(3));
            transaction(sub { $n-- > 0 ? random_op() : undef }, $round_seed);
        } else {
            orm_transaction($round_seed);
        }
    }
    $total_steps += $step;
    ok(!$failed, "round $round (seed $round_seed, " . scalar(@{ $sc->{tables} }) . " tables, "
         . scalar(@{ $sc->{fks} }) . " foreign keys): $step steps as the model says"
         . sprintf(' (%.1f s)', Time::HiRes::time() - $round_started));
    last if $failed;
    $session->run("DROP SCHEMA $sc->{name} CASCADE;");
}
note sprintf('%d steps in %.1f s', $total_steps, Time::HiRes::time() - $started);
note "$_: $stats{$_}" for sort keys %stats;

$session->quit;
$node->stop;
done_testing();
