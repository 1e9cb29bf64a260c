# Many failed and cancelled trainings in ONE backend must not grow its
# memory: engine objects (models with gradients and AdamW state, tokenizers,
# vocabulary trainers, serialised weights) are freed on every error path —
# statement_timeout in the middle of training, an error when the version is
# stored (a trigger on bft.models), errors caught in a PL/pgSQL exception
# block (subtransaction), bad data, corrupt weights. Memory is read from the
# backend itself: its private resident memory (RssAnon in /proc/self/status;
# VmRSS also counts the shared buffers the backend touches, which grow with
# every stored or rolled-back large object until shared_buffers is covered)
# and the total of pg_backend_memory_contexts.
#
# BFT_FAILED_N (default 10) measured rounds after BFT_FAILED_WARMUP (6).
use strict;
use warnings;
use IPC::Run;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $n = $ENV{BFT_FAILED_N} // 10;
my $w = $ENV{BFT_FAILED_WARMUP} // 6;

my $node = PostgreSQL::Test::Cluster->new('failed');
$node->init;
$node->start;
my $db = 'bft_failed';
$node->safe_psql('postgres', "CREATE DATABASE $db");
$node->safe_psql($db, q{
CREATE EXTENSION bft;
CREATE TABLE big AS
  SELECT md5(i::text) || ' ' || (ARRAY['stocks rally','bank cuts rates','oil prices fall'])[1 + i % 3] AS text,
         i % 3 AS label FROM generate_series(1, 3000) i;
CREATE TABLE small AS SELECT text, label FROM big LIMIT 60;
CREATE TABLE one_class AS SELECT text, 1 AS label FROM big LIMIT 20;
-- storing a version named 'fail_late' fails after training finished
CREATE FUNCTION fail_late() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.name = 'fail_late' THEN RAISE EXCEPTION 'refusing to store %', NEW.name; END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER fail_late BEFORE INSERT ON bft.models FOR EACH ROW EXECUTE FUNCTION fail_late();
-- a model with corrupt weights
SET client_min_messages = warning;
SELECT version FROM bft_train('small', 'text', 'label', 1, model => 'corrupt',
  mlm_epochs => 0, architecture => '{"hidden_size": 16, "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 32, "vocab_size": 200}');
SELECT lo_put(weights, 0, '\xffffffffffffffff'::bytea) FROM bft.models WHERE name = 'corrupt';
CREATE FUNCTION try_late() RETURNS text LANGUAGE plpgsql AS $$
BEGIN
    PERFORM bft_train('small', 'text', 'label', 1, model => 'fail_late', mlm_epochs => 0);
    RETURN 'ok';
EXCEPTION WHEN OTHERS THEN
    RETURN SQLSTATE;
END $$;
CREATE TABLE mem (phase text, rss_kb bigint, ctx_bytes bigint);
});

my $round = q{
SET statement_timeout = '1500ms';
SELECT * FROM bft_train('big', 'text', 'label', 50, max_length => 64, model => 'timeout', mlm_epochs => 0);
RESET statement_timeout;
SELECT * FROM bft_train('small', 'text', 'label', 1, model => 'fail_late', mlm_epochs => 0);
SELECT try_late();
SELECT * FROM bft_train('one_class', 'text', 'label', 1);
SELECT bft_classify('stocks rally', 'corrupt');
SELECT * FROM bft_train('small', 'text', 'label', 1, base => 'corrupt');
};
sub measure
{
	my ($phase) = @_;
	return "INSERT INTO mem SELECT '$phase', (regexp_match(pg_read_file('/proc/self/status'), 'RssAnon:\\s+(\\d+)'))[1]::bigint, "
	  . "(SELECT sum(total_bytes) FROM pg_backend_memory_contexts);\n";
}
# warm-up: the allocator and OpenBLAS reach their steady state
my $script = "SET client_min_messages = warning;\n" . ($round x $w) . measure('warm') . ($round x $n) . measure('after')
  . "SET client_min_messages = notice;\n"
  . "SELECT phase, rss_kb, ctx_bytes FROM mem ORDER BY phase DESC;\n";

# one psql session, one backend; errors do not stop the script
my ($log, $t0) = ('', time);
IPC::Run::run([ 'psql', '-X', '-d', $node->connstr($db) ], '<', \$script, '>', \$log, '2>&1');
note(($n + $w) . ' rounds of 6 failing statements (timeout mid-training, error at store, same in a subtransaction, '
	  . 'one class, corrupt weights x2) in one backend: ' . (time - $t0) . ' s');

sub count_matches { my ($re) = @_; my @m = ($log =~ /$re/g); return scalar @m; }
my $nto = count_matches(qr/canceling statement due to statement timeout/);
my $nlate = count_matches(qr/refusing to store fail_late/);
my $ncls = count_matches(qr/have the same label/);
my $ncorrupt = count_matches(qr/could not load model "corrupt"/);
my $nsub = count_matches(qr/^ P0001$/m);
is($nto, $n + $w, "every timeout cancelled a training ($nto)");
is($nlate, $n + $w, "every late failure happened at store time ($nlate)");
is($nsub, $n + $w, "every subtransaction failure was caught ($nsub)");
is($ncls, $n + $w, "every one-class training failed ($ncls)");
is($ncorrupt, 2 * ($n + $w), "every corrupt-weights load failed ($ncorrupt)");

my $mem = $node->safe_psql($db, 'SELECT phase, rss_kb, ctx_bytes FROM mem ORDER BY phase DESC');
note("phase|rss_kb|ctx_bytes\n$mem");
my $growth = $node->safe_psql($db,
	"SELECT (SELECT rss_kb FROM mem WHERE phase = 'after') - (SELECT rss_kb FROM mem WHERE phase = 'warm')");
my $ctx = $node->safe_psql($db,
	"SELECT (SELECT ctx_bytes FROM mem WHERE phase = 'after') - (SELECT ctx_bytes FROM mem WHERE phase = 'warm')");
# The model trained in each round (2 layers x 128 from scratch on 60 rows)
# holds ~2.5 MB of weights and twice that in AdamW state: leaking it at
# store time adds ~75 MB over 10 rounds; a leak of 0.1 MB per failing
# statement adds 6 MB. Without a leak the private memory varies by well
# under 1 MB (allocator and OpenBLAS state).
ok($growth ne '' && $growth < 4096, "backend private memory grew by less than 4 MB over $n rounds (${growth} kB)");
ok($ctx ne '' && $ctx < 262144, "memory contexts grew by less than 256 kB (${ctx} bytes)");
is($node->safe_psql($db, 'SELECT count(*) FROM bft.models'), '1', 'only the setup model is stored');
is($node->safe_psql($db, 'SELECT count(*) FROM pg_largeobject_metadata'), '1', 'no stray large objects');

done_testing();
