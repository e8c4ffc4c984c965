package ceremony

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"encoding/hex"
	"fmt"
	"math/big"

	"github.com/bnb-chain/tss-lib/v3/common"
	"github.com/bnb-chain/tss-lib/v3/crypto"
	"github.com/bnb-chain/tss-lib/v3/crypto/ckd"
	ecdsakeygen "github.com/bnb-chain/tss-lib/v3/ecdsa/keygen"
	ecdsaresharing "github.com/bnb-chain/tss-lib/v3/ecdsa/resharing"
	ecdsasigning "github.com/bnb-chain/tss-lib/v3/ecdsa/signing"
	"github.com/bnb-chain/tss-lib/v3/tss"
	"github.com/decred/dcrd/dcrec/secp256k1/v4"

	"github.com/hwsigner/signer/protocol"
)

// secp256k1Scheme is threshold ECDSA over secp256k1 (tss-lib's ecdsa
// packages). Its shares are the JSON of ecdsakeygen.LocalPartySaveData; its
// keygen and new reshare parties need pre-params.
type secp256k1Scheme struct{}

func (secp256k1Scheme) KeyType() string      { return protocol.KeyTypeSecp256k1 }
func (secp256k1Scheme) NeedsPreParams() bool { return true }

func (secp256k1Scheme) Keygen(ctx context.Context, s Session, o Options, tr Transport) ([]byte, []byte, error) {
	k, err := KeygenECDSA(ctx, s, o.PreParams, tr)
	if err != nil {
		return nil, nil, err
	}
	share, err := encodeShare(k)
	if err != nil {
		return nil, nil, err
	}
	return share, ECDSAPublicKey(k.ECDSAPub), nil
}

// Sign signs a 32-byte digest, under the child key of d when d is set: the
// share is adjusted with tss-lib's BIP32 code (ChildECDSAKey), which must
// agree with protocol/hd's child key and delta.
func (secp256k1Scheme) Sign(ctx context.Context, s Session, share, digest []byte, d *Derivation, tr Transport) (Signature, error) {
	key, err := decodeShare[ecdsakeygen.LocalPartySaveData](share)
	if err != nil {
		return nil, err
	}
	var kdd *big.Int
	if d != nil {
		child, delta, err := ChildECDSAKey(*key, d.ChainCode, d.Path)
		if err != nil {
			return nil, fmt.Errorf("%w: %w", ErrDerivation, err)
		}
		if got := ECDSAPublicKey(child.ECDSAPub); !bytes.Equal(got, d.Child.PubKey) || delta.Cmp(d.Child.Delta) != 0 {
			return nil, fmt.Errorf("%w: tss-lib gives child key %x, protocol/hd %x", ErrDerivation, got, d.Child.PubKey)
		}
		*key, kdd = child, delta
	}
	sig, err := SignECDSA(ctx, s, *key, digest, kdd, tr)
	if err != nil {
		return nil, err
	}
	if len(sig.SignatureRecovery) == 0 {
		return nil, fmt.Errorf("%w: signature without a recovery id", ErrParty)
	}
	return ecdsaSignature{r: sig.R, s: sig.S, recovery: int(sig.SignatureRecovery[0])}, nil
}

func (secp256k1Scheme) Reshare(ctx context.Context, s ReshareSession, old []byte, o Options, tr Transport) ([]byte, error) {
	var key *ecdsakeygen.LocalPartySaveData
	if old != nil {
		var err error
		if key, err = decodeShare[ecdsakeygen.LocalPartySaveData](old); err != nil {
			return nil, err
		}
	}
	res, err := ReshareECDSA(ctx, s, key, o.PreParams, tr)
	if err != nil || res == nil {
		return nil, err
	}
	return encodeShare(res)
}

func (secp256k1Scheme) ShareKey(share []byte) (*big.Int, error) {
	return shareKey(share)
}

func (secp256k1Scheme) PublicShares(share []byte) ([]PublicShare, error) {
	return publicShares(share)
}

func (secp256k1Scheme) FillPublicKey(res *protocol.Result, pub []byte) {
	res.ECDSAPubKey = hex.EncodeToString(pub)
}

// ecdsaSignature is a secp256k1 signature: r, s and the recovery id.
type ecdsaSignature struct {
	r, s     []byte
	recovery int
}

// Fill sets R, S (zero-padded to 32 bytes), Signature (R||S) and
// SignatureRecovery.
func (g ecdsaSignature) Fill(res *protocol.Result) error {
	return res.SetECDSASignature(g.r, g.s, g.recovery)
}

// KeygenECDSA runs secp256k1 keygen with the given pre-params.
func KeygenECDSA(ctx context.Context, s Session, pre *PreParams, tr Transport) (*ecdsakeygen.LocalPartySaveData, error) {
	if pre == nil {
		return nil, fmt.Errorf("%w: ECDSA keygen needs pre-params", ErrBadParameters)
	}
	ps, p, err := s.params(tss.Secp256k1, nil)
	if err != nil {
		return nil, err
	}
	return runParty(ctx, s, ps, p, echoAwait, tr, func(out chan<- tss.Message, end chan<- *ecdsakeygen.LocalPartySaveData) tss.Party {
		return ecdsakeygen.NewLocalParty(p, out, end, *pre)
	})
}

// SignECDSA signs a 32-byte digest with a secp256k1 share. s.Parties are the
// t+1 signers. kdd is the HD key-derivation delta (nil for the wallet key); the
// key passed in must then already be adjusted to the child key.
func SignECDSA(ctx context.Context, s Session, key ecdsakeygen.LocalPartySaveData, digest []byte, kdd *big.Int, tr Transport) (*common.SignatureData, error) {
	if len(digest) != 32 {
		return nil, fmt.Errorf("%w: ECDSA digest must be 32 bytes, got %d", ErrBadParameters, len(digest))
	}
	ps, p, err := s.params(tss.Secp256k1, key.Ks)
	if err != nil {
		return nil, err
	}
	if err := s.signers(); err != nil {
		return nil, err
	}
	m := new(big.Int).SetBytes(digest)
	return runParty(ctx, s, ps, p, echoPiggyback, tr, func(out chan<- tss.Message, end chan<- *common.SignatureData) tss.Party {
		return ecdsasigning.NewLocalPartyWithKDD(m, p, key, kdd, out, end, len(digest))
	})
}

// ReshareECDSA runs secp256k1 resharing. old is this node's share when it is
// an old party (it is not modified: tss-lib zeroes a copy), pre its fresh
// pre-params when it is a new party. It returns the new share for a new
// party and nil for an old-only party, once its parties finished.
func ReshareECDSA(ctx context.Context, s ReshareSession, old *ecdsakeygen.LocalPartySaveData, pre *PreParams, tr Transport) (*ecdsakeygen.LocalPartySaveData, error) {
	return reshare(ctx, s, reshareKind[ecdsakeygen.LocalPartySaveData]{
		curve: tss.Secp256k1,
		fresh: func(n int) (ecdsakeygen.LocalPartySaveData, error) {
			if pre == nil || !pre.ValidateWithProof() {
				return ecdsakeygen.LocalPartySaveData{}, fmt.Errorf("%w: a new ECDSA party needs complete pre-params", ErrBadParameters)
			}
			save := ecdsakeygen.NewLocalPartySaveData(n)
			save.LocalPreParams = *pre
			return save, nil
		},
		party: func(p *tss.ReSharingParameters, key ecdsakeygen.LocalPartySaveData, out chan<- tss.Message, end chan<- *ecdsakeygen.LocalPartySaveData) tss.Party {
			return ecdsaresharing.NewLocalParty(p, key, out, end)
		},
		pub: func(k *ecdsakeygen.LocalPartySaveData) []byte {
			if k.Xi == nil || k.ECDSAPub == nil {
				return nil
			}
			return ECDSAPublicKey(k.ECDSAPub)
		},
	}, old, tr)
}

// ECDSAPublicKey encodes a tss-lib secp256k1 point as a 33-byte compressed key.
func ECDSAPublicKey(p *crypto.ECPoint) []byte {
	var x, y secp256k1.FieldVal
	x.SetByteSlice(pad(p.X()))
	y.SetByteSlice(pad(p.Y()))
	return secp256k1.NewPublicKey(&x, &y).SerializeCompressed()
}

func pad(v *big.Int) []byte {
	b := v.Bytes()
	if len(b) >= 32 {
		return b
	}
	return append(make([]byte, 32-len(b)), b...)
}

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
