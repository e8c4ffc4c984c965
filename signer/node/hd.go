package node

import (
	"encoding/hex"
	"fmt"

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

// deriveChild returns the child key a signing request with path signs
// under, computed from public data only (nil for an empty path). Every node
// computes it, chosen or not, so that an invalid path fails the same way
// everywhere; the scheme adjusts the share to it when signing.
func deriveChild(meta store.WalletMeta, path []uint32) (*ceremony.Derivation, error) {
	if len(path) == 0 {
		return nil, nil
	}
	chain, err := walletChainCode(meta)
	if err != nil {
		return nil, fmt.Errorf("wallet chain code: %w", err)
	}
	d, err := ceremony.Derive(meta.KeyType, meta.PubKey, chain, path)
	if err != nil {
		return nil, fmt.Errorf("derivation_path %v: %w", path, err)
	}
	return d, nil
}

// setSignPubKey puts the key that signed into a successful sign result's
// pub_key: the wallet key, or the child key when the request had a
// derivation path. A client checks the signature against it.
func setSignPubKey(res *protocol.Result, meta store.WalletMeta, d *ceremony.Derivation) {
	if !res.Succeeded() {
		return
	}
	if d != nil {
		res.PubKey = hex.EncodeToString(d.Child.PubKey)
		return
	}
	res.PubKey = hex.EncodeToString(meta.PubKey)
}
