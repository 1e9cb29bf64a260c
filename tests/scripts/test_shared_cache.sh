#!/usr/bin/env bash
# test_shared_cache: the server-wide shared read-only copy of a model's
# weights (bft.shared_cache_size).
#  1. shared and private copies give bit-identical probabilities (a toy model
#     and a ~100 MB one), and the private session maps no copy; a damaged
#     copy is replaced, never used;
#  2. a new session's first call maps the published copy (no load): it takes
#     at most 100 ms, where a private load takes longer (both printed);
#  3. a deployment is seen by a session's next statement;
#  4. a drop that commits while a statement uses the model: that statement
#     finishes with the old copy (still mapped, already unlinked), the copy is
#     gone from the directory at commit, an idle session that mapped it lets
#     go at once, and then gets 42704;
#  5. bft.shared_cache_size bounds the copies: a full cache of copies in use
#     makes a backend load a private copy; unmapped copies are evicted; four
#     sessions that start on an unpublished version at once load it once;
#  6. a role that cannot see a model's row gets 42704 although its copy is
#     published, and a model it can see is shared with it;
#  7. parallel workers map the same copy and give the serial private result;
#  8. kill -9 of a backend that maps a copy: the crash restart removes the
#     directory, no lock or large object is left behind, and the next session
#     publishes and classifies as before;
#  9. kill -9 of a backend while it writes a copy (remove_temp_files_after_crash
#     off, so that bft's own clean-up is what removes the dead writer's file).
# Runs on its own throwaway cluster (crash restarts, ALTER SYSTEM).
#
# Prints "RESULT: P passed, F failed" last; exits non-zero on failure.
set -uo pipefail
cd "$(dirname "$0")/../.."
TMP="${BFT_TMP:-/tmp}"
PASS=0; FAIL=0
ok()   { echo "ok   - $*"; PASS=$((PASS + 1)); }
fail() { echo "FAIL - $*"; FAIL=$((FAIL + 1)); }
check() { if eval "$1"; then ok "$2"; else fail "$2"; fi; }
export PGOPTIONS="-c client_min_messages=warning -c bft.threads=1"

source tests/scripts/cluster.sh; set +e +u
CL="$TMP/shcache"
rm -rf "$CL"
trap 'cluster_stop "$CL"' EXIT
cluster_start "$CL" 54381 >/dev/null 2>&1 || { tail "$CL/server.log" 2>/dev/null; echo "RESULT: 0 passed, 1 failed"; exit 1; }
DB=bft_shcache
SHDIR="$CL/data/base/pgsql_tmp/pgsql_tmp_bft_shared"
q() { psql -X -q -t -A -d "$DB" -c "$1" 2>&1; }

# copies: the files in the cache directory ("" when none)
copies() { ls "$SHDIR" 2>/dev/null | grep -E '\.(w|tmp)$' | sort | paste -sd' ' -; }
ncopies() { ls "$SHDIR" 2>/dev/null | grep -cE '\.w$'; }
# mapped PID: copies that process maps (its /proc maps, one line per file)
mapped() { grep 'pgsql_tmp_bft_shared/' "/proc/$1/maps" 2>/dev/null | awk '{print $6, $7}' | sort -u; }
# setting NAME VALUE: ALTER SYSTEM + reload, and wait until new sessions see it
setting() {
    local i
    psql -X -q -d "$DB" -c "LOAD 'bft'" -c "ALTER SYSTEM SET $1 = '$2'" -c "SELECT pg_reload_conf()" >/dev/null
    for i in $(seq 1 50); do
        [ "$(psql -X -q -t -A -d "$DB" -c "LOAD 'bft'" -c "SELECT current_setting('$1')" 2>&1)" = "$2" ] && return 0
        sleep 0.1
    done
    echo "# $1 did not become $2"
}
# first_call SQL: milliseconds of SQL as a new session's first statement
first_call() {
    psql -X -q -t -A -d "$DB" -c '\timing on' -c "$1" 2>&1 | grep -oE '^Time: [0-9.]+' | sed 's/Time: //'
}

# Sessions that stay connected (psql fed through a FIFO):
# sess_start N; sess N SQL (one statement; waits, prints the output); sess_end N
sess_start() {
    rm -f "$CL/s$1.in" "$CL/s$1.out"; mkfifo "$CL/s$1.in"; : >"$CL/s$1.out"
    psql -X -q -t -A -d "$DB" <"$CL/s$1.in" >>"$CL/s$1.out" 2>&1 &
    eval "exec {S$1}>\"$CL/s$1.in\""
}
sess_send() { local fd; eval "fd=\$S$1"; printf '%s\n' "$2" >&"$fd"; }
sess() {
    local n="$1" m="done-$RANDOM$RANDOM" size i
    size=$(stat -c %s "$CL/s$n.out")
    sess_send "$n" "$2;"
    sess_send "$n" "\\echo $m"
    for i in $(seq 1 1200); do grep -q "^$m\$" "$CL/s$n.out" && break; sleep 0.05; done
    tail -c +$((size + 1)) "$CL/s$n.out" | grep -v "^$m\$"
}
sess_end() { local fd; eval "fd=\$S$1"; exec {fd}>&-; }
recovered() {
    local i
    for i in $(seq 1 300); do
        [ "$(psql -X -q -t -A -d "$DB" -c 'SELECT 1' 2>/dev/null)" = 1 ] && return 0
        sleep 0.1
    done
    return 1
}
consistent() {
    q "SELECT (SELECT count(*) FROM pg_largeobject_metadata l WHERE NOT EXISTS (SELECT 1 FROM bft.models m WHERE m.weights = l.oid))
         || '|' || (SELECT count(*) FROM pg_locks WHERE locktype = 'advisory')"
}

psql -X -q -d postgres -c "CREATE DATABASE $DB" >/dev/null
q "CREATE EXTENSION bft" >/dev/null
q "CREATE TABLE h (i int, t text, l text);
   INSERT INTO h SELECT i, (ARRAY['shares rally as profit beats forecast', 'stocks fall on weak earnings',
                                  'team wins the championship final', 'coach fired after losing season'])[1 + i % 4]
                           || ' ' || (ARRAY['today', 'again', 'analysts say', 'reports', 'in march'])[1 + (i * 7) % 5],
                        (ARRAY['markets', 'markets', 'sports', 'sports'])[1 + i % 4]
                   FROM generate_series(1, 40) i" >/dev/null
TOY='{"hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 64, "vocab_size": 200}'
# ~100 MB of weights: loading it privately takes clearly longer than mapping it
MID='{"hidden_size": 512, "num_hidden_layers": 8, "num_attention_heads": 8, "intermediate_size": 2048, "vocab_size": 200, "max_position_embeddings": 32}'
train() {  # train MODEL ARCH SEED [DEPLOY]
    q "SELECT version FROM bft_train('h', 't', 'l', epochs => 30, learning_rate => 2e-3, model => '$1', seed => $3,
                                     mlm_epochs => 0, max_length => 16, deploy => '${4:-always}', architecture => '$2')"
}
train m "$TOY" 1 >/dev/null
for x in mid mid2 mid3; do
    q "SELECT version FROM bft_train('h', 't', 'l', epochs => 1, model => '$x', mlm_epochs => 0, max_length => 16,
                                     architecture => '$MID')" >/dev/null
done
mb=$(q "SELECT round(avg(size) / 1048576) FROM bft.models WHERE name LIKE 'mid%'")
echo "# models: m (toy), mid, mid2, mid3 (~$mb MB of weights each)"
probe() { echo "SELECT string_agg(i || '=' || bft_classify(t, '$1') || ':' || (bft_predict_proba(t, '$1'))::text, ';' ORDER BY i) FROM h"; }

# ---- 1. shared vs private: identical probabilities --------------------------------------------
check "[ -z \"\$(copies)\" ]" "no copy before any classification"
on_m=$(q "$(probe m)"); on_mid=$(q "$(probe mid)")
check "[ \"\$(ncopies)\" = 2 ]" "the first session published m and mid ($(copies))"
check "[[ '$on_m' == *'=sports:'* ]] && [[ '$on_mid' == *'=markets:'* || '$on_mid' == *'=sports:'* ]]" "both classify"
on2_m=$(q "$(probe m)"); on2_mid=$(q "$(probe mid)")
check "[ '$on2_m' = '$on_m' ] && [ '$on2_mid' = '$on_mid' ] && [ \"\$(ncopies)\" = 2 ]" \
    "a second session maps the copies: identical probabilities, nothing published again"
mw=$(ls "$SHDIR" | grep "_$(q "SELECT weights FROM bft.models WHERE name = 'm'")_")
printf 'damaged!' | dd of="$SHDIR/$mw" conv=notrunc status=none
r=$(q "$(probe m)")
# (nothing writes into a published file: a valid header again means a new copy)
check "[ '$r' = '$on_m' ] && [ -f '$SHDIR/$mw' ] && [ \"\$(head -c 7 $SHDIR/$mw)\" = bftshw1 ]" \
    "a damaged copy is not used: the next session loads the model and publishes a new copy"
setting bft.shared_cache_size 0
sess_start 1
p1=$(sess 1 "SELECT pg_backend_pid()")
off_m=$(sess 1 "$(probe m)"); off_mid=$(sess 1 "$(probe mid)")
check "[ -n '$off_m' ] && [ '$off_m' = '$on_m' ] && [ '$off_mid' = '$on_mid' ]" \
    "bft.shared_cache_size = 0 (private copies): bit-identical probabilities (toy and ~$mb MB model)"
check "[ -z \"\$(mapped $p1)\" ]" "the private session maps no copy"
sess_end 1

# ---- 2. a new session's first call ------------------------------------------------------------
FIRST="SELECT bft_classify('team wins the final', 'mid')"
t_off=$(first_call "$FIRST")
setting bft.shared_cache_size 1GB
t_on=""; for i in 1 2 3; do t_on="$t_on $(first_call "$FIRST")"; done
echo "  first call of a new session on mid (~$mb MB): private load $t_off ms; mapping the shared copy:$t_on ms"
med_on=$(printf '%s\n' $t_on | sort -n | sed -n 2p)
check "awk -v t='$med_on' 'BEGIN { exit !(t > 0 && t <= 100) }'" \
    "with the copy published, a new session's first call takes <= 100 ms (median of 3: $med_on ms)"
check "awk -v t='$med_on' -v o='$t_off' 'BEGIN { exit !(t < o) }'" "... less than a private load ($t_off ms)"

# ---- 3. deploy ---------------------------------------------------------------------------------
sess_start 1
p1=$(sess 1 "SELECT pg_backend_pid()")
a1=$(sess 1 "$(probe m)")
train m "$TOY" 7 never >/dev/null
a2=$(sess 1 "$(probe m)")
check "[ '$a1' = '$on_m' ] && [ '$a2' = '$on_m' ]" "a session keeps version 1 while version 2 is stored undeployed"
q "SELECT bft_deploy('m', 2)" >/dev/null
a3=$(sess 1 "$(probe m)")
v2=$(q "$(probe m)")
check "[ -n '$v2' ] && [ '$v2' != '$on_m' ] && [ '$a3' = '$v2' ]" "after bft_deploy the session's next statement uses version 2"
check "[ \"\$(mapped $p1 | grep -c '_1_.*\\.w')\" = 0 ] && [ \"\$(mapped $p1 | wc -l)\" = 1 ]" \
    "the session maps version 2's copy and no longer version 1's"

# ---- 4. drop -----------------------------------------------------------------------------------
# expected: the statement below without its pause
SLOW="SELECT string_agg(p, ';' ORDER BY i) FROM (SELECT i, (bft_predict_proba(t, 'm'))::text
        || (CASE WHEN i = 20 THEN pg_sleep(3)::text ELSE '' END) AS p FROM h ORDER BY i) s"
want=$(q "SELECT string_agg((bft_predict_proba(t, 'm'))::text, ';' ORDER BY i) FROM h")
rm -f "$CL/slow.out"
psql -X -q -t -A -d "$DB" -c "$SLOW" >"$CL/slow.out" 2>&1 &
slow=$!
sp=$(poll 100 "SELECT pid FROM pg_stat_activity WHERE wait_event = 'PgSleep' AND query LIKE '%bft_predict_proba%'")
before_drop=$(mapped "$sp" | wc -l)
q "SELECT bft_drop_model('m')" >/dev/null
check "[ -n '$sp' ] && [ '$before_drop' = 1 ] && [ \"\$(mapped $sp | grep -c '(deleted)')\" = 1 ]" \
    "during a statement the drop commits: the copy is unlinked but still mapped by the statement using it"
check "[ \"\$(ncopies)\" = 1 ]" "the dropped model's copies are gone from the directory at commit (left: $(copies))"
wait $slow
check "[ \"\$(cat $CL/slow.out)\" = '$want' ]" "the statement that started before the drop finishes with the old weights"
for _ in $(seq 1 30); do [ -z "$(mapped $p1)" ] && break; sleep 0.1; done
check "[ -z \"\$(mapped $p1)\" ]" "an idle session that mapped the dropped model lets go without running a statement"
r=$(sess 1 "\\set VERBOSITY verbose
$(probe m)")
check "[[ '$r' == *'42704'* ]]" "and then gets 42704: $(echo "$r" | head -n 1)"
sess_end 1

# ---- 5. bound and eviction ---------------------------------------------------------------------
setting bft.shared_cache_size "$((mb * 3 / 2))MB"
sess_start 1
p1=$(sess 1 "SELECT pg_backend_pid()")
sess 1 "$(probe mid)" >/dev/null                 # maps mid (published in 1.)
sess_start 2
p2=$(sess 2 "SELECT pg_backend_pid()")
b=$(sess 2 "$(probe mid2)")
check "[ -n '$b' ] && [ \"\$(ncopies)\" = 1 ] && [ -z \"\$(mapped $p2)\" ]" \
    "a full cache of copies in use: mid2 is loaded privately, nothing evicted or published ($(copies))"
sess_end 1; sess_end 2
poll 50 "SELECT 1 WHERE NOT EXISTS (SELECT 1 FROM pg_stat_activity WHERE pid IN ($p1, $p2))" >/dev/null
b2=$(q "$(probe mid2)")
check "[ '$b2' = '$b' ] && [ \"\$(ncopies)\" = 1 ] && ls '$SHDIR' | grep -q '_$(q "SELECT weights FROM bft.models WHERE name = 'mid2'")_'" \
    "once unmapped, mid's copy is evicted for mid2's (same probabilities as the private copy)"
setting bft.shared_cache_size 1GB

# ---- 5b. sessions that need an unpublished version at once: one loads, the others wait ----------
# (and a dropped database's copies go at the next publication)
psql -X -q -d postgres -c "CREATE DATABASE ${DB}_2" >/dev/null
psql -X -q -t -A -d "${DB}_2" -c "CREATE EXTENSION bft" -c "CREATE TABLE h AS SELECT 'team wins' AS t, 'sports' AS l UNION ALL SELECT 'stocks fall', 'markets'" \
    -c "SELECT version FROM bft_train('h', 't', 'l', epochs => 1, mlm_epochs => 0, architecture => '$TOY')" \
    -c "SELECT bft_classify('team wins', 'h')" >/dev/null 2>&1
d2=$(q "SELECT oid FROM pg_database WHERE datname = '${DB}_2'")
psql -X -q -d postgres -c "DROP DATABASE ${DB}_2" >/dev/null
check "[ \"\$(ls $SHDIR | grep -c '^${d2}_')\" = 1 ]" "a dropped database's copy stays until the next publication"
check "[ -z \"\$(ls $SHDIR | grep _$(q "SELECT weights FROM bft.models WHERE name = 'mid'")_)\" ]" "mid is not published (evicted above)"
cpids=""
for i in 1 2 3 4; do
    psql -X -q -t -A -d "$DB" -c "$(probe mid)" >"$CL/c$i.out" 2>&1 &
    cpids="$cpids $!"
done
waits=0
for _ in $(seq 1 300); do
    l=$(q "SELECT count(*) FILTER (WHERE NOT granted) || ' ' || count(*) FROM pg_locks WHERE locktype = 'advisory' AND objsubid = 16966")
    [ "${l% *}" -gt "$waits" ] && waits=${l% *}
    [ "${l#* }" = 0 ] && [ "$waits" -gt 0 ] && break
    sleep 0.05
done
wait $cpids
same=$(cat "$CL"/c[1-4].out | sort -u)
check "[ '$waits' -ge 1 ] && [ '$same' = '$on_mid' ] && [ \"\$(ls $SHDIR | grep -c _$(q "SELECT weights FROM bft.models WHERE name = 'mid'")_)\" = 1 ]" \
    "4 sessions start on it at once: up to $waits wait for the one that loads it (pg_locks), one copy, identical probabilities"
check "[ \"\$(ls $SHDIR | grep -c '^${d2}_')\" = 0 ]" "which removes the dropped database's copy"

# ---- 6. visibility -----------------------------------------------------------------------------
q "SELECT version FROM bft_train('h', 't', 'l', epochs => 30, learning_rate => 2e-3, model => 'hidden', mlm_epochs => 0,
                                 architecture => '$TOY')" >/dev/null
train vis "$TOY" 3 >/dev/null
q "CREATE ROLE bft_shc_reader LOGIN; GRANT SELECT ON bft.models, h TO bft_shc_reader;
   ALTER TABLE bft.models ENABLE ROW LEVEL SECURITY;
   CREATE POLICY shc_hide ON bft.models FOR SELECT USING (name <> 'hidden' OR current_user <> 'bft_shc_reader')" >/dev/null
hid=$(q "$(probe hidden)"); vis=$(q "$(probe vis)")
nc=$(ncopies)
r=$(psql -X -q -t -A -d "$DB" -U bft_shc_reader -v VERBOSITY=verbose -c "SELECT bft_classify('team wins', 'hidden')" 2>&1)
check "[ -n '$hid' ] && [[ '$r' == *'42704'*'model \"hidden\" does not exist'* ]]" \
    "a role that cannot see the row gets 42704 although the copy is published: $(echo "$r" | head -n 1)"
sess_start 1
sess 1 "SET ROLE bft_shc_reader" >/dev/null
p1=$(sess 1 "SELECT pg_backend_pid()")
rv=$(sess 1 "$(probe vis)")
echo "  the role's backend maps $(mapped $p1 | wc -l) copy; copies: $(ncopies) (before: $nc); same probabilities: $([ "$rv" = "$vis" ] && echo yes || echo "no: $rv" | head -c 200)"
check "[ '$rv' = '$vis' ] && [ \"\$(mapped $p1 | wc -l)\" = 1 ] && [ \"\$(ncopies)\" = '$nc' ]" \
    "a model the role can see: its session maps the published copy (identical probabilities)"
sess_end 1

# ---- 7. parallel workers -----------------------------------------------------------------------
q "CREATE TABLE big AS SELECT g AS i, t, l FROM h, generate_series(1, 50) g0, LATERAL (SELECT g0 * 100 + h.i AS g) x;
   ANALYZE big" >/dev/null
PAR="SET parallel_setup_cost = 0; SET parallel_tuple_cost = 0; SET min_parallel_table_scan_size = 0;
     SET max_parallel_workers_per_gather = 2; SET parallel_leader_participation = off;"
SEL="SELECT md5(string_agg(x, ',' ORDER BY i)) FROM (SELECT i, i || bft_classify(t, 'vis') || (bft_predict_proba(t, 'vis'))::text
          || (CASE WHEN i % 1000 = 120 THEN pg_sleep(0.5)::text ELSE '' END) AS x FROM big) s"
setting bft.shared_cache_size 0
ser=$(q "SET max_parallel_workers_per_gather = 0; $SEL")
setting bft.shared_cache_size 1GB
plan=$(q "$PAR EXPLAIN (VERBOSE, COSTS OFF) $SEL")
check "echo '$plan' | sed -n '/Parallel Seq Scan/,\$p' | grep -q 'bft_classify'" "the workers evaluate bft_classify (EXPLAIN)"
vis_w=$(ls "$SHDIR" | grep "_$(q "SELECT weights FROM bft.models WHERE name = 'vis'")_")
psql -X -q -t -A -d "$DB" -c "$PAR" -c "$SEL" >"$CL/par.out" 2>&1 &
par=$!
wp=$(poll 100 "SELECT string_agg(pid::text, ' ') FROM pg_stat_activity WHERE backend_type = 'parallel worker' HAVING count(*) = 2")
wm=""
for _ in $(seq 1 50); do
    wm=""; for w in $wp; do wm="$wm$(mapped $w | grep -c "$vis_w")"; done
    [ "$wm" = 11 ] && break; sleep 0.1
done
check "[ -n '$vis_w' ] && [ '$wm' = 11 ]" "both parallel workers ($wp) map the published copy $vis_w"
wait $par
check "[ -n '$ser' ] && [ \"\$(tail -n 1 $CL/par.out)\" = '$ser' ]" \
    "parallel workers on the shared copy give the serial private result (2000 rows)"
check "[ \"\$(ls $SHDIR | grep -c _$(q "SELECT weights FROM bft.models WHERE name = 'vis'")_)\" = 1 ]" "one copy of it"

# ---- 8. kill -9 of a backend that maps a copy --------------------------------------------------
sess_start 1
p1=$(sess 1 "SELECT pg_backend_pid()")
sess 1 "$(probe vis)" >/dev/null
check "[ \"\$(mapped $p1 | wc -l)\" = 1 ]" "backend $p1 maps a copy"
kill -9 "$p1"
sess_end 1
check "recovered" "the server recovers after kill -9 of that backend"
check "grep -q 'all server processes terminated; reinitializing' '$CL/server.log'" "(a crash restart)"
check "[ ! -e '$SHDIR' ] && [ \"\$(consistent)\" = '0|0' ]" \
    "no copy, no lock, no large object left behind (the crash restart removed the directory)"
check "[ \"\$(q \"\$(probe vis)\")\" = '$vis' ] && [ \"\$(ncopies)\" = 1 ]" "the next session publishes again and classifies as before"

# ---- 9. kill -9 while writing a copy -----------------------------------------------------------
setting remove_temp_files_after_crash off
# the writer's .tmp carries its pid; a builtin glob in a tight loop catches it
killed=""; left=""
w3=$(q "SELECT weights FROM bft.models WHERE name = 'mid3'")
for attempt in 1 2 3 4 5; do
    psql -X -q -t -A -d "$DB" -c "$(probe mid3)" >/dev/null 2>&1 &
    bp=$!
    tmpf=""
    while kill -0 $bp 2>/dev/null; do
        set -- "$SHDIR"/*_${w3}_*.tmp
        if [ -e "$1" ]; then tmpf="$1"; break; fi
    done
    if [ -n "$tmpf" ]; then
        pid=${tmpf%.tmp}; pid=${pid##*.}
        kill -9 "$pid" 2>/dev/null && killed="$pid"
    fi
    wait $bp
    recovered
    left=$(copies)
    # killed while writing: its .tmp is left (the crash restart keeps the directory)
    [[ "$left" == *.tmp* ]] && break
    killed=""
    rm -f "$SHDIR"/*_${w3}_*.w   # published before the kill: unmapped now; again
done
tmpf=$(basename "${tmpf:-none}")
check "[ -n '$killed' ]" "a backend was killed while writing a copy ($tmpf, attempt $attempt)"
check "recovered" "the server recovers"
echo "  after the crash restart (remove_temp_files_after_crash off): $left"
r3=$(q "$(probe mid3)")
check "[ -n '$r3' ] && [ \"\$(ls $SHDIR | grep -cE '\\.tmp\$')\" = 0 ] && ls $SHDIR | grep -q '_$(q "SELECT weights FROM bft.models WHERE name = 'mid3'")_.*\\.w\$'" \
    "the next build removes the dead writer's file and publishes ($(copies))"
setting bft.shared_cache_size 0
check "[ \"\$(q \"\$(probe mid3)\")\" = '$r3' ] && [ \"\$(consistent)\" = '0|0' ]" \
    "its copy gives the private copy's probabilities; no lock or large object left behind"

q "ALTER SYSTEM RESET ALL; SELECT pg_reload_conf()" >/dev/null
echo "RESULT: $PASS passed, $FAIL failed"
[ "$FAIL" -eq 0 ]
