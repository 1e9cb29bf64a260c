#!/usr/bin/env bash
# test_cuda_emu: the CUDA path end to end — bft-cli and the extension with
# device cuda — on a machine without a GPU, through the CUDA emulator
# (tests/cuda_emu: the real ops_cuda.cu host code and kernels, run on the CPU
# with guard-paged device memory, poisoned allocations and hostile thread
# scheduling). It shows the plumbing (device selection, weight upload and
# caching, training on the device, errors, cancellation) works; it says
# nothing about speed or the real cuBLAS (tests/gpu/run_gpu_checks.sh does,
# on a GPU machine).
#
# bft-cli: classify / fill-mask / embed / train in fp32 on the emulated GPU agree with
# the CPU (1e-5), bf16 within its tolerance (1e-2), a from-scratch training on
# the device, the out-of-memory and no-device errors. SQL (own cluster, port
# 54371, BFT_CUDA_MODULE in the server's environment): bft_train(device =>
# 'cuda'), bft.device = 'cuda' classification vs the CPU, a cancelled GPU
# training leaves the session's GPU state usable, and the pg_regress test
# bft_cuda gives its with-a-GPU output (expected/bft_cuda_1.out; CI's
# installcheck, without a GPU, matches expected/bft_cuda.out).
# Skips (0 passed, 0 failed) in builds without CUDA (no build/emu/bft_cuda.so
# or a loader built with USE_CUDA=0).
set -uo pipefail
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
cd "$ROOT"
source tests/scripts/cluster.sh
source tests/scripts/ops_lib.sh # ok / fail / check, PGOPTIONS, q (database $DB)
set +e
DB=postgres
CLI="${BFT_CLI:-build/bft-cli}"
CK=tests/data/ckpt
EMU_SRC="$ROOT/build/emu/bft_cuda.so"
if [ ! -f "$EMU_SRC" ] || ! BFT_CUDA_MODULE="$EMU_SRC" "$CLI" classify --model $CK/tiny --device cuda \
        </dev/null >/dev/null 2>&1; then
    echo "skip - CUDA emulator: not a CUDA build (no $EMU_SRC, or bft-cli built with USE_CUDA=0)"
    echo "RESULT: 0 passed, 0 failed"
    exit 0
fi
DIR="${BFT_TMP:-/tmp}/bft_cuda_emu.$$"
PORT=${BFT_CUDA_EMU_PORT:-54371}
mkdir -p "$DIR"
trap 'cluster_stop "$DIR"; rm -rf "$DIR"' EXIT
# the server's OS user must be able to read the module
cp "$EMU_SRC" "$DIR/bft_cuda_emu.so"
chmod 755 "$DIR" && chmod 644 "$DIR/bft_cuda_emu.so"
export BFT_CUDA_MODULE="$DIR/bft_cuda_emu.so"

# maxdiff A B: largest |difference| between the numbers of two files, token by
# token (the files must have the same shape; a shape difference prints 1e9).
maxdiff() {
    paste -d'\n' <(tr -s ' ,[]{}:"\t' '\n' <"$1" | grep -E '^-?[0-9]') \
                 <(tr -s ' ,[]{}:"\t' '\n' <"$2" | grep -E '^-?[0-9]') |
        awk 'NR % 2 { a = $1; next } { d = a - $1; if (d < 0) d = -d; if (d > m) m = d; n++ }
             END { if (n == 0) print 1e9; else printf "%.3g\n", m + 0 }'
}
same_count() { [ "$(tr -s ' ,[]{}:"\t' '\n' <"$1" | grep -cE '^-?[0-9]')" = "$(tr -s ' ,[]{}:"\t' '\n' <"$2" | grep -cE '^-?[0-9]')" ]; }
le() { awk -v a="$1" -v b="$2" 'BEGIN { exit !(a + 0 <= b + 0) }'; }

# ---------------------------------------------------------------- bft-cli
T="$DIR/cli"; mkdir -p "$T"
IN=tests/data/cli/classify_tiny.txt
"$CLI" classify --model $CK/tiny --device cpu <$IN >"$T/cpu.out" 2>"$T/cpu.err"
"$CLI" classify --model $CK/tiny --device cuda --precision fp32 <$IN >"$T/f32.out" 2>"$T/f32.err"; rc=$?
"$CLI" classify --model $CK/tiny --device cuda <$IN >"$T/bf16.out" 2>"$T/bf16.err"; rc2=$?
d32=$(maxdiff "$T/cpu.out" "$T/f32.out"); d16=$(maxdiff "$T/cpu.out" "$T/bf16.out")
check '[ $rc = 0 ] && same_count "$T/cpu.out" "$T/f32.out" && le "$d32" 1e-5' \
    "bft-cli classify --device cuda --precision fp32 = CPU within 1e-5 (max |diff| $d32)"
check '[ $rc2 = 0 ] && same_count "$T/cpu.out" "$T/bf16.out" && le "$d16" 1e-2' \
    "bft-cli classify --device cuda (bf16) = CPU within 1e-2 (max |diff| $d16)"
check '! grep -q "emulator" "$T/f32.err" "$T/bf16.err"' "no emulator complaints (faults, bad launches)"

"$CLI" fill-mask --model $CK/tiny_mlm --top-k 5 "the cat sat on the [MASK] ." >"$T/fm_cpu.out" 2>&1
"$CLI" fill-mask --model $CK/tiny_mlm --top-k 5 --device cuda --precision fp32 "the cat sat on the [MASK] ." \
    >"$T/fm_gpu.out" 2>&1; rc=$?
dfm=$(maxdiff "$T/fm_cpu.out" "$T/fm_gpu.out")
check '[ $rc = 0 ] && [ "$(cut -d" " -f1,2 "$T/fm_cpu.out")" = "$(cut -d" " -f1,2 "$T/fm_gpu.out")" ] && le "$dfm" 1e-5' \
    "bft-cli fill-mask --device cuda: same tokens as the CPU, scores within 1e-5 ($dfm)"

"$CLI" embed --model $CK/tiny_st --hidden <$IN >"$T/emb_cpu.out" 2>&1
"$CLI" embed --model $CK/tiny_st --hidden --device cuda --precision fp32 <$IN >"$T/emb_gpu.out" 2>&1; rc=$?
"$CLI" embed --model $CK/tiny_st --pooling cls+max+normalize <$IN >"$T/embp_cpu.out" 2>&1
"$CLI" embed --model $CK/tiny_st --pooling cls+max+normalize --device cuda --precision fp32 <$IN >"$T/embp_gpu.out" 2>&1; rc2=$?
demb=$(maxdiff "$T/emb_cpu.out" "$T/emb_gpu.out"); dembp=$(maxdiff "$T/embp_cpu.out" "$T/embp_gpu.out")
check '[ $rc = 0 ] && [ $rc2 = 0 ] && same_count "$T/emb_cpu.out" "$T/emb_gpu.out" && le "$demb" 1e-5 && le "$dembp" 1e-5' \
    "bft-cli embed --device cuda --precision fp32: hidden states and embeddings = CPU within 1e-5 ($demb, $dembp)"

{
    echo "text,label"
    for i in $(seq 1 48); do
        case $((i % 3)) in
        0) echo "\"the market rallied on strong earnings $i\",positive" ;;
        1) echo "\"shares fell after the profit warning $i\",negative" ;;
        2) echo "\"the company holds its meeting on day $i\",neutral" ;;
        esac
    done
} >"$T/train.csv"
train() { # train OUTDIR DEVICE-ARGS...
    local out="$1"; shift
    "$CLI" train --model $CK/tiny --csv "$T/train.csv" --text-col text --label-col label --epochs 2 \
        --batch-size 8 --lr 1e-3 --dropout 0.1 --seed 3 --out "$out" "$@"
}
train "$T/m_cpu" --device cpu >"$T/tr_cpu.log" 2>&1
train "$T/m_gpu" --device cuda --precision fp32 >"$T/tr_gpu.log" 2>&1; rc=$?
"$CLI" classify --model "$T/m_cpu" <$IN >"$T/m_cpu.out" 2>&1
"$CLI" classify --model "$T/m_gpu" <$IN >"$T/m_gpu.out" 2>&1
dtr=$(maxdiff "$T/m_cpu.out" "$T/m_gpu.out")
check '[ $rc = 0 ] && same_count "$T/m_cpu.out" "$T/m_gpu.out" && le "$dtr" 1e-4' \
    "bft-cli train --device cuda --precision fp32 (dropout 0.1): the model classifies like the CPU-trained one within 1e-4 ($dtr)"
"$CLI" train --from-scratch --vocab-size 200 --layers 1 --hidden 32 --heads 2 --intermediate 64 \
    --mlm-epochs 1 --csv "$T/train.csv" --text-col text --label-col label --epochs 2 --batch-size 8 \
    --out "$T/m_scratch" --device cuda >"$T/tr_scratch.log" 2>&1; rc=$?
"$CLI" classify --model "$T/m_scratch" <$IN >"$T/m_scratch.out" 2>&1; rc2=$?
check '[ $rc = 0 ] && [ $rc2 = 0 ] && [ "$(grep -c label_id "$T/m_scratch.out")" = "$(wc -l <$IN)" ]' \
    "bft-cli train --from-scratch --mlm-epochs 1 --device cuda (bf16) writes a model the CPU classifies with"

BFT_CUDA_EMU_MEM=64K "$CLI" classify --model $CK/tiny --device cuda <$IN >/dev/null 2>"$T/oom.err"; rc=$?
check '[ $rc != 0 ] && grep -q "CUDA out of memory" "$T/oom.err"' \
    "device out of memory: a clear error ($(head -c 160 "$T/oom.err"))"
BFT_CUDA_EMU_DEVICES=0 "$CLI" classify --model $CK/tiny --device cuda <$IN >/dev/null 2>"$T/nodev.err"; rc=$?
check '[ $rc != 0 ] && grep -q "no CUDA device" "$T/nodev.err"' \
    "no device: a clear error ($(head -c 160 "$T/nodev.err"))"

# ---------------------------------------------------------------- SQL
cluster_start "$DIR/pg" "$PORT" >/dev/null || { echo "RESULT: $PASS passed, $((FAIL + 1)) failed"; exit 1; }
q "CREATE EXTENSION bft" >/dev/null
q "CREATE TABLE tw AS SELECT (ARRAY['stocks rally on earnings','bank cuts rates again','oil prices fall sharply'])[1 + i % 3]
   || ' ' || (ARRAY['today','this week','in asia','in europe','after hours'])[1 + i % 5] || ' ' || i AS text,
   i % 3 AS label FROM generate_series(1, 240) i" >/dev/null
dv=$(q "SELECT available || '|' || name || '|' || detail FROM bft_devices() WHERE device = 'cuda'")
check '[[ "$dv" == "true|bft CUDA emulator (CPU) (sm_90, "*"|bf16 mixed precision (bft.cuda_precision)" ]]' \
    "bft_devices() shows the (emulated) GPU with its name and precision ($dv)"
ARCH='{"hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 64, "vocab_size": 200}'
TRAIN="'tw', 'text', 'label', 8, mlm_epochs => 0, batch_size => 16, learning_rate => 5e-3, architecture => '$ARCH'"
l_cpu=$(q "SELECT train_loss FROM bft_train($TRAIN, model => 'm_cpu', device => 'cpu')")
l_gpu=$(q "SELECT train_loss FROM bft_train($TRAIN, model => 'm_gpu', device => 'cuda')")
check 'le 0 "$l_gpu" 2>/dev/null && awk -v a="$l_cpu" -v b="$l_gpu" "BEGIN { d = a - b; if (d < 0) d = -d; exit !(d <= 0.05 * a + 0.01) }"' \
    "bft_train(device => 'cuda') (bf16) trains like the CPU: train loss $l_gpu vs $l_cpu"
acc=$(q "SELECT round(a.accuracy::numeric, 3) || '|' || round(b.accuracy::numeric, 3)
         FROM bft_evaluate('m_cpu', 'tw', 'text', 'label') a, bft_evaluate('m_gpu', 'tw', 'text', 'label') b")
check 'awk -F"|" "{ d = \$1 - \$2; if (d < 0) d = -d; exit !(\$2 >= 0.6 && d <= 0.05) }" <<<"$acc"' \
    "the GPU-trained model classifies as well as the CPU one, far above chance (1/3): training-set accuracy cpu|gpu $acc"
q "CREATE TABLE p_cpu AS SELECT text, bft_predict_proba(text, 'm_cpu') AS p FROM tw" >/dev/null
cmp=$(psql -X -q -t -A -d postgres -c "SET bft.device = 'cuda'" \
      -c "CREATE TABLE p_gpu AS SELECT text, bft_predict_proba(text, 'm_cpu') AS p FROM tw" \
      -c "SELECT count(*) || '|' || coalesce(max(abs(u.a - u.b)), 1) FROM p_cpu c JOIN p_gpu g USING (text),
                 unnest(c.p, g.p) AS u(a, b)" 2>&1 | tail -n 1)
# (a difference of exactly 0 would mean the CPU computed it: bf16 GEMMs round differently)
check 'awk -F"|" "{ exit !(\$1 == 720 && \$2 <= 0.02 && \$2 > 0) }" <<<"$cmp"' \
    "SET bft.device = 'cuda': bft_predict_proba of every row computed on the device, within bf16 tolerance 2e-2 of the CPU (values|max diff $cmp)"

# parallel workers classify on the GPU too (each process opens the device):
# identical to a serial GPU run (the kernels are deterministic)
q "ANALYZE tw" >/dev/null
PAR="SET bft.device = 'cuda'; SET parallel_setup_cost = 0; SET parallel_tuple_cost = 0;
     SET min_parallel_table_scan_size = 0; SET max_parallel_workers_per_gather = 2;
     SET parallel_leader_participation = off;"
SEL="SELECT text, bft_predict_proba(text, 'm_cpu') AS p FROM tw"
an=$(q "$PAR EXPLAIN (ANALYZE, COSTS OFF, TIMING OFF) $SEL")
ser=$(q "SET bft.device = 'cuda'; SELECT md5(string_agg(text || ':' || p::text, ',' ORDER BY text)) FROM ($SEL) s")
par=$(q "$PAR SELECT md5(string_agg(text || ':' || p::text, ',' ORDER BY text)) FROM ($SEL) s")
check 'grep -q "Workers Launched: 2" <<<"$an" && [ -n "$ser" ] && [ "$ser" = "$par" ]' \
    "2 parallel workers classify on the GPU, identical to a serial GPU run ($(grep -oE 'Workers Launched: [0-9]+' <<<"$an"))"

# a GPU training cancelled by statement_timeout, then the same session uses the GPU again
out=$(psql -X -q -t -A -d postgres -c "SET statement_timeout = '1500ms'" \
      -c "SELECT version FROM bft_train('tw', 'text', 'label', 50, model => 'm_long', mlm_epochs => 0, architecture => '$ARCH', device => 'cuda')" \
      -c "RESET statement_timeout" -c "SET bft.device = 'cuda'" \
      -c "SELECT 'cls:' || bft_classify('bank cuts rates again today 7', 'm_gpu')" \
      -c "SELECT 'ver:' || version FROM bft_train($TRAIN, model => 'm_gpu', device => 'cuda')" 2>&1)
check 'grep -q "canceling statement due to statement timeout" <<<"$out"' "statement_timeout cancels a GPU training"
check 'grep -q "^cls:" <<<"$out" && grep -q "^ver:2$" <<<"$out"' \
    "after the cancel the same session classifies and trains on the GPU ($(tr '\n' ' ' <<<"$out" | head -c 200))"
check '[ "$(q "SELECT count(*) FROM bft.models WHERE name = '"'m_long'"'")" = 0 ]' "the cancelled training left no model"
# a background job trains with the submitter's bft.device and bft.cuda_precision
jid=$(psql -X -q -t -A -d postgres -c "SET bft.device = 'cuda'" -c "SET bft.cuda_precision = 'fp32'" \
      -c "SELECT bft_train_async($TRAIN, model => 'm_job')" 2>&1 | tail -n 1)
st=""
for _ in $(seq 1 600); do
    st=$(q "SELECT state FROM bft.jobs WHERE id = ${jid:-0}")
    [ "$st" = succeeded ] || [ "$st" = failed ] || [ "$st" = cancelled ] && break
    sleep 0.2
done
jp=$(q "SELECT params->>'device' || '/' || (params->>'precision') FROM bft.models WHERE name = 'm_job'")
check '[ "$st" = succeeded ] && [ "$jp" = cuda/fp32 ]' \
    "bft_train_async under SET bft.device = 'cuda', bft.cuda_precision = 'fp32' trains on the GPU in fp32 (job $jid: $st, $jp $(q "SELECT error FROM bft.jobs WHERE id = ${jid:-0}"))"

# the pg_regress test bft_cuda must match its with-a-GPU output (expected/bft_cuda_1.out)
RO="$DIR/regress"; mkdir -p "$RO"; chmod 777 "$RO"
PGOPTIONS= "$(pg_config --pkglibdir)/pgxs/src/test/regress/pg_regress" --inputdir=. --outputdir="$RO" \
    --bindir="$(pg_config --bindir)" --load-extension=bft --dbname=bft_cuda_regress bft_cuda \
    >"$RO/pg_regress.log" 2>&1
check 'cmp -s "$RO/results/bft_cuda.out" expected/bft_cuda_1.out' \
    "pg_regress bft_cuda on the emulated GPU gives expected/bft_cuda_1.out ($(diff "$RO/results/bft_cuda.out" expected/bft_cuda_1.out 2>&1 | head -c 300 | tr '\n' ' '))"
check '! grep -q "bft CUDA emulator" "$DIR/pg/server.log"' \
    "no emulator complaints in the server log ($(grep -m1 "bft CUDA emulator" "$DIR/pg/server.log" | head -c 200))"

echo "RESULT: $PASS passed, $FAIL failed"
[ "$FAIL" -eq 0 ]
