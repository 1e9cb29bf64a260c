# Background training with bft_train_async(): it returns a job id at once,
# the job waits for the submitting transaction, runs as the submitting role,
# shows progress/state/error/version in bft.jobs, a failed job records its
# error, bft_cancel_job() stops a running job and a queued one, a rolled-back
# submission never runs, quoting-hostile arguments stay data, other roles
# cannot see or cancel a job, the job table's bookkeeping ignores the
# submitter's search_path. All of it first on a cluster without bft in
# shared_preload_libraries, then the basic cycle again on a second cluster
# with bft preloaded, where running out of worker slots is a clear error.
use strict;
use warnings;
use IPC::Run;
use Time::HiRes qw(time sleep);
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use BftTest;

$ENV{PGOPTIONS} = '-c client_min_messages=warning';
my $db = 'bft_jobs';
my $arch = '{"hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2, '
  . '"intermediate_size": 64, "vocab_size": 200}';
my $node;    # the cluster the helpers below talk to

# one statement's output as the given role (default: the superuser), errors included
sub qu
{
	my ($user, $sql) = @_;
	my ($ok, $out, $err) = psql_c($node, $db, $sql, defined $user ? (user => $user) : ());
	return join("\n", grep { $_ ne '' } ($out, $err));
}
sub sq { return qu(undef, $_[0]); }

# wait_state(id, state, seconds): poll bft.jobs until the job has that state
sub wait_state
{
	my ($id, $want, $secs) = @_;
	for (1 .. $secs * 10)
	{
		my $s = sq("SELECT state FROM bft.jobs WHERE id = $id");
		return 1 if $s eq $want;
		return 0 if $s =~ /^(succeeded|failed|cancelled)$/;
		sleep 0.1;
	}
	return 0;
}

# no_worker: wait (at most 10 s) until no job worker is left in this cluster
sub no_worker
{
	for (1 .. 100)
	{
		return 1
		  if sq("SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'bft training job'") eq '0';
		sleep 0.1;
	}
	return 0;
}

sub setup_db
{
	$node->safe_psql('postgres', "CREATE DATABASE $db");
	$node->safe_psql($db, qq{
		CREATE EXTENSION bft;
		CREATE TABLE h (t text, l text);
		INSERT INTO h SELECT (ARRAY['shares rally as profit beats forecast', 'stocks fall on weak earnings',
		                            'team wins the championship final', 'coach fired after losing season'])[1 + i % 4],
		                     (ARRAY['markets', 'markets', 'sports', 'sports'])[1 + i % 4]
		                FROM generate_series(1, 40) i;
		ALTER DATABASE $db SET bft.threads = 1;
	});
}

# The basic cycle: submit → queued/running with progress → succeeded, version recorded.
sub basic_cycle
{
	my ($tag) = @_;
	my $t0 = time;
	my $id = sq("SELECT bft_train_async('h', 't', 'l', epochs => 4000, learning_rate => 2e-3, model => 'bg',
	                                    architecture => '$arch')");
	my $dt = time - $t0;
	ok($id =~ /^\d+$/ && $dt < 1.5,
		sprintf('%s: bft_train_async returns a job id at once (id %s, %.2f s)', $tag, $id, $dt));
	return unless $id =~ /^\d+$/;
	my $row = poll_sql($node, $db, 300,
		"SELECT state, phase, step, steps, percent IS NOT NULL FROM bft.jobs WHERE id = $id AND state = 'running' AND step > 0");
	note("running row: $row");
	# (a model from scratch first pre-trains on the column: phase mlm, then training)
	ok($row =~ /^running\|(training|mlm)\|/ && $row =~ /\|t$/,
		"$tag: bft.jobs shows the job running with progress (phase, step, percent: $row)");
	is(sq("SELECT backend_type FROM pg_stat_activity WHERE pid = (SELECT pid FROM bft.jobs WHERE id = $id)"),
		'bft training job', "$tag: the job runs in a background worker (pg_stat_activity backend_type)");
	wait_state($id, 'succeeded', 120);
	is(sq("SELECT state FROM bft.jobs WHERE id = $id"), 'succeeded', "$tag: the job succeeds");
	my $v = sq("SELECT version FROM bft.jobs WHERE id = $id");
	ok( $v ne ''
		  && sq("SELECT count(*) FROM bft.models WHERE name = 'bg' AND version = $v AND deployed_at IS NOT NULL") eq '1',
		"$tag: bft.jobs.version is the new, deployed version ($v)");
	is( sq("SELECT (result->>'rows_used')::int = 40 AND (result->>'epochs')::int = 4000 AND error IS NULL
	          AND finished_at >= started_at FROM bft.jobs WHERE id = $id"),
		't', "$tag: result row, timestamps, no error");
	is( sq("SELECT bft_classify('team wins the championship final', 'bg') || ' ' || bft_classify('stocks fall on weak earnings', 'bg')"),
		'sports markets', "$tag: the job's model classifies");
}

# ---- a cluster without bft in shared_preload_libraries ----------------------
$node = PostgreSQL::Test::Cluster->new('jobs');
$node->init;
$node->start;
setup_db();
note('cluster without bft in shared_preload_libraries: ' . sq('SHOW shared_preload_libraries'));
basic_cycle('no preload');

# The job waits for the submitting transaction to commit.
my $s = $node->background_psql($db, on_error_stop => 0);
my $out = $s->query(
	"BEGIN; SELECT 'id=' || bft_train_async('h', 't', 'l', epochs => 50, model => 'waits', architecture => '$arch')");
my ($id) = $out =~ /id=(\d+)/;
$s->query('SELECT pg_sleep(1)');
my $r = '';
for (1 .. 100)
{
	$r = sq("SELECT 'during=' || wait_event_type || ':' || wait_event || ':' || (SELECT count(*) FROM bft.progress)
	           FROM pg_stat_activity WHERE backend_type = 'bft training job'");
	last if $r eq 'during=Lock:transactionid:0';
	sleep 0.1;
}
$s->query('COMMIT');
$s->quit;
note("$out $r");
is($r, 'during=Lock:transactionid:0', "the job's worker waits on the submitting transaction (no training yet)");
wait_state($id // 0, 'succeeded', 60);
is(sq('SELECT state FROM bft.jobs WHERE id = ' . ($id // 0)), 'succeeded', '... and runs once it commits');

# A rolled-back submission never runs.
sq("BEGIN; SELECT bft_train_async('h', 't', 'l', epochs => 5, model => 'rolled_back', architecture => '$arch'); ROLLBACK;");
no_worker();
is( sq("SELECT count(*) FROM bft.train_jobs WHERE model = 'rolled_back'") . '|'
	  . sq("SELECT count(*) FROM bft.models WHERE name = 'rolled_back'") . '|'
	  . sq("SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'bft training job'"),
	'0|0|0', 'a rolled-back submission leaves no job, no model and no worker');

# A failing job records its error text and leaves no model.
$id = sq("SELECT bft_train_async('h', 't', 'l', base => 'no_such_base', model => 'fails')");
wait_state($id, 'failed', 30);
my $row = sq("SELECT state || '|' || error FROM bft.jobs WHERE id = $id");
note($row);
like($row, qr/^failed\|model "no_such_base" does not exist/, 'a failing job shows state failed and the error text');
is(sq("SELECT count(*) FROM bft.models WHERE name = 'fails'"), '0', '... and leaves no model');

# train_precision reaches the job: 'fp32' trains in a session whose
# bft.cpu_precision ('int8') would refuse to train, and is what the model records.
$id = (split /\n/, sq("SET bft.cpu_precision = 'int8'; SELECT bft_train_async('h', 't', 'l', epochs => 2, "
	  . "model => 'prec', architecture => '$arch', train_precision => 'fp32')"))[-1];
wait_state($id // 0, 'succeeded', 60);
$row = sq("SELECT j.state || '|' || (m.params->>'precision') FROM bft.jobs j JOIN bft.models m "
	  . "ON m.name = j.model AND m.version = j.version WHERE j.id = " . ($id // 0));
is($row, 'succeeded|fp32', "a job's train_precision overrides the session's bft.cpu_precision");
$id = (split /\n/, sq("SET bft.cpu_precision = 'int8'; SELECT bft_train_async('h', 't', 'l', model => 'prec2')"))[-1];
wait_state($id // 0, 'failed', 30);
like(sq('SELECT error FROM bft.jobs WHERE id = ' . ($id // 0)), qr/cpu_precision = 'int8' is for classification only/,
	"... and without it the job trains with the session's setting (int8: refused)");

# Errors that can be found at submission are raised at once.
like(sq("SELECT bft_train_async('h', 'nope', 'l')"), qr/column "nope" of relation "h" does not exist/,
	'a missing column is an error at submission');
like(sq("SELECT bft_train_async('h', 't', 'l', deploy => 'sometimes')"), qr/deploy must be/,
	'a bad deploy value is an error at submission');
like(sq("SELECT bft_train_async('h', 't', 'l', train_precision => 'int8')"),
	qr/train_precision => .int8. is for classification only/, "train_precision => 'int8' is an error at submission");

# Cancel a running job: state cancelled, no new version.
my $nv = sq('SELECT count(*) FROM bft.models');
$id = sq("SELECT bft_train_async('h', 't', 'l', epochs => 90000, model => 'bg', architecture => '$arch')");
wait_state($id, 'running', 30);
sleep 0.5;
my $t0 = time;
$r = sq("SELECT bft_cancel_job($id)");
wait_state($id, 'cancelled', 10);
$row = sq("SELECT state || '|' || coalesce(error, '') FROM bft.jobs WHERE id = $id");
note(sprintf('%s (%.2f s)', $row, time - $t0));
ok($r eq 't' && $row eq 'cancelled|canceling statement due to user request',
	'bft_cancel_job stops a running job (state cancelled)');
ok(sq('SELECT count(*) FROM bft.models') eq $nv && sq("SELECT bft_cancel_job($id)") eq 'f',
	'... no new version; cancelling again returns false');

# Cancel a queued job (in the submitting transaction): it never trains.
$out = sq("BEGIN; SELECT 'id=' || bft_train_async('h', 't', 'l', epochs => 5, model => 'never_runs', architecture => '$arch');
           SELECT 'state=' || state FROM bft.jobs WHERE model = 'never_runs';
           SELECT 'cancel=' || bft_cancel_job(currval('bft.train_jobs_id_seq')); COMMIT;");
no_worker();
note($out =~ s/\n/ /gr);
ok( $out =~ /state=queued/
	  && $out =~ /cancel=true/
	  && sq("SELECT state || '|' || (SELECT count(*) FROM bft.models WHERE name = 'never_runs') FROM bft.jobs WHERE model = 'never_runs'")
	  eq 'cancelled|0',
	'bft_cancel_job on a queued job: it never trains');
ok(no_worker(), 'no job worker is left behind');

# Hostile text in arguments is data, never SQL.
my $evil = q{x'); DROP TABLE h; --};
$id = sq("SELECT bft_train_async('h', 't', 'l', epochs => 3, model => \$q\$$evil\$q\$, architecture => '$arch')");
wait_state($id, 'succeeded', 60);
is( sq("SELECT count(*) FROM bft.models WHERE name = \$q\$$evil\$q\$") . '|' . sq('SELECT count(*) FROM h'),
	'1|40', 'a model name with quotes and a semicolon is stored as given; the table is intact');
is(sq("SELECT settings->>'bft.threads' FROM bft.train_jobs WHERE id = $id"), '1',
	"the submitter's bft.threads is used by the job");

# Roles: the job runs as its submitter; others cannot see or cancel it.
sq("CREATE ROLE bft_alice LOGIN; CREATE ROLE bft_bob LOGIN; CREATE ROLE bft_group NOLOGIN;
    GRANT SELECT ON h TO bft_alice, bft_group; GRANT SELECT, INSERT, UPDATE ON bft.models TO bft_alice, bft_group;
    GRANT USAGE ON SEQUENCE bft.models_id_seq TO bft_alice, bft_group; GRANT bft_group TO bft_bob;
    GRANT EXECUTE ON FUNCTION bft_train, bft_train_async TO bft_alice, bft_group");
$id = qu('bft_alice',
	"SELECT bft_train_async('h', 't', 'l', epochs => 90000, model => 'alice_model', architecture => '$arch')");
wait_state($id, 'running', 30);
is( qu('bft_bob', "SELECT count(*) FROM bft.jobs WHERE id = $id") . '|'
	  . qu('bft_alice', "SELECT count(*) FROM bft.jobs WHERE id = $id"),
	'0|1', 'bft.jobs shows a job to its submitter only');
$out = qu('bft_bob', "SELECT bft_cancel_job($id)");
my $out2 = qu('bft_bob', 'SELECT bft_cancel_job(999999)');
ok($out =~ /training job $id does not exist/ && ($out2 =~ s/999999/$id/gr) eq $out,
	'another role cannot cancel it, and learns nothing: the same error as for a job that does not exist')
  or diag("$out\n$out2");
$out = qu('bft_alice', "SELECT bft_cancel_job($id)");
wait_state($id, 'cancelled', 10);
ok($out eq 't' && sq("SELECT state FROM bft.jobs WHERE id = $id") eq 'cancelled', 'its submitter can');
like(qu('bft_bob', "SET ROLE bft_group; SELECT bft_train_async('h', 't', 'l')"), qr/cannot log in/,
	'a NOLOGIN role gets a clear error at submission');
like(
	qu('bft_bob',
		"INSERT INTO bft.train_jobs (model, relation, args, userid, username) VALUES ('x', 'h', '{}', 1, 'x')"),
	qr/permission denied/,
	'users cannot write bft.train_jobs directly');
$id = qu('bft_alice',
	"SELECT bft_train_async('h', 't', 'l', epochs => 20, model => 'alice_model', architecture => '$arch')");
wait_state($id, 'succeeded', 60);
is(sq("SELECT created_by FROM bft.models WHERE name = 'alice_model'"), 'bft_alice',
	'the job trains as its submitter (created_by)');

# The bookkeeping runs with the table owner's rights: the submitter's
# search_path must not slip an operator of theirs into it.
sq("GRANT CREATE ON DATABASE $db TO bft_alice");
my $script = qq{
CREATE SCHEMA evil;
CREATE FUNCTION evil.eq(bigint, bigint) RETURNS bool LANGUAGE plpgsql AS
  \$\$ BEGIN EXECUTE 'ALTER ROLE bft_alice SUPERUSER'; RETURN \$1 OPERATOR(pg_catalog.=) \$2; END \$\$;
CREATE OPERATOR evil.= (LEFTARG = bigint, RIGHTARG = bigint, FUNCTION = evil.eq);
SET search_path = evil, public, pg_catalog;
SELECT 'job=' || bft_train_async('h', 't', 'l', epochs => 90000, model => 'alice_model', architecture => '$arch');
SELECT pg_sleep(0.5);
SELECT 'cancel=' || bft_cancel_job(max(id)) FROM bft.jobs;
};
my $err = '';
$out = '';
IPC::Run::run([ 'psql', '-X', '-q', '-t', '-A', '-U', 'bft_alice', '-d', $node->connstr($db) ],
	'<', \$script, '>', \$out, '2>', \$err);
($id) = $out =~ /^job=(\d+)$/m;
wait_state($id // 0, 'cancelled', 30);
ok( sq("SELECT rolsuper FROM pg_roles WHERE rolname = 'bft_alice'") eq 'f'
	  && sq('SELECT state FROM bft.jobs WHERE id = ' . ($id // 0)) eq 'cancelled',
	"a submitter's operator in search_path never runs with the job table owner's rights") or diag("$out $err");
sq("DROP SCHEMA evil CASCADE; REVOKE CREATE ON DATABASE $db FROM bft_alice");
$node->stop;

# ---- the same cycle with bft in shared_preload_libraries (progress in shared memory)
$node = PostgreSQL::Test::Cluster->new('jobs_preload');
$node->init;
$node->append_conf('postgresql.conf', qq{
shared_preload_libraries = 'bft'
max_worker_processes = 3
bft.max_jobs = 8
bft.max_jobs_per_role = 8
});
if ($node->start(fail_ok => 1))
{
	setup_db();
	note('second cluster: shared_preload_libraries = ' . sq('SHOW shared_preload_libraries')
		  . ', max_worker_processes = ' . sq('SHOW max_worker_processes'));
	basic_cycle('preloaded');
	no_worker();
	# Out of worker slots (the logical replication launcher holds one): a clear error, nothing queued.
	my $j1 = sq("SELECT bft_train_async('h', 't', 'l', epochs => 90000, model => 'slot1', architecture => '$arch')");
	my $j2 = sq("SELECT bft_train_async('h', 't', 'l', epochs => 90000, model => 'slot2', architecture => '$arch')");
	my ($ok3, $o3, $e3) = (0, '', '');
	IPC::Run::run([ 'psql', '-X', '-q', '-t', '-A', '-v', 'VERBOSITY=verbose', '-d', $node->connstr($db),
			'-c', "SELECT bft_train_async('h', 't', 'l', model => 'slot3')" ],
		'<', \undef, '>', \$o3, '2>', \$e3);
	ok( "$o3$e3" =~ /53400/
		  && "$o3$e3" =~ /could not start a background worker/
		  && sq("SELECT count(*) FROM bft.train_jobs WHERE model = 'slot3'") eq '0',
		'no free worker slot: bft_train_async fails at once (53400) and queues nothing') or diag("$j1 $j2 $o3 $e3");
	sq("SELECT bft_cancel_job($j1), bft_cancel_job($j2)");
	wait_state($j2, 'cancelled', 10);
	$node->stop;
}
else
{
	fail('could not start a cluster with bft preloaded');
}

done_testing();
