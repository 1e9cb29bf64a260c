# Helpers shared by bft's TAP tests (tests/t/*.pl).
package BftTest;
use strict;
use warnings;
use Exporter 'import';
use IPC::Run;

our @EXPORT = qw(psql_c psql_cmds poll_sql);

# psql_c(node, db, sql, user => role): run sql with psql -c (one query string;
# psql prints the result of its last statement) as role (default: the
# node's superuser). Nothing is written to psql's stdin, so a psql that cannot
# connect (a server restarting after a crash) cannot break a pipe. Returns
# (ok, stdout, stderr), stdout chomped.
sub psql_c
{
	my ($node, $db, $sql, %opt) = @_;
	my ($out, $err) = ('', '');
	my @cmd = ('psql', '-X', '-A', '-t', '-q', '-d', $node->connstr($db));
	push @cmd, '-U', $opt{user} if defined $opt{user};
	push @cmd, '-c', $sql;
	my $ok = eval { IPC::Run::run(\@cmd, '<', \undef, '>', \$out, '2>', \$err) };
	chomp $out;
	return ($ok ? 1 : 0, $out, $err);
}

# psql_cmds(node, db, [sql, ...], user => role, stdin => text, file => path):
# psql -v ON_ERROR_STOP=1 with one -c per sql (each its own transaction, as
# psql -c ... -c ... does), or -f file, or the script in stdin. Returns
# (ok, stdout, stderr), stdout chomped.
sub psql_cmds
{
	my ($node, $db, $cmds, %opt) = @_;
	my ($out, $err) = ('', '');
	my @cmd = ('psql', '-X', '-A', '-t', '-q', '-v', 'ON_ERROR_STOP=1', '-d', $node->connstr($db));
	push @cmd, '-U', $opt{user} if defined $opt{user};
	push @cmd, map { ('-c', $_) } @{ $cmds || [] };
	push @cmd, '-f', $opt{file} if defined $opt{file};
	my $in = $opt{stdin};
	my $ok = eval { IPC::Run::run(\@cmd, '<', defined $in ? \$in : \undef, '>', \$out, '2>', \$err) };
	chomp $out;
	return ($ok ? 1 : 0, $out, $err);
}

# poll_sql(node, db, tries, sql): the first non-empty output of sql (as the
# superuser; errors count as no output), tried every 0.1 s at most tries times;
# '' when none came.
sub poll_sql
{
	my ($node, $db, $tries, $sql) = @_;
	for (1 .. $tries)
	{
		my ($ok, $out) = psql_c($node, $db, $sql);
		return $out if $out ne '';
		select(undef, undef, undef, 0.1);
	}
	return '';
}

1;
