#!/usr/bin/env bash
# test_security: every attack on the model store, the job queue and the
# server's memory that the README's "Security" section rules out, tried as
# roles without the needed rights.  Each one must fail with a clear SQLSTATE
# (or do only what the role was granted), read nothing it should not (no
# output ever shows a secret large object's bytes), delete nothing, and leave
# the server up (the postmaster never restarts).  Sections:
#   1. large objects: forged/changed weights, direct large-object access,
#      exact unlinks on delete/TRUNCATE/DROP EXTENSION, malformed weights;
#   2. row-level security on bft.models: names, versions, drops, the model
#      cache across roles within one statement, parallel workers;
#   3. background jobs: checks at submission, caps, retention, cancel;
#   4. memory: bft.max_memory for architectures, batches, arrays, huge texts;
#   5. interrupts within 1 s: vocabulary learning (~1e6 distinct words),
#      initialising a large model, normalising a huge text, directory
#      imports of a FIFO or an oversized file;
#   6. privilege checks before work; 7. classification without the
#   vocabulary; 8. search_path, settings, threads and signals.
#
# Needs PGHOST/PGPORT/PGUSER (superuser) of a running cluster with bft and
# BFT_TMP (tests/run_all.sh sets both).  Prints "RESULT: P passed, F failed".
set -uo pipefail
cd "$(dirname "$0")/../.." || exit 1
source tests/scripts/cluster.sh # poll
set +e
DB=bft_sec
PASS=0; FAIL=0
ok()   { echo "ok   - $*"; PASS=$((PASS + 1)); }
fail() { echo "FAIL - $*"; FAIL=$((FAIL + 1)); }
check() { if eval "$1"; then ok "$2"; else fail "$2"; fi; }
TMP="${BFT_TMP:-/tmp}/security"
rm -rf "$TMP"; mkdir -p "$TMP"; chmod 755 "$TMP"
[ "$(id -u)" -eq 0 ] && chown "$(cluster_user)": "$TMP"
LOG="$TMP/all_output.log"   # everything any attack printed (checked for leaks at the end)
: >"$LOG"
export PGOPTIONS="-c client_min_messages=warning -c bft.threads=1"
ROLES="sec_trainer sec_trainer2 sec_reader sec_classifier sec_nobody sec_victim sec_ins sec_sel sec_super"

# q SQL: as the superuser, unaligned tuples, errors included.
q() { psql -X -q -t -A -d "$DB" -c "$1" 2>&1; }
# as ROLE SQL...: run SQL as ROLE (verbose errors: "ERROR:  42501: ..."); prints
# the first ERROR line, or else the last output line. Everything goes to $LOG.
as() {
    local role="$1" out; shift
    local args=()
    for s in "$@"; do args+=(-c "$s"); done
    out=$(psql -X -q -t -A -v VERBOSITY=verbose -U "$role" -d "$DB" "${args[@]}" 2>&1)
    printf '%s\n' "$out" >>"$LOG"
    # (grep reads a here-string: with pipefail, "echo | grep -q" fails when grep
    # exits before echo has written everything)
    if grep -q '^ERROR:' <<<"$out"; then grep -m 1 '^ERROR:' <<<"$out"; else tail -n 1 <<<"$out"; fi
}
# expect ROLE SQL PATTERN DESCRIPTION
expect() {
    local out; out=$(as "$1" "$2")
    if grep -Eq -- "$3" <<<"$out"; then ok "$4"; else fail "$4 (got: $out)"; fi
}
now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", b - a }'; }
within() { awk -v l="$1" -v m="$2" 'BEGIN { exit !(l <= m) }'; }

psql -X -q -d postgres <<SQL >/dev/null 2>&1
SET client_min_messages = warning;
DROP DATABASE IF EXISTS $DB;
DROP DATABASE IF EXISTS ${DB}2;
$(for r in $ROLES; do echo "DROP ROLE IF EXISTS $r;"; done)
SQL
psql -X -q -d postgres -v ON_ERROR_STOP=1 <<SQL || { echo "RESULT: 0 passed, 1 failed"; exit 1; }
SET client_min_messages = warning;
CREATE DATABASE $DB;
$(for r in $ROLES; do echo "CREATE ROLE $r LOGIN;"; done)
SQL
START=$(q "SELECT pg_postmaster_start_time()" | head -n 1)
ARCH='{"hidden_size": 16, "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 32, "vocab_size": 200}'
TINY="mlm_epochs => 0, architecture => '$ARCH'"

psql -X -q -d "$DB" -v ON_ERROR_STOP=1 >"$TMP/setup.log" 2>&1 <<SQL || { cat "$TMP/setup.log"; echo "RESULT: 0 passed, 1 failed"; exit 1; }
SET client_min_messages = warning;
CREATE EXTENSION bft;
CREATE TABLE docs AS
SELECT i AS id, (ARRAY['central bank raises interest rates', 'shares rally as profit beats forecast',
                       'team wins the championship final', 'coach fired after losing season'])[1 + i % 4] AS body,
       (ARRAY['economy', 'markets', 'sports', 'sports'])[1 + i % 4] AS label
  FROM generate_series(1, 40) i;
GRANT SELECT ON docs TO PUBLIC;
-- trainers: the README's grants
GRANT SELECT, INSERT, DELETE ON bft.models TO sec_trainer, sec_trainer2;
GRANT UPDATE (deployed_at) ON bft.models TO sec_trainer, sec_trainer2;  -- (bft_deploy)
GRANT USAGE ON SEQUENCE bft.models_id_seq TO sec_trainer, sec_trainer2;
GRANT EXECUTE ON FUNCTION bft_train, bft_train_async, bft_import_model(text, text),
      bft_import_model(text, jsonb, text, oid, jsonb), bft_deploy, bft_drop_model, bft_copy_weights
      TO sec_trainer, sec_trainer2, sec_ins, sec_sel;
GRANT CREATE ON SCHEMA public TO sec_trainer, sec_trainer2;
GRANT CREATE ON DATABASE $DB TO sec_trainer;
-- readers: everything; classifiers: the identity columns only
GRANT SELECT ON bft.models TO sec_reader;
GRANT SELECT (id, name, version, deployed_at) ON bft.models TO sec_classifier;
-- half the store privileges
GRANT INSERT ON bft.models TO sec_ins; GRANT USAGE ON SEQUENCE bft.models_id_seq TO sec_ins;
GRANT SELECT ON bft.models TO sec_sel; GRANT USAGE ON SEQUENCE bft.models_id_seq TO sec_sel;
-- secrets: a superuser's and another user's large objects, and one that
-- looks like a safetensors header whose tensor name is a secret
CREATE TABLE secrets (what text, loid oid);
INSERT INTO secrets VALUES ('su', lo_from_bytea(0, convert_to('TOP-SECRET-SUPERUSER-PAYLOAD', 'UTF8')));
INSERT INTO secrets VALUES ('hdr', lo_from_bytea(0, '\x2800000000000000'::bytea ||
    convert_to('{"TOP-SECRET-HEADER-NAME":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}', 'UTF8') ||
    '\x00000000'::bytea));
SET SESSION AUTHORIZATION sec_victim;
CREATE TEMP TABLE v AS SELECT lo_from_bytea(0, convert_to('TOP-SECRET-VICTIM-PAYLOAD', 'UTF8')) AS o;
RESET SESSION AUTHORIZATION;
INSERT INTO secrets SELECT 'victim', o FROM v;
SQL
SU=$(q "SELECT loid FROM secrets WHERE what = 'su'")
HDR=$(q "SELECT loid FROM secrets WHERE what = 'hdr'")
VICTIM=$(q "SELECT loid FROM secrets WHERE what = 'victim'")
# every secret large object still there, with its bytes
secrets_intact() {
    [ "$(q "SELECT count(*) FILTER (WHERE position(convert_to('TOP-SECRET', 'UTF8') IN lo_get(loid)) > 0)
                  || '/' || count(*) FROM secrets")" = "$(q "SELECT count(*) || '/' || count(*) FROM secrets")" ] &&
    [ "$(q "SELECT count(*) FROM secrets")" -ge 2 ]
}
check '[ -n "$SU" ] && [ -n "$HDR" ] && [ -n "$VICTIM" ] && secrets_intact' "setup: three secret large objects (superuser's, another user's, a fake safetensors header)"

expect sec_trainer "SELECT version FROM bft_train('docs', 'body', 'label', 20, model => 'm1', batch_size => 4, learning_rate => 1e-3, $TINY)" '^1$' \
    "the trainer trains model m1 with the documented grants"
W1=$(q "SELECT weights FROM bft.models WHERE name = 'm1'")
nlo() { q "SELECT count(*) FROM pg_largeobject_metadata"; }
NLO=$(nlo)

echo "# 1. large objects"
COLS="name, version, config, vocab, weights"
ROW="SELECT 'evil', 1, config, vocab, $SU FROM bft.models WHERE name = 'm1'"
expect sec_trainer "INSERT INTO bft.models ($COLS) $ROW" '^ERROR:  42501: rows of bft.models are written only by bft' \
    "INSERT of a row naming the superuser's large object: 42501"
expect sec_trainer "INSERT INTO bft.models ($COLS) SELECT 'copy', 2, config, vocab, weights FROM bft.models WHERE name = 'm1'" \
    '^ERROR:  42501' "INSERT of a row reusing a model's own weights: 42501"
q "GRANT UPDATE ON bft.models TO sec_trainer2" >/dev/null
for col in "weights = $SU" "weights = $VICTIM" "config = '{}'" "vocab = 'x'" "name = 'm9'" "version = 7" "id = 999" \
           "labels = '{a,b}'" "params = '{\"max_length\": 100000}'" "created_by = 'postgres'"; do
    expect sec_trainer2 "UPDATE bft.models SET $col WHERE name = 'm1'" '^ERROR:  42501: column ".*" of bft.models cannot be changed' \
        "UPDATE ... SET $col, even with UPDATE on every column: 42501"
done
expect sec_trainer2 "UPDATE bft.models SET deployed_at = now() WHERE name = 'm1'" '^$' "UPDATE of deployed_at alone (what bft_deploy does) is allowed"
q "REVOKE UPDATE ON bft.models FROM sec_trainer2; GRANT UPDATE (deployed_at) ON bft.models TO sec_trainer2" >/dev/null
expect sec_trainer "UPDATE bft.models SET weights = $SU" '^ERROR:  42501: permission denied for table models' \
    "UPDATE of weights with the documented grants: 42501"
expect sec_trainer "SELECT lo_unlink($W1)" '^ERROR:  42501: must be owner of large object' "lo_unlink of its own model's weights: 42501"
expect sec_trainer "SELECT lo_put($W1, 0, '\\x00')" '^ERROR:  42501: permission denied for large object' "lo_put into the weights: 42501"
expect sec_trainer "SELECT length(lo_get($W1))" '^ERROR:  42501: permission denied for large object' "lo_get of the weights: 42501"
expect sec_trainer "SELECT lo_export($W1, '$TMP/stolen')" '^ERROR:  42501' "lo_export of the weights: 42501"
expect sec_trainer "ALTER LARGE OBJECT $W1 OWNER TO sec_trainer" '^ERROR:  42501: must be owner' "taking the weights over: 42501"
expect sec_trainer "SELECT * FROM bft_import_model('stolen', '{}'::jsonb, 'x', $SU)" '^ERROR:  42501: permission denied for large object' \
    "bft_import_model from the superuser's large object: 42501"
expect sec_trainer "SELECT * FROM bft_import_model('stolen', '{}'::jsonb, 'x', $VICTIM)" '^ERROR:  42501: permission denied for large object' \
    "bft_import_model from another user's large object: 42501"
expect sec_trainer "ALTER TABLE bft.models DISABLE TRIGGER models_guard" '^ERROR:  42501: must be owner' "disabling the guard trigger: 42501"
expect sec_trainer "CREATE TRIGGER t BEFORE INSERT ON bft.models FOR EACH ROW EXECUTE FUNCTION bft.models_guard()" '^ERROR:  42501' \
    "creating a trigger on bft.models: 42501"
expect sec_trainer "SELECT bft.models_guard()" '^ERROR:  42501: permission denied for function models_guard' "calling the trigger function: 42501"
expect sec_trainer "SELECT count(*) FROM bft_progress(); SET bft.trusted = on" '^ERROR:  [0-9A-Z]{5}: invalid configuration parameter name' \
    "no setting turns the guard off (the bft. prefix is reserved)"
expect sec_trainer "TRUNCATE bft.models" '^ERROR:  42501: permission denied for table models' "TRUNCATE bft.models: 42501"
expect sec_trainer "DROP EXTENSION bft" '^ERROR:  42501: must be owner of extension bft' "DROP EXTENSION bft: 42501"
check '[ "$(nlo)" = "$NLO" ] && secrets_intact && [ "$(q "SELECT count(*) FROM bft.models")" = 1 ]' \
    "after all of it: no row added, no large object lost, the secrets intact"

# A row written by hand before 0.2.0 (simulated by a superuser INSERT, as an
# upgraded database may have): bft refuses another user's object, unlinks
# nothing it does not own, and never shows a malformed object's bytes.
q "INSERT INTO bft.models (name, version, config, vocab, weights, labels)
   SELECT 'forged_victim', 1, config, vocab, $VICTIM, labels FROM bft.models WHERE name = 'm1'" >/dev/null
q "INSERT INTO bft.models (name, version, config, vocab, weights, labels)
   SELECT 'forged_hdr', 1, config, vocab, $HDR, labels FROM bft.models WHERE name = 'm1'" >/dev/null
expect sec_reader "SELECT bft_classify('team wins', 'forged_victim')" '^ERROR:  42501: weights of model "forged_victim" version 1 \(large object [0-9]+\) do not belong to the owner of extension bft' \
    "classifying with a row naming another user's object: 42501, nothing read"
expect sec_reader "SELECT bft_classify('team wins', 'forged_hdr')" '^ERROR:  XX001: could not load model "forged_hdr"' \
    "a malformed weights object: XX001"
out=$(psql -X -q -v VERBOSITY=verbose -U sec_reader -d "$DB" -c "SELECT bft_classify('team wins', 'forged_hdr')" 2>&1)
printf '%s\n' "$out" >>"$LOG"
check 'echo "$out" | grep -q "DETAIL:" && ! echo "$out" | grep -q "SECRET"' "... whose message, detail and hint never show its bytes"
expect sec_trainer "SELECT bft_drop_model('forged_victim')" '^1$' "a trainer drops the forged row"
check '[ "$(q "SELECT count(*) FROM pg_largeobject_metadata WHERE oid = $VICTIM")" = 1 ] && secrets_intact' \
    "... and the other user's object it named survives (only the extension owner's objects are unlinked)"
q "DELETE FROM bft.models WHERE name = 'forged_hdr'" >/dev/null
check '[ "$(q "SELECT count(*) FROM pg_largeobject_metadata WHERE oid = $HDR")" = 0 ]' \
    "(a superuser's row naming a superuser's object was adopted: deleting it unlinks that object)"
q "DELETE FROM secrets WHERE what = 'hdr'" >/dev/null
expect sec_trainer "SELECT version FROM bft_train('docs', 'body', 'label', 2, model => 'm2', $TINY)" '^1$' "the trainer trains m2"
W2=$(q "SELECT weights FROM bft.models WHERE name = 'm2'")
NLO=$(nlo)
expect sec_trainer "DELETE FROM bft.models WHERE name = 'm2'" '^$' "a role allowed to DELETE deletes m2's row directly"
check '[ "$(nlo)" = $((NLO - 1)) ] && [ "$(q "SELECT count(*) FROM pg_largeobject_metadata WHERE oid = $W2")" = 0 ] && secrets_intact' \
    "... which unlinks exactly its weights"
expect sec_trainer "BEGIN; DELETE FROM bft.models WHERE name = 'm1'; ROLLBACK" '^$' "a DELETE rolled back ..."
check '[ "$(q "SELECT count(*) FROM pg_largeobject_metadata WHERE oid = $W1")" = 1 ]' "... keeps the weights"
n0=$(nlo)
check '[ "$(as sec_trainer "SELECT lo_unlink(o) FROM (SELECT bft_copy_weights('"'m1'"') AS o) s")" = 1 ] && [ "$(nlo)" = "$n0" ]' \
    "bft_copy_weights gives the caller a copy it owns (and may unlink)"
expect sec_classifier "SELECT bft_copy_weights('m1')" '^ERROR:  42501: permission denied for function bft_copy_weights' "bft_copy_weights without EXECUTE: 42501"

echo "# 2. row-level security on bft.models"
q "ALTER TABLE bft.models ENABLE ROW LEVEL SECURITY;
   CREATE POLICY own ON bft.models USING (created_by = current_user) WITH CHECK (created_by = current_user);
   CREATE POLICY readers ON bft.models FOR SELECT TO sec_reader, sec_classifier USING (true)" >/dev/null
t0=$(now)
expect sec_trainer2 "SELECT bft_train('docs', 'body', 'label', 100000, model => 'm1', $TINY)" \
    '^ERROR:  42710: model name "m1" is used by versions you cannot see' "a second tenant reusing the name m1: 42710 ..."
t1=$(now)
check "within $(elapsed $t0 $t1) 2.0" "... before training starts ($(elapsed $t0 $t1) s for a 100000-epoch training)"
expect sec_trainer2 "SELECT bft_train_async('docs', 'body', 'label', 100000, model => 'm1', $TINY)" '^ERROR:  42710' \
    "... also when submitting a background job"
expect sec_trainer2 "SELECT bft_drop_model('m1')" '^ERROR:  42704: model "m1" does not exist' "another tenant's bft_drop_model('m1'): 42704"
expect sec_trainer2 "SELECT bft_deploy('m1', 1)" '^ERROR:  42704' "another tenant's bft_deploy: 42704"
expect sec_trainer2 "SELECT bft_classify('team wins', 'm1')" '^ERROR:  42704' "another tenant's bft_classify: 42704"
expect sec_trainer2 "DELETE FROM bft.models" '^$' "another tenant's DELETE of every row deletes none of m1's"
expect sec_trainer "SELECT version FROM bft_train('docs', 'body', 'label', 2, model => 'm1', $TINY)" '^2$' \
    "the owner's next version of m1 is 2"
expect sec_trainer2 "SELECT version FROM bft_train('docs', 'body', 'label', 2, model => 't2', $TINY)" '^1$' "the second tenant trains t2"
rows=$(q "SELECT string_agg(name || ':' || version || ':' || created_by, ',' ORDER BY name, version) FROM bft.models")
check '[ "$rows" = "m1:1:sec_trainer,m1:2:sec_trainer,t2:1:sec_trainer2" ] && [ "$(q "SELECT count(*) FROM pg_largeobject_metadata WHERE oid = $W1")" = 1 ]' \
    "names and versions stay per owner ($rows); m1's weights intact"
# The model cache across roles inside one statement: sec_trainer's SECURITY
# DEFINER function loads m1; in the same statement sec_trainer2 must not
# classify with it, nor resolve sec_trainer's default model.
as sec_trainer "CREATE FUNCTION public.trainer_classify(t text) RETURNS text LANGUAGE sql SECURITY DEFINER
                SET search_path = public, pg_catalog AS 'SELECT bft_classify(t, ''m1'')';
                CREATE FUNCTION public.trainer_default() RETURNS text LANGUAGE sql SECURITY DEFINER
                SET search_path = public, pg_catalog AS
                'SELECT report->>''model'' FROM bft_evaluate(NULL, ''docs'', ''body'', ''label'')'" >/dev/null
expect sec_trainer2 "SELECT public.trainer_classify('team wins') IS NOT NULL" '^t$' "the SECURITY DEFINER function classifies with m1 for its caller"
expect sec_trainer2 "SELECT public.trainer_classify('team wins'), bft_classify('team wins', 'm1')" '^ERROR:  42704: model "m1" does not exist' \
    "... but in the same statement the caller itself cannot use the cached m1: 42704"
expect sec_trainer2 "SELECT bft_classify(body, 'm1') FROM (SELECT body, public.trainer_classify(body) FROM docs LIMIT 3) s" '^ERROR:  42704' \
    "... nor row after row of one query"
expect sec_trainer2 "SELECT public.trainer_default() || '/' || (SELECT report->>'model' FROM bft_evaluate(NULL, 'docs', 'body', 'label'))" \
    '^m1/t2$' "the default model is resolved per role within one statement (the owner's m1, the caller's t2)"
# parallel workers evaluate the function as the same role, with the same rules
PAR="SET parallel_setup_cost = 0; SET parallel_tuple_cost = 0; SET min_parallel_table_scan_size = 0;
     SET max_parallel_workers_per_gather = 2; SET debug_parallel_query = on"
[ "$(q "SELECT current_setting('server_version_num')::int < 160000")" = t ] && PAR=${PAR/debug_parallel_query/force_parallel_mode}
expect sec_trainer2 "$PAR; SELECT count(bft_classify(body, 'm1')) FROM docs" '^ERROR:  42704' "in parallel workers too: 42704"
expect sec_trainer "$PAR; SELECT count(bft_classify(body, 'm1')) FROM docs" '^40$' "(the owner classifies in parallel workers)"
expect sec_trainer2 "SELECT count(*) FROM bft.progress WHERE usename = 'sec_trainer'" '^0$' "bft.progress hides other roles' trainings"

echo "# 3. background jobs"
LONG="SELECT bft_train_async('docs', 'body', 'label', 100000, model => 'jobs', batch_size => 4, $TINY)"
expect sec_nobody "SELECT bft_train_async('docs', 'body', 'label')" '^ERROR:  42501: permission denied for function bft_train_async' \
    "submitting without EXECUTE: 42501"
q "GRANT EXECUTE ON FUNCTION bft_train_async TO sec_classifier, sec_nobody" >/dev/null
expect sec_nobody "SELECT bft_train_async('docs', 'body', 'label')" '^ERROR:  42501: permission denied for function bft_train' \
    "EXECUTE on bft_train_async without EXECUTE on bft_train: 42501 at submission"
q "GRANT EXECUTE ON FUNCTION bft_train TO sec_classifier" >/dev/null
expect sec_classifier "$LONG" '^ERROR:  42501: permission denied to store models in bft.models' \
    "a role that may not store models: 42501 at submission, not in the background"
check '[ "$(q "SELECT count(*) FROM bft.train_jobs")" = 0 ]' "... and nothing was queued"
j1=$(as sec_trainer "$LONG"); j2=$(as sec_trainer "$LONG")
t0=$(now)
expect sec_trainer "$LONG" '^ERROR:  53400: too many background training jobs for role "sec_trainer": 2 running or queued, bft.max_jobs_per_role is 2' \
    "a third job of one role (bft.max_jobs_per_role = 2): 53400 at once"
check '[ "$(q "SELECT count(*) FROM bft.train_jobs WHERE userid = '"'sec_trainer'"'::regrole")" = 2 ]' "... and nothing queued"
q "ALTER ROLE sec_trainer2 SET bft.max_jobs = 2" >/dev/null   # a superuser's choice for the role, applied at its login
expect sec_trainer2 "SELECT bft_train_async('docs', 'body', 'label', 1, model => 't2', $TINY)" '^ERROR:  53400: too many background training jobs: 2 running or queued, bft.max_jobs is 2' \
    "jobs over the server's bft.max_jobs: 53400"
q "ALTER ROLE sec_trainer2 RESET bft.max_jobs" >/dev/null
expect sec_trainer "SELECT count(*) FROM bft_progress(); SET bft.max_jobs_per_role = 100" '^ERROR:  42501: permission denied to set parameter "bft.max_jobs_per_role"' \
    "a role cannot raise its own cap: 42501"
expect sec_trainer2 "SELECT bft_cancel_job($j1)" "^ERROR:  42704: training job $j1 does not exist" "another role's bft_cancel_job: 42704 ..."
e1=$(as sec_trainer2 "SELECT bft_cancel_job($j1)"); e2=$(as sec_trainer2 "SELECT bft_cancel_job(987654)")
check '[ "${e2/987654/$j1}" = "$e1" ]' "... exactly the error for a job that does not exist"
expect sec_trainer2 "SELECT count(*) FROM bft.jobs" '^0$' "bft.jobs shows another role's jobs to no one else"
expect sec_trainer2 "UPDATE bft.train_jobs SET state = 'cancelled'" '^ERROR:  42501' "writing bft.train_jobs directly: 42501"
expect sec_trainer "SELECT bft_cancel_job($j1) AND bft_cancel_job($j2)" '^t$' "the submitter cancels its jobs"
q "INSERT INTO bft.train_jobs (state, model, relation, args, userid, username, finished_at)
   VALUES ('succeeded', 'old', 'docs', '{}', 'sec_trainer'::regrole, 'sec_trainer', now() - interval '31 days'),
          ('failed', 'recent', 'docs', '{}', 'sec_trainer'::regrole, 'sec_trainer', now() - interval '29 days')" >/dev/null
for i in $(seq 1 100); do [ "$(q "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'bft training job'")" = 0 ] && break; sleep 0.1; done
as sec_trainer "SELECT bft_train_async('docs', 'body', 'label', 1, model => 'j', $TINY)" >/dev/null
check '[ "$(q "SELECT string_agg(model, '"','"' ORDER BY model) FROM bft.train_jobs WHERE model IN ('"'old', 'recent'"')")" = recent ]' \
    "finished jobs older than bft.job_retention (30 days) are deleted at the next submission"

echo "# 4. memory (bft.max_memory)"
expect sec_trainer "SELECT count(*) FROM bft_progress(); SET bft.max_memory = '100GB'" '^ERROR:  42501: permission denied to set parameter "bft.max_memory"' \
    "a role cannot raise bft.max_memory: 42501"
out=$(psql -X -q -t -A -U sec_trainer -d "$DB" -c "SET bft.max_memory = '100GB'" -c "SELECT bft_classify('team wins', 'm1')" \
      -c "SHOW bft.max_memory" 2>&1)
printf '%s\n' "$out" >>"$LOG"
check '! echo "$out" | tail -n 1 | grep -q 100GB' "... not even as a placeholder set before bft is loaded ($(echo "$out" | tail -n 1))"
BIG='{"hidden_size": 4096, "num_hidden_layers": 48, "num_attention_heads": 32, "intermediate_size": 16384, "vocab_size": 100000}'
t0=$(now)
expect sec_trainer "SELECT bft_train('docs', 'body', 'label', 1, model => 'big', mlm_epochs => 0, architecture => '$BIG')" \
    '^ERROR:  53200: training this architecture needs [0-9]+ MB, more than bft.max_memory allows' \
    "a 10-billion-parameter architecture: 53200 up front"
t1=$(now)
check "within $(elapsed $t0 $t1) 1.0" "... at once ($(elapsed $t0 $t1) s), the server up"
out=$(psql -X -q -v VERBOSITY=verbose -U sec_trainer -d "$DB" -c "SELECT bft_train('docs', 'body', 'label', 1, mlm_epochs => 0, architecture => '$BIG')" 2>&1)
check 'echo "$out" | grep -q "HINT:  Lower batch_size, max_length or the architecture" && echo "$out" | grep -q "DETAIL:  bft.max_memory is"' \
    "... saying what to lower"
expect sec_trainer "SELECT bft_train('docs', 'body', 'label', 1, model => 'b', batch_size => 65536, max_length => 8192, mlm_epochs => 0, architecture => '$ARCH'::jsonb || '{\"max_position_embeddings\": 8192}')" \
    '^ERROR:  53200' "a batch of 65536 x 8192 tokens: 53200"
q "ALTER ROLE sec_reader SET bft.max_memory = '16MB'" >/dev/null
expect sec_reader "SELECT array_length(bft_classify_batch(array_agg(body)), 1) FROM docs, generate_series(1, 25000)" \
    '^ERROR:  53200: (classifying this array|encoding these texts) needs' "classifying a 1,000,000-element array within 16 MB: 53200"
expect sec_reader "SELECT count(*) FROM docs, bft_embed_batch((SELECT array_agg(body) FROM docs, generate_series(1, 25000)))" \
    '^ERROR:  53200: embedding this array needs' "embedding a 1,000,000-element array within 16 MB: 53200"
q "ALTER ROLE sec_reader RESET bft.max_memory" >/dev/null
expect sec_reader "SELECT bft_classify('team wins', 'm1') IS NOT NULL" '^t$' "(the same role classifies normally)"
# bft_classify(repeat('é ', 300000000)): the tokenizer stops after max_length
# tokens, so classifying the 858 MB text needs no memory beyond the text.
# One session holds the text in a variable (built as repeat(repeat('é ',
# 1000000), 300): the same text, without repeat's slow 3-byte copies), first
# takes its octet_length (baseline peak), then classifies it: the backend's
# peak memory (VmHWM) must not grow by more than a few MB the second time.
q "CREATE FUNCTION huge_probe(classify bool) RETURNS text LANGUAGE plpgsql AS \$\$
   DECLARE x text := repeat(repeat('é ', 1000000), 300); t0 timestamptz; r text;
   BEGIN
     t0 := clock_timestamp();
     IF classify THEN r := bft_classify(x, 'm1'); ELSE r := octet_length(x)::text; END IF;
     RETURN r || ' ' || round(extract(epoch FROM clock_timestamp() - t0)::numeric, 3);
   END \$\$" >/dev/null
pid_hwm() { awk '/VmHWM/ { print $2 }' "/proc/$1/status" 2>/dev/null; }
psql -X -q -t -A -U sec_reader -d "$DB" -c "SELECT pg_backend_pid()" -c "SELECT pg_sleep(1)" \
    -c "SELECT huge_probe(false)" -c "SELECT pg_sleep(1)" -c "SELECT huge_probe(true)" -c "SELECT pg_sleep(1)" \
    >"$TMP/huge.out" 2>&1 &
BG=$!
for i in $(seq 1 50); do [ -s "$TMP/huge.out" ] && break; sleep 0.1; done
bpid=$(head -n 1 "$TMP/huge.out")
hwm0=$(pid_hwm "${bpid:-0}")
for i in $(seq 1 600); do [ "$(wc -l <"$TMP/huge.out")" -ge 3 ] && break; sleep 0.1; done
hwm1=$(pid_hwm "${bpid:-0}")
for i in $(seq 1 600); do [ "$(wc -l <"$TMP/huge.out")" -ge 5 ] && break; sleep 0.1; done
hwm2=$(pid_hwm "${bpid:-0}")
wait $BG
cat "$TMP/huge.out" >>"$LOG"
base=$(sed -n 3p "$TMP/huge.out"); res=$(sed -n 5p "$TMP/huge.out")
label=${res% *}; secs=${res#* }
text_mb=$(( (${hwm1:-0} - ${hwm0:-0}) / 1024 )); extra_mb=$(( (${hwm2:-0} - ${hwm1:-0}) / 1024 ))
echo "# bft_classify(repeat('é ', 300000000)) = $label in $secs s; text ${base% *} bytes: peak +$text_mb MB to hold it, +$extra_mb MB more to classify it"
check 'echo "$label" | grep -qE "^(economy|markets|sports)$" && [ "${base% *}" = 900000000 ] && [ -n "$hwm0" ] && [ "$text_mb" -ge 800 ] && [ "$extra_mb" -lt 32 ] && within "$secs" 1.0' \
    "bft_classify(repeat('é ', 300000000)): $label in $secs s, +$extra_mb MB beyond the text (memory bounded by max_length)"

echo "# 5. interrupts: cancel within 1 s"
q "CREATE FUNCTION cancel_and_time(p int) RETURNS float8 LANGUAGE plpgsql AS \$\$
   DECLARE t0 timestamptz := clock_timestamp();
   BEGIN
     PERFORM pg_cancel_backend(p);
     LOOP
       PERFORM pg_stat_clear_snapshot();
       EXIT WHEN NOT EXISTS (SELECT 1 FROM pg_stat_activity WHERE pid = p AND state = 'active');
       EXIT WHEN clock_timestamp() - t0 > interval '30 s';
       PERFORM pg_sleep(0.01);
     END LOOP;
     RETURN round(extract(epoch FROM clock_timestamp() - t0)::numeric, 3);
   END \$\$" >/dev/null
# cancel_in_phase LABEL MODEL PHASE SQL: run SQL as sec_trainer in the background,
# cancel it once bft.progress shows MODEL in PHASE (after 0.3 s more), check
# the backend stopped within 1 s with 57014 and the server is up.
cancel_in_phase() {
    local label="$1" model="$2" phase="$3" sql="$4" delay="${5:-0.3}" pid lat
    psql -X -q -v VERBOSITY=verbose -U sec_trainer -d "$DB" -c "$sql" >"$TMP/cancel_$model.log" 2>&1 &
    local bg=$!
    pid=$(poll 600 "SELECT pid FROM bft.progress WHERE model = '$model' AND phase = '$phase'")
    sleep "$delay"
    lat=$(q "SELECT cancel_and_time(${pid:-0})")
    wait $bg
    cat "$TMP/cancel_$model.log" >>"$LOG"
    check '[ -n "$pid" ] && grep -q "ERROR:  57014: canceling statement due to user request" "$TMP/cancel_$model.log" && within "${lat:-9}" 1.0' \
        "$label: cancelled within 1 s (${lat:-?} s, phase $phase)"
}
q "CREATE TABLE words AS SELECT md5(i::text) || ' ' || md5((-i)::text) AS t, (i % 2)::text AS l FROM generate_series(1, 500000) i;
   GRANT SELECT ON words TO sec_trainer" >/dev/null
cancel_in_phase "vocabulary learning (1e6 distinct words, vocab_size 1000000)" vocab vocabulary \
    "SELECT bft_train('words', 't', 'l', 1, model => 'vocab', mlm_epochs => 0, architecture => '{\"vocab_size\": 1000000, \"hidden_size\": 16, \"num_hidden_layers\": 1, \"num_attention_heads\": 2, \"intermediate_size\": 32}')"
# (the estimate of training it needs a high bft.max_memory; only the 1.2 GB of
# parameters are allocated before the cancel)
q "ALTER ROLE sec_trainer SET bft.max_memory = '32GB'" >/dev/null
cancel_in_phase "initialising a large architecture (300 M parameters)" init initialising \
    "SELECT bft_train('docs', 'body', 'label', 1, model => 'init', batch_size => 4, max_length => 32, mlm_epochs => 0, architecture => '{\"vocab_size\": 200, \"hidden_size\": 1024, \"num_hidden_layers\": 24, \"num_attention_heads\": 16, \"intermediate_size\": 4096}')"
q "ALTER ROLE sec_trainer RESET bft.max_memory" >/dev/null
# 156 MB of non-ASCII text (lower-casing, NFD and final sigma on every word):
# PostgreSQL builds it in about a second, bft needs ~15 s to normalise it all
# for vocabulary learning; the cancel comes 2.5 s into the training
q "CREATE VIEW huge AS SELECT repeat('Ünïcödé Wörds ΣΑΣ ', 6000000) AS t, 'a' AS l
   UNION ALL SELECT 'short text', 'b'; GRANT SELECT ON huge TO sec_trainer" >/dev/null
cancel_in_phase "normalising a 156 MB text (vocabulary learning reads it whole)" huge reading \
    "SELECT bft_train('huge', 't', 'l', 1, model => 'huge', $TINY)" 2.5
t0=$(now)
expect sec_trainer "SET statement_timeout = '3s'; SELECT bft_train('huge', 't', 'l', 1, model => 'huge2', $TINY)" \
    '^ERROR:  57014: canceling statement due to statement timeout' "statement_timeout (3 s) during the same normalisation: 57014 ..."
t1=$(now)
over=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f", b - a - 3 }')
check "within $over 1.0" "... within 1 s of the timeout ($over s over)"
check '[ "$(q "SELECT count(*) FROM bft.models WHERE name IN ('"'vocab', 'init', 'huge', 'huge2'"')")" = 0 ] && [ "$(q "SELECT count(*) FROM bft.progress")" = 0 ]' \
    "cancelled trainings leave no row and no progress entry"
# directory imports: a FIFO is refused at once (it would block forever), a
# file over bft.max_memory before it is read
q "GRANT pg_read_server_files TO sec_trainer" >/dev/null
for f in config.json vocab.txt model.safetensors; do
    d="$TMP/fifo_${f%%.*}"; mkdir -p "$d"; cp tests/data/ckpt/tiny/* "$d/"; rm -f "$d/$f"; mkfifo "$d/$f"
    [ "$(id -u)" -eq 0 ] && chown -R "$(cluster_user)": "$d"
    t0=$(now)
    expect sec_trainer "SELECT * FROM bft_import_model('fifo', '$d')" "^ERROR:  58030: could not import model \"fifo\"" \
        "a directory import whose $f is a FIFO: 58030 ..."
    t1=$(now)
    out=$(psql -X -q -U sec_trainer -d "$DB" -c "SELECT * FROM bft_import_model('fifo', '$d')" 2>&1)
    check "within $(elapsed $t0 $t1) 1.0 && echo \"\$out\" | grep -q 'not a regular file'" "... at once ($(elapsed $t0 $t1) s): not a regular file"
done
d="$TMP/hugefile"; mkdir -p "$d"; cp tests/data/ckpt/tiny/* "$d/"; truncate -s 8G "$d/vocab.txt"
[ "$(id -u)" -eq 0 ] && chown -R "$(cluster_user)": "$d"
q "ALTER ROLE sec_trainer SET bft.max_memory = '1GB'" >/dev/null
t0=$(now)
expect sec_trainer "SELECT * FROM bft_import_model('hugefile', '$d')" '^ERROR:  53200: could not import model "hugefile"' \
    "a directory import of an 8 GB vocab.txt over bft.max_memory (1 GB): 53200 ..."
t1=$(now)
check "within $(elapsed $t0 $t1) 1.0" "... before reading it ($(elapsed $t0 $t1) s)"
q "ALTER ROLE sec_trainer RESET bft.max_memory; REVOKE pg_read_server_files FROM sec_trainer" >/dev/null
rm -rf "$TMP"/fifo_* "$d"

echo "# 6. privilege checks before any work"
for r in sec_ins:INSERT sec_sel:SELECT; do
    role=${r%%:*}
    t0=$(now)
    expect "$role" "SELECT bft_train('docs', 'body', 'label', 100000, model => 'half', $TINY)" \
        '^ERROR:  42501: permission denied to store models in bft.models' "only ${r#*:} on bft.models: 42501 ..."
    t1=$(now)
    check "within $(elapsed $t0 $t1) 1.0" "... before training ($(elapsed $t0 $t1) s for a 100000-epoch training)"
done
out=$(psql -X -q -v VERBOSITY=verbose -U sec_ins -d "$DB" -c "SELECT bft_train('docs', 'body', 'label', 1)" 2>&1)
check 'echo "$out" | grep -q "DETAIL:  Storing a model needs SELECT on bft.models"' "... naming the missing privilege"

echo "# 7. classification without the training data"
expect sec_classifier "SELECT bft_classify('team wins the final', 'm1')" '^(economy|markets|sports)$' "SELECT (id, name, version, deployed_at) suffices to classify"
expect sec_classifier "SELECT label FROM bft_predict('team wins the final', 'm1')" '^(economy|markets|sports)$' "... and to predict"
expect sec_classifier "SELECT rows FROM bft_evaluate('m1', 'docs', 'body', 'label')" '^40$' "... and to evaluate"
for col in vocab labels config params metrics tokenizer_config weights base created_by; do
    expect sec_classifier "SELECT $col FROM bft.models LIMIT 1" '^ERROR:  42501: permission denied for table models' \
        "... but not to read bft.models.$col: 42501"
done
expect sec_classifier "SELECT count(*) FROM bft_tokenize('team wins', 'm1')" '^ERROR:  42501: permission denied: bft_tokenize\(\) needs SELECT on all columns of bft.models' \
    "bft_tokenize (shows the vocabulary): 42501"
expect sec_classifier "SELECT count(*) FROM bft_fill_mask('team [MASK]', 5, 'm1')" '^ERROR:  42501: permission denied: bft_fill_mask\(\)' \
    "bft_fill_mask (can show learned text): 42501"
expect sec_classifier "SELECT count(*) FROM bft.model_list" '^ERROR:  42501' "bft.model_list (labels, metrics): 42501"
expect sec_reader "SELECT count(*) FROM bft_tokenize('team wins', 'm1')" '^[0-9]+$' "(a role with SELECT on bft.models tokenizes)"

echo "# 8. search_path, settings, threads and signals"
as sec_trainer "CREATE SCHEMA evil; GRANT USAGE ON SCHEMA evil TO PUBLIC;
                CREATE FUNCTION evil.eq(text, text) RETURNS bool LANGUAGE plpgsql AS
                  \$\$ BEGIN EXECUTE 'ALTER ROLE sec_trainer SUPERUSER'; RETURN \$1 OPERATOR(pg_catalog.=) \$2; END \$\$;
                CREATE OPERATOR evil.= (LEFTARG = text, RIGHTARG = text, FUNCTION = evil.eq);
                GRANT EXECUTE ON FUNCTION evil.eq(text, text) TO PUBLIC" >/dev/null
out=$(psql -X -q -t -A -d "$DB" -c "SET search_path = evil, public, pg_catalog" \
      -c "SELECT bft_classify('team wins', 'm1'), count(*) FROM bft_predict('x', 'm1')" \
      -c "SELECT bft_drop_model('nothing')" 2>&1)
check '[ "$(q "SELECT rolsuper FROM pg_roles WHERE rolname = '"'sec_trainer'"'")" = f ]' \
    "a trainer's operator first in a superuser's search_path never runs inside bft's queries"
q "ALTER ROLE sec_trainer NOSUPERUSER; DROP SCHEMA evil CASCADE" >/dev/null
# the engine's threads (bft.threads = 2) never take the backend's signals
psql -X -q -t -A -U sec_trainer -d "$DB" -c "SET bft.threads = 2" \
    -c "SELECT version FROM bft_train('docs', 'body', 'label', 3, model => 'mid', mlm_epochs => 0,
        architecture => '{\"hidden_size\": 256, \"num_hidden_layers\": 2, \"num_attention_heads\": 4, \"intermediate_size\": 1024, \"vocab_size\": 200}')" \
    -c "SELECT 'sleeping'" -c "SELECT pg_sleep(3)" >"$TMP/threads.out" 2>&1 &
BG=$!
for i in $(seq 1 300); do grep -q sleeping "$TMP/threads.out" && break; sleep 0.1; done
sleep 0.3
bpid=$(q "SELECT pid FROM pg_stat_activity WHERE usename = 'sec_trainer' AND query LIKE '%pg_sleep(3)%'" | head -n 1)
bad=0; threads=0
for st in /proc/"${bpid:-0}"/task/*/status; do
    [ -f "$st" ] || continue
    tid=$(basename "$(dirname "$st")")
    [ "$tid" = "$bpid" ] && continue
    threads=$((threads + 1))
    blk=$(awk '/SigBlk/ { print $2 }' "$st")
    # SIGINT (2), SIGUSR1 (10), SIGALRM (14), SIGTERM (15), SIGURG (23) blocked
    for sig in 2 10 14 15 23; do
        (( (16#$blk >> (sig - 1)) & 1 )) || bad=$((bad + 1))
    done
done
wait $BG
cat "$TMP/threads.out" >>"$LOG"
check '[ -n "$bpid" ] && [ "$threads" -ge 1 ] && [ "$bad" = 0 ]' \
    "the backend's $threads engine thread(s) block SIGINT, SIGUSR1, SIGALRM, SIGTERM, SIGURG: only its own thread takes them"

# classifying with a model whose inference would not fit bft.max_memory
q "ALTER ROLE sec_reader SET bft.max_memory = '16MB'" >/dev/null
expect sec_reader "SELECT bft_classify(repeat('team wins ', 100), 'mid')" '^ERROR:  53200: classification needs [0-9]+ MB, more than bft.max_memory allows' \
    "a model whose inference needs more than bft.max_memory (16 MB): 53200"
q "ALTER ROLE sec_reader RESET bft.max_memory" >/dev/null
expect sec_reader "SELECT bft_classify('team wins', 'mid') IS NOT NULL" '^t$' "(with the default limit it classifies)"

echo "# the end: DROP EXTENSION leaves no weights, the secrets and the server are intact"
NW=$(q "SELECT count(*) FROM bft.models")
NLO=$(nlo)
q "DROP EXTENSION bft CASCADE" >/dev/null
check '[ "$(nlo)" = $((NLO - NW)) ] && [ "$(nlo)" = 2 ] && secrets_intact' \
    "DROP EXTENSION unlinks the $NW models' weights and nothing else ($(nlo) large objects left: the two secrets)"
# DROP SCHEMA <the extension's schema> CASCADE and DROP OWNED BY <its owner>
# drop bft as well: the weights go first there too
psql -X -q -d postgres -c "CREATE DATABASE ${DB}2" -c "ALTER ROLE sec_super SUPERUSER" >/dev/null
q2() { psql -X -q -t -A -d "${DB}2" "$@" 2>&1; }
q2 -c "SET client_min_messages = warning" -c "CREATE SCHEMA s1" -c "CREATE EXTENSION bft SCHEMA s1" \
   -c "CREATE TABLE docs AS SELECT * FROM (VALUES ('oil prices fall', 'markets'), ('team wins', 'sports')) v(body, label), generate_series(1, 10)" \
   -c "SELECT version FROM s1.bft_train('docs', 'body', 'label', 1, model => 'x', $TINY)" >/dev/null
n1=$(q2 -c "SELECT count(*) FROM pg_largeobject_metadata")
q2 -c "DROP SCHEMA s1 CASCADE" >/dev/null
check '[ "$n1" = 1 ] && [ "$(q2 -c "SELECT count(*) FROM pg_largeobject_metadata")" = 0 ] && [ "$(q2 -c "SELECT count(*) FROM pg_extension WHERE extname = '"'bft'"'")" = 0 ]' \
    "DROP SCHEMA <bft's schema> CASCADE drops the extension and its weights"
psql -X -q -t -A -U sec_super -d "${DB}2" -c "SET client_min_messages = warning" -c "CREATE EXTENSION bft" \
   -c "SELECT version FROM bft_train('docs', 'body', 'label', 1, model => 'x', $TINY)" >/dev/null 2>&1
n1=$(q2 -c "SELECT count(*) FROM pg_largeobject_metadata")
q2 -c "DROP OWNED BY sec_super" >/dev/null
check '[ "$n1" = 1 ] && [ "$(q2 -c "SELECT count(*) FROM pg_largeobject_metadata")" = 0 ] && [ "$(q2 -c "SELECT count(*) FROM pg_extension WHERE extname = '"'bft'"'")" = 0 ]' \
    "DROP OWNED BY <bft's owner> drops the extension and its weights"
psql -X -q -d postgres -c "DROP DATABASE ${DB}2" >/dev/null 2>&1

check '! grep -q "TOP-SECRET" "$LOG"' "no output of any attack showed a secret large object's bytes"
check '[ "$(q "SELECT pg_postmaster_start_time()")" = "$START" ] && [ "$(q "SELECT 1")" = 1 ]' \
    "the server stayed up: the postmaster never restarted"

psql -X -q -d postgres -c "DROP DATABASE $DB" >/dev/null 2>&1
for r in $ROLES; do psql -X -q -d postgres -c "DROP ROLE IF EXISTS $r" >/dev/null 2>&1; done
echo "RESULT: $PASS passed, $FAIL failed"
[ "$FAIL" -eq 0 ]
