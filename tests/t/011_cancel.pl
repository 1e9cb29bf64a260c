# Ctrl-C (pg_cancel_backend) and statement_timeout stop a running bft_train
# within 1 second, leave no model row, large object or progress entry behind,
# and the live progress view shows the training while it runs; the same
# backend trains normally afterwards; a cancel inside an optimizer step that
# lasts several seconds is noticed between encoder layers; the postmaster
# never runs engine threads.
use strict;
use warnings;
use IPC::Run;
use Time::HiRes qw(time sleep);
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use BftTest;

my $node = PostgreSQL::Test::Cluster->new('cancel');
$node->init;
$node->start;
my $db = 'bft_cancel';
$node->safe_psql('postgres', "CREATE DATABASE $db");
# ~3000 varied rows: vocabulary learning and tokenizing take well under a
# second; the default from-scratch model then trains for minutes.
$node->safe_psql($db, q{
	CREATE EXTENSION bft;
	CREATE TABLE tweets AS
	SELECT md5(i::text) || ' ' || (ARRAY['stocks rally','bank cuts rates','oil prices fall','new ceo named',
	       'earnings beat forecast','shares slump'])[1 + i % 6] || ' ' || md5((i * 7)::text) AS text,
	       i % 6 AS label
	  FROM generate_series(1, 3000) i;
});
my $train = q{SELECT * FROM bft_train('tweets', 'text', 'label', epochs => 50, max_length => 64, model => 'cancel_me', mlm_epochs => 0)};

sub q1 { my ($ok, $out) = psql_c($node, $db, $_[0]); return $out; }
# psql running the given -c commands in one session (no ON_ERROR_STOP), output
# and errors into $$outref; returns the IPC::Run harness
sub psql_start
{
	my ($outref, @cmds) = @_;
	$$outref = '';
	return IPC::Run::start([ 'psql', '-X', '-q', '-t', '-A', '-d', $node->connstr($db), map { ('-c', $_) } @cmds ],
		'<', \undef, '>', $outref, '2>&1');
}
# 1. pg_cancel_backend while training; watch bft.progress from a second connection.
my $log1;
my $h = psql_start(\$log1, 'SET bft.progress_interval = 1', $train);
my $row = poll_sql($node, $db, 600,
	"SELECT pid, phase, step, steps, epoch, epochs FROM bft.progress WHERE model = 'cancel_me' AND phase = 'training' AND step > 0");
note("progress row: $row");
ok($row ne '', 'bft.progress shows the running training (pid|phase|step|steps|epoch|epochs)');
my @f = split /\|/, $row, -1;
my $pid = $f[0] || 0;
ok($pid && ($f[3] // 0) > 0, 'progress has a step count');
sleep 1;
my $row2 = q1("SELECT step FROM bft.progress WHERE pid = $pid");
ok($row2 ne '' && $row2 > ($f[2] // 0), 'progress advances (step ' . ($row2 eq '' ? '?' : $row2) . ')');
my $t0 = time;
q1("SELECT pg_cancel_backend($pid)");
$h->finish;
my $lat = time - $t0;
note(sprintf('cancel latency: %.3f s', $lat));
ok($lat <= 1.0, sprintf('pg_cancel_backend stops training within 1 s (%.3f s)', $lat));
like($log1, qr/canceling statement due to user request/, 'client sees the cancel error');
like($log1, qr/NOTICE:  training epoch 1\/50, step/, 'NOTICE progress lines were sent');
is(q1('SELECT count(*) FROM bft.models'), '0', 'no model row after cancel');
is(q1('SELECT count(*) FROM pg_largeobject_metadata'), '0', 'no large object after cancel');
is(q1('SELECT count(*) FROM bft.progress WHERE datname = current_database()'), '0', 'no progress entry after cancel');

# 2. statement_timeout.
my $log2;
$t0 = time;
psql_start(\$log2, "SET statement_timeout = '4s'", $train)->finish;
$lat = time - $t0 - 4.0;
note(sprintf('statement_timeout overshoot: %.3f s', $lat));
like($log2, qr/canceling statement due to statement timeout/, 'statement_timeout cancels the training');
ok($lat <= 1.0, sprintf('statement_timeout stops training within 1 s (%.3f s over)', $lat));
is(q1('SELECT count(*) FROM bft.models') . ' ' . q1('SELECT count(*) FROM pg_largeobject_metadata'),
	'0 0', 'nothing stored after timeout');

# 3. The same backend trains normally after being cancelled (no leaked state).
my $log3;
psql_start(\$log3, "SET statement_timeout = '2s'", $train, 'RESET statement_timeout',
	'SET client_min_messages = warning',
	q{SELECT version FROM bft_train('tweets', 'text', 'label', epochs => 1, model => 'after', mlm_epochs => 0,
	  architecture => '{"hidden_size": 16, "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 32, "vocab_size": 300}')}
)->finish;
my @lines = split /\n/, $log3;
is($lines[-1] // '', '1', 'a training after a cancel in the same backend works') or diag($log3);
is(q1('SELECT count(*) FROM bft.models') . ' ' . q1('SELECT count(*) FROM pg_largeobject_metadata'),
	'1 1', 'exactly one model and one large object');

# 4. A model whose optimizer steps take longer than a second even on an idle
#    machine (BERT-base width, 8 layers, batch 32 x 128 tokens: ~3 s a step
#    on 2 cores): the cancel is noticed between encoder layers, not after the step.
q1(q{CREATE TABLE long_rows AS SELECT repeat(text || ' ', 3) AS text, label FROM tweets LIMIT 200});
my $log4;
$h = psql_start(\$log4,
	q{SELECT * FROM bft_train('long_rows', 'text', 'label', 1, batch_size => 32, max_length => 128, model => 'big',
	  mlm_epochs => 0, architecture => '{"hidden_size": 768, "num_hidden_layers": 8, "num_attention_heads": 12, "intermediate_size": 3072, "vocab_size": 4000}')}
);
$row = poll_sql($node, $db, 1200, "SELECT pid, samples_per_s FROM bft.progress WHERE model = 'big' AND phase = 'training' AND step >= 1");
@f = split /\|/, $row, -1;
$pid = $f[0] || 0;
my $sps = $f[1] // 0;
my $step_s = sprintf('%.2f', $sps > 0 ? 32 / $sps : 0);
note("big model: $step_s s per optimizer step");
sleep 0.4;
$t0 = time;
q1("SELECT pg_cancel_backend($pid)");
$h->finish;
$lat = time - $t0;
note(sprintf('cancel latency (big model): %.3f s', $lat));
ok($step_s > 1.0, "the big model's steps take over a second ($step_s s), so the check is meaningful");
ok($lat <= 1.0, sprintf('cancel inside a long step stops within 1 s (%.3f s)', $lat));
like($log4, qr/canceling statement due to user request/, 'client sees the cancel error (big model)');
is(q1("SELECT count(*) FROM bft.models WHERE name = 'big'"), '0', 'nothing stored (big model)');

# 5. The postmaster never runs engine threads (they start lazily in backends).
my ($pm) = split /\n/, slurp_file($node->data_dir . '/postmaster.pid');
if ($pm && -d "/proc/$pm/task")
{
	opendir(my $d, "/proc/$pm/task") or die;
	my $nthr = grep { !/^\./ } readdir($d);
	closedir($d);
	is($nthr, 1, "postmaster has one thread after the trainings ($nthr)");
}

done_testing();
