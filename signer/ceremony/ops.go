package ceremony

import (
	"context"
	"fmt"
	"math/big"

	"github.com/bnb-chain/tss-lib/v3/common"
	ecdsakeygen "github.com/bnb-chain/tss-lib/v3/ecdsa/keygen"
	ecdsasigning "github.com/bnb-chain/tss-lib/v3/ecdsa/signing"
	eddsakeygen "github.com/bnb-chain/tss-lib/v3/eddsa/keygen"
	eddsasigning "github.com/bnb-chain/tss-lib/v3/eddsa/signing"
	"github.com/bnb-chain/tss-lib/v3/tss"
)

// Session is what every ceremony needs: who we are, who takes part, the
// threshold t (t+1 parties sign) and the session ID the nonce derives from.
type Session struct {
	ID        string
	Self      string
	Parties   []string
	Threshold int
}

func (s Session) params(curve tss.CurveName) (*parties, *tss.Parameters, error) {
	return s.paramsFor(curve, nil)
}

// paramsFor builds the parameters with each party at its key in ks, the Ks
// of the share used (nil for keygen): after a reshare a node's share may sit
// at its AltPartyKey.
func (s Session) paramsFor(curve tss.CurveName, ks []*big.Int) (*parties, *tss.Parameters, error) {
	ps, err := newPartiesWithKeys(s.Self, s.Parties, ks)
	if err != nil {
		return nil, nil, err
	}
	if s.ID == "" {
		return nil, nil, fmt.Errorf("%w: empty session ID", ErrBadParameters)
	}
	if s.Threshold < 1 || s.Threshold >= len(s.Parties) {
		return nil, nil, fmt.Errorf("%w: threshold %d with %d parties", ErrBadParameters, s.Threshold, len(s.Parties))
	}
	ctx := tss.NewPeerContext(ps.sorted)
	ec, _ := tss.GetCurveByName(curve)
	p := tss.NewParameters(ec, ctx, ps.self, len(ps.sorted), s.Threshold)
	p.SetSessionNonce(SessionNonce(s.ID))
	return ps, p, nil
}

// KeygenECDSA runs secp256k1 keygen with the given pre-params.
func KeygenECDSA(ctx context.Context, s Session, pre *ecdsakeygen.LocalPreParams, tr Transport) (*ecdsakeygen.LocalPartySaveData, error) {
	if pre == nil {
		return nil, fmt.Errorf("%w: ECDSA keygen needs pre-params", ErrBadParameters)
	}
	ps, p, err := s.params(tss.Secp256k1)
	if err != nil {
		return nil, err
	}
	out := make(chan tss.Message, chanCap)
	end := make(chan *ecdsakeygen.LocalPartySaveData, 1)
	party, err := newPartySafe(func() tss.Party { return ecdsakeygen.NewLocalParty(p, out, end, *pre) })
	if err != nil {
		return nil, err
	}
	return run(ctx, ps, party, out, end, tr)
}

// KeygenEdDSA runs ed25519 keygen.
func KeygenEdDSA(ctx context.Context, s Session, tr Transport) (*eddsakeygen.LocalPartySaveData, error) {
	ps, p, err := s.params(tss.Ed25519)
	if err != nil {
		return nil, err
	}
	out := make(chan tss.Message, chanCap)
	end := make(chan *eddsakeygen.LocalPartySaveData, 1)
	party, err := newPartySafe(func() tss.Party { return eddsakeygen.NewLocalParty(p, out, end) })
	if err != nil {
		return nil, err
	}
	return run(ctx, ps, party, out, end, tr)
}

// SignECDSA signs a 32-byte digest with a secp256k1 share. s.Parties are the
// t+1 signers. kdd is the HD key-derivation delta (nil for the wallet key); the
// key passed in must then already be adjusted to the child key.
func SignECDSA(ctx context.Context, s Session, key ecdsakeygen.LocalPartySaveData, digest []byte, kdd *big.Int, tr Transport) (*common.SignatureData, error) {
	if len(digest) != 32 {
		return nil, fmt.Errorf("%w: ECDSA digest must be 32 bytes, got %d", ErrBadParameters, len(digest))
	}
	ps, p, err := s.paramsFor(tss.Secp256k1, key.Ks)
	if err != nil {
		return nil, err
	}
	if len(s.Parties) != s.Threshold+1 {
		return nil, fmt.Errorf("%w: signing needs exactly t+1=%d parties, got %d", ErrBadParameters, s.Threshold+1, len(s.Parties))
	}
	out := make(chan tss.Message, chanCap)
	end := make(chan *common.SignatureData, 1)
	m := new(big.Int).SetBytes(digest)
	party, err := newPartySafe(func() tss.Party {
		return ecdsasigning.NewLocalPartyWithKDD(m, p, key, kdd, out, end, len(digest))
	})
	if err != nil {
		return nil, err
	}
	return run(ctx, ps, party, out, end, tr)
}

// SignEdDSA signs a message of any length (leading zero bytes kept).
func SignEdDSA(ctx context.Context, s Session, key eddsakeygen.LocalPartySaveData, msg []byte, tr Transport) (*common.SignatureData, error) {
	if len(msg) == 0 {
		return nil, fmt.Errorf("%w: empty message", ErrBadParameters)
	}
	ps, p, err := s.paramsFor(tss.Ed25519, key.Ks)
	if err != nil {
		return nil, err
	}
	if len(s.Parties) != s.Threshold+1 {
		return nil, fmt.Errorf("%w: signing needs exactly t+1=%d parties, got %d", ErrBadParameters, s.Threshold+1, len(s.Parties))
	}
	out := make(chan tss.Message, chanCap)
	end := make(chan *common.SignatureData, 1)
	m := new(big.Int).SetBytes(msg)
	party, err := newPartySafe(func() tss.Party {
		return eddsasigning.NewLocalParty(m, p, key, out, end, len(msg))
	})
	if err != nil {
		return nil, err
	}
	return run(ctx, ps, party, out, end, tr)
}

func newPartySafe(mk func() tss.Party) (p tss.Party, err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("%w: %v", ErrBadParameters, r)
		}
	}()
	return mk(), nil
}
