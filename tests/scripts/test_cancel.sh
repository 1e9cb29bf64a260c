#!/usr/bin/env bash
# test_cancel: Ctrl-C (pg_cancel_backend) and statement_timeout stop a running
# bft_train within 1 second, leave no model row, large object or progress
# entry behind, and the live progress view shows the training while it runs.
#
# Needs PGHOST/PGPORT/PGUSER of a running cluster with bft installed
# (tests/run_all.sh exports them).  Prints "RESULT: P passed, F failed".
set -uo pipefail
source "$(dirname "$0")/cluster.sh" # poll
DB=bft_cancel
PASS=0; FAIL=0
ok()   { echo "ok   - $*"; PASS=$((PASS + 1)); }
fail() { echo "FAIL - $*"; FAIL=$((FAIL + 1)); }
check() { if eval "$1"; then ok "$2"; else fail "$2"; fi; }
q() { psql -X -q -t -A -d "$DB" -c "$1"; }
now() { date +%s.%N; }

psql -X -q -d postgres -c "SET client_min_messages = warning" -c "DROP DATABASE IF EXISTS $DB" -c "CREATE DATABASE $DB" || { echo "RESULT: 0 passed, 1 failed"; exit 1; }
q "CREATE EXTENSION bft"
# ~3000 varied rows: vocabulary learning and tokenizing take well under a
# second; the default from-scratch model then trains for minutes.
q "CREATE TABLE tweets AS
   SELECT md5(i::text) || ' ' || (ARRAY['stocks rally','bank cuts rates','oil prices fall','new ceo named',
          'earnings beat forecast','shares slump'])[1 + i % 6] || ' ' || md5((i * 7)::text) AS text,
          i % 6 AS label
     FROM generate_series(1, 3000) i"
TRAIN="SELECT * FROM bft_train('tweets', 'text', 'label', epochs => 50, max_length => 64, model => 'cancel_me', mlm_epochs => 0)"

# 1. pg_cancel_backend while training; watch bft.progress from a second connection.
psql -X -q -d "$DB" -c "SET bft.progress_interval = 1" -c "$TRAIN" >"${BFT_TMP:-/tmp}/cancel1.log" 2>&1 &
BG=$!
pid=""
row=$(poll 600 "SELECT pid, phase, step, steps, epoch, epochs FROM bft.progress WHERE model = 'cancel_me' AND phase = 'training' AND step > 0")
echo "progress row: $row"
check '[ -n "$row" ]' "bft.progress shows the running training (pid|phase|step|steps|epoch|epochs)"
pid=${row%%|*}
check '[ -n "$pid" ] && [ "$(echo "$row" | cut -d"|" -f4)" -gt 0 ]' "progress has a step count"
sleep 1
row2=$(q "SELECT step FROM bft.progress WHERE pid = ${pid:-0}")
check '[ -n "$row2" ] && [ "$row2" -gt "$(echo "$row" | cut -d"|" -f3)" ]' "progress advances (step ${row2:-?})"
t0=$(now)
q "SELECT pg_cancel_backend(${pid:-0})" >/dev/null
wait $BG
t1=$(now)
lat=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f", b - a }')
printf 'cancel latency: %.3f s\n' "$lat"
check "awk -v l=$lat 'BEGIN { exit !(l <= 1.0) }'" "pg_cancel_backend stops training within 1 s ($(printf %.3f "$lat") s)"
check 'grep -q "canceling statement due to user request" "${BFT_TMP:-/tmp}/cancel1.log"' "client sees the cancel error"
check 'grep -q "NOTICE:  training epoch 1/50, step" "${BFT_TMP:-/tmp}/cancel1.log"' "NOTICE progress lines were sent"
check '[ "$(q "SELECT count(*) FROM bft.models")" = 0 ]' "no model row after cancel"
check '[ "$(q "SELECT count(*) FROM pg_largeobject_metadata")" = 0 ]' "no large object after cancel"
check '[ "$(q "SELECT count(*) FROM bft.progress WHERE datname = current_database()")" = 0 ]' "no progress entry after cancel"

# 2. statement_timeout.
t0=$(now)
psql -X -q -d "$DB" -c "SET statement_timeout = '4s'" -c "$TRAIN" >"${BFT_TMP:-/tmp}/cancel2.log" 2>&1
t1=$(now)
lat=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f", b - a - 4.0 }')
printf 'statement_timeout overshoot: %.3f s\n' "$lat"
check 'grep -q "canceling statement due to statement timeout" "${BFT_TMP:-/tmp}/cancel2.log"' "statement_timeout cancels the training"
check "awk -v l=$lat 'BEGIN { exit !(l <= 1.0) }'" "statement_timeout stops training within 1 s ($(printf %.3f "$lat") s over)"
check '[ "$(q "SELECT count(*) FROM bft.models") $(q "SELECT count(*) FROM pg_largeobject_metadata")" = "0 0" ]' "nothing stored after timeout"

# 3. The same backend trains normally after being cancelled (no leaked state).
out=$(psql -X -q -t -A -d "$DB" -c "SET statement_timeout = '2s'" -c "$TRAIN" \
      -c "RESET statement_timeout" -c "SET client_min_messages = warning" \
      -c "SELECT version FROM bft_train('tweets', 'text', 'label', epochs => 1, model => 'after',
          mlm_epochs => 0, architecture => '{\"hidden_size\": 16, \"num_hidden_layers\": 1, \"num_attention_heads\": 2, \"intermediate_size\": 32, \"vocab_size\": 300}')" 2>&1)
check 'echo "$out" | tail -n 1 | grep -qx 1' "a training after a cancel in the same backend works"
check '[ "$(q "SELECT count(*) FROM bft.models") $(q "SELECT count(*) FROM pg_largeobject_metadata")" = "1 1" ]' "exactly one model and one large object"

# 4. A model whose optimizer steps take longer than a second even on an idle
#    machine (BERT-base width, 8 layers, batch 32 x 128 tokens: ~3 s a step
#    on 2 cores): the cancel is noticed between encoder layers, not after the step.
q "CREATE TABLE long_rows AS SELECT repeat(text || ' ', 3) AS text, label FROM tweets LIMIT 200"
BIG="SELECT * FROM bft_train('long_rows', 'text', 'label', 1, batch_size => 32, max_length => 128, model => 'big',
     mlm_epochs => 0, architecture => '{\"hidden_size\": 768, \"num_hidden_layers\": 8, \"num_attention_heads\": 12, \"intermediate_size\": 3072, \"vocab_size\": 4000}')"
psql -X -q -d "$DB" -c "$BIG" >"${BFT_TMP:-/tmp}/cancel4.log" 2>&1 &
BG=$!
row=$(poll 1200 "SELECT pid, samples_per_s FROM bft.progress WHERE model = 'big' AND phase = 'training' AND step >= 1")
pid=${row%%|*}
step_s=$(awk -v sps="${row##*|}" 'BEGIN { printf "%.2f", (sps > 0 ? 32 / sps : 0) }')
echo "big model: ${step_s} s per optimizer step"
sleep 0.4
t0=$(now)
q "SELECT pg_cancel_backend(${pid:-0})" >/dev/null
wait $BG
t1=$(now)
lat=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f", b - a }')
printf 'cancel latency (big model): %.3f s\n' "$lat"
check "awk -v s=$step_s 'BEGIN { exit !(s > 1.0) }'" "the big model's steps take over a second (${step_s} s), so the check is meaningful"
check "awk -v l=$lat 'BEGIN { exit !(l <= 1.0) }'" "cancel inside a long step stops within 1 s ($lat s)"
check 'grep -q "canceling statement due to user request" "${BFT_TMP:-/tmp}/cancel4.log"' "client sees the cancel error (big model)"
nbig=$(q "SELECT count(*) FROM bft.models WHERE name = 'big'")
check '[ "$nbig" = 0 ]' "nothing stored (big model)"

# 5. The postmaster never runs engine threads (they start lazily in backends).
PGDATA_DIR=$(q "SHOW data_directory")
PM=$(head -n 1 "$PGDATA_DIR/postmaster.pid" 2>/dev/null)
if [ -n "$PM" ] && [ -d "/proc/$PM/task" ]; then
    nthr=$(ls "/proc/$PM/task" | wc -l)
    check '[ "$nthr" = 1 ]' "postmaster has one thread after the trainings ($nthr)"
fi

psql -X -q -d postgres -c "DROP DATABASE $DB"
echo "RESULT: $PASS passed, $FAIL failed"
[ "$FAIL" -eq 0 ]
