package protocol

import (
	"context"
	"crypto"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
)

// ConfirmationDomain prefixes the bytes a node signs for a key
// confirmation (see docs/canonical-encoding.md).
const ConfirmationDomain = "hwsigner/v1/key-confirmation\n"

// ConfirmationVersion is the version of KeyConfirmation this package writes
// and the only one it accepts.
const ConfirmationVersion = 1

// ErrNotInCommittee: a key confirmation names a node that is not in the
// committee it confirms.
var ErrNotInCommittee = errors.New("protocol: confirming node is not in the committee")

// KeyConfirmation is a committee member's signed statement that it sealed
// its share of a wallet's key type at an epoch: after a keygen (epoch 1,
// active) or a reshare (pending until the whole new committee confirmed the
// same key). Nodes publish it in the key confirmations bucket
// (routing.KeysBucket) under routing.ConfirmationKey; a later reader
// verifies it with the cluster's peer list (VerifyConfirmation).
//
// KeyDigest is the hex SHA-256 digest of the key's public data as the
// member's share states it (ceremony.KeyDigest: the key type, the public key
// and every party's public share point); every honest member of one
// ceremony computes the same digest. Ceremony is the transport session ID
// of the keygen or reshare that produced the share, so that two attempts at
// the same epoch never look alike.
type KeyConfirmation struct {
	Version   int      `json:"version"`
	WalletID  string   `json:"wallet_id"`
	KeyType   string   `json:"key_type"`
	Epoch     uint64   `json:"epoch"`
	Committee []string `json:"committee"`
	Threshold int      `json:"threshold"` // tss-lib's t
	PubKey    string   `json:"pub_key"`   // hex
	KeyDigest string   `json:"key_digest"`
	Ceremony  string   `json:"ceremony"`
	SealedAt  int64    `json:"sealed_at"` // Unix milliseconds, informative

	// NodeID is the confirming member; NodeSignature its identity key's
	// signature (base64) over ConfirmationDomain and the canonical encoding
	// of every other member.
	NodeID        string `json:"node_id"`
	NodeSignature string `json:"node_signature,omitempty"`
}

// Same reports whether c and o confirm the same key of the same ceremony:
// every member but node_id, sealed_at and node_signature is equal.
func (c *KeyConfirmation) Same(o *KeyConfirmation) bool {
	return c.Version == o.Version && c.WalletID == o.WalletID && c.KeyType == o.KeyType && c.Epoch == o.Epoch &&
		slices.Equal(c.Committee, o.Committee) && c.Threshold == o.Threshold && c.PubKey == o.PubKey &&
		c.KeyDigest == o.KeyDigest && c.Ceremony == o.Ceremony
}

// check validates the members of a confirmation; its node must be in its
// committee (ErrNotInCommittee).
func (c *KeyConfirmation) check() error {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%w: key confirmation: %s", ErrMalformed, fmt.Sprintf(format, args...))
	}
	switch {
	case c.Version != ConfirmationVersion:
		return bad("version %d, want %d", c.Version, ConfirmationVersion)
	case ValidToken(c.WalletID) != nil:
		return bad("wallet_id %q", c.WalletID)
	case !ValidKeyType(c.KeyType):
		return bad("key_type %q", c.KeyType)
	case c.Epoch < 1 || c.Epoch > maxSafeInteger:
		return bad("epoch %d", c.Epoch)
	case len(c.Committee) < 2 || len(c.Committee) > MaxNodeIDs:
		return bad("committee of %d nodes", len(c.Committee))
	case c.Threshold < 1 || c.Threshold >= len(c.Committee):
		return bad("threshold %d for a committee of %d", c.Threshold, len(c.Committee))
	case ValidToken(c.NodeID) != nil:
		return bad("node_id %q", c.NodeID)
	case len(c.Ceremony) == 0 || len(c.Ceremony) > 128:
		return bad("ceremony of %d characters", len(c.Ceremony))
	}
	for i, id := range c.Committee {
		if ValidToken(id) != nil || slices.Contains(c.Committee[:i], id) {
			return bad("committee member %q", id)
		}
	}
	if pub, err := hex.DecodeString(c.PubKey); err != nil || len(pub) == 0 || len(pub) > 133 {
		return bad("pub_key is not the hex of a public key")
	}
	if d, err := hex.DecodeString(c.KeyDigest); err != nil || len(d) != 32 {
		return bad("key_digest is not 32 bytes of hex")
	}
	if !slices.Contains(c.Committee, c.NodeID) {
		return fmt.Errorf("%w: %s does not belong to committee %v", ErrNotInCommittee, c.NodeID, c.Committee)
	}
	return nil
}

// SignConfirmation sets c.Version, c.NodeID and c.NodeSignature, signs c
// with the node's identity key and returns it as canonical JSON, ready to
// store. It refuses a confirmation that VerifyConfirmation would refuse.
func SignConfirmation(ctx context.Context, signer crypto.Signer, nodeID string, c *KeyConfirmation) ([]byte, error) {
	if c == nil {
		return nil, fmt.Errorf("%w: nil key confirmation", ErrMalformed)
	}
	c.Version, c.NodeID, c.NodeSignature = ConfirmationVersion, nodeID, ""
	if err := c.check(); err != nil {
		return nil, err
	}
	raw, err := json.Marshal(c)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	obj, err := parseObject(raw)
	if err != nil {
		return nil, err
	}
	sig, err := signBytes(ctx, signer, signingInput(ConfirmationDomain, obj, "node_signature"))
	if err != nil {
		return nil, err
	}
	c.NodeSignature = base64.StdEncoding.EncodeToString(sig)
	obj["node_signature"] = c.NodeSignature
	return appendCanonical(nil, obj), nil
}

// VerifyConfirmation parses a stored key confirmation and checks it: the
// canonical JSON rules (ErrMalformed, ErrTooLarge), its members (ErrMalformed;
// ErrNotInCommittee when node_id is not in its committee), that node_id is in
// nodeKeys (ErrUnknownNode) and that its node signature verifies under that
// node's key (ErrInvalidSignature).
func VerifyConfirmation(raw []byte, nodeKeys map[string]crypto.PublicKey) (*KeyConfirmation, error) {
	var c KeyConfirmation
	obj, err := decodeTyped(raw, &c)
	if err != nil {
		return nil, err
	}
	if err := c.check(); err != nil {
		return nil, err
	}
	pub, ok := nodeKeys[c.NodeID]
	if !ok {
		return nil, fmt.Errorf("%w: %q", ErrUnknownNode, c.NodeID)
	}
	if pub, err = normalizePublicKey(pub); err != nil {
		return nil, err
	}
	if err := verifyMember(obj, "node_signature", pub, ConfirmationDomain); err != nil {
		return nil, fmt.Errorf("key confirmation of node %s: %w", c.NodeID, err)
	}
	return &c, nil
}
