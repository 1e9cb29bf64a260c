#!/usr/bin/env bash
# test_replication: bft on a streaming-replication hot standby.
#
# Starts its own primary and a hot standby made with `pg_basebackup -R`
# (streaming over the unix socket, different ports) and checks that
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
#
# Uses BFT_TMP (tests/run_all.sh sets it) for its clusters.  Prints
# "RESULT: P passed, F failed" last.
set -uo pipefail
cd "$(dirname "$0")/../.." || exit 1
source tests/scripts/cluster.sh
set +e

PASS=0; FAIL=0
ok()   { echo "ok   - $*"; PASS=$((PASS + 1)); }
fail() { echo "FAIL - $*"; FAIL=$((FAIL + 1)); }
check() { if eval "$1"; then ok "$2"; else fail "$2"; fi; }
finish() { echo "RESULT: $PASS passed, $FAIL failed"; [ "$FAIL" -eq 0 ]; exit $?; }

OWN_TMP=""
if [ -z "${BFT_TMP:-}" ]; then OWN_TMP=$(mktemp -d /tmp/bft-repl.XXXXXX); chmod 755 "$OWN_TMP"; BFT_TMP=$OWN_TMP; fi
D="$BFT_TMP/repl"
P="$D/primary"; PP=${BFT_REPL_PORT:-55441}
S="$D/standby"; SP=$((PP + 1))
cleanup() {
    cluster_stop "$S"; cluster_stop "$P"
    rm -rf "$D"; [ -n "$OWN_TMP" ] && rm -rf "$OWN_TMP"
}
trap cleanup EXIT
rm -rf "$D"; mkdir -p "$D"
[ "$(id -u)" -eq 0 ] && chown "$(cluster_user)": "$D"

DB=bft_repl
qp() { psql -X -q -t -A -v ON_ERROR_STOP=1 -h "$P" -p "$PP" -U postgres -d "$DB" -c "$1"; }
qs() { psql -X -q -t -A -v ON_ERROR_STOP=1 -h "$S" -p "$SP" -U postgres -d "$DB" -c "$1"; }
# wait_replay: until the standby has replayed the primary's current WAL position (30 s at most).
wait_replay() {
    local lsn i
    lsn=$(qp "SELECT pg_current_wal_lsn()")
    for i in $(seq 1 300); do
        [ "$(qs "SELECT pg_last_wal_replay_lsn() >= '$lsn'::pg_lsn" 2>/dev/null)" = t ] && return 0
        sleep 0.1
    done
    return 1
}
ARCH='{"hidden_size":32,"num_hidden_layers":1,"num_attention_heads":2,"intermediate_size":64,"vocab_size":200,"max_position_embeddings":64}'
train() {   # train SEED: a new version of model "topics" (deployed), returns its version
    qp "SET client_min_messages = warning; SET bft.threads = 1;
        SELECT version FROM bft_train('docs', 'body', 'label', epochs => 15, model => 'topics', seed => $1,
               mlm_epochs => 1, batch_size => 8, learning_rate => 2e-3, max_length => 32, architecture => '$ARCH')"
}

# ---- primary ---------------------------------------------------------------
if ! cluster_start "$P" "$PP" "wal_level = replica" "max_wal_senders = 4" "hot_standby = on" \
        >"$D/primary.start.log" 2>&1; then
    cat "$D/primary.start.log"; fail "primary starts"; finish
fi
psql -X -q -h "$P" -p "$PP" -U postgres -d postgres -c "CREATE DATABASE $DB" || { fail "create database"; finish; }
qp "CREATE EXTENSION bft" >/dev/null
qp "CREATE TABLE docs AS
    SELECT i AS id,
           (ARRAY['central bank raises interest rates', 'shares rally as profit beats forecast',
                  'team wins the championship final', 'oil prices fall on weak demand'])[1 + i % 4]
           || ' ' || (ARRAY['today', 'again', 'this week', 'sharply', 'in march'])[1 + i % 5] AS body,
           (ARRAY['economy', 'markets', 'sports', 'markets'])[1 + i % 4] AS label
      FROM generate_series(1, 60) i" >/dev/null
v1=$(train 1)
check '[ "$v1" = 1 ]' "model trained on the primary (version ${v1:-?})"

# ---- standby: pg_basebackup -R, streaming over the unix socket -------------
mkdir -p "$S"; [ "$(id -u)" -eq 0 ] && chown "$(cluster_user)": "$S"; chmod 700 "$S"
as_cluster_user "$PG_BINDIR/pg_basebackup" -h "$P" -p "$PP" -U postgres -D "$S/data" -R -X stream -c fast \
    >"$D/basebackup.log" 2>&1
check '[ -f "$S/data/standby.signal" ]' "pg_basebackup -R made a standby data directory"
printf "port = %s\nunix_socket_directories = '%s'\nhot_standby = on\n" "$SP" "$S" >>"$S/data/postgresql.conf"
if ! as_cluster_user "$PG_BINDIR/pg_ctl" -D "$S/data" -l "$S/server.log" -w -t 60 start >/dev/null 2>&1; then
    cat "$D/basebackup.log" "$S/server.log"; fail "standby starts"; finish
fi
check '[ "$(qs "SELECT pg_is_in_recovery()")" = t ]' "standby is in recovery (hot standby)"
check '[ "$(qp "SELECT state FROM pg_stat_replication")" = streaming ]' "primary streams to the standby"
check 'wait_replay' "standby replays the primary's WAL"
check '[ "$(qs "SHOW transaction_read_only")" = on ]' "standby transactions are read-only"

# ---- every read-only function gives the primary's exact results ------------
same() {    # same NAME QUERY: identical non-empty output on primary and standby
    local a b
    a=$(qp "$2" 2>&1); b=$(qs "$2" 2>&1)
    if [ -n "$a" ] && [ "$a" = "$b" ] && ! echo "$a" | grep -q ERROR; then ok "$1"; else
        fail "$1"; echo "  primary: $(echo "$a" | head -c 300)"; echo "  standby: $(echo "$b" | head -c 300)"; fi
}
PROBA="SELECT id, bft_predict_proba(body, 'topics') FROM docs ORDER BY id"
same "bft_predict_proba: identical arrays on the standby (60 rows)" "$PROBA"
same "bft_classify (named model)" "SELECT string_agg(bft_classify(body, 'topics'), ',' ORDER BY id) FROM docs"
same "bft_classify (default model)" "SELECT string_agg(bft_classify(body), ',' ORDER BY id) FROM docs"
same "bft_predict top_k 3" "SELECT label, label_id, score FROM bft_predict('central bank raises rates', 'topics', 3)"
same "bft_classify_batch" "SELECT bft_classify_batch(array_agg(body ORDER BY id), 'topics') FROM docs"
same "bft_fill_mask" "SELECT token, token_id, score FROM bft_fill_mask('central bank [MASK] interest rates', 5, 'topics')"
same "bft_tokenize" "SELECT token, token_id FROM bft_tokenize('Team wins the Championship!', 'topics')"
same "bft_evaluate" "SELECT accuracy, macro_f1, rows, report FROM bft_evaluate('topics', 'docs', 'body', 'label')"
same "bft_embed" "SELECT id, bft_embed(body, 'topics') FROM docs ORDER BY id"
same "bft_embed_batch" "SELECT idx, embedding FROM bft_embed_batch((SELECT array_agg(body ORDER BY id) FROM docs), 'topics', 'max+normalize')"
learned=$(qp "SELECT accuracy >= 0.9 FROM bft_evaluate('topics', 'docs', 'body', 'label')")
check '[ "$learned" = t ]' "the model learned its table (accuracy >= 0.9), so probabilities are not uniform"

# Parallel workers on the standby load the model too.
PAR="SET parallel_setup_cost = 0; SET parallel_tuple_cost = 0; SET min_parallel_table_scan_size = 0;
     SET max_parallel_workers_per_gather = 2;
     SELECT set_config(CASE WHEN current_setting('server_version_num')::int >= 160000
                            THEN 'debug_parallel_query' ELSE 'force_parallel_mode' END, 'on', false);"
plan=$(qs "$PAR EXPLAIN (ANALYZE, COSTS OFF, TIMING OFF, SUMMARY OFF) SELECT bft_predict_proba(body, 'topics') FROM docs")
check 'echo "$plan" | grep -Eq "Workers Launched: [1-9]"' "parallel workers launched on the standby"
MD5="SELECT md5(string_agg(p::text, ';' ORDER BY id)) FROM (SELECT id, bft_predict_proba(body, 'topics') p FROM docs) s"
par_s=$(qs "$PAR $MD5" | tail -n 1); par_p=$(qp "$MD5")
check '[ -n "$par_p" ] && [ "$par_s" = "$par_p" ]' "parallel classification on the standby equals the primary's"

# ---- writes are refused on the standby: SQLSTATE 25006, no crash ----------
refused() {  # refused NAME QUERY
    local out
    out=$(psql -X -q -t -A -v VERBOSITY=verbose -h "$S" -p "$SP" -U postgres -d "$DB" -c "$2" 2>&1)
    if grep -q "ERROR:  25006" <<<"$out"; then ok "$1 refused on the standby: $(grep -m1 ERROR <<<"$out" | cut -c1-90)"
    else fail "$1 refused with 25006"; echo "  got: $(echo "$out" | head -c 300)"; fi
}
refused "bft_train" "SELECT * FROM bft_train('docs', 'body', 'label', 1, model => 'x', architecture => '$ARCH')"
refused "bft_import_model" "SELECT * FROM bft_import_model('x', '$PWD/tests/data/ckpt/tiny')"
refused "bft_deploy" "SELECT bft_deploy('topics', 1)"
refused "bft_drop_model" "SELECT bft_drop_model('topics')"
check '[ "$(qs "SELECT count(*) FROM bft.models")" = 1 ] && ! grep -Eq "terminated by signal|PANIC" "$S/server.log"' \
    "standby still up, no backend crashed, models unchanged"

# Background jobs (bft_train_async): refused on the standby; a job running on
# the primary shows as running there too (its worker is on the primary).
refused "bft_train_async" "SELECT bft_train_async('docs', 'body', 'label', 1, model => 'x', architecture => '$ARCH')"
job=$(qp "SELECT bft_train_async('docs', 'body', 'label', epochs => 100000, model => 'slowjob', batch_size => 8,
                                  max_length => 32, architecture => '$ARCH')")
for _ in $(seq 1 200); do [ "$(qp "SELECT state FROM bft.jobs WHERE id = ${job:-0}")" = running ] && break; sleep 0.1; done
wait_replay
check '[ -n "$job" ] && [ "$(qs "SELECT state FROM bft.jobs WHERE id = $job")" = running ]' \
    "a job running on the primary shows as running on the standby (not as a dead worker)"
refused "bft_cancel_job" "SELECT bft_cancel_job(${job:-0})"
qp "SELECT bft_cancel_job(${job:-0})" >/dev/null
for _ in $(seq 1 100); do [ "$(qp "SELECT state FROM bft.jobs WHERE id = ${job:-0}")" = cancelled ] && break; sleep 0.1; done
wait_replay
check '[ "$(qs "SELECT state FROM bft.jobs WHERE id = ${job:-0}")" = cancelled ]' "the job cancelled on the primary shows as cancelled on the standby"

# Export works on the standby (it reads rows and writes server files only).
check '[ "$(qs "SELECT bft_export_model('\''topics'\'', '\''$D/from_standby'\'')")" = 1 ] && [ -f "$D/from_standby/model.safetensors" ]' \
    "bft_export_model on the standby writes an HF directory"
qp "SELECT version FROM bft_import_model('from_standby', '$D/from_standby')" >/dev/null
check '[ "$(qp "$PROBA")" = "$(qp "SELECT id, bft_predict_proba(body, '\''from_standby'\'') FROM docs ORDER BY id")" ]' \
    "a model exported on the standby and imported on the primary classifies identically"

# ---- new deployments are used by the standby's next statement -------------
# One standby session: classify (v1 cached), then the primary trains v2 and we
# wait for replay (psql's \! runs a shell step), classify again in the same
# backend, then the primary rolls back to v1 with bft_deploy, and again.
cat >"$D/step.sh" <<STEP
set -u
ARCH='$ARCH'
qp() { psql -X -q -t -A -v ON_ERROR_STOP=1 -h "$P" -p "$PP" -U postgres -d "$DB" -c "\$1"; }
qs() { psql -X -q -t -A -h "$S" -p "$SP" -U postgres -d "$DB" -c "\$1"; }
if [ "\$1" = train ]; then
    qp "SET client_min_messages = warning; SET bft.threads = 1;
        SELECT version FROM bft_train('docs', 'body', 'label', epochs => 15, model => 'topics', seed => 2,
               mlm_epochs => 1, batch_size => 8, learning_rate => 3e-3, max_length => 32, architecture => '\$ARCH')" >"$D/v2.txt"
elif [ "\$1" = rollback ]; then
    qp "SELECT bft_deploy('topics', 1)" >/dev/null
else
    qp "SELECT bft_drop_model('topics')" >"$D/dropped.txt"
fi
[ "\$1" = drop ] || qp "$PROBA" >"$D/primary_\$1.txt"
lsn=\$(qp "SELECT pg_current_wal_lsn()")
for i in \$(seq 1 300); do
    [ "\$(qs "SELECT pg_last_wal_replay_lsn() >= '\$lsn'::pg_lsn")" = t ] && exit 0
    sleep 0.1
done
echo "replay timeout" >&2; exit 1
STEP
primary_v1=$(qp "$PROBA")
psql -X -q -t -A -h "$S" -p "$SP" -U postgres -d "$DB" >"$D/session.txt" 2>&1 <<SQL
\o $D/s_v1.txt
$PROBA;
\o $D/s_pid1.txt
SELECT pg_backend_pid();
\o
\! bash $D/step.sh train
\o $D/s_v2.txt
$PROBA;
\o $D/s_pid2.txt
SELECT pg_backend_pid();
\o
\! bash $D/step.sh rollback
\o $D/s_v1b.txt
$PROBA;
\o $D/s_pid3.txt
SELECT pg_backend_pid();
\o
\! bash $D/step.sh drop
\o $D/s_drop.txt
$PROBA;
\o $D/s_alive.txt
SELECT 'alive:' || pg_backend_pid();
SQL
cat "$D/session.txt"
rd() { cat "$D/$1" 2>/dev/null; }
check '[ "$(rd v2.txt)" = 2 ]' "version 2 trained and deployed on the primary"
check '[ -n "$(rd s_pid1.txt)" ] && [ "$(rd s_pid1.txt)" = "$(rd s_pid2.txt)" ] && [ "$(rd s_pid2.txt)" = "$(rd s_pid3.txt)" ]' \
    "all standby statements ran in one backend"
check '[ -n "$primary_v1" ] && [ "$(rd s_v1.txt)" = "$primary_v1" ]' "standby session classifies with v1 first"
check '[ -s "$D/primary_train.txt" ] && [ "$(rd primary_train.txt)" != "$primary_v1" ]' "v2's probabilities differ from v1's on the primary"
check '[ "$(rd s_v2.txt)" = "$(rd primary_train.txt)" ]' "after replay the standby's next statement uses v2 (identical probabilities)"
check '[ "$(rd s_v1b.txt)" = "$primary_v1" ] && [ "$(rd primary_rollback.txt)" = "$primary_v1" ]' \
    "rollback with bft_deploy(topics, 1) on the primary: the standby's next statement uses v1 again"
check '[ "$(rd dropped.txt)" = 2 ] && grep -q "ERROR:  model \"topics\" does not exist" "$D/session.txt" && [ "$(rd s_alive.txt)" = "alive:$(rd s_pid1.txt)" ]' \
    "model dropped on the primary: the standby session's next statement says it does not exist, and the session goes on"
check '[ "$(qs "SELECT count(*) FROM bft.progress")" = 0 ]' "bft.progress can be read on the standby"

# ---- failover: the promoted standby trains and deploys like a primary -------
as_cluster_user "$PG_BINDIR/pg_ctl" -D "$S/data" -w -t 60 promote >/dev/null 2>&1
check '[ "$(qs "SELECT pg_is_in_recovery()")" = f ]' "standby promoted"
out=$(qs "SET client_min_messages = warning; SET bft.threads = 1;
          SELECT version FROM bft_train('docs', 'body', 'label', epochs => 15, model => 'topics', seed => 3,
                 batch_size => 8, learning_rate => 2e-3, max_length => 32, architecture => '$ARCH')" 2>&1)
check '[ "$out" = 1 ] && [ "$(qs "SELECT count(*) FROM bft_evaluate('\''topics'\'', '\''docs'\'', '\''body'\'', '\''label'\'')")" = 1 ]' \
    "after promotion, bft_train works there and the new model classifies (${out:0:80})"
check '[ "$(qs "SELECT bft_predict_proba(body, '\''from_standby'\'') FROM docs WHERE id = 1")" = "$(qp "SELECT bft_predict_proba(body, '\''from_standby'\'') FROM docs WHERE id = 1")" ]' \
    "models replicated before the failover classify identically on the promoted server"

finish
