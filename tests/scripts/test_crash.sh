#!/usr/bin/env bash
# test_crash: kill -9 of a training backend (while training, and after
# bft_train wrote its large object but before COMMIT) and of a background
# training job's worker.  Each time the server recovers, no large object is
# orphaned (pg_largeobject_metadata matches bft.models.weights), no version
# appears, the deployed model classifies exactly as before, and the killed
# job shows as failed in bft.jobs.  Runs on its own throwaway cluster
# (a crash restarts every backend of a cluster).
#
# Prints "RESULT: P passed, F failed" last; exits non-zero on failure.
set -uo pipefail
cd "$(dirname "$0")/../.."
TMP="${BFT_TMP:-/tmp}"
PASS=0; FAIL=0
ok()   { echo "ok   - $*"; PASS=$((PASS + 1)); }
fail() { echo "FAIL - $*"; FAIL=$((FAIL + 1)); }
check() { if eval "$1"; then ok "$2"; else fail "$2"; fi; }
export PGOPTIONS="-c client_min_messages=warning"

source tests/scripts/cluster.sh; set +e +u
CL="$TMP/crash"
rm -rf "$CL"
trap 'cluster_stop "$CL"' EXIT
cluster_start "$CL" 54364 >/dev/null 2>&1 || { cat "$CL/server.log" 2>/dev/null | tail; echo "RESULT: 0 passed, 1 failed"; exit 1; }
DB=bft_crash
q() { psql -X -q -t -A -d "$DB" -c "$1" 2>&1; }

ARCH='{"hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 64, "vocab_size": 200}'
psql -X -q -d postgres -c "CREATE DATABASE $DB" >/dev/null
q "CREATE EXTENSION bft; ALTER DATABASE $DB SET bft.threads = 1" >/dev/null
q "CREATE TABLE h (t text, l text);
   INSERT INTO h SELECT (ARRAY['shares rally as profit beats forecast', 'stocks fall on weak earnings',
                               'team wins the championship final', 'coach fired after losing season'])[1 + i % 4],
                        (ARRAY['markets', 'markets', 'sports', 'sports'])[1 + i % 4]
                   FROM generate_series(1, 40) i" >/dev/null
q "SELECT version FROM bft_train('h', 't', 'l', epochs => 30, learning_rate => 2e-3, model => 'm', architecture => '$ARCH')" >/dev/null
PROBE="SELECT string_agg(t || '=' || bft_classify(t, 'm') || ':' || (bft_predict_proba(t, 'm'))::text, ';' ORDER BY t) FROM (SELECT DISTINCT t FROM h) s"
before=$(q "$PROBE")
echo "# before: $before"
check "[[ '$before' == *'team wins the championship final=sports'* ]]" "the deployed model classifies (baseline)"

# consistent: no large object without a model row and no row without its large object.
consistent() {
    q "SELECT (SELECT count(*) FROM pg_largeobject_metadata l WHERE NOT EXISTS (SELECT 1 FROM bft.models m WHERE m.weights = l.oid))
         || '|' || (SELECT count(*) FROM bft.models m WHERE NOT EXISTS (SELECT 1 FROM pg_largeobject_metadata l WHERE l.oid = m.weights))
         || '|' || (SELECT count(DISTINCT loid) FROM pg_largeobject WHERE loid NOT IN (SELECT weights FROM bft.models))
         || '|' || (SELECT string_agg(name || version, ',' ORDER BY name, version) FROM bft.models)"
}
# recovered: the server accepts queries again (a crash restart takes a few seconds).
recovered() {
    local i
    for i in $(seq 1 300); do
        [ "$(psql -X -q -t -A -d "$DB" -c 'SELECT 1' 2>/dev/null)" = 1 ] && return 0
        sleep 0.1
    done
    return 1
}
# wait_training MODEL: pid of the backend training MODEL (phase training, step > 0).
wait_training() {
    local i p
    for i in $(seq 1 300); do
        p=$(q "SELECT pid FROM bft.progress WHERE model = '$1' AND phase = 'training' AND step > 0")
        [ -n "$p" ] && { echo "$p"; return 0; }
        sleep 0.1
    done
    return 1
}
check "[ \"\$(consistent)\" = '0|0|0|m1' ]" "consistent before the crashes"

# 1. kill -9 while training.
psql -X -q -d "$DB" -c "SELECT * FROM bft_train('h', 't', 'l', epochs => 90000, model => 'm', architecture => '$ARCH')" >/dev/null 2>&1 &
pid=$(wait_training m)
check "[ -n '$pid' ]" "a training backend is running (pid $pid)"
kill -9 "$pid" 2>/dev/null
wait
check "recovered" "the server recovers after kill -9 of a training backend"
check "grep -q 'was terminated by signal 9' '$CL/server.log' && grep -q 'all server processes terminated; reinitializing' '$CL/server.log'" \
    "the log shows the crash restart"
check "[ \"\$(consistent)\" = '0|0|0|m1' ]" "no orphaned large object, no new version"
check "[ \"\$(q \"\$PROBE\")\" = '$before' ]" "the deployed model classifies exactly as before"
check "[ \"\$(q 'SELECT count(*) FROM bft.progress')\" = 0 ]" "bft.progress shows no dead training"

# 2. kill -9 after bft_train wrote the large object and row, before COMMIT.
psql -X -q -d "$DB" -c "BEGIN" -c "SELECT version FROM bft_train('h', 't', 'l', epochs => 5, model => 'm', architecture => '$ARCH')" \
    -c "SELECT pg_sleep(60)" -c "COMMIT" >/dev/null 2>&1 &
pid=$(poll 300 "SELECT pid FROM pg_stat_activity WHERE query = 'SELECT pg_sleep(60)' AND state = 'active'")
check "[ -n '$pid' ] && [ \"\$(q \"SELECT count(*) FROM pg_locks WHERE pid = $pid AND locktype = 'relation' AND mode = 'RowExclusiveLock' AND relation IN ('pg_largeobject'::regclass, 'bft.models'::regclass)\")\" = 2 ]" \
    "a transaction has written a model large object and row, uncommitted (pid $pid)"
kill -9 "$pid" 2>/dev/null
wait
check "recovered" "the server recovers"
check "[ \"\$(consistent)\" = '0|0|0|m1' ]" "the uncommitted large object and row are gone"
check "[ \"\$(q \"\$PROBE\")\" = '$before' ]" "the deployed model classifies exactly as before"

# 3. kill -9 of a background training job's worker.
id=$(q "SELECT bft_train_async('h', 't', 'l', epochs => 90000, model => 'm', architecture => '$ARCH')")
pid=$(wait_training m)
check "[ -n '$pid' ] && [ \"\$(q \"SELECT pid FROM bft.jobs WHERE id = $id AND state = 'running'\")\" = '$pid' ]" \
    "job $id runs in worker $pid"
kill -9 "$pid" 2>/dev/null
check "recovered" "the server recovers after kill -9 of a job worker"
row=$(q "SELECT state || '|' || error FROM bft.jobs WHERE id = $id")
echo "  $row"
check "[[ '$row' == 'failed|the background worker exited without recording a result'* ]]" "bft.jobs shows the killed job as failed"
check "[ \"\$(consistent)\" = '0|0|0|m1' ]" "no orphaned large object, no new version"
check "[ \"\$(q \"\$PROBE\")\" = '$before' ]" "the deployed model classifies exactly as before"
id2=$(q "SELECT bft_train_async('h', 't', 'l', epochs => 30, learning_rate => 2e-3, model => 'm', architecture => '$ARCH')")
for _ in $(seq 1 300); do
    [ "$(q "SELECT state FROM bft.jobs WHERE id = ${id2:-0}")" = succeeded ] && break
    sleep 0.1
done
check "[ \"\$(q \"SELECT state FROM bft.train_jobs WHERE id = $id\")|\$(q \"SELECT state || version FROM bft.jobs WHERE id = ${id2:-0}\")\" = 'failed|succeeded2' ]" \
    "the next job records the dead one as failed and trains version 2"
check "[ \"\$(consistent)\" = '0|0|0|m1,m2' ]" "large objects and versions consistent after it"

echo "RESULT: $PASS passed, $FAIL failed"
[ "$FAIL" -eq 0 ]
