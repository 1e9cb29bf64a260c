#!/usr/bin/env bash
# test_build.sh — the engine, bft-cli and the unit tests build where no
# pg_config is installed, and the default build is portable:
#   - with pg_config hidden from PATH, `make engine cli unit` builds into a
#     fresh BUILD directory (USE_CUDA=0: nvcc is slow and beside the point);
#     its test_ops passes and bft-cli runs;
#     `make install` fails with a message naming what is missing;
#   - in that build, the only machine code using AVX/AVX-512 registers is in
#     the run-time-chosen versions of the CPU backend's loops (*.arch_x86_64_v3 /
#     *.arch_x86_64_v4), so the rest runs on any x86-64;
#   - bft.control, META.json, debian/changelog and CHANGELOG.md name one version.
# Ends with "RESULT: P passed, F failed".
set -uo pipefail
cd "$(dirname "$0")/../.."
PASS=0; FAIL=0
check() { if eval "$1"; then echo "ok - $2"; PASS=$((PASS + 1)); else echo "FAIL - $2"; FAIL=$((FAIL + 1)); fi; }
T=$(mktemp -d "${BFT_TMP:-/tmp}/bft-build.XXXXXX")
trap 'rm -rf "$T"' EXIT

# a PATH with every command of the current one except pg_config
mkdir -p "$T/bin"
IFS=: read -r -a dirs <<<"$PATH"
for d in "${dirs[@]}"; do
    [ -d "$d" ] || continue
    for f in "$d"/*; do
        n=$(basename "$f")
        [ "$n" = pg_config ] && continue
        [ -x "$f" ] && [ ! -e "$T/bin/$n" ] && ln -s "$f" "$T/bin/$n"
    done
done
NOPG="env -u PG_CONFIG PATH=$T/bin"
check "! $NOPG sh -c 'command -v pg_config' >/dev/null" "pg_config is not on the test's PATH"

$NOPG make -s -j"$(nproc)" USE_CUDA=0 BUILD="$T/build" engine cli unit >"$T/make.log" 2>&1; rc=$?
[ $rc -ne 0 ] && tail -n 20 "$T/make.log"
check "[ $rc -eq 0 ] && [ -f '$T/build/libbftengine.a' ] && [ -x '$T/build/bft-cli' ] && [ -x '$T/build/tests/test_ops' ]" \
    "make engine cli unit without pg_config builds the engine, bft-cli and the unit tests"
out=$("$T/build/tests/test_ops" 2>&1 | grep '^RESULT')
check "echo '$out' | grep -q 'RESULT: [1-9][0-9]* passed, 0 failed'" "its test_ops passes ($out)"
check "'$T/build/bft-cli' info --model tests/data/ckpt/tiny 2>&1 | grep -qi 'hidden'" "its bft-cli reads a checkpoint"
out=$($NOPG make -s BUILD="$T/build" install 2>&1); rc=$?
check "[ $rc -ne 0 ] && echo '$out' | grep -q 'pg_config not found'" "make install without pg_config fails and says why"

# one version everywhere: bft.control, META.json, debian/changelog, CHANGELOG.md
v=$(sed -n "s/^default_version = '\(.*\)'/\1/p" bft.control)
vm=$(grep -m1 '"version"' META.json | sed 's/.*: *"\(.*\)".*/\1/')
vp=$(sed -n '/"provides"/,/"prereqs"/p' META.json | grep '"version"' | sed 's/.*: *"\(.*\)".*/\1/')
vd=$(head -n 1 debian/changelog | sed 's/.*(\(.*\)-[^-]*).*/\1/')
vc=$(grep -m1 '^## ' CHANGELOG.md | awk '{print $2}')
check "[ -n '$v' ] && [ '$vm' = '$v' ] && [ '$vp' = '$v' ] && [ '$vd' = '$v' ] && [ '$vc' = '$v' ] && [ -f 'sql/bft--$v.sql' ]" \
    "one version ($v) in bft.control, META.json ($vm, provides $vp), debian/changelog ($vd), CHANGELOG.md ($vc), sql/bft--$v.sql"

# AVX registers (ymm/zmm) only in the run-time-chosen clones
objdump -d --no-show-raw-insn "$T/build/libbftengine.a" >"$T/dis.txt"
awk '/^[0-9a-f]+ <.*>:$/ { fn = $2; next } /%[yz]mm/ { print fn }' "$T/dis.txt" | sort -u >"$T/avx_fns.txt"
bad=$(grep -v -E '\.arch_x86_64_v[34]>:$' "$T/avx_fns.txt" | tr '\n' ' ')
n=$(wc -l <"$T/avx_fns.txt")
check "[ -z '$bad' ] && [ $n -gt 10 ]" "AVX/AVX-512 code only in the $n run-time-chosen clones${bad:+ (also in: $bad)}"

echo "RESULT: $PASS passed, $FAIL failed"
[ "$FAIL" -eq 0 ]
