# bft models travel between databases and clusters.
#
# A source database holds two versions of a trained model (the older one
# deployed), a cased model, an imported classifier and an imported MLM model.
# Then:
#  - pg_dump custom format (large objects included) restored with pg_restore
#    into a new database on the same cluster and into a second cluster, and
#    plain format restored with psql into the second cluster: the model rows,
#    the weights' bytes, the deployed versions, the default model and every
#    probability / fill-mask score / token are identical; the restored
#    database trains a next version and drops models (unlinking their large
#    objects) normally;
#  - a partial dump (-e bft -t docs) with -b restores identically; one
#    without large objects (-B) gives a clear 42704 error when classifying;
#  - a long-lived session notices that model id 1 is another model after
#    DROP/CREATE EXTENSION and a new training (ids restart);
#  - bft_export_model to a server directory on the source and
#    bft_import_model(name, directory) on the second cluster;
#  - client-side: \lo_export of bft_copy_weights() + the row's config and
#    vocabulary into files, then the four psql lines (\lo_import, two \set,
#    one SELECT bft_import_model) on the second cluster; and the same files as
#    a directory for bft_import_model(name, directory);
#    all classify identically.
use strict;
use warnings;
use Cwd qw(abs_path);
use IPC::Run;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use BftTest;

my $D = PostgreSQL::Test::Utils::tempdir();
my ($src, $copy) = ('bft_dump_src', 'bft_dump_copy');
my $arch = '{"hidden_size":32,"num_hidden_layers":1,"num_attention_heads":2,"intermediate_size":64,'
  . '"vocab_size":200,"max_position_embeddings":64}';
(my $cased_arch = $arch) =~ s/\}$/, "do_lower_case": false}/;
my $ckpt = abs_path('tests/data/ckpt');

my $a = PostgreSQL::Test::Cluster->new('a');
$a->init;
$a->start;
my $b = PostgreSQL::Test::Cluster->new('b');
$b->init;
$b->start;

# the output of some -c commands on a node's database, errors included
sub qry
{
	my ($node, $db, @cmds) = @_;
	my ($ok, $out, $err) = psql_cmds($node, $db, \@cmds);
	return $err eq '' ? $out : "$out\n$err";
}
sub run_ok { my $ok = eval { IPC::Run::run(@_) }; return $ok ? 1 : 0; }

# ---- source database ---------------------------------------------------------
$a->safe_psql('postgres', "CREATE DATABASE $src");
my $setup = qry($a, $src, 'CREATE EXTENSION bft', 'SET client_min_messages = warning; SET bft.threads = 1;
	CREATE TABLE docs AS
	SELECT i AS id,
	       (ARRAY[\'central bank raises interest rates\', \'shares rally as profit beats forecast\',
	              \'team wins the championship final\', \'oil prices fall on weak demand\'])[1 + i % 4]
	       || \' \' || (ARRAY[\'today\', \'again\', \'this week\', \'sharply\', \'in march\'])[1 + i % 5] AS body,
	       (ARRAY[\'economy\', \'markets\', \'sports\', \'markets\'])[1 + i % 4] AS label
	  FROM generate_series(1, 60) i',
	"SET client_min_messages = warning; SET bft.threads = 1;
	 SELECT version FROM bft_train('docs', 'body', 'label', epochs => 15, model => 'topics', seed => 1, mlm_epochs => 1,
	        batch_size => 8, learning_rate => 2e-3, max_length => 32, architecture => '$arch')",
	"SET client_min_messages = warning; SET bft.threads = 1;
	 SELECT version FROM bft_train('docs', 'body', 'label', epochs => 15, model => 'topics', seed => 2, mlm_epochs => 1,
	        batch_size => 8, learning_rate => 3e-3, max_length => 32, architecture => '$arch')",
	"SELECT version FROM bft_import_model('tiny', '$ckpt/tiny')",
	"SELECT version FROM bft_import_model('tiny_mlm', '$ckpt/tiny_mlm')",
	"SET client_min_messages = warning; SET bft.threads = 1;
	 SELECT version FROM bft_train('docs', 'body', 'label', epochs => 3, model => 'cased', batch_size => 8,
	        max_length => 32, architecture => '$cased_arch')",
	"SELECT bft_deploy('topics', 1)");
is( qry($a, $src, q{SELECT string_agg(name || ':' || version, ',' ORDER BY name, version) FROM bft.models}),
	'cased:1,tiny:1,tiny_mlm:1,topics:1,topics:2',
	'source: topics v1+v2 (v1 deployed), a cased model, tiny and tiny_mlm imported')
  or diag($setup);

# everything that must survive a move, one text blob
sub snapshot
{
	my ($node, $db) = @_;
	return qry($node, $db,
		q{SELECT id, name, version, base, labels, has_mlm, config, tokenizer_config, md5(vocab), size,
		         params, metrics, created_at, deployed_at FROM bft.models ORDER BY id},
		'SELECT name, version, deployed FROM bft.model_list',
		'SELECT name, version, md5(lo_get(weights)) FROM bft.models ORDER BY id',
		'SELECT (SELECT count(*) FROM pg_largeobject_metadata), (SELECT count(*) FROM bft.models)',
		q{SELECT id, bft_predict_proba(body, 'topics'), bft_predict_proba(body, 'tiny'), bft_classify(body)
		    FROM docs ORDER BY id},
		q{SELECT * FROM bft_fill_mask('central bank [MASK] interest rates', 5, 'topics')},
		q{SELECT * FROM bft_fill_mask('the [MASK] sat on the mat', 5, 'tiny_mlm')},
		q{SELECT * FROM bft_tokenize('Team wins the Championship!', 'tiny')});
}
my $s0 = snapshot($a, $src);
ok($s0 ne '' && $s0 !~ /ERROR/, 'source snapshot (rows, weights md5, probabilities, fill-mask, tokens)');

# ---- pg_dump / pg_restore ------------------------------------------------------
my $err = '';
run_ok([ 'pg_dump', '-Fc', '-f', "$D/src.dump", '-d', $a->connstr($src) ], '2>', \$err);
ok(-s "$D/src.dump" && $err eq '', 'pg_dump -Fc');
my $list = '';
run_ok([ 'pg_restore', '-l', "$D/src.dump" ], '>', \$list);
my $nblob = () = $list =~ / (BLOB|LARGE OBJECT) /g;
cmp_ok($nblob, '>=', 4, "the custom dump lists the large objects ($nblob)");
run_ok([ 'pg_dump', '-Fp', '-f', "$D/src.sql", '-d', $a->connstr($src) ], '2>', \$err);
ok(-s "$D/src.sql" && slurp_file("$D/src.sql") =~ /lo_open/, 'pg_dump -Fp (plain, with large-object data)');

# same cluster, new database
$a->safe_psql('postgres', "CREATE DATABASE $copy");
my $log = '';
ok(run_ok([ 'pg_restore', '--exit-on-error', '-d', $a->connstr($copy), "$D/src.dump" ], '>&', \$log),
	'pg_restore into a new database on the same cluster')
  or diag($log);
is(snapshot($a, $copy), $s0, 'same cluster: restored models classify identically');

# second cluster
$b->safe_psql('postgres', 'CREATE DATABASE fromcustom; CREATE DATABASE fromplain; CREATE DATABASE xfer');
ok(run_ok([ 'pg_restore', '--exit-on-error', '-d', $b->connstr('fromcustom'), "$D/src.dump" ], '>&', \$log),
	'pg_restore -Fc into a second cluster')
  or diag($log);
is(snapshot($b, 'fromcustom'), $s0, 'second cluster, custom format: restored models classify identically');
my ($ok, $out);
($ok, $out, $err) = psql_cmds($b, 'fromplain', [], file => "$D/src.sql");
ok($ok, 'plain dump restored with psql into a second cluster') or diag($err);
is(snapshot($b, 'fromplain'), $s0, 'second cluster, plain format: restored models classify identically');

# Partial dumps: -e bft -t docs needs -b for the weights; without them the
# rows come back weightless and classification says so (42704), no crash.
$b->safe_psql('postgres', 'CREATE DATABASE partial; CREATE DATABASE noblobs');
run_ok([ 'pg_dump', '-e', 'bft', '-t', 'docs', '-b', '-Fc', '-d', $a->connstr($src) ], '|',
	[ 'pg_restore', '--exit-on-error', '-d', $b->connstr('partial') ], '>&', \$log);
is(snapshot($b, 'partial'), $s0, 'pg_dump -e bft -t docs -b (partial, with large objects): identical');
run_ok([ 'pg_dump', '-B', '-Fc', '-d', $a->connstr($src) ], '|',
	[ 'pg_restore', '--exit-on-error', '-d', $b->connstr('noblobs') ], '>&', \$log);
(undef, $out, $err) = psql_cmds($b, 'noblobs', [], stdin => "\\set VERBOSITY verbose\nSELECT bft_classify('x', 'topics');\n");
ok( $err =~ /ERROR:  42704: weights of model "topics" \(large object \d+\) do not exist/
	  && qry($b, 'noblobs', 'SELECT 1') eq '1',
	'pg_dump -B (no large objects): a clear 42704 error naming the missing weights')
  or diag($err);

# A session that cached a model before the database's models were replaced
# (DROP/CREATE EXTENSION and a new training, as before restoring another dump
# into it): model ids start again at 1, yet its next statement uses the new model.
my $probe1 = q{SELECT bft_predict_proba(body, 'topics') FROM docs WHERE id = 1};
my $bg = $b->background_psql('fromplain');
my $before = $bg->query_safe($probe1);
my $replaced = qry($b, 'fromplain', 'SET client_min_messages = warning; DROP EXTENSION bft CASCADE',
	'CREATE EXTENSION bft',
	"SET client_min_messages = warning;
	 SELECT version FROM bft_train('docs', 'body', 'label', epochs => 15, model => 'topics', seed => 7, batch_size => 8,
	        learning_rate => 3e-3, max_length => 32, architecture => '$arch')",
	q{SELECT 'id:' || id FROM bft.models});
my $after = $bg->query_safe($probe1);
$bg->quit;
my $fresh = qry($b, 'fromplain', $probe1);
note("before: $before; after: $after; fresh: $fresh; replacement: $replaced");
ok( scalar(grep { $_ eq 'id:1' } split /\n/, $replaced) == 1 && $after eq $fresh && $before ne $fresh,
	'a long-lived session notices that model id 1 is a different model after DROP/CREATE EXTENSION');

# the restored database keeps working: a next version, and drops unlink large objects
$out = qry($b, 'fromcustom',
	"SET client_min_messages = warning;
	 SELECT version FROM bft_train('docs', 'body', 'label', epochs => 2, model => 'topics', seed => 3,
	        batch_size => 8, max_length => 32, architecture => '$arch')",
	q{SELECT bft_drop_model('tiny')},
	q{SELECT (SELECT count(*) FROM bft.models) || ' ' || (SELECT count(*) FROM pg_largeobject_metadata)
	         || ' ' || (SELECT max(id) FROM bft.models)});
is(join(' ', split /\n/, $out), '3 1 5 5 6',
	'restored database trains version 3 (id 6) and bft_drop_model unlinks');

# ---- export on one cluster, import on another ---------------------------------
my $proba = q{SELECT id, bft_predict_proba(body, '%s') FROM docs ORDER BY id};
my $src_topics = qry($a, $src, sprintf($proba, 'topics'));
qry($b, 'xfer', 'CREATE EXTENSION bft', 'CREATE TABLE docs (id int, body text, label text)');
run_ok([ 'psql', '-X', '-q', '-d', $a->connstr($src), '-c', 'COPY docs TO STDOUT' ], '|',
	[ 'psql', '-X', '-q', '-d', $b->connstr('xfer'), '-c', 'COPY docs FROM STDIN' ]);
like(qry($a, $src, "SELECT bft_export_model('topics', '$D/export_topics')"),
	qr/^1\nNOTICE:  model "topics" version 1 has an n-gram head: model.safetensors holds it as the bft_ngram.* tensors/,
	'bft_export_model writes the deployed version (1) to a server directory, with a NOTICE on its n-gram head');
qry($a, $src, "SELECT bft_export_model('tiny_mlm', '$D/export_mlm')");
qry($b, 'xfer', "SELECT version FROM bft_import_model('topics', '$D/export_topics')",
	"SELECT version FROM bft_import_model('tiny_mlm', '$D/export_mlm')");
ok($src_topics ne '' && qry($b, 'xfer', sprintf($proba, 'topics')) eq $src_topics,
	'bft_import_model(name, directory) on the second cluster: identical probabilities');
my $fm = q{SELECT * FROM bft_fill_mask('the [MASK] sat on the mat', 5, 'tiny_mlm')};
is(qry($b, 'xfer', $fm), qry($a, $src, $fm), 'exported/imported MLM model: identical fill-mask');

# client side: \lo_export + the row's config and vocabulary, then four psql lines
sub lo_export_files    # what a client can do with psql alone
{
	my ($model, $dir) = @_;
	my $row = "FROM bft.models WHERE name = '$model' ORDER BY deployed_at DESC NULLS LAST, version DESC LIMIT 1";
	mkdir $dir;
	psql_cmds($a, $src, [], stdin => "SELECT bft_copy_weights('$model') AS w \\gset
\\lo_export :w '$dir/model.safetensors'
\\lo_unlink :w
");
	append_to_file("$dir/config.json", qry($a, $src, "SELECT config $row") . "\n");
	append_to_file("$dir/vocab.txt", qry($a, $src, "SELECT vocab $row"));
	append_to_file("$dir/tokenizer_config.json", qry($a, $src, "SELECT tokenizer_config $row") . "\n");
}
lo_export_files('topics', "$D/lo");
lo_export_files('cased', "$D/lo_cased");
my $row = "FROM bft.models WHERE name = 'topics' ORDER BY deployed_at DESC NULLS LAST, version DESC LIMIT 1";
ok(-s "$D/lo/model.safetensors" && -s "$D/lo/model.safetensors" == qry($a, $src, "SELECT size $row"),
	'\lo_export of the weights gives the stored safetensors bytes');
append_to_file("$D/lo_import.sql", "\\lo_import '$D/lo/model.safetensors'
\\set config `cat '$D/lo/config.json'`
\\set vocab `cat '$D/lo/vocab.txt'`
SELECT version FROM bft_import_model('topics_lo', :'config', :'vocab', :LASTOID);
\\lo_unlink :LASTOID
-- a cased model also needs its tokenizer_config (the default lower-cases, as Hugging Face)
\\lo_import '$D/lo_cased/model.safetensors'
\\set config `cat '$D/lo_cased/config.json'`
\\set vocab `cat '$D/lo_cased/vocab.txt'`
\\set tokcfg `cat '$D/lo_cased/tokenizer_config.json'`
SELECT version FROM bft_import_model('cased', :'config', :'vocab', :LASTOID, :'tokcfg');
SELECT version FROM bft_import_model('cased_no_tokcfg', :'config', :'vocab', :LASTOID);
\\lo_unlink :LASTOID
");
($ok, $out, $err) = psql_cmds($b, 'xfer', [], file => "$D/lo_import.sql");
ok($ok, 'the four psql lines import the model on the second cluster') or diag($err);
is(qry($b, 'xfer', sprintf($proba, 'topics_lo')), $src_topics, '\lo_export -> \lo_import model: identical probabilities');
my $tok = q{SELECT string_agg(token, ' ') FROM bft_tokenize('Team WINS the Final', '%s')};
ok( qry($b, 'xfer', sprintf($tok, 'cased')) eq qry($a, $src, sprintf($tok, 'cased'))
	  && qry($b, 'xfer', sprintf($proba, 'cased')) eq qry($a, $src, sprintf($proba, 'cased')),
	'cased model with its tokenizer_config (5th argument): identical tokens and probabilities');
isnt(qry($b, 'xfer', sprintf($tok, 'cased_no_tokcfg')), qry($a, $src, sprintf($tok, 'cased')),
	'without the tokenizer_config a cased model lower-cases (the Hugging Face default), as documented');
is(qry($b, 'xfer', 'SELECT count(*) FROM pg_largeobject_metadata'), '5',
	'the uploaded large objects were unlinked; the stored copies remain (5)');
qry($b, 'xfer', "SELECT version FROM bft_import_model('topics_lodir', '$D/lo')");
is(qry($b, 'xfer', sprintf($proba, 'topics_lodir')), $src_topics,
	"the \\lo_export'ed files as a directory: bft_import_model(name, directory) classifies identically");

$b->stop;
$a->stop;
done_testing();
