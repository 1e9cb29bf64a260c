#!/usr/bin/env bash
# bench_classify: classification throughput inside PostgreSQL on the 16,990
# tweets of topic_train.csv (in $BFT_SHARED_DATA, see tests/lib/shared_data.sh)
# with a small model trained here:
#   per-row bft_classify, serial            (1 backend, bft.threads = 1)
#   per-row bft_classify, parallel          (Gather, 2 workers, leader not participating)
#   batched bft_classify_batch, 256 rows    (array_agg per 256-row group, serial)
#   batched bft_classify_batch, all rows    (one call; bft.threads = 1 and 2)
# Every variant must return the same labels (md5 of the label list).
# Best of REPS runs (default 2).  Not part of the test suite.
#
# Usage: bash tests/bench/bench_classify.sh    (uses the installed bft; a throwaway cluster)
#        TRAIN_ROWS=4000 REPS=2 KEEP=0 bash tests/bench/bench_classify.sh
#        ARCH=default ROWS=4000 bash tests/bench/bench_classify.sh   (bft's default from-scratch
#            architecture, hidden 256 x 4 layers, classifying the first 4000 tweets)
set -uo pipefail
cd "$(dirname "$0")/../.."
ROOT="$PWD"
source tests/lib/shared_data.sh
shared_data_need bench_classify topic_train.csv
CSV="$BFT_SHARED_DATA/topic_train.csv"
REPS="${REPS:-2}"
TRAIN_ROWS="${TRAIN_ROWS:-4000}"
ROWS="${ROWS:-0}"            # 0: all rows
ARCH="${ARCH:-small}"
if [ "$ARCH" = small ]; then
    ARCH_SQL=", architecture => '{\"hidden_size\": 128, \"num_hidden_layers\": 2, \"num_attention_heads\": 4, \"intermediate_size\": 512, \"vocab_size\": 4000}'"
    ARCH_TXT="hidden 128, 2 layers, 4 heads, vocab 4000"
else
    ARCH_SQL=""; ARCH_TXT="bft's default from-scratch architecture"
fi
source tests/scripts/cluster.sh; set +e +u
TMPD=$(mktemp -d /tmp/bft-bench-classify.XXXXXX); chmod 755 "$TMPD"
trap 'cluster_stop "$TMPD/cl"; [ "${KEEP:-0}" = 1 ] || rm -rf "$TMPD"' EXIT
cluster_start "$TMPD/cl" 54391 >/dev/null || exit 1
q() { psql -X -q -t -A -d bench -c "$1"; }
psql -X -q -d postgres -c "CREATE DATABASE bench" >/dev/null
q "CREATE EXTENSION bft" >/dev/null
q "CREATE TABLE tweets (id serial, text text, label int)" >/dev/null
psql -X -q -d bench -c "\\copy tweets (text, label) FROM '$CSV' CSV HEADER" >/dev/null
[ "$ROWS" -gt 0 ] && q "DELETE FROM tweets WHERE id NOT IN (SELECT id FROM tweets ORDER BY md5(id::text) LIMIT $ROWS)" >/dev/null
q "VACUUM ANALYZE tweets" >/dev/null
n=$(q "SELECT count(*) FROM tweets")
tok=$(q "SELECT round(avg(cardinality(regexp_split_to_array(text, '\\s+'))), 1) FROM tweets")
echo "tweets: $n rows (mean $tok words)"

# A from-scratch model, max_length 64.
q "CREATE TABLE train_part AS SELECT * FROM tweets ORDER BY md5(id::text) LIMIT $TRAIN_ROWS" >/dev/null
t=$(q "SET bft.threads = 2; SET client_min_messages = warning;
       SELECT round(extract(epoch FROM duration)::numeric, 1) FROM bft_train('train_part', 'text', 'label', epochs => 2,
              model => 'bench', max_length => 64 $ARCH_SQL)")
echo "model: $ARCH_TXT, max_length 64; trained on $TRAIN_ROWS rows, 2 epochs, in ${t} s"
echo "accuracy on all $n rows: $(q "SET max_parallel_workers_per_gather = 0; SELECT round(avg((bft_classify(text, 'bench') = label::text)::int), 3) FROM tweets")"

PAR="SET parallel_setup_cost = 0; SET parallel_tuple_cost = 0; SET min_parallel_table_scan_size = 0;
     SET max_parallel_workers_per_gather = 2; SET parallel_leader_participation = off;"
SER="SET max_parallel_workers_per_gather = 0;"
# CPU seconds used by exited children of the postmaster (backends and
# parallel workers are reaped when they exit): each run uses a new session,
# so the difference is the CPU the run took, whatever else loads the machine.
PM=$(head -n 1 "$TMPD/cl/data/postmaster.pid")
TCK=$(getconf CLK_TCK)
child_cpu() { awk -v t="$TCK" '{ sub(/^.*\) /, ""); print ($14 + $15) / t }' "/proc/$PM/stat"; }
# run NAME SETTINGS QUERY: QUERY returns (md5 of labels); keeps the best wall
# time of REPS runs and the CPU seconds of that run.
declare -A SECS MD5 CPU
run() {
    local name="$1" set="$2" query="$3" best="" out s m i c0 c1
    for i in $(seq 1 "$REPS"); do
        sleep 1    # let the previous session's backend exit and be reaped
        c0=$(child_cpu)
        out=$(psql -X -q -t -A -d bench -c "SET bft.threads = 1" -c "$set" \
              -c "SELECT bft_classify('warm up the cache', 'bench')" \
              -c "SELECT m || '|' || extract(epoch FROM clock_timestamp() - statement_timestamp()) FROM ($query) x(m)" | tail -n 1)
        sleep 1
        c1=$(child_cpu)
        m=${out%%|*}; s=${out#*|}
        if [ -z "$best" ] || awk -v a="$s" -v b="$best" 'BEGIN { exit !(a < b) }'; then
            best=$s; CPU[$name]=$(awk -v a="$c0" -v b="$c1" 'BEGIN { print b - a }')
        fi
    done
    SECS[$name]=$best; MD5[$name]=$m
}
ROWS="SELECT md5(string_agg(l, ',' ORDER BY id)) FROM (SELECT id, bft_classify(text, 'bench') AS l FROM tweets) s"
run serial "$SER" "$ROWS"
run parallel2 "$PAR" "$ROWS"
plan=$(q "$PAR EXPLAIN (COSTS OFF) SELECT id, bft_classify(text, 'bench') FROM tweets" | paste -sd' ')
run batch256 "$SER" "SELECT md5(string_agg(l, ',' ORDER BY id)) FROM (
      SELECT unnest(ids) AS id, unnest(bft_classify_batch(texts, 'bench')) AS l
        FROM (SELECT array_agg(id ORDER BY id) AS ids, array_agg(text ORDER BY id) AS texts
                FROM tweets GROUP BY (id - 1) / 256) g) s"
run batch_all "$SER" "SELECT md5(string_agg(l, ',' ORDER BY n)) FROM unnest(
      (SELECT bft_classify_batch(array_agg(text ORDER BY id), 'bench') FROM tweets)) WITH ORDINALITY u(l, n)"
run batch_all_t2 "$SER SET bft.threads = 2;" "SELECT md5(string_agg(l, ',' ORDER BY n)) FROM unnest(
      (SELECT bft_classify_batch(array_agg(text ORDER BY id), 'bench') FROM tweets)) WITH ORDINALITY u(l, n)"

echo "parallel plan: $plan"
echo
printf '%-46s %8s %8s %8s %8s %10s  %s\n' "variant ($n rows, best of $REPS)" "wall s" rows/s "x serial" "CPU s" "rows/CPU-s" "labels md5"
for k in serial parallel2 batch256 batch_all batch_all_t2; do
    case $k in
        serial) d="per-row bft_classify, serial (1 thread)" ;;
        parallel2) d="per-row bft_classify, parallel (2 workers)" ;;
        batch256) d="bft_classify_batch, 256-row groups (1 thread)" ;;
        batch_all) d="bft_classify_batch, one call (1 thread)" ;;
        batch_all_t2) d="bft_classify_batch, one call (bft.threads 2)" ;;
    esac
    printf '%-46s %8.2f %8.0f %8.2f %8.2f %10.0f  %s\n' "$d" "${SECS[$k]}" "$(awk -v n=$n -v s=${SECS[$k]} 'BEGIN { print n / s }')" \
        "$(awk -v a=${SECS[serial]} -v b=${SECS[$k]} 'BEGIN { print a / b }')" "${CPU[$k]}" \
        "$(awk -v n=$n -v c=${CPU[$k]} 'BEGIN { print (c > 0) ? n / c : 0 }')" "${MD5[$k]}"
done
echo "(CPU s: CPU time of the run's backend and parallel workers, including session start and"
echo " the model load; on idle cores the parallel run's wall time approaches CPU s / 2)"
same=1; for k in parallel2 batch256 batch_all batch_all_t2; do [ "${MD5[$k]}" = "${MD5[serial]}" ] || same=0; done
echo
[ $same = 1 ] && echo "all variants returned identical labels" || { echo "LABELS DIFFER between variants"; exit 1; }
echo "load average: $(cut -d' ' -f1-3 /proc/loadavg) (2 cores shared; numbers are only comparable within one run)"
