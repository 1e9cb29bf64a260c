#!/usr/bin/env bash
# test_cli.sh — the bft-cli contract (issue 2 part 6) end to end, no server
# and no Python needed: help/usage exit codes; classify and fill-mask against
# the PyTorch expectations in tests/data/cli (tests/ref/cli_golden.py); train
# on an RFC 4180 CSV (quotes, commas, embedded newlines, CRLF) with text and
# integer labels, validation split, determinism, the written HF directory;
# export/info; embed and classify --long-text (windows combined, short lines
# unchanged);
# bench output lines. Ends with "RESULT: P passed, F failed".
#
# Usage: bash tests/scripts/test_cli.sh   (BFT_CLI=path overrides build/bft-cli)
set -uo pipefail
cd "$(dirname "$0")/../.."
CLI="${BFT_CLI:-build/bft-cli}"
CK=tests/data/ckpt
EXP=tests/data/cli
TMP=$(mktemp -d "${BFT_TMP:-/tmp}/bft-cli.XXXXXX")
trap 'rm -rf "$TMP"' EXIT
PASS=0; FAIL=0
ok() { PASS=$((PASS + 1)); echo "ok - $1"; }
bad() { FAIL=$((FAIL + 1)); echo "not ok - $1"; [ $# -gt 1 ] && echo "  FAIL: $2"; }
check() { local name="$1"; shift; if "$@"; then ok "$name"; else bad "$name" "command: $*"; fi; }
# check_fail NAME RC WANT FILE PATTERN: exit status RC == WANT and FILE matches PATTERN
check_fail() {
    if [ "$2" -eq "$3" ] && grep -qE "$5" "$4"; then ok "$1"; else bad "$1" "rc $2 (want $3), $(head -c 300 "$4")"; fi
}

if [ ! -x "$CLI" ]; then echo "no $CLI (make first)"; echo "RESULT: 0 passed, 1 failed"; exit 1; fi

# ---- dispatcher
out=$("$CLI" help); rc=$?
check "help exits 0" test $rc -eq 0
for c in classify train fill-mask bench tokenize; do
    check "help lists $c" grep -q "^  $c " <<<"$out"
done
"$CLI" nosuch >/dev/null 2>&1; check "unknown subcommand exits 2" test $? -eq 2
"$CLI" classify --bogus 1 >/dev/null 2>&1; check "unknown option exits 2" test $? -eq 2
"$CLI" classify >/dev/null 2>&1; check "missing --model exits 2" test $? -eq 2
"$CLI" train --help | grep -q -- "--text-col"; check "train --help" test $? -eq 0

# ---- classify vs PyTorch (|p - p_ref| <= 1e-5)
"$CLI" classify --model $CK/tiny <$EXP/classify_tiny.txt >$TMP/cls.out 2>$TMP/cls.err; rc=$?
check "classify exits 0" test $rc -eq 0
check "classify: one line per input line" test "$(wc -l <$TMP/cls.out)" -eq "$(wc -l <$EXP/classify_tiny.txt)"
re='^\{"label": "(negative|neutral|positive)", "label_id": [0-9]+, "score": [0-9.e+-]+, "probs": \[[0-9.e+-]+(, [0-9.e+-]+)*\]\}$'
check "classify: JSON shape" test "$(grep -cEv "$re" $TMP/cls.out)" -eq 0
cmp_cls() {
    paste -d'|' "$1" "$2" | awk -F'|' '
        { line = $1; ref = $2
          sub(/.*"label": "/, "", line); label = line; sub(/".*/, "", label)
          l = $1; sub(/.*"label_id": /, "", l); id = l + 0
          s = $1; sub(/.*"score": /, "", s); sub(/,.*/, "", s); score = s + 0
          p = $1; sub(/.*"probs": \[/, "", p); sub(/\]\}.*/, "", p)
          n = split(p, got, ", "); m = split(ref, want, " ")
          names[0] = "negative"; names[1] = "neutral"; names[2] = "positive"
          if (n != m - 1) { print "line " NR ": " n " probs, want " m - 1; bad++ ; next }
          if (id != want[1]) { print "line " NR ": label_id " id ", want " want[1]; bad++ }
          if (label != names[id]) { print "line " NR ": label " label " for id " id; bad++ }
          if (score != got[id + 1]) { print "line " NR ": score is not probs[label_id]"; bad++ }
          sum = 0
          for (k = 1; k <= n; k++) {
              d = got[k] - want[k + 1]; if (d < 0) d = -d
              if (d > 1e-5) { print "line " NR ": p" k - 1 " " got[k] " vs " want[k + 1]; bad++ }
              sum += got[k]
          }
          if (sum < 0.99999 || sum > 1.00001) { print "line " NR ": probs sum " sum; bad++ }
        }
        END { exit bad ? 1 : 0 }'
}
check "classify: probabilities match PyTorch within 1e-5" cmp_cls $TMP/cls.out $EXP/classify_tiny.expect
# CRLF input gives the same answers; F16 storage classifies within F16 rounding
sed 's/$/\r/' $EXP/classify_tiny.txt | "$CLI" classify --model $CK/tiny >$TMP/cls_crlf.out 2>/dev/null
check "classify: CRLF lines" cmp -s $TMP/cls.out $TMP/cls_crlf.out
"$CLI" classify --model $CK/tiny --batch-size 3 <$EXP/classify_tiny.txt >$TMP/cls_b3.out 2>/dev/null
check "classify: batch size does not change the output" cmp_cls $TMP/cls_b3.out $EXP/classify_tiny.expect
"$CLI" classify --model $CK/tiny_legacy </dev/null >/dev/null 2>$TMP/err; rc=$?
check "classify without a classifier: exit 1 with a message" test $rc -eq 1 -a -s $TMP/err
"$CLI" classify --model $CK/tiny --max-length 1000 </dev/null >/dev/null 2>&1
check "classify --max-length beyond positions: exit 2" test $? -eq 2
"$CLI" classify --model $CK/tiny --device cuda </dev/null >/dev/null 2>$TMP/err; rc=$?
check_fail "--device cuda without a CUDA build: exit 1" $rc 1 $TMP/err "CUDA"

# ---- fill-mask vs PyTorch (ids exact, |score - ref| <= 1e-4 at 4 decimals)
: >$TMP/fm.out
first=1
while IFS=$'\t' read -r ck text; do
    [ $first -eq 1 ] || echo "--" >>$TMP/fm.out
    first=0
    "$CLI" fill-mask --model $CK/$ck --top-k 5 "$text" >>$TMP/fm.out 2>>$TMP/fm.err
done <$EXP/fill_mask.txt
cmp_fm() {
    paste -d'|' "$1" "$2" | awk -F'|' '
        { split($1, g, " "); split($2, w, " ")
          if ($1 == "--" || $1 == "") { if ($1 != $2) { print "line " NR ": layout"; bad++ } ; next }
          if (g[1] != w[1] || g[2] != w[2]) { print "line " NR ": " $1 " vs " $2; bad++ }
          d = g[3] - w[3]; if (d < 0) d = -d
          if (d > 1e-4) { print "line " NR ": score " g[3] " vs " w[3]; bad++ }
        }
        END { exit bad ? 1 : 0 }' && test "$(wc -l <"$1")" -eq "$(wc -l <"$2")"
}
check "fill-mask: top-5 tokens, ids and scores match PyTorch (3 cases, 4 masks)" cmp_fm $TMP/fm.out $EXP/fill_mask.expect
"$CLI" fill-mask --model $CK/tiny_mlm "no mask here" >/dev/null 2>&1
check "fill-mask without [MASK]: exit 1" test $? -eq 1
"$CLI" fill-mask --model $CK/tiny "[MASK]" >/dev/null 2>&1
check "fill-mask without an MLM head: exit 1" test $? -eq 1

# ---- train: RFC 4180 CSV, text labels
printf 'id,text,label\r\n1,"the stock market is up, good news",pos\r\n2,"bad ""news"" for the bank",neg\r\n3,"the price\nis down",neg\r\n4,great company shares,pos\r\n5,sell the stock,neg\r\n6,buy buy buy,pos\r\n7,"he works, she works",pos\r\n8,down down,neg\r\n' >$TMP/small.csv
"$CLI" train --model $CK/tiny --csv $TMP/small.csv --text-col text --label-col label --epochs 3 \
    --batch-size 3 --lr 1e-3 --seed 5 --out $TMP/m1 >$TMP/train1.out 2>$TMP/train1.err; rc=$?
check "train exits 0" test $rc -eq 0
check "train: data line counts 8 rows, 2 labels" grep -q "^data 8 rows (train 8, validation 0), 2 labels" $TMP/train1.out
check "train: one line per epoch with loss and samples/s" \
    test "$(grep -cE '^epoch [1-3]/3 loss [0-9.]+ samples_per_s [0-9.]+' $TMP/train1.out)" -eq 3
check "train: saved" grep -q "^saved $TMP/m1" $TMP/train1.out
for f in config.json model.safetensors vocab.txt tokenizer_config.json; do
    check "train: wrote $f" test -s $TMP/m1/$f
done
check "train: id2label from sorted names" grep -q '"0": "neg"' $TMP/m1/config.json
check "train: label2id" grep -q '"pos": 1' $TMP/m1/config.json
printf 'good news\n' | "$CLI" classify --model $TMP/m1 >$TMP/m1.out 2>/dev/null
check "train: the trained model classifies with its label names" grep -qE '^\{"label": "(neg|pos)", "label_id": [01], ' $TMP/m1.out
"$CLI" train --model $CK/tiny --csv $TMP/small.csv --text-col text --label-col label --epochs 3 \
    --batch-size 3 --lr 1e-3 --seed 5 --out $TMP/m2 >/dev/null 2>&1
check "train: same seed, same weights" cmp -s $TMP/m1/model.safetensors $TMP/m2/model.safetensors
"$CLI" train --model $CK/tiny --csv $TMP/small.csv --text-col text --label-col label --epochs 3 \
    --batch-size 3 --lr 1e-3 --seed 6 --out $TMP/m3 >/dev/null 2>&1
check "train: another seed, other weights" bash -c "! cmp -s $TMP/m1/model.safetensors $TMP/m3/model.safetensors"
# continuing from the trained model maps the names through its id2label and keeps the head
"$CLI" train --model $TMP/m1 --csv $TMP/small.csv --text-col text --label-col label --epochs 1 \
    --lr 0 --no-shuffle --out $TMP/m4 >/dev/null 2>&1
check "train: names through existing id2label, lr 0 keeps weights" cmp -s $TMP/m1/model.safetensors $TMP/m4/model.safetensors
# --class-weights: small.csv has 4 neg and 4 pos, so balanced weighs both 1 (the unweighted model);
# by name and by id the same weights train the same model; other weights another one
cw_train() { "$CLI" train --model $CK/tiny --csv $TMP/small.csv --text-col text --label-col label --epochs 3 \
    --batch-size 3 --lr 1e-3 --seed 5 --out "$1" --class-weights "$2" >"$1.out" 2>&1; }
cw_train $TMP/cw1 balanced; cw_train $TMP/cw2 neg=3; cw_train $TMP/cw3 3,1; cw_train $TMP/cw4 'pos=1,neg=3'
check "train --class-weights balanced on balanced data: weights 1 1, the unweighted model" \
    bash -c "grep -q '^class weights 1 1$' $TMP/cw1.out && cmp -s $TMP/m1/model.safetensors $TMP/cw1/model.safetensors"
check "train --class-weights by name and by id: same model, not the unweighted one" \
    bash -c "grep -q '^class weights 3 1$' $TMP/cw2.out && cmp -s $TMP/cw2/model.safetensors $TMP/cw3/model.safetensors && cmp -s $TMP/cw2/model.safetensors $TMP/cw4/model.safetensors && ! cmp -s $TMP/m1/model.safetensors $TMP/cw2/model.safetensors"
# --early-stopping-patience on labels drawn at random: the validation loss grows
# once the training rows are memorised; stops 2 epochs after the best, keeps it
{ echo "text,label"; for i in $(seq 1 120); do echo "w$((i * 7919 % 101)) w$((i * 104729 % 97)) w$((i % 13)),$(( (i * 2654435761 % 1000003) % 2 ))"; done; } >$TMP/noise.csv
"$CLI" train --model $CK/tiny --csv $TMP/noise.csv --text-col text --label-col label --epochs 12 --batch-size 8 \
    --lr 3e-3 --seed 3 --validation-fraction 0.25 --early-stopping-patience 2 --threads 1 --out $TMP/es >$TMP/es.out 2>&1
es_ran=$(sed -nE 's/^early stopping after epoch ([0-9]+) \(best epoch ([0-9]+)\)$/\1/p' $TMP/es.out)
es_best=$(sed -nE 's/^early stopping after epoch ([0-9]+) \(best epoch ([0-9]+)\)$/\2/p' $TMP/es.out)
check "train --early-stopping-patience 2: stops 2 epochs after the best and keeps it (ran $es_ran, best $es_best)" \
    bash -c "[ -n '$es_ran' ] && [ '$es_ran' -lt 12 ] && [ \$(( $es_best + 2 )) -eq '$es_ran' ] && grep -q '^kept epoch $es_best$' $TMP/es.out && [ \$(grep -c '^epoch ' $TMP/es.out) -eq '$es_ran' ] && test -s $TMP/es/model.safetensors"
"$CLI" train --model $CK/tiny --csv $TMP/noise.csv --text-col text --label-col label --epochs 2 --load-best \
    --out $TMP/es2 >$TMP/es2.out 2>&1; rc=$?
check "train --load-best without --validation-fraction: exit 2" bash -c "[ $rc -eq 2 ] && grep -q validation-fraction $TMP/es2.out"
# --save-state / --resume: killed (SIGKILL) after epoch 2 of 4, resumed: the
# same model bytes as the uninterrupted run
{ echo "text,label"; for i in $(seq 1 1500); do echo "w$((i % 4)) word$((i * 7 % 5)) w$((i % 37)) more words about w$((i % 91)) x$((i % 53)),l$((i % 4 % 3))"; done; } >$TMP/big.csv
rs_train() { exec "$CLI" train --from-scratch --vocab-size 300 --layers 2 --hidden 128 --heads 2 --intermediate 256 \
    --max-positions 64 --csv $TMP/big.csv --text-col text --label-col label --epochs 4 --batch-size 16 --lr 1e-3 \
    --max-length 32 --dropout 0.1 --validation-fraction 0.2 --load-best --seed 3 --threads 1 "$@"; }
(rs_train --out $TMP/rs_ref >$TMP/rs_ref.out 2>&1)
rs_train --out $TMP/rs --save-state $TMP/rs.state >$TMP/rs1.out 2>&1 & # (exec: $! is bft-cli)
rs_pid=$!
for i in $(seq 1 600); do grep -q '^epoch 2/4' $TMP/rs1.out 2>/dev/null && break; sleep 0.05; done
kill -9 $rs_pid 2>/dev/null; wait $rs_pid 2>/dev/null
(rs_train --out $TMP/rs --save-state $TMP/rs.state --resume >$TMP/rs2.out 2>&1)
check "train --resume after kill -9 in epoch 3: continues after epoch 2 or 3, same model bytes as the uninterrupted run" \
    bash -c "grep -qE '^resuming training after epoch [23] of 4' $TMP/rs2.out && ! grep -q '^saved' $TMP/rs1.out && cmp -s $TMP/rs_ref/model.safetensors $TMP/rs/model.safetensors"
"$CLI" train --model $CK/tiny --csv $TMP/noise.csv --text-col text --label-col label --epochs 1 --resume \
    --out $TMP/rs3 >$TMP/rs3.out 2>&1; rc=$?
check "train --resume without --save-state: exit 2" bash -c "[ $rc -eq 2 ] && grep -q save-state $TMP/rs3.out"
for bad in 3 'x=1' '1,0' '1,2,3' 'neg=inf'; do
    cw_train $TMP/cwbad "$bad"; rc=$?
    check "train --class-weights '$bad': exit 2 with a message" bash -c "[ $rc -eq 2 ] && grep -q 'class-weights' $TMP/cwbad.out"
done

# ---- train: integer labels, validation split, dropout override, errors
{ echo "text,label"; for i in $(seq 1 30); do echo "\"the stock is up $i\",$((i % 3))"; done; } >$TMP/int.csv
"$CLI" train --model $CK/tiny --csv $TMP/int.csv --text-col text --label-col label --epochs 2 \
    --validation-fraction 0.2 --dropout 0 --warmup-ratio 0.1 --weight-decay 0.01 --threads 1 \
    --out $TMP/m5 >$TMP/train5.out 2>&1; rc=$?
check "train integer labels exits 0" test $rc -eq 0
check "train: stratified split 24/6, existing 3-label head kept" grep -q "^data 30 rows (train 24, validation 6), 3 labels" $TMP/train5.out
check "train: per-epoch eval" test "$(grep -cE '^epoch [12]/2 .* eval_loss [0-9.]+ eval_accuracy [0-9.]+ eval_macro_f1 [0-9.]+' $TMP/train5.out)" -eq 2
check "train: names kept with the kept head" grep -q '"2": "positive"' $TMP/m5/config.json
"$CLI" train --model $CK/tiny --csv $TMP/int.csv --text-col text --label-col label --epochs 1 \
    --num-labels 5 --out $TMP/m6 >$TMP/train6.out 2>&1
check "train --num-labels 5: new 5-way head" grep -q '"4": "LABEL_4"' $TMP/m6/config.json
"$CLI" train --model $CK/tiny --csv $TMP/int.csv --text-col body --label-col label --epochs 1 --out $TMP/x >/dev/null 2>$TMP/err
check_fail "train: missing column named, exit 1" $? 1 $TMP/err '"body"'
printf 'text,label\n"unterminated,0\n' >$TMP/broken.csv
"$CLI" train --model $CK/tiny --csv $TMP/broken.csv --text-col text --label-col label --epochs 1 --out $TMP/x >/dev/null 2>$TMP/err
check_fail "train: malformed CSV refused, exit 1" $? 1 $TMP/err "malformed CSV"
"$CLI" train --model $CK/tiny --csv $TMP/int.csv --text-col text --label-col label --epochs 0 --out $TMP/x >/dev/null 2>&1
check "train: --epochs 0 is a usage error" test $? -eq 2
"$CLI" train --model $CK/tiny_mlm --csv $TMP/small.csv --text-col text --label-col label --epochs 1 \
    --mlm-epochs 1 --out $TMP/m7 >$TMP/train7.out 2>&1; rc=$?
check_fail "train --mlm-epochs on an MLM model" $rc 0 $TMP/train7.out "^mlm epoch 1/1"
check "train: MLM model gets a head, keeps cls.predictions" grep -q "cls.predictions.bias" $TMP/m7/model.safetensors

# ---- warmup: Trainer's math.ceil(steps * warmup_ratio) in doubles, where steps x
# ratio is an integer (20 x 0.1 -> 2 and 30 x 0.1 -> 3; a float ratio gave 3 and 4);
# --log-steps prints every step's loss and the learning rate it used
{ echo "text,label"; for i in $(seq 1 30); do echo "\"row $i of the table\",$((i % 2))"; done; } >$TMP/w30.csv
head -n 21 $TMP/w30.csv >$TMP/w20.csv
for n in 20 30; do
    "$CLI" train --model $CK/tiny --csv $TMP/w$n.csv --text-col text --label-col label --epochs 1 \
        --batch-size 1 --lr 1e-3 --warmup-ratio 0.1 --no-shuffle --dropout 0 --threads 1 --log-steps \
        --out $TMP/w$n >$TMP/w$n.out 2>&1
done
check "--warmup-ratio 0.1 x 20 steps: 2 warmup steps" grep -qE "^train_loss [0-9.]+ steps 20 warmup_steps 2 " $TMP/w20.out
check "--warmup-ratio 0.1 x 30 steps: 3 warmup steps" grep -qE "^train_loss [0-9.]+ steps 30 warmup_steps 3 " $TMP/w30.out
check "--log-steps: one line per step" test "$(grep -cE '^step [0-9]+/20 epoch 1 loss [0-9.e+-]+ lr ' $TMP/w20.out)" -eq 20
check "--log-steps: lr of steps 1-3 and 20 (20 x 0.1)" bash -c "grep -q '^step 1/20 .* lr 0\$' $TMP/w20.out &&
    grep -q '^step 2/20 .* lr 0.0005\$' $TMP/w20.out && grep -q '^step 3/20 .* lr 0.001\$' $TMP/w20.out &&
    grep -q '^step 20/20 .* lr 5.555555555555555e-05\$' $TMP/w20.out"
check "--log-steps: lr of steps 3, 4 and 30 (30 x 0.1)" bash -c "grep -q '^step 3/30 .* lr 0.0006666666666666666\$' $TMP/w30.out &&
    grep -q '^step 4/30 .* lr 0.001\$' $TMP/w30.out && grep -q '^step 30/30 .* lr 3.7037037037037037e-05\$' $TMP/w30.out"
check "--log-steps: the step losses average to the epoch loss" awk '
    /^step / { s += $6; n++ } /^epoch 1\/1 loss/ { e = $4 }
    END { d = s / n - e; if (d < 0) d = -d; exit !(n == 20 && d < 1e-5) }' $TMP/w20.out

# ---- train from scratch: learned vocabulary, MLM pre-training, fine-tuning
"$CLI" train --from-scratch --vocab-size 120 --layers 1 --hidden 32 --heads 2 --intermediate 64 \
    --max-positions 64 --csv $TMP/int.csv --text-col text --label-col label --epochs 1 --mlm-epochs 1 \
    --out $TMP/fs >$TMP/fs.out 2>&1; rc=$?
check_fail "train --from-scratch exits 0" $rc 0 $TMP/fs.out "^from scratch: vocabulary [0-9]+ tokens"
check "from scratch: vocab.txt starts with the special tokens" \
    test "$(head -5 $TMP/fs/vocab.txt | tr '\n' ' ')" = "[PAD] [UNK] [CLS] [SEP] [MASK] "
printf 'the stock is up\n' | "$CLI" classify --model $TMP/fs >$TMP/fs.cls 2>&1
check "from scratch: the model loads and classifies" grep -qE '"probs": \[[^,]+, [^,]+, [^,]+\]' $TMP/fs.cls
"$CLI" train --model $CK/tiny --from-scratch --csv $TMP/int.csv --text-col text --label-col label --epochs 1 --out $TMP/x >/dev/null 2>&1
check "train: --model and --from-scratch together is a usage error" test $? -eq 2

# ---- export / info
"$CLI" export --model $CK/tiny_legacy --out $TMP/exp >/dev/null 2>&1
check "export legacy → F32 standard names" grep -q "bert.embeddings.LayerNorm.weight" $TMP/exp/model.safetensors
"$CLI" export --model $TMP/exp --out $TMP/exp2 >/dev/null 2>&1
check "export is stable (bit-identical rewrite)" cmp -s $TMP/exp/model.safetensors $TMP/exp2/model.safetensors
"$CLI" info --model $CK/tiny >$TMP/info.out 2>&1
check "info" grep -q "^label 2: \"positive\"" $TMP/info.out

# ---- embed --long-text: a 2,400-word line and a short one (tiny_st: windows of 48 tokens,
# mean pooling + Normalize)
awk 'BEGIN { split("the market bank", w, " "); for (i = 0; i < 2400; i++) printf "%s%s", i ? " " : "", w[1 + (i + int(i / 97)) % 3]
             print ""; print "the bank rose" }' >$TMP/long.txt
for lt in truncate mean max; do
    "$CLI" embed --model $CK/tiny_st --long-text $lt --stride 8 <$TMP/long.txt >$TMP/emb_$lt.out 2>$TMP/emb_$lt.err
    check "embed --long-text $lt exits 0, two lines" test $? -eq 0 -a "$(wc -l <$TMP/emb_$lt.out)" -eq 2
done
check "embed --long-text mean: the long line differs from the truncated one" \
    test "$(head -1 $TMP/emb_mean.out)" != "$(head -1 $TMP/emb_truncate.out)"
check "embed --long-text max differs from mean" test "$(head -1 $TMP/emb_max.out)" != "$(head -1 $TMP/emb_mean.out)"
# close LINE_A LINE_B TOL: the numbers of two output lines differ by at most TOL
# (batches of other sizes may round a line's last bits differently)
close() {
    awk -v a="$1" -v b="$2" -v tol="$3" 'BEGIN {
        na = split(a, x, /[^-0-9.eE+]+/); nb = split(b, y, /[^-0-9.eE+]+/); if (na != nb) exit 1
        for (i = 1; i <= na; i++) { d = x[i] - y[i]; if (d < 0) d = -d; if (d > tol) exit 1 } }'
}
check "embed --long-text: a short line keeps the truncated vector" \
    close "$(tail -1 $TMP/emb_mean.out)" "$(tail -1 $TMP/emb_truncate.out)" 1e-6
check "embed --long-text max: a short line keeps the truncated vector" \
    close "$(tail -1 $TMP/emb_max.out)" "$(tail -1 $TMP/emb_truncate.out)" 1e-6
check "close() tells different vectors apart" eval '! close "$(head -1 $TMP/emb_mean.out)" "$(head -1 $TMP/emb_truncate.out)" 1e-6'
unit() { awk -F'[][, ]+' '{ s = 0; for (i = 2; i < NF; i++) s += $i * $i; if (s < 0.99999 || s > 1.00001) bad = 1 } END { exit bad }' "$1"; }
check "embed --long-text mean, max: unit vectors (Normalize after the combination)" unit $TMP/emb_mean.out
unit $TMP/emb_max.out; check "embed --long-text max: unit vectors" test $? -eq 0
"$CLI" embed --model $CK/tiny_st --long-text median </dev/null >/dev/null 2>$TMP/err
check_fail "embed: a bad --long-text is a usage error" $? 2 $TMP/err "truncate, mean or max"
"$CLI" embed --model $CK/tiny_st --long-text mean --hidden </dev/null >/dev/null 2>$TMP/err
check_fail "embed: --long-text with --hidden is a usage error" $? 2 $TMP/err "not --hidden"

# ---- classify --long-text: the same long line, windows of 16 tokens sharing 4
for lt in truncate mean max; do
    "$CLI" classify --model $CK/tiny --max-length 16 --long-text $lt --stride 4 <$TMP/long.txt >$TMP/cls_$lt.out 2>&1
    check "classify --long-text $lt exits 0, two lines" test $? -eq 0 -a "$(wc -l <$TMP/cls_$lt.out)" -eq 2
done
check "classify --long-text mean: the long line differs from the truncated one" \
    eval '! close "$(head -1 $TMP/cls_mean.out)" "$(head -1 $TMP/cls_truncate.out)" 1e-4'
check "classify --long-text max differs from mean" eval '! close "$(head -1 $TMP/cls_max.out)" "$(head -1 $TMP/cls_mean.out)" 1e-4'
check "classify --long-text mean, max: a short line keeps the truncated probabilities" \
    eval 'close "$(tail -1 $TMP/cls_mean.out)" "$(tail -1 $TMP/cls_truncate.out)" 1e-6 &&
          close "$(tail -1 $TMP/cls_max.out)" "$(tail -1 $TMP/cls_truncate.out)" 1e-6'
sum1() { sed 's/.*"probs": \[\([^]]*\)\].*/\1/' "$1" | awk -F', ' '{ s = 0; for (i = 1; i <= NF; i++) s += $i; if (s < 0.99999 || s > 1.00001) bad = 1 } END { exit bad }'; }
check "classify --long-text max: a single-label model's pooled maxima sum to 1" sum1 $TMP/cls_max.out
"$CLI" classify --model $CK/tiny --long-text median </dev/null >/dev/null 2>$TMP/err
check_fail "classify: a bad --long-text is a usage error" $? 2 $TMP/err "truncate, mean or max"

# ---- bench
"$CLI" bench --layers 1 --hidden 32 --heads 4 --intermediate 64 --batch 4 --seq 16 --steps 3 --vocab 200 --threads 1 >$TMP/bench.out 2>&1; rc=$?
check "bench exits 0" test $rc -eq 0
check "bench prints train_samples_per_s" grep -qE '^train_samples_per_s: [0-9]+\.[0-9]+$' $TMP/bench.out
check "bench prints infer_samples_per_s" grep -qE '^infer_samples_per_s: [0-9]+\.[0-9]+$' $TMP/bench.out
"$CLI" bench --layers 1 --hidden 30 --heads 4 --intermediate 64 --batch 4 --seq 16 --steps 3 >/dev/null 2>$TMP/err
check_fail "bench: hidden % heads refused" $? 1 $TMP/err "num_attention_heads"

echo "RESULT: $PASS passed, $FAIL failed"
[ $FAIL -eq 0 ]
