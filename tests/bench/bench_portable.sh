#!/usr/bin/env bash
# bench_portable.sh — does the portable build (the default: any x86-64, the CPU
# backend's loops choosing AVX-512 / AVX2 / baseline at run time) lose speed
# against a build for this machine's CPU (BFT_MARCH=-march=native)? Same
# sources, same run, one after the other, ratios printed:
#
#   native     BFT_MARCH=-march=native
#   portable   the default build (target_clones, chosen at run time)
#   baseline   no -march and no run-time choice (-DBFT_NO_CLONES): what the
#              portable build would cost without the dispatch
#
# 1. every non-GEMM op of the CPU backend at BERT-base training shapes, one
#    thread (tests/bench/bench_ops.c, CPU time), best of ROUNDS alternating rounds of
#    REPS runs each; the hash of each op's output bits must be equal across
#    the three builds (the vector width changes speed, not results);
# 2. training and inference of a small BERT (bench_bft.c; LAYERS x HIDDEN,
#    batch 32, sequence 64, one thread, STEPS steps), samples per CPU-second
#    (robust on a loaded machine), best of ROUNDS, and the hash of its predicted
#    probabilities.
# GEMMs are OpenBLAS in all three (its kernels are printed). Not part of the tests.
#
# Usage: bash tests/bench/bench_portable.sh
#        ROUNDS=5 REPS=30 STEPS=6 LAYERS=2 HIDDEN=256 bash tests/bench/bench_portable.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
ROUNDS=${ROUNDS:-5}; REPS=${REPS:-20}; STEPS=${STEPS:-6}
LAYERS=${LAYERS:-2}; HIDDEN=${HIDDEN:-256}
OUT=$(mktemp -d /tmp/bft-bench-portable.XXXXXX)
trap 'rm -rf "$OUT"' EXIT
LIBS="$(pkg-config --libs json-c icu-uc) -ldl -lm -lpthread"
declare -A FLAGS=([native]="-march=native" [portable]="" [baseline]="-DBFT_NO_CLONES")
VARIANTS="native portable baseline"
for v in $VARIANTS; do
    make -s -j"$(nproc)" BUILD="build/bench-$v" BFT_MARCH="${FLAGS[$v]}" "build/bench-$v/libbftengine.a" >/dev/null
    for p in bench_ops bench_bft; do
        cc -O2 -std=c11 -D_GNU_SOURCE -Isrc/engine "tests/bench/$p.c" "build/bench-$v/libbftengine.a" \
            $LIBS -o "$OUT/${p}_$v"
    done
done

echo "machine: $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
echo "load before: $(cut -d' ' -f1-3 /proc/loadavg)"
for r in $(seq "$ROUNDS"); do
    for v in $VARIANTS; do
        "$OUT/bench_ops_$v" "$REPS" >"$OUT/ops_$v.$r"
        "$OUT/bench_bft_$v" "$LAYERS" "$HIDDEN" 4 $((HIDDEN * 4)) 8000 32 64 "$STEPS" 1 >"$OUT/bft_$v.$r"
    done
done
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)"
grep -h -E '^(cpu|openblas):' "$OUT/ops_portable.1"

# best (lowest) time of an op over the rounds; best (highest) rate of bench_bft
best_op() { grep -h "^op $2:" "$OUT"/ops_"$1".* | awk '{print $3}' | sort -g | head -n 1; }
hash_op() { grep -h "^op $2:" "$OUT"/ops_"$1".* | awk '{print $5}' | sort -u | tr '\n' ' '; }
best_rate() { grep -h "^$2:" "$OUT"/bft_"$1".* | awk '{print $2}' | sort -g | tail -n 1; }

printf '\n1. ops, microseconds of CPU time (one thread, best of %d x %d)\n' "$ROUNDS" "$REPS"
printf '%-20s %10s %10s %10s %10s %10s  %s\n' op native portable baseline port/nat base/nat "same bits"
fail=0
for op in $(awk '/^op /{sub(":", "", $2); print $2}' "$OUT/ops_native.1"); do
    n=$(best_op native "$op"); p=$(best_op portable "$op"); b=$(best_op baseline "$op")
    hs=$(for v in $VARIANTS; do hash_op "$v" "$op"; done | tr ' ' '\n' | grep -c . || true)
    hu=$(for v in $VARIANTS; do hash_op "$v" "$op"; done | tr ' ' '\n' | grep . | sort -u | wc -l)
    same=yes; [ "$hu" -eq 1 ] && [ "$hs" -eq 3 ] || { same=NO; fail=1; }
    awk -v o="$op" -v n="$n" -v p="$p" -v b="$b" -v s="$same" \
        'BEGIN { printf "%-20s %10.1f %10.1f %10.1f %10.2f %10.2f  %s\n", o, n, p, b, p / n, b / n, s }'
done
tot() { grep -h '^op ' "$OUT"/ops_"$1".* | awk '{ if (!($2 in m) || $3 < m[$2]) m[$2] = $3 } END { for (k in m) s += m[k]; print s }'; }
awk -v n="$(tot native)" -v p="$(tot portable)" -v b="$(tot baseline)" \
    'BEGIN { printf "%-20s %10.1f %10.1f %10.1f %10.2f %10.2f\n", "sum of ops", n, p, b, p / n, b / n }'

printf '\n2. small BERT (%d x %d, batch 32, seq 64, one thread), samples per CPU-second, best of %d\n' "$LAYERS" "$HIDDEN" "$ROUNDS"
printf "%-38s %10s %10s %10s %10s %10s\n" "" native portable baseline port/nat base/nat
for k in bft_train_samples_per_cpu_s_x_threads bft_infer_samples_per_cpu_s_x_threads; do
    awk -v k="$k" -v n="$(best_rate native $k)" -v p="$(best_rate portable $k)" -v b="$(best_rate baseline $k)" \
        'BEGIN { printf "%-38s %10.2f %10.2f %10.2f %10.2f %10.2f\n", k, n, p, b, p / n, b / n }'
done
hu=$(grep -h '^bft_probs_hash:' "$OUT"/bft_*.* | awk '{print $2}' | sort -u | wc -l)
echo "probabilities after training: $([ "$hu" -eq 1 ] && echo "identical bits in all three builds" || echo "DIFFER between builds")"
[ "$hu" -eq 1 ] || fail=1
exit $fail
