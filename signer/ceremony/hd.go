package ceremony

import (
	"github.com/hwsigner/signer/protocol/hd"
)

// Derivation is the HD child key a signature is made under: the wallet
// key's chain code, the derivation path and the child that protocol/hd
// computes from public data (its public key and the additive delta).
type Derivation struct {
	ChainCode []byte
	Path      []uint32
	Child     *hd.Child
}

// Derive computes, with protocol/hd, the child of the wallet key pub (of
// keyType, with chain code chain) along path. It returns nil for an empty
// path: signing then uses the wallet key.
func Derive(keyType string, pub, chain []byte, path []uint32) (*Derivation, error) {
	if len(path) == 0 {
		return nil, nil
	}
	c, err := hd.Derive(keyType, pub, chain, path)
	if err != nil {
		return nil, err
	}
	return &Derivation{ChainCode: chain, Path: path, Child: c}, nil
}
