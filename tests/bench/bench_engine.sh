#!/usr/bin/env bash
# bench_engine.sh — bft vs PyTorch eager vs plain OpenBLAS sgemm, same shapes, same run.
#
#   bash tests/bench/bench_engine.sh            (BERT-base, batch 16, seq 64, 2 threads)
#   STEPS=4 THREADS=2 bash tests/bench/bench_engine.sh
#
# Shapes: 12 layers, 768 hidden, 12 heads, 3072 intermediate, vocab 28996,
# batch 16, sequence 64, fp32. Not a timed test: run it on a quiet machine
# (the load average is printed first). Steps are the timed steps after one
# warm-up step/batch in each program; each of the three programs runs alone.
# Goals (issue 2): training >= 1.15x and inference >= 1.1x PyTorch samples/s,
# training >= 90% of the sgemm rate (FLOPs: 6 x encoder weight parameters x
# tokens plus attention, i.e. the GEMM-only ceiling below), peak RSS <= 0.75x PyTorch.
set -euo pipefail
cd "$(dirname "$0")/../.."
L=${LAYERS:-12}; C=${HIDDEN:-768}; NH=${HEADS:-12}; I=${INTERMEDIATE:-3072}; V=${VOCAB:-28996}
B=${BATCH:-16}; T=${SEQ:-64}; STEPS=${STEPS:-4}; TH=${THREADS:-2}
BUILD=${BUILD:-build/bench}
OUT=$(mktemp -d /tmp/bft-bench.XXXXXX)
trap 'rm -rf "$OUT"' EXIT

make -s BUILD="$BUILD" "$BUILD/bft-cli" "$BUILD/libbftengine.a" >/dev/null
cc -O2 -std=c11 -D_GNU_SOURCE -Isrc/engine tests/bench/bench_sgemm.c "$BUILD/libbftengine.a" \
    -lopenblas $(pkg-config --libs json-c icu-uc) -lm -lpthread -o "$OUT/bench_sgemm"

echo "machine: $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
echo "load before: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "shape: L=$L C=$C NH=$NH I=$I V=$V batch=$B seq=$T threads=$TH steps=$STEPS"

"$OUT/bench_sgemm" "$L" "$C" "$I" "$B" "$T" "$TH" 2 | tee "$OUT/sgemm.txt"
/usr/bin/time -f "bft_max_rss_kb: %M" "$BUILD/bft-cli" bench --layers "$L" --hidden "$C" --heads "$NH" \
    --intermediate "$I" --vocab "$V" --batch "$B" --seq "$T" --steps "$STEPS" --threads "$TH" \
    2>&1 | tee "$OUT/bft.txt"
/usr/bin/time -f "torch_max_rss_kb: %M" /usr/bin/python3 tests/bench/bench_torch.py "$L" "$C" "$NH" "$I" \
    "$V" "$B" "$T" "$STEPS" "$TH" 2>&1 | tee "$OUT/torch.txt"
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)"

get() { grep -h "^$1:" "$OUT"/*.txt | tail -n1 | awk '{print $2}'; }
bt=$(get train_samples_per_s); bi=$(get infer_samples_per_s); brss=$(get bft_max_rss_kb)
tt=$(get torch_train_samples_per_s); ti=$(get torch_infer_samples_per_s); trss=$(get torch_max_rss_kb)
st=$(get openblas_train_gemm_ceiling_samples_per_s); si=$(get openblas_infer_gemm_ceiling_samples_per_s)
sg=$(get openblas_train_gflops)
awk -v bt="$bt" -v bi="$bi" -v brss="$brss" -v tt="$tt" -v ti="$ti" -v trss="$trss" -v st="$st" \
    -v si="$si" -v sg="$sg" 'BEGIN {
    printf "\n%-28s %10s %10s %10s %8s %s\n", "", "bft", "pytorch", "sgemm", "ratio", "goal";
    printf "%-28s %10.3f %10.3f %10.3f %8.3f %s\n", "train samples/s", bt, tt, st, bt / tt, ">= 1.15 x pytorch";
    printf "%-28s %10s %10s %10s %8.3f %s\n", "train / sgemm ceiling", "", "", "", bt / st, ">= 0.90";
    printf "%-28s %10.3f %10.3f %10.3f %8.3f %s\n", "infer samples/s", bi, ti, si, bi / ti, ">= 1.10 x pytorch";
    printf "%-28s %10s %10s %10s %8.3f\n", "infer / sgemm ceiling", "", "", "", bi / si;
    printf "%-28s %10.0f %10.0f %10s %8.3f %s\n", "peak RSS MB", brss / 1024, trss / 1024, "", brss / trss, "<= 0.75";
    printf "%-28s %10.1f\n", "plain sgemm GFLOP/s (train)", sg;
}'
