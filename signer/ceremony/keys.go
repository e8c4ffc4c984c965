package ceremony

import (
	"crypto/ed25519"
	"math/big"

	"github.com/bnb-chain/tss-lib/v3/crypto"
	"github.com/decred/dcrd/dcrec/secp256k1/v4"
)

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
