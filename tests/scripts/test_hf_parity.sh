#!/usr/bin/env bash
# test_hf_parity: bft against Hugging Face Trainer and transformers, through
# the goldens tests/hf/trainer_parity.py wrote with the real libraries
# (tests/data/hf/parity; no Python or torch needed here):
#
#  - bft-cli train and bft_train (SQL) fine-tune the same initial weights
#    (init/: save_pretrained of the tiny checkpoint) with Trainer's
#    hyper-parameters (hparams.txt: 40 rows, batch 4, 2 epochs = 20 steps,
#    warmup_ratio 0.1 = 2 warmup steps, weight decay, clipping, no dropout, no
#    shuffling): the learning rate of every step equals Trainer's (relative
#    1e-12), the loss of every step is within 1e-5 of Trainer's, and the final
#    probabilities on eval.txt are within 1e-5 of the Trainer model's;
#  - metrics->'warmup_steps' is 2;
#  - the SQL-trained model's probabilities are within 1e-5 of what
#    transformers computed on bft_export_model's directory of that model
#    (export_probs.txt), and the exported directory has every file
#    from_pretrained needs;
#  - Trainer's own save_pretrained directory (trainer/: tokenizer.json, no
#    vocab.txt) imports with bft_import_model and classifies within 1e-5 of
#    transformers (trainer_probs_full.txt);
#  - a random BertForMaskedLM that transformers saved (tests/data/hf/roundtrip,
#    tests/hf/roundtrip.py: mlm/ with model.safetensors + tokenizer.json,
#    mlm_bin/ with pytorch_model.bin) imports, and bft_fill_mask gives
#    transformers' top 5 ids for every [MASK] with scores within 1e-5.
#
# Needs PGHOST/PGPORT/PGUSER of a running cluster with bft installed
# (tests/run_all.sh exports them) and build/bft-cli. Prints "RESULT: P passed, F failed".
set -uo pipefail
cd "$(dirname "$0")/../.." || exit 1
ROOT=$PWD
G=$ROOT/tests/data/hf/parity
CLI=${BFT_CLI:-build/bft-cli}
DB=bft_hf_parity
TOL=1e-5
TMP=$(mktemp -d "${BFT_TMP:-/tmp}/bft-hf-parity.XXXXXX")
chmod 755 "$TMP"
trap 'rm -rf "$TMP"' EXIT
PASS=0; FAIL=0
ok()   { echo "ok   - $*"; PASS=$((PASS + 1)); }
fail() { echo "FAIL - $*"; FAIL=$((FAIL + 1)); }
q() { psql -X -q -t -A -v ON_ERROR_STOP=1 -d "$DB" "$@"; }
hp() { awk -v k="$1" '$1 == k { print $2 }' "$G/hparams.txt"; }
EPOCHS=$(hp epochs); BATCH=$(hp batch_size); LR=$(hp learning_rate); WARMUP=$(hp warmup_ratio)
WD=$(hp weight_decay); MAXLEN=$(hp max_length); SEED=$(hp seed)
export OPENBLAS_CORETYPE=${OPENBLAS_CORETYPE:-Haswell}

# steps_vs FILE NAME: "step S/T epoch E loss L lr X" lines of FILE against trainer_steps.txt
steps_vs() {
    local got="$1" name="$2" out
    out=$(grep -oE 'step [0-9]+/[0-9]+ epoch [0-9]+ loss [^ ]+ lr [^ ]+' "$got" |
        awk -v tol="$TOL" 'NR == FNR { loss[FNR] = $2; lr[FNR] = $3; n = FNR; next }
            { split($2, st, "/"); s = st[1]; m++
              d = $6 - loss[s]; if (d < 0) d = -d; if (d > dl) dl = d
              r = $8 - lr[s]; if (r < 0) r = -r; if (lr[s] != 0) r /= lr[s]; if (r > dr) dr = r }
            END { printf "%d %d %.3g %.3g\n", m, n, dl, dr }' "$G/trainer_steps.txt" -)
    read -r m n dl dr <<<"$out"
    if [ "${m:-0}" = "$n" ] && [ "$n" -gt 0 ]; then ok "$name: $m steps, as Trainer"; else fail "$name: ${m:-0} steps, Trainer $n"; fi
    if awk -v d="${dr:-1}" 'BEGIN { exit !(d <= 1e-12) }'; then ok "$name: learning rate of every step = Trainer's (max relative diff $dr)"
    else fail "$name: learning rates differ from Trainer's (max relative diff $dr)"; fi
    if awk -v d="${dl:-1}" -v t="$TOL" 'BEGIN { exit !(d <= t) }'; then ok "$name: loss of every step within $TOL of Trainer's (max |diff| $dl)"
    else fail "$name: step losses differ from Trainer's by $dl (> $TOL)"; fi
}

# probs_vs GOT WANT NAME: two files of space-separated probabilities, line by line
probs_vs() {
    local d
    d=$(awk 'NR == FNR { for (i = 1; i <= NF; i++) w[FNR, i] = $i; nw[FNR] = NF; n = FNR; next }
            { m++; if (NF != nw[FNR]) bad = 1
              for (i = 1; i <= NF; i++) { x = $i - w[FNR, i]; if (x < 0) x = -x; if (x > d) d = x } }
            END { if (bad || m != n || n == 0) print "mismatch"; else printf "%.3g\n", d }' "$2" "$1")
    if [ "$d" != mismatch ] && awk -v d="$d" -v t="$TOL" 'BEGIN { exit !(d <= t) }'; then
        ok "$3: within $TOL (max |diff| $d)"
    else
        fail "$3: max |diff| $d (> $TOL or rows differ)"
    fi
}

if [ ! -x "$CLI" ] || [ ! -f "$G/trainer_steps.txt" ]; then
    echo "FAIL - no $CLI or no goldens in $G"; echo "RESULT: 0 passed, 1 failed"; exit 1
fi

# ---- bft-cli
"$CLI" train --model "$G/init" --csv "$G/train.csv" --text-col text --label-col label --epochs "$EPOCHS" \
    --batch-size "$BATCH" --lr "$LR" --warmup-ratio "$WARMUP" --weight-decay "$WD" --max-length "$MAXLEN" \
    --dropout 0 --no-shuffle --seed "$SEED" --threads 2 --log-steps --out "$TMP/cli" >"$TMP/cli.log" 2>&1
rc=$?
if [ $rc -eq 0 ]; then ok "bft-cli train from Trainer's initial weights"; else fail "bft-cli train rc $rc: $(tail -n 2 "$TMP/cli.log")"; fi
steps_vs "$TMP/cli.log" "bft-cli train"
grep -q ' warmup_steps 2 ' "$TMP/cli.log" && ok "bft-cli train: 2 warmup steps (20 x 0.1)" || fail "bft-cli train: warmup steps: $(grep '^train_loss' "$TMP/cli.log")"
"$CLI" classify --model "$TMP/cli" --max-length "$MAXLEN" <"$G/eval.txt" 2>/dev/null |
    sed -E 's/.*"probs": \[([^]]*)\].*/\1/; s/,/ /g' >"$TMP/cli_probs.txt"
probs_vs "$TMP/cli_probs.txt" "$G/trainer_probs.txt" "bft-cli: final probabilities vs Trainer's"

# ---- SQL
psql -X -q -d postgres -c "SET client_min_messages = warning" -c "DROP DATABASE IF EXISTS $DB" \
    -c "CREATE DATABASE $DB" || { echo "RESULT: $PASS passed, $((FAIL + 1)) failed"; exit 1; }
q -c "CREATE EXTENSION bft" -c "CREATE TABLE rows (text text, label int)" >/dev/null
q -c "\\copy rows FROM '$G/train.csv' WITH (FORMAT csv, HEADER true)" >/dev/null
q -c "SET client_min_messages = warning" -c "SELECT * FROM bft_import_model('init', '$G/init')" >/dev/null \
    && ok "bft_import_model of Trainer's initial weights (save_pretrained, tokenizer.json)" || fail "import init"
q -c "SET client_min_messages = debug1" -c "SET bft.threads = 2" -c "SELECT version FROM bft_train('rows', 'text', 'label',
        $EPOCHS, model => 'sql', base => 'init', batch_size => $BATCH, learning_rate => $LR, max_length => $MAXLEN,
        warmup_ratio => $WARMUP, weight_decay => $WD, dropout => 0, shuffle => false, seed => $SEED)" \
    >"$TMP/sql.out" 2>"$TMP/sql.log"
rc=$?
if [ $rc -eq 0 ]; then ok "bft_train from Trainer's initial weights"; else fail "bft_train rc $rc: $(grep -v DEBUG "$TMP/sql.log" | tail -n 2)"; fi
steps_vs "$TMP/sql.log" "bft_train (SQL)"
w=$(q -c "SELECT metrics->>'warmup_steps' FROM bft.models WHERE name = 'sql'")
[ "$w" = 2 ] && ok "bft_train: metrics->'warmup_steps' = 2" || fail "bft_train: warmup_steps $w"
EVAL="SELECT t, i FROM unnest(string_to_array(rtrim(pg_read_file('$G/eval.txt'), E'\\n'), E'\\n')) WITH ORDINALITY AS u(t, i)"
sql_probs() { q -c "SELECT array_to_string(bft_predict_proba(t, '$1')::float8[], ' ') FROM ($EVAL) e ORDER BY i"; }
sql_probs sql >"$TMP/sql_probs.txt"
probs_vs "$TMP/sql_probs.txt" "$G/trainer_probs.txt" "bft_train (SQL): final probabilities vs Trainer's"
probs_vs "$TMP/sql_probs.txt" "$G/export_probs.txt" "bft vs transformers on bft_export_model's directory (export_probs.txt)"
mkdir -p "$TMP/export" && chmod 777 "$TMP/export"
q -c "SELECT bft_export_model('sql', '$TMP/export')" >/dev/null
for f in config.json model.safetensors vocab.txt tokenizer_config.json; do
    [ -s "$TMP/export/$f" ] && ok "export writes $f" || fail "export lacks $f"
done
q -c "SET client_min_messages = warning" -c "SELECT * FROM bft_import_model('trainer', '$G/trainer')" >/dev/null \
    && ok "bft_import_model of Trainer's save_pretrained directory" || fail "import trainer"
sql_probs trainer >"$TMP/trainer_probs.txt"
probs_vs "$TMP/trainer_probs.txt" "$G/trainer_probs_full.txt" "Trainer's directory in bft vs transformers"

# ---- fill-mask of transformers' BertForMaskedLM (safetensors and pytorch_model.bin)
R=$ROOT/tests/data/hf/roundtrip
for form in mlm mlm_bin; do
    q -c "SET client_min_messages = warning" -c "SELECT * FROM bft_import_model('$form', '$R/$form')" >/dev/null \
        && ok "bft_import_model of transformers' BertForMaskedLM ($form)" || fail "import $form"
    : >"$TMP/fm_$form.txt"
    while IFS=$'\t' read -r text _; do
        got=$(q -c "SELECT string_agg(token_id || ' ' || score::float8, ' ' ORDER BY ord)
                      FROM bft_fill_mask(\$t\$$text\$t\$, 5, '$form') WITH ORDINALITY AS f(token, token_id, score, ord)")
        echo "$got" >>"$TMP/fm_$form.txt"
    done <"$R/fill_mask.txt"
    d=$(paste -d '|' "$TMP/fm_$form.txt" "$R/fill_mask.txt" | awk -F'|' '{
            n = split($1, g, " "); split($2, tw, "\t"); m = split(tw[2], w, " ")
            if (n != m || n == 0) { bad = 1; next }
            for (i = 1; i <= n; i += 2) { if (g[i] != w[i]) bad = 1
                x = g[i + 1] - w[i + 1]; if (x < 0) x = -x; if (x > d) d = x } }
            END { if (bad) print "mismatch"; else printf "%.3g\n", d }')
    if [ "$d" != mismatch ] && awk -v d="$d" -v t="$TOL" 'BEGIN { exit !(d <= t) }'; then
        ok "bft_fill_mask ($form): transformers' top 5 ids for every [MASK], scores within $TOL (max |diff| $d)"
    else
        fail "bft_fill_mask ($form): $d; got $(head -c 200 "$TMP/fm_$form.txt")"
    fi
done

psql -X -q -d postgres -c "DROP DATABASE IF EXISTS $DB" >/dev/null
echo "RESULT: $PASS passed, $FAIL failed"
[ "$FAIL" -eq 0 ]
