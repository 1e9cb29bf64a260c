# The classification path performs no writes at all.
#
#  - In an ordinary read-write transaction of a fresh backend (cold model
#    cache), each of bft_classify, bft_predict, bft_predict_proba,
#    bft_classify_batch, bft_fill_mask, bft_tokenize, bft_evaluate, bft_embed
#    and bft_embed_batch leaves no transaction id assigned (any row, large-object or catalog write would
#    assign one), and EXPLAIN (ANALYZE, WAL) of the statement, in another
#    fresh backend, counts zero WAL records in every plan node;
#  - the same functions run in BEGIN READ ONLY transactions and under
#    default_transaction_read_only = on, with the same results as read-write;
#  - bft_train, bft_import_model, bft_deploy and bft_drop_model are refused
#    there with SQLSTATE 25006, and nothing changes.
use strict;
use warnings;
use Cwd qw(abs_path);
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $node = PostgreSQL::Test::Cluster->new('readonly');
$node->init;
$node->start;
my $db = 'bft_readonly';
$node->safe_psql('postgres', "CREATE DATABASE $db");
$node->safe_psql($db, q{
	CREATE EXTENSION bft;
	CREATE TABLE docs AS
	SELECT i AS id,
	       (ARRAY['central bank raises interest rates', 'shares rally as profit beats forecast',
	              'team wins the championship final'])[1 + i % 3]
	       || ' ' || (ARRAY['today', 'again', 'this week', 'sharply'])[1 + i % 4] AS body,
	       (ARRAY['economy', 'markets', 'sports'])[1 + i % 3] AS label
	  FROM generate_series(1, 48) i;
});
my $v = $node->safe_psql($db, q{
	SET client_min_messages = warning;
	SELECT version FROM bft_train('docs', 'body', 'label', epochs => 10, model => 'topics',
		mlm_epochs => 1, batch_size => 8, learning_rate => 2e-3, max_length => 32,
		architecture => '{"hidden_size":32,"num_hidden_layers":1,"num_attention_heads":2,
		                  "intermediate_size":64,"vocab_size":200,"max_position_embeddings":64}');
});
is($v, '1', 'model trained');

# every function of the classification path
my @queries = (
	[ 'bft_classify', q{SELECT string_agg(bft_classify(body, 'topics'), ',' ORDER BY id) FROM docs} ],
	[ 'bft_classify (default model)', q{SELECT string_agg(bft_classify(body), ',' ORDER BY id) FROM docs} ],
	[ 'bft_predict', q{SELECT label, label_id, score FROM bft_predict('central bank raises rates', 'topics', 3)} ],
	[ 'bft_predict_proba',
		q{SELECT string_agg(bft_predict_proba(body, 'topics')::text, ';' ORDER BY id) FROM docs} ],
	[ 'bft_classify_batch', q{SELECT bft_classify_batch(array_agg(body ORDER BY id), 'topics') FROM docs} ],
	[ 'bft_fill_mask',
		q{SELECT token, token_id, score FROM bft_fill_mask('central bank [MASK] interest rates', 5, 'topics')} ],
	[ 'bft_tokenize', q{SELECT token, token_id FROM bft_tokenize('Team wins the Championship!', 'topics')} ],
	[ 'bft_evaluate', q{SELECT accuracy, macro_f1, rows, report FROM bft_evaluate('topics', 'docs', 'body', 'label')} ],
	[ 'bft_embed', q{SELECT string_agg(bft_embed(body, 'topics')::text, ';' ORDER BY id) FROM docs} ],
	[ 'bft_embed_batch',
		q{SELECT idx, embedding FROM bft_embed_batch((SELECT array_agg(body ORDER BY id) FROM docs), 'topics', 'cls+normalize')} ],
);

# 1. Read-write transaction, fresh backend (the model is loaded here): no xid
#    assigned, no WAL record written by the statement.
my %rw;
foreach my $q (@queries)
{
	my ($name, $sql) = @$q;
	my ($ret, $out, $err) = $node->psql($db,
		"BEGIN; $sql; SELECT 'xid:' || coalesce(pg_current_xact_id_if_assigned()::text, 'none'); COMMIT;");
	my @lines = split /\n/, $out;
	my $last = pop @lines;
	$rw{$name} = join("\n", @lines);
	ok($ret == 0 && $last eq 'xid:none' && $rw{$name} ne '',
		"$name: no transaction id assigned in a read-write transaction")
	  or diag("got: $out $err");
	my $plan = $node->safe_psql($db, "EXPLAIN (ANALYZE, WAL, FORMAT JSON, COSTS OFF, TIMING OFF) $sql");
	my @wal = ($plan =~ /"WAL Records": (\d+)/g);
	ok(@wal && !grep({ $_ != 0 } @wal),
		"$name: EXPLAIN (ANALYZE, WAL): 0 WAL records in all " . scalar(@wal) . ' plan nodes');
}

# Controls: both methods do see a write (a large object created and rolled back).
my $ctl = $node->safe_psql($db, q{
	BEGIN;
	SELECT lo_from_bytea(0, 'x') > 0;
	SELECT pg_current_xact_id_if_assigned() IS NOT NULL;
	ROLLBACK;
});
like($ctl, qr/t\nt$/, 'control: a large-object write does assign a transaction id');
my $wplan = $node->safe_psql($db, q{
	BEGIN;
	EXPLAIN (ANALYZE, WAL, FORMAT JSON, COSTS OFF, TIMING OFF) SELECT lo_from_bytea(0, 'x');
	ROLLBACK;
});
ok(grep({ $_ != 0 } ($wplan =~ /"WAL Records": (\d+)/g)),
	'control: EXPLAIN (ANALYZE, WAL) counts the records of a large-object write');

# 2. BEGIN READ ONLY, fresh backend: same results.
foreach my $q (@queries)
{
	my ($name, $sql) = @$q;
	my ($ret, $out) = $node->psql($db, "BEGIN READ ONLY; $sql; COMMIT;");
	ok($ret == 0 && $out ne '' && $out eq $rw{$name}, "$name: works in BEGIN READ ONLY, same result");
}

# 3. default_transaction_read_only = on for the database.
$node->safe_psql($db, "ALTER DATABASE $db SET default_transaction_read_only = on");
is($node->safe_psql($db, 'SHOW default_transaction_read_only'), 'on', 'new sessions default to read-only');
foreach my $q (@queries)
{
	my ($name, $sql) = @$q;
	my ($ret, $out) = $node->psql($db, $sql);
	ok($ret == 0 && $out ne '' && $out eq $rw{$name},
		"$name: works under default_transaction_read_only, same result");
}
# parallel workers in a read-only session
my ($pret, $pout) = $node->psql($db, q{
	SET parallel_setup_cost = 0; SET parallel_tuple_cost = 0; SET min_parallel_table_scan_size = 0;
	SELECT string_agg(bft_classify(body, 'topics'), ',' ORDER BY id) FROM docs;
});
is($pout, $rw{bft_classify}, 'bft_classify in a parallel plan under read-only, same result');

# writes are refused with 25006
my $ckpt = abs_path('tests/data/ckpt/tiny');
foreach my $w (
	[ 'bft_train', q{SELECT * FROM bft_train('docs', 'body', 'label', 1, model => 'x')} ],
	[ 'bft_import_model (directory)', "SELECT * FROM bft_import_model('x', '$ckpt')" ],
	[ 'bft_deploy', q{SELECT bft_deploy('topics', 1)} ],
	[ 'bft_drop_model', q{SELECT bft_drop_model('topics')} ])
{
	my ($name, $sql) = @$w;
	my ($ret, $out, $err) = $node->psql($db, $sql, extra_params => [ '-v', 'VERBOSITY=verbose' ]);
	like($err, qr/ERROR:  25006/, "$name refused with 25006");
}
is( $node->safe_psql($db,
		q{SELECT count(*) || ' ' || (SELECT count(*) FROM pg_largeobject_metadata) FROM bft.models}),
	'1 1', 'nothing changed: one model, one large object');

$node->stop;
done_testing();
