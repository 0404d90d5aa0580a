#!/usr/bin/env bash
# Installs the Debian packages swetcd builds and tests with, skipping the
# apt round trip when they are all present already. Run as root.
set -euo pipefail
packages=(
  pkg-config libevent-dev libssl-dev libnghttp2-dev liblmdb-dev  # C libraries (Package.swift)
)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq "${missing[@]}"
fi
