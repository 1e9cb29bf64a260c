#!/usr/bin/env bash
# bench_tokenizer.sh — tokens per second over topic_train.csv ($BFT_SHARED_DATA,
# see tests/lib/shared_data.sh):
# `bft-cli tokenize` vs @huggingface/tokenizers (tokenizers.js) on node, same
# run, same input (the text column, one text per line, repeated REPEAT times),
# for bert-base-cased and bert-base-uncased. Also checks that both produce
# identical ids for every line.
#
# Usage (from anywhere):  bash tests/bench/bench_tokenizer.sh
#   BFT_CLI=path   the bft-cli binary (default build/bft-cli, built if missing)
#   REPEAT=n       copies of the corpus (default 10)
#   ROUNDS=n       timed runs per side, best one is reported (default 3)
# Needs node + `cd tests/ref && npm ci`. Not a timed test: it only reports.
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT="$PWD"
source tests/lib/shared_data.sh
shared_data_need bench_tokenizer topic_train.csv vocab/bert-base-cased-tokenizer.json vocab/bert-base-uncased-tokenizer.json
DATA="$BFT_SHARED_DATA"
CLI="${BFT_CLI:-$ROOT/build/bft-cli}"
REPEAT="${REPEAT:-10}"
ROUNDS="${ROUNDS:-3}"
[ -x "$CLI" ] || make -s "$CLI" >/dev/null
[ -d tests/ref/node_modules/@huggingface/tokenizers ] || (cd tests/ref && npm ci --silent)

TMP="$(mktemp -d)"
trap 'rm -rf "$TMP"' EXIT
node tests/ref/tok_bench.mjs csv2lines "$DATA/topic_train.csv" "$TMP/once.txt"
for _ in $(seq "$REPEAT"); do cat "$TMP/once.txt"; done > "$TMP/lines.txt"
NLINES=$(wc -l < "$TMP/lines.txt")

now() { date +%s.%N; }

printf '%-18s %12s %14s %14s %9s\n' model tokens "bft tok/s" "node tok/s" ratio
for model in bert-base-cased bert-base-uncased; do
    lower=""; [ "$model" = bert-base-uncased ] && lower="--lower"
    best_bft=""; best_node=""; best_node_total=""
    for _ in $(seq "$ROUNDS"); do
        t0=$(now)
        "$CLI" tokenize --vocab "$DATA/vocab/$model-vocab.txt" $lower < "$TMP/lines.txt" > "$TMP/bft.txt"
        t1=$(now)
        s=$(echo "$t1 - $t0" | bc -l)
        if [ -z "$best_bft" ] || [ "$(echo "$s < $best_bft" | bc -l)" = 1 ]; then best_bft=$s; fi
        out=$(node tests/ref/tok_bench.mjs encode "$DATA/vocab/$model-tokenizer.json" "$TMP/lines.txt" "$TMP/node.txt")
        e=$(echo "$out" | sed -E 's/.*encode_s=([0-9.e-]+).*/\1/')
        tt=$(echo "$out" | sed -E 's/.*total_s=([0-9.e-]+).*/\1/')
        tokens=$(echo "$out" | sed -E 's/.*tokens=([0-9]+).*/\1/')
        if [ -z "$best_node" ] || [ "$(echo "$e < $best_node" | bc -l)" = 1 ]; then best_node=$e; fi
        if [ -z "$best_node_total" ] || [ "$(echo "$tt < $best_node_total" | bc -l)" = 1 ]; then best_node_total=$tt; fi
    done
    bft_tokens=$(wc -w < "$TMP/bft.txt")
    if cmp -s "$TMP/bft.txt" "$TMP/node.txt"; then same="ids identical on all $NLINES lines"
    else same="IDS DIFFER on $(diff "$TMP/bft.txt" "$TMP/node.txt" | grep -c '^<') of $NLINES lines"; fi
    bft_rate=$(echo "$bft_tokens / $best_bft" | bc -l)
    node_rate=$(echo "$tokens / $best_node" | bc -l)
    node_total_rate=$(echo "$tokens / $best_node_total" | bc -l)
    printf '%-18s %12d %14.0f %14.0f %8.1fx\n' "$model" "$bft_tokens" "$bft_rate" "$node_rate" \
        "$(echo "$bft_rate / $node_rate" | bc -l)"
    printf '%-18s   (bft: whole process incl. vocab load and I/O, %.3f s; node: encode loop only, %.3f s;\n' "" "$best_bft" "$best_node"
    printf '%-18s    node whole process %.0f tok/s -> %.1fx; %s)\n' "" "$node_total_rate" \
        "$(echo "$bft_rate / $node_total_rate" | bc -l)" "$same"
done
