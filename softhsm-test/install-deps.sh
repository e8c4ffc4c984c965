#!/usr/bin/env bash
# Installs what the tests and the demo need, if missing: Go (install-go.sh),
# then the Debian packages SoftHSM2 (PKCS#11 token), swtpm (TPM 2.0
# simulator) and gcc (cgo for PKCS#11).
set -euo pipefail
# Go first (the version go.mod names), from the module proxy, checksum-verified.
bash "$(dirname "$0")/install-go.sh"
need=()
[ -e /usr/lib/softhsm/libsofthsm2.so ] || need+=(softhsm2)
command -v swtpm >/dev/null 2>&1 || need+=(swtpm swtpm-tools)
command -v gcc >/dev/null 2>&1 || need+=(gcc libc6-dev)
if [ ${#need[@]} -eq 0 ]; then
  exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
  SUDO=sudo
else
  SUDO=
fi
echo "installing: ${need[*]}" >&2
$SUDO apt-get update -q >/dev/null
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q "${need[@]}" >/dev/null
