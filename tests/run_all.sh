#!/usr/bin/env bash
# bft: run every test — engine/tokenizer C unit tests, pg_regress and the
# cluster scripts against a throwaway cluster started here, and the TAP
# tests (tests/t: preload, read-only, crash, privileges, dump/restore,
# replication, pg_cron, deployment, failed trainings, jobs, cancel) in
# clusters of their own.
# Ends with "N passed, N failed"; exits non-zero when anything failed.
#
# Usage: bash tests/run_all.sh            (installs missing Debian packages)
#        BFT_SKIP_DEPS=1 bash tests/run_all.sh
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT="$PWD"
SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"

[ "${BFT_SKIP_DEPS:-0}" = 1 ] || bash tests/install_deps.sh || exit 1
make -s -j"$(nproc)" all unit || { echo "0 passed, 1 failed"; exit 1; }
$SUDO make -s install >/dev/null || { echo "0 passed, 1 failed"; exit 1; }

PASSED=0; FAILED=0
LOGDIR="$ROOT/build/test-logs"; rm -rf "$LOGDIR"; mkdir -p "$LOGDIR"

# count NAME LOGFILE RC: add the "RESULT: P passed, F failed" line of a component.
count() {
    local name="$1" log="$2" rc="$3" line p f
    line=$(grep -E '^RESULT: [0-9]+ passed, [0-9]+ failed' "$log" | tail -n 1)
    if [ -n "$line" ]; then
        p=$(echo "$line" | sed -E 's/RESULT: ([0-9]+) passed.*/\1/')
        f=$(echo "$line" | sed -E 's/.* ([0-9]+) failed.*/\1/')
    else
        p=0; f=1
    fi
    if [ "$rc" -ne 0 ] && [ "$f" -eq 0 ]; then f=1; fi
    PASSED=$((PASSED + p)); FAILED=$((FAILED + f))
    printf '%-40s %4d passed, %d failed%s\n' "$name" "$p" "$f" \
        "$([ "$f" -ne 0 ] && echo "   (log: ${log#$ROOT/})")"
    if [ "$f" -ne 0 ]; then grep -E 'FAIL|not ok|ERROR' "$log" | head -n 20 | sed 's/^/    /'; fi
    grep -E '^skip' "$log" | head -n 10 | sed 's/^/    /'
}

echo "== engine unit tests"
for t in build/tests/test_*; do
    [ -x "$t" ] || continue
    n=$(basename "$t")
    timeout 900 "$t" >"$LOGDIR/$n.log" 2>&1; rc=$?
    count "$n" "$LOGDIR/$n.log" $rc
done

# The CUDA backend's host code and kernels on the CPU (tests/cuda_emu): in a
# CUDA build, test_cuda once more with the emulator as its bft_cuda.so.
# The second run uses BERT-base's shapes (768 channels, 12 heads of 64, 3072)
# and another thread schedule.
if [ -f build/emu/bft_cuda.so ] && [ -x build/tests/test_cuda ]; then
    BFT_CUDA_MODULE="$ROOT/build/emu/bft_cuda.so" timeout 900 build/tests/test_cuda \
        >"$LOGDIR/test_cuda_emulated.log" 2>&1; rc=$?
    count "test_cuda (CUDA emulator)" "$LOGDIR/test_cuda_emulated.log" $rc
    BFT_CUDA_MODULE="$ROOT/build/emu/bft_cuda.so" BFT_CUDA_EMU_SEED=2 \
        BFT_TEST_CUDA_SHAPE=64,768,12,3072 timeout 900 build/tests/test_cuda \
        >"$LOGDIR/test_cuda_emulated_base.log" 2>&1; rc=$?
    count "test_cuda (CUDA emulator, BERT-base ops)" "$LOGDIR/test_cuda_emulated_base.log" $rc
else
    echo "skip - test_cuda (CUDA emulator): not a CUDA build (USE_CUDA=0)"
fi

echo "== PostgreSQL tests (throwaway cluster)"
source tests/scripts/cluster.sh
TMPD=$(mktemp -d /tmp/bft-test.XXXXXX)
chmod 755 "$TMPD"
# The server reads test checkpoints (tests/data/ckpt) by absolute path as the
# cluster's OS user; when that user cannot read this checkout (e.g. a clone
# under /root), run the PostgreSQL tests from a readable copy of it.
if [ "$(id -u)" -eq 0 ] && ! as_cluster_user test -r "$ROOT/tests/data/ckpt/tiny/config.json"; then
    echo "(user postgres cannot read $ROOT: running the PostgreSQL tests from a copy in $TMPD/src)"
    mkdir -p "$TMPD/src/build"
    tar -C "$ROOT" --exclude=./.git --exclude=./build -cf - . | tar -C "$TMPD/src" -xf -
    cp -a "$ROOT/build/bft-cli" "$TMPD/src/build/"
    [ -d "$ROOT/build/emu" ] && mkdir -p "$TMPD/src/build/emu" && cp -a "$ROOT/build/emu/bft_cuda.so" "$TMPD/src/build/emu/"
    chmod -R a+rX "$TMPD/src"
    cd "$TMPD/src"
fi
CL="$TMPD/main"
cleanup() { cluster_stop "$CL"; for d in "$TMPD"/*/; do [ -f "$d/data/postmaster.pid" ] && cluster_stop "${d%/}"; done; rm -rf "$TMPD"; }
trap cleanup EXIT
if cluster_start "$CL" 54329 "shared_preload_libraries = 'pg_cron'" "cron.database_name = 'bft_cron'" \
        "cron.use_background_workers = on" >"$LOGDIR/cluster.log" 2>&1; then
    export PGHOST="$CL" PGPORT=54329 PGUSER=postgres
    # pg_regress writes results/ here; run it as the invoking user over the socket.
    make -s installcheck >"$LOGDIR/pg_regress.log" 2>&1; rc=$?
    total=$(grep -cE '^(ok|not ok|test|     ?[a-z_]+ +\.\.\.)' "$LOGDIR/pg_regress.log" || true)
    nfail=$(grep -cE '(^not ok|\.\.\. FAILED| FAILED )' "$LOGDIR/pg_regress.log" || true)
    [ "$rc" -ne 0 ] && [ "$nfail" -eq 0 ] && nfail=1
    echo "RESULT: $((total - nfail)) passed, $nfail failed" >>"$LOGDIR/pg_regress.log"
    count "pg_regress" "$LOGDIR/pg_regress.log" $rc
    [ "$nfail" -ne 0 ] && [ -f regression.diffs ] && head -n 60 regression.diffs | sed 's/^/    /'
    [ "$nfail" -ne 0 ] && [ -f output_iso/regression.diffs ] && head -n 60 output_iso/regression.diffs | sed 's/^/    /'

    for s in tests/scripts/test_*.sh; do
        [ -f "$s" ] || continue
        n=$(basename "$s" .sh)
        BFT_TMP="$TMPD" timeout 1200 bash "$s" >"$LOGDIR/$n.log" 2>&1 </dev/null; rc=$?
        count "$n" "$LOGDIR/$n.log" $rc
    done
else
    cat "$LOGDIR/cluster.log"
    FAILED=$((FAILED + 1))
fi

# TAP tests (tests/t/*.pl, PostgreSQL::Test::Cluster: clusters of their own,
# as the cluster's OS user since initdb refuses root), one file at a time so
# that each gets a line; its ok / not ok lines are counted.
echo "== TAP tests (make prove_installcheck)"
TAPDIR="$TMPD/tap"; mkdir -p "$TAPDIR"
[ "$(id -u)" -eq 0 ] && chown "$(cluster_user)": "$TAPDIR"
for t in tests/t/*.pl; do
    [ -f "$t" ] || continue
    n=$(basename "$t" .pl)
    as_cluster_user make -s prove_installcheck PROVE_TESTS="$t" PROVE_FLAGS=-v TAP_TESTDIR="$TAPDIR" \
        >"$LOGDIR/$n.log" 2>&1 </dev/null; rc=$?
    p=$(grep -cE '^ok [0-9]+' "$LOGDIR/$n.log" || true)
    f=$(grep -cE '^not ok [0-9]+' "$LOGDIR/$n.log" || true)
    echo "RESULT: $p passed, $f failed" >>"$LOGDIR/$n.log"
    count "$n" "$LOGDIR/$n.log" $rc
done

echo "$PASSED passed, $FAILED failed"
[ "$FAILED" -eq 0 ]
