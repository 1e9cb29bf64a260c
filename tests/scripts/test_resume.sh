#!/usr/bin/env bash
# test_resume: bft_train(..., resume => true) after an interrupted training.
# A reference training runs uninterrupted; then the same training (same data,
# arguments and seed, another model name) is interrupted and resumed, and the
# stored weights must equal the reference's byte for byte (the safetensors of
# bft_copy_weights), with the same per-epoch metrics:
#  1. cancelled by statement_timeout in fine-tuning epoch 3 (the timeout is
#     taken from the reference's per-epoch times; whichever epoch it hits,
#     resume continues after the last completed one);
#  2. the backend killed with kill -9 in fine-tuning epoch 3 of a training
#     with MLM pre-training (the server restarts; the MLM phase is not redone);
#  3. cancelled (pg_cancel_backend) in MLM epoch 2: the MLM phase resumes;
#  4. a background job (bft_train_async) resumed after a cancel.
# The table has 300 rows with a NULL label: MLM pre-training (cases 2 and 3)
# also runs over them, and resumes over them.
# Also: the state is a file of the training's role; another role with
# resume => true does not see it (trains from the start, NOTICE) and leaves
# it alone; changed data make resume an ERROR (55000) with a hint; the state
# is deleted when the resumed training commits, and not when it rolls back;
# bft_drop_model(name) deletes the states of that name; states older than
# bft.train_state_retention are deleted when a training starts;
# bft.save_train_state = off saves nothing.
# Runs on its own throwaway cluster with bft preloaded (kill -9 restarts every
# backend; bft.progress is then updated at every step).
#
# Prints "RESULT: P passed, F failed" last; exits non-zero on failure.
set -uo pipefail
cd "$(dirname "$0")/../.."
TMP="${BFT_TMP:-/tmp}"
PASS=0; FAIL=0
ok()   { echo "ok   - $*"; PASS=$((PASS + 1)); }
fail() { echo "FAIL - $*"; FAIL=$((FAIL + 1)); }
check() { if eval "$1"; then ok "$2"; else fail "$2"; fi; }
export PGOPTIONS="-c client_min_messages=warning -c bft.threads=1 -c bft.progress_interval=0"

source tests/scripts/cluster.sh; set +e +u
CL="$TMP/resume"
rm -rf "$CL"
trap 'cluster_stop "$CL"' EXIT
# bft preloaded: bft.progress is published at every step (in shared memory),
# so a phase's short epochs can be caught while they run
cluster_start "$CL" 54373 "shared_preload_libraries = 'bft'" >/dev/null 2>&1 || { tail "$CL/server.log" 2>/dev/null; echo "RESULT: 0 passed, 1 failed"; exit 1; }
DB=bft_resume
STATES="$CL/data/bft_train_state"
q() { psql -X -q -t -A -d "$DB" -c "$1" 2>&1; }
states() { as_cluster_user ls "$STATES" 2>/dev/null | grep -v '\.tmp$' | sort | paste -sd, -; }
recovered() {
    local i
    for i in $(seq 1 300); do
        [ "$(psql -X -q -t -A -d "$DB" -c 'SELECT 1' 2>/dev/null)" = 1 ] && return 0
        sleep 0.1
    done
    return 1
}
# wait_phase MODEL PHASE EPOCH: pid of the backend whose PHASE of MODEL is in
# epoch >= EPOCH (so EPOCH - 1 epochs are complete and saved)
wait_phase() {
    local i p
    for i in $(seq 1 1200); do
        p=$(q "SELECT pid FROM bft.progress WHERE model = '$1' AND phase = '$2' AND epoch >= $3 AND step > 0")
        [ -n "$p" ] && { echo "$p"; return 0; }
        sleep 0.05
    done
    return 1
}

# cancel_in_phase MODEL PHASE EPOCH: cancel the backend whose PHASE of MODEL
# is in epoch >= EPOCH as soon as it gets there, polling inside one session
# (an MLM epoch of the test's data lasts well under a second); prints its pid,
# empty when it never got there within 60 s.
cancel_in_phase() {
    q "DO \$\$ DECLARE p int; BEGIN
         FOR i IN 1..12000 LOOP
           SELECT pid INTO p FROM bft.progress WHERE model = '$1' AND phase = '$2' AND epoch >= $3 AND step > 0;
           IF p IS NOT NULL AND pg_cancel_backend(p) THEN RAISE NOTICE 'cancelled %', p; RETURN; END IF;
           PERFORM pg_sleep(0.005);
         END LOOP; END \$\$" 2>&1 | sed -n 's/^NOTICE:  cancelled //p'
}

psql -X -q -d postgres -c "CREATE DATABASE $DB" -c "CREATE ROLE trainer_a LOGIN" -c "CREATE ROLE trainer_b LOGIN" >/dev/null
q "CREATE EXTENSION bft;
   CREATE TABLE docs AS
   SELECT i AS id, (ARRAY['central bank raises interest rates', 'shares rally as profit beats forecast',
                          'team wins the championship final', 'oil prices fall on weak demand'])[1 + i % 4]
          || ' ' || (ARRAY['today', 'again', 'this week', 'sharply', 'in march'])[1 + (i * 7) % 5]
          || ' w' || (i % 37) || ' and more words about w' || (i % 91) || ' x' || (i % 53) AS body,
          CASE WHEN i <= 1500 THEN (ARRAY['economy', 'markets', 'sports', 'markets'])[1 + i % 4] END AS label
     FROM generate_series(1, 1800) i;
   GRANT SELECT ON docs TO trainer_a, trainer_b;
   GRANT SELECT, INSERT ON bft.models TO trainer_a, trainer_b;
   GRANT USAGE ON SEQUENCE bft.models_id_seq TO trainer_a, trainer_b;
   GRANT EXECUTE ON FUNCTION bft_train TO trainer_a, trainer_b;" >/dev/null

ARCH='{"hidden_size": 128, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 256, "vocab_size": 300}'
# train MODEL MLM_EPOCHS [EXTRA]: the training under test (4 epochs, dropout, validation, best epoch)
train_sql() {
    echo "SELECT version FROM bft_train('docs', 'body', 'label', 4, model => '$1', mlm_epochs => $2,
          batch_size => 16, learning_rate => 1e-3, max_length => 32, validation_fraction => 0.2,
          dropout => 0.1, seed => 7, load_best_model_at_end => true, class_weights => 'balanced',
          architecture => '$ARCH'${3:-})"
}
# same MODEL REF: the stored weights (safetensors bytes of the latest versions)
# and per-epoch metrics are equal
same() {
    [ "$(q "SELECT (SELECT md5(lo_get(weights)) FROM bft.models WHERE name = '$1' ORDER BY version DESC LIMIT 1)
                 = (SELECT md5(lo_get(weights)) FROM bft.models WHERE name = '$2' ORDER BY version DESC LIMIT 1)
              AND (SELECT array_agg(ARRAY[e->>'loss', e->>'eval_loss', e->>'eval_accuracy'] ORDER BY (e->>'epoch')::int)
                     FROM bft.models m, jsonb_array_elements(m.metrics->'epochs') e WHERE m.name = '$1')
                = (SELECT array_agg(ARRAY[e->>'loss', e->>'eval_loss', e->>'eval_accuracy'] ORDER BY (e->>'epoch')::int)
                     FROM bft.models m, jsonb_array_elements(m.metrics->'epochs') e WHERE m.name = '$2')
              AND (SELECT metrics->'train_loss' FROM bft.models WHERE name = '$1')
                = (SELECT metrics->'train_loss' FROM bft.models WHERE name = '$2')")" = t ]
}
# show MODEL...: what same compares, for a failure's log
show() {
    q "SELECT name, version, md5(lo_get(weights)), metrics->'train_loss', jsonb_path_query_array(metrics->'epochs', '\$[*].loss'),
              metrics->'resumed_after_epoch' FROM bft.models WHERE name IN ('$1', '$2') ORDER BY name, version" | sed 's/^/#   /'
}
metric() { q "SELECT metrics #>> '{$2}' FROM bft.models WHERE name = '$1' ORDER BY version DESC LIMIT 1"; }

# ---- the uninterrupted references (they leave no state behind)
q "$(train_sql ref 0)" >/dev/null
q "$(train_sql ref_mlm 2)" >/dev/null
check "[ \"\$(q \"SELECT count(*) FROM bft.models WHERE name IN ('ref', 'ref_mlm')\")\" = 2 ] && [ -z \"\$(states)\" ]" \
    "reference trainings stored; their states were deleted at commit"
check "[ \"\$(metric ref_mlm rows_unlabeled)\" = 300 ] && [ \"\$(metric ref_mlm mlm,rows)\" = 1500 ] && [ -z \"\$(metric ref rows_unlabeled)\" ] && [ \"\$(metric ref rows_skipped)\" = 300 ]" \
    "the MLM reference also pre-trains on the 300 unlabeled rows (1,200 training + 300), the other skips them"
IFS='|' read -r -a E <<<"$(q "SELECT (metrics->>'duration_s')::float8 - (metrics->>'train_seconds')::float8,
               metrics->'epochs'->1->>'elapsed_s', metrics->'epochs'->2->>'elapsed_s'
          FROM bft.models WHERE name = 'ref'")"
echo "# reference: $(metric ref duration_s) s in all, ${E[0]} s before fine-tuning, epochs 2 and 3 end at ${E[1]} s and ${E[2]} s"

# ---- 1. statement_timeout in epoch 3, then resume
TO=$(awk -v a="${E[0]}" -v b="${E[1]}" -v c="${E[2]}" 'BEGIN { printf "%d", 1000 * (a + (b + c) / 2) }')
out=$(psql -X -q -t -A -d $DB -c "SET statement_timeout = $TO" -c "$(train_sql r1 0)" 2>&1)
check "grep -q 'canceling statement due to statement timeout' <<<\"\$out\"" \
    "statement_timeout ${TO} ms cancels the training"
check "[ \"\$(states)\" = \"\$(q \"SELECT format('%s_%s_%s.train', (SELECT oid FROM pg_database WHERE datname = current_database()), (SELECT oid FROM pg_roles WHERE rolname = current_user), encode('r1', 'hex'))\")\" ]" \
    "the cancelled training left its state file (database, role, model, phase): $(states)"
check "[ \"\$(q \"SELECT count(*) FROM bft.models WHERE name = 'r1'\")\" = 0 ]" "no version stored by the cancelled training"
out=$(PGOPTIONS="-c client_min_messages=notice -c bft.threads=1 -c bft.progress_interval=0" \
      psql -X -q -t -A -d $DB -c "$(train_sql r1 0 ", resume => true")" 2>&1)
n=$(echo "$out" | sed -nE 's/.*resuming training of "r1" after epoch ([0-9]) of 4.*/\1/p')
echo "# $(echo "$out" | grep -m1 resuming)"
check "[ -n '$n' ] && [ '$n' -ge 1 ] && [ '$n' -le 3 ] && [ \"\$(metric r1 resumed_after_epoch)\" = '$n' ]" \
    "resume => true continues after epoch $n (NOTICE, metrics->resumed_after_epoch)"
check "same r1 ref" "resumed after statement_timeout: weights byte for byte and per-epoch metrics equal to the uninterrupted run"
check "[ \"\$(q \"SELECT count(*) FROM jsonb_array_elements((SELECT metrics->'epochs' FROM bft.models WHERE name = 'r1')) e WHERE e ? 'restored'\")\" = '$n' ] && [ -z \"\$(states)\" ]" \
    "the $n restored epochs are marked in metrics->epochs; the state is gone after the commit"

# ---- 2. kill -9 in fine-tuning epoch 3 of a training with MLM pre-training
psql -X -q -d $DB -c "$(train_sql r2 2)" >/dev/null 2>&1 &
pid=$(wait_phase r2 training 3)
check "[ -n '$pid' ]" "training r2 (after 2 MLM epochs) is in fine-tuning epoch 3 (pid $pid)"
kill -9 "$pid" 2>/dev/null
wait
check "recovered" "the server recovers after kill -9"
check "[ \"\$(states | tr , '\n' | sed 's/.*\.//' | paste -sd, -)\" = 'mlm,train' ]" "both phases' states survived the crash"
out=$(PGOPTIONS="-c client_min_messages=notice -c bft.threads=1 -c bft.progress_interval=0" \
      psql -X -q -t -A -d $DB -c "$(train_sql r2 2 ", resume => true")" 2>&1)
check "grep -q 'resuming training of \"r2\" after epoch [23] of 4' <<<\"\$out\" && ! grep -q 'mlm epoch' <<<\"\$out\"" \
    "resume continues fine-tuning; the MLM phase is not run again"
echo "# MLM summaries: r2 $(q "SELECT metrics->'mlm' FROM bft.models WHERE name = 'r2'"), ref $(q "SELECT metrics->'mlm' FROM bft.models WHERE name = 'ref_mlm'")"
check "same r2 ref_mlm && [ \"\$(metric r2 mlm,loss)\" = \"\$(metric ref_mlm mlm,loss)\" ] && [ \"\$(metric r2 mlm,resumed_after_epoch)\" = 2 ]" \
    "resumed after kill -9: weights byte for byte equal to the uninterrupted run, MLM summary kept"
same r2 ref_mlm || show r2 ref_mlm

# ---- 3. cancel in MLM epoch 2
psql -X -q -d $DB -c "$(train_sql r3 2)" >/dev/null 2>&1 &
pid=$(PGOPTIONS="-c client_min_messages=notice" cancel_in_phase r3 mlm 2)
check "[ -n '$pid' ]" "training r3 cancelled in MLM epoch 2"
wait
out=$(PGOPTIONS="-c client_min_messages=notice -c bft.threads=1 -c bft.progress_interval=0" \
      psql -X -q -t -A -d $DB -c "$(train_sql r3 2 ", resume => true")" 2>&1)
check "grep -q 'resuming MLM pre-training of \"r3\" after epoch 1 of 2' <<<\"\$out\"" "resume continues the MLM pre-training"
check "same r3 ref_mlm" "resumed in the MLM phase: weights byte for byte equal to the uninterrupted run"

# ---- 4. a background job resumed after a cancel
psql -X -q -d $DB -c "$(train_sql r4 0)" >/dev/null 2>&1 &
pid=$(wait_phase r4 training 2)
q "SELECT pg_cancel_backend($pid)" >/dev/null
wait
id=$(q "SELECT bft_train_async('docs', 'body', 'label', 4, model => 'r4', mlm_epochs => 0,
          batch_size => 16, learning_rate => 1e-3, max_length => 32, validation_fraction => 0.2,
          dropout => 0.1, seed => 7, load_best_model_at_end => true, class_weights => 'balanced',
          architecture => '$ARCH', resume => true)")
st=$(poll 1200 "SELECT state FROM bft.jobs WHERE id = $id AND state NOT IN ('queued', 'running')")
check "[ '$st' = succeeded ] && [ \"\$(metric r4 resumed_after_epoch)\" -ge 1 ] && same r4 ref" \
    "bft_train_async(..., resume => true) resumes in the background ($st, after epoch $(metric r4 resumed_after_epoch)), same weights"

# ---- roles: the state belongs to the role that trained
psql -X -q -d $DB -c "SET ROLE trainer_a" -c "$(train_sql shared 0)" >/dev/null 2>&1 &
pid=$(wait_phase shared training 2)
q "SELECT pg_cancel_backend($pid)" >/dev/null
wait
a_state=$(states)
out=$(psql -X -q -t -A -d $DB -c "SET client_min_messages = notice" -c "SET ROLE trainer_b" \
      -c "$(train_sql shared 0 ", resume => true, deploy => 'never'")" 2>&1)
check "grep -q 'no saved training state of \"shared\" for role \"trainer_b\": training from the start' <<<\"\$out\" && [ \"\$(metric shared resumed_after_epoch)\" = 0 ] && [ \"\$(states)\" = '$a_state' ]" \
    "another role cannot resume it: trainer_b trains from the start; trainer_a's state is left alone"
out=$(psql -X -q -t -A -d $DB -c "SET client_min_messages = notice" -c "SET ROLE trainer_a" \
      -c "$(train_sql shared 0 ", resume => true")" 2>&1)
check "grep -q 'resuming training of \"shared\"' <<<\"\$out\" && [ \"\$(q \"SELECT created_by FROM bft.models WHERE name = 'shared' ORDER BY version DESC LIMIT 1\")\" = trainer_a ] && [ -z \"\$(states)\" ]" \
    "trainer_a resumes its own training; its state is gone after the commit"

# ---- changed data: resume refuses the state
psql -X -q -d $DB -c "$(train_sql r5 0)" >/dev/null 2>&1 &
pid=$(wait_phase r5 training 2)
q "SELECT pg_cancel_backend($pid)" >/dev/null
wait
q "INSERT INTO docs VALUES (9999, 'one more row about oil', 'markets')" >/dev/null
out=$(psql -X -q -t -A -d $DB -v VERBOSITY=verbose -c "$(train_sql r5 0 ", resume => true")" 2>&1)
check "grep -q 'ERROR:  55000: cannot resume: the saved training state does not fit this training' <<<\"\$out\" && grep -q 'resume => false to start over' <<<\"\$out\"" \
    "resume after the data changed: ERROR 55000 with a hint"
q "DELETE FROM docs WHERE id = 9999" >/dev/null
# a rolled-back resumed training keeps the state; the committed one removes it
out=$(psql -X -q -t -A -d $DB -c "BEGIN" -c "$(train_sql r5 0 ", resume => true")" -c "ROLLBACK" 2>&1)
check "[ -n \"\$(states)\" ]" "a resumed training that rolls back leaves the state"
q "$(train_sql r5 0 ", resume => true")" >/dev/null
check "same r5 ref && [ -z \"\$(states)\" ]" "resumed once more and committed: equal to the reference, state gone"

# ---- bft_drop_model(name) deletes the states of that name
psql -X -q -d $DB -c "$(train_sql r1 0)" >/dev/null 2>&1 &
pid=$(wait_phase r1 training 2)
q "SELECT pg_cancel_backend($pid)" >/dev/null
wait
before=$(states)
q "SELECT bft_drop_model('r1')" >/dev/null
check "[ -n '$before' ] && [ -z \"\$(states)\" ]" "bft_drop_model('r1') deletes its saved state"
psql -X -q -d $DB -c "$(train_sql never_stored 0)" >/dev/null 2>&1 &
pid=$(wait_phase never_stored training 2)
q "SELECT pg_cancel_backend($pid)" >/dev/null
wait
before=$(states)
out=$(q "SET client_min_messages = notice; SELECT bft_drop_model('never_stored')")
check "[ -n '$before' ] && [ -z \"\$(states)\" ] && grep -q 'has no version; its saved training state is discarded' <<<\"\$out\" && echo \"\$out\" | grep -qx 0" \
    "bft_drop_model of a name never stored discards the caller's saved state (returns 0)"

# ---- retention, and bft.save_train_state = off
psql -X -q -d $DB -c "$(train_sql r6 0)" >/dev/null 2>&1 &
pid=$(wait_phase r6 training 2)
q "SELECT pg_cancel_backend($pid)" >/dev/null
wait
before=$(states)
sleep 2
q "SET bft.train_state_retention = 1; SELECT version FROM bft_train('docs', 'body', 'label', 1, model => 'tiny', mlm_epochs => 0, max_length => 16, architecture => '{\"hidden_size\": 16, \"num_hidden_layers\": 1, \"num_attention_heads\": 2, \"intermediate_size\": 32, \"vocab_size\": 120}')" >/dev/null
check "[ -n '$before' ] && [ -z \"\$(states)\" ]" "a state older than bft.train_state_retention is deleted when a training starts"
psql -X -q -d $DB -c "SET bft.save_train_state = off" -c "$(train_sql r7 0)" >/dev/null 2>&1 &
pid=$(wait_phase r7 training 2)
q "SELECT pg_cancel_backend($pid)" >/dev/null
wait
check "[ -n '$pid' ] && [ -z \"\$(states)\" ]" "bft.save_train_state = off saves no state"
out=$(psql -X -q -t -A -d $DB -c "SELECT count(*) FROM bft_progress()" -c "SET ROLE trainer_a" -c "SET bft.train_state_retention = 60" 2>&1)
check "grep -q 'permission denied to set parameter' <<<\"\$out\"" "a plain role cannot change bft.train_state_retention"

echo "RESULT: $PASS passed, $FAIL failed"
[ "$FAIL" -eq 0 ]
