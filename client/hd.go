package client

import (
	"encoding/hex"
	"fmt"
	"strconv"
	"strings"

	"github.com/hwsigner/signer/protocol"
	"github.com/hwsigner/signer/protocol/hd"
)

// ChainCode returns the chain code of a wallet key: the nodes derive it from
// the public key alone (see package protocol/hd and docs/hd-derivation.md),
// so a client that knows the wallet public key computes the same value. pub
// is a keygen result's ecdsa_pub_key (33-byte compressed) or eddsa_pub_key
// (32 bytes), decoded from hex.
func ChainCode(keyType string, pub []byte) ([]byte, error) {
	return hd.ChainCode(keyType, pub)
}

// DeriveChildPublicKey returns the public key that a signing request with
// this derivation_path is signed under: BIP32 CKDpub for secp256k1 (33-byte
// compressed key) and the hwsigner ed25519 non-hardened scheme for ed25519
// (32-byte key). pub and chainCode are the wallet key's; an empty path gives
// pub back. Every index must be below 2^31.
func DeriveChildPublicKey(keyType string, pub, chainCode []byte, path []uint32) ([]byte, error) {
	c, err := hd.Derive(keyType, pub, chainCode, path)
	if err != nil {
		return nil, err
	}
	return c.PubKey, nil
}

// WalletKey returns a keygen result's public key of keyType and its chain
// code.
func WalletKey(res *protocol.Result, keyType string) (pub, chainCode []byte, err error) {
	if res == nil || !res.Succeeded() {
		return nil, nil, fmt.Errorf("client: not a successful keygen result")
	}
	var h string
	switch keyType {
	case protocol.KeyTypeSecp256k1:
		h = res.ECDSAPubKey
	case protocol.KeyTypeEd25519:
		h = res.EdDSAPubKey
	default:
		return nil, nil, fmt.Errorf("client: unknown key type %q", keyType)
	}
	if h == "" {
		return nil, nil, fmt.Errorf("client: the keygen result has no %s key", keyType)
	}
	if pub, err = hex.DecodeString(h); err != nil {
		return nil, nil, fmt.Errorf("client: %s public key is not hex: %w", keyType, err)
	}
	if chainCode, err = ChainCode(keyType, pub); err != nil {
		return nil, nil, err
	}
	return pub, chainCode, nil
}

// ParseDerivationPath reads a path written "m/44/60/0/0/7" (the leading "m/"
// is optional; "m" or "" alone is the empty path). Every index must be a
// decimal below 2^31: hardened steps ("44'", "44h", "44H") are refused, since
// only non-hardened derivation works from a public key.
func ParseDerivationPath(s string) ([]uint32, error) {
	s = strings.TrimSpace(s)
	if s == "" || s == "m" {
		return nil, nil
	}
	s = strings.TrimPrefix(s, "m/")
	parts := strings.Split(s, "/")
	if len(parts) > protocol.MaxDerivationDepth {
		return nil, fmt.Errorf("client: derivation path of %d levels, at most %d", len(parts), protocol.MaxDerivationDepth)
	}
	path := make([]uint32, len(parts))
	for i, p := range parts {
		if strings.ContainsAny(p, "'hH") {
			return nil, fmt.Errorf("client: derivation path step %q is hardened; only non-hardened steps are supported", p)
		}
		v, err := strconv.ParseUint(p, 10, 32)
		if err != nil || v >= protocol.HardenedOffset {
			return nil, fmt.Errorf("client: derivation path step %q is not a decimal index below 2^31", p)
		}
		path[i] = uint32(v)
	}
	return path, nil
}

// FormatDerivationPath writes path as "m/44/60/0/0/7".
func FormatDerivationPath(path []uint32) string {
	var b strings.Builder
	b.WriteString("m")
	for _, i := range path {
		b.WriteString("/")
		b.WriteString(strconv.FormatUint(uint64(i), 10))
	}
	return b.String()
}
