#!/usr/bin/env bash
# bench_engine.sh — bft vs PyTorch eager vs plain OpenBLAS sgemm, same shapes, same run.
#
#   bash tests/bench/bench_engine.sh                 (BERT-base, batch 16, seq 64, 2 threads)
#   STEPS=4 THREADS=2 bash tests/bench/bench_engine.sh
#   THREADS=1 bash tests/bench/bench_engine.sh       (on a busy machine: read the CPU-time table)
#   PYTHON=/path/to/python bash tests/bench/bench_engine.sh   (a Python with torch; default /usr/bin/python3)
#
# Shapes: 12 layers, 768 hidden, 12 heads, 3072 intermediate, vocab 28996,
# batch 16, sequence 64, fp32. Not a timed test: run it on a quiet machine
# (the load average is printed before and after). Each program runs alone, one
# after the other: tests/bench/bench_sgemm.c (the GEMMs of one training step /
# one inference batch), tests/bench/bench_bft.c (the engine: bft_train with
# AdamW + dropout 0.1, bft_predict) and tests/bench/bench_torch.py (PyTorch eager,
# HF-style module, AdamW + clipping + schedule, no_grad inference). The first
# training step / inference batch is warm-up in each.
#
# Two tables: wall-clock samples/s (the goal's metric, meaningful only on an
# otherwise idle machine) and CPU-time samples/s (samples per CPU-second x
# threads: what each program does per core it actually got; with THREADS=1 this
# stays meaningful on a loaded machine).
# Goals (issue 2): training >= 1.15x and inference >= 1.1x PyTorch samples/s,
# training >= 90% of the sgemm rate (the GEMM-only ceiling: 6 x encoder weights
# x tokens + attention at the sgemm rate), peak RSS <= 0.75x PyTorch.
set -euo pipefail
cd "$(dirname "$0")/../.."
L=${LAYERS:-12}; C=${HIDDEN:-768}; NH=${HEADS:-12}; I=${INTERMEDIATE:-3072}; V=${VOCAB:-28996}
B=${BATCH:-16}; T=${SEQ:-64}; STEPS=${STEPS:-4}; TH=${THREADS:-2}
BUILD=${BUILD:-build/bench}
OUT=$(mktemp -d /tmp/bft-bench.XXXXXX)
trap 'rm -rf "$OUT"' EXIT

make -s BUILD="$BUILD" "$BUILD/libbftengine.a" >/dev/null
for p in bench_sgemm bench_bft; do
    cc -O2 -std=c11 -D_GNU_SOURCE -Isrc/engine "tests/bench/$p.c" "$BUILD/libbftengine.a" \
        -lopenblas $(pkg-config --libs json-c icu-uc) -lm -lpthread -o "$OUT/$p"
done

echo "machine: $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
echo "load before: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "shape: L=$L C=$C NH=$NH I=$I V=$V batch=$B seq=$T threads=$TH steps=$STEPS"

"$OUT/bench_sgemm" "$L" "$C" "$I" "$B" "$T" "$TH" 2 | tee "$OUT/sgemm.txt"
"$OUT/bench_sgemm" "$L" "$C" "$I" "$B" "$T" "$TH" 2 cpu | tee "$OUT/sgemm_cpu.txt"
/usr/bin/time -f "bft_max_rss_kb: %M" "$OUT/bench_bft" "$L" "$C" "$NH" "$I" "$V" "$B" "$T" "$STEPS" "$TH" \
    2>&1 | tee "$OUT/bft.txt"
/usr/bin/time -f "torch_max_rss_kb: %M" "${PYTHON:-/usr/bin/python3}" tests/bench/bench_torch.py "$L" "$C" "$NH" "$I" \
    "$V" "$B" "$T" "$STEPS" "$TH" 2>&1 | tee "$OUT/torch.txt"
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)"

get() { grep -h "^$1:" "$OUT"/*.txt | tail -n1 | awk '{print $2}'; }
table() { # title bft_train bft_infer torch_train torch_infer sgemm_train sgemm_infer gflops
    awk -v t="$1" -v bt="$2" -v bi="$3" -v tt="$4" -v ti="$5" -v st="$6" -v si="$7" -v sg="$8" 'BEGIN {
    printf "\n%s\n%-26s %10s %10s %10s %8s %s\n", t, "", "bft", "pytorch", "sgemm", "ratio", "goal";
    printf "%-26s %10.3f %10.3f %10.3f %8.3f %s\n", "train samples/s", bt, tt, st, bt / tt, ">= 1.15 x pytorch";
    printf "%-26s %10s %10s %10s %8.3f %s\n", "train / sgemm ceiling", "", "", "", bt / st, ">= 0.90";
    printf "%-26s %10.3f %10.3f %10.3f %8.3f %s\n", "infer samples/s", bi, ti, si, bi / ti, ">= 1.10 x pytorch";
    printf "%-26s %10s %10s %10s %8.3f\n", "infer / sgemm ceiling", "", "", "", bi / si;
    printf "%-26s %10.1f\n", "sgemm GFLOP/s (train)", sg;
    }'
}
table "wall clock (samples/s)" "$(get bft_train_samples_per_s)" "$(get bft_infer_samples_per_s)" \
    "$(get torch_train_samples_per_s)" "$(get torch_infer_samples_per_s)" \
    "$(get openblas_train_gemm_ceiling_samples_per_s)" "$(get openblas_infer_gemm_ceiling_samples_per_s)" \
    "$(get openblas_train_gflops)"
table "CPU time (samples per CPU-second x threads)" "$(get bft_train_samples_per_cpu_s_x_threads)" \
    "$(get bft_infer_samples_per_cpu_s_x_threads)" "$(get torch_train_samples_per_cpu_s_x_threads)" \
    "$(get torch_infer_samples_per_cpu_s_x_threads)" \
    "$(get openblas_train_gemm_ceiling_samples_per_s_cpu)" \
    "$(get openblas_infer_gemm_ceiling_samples_per_s_cpu)" "$(get openblas_train_gflops_cpu)"
awk -v b="$(get bft_max_rss_kb)" -v t="$(get torch_max_rss_kb)" 'BEGIN {
    printf "\n%-26s %10.0f %10.0f %10s %8.3f %s\n", "peak RSS MB", b / 1024, t / 1024, "", b / t, "<= 0.75" }'
