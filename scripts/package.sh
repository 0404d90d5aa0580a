#!/usr/bin/env bash
# Release packages, as etcd ships: release builds of swetcd and swetcdctl
# with the Swift runtime linked in (they need no Swift toolchain where they
# run), a tarball laid out as etcd's release tarball, and a Debian package.
#   scripts/package.sh [OUT_DIR]      (default: dist/)
# Writes OUT_DIR/swetcd-v<version>-linux-<arch>.tar.gz and
# OUT_DIR/swetcd_<version>_<debian arch>.deb. The version is VERSION's; the
# commit, which --version prints, is HEAD's (with -dirty for a changed tree).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
out=$(realpath -m "${1:-$root/dist}")
# shellcheck source=release-names.sh
. "$root/scripts/release-names.sh"
scratch=$root/.build-package

# The defines reach CBuildInfo's header; a separate scratch path keeps them
# (and the static runtime) out of the development build.
# glibc's linker warns of `mktemp` where the toolchain's static Foundation
# refers to it (FoundationEssentials' temporary files); that one line,
# not ours, is left out.
mkdir -p "$out"
work=$(mktemp -d /tmp/swetcd-package-XXXXXX)
trap 'rm -rf "$work"' EXIT
for product in swetcd swetcdctl; do
  status=0
  swift build --package-path "$root" -c release --static-swift-stdlib --scratch-path "$scratch" --product "$product" \
    -Xcc "-DSWETCD_BUILD_VERSION=\"$version\"" -Xcc "-DSWETCD_BUILD_GIT_SHA=\"$sha\"" > "$work/build.log" 2>&1 || status=$?
  grep -v "libFoundationEssentials.a(Data+Writing.swift.o).*the use of \`mktemp' is dangerous" "$work/build.log" || true
  [ "$status" -eq 0 ] || { echo "package build of $product failed" >&2; exit 1; }
done

# The two binaries, stripped (as Debian installs binaries).
binaries() {
  install -d "$1"
  for b in swetcd swetcdctl; do
    install -m 755 "$scratch/release/$b" "$1/$b"
    strip --strip-unneeded --remove-section=.comment --remove-section=.note "$1/$b"
  done
}

# The tarball: one directory, the binaries at its root, then what a user
# needs to start (etcd's has README.md, README-etcdctl.md, Documentation/).
name=$tarball_name
binaries "$work/$name"
install -m 644 "$root/README.md" "$work/$name/README.md"
install -d "$work/$name/docs"
for doc in operations.md cli.md api-compat.md architecture.md; do install -m 644 "$root/docs/$doc" "$work/$name/docs/$doc"; done
tar -C "$work" --owner=0 --group=0 --numeric-owner --sort=name -czf "$out/$name.tar.gz" "$name"
echo "$out/$name.tar.gz"

# The Debian package (see packaging/debian/ for the unit, defaults and
# maintainer scripts, modelled on Debian's etcd-server).
deb=$work/deb
binaries "$deb/usr/bin"
install -D -m 644 "$root/packaging/debian/swetcd.service" "$deb/lib/systemd/system/swetcd.service"
install -D -m 644 "$root/packaging/debian/swetcd.default" "$deb/etc/default/swetcd"
install -d "$deb/usr/share/doc/swetcd" "$deb/DEBIAN"
install -m 644 "$root/packaging/debian/copyright" "$deb/usr/share/doc/swetcd/copyright"
sed "s/@VERSION@/$version/; s/@DATE@/$(date -R -u -d @"$(git -C "$root" log -1 --format=%ct 2>/dev/null || date +%s)")/" \
  "$root/packaging/debian/changelog" | gzip -9n > "$deb/usr/share/doc/swetcd/changelog.gz"
for script in postinst postrm; do install -m 755 "$root/packaging/debian/$script" "$deb/DEBIAN/$script"; done
echo /etc/default/swetcd > "$deb/DEBIAN/conffiles"
# Depends: exactly the packages of the shared libraries the binaries load,
# as dpkg-shlibdeps finds them (it wants a debian/control to sit beside).
mkdir -p "$work/shlibs/debian"
printf 'Source: swetcd\n\nPackage: swetcd\nArchitecture: any\n' > "$work/shlibs/debian/control"
depends=$(cd "$work/shlibs" && dpkg-shlibdeps -O "$deb/usr/bin/swetcd" "$deb/usr/bin/swetcdctl" | sed -n 's/^shlibs:Depends=//p')
size=$(du -sk --exclude=DEBIAN "$deb" | cut -f1)
sed "s/@VERSION@/$version/; s/@ARCH@/$debarch/; s/@DEPENDS@/$depends/; s/@SIZE@/$size/" \
  "$root/packaging/debian/control" > "$deb/DEBIAN/control"
(cd "$deb" && find usr lib etc -type f ! -path 'etc/*' -print0 | sort -z | xargs -0 md5sum > DEBIAN/md5sums)
package=$out/$deb_name
dpkg-deb --root-owner-group -Zxz --build "$deb" "$package" > /dev/null
echo "$package"
