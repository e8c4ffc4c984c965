package client

import (
	"github.com/hwsigner/signer/attest"
	"github.com/hwsigner/signer/protocol"
)

// The checks live in package attest (which the client and signer-relay
// share); these are the client's names for them.

// VerifyECDSA checks a secp256k1 ECDSA signature (r, s: big-endian, at most
// 32 bytes each) over a 32-byte digest with a compressed (33-byte) or
// uncompressed (65-byte) public key, and that the recovery id (0-3) recovers
// that same public key. It does not require a low S. It is independent of
// tss-lib: use it to check what the cluster returned. Errors wrap ErrVerify.
func VerifyECDSA(pub, digest32, r, s []byte, recovery int) error {
	return attest.VerifyECDSA(pub, digest32, r, s, recovery)
}

// VerifyEd25519 checks an Ed25519 signature over the whole message. Errors
// wrap ErrVerify.
func VerifyEd25519(pub, msg, sig []byte) error {
	return attest.VerifyEd25519(pub, msg, sig)
}

// VerifySignResult checks a successful signing result against the public
// key that signed (for a derivation path: the derived child key) and the tx
// that was submitted: r, s, signature_recovery and signature (= r||s) for
// secp256k1, signature for ed25519. Errors wrap ErrVerify. SignAndWait
// already checks the signature against the result's pub_key
// (attest.VerifySignature); this checks it against a key the caller knows,
// such as the wallet key from its keygen result.
func VerifySignResult(res *protocol.Result, pub, tx []byte) error {
	return attest.VerifySignResult(res, pub, tx)
}
