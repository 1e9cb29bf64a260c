#!/usr/bin/env bash
# test_deploy: deployment policy and rollback.  deploy => 'if_better'
# deploys a better version, keeps a worse one and a tie undeployed, and
# records the decision and both scores in metrics; the deployed version's
# score is measured on the new run's validation rows (same seed: it equals
# that version's own validation accuracy); deploy => 'never' stores without
# deploying; bft_deploy(name, older_version) rolls back (classification
# follows, from the next statement), a rolled-back bft_deploy changes nothing.
#
# Needs PGHOST/PGPORT/PGUSER of a running cluster with bft installed.
# Prints "RESULT: P passed, F failed" last; exits non-zero on failure.
set -uo pipefail
cd "$(dirname "$0")/../.."
source tests/scripts/ops_lib.sh
DB=bft_deploy

psql -X -q -d postgres -c "DROP DATABASE IF EXISTS $DB" -c "CREATE DATABASE $DB" >/dev/null || { echo "RESULT: 0 passed, 1 failed"; exit 1; }
q "CREATE EXTENSION bft" >/dev/null
# Four topics; one row in five carries a wrong label, so no version is perfect
# and different row subsets score differently.
q "CREATE TABLE h AS
   SELECT (ARRAY['shares rally as profit beats forecast', 'stocks fall on weak earnings',
                 'team wins the championship final', 'coach fired after losing season'])[1 + i % 4]
          || ' ' || (ARRAY['today', 'again', 'analysts say', 'reports', 'in march'])[1 + (i * 7) % 5] AS t,
          (ARRAY['up', 'down', 'win', 'loss'])[1 + (CASE WHEN i % 5 = 0 THEN i + 1 + i / 5 ELSE i END) % 4] AS l
     FROM generate_series(1, 200) i" >/dev/null
A='{"hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 64, "vocab_size": 300}'
train() {  # train EPOCHS LR DEPLOY: prints the new version
    q "SELECT version FROM bft_train('h', 't', 'l', epochs => $1, learning_rate => $2, deploy => '$3', model => 'm',
                                     validation_fraction => 0.25, dropout => 0, architecture => '$A')"
}
PROBE="SELECT string_agg(bft_predict_proba(t, 'm')::text, ';' ORDER BY t) FROM (SELECT DISTINCT t FROM h) s"
deployed() { q "SELECT version FROM bft.model_list WHERE name = 'm' AND deployed"; }
dec() { q "SELECT concat_ws('|', metrics->'deploy'->>'policy', metrics->'deploy'->>'deployed', metrics->'deploy'->>'compared_version',
                            metrics->'deploy'->>'new_accuracy', metrics->'deploy'->>'compared_accuracy')
             FROM bft.models WHERE name = 'm' AND version = $1"; }

v1=$(train 12 2e-3 always); p1=$(q "$PROBE")
acc1=$(q "SELECT metrics->>'validation_accuracy' FROM bft.models WHERE name = 'm' AND version = 1")
echo "  v1 (12 epochs, lr 2e-3): validation accuracy $acc1"
check "[ '$v1' = 1 ] && [ \"\$(deployed)\" = 1 ]" "deploy => 'always' deploys version 1"

v2=$(train 60 3e-3 if_better); d2=$(dec 2); p2=$(q "$PROBE")
echo "  v2 decision: $d2   (policy|deployed|compared_version|new_accuracy|compared_accuracy)"
check "[ '$v2' = 2 ] && [ \"\$(deployed)\" = 2 ] && [[ '$d2' == if_better\|true\|1\|* ]]" "if_better deploys a better version 2 (decision recorded)"
check "awk -F'|' '{ exit !(\$4 > \$5) }' <<<'$d2'" "metrics hold both scores, the new one higher"
check "awk -F'|' -v a='$acc1' '{ d = \$5 - a; exit !(d < 1e-6 && d > -1e-6) }' <<<'$d2'" \
    "the deployed version was scored on the same validation rows (= its own validation accuracy $acc1)"

v3=$(train 1 1e-6 if_better); d3=$(dec 3)
echo "  v3 decision: $d3"
check "[ '$v3' = 3 ] && [ \"\$(deployed)\" = 2 ] && [[ '$d3' == if_better\|false\|2\|* ]] && awk -F'|' '{ exit !(\$4 < \$5) }' <<<'$d3'" \
    "if_better stores a worse version 3 without deploying it"
check "[ \"\$(q \"\$PROBE\")\" = '$p2' ]" "classification still uses version 2"

v4=$(train 60 3e-3 if_better); d4=$(dec 4)
echo "  v4 (same run as v2) decision: $d4"
check "[ '$v4' = 4 ] && [ \"\$(deployed)\" = 2 ] && [[ '$d4' == if_better\|false\|2\|* ]] && awk -F'|' '{ exit !(\$4 == \$5) }' <<<'$d4'" \
    "a tie (the same training again) is not deployed: it must beat the deployed version"

v5=$(train 60 3e-3 never)
check "[ '$v5' = 5 ] && [ \"\$(deployed)\" = 2 ] && [ \"\$(q \"SELECT metrics->'deploy'->>'deployed' FROM bft.models WHERE name = 'm' AND version = 5\")\" = false ]" \
    "deploy => 'never' stores version 5 without deploying it"

q "SELECT bft_deploy('m', 1)" >/dev/null
check "[ \"\$(deployed)\" = 1 ] && [ \"\$(q \"\$PROBE\")\" = '$p1' ]" "rollback: bft_deploy('m', 1) makes version 1 classify again"
out=$(psql -X -q -t -A -d "$DB" -c "SELECT count(*) FROM h WHERE bft_classify(t, 'm') IS NOT NULL" \
      -c "SELECT bft_deploy('m', 2)" -c "$PROBE" 2>&1 | tail -n 1)
check "[ '$out' = '$p2' ] && [ \"\$(deployed)\" = 2 ]" "one session: after bft_deploy('m', 2) its next statement uses version 2"
q "BEGIN; SELECT bft_deploy('m', 1); ROLLBACK" >/dev/null
check "[ \"\$(deployed)\" = 2 ] && [ \"\$(q \"\$PROBE\")\" = '$p2' ]" "a rolled-back bft_deploy changes nothing"
out=$(q "SELECT bft_deploy('m', 99)")
check "echo '$out' | grep -q 'model \"m\" version 99 does not exist'" "bft_deploy of a missing version is an error"
check "[ \"\$(q \"SELECT count(*) FROM bft.models WHERE name = 'm'\")|\$(q 'SELECT count(*) FROM pg_largeobject_metadata')\" = '5|5' ]" \
    "five versions, five large objects"

# The deployed version changes while an if_better training runs: no deploy.
q "SELECT bft_deploy('m', 1)" >/dev/null
psql -X -q -t -A -d "$DB" -c "SELECT version FROM bft_train('h', 't', 'l', epochs => 1500, learning_rate => 3e-3, deploy => 'if_better',
      model => 'm', validation_fraction => 0.25, dropout => 0, architecture => '$A')" >"${BFT_TMP:-/tmp}/deploy_bg.out" 2>&1 &
poll 300 "SELECT 1 FROM bft.progress WHERE model = 'm' AND phase = 'training' AND step > 0" >/dev/null
q "SELECT bft_deploy('m', 5)" >/dev/null
wait
d6=$(dec 6)
echo "  v6 (deployed version changed from 1 to 5 during training): $d6|$(q "SELECT metrics->'deploy'->>'deployed_version_changed_to' FROM bft.models WHERE name = 'm' AND version = 6")"
check "[ \"\$(deployed)\" = 5 ] && [[ '$d6' == if_better\|false\|1\|* ]] && [ \"\$(q \"SELECT metrics->'deploy'->>'deployed_version_changed_to' FROM bft.models WHERE name = 'm' AND version = 6\")\" = 5 ]" \
    "if_better does not deploy when the deployed version changed during training (recorded)"

psql -X -q -d postgres -c "DROP DATABASE IF EXISTS $DB" >/dev/null 2>&1
echo "RESULT: $PASS passed, $FAIL failed"
[ "$FAIL" -eq 0 ]
