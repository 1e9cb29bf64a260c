#!/usr/bin/env bash
# quality_topics: held-out quality of bft's default from-scratch model on the
# Twitter Financial News Topic training split (topic_train.csv in
# $BFT_SHARED_DATA, see tests/lib/shared_data.sh;
# 16,990 rows, 20 labels), measured the way a user would run it:
#   a stratified 80/20 split (per label, ordered by md5 of the row id),
#   SELECT * FROM bft_train('train', 'text', 'label')      -- all defaults
#   SELECT * FROM bft_evaluate('topics', 'test', 'text', 'label')
# Prints accuracy, macro-F1 and the training time. Not part of the test suite
# (it trains for tens of minutes on 2 cores). A TF-IDF + logistic regression
# baseline scores about 0.85 accuracy on this data.
#
# Usage: bash tests/bench/quality_topics.sh          (uses the installed bft)
#        TRAIN_OPTS=", epochs => 4" bash tests/bench/quality_topics.sh
set -uo pipefail
cd "$(dirname "$0")/../.."
ROOT="$PWD"
source tests/lib/shared_data.sh
shared_data_need quality_topics topic_train.csv
CSV="$BFT_SHARED_DATA/topic_train.csv"
TRAIN_OPTS="${TRAIN_OPTS:-}"
source tests/scripts/cluster.sh; set +e +u
TMPD=$(mktemp -d /tmp/bft-quality.XXXXXX); chmod 755 "$TMPD"
trap 'cluster_stop "$TMPD/cl"; rm -rf "$TMPD"' EXIT
cluster_start "$TMPD/cl" 54392 >/dev/null || exit 1
q() { psql -X -q -d quality -v ON_ERROR_STOP=1 "$@"; }
psql -X -q -d postgres -c "CREATE DATABASE quality" >/dev/null
q -c "CREATE EXTENSION bft" -c "CREATE TABLE tweets (id serial, text text, label int)" >/dev/null
q -c "\\copy tweets (text, label) FROM '$CSV' CSV HEADER" >/dev/null
q <<'SQL'
CREATE TABLE ranked AS
SELECT t.*, row_number() OVER w AS rn, count(*) OVER (PARTITION BY label) AS n
  FROM tweets t WINDOW w AS (PARTITION BY label ORDER BY md5(id::text));
CREATE TABLE test  AS SELECT id, text, label FROM ranked WHERE rn <= round(n * 0.2);
CREATE TABLE train AS SELECT id, text, label FROM ranked WHERE rn >  round(n * 0.2);
SQL
echo "rows: train $(q -t -A -c 'SELECT count(*) FROM train'), test $(q -t -A -c 'SELECT count(*) FROM test')"
echo "bft_train('train', 'text', 'label', model => 'topics'$TRAIN_OPTS)"
start=$(date +%s)
q -c "SELECT model, version, rows_used, epochs, round(train_loss::numeric, 4) AS train_loss,
             round(samples_per_second::numeric, 1) AS samples_per_s, duration
        FROM bft_train('train', 'text', 'label', model => 'topics'$TRAIN_OPTS)" 2>&1 \
    | grep -v '^NOTICE:  training epoch [0-9]*/[0-9]*: step' 
end=$(date +%s)
q -t -A -F ' ' -c "SELECT 'held-out accuracy', round(accuracy::numeric, 4), 'macro_f1', round(macro_f1::numeric, 4), 'rows', rows
                     FROM bft_evaluate('topics', 'test', 'text', 'label')"
echo "training wall time: $((end - start)) s (load average now: $(cut -d' ' -f1-3 /proc/loadavg))"
