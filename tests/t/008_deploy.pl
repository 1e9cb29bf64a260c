# Deployment policy and rollback. deploy => 'if_better' deploys a better
# version, keeps a worse one and a tie undeployed, and records the decision
# and both scores in metrics; the deployed version's score is measured on the
# new run's validation rows (same seed: it equals that version's own
# validation accuracy); deploy => 'never' stores without deploying;
# bft_deploy(name, older_version) rolls back (classification follows, from
# the next statement), a rolled-back bft_deploy changes nothing; an if_better
# training does not deploy when the deployed version changed while it trained.
use strict;
use warnings;
use IPC::Run;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use BftTest;

# classification sessions use one BLAS thread and show warnings only
$ENV{PGOPTIONS} = '-c client_min_messages=warning -c bft.threads=1';
my $node = PostgreSQL::Test::Cluster->new('deploy');
$node->init;
$node->start;
my $db = 'bft_deploy';
$node->safe_psql('postgres', "CREATE DATABASE $db");
# Four topics; one row in five carries a wrong label, so no version is perfect
# and different row subsets score differently.
$node->safe_psql($db, q{
	CREATE EXTENSION bft;
	CREATE TABLE h AS
	SELECT (ARRAY['shares rally as profit beats forecast', 'stocks fall on weak earnings',
	              'team wins the championship final', 'coach fired after losing season'])[1 + i % 4]
	       || ' ' || (ARRAY['today', 'again', 'analysts say', 'reports', 'in march'])[1 + (i * 7) % 5] AS t,
	       (ARRAY['up', 'down', 'win', 'loss'])[1 + (CASE WHEN i % 5 = 0 THEN i + 1 + i / 5 ELSE i END) % 4] AS l
	  FROM generate_series(1, 200) i;
});
# the encoder alone (no n-gram head): its versions differ in quality by epochs and learning rate
my $arch = '{"hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2, '
  . '"intermediate_size": 64, "vocab_size": 300, "ngram_head": false}';

# one statement's output, errors included (as the caller sees them)
sub sq
{
	my ($sql) = @_;
	my ($ok, $out, $err) = psql_c($node, $db, $sql);
	return $ok ? $out : join("\n", grep { $_ ne '' } ($out, $err));
}

sub train_sql
{
	my ($epochs, $lr, $deploy) = @_;
	return "SELECT version FROM bft_train('h', 't', 'l', epochs => $epochs, learning_rate => $lr, "
	  . "deploy => '$deploy', model => 'm', validation_fraction => 0.25, dropout => 0, architecture => '$arch')";
}
sub train { return sq(train_sql(@_)); }    # the new version

my $probe = q{SELECT string_agg(bft_predict_proba(t, 'm')::text, ';' ORDER BY t) FROM (SELECT DISTINCT t FROM h) s};
sub deployed { return sq("SELECT version FROM bft.model_list WHERE name = 'm' AND deployed"); }
# policy|deployed|compared_version|new_accuracy|compared_accuracy
sub dec
{
	my ($v) = @_;
	return sq(
		"SELECT concat_ws('|', metrics->'deploy'->>'policy', metrics->'deploy'->>'deployed', metrics->'deploy'->>'compared_version',
		                  metrics->'deploy'->>'new_accuracy', metrics->'deploy'->>'compared_accuracy')
		   FROM bft.models WHERE name = 'm' AND version = $v");
}
sub field { my ($d, $i) = @_; return (split /\|/, $d, -1)[$i]; }

my $v1 = train(12, '2e-3', 'always');
my $p1 = sq($probe);
my $acc1 = sq("SELECT metrics->>'validation_accuracy' FROM bft.models WHERE name = 'm' AND version = 1");
note("v1 (12 epochs, lr 2e-3): validation accuracy $acc1");
ok($v1 eq '1' && deployed() eq '1', "deploy => 'always' deploys version 1") or diag($v1);

my $v2 = train(60, '3e-3', 'if_better');
my $d2 = dec(2);
my $p2 = sq($probe);
note("v2 decision: $d2   (policy|deployed|compared_version|new_accuracy|compared_accuracy)");
ok($v2 eq '2' && deployed() eq '2' && $d2 =~ /^if_better\|true\|1\|/,
	'if_better deploys a better version 2 (decision recorded)') or diag("$v2 $d2");
ok(field($d2, 3) ne '' && field($d2, 3) > field($d2, 4), 'metrics hold both scores, the new one higher');
ok(field($d2, 4) ne '' && abs(field($d2, 4) - $acc1) < 1e-6,
	"the deployed version was scored on the same validation rows (= its own validation accuracy $acc1)");

my $v3 = train(1, '1e-6', 'if_better');
my $d3 = dec(3);
note("v3 decision: $d3");
ok($v3 eq '3' && deployed() eq '2' && $d3 =~ /^if_better\|false\|2\|/ && field($d3, 3) < field($d3, 4),
	'if_better stores a worse version 3 without deploying it') or diag("$v3 $d3");
is(sq($probe), $p2, 'classification still uses version 2');

my $v4 = train(60, '3e-3', 'if_better');
my $d4 = dec(4);
note("v4 (same run as v2) decision: $d4");
ok($v4 eq '4' && deployed() eq '2' && $d4 =~ /^if_better\|false\|2\|/ && field($d4, 3) == field($d4, 4),
	'a tie (the same training again) is not deployed: it must beat the deployed version') or diag("$v4 $d4");

my $v5 = train(60, '3e-3', 'never');
ok( $v5 eq '5'
	  && deployed() eq '2'
	  && sq("SELECT metrics->'deploy'->>'deployed' FROM bft.models WHERE name = 'm' AND version = 5") eq 'false',
	"deploy => 'never' stores version 5 without deploying it") or diag($v5);

sq("SELECT bft_deploy('m', 1)");
ok(deployed() eq '1' && sq($probe) eq $p1, "rollback: bft_deploy('m', 1) makes version 1 classify again");
my ($sok, $out) = psql_cmds($node, $db,
	[ "SELECT count(*) FROM h WHERE bft_classify(t, 'm') IS NOT NULL", "SELECT bft_deploy('m', 2)", $probe ]);
$out = (split /\n/, $out)[-1] // '';
ok($sok && $out eq $p2 && deployed() eq '2',
	"one session: after bft_deploy('m', 2) its next statement uses version 2");
sq("BEGIN; SELECT bft_deploy('m', 1); ROLLBACK");
ok(deployed() eq '2' && sq($probe) eq $p2, 'a rolled-back bft_deploy changes nothing');
like(sq("SELECT bft_deploy('m', 99)"), qr/model "m" version 99 does not exist/,
	'bft_deploy of a missing version is an error');
is( sq("SELECT count(*) FROM bft.models WHERE name = 'm'") . '|'
	  . sq('SELECT count(*) FROM pg_largeobject_metadata'),
	'5|5', 'five versions, five large objects');

# The deployed version changes while an if_better training runs: no deploy.
sq("SELECT bft_deploy('m', 1)");
my ($bg_out, $bg_err) = ('', '');
my $bg = IPC::Run::start(
	[ 'psql', '-X', '-q', '-t', '-A', '-d', $node->connstr($db), '-c', train_sql(1500, '3e-3', 'if_better') ],
	'<', \undef, '>', \$bg_out, '2>', \$bg_err);
$node->poll_query_until($db,
	"SELECT count(*) > 0 FROM bft.progress WHERE model = 'm' AND phase = 'training' AND step > 0")
  or diag('the training did not show in bft.progress');
sq("SELECT bft_deploy('m', 5)");
$bg->finish;
my $d6 = dec(6);
my $changed = sq("SELECT metrics->'deploy'->>'deployed_version_changed_to' FROM bft.models WHERE name = 'm' AND version = 6");
note("v6 (deployed version changed from 1 to 5 during training): $d6|$changed");
ok(deployed() eq '5' && $d6 =~ /^if_better\|false\|1\|/ && $changed eq '5',
	'if_better does not deploy when the deployed version changed during training (recorded)')
  or diag("$d6 $changed $bg_out $bg_err");

done_testing();
