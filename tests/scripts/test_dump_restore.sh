#!/usr/bin/env bash
# test_dump_restore: bft models travel between databases and clusters.
#
# A source database on the runner's cluster holds two versions of a trained
# model (the older one deployed), an imported classifier and an imported MLM
# model.  Then:
#  - pg_dump custom format (large objects included) restored with pg_restore
#    into a new database on the same cluster and into a second cluster, and
#    plain format restored with psql into the second cluster: the model rows,
#    the weights' bytes, the deployed versions, the default model and every
#    probability / fill-mask score / token are identical; the restored
#    database trains a next version and drops models (unlinking their large
#    objects) normally;
#  - a partial dump (-e bft -t docs) with -b restores identically; one
#    without large objects (-B) gives a clear 42704 error when classifying;
#  - a long-lived session notices that model id 1 is another model after
#    DROP/CREATE EXTENSION and a new training (ids restart);
#  - bft_export_model to a server directory on the source and
#    bft_import_model(name, directory) on the second cluster;
#  - client-side: \lo_export of bft_copy_weights() + the row's config and vocabulary
#    into files, then the four psql lines (\lo_import, two \set, one SELECT
#    bft_import_model) on the second cluster; and the same files as a
#    directory for bft_import_model(name, directory);
#    all classify identically.
#
# Needs PGHOST/PGPORT/PGUSER of a running cluster with bft installed and
# BFT_TMP (tests/run_all.sh sets both).  Prints "RESULT: P passed, F failed".
set -uo pipefail
cd "$(dirname "$0")/../.." || exit 1
source tests/scripts/cluster.sh
set +e
: "${PGHOST:?}" "${PGPORT:?}"
AH=$PGHOST; AP=$PGPORT; AU=${PGUSER:-postgres}

PASS=0; FAIL=0
ok()   { echo "ok   - $*"; PASS=$((PASS + 1)); }
fail() { echo "FAIL - $*"; FAIL=$((FAIL + 1)); }
check() { if eval "$1"; then ok "$2"; else fail "$2"; fi; }

OWN_TMP=""
if [ -z "${BFT_TMP:-}" ]; then OWN_TMP=$(mktemp -d /tmp/bft-dump.XXXXXX); chmod 755 "$OWN_TMP"; BFT_TMP=$OWN_TMP; fi
D="$BFT_TMP/dump"; B="$D/b"; BP=${BFT_DUMP_PORT:-55451}
SRC=bft_dump_src; COPY=bft_dump_copy
cleanup() {
    cluster_stop "$B"
    psql -X -q -h "$AH" -p "$AP" -U "$AU" -d postgres -c "SET client_min_messages = warning" \
        -c "DROP DATABASE IF EXISTS $SRC" -c "DROP DATABASE IF EXISTS $COPY" >/dev/null 2>&1
    [ -n "${BFT_KEEP:-}" ] || rm -rf "$D"; [ -n "$OWN_TMP" ] && rm -rf "$OWN_TMP"
}
trap cleanup EXIT
rm -rf "$D"; mkdir -p "$D/lo"
[ "$(id -u)" -eq 0 ] && chown -R "$(cluster_user)": "$D"

qa() { local db=$1; shift; psql -X -q -t -A -v ON_ERROR_STOP=1 -h "$AH" -p "$AP" -U "$AU" -d "$db" "$@"; }
qb() { local db=$1; shift; psql -X -q -t -A -v ON_ERROR_STOP=1 -h "$B" -p "$BP" -U postgres -d "$db" "$@"; }

# ---- source database ---------------------------------------------------------
psql -X -q -h "$AH" -p "$AP" -U "$AU" -d postgres -c "SET client_min_messages = warning" \
    -c "DROP DATABASE IF EXISTS $SRC" -c "DROP DATABASE IF EXISTS $COPY" -c "CREATE DATABASE $SRC" \
    || { echo "RESULT: 0 passed, 1 failed"; exit 1; }
ARCH='{"hidden_size":32,"num_hidden_layers":1,"num_attention_heads":2,"intermediate_size":64,"vocab_size":200,"max_position_embeddings":64}'
qa $SRC -c "CREATE EXTENSION bft" -c "SET client_min_messages = warning" -c "SET bft.threads = 1" \
    -c "CREATE TABLE docs AS
        SELECT i AS id,
               (ARRAY['central bank raises interest rates', 'shares rally as profit beats forecast',
                      'team wins the championship final', 'oil prices fall on weak demand'])[1 + i % 4]
               || ' ' || (ARRAY['today', 'again', 'this week', 'sharply', 'in march'])[1 + i % 5] AS body,
               (ARRAY['economy', 'markets', 'sports', 'markets'])[1 + i % 4] AS label
          FROM generate_series(1, 60) i" \
    -c "SELECT version FROM bft_train('docs', 'body', 'label', epochs => 15, model => 'topics', seed => 1, mlm_epochs => 1,
               batch_size => 8, learning_rate => 2e-3, max_length => 32, architecture => '$ARCH')" \
    -c "SELECT version FROM bft_train('docs', 'body', 'label', epochs => 15, model => 'topics', seed => 2, mlm_epochs => 1,
               batch_size => 8, learning_rate => 3e-3, max_length => 32, architecture => '$ARCH')" \
    -c "SELECT version FROM bft_import_model('tiny', '$PWD/tests/data/ckpt/tiny')" \
    -c "SELECT version FROM bft_import_model('tiny_mlm', '$PWD/tests/data/ckpt/tiny_mlm')" \
    -c "SELECT version FROM bft_train('docs', 'body', 'label', epochs => 3, model => 'cased', batch_size => 8,
               max_length => 32, architecture => '${ARCH%\}}, \"do_lower_case\": false}')" \
    -c "SELECT bft_deploy('topics', 1)" >"$D/setup.log" 2>&1
check '[ "$(qa $SRC -c "SELECT string_agg(name || '\'':'\'' || version, '\'','\'' ORDER BY name, version) FROM bft.models")" = "cased:1,tiny:1,tiny_mlm:1,topics:1,topics:2" ]' \
    "source: topics v1+v2 (v1 deployed), a cased model, tiny and tiny_mlm imported" || cat "$D/setup.log"

# snapshot QFUNC DB: everything that must survive a move, one text blob.
snapshot() {
    local f=$1 db=$2
    $f "$db" -c "SELECT id, name, version, base, labels, has_mlm, config, tokenizer_config, md5(vocab), size,
                        params, metrics, created_at, deployed_at FROM bft.models ORDER BY id" \
             -c "SELECT name, version, deployed FROM bft.model_list" \
             -c "SELECT name, version, md5(lo_get(weights)) FROM bft.models ORDER BY id" \
             -c "SELECT (SELECT count(*) FROM pg_largeobject_metadata), (SELECT count(*) FROM bft.models)" \
             -c "SELECT id, bft_predict_proba(body, 'topics'), bft_predict_proba(body, 'tiny'), bft_classify(body)
                   FROM docs ORDER BY id" \
             -c "SELECT * FROM bft_fill_mask('central bank [MASK] interest rates', 5, 'topics')" \
             -c "SELECT * FROM bft_fill_mask('the [MASK] sat on the mat', 5, 'tiny_mlm')" \
             -c "SELECT * FROM bft_tokenize('Team wins the Championship!', 'tiny')" 2>&1
}
S0=$(snapshot qa $SRC)
check '[ -n "$S0" ] && ! echo "$S0" | grep -q ERROR' "source snapshot (rows, weights md5, probabilities, fill-mask, tokens)"
same_as_source() {  # same_as_source LABEL SNAPSHOT
    if [ "$2" = "$S0" ]; then ok "$1"; else
        fail "$1"; diff <(echo "$S0") <(echo "$2") | head -n 10 | cut -c1-200; fi
}

# ---- pg_dump / pg_restore ------------------------------------------------------
pg_dump -h "$AH" -p "$AP" -U "$AU" -Fc -f "$D/src.dump" $SRC 2>"$D/dump.err"
check '[ -s "$D/src.dump" ] && [ ! -s "$D/dump.err" ]' "pg_dump -Fc"
nblob=$(pg_restore -l "$D/src.dump" | grep -cE " (BLOB|LARGE OBJECT) ")
check '[ "$nblob" -ge 4 ]' "the custom dump lists the large objects ($nblob)"
pg_dump -h "$AH" -p "$AP" -U "$AU" -Fp -f "$D/src.sql" $SRC 2>>"$D/dump.err"
check '[ -s "$D/src.sql" ] && grep -q "lo_open" "$D/src.sql"' "pg_dump -Fp (plain, with large-object data)"

# same cluster, new database
psql -X -q -h "$AH" -p "$AP" -U "$AU" -d postgres -c "CREATE DATABASE $COPY"
pg_restore -h "$AH" -p "$AP" -U "$AU" --exit-on-error -d $COPY "$D/src.dump" >"$D/restore1.log" 2>&1; rc=$?
check '[ $rc -eq 0 ]' "pg_restore into a new database on the same cluster" || cat "$D/restore1.log"
same_as_source "same cluster: restored models classify identically" "$(snapshot qa $COPY)"

# second cluster
if ! cluster_start "$B" "$BP" >"$D/b.start.log" 2>&1; then cat "$D/b.start.log"; fail "second cluster starts"; fi
export PGHOST=$AH PGPORT=$AP PGUSER=$AU   # cluster_start exported B's; keep A's as the default
psql -X -q -h "$B" -p "$BP" -U postgres -d postgres -c "CREATE DATABASE fromcustom" -c "CREATE DATABASE fromplain" \
    -c "CREATE DATABASE xfer"
pg_restore -h "$B" -p "$BP" -U postgres --exit-on-error -d fromcustom "$D/src.dump" >"$D/restore2.log" 2>&1; rc=$?
check '[ $rc -eq 0 ]' "pg_restore -Fc into a second cluster" || cat "$D/restore2.log"
same_as_source "second cluster, custom format: restored models classify identically" "$(snapshot qb fromcustom)"
qb fromplain -f "$D/src.sql" >"$D/restore3.log" 2>&1; rc=$?
check '[ $rc -eq 0 ]' "plain dump restored with psql into a second cluster" || tail -n 5 "$D/restore3.log"
same_as_source "second cluster, plain format: restored models classify identically" "$(snapshot qb fromplain)"

# Partial dumps: -e bft -t docs needs -b for the weights; without them the
# rows come back weightless and classification says so (42704), no crash.
psql -X -q -h "$B" -p "$BP" -U postgres -d postgres -c "CREATE DATABASE partial" -c "CREATE DATABASE noblobs"
pg_dump -h "$AH" -p "$AP" -U "$AU" -e bft -t docs -b -Fc $SRC 2>>"$D/dump.err" \
    | pg_restore -h "$B" -p "$BP" -U postgres --exit-on-error -d partial >>"$D/restore4.log" 2>&1
same_as_source "pg_dump -e bft -t docs -b (partial, with large objects): identical" "$(snapshot qb partial)"
pg_dump -h "$AH" -p "$AP" -U "$AU" -B -Fc $SRC 2>>"$D/dump.err" \
    | pg_restore -h "$B" -p "$BP" -U postgres --exit-on-error -d noblobs >>"$D/restore5.log" 2>&1
out=$(psql -X -q -t -A -v VERBOSITY=verbose -h "$B" -p "$BP" -U postgres -d noblobs -c "SELECT bft_classify('x', 'topics')" 2>&1)
check 'echo "$out" | grep -q "ERROR:  42704: weights of model \"topics\" (large object [0-9]*) do not exist" && [ "$(qb noblobs -c "SELECT 1")" = 1 ]' \
    "pg_dump -B (no large objects): a clear 42704 error naming the missing weights"

# A session that cached a model before the database's models were replaced
# (DROP/CREATE EXTENSION and a new training, as before restoring another dump
# into it): model ids start again at 1, yet its next statement uses the new model.
cat >"$D/replace.sh" <<STEP
psql -X -q -t -A -v ON_ERROR_STOP=1 -h "$B" -p "$BP" -U postgres -d fromplain -c "SET client_min_messages = warning" \\
  -c "DROP EXTENSION bft CASCADE" -c "CREATE EXTENSION bft" \\
  -c "SELECT version FROM bft_train('docs', 'body', 'label', epochs => 15, model => 'topics', seed => 7, batch_size => 8,
      learning_rate => 3e-3, max_length => 32, architecture => '\$1')" -c "SELECT 'id:' || id FROM bft.models"
STEP
stale=$(qb fromplain 2>&1 <<SQL
SELECT 'before', bft_predict_proba(body, 'topics') FROM docs WHERE id = 1;
\\! bash $D/replace.sh '$ARCH'
SELECT 'after', bft_predict_proba(body, 'topics') FROM docs WHERE id = 1;
SQL
)
fresh=$(qb fromplain -c "SELECT 'after', bft_predict_proba(body, 'topics') FROM docs WHERE id = 1")
echo "$stale" | sed "s/^/    /"
check '[ "$(echo "$stale" | grep -c "^id:1$")" = 1 ] && [ "$(echo "$stale" | grep "^after")" = "$fresh" ] && [ "$(echo "$stale" | grep "^before" | cut -d"|" -f2)" != "$(echo "$fresh" | cut -d"|" -f2)" ]' \
    "a long-lived session notices that model id 1 is a different model after DROP/CREATE EXTENSION"

# the restored database keeps working: a next version, and drops unlink large objects
out=$(qb fromcustom -c "SET client_min_messages = warning" -c "SELECT version FROM bft_train('docs', 'body', 'label',
        epochs => 2, model => 'topics', seed => 3, batch_size => 8, max_length => 32, architecture => '$ARCH')" \
      -c "SELECT bft_drop_model('tiny')" \
      -c "SELECT (SELECT count(*) FROM bft.models) || ' ' || (SELECT count(*) FROM pg_largeobject_metadata)
                 || ' ' || (SELECT max(id) FROM bft.models)" 2>&1)
check '[ "$(echo "$out" | tr "\n" " ")" = "3 1 5 5 6 " ]' "restored database trains version 3 (id 6) and bft_drop_model unlinks ($(echo $out))"

# ---- export on one cluster, import on another ---------------------------------
PROBA="SELECT id, bft_predict_proba(body, '%s') FROM docs ORDER BY id"
src_topics=$(qa $SRC -c "$(printf "$PROBA" topics)")
qb xfer -c "CREATE EXTENSION bft" -c "CREATE TABLE docs (id int, body text, label text)" >/dev/null
qa $SRC -c "COPY docs TO STDOUT" | qb xfer -c "COPY docs FROM STDIN"
check '[ "$(qa $SRC -c "SELECT bft_export_model('\''topics'\'', '\''$D/export_topics'\'')")" = 1 ]' \
    "bft_export_model writes the deployed version (1) to a server directory"
qa $SRC -c "SELECT bft_export_model('tiny_mlm', '$D/export_mlm')" >/dev/null
qb xfer -c "SELECT version FROM bft_import_model('topics', '$D/export_topics')" \
        -c "SELECT version FROM bft_import_model('tiny_mlm', '$D/export_mlm')" >/dev/null
check '[ -n "$src_topics" ] && [ "$(qb xfer -c "$(printf "$PROBA" topics)")" = "$src_topics" ]' \
    "bft_import_model(name, directory) on the second cluster: identical probabilities"
FM="SELECT * FROM bft_fill_mask('the [MASK] sat on the mat', 5, 'tiny_mlm')"
check '[ "$(qb xfer -c "$FM")" = "$(qa $SRC -c "$FM")" ]' "exported/imported MLM model: identical fill-mask"

# client side: \lo_export + the row's config and vocabulary, then four psql lines
ROW="FROM bft.models WHERE name = 'topics' ORDER BY deployed_at DESC NULLS LAST, version DESC LIMIT 1"
lo_export_files() {   # lo_export_files MODEL DIR: what a client can do with psql alone
    local row="FROM bft.models WHERE name = '$1' ORDER BY deployed_at DESC NULLS LAST, version DESC LIMIT 1"
    mkdir -p "$2"
    qa $SRC >/dev/null <<SQL
SELECT bft_copy_weights('$1') AS w \\gset
\\lo_export :w '$2/model.safetensors'
\\lo_unlink :w
SQL
    qa $SRC -c "SELECT config $row" >"$2/config.json"
    qa $SRC -c "SELECT vocab $row" | head -c -1 >"$2/vocab.txt"   # psql adds a newline after the value
    qa $SRC -c "SELECT tokenizer_config $row" >"$2/tokenizer_config.json"
}
lo_export_files topics "$D/lo"
lo_export_files cased "$D/lo_cased"
check '[ -s "$D/lo/model.safetensors" ] && [ "$(stat -c %s "$D/lo/model.safetensors")" = "$(qa $SRC -c "SELECT size $ROW")" ]' \
    "\\lo_export of the weights gives the stored safetensors bytes"
cat >"$D/lo_import.sql" <<SQL
\\lo_import '$D/lo/model.safetensors'
\\set config \`cat '$D/lo/config.json'\`
\\set vocab \`cat '$D/lo/vocab.txt'\`
SELECT version FROM bft_import_model('topics_lo', :'config', :'vocab', :LASTOID);
\\lo_unlink :LASTOID
-- a cased model also needs its tokenizer_config (the default lower-cases, as Hugging Face)
\\lo_import '$D/lo_cased/model.safetensors'
\\set config \`cat '$D/lo_cased/config.json'\`
\\set vocab \`cat '$D/lo_cased/vocab.txt'\`
\\set tokcfg \`cat '$D/lo_cased/tokenizer_config.json'\`
SELECT version FROM bft_import_model('cased', :'config', :'vocab', :LASTOID, :'tokcfg');
SELECT version FROM bft_import_model('cased_no_tokcfg', :'config', :'vocab', :LASTOID);
\\lo_unlink :LASTOID
SQL
qb xfer -f "$D/lo_import.sql" >"$D/lo_import.log" 2>&1; rc=$?
check '[ $rc -eq 0 ]' "the four psql lines import the model on the second cluster" || cat "$D/lo_import.log"
check '[ "$(qb xfer -c "$(printf "$PROBA" topics_lo)")" = "$src_topics" ]' \
    "\\lo_export -> \\lo_import model: identical probabilities"
TOK="SELECT string_agg(token, ' ') FROM bft_tokenize('Team WINS the Final', '%s')"
check '[ "$(qb xfer -c "$(printf "$TOK" cased)")" = "$(qa $SRC -c "$(printf "$TOK" cased)")" ] && [ "$(qb xfer -c "$(printf "$PROBA" cased)")" = "$(qa $SRC -c "$(printf "$PROBA" cased)")" ]' \
    "cased model with its tokenizer_config (5th argument): identical tokens and probabilities"
check '[ "$(qb xfer -c "$(printf "$TOK" cased_no_tokcfg)")" != "$(qa $SRC -c "$(printf "$TOK" cased)")" ]' \
    "without the tokenizer_config a cased model lower-cases (the Hugging Face default), as documented"
check '[ "$(qb xfer -c "SELECT count(*) FROM pg_largeobject_metadata")" = 5 ]' \
    "the uploaded large objects were unlinked; the stored copies remain (5)"
qb xfer -c "SELECT version FROM bft_import_model('topics_lodir', '$D/lo')"  >/dev/null
check '[ "$(qb xfer -c "$(printf "$PROBA" topics_lodir)")" = "$src_topics" ]' \
    "the \\lo_export'ed files as a directory: bft_import_model(name, directory) classifies identically"

echo "RESULT: $PASS passed, $FAIL failed"
[ "$FAIL" -eq 0 ]
