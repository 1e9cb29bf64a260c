#!/usr/bin/env bash
# test_concurrency: eight sessions classify continuously while a training
# runs and deploys a version that labels the probe text differently: every
# statement succeeds, each statement sees one version only, and every session
# moves from the old label to the new one exactly once. (Trainings of one
# name at once and deployments during a statement are isolation specs:
# tests/isolation/specs/two_trainings.spec, deploy_during_classify.spec.)
#
# Needs PGHOST/PGPORT/PGUSER of a running cluster with bft installed.
# Prints "RESULT: P passed, F failed" last; exits non-zero on failure.
set -uo pipefail
cd "$(dirname "$0")/../.."
source tests/scripts/ops_lib.sh
DB=bft_concurrency
TMP="${BFT_TMP:-/tmp}/concurrency"
rm -rf "$TMP"; mkdir -p "$TMP"; chmod 777 "$TMP"

psql -X -q -d postgres -c "DROP DATABASE IF EXISTS $DB" -c "CREATE DATABASE $DB" >/dev/null || { echo "RESULT: 0 passed, 1 failed"; exit 1; }
q "CREATE EXTENSION bft" >/dev/null
ARCH='{"hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 64, "vocab_size": 200}'
# Two groups of texts; flip() swaps which group is 'up' and which is 'down'.
q "CREATE TABLE h (t text, grp int, l text);
   INSERT INTO h SELECT (ARRAY['shares rally as profit beats forecast', 'record quarter lifts the stock',
                               'stocks fall on weak earnings', 'profit warning sinks the shares'])[1 + i % 4],
                        (i % 4) / 2, CASE WHEN (i % 4) / 2 = 0 THEN 'up' ELSE 'down' END
                   FROM generate_series(1, 48) i;
   CREATE TABLE probe AS SELECT 'shares rally as profit beats forecast'::text AS t FROM generate_series(1, 100);
   CREATE TABLE ctl (stop bool); INSERT INTO ctl VALUES (false)" >/dev/null
TRAIN="SELECT version FROM bft_train('h', 't', 'l', epochs => 40, learning_rate => 3e-3, dropout => 0, architecture => '$ARCH'"

# ---- eight sessions classify while a training runs and deploys ----
q "$TRAIN, model => 'live')" >/dev/null
v1=$(q "SELECT bft_classify('shares rally as profit beats forecast', 'live')")
check "[ '$v1' = up ]" "version 1 labels the probe text 'up'"
for s in 1 2 3 4 5 6 7 8; do classify_loop "$DB" live 3000 "$TMP/s$s.out" & done
sleep 2
q "UPDATE h SET l = CASE WHEN grp = 0 THEN 'down' ELSE 'up' END" >/dev/null
t0=$(date +%s.%N)
v=$(q "SELECT version FROM bft_train('h', 't', 'l', epochs => 400, learning_rate => 3e-3, dropout => 0, model => 'live', architecture => '$ARCH')")
t1=$(date +%s.%N)
echo "  training under load: version $v in $(awk -v a=$t0 -v b=$t1 'BEGIN { printf "%.1f", b - a }') s"
sleep 2
q "UPDATE ctl SET stop = true" >/dev/null
wait
check "[ '$v' = 2 ] && [ \"\$(q \"SELECT bft_classify('shares rally as profit beats forecast', 'live')\")\" = down ]" \
    "the new version (2) is deployed and labels the probe text 'down'"
good=0
for s in 1 2 3 4 5 6 7 8; do
    sum=$(loop_summary "$TMP/s$s.out")
    echo "  session $s: $sum   (statements|max labels per statement|label sequence|errors)"
    [[ "$sum" =~ ^[0-9]+\|1\|up,down\|0$ ]] && good=$((good + 1))
    [ -s "$TMP/s$s.out.err" ] && head -n 3 "$TMP/s$s.out.err"
done
check "[ $good = 8 ]" "8 sessions: no errors, one version per statement, old label then new label"
check "[ \"\$(cat $TMP/s?.out | wc -l)\" -ge 80 ]" "they ran statements throughout ($(cat "$TMP"/s?.out | wc -l) in all)"

psql -X -q -d postgres -c "DROP DATABASE IF EXISTS $DB" >/dev/null 2>&1
echo "RESULT: $PASS passed, $FAIL failed"
[ "$FAIL" -eq 0 ]
