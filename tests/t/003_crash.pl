# kill -9 of a training backend (while training, and after bft_train wrote
# its large object but before COMMIT) and of a background training job's
# worker. Each time the server recovers, no large object is orphaned
# (pg_largeobject_metadata matches bft.models.weights), no version appears,
# the deployed model classifies exactly as before, and the killed job shows
# as failed in bft.jobs.
use strict;
use warnings;
use IPC::Run;
use Time::HiRes qw(sleep);
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

$ENV{PGOPTIONS} = '-c client_min_messages=warning';
my $node = PostgreSQL::Test::Cluster->new('crash');
$node->init;
# the framework turns crash restarts off; this test is about them
$node->append_conf('postgresql.conf', 'restart_after_crash = on');
$node->start;
my $db = 'bft_crash';
my $arch = '{"hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2, '
  . '"intermediate_size": 64, "vocab_size": 200}';
$node->safe_psql('postgres', "CREATE DATABASE $db");
$node->safe_psql($db, qq{
	CREATE EXTENSION bft;
	ALTER DATABASE $db SET bft.threads = 1;
	CREATE TABLE h (t text, l text);
	INSERT INTO h SELECT (ARRAY['shares rally as profit beats forecast', 'stocks fall on weak earnings',
	                            'team wins the championship final', 'coach fired after losing season'])[1 + i % 4],
	                     (ARRAY['markets', 'markets', 'sports', 'sports'])[1 + i % 4]
	                FROM generate_series(1, 40) i;
});
$node->safe_psql($db,
	"SELECT version FROM bft_train('h', 't', 'l', epochs => 30, learning_rate => 2e-3, model => 'm', architecture => '$arch')"
);

# output of one statement (psql -c: nothing to write to a psql that could not
# connect while the server restarts), or "ERROR ..."
sub query
{
	my ($sql) = @_;
	my ($out, $err) = ('', '');
	my $ok = eval {
		IPC::Run::run([ 'psql', '-X', '-A', '-t', '-q', '-d', $node->connstr($db), '-c', $sql ],
			'<', \undef, '>', \$out, '2>', \$err);
	};
	chomp $out;
	return $ok ? $out : "ERROR $err";
}

my $probe = q{SELECT string_agg(t || '=' || bft_classify(t, 'm') || ':' || (bft_predict_proba(t, 'm'))::text, ';' ORDER BY t)
              FROM (SELECT DISTINCT t FROM h) s};
my $before = query($probe);
note("before: $before");
like($before, qr/team wins the championship final=sports/, 'the deployed model classifies (baseline)');

# no large object without a model row, no row without its large object, and the versions
my $consistent = q{
	SELECT (SELECT count(*) FROM pg_largeobject_metadata l WHERE NOT EXISTS (SELECT 1 FROM bft.models m WHERE m.weights = l.oid))
	    || '|' || (SELECT count(*) FROM bft.models m WHERE NOT EXISTS (SELECT 1 FROM pg_largeobject_metadata l WHERE l.oid = m.weights))
	    || '|' || (SELECT count(DISTINCT loid) FROM pg_largeobject WHERE loid NOT IN (SELECT weights FROM bft.models))
	    || '|' || (SELECT string_agg(name || version, ',' ORDER BY name, version) FROM bft.models)};
# the server accepts queries again (a crash restart takes a few seconds)
sub recovered
{
	foreach (1 .. 300)
	{
		return 1 if query('SELECT 1') eq '1';
		sleep 0.1;
	}
	return 0;
}
# pid of the backend training model 'm' (phase training, step > 0), or ''
sub wait_training
{
	$node->poll_query_until($db,
		"SELECT count(*) > 0 FROM bft.progress WHERE model = 'm' AND phase = 'training' AND step > 0")
	  or return '';
	return query("SELECT pid FROM bft.progress WHERE model = 'm' AND phase = 'training' AND step > 0");
}
# a psql session in the background running the given -c commands
sub background
{
	my ($out, $err) = ('', '');
	return IPC::Run::start([ 'psql', '-X', '-q', '-d', $node->connstr($db), map { ('-c', $_) } @_ ],
		'<', \undef, '>', \$out, '2>', \$err);
}
is(query($consistent), '0|0|0|m1', 'consistent before the crashes');

# 1. kill -9 while training
my $h = background(
	"SELECT * FROM bft_train('h', 't', 'l', epochs => 90000, model => 'm', architecture => '$arch')");
my $pid = wait_training();
ok($pid =~ /^\d+$/, "a training backend is running (pid $pid)");
kill 'KILL', $pid if $pid =~ /^\d+$/;
$h->finish;
ok(recovered(), 'the server recovers after kill -9 of a training backend');
my $log = slurp_file($node->logfile);
ok($log =~ /was terminated by signal 9/ && $log =~ /all server processes terminated; reinitializing/,
	'the log shows the crash restart');
is(query($consistent), '0|0|0|m1', 'no orphaned large object, no new version');
is(query($probe), $before, 'the deployed model classifies exactly as before');
is(query('SELECT count(*) FROM bft.progress'), '0', 'bft.progress shows no dead training');

# 2. kill -9 after bft_train wrote the large object and row, before COMMIT
$h = background('BEGIN',
	"SELECT version FROM bft_train('h', 't', 'l', epochs => 5, model => 'm', architecture => '$arch')",
	'SELECT pg_sleep(60)', 'COMMIT');
$node->poll_query_until($db,
	"SELECT count(*) > 0 FROM pg_stat_activity WHERE query = 'SELECT pg_sleep(60)' AND state = 'active'");
$pid = query("SELECT pid FROM pg_stat_activity WHERE query = 'SELECT pg_sleep(60)' AND state = 'active'");
is( $pid =~ /^\d+$/ ? query("SELECT count(*) FROM pg_locks WHERE pid = $pid AND locktype = 'relation'
	                     AND mode = 'RowExclusiveLock'
	                     AND relation IN ('pg_largeobject'::regclass, 'bft.models'::regclass)") : '',
	'2', "a transaction has written a model large object and row, uncommitted (pid $pid)");
kill 'KILL', $pid if $pid =~ /^\d+$/;
$h->finish;
ok(recovered(), 'the server recovers');
is(query($consistent), '0|0|0|m1', 'the uncommitted large object and row are gone');
is(query($probe), $before, 'the deployed model classifies exactly as before');

# 3. kill -9 of a background training job's worker
my $id = query("SELECT bft_train_async('h', 't', 'l', epochs => 90000, model => 'm', architecture => '$arch')");
$pid = wait_training();
is(query("SELECT pid FROM bft.jobs WHERE id = $id AND state = 'running'"), $pid, "job $id runs in worker $pid");
kill 'KILL', $pid if $pid =~ /^\d+$/;
ok(recovered(), 'the server recovers after kill -9 of a job worker');
my $row = query("SELECT state || '|' || error FROM bft.jobs WHERE id = $id");
note($row);
like($row, qr/^failed\|the background worker exited without recording a result/,
	'bft.jobs shows the killed job as failed');
is(query($consistent), '0|0|0|m1', 'no orphaned large object, no new version');
is(query($probe), $before, 'the deployed model classifies exactly as before');
my $id2 = query("SELECT bft_train_async('h', 't', 'l', epochs => 30, learning_rate => 2e-3, model => 'm',
                                    architecture => '$arch')");
$node->poll_query_until($db, "SELECT state FROM bft.jobs WHERE id = $id2", 'succeeded');
is( query("SELECT state FROM bft.train_jobs WHERE id = $id") . '|'
	  . query("SELECT state || version FROM bft.jobs WHERE id = $id2"),
	'failed|succeeded2', 'the next job records the dead one as failed and trains version 2');
is(query($consistent), '0|0|0|m1,m2', 'large objects and versions consistent after it');

$node->stop;
done_testing();
