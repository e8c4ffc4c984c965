#!/usr/bin/env bash
# Creates a private SoftHSM2 config and token store in DIR (never the
# machine's global /etc/softhsm), a token LABEL in it with random PINs kept in
# 0600 files, and the node's wrapping and identity keys in the token.
#
#   softhsm-test/softhsm-setup.sh DIR LABEL
#
# Uses signerctl (from $SIGNERCTL, else PATH, else `go run ./cmd/signerctl`):
# PINs reach SoftHSM2 through the PKCS#11 API from the files, never through a
# command line. Prints, and writes to DIR/LABEL.env:
#   SOFTHSM2_CONF=DIR/softhsm2.conf
#   KEY_URI=pkcs11:token=LABEL;object=share-kek?module-path=...&pin-source=file:DIR/LABEL.pin
# Every process that opens the token needs that SOFTHSM2_CONF in its environment.
set -euo pipefail
dir=${1:?usage: softhsm-setup.sh DIR LABEL}
label=${2:?usage: softhsm-setup.sh DIR LABEL}
module=/usr/lib/softhsm/libsofthsm2.so
[ -e "$module" ] || { echo "softhsm-setup: $module missing (apt install softhsm2, or softhsm-test/install-deps.sh)" >&2; exit 3; }
mkdir -p "$dir/tokens"
chmod 700 "$dir" "$dir/tokens"
dir=$(cd "$dir" && pwd)
conf="$dir/softhsm2.conf"
if [ ! -f "$conf" ]; then
  printf 'directories.tokendir = %s/tokens\nobjectstore.backend = file\nlog.level = ERROR\n' "$dir" >"$conf"
  chmod 600 "$conf"
fi
export SOFTHSM2_CONF=$conf

if [ -n "${SIGNERCTL:-}" ]; then
  signerctl=("$SIGNERCTL")
elif command -v signerctl >/dev/null 2>&1; then
  signerctl=(signerctl)
else
  root=$(cd "$(dirname "$0")/.." && pwd)
  signerctl=(go run -C "$root" ./cmd/signerctl)
fi

umask 077
for f in "$label.pin" "$label.so-pin"; do
  [ -s "$dir/$f" ] || head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$dir/$f"
done
uri="pkcs11:token=$label;object=share-kek?module-path=$module&pin-source=file:$dir/$label.pin"
"${signerctl[@]}" token init --module "$module" --label "$label" \
  --pin-source "file:$dir/$label.pin" --so-pin-source "file:$dir/$label.so-pin" >/dev/null
"${signerctl[@]}" init --key-uri "$uri" >"$dir/$label.identity.pem"
{
  echo "SOFTHSM2_CONF=$conf"
  echo "KEY_URI='$uri'"
  echo "IDENTITY_PEM=$dir/$label.identity.pem"
} >"$dir/$label.env"
cat "$dir/$label.env"
