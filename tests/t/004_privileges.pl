# bft runs as the calling user. A non-superuser with only the documented
# GRANTs (README "Privileges": table privileges on bft.models plus EXECUTE on
# the functions revoked from PUBLIC) trains on its own table and classifies;
# a role without SELECT on a table cannot train on it; row-level security
# limits the rows a training reads; SELECT on bft.models is what
# classification needs (the weights' large object ACL is not); server files
# need the pg_*_server_files roles. (Attacks: tests/scripts/test_security.sh.)
use strict;
use warnings;
use Cwd qw(abs_path);
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use BftTest;

$ENV{PGOPTIONS} = '-c client_min_messages=warning';
my $node = PostgreSQL::Test::Cluster->new('privileges');
$node->init;
$node->start;
my $db = 'bft_priv';
my $su = $node->safe_psql('postgres', 'SELECT current_user');
my $tiny = q|mlm_epochs => 0, architecture => '{"hidden_size": 16, "num_hidden_layers": 1, |
  . q|"num_attention_heads": 2, "intermediate_size": 32, "vocab_size": 200}'|;
my $ckpt = abs_path('tests/data/ckpt/tiny');
my $export_dir = PostgreSQL::Test::Utils::tempdir() . '/bft_priv_export';

$node->safe_psql('postgres', qq{
	CREATE DATABASE $db;
	CREATE ROLE bft_trainer LOGIN; CREATE ROLE bft_reader LOGIN;
	CREATE ROLE bft_outsider LOGIN; CREATE ROLE bft_nobody LOGIN;
});
$node->safe_psql($db, q{
	CREATE EXTENSION bft;
	GRANT CREATE ON SCHEMA public TO bft_trainer;
	-- The documented GRANTs (README "Privileges"):
	-- to train: store models
	GRANT SELECT, INSERT ON bft.models TO bft_trainer, bft_outsider;
	GRANT USAGE ON SEQUENCE bft.models_id_seq TO bft_trainer, bft_outsider;
	GRANT EXECUTE ON FUNCTION bft_train, bft_train_async, bft_import_model(text, text),
	      bft_import_model(text, jsonb, text, oid, jsonb) TO bft_trainer, bft_outsider;
	-- to deploy/roll back and drop
	GRANT UPDATE (deployed_at), DELETE ON bft.models TO bft_trainer;
	GRANT EXECUTE ON FUNCTION bft_deploy, bft_drop_model TO bft_trainer;
	-- to export (with pg_write_server_files) and copy weights
	GRANT EXECUTE ON FUNCTION bft_export_model, bft_copy_weights TO bft_trainer;
	-- to classify
	GRANT SELECT ON bft.models TO bft_reader;
});

# as(role, sql): the ERROR line, or the last line of output
sub as
{
	my ($role, $sql) = @_;
	my ($ok, $out, $err) = psql_c($node, $db, $sql, user => $role);
	my ($e) = grep { /^ERROR:/ } split /\n/, $err;
	return $e if defined $e;
	my @lines = split /\n/, $out;
	return @lines ? $lines[-1] : '';
}
sub expect
{
	my ($role, $sql, $pattern, $desc) = @_;
	like(as($role, $sql), qr/$pattern/, $desc);
}
sub su { $node->safe_psql($db, $_[0]); }

# 1. A trainer with only those grants trains on its own table and classifies.
as('bft_trainer', q{CREATE TABLE mine (body text, tag text, owner name DEFAULT current_user);
	INSERT INTO mine (body, tag, owner)
	SELECT CASE WHEN i % 2 = 0 THEN 'sunny warm day' ELSE 'cold rainy night' END,
	       CASE WHEN i % 2 = 0 THEN 'fine' ELSE 'bad' END,
	       CASE WHEN i <= 30 THEN 'bft_trainer' ELSE 'someone_else' END FROM generate_series(1, 40) i});
expect('bft_trainer', "SELECT rows_used FROM bft_train('mine', 'body', 'tag', 20, batch_size => 4, learning_rate => 1e-3, $tiny)",
	'^40$', 'non-superuser trains on its own table');
expect('bft_trainer', "SELECT bft_classify('sunny warm day', 'mine')", '^fine$', 'trainer classifies with its model');
expect('bft_trainer', "SELECT created_by FROM bft.models WHERE name = 'mine'", '^bft_trainer$', 'created_by is the trainer');
expect('bft_trainer', 'SELECT count(*) FROM bft.model_list', '^1$', 'trainer sees the model list');
expect('bft_trainer', "SELECT version FROM bft_train('mine', 'body', 'tag', 1, $tiny)", '^2$',
	'trainer trains a second version');
expect('bft_trainer', "SELECT bft_deploy('mine', 1)", '^$', 'trainer with UPDATE (deployed_at) rolls back');

# 2. A reader with SELECT on bft.models classifies, though the weights' large
#    object belongs to the extension's owner (no large-object grant).
expect('bft_reader', "SELECT bft_classify('cold rainy night', 'mine')", '^bad$', 'reader classifies');
expect('bft_reader', "SELECT label FROM bft_predict('sunny warm day', 'mine')", '^fine$', 'reader predicts');
expect('bft_reader', "SELECT count(*) FROM bft_tokenize('sunny', 'mine')", '^3$', 'reader tokenizes');
expect('bft_reader', 'SELECT lo_get(weights) IS NOT NULL FROM bft.models LIMIT 1',
	'permission denied for large object', "reader cannot read the weights' large object directly");
expect('bft_trainer', 'SELECT lo_get(weights) IS NOT NULL FROM bft.models LIMIT 1',
	'permission denied for large object', "nor can the trainer: the weights belong to the extension's owner");
expect('bft_trainer', q{SELECT r.rolname FROM bft.models m JOIN pg_largeobject_metadata l ON l.oid = m.weights
	JOIN pg_roles r ON r.oid = l.lomowner WHERE m.name = 'mine' GROUP BY 1}, "^\Q$su\E\$",
	"weights are owned by the extension's owner");
expect('bft_trainer', q{CREATE TEMP TABLE c AS SELECT bft_copy_weights('mine', 1) AS o;
	SELECT length(lo_get(o)) = (SELECT size FROM bft.models WHERE name = 'mine' AND version = 1) FROM c},
	'^t$', 'bft_copy_weights gives the trainer its own copy to \lo_export');
expect('bft_reader', "SELECT bft_train('mine', 'body', 'tag', 1)", 'permission denied for function bft_train',
	'reader without EXECUTE cannot train');
expect('bft_reader', "SELECT bft_deploy('mine', 2)", 'permission denied for function bft_deploy', 'reader cannot deploy');
expect('bft_reader', "SELECT bft_drop_model('mine')", 'permission denied for function bft_drop_model', 'reader cannot drop');
su('GRANT EXECUTE ON FUNCTION bft_train, bft_deploy, bft_drop_model TO bft_reader');
expect('bft_reader', q{CREATE TEMP TABLE t AS SELECT 'a b'::text AS x, 'y'::text AS l; SELECT bft_train('t', 'x', 'l', 1)},
	'permission denied to store models in bft.models', 'reader with EXECUTE but without INSERT cannot train (fails fast)');
expect('bft_reader', "SELECT bft_deploy('mine', 2)", 'permission denied for table models', '... nor deploy (no UPDATE)');
expect('bft_reader', "SELECT bft_drop_model('mine')", 'permission denied for table models', '... nor drop (no DELETE)');
su('REVOKE EXECUTE ON FUNCTION bft_train, bft_deploy, bft_drop_model FROM bft_reader');
expect('bft_reader', 'SELECT count(*) FROM bft.models', '^2$', 'nothing changed');

# 3. A role with grants on bft.models but no SELECT on the table cannot train on it.
expect('bft_outsider', "SELECT bft_train('mine', 'body', 'tag', 1, model => 'stolen')",
	'permission denied for table mine', 'no SELECT on the table: no training');
expect('bft_outsider', "SELECT * FROM bft_evaluate('mine', 'mine', 'body', 'tag')",
	'permission denied for table mine', 'no SELECT on the table: no evaluation');
expect('bft_outsider', "SELECT count(*) FROM bft.models WHERE name = 'stolen'", '^0$', 'nothing stored');

# 4. A role without SELECT on bft.models cannot classify.
expect('bft_nobody', "SELECT bft_classify('sunny', 'mine')", 'permission denied for table models',
	'no SELECT on bft.models: no classification');
expect('bft_nobody', 'SELECT count(*) FROM bft.model_list', 'permission denied for table models',
	"model_list respects the caller's privileges (security_invoker)");

# 5. Row-level security applies to the rows a training reads.
as('bft_trainer', q{ALTER TABLE mine ENABLE ROW LEVEL SECURITY; ALTER TABLE mine FORCE ROW LEVEL SECURITY;
	CREATE POLICY own_rows ON mine USING (owner = current_user);
	GRANT SELECT ON mine TO bft_outsider});
expect('bft_trainer', "SELECT rows_used FROM bft_train('mine', 'body', 'tag', 1, model => 'rls', $tiny)", '^30$',
	"RLS: the trainer's training reads only its 30 visible rows");
expect('bft_outsider', "SELECT bft_train('mine', 'body', 'tag', 1, model => 'rls_out', $tiny)",
	'no rows with non-NULL text and label', 'RLS: another role sees no rows, training fails cleanly');
expect('bft_trainer', "SELECT rows FROM bft_evaluate('rls', 'mine', 'body', 'tag')", '^30$', 'RLS applies to bft_evaluate');

# 6. Server files need pg_read_server_files / pg_write_server_files.
expect('bft_trainer', "SELECT * FROM bft_import_model('tiny', '$ckpt')", 'permission denied to import',
	'import from a server directory needs pg_read_server_files');
expect('bft_trainer', "SELECT bft_export_model('mine', '$export_dir')", 'permission denied to export',
	'export to a server directory needs pg_write_server_files');
su('GRANT pg_read_server_files TO bft_trainer');
expect('bft_trainer', "SELECT version FROM bft_import_model('tiny', '$ckpt')", '^1$',
	'with pg_read_server_files the import works');

# 7. Models are shared by name: the reader cannot see rows hidden from it.
su(q{ALTER TABLE bft.models ENABLE ROW LEVEL SECURITY;
	CREATE POLICY own_models ON bft.models FOR SELECT USING (created_by = current_user OR name = 'mine');
	CREATE POLICY ins ON bft.models FOR INSERT WITH CHECK (true);
	CREATE POLICY upd ON bft.models FOR UPDATE USING (true);
	CREATE POLICY del ON bft.models FOR DELETE USING (true)});
expect('bft_reader', "SELECT bft_classify('sunny', 'rls')", 'model "rls" does not exist',
	'RLS on bft.models hides a model from classification');
expect('bft_reader', "SELECT bft_classify('sunny warm day', 'mine')", '^fine$', 'a visible model still classifies');

$node->stop;
done_testing();
