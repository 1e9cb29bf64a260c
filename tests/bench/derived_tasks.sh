#!/usr/bin/env bash
# derived_tasks: bft_train with its defaults (from scratch) on the tasks of
# derive_tasks.py, each scored on the shared held-out rows with bft_evaluate,
# side by side with the TF-IDF + logistic-regression baseline of
# baseline_tfidf.py on the same split (run here unless BASELINE=skip and a
# baseline.tsv from an earlier run is kept), and the training time.
#
#   python3 tests/bench/derive_tasks.py                       # once
#   bash tests/bench/derived_tasks.sh [task ...]              # default: all tasks
#   TRAIN_OPTS=", class_weights => 'balanced'" bash tests/bench/derived_tasks.sh skewed3_3k
#   # the from-scratch recipe used for every row count before the defaults scaled:
#   TRAIN_OPTS=", epochs => 6, mlm_epochs => 16, architecture => '{\"vocab_size\": 8000,
#     \"num_hidden_layers\": 4, \"hidden_size\": 256, \"intermediate_size\": 1024,
#     \"num_attention_heads\": 4}'" LABEL=before bash tests/bench/derived_tasks.sh topics_8k
#
# Environment: BFT_BENCH_DIR (default /tmp/bft-bench: tasks/ from
# derive_tasks.py, results appended to results.tsv), PYTHON (with
# scikit-learn, default python3), BASELINE=skip, THREADS (bft.threads,
# default 2), LABEL (a name for this run in results.tsv).
# Not part of the test suite: minutes per task on 2 cores (run it with nice).
set -uo pipefail
cd "$(dirname "$0")/../.."
ROOT="$PWD"
DIR="${BFT_BENCH_DIR:-/tmp/bft-bench}"
T="$DIR/tasks"
[ -f "$T/tasks.txt" ] || { echo "no $T/tasks.txt: run tests/bench/derive_tasks.py first"; exit 1; }
TASKS=("$@"); [ ${#TASKS[@]} -gt 0 ] || read -r -a TASKS <<<"$(tr '\n' ' ' <"$T/tasks.txt")"
TRAIN_OPTS="${TRAIN_OPTS:-}"
LABEL="${LABEL:-$(git rev-parse --short HEAD 2>/dev/null)}"
if [ "${BASELINE:-run}" != skip ]; then
    "${PYTHON:-python3}" tests/bench/baseline_tfidf.py --dir "$T" "${TASKS[@]}" || exit 1
fi
source tests/scripts/cluster.sh; set +e +u
TMPD=$(mktemp -d /tmp/bft-derived.XXXXXX); chmod 755 "$TMPD"
chmod 755 "$T" && chmod 644 "$T"/*.csv
trap 'cluster_stop "$TMPD/cl"; rm -rf "$TMPD"' EXIT
cluster_start "$TMPD/cl" "${PORT:-54394}" >/dev/null || exit 1
q() { psql -X -q -t -A -F '|' -d derived -v ON_ERROR_STOP=1 "$@"; }
psql -X -q -d postgres -c "CREATE DATABASE derived" >/dev/null
q -c "CREATE EXTENSION bft" -c "ALTER DATABASE derived SET bft.threads = ${THREADS:-2}" \
  -c "ALTER DATABASE derived SET bft.progress_interval = 0" \
  -c "ALTER DATABASE derived SET client_min_messages = warning" >/dev/null
echo "OpenBLAS: OPENBLAS_CORETYPE=${OPENBLAS_CORETYPE:-unset, kernels chosen for this CPU}; load average $(cut -d' ' -f1-3 /proc/loadavg)"
printf '%-11s %6s %3s | %-15s | %-15s | %-13s | %8s  %s\n' task rows K "bft acc / F1" "baseline acc/F1" "ratio acc/F1" seconds "epochs (mlm), last train loss"
for t in "${TASKS[@]}"; do
    q -c "CREATE TABLE ${t}_train (text text, label text); CREATE TABLE ${t}_test (text text, label text)" \
      -c "\\copy ${t}_train FROM '$T/${t}_train.csv' CSV HEADER" -c "\\copy ${t}_test FROM '$T/${t}_test.csv' CSV HEADER" >/dev/null
    start=$(date +%s.%N)
    out=$(q -c "SELECT rows_used, epochs FROM bft_train('${t}_train', 'text', 'label', model => '$t'$TRAIN_OPTS)" 2>&1)
    end=$(date +%s.%N)
    if ! echo "$out" | grep -qE '^[0-9]+\|[0-9]+$'; then echo "$t: $out"; continue; fi
    IFS='|' read -r rows epochs <<<"$out"
    IFS='|' read -r acc f1 <<<"$(q -c "SELECT round(accuracy::numeric, 4), round(macro_f1::numeric, 4) FROM bft_evaluate('$t', '${t}_test', 'text', 'label')")"
    IFS='|' read -r K mlm tl <<<"$(q -c "SELECT cardinality(labels), coalesce(metrics->'mlm'->>'epochs', '0'),
                                                 metrics->'epochs'->-1->>'loss' FROM bft.models WHERE name = '$t'")"
    IFS=$'\t' read -r _ _ _ bacc bf1 bsec bc <<<"$(grep -P "^$t\t" "$T/baseline.tsv" 2>/dev/null | tail -n 1)"
    sec=$(awk -v a="$start" -v b="$end" 'BEGIN { printf "%.0f", b - a }')
    ratio=$(awk -v a="$acc" -v b="${bacc:-0}" -v c="$f1" -v d="${bf1:-0}" 'BEGIN { if (b > 0 && d > 0) printf "%.3f / %.3f", a / b, c / d; else printf "-" }')
    printf '%-11s %6s %3s | %.4f / %.4f | %6s / %6s | %-13s | %8s  %s (%s), %s\n' "$t" "$rows" "$K" "$acc" "$f1" "${bacc:--}" "${bf1:--}" "$ratio" "$sec" "$epochs" "$mlm" "$tl"
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$LABEL" "$t" "$rows" "$K" "$acc" "$f1" "${bacc:-}" "${bf1:-}" "$sec" "$epochs" "$mlm" "$TRAIN_OPTS" >>"$DIR/results.tsv"
done
echo "(load average now: $(cut -d' ' -f1-3 /proc/loadavg))"
