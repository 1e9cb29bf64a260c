#!/usr/bin/env bash
# bench_precision.sh — bft's CPU precisions against each other and PyTorch, same run.
#
#   bash tests/bench/bench_precision.sh                  (everything, ~30-60 min on 2 busy cores)
#   PARTS=engine bash tests/bench/bench_precision.sh     (only 1.; PARTS=sql only 2.)
#   STEPS=3 THREADS=2 TRAIN_ROWS=4000 MLM_EPOCHS=2 EPOCHS=3 SEEDS="7 8" BASE_ROWS=256 ...
#
# 1. Engine throughput (bft-cli bench, random tokens of exactly SEQ tokens,
#    THREADS threads), for BERT-base (12 x 768, 12 heads, 3072, vocab 28996)
#    and bft's default from-scratch shapes (4 x 256, 4 heads, 1024, vocab 8000
#    from 5,000 rows; 2 x 128, 4 heads, 512, vocab 4000 under; SHAPES="base
#    small tiny" picks),
#    batch 16, sequence 64: bft fp32 with this environment's OPENBLAS_CORETYPE,
#    bft fp32 with it unset (OpenBLAS picks its kernels for this CPU), bft
#    bf16 (oneDNN), bft int8 (inference only), and PyTorch (the venv's, pip)
#    under torch.autocast("cpu", dtype=torch.bfloat16) with the same module
#    structure (tests/bench/bench_torch.py). Training: AdamW, dropout 0.1,
#    first step not timed; inference: batches after a warm-up batch. Prints
#    OpenBLAS's core and the oneDNN implementations that ran (ONEDNN_VERBOSE).
# 2. Inside PostgreSQL, on real tweets (../shared/data/topic_train.csv, or
#    $BFT_TOPIC_CSV): a held-out 20% (by md5 of the row), TRAIN_ROWS training
#    rows from the rest (the default from-scratch shape follows the rows: 2 x 128
#    under 5,000, 4 x 256 from there); the default from-scratch recipe with MLM_EPOCHS and
#    EPOCHS (default 2 and 3, short runs; "default" leaves the argument out:
#    bft_train's defaults, which follow the rows and train to convergence)
#    trained in fp32 and with bft.cpu_precision = 'bf16' for each seed
#    of SEEDS (same seed and data; several seeds show how much the seed alone
#    moves the accuracy): held-out accuracy of each (bft_evaluate); the fp32
#    model classified in int8: held-out accuracy and argmax agreement with
#    fp32; rows/s of bft_classify_batch over the held-out rows in fp32, bf16
#    and int8, for that model and for a randomly initialised BERT-base
#    (imported; BASE_ROWS rows, 0 skips it). Then the first seed's fp32 model, as a common
#    trained base, is fine-tuned for FT_EPOCHS (default 2; 0 skips) on other
#    rows in fp32 and in bf16: the held-out accuracy delta from the same start.
#
# Not a test: the numbers depend on the machine and its load (printed before
# and after each part); read the ratios of peers measured in the same run.
set -uo pipefail
cd "$(dirname "$0")/../.."
ROOT="$PWD"
PARTS=${PARTS:-engine,sql}
TH=${THREADS:-2}; STEPS=${STEPS:-3}; B=${BATCH:-16}; T=${SEQ:-64}
PY=${PYTHON:-/work/venv/bin/python}
[ -x "$PY" ] || PY=python3
CLI="$ROOT/build/bft-cli"
[ -x "$CLI" ] || make -s -j2 all >/dev/null || exit 1
OUT=$(mktemp -d /tmp/bft-bench-precision.XXXXXX); chmod 755 "$OUT"
trap 'rm -rf "$OUT"' EXIT

echo "machine: $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs);" \
     "flags: $(grep -m1 -o -w -E 'avx512_bf16|amx_bf16|amx_int8|avx512_vnni|avx_vnni' /proc/cpuinfo | sort -u | xargs)"
echo "OPENBLAS_CORETYPE in this environment: ${OPENBLAS_CORETYPE:-<unset>}"

get() { grep -h "^$2:" "$1" | tail -n1 | awk '{print $2}'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a > 0 && b > 0) printf "%.2f", a / b; else printf "-" }'; }

# ---------------------------------------------------------------- 1. engine
if [[ "$PARTS" == *engine* ]]; then
for shape in ${SHAPES:-base small tiny}; do
    case "$shape" in
    base) S="--layers 12 --hidden 768 --heads 12 --intermediate 3072 --vocab 28996"
        TS="12 768 12 3072 28996"; name="BERT-base" ;;
    small) S="--layers 4 --hidden 256 --heads 4 --intermediate 1024 --vocab 8000"
        TS="4 256 4 1024 8000"; name="from-scratch default from 5,000 rows (4 x 256)" ;;
    *) S="--layers 2 --hidden 128 --heads 4 --intermediate 512 --vocab 4000"
        TS="2 128 4 512 4000"; name="from-scratch default under 5,000 rows (2 x 128)" ;;
    esac
    echo; echo "== $name, batch $B, seq $T, $TH threads, $STEPS timed steps; load $(cut -d' ' -f1-3 /proc/loadavg)"
    b="$CLI bench $S --batch $B --seq $T --steps $STEPS --threads $TH --dropout 0.1"
    nice $b --precision fp32 >"$OUT/$shape.fp32" 2>&1
    env -u OPENBLAS_CORETYPE nice $b --precision fp32 >"$OUT/$shape.fp32auto" 2>&1
    ONEDNN_VERBOSE=1 nice $b --precision bf16 >"$OUT/$shape.bf16" 2>&1
    ONEDNN_VERBOSE=1 nice $b --precision int8 --skip-train >"$OUT/$shape.int8" 2>&1
    nice "$PY" tests/bench/bench_torch.py $TS "$B" "$T" "$STEPS" "$TH" bf16 >"$OUT/$shape.torch" 2>&1
    for f in fp32 fp32auto bf16 int8 torch; do
        grep -qE 'samples_per_s' "$OUT/$shape.$f" || { echo "  $f failed:"; tail -n 3 "$OUT/$shape.$f"; }
    done
    t32=$(get "$OUT/$shape.fp32" train_samples_per_s); i32=$(get "$OUT/$shape.fp32" infer_samples_per_s)
    ta=$(get "$OUT/$shape.fp32auto" train_samples_per_s); ia=$(get "$OUT/$shape.fp32auto" infer_samples_per_s)
    t16=$(get "$OUT/$shape.bf16" train_samples_per_s); i16=$(get "$OUT/$shape.bf16" infer_samples_per_s)
    i8=$(get "$OUT/$shape.int8" infer_samples_per_s)
    tt=$(get "$OUT/$shape.torch" torch_bf16_train_samples_per_s); ti=$(get "$OUT/$shape.torch" torch_bf16_infer_samples_per_s)
    printf '  %-34s %10s %10s\n' "samples/s" train infer
    printf '  %-34s %10s %10s\n' "bft fp32 (OPENBLAS_CORETYPE set)" "$t32" "$i32"
    printf '  %-34s %10s %10s\n' "bft fp32 (OPENBLAS_CORETYPE unset)" "$ta" "$ia"
    printf '  %-34s %10s %10s\n' "bft bf16" "$t16" "$i16"
    printf '  %-34s %10s %10s\n' "bft int8" "-" "$i8"
    printf '  %-34s %10s %10s\n' "PyTorch $(get "$OUT/$shape.torch" torch_bf16_version) autocast bf16" "$tt" "$ti"
    printf '  %-34s %10s %10s   (goals: train 1.6, infer 1.8)\n' "bf16 / fp32" "$(ratio "$t16" "$t32")" "$(ratio "$i16" "$i32")"
    printf '  %-34s %10s %10s   (vs the faster fp32 kernels)\n' "bf16 / fp32 (unset)" "$(ratio "$t16" "$ta")" "$(ratio "$i16" "$ia")"
    printf '  %-34s %10s %10s   (goal: train 1.3)\n' "bft bf16 / PyTorch bf16" "$(ratio "$t16" "$tt")" "$(ratio "$i16" "$ti")"
    printf '  %-34s %10s %10s   (goal: infer 2.5)\n' "int8 / fp32" "-" "$(ratio "$i8" "$i32")"
    echo "  OpenBLAS core: $(grep -h '^openblas:' "$OUT/$shape.fp32" | sed 's/.*core //') (OPENBLAS_CORETYPE set)," \
         "$(grep -h '^openblas:' "$OUT/$shape.fp32auto" | sed 's/.*core //') (unset)"
    for f in bf16 int8; do
        echo "  oneDNN $f: $(grep -h '^onednn_verbose,exec' "$OUT/$shape.$f" | awk -F, '{print $4" "$5}' | sort | uniq -c | sort -rn | awk '{printf "%s%s %s x%s", (NR>1?", ":""), $2, $3, $1}')"
    done
done
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)"
fi

# ---------------------------------------------------------------- 2. SQL
if [[ "$PARTS" == *sql* ]]; then
CSV="${BFT_TOPIC_CSV:-$ROOT/../shared/data/topic_train.csv}"
VOCAB="$(dirname "$CSV")/vocab/bert-base-cased-vocab.txt"
if [ ! -f "$CSV" ]; then echo "skip - SQL part: no $CSV (set BFT_TOPIC_CSV)"; exit 0; fi
TRAIN_ROWS=${TRAIN_ROWS:-4000}; MLM_EPOCHS=${MLM_EPOCHS:-2}; EPOCHS=${EPOCHS:-3}; BASE_ROWS=${BASE_ROWS:-256}
EPOCH_ARGS=""
[ "$MLM_EPOCHS" = default ] || EPOCH_ARGS+=", mlm_epochs => $MLM_EPOCHS"
[ "$EPOCHS" = default ] || EPOCH_ARGS+=", epochs => $EPOCHS"
SEEDS=${SEEDS:-7}; SEED1=${SEEDS%% *}
source tests/scripts/cluster.sh; set +e +u
cluster_start "$OUT/cl" 54393 >/dev/null || exit 1
trap 'cluster_stop "$OUT/cl"; rm -rf "$OUT"' EXIT
q() { psql -X -q -t -A -d bench -c "SET client_min_messages = warning" -c "SET bft.threads = $TH" "$@"; }
psql -X -q -d postgres -c "CREATE DATABASE bench" >/dev/null
q -c "CREATE EXTENSION bft" -c "CREATE TABLE tweets (id serial, text text, label int)" >/dev/null
psql -X -q -d bench -c "\\copy tweets (text, label) FROM '$CSV' CSV HEADER" >/dev/null
q -c "CREATE TABLE heldout AS SELECT * FROM tweets ORDER BY md5('h' || id) LIMIT (SELECT count(*) / 5 FROM tweets)" \
  -c "CREATE TABLE train AS SELECT * FROM tweets WHERE id NOT IN (SELECT id FROM heldout) ORDER BY md5('t' || id) LIMIT $TRAIN_ROWS" >/dev/null
echo; echo "== real tweets: $(q -c "SELECT count(*) FROM train") training rows, $(q -c "SELECT count(*) FROM heldout") held-out;" \
     "from-scratch defaults with mlm_epochs $MLM_EPOCHS, epochs $EPOCHS, seeds $SEEDS, $TH threads; load $(cut -d' ' -f1-3 /proc/loadavg)"
acc() { q -c "SET bft.cpu_precision = '$2'" -c "SELECT round(accuracy::numeric, 4) FROM bft_evaluate('$1', 'heldout', 'text', 'label')"; }
for seed in $SEEDS; do
    for p in fp32 bf16; do
        r=$(q -c "SET bft.cpu_precision = '$p'" -c "SELECT round(extract(epoch FROM duration)::numeric, 1) || ' s, ' || round(samples_per_second::numeric, 1)
                  FROM bft_train('train', 'text', 'label', model => 't_${p}_$seed'$EPOCH_ARGS, seed => $seed)")
        echo "  seed $seed, trained in $p: $r samples/s (fine-tuning; $(q -c "SELECT 'mlm_epochs ' || (params->>'mlm_epochs') || ', epochs ' || (params->>'epochs') || ', ' || (config->>'num_hidden_layers') || ' x ' || (config->>'hidden_size') FROM bft.models WHERE name = 't_${p}_$seed'"))"
    done
    a32=$(acc "t_fp32_$seed" fp32); a16=$(acc "t_bf16_$seed" bf16); a16f=$(acc "t_bf16_$seed" fp32)
    echo "  seed $seed held-out accuracy: fp32-trained $a32; bf16-trained $a16 (classified in bf16), $a16f (in fp32);" \
         "delta bf16 - fp32 $(awk -v a="$a16" -v b="$a32" 'BEGIN { printf "%+.2f points", 100 * (a - b) }') (goal |delta| <= 0.5)"
done
# fine-tuning a common trained base (bft's own fp32 model of the first seed,
# its encoder pre-trained on the column) on FT rows that it has not seen: the
# same starting point for both precisions
FT_EPOCHS=${FT_EPOCHS:-2}
if [ "$FT_EPOCHS" -gt 0 ]; then
    q -c "CREATE TABLE train2 AS SELECT * FROM tweets WHERE id NOT IN (SELECT id FROM heldout)
          ORDER BY md5('t' || id) OFFSET $TRAIN_ROWS LIMIT $TRAIN_ROWS" >/dev/null
    for p in fp32 bf16; do
        r=$(q -c "SET bft.cpu_precision = '$p'" -c "SELECT round(extract(epoch FROM duration)::numeric, 1) || ' s, ' || round(samples_per_second::numeric, 1)
                  FROM bft_train('train2', 'text', 'label', model => 'ft_$p', base => 't_fp32_$SEED1', epochs => $FT_EPOCHS, seed => $SEED1)")
        echo "  fine-tuned t_fp32_$SEED1 on $TRAIN_ROWS other rows, $FT_EPOCHS epochs, in $p: $r samples/s"
    done
    f32=$(acc ft_fp32 fp32); f16=$(acc ft_bf16 bf16)
    echo "  fine-tuning a trained base, held-out accuracy: fp32 $f32, bf16 $f16;" \
         "delta bf16 - fp32 $(awk -v a="$f16" -v b="$f32" 'BEGIN { printf "%+.2f points", 100 * (a - b) }') (goal |delta| <= 0.5)"
fi
a32=$(acc "t_fp32_$SEED1" fp32); a8=$(acc "t_fp32_$SEED1" int8); a8b=$(acc "t_bf16_$SEED1" int8)
M="t_fp32_$SEED1"
agree=$(q -c "CREATE TABLE l32 AS SELECT unnest(array_agg(id ORDER BY id)) AS id, unnest(bft_classify_batch(array_agg(text ORDER BY id), '$M')) AS l FROM heldout" \
          -c "SET bft.cpu_precision = 'int8'" \
          -c "CREATE TABLE l8 AS SELECT unnest(array_agg(id ORDER BY id)) AS id, unnest(bft_classify_batch(array_agg(text ORDER BY id), '$M')) AS l FROM heldout" \
          -c "SELECT round(100.0 * avg((a.l = b.l)::int), 2) FROM l32 a JOIN l8 b USING (id)")
echo "  int8 classification of the fp32 model: accuracy $a8 (drop $(awk -v a="$a8" -v b="$a32" 'BEGIN { printf "%.2f points", 100 * (b - a) }'), goal <= 0.3);" \
     "argmax agreement with fp32 $agree% (goal >= 99.5); bf16-trained model in int8: $a8b"
# rows/s of bft_classify_batch over the held-out rows (model loaded first)
rate() { # model precision rows: rows/s of one bft_classify_batch call (psql's \timing)
    local ms
    ms=$(q -c "SET bft.cpu_precision = '$2'" -c "SELECT bft_classify('warm up', '$1')" \
           -c "CREATE TEMP TABLE x AS SELECT text FROM heldout ORDER BY id LIMIT $3" -c '\timing on' \
           -c "SELECT cardinality(bft_classify_batch(array_agg(text), '$1')) FROM x" |
         grep '^Time:' | tail -n 1 | awk '{print $2}')
    awk -v n="$3" -v ms="$ms" 'BEGIN { if (ms > 0) printf "%.1f", n / (ms / 1000); else printf "-" }'
}
n=$(q -c "SELECT count(*) FROM heldout")
r32=$(rate "$M" fp32 "$n"); r16=$(rate "$M" bf16 "$n"); r8=$(rate "$M" int8 "$n")
echo "  bft_classify_batch, from-scratch model, $n rows: fp32 $r32, bf16 $r16, int8 $r8 rows/s;" \
     "int8/fp32 $(ratio "$r8" "$r32"), bf16/fp32 $(ratio "$r16" "$r32")"
# a randomly initialised BERT-base (the speed of its shape; weights do not matter)
if [ "$BASE_ROWS" -gt 0 ] && [ -f "$VOCAB" ] && "$PY" - "$OUT/base" "$VOCAB" <<'PY' >/dev/null 2>&1
import shutil, sys, torch, transformers
out, vocab = sys.argv[1], sys.argv[2]
torch.manual_seed(0)
cfg = transformers.BertConfig(num_labels=20)  # bert-base shape, vocab 30522 > 28996 ids used
cfg.vocab_size = 28996
transformers.BertForSequenceClassification(cfg).save_pretrained(out, safe_serialization=True)
shutil.copy(vocab, out + "/vocab.txt")
PY
then
    chmod -R a+rX "$OUT/base"
    q -c "SELECT bft_import_model('base', '$OUT/base')" >/dev/null
    b32=$(rate base fp32 "$BASE_ROWS"); b16=$(rate base bf16 "$BASE_ROWS"); b8=$(rate base int8 "$BASE_ROWS")
    echo "  bft_classify_batch, BERT-base (random weights), $BASE_ROWS rows: fp32 $b32, bf16 $b16, int8 $b8 rows/s;" \
         "int8/fp32 $(ratio "$b8" "$b32"), bf16/fp32 $(ratio "$b16" "$b32")"
else
    echo "  skip - BERT-base rows/s: BASE_ROWS=0, no $VOCAB or no transformers in $PY"
fi
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)"
fi
