#!/usr/bin/env bash
# quality_bf16.sh — does training with the CUDA backend's bf16 mixed precision
# reach the CPU's (fp32) held-out accuracy? Without a GPU the CUDA backend runs
# in the emulator (tests/cuda_emu): the same kernels and bf16 rounding of the
# GEMM operands as on a GPU (fp32 accumulation; only the order of the sums
# differs from cuBLAS), so this measures the numerics of bf16 training, not
# the hardware. With a GPU, BFT_CUDA_MODULE unset uses the real one.
#
# Data: the first 600 tweets of each of the four largest topics of
# topic_train.csv ($BFT_SHARED_DATA, see tests/lib/shared_data.sh) (2 Company | Product News, 18, 14, 9): 2,400 rows, a
# stratified 20% held out by bft-cli (--validation-fraction, same seed on
# both); a small BERT from scratch (2 layers, 128 hidden), 6 epochs, the same
# seed, data order and dropout masks on both devices (the CPU reaches ~0.78
# held-out accuracy). Not part of the tests (about 15 minutes in the emulator).
#
# Usage: bash tests/cuda_emu/quality_bf16.sh   (after make unit)
set -euo pipefail
cd "$(dirname "$0")/../.."
source tests/lib/shared_data.sh
shared_data_need quality_bf16 topic_train.csv
DATA="$BFT_SHARED_DATA/topic_train.csv"
T=$(mktemp -d /tmp/bft-quality-bf16.XXXXXX)
trap 'rm -rf "$T"' EXIT
awk -F, 'NR == 1 { print; next } { l = $NF; if ((l == 2 || l == 18 || l == 14 || l == 9) && n[l]++ < 600) print }' \
    "$DATA" >"$T/sample.csv"
echo "rows: $(($(wc -l <"$T/sample.csv") - 1))"
ARGS=(--from-scratch --vocab-size 4000 --layers 2 --hidden 128 --heads 2 --intermediate 512
      --csv "$T/sample.csv" --text-col text --label-col label --epochs 6 --batch-size 32 --lr 1e-3
      --warmup-ratio 0.06 --validation-fraction 0.2 --seed 7 --max-length 64 --threads 1)
EMU=()
[ -z "${BFT_CUDA_MODULE:-}" ] && [ -f build/emu/bft_cuda.so ] &&
    EMU=(env BFT_CUDA_MODULE="$PWD/build/emu/bft_cuda.so" BFT_CUDA_EMU_PROTECT=0)
s0=$(date +%s)
build/bft-cli train "${ARGS[@]}" --device cpu --out "$T/cpu" >"$T/cpu.log" 2>&1
s1=$(date +%s)
"${EMU[@]}" build/bft-cli train "${ARGS[@]}" --device cuda --precision bf16 --out "$T/gpu" >"$T/gpu.log" 2>&1
s2=$(date +%s)
echo "CPU fp32 ($((s1 - s0)) s):"
grep -E '^epoch' "$T/cpu.log" | sed 's/^/  /'
echo "CUDA bf16${EMU:+ (emulated)} ($((s2 - s1)) s):"
grep -E '^epoch' "$T/gpu.log" | sed 's/^/  /'
