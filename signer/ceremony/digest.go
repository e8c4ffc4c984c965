package ceremony

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"math/big"
	"slices"
)

// PublicShare is one party's public share point as a saved share states
// it: the party key (its Shamir x-coordinate, tss-lib's Ks entry) and
// X_j = x_j·G (tss-lib's BigXj entry), in affine coordinates.
type PublicShare struct {
	Key  *big.Int
	X, Y *big.Int
}

// publicShares reads only the public parts Ks and BigXj of a tss-lib save
// data's JSON encoding (both schemes keep them under these names), so that
// no secret part of the share is kept. The decoder's error is not passed
// on: it may quote part of the secret.
func publicShares(b []byte) ([]PublicShare, error) {
	var pub struct {
		Ks    []*big.Int `json:"Ks"`
		BigXj []*struct {
			Coords [2]*big.Int `json:"Coords"`
		} `json:"BigXj"`
	}
	if err := json.Unmarshal(b, &pub); err != nil || len(pub.Ks) == 0 || len(pub.Ks) != len(pub.BigXj) {
		return nil, ErrBadShare
	}
	out := make([]PublicShare, len(pub.Ks))
	for i, k := range pub.Ks {
		p := pub.BigXj[i]
		if k == nil || p == nil || p.Coords[0] == nil || p.Coords[1] == nil || k.Sign() <= 0 || p.Coords[0].Sign() < 0 || p.Coords[1].Sign() < 0 {
			return nil, ErrBadShare
		}
		out[i] = PublicShare{Key: k, X: p.Coords[0], Y: p.Coords[1]}
	}
	return out, nil
}

// KeyDigestDomain starts the bytes KeyDigest hashes; a later digest over
// more public data gets a new domain.
const KeyDigestDomain = "hwsigner/key-digest/v1\x00"

// KeyDigest is the SHA-256 digest of a key's public data that every honest
// member of one keygen or reshare computes alike from its own share: the
// key type, the wallet's public key (as the scheme encodes it) and every
// party's public share point. The input is KeyDigestDomain, then
// length-prefixed (4 bytes, big-endian) fields: the key type, the public
// key, the number of shares (4 bytes) and, for each share in ascending
// party-key order, its party key, X and Y as unsigned big-endian integers.
// Committee members publish it in their key confirmations
// (protocol.KeyConfirmation.KeyDigest).
func KeyDigest(keyType string, pub []byte, shares []PublicShare) [32]byte {
	sorted := slices.Clone(shares)
	slices.SortFunc(sorted, func(a, b PublicShare) int { return a.Key.Cmp(b.Key) })
	h := sha256.New()
	h.Write([]byte(KeyDigestDomain))
	field := func(b []byte) {
		h.Write(binary.BigEndian.AppendUint32(nil, uint32(len(b))))
		h.Write(b)
	}
	field([]byte(keyType))
	field(pub)
	h.Write(binary.BigEndian.AppendUint32(nil, uint32(len(sorted))))
	for _, s := range sorted {
		field(s.Key.Bytes())
		field(s.X.Bytes())
		field(s.Y.Bytes())
	}
	var d [32]byte
	h.Sum(d[:0])
	return d
}
