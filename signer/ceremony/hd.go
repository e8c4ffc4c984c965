package ceremony

import (
	"crypto/ecdsa"
	"fmt"
	"math/big"

	"github.com/bnb-chain/tss-lib/v3/crypto"
	"github.com/bnb-chain/tss-lib/v3/crypto/ckd"
	ecdsakeygen "github.com/bnb-chain/tss-lib/v3/ecdsa/keygen"
	ecdsasigning "github.com/bnb-chain/tss-lib/v3/ecdsa/signing"
	eddsakeygen "github.com/bnb-chain/tss-lib/v3/eddsa/keygen"
	"github.com/bnb-chain/tss-lib/v3/tss"
)

// ChildECDSAKey prepares a secp256k1 share for signing under the
// non-hardened BIP32 child of the wallet key along path (chainCode: the
// wallet key's). It uses tss-lib's own BIP32 code (crypto/ckd) and returns a
// copy of key whose public key and BigXj are the child's, and the delta to
// pass to SignECDSA as kdd: tss-lib adds it to the share Xi itself (a share
// of x plus a constant is a share of x + constant, since the Lagrange
// weights of any t+1 signers sum to 1). key is not modified. An empty path
// returns key itself and a zero delta.
func ChildECDSAKey(key ecdsakeygen.LocalPartySaveData, chainCode []byte, path []uint32) (_ ecdsakeygen.LocalPartySaveData, _ *big.Int, err error) {
	defer func() {
		if r := recover(); r != nil { // tss-lib panics on points off the curve
			err = fmt.Errorf("%w: derivation path %v: %v", ErrBadParameters, path, r)
		}
	}()
	if key.ECDSAPub == nil {
		return key, nil, fmt.Errorf("%w: share without a public key", ErrBadParameters)
	}
	if len(chainCode) != 32 {
		return key, nil, fmt.Errorf("%w: chain code of %d bytes, want 32", ErrBadParameters, len(chainCode))
	}
	if len(path) == 0 {
		return key, new(big.Int), nil
	}
	ec := tss.S256()
	parent := &ckd.ExtendedKey{
		PublicKey: ecdsa.PublicKey{Curve: ec, X: key.ECDSAPub.X(), Y: key.ECDSAPub.Y()},
		ChainCode: chainCode,
		ParentFP:  []byte{0, 0, 0, 0},
	}
	delta, child, err := ckd.DeriveChildKeyFromHierarchy(path, parent, ec.Params().N, ec)
	if err != nil {
		return key, nil, fmt.Errorf("%w: derivation path %v: %v", ErrBadParameters, path, err)
	}
	out := key
	out.BigXj = append([]*crypto.ECPoint(nil), key.BigXj...) // the library adjusts BigXj in place
	keys := []ecdsakeygen.LocalPartySaveData{out}
	if err := ecdsasigning.UpdatePublicKeyAndAdjustBigXj(delta, keys, &child.PublicKey, ec); err != nil {
		return key, nil, fmt.Errorf("%w: adjusting the share to the child key: %v", ErrBadParameters, err)
	}
	return keys[0], delta, nil
}

// ChildEdDSAKey returns a copy of an ed25519 share whose secret is a share of
// x + delta (delta: the sum of the path's tweaks, hd.Derive's Delta): tss-lib's
// EdDSA signing has no key-derivation-delta parameter, so the copy carries
// Xi + delta, every BigXj + delta·G and EDDSAPub + delta·G. Adding the same
// constant to every Shamir share shifts the shared secret by that constant
// because the Lagrange weights of any t+1 signers sum to 1. key is not
// modified; the copy lives in memory only and must never be sealed.
func ChildEdDSAKey(key eddsakeygen.LocalPartySaveData, delta *big.Int) (eddsakeygen.LocalPartySaveData, error) {
	if key.EDDSAPub == nil || key.Xi == nil {
		return key, fmt.Errorf("%w: share without a secret or public key", ErrBadParameters)
	}
	ec := tss.Edwards()
	n := ec.Params().N
	if delta == nil || delta.Sign() < 0 || delta.Cmp(n) >= 0 {
		return key, fmt.Errorf("%w: delta out of range", ErrBadParameters)
	}
	out := key
	if delta.Sign() == 0 {
		return out, nil
	}
	dG := crypto.ScalarBaseMult(ec, delta)
	xi := new(big.Int).Add(key.Xi, delta)
	out.Xi = xi.Mod(xi, n)
	out.BigXj = make([]*crypto.ECPoint, len(key.BigXj))
	for j, X := range key.BigXj {
		p, err := X.Add(dG)
		if err != nil {
			return key, fmt.Errorf("%w: BigXj[%d] + delta·G: %v", ErrBadParameters, j, err)
		}
		out.BigXj[j] = p
	}
	pub, err := key.EDDSAPub.Add(dG)
	if err != nil {
		return key, fmt.Errorf("%w: public key + delta·G: %v", ErrBadParameters, err)
	}
	out.EDDSAPub = pub
	return out, nil
}
