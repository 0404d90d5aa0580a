# What scripts/package.sh and check-package.sh name a release by (sourced,
# with $root set): the version, the commit (-dirty for a changed tree), the
# architecture as etcd's releases and Debian name it, and the file names.
version=$(tr -d '[:space:]' < "$root/VERSION")
sha=$(git -C "$root" rev-parse --short HEAD 2>/dev/null || echo unknown)
if [ "$sha" != unknown ] && [ -n "$(git -C "$root" status --porcelain --untracked-files=no)" ]; then sha=$sha-dirty; fi
case $(uname -m) in x86_64) arch=amd64 ;; aarch64) arch=arm64 ;; *) arch=$(uname -m) ;; esac
debarch=$(dpkg --print-architecture)
tarball_name=swetcd-v$version-linux-$arch
deb_name=swetcd_${version}_$debarch.deb
