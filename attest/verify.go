package attest

import (
	"crypto/ed25519"
	"encoding/hex"
	"errors"
	"fmt"

	"github.com/decred/dcrd/dcrec/secp256k1/v4"
	"github.com/decred/dcrd/dcrec/secp256k1/v4/ecdsa"
	"github.com/hwsigner/signer/protocol"
)

// ErrVerify: an independent signature check (VerifyECDSA, VerifyEd25519,
// VerifySignResult, VerifySignature) failed. client.ErrVerify is the same
// value.
var ErrVerify = errors.New("attest: signature verification failed")

// VerifySignature checks a sign success against its pub_key over the signed
// message msg (the request's tx: a 32-byte digest for secp256k1, the whole
// message for ed25519), for callers that know the message. Nodes put the key
// that signed in pub_key (the wallet key, or the child key of a
// derivation_path). It does not tell whether pub_key is the wallet's key:
// that is what t+1 identical results attest. Errors wrap ErrVerify.
func VerifySignature(res *protocol.Result, msg []byte) error {
	if res == nil || !res.Succeeded() || res.Op != protocol.OpSign {
		return fmt.Errorf("%w: not a successful signing result", ErrVerify)
	}
	pub, err := hex.DecodeString(res.PubKey)
	if err != nil || len(pub) == 0 {
		return fmt.Errorf("%w: pub_key missing or not hex", ErrVerify)
	}
	return VerifySignResult(res, pub, msg)
}

// VerifySignResult checks a successful signing result against the public
// key that signed (for a derivation path: the derived child key) and the tx
// that was submitted: r, s, signature_recovery and signature (= r||s) for
// secp256k1, signature for ed25519. Errors wrap ErrVerify.
func VerifySignResult(res *protocol.Result, pub, tx []byte) error {
	if res == nil || !res.Succeeded() {
		return fmt.Errorf("%w: not a successful result", ErrVerify)
	}
	switch res.KeyType {
	case protocol.KeyTypeSecp256k1:
		r, err1 := hex.DecodeString(res.R)
		s, err2 := hex.DecodeString(res.S)
		if err1 != nil || err2 != nil || len(r) != 32 || len(s) != 32 {
			return fmt.Errorf("%w: r and s must be 32-byte hex", ErrVerify)
		}
		if res.Signature != res.R+res.S {
			return fmt.Errorf("%w: signature is not r||s", ErrVerify)
		}
		return VerifyECDSA(pub, tx, r, s, res.SignatureRecovery)
	case protocol.KeyTypeEd25519:
		sig, err := hex.DecodeString(res.Signature)
		if err != nil {
			return fmt.Errorf("%w: signature is not hex", ErrVerify)
		}
		return VerifyEd25519(pub, tx, sig)
	}
	return fmt.Errorf("%w: key type %q", ErrVerify, res.KeyType)
}

// VerifyECDSA checks a secp256k1 ECDSA signature (r, s: big-endian, at most
// 32 bytes each) over a 32-byte digest with a compressed (33-byte) or
// uncompressed (65-byte) public key, and that the recovery id (0-3) recovers
// that same public key. It does not require a low S. It is independent of
// tss-lib. Errors wrap ErrVerify.
func VerifyECDSA(pub, digest32, r, s []byte, recovery int) error {
	pk, err := secp256k1.ParsePubKey(pub)
	if err != nil {
		return fmt.Errorf("%w: public key: %w", ErrVerify, err)
	}
	if len(digest32) != protocol.DigestSize {
		return fmt.Errorf("%w: digest of %d bytes, want 32", ErrVerify, len(digest32))
	}
	var rs, ss secp256k1.ModNScalar
	if err := setScalar(&rs, r); err != nil {
		return fmt.Errorf("%w: r: %w", ErrVerify, err)
	}
	if err := setScalar(&ss, s); err != nil {
		return fmt.Errorf("%w: s: %w", ErrVerify, err)
	}
	if !ecdsa.NewSignature(&rs, &ss).Verify(digest32, pk) {
		return fmt.Errorf("%w: ECDSA signature does not verify", ErrVerify)
	}
	if recovery < 0 || recovery > 3 {
		return fmt.Errorf("%w: recovery id %d, want 0..3", ErrVerify, recovery)
	}
	compact := make([]byte, 65)
	compact[0] = byte(27 + 4 + recovery) // compressed-key form; only the key matters
	rb, sb := rs.Bytes(), ss.Bytes()
	copy(compact[1:33], rb[:])
	copy(compact[33:], sb[:])
	recovered, _, err := ecdsa.RecoverCompact(compact, digest32)
	if err != nil {
		return fmt.Errorf("%w: recovery id %d: %w", ErrVerify, recovery, err)
	}
	if !recovered.IsEqual(pk) {
		return fmt.Errorf("%w: recovery id %d recovers another public key", ErrVerify, recovery)
	}
	return nil
}

func setScalar(v *secp256k1.ModNScalar, b []byte) error {
	for len(b) > 32 && b[0] == 0 {
		b = b[1:]
	}
	if len(b) == 0 || len(b) > 32 {
		return fmt.Errorf("%d bytes, want 1..32", len(b))
	}
	if v.SetByteSlice(b) {
		return errors.New("not below the group order")
	}
	if v.IsZero() {
		return errors.New("zero")
	}
	return nil
}

// VerifyEd25519 checks an Ed25519 signature over the whole message. Errors
// wrap ErrVerify.
func VerifyEd25519(pub, msg, sig []byte) error {
	if len(pub) != ed25519.PublicKeySize {
		return fmt.Errorf("%w: ed25519 public key of %d bytes, want 32", ErrVerify, len(pub))
	}
	if len(sig) != ed25519.SignatureSize {
		return fmt.Errorf("%w: ed25519 signature of %d bytes, want 64", ErrVerify, len(sig))
	}
	if !ed25519.Verify(ed25519.PublicKey(pub), msg, sig) {
		return fmt.Errorf("%w: ed25519 signature does not verify", ErrVerify)
	}
	return nil
}
