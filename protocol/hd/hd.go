// Package hd derives non-hardened child keys of a wallet key, for both key
// types, from public data only: the wallet public key, its chain code and a
// path of indices below 2^31. Clients use it to compute the key a signature
// with a derivation_path verifies under; nodes use it (or tss-lib's own BIP32
// code, which tests check against this package) to compute the additive
// delta that turns their shares of the wallet key x into shares of the child
// key x + delta.
//
// # Chain code
//
// A wallet key gets its chain code from its public key alone:
//
//	chain_code = HMAC-SHA512(key = "hwsigner chain code v1", data = pub || key_type)[:32]
//
// where pub is the key as the keygen result carries it (33-byte compressed
// SEC1 for secp256k1, the 32-byte ed25519 encoding) and key_type is the ASCII
// name ("secp256k1" or "ed25519"). Every node computes the same value with no
// extra ceremony round, and any client that knows the public key can compute
// it too. The trade-off: the chain code is not secret and carries no entropy
// beyond the public key. In non-hardened derivation that costs nothing:
// clients must know the chain code to compute child public keys, so it is
// public anyway, and BIP32's own warning applies unchanged (a child private
// key together with the parent chain code reveals the parent private key;
// here no private key, parent or child, ever exists in one place). What it
// rules out is hardened derivation and keeping a wallet's child keys
// unlinkable from its public key: anyone holding the wallet public key can
// enumerate its children. A random chain code agreed in the keygen ceremony
// would prevent that, at the price of one more round and one more value to
// publish and back up.
//
// # secp256k1: BIP32 CKDpub
//
// For each index i of the path: I = HMAC-SHA512(key = c, data = serP(K) ||
// ser32(i)); IL, IR = I[:32], I[32:]; the child key is parse256(IL)·G + K and
// its chain code IR; IL >= n or a child at infinity is an error (BIP32 says
// to go on with the next index; we report the error and let the caller pick
// another path). The delta is the sum of the IL values mod n.
//
// # ed25519: hwsigner ed25519 ckd v1
//
// Ed25519 has no standard non-hardened derivation that keeps the key a plain
// scalar multiple of the base point (SLIP-0010 is hardened only, BIP32-Ed25519
// needs the clamped secret's bit structure). We use an additive tweak in the
// BIP32 shape: for each index i, with A the 32-byte encoding of the parent
// key and c its chain code,
//
//	T  = HMAC-SHA512(key = c, data = "hwsigner ed25519 ckd v1" || 0x00 || A || ser32(i))
//	C  = HMAC-SHA512(key = c, data = "hwsigner ed25519 ckd v1" || 0x01 || A || ser32(i))
//	t  = T read as a 64-byte little-endian integer, mod L
//	A' = A + t·B,  c' = C[:32]
//
// A child equal to the identity is an error. The delta is the sum of the t
// values mod L; a signature by the child key is an ordinary Ed25519
// signature that crypto/ed25519 verifies under A'.
package hd

import (
	"crypto/hmac"
	"crypto/sha512"
	"encoding/binary"
	"errors"
	"fmt"
	"math/big"

	"filippo.io/edwards25519"
	"github.com/decred/dcrd/dcrec/secp256k1/v4"

	"github.com/hwsigner/signer/protocol"
)

// Domain strings (see the package documentation).
const (
	ChainCodeDomain  = "hwsigner chain code v1"
	Ed25519CKDDomain = "hwsigner ed25519 ckd v1"
)

// ChainCodeSize is the length of a chain code.
const ChainCodeSize = 32

// ErrDerive is wrapped by every error of this package.
var ErrDerive = errors.New("hd: derivation failed")

// Child is a derived key.
type Child struct {
	// PubKey: 33-byte compressed secp256k1 key or 32-byte ed25519 key.
	PubKey []byte
	// ChainCode of the child (32 bytes).
	ChainCode []byte
	// Delta is the child private key minus the wallet private key, reduced
	// mod the group order (n for secp256k1, L for ed25519); 0 for an empty
	// path.
	Delta *big.Int
}

// ChainCode returns the chain code of a wallet public key (see the package
// documentation). pub must be a valid key of keyType.
func ChainCode(keyType string, pub []byte) ([]byte, error) {
	switch keyType {
	case protocol.KeyTypeSecp256k1:
		if _, err := parseSecp256k1(pub); err != nil {
			return nil, err
		}
	case protocol.KeyTypeEd25519:
		if _, err := parseEd25519(pub); err != nil {
			return nil, err
		}
	default:
		return nil, fmt.Errorf("%w: unknown key type %q", ErrDerive, keyType)
	}
	m := hmac.New(sha512.New, []byte(ChainCodeDomain))
	m.Write(pub)
	m.Write([]byte(keyType))
	return m.Sum(nil)[:ChainCodeSize], nil
}

// Derive derives the child of pub (with chain code chainCode) along path.
func Derive(keyType string, pub, chainCode []byte, path []uint32) (*Child, error) {
	if len(chainCode) != ChainCodeSize {
		return nil, fmt.Errorf("%w: chain code of %d bytes, want %d", ErrDerive, len(chainCode), ChainCodeSize)
	}
	if len(path) > protocol.MaxDerivationDepth {
		return nil, fmt.Errorf("%w: path of %d levels, at most %d", ErrDerive, len(path), protocol.MaxDerivationDepth)
	}
	for i, idx := range path {
		if idx >= protocol.HardenedOffset {
			return nil, fmt.Errorf("%w: path[%d] = %d is hardened", ErrDerive, i, idx)
		}
	}
	switch keyType {
	case protocol.KeyTypeSecp256k1:
		return deriveSecp256k1(pub, chainCode, path)
	case protocol.KeyTypeEd25519:
		return deriveEd25519(pub, chainCode, path)
	}
	return nil, fmt.Errorf("%w: unknown key type %q", ErrDerive, keyType)
}

func parseSecp256k1(pub []byte) (*secp256k1.PublicKey, error) {
	pk, err := secp256k1.ParsePubKey(pub)
	if err != nil {
		return nil, fmt.Errorf("%w: secp256k1 public key: %v", ErrDerive, err)
	}
	return pk, nil
}

func deriveSecp256k1(pub, chainCode []byte, path []uint32) (*Child, error) {
	pk, err := parseSecp256k1(pub)
	if err != nil {
		return nil, err
	}
	var k secp256k1.JacobianPoint
	pk.AsJacobian(&k)
	chain := append([]byte(nil), chainCode...)
	var delta secp256k1.ModNScalar
	data := make([]byte, 37)
	for _, idx := range path {
		k.ToAffine()
		copy(data, secp256k1.NewPublicKey(&k.X, &k.Y).SerializeCompressed())
		binary.BigEndian.PutUint32(data[33:], idx)
		m := hmac.New(sha512.New, chain)
		m.Write(data)
		I := m.Sum(nil)
		var il secp256k1.ModNScalar
		if il.SetByteSlice(I[:32]) {
			return nil, fmt.Errorf("%w: secp256k1 index %d: IL >= n (BIP32: use the next index)", ErrDerive, idx)
		}
		var ilG, child secp256k1.JacobianPoint
		secp256k1.ScalarBaseMultNonConst(&il, &ilG)
		secp256k1.AddNonConst(&ilG, &k, &child)
		if (child.X.IsZero() && child.Y.IsZero()) || child.Z.IsZero() {
			return nil, fmt.Errorf("%w: secp256k1 index %d: child at infinity (BIP32: use the next index)", ErrDerive, idx)
		}
		k = child
		delta.Add(&il)
		chain = I[32:]
	}
	k.ToAffine()
	d := delta.Bytes()
	return &Child{
		PubKey:    secp256k1.NewPublicKey(&k.X, &k.Y).SerializeCompressed(),
		ChainCode: chain,
		Delta:     new(big.Int).SetBytes(d[:]),
	}, nil
}

func parseEd25519(pub []byte) (*edwards25519.Point, error) {
	if len(pub) != 32 {
		return nil, fmt.Errorf("%w: ed25519 public key of %d bytes, want 32", ErrDerive, len(pub))
	}
	p, err := new(edwards25519.Point).SetBytes(pub)
	if err != nil {
		return nil, fmt.Errorf("%w: ed25519 public key: %v", ErrDerive, err)
	}
	if string(p.Bytes()) != string(pub) {
		return nil, fmt.Errorf("%w: ed25519 public key is not canonically encoded", ErrDerive)
	}
	if p.Equal(edwards25519.NewIdentityPoint()) == 1 {
		return nil, fmt.Errorf("%w: ed25519 public key is the identity", ErrDerive)
	}
	return p, nil
}

// ed25519Step returns the tweak t and the child chain code of one index.
func ed25519Step(chain, a []byte, idx uint32) (*edwards25519.Scalar, []byte) {
	mac := func(tag byte) []byte {
		m := hmac.New(sha512.New, chain)
		m.Write([]byte(Ed25519CKDDomain))
		m.Write([]byte{tag})
		m.Write(a)
		var i [4]byte
		binary.BigEndian.PutUint32(i[:], idx)
		m.Write(i[:])
		return m.Sum(nil)
	}
	t, err := new(edwards25519.Scalar).SetUniformBytes(mac(0))
	if err != nil {
		panic(err) // 64 bytes: cannot fail
	}
	return t, mac(1)[:ChainCodeSize]
}

func deriveEd25519(pub, chainCode []byte, path []uint32) (*Child, error) {
	a, err := parseEd25519(pub)
	if err != nil {
		return nil, err
	}
	chain := append([]byte(nil), chainCode...)
	delta := edwards25519.NewScalar()
	for _, idx := range path {
		t, next := ed25519Step(chain, a.Bytes(), idx)
		child := new(edwards25519.Point).Add(a, new(edwards25519.Point).ScalarBaseMult(t))
		if child.Equal(edwards25519.NewIdentityPoint()) == 1 {
			return nil, fmt.Errorf("%w: ed25519 index %d: child is the identity", ErrDerive, idx)
		}
		a, chain = child, next
		delta.Add(delta, t)
	}
	return &Child{PubKey: a.Bytes(), ChainCode: chain, Delta: leToBig(delta.Bytes())}, nil
}

func leToBig(le []byte) *big.Int {
	be := make([]byte, len(le))
	for i := range le {
		be[len(le)-1-i] = le[i]
	}
	return new(big.Int).SetBytes(be)
}
