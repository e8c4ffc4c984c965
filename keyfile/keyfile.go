// Package keyfile reads and writes the text forms of the keys the protocol
// accepts (Ed25519 and ECDSA P-256, the keys protocol.KeyID accepts): a
// public key as a PEM "PUBLIC KEY" block or base64 of its PKIX DER (client
// keys in the node's client policy, node identity keys in peer lists), and a
// client's private key as a PEM PKCS#8 "PRIVATE KEY" file.
//
// It is its own package because the policy, the relay config, signerd's and
// signerctl's peer lists and client key files all read these forms, and none
// of them is part of the wire format.
package keyfile

import (
	"bytes"
	"crypto"
	"crypto/ed25519"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"fmt"
	"strings"

	"github.com/hwsigner/signer/internal/secret"
	"github.com/hwsigner/signer/protocol"
)

// supported returns pub as an ed25519.PublicKey or a P-256 *ecdsa.PublicKey,
// or an error wrapping protocol.ErrUnsupportedKey: a key is supported when
// it has a protocol key ID.
func supported(pub crypto.PublicKey) (crypto.PublicKey, error) {
	if p, ok := pub.(*ed25519.PublicKey); ok && p != nil {
		pub = *p
	}
	if _, err := protocol.KeyID(pub); err != nil {
		return nil, err
	}
	return pub, nil
}

// ParsePublicKey parses a PEM "PUBLIC KEY" block or base64 (standard) PKIX
// DER into an Ed25519 or ECDSA P-256 public key. Errors wrap
// protocol.ErrUnsupportedKey.
func ParsePublicKey(s string) (crypto.PublicKey, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return nil, fmt.Errorf("%w: empty public key", protocol.ErrUnsupportedKey)
	}
	var der []byte
	if strings.HasPrefix(s, "-----BEGIN") {
		block, rest := pem.Decode([]byte(s))
		if block == nil || block.Type != "PUBLIC KEY" || len(bytes.TrimSpace(rest)) != 0 {
			return nil, fmt.Errorf("%w: want exactly one PEM PUBLIC KEY block", protocol.ErrUnsupportedKey)
		}
		der = block.Bytes
	} else {
		var err error
		if der, err = base64.StdEncoding.DecodeString(strings.Join(strings.Fields(s), "")); err != nil {
			return nil, fmt.Errorf("%w: not PEM nor base64: %v", protocol.ErrUnsupportedKey, err)
		}
	}
	pub, err := x509.ParsePKIXPublicKey(der)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", protocol.ErrUnsupportedKey, err)
	}
	return supported(pub)
}

// ParsePrivateKeyPEM parses a PEM PKCS#8 "PRIVATE KEY" block (a client key
// file) into a signer. It zeroes the DER it decoded; b stays the caller's to
// zero. Errors never include key material.
func ParsePrivateKeyPEM(b []byte) (crypto.Signer, error) {
	blk, _ := pem.Decode(b)
	if blk == nil {
		return nil, errors.New("not PEM")
	}
	defer secret.Zero(blk.Bytes)
	k, err := x509.ParsePKCS8PrivateKey(blk.Bytes)
	if err != nil {
		return nil, fmt.Errorf("not a PKCS#8 private key: %w", err)
	}
	s, ok := k.(crypto.Signer)
	if !ok {
		return nil, errors.New("not a signing key")
	}
	return s, nil
}

// MarshalPublicKeyPEM encodes an Ed25519 or ECDSA P-256 public key as a PEM
// "PUBLIC KEY" block, the form policy files and peer lists use.
func MarshalPublicKeyPEM(pub crypto.PublicKey) (string, error) {
	pub, err := supported(pub)
	if err != nil {
		return "", err
	}
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return "", fmt.Errorf("%w: %v", protocol.ErrUnsupportedKey, err)
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})), nil
}
