#!/usr/bin/env bash
# test_jobs: background training with bft_train_async() — returns a job id at
# once, the job waits for the submitting transaction, runs as the submitting
# role, shows progress/state/error/version in bft.jobs, a failed job records
# its error, bft_cancel_job() stops a running job and a queued one, a rolled
# back submission never runs, quoting-hostile arguments stay data, other
# roles cannot see or cancel a job.  All of it first on the cluster given by
# PGHOST/PGPORT (bft NOT in shared_preload_libraries), then the basic cycle
# again on a second cluster started here with bft preloaded.
#
# Prints "RESULT: P passed, F failed" last; exits non-zero on failure.
set -uo pipefail
cd "$(dirname "$0")/../.."
source tests/scripts/cluster.sh # cluster_start/stop, poll
DB=bft_jobs
TMP="${BFT_TMP:-/tmp}"
export PGOPTIONS="-c client_min_messages=warning"
PASS=0; FAIL=0
ok()   { echo "ok   - $*"; PASS=$((PASS + 1)); }
fail() { echo "FAIL - $*"; FAIL=$((FAIL + 1)); }
check() { if eval "$1"; then ok "$2"; else fail "$2"; fi; }
q() { psql -X -q -t -A -d "$DB" -c "$1" 2>&1; }
qu() { local u="$1"; shift; psql -X -q -t -A -U "$u" -d "$DB" -c "$1" 2>&1; }
finish() { echo "RESULT: $PASS passed, $FAIL failed"; [ "$FAIL" -eq 0 ]; exit $?; }

ARCH='{"hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 64, "vocab_size": 200}'
# wait_state ID STATE SECONDS: poll bft.jobs until the job has that state.
wait_state() {
    local id="$1" want="$2" secs="$3" s i
    for i in $(seq 1 $((secs * 10))); do
        s=$(q "SELECT state FROM bft.jobs WHERE id = $id")
        [ "$s" = "$want" ] && return 0
        case "$s" in succeeded|failed|cancelled) [ "$s" != "$want" ] && return 1 ;; esac
        sleep 0.1
    done
    return 1
}

# no_worker: wait (at most 10 s) until no job worker is left in this cluster.
no_worker() {
    local i
    for i in $(seq 1 100); do
        [ "$(q "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'bft training job'")" = 0 ] && return 0
        sleep 0.1
    done
    return 1
}

setup_db() {
    psql -X -q -d postgres -c "SET client_min_messages = warning" -c "DROP DATABASE IF EXISTS $DB" \
        -c "CREATE DATABASE $DB" >/dev/null || return 1
    q "CREATE EXTENSION bft" >/dev/null
    q "CREATE TABLE h (t text, l text);
       INSERT INTO h SELECT (ARRAY['shares rally as profit beats forecast', 'stocks fall on weak earnings',
                                   'team wins the championship final', 'coach fired after losing season'])[1 + i % 4],
                            (ARRAY['markets', 'markets', 'sports', 'sports'])[1 + i % 4]
                       FROM generate_series(1, 40) i" >/dev/null
    q "ALTER DATABASE $DB SET bft.threads = 1" >/dev/null
}

# The basic cycle: submit → queued/running with progress → succeeded, version recorded.
basic_cycle() {
    local tag="$1" t0 t1 id row v
    t0=$(date +%s.%N)
    id=$(q "SELECT bft_train_async('h', 't', 'l', epochs => 4000, learning_rate => 2e-3, model => 'bg',
                                   architecture => '$ARCH')")
    t1=$(date +%s.%N)
    check "[[ '$id' =~ ^[0-9]+$ ]] && awk -v a=$t0 -v b=$t1 'BEGIN { exit !(b - a < 1.5) }'" \
        "$tag: bft_train_async returns a job id at once (id $id, $(awk -v a=$t0 -v b=$t1 'BEGIN { printf "%.2f", b - a }') s)"
    [[ "$id" =~ ^[0-9]+$ ]] || return
    row=$(poll 300 "SELECT state, phase, step, steps, percent IS NOT NULL FROM bft.jobs WHERE id = $id AND state = 'running' AND step > 0")
    echo "  running row: $row"
    # (a model from scratch first pre-trains on the column: phase mlm, then training)
    check "[[ '$row' == running\|training\|* || '$row' == running\|mlm\|* ]] && [[ '$row' == *\|t ]]" "$tag: bft.jobs shows the job running with progress (phase, step, percent: $row)"
    check "[ \"\$(q \"SELECT backend_type FROM pg_stat_activity WHERE pid = (SELECT pid FROM bft.jobs WHERE id = $id)\")\" = 'bft training job' ]" \
        "$tag: the job runs in a background worker (pg_stat_activity backend_type)"
    wait_state "$id" succeeded 120
    check "[ \"\$(q \"SELECT state FROM bft.jobs WHERE id = $id\")\" = succeeded ]" "$tag: the job succeeds"
    v=$(q "SELECT version FROM bft.jobs WHERE id = $id")
    check "[ -n '$v' ] && [ \"\$(q \"SELECT count(*) FROM bft.models WHERE name = 'bg' AND version = $v AND deployed_at IS NOT NULL\")\" = 1 ]" \
        "$tag: bft.jobs.version is the new, deployed version ($v)"
    check "[ \"\$(q \"SELECT (result->>'rows_used')::int = 40 AND (result->>'epochs')::int = 4000 AND error IS NULL AND finished_at >= started_at FROM bft.jobs WHERE id = $id\")\" = t ]" \
        "$tag: result row, timestamps, no error"
    check "[ \"\$(q \"SELECT bft_classify('team wins the championship final', 'bg') || ' ' || bft_classify('stocks fall on weak earnings', 'bg')\")\" = 'sports markets' ]" \
        "$tag: the job's model classifies"
}

setup_db || { echo "RESULT: 0 passed, 1 failed"; exit 1; }
echo "# cluster without bft in shared_preload_libraries: $(q 'SHOW shared_preload_libraries')"
basic_cycle "no preload"

# The job waits for the submitting transaction to commit.
out=$(psql -X -q -t -A -d "$DB" <<SQL 2>&1
BEGIN;
SELECT 'id=' || bft_train_async('h', 't', 'l', epochs => 50, model => 'waits', architecture => '$ARCH');
SELECT pg_sleep(1);
\! for i in \$(seq 1 100); do r=\$(psql -X -q -t -A -d $DB -c "SELECT 'during=' || wait_event_type || ':' || wait_event || ':' || (SELECT count(*) FROM bft.progress) FROM pg_stat_activity WHERE backend_type = 'bft training job'"); [ "\$r" = during=Lock:transactionid:0 ] && break; sleep 0.1; done; echo "\$r"
COMMIT;
SQL
)
id=$(echo "$out" | sed -n 's/^id=//p')
echo "  $out" | tr '\n' ' '; echo
check "echo '$out' | grep -q '^during=Lock:transactionid:0$'" "the job's worker waits on the submitting transaction (no training yet)"
wait_state "${id:-0}" succeeded 60
check "[ \"\$(q \"SELECT state FROM bft.jobs WHERE id = ${id:-0}\")\" = succeeded ]" "... and runs once it commits"

# A rolled-back submission never runs.
out=$(q "BEGIN; SELECT bft_train_async('h', 't', 'l', epochs => 5, model => 'rolled_back', architecture => '$ARCH'); ROLLBACK;")
no_worker
check "[ \"\$(q \"SELECT count(*) FROM bft.train_jobs WHERE model = 'rolled_back'\")|\$(q \"SELECT count(*) FROM bft.models WHERE name = 'rolled_back'\")|\$(q \"SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'bft training job'\")\" = '0|0|0' ]" \
    "a rolled-back submission leaves no job, no model and no worker"

# A failing job records its error text and leaves no model.
id=$(q "SELECT bft_train_async('h', 't', 'l', base => 'no_such_base', model => 'fails')")
wait_state "$id" failed 30
row=$(q "SELECT state || '|' || error FROM bft.jobs WHERE id = $id")
echo "  $row"
check "[[ '$row' == 'failed|model \"no_such_base\" does not exist'* ]]" "a failing job shows state failed and the error text"
check "[ \"\$(q \"SELECT count(*) FROM bft.models WHERE name = 'fails'\")\" = 0 ]" "... and leaves no model"

# train_precision reaches the job: 'fp32' trains in a session whose bft.cpu_precision
# ('int8') would refuse to train, and is what the model records.
id=$(q "SET bft.cpu_precision = 'int8'; SELECT bft_train_async('h', 't', 'l', epochs => 2, model => 'prec',
        architecture => '$ARCH', train_precision => 'fp32')" | tail -1)
wait_state "${id:-0}" succeeded 60
row=$(q "SELECT j.state || '|' || (m.params->>'precision') FROM bft.jobs j JOIN bft.models m ON m.name = j.model
         AND m.version = j.version WHERE j.id = ${id:-0}")
check '[ "$row" = "succeeded|fp32" ]' "a job's train_precision overrides the session's bft.cpu_precision (got: $row)"
out=$(q "SET bft.cpu_precision = 'int8'; SELECT bft_train_async('h', 't', 'l', model => 'prec2')")
id=$(echo "$out" | tail -1)
wait_state "${id:-0}" failed 30
row=$(q "SELECT error FROM bft.jobs WHERE id = ${id:-0}")
check '[[ "$row" == *"cpu_precision = '"'int8'"' is for classification only"* ]]' \
    "... and without it the job trains with the session's setting (int8: refused)"

# Errors that can be found at submission are raised at once.
out=$(q "SELECT bft_train_async('h', 'nope', 'l')")
check "echo '$out' | grep -q 'column \"nope\" of relation \"h\" does not exist'" "a missing column is an error at submission"
out=$(q "SELECT bft_train_async('h', 't', 'l', deploy => 'sometimes')")
check "echo '$out' | grep -q \"deploy must be\"" "a bad deploy value is an error at submission"
out=$(q "SELECT bft_train_async('h', 't', 'l', train_precision => 'int8')")
check 'grep -q "train_precision => .int8. is for classification only" <<<"$out"' \
    "train_precision => 'int8' is an error at submission"

# Cancel a running job: state cancelled, no new version.
nv=$(q "SELECT count(*) FROM bft.models")
id=$(q "SELECT bft_train_async('h', 't', 'l', epochs => 90000, model => 'bg', architecture => '$ARCH')")
wait_state "$id" running 30
sleep 0.5
t0=$(date +%s.%N)
r=$(q "SELECT bft_cancel_job($id)")
wait_state "$id" cancelled 10
t1=$(date +%s.%N)
row=$(q "SELECT state || '|' || coalesce(error, '') FROM bft.jobs WHERE id = $id")
echo "  $row ($(awk -v a=$t0 -v b=$t1 'BEGIN { printf "%.2f", b - a }') s)"
check "[ '$r' = t ] && [[ '$row' == 'cancelled|canceling statement due to user request' ]]" "bft_cancel_job stops a running job (state cancelled)"
check "[ \"\$(q 'SELECT count(*) FROM bft.models')\" = '$nv' ] && [ \"\$(q \"SELECT bft_cancel_job($id)\")\" = f ]" \
    "... no new version; cancelling again returns false"

# Cancel a queued job (in the submitting transaction): it never trains.
out=$(q "BEGIN; SELECT 'id=' || bft_train_async('h', 't', 'l', epochs => 5, model => 'never_runs', architecture => '$ARCH');
         SELECT 'state=' || state FROM bft.jobs WHERE model = 'never_runs';
         SELECT 'cancel=' || bft_cancel_job(currval('bft.train_jobs_id_seq')); COMMIT;")
no_worker
echo "  $out" | tr '\n' ' '; echo
check "echo '$out' | grep -q 'state=queued' && echo '$out' | grep -q 'cancel=true' && [ \"\$(q \"SELECT state || '|' || (SELECT count(*) FROM bft.models WHERE name = 'never_runs') FROM bft.jobs WHERE model = 'never_runs'\")\" = 'cancelled|0' ]" \
    "bft_cancel_job on a queued job: it never trains"
check "no_worker" "no job worker is left behind"

# Hostile text in arguments is data, never SQL.
evil="x'); DROP TABLE h; --"
id=$(q "SELECT bft_train_async('h', 't', 'l', epochs => 3, model => \$q\$$evil\$q\$, architecture => '$ARCH')")
wait_state "$id" succeeded 60
check "[ \"\$(q \"SELECT count(*) FROM bft.models WHERE name = \\\$q\\\$$evil\\\$q\\\$\")|\$(q 'SELECT count(*) FROM h')\" = '1|40' ]" \
    "a model name with quotes and a semicolon is stored as given; the table is intact"
check "[ \"\$(q \"SELECT settings->>'bft.threads' FROM bft.train_jobs WHERE id = $id\")\" = 1 ]" "the submitter's bft.threads is used by the job"

# Roles: the job runs as its submitter; others cannot see or cancel it.
q "DROP ROLE IF EXISTS bft_alice; DROP ROLE IF EXISTS bft_bob; DROP ROLE IF EXISTS bft_group;
   CREATE ROLE bft_alice LOGIN; CREATE ROLE bft_bob LOGIN; CREATE ROLE bft_group NOLOGIN;
   GRANT SELECT ON h TO bft_alice, bft_group; GRANT SELECT, INSERT, UPDATE ON bft.models TO bft_alice, bft_group;
   GRANT USAGE ON SEQUENCE bft.models_id_seq TO bft_alice, bft_group; GRANT bft_group TO bft_bob;
   GRANT EXECUTE ON FUNCTION bft_train, bft_train_async TO bft_alice, bft_group" >/dev/null
id=$(qu bft_alice "SELECT bft_train_async('h', 't', 'l', epochs => 90000, model => 'alice_model', architecture => '$ARCH')")
wait_state "$id" running 30
check "[ \"\$(qu bft_bob \"SELECT count(*) FROM bft.jobs WHERE id = $id\")|\$(qu bft_alice \"SELECT count(*) FROM bft.jobs WHERE id = $id\")\" = '0|1' ]" \
    "bft.jobs shows a job to its submitter only"
out=$(qu bft_bob "SELECT bft_cancel_job($id)")
out2=$(qu bft_bob "SELECT bft_cancel_job(999999)")
check "echo '$out' | grep -q 'training job $id does not exist' && [ \"\$(echo '$out2' | sed 's/999999/$id/')\" = '$out' ]" \
    "another role cannot cancel it, and learns nothing: the same error as for a job that does not exist"
out=$(qu bft_alice "SELECT bft_cancel_job($id)")
wait_state "$id" cancelled 10
check "[ '$out' = t ] && [ \"\$(q \"SELECT state FROM bft.jobs WHERE id = $id\")\" = cancelled ]" "its submitter can"
out=$(qu bft_bob "SET ROLE bft_group; SELECT bft_train_async('h', 't', 'l')")
check "echo '$out' | grep -q 'cannot log in'" "a NOLOGIN role gets a clear error at submission"
out=$(qu bft_bob "INSERT INTO bft.train_jobs (model, relation, args, userid, username) VALUES ('x', 'h', '{}', 1, 'x')")
check "echo '$out' | grep -q 'permission denied'" "users cannot write bft.train_jobs directly"
id=$(qu bft_alice "SELECT bft_train_async('h', 't', 'l', epochs => 20, model => 'alice_model', architecture => '$ARCH')")
wait_state "$id" succeeded 60
check "[ \"\$(q \"SELECT created_by FROM bft.models WHERE name = 'alice_model'\")\" = bft_alice ]" "the job trains as its submitter (created_by)"

# The bookkeeping runs with the table owner's rights: the submitter's
# search_path must not slip an operator of theirs into it.
q "GRANT CREATE ON DATABASE $DB TO bft_alice" >/dev/null
out=$(psql -X -q -t -A -U bft_alice -d "$DB" 2>&1 <<SQL
CREATE SCHEMA evil;
CREATE FUNCTION evil.eq(bigint, bigint) RETURNS bool LANGUAGE plpgsql AS
  \$\$ BEGIN EXECUTE 'ALTER ROLE bft_alice SUPERUSER'; RETURN \$1 OPERATOR(pg_catalog.=) \$2; END \$\$;
CREATE OPERATOR evil.= (LEFTARG = bigint, RIGHTARG = bigint, FUNCTION = evil.eq);
SET search_path = evil, public, pg_catalog;
SELECT 'job=' || bft_train_async('h', 't', 'l', epochs => 90000, model => 'alice_model', architecture => '$ARCH');
SELECT pg_sleep(0.5);
SELECT 'cancel=' || bft_cancel_job(max(id)) FROM bft.jobs;
SQL
)
id=$(echo "$out" | sed -n 's/^job=//p')
wait_state "${id:-0}" cancelled 30
check "[ \"\$(q \"SELECT rolsuper FROM pg_roles WHERE rolname = 'bft_alice'\")\" = f ] && [ \"\$(q \"SELECT state FROM bft.jobs WHERE id = ${id:-0}\")\" = cancelled ]" \
    "a submitter's operator in search_path never runs with the job table owner's rights"
q "DROP SCHEMA evil CASCADE; REVOKE CREATE ON DATABASE $DB FROM bft_alice" >/dev/null

# The same cycle with bft in shared_preload_libraries (progress in shared memory).
SAVE_HOST=$PGHOST SAVE_PORT=$PGPORT
set +e +u
CL2="$TMP/jobs_preload"
rm -rf "$CL2"
if cluster_start "$CL2" 54363 "shared_preload_libraries = 'bft'" "max_worker_processes = 3" "bft.max_jobs = 8" \
        "bft.max_jobs_per_role = 8" >/dev/null 2>&1; then
    setup_db
    echo "# second cluster: shared_preload_libraries = $(q 'SHOW shared_preload_libraries'), max_worker_processes = 3"
    basic_cycle "preloaded"
    # Out of worker slots (the logical replication launcher holds one): a clear error, nothing queued.
    j1=$(q "SELECT bft_train_async('h', 't', 'l', epochs => 90000, model => 'slot1', architecture => '$ARCH')")
    j2=$(q "SELECT bft_train_async('h', 't', 'l', epochs => 90000, model => 'slot2', architecture => '$ARCH')")
    out=$(psql -X -q -t -A -d "$DB" -v VERBOSITY=verbose -c "SELECT bft_train_async('h', 't', 'l', model => 'slot3')" 2>&1)
    check "echo '$out' | grep -q '53400' && echo '$out' | grep -q 'could not start a background worker' && [ \"\$(q \"SELECT count(*) FROM bft.train_jobs WHERE model = 'slot3'\")\" = 0 ]" \
        "no free worker slot: bft_train_async fails at once (53400) and queues nothing"
    q "SELECT bft_cancel_job($j1), bft_cancel_job($j2)" >/dev/null
    wait_state "$j2" cancelled 10
    cluster_stop "$CL2"
else
    fail "could not start a cluster with bft preloaded"; cat "$CL2/server.log" 2>/dev/null | tail -5
fi
export PGHOST=$SAVE_HOST PGPORT=$SAVE_PORT

psql -X -q -d postgres -c "DROP DATABASE IF EXISTS $DB" >/dev/null 2>&1
for r in bft_alice bft_bob bft_group; do psql -X -q -d postgres -c "DROP ROLE IF EXISTS $r" >/dev/null 2>&1; done
finish
