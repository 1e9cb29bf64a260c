# Helpers shared by the cluster scripts test_concurrency.sh, test_parallel.sh,
# test_upgrade.sh and test_cuda_emu.sh (sourced, not a test).

source "$(dirname "${BASH_SOURCE[0]}")/cluster.sh" # poll

# The check harness: PASS/FAIL counters, ok/fail/check, and q SQL (one
# statement in database $DB, unaligned tuples, errors included in the output).
# Classification sessions use one BLAS thread and show warnings only.
PASS=0; FAIL=0
ok()   { echo "ok   - $*"; PASS=$((PASS + 1)); }
fail() { echo "FAIL - $*"; FAIL=$((FAIL + 1)); }
check() { if eval "$1"; then ok "$2"; else fail "$2"; fi; }
export PGOPTIONS="-c client_min_messages=warning -c bft.threads=1"
q() { psql -X -q -t -A -d "$DB" -c "$1" 2>&1; }

# classify_loop DB MODEL N OUTFILE [CONDITION]: one session runs up to N
# statements; each classifies every row of table probe (that satisfies the
# optional SQL CONDITION) with MODEL and prints one line
#   statement_start|statement_end|rows|distinct labels|label
# The session ends once ctl.stop is true.
# Errors go to OUTFILE.err.
classify_loop() {
    local db="$1" model="$2" n="$3" out="$4" cond="${5:-true}" i
    {
        for i in $(seq 1 "$n"); do
            echo "SELECT statement_timestamp(), clock_timestamp(), count(*), count(DISTINCT l), min(l)
                    FROM (SELECT bft_classify(t, '$model') AS l FROM probe WHERE NOT (SELECT stop FROM ctl) AND $cond) s
                  HAVING count(*) > 0;"
            printf '%s\n' 'SELECT stop AS stop_now FROM ctl \gset' '\if :stop_now' '\q' '\endif'
        done
    } | psql -X -q -t -A -d "$db" >"$out" 2>"$out.err"
}

# loop_summary OUTFILE: "statements|max distinct labels per statement|label sequence without repeats|errors"
# (a statement's duration is field 2 minus field 1)
loop_summary() {
    local out="$1"
    printf '%s|%s|%s|%s\n' "$(grep -c . "$out")" \
        "$(cut -d'|' -f4 "$out" | sort -n | tail -n 1)" \
        "$(cut -d'|' -f5 "$out" | uniq | paste -sd, -)" \
        "$(grep -c . "$out.err")"
}
