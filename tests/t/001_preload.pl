# bft in shared_preload_libraries: the postmaster stays single-threaded (BLAS
# and engine threads start lazily in the backend that needs them),
# bft.progress uses shared memory (no status files), a training's progress is
# visible from another session and disappears when it ends, and
# classification works.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

# number of threads of process $pid
sub threads
{
	my ($pid) = @_;
	opendir(my $d, "/proc/$pid/task") or return 0;
	my $n = grep { !/^\./ } readdir($d);
	closedir($d);
	return $n;
}

my $node = PostgreSQL::Test::Cluster->new('preload');
$node->init;
$node->append_conf('postgresql.conf', "shared_preload_libraries = 'bft'");
$node->start;

my ($pm) = split /\n/, slurp_file($node->data_dir . '/postmaster.pid');
is(threads($pm), 1, 'postmaster with bft preloaded has one thread');

$node->safe_psql('postgres', q{
	CREATE EXTENSION bft;
	CREATE TABLE tw AS
	SELECT md5(i::text) || ' ' || (ARRAY['stocks rally','bank cuts rates','oil prices fall'])[1 + i % 3] AS text,
	       i % 3 AS label FROM generate_series(1, 3000) i;
});

# a long training in another session
my $bg = $node->background_psql('postgres', on_error_stop => 0);
$bg->query_until(qr/started/, q{
	\echo started
	SET bft.threads = 2;
	SELECT version FROM bft_train('tw', 'text', 'label', 3, max_length => 32, mlm_epochs => 0);
});
ok( $node->poll_query_until('postgres',
		"SELECT count(*) > 0 FROM bft.progress WHERE model = 'tw' AND phase = 'training' AND step > 0"),
	'bft.progress shows the training from another session');
my $pid = $node->safe_psql('postgres', "SELECT pid FROM bft.progress WHERE model = 'tw'");
cmp_ok(threads($pid), '>', 1, 'the training backend started its worker threads');
ok(!grep({ /bft_progress/ } glob($node->data_dir . '/pg_stat_tmp/*')),
	'no progress files: shared memory is used');
is(threads($pm), 1, 'postmaster still has one thread while a backend trains');
$node->safe_psql('postgres', "SELECT pg_cancel_backend($pid)");
ok($node->poll_query_until('postgres', 'SELECT count(*) = 0 FROM bft.progress'),
	'progress slot freed after the cancel');
$bg->quit;

my $v = $node->safe_psql('postgres', q{
	SET client_min_messages = warning;
	SELECT version FROM bft_train('tw', 'text', 'label', 1, mlm_epochs => 0,
		architecture => '{"hidden_size": 16, "num_hidden_layers": 1, "num_attention_heads": 2,
		                  "intermediate_size": 32, "vocab_size": 300}');
});
is($v, '1', 'a training completes');
is($node->safe_psql('postgres', "SELECT bft_classify('bank cuts rates') IS NOT NULL"), 't',
	'classification works');
is($node->safe_psql('postgres', 'SELECT count(*) FROM bft.progress'), '0',
	'no progress rows after the training');
is(threads($pm), 1, 'postmaster still has one thread');

$node->stop;
done_testing();
