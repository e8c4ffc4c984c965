package ceremony

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/hex"
	"fmt"
	"math/big"

	"github.com/bnb-chain/tss-lib/v3/common"
	"github.com/bnb-chain/tss-lib/v3/crypto"
	eddsakeygen "github.com/bnb-chain/tss-lib/v3/eddsa/keygen"
	eddsaresharing "github.com/bnb-chain/tss-lib/v3/eddsa/resharing"
	eddsasigning "github.com/bnb-chain/tss-lib/v3/eddsa/signing"
	"github.com/bnb-chain/tss-lib/v3/tss"

	"github.com/hwsigner/signer/protocol"
)

// ed25519Scheme is threshold EdDSA over ed25519 (tss-lib's eddsa packages).
// Its shares are the JSON of eddsakeygen.LocalPartySaveData; it needs no
// pre-params.
type ed25519Scheme struct{}

func (ed25519Scheme) KeyType() string      { return protocol.KeyTypeEd25519 }
func (ed25519Scheme) NeedsPreParams() bool { return false }

func (ed25519Scheme) Keygen(ctx context.Context, s Session, _ Options, tr Transport) ([]byte, []byte, error) {
	k, err := KeygenEdDSA(ctx, s, tr)
	if err != nil {
		return nil, nil, err
	}
	share, err := encodeShare(k)
	if err != nil {
		return nil, nil, err
	}
	return share, EdDSAPublicKey(k.EDDSAPub), nil
}

// Sign signs a message of any length, under the child key of d when d is
// set: the share is shifted by d's delta in memory (ChildEdDSAKey), and the
// shifted share's public key must be protocol/hd's child key.
func (ed25519Scheme) Sign(ctx context.Context, s Session, share, msg []byte, d *Derivation, tr Transport) (Signature, error) {
	key, err := decodeShare[eddsakeygen.LocalPartySaveData](share)
	if err != nil {
		return nil, err
	}
	if d != nil {
		child, err := ChildEdDSAKey(*key, d.Child.Delta)
		if err != nil {
			return nil, fmt.Errorf("%w: %w", ErrDerivation, err)
		}
		if got := EdDSAPublicKey(child.EDDSAPub); !bytes.Equal(got, d.Child.PubKey) {
			return nil, fmt.Errorf("%w: shifted share has public key %x, protocol/hd %x", ErrDerivation, got, d.Child.PubKey)
		}
		*key = child
	}
	sig, err := SignEdDSA(ctx, s, *key, msg, tr)
	if err != nil {
		return nil, err
	}
	return eddsaSignature(sig.Signature), nil
}

func (ed25519Scheme) Reshare(ctx context.Context, s ReshareSession, old []byte, _ Options, tr Transport) ([]byte, error) {
	var key *eddsakeygen.LocalPartySaveData
	if old != nil {
		var err error
		if key, err = decodeShare[eddsakeygen.LocalPartySaveData](old); err != nil {
			return nil, err
		}
	}
	res, err := ReshareEdDSA(ctx, s, key, tr)
	if err != nil || res == nil {
		return nil, err
	}
	return encodeShare(res)
}

func (ed25519Scheme) ShareKey(share []byte) (*big.Int, error) {
	return shareKey(share)
}

func (ed25519Scheme) PublicShares(share []byte) ([]PublicShare, error) {
	return publicShares(share)
}

func (ed25519Scheme) FillPublicKey(res *protocol.Result, pub []byte) {
	res.EdDSAPubKey = hex.EncodeToString(pub)
}

// eddsaSignature is a 64-byte ed25519 signature.
type eddsaSignature []byte

// Fill sets Signature.
func (g eddsaSignature) Fill(res *protocol.Result) error { return res.SetEdDSASignature(g) }

// KeygenEdDSA runs ed25519 keygen.
func KeygenEdDSA(ctx context.Context, s Session, tr Transport) (*eddsakeygen.LocalPartySaveData, error) {
	ps, p, err := s.params(tss.Ed25519, nil)
	if err != nil {
		return nil, err
	}
	return runParty(ctx, s, ps, p, echoAwait, tr, func(out chan<- tss.Message, end chan<- *eddsakeygen.LocalPartySaveData) tss.Party {
		return eddsakeygen.NewLocalParty(p, out, end)
	})
}

// SignEdDSA signs a message of any length (leading zero bytes kept: the
// message's full length goes to tss-lib). s.Parties are the t+1 signers.
func SignEdDSA(ctx context.Context, s Session, key eddsakeygen.LocalPartySaveData, msg []byte, tr Transport) (*common.SignatureData, error) {
	if len(msg) == 0 {
		return nil, fmt.Errorf("%w: empty message", ErrBadParameters)
	}
	ps, p, err := s.params(tss.Ed25519, key.Ks)
	if err != nil {
		return nil, err
	}
	if err := s.signers(); err != nil {
		return nil, err
	}
	m := new(big.Int).SetBytes(msg)
	return runParty(ctx, s, ps, p, echoPiggyback, tr, func(out chan<- tss.Message, end chan<- *common.SignatureData) tss.Party {
		return eddsasigning.NewLocalParty(m, p, key, out, end, len(msg))
	})
}

// ReshareEdDSA runs ed25519 resharing. old is this node's share when it is
// an old party (it is not modified: tss-lib zeroes a copy). It returns the
// new share for a new party and nil for an old-only party, once its parties
// finished.
func ReshareEdDSA(ctx context.Context, s ReshareSession, old *eddsakeygen.LocalPartySaveData, tr Transport) (*eddsakeygen.LocalPartySaveData, error) {
	return reshare(ctx, s, reshareKind[eddsakeygen.LocalPartySaveData]{
		curve: tss.Ed25519,
		fresh: func(n int) (eddsakeygen.LocalPartySaveData, error) {
			return eddsakeygen.NewLocalPartySaveData(n), nil
		},
		party: func(p *tss.ReSharingParameters, key eddsakeygen.LocalPartySaveData, out chan<- tss.Message, end chan<- *eddsakeygen.LocalPartySaveData) tss.Party {
			return eddsaresharing.NewLocalParty(p, key, out, end)
		},
		pub: func(k *eddsakeygen.LocalPartySaveData) []byte {
			if k.Xi == nil || k.EDDSAPub == nil {
				return nil
			}
			return EdDSAPublicKey(k.EDDSAPub)
		},
	}, old, tr)
}

// EdDSAPublicKey encodes a tss-lib Edwards point as a 32-byte ed25519 key
// (little-endian y with the sign of x in the top bit).
func EdDSAPublicKey(p *crypto.ECPoint) ed25519.PublicKey {
	y := p.Y().Bytes()
	out := make([]byte, 32)
	// big-endian to little-endian
	for i := range y {
		out[len(y)-1-i] = y[i]
	}
	if p.X().Bit(0) == 1 {
		out[31] |= 0x80
	}
	return out
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
