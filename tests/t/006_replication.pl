# bft on a streaming-replication hot standby.
#
# A primary and a hot standby made from a pg_basebackup of it (streaming)
# check that
#  - a model trained and deployed on the primary classifies on the standby
#    with bit-identical probabilities (bft_predict_proba arrays compared as
#    text, which is the exact float4 value), also inside parallel workers;
#  - bft_classify, bft_predict, bft_predict_proba, bft_classify_batch,
#    bft_fill_mask, bft_tokenize, bft_evaluate, bft_embed and bft_embed_batch
#    give the primary's results;
#  - a new version deployed on the primary (and a rollback with bft_deploy)
#    is used by the standby's next statement once replayed, in the same
#    standby backend (its per-backend model cache notices the change);
#  - bft_train, bft_import_model, bft_deploy and bft_drop_model fail on the
#    standby with SQLSTATE 25006 (read-only), and the standby keeps running;
#  - bft_train_async and bft_cancel_job are refused there too, and bft.jobs
#    on the standby shows a job running on the primary as running, then as
#    cancelled once replayed;
#  - bft_export_model works on the standby (it only reads the database);
#  - a model dropped on the primary is gone for the standby session's next
#    statement (a clean error), and bft.progress is readable there;
#  - after promotion (failover) the former standby trains, deploys and
#    classifies like a primary.
use strict;
use warnings;
use Cwd qw(abs_path);
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use BftTest;

my $D = PostgreSQL::Test::Utils::tempdir();
my $db = 'bft_repl';
my $arch = '{"hidden_size":32,"num_hidden_layers":1,"num_attention_heads":2,"intermediate_size":64,'
  . '"vocab_size":200,"max_position_embeddings":64}';
my $ckpt = abs_path('tests/data/ckpt/tiny');

my $primary = PostgreSQL::Test::Cluster->new('primary');
$primary->init(allows_streaming => 1);
$primary->start;

sub qp { my ($ok, $out, $err) = psql_c($primary, $db, $_[0]); return $ok ? $out : "ERROR $err"; }
my $standby;
sub qs { my ($ok, $out, $err) = psql_c($standby, $db, $_[0]); return $ok ? $out : "ERROR $err"; }
sub train    # a new version of model "topics" (deployed), returns its version
{
	my ($seed, $lr) = @_;
	return qp("SET client_min_messages = warning; SET bft.threads = 1;
		SELECT version FROM bft_train('docs', 'body', 'label', epochs => 15, model => 'topics', seed => $seed,
		       mlm_epochs => 1, batch_size => 8, learning_rate => $lr, max_length => 32, architecture => '$arch')");
}
# until the standby has replayed the primary's current WAL (croaks on timeout)
sub wait_replay { $primary->wait_for_catchup($standby, 'replay', $primary->lsn('insert')); return 1; }

# ---- primary ---------------------------------------------------------------
$primary->safe_psql('postgres', "CREATE DATABASE $db");
$primary->safe_psql($db, q{
	CREATE EXTENSION bft;
	CREATE TABLE docs AS
	SELECT i AS id,
	       (ARRAY['central bank raises interest rates', 'shares rally as profit beats forecast',
	              'team wins the championship final', 'oil prices fall on weak demand'])[1 + i % 4]
	       || ' ' || (ARRAY['today', 'again', 'this week', 'sharply', 'in march'])[1 + i % 5] AS body,
	       (ARRAY['economy', 'markets', 'sports', 'markets'])[1 + i % 4] AS label
	  FROM generate_series(1, 60) i;
});
my $v1 = train(1, '2e-3');
is($v1, '1', 'model trained on the primary');

# ---- standby: pg_basebackup, streaming ---------------------------------------
$primary->backup('base');
$standby = PostgreSQL::Test::Cluster->new('standby');
$standby->init_from_backup($primary, 'base', has_streaming => 1);
ok(-f $standby->data_dir . '/standby.signal', 'pg_basebackup made a standby data directory');
$standby->start;
is(qs('SELECT pg_is_in_recovery()'), 't', 'standby is in recovery (hot standby)');
ok($primary->poll_query_until('postgres', 'SELECT state FROM pg_stat_replication', 'streaming'),
	'primary streams to the standby');
ok(wait_replay(), "standby replays the primary's WAL");
is(qs('SHOW transaction_read_only'), 'on', 'standby transactions are read-only');

# ---- every read-only function gives the primary's exact results ------------
sub same    # identical non-empty output on primary and standby
{
	my ($name, $sql) = @_;
	my ($x, $y) = (qp($sql), qs($sql));
	ok($x ne "" && $x eq $y && $x !~ /ERROR/, $name)
	  or diag("primary: " . substr($x, 0, 300) . "\nstandby: " . substr($y, 0, 300));
}
my $proba = q{SELECT id, bft_predict_proba(body, 'topics') FROM docs ORDER BY id};
same('bft_predict_proba: identical arrays on the standby (60 rows)', $proba);
same('bft_classify (named model)', q{SELECT string_agg(bft_classify(body, 'topics'), ',' ORDER BY id) FROM docs});
same('bft_classify (default model)', q{SELECT string_agg(bft_classify(body), ',' ORDER BY id) FROM docs});
same('bft_predict top_k 3', q{SELECT label, label_id, score FROM bft_predict('central bank raises rates', 'topics', 3)});
same('bft_classify_batch', q{SELECT bft_classify_batch(array_agg(body ORDER BY id), 'topics') FROM docs});
same('bft_fill_mask', q{SELECT token, token_id, score FROM bft_fill_mask('central bank [MASK] interest rates', 5, 'topics')});
same('bft_tokenize', q{SELECT token, token_id FROM bft_tokenize('Team wins the Championship!', 'topics')});
same('bft_evaluate', q{SELECT accuracy, macro_f1, rows, report FROM bft_evaluate('topics', 'docs', 'body', 'label')});
same('bft_embed', q{SELECT id, bft_embed(body, 'topics') FROM docs ORDER BY id});
same('bft_embed_batch',
	q{SELECT idx, embedding FROM bft_embed_batch((SELECT array_agg(body ORDER BY id) FROM docs), 'topics', 'max+normalize')});
is(qp(q{SELECT accuracy >= 0.9 FROM bft_evaluate('topics', 'docs', 'body', 'label')}), 't',
	'the model learned its table (accuracy >= 0.9), so probabilities are not uniform');

# parallel workers on the standby load the model too
my $par = q{SET parallel_setup_cost = 0; SET parallel_tuple_cost = 0; SET min_parallel_table_scan_size = 0;
	SET max_parallel_workers_per_gather = 2;
	SELECT set_config(CASE WHEN current_setting('server_version_num')::int >= 160000
	                       THEN 'debug_parallel_query' ELSE 'force_parallel_mode' END, 'on', false);};
my (undef, $plan) = psql_cmds($standby, $db, [], stdin =>
	"$par\nEXPLAIN (ANALYZE, COSTS OFF, TIMING OFF, SUMMARY OFF) SELECT bft_predict_proba(body, 'topics') FROM docs;\n");
like($plan, qr/Workers Launched: [1-9]/, 'parallel workers launched on the standby');
my $md5 = q{SELECT md5(string_agg(p::text, ';' ORDER BY id)) FROM (SELECT id, bft_predict_proba(body, 'topics') p FROM docs) s};
my (undef, $par_s) = psql_cmds($standby, $db, [], stdin => "$par\n$md5;\n");
$par_s = (split /\n/, $par_s)[-1];
my $par_p = qp($md5);
ok($par_p ne '' && $par_s eq $par_p, "parallel classification on the standby equals the primary's");

# ---- writes are refused on the standby: SQLSTATE 25006, no crash ----------
sub refused
{
	my ($name, $sql) = @_;
	my (undef, undef, $err) = psql_cmds($standby, $db, [], stdin => "\\set VERBOSITY verbose\n$sql;\n");
	like($err, qr/ERROR:  25006/, "$name refused on the standby");
}
refused('bft_train', "SELECT * FROM bft_train('docs', 'body', 'label', 1, model => 'x', architecture => '$arch')");
refused('bft_import_model', "SELECT * FROM bft_import_model('x', '$ckpt')");
refused('bft_deploy', q{SELECT bft_deploy('topics', 1)});
refused('bft_drop_model', q{SELECT bft_drop_model('topics')});
ok(qs('SELECT count(*) FROM bft.models') eq '1'
	  && slurp_file($standby->logfile) !~ /terminated by signal|PANIC/,
	'standby still up, no backend crashed, models unchanged');

# Background jobs (bft_train_async): refused on the standby; a job running on
# the primary shows as running there too (its worker is on the primary).
refused('bft_train_async', "SELECT bft_train_async('docs', 'body', 'label', 1, model => 'x', architecture => '$arch')");
my $job = qp("SELECT bft_train_async('docs', 'body', 'label', epochs => 100000, model => 'slowjob', batch_size => 8,
                                     max_length => 32, architecture => '$arch')");
$primary->poll_query_until($db, "SELECT state FROM bft.jobs WHERE id = $job", 'running');
wait_replay();
is(qs("SELECT state FROM bft.jobs WHERE id = $job"), 'running',
	'a job running on the primary shows as running on the standby (not as a dead worker)');
refused('bft_cancel_job', "SELECT bft_cancel_job($job)");
qp("SELECT bft_cancel_job($job)");
$primary->poll_query_until($db, "SELECT state FROM bft.jobs WHERE id = $job", 'cancelled');
wait_replay();
is(qs("SELECT state FROM bft.jobs WHERE id = $job"), 'cancelled',
	'the job cancelled on the primary shows as cancelled on the standby');

# export works on the standby (it reads rows and writes server files only)
ok(qs("SELECT bft_export_model('topics', '$D/from_standby')") eq '1' && -f "$D/from_standby/model.safetensors",
	'bft_export_model on the standby writes an HF directory');
qp("SELECT version FROM bft_import_model('from_standby', '$D/from_standby')");
is(qp(q{SELECT id, bft_predict_proba(body, 'from_standby') FROM docs ORDER BY id}), qp($proba),
	'a model exported on the standby and imported on the primary classifies identically');

# ---- new deployments are used by the standby's next statement -------------
# One standby session: classify (v1 cached), then the primary trains v2 and the
# standby replays it, classify again in the same backend, then the primary
# rolls back to v1 with bft_deploy, and again; then the primary drops it.
my $primary_v1 = qp($proba);
my $s = $standby->background_psql($db, on_error_stop => 0);
my $s_v1 = $s->query($proba);
my $pid1 = $s->query('SELECT pg_backend_pid()');
my $v2 = train(2, '3e-3');
my $primary_train = qp($proba);
wait_replay();
my $s_v2 = $s->query($proba);
my $pid2 = $s->query('SELECT pg_backend_pid()');
qp(q{SELECT bft_deploy('topics', 1)});
my $primary_rollback = qp($proba);
wait_replay();
my $s_v1b = $s->query($proba);
my $pid3 = $s->query('SELECT pg_backend_pid()');
my $dropped = qp(q{SELECT bft_drop_model('topics')});
wait_replay();
$s->query($proba);
my $drop_err = $s->{stderr};
$s->{stderr} = '';
my $alive = $s->query(q{SELECT 'alive:' || pg_backend_pid()});
$s->quit;
is($v2, '2', 'version 2 trained and deployed on the primary');
ok($pid1 ne '' && $pid1 eq $pid2 && $pid2 eq $pid3, 'all standby statements ran in one backend');
ok($primary_v1 ne '' && $s_v1 eq $primary_v1, 'standby session classifies with v1 first');
ok($primary_train ne '' && $primary_train ne $primary_v1, "v2's probabilities differ from v1's on the primary");
is($s_v2, $primary_train, "after replay the standby's next statement uses v2 (identical probabilities)");
ok($s_v1b eq $primary_v1 && $primary_rollback eq $primary_v1,
	"rollback with bft_deploy(topics, 1) on the primary: the standby's next statement uses v1 again");
ok($dropped eq '2' && $drop_err =~ /ERROR:  model "topics" does not exist/ && $alive eq "alive:$pid1",
	"model dropped on the primary: the standby session's next statement says it does not exist, and the session goes on"
) or diag("dropped: $dropped; error: $drop_err; alive: $alive");
is(qs('SELECT count(*) FROM bft.progress'), '0', 'bft.progress can be read on the standby');

# ---- failover: the promoted standby trains and deploys like a primary -------
$standby->promote;
is(qs('SELECT pg_is_in_recovery()'), 'f', 'standby promoted');
my $out = qs("SET client_min_messages = warning; SET bft.threads = 1;
	SELECT version FROM bft_train('docs', 'body', 'label', epochs => 15, model => 'topics', seed => 3,
	       batch_size => 8, learning_rate => 2e-3, max_length => 32, architecture => '$arch')");
ok($out eq '1' && qs(q{SELECT count(*) FROM bft_evaluate('topics', 'docs', 'body', 'label')}) eq '1',
	'after promotion, bft_train works there and the new model classifies')
  or diag($out);
my $fs = q{SELECT bft_predict_proba(body, 'from_standby') FROM docs WHERE id = 1};
is(qs($fs), qp($fs), 'models replicated before the failover classify identically on the promoted server');

$standby->stop;
$primary->stop;
done_testing();
