#!/usr/bin/env bash
# make dist: release tarballs in dist/, built from a copy of this checkout with
# its modules vendored (the repository itself gets no vendor/ directory).
#
#   dist/hwsigner-VERSION-GOOS-GOARCH.tar.gz   bin/ (signerd, signerctl[, signer-relay]),
#                                              systemd/, docs/, README.md, install.sh, SHA256SUMS
#   dist/hwsigner-VERSION-src.tar.gz           source + vendor/: `make dist` again, offline
#   dist/SHA256SUMS                            of both tarballs
#
# VERSION is `git describe --always --dirty`, or the VERSION file of an
# unpacked source tarball. The binaries need cgo (PKCS#11 modules are
# dlopen'ed, so libc stays dynamic); everything else is Go: netgo/osusergo,
# -trimpath, stripped.
set -euo pipefail

cd "$(dirname "$0")/.."
top=$PWD
GO=${GO:-go}

vendored=no
if [ -f VERSION ] && [ -d vendor ]; then
	# An unpacked source tarball: rebuild offline from its vendor/.
	version=$(cat VERSION)
	list() { find . \( -path ./dist -o -path ./bin \) -prune -o -type f -printf '%P\0'; }
	mtime=$(stat -c %Y VERSION)
	vendored=yes
elif git rev-parse --git-dir >/dev/null 2>&1; then
	version=$(git describe --always --dirty)
	# The tracked files as they are in the working tree (what -dirty
	# means); untracked files (stray binaries, work in progress) stay out.
	list() { git ls-files -z --cached; }
	mtime=$(git log -1 --format=%ct 2>/dev/null || date +%s)
else
	echo "dist: no git checkout and no VERSION file with vendor/: cannot name the release" >&2
	exit 1
fi
goos=$($GO env GOOS)
goarch=$($GO env GOARCH)
name=hwsigner-$version-$goos-$goarch
srcname=hwsigner-$version-src

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
src=$tmp/$srcname
stage=$tmp/$name
mkdir -p "$src" "$stage/bin" "$stage/systemd" "$stage/docs"

echo "dist: $version: copying sources"
list | while IFS= read -r -d '' f; do
	[ -e "$f" ] || continue # deleted in the working tree
	case $vendored/$f in no/vendor/*) continue ;; esac
	printf '%s\0' "$f"
done | tar --null -T - -cf - | tar -xf - -C "$src"
echo "$version" >"$src/VERSION"

if [ $vendored = no ]; then
	echo "dist: vendoring modules"
	(cd "$src" && $GO mod vendor)
fi

build() {
	(cd "$src" && CGO_ENABLED=1 $GO build -mod=vendor -trimpath -tags netgo,osusergo \
		-ldflags '-s -w' -o "$stage/bin/" "$@")
}
echo "dist: building signerd, signerctl ($goos/$goarch)"
build ./cmd/signerd ./cmd/signerctl
if [ -d "$src/cmd/signer-relay" ]; then
	if build ./cmd/signer-relay; then
		echo "dist: built signer-relay"
	else
		echo "dist: cmd/signer-relay does not build: left out" >&2
	fi
fi

cp systemd/install.sh "$stage/install.sh"
for f in systemd/*; do
	case $f in *.go) continue ;; esac
	[ -f "$f" ] && cp -p "$f" "$stage/systemd/"
done
for f in docs/*; do
	[ -f "$f" ] && cp -p "$f" "$stage/docs/"
done
cp README.md "$stage/"
(cd "$stage" && find . -type f ! -name SHA256SUMS -printf '%P\n' | LC_ALL=C sort | xargs sha256sum >SHA256SUMS)

mkdir -p "$top/dist"
tarball() { # DIR NAME: reproducible tar.gz of $tmp/NAME
	tar --sort=name --owner=0 --group=0 --numeric-owner --mtime="@$mtime" \
		-C "$tmp" -cf - "$1" | gzip -n -9 >"$top/dist/$1.tar.gz"
}
tarball "$name"
tarball "$srcname"
(cd "$top/dist" && sha256sum "$name.tar.gz" "$srcname.tar.gz" >SHA256SUMS)
echo "dist: done"
ls -l "$top/dist/$name.tar.gz" "$top/dist/$srcname.tar.gz"
