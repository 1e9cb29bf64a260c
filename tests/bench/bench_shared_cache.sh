#!/usr/bin/env bash
# bench_shared_cache: what the shared model cache (bft.shared_cache_size)
# changes for new sessions, measured in one run with the cache on and off,
# for 1 and SESSIONS (default 32) sessions, on a BERT-base-size model and on
# bft's default small from-scratch model:
#   - first-call latency: a new session's first bft_classify (median and max
#     over the sessions), beside the session's second call (the inference);
#   - memory: RSS and PSS summed over the sessions' backends while all of them
#     hold the model (PSS counts a page shared by n processes 1/n in each, so
#     its sum is what the sessions really cost; "bft" is PSS without the
#     shared buffers: private memory plus the mapped copy).
# Sessions start one after another (each first call runs alone, with
# bft.threads = 1) and stay connected until all are measured.  With the cache
# on, one session publishes the copy first ("publishing load"), as "once any
# session has loaded the model".
#
# The BERT-base-size model: random weights in the exact bert-base-cased shape
# (108 M parameters, 433 MB) written by transformers when $PYTHON has torch and
# transformers, else bft_train with BERT-base's encoder shape on 64 tweets
# (smaller vocabulary).  With the cache off every session holds a private
# copy: the number of such sessions is capped so that they fit in half of
# MemAvailable (printed when it bites; OFF_SESSIONS overrides).
#
# Usage: bash tests/bench/bench_shared_cache.sh         (installed bft; a throwaway cluster)
#        SESSIONS=32 PYTHON=python3 TRAIN_ROWS=500 bash tests/bench/bench_shared_cache.sh
# Not part of the test suite.
set -uo pipefail
cd "$(dirname "$0")/../.."
ROOT="$PWD"
CSV="$ROOT/../shared/data/topic_train.csv"
VOCAB="$ROOT/../shared/data/vocab/bert-base-cased-vocab.txt"
[ -f "$CSV" ] || { echo "missing $CSV"; exit 1; }
SESSIONS="${SESSIONS:-32}"
TRAIN_ROWS="${TRAIN_ROWS:-500}"
PYTHON="${PYTHON:-python3}"
source tests/scripts/cluster.sh; set +e +u
TMPD=$(mktemp -d /tmp/bft-bench-shcache.XXXXXX); chmod 755 "$TMPD"
cleanup() { cluster_stop "$TMPD/cl"; [ "${KEEP:-0}" = 1 ] || rm -rf "$TMPD"; }
trap cleanup EXIT
cluster_start "$TMPD/cl" 54395 "max_connections = $((SESSIONS * 2 + 20))" >/dev/null || exit 1
DB=bench
q() { psql -X -q -t -A -d "$DB" -c "$1"; }
psql -X -q -d postgres -c "CREATE DATABASE $DB" >/dev/null
q "CREATE EXTENSION bft" >/dev/null
q "CREATE TABLE tweets (id serial, text text, label int)" >/dev/null
psql -X -q -d "$DB" -c "\\copy tweets (text, label) FROM '$CSV' CSV HEADER" >/dev/null
q "CREATE TABLE train AS SELECT * FROM tweets ORDER BY md5(id::text) LIMIT $TRAIN_ROWS" >/dev/null

echo "# machine: $(nproc) CPUs, load average $(cut -d' ' -f1-3 /proc/loadavg), MemAvailable $(awk '/MemAvailable/ {printf "%.1f GB", $2 / 1048576}' /proc/meminfo)"
core=$(python3 -c "import ctypes, ctypes.util
l = ctypes.CDLL(ctypes.util.find_library('openblas') or 'libopenblas.so.0')
l.openblas_get_corename.restype = ctypes.c_char_p
print(l.openblas_get_corename().decode())" 2>/dev/null)
echo "# OpenBLAS kernels: ${core:-unknown} (OPENBLAS_CORETYPE=${OPENBLAS_CORETYPE:-unset}); bft.threads = 1 in every session"

# ---- models ----
q "SELECT version FROM bft_train('train', 'text', 'label', epochs => 1, mlm_epochs => 0, model => 'small')" >/dev/null 2>&1
BB="$TMPD/bert_base"
if "$PYTHON" -c 'import torch, transformers' 2>/dev/null && [ -f "$VOCAB" ]; then
    "$PYTHON" - "$BB" "$VOCAB" >/dev/null 2>&1 <<'PY'
import shutil, sys, torch
from transformers import BertConfig, BertForSequenceClassification
out, vocab = sys.argv[1], sys.argv[2]
n = sum(1 for _ in open(vocab, encoding="utf-8"))
torch.manual_seed(0)
BertForSequenceClassification(BertConfig(vocab_size=n, num_labels=6)).save_pretrained(out, safe_serialization=True)
shutil.copy(vocab, out + "/vocab.txt")
open(out + "/tokenizer_config.json", "w").write('{"do_lower_case": false, "model_max_length": 512}')
PY
    chmod -R a+rX "$BB"
    q "SELECT version FROM bft_import_model('bert_base', '$BB')" >/dev/null
    bb_how="bert-base-cased shape, random weights (transformers)"
else
    q "CREATE TABLE train64 AS SELECT * FROM train LIMIT 64" >/dev/null
    q "SELECT version FROM bft_train('train64', 'text', 'label', epochs => 1, mlm_epochs => 0, model => 'bert_base',
         architecture => '{\"hidden_size\": 768, \"num_hidden_layers\": 12, \"num_attention_heads\": 12,
                           \"intermediate_size\": 3072, \"vocab_size\": 28996, \"max_position_embeddings\": 512}')" >/dev/null
    bb_how="BERT-base encoder, vocabulary learned from 64 tweets (bft_train; no torch/transformers in $PYTHON)"
fi
for m in bert_base small; do
    echo "# $m: $(q "SELECT round(size / 1048576.0) || ' MB of weights, ' || round(size / 4e6) || ' M parameters' FROM bft.models WHERE name = '$m'")"
done
echo "#   bert_base: $bb_how"

setting() {  # setting VALUE of bft.shared_cache_size, seen by new sessions
    local i
    psql -X -q -d "$DB" -c "LOAD 'bft'" -c "ALTER SYSTEM SET bft.shared_cache_size = '$1'" -c "SELECT pg_reload_conf()" >/dev/null
    for i in $(seq 1 50); do
        [ "$(psql -X -q -t -A -d "$DB" -c "LOAD 'bft'" -c "SELECT current_setting('bft.shared_cache_size')")" = "$1" ] && return
        sleep 0.1
    done
}
TEXT="'Stocks rally as the Fed holds rates steady'"
# sessions MODEL N TAG: start N sessions one after another; each: first call,
# second call, then hold.  Prints "first_ms second_ms" per session to $TMPD/TAG.lat
# and "rss pss pss_shmem" (kB, summed) to $TMPD/TAG.mem; ends the sessions.
sessions() {
    local m="$1" n="$2" tag="$3" i f pids
    : >"$TMPD/$tag.lat"
    for i in $(seq 1 "$n"); do
        f="$TMPD/$tag.$i.out"
        : >"$f"
        # (line-buffered: the second call's time must show while the session holds)
        PGAPPNAME="bench_$tag" stdbuf -oL psql -X -q -t -A -d "$DB" -c '\timing on' -c "SET bft.threads = 1" \
            -c "SELECT bft_classify($TEXT, '$m')" -c "SELECT bft_classify($TEXT, '$m')" \
            -c "SELECT pg_sleep(3600)" >"$f" 2>&1 &
        for _ in $(seq 1 6000); do
            [ "$(grep -c '^Time:' "$f")" -ge 3 ] && break
            grep -q ERROR "$f" && { echo "session $i: $(grep ERROR "$f")"; break; }
            sleep 0.05
        done
        grep '^Time:' "$f" | sed -n '2,3p' | sed -E 's/Time: ([0-9.]+) ms.*/\1/' | paste -sd' ' - >>"$TMPD/$tag.lat"
    done
    sleep 0.5
    pids=$(q "SELECT string_agg(pid::text, ' ') FROM pg_stat_activity WHERE application_name = 'bench_$tag'")
    for p in $pids; do
        awk '/^Rss:/ {r = $2} /^Pss:/ {p = $2} /^Pss_Shmem:/ {s = $2} END {print r, p, s}' "/proc/$p/smaps_rollup"
    done | awk '{r += $1; p += $2; s += $3} END {print r, p, s, NR}' >"$TMPD/$tag.mem"
    q "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE application_name = 'bench_$tag'" >/dev/null
    wait 2>/dev/null
}
med() { sort -n | awk '{a[NR] = $1} END {if (NR) print a[int((NR + 1) / 2)]}'; }
mx() { sort -n | tail -n 1; }
# summary TAG: "first_median first_max second_median rss_MB pss_MB bft_MB sessions" (ms, MB)
summary() {
    local t="$1"
    printf '%.0f %.0f %.0f %s\n' "$(cut -d' ' -f1 "$TMPD/$t.lat" | med)" "$(cut -d' ' -f1 "$TMPD/$t.lat" | mx)" \
        "$(cut -d' ' -f2 "$TMPD/$t.lat" | med)" \
        "$(awk '{printf "%.0f %.0f %.0f %d", $1 / 1024, $2 / 1024, ($2 - $3) / 1024, $4}' "$TMPD/$t.mem")"
}
avail_kb=$(awk '/MemAvailable/ {print $2}' /proc/meminfo)
rows=()
for m in bert_base small; do
    mb=$(q "SELECT ceil(size / 1048576.0) FROM bft.models WHERE name = '$m'")
    # on: the first session publishes; then new sessions map the copy
    setting 1GB
    sessions "$m" 1 "${m}_publish"
    sessions "$m" 1 "${m}_on1"
    sessions "$m" "$SESSIONS" "${m}_onN"
    # off: every session loads a private copy
    setting 0
    noff="${OFF_SESSIONS:-$SESSIONS}"
    cap=$(( avail_kb / 2 / 1024 / (mb + 64) ))
    [ -z "${OFF_SESSIONS:-}" ] && [ "$cap" -lt "$noff" ] && noff=$(( cap > 1 ? cap : 1 ))
    sessions "$m" 1 "${m}_off1"
    sessions "$m" "$noff" "${m}_offN"
    rows+=("$m $mb $noff")
done

echo
echo "First call of a new session: ms, median / max over the sessions (median of the session's second call: the inference alone);"
echo "memory of all the sessions' backends while they hold the model: PSS in MB, summed (bft: without shared buffers)."
fmt='%-10s %-8s | %-20s %-20s %-7s | %-8s %-8s %-7s | %-8s %-8s %-7s\n'
printf "$fmt" model sessions "first call, off" "first call, on" off/on "PSS off" "PSS on" off/on "bft off" "bft on" off/on
ratio() { awk -v a="$1" -v b="$2" 'BEGIN {if (b > 0) printf "%.1fx", a / b; else print "-"}'; }
for r in "${rows[@]}"; do
    set -- $r; m=$1; mb=$2; noff=$3
    read -r pm px pe prss ppss pbft pn <<<"$(summary "${m}_publish")"
    for n in 1 N; do
        read -r fm fx fe frss fpss fbft fn <<<"$(summary "${m}_off$n")"
        read -r nm nx ne nrss npss nbft nn <<<"$(summary "${m}_on$n")"
        printf "$fmt" "$m" "$( [ "$fn" = "$nn" ] && echo "$nn" || echo "$fn/$nn")" \
            "$fm / $fx ($fe)" "$nm / $nx ($ne)" "$(ratio "$fm" "$nm")" \
            "$fpss" "$npss" "$(ratio "$fpss" "$npss")" "$fbft" "$nbft" "$(ratio "$fbft" "$nbft")"
    done
    echo "  $m: $mb MB of weights; the publishing load (first session with the cache on, nothing published yet) took $pm ms;" \
         "RSS summed over $SESSIONS sessions: off $(summary "${m}_offN" | cut -d' ' -f4) MB, on $(summary "${m}_onN" | cut -d' ' -f4) MB"
    [ "$noff" -lt "$SESSIONS" ] && echo "  $m: off with $noff sessions, not $SESSIONS ($SESSIONS private copies would not fit in half of MemAvailable; sessions column: off/on)"
done
