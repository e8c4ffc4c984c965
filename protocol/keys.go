package protocol

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"fmt"
)

// KeyID returns the identifier of a client or node public key: lowercase hex
// of the first 16 bytes of SHA-256 over its PKIX (SubjectPublicKeyInfo) DER
// encoding. Only Ed25519 and ECDSA P-256 keys are accepted.
func KeyID(pub crypto.PublicKey) (string, error) {
	pub, err := normalizePublicKey(pub)
	if err != nil {
		return "", err
	}
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return "", fmt.Errorf("%w: %v", ErrUnsupportedKey, err)
	}
	sum := sha256.Sum256(der)
	return hex.EncodeToString(sum[:16]), nil
}

// normalizePublicKey returns an ed25519.PublicKey or a P-256 *ecdsa.PublicKey.
func normalizePublicKey(pub crypto.PublicKey) (crypto.PublicKey, error) {
	switch k := pub.(type) {
	case ed25519.PublicKey:
		if len(k) != ed25519.PublicKeySize {
			return nil, fmt.Errorf("%w: ed25519 key of %d bytes", ErrUnsupportedKey, len(k))
		}
		return k, nil
	case *ed25519.PublicKey:
		if k == nil {
			return nil, fmt.Errorf("%w: nil key", ErrUnsupportedKey)
		}
		return normalizePublicKey(*k)
	case *ecdsa.PublicKey:
		if k == nil || k.Curve != elliptic.P256() {
			return nil, fmt.Errorf("%w: ECDSA keys must be on P-256", ErrUnsupportedKey)
		}
		return k, nil
	}
	return nil, fmt.Errorf("%w: %T", ErrUnsupportedKey, pub)
}

// signBytes signs msg: Ed25519 directly (crypto.Hash(0)), ECDSA P-256 over
// SHA-256(msg) with an ASN.1 DER signature. The signer may block (HSM, KMS):
// it runs in its own goroutine so that ctx is honoured. The signature is
// verified before it is returned, so a faulty token is caught here.
func signBytes(ctx context.Context, signer crypto.Signer, msg []byte) ([]byte, error) {
	if signer == nil {
		return nil, fmt.Errorf("%w: nil signer", ErrUnsupportedKey)
	}
	pub, err := normalizePublicKey(signer.Public())
	if err != nil {
		return nil, err
	}
	digest, opts := msg, crypto.SignerOpts(crypto.Hash(0))
	if _, ok := pub.(*ecdsa.PublicKey); ok {
		sum := sha256.Sum256(msg)
		digest, opts = sum[:], crypto.SHA256
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	type outcome struct {
		sig []byte
		err error
	}
	done := make(chan outcome, 1)
	go func() {
		sig, err := signer.Sign(rand.Reader, digest, opts)
		done <- outcome{sig, err}
	}()
	select {
	case <-ctx.Done():
		return nil, ctx.Err()
	case o := <-done:
		if o.err != nil {
			return nil, fmt.Errorf("protocol: signer: %w", o.err)
		}
		if !verifyBytes(pub, msg, o.sig) {
			return nil, fmt.Errorf("%w: the signer produced a signature that does not verify", ErrInvalidSignature)
		}
		return o.sig, nil
	}
}

// verifyBytes checks sig over msg with a normalized public key.
func verifyBytes(pub crypto.PublicKey, msg, sig []byte) bool {
	switch k := pub.(type) {
	case ed25519.PublicKey:
		return ed25519.Verify(k, msg, sig)
	case *ecdsa.PublicKey:
		sum := sha256.Sum256(msg)
		return ecdsa.VerifyASN1(k, sum[:], sig)
	}
	return false
}
