#!/usr/bin/env bash
# test_cron: retraining with real pg_cron.  An every-minute cron job
# `SELECT bft_train(...)` trains and deploys version 2 of a model whose
# training labels were flipped (so versions 1 and 2 label the probe text
# differently) while two other sessions classify continuously (one of them
# with parallel plans): zero errors,
# every statement (3000 rows each) sees one version only — including the
# statements that were running when the cron job committed — and each
# session moves from the old label to the new one exactly once.
#
# Needs the cluster of tests/run_all.sh: shared_preload_libraries='pg_cron',
# cron.database_name='bft_cron', cron.use_background_workers=on.
# Bounded wait: at most 150 s for the cron run.
# Prints "RESULT: P passed, F failed" last; exits non-zero on failure.
set -uo pipefail
cd "$(dirname "$0")/../.."
source tests/scripts/ops_lib.sh
DB=bft_cron
TMP="${BFT_TMP:-/tmp}/cron"
rm -rf "$TMP"; mkdir -p "$TMP"; chmod 777 "$TMP"
abort() { echo "FAIL - $*"; echo "RESULT: $PASS passed, $((FAIL + 1)) failed"; exit 1; }

case "$(psql -X -t -A -d postgres -c 'SHOW shared_preload_libraries' 2>&1)" in
    *pg_cron*) ;;
    *) abort "pg_cron is not in shared_preload_libraries of this cluster" ;;
esac
[ "$(psql -X -t -A -d postgres -c 'SHOW cron.database_name')" = "$DB" ] || abort "cron.database_name is not $DB"
# Never drop this database: pg_cron's launcher is connected to it once it
# exists and, when terminated, is not restarted.  Reuse it, start clean.
if [ -z "$(psql -X -t -A -d postgres -c "SELECT 1 FROM pg_database WHERE datname = '$DB'")" ]; then
    psql -X -q -d postgres -c "CREATE DATABASE $DB" >/dev/null || abort "cannot create $DB"
fi
q "CREATE EXTENSION IF NOT EXISTS pg_cron; DROP EXTENSION IF EXISTS bft CASCADE; CREATE EXTENSION bft;
   DROP TABLE IF EXISTS tweets, probe, ctl; DROP FUNCTION IF EXISTS gate(int); SELECT lo_unlink(oid) FROM pg_largeobject_metadata;
   SELECT cron.unschedule(jobid) FROM cron.job; DELETE FROM cron.job_run_details" >/dev/null
check "[ \"\$(q \"SELECT count(*) FROM pg_extension WHERE extname IN ('pg_cron', 'bft')\")\" = 2 ]" "pg_cron and bft installed in $DB"

ARCH='{"hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 64, "vocab_size": 200}'
q "CREATE TABLE tweets (text text, grp int, label text);
   INSERT INTO tweets
   SELECT (ARRAY['shares rally as profit beats forecast', 'record quarter lifts the stock',
                 'stocks fall on weak earnings', 'profit warning sinks the shares'])[1 + i % 4],
          (i % 4) / 2, CASE WHEN (i % 4) / 2 = 0 THEN 'up' ELSE 'down' END
     FROM generate_series(1, 48) i;
   CREATE TABLE probe AS SELECT i, 'shares rally as profit beats forecast'::text AS t FROM generate_series(1, 3000) i;
   -- gate(i): at row 1500, wait until no transaction holds advisory lock 42.
   CREATE FUNCTION gate(i int) RETURNS bool LANGUAGE plpgsql AS
     \$\$ BEGIN IF i = 1500 THEN PERFORM pg_advisory_xact_lock_shared(42); END IF; RETURN true; END \$\$;
   CREATE TABLE ctl (stop bool); INSERT INTO ctl VALUES (false)" >/dev/null
TRAIN="SELECT version FROM bft_train('tweets', 'text', 'label', epochs => 400, learning_rate => 3e-3, dropout => 0, model => 'topics', architecture => '$ARCH')"
v1=$(q "$TRAIN")
check "[ '$v1' = 1 ] && [ \"\$(q \"SELECT bft_classify('shares rally as profit beats forecast', 'topics')\")\" = up ]" \
    "version 1 (trained by hand) labels the probe text 'up'"

# New rows arrive: here the labels flip, so the next version says 'down'.
q "UPDATE tweets SET label = CASE WHEN grp = 0 THEN 'down' ELSE 'up' END" >/dev/null
jobid=$(q "SELECT cron.schedule('bft_retrain', '* * * * *', \$cron\$SET client_min_messages = warning; SET bft.threads = 1; SELECT pg_advisory_xact_lock(42); $TRAIN; SELECT pg_sleep(1)\$cron\$)")
check "[[ '$jobid' =~ ^[0-9]+$ ]]" "cron.schedule('bft_retrain', '* * * * *', 'SELECT bft_train(...)') (job $jobid)"
# The same minute, a second cron job only submits a background training.
ajob=$(q "SELECT cron.schedule('bft_retrain_async', '* * * * *', \$cron\$SELECT bft_train_async('tweets', 'text', 'label', epochs => 50, model => 'topics_async', architecture => '$ARCH')\$cron\$)")

# Session 2 classifies with parallel plans (Gather, 2 workers per statement).
PAROPTS="-c parallel_setup_cost=0 -c parallel_tuple_cost=0 -c min_parallel_table_scan_size=0 -c max_parallel_workers_per_gather=2"
plan=$(PGOPTIONS="$PGOPTIONS $PAROPTS" q "EXPLAIN (COSTS OFF) SELECT bft_classify(t, 'topics') FROM probe" | paste -sd' ')
check "echo '$plan' | grep -q 'Gather' && echo '$plan' | grep -q 'Parallel Seq Scan'" "session 2's statements run in parallel workers ($plan)"
# Session 1's statements pass gate(i): one that reaches row 1500 while the
# cron job's transaction (which holds lock 42 from its start) is open waits
# there and classifies its remaining 1500 rows after the commit.
classify_loop "$DB" topics 5000 "$TMP/s1.out" "gate(i)" &
PGOPTIONS="$PGOPTIONS $PAROPTS" classify_loop "$DB" topics 5000 "$TMP/s2.out" &
t0=$(date +%s)
status=""
while [ $(( $(date +%s) - t0 )) -lt 150 ]; do
    status=$(q "SELECT status FROM cron.job_run_details WHERE jobid = ${jobid:-0} AND status IN ('succeeded', 'failed') ORDER BY runid LIMIT 1")
    [ -n "$status" ] && break
    sleep 1
done
waited=$(( $(date +%s) - t0 ))
run=$(q "SELECT status || '|' || coalesce(return_message, '') FROM cron.job_run_details WHERE jobid = ${jobid:-0} ORDER BY runid LIMIT 1")
jstart=$(q "SELECT start_time FROM cron.job_run_details WHERE jobid = ${jobid:-0} ORDER BY runid LIMIT 1")
q "SELECT cron.unschedule('bft_retrain'); SELECT cron.unschedule('bft_retrain_async')" >/dev/null
sleep 2
q "UPDATE ctl SET stop = true" >/dev/null
wait
echo "  cron run after ${waited} s: $run"
check "[ '$status' = succeeded ]" "the cron job ran and succeeded within 150 s"
check "[ \"\$(q \"SELECT string_agg(version || ':' || (deployed_at IS NOT NULL), ',' ORDER BY version) FROM bft.models WHERE name = 'topics'\")\" = '1:true,2:true' ]" \
    "it stored and deployed version 2"
check "[ \"\$(q \"SELECT bft_classify('shares rally as profit beats forecast', 'topics')\")\" = down ]" "version 2 labels the probe text 'down'"

for _ in $(seq 1 300); do
    [ "$(q "SELECT state FROM bft.jobs WHERE model = 'topics_async'")" = succeeded ] && break
    sleep 0.1
done
arun=$(q "SELECT status FROM cron.job_run_details WHERE jobid = ${ajob:-0} ORDER BY runid LIMIT 1")
check "[ '$arun' = succeeded ] && [ \"\$(q \"SELECT state || ':' || version FROM bft.jobs WHERE model = 'topics_async'\")\" = 'succeeded:1' ]" \
    "a cron job calling bft_train_async returns at once; the background job trains version 1 of topics_async"
for s in 1 2; do
    sum=$(loop_summary "$TMP/s$s.out")
    echo "  session $s: $sum   (statements|max labels per statement|label sequence|errors)"
    [ -s "$TMP/s$s.out.err" ] && head -n 3 "$TMP/s$s.out.err"
    check "[[ '$sum' =~ ^[0-9]+\|1\|up,down\|0$ ]]" "session $s: no errors, one version per statement, 'up' then 'down'"
done
# The cron job holds lock 42 from its start until its commit (training plus
# a 1 s sleep).  A session 1 statement that started within 0.5 s of the job's
# start and took over 0.8 s waited at row 1500 for that commit: it classified
# half its rows before and half after the deployment, and must have seen one
# version — version 1, whose snapshot it started with.
blocked=$(psql -X -q -t -A -d "$DB" -c "CREATE TEMP TABLE s1 (st timestamptz, en timestamptz, n int, d int, l text)" \
          -c "\\copy s1 FROM '$TMP/s1.out' (FORMAT csv, DELIMITER '|')" \
          -c "SELECT count(*) || '|' || coalesce(string_agg(DISTINCT l || ':' || d || ':' || n, ','), '')
                FROM s1 WHERE st < '${jstart:-infinity}'::timestamptz + interval '0.5 s' AND en - st > interval '0.8 s'" 2>&1 | tail -n 1)
echo "  session 1 statements that waited for the deployment's commit: $blocked (count|label:labels per statement:rows)"
check "[[ '$blocked' =~ ^[1-9][0-9]*\|up:1:3000$ ]]" \
    "a 3000-row statement spanning the deployment's commit saw one version (the one its snapshot started with)"

q "SELECT cron.unschedule(jobid) FROM cron.job; DROP EXTENSION bft CASCADE; DROP TABLE tweets, probe, ctl; DROP FUNCTION gate(int);
   SELECT lo_unlink(oid) FROM pg_largeobject_metadata" >/dev/null 2>&1
echo "RESULT: $PASS passed, $FAIL failed"
[ "$FAIL" -eq 0 ]
