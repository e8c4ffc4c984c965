package ceremony

import (
	"context"
	"encoding/json"
	"fmt"
	"math/big"

	ecdsakeygen "github.com/bnb-chain/tss-lib/v3/ecdsa/keygen"

	"github.com/hwsigner/signer/protocol"
)

// Scheme is one key type's threshold signature scheme: its keygen, signing
// and resharing ceremonies and its result fields. Shares cross it as opaque
// plaintext bytes (what the caller seals, and hands back unsealed); every
// share a Scheme returns is a fresh buffer the caller owns and zeroes.
type Scheme interface {
	// KeyType is the scheme's protocol key type (protocol.KeyType*).
	KeyType() string
	// NeedsPreParams reports whether Keygen, and Reshare on a node of the
	// new committee, need a fresh pre-params set in Options.PreParams.
	NeedsPreParams() bool
	// Keygen runs keygen and returns this node's share and the wallet's
	// public key (the encoding of the keygen result and of protocol/hd).
	Keygen(ctx context.Context, s Session, o Options, tr Transport) (share, pub []byte, err error)
	// Sign signs msg with share among s.Parties (the t+1 signers): under
	// the wallet key, or under the child key of d when d is not nil (the
	// child share lives in memory only). A share that does not decode
	// fails with ErrBadShare, a failed child adjustment with ErrDerivation.
	Sign(ctx context.Context, s Session, share, msg []byte, d *Derivation, tr Transport) (Signature, error)
	// Reshare runs this node's side of a resharing: old is its share when
	// it is an old party (nil otherwise; it is not modified). It returns
	// the new share for a new party and nil for an old-only party. An old
	// share that does not decode fails with ErrBadShare.
	Reshare(ctx context.Context, s ReshareSession, old []byte, o Options, tr Transport) ([]byte, error)
	// FillPublicKey sets a keygen result's public key field for the key
	// type to pub.
	FillPublicKey(res *protocol.Result, pub []byte)
	// ShareKey returns the party key a share is held at (its Shamir
	// x-coordinate: PartyKey or AltPartyKey of the node), which a reshare
	// announces; a share that does not decode fails with ErrBadShare.
	ShareKey(share []byte) (*big.Int, error)
	// PublicShares returns every party's public share point that a share
	// states (tss-lib's Ks and BigXj), for KeyDigest; it decodes no secret
	// part of the share. A share that does not decode fails with
	// ErrBadShare.
	PublicShares(share []byte) ([]PublicShare, error)
}

// Options carries what only some schemes need.
type Options struct {
	// PreParams is a fresh pre-params set, for a scheme that
	// NeedsPreParams; it is used once. Other schemes ignore it.
	PreParams *PreParams
}

// PreParams is one set of Paillier pre-parameters (safe primes) that an
// ECDSA keygen or new reshare party consumes: tss-lib's
// ecdsa/keygen.LocalPreParams.
type PreParams = ecdsakeygen.LocalPreParams

// Signature is a finished signature in its scheme's form.
type Signature interface {
	// Fill sets the signature fields of a signing result.
	Fill(res *protocol.Result) error
}

// schemes lists every scheme, one per key type.
func schemes() []Scheme {
	return []Scheme{secp256k1Scheme{}, ed25519Scheme{}}
}

// SchemeFor returns the scheme of a protocol key type, or an error wrapping
// ErrUnknownKeyType.
func SchemeFor(keyType string) (Scheme, error) {
	for _, s := range schemes() {
		if s.KeyType() == keyType {
			return s, nil
		}
	}
	return nil, fmt.Errorf("%w %q", ErrUnknownKeyType, keyType)
}

// encodeShare returns a share's plaintext: its JSON encoding, the format
// nodes have always sealed.
func encodeShare[K any](k *K) ([]byte, error) {
	b, err := json.Marshal(k)
	if err != nil {
		return nil, fmt.Errorf("encode share: %w", err)
	}
	return b, nil
}

// shareKey reads only the ShareID of a tss-lib save data's JSON encoding
// (both schemes keep it under that name), so that no secret part of the
// share is decoded.
func shareKey(b []byte) (*big.Int, error) {
	var ids struct {
		ShareID *big.Int `json:"ShareID"`
	}
	if err := json.Unmarshal(b, &ids); err != nil || ids.ShareID == nil {
		return nil, ErrBadShare
	}
	return ids.ShareID, nil
}

// decodeShare decodes a share's plaintext. The decoder's error is not
// passed on: it may quote part of the secret.
func decodeShare[K any](b []byte) (*K, error) {
	k := new(K)
	if err := json.Unmarshal(b, k); err != nil {
		return nil, ErrBadShare
	}
	return k, nil
}
