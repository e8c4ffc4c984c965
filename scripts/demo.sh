#!/usr/bin/env bash
# make demo: start a local 3-node cluster (embedded NATS, one SoftHSM2 token per
# node), create a wallet, sign with both key types, verify each signature with a
# verifier that is not tss-lib, and print what happened.
set -euo pipefail
cd "$(dirname "$0")/.."
DIR=${DEMO_DIR:-.demo}
BIN=bin
say() { printf '\n== %s\n' "$*"; }

say "checking dependencies (softhsm2, swtpm, gcc)"
bash softhsm-test/install-deps.sh
say "building signerd and signerctl"
go build -o "$BIN/" ./cmd/signerd ./cmd/signerctl

rm -rf "$DIR"
mkdir -p "$DIR"
say "starting signerd dev: embedded NATS + 3 nodes, 2-of-3, state in $DIR"
# The demo uses the public test pre-params so that it takes seconds, not
# minutes; a wallet made this way is NOT secure (signerd warns about it).
"$BIN/signerd" dev --nodes 3 --threshold 2 --dir "$DIR" --test-preparams testdata/preparams.json >"$DIR/signerd.log" 2>&1 &
PID=$!
trap 'kill $PID 2>/dev/null; wait $PID 2>/dev/null || true' EXIT
for _ in $(seq 1 120); do
  [ -f "$DIR/cluster.json" ] && break
  kill -0 $PID 2>/dev/null || { cat "$DIR/signerd.log"; echo "signerd dev exited" >&2; exit 1; }
  sleep 0.5
done
[ -f "$DIR/cluster.json" ] || { echo "cluster did not start; see $DIR/signerd.log" >&2; exit 1; }
grep -E "NATS URL|client key|cluster info" "$DIR/signerd.log" || true
CTL=("$BIN/signerctl" --cluster "$DIR/cluster.json" --client-id demo)

say "creating wallet demo-wallet (ECDSA keygen with DLN and mod proofs: a few seconds on 2 cores)"
"${CTL[@]}" wallet create --wallet demo-wallet --json >"$DIR/wallet.json"
ECPUB=$(sed -E 's/.*"ecdsa_pub_key":"([0-9a-f]+)".*/\1/' "$DIR/wallet.json")
EDPUB=$(sed -E 's/.*"eddsa_pub_key":"([0-9a-f]+)".*/\1/' "$DIR/wallet.json")
echo "secp256k1 public key: $ECPUB"
echo "ed25519 public key:   $EDPUB"

DIGEST=$(printf 'send 0.1 BTC to bc1qdemo' | sha256sum | cut -c1-64)
say "signing digest $DIGEST with secp256k1 (2 of 3 nodes)"
"${CTL[@]}" sign --wallet demo-wallet --key-type secp256k1 --digest "$DIGEST" --json >"$DIR/sig-ecdsa.json"
SIG=$(sed -E 's/.*"signature":"([0-9a-f]+)".*/\1/' "$DIR/sig-ecdsa.json")
REC=$(sed -E 's/.*"signature_recovery":([0-9]+).*/\1/' "$DIR/sig-ecdsa.json")

MSG=0000$(printf 'hello from the threshold signer' | od -An -tx1 | tr -d ' \n')
say "signing message $MSG with ed25519 (leading zero bytes kept)"
"${CTL[@]}" sign --wallet demo-wallet --key-type ed25519 --message "$MSG" --json >"$DIR/sig-eddsa.json"
ESIG=$(sed -E 's/.*"signature":"([0-9a-f]+)".*/\1/' "$DIR/sig-eddsa.json")

say "verifying both signatures independently of tss-lib (decred secp256k1 with key recovery, crypto/ed25519)"
"$BIN/signerctl" verify --key-type secp256k1 --pub-key "$ECPUB" --message "$DIGEST" --signature "$SIG" --recovery-id "$REC"
"$BIN/signerctl" verify --key-type ed25519 --pub-key "$EDPUB" --message "$MSG" --signature "$ESIG"
if command -v openssl >/dev/null 2>&1; then
  # A second, unrelated verifier for ed25519: OpenSSL.
  printf '302a300506032b6570032100%s' "$EDPUB" | xxd -r -p >"$DIR/ed.der" 2>/dev/null &&
  printf '%s' "$MSG" | xxd -r -p >"$DIR/msg.bin" && printf '%s' "$ESIG" | xxd -r -p >"$DIR/sig.bin" &&
  openssl pkeyutl -verify -pubin -keyform DER -inkey "$DIR/ed.der" -rawin -in "$DIR/msg.bin" -sigfile "$DIR/sig.bin" || true
fi

say "result"
printf '{"key_type":"secp256k1","pub_key":"%s","message":"%s","signature":"%s","recovery_id":%s}\n' "$ECPUB" "$DIGEST" "$SIG" "$REC"
printf '{"key_type":"ed25519","pub_key":"%s","message":"%s","signature":"%s"}\n' "$EDPUB" "$MSG" "$ESIG"
