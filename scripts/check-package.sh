#!/usr/bin/env bash
# Checks what scripts/package.sh made, as a user without Swift would meet it:
#   scripts/check-package.sh [DIR]       (default: dist/; run as root)
# The tarball: one top-level directory with the binaries at its root and the
# docs; neither binary loads a library from the Swift toolchain; both print
# VERSION and the commit; ./swetcd, started with a bare environment, serves
# its embedded default to ./swetcdctl and to the real etcdctl (the origin
# document's commands: put, get --prefix --keys-only --limit, watch
# --prefix, snapshot save, endpoint health). The Debian
# package: lintian finds no error; apt-get installs it with exactly the
# libraries it needs; the unit's ExecStart line, run by hand as the unit
# would (its user, /etc/default/swetcd's variables), serves clients;
# dpkg -r keeps /var/lib/swetcd and dpkg -P removes it.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
dir=$(realpath "${1:-$root/dist}")
# shellcheck source=release-names.sh
. "$root/scripts/release-names.sh"
name=$tarball_name
deb=$dir/$deb_name
toolchain=$(dirname "$(dirname "$(readlink -f "$(command -v swift)")")")
work=$(mktemp -d /tmp/swetcd-check-package-XXXXXX)
server=
fail() { echo "check-package: $*" >&2; exit 1; }
cleanup() {
  [ -n "$server" ] && kill "$server" 2> /dev/null && wait "$server" 2> /dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
etcdctl() { ETCDCTL_API=3 /usr/bin/etcdctl --endpoints="127.0.0.1:$port" --dial-timeout=5s "$@"; }
# Waits until the server on $port is healthy (10 s at most).
healthy() {
  for _ in $(seq 100); do
    etcdctl endpoint health > /dev/null 2>&1 && return 0
    sleep 0.1
  done
  fail "the server on port $port never became healthy"
}
stop_server() { kill "$server"; wait "$server" || true; server=; }
# The origin document's commands, with the client `$@` (its --endpoints
# given): put, get --prefix --keys-only --limit, watch --prefix, snapshot
# save, endpoint health.
origin_commands() {
  local tag=$1; shift
  [ "$("$@" put "/registry/pods/$tag-a" 1)" = OK ] && [ "$("$@" put "/registry/pods/$tag-b" 2)" = OK ] || fail "$tag: put"
  [ "$("$@" get --prefix --keys-only --limit 1 "/registry/pods/$tag-")" = "/registry/pods/$tag-a" ] || fail "$tag: get --prefix --keys-only --limit"
  # A watch from the first revision replays what is there, so nothing
  # depends on when it starts.
  "$@" watch --prefix --rev=1 "/registry/pods/$tag-" > "$work/$tag.watch" 2>&1 &
  local watch=$! i
  for i in $(seq 100); do [ "$(grep -c "^/registry/pods/$tag-" "$work/$tag.watch")" = 2 ] && break; sleep 0.1; done
  kill "$watch"; wait "$watch" 2> /dev/null || true
  [ "$(grep -c "^/registry/pods/$tag-" "$work/$tag.watch")" = 2 ] || fail "$tag: watch --prefix: $(cat "$work/$tag.watch")"
  "$@" snapshot save "$work/$tag.db" > /dev/null 2>&1 && [ -s "$work/$tag.db" ] || fail "$tag: snapshot save"
  "$@" endpoint health 2>&1 | grep -q "is healthy" || fail "$tag: endpoint health"
}

echo "== tarball $name.tar.gz"
tar -C "$work" -xzf "$dir/$name.tar.gz"
listing=$(tar -tzf "$dir/$name.tar.gz" | sort | tr '\n' ' ')
expected="$name/ $name/README.md $name/docs/ $name/docs/api-compat.md $name/docs/architecture.md $name/docs/cli.md $name/docs/operations.md $name/swetcd $name/swetcdctl "
[ "$listing" = "$expected" ] || fail "the tarball holds: $listing"
cd "$work/$name"
for b in swetcd swetcdctl; do
  libraries=$(env -i /usr/bin/ldd "./$b")
  ! grep -q "$toolchain\|libswift\|libFoundation\|not found" <<< "$libraries" || fail "$b loads from the toolchain: $libraries"
done
[ "$(env -i ./swetcd --version | sed -n '1,2p')" = "swetcd Version: $version
Git SHA: $sha" ] || fail "swetcd --version: $(env -i ./swetcd --version)"
[ "$(env -i ./swetcdctl --version | sed -n '1,2p')" = "swetcdctl version: $version
Git SHA: $sha" ] || fail "swetcdctl --version: $(env -i ./swetcdctl --version)"
# The embedded default, as README's first command runs it (its port is
# taken only if nothing else holds 2379).
port=2379
! etcdctl endpoint health > /dev/null 2>&1 || port=$(free_port)
flags=()
[ "$port" = 2379 ] || flags=(--listen-client-urls "http://127.0.0.1:$port" --advertise-client-urls "http://127.0.0.1:$port")
env -i PATH=/usr/bin:/bin ./swetcd "${flags[@]}" > "$work/tarball.log" 2>&1 &
server=$!
healthy
[ -d default.swetcd ] || fail "no ./default.swetcd"
origin_commands swetcdctl env -i ./swetcdctl --endpoints="127.0.0.1:$port"
origin_commands etcdctl env -i ETCDCTL_API=3 /usr/bin/etcdctl --endpoints="127.0.0.1:$port"
stop_server
echo "tarball ok: no toolchain library, --version $version ($sha); put, get, watch, snapshot save, endpoint health with ./swetcdctl and etcdctl"

echo "== lintian"
report=$(lintian "$deb" 2>&1 | grep -v "running with root privileges" || true)
echo "$report"
! grep -q "^E:" <<< "$report" || fail "lintian reports errors"

echo "== apt-get install $deb"
dpkg -r swetcd > /dev/null 2>&1 || true
needed=$(for b in swetcd swetcdctl; do objdump -p "$work/$name/$b" | awk '/NEEDED/ { print $2 }'; done | sort -u)
depends=$(dpkg-deb -f "$deb" Depends)
for library in $needed; do
  owner=$(dpkg -S "*/$library" 2> /dev/null | head -1 | cut -d: -f1)
  grep -q "$owner " <<< "$depends, " || grep -q "$owner," <<< "$depends, " || fail "Depends lacks $owner (for $library): $depends"
done
[ "$(tr ',' '\n' <<< "$depends" | grep -cv 'adduser')" = "$(for library in $needed; do dpkg -S "*/$library" | head -1 | cut -d: -f1; done | sort -u | wc -l)" ] \
  || fail "Depends names more than the libraries loaded: $depends ($needed)"
DEBIAN_FRONTEND=noninteractive apt-get install -y "$deb" > "$work/apt.log" 2>&1 || { cat "$work/apt.log"; fail "apt-get install"; }
getent passwd swetcd > /dev/null || fail "no swetcd user"
[ "$(stat -c %U:%a /var/lib/swetcd)" = swetcd:700 ] || fail "/var/lib/swetcd: $(stat -c %U:%a /var/lib/swetcd)"
[ "$(swetcd --version | sed -n 1p)" = "swetcd Version: $version" ] || fail "installed swetcd --version"
# The unit's ExecStart, by hand: its Environment= lines, then
# /etc/default/swetcd, as its user (these machines have no systemd).
unit=/lib/systemd/system/swetcd.service
exec_start=$(sed -n 's/^ExecStart=//p' "$unit")
port=$(free_port)
(
  export DAEMON_ARGS= ETCD_NAME=$(hostname) ETCD_DATA_DIR=/var/lib/swetcd/default
  set -a
  # shellcheck disable=SC1091
  . /etc/default/swetcd
  set +a
  export ETCD_LISTEN_CLIENT_URLS=http://127.0.0.1:$port ETCD_ADVERTISE_CLIENT_URLS=http://127.0.0.1:$port
  exec runuser -u swetcd -- sh -c "exec $exec_start"
) > "$work/unit.log" 2>&1 &
server=$!
healthy
[ "$(etcdctl put from-the-unit 1)" = OK ] || fail "etcdctl put to the unit's server"
[ -d /var/lib/swetcd/default/member ] || fail "no data in /var/lib/swetcd/default"
[ "$(stat -c %U /var/lib/swetcd/default/member)" = swetcd ] || fail "the data is not the swetcd user's"
stop_server
dpkg -r swetcd > /dev/null
[ -d /var/lib/swetcd/default/member ] || fail "dpkg -r removed /var/lib/swetcd"
[ ! -e /usr/bin/swetcd ] || fail "dpkg -r left /usr/bin/swetcd"
dpkg -P swetcd > /dev/null
[ ! -e /var/lib/swetcd ] || fail "dpkg -P kept /var/lib/swetcd"
! getent passwd swetcd > /dev/null || fail "dpkg -P kept the swetcd user"
echo "package ok: Depends: $depends; the unit's ExecStart served clients; dpkg -r kept the data, dpkg -P removed it"
