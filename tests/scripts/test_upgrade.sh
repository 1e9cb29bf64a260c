#!/usr/bin/env bash
# test_upgrade: the upgrade chain.  A database created with bft 0.1.0 (the
# kept sql/bft--0.1.0.sql, served by the current bft.so as after a package
# upgrade) trains and imports models, is updated with ALTER EXTENSION bft
# UPDATE, and then:
#  - every old model classifies, predicts and fill-masks exactly as before;
#  - its catalog equals a fresh install of the default version: the schema
#    dumps (pg_dump --schema-only --binary-upgrade, which lists every member
#    object of the extension) differ only in OIDs;
#  - the comparison itself is shown to catch a difference (a changed
#    function in a scratch database is reported);
#  - the updated database trains a new version.
#
# Needs PGHOST/PGPORT/PGUSER (superuser) of a running cluster with bft
# installed.  Prints "RESULT: P passed, F failed".
set -uo pipefail
cd "$(dirname "$0")/../.." || exit 1
source tests/scripts/ops_lib.sh
set +e
OLD=bft_up_old; NEW=bft_up_new; BAD=bft_up_bad
TMP=$(mktemp -d /tmp/bft-upgrade.XXXXXX)
cleanup() {
    psql -X -q -d postgres -c "SET client_min_messages = warning" -c "DROP DATABASE IF EXISTS $OLD" \
        -c "DROP DATABASE IF EXISTS $NEW" -c "DROP DATABASE IF EXISTS $BAD" >/dev/null 2>&1
    rm -rf "$TMP"
}
[ -n "${BFT_KEEP:-}" ] || trap cleanup EXIT
DEFAULT=$(sed -nE "s/^default_version *= *'([^']+)'.*/\1/p" bft.control)

psql -X -q -d postgres -c "SET client_min_messages = warning" -c "DROP DATABASE IF EXISTS $OLD" \
    -c "DROP DATABASE IF EXISTS $NEW" -c "DROP DATABASE IF EXISTS $BAD" \
    -c "CREATE DATABASE $OLD" -c "CREATE DATABASE $NEW" -c "CREATE DATABASE $BAD" \
    || { echo "RESULT: 0 passed, 1 failed"; exit 1; }

DB=$OLD
ARCH='{"hidden_size":32,"num_hidden_layers":1,"num_attention_heads":2,"intermediate_size":64,"vocab_size":200,"max_position_embeddings":64}'
psql -X -q -v ON_ERROR_STOP=1 -d $OLD >"$TMP/setup.log" 2>&1 <<SQL
SET client_min_messages = warning;
CREATE EXTENSION bft VERSION '0.1.0';
CREATE TABLE docs AS
SELECT i AS id,
       (ARRAY['central bank raises interest rates', 'shares rally as profit beats forecast',
              'team wins the championship final', 'oil prices fall on weak demand'])[1 + i % 4]
       || ' ' || (ARRAY['today', 'again', 'this week', 'sharply', 'in march'])[1 + i % 5] AS body,
       (ARRAY['economy', 'markets', 'sports', 'markets'])[1 + i % 4] AS label
  FROM generate_series(1, 40) i;
SELECT version FROM bft_train('docs', 'body', 'label', 10, model => 'topics', seed => 1, mlm_epochs => 1,
       batch_size => 8, learning_rate => 2e-3, max_length => 32, architecture => '$ARCH');
SELECT version FROM bft_train('docs', 'body', 'label', 5, model => 'topics', seed => 2, mlm_epochs => 0,
       batch_size => 8, learning_rate => 3e-3, max_length => 32, architecture => '$ARCH', deploy => 'never');
SELECT version FROM bft_import_model('tiny', '$PWD/tests/data/ckpt/tiny');
SELECT version FROM bft_import_model('tiny_mlm', '$PWD/tests/data/ckpt/tiny_mlm');
SQL
rc=$?
check '[ $rc -eq 0 ] && [ "$(q "SELECT extversion FROM pg_extension WHERE extname = '"'bft'"'")" = 0.1.0 ]' \
    "CREATE EXTENSION bft VERSION '0.1.0' trains and imports models" || cat "$TMP/setup.log"

# Everything an old model answers, as one text blob.
answers() {
    q "SELECT string_agg(concat_ws('|', id, bft_classify(body, 'topics'), bft_predict_proba(body, 'topics'),
                                     bft_predict_proba(body, 'tiny'), bft_classify(body)), E'\n' ORDER BY id)
         FROM docs"
    q "SELECT string_agg(concat_ws('|', token, token_id, score), ',') FROM bft_fill_mask('the [MASK] sat on the mat', 5, 'tiny_mlm')"
    q "SELECT string_agg(concat_ws('|', token, token_id), ',') FROM bft_tokenize('Team wins the Championship!', 'tiny')"
    q "SELECT string_agg(concat_ws('|', name, version, deployed), ',') FROM bft.model_list"
}
A0=$(answers)
check '[ "$(echo "$A0" | grep -c "^[0-9]*|[a-z]*|{")" = 40 ] && ! echo "$A0" | grep -q ERROR' \
    "0.1.0: 40 rows classified, fill-mask and tokens answered"

q "ALTER EXTENSION bft UPDATE" >"$TMP/update.log"
check '[ ! -s "$TMP/update.log" ] && [ "$(q "SELECT extversion FROM pg_extension WHERE extname = '"'bft'"'")" = "$DEFAULT" ]' \
    "ALTER EXTENSION bft UPDATE reaches $DEFAULT" || cat "$TMP/update.log"
A1=$(answers)
if [ "$A1" = "$A0" ]; then ok "after the update every old model answers identically (classify, probabilities, fill-mask, tokens, list)"
else fail "old models answer differently after the update"; diff <(echo "$A0") <(echo "$A1") | head -n 10 | cut -c1-200; fi

DB=$NEW
q "CREATE EXTENSION bft" >"$TMP/fresh.log"
check '[ ! -s "$TMP/fresh.log" ] && [ "$(q "SELECT extversion FROM pg_extension WHERE extname = '"'bft'"'")" = "$DEFAULT" ]' \
    "fresh CREATE EXTENSION bft installs $DEFAULT" || cat "$TMP/fresh.log"

# schema DB: the schema dump without comments, blank lines, large objects,
# sequence positions and whatever names an OID, an xid or a restrict key
# (those differ between any two databases).
schema() {
    pg_dump --schema-only --binary-upgrade --no-blobs --exclude-table=public.docs -d "$1" \
        | grep -vE '^\\(un)?restrict |binary_upgrade_set_next_|^-- Name: |^-- Dependencies: |^SELECT pg_catalog.lo_create|^ALTER LARGE OBJECT |^SELECT pg_catalog.setval\(|^SET relfrozenxid|^WHERE oid = '"'"'[0-9]+'"'"';$' \
        | grep -vE '^(--.*)?$' \
        | sed -E "s/(binary_upgrade_create_empty_extension\('bft', '[^']*', [a-z]+, '[^']*', )'\{[0-9,]*\}'/\1'{…}'/"
}
schema $OLD >"$TMP/old.sql"; schema $NEW >"$TMP/new.sql"
check 'grep -q "CREATE FUNCTION public.bft_train(" "$TMP/new.sql" && grep -q "CREATE TABLE bft.models" "$TMP/new.sql"' \
    "the schema dump lists the extension's member objects"
if diff -u "$TMP/new.sql" "$TMP/old.sql" >"$TMP/schema.diff"; then
    ok "updated 0.1.0 and fresh $DEFAULT have the same catalog (schema dumps equal)"
else
    fail "updated 0.1.0 and fresh $DEFAULT differ (- fresh, + updated)"; head -n 40 "$TMP/schema.diff"
fi

# The comparison catches a difference: a fresh install with one function changed.
DB=$BAD
q "CREATE EXTENSION bft" >/dev/null
q "ALTER FUNCTION bft_classify(text, text) COST 7" >/dev/null
schema $BAD >"$TMP/bad.sql"
bad_diff=$(diff "$TMP/new.sql" "$TMP/bad.sql")
check '[ -n "$bad_diff" ] && echo "$bad_diff" | grep -q "COST 7"' "the schema comparison reports a changed function"

# The updated database keeps working: a new version trains and deploys.
DB=$OLD
v3=$(q "SELECT version FROM bft_train('docs', 'body', 'label', 3, model => 'topics', seed => 3, mlm_epochs => 0,
        batch_size => 8, max_length => 32, architecture => '$ARCH')")
label=$(q "SELECT bft_classify('oil prices fall', 'topics')")
check '[ "$v3" = 3 ] && echo "$label" | grep -qE "^(economy|markets|sports)$"' \
    "the updated database trains version 3 and classifies with it (got: $v3, $label)"

echo "RESULT: $PASS passed, $FAIL failed"
[ "$FAIL" -eq 0 ]
