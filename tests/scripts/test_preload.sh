#!/usr/bin/env bash
# test_preload: bft in shared_preload_libraries.  The postmaster stays
# single-threaded (BLAS and engine threads start lazily in the backend that
# needs them), bft.progress uses shared memory (no status files), a
# training's progress is visible from another session and disappears when
# it ends, and classification works.
#
# Starts its own throwaway cluster under $BFT_TMP (port 54351).
set -uo pipefail
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
source "$ROOT/tests/scripts/cluster.sh"
set +e
PASS=0; FAIL=0
ok()   { echo "ok   - $*"; PASS=$((PASS + 1)); }
fail() { echo "FAIL - $*"; FAIL=$((FAIL + 1)); }
check() { if eval "$1"; then ok "$2"; else fail "$2"; fi; }
DIR="${BFT_TMP:-/tmp}/bft_preload.$$"
PORT=${BFT_PRELOAD_PORT:-54351}
trap 'cluster_stop "$DIR"; rm -rf "$DIR"' EXIT
cluster_start "$DIR" "$PORT" "shared_preload_libraries = 'bft'" >/dev/null || { echo "RESULT: 0 passed, 1 failed"; exit 1; }
q() { psql -X -q -t -A -d postgres -c "$1"; }
threads() { ls "/proc/$1/task" | wc -l; }

PM=$(head -n 1 "$DIR/data/postmaster.pid")
check '[ "$(threads "$PM")" = 1 ]' "postmaster with bft preloaded has one thread"
q "CREATE EXTENSION bft"
q "CREATE TABLE tw AS SELECT md5(i::text) || ' ' || (ARRAY['stocks rally','bank cuts rates','oil prices fall'])[1 + i % 3] AS text,
   i % 3 AS label FROM generate_series(1, 3000) i"
psql -X -q -d postgres -c "SET bft.threads = 2" -c "SELECT version FROM bft_train('tw', 'text', 'label', 3, max_length => 32, mlm_epochs => 0)" \
    >"$DIR/train.log" 2>&1 &
BG=$!
row=$(poll 600 "SELECT pid, phase, step, steps FROM bft.progress WHERE model = 'tw' AND phase = 'training' AND step > 0")
check '[ -n "$row" ]' "bft.progress shows the training from another session ($row)"
pid=${row%%|*}
check '[ -n "$pid" ] && [ "$(threads "$pid")" -gt 1 ]' "the training backend started its worker threads ($( [ -n "$pid" ] && threads "$pid") threads)"
check '[ -z "$(ls "$DIR/data/pg_stat_tmp" | grep bft_progress)" ]' "no progress files: shared memory is used"
check '[ "$(threads "$PM")" = 1 ]' "postmaster still has one thread while a backend trains"
q "SELECT pg_cancel_backend($pid)" >/dev/null
wait $BG
check '[ "$(q "SELECT count(*) FROM bft.progress")" = 0 ]' "progress slot freed after the cancel"
out=$(psql -X -q -t -A -d postgres -c "SET client_min_messages = warning" \
      -c "SELECT version FROM bft_train('tw', 'text', 'label', 1, mlm_epochs => 0, architecture => '{\"hidden_size\": 16, \"num_hidden_layers\": 1, \"num_attention_heads\": 2, \"intermediate_size\": 32, \"vocab_size\": 300}')" 2>&1)
check '[ "$out" = 1 ]' "a training completes"
cls=$(q "SELECT bft_classify('bank cuts rates') IS NOT NULL")
check '[ "$cls" = t ]' "classification works"
check '[ "$(q "SELECT count(*) FROM bft.progress")" = 0 ]' "no progress rows after the training"
check '[ "$(threads "$PM")" = 1 ]' "postmaster still has one thread"
echo "RESULT: $PASS passed, $FAIL failed"
[ "$FAIL" -eq 0 ]
