#!/usr/bin/env bash
# long_text: accuracy on long documents whose label is stated past the first
# window, with truncation (bft.long_text = 'truncate', the default) next to
# the chunked modes 'mean' and 'max', in one run on one model.
#
# Data: the Twitter Financial News Topic training split
# (../shared/data/topic_train.csv, 20 labels), split 80/20 per label (md5
# order of the row id). A small BERT is trained from scratch on the training
# tweets (max_length 64); documents are built from the held-out tweets only:
#   header+body  a header of tweets of other labels (at least one window),
#                then tweets of the document's label: ~2,000+ tokens,
#                the label stated everywhere after the first window;
#   needle       tweets of other labels everywhere, and one tweet of the
#                document's label somewhere after the first window.
# Prints the accuracy of each mode on each kind of document, on the single
# held-out tweets and on the documents' label tweets alone (as many per label:
# the ceiling for header+body documents), and the chunked/truncated ratios. Not part of the test
# suite (a few minutes on 2 cores); run it with nice on a shared machine.
#
# Usage: bash tests/bench/long_text.sh
#        DOCS=100 EPOCHS=2 TRAIN_ROWS=6000 bash tests/bench/long_text.sh
set -uo pipefail
cd "$(dirname "$0")/../.."
ROOT="$PWD"
CSV="$ROOT/../shared/data/topic_train.csv"
[ -f "$CSV" ] || { echo "missing $CSV"; exit 1; }
DOCS="${DOCS:-200}"             # documents of each kind
EPOCHS="${EPOCHS:-3}"
TRAIN_ROWS="${TRAIN_ROWS:-100000}" # training tweets (all by default)
STRIDE="${STRIDE:-16}"
source tests/scripts/cluster.sh; set +e +u
TMPD=$(mktemp -d /tmp/bft-longtext.XXXXXX); chmod 755 "$TMPD"
trap 'cluster_stop "$TMPD/cl"; rm -rf "$TMPD"' EXIT
cluster_start "$TMPD/cl" 54393 >/dev/null || exit 1
q() { psql -X -q -d longtext -v ON_ERROR_STOP=1 "$@"; }
psql -X -q -d postgres -c "CREATE DATABASE longtext" >/dev/null
q -c "CREATE EXTENSION bft" -c "CREATE TABLE tweets (id serial, text text, label int)" >/dev/null
q -c "\\copy tweets (text, label) FROM '$CSV' CSV HEADER" >/dev/null
echo "OPENBLAS_CORETYPE=${OPENBLAS_CORETYPE:-unset} (OpenBLAS kernels), bft.threads = 0 (all $(nproc) CPUs), load average $(cut -d' ' -f1-3 /proc/loadavg)"
q <<SQL
CREATE TABLE ranked AS
SELECT t.*, row_number() OVER w AS rn, count(*) OVER (PARTITION BY label) AS n
  FROM tweets t WINDOW w AS (PARTITION BY label ORDER BY md5(id::text));
CREATE TABLE test  AS SELECT id, text, label FROM ranked WHERE rn <= round(n * 0.2);
CREATE TABLE train AS SELECT id, text, label FROM ranked WHERE rn >  round(n * 0.2)
                      ORDER BY md5(id::text || 'train') LIMIT $TRAIN_ROWS;
SQL
echo "rows: train $(q -t -A -c 'SELECT count(*) FROM train'), test $(q -t -A -c 'SELECT count(*) FROM test')"
arch='{"hidden_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4, "intermediate_size": 512, "vocab_size": 8000}'
start=$(date +%s)
q -c "SET client_min_messages = warning" \
  -c "SELECT model, rows_used, epochs, round(train_loss::numeric, 4) AS train_loss,
             round(samples_per_second::numeric, 1) AS samples_per_s, duration
        FROM bft_train('train', 'text', 'label', $EPOCHS, model => 'topics', max_length => 64,
                       mlm_epochs => 0, architecture => '$arch')"
echo "training: $(( $(date +%s) - start )) s"

# Documents from held-out tweets: ~45 tweets (about 2,000 tokens) each.
q <<SQL
SET client_min_messages = warning;
CREATE TABLE tok AS SELECT id, label, text, (SELECT count(*) - 2 FROM bft_tokenize(text, 'topics')) AS ntok FROM test;
-- the document's label tweet: DOCS of them, spread over the labels (md5 order per label)
CREATE TABLE needles AS
SELECT row_number() OVER (ORDER BY r, md5(id::text)) AS doc, id, label, text
  FROM (SELECT *, row_number() OVER (PARTITION BY label ORDER BY md5(id::text)) AS r FROM tok) s
 ORDER BY r, md5(id::text) LIMIT $DOCS;
-- fillers: tweets of other labels, a fresh pseudo-random order per document
CREATE TABLE filler AS
SELECT n.doc, t.text, t.ntok, row_number() OVER (PARTITION BY n.doc ORDER BY md5(t.id::text || n.doc::text)) AS pos
  FROM needles n JOIN tok t ON t.label <> n.label;
DELETE FROM filler WHERE pos > 45;
-- same-label tweets for the bodies (the needle first)
CREATE TABLE body AS
SELECT n.doc, t.text, t.ntok, row_number() OVER (PARTITION BY n.doc ORDER BY t.id <> n.id, md5(t.id::text || n.doc::text)) AS pos
  FROM needles n JOIN tok t ON t.label = n.label;
DELETE FROM body WHERE pos > 40;
-- header+body: filler until at least 64 tokens are used (one window and more), then the body
CREATE TABLE docs_body AS
SELECT n.doc, n.label,
       (SELECT string_agg(text, ' ' ORDER BY pos) FROM filler f WHERE f.doc = n.doc AND f.pos <= 4)
       || ' ' || (SELECT string_agg(text, ' ' ORDER BY pos) FROM body b WHERE b.doc = n.doc) AS text,
       (SELECT sum(ntok) FROM filler f WHERE f.doc = n.doc AND f.pos <= 4)
       + (SELECT sum(ntok) FROM body b WHERE b.doc = n.doc) AS ntok,
       (SELECT sum(ntok) FROM filler f WHERE f.doc = n.doc AND f.pos <= 4) AS header_tok
  FROM needles n;
-- needle: 45 filler tweets with the label tweet after the 4th .. 44th (a pseudo-random place)
CREATE TABLE docs_needle AS
SELECT n.doc, n.label,
       (SELECT string_agg(text, ' ' ORDER BY pos) FROM
          (SELECT text, pos FROM filler f WHERE f.doc = n.doc
           UNION ALL SELECT n.text, 4 + (abs(hashtext(n.doc::text)) % 40) + 0.5) x) AS text,
       (SELECT sum(ntok) FROM filler f WHERE f.doc = n.doc) + (SELECT ntok FROM tok WHERE id = n.id) AS ntok,
       (SELECT sum(ntok) FROM filler f WHERE f.doc = n.doc AND f.pos <= 4 + (abs(hashtext(n.doc::text)) % 40)) AS header_tok
  FROM needles n;
SQL
q -t -A -F ' ' -c "SELECT 'documents:', count(*), 'of each kind; header+body: mean', round(avg(b.ntok)), 'tokens (min', min(b.ntok),
                          '), label from token', round(avg(b.header_tok)), 'on average (min', min(b.header_tok), '); needle: mean',
                          round(avg(n.ntok)), 'tokens (min', min(n.ntok), '), the needle after token', round(avg(n.header_tok)),
                          '(min', min(n.header_tok), ')'
                     FROM docs_body b JOIN docs_needle n USING (doc)"

acc() {  # acc MODE TABLE → accuracy (and seconds)
    local t0 t1 a
    t0=$(date +%s.%N)
    a=$(q -t -A -c "SET bft.long_text = '$1'" -c "SET bft.chunk_stride = $STRIDE" \
          -c "SELECT round(accuracy::numeric, 4) FROM bft_evaluate('topics', '$2', 'text', 'label')")
    t1=$(date +%s.%N)
    printf '%s %.1f' "$a" "$(echo "$t1 - $t0" | bc)"
}
echo "windows of 64 tokens sharing $STRIDE (bft.chunk_stride); accuracy (seconds for the evaluation)"
printf '%-22s %16s %16s %16s %10s %10s\n' "" truncate mean max mean/trunc max/trunc
for t in test needles docs_body docs_needle; do
    read -r at st <<<"$(acc truncate $t)"
    read -r am sm <<<"$(acc mean $t)"
    read -r ax sx <<<"$(acc max $t)"
    case $t in test) name="held-out tweets";; needles) name="the docs' label tweets";;
               docs_body) name="header+body docs";; *) name="needle docs";; esac
    printf '%-22s %9s (%4ss) %9s (%4ss) %9s (%4ss) %10s %10s\n' "$name" "$at" "$st" "$am" "$sm" "$ax" "$sx" \
        "$(echo "scale=2; $am / $at" | bc 2>/dev/null)" "$(echo "scale=2; $ax / $at" | bc 2>/dev/null)"
done
