package node

import (
	"bytes"
	"encoding/hex"
	"fmt"
	"math/big"

	ecdsakeygen "github.com/bnb-chain/tss-lib/v3/ecdsa/keygen"
	eddsakeygen "github.com/bnb-chain/tss-lib/v3/eddsa/keygen"

	"github.com/hwsigner/signer/protocol"
	"github.com/hwsigner/signer/protocol/hd"
	"github.com/hwsigner/signer/signer/ceremony"
	"github.com/hwsigner/signer/signer/store"
)

// walletChainCode returns the wallet key's chain code: the stored one, or,
// for a wallet stored without one, the value computed from its public key
// (the same function; see package protocol/hd).
func walletChainCode(meta store.WalletMeta) ([]byte, error) {
	if len(meta.ChainCode) > 0 {
		return meta.ChainCode, nil
	}
	return hd.ChainCode(meta.KeyType, meta.PubKey)
}

// derivation is a signing request's derivation path and what it leads to.
type derivation struct {
	walletChain []byte
	path        []uint32
	child       *hd.Child
}

// deriveChild returns the child key a signing request with path signs
// under, computed from public data only (nil for an empty path). Every node
// computes it, chosen or not, so that an invalid path fails the same way
// everywhere.
func deriveChild(meta store.WalletMeta, path []uint32) (*derivation, error) {
	if len(path) == 0 {
		return nil, nil
	}
	chain, err := walletChainCode(meta)
	if err != nil {
		return nil, fmt.Errorf("wallet chain code: %w", err)
	}
	c, err := hd.Derive(meta.KeyType, meta.PubKey, chain, path)
	if err != nil {
		return nil, fmt.Errorf("derivation_path %v: %w", path, err)
	}
	return &derivation{walletChain: chain, path: path, child: c}, nil
}

// childECDSAKey adjusts a secp256k1 share to the child with tss-lib's own
// BIP32 code and checks that it agrees with the clients' derivation. It
// returns key and a nil delta when d is nil.
func childECDSAKey(key ecdsakeygen.LocalPartySaveData, d *derivation) (ecdsakeygen.LocalPartySaveData, *big.Int, error) {
	if d == nil {
		return key, nil, nil
	}
	out, kdd, err := ceremony.ChildECDSAKey(key, d.walletChain, d.path)
	if err != nil {
		return key, nil, err
	}
	if got := ceremony.ECDSAPublicKey(out.ECDSAPub); !bytes.Equal(got, d.child.PubKey) || kdd.Cmp(d.child.Delta) != 0 {
		return key, nil, fmt.Errorf("HD derivation: tss-lib gives child key %x, protocol/hd %x", got, d.child.PubKey)
	}
	return out, kdd, nil
}

// childEdDSAKey returns an in-memory copy of an ed25519 share shifted to the
// child (key itself when d is nil).
func childEdDSAKey(key eddsakeygen.LocalPartySaveData, d *derivation) (eddsakeygen.LocalPartySaveData, error) {
	if d == nil {
		return key, nil
	}
	out, err := ceremony.ChildEdDSAKey(key, d.child.Delta)
	if err != nil {
		return key, err
	}
	if got := ceremony.EdDSAPublicKey(out.EDDSAPub); !bytes.Equal(got, d.child.PubKey) {
		return key, fmt.Errorf("HD derivation: shifted share has public key %x, protocol/hd %x", got, d.child.PubKey)
	}
	return out, nil
}

// setChildPubKey puts the key that signed into a successful result's
// pub_key when the request had a derivation path.
func setChildPubKey(res *protocol.Result, d *derivation) {
	if d != nil && res.Succeeded() {
		res.PubKey = hex.EncodeToString(d.child.PubKey)
	}
}
