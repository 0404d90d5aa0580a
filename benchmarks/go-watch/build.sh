#!/usr/bin/env bash
# Builds go-watch offline against Debian's etcd 3.4 Go sources
# (apt-get install -y golang-go golang-etcd-server-dev), as Kubernetes'
# clientv3. Prints the binary's path.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
out=${1:-$here/go-watch}
command -v go >/dev/null || { echo "go missing: apt-get install -y golang-go golang-etcd-server-dev" >&2; exit 1; }
GOPATH=/usr/share/gocode GO111MODULE=off GOCACHE=${GOCACHE:-/tmp/swetcd-go-cache} \
  go build -o "$out" "$here/main.go"
echo "$out"
