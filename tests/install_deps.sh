#!/usr/bin/env bash
# Install the Debian 12 packages bft needs to build, run and test.
# Skips apt entirely when everything is already installed.
set -euo pipefail
PKGS=(build-essential pkg-config postgresql-15 postgresql-server-dev-15 postgresql-15-cron
      postgresql-contrib libopenblas-dev libjson-c-dev libcsv-dev libicu-dev
      clang-14 libclang-rt-14-dev libipc-run-perl)
missing=()
for p in "${PKGS[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0
SUDO=""
[ "$(id -u)" -ne 0 ] && SUDO="sudo"
echo "installing: ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -q
$SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"
