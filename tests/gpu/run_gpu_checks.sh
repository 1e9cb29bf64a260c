#!/usr/bin/env bash
# The CUDA backend's proof, run on a machine WITH an NVIDIA GPU (an H100 for the
# benchmark numbers), from the repository root:
#
#   bash tests/gpu/run_gpu_checks.sh [--quick | --extra]
#
# --quick runs steps 1-3 (about 3 minutes), --extra steps 1, 4 and 5; without
# either, all of them, skipping what would start after 450 s so that a run
# under a 10-minute limit always ends with a summary.
#
# Binaries: build/gpu-bundle (made on any machine with nvcc by
# tests/gpu/make_bundle.sh and carried along) when present, else a USE_CUDA=1
# build right here (needs bft's build dependencies and pg_config).
#
#  1. the device: nvidia-smi, driver, what bft_cuda_available says;
#  2. build/tests/test_cuda: every op of ops.h on the GPU against the CPU
#     backend (fp32 and bf16; identical dropout masks), the golden tests of
#     test_bert (PyTorch float64 reference) run on the GPU in fp32 (test_bert's
#     tolerances: probabilities 1e-5 absolute) and in bf16 (tolerances stated in
#     test_cuda.c), and CPU-vs-GPU training with dropout;
#  3. benchmark at BERT-base shape (12 layers, 768 hidden, 12 heads, 3072
#     intermediate, vocab 28996), batch 32, sequence 64: bft-cli bench --device cuda
#     (bf16 mixed precision) and PyTorch + transformers (bench_torch.py: bf16
#     autocast, AdamW) on the same GPU in the same run; prints the ratios
#     (goal: >= 1.2x PyTorch for training and for inference); also bft in fp32;
#  3b. compute-sanitizer memcheck / initcheck / racecheck over test_cuda (the
#     hardware counterpart of the CUDA emulator's checks), while time is left;
#  4. one epoch of bft-cli train --device cuda over topic_train.csv (BERT-base
#     shape from scratch with a learned 28996-token vocabulary, 10% held out),
#     samples/s and held-out accuracy (skipped with --quick);
#  5. a small BERT (2 layers, 256 hidden) from scratch, 3 epochs, on the GPU and
#     on the CPU with the same seed: held-out accuracy side by side (--quick skips).
# Budget: about 3 minutes with --quick, 6-8 without (plus the machine's start).
# Every log also goes to $BFT_GPU_OUT (else $OUT, else build/gpu-out).
# Exit status: non-zero when test_cuda failed or a step could not run.
set -uo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
QUICK=0
EXTRA=0
[ "${1:-}" = "--quick" ] && QUICK=1
[ "${1:-}" = "--extra" ] && EXTRA=1
time_left() { [ "$SECONDS" -lt 450 ] || { note "skipped (time budget of this run spent): $*"; return 1; }; }
O=${BFT_GPU_OUT:-${OUT:-$ROOT/build/gpu-out}}
mkdir -p "$O"
STATUS=0
say() { printf '\n==== %s\n' "$*" | tee -a "$O/summary.txt"; }
note() { echo "$*" | tee -a "$O/summary.txt"; }

say "1. device"
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv 2>&1 | tee -a "$O/summary.txt"
nproc | sed 's/^/cpus: /' | tee -a "$O/summary.txt"

# CUDA runtime libraries: the toolkit's, else those of the nvidia-* pip packages
PYLIBS=$(python3 - 2>/dev/null <<'PY'
import glob, os
try:
    import nvidia
    roots = list(nvidia.__path__)
except Exception:
    roots = []
dirs = set()
for r in roots:
    for pat in ("*/lib/libcublas.so*", "*/lib/libcudart.so*", "*/lib/libcublasLt.so*"):
        for f in glob.glob(os.path.join(r, pat)):
            dirs.add(os.path.dirname(f))
print(":".join(sorted(dirs)))
PY
)
export LD_LIBRARY_PATH="/usr/local/cuda/lib64${PYLIBS:+:$PYLIBS}${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"

if [ -x build/gpu-bundle/bin/test_cuda ] && [ -x build/gpu-bundle/bin/bft-cli ]; then
    BIN=build/gpu-bundle/bin
    DATA=build/gpu-bundle/data
    note "binaries: build/gpu-bundle (prebuilt)"
else
    note "binaries: building with USE_CUDA=1 here"
    if ! make -s -j"$(nproc)" USE_CUDA=1 BUILD=build/gpu build/gpu/bft-cli build/gpu/tests/test_cuda \
            >"$O/build.log" 2>&1; then
        note "BUILD FAILED (see build.log; no bundle carried?)"
        tail -n 30 "$O/build.log"
        exit 1
    fi
    mkdir -p build/gpu/bin
    ln -sf ../bft-cli build/gpu/bin/bft-cli
    ln -sf ../tests/test_cuda build/gpu/bin/test_cuda
    export BFT_CUDA_MODULE=$ROOT/build/gpu/bft_cuda.so
    BIN=build/gpu/bin
    source tests/lib/shared_data.sh
    DATA=$BFT_SHARED_DATA
    [ -f "$DATA/topic_train.csv" ] || DATA=build/gpu-bundle/data
fi
ldd "$BIN/bft_cuda.so" "${BFT_CUDA_MODULE:-/dev/null}" 2>/dev/null | grep -E 'cublas|cudart|not found' | tee -a "$O/summary.txt"

if [ $EXTRA = 0 ]; then
say "2. test_cuda (ops CUDA vs CPU, goldens fp32/bf16, CPU-vs-GPU training)"
timeout 240 "$BIN/test_cuda" >"$O/test_cuda.log" 2>&1
rc=$?
cat "$O/test_cuda.log"
grep -E '^RESULT|^skip' "$O/test_cuda.log" >>"$O/summary.txt"
if [ $rc -ne 0 ]; then note "test_cuda FAILED (rc $rc)"; STATUS=1; fi
if grep -q '^skip' "$O/test_cuda.log"; then note "test_cuda skipped the GPU cases: no usable GPU"; STATUS=1; fi

say "3. benchmark: BERT-base shape, batch 32, seq 64"
# (BFT_GPU_CHECK_SHAPE / _STEPS: a small shape for a rehearsal of this script
# without a GPU, BFT_CUDA_MODULE=$PWD/build/emu/bft_cuda.so: the CUDA emulator)
SHAPE=${BFT_GPU_CHECK_SHAPE:-"--layers 12 --hidden 768 --heads 12 --intermediate 3072 --vocab 28996 --batch 32 --seq 64"}
STEPS=${BFT_GPU_CHECK_STEPS:-60}
val() { grep -E "^$1:" "$2" | tail -n 1 | awk '{print $2}'; }
timeout 150 "$BIN/bft-cli" bench $SHAPE --steps $STEPS --device cuda --precision bf16 >"$O/bench_bft_bf16.txt" 2>&1 \
    || { note "bft-cli bench (bf16) failed"; STATUS=1; }
cat "$O/bench_bft_bf16.txt"
timeout 150 "$BIN/bft-cli" bench $SHAPE --steps $STEPS --device cuda --precision fp32 >"$O/bench_bft_fp32.txt" 2>&1 \
    || { note "bft-cli bench (fp32) failed"; STATUS=1; }
cat "$O/bench_bft_fp32.txt"
PYTHONUNBUFFERED=1 timeout 200 python3 tests/gpu/bench_torch.py --batch 32 --seq 64 --steps $STEPS --dtype bf16 \
    >"$O/bench_torch_bf16.txt" 2>&1 || { note "PyTorch baseline failed"; STATUS=1; }
cat "$O/bench_torch_bf16.txt"
bt=$(val train_samples_per_s "$O/bench_bft_bf16.txt"); bi=$(val infer_samples_per_s "$O/bench_bft_bf16.txt")
ft=$(val train_samples_per_s "$O/bench_bft_fp32.txt"); fi_=$(val infer_samples_per_s "$O/bench_bft_fp32.txt")
pt=$(val train_samples_per_s "$O/bench_torch_bf16.txt"); pi=$(val infer_samples_per_s "$O/bench_torch_bf16.txt")
note "bft bf16:      train ${bt:-?} samples/s, inference ${bi:-?} samples/s"
note "bft fp32:      train ${ft:-?} samples/s, inference ${fi_:-?} samples/s"
note "PyTorch bf16:  train ${pt:-?} samples/s, inference ${pi:-?} samples/s"
if [ -n "${bt:-}" ] && [ -n "${pt:-}" ] && [ -n "${bi:-}" ] && [ -n "${pi:-}" ]; then
    note "$(awk -v a="$bt" -v b="$pt" -v c="$bi" -v d="$pi" \
        'BEGIN { printf "ratio bft/PyTorch (bf16): training %.2fx, inference %.2fx (goal >= 1.20x each)", a/b, c/d }')"
fi
fi

# 3b. the real-hardware counterpart of the CUDA emulator's checks (tests/cuda_emu):
# NVIDIA's compute-sanitizer over test_cuda (out-of-bounds and misaligned
# accesses, uninitialised device memory, shared-memory races), if time is left
if [ $EXTRA = 0 ] && time_left "step 3b (compute-sanitizer)"; then
    say "3b. compute-sanitizer: memcheck, initcheck and racecheck of test_cuda"
    CS=$(command -v compute-sanitizer || echo /usr/local/cuda/bin/compute-sanitizer)
    if [ -x "$CS" ]; then
        for tool in memcheck initcheck racecheck; do
            time_left "compute-sanitizer $tool" || break
            timeout 120 "$CS" --tool $tool --error-exitcode 3 "$BIN/test_cuda" >"$O/sanitize_$tool.log" 2>&1
            rc=$?
            note "$tool: rc $rc, $(grep -E 'ERROR SUMMARY|RACECHECK SUMMARY|^RESULT' "$O/sanitize_$tool.log" | tr '\n' ' ')"
            [ $rc -eq 3 ] && { STATUS=1; grep -m 5 -E '=========  (Invalid|Uninitialized|Race|Error)' "$O/sanitize_$tool.log"; }
        done
    else
        note "no compute-sanitizer on this machine: skipped"
    fi
fi

if [ $QUICK = 0 ] && time_left "step 4"; then
    say "4. one epoch over topic_train.csv on the GPU (BERT-base shape from scratch)"
    CSV="$DATA/topic_train.csv"
    if [ -f "$CSV" ]; then
        rm -rf /tmp/bft-gpu-epoch
        TIMEV=""; [ -x /usr/bin/time ] && TIMEV="/usr/bin/time -v"
        timeout 200 $TIMEV "$BIN/bft-cli" train --from-scratch --vocab-size 28996 --layers 12 --hidden 768 \
            --heads 12 --intermediate 3072 --csv "$CSV" --text-col text --label-col label --epochs 1 \
            --batch-size 32 --lr 1e-4 --warmup-ratio 0.06 --validation-fraction 0.1 --seed 42 \
            --device cuda --out /tmp/bft-gpu-epoch >"$O/epoch.txt" 2>&1 || { note "epoch run failed"; STATUS=1; }
        grep -vE '^\s+(Page|Voluntary|Involuntary|Swaps|File|Socket|Signals|Average|Exit|Minor|Major|Percent)' \
            "$O/epoch.txt" | tail -n 25
        grep -E '^epoch|^train_loss|Elapsed|Maximum resident' "$O/epoch.txt" >>"$O/summary.txt"
    else
        note "no $CSV: skipped (carry build/gpu-bundle, which holds it)"
    fi
fi

if [ $QUICK = 0 ] && [ -f "$DATA/topic_train.csv" ] && time_left "step 5"; then
    say "5. same recipe on CPU and GPU: held-out accuracy (small BERT from scratch, 3 epochs)"
    SMALL="--from-scratch --vocab-size 8000 --layers 2 --hidden 256 --heads 4 --intermediate 1024
           --csv $DATA/topic_train.csv --text-col text --label-col label --epochs 3 --batch-size 32
           --lr 5e-4 --warmup-ratio 0.06 --validation-fraction 0.1 --seed 7"
    for dev in cuda cpu; do
        rm -rf /tmp/bft-small-$dev
        timeout 150 "$BIN/bft-cli" train $SMALL --device $dev --threads "$(nproc)" \
            --out /tmp/bft-small-$dev >"$O/small_$dev.txt" 2>&1 || note "small run on $dev failed or timed out"
        note "$dev: $(grep -E '^epoch 3/3' "$O/small_$dev.txt" | head -n 1)"
    done
    note "(same seed and split; dropout masks are the same hash on both, so the two runs differ only by rounding: bf16 on the GPU)"
fi

say "summary"
cat "$O/summary.txt" | grep -vE '^====' | tail -n 40
exit $STATUS
