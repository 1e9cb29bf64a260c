#!/usr/bin/env bash
# test_failed_trainings: many failed and cancelled trainings in ONE backend
# must not grow its memory: engine objects (models with gradients and AdamW
# state, tokenizers, vocabulary trainers, serialised weights) are freed on
# every error path — statement_timeout in the middle of training, an error
# when the version is stored (a trigger on bft.models), errors caught in a
# PL/pgSQL exception block (subtransaction), bad data, corrupt weights.
# Memory is read from the backend itself: VmRSS in /proc/self/status and
# the total of pg_backend_memory_contexts.
#
# Needs PGHOST/PGPORT/PGUSER (superuser) of a running cluster with bft.
set -uo pipefail
DB=bft_failed
N=${BFT_FAILED_N:-10}
W=${BFT_FAILED_WARMUP:-6}
PASS=0; FAIL=0
ok()   { echo "ok   - $*"; PASS=$((PASS + 1)); }
fail() { echo "FAIL - $*"; FAIL=$((FAIL + 1)); }
check() { if eval "$1"; then ok "$2"; else fail "$2"; fi; }
TMPF="${BFT_TMP:-/tmp}/failed_trainings.$$.sql"
LOG="${BFT_TMP:-/tmp}/failed_trainings.$$.log"

psql -X -q -d postgres -c "SET client_min_messages = warning" -c "DROP DATABASE IF EXISTS $DB" \
    -c "CREATE DATABASE $DB" || { echo "RESULT: 0 passed, 1 failed"; exit 1; }
psql -X -q -d "$DB" <<'SQL'
CREATE EXTENSION bft;
CREATE TABLE big AS
  SELECT md5(i::text) || ' ' || (ARRAY['stocks rally','bank cuts rates','oil prices fall'])[1 + i % 3] AS text,
         i % 3 AS label FROM generate_series(1, 3000) i;
CREATE TABLE small AS SELECT text, label FROM big LIMIT 60;
CREATE TABLE one_class AS SELECT text, 1 AS label FROM big LIMIT 20;
-- storing a version named 'fail_late' fails after training finished
CREATE FUNCTION fail_late() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.name = 'fail_late' THEN RAISE EXCEPTION 'refusing to store %', NEW.name; END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER fail_late BEFORE INSERT ON bft.models FOR EACH ROW EXECUTE FUNCTION fail_late();
-- a model with corrupt weights
SET client_min_messages = warning;
SELECT version FROM bft_train('small', 'text', 'label', 1, model => 'corrupt',
  mlm_epochs => 0, architecture => '{"hidden_size": 16, "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 32, "vocab_size": 200}');
SELECT lo_put(weights, 0, '\xffffffffffffffff'::bytea) FROM bft.models WHERE name = 'corrupt';
CREATE FUNCTION try_late() RETURNS text LANGUAGE plpgsql AS $$
BEGIN
    PERFORM bft_train('small', 'text', 'label', 1, model => 'fail_late', mlm_epochs => 0);
    RETURN 'ok';
EXCEPTION WHEN OTHERS THEN
    RETURN SQLSTATE;
END $$;
CREATE TABLE mem (phase text, rss_kb bigint, ctx_bytes bigint);
SQL

round() {
    cat <<'SQL'
SET statement_timeout = '1500ms';
SELECT * FROM bft_train('big', 'text', 'label', 50, max_length => 64, model => 'timeout', mlm_epochs => 0);
RESET statement_timeout;
SELECT * FROM bft_train('small', 'text', 'label', 1, model => 'fail_late', mlm_epochs => 0);
SELECT try_late();
SELECT * FROM bft_train('one_class', 'text', 'label', 1);
SELECT bft_classify('stocks rally', 'corrupt');
SELECT * FROM bft_train('small', 'text', 'label', 1, base => 'corrupt');
SQL
}
measure() {
    echo "INSERT INTO mem SELECT '$1', (regexp_match(pg_read_file('/proc/self/status'), 'VmRSS:\s+(\d+)'))[1]::bigint, (SELECT sum(total_bytes) FROM pg_backend_memory_contexts);"
}
{
    echo "SET client_min_messages = warning;"
    # warm-up: the allocator and OpenBLAS reach their steady state
    for _ in $(seq 1 "$W"); do round; done
    measure warm
    for _ in $(seq 1 "$N"); do round; done
    measure after
    echo "SET client_min_messages = notice;"
    echo "SELECT phase, rss_kb, ctx_bytes FROM mem ORDER BY phase DESC;"
    echo "SELECT (SELECT rss_kb FROM mem WHERE phase = 'after') - (SELECT rss_kb FROM mem WHERE phase = 'warm') AS rss_growth_kb, (SELECT ctx_bytes FROM mem WHERE phase = 'after') - (SELECT ctx_bytes FROM mem WHERE phase = 'warm') AS ctx_growth_bytes;"
} >"$TMPF"

t0=$(date +%s)
psql -X -d "$DB" -f "$TMPF" >"$LOG" 2>&1
t1=$(date +%s)
echo "$((N + W)) rounds of 6 failing statements (timeout mid-training, error at store, same in a subtransaction, one class, corrupt weights x2) in one backend: $((t1 - t0)) s"
grep -A4 "phase | rss_kb" "$LOG"
grep -A3 "rss_growth_kb" "$LOG"

nto=$(grep -c "canceling statement due to statement timeout" "$LOG")
nlate=$(grep -c "refusing to store fail_late" "$LOG")
ncls=$(grep -c "have the same label" "$LOG")
ncorrupt=$(grep -c "could not load model \"corrupt\"" "$LOG")
nsub=$(grep -cx " P0001" "$LOG")
check '[ "$nto" -eq $((N + W)) ]' "every timeout cancelled a training ($nto)"
check '[ "$nlate" -eq $((N + W)) ]' "every late failure happened at store time ($nlate)"
check '[ "$nsub" -eq $((N + W)) ]' "every subtransaction failure was caught ($nsub)"
check '[ "$ncls" -eq $((N + W)) ]' "every one-class training failed ($ncls)"
check '[ "$ncorrupt" -eq $((2 * (N + W))) ]' "every corrupt-weights load failed ($ncorrupt)"
growth=$(psql -X -q -t -A -d "$DB" -c "SELECT (SELECT rss_kb FROM mem WHERE phase = 'after') - (SELECT rss_kb FROM mem WHERE phase = 'warm')")
ctx=$(psql -X -q -t -A -d "$DB" -c "SELECT (SELECT ctx_bytes FROM mem WHERE phase = 'after') - (SELECT ctx_bytes FROM mem WHERE phase = 'warm')")
# One leaked model (a failure at store time) was measured at ~60 MB per round;
# a leak of 0.5 MB per failing statement would add 30 MB over 10 rounds.
# Without a leak the RSS varies by a few MB (allocator and OpenBLAS state).
check '[ -n "$growth" ] && [ "$growth" -lt 32768 ]' "backend RSS grew by less than 32 MB over $N rounds (${growth:-?} kB)"
check '[ -n "$ctx" ] && [ "$ctx" -lt 262144 ]' "memory contexts grew by less than 256 kB (${ctx:-?} bytes)"
check '[ "$(psql -X -q -t -A -d "$DB" -c "SELECT count(*) FROM bft.models")" = 1 ]' "only the setup model is stored"
check '[ "$(psql -X -q -t -A -d "$DB" -c "SELECT count(*) FROM pg_largeobject_metadata")" = 1 ]' "no stray large objects"

psql -X -q -d postgres -c "DROP DATABASE $DB"
rm -f "$TMPF"
echo "RESULT: $PASS passed, $FAIL failed"
[ "$FAIL" -eq 0 ]
