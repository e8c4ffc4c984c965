#!/usr/bin/env bash
# Installs the Go toolchain go.mod asks for when `go` is missing or older,
# for a fresh Debian machine: the official toolchain module from the Go
# module proxy (the same zip `go` itself downloads for GOTOOLCHAIN), checked
# against the checksum database (sum.golang.org) before anything is
# installed. Installs into $GO_ROOT_DIR (default /usr/local/go, only if it
# does not exist yet) and links $GO_BIN_DIR/go (default /usr/local/bin).
#
#   softhsm-test/install-go.sh            # reads the version from go.mod
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
want=$(awk '$1 == "go" {print $2; exit}' "$root/go.mod")
[ -n "$want" ] || { echo "install-go: no go line in go.mod" >&2; exit 1; }

version_ok() { # have want: true if have >= want
  [ "$(printf '%s\n%s\n' "$2" "$1" | sort -V | head -1)" = "$2" ]
}
if command -v go >/dev/null 2>&1; then
  have=$(go env GOVERSION 2>/dev/null | sed 's/^go//')
  if [ -n "$have" ] && version_ok "$have" "$want"; then
    exit 0
  fi
fi

case "$(uname -m)" in
  x86_64) arch=amd64 ;;
  aarch64) arch=arm64 ;;
  *) echo "install-go: unsupported machine $(uname -m); install Go $want from https://go.dev/dl" >&2; exit 1 ;;
esac
proxy=${GOPROXY_URL:-https://proxy.golang.org}
sumdb=${GOSUMDB_URL:-$proxy/sumdb/sum.golang.org}
mod="golang.org/toolchain"
ver="v0.0.1-go${want}.linux-${arch}"
dest=${GO_ROOT_DIR:-/usr/local/go}
bindir=${GO_BIN_DIR:-/usr/local/bin}
if [ -e "$dest" ]; then
  echo "install-go: $dest exists but holds no Go >= $want; remove it or set GO_ROOT_DIR" >&2
  exit 1
fi
if ! mkdir -p "$(dirname "$dest")" "$bindir" 2>/dev/null || [ ! -w "$(dirname "$dest")" ] || [ ! -w "$bindir" ]; then
  echo "install-go: cannot write $(dirname "$dest") and $bindir: run as root, or set GO_ROOT_DIR and GO_BIN_DIR" >&2
  exit 1
fi
for tool in curl unzip sha256sum base64; do
  command -v "$tool" >/dev/null 2>&1 || { apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q curl unzip coreutils >/dev/null; break; }
done

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
echo "install-go: downloading Go $want ($mod@$ver) from $proxy" >&2
curl -fsSL -o "$tmp/go.zip" "$proxy/$mod/@v/$ver.zip"

# The checksum database's hash for this module version (h1: = dirhash
# Hash1: SHA-256 over "sha256(file)  path\n" lines sorted by path).
want_h1=$(curl -fsSL "$sumdb/lookup/$mod@$ver" | awk -v m="$mod" -v v="$ver" '$1 == m && $2 == v {print $3; exit}')
[ -n "$want_h1" ] || { echo "install-go: no checksum for $mod@$ver in $sumdb" >&2; exit 1; }
mkdir "$tmp/x"
(cd "$tmp/x" && unzip -q "$tmp/go.zip")
got_h1="h1:$(cd "$tmp/x" && find . -type f | sed 's|^\./||' | LC_ALL=C sort |
  while IFS= read -r f; do printf '%s  %s\n' "$(sha256sum "$f" | cut -d' ' -f1)" "$f"; done |
  sha256sum | cut -d' ' -f1 | xxd -r -p 2>/dev/null | base64 || true)"
if [ "$got_h1" = "h1:" ]; then # no xxd: hex to binary with printf
  got_h1="h1:$(cd "$tmp/x" && find . -type f | sed 's|^\./||' | LC_ALL=C sort |
    while IFS= read -r f; do printf '%s  %s\n' "$(sha256sum "$f" | cut -d' ' -f1)" "$f"; done |
    sha256sum | cut -d' ' -f1 | sed 's/../\\x&/g' | xargs -0 printf '%b' | base64)"
fi
if [ "$got_h1" != "$want_h1" ]; then
  echo "install-go: checksum mismatch for $mod@$ver: got $got_h1, the checksum database says $want_h1" >&2
  exit 1
fi
src="$tmp/x/$mod@$ver"
chmod -R u+w "$src"
chmod +x "$src"/bin/* "$src"/pkg/tool/*/*
mkdir -p "$(dirname "$dest")" "$bindir"
mv "$src" "$dest"
ln -sf "$dest/bin/go" "$bindir/go"
ln -sf "$dest/bin/gofmt" "$bindir/gofmt"
echo "install-go: Go $want installed in $dest ($bindir/go)" >&2
