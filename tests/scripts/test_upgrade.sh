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
#  - the updated database trains a new version;
#  - bft_train/bft_train_async, replaced by functions with more arguments,
#    keep the EXECUTE granted to a role under 0.1.0;
#  - weights a non-superuser trained under 0.1.0 (owned by that role) become
#    the extension owner's and classify as before; a row that role wrote by
#    hand naming another role's large object (0.1.0 allowed it) gets a
#    WARNING, is refused when classifying (42501) and its object survives
#    bft_drop_model; rows sharing one object stop the update with an error.
#
# Needs PGHOST/PGPORT/PGUSER (superuser) of a running cluster with bft
# installed.  Prints "RESULT: P passed, F failed".
set -uo pipefail
cd "$(dirname "$0")/../.." || exit 1
source tests/scripts/ops_lib.sh
set +e
OLD=bft_up_old; NEW=bft_up_new; BAD=bft_up_bad; SEC=bft_up_sec; DUP=bft_up_dup
TMP=$(mktemp -d /tmp/bft-upgrade.XXXXXX)
cleanup() {
    psql -X -q -d postgres -c "SET client_min_messages = warning" -c "DROP DATABASE IF EXISTS $OLD" \
        -c "DROP DATABASE IF EXISTS $NEW" -c "DROP DATABASE IF EXISTS $BAD" -c "DROP DATABASE IF EXISTS $SEC" \
        -c "DROP DATABASE IF EXISTS $DUP" -c "DROP ROLE IF EXISTS bft_up_trainer" \
        -c "DROP ROLE IF EXISTS bft_up_victim" >/dev/null 2>&1
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

# 0.1.0 weights owned by a trainer, and a row it forged by hand.
psql -X -q -d postgres -c "SET client_min_messages = warning" -c "DROP DATABASE IF EXISTS $SEC" \
    -c "DROP DATABASE IF EXISTS $DUP" -c "DROP ROLE IF EXISTS bft_up_trainer" -c "DROP ROLE IF EXISTS bft_up_victim" \
    -c "CREATE DATABASE $SEC" -c "CREATE DATABASE $DUP" -c "CREATE ROLE bft_up_trainer LOGIN" \
    -c "CREATE ROLE bft_up_victim LOGIN" >/dev/null
DB=$SEC
psql -X -q -v ON_ERROR_STOP=1 -d $SEC >"$TMP/sec.log" 2>&1 <<SQL
SET client_min_messages = warning;
CREATE EXTENSION bft VERSION '0.1.0';
CREATE TABLE docs AS SELECT * FROM (VALUES ('oil prices fall', 'markets'), ('team wins the final', 'sports')) v(body, label),
       generate_series(1, 10);
GRANT SELECT ON docs TO bft_up_trainer;
GRANT SELECT, INSERT, DELETE ON bft.models TO bft_up_trainer;
GRANT USAGE ON SEQUENCE bft.models_id_seq TO bft_up_trainer;
GRANT EXECUTE ON FUNCTION bft_train, bft_train_async TO bft_up_trainer;
GRANT CREATE ON SCHEMA public TO bft_up_victim;
SET SESSION AUTHORIZATION bft_up_victim;
CREATE TABLE victim AS SELECT lo_from_bytea(0, convert_to('VICTIM-DATA', 'UTF8')) AS o;
GRANT SELECT ON victim TO bft_up_trainer;
SET SESSION AUTHORIZATION bft_up_trainer;
SELECT version FROM bft_train('docs', 'body', 'label', 5, model => 'mine', mlm_epochs => 0, max_length => 32, architecture => '$ARCH');
INSERT INTO bft.models (name, version, config, vocab, weights, labels)
SELECT 'forged', 1, config, vocab, (SELECT o FROM victim), labels FROM bft.models WHERE name = 'mine';
RESET SESSION AUTHORIZATION;
-- the 0.1.0 library created weights as the training role (this one creates
-- them as the extension's owner)
DO \$\$ BEGIN EXECUTE format('ALTER LARGE OBJECT %s OWNER TO bft_up_trainer',
                             (SELECT weights FROM bft.models WHERE name = 'mine')); END \$\$;
SQL
rc=$?
[ $rc -eq 0 ] || cat "$TMP/sec.log"
check '[ $rc -eq 0 ] && [ "$(q "SELECT r.rolname FROM bft.models m JOIN pg_largeobject_metadata l ON l.oid = m.weights JOIN pg_roles r ON r.oid = l.lomowner WHERE m.name = '"'mine'"'")" = bft_up_trainer ]' \
    "0.1.0: a trainer's weights belong to the trainer, and it could write a row naming another role's object"
before=$(q "SELECT bft_predict_proba('oil prices fall', 'mine')")
q "ALTER EXTENSION bft UPDATE" >"$TMP/sec_update.log" 2>&1
sed 's/^/    /' "$TMP/sec_update.log"
check 'grep -q "WARNING:  model \"forged\" version 1: large object [0-9]* belongs to bft_up_victim, not to its creator bft_up_trainer" "$TMP/sec_update.log" && [ "$(q "SELECT extversion FROM pg_extension WHERE extname = '"'bft'"'")" = "$DEFAULT" ]' \
    "the update warns about the row naming another role's object"
check '[ "$(q "SELECT r.rolname FROM bft.models m JOIN pg_largeobject_metadata l ON l.oid = m.weights JOIN pg_roles r ON r.oid = l.lomowner WHERE m.name = '"'mine'"'")" = postgres ] && [ "$(q "SELECT bft_predict_proba('"'oil prices fall'"', '"'mine'"')")" = "$before" ]' \
    "the trainer's weights now belong to the extension owner and classify as before"
check '[ "$(q "SELECT string_agg(p.proname || '"'='"' || has_function_privilege('"'bft_up_trainer'"', p.oid, '"'EXECUTE'"') || '"'/'"' || has_function_privilege('"'bft_up_victim'"', p.oid, '"'EXECUTE'"'), '"','"' ORDER BY p.proname) FROM pg_proc p WHERE p.proname IN ('"'bft_train'"', '"'bft_train_async'"')")" = "bft_train=true/false,bft_train_async=true/false" ]' \
    "bft_train and bft_train_async (new signatures) keep the EXECUTE granted under 0.1.0, not PUBLIC's"
out=$(q "SELECT bft_classify('x', 'forged')")
check 'echo "$out" | grep -q "do not belong to the owner of extension bft" && [ "$(q "SELECT convert_from(lo_get(o), '"'UTF8'"') FROM victim")" = VICTIM-DATA ]' \
    "the forged row is refused when classifying; the victim's object is untouched"
q "SELECT bft_drop_model('forged')" >/dev/null
check '[ "$(q "SELECT convert_from(lo_get(o), '"'UTF8'"') FROM victim")" = VICTIM-DATA ] && [ "$(q "SELECT count(*) FROM bft.models")" = 1 ]' \
    "dropping the forged row leaves the victim's object alone"
DB=$DUP
q "CREATE EXTENSION bft VERSION '0.1.0'" >/dev/null
q "SET client_min_messages = warning; CREATE TABLE docs AS SELECT * FROM (VALUES ('oil prices fall', 'markets'), ('team wins', 'sports')) v(body, label), generate_series(1, 10);
   SELECT version FROM bft_train('docs', 'body', 'label', 1, model => 'a', mlm_epochs => 0, max_length => 32, architecture => '$ARCH');
   INSERT INTO bft.models (name, version, config, vocab, weights) SELECT 'b', 1, config, vocab, weights FROM bft.models" >/dev/null
out=$(q "ALTER EXTENSION bft UPDATE")
check 'echo "$out" | grep -q "rows .* name the same large object" && [ "$(q "SELECT extversion FROM pg_extension WHERE extname = '"'bft'"'")" = 0.1.0 ]' \
    "rows sharing one large object stop the update with an error naming them (still 0.1.0)"

echo "RESULT: $PASS passed, $FAIL failed"
[ "$FAIL" -eq 0 ]
