#!/usr/bin/env bash
# bench_tokenizer.sh — tokens per second over topic_train.csv ($BFT_SHARED_DATA,
# see tests/lib/shared_data.sh):
# `bft-cli tokenize` (one thread) vs Hugging Face tokenizers (Rust, through
# its Python binding: Tokenizer.encode_batch, single-threaded and with its
# thread pool on all cores), same run, same input (the text column, one text
# per line, repeated REPEAT times), for bert-base-cased and bert-base-uncased.
# Also checks that all of them produce identical ids for every line.
#
# Usage (from anywhere):  bash tests/bench/bench_tokenizer.sh
#   BFT_CLI=path   the bft-cli binary (default build/bft-cli, built if missing)
#   PYTHON=path    a Python with tests/hf/requirements.txt installed
#                  (default .venv/bin/python, else /work/venv/bin/python, else python3)
#   REPEAT=n       copies of the corpus (default 10)
#   ROUNDS=n       timed runs per side, best one is reported (default 3)
# Not a timed test: it only reports.
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT="$PWD"
source tests/lib/shared_data.sh
shared_data_need bench_tokenizer topic_train.csv vocab/bert-base-cased-tokenizer.json vocab/bert-base-uncased-tokenizer.json
DATA="$BFT_SHARED_DATA"
CLI="${BFT_CLI:-$ROOT/build/bft-cli}"
REPEAT="${REPEAT:-10}"
ROUNDS="${ROUNDS:-3}"
if [ -z "${PYTHON:-}" ]; then
    for p in "$ROOT/.venv/bin/python" /work/venv/bin/python python3; do
        if command -v "$p" >/dev/null && "$p" -c 'import tokenizers' 2>/dev/null; then PYTHON=$p; break; fi
    done
fi
"${PYTHON:?no Python with tokenizers: pip install -r tests/hf/requirements.txt}" -c 'import tokenizers'
[ -x "$CLI" ] || make -s "$CLI" >/dev/null
NCPU=$(nproc)

TMP="$(mktemp -d)"
trap 'rm -rf "$TMP"' EXIT
"$PYTHON" tests/hf/tok_bench.py csv2lines "$DATA/topic_train.csv" "$TMP/once.txt"
for _ in $(seq "$REPEAT"); do cat "$TMP/once.txt"; done > "$TMP/lines.txt"
NLINES=$(wc -l < "$TMP/lines.txt")

now() { date +%s.%N; }
min() { if [ -z "$1" ] || [ "$(echo "$2 < $1" | bc -l)" = 1 ]; then echo "$2"; else echo "$1"; fi; }
field() { echo "$1" | sed -E "s/.*$2=([0-9.e-]+).*/\1/"; }

echo "tokenizers $("$PYTHON" -c 'import tokenizers; print(tokenizers.__version__)'), $NLINES lines, $NCPU cores, best of $ROUNDS"
printf '%-18s %10s %12s %12s %12s %9s %9s\n' model tokens "bft tok/s" "HF 1 thr" "HF $NCPU thr" "vs 1 thr" "vs $NCPU thr"
for model in bert-base-cased bert-base-uncased; do
    lower=""; [ "$model" = bert-base-uncased ] && lower="--lower"
    b=""; e1=""; t1=""; en=""; tn=""
    for _ in $(seq "$ROUNDS"); do
        t0=$(now)
        "$CLI" tokenize --vocab "$DATA/vocab/$model-vocab.txt" $lower < "$TMP/lines.txt" > "$TMP/bft.txt"
        b=$(min "$b" "$(echo "$(now) - $t0" | bc -l)")
        out=$(TOKENIZERS_PARALLELISM=false "$PYTHON" tests/hf/tok_bench.py encode \
              "$DATA/vocab/$model-tokenizer.json" "$TMP/lines.txt" "$TMP/hf1.txt")
        e1=$(min "$e1" "$(field "$out" encode_s)"); t1=$(min "$t1" "$(field "$out" total_s)")
        tokens=$(field "$out" tokens)
        out=$(TOKENIZERS_PARALLELISM=true RAYON_NUM_THREADS=$NCPU "$PYTHON" tests/hf/tok_bench.py encode \
              "$DATA/vocab/$model-tokenizer.json" "$TMP/lines.txt" "$TMP/hfn.txt")
        en=$(min "$en" "$(field "$out" encode_s)"); tn=$(min "$tn" "$(field "$out" total_s)")
    done
    bft_tokens=$(wc -w < "$TMP/bft.txt")
    same="ids identical on all $NLINES lines"
    for f in hf1 hfn; do
        if ! cmp -s "$TMP/bft.txt" "$TMP/$f.txt"; then
            same="IDS DIFFER ($f) on $(diff "$TMP/bft.txt" "$TMP/$f.txt" | grep -c '^<') of $NLINES lines"
        fi
    done
    [ "$bft_tokens" = "$tokens" ] || same="$same; TOKEN COUNTS DIFFER ($bft_tokens vs $tokens)"
    rb=$(echo "$bft_tokens / $b" | bc -l); r1=$(echo "$tokens / $e1" | bc -l); rn=$(echo "$tokens / $en" | bc -l)
    printf '%-18s %10d %12.0f %12.0f %12.0f %8.1fx %8.1fx\n' "$model" "$bft_tokens" "$rb" "$r1" "$rn" \
        "$(echo "$rb / $r1" | bc -l)" "$(echo "$rb / $rn" | bc -l)"
    printf '%-18s   bft: whole process (vocab load, I/O) %.3f s; HF encode_batch only: %.3f s (1 thread), %.3f s (%d);\n' \
        "" "$b" "$e1" "$en" "$NCPU"
    printf '%-18s   HF whole process: %.3f s (1 thread) -> %.1fx, %.3f s (%d) -> %.1fx; %s\n' "" \
        "$t1" "$(echo "$rb / ($tokens / $t1)" | bc -l)" "$tn" "$NCPU" "$(echo "$rb / ($tokens / $tn)" | bc -l)" "$same"
done
