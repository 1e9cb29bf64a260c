#!/usr/bin/env bash
# test_deb.sh — the Debian package, end to end (heavy: downloads about
# 300 MB from a Debian mirror and takes several minutes; not part of
# tests/run_all.sh):
#
#   1. build postgresql-15-bft from this working tree with dpkg-buildpackage
#      (debian/rules: pg_buildext, postgresql-server-dev-all);
#   2. create a fresh Debian 12 root with debootstrap (minbase, from
#      $BFT_DEBIAN_MIRROR, default http://deb.debian.org/debian) and install
#      the .deb there with apt, which pulls PostgreSQL 15 and the libraries
#      from the mirror; check its files and that bft.so finds every library;
#   3. in that root, with only loopback networking (its own network
#      namespace), run debian/tests/installcheck as autopkgtest would:
#      pg_buildext installcheck, i.e. the pg_regress tests (sql/, expected/)
#      in a throwaway cluster of the installed server with the installed
#      extension (the test depends, as debian/tests/control says, on
#      postgresql-server-dev-all and make, installed from the mirror);
#   4. there too, debian/tests/tap: the TAP tests (tests/t, make
#      prove_installcheck) against the installed package, as user postgres.
#
# Usage (as root, on Debian 12): bash tests/package/test_deb.sh
#   KEEP=1              keep the work directory (root, build) for inspection
#   BFT_SKIP_DEPS=1     do not install the build tools (debhelper,
#                       postgresql-server-dev-all, debootstrap, bft's build deps)
#   BFT_DEB_CACHE=dir   where the downloaded base system is kept between runs
#                       (default build/package-cache; the root itself is new each run)
# Ends with "RESULT: P passed, F failed".
set -uo pipefail
cd "$(dirname "$0")/../.."
ROOT_DIR=$PWD
MIRROR=${BFT_DEBIAN_MIRROR:-http://deb.debian.org/debian}
CACHE=${BFT_DEB_CACHE:-$ROOT_DIR/build/package-cache}
PASS=0; FAIL=0
ok() { echo "ok - $1"; PASS=$((PASS + 1)); }
fail() { echo "FAIL - $1"; FAIL=$((FAIL + 1)); }
check() { if eval "$1"; then ok "$2"; else fail "$2"; fi; }
finish() { echo "RESULT: $PASS passed, $FAIL failed"; [ "$FAIL" -eq 0 ]; exit $?; }

[ "$(id -u)" -eq 0 ] || { echo "test_deb.sh: needs root (debootstrap, chroot)"; fail "run as root"; finish; }
if [ "${BFT_SKIP_DEPS:-0}" != 1 ]; then
    bash tests/install_deps.sh >/dev/null || { fail "bft's build dependencies (tests/install_deps.sh)"; finish; }
    need=""
    for p in debhelper dpkg-dev fakeroot postgresql-server-dev-all debootstrap; do
        dpkg -s "$p" >/dev/null 2>&1 || need="$need $p"
    done
    [ -z "$need" ] || DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends $need >/dev/null \
        || { fail "install the packaging tools:$need"; finish; }
fi

W=$(mktemp -d "${BFT_TMP:-/var/tmp}/bft-deb.XXXXXX")
R="$W/root"
MOUNTS=()
cleanup() {
    local i
    for ((i = ${#MOUNTS[@]} - 1; i >= 0; i--)); do umount -l "${MOUNTS[$i]}" 2>/dev/null; done
    if [ "${KEEP:-0}" = 1 ]; then echo "kept $W"; else rm -rf "$W"; fi
}
trap cleanup EXIT
echo "work directory: $W"

# ---- 1. build the package --------------------------------------------------
mkdir -p "$W/build/src"
git ls-files -co --exclude-standard | tar -cf - -T - | tar -C "$W/build/src" -xf -
( cd "$W/build/src" && dpkg-buildpackage -us -uc -b ) >"$W/build.log" 2>&1; rc=$?
DEB=$(ls "$W"/build/postgresql-15-bft_*_amd64.deb 2>/dev/null | head -n 1)
[ $rc -ne 0 ] && tail -n 30 "$W/build.log"
check "[ $rc -eq 0 ] && [ -n '$DEB' ]" "dpkg-buildpackage builds $(basename "${DEB:-postgresql-15-bft.deb}") with pg_buildext"
[ -n "$DEB" ] || finish
files=$(dpkg-deb -c "$DEB")
check "echo '$files' | grep -q 'usr/lib/postgresql/15/lib/bft.so' && echo '$files' | grep -q 'usr/share/postgresql/15/extension/bft.control' && echo '$files' | grep -q 'bft--0.1.0--0.2.0.sql'" \
    "the package holds bft.so, bft.control and the SQL scripts (fresh and upgrade)"
check "! echo '$files' | grep -q bft_cuda.so" "the package has no CUDA module (Debian main has no CUDA)"
echo "  Depends: $(dpkg-deb -f "$DEB" Depends)"

# ---- 2. a fresh Debian 12 root, the package installed with apt ---------------
mkdir -p "$CACHE"
TARBALL="$CACHE/bookworm-minbase.tgz"
if [ ! -s "$TARBALL" ]; then
    debootstrap --variant=minbase --make-tarball="$TARBALL.tmp" bookworm "$W/tarball-work" "$MIRROR" \
        >"$W/debootstrap-download.log" 2>&1 && mv "$TARBALL.tmp" "$TARBALL"
    rm -rf "$W/tarball-work"
fi
debootstrap --variant=minbase --unpack-tarball="$TARBALL" bookworm "$R" "$MIRROR" >"$W/debootstrap.log" 2>&1; rc=$?
[ $rc -ne 0 ] && tail -n 20 "$W/debootstrap.log"
check "[ $rc -eq 0 ] && grep -q '^12' '$R/etc/debian_version'" "debootstrap made a fresh Debian $(cat "$R/etc/debian_version" 2>/dev/null) root"
[ $rc -eq 0 ] || finish

mnt() { mount "$@" && MOUNTS+=("${@: -1}"); }
mnt -t proc proc "$R/proc"
mnt -t sysfs sys "$R/sys"
mnt --bind /dev "$R/dev"
mnt -t tmpfs -o mode=1777 shm "$R/dev/shm"
cp /etc/resolv.conf "$R/etc/resolv.conf"
printf '#!/bin/sh\nexit 101\n' >"$R/usr/sbin/policy-rc.d"; chmod 755 "$R/usr/sbin/policy-rc.d"   # start no services
cat >"$R/etc/apt/sources.list" <<EOF
deb $MIRROR bookworm main
deb $MIRROR bookworm-updates main
deb http://security.debian.org/debian-security bookworm-security main
EOF
mkdir -p "$R/srv/bft"
cp "$DEB" "$R/srv/bft/"
# the test files (sql/, expected/, tests/data/ckpt, debian/) readable by the server's user
git ls-files -co --exclude-standard | tar -cf - -T - | tar -C "$R/srv/bft" --one-top-level=src -xf -
chmod -R a+rX "$R/srv/bft"
in_root() { chroot "$R" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LANG=C.UTF-8 \
    DEBIAN_FRONTEND=noninteractive "$@"; }

in_root apt-get update >"$W/apt.log" 2>&1
in_root apt-get install -y --no-install-recommends "/srv/bft/$(basename "$DEB")" >>"$W/apt.log" 2>&1; rc=$?
[ $rc -ne 0 ] && tail -n 20 "$W/apt.log"
check "[ $rc -eq 0 ] && in_root dpkg -s postgresql-15-bft 2>/dev/null | grep -q 'Status: install ok installed'" \
    "apt installs the package and its dependencies (PostgreSQL 15, OpenBLAS, json-c, ICU) from the mirror"
echo "  installed: $(in_root dpkg-query -W -f '${Package} ${Version}, ' postgresql-15-bft postgresql-15 libopenblas0 2>/dev/null)"
missing=$(in_root ldd /usr/lib/postgresql/15/lib/bft.so 2>&1 | grep 'not found')
check "[ -z '$missing' ] && in_root test -e /usr/lib/x86_64-linux-gnu/libopenblas.so.0" \
    "bft.so finds every library it links, and libopenblas.so.0 (loaded at run time) is there${missing:+ ($missing)}"

# ---- 3. installcheck against the installed package -------------------------
in_root apt-get install -y --no-install-recommends postgresql-server-dev-all make >>"$W/apt.log" 2>&1; rc=$?
check "[ $rc -eq 0 ]" "the test's dependencies (debian/tests/control: postgresql-server-dev-all, make)"
# its own network namespace: the throwaway cluster's port cannot meet the host's
unshare --net sh -c "ip link set lo up 2>/dev/null || true
    chroot '$R' /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LANG=C.UTF-8 \
        sh -c 'cd /srv/bft/src && debian/tests/installcheck'" >"$W/installcheck.log" 2>&1; rc=$?
sed -n '/^test \|^ok \|^not ok \|tests passed\|failed/p' "$W/installcheck.log" | sed 's/^/  /'
[ $rc -ne 0 ] && tail -n 40 "$W/installcheck.log"
check "[ $rc -eq 0 ] && grep -qE 'All [0-9]+ tests passed' '$W/installcheck.log' && ! grep -qE 'tests? failed' '$W/installcheck.log'" \
    "pg_buildext installcheck (pg_regress and isolation) in the fresh root: $(grep -oE 'All [0-9]+ tests passed|[0-9]+ of [0-9]+ tests failed' "$W/installcheck.log" | paste -sd, -)"

# ---- 4. the TAP tests against the installed package ---------------------------
in_root apt-get install -y --no-install-recommends libipc-run-perl >>"$W/apt.log" 2>&1
unshare --net sh -c "ip link set lo up 2>/dev/null || true
    chroot '$R' /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LANG=C.UTF-8 \
        sh -c 'cd /srv/bft/src && debian/tests/tap'" >"$W/tap.log" 2>&1; rc=$?
p=$(grep -cE '^ok [0-9]+' "$W/tap.log" || true); f=$(grep -cE '^not ok [0-9]+' "$W/tap.log" || true)
grep -E '^tests/t/.*\.\. |^Files=|^Result' "$W/tap.log" | sed 's/^/  /'
[ $rc -ne 0 ] && grep -E '^not ok|Bail|Dubious' "$W/tap.log" | head -n 20
check "[ $rc -eq 0 ] && [ $p -gt 0 ] && [ $f -eq 0 ]" \
    "the TAP tests (debian/tests/tap: make prove_installcheck) in the fresh root: $p ok, $f not ok"
finish
