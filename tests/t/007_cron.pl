# Retraining with real pg_cron. An every-minute cron job `SELECT bft_train(...)`
# trains and deploys version 2 of a model whose training labels were flipped
# (so versions 1 and 2 label the probe text differently) while two other
# sessions classify continuously (one of them with parallel plans): zero
# errors, every statement (3000 rows each) sees one version only — including
# the statements that were running when the cron job committed — and each
# session moves from the old label to the new one exactly once. A second cron
# job submits a background training (bft_train_async). Bounded wait: at most
# 150 s for the cron run.
use strict;
use warnings;
use IPC::Run;
use Time::HiRes qw(sleep);
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use BftTest;

my $db = 'bft_cron';
my $node = PostgreSQL::Test::Cluster->new('cron');
$node->init;
$node->append_conf('postgresql.conf', qq{
shared_preload_libraries = 'pg_cron'
cron.database_name = '$db'
cron.use_background_workers = on
max_worker_processes = 16
});
$node->start;
$ENV{PGOPTIONS} = '-c client_min_messages=warning -c bft.threads=1';
sub q1 { my ($ok, $out, $err) = psql_c($node, $db, $_[0]); return $ok ? $out : "ERROR $err"; }

$node->safe_psql('postgres', "CREATE DATABASE $db");
q1('CREATE EXTENSION pg_cron; CREATE EXTENSION bft');
is(q1(q{SELECT count(*) FROM pg_extension WHERE extname IN ('pg_cron', 'bft')}), '2', "pg_cron and bft installed in $db");

my $arch = '{"hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2, '
  . '"intermediate_size": 64, "vocab_size": 200}';
q1(q{CREATE TABLE tweets (text text, grp int, label text);
	INSERT INTO tweets
	SELECT (ARRAY['shares rally as profit beats forecast', 'record quarter lifts the stock',
	              'stocks fall on weak earnings', 'profit warning sinks the shares'])[1 + i % 4],
	       (i % 4) / 2, CASE WHEN (i % 4) / 2 = 0 THEN 'up' ELSE 'down' END
	  FROM generate_series(1, 48) i;
	CREATE TABLE probe AS SELECT i, 'shares rally as profit beats forecast'::text AS t FROM generate_series(1, 3000) i;
	-- gate(i): at row 1500, wait until no transaction holds advisory lock 42.
	CREATE FUNCTION gate(i int) RETURNS bool LANGUAGE plpgsql AS
	  $$ BEGIN IF i = 1500 THEN PERFORM pg_advisory_xact_lock_shared(42); END IF; RETURN true; END $$;
	CREATE TABLE ctl (stop bool); INSERT INTO ctl VALUES (false)});
my $train = "SELECT version FROM bft_train('tweets', 'text', 'label', epochs => 400, learning_rate => 3e-3, "
  . "dropout => 0, model => 'topics', architecture => '$arch')";
my $v1 = q1($train);
ok($v1 eq '1' && q1(q{SELECT bft_classify('shares rally as profit beats forecast', 'topics')}) eq 'up',
	"version 1 (trained by hand) labels the probe text 'up'");

# New rows arrive: here the labels flip, so the next version says 'down'.
q1(q{UPDATE tweets SET label = CASE WHEN grp = 0 THEN 'down' ELSE 'up' END});
my $jobid = q1("SELECT cron.schedule('bft_retrain', '* * * * *', \$cron\$SET client_min_messages = warning; "
	  . "SET bft.threads = 1; SELECT pg_advisory_xact_lock(42); $train; SELECT pg_sleep(1)\$cron\$)");
like($jobid, qr/^\d+$/, "cron.schedule('bft_retrain', '* * * * *', 'SELECT bft_train(...)') (job $jobid)");
# the same minute, a second cron job only submits a background training
my $ajob = q1("SELECT cron.schedule('bft_retrain_async', '* * * * *', \$cron\$SELECT bft_train_async('tweets', "
	  . "'text', 'label', epochs => 50, model => 'topics_async', architecture => '$arch')\$cron\$)");

# Session 2 classifies with parallel plans (Gather, 2 workers per statement).
my $paropts = ' -c parallel_setup_cost=0 -c parallel_tuple_cost=0 -c min_parallel_table_scan_size=0'
  . ' -c max_parallel_workers_per_gather=2';
my $plan;
{
	local $ENV{PGOPTIONS} = $ENV{PGOPTIONS} . $paropts;
	$plan = join(' ', split /\n/, q1(q{EXPLAIN (COSTS OFF) SELECT bft_classify(t, 'topics') FROM probe}));
}
ok($plan =~ /Gather/ && $plan =~ /Parallel Seq Scan/, "session 2's statements run in parallel workers ($plan)");

# classify_loop: one session runs up to $n statements; each classifies every
# row of table probe (that satisfies $cond) and prints one line
#   statement_start|statement_end|rows|distinct labels|label
# The session ends once ctl.stop is true.
sub classify_loop
{
	my ($n, $cond, $out, $pgoptions) = @_;
	my $script = '';
	for (1 .. $n)
	{
		$script .= "SELECT statement_timestamp(), clock_timestamp(), count(*), count(DISTINCT l), min(l)
		  FROM (SELECT bft_classify(t, 'topics') AS l FROM probe WHERE NOT (SELECT stop FROM ctl) AND $cond) s
		  HAVING count(*) > 0;\nSELECT stop AS stop_now FROM ctl \\gset\n\\if :stop_now\n\\q\n\\endif\n";
	}
	# a script file, not stdin: psql stops reading at \q
	append_to_file("$out.sql", $script);
	local $ENV{PGOPTIONS} = $pgoptions;
	return IPC::Run::start([ 'psql', '-X', '-q', '-t', '-A', '-d', $node->connstr($db), '-f', "$out.sql" ],
		'<', \undef, '>', $out, '2>', "$out.err");
}
my $tmp = PostgreSQL::Test::Utils::tempdir();
# Session 1's statements pass gate(i): one that reaches row 1500 while the
# cron job's transaction (which holds lock 42 from its start) is open waits
# there and classifies its remaining 1500 rows after the commit.
my $s1 = classify_loop(5000, 'gate(i)', "$tmp/s1.out", $ENV{PGOPTIONS});
my $s2 = classify_loop(5000, 'true', "$tmp/s2.out", $ENV{PGOPTIONS} . $paropts);
my $t0 = time;
my $status = '';
while (time - $t0 < 150)
{
	$status = q1("SELECT status FROM cron.job_run_details WHERE jobid = $jobid AND status IN ('succeeded', 'failed')
	              ORDER BY runid LIMIT 1");
	last if $status ne '';
	sleep 1;
}
my $waited = time - $t0;
my $run = q1("SELECT status || '|' || coalesce(return_message, '') FROM cron.job_run_details WHERE jobid = $jobid ORDER BY runid LIMIT 1");
my $jstart = q1("SELECT start_time FROM cron.job_run_details WHERE jobid = $jobid ORDER BY runid LIMIT 1");
q1(q{SELECT cron.unschedule('bft_retrain'); SELECT cron.unschedule('bft_retrain_async')});
sleep 2;
q1('UPDATE ctl SET stop = true');
$s1->finish;
$s2->finish;
note("cron run after $waited s: $run");
is($status, 'succeeded', 'the cron job ran and succeeded within 150 s');
is(q1(q{SELECT string_agg(version || ':' || (deployed_at IS NOT NULL), ',' ORDER BY version) FROM bft.models WHERE name = 'topics'}),
	'1:true,2:true', 'it stored and deployed version 2');
is(q1(q{SELECT bft_classify('shares rally as profit beats forecast', 'topics')}), 'down',
	"version 2 labels the probe text 'down'");

$node->poll_query_until($db, q{SELECT state FROM bft.jobs WHERE model = 'topics_async'}, 'succeeded');
my $arun = q1("SELECT status FROM cron.job_run_details WHERE jobid = $ajob ORDER BY runid LIMIT 1");
ok($arun eq 'succeeded' && q1(q{SELECT state || ':' || version FROM bft.jobs WHERE model = 'topics_async'}) eq 'succeeded:1',
	'a cron job calling bft_train_async returns at once; the background job trains version 1 of topics_async');

# statements|max labels per statement|label sequence without repeats|errors
sub loop_summary
{
	my ($out) = @_;
	my @rows = map { [ split /\|/ ] } grep { /\S/ } split /\n/, slurp_file($out);
	my ($maxd, @seq) = (0);
	foreach my $r (@rows)
	{
		$maxd = $r->[3] if $r->[3] > $maxd;
		push @seq, $r->[4] unless @seq && $seq[-1] eq $r->[4];
	}
	my $errs = grep { /\S/ } split /\n/, slurp_file("$out.err");
	return join('|', scalar(@rows), $maxd, join(',', @seq), $errs);
}
foreach my $s (1, 2)
{
	my $sum = loop_summary("$tmp/s$s.out");
	note("session $s: $sum   (statements|max labels per statement|label sequence|errors)");
	like($sum, qr/^\d+\|1\|up,down\|0$/, "session $s: no errors, one version per statement, 'up' then 'down'");
}
# The cron job holds lock 42 from its start until its commit (training plus
# a 1 s sleep). A session 1 statement that started within 0.5 s of the job's
# start and took over 0.8 s waited at row 1500 for that commit: it classified
# half its rows before and half after the deployment, and must have seen one
# version — version 1, whose snapshot it started with.
my (undef, $blocked) = psql_cmds($node, $db, [], stdin => "CREATE TEMP TABLE s1 (st timestamptz, en timestamptz, n int, d int, l text);
\\copy s1 FROM '$tmp/s1.out' (FORMAT csv, DELIMITER '|')
SELECT count(*) || '|' || coalesce(string_agg(DISTINCT l || ':' || d || ':' || n, ','), '')
  FROM s1 WHERE st < '$jstart'::timestamptz + interval '0.5 s' AND en - st > interval '0.8 s';
");
$blocked = (split /\n/, $blocked)[-1];
note("session 1 statements that waited for the deployment's commit: $blocked (count|label:labels per statement:rows)");
like($blocked, qr/^[1-9]\d*\|up:1:3000$/,
	"a 3000-row statement spanning the deployment's commit saw one version (the one its snapshot started with)");

$node->stop;
done_testing();
