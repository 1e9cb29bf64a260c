#!/usr/bin/env bash
# test_readonly: the classification path performs no writes at all.
#
#  - In an ordinary read-write transaction of a fresh backend (cold model
#    cache), each of bft_classify, bft_predict, bft_predict_proba,
#    bft_classify_batch, bft_fill_mask, bft_tokenize, bft_evaluate, bft_embed
#    and bft_embed_batch leaves
#    no transaction id assigned (any row, large-object or catalog write would
#    assign one), and EXPLAIN (ANALYZE, WAL) of the statement, in another
#    fresh backend, counts zero WAL records in every plan node;
#  - the same functions run in BEGIN READ ONLY transactions and under
#    default_transaction_read_only = on, with the same results as read-write;
#  - bft_train, bft_import_model, bft_deploy and bft_drop_model are refused
#    there with SQLSTATE 25006, and nothing changes.
#
# Needs PGHOST/PGPORT/PGUSER of a running cluster with bft installed
# (tests/run_all.sh exports them).  Prints "RESULT: P passed, F failed".
set -uo pipefail
cd "$(dirname "$0")/../.." || exit 1
DB=bft_readonly
PASS=0; FAIL=0
ok()   { echo "ok   - $*"; PASS=$((PASS + 1)); }
fail() { echo "FAIL - $*"; FAIL=$((FAIL + 1)); }
check() { if eval "$1"; then ok "$2"; else fail "$2"; fi; }
q() { psql -X -q -t -A -v ON_ERROR_STOP=1 -d "$DB" "$@"; }

psql -X -q -d postgres -c "SET client_min_messages = warning" -c "DROP DATABASE IF EXISTS $DB" \
    -c "CREATE DATABASE $DB" || { echo "RESULT: 0 passed, 1 failed"; exit 1; }
q -c "CREATE EXTENSION bft" -c "CREATE TABLE docs AS
    SELECT i AS id,
           (ARRAY['central bank raises interest rates', 'shares rally as profit beats forecast',
                  'team wins the championship final'])[1 + i % 3]
           || ' ' || (ARRAY['today', 'again', 'this week', 'sharply'])[1 + i % 4] AS body,
           (ARRAY['economy', 'markets', 'sports'])[1 + i % 3] AS label
      FROM generate_series(1, 48) i" >/dev/null
v=$(q -c "SET client_min_messages = warning" -c "SELECT version FROM bft_train('docs', 'body', 'label',
        epochs => 10, model => 'topics', mlm_epochs => 1, batch_size => 8, learning_rate => 2e-3, max_length => 32,
        architecture => '{\"hidden_size\":32,\"num_hidden_layers\":1,\"num_attention_heads\":2,\"intermediate_size\":64,\"vocab_size\":200,\"max_position_embeddings\":64}')")
check '[ "$v" = 1 ]' "model trained (version ${v:-?})"

# name|query pairs: every function of the classification path.
QUERIES=(
 "bft_classify|SELECT string_agg(bft_classify(body, 'topics'), ',' ORDER BY id) FROM docs"
 "bft_classify (default model)|SELECT string_agg(bft_classify(body), ',' ORDER BY id) FROM docs"
 "bft_predict|SELECT label, label_id, score FROM bft_predict('central bank raises rates', 'topics', 3)"
 "bft_predict_proba|SELECT string_agg(bft_predict_proba(body, 'topics')::text, ';' ORDER BY id) FROM docs"
 "bft_classify_batch|SELECT bft_classify_batch(array_agg(body ORDER BY id), 'topics') FROM docs"
 "bft_fill_mask|SELECT token, token_id, score FROM bft_fill_mask('central bank [MASK] interest rates', 5, 'topics')"
 "bft_tokenize|SELECT token, token_id FROM bft_tokenize('Team wins the Championship!', 'topics')"
 "bft_evaluate|SELECT accuracy, macro_f1, rows, report FROM bft_evaluate('topics', 'docs', 'body', 'label')"
 "bft_embed|SELECT string_agg(bft_embed(body, 'topics')::text, ';' ORDER BY id) FROM docs"
 "bft_embed_batch|SELECT idx, embedding FROM bft_embed_batch((SELECT array_agg(body ORDER BY id) FROM docs), 'topics', 'cls+normalize')"
)

# 1. Read-write transaction, fresh backend (the model is loaded here): no xid
#    assigned, no WAL record written by the statement.
declare -A RW
for entry in "${QUERIES[@]}"; do
    name=${entry%%|*}; sql=${entry#*|}
    out=$(q -c "BEGIN" -c "$sql" -c "SELECT 'xid:' || coalesce(pg_current_xact_id_if_assigned()::text, 'none')" \
            -c "COMMIT" 2>&1)
    RW[$name]=$(echo "$out" | sed '$d')
    if [ "$(echo "$out" | tail -n 1)" = "xid:none" ] && ! echo "$out" | grep -q ERROR && [ -n "${RW[$name]}" ]; then
        ok "$name: no transaction id assigned in a read-write transaction"
    else fail "$name: no transaction id assigned"; echo "  got: $(echo "$out" | tail -n 3)"; fi
    wal=$(q -c "EXPLAIN (ANALYZE, WAL, FORMAT JSON, COSTS OFF, TIMING OFF) $sql" 2>&1 | grep -o '"WAL Records": [0-9]*')
    check '[ -n "$wal" ] && ! echo "$wal" | grep -qv ": 0$"' "$name: EXPLAIN (ANALYZE, WAL): 0 WAL records in all $(echo "$wal" | wc -l) plan nodes"
done

# Controls: both methods do see a write (a large object created and rolled back).
out=$(q -c "BEGIN" -c "SELECT lo_from_bytea(0, 'x') > 0" -c "SELECT pg_current_xact_id_if_assigned() IS NOT NULL" -c "ROLLBACK")
check '[ "$(echo "$out" | tail -n 1)" = t ]' "control: a large-object write does assign a transaction id"
wal=$(q -c "BEGIN" -c "EXPLAIN (ANALYZE, WAL, FORMAT JSON, COSTS OFF, TIMING OFF) SELECT lo_from_bytea(0, 'x')" -c "ROLLBACK" | grep -o '"WAL Records": [0-9]*')
check 'echo "$wal" | grep -qv ": 0$"' "control: EXPLAIN (ANALYZE, WAL) counts the records of a large-object write"

# 2. BEGIN READ ONLY, fresh backend: same results.
for entry in "${QUERIES[@]}"; do
    name=${entry%%|*}; sql=${entry#*|}
    out=$(q -c "BEGIN READ ONLY" -c "$sql" -c "COMMIT" 2>&1)
    check '[ -n "$out" ] && [ "$out" = "${RW[$name]}" ]' "$name: works in BEGIN READ ONLY, same result"
done

# 3. default_transaction_read_only = on for the database.
q -c "ALTER DATABASE $DB SET default_transaction_read_only = on"
check '[ "$(q -c "SHOW default_transaction_read_only")" = on ]' "new sessions default to read-only"
for entry in "${QUERIES[@]}"; do
    name=${entry%%|*}; sql=${entry#*|}
    out=$(q -c "$sql" 2>&1)
    check '[ -n "$out" ] && [ "$out" = "${RW[$name]}" ]' "$name: works under default_transaction_read_only, same result"
done
# Parallel workers in a read-only session.
out=$(q -c "SET parallel_setup_cost = 0" -c "SET parallel_tuple_cost = 0" -c "SET min_parallel_table_scan_size = 0" \
        -c "SELECT string_agg(bft_classify(body, 'topics'), ',' ORDER BY id) FROM docs" 2>&1)
check '[ "$out" = "${RW[bft_classify]}" ]' "bft_classify in a parallel plan under read-only, same result"

refused() {  # refused NAME QUERY
    local out
    out=$(psql -X -q -t -A -v VERBOSITY=verbose -d "$DB" -c "$2" 2>&1)
    if echo "$out" | grep -q "ERROR:  25006"; then ok "$1 refused: $(echo "$out" | grep -m1 ERROR | cut -c1-90)"
    else fail "$1 refused with 25006"; echo "  got: $(echo "$out" | head -c 300)"; fi
}
refused "bft_train" "SELECT * FROM bft_train('docs', 'body', 'label', 1, model => 'x')"
refused "bft_import_model (directory)" "SELECT * FROM bft_import_model('x', '$PWD/tests/data/ckpt/tiny')"
refused "bft_deploy" "SELECT bft_deploy('topics', 1)"
refused "bft_drop_model" "SELECT bft_drop_model('topics')"
check '[ "$(q -c "SELECT count(*) || '\'' '\'' || (SELECT count(*) FROM pg_largeobject_metadata) FROM bft.models")" = "1 1" ]' \
    "nothing changed: one model, one large object"

psql -X -q -d postgres -c "DROP DATABASE $DB"
echo "RESULT: $PASS passed, $FAIL failed"
[ "$FAIL" -eq 0 ]
