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

// KeygenECDSA runs secp256k1 keygen with the given pre-params.
func KeygenECDSA(ctx context.Context, s Session, pre *ecdsakeygen.LocalPreParams, tr Transport) (*ecdsakeygen.LocalPartySaveData, error) {
	if pre == nil {
		return nil, fmt.Errorf("%w: ECDSA keygen needs pre-params", ErrBadParameters)
	}
	ps, p, err := s.params(tss.Secp256k1, nil)
	if err != nil {
		return nil, err
	}
	return runParty(ctx, ps, tr, func(out chan<- tss.Message, end chan<- *ecdsakeygen.LocalPartySaveData) tss.Party {
		return ecdsakeygen.NewLocalParty(p, out, end, *pre)
	})
}

// KeygenEdDSA runs ed25519 keygen.
func KeygenEdDSA(ctx context.Context, s Session, tr Transport) (*eddsakeygen.LocalPartySaveData, error) {
	ps, p, err := s.params(tss.Ed25519, nil)
	if err != nil {
		return nil, err
	}
	return runParty(ctx, ps, tr, func(out chan<- tss.Message, end chan<- *eddsakeygen.LocalPartySaveData) tss.Party {
		return eddsakeygen.NewLocalParty(p, out, end)
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
	return runParty(ctx, ps, tr, func(out chan<- tss.Message, end chan<- *common.SignatureData) tss.Party {
		return ecdsasigning.NewLocalPartyWithKDD(m, p, key, kdd, out, end, len(digest))
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
	return runParty(ctx, ps, tr, func(out chan<- tss.Message, end chan<- *common.SignatureData) tss.Party {
		return eddsasigning.NewLocalParty(m, p, key, out, end, len(msg))
	})
}
