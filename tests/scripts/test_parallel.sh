#!/usr/bin/env bash
# test_parallel: bft_classify in a SELECT over a table runs in parallel
# workers (EXPLAIN shows Gather and the function evaluated below it; EXPLAIN
# ANALYZE shows 2 workers launched, each classifying rows) with results
# identical to a serial run; bft_classify_batch gives the same labels as the
# per-row form; bft_embed likewise in parallel workers, bft_embed_batch the
# per-row embeddings; bft.model_cache_size bounds the models a backend keeps
# (backend RSS with 4 models of ~38 MB each cycled through, cache size 1 vs 4;
# whether the models are private or mapped copies of the shared cache).
#
# Needs PGHOST/PGPORT/PGUSER (superuser: reads /proc/<pid>/status with
# pg_read_file) of a running cluster with bft installed.
# Prints "RESULT: P passed, F failed" last; exits non-zero on failure.
set -uo pipefail
cd "$(dirname "$0")/../.."
source tests/scripts/ops_lib.sh
DB=bft_parallel

psql -X -q -d postgres -c "DROP DATABASE IF EXISTS $DB" -c "CREATE DATABASE $DB" >/dev/null || { echo "RESULT: 0 passed, 1 failed"; exit 1; }
q "CREATE EXTENSION bft" >/dev/null
# 3000 varied rows: four topics, random-ish filler words.
q "CREATE TABLE big AS
   SELECT i AS id,
          (ARRAY['shares rally as profit beats forecast', 'stocks fall on weak earnings',
                 'team wins the championship final', 'coach fired after losing season'])[1 + i % 4]
          || ' ' || (ARRAY['today', 'again', 'analysts say', 'reports', 'in march', 'sources'])[1 + (i * 7) % 6]
          || ' ' || md5(i::text) AS t,
          (ARRAY['markets', 'markets', 'sports', 'sports'])[1 + i % 4] AS l
     FROM generate_series(1, 3000) i;
   ANALYZE big" >/dev/null
q "SELECT version FROM bft_train('big', 't', 'l', epochs => 2, learning_rate => 2e-3, model => 'p', max_length => 32,
                                  architecture => '{\"hidden_size\": 32, \"num_hidden_layers\": 1, \"num_attention_heads\": 2,
                                                    \"intermediate_size\": 64, \"vocab_size\": 300}')" >/dev/null

PAR="SET parallel_setup_cost = 0; SET parallel_tuple_cost = 0; SET min_parallel_table_scan_size = 0;
     SET max_parallel_workers_per_gather = 2; SET parallel_leader_participation = off;"
SER="SET max_parallel_workers_per_gather = 0;"
SEL="SELECT id, bft_classify(t, 'p') AS label, bft_predict_proba(t, 'p') AS proba FROM big"
plan=$(q "$PAR EXPLAIN (VERBOSE, COSTS OFF) $SEL")
echo "$plan" | sed 's/^/  /' | head -n 8
check "echo '$plan' | grep -q 'Gather' && echo '$plan' | grep -q 'Workers Planned: 2' && echo '$plan' | grep -q 'Parallel Seq Scan' && echo '$plan' | sed -n '/Parallel Seq Scan/,\$p' | grep -q 'bft_classify'" \
    "EXPLAIN: Gather over a Parallel Seq Scan that evaluates bft_classify in the workers"
an=$(q "$PAR EXPLAIN (ANALYZE, VERBOSE, COSTS OFF, TIMING OFF) $SEL")
w=$(echo "$an" | grep -oE 'Worker [01]:  actual rows=[0-9]+' | sed -E 's/.*rows=//' | paste -sd, -)
echo "  workers launched: $(echo "$an" | grep -oE 'Workers Launched: [0-9]+'), rows per worker: $w"
check "echo '$an' | grep -q 'Workers Launched: 2' && [[ '$w' =~ ^[1-9][0-9]*,[1-9][0-9]*$ ]]" \
    "EXPLAIN ANALYZE: 2 workers launched, each classified rows (leader not participating)"
ser=$(q "$SER SELECT md5(string_agg(id || ':' || label || ':' || proba::text, ',' ORDER BY id)) FROM ($SEL) s")
par=$(q "$PAR SELECT md5(string_agg(id || ':' || label || ':' || proba::text, ',' ORDER BY id)) FROM ($SEL) s")
check "[ -n '$ser' ] && [ '$ser' = '$par' ]" "parallel and serial runs give identical labels and probabilities (3000 rows)"
acc=$(q "$PAR SELECT round(avg((bft_classify(t, 'p') = l)::int), 3) FROM big")
check "awk -v a='$acc' 'BEGIN { exit !(a >= 0.9) }'" "the model learned the topics (accuracy $acc)"
b=$(q "SELECT md5(string_agg(x, ',' ORDER BY n)) FROM (SELECT n, x FROM unnest(
         (SELECT bft_classify_batch(array_agg(t ORDER BY id), 'p') FROM big)) WITH ORDINALITY u(x, n)) s")
r=$(q "SELECT md5(string_agg(bft_classify(t, 'p'), ',' ORDER BY id)) FROM big")
check "[ -n '$b' ] && [ '$b' = '$r' ]" "bft_classify_batch over all rows gives the per-row labels"
ES="SELECT md5(string_agg(id || ':' || e::text, ',' ORDER BY id)) FROM (SELECT id, bft_embed(t, 'p') AS e FROM big) s"
eser=$(q "$SER $ES"); epar=$(q "$PAR $ES")
ean=$(q "$PAR EXPLAIN (ANALYZE, COSTS OFF, TIMING OFF) SELECT bft_embed(t, 'p') FROM big")
check "[ -n '$eser' ] && [ '$eser' = '$epar' ] && echo '$ean' | grep -q 'Workers Launched: 2'" \
    "bft_embed in 2 parallel workers: identical to a serial run (3000 rows)"
ed=$(q "SELECT count(*) || ' ' || (max(d) < 1e-5) FROM (SELECT (SELECT max(abs(x - y)) FROM unnest(b.embedding, bft_embed(big.t, 'p')) v(x, y)) AS d
          FROM bft_embed_batch((SELECT array_agg(t ORDER BY id) FROM big), 'p') b JOIN big ON big.id = b.idx) s")
check "[ '$ed' = '3000 true' ]" "bft_embed_batch over all rows gives the per-row embeddings (|diff| < 1e-5; $ed)"
q "CREATE TABLE t2 (id int, t text, l text); INSERT INTO t2 SELECT id, t, l FROM big WHERE id % 3 = 0;
   CREATE TABLE t3 AS SELECT * FROM big WHERE false" >/dev/null
ok_null=$(q "SELECT bft_classify(NULL, 'p') IS NULL AND cardinality(bft_classify_batch(ARRAY['team wins', NULL], 'p')) = 2")
check "[ '$ok_null' = t ]" "NULL text gives NULL (per row and in a batch)"

# ---- model cache bound ----
# Four models of ~38 MB of weights each (hidden 512, 3 layers): over 32 MB,
# glibc maps and unmaps them whole, so RSS follows the models kept.
q "CREATE TABLE small AS SELECT * FROM big WHERE id <= 40" >/dev/null
for m in 1 2 3 4; do
    q "SELECT version FROM bft_train('small', 't', 'l', epochs => 1, model => 'c$m', seed => $m, max_length => 16,
         architecture => '{\"hidden_size\": 512, \"num_hidden_layers\": 3, \"num_attention_heads\": 8,
                           \"intermediate_size\": 2048, \"vocab_size\": 300, \"max_position_embeddings\": 16}')" >/dev/null
done
size=$(q "SELECT round(avg(size) / 1048576) FROM bft.models WHERE name LIKE 'c_'")
# RSS without RssShmem (the shared buffers this backend read, e.g. the weights'
# pages while loading): its own memory plus the files it maps (a shared copy).
RSS="SELECT ((regexp_match(s, 'RssAnon:\s+(\d+)'))[1]::int + (regexp_match(s, 'RssFile:\s+(\d+)'))[1]::int) / 1024
       FROM pg_read_file('/proc/' || pg_backend_pid() || '/status') s"
# passes CACHE_SIZE: RSS (MB) after one pass over c1..c4 and after two more passes.
passes() {
    local one="SELECT bft_classify('team wins', 'c1'); SELECT bft_classify('team wins', 'c2');
               SELECT bft_classify('team wins', 'c3'); SELECT bft_classify('team wins', 'c4');"
    printf '%s\n' "SET bft.model_cache_size = $1;" "$one" "$RSS;" "$one" "$one" "$RSS;" |
        psql -X -q -t -A -d "$DB" 2>&1 | grep -E '^[0-9]+$' | paste -sd' ' -
}
p1=$(passes 1); p4=$(passes 4)
echo "  model weights ~${size} MB each; RSS after 1 and 3 passes over 4 models: cache size 1: $p1 MB, cache size 4: $p4 MB"
check "[ -n '$p1' ] && [ $(( ${p1#* } - ${p1% *} )) -lt $(( size / 2 )) ]" \
    "bft.model_cache_size = 1: memory stays bounded (no growth over further passes)"
check "[ -n '$p4' ] && [ $(( ${p4#* } - ${p1#* } )) -ge $(( size * 2 )) ]" \
    "bft.model_cache_size = 4 keeps all four models (RSS ${p4#* } MB vs ${p1#* } MB)"
low=$(printf '%s\n' "SET bft.model_cache_size = 4;" "SELECT bft_classify('a', 'c1'), bft_classify('a', 'c2'), bft_classify('a', 'c3');" \
      "$RSS;" "SET bft.model_cache_size = 1;" "SELECT bft_classify('a', 'c4');" "$RSS;" |
      psql -X -q -t -A -d "$DB" 2>&1 | grep -E '^[0-9]+$' | paste -sd' ' -)
echo "  3 models cached, bft.model_cache_size lowered to 1, a 4th model loaded: RSS ${low% *} MB -> ${low#* } MB"
check "[ -n '$low' ] && [ $(( ${low% *} - ${low#* } )) -ge $size ]" "a lowered bft.model_cache_size evicts (and frees) at the next model load"

[ "${BFT_KEEP:-0}" = 1 ] || psql -X -q -d postgres -c "DROP DATABASE IF EXISTS $DB" >/dev/null 2>&1
echo "RESULT: $PASS passed, $FAIL failed"
[ "$FAIL" -eq 0 ]
