// Package policy is a node's client-authorization policy: which client keys
// (by protocol key ID) may claim which client IDs and request which
// operations. A node loads it from a YAML or JSON file at start; a Policy is
// immutable once built.
package policy

import (
	"bytes"
	"crypto"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"

	"gopkg.in/yaml.v3"

	"github.com/hwsigner/signer/keyfile"
	"github.com/hwsigner/signer/protocol"
)

// Sentinel errors; callers test with errors.Is.
var (
	// ErrInvalid: the client policy file is invalid.
	ErrInvalid = errors.New("policy: invalid client policy")
	// ErrUnknownKey: no client in the policy has this key_id.
	ErrUnknownKey = errors.New("policy: unknown client key")
	// ErrClientIDNotAllowed: the key is known but not bound to the claimed
	// client_id.
	ErrClientIDNotAllowed = errors.New("policy: client_id not allowed for this key")
	// ErrOpNotAllowed: the key may not perform this operation.
	ErrOpNotAllowed = errors.New("policy: operation not allowed for this key")
)

// Config is the node-side client policy file (YAML or JSON):
//
//	clients:
//	  - name: wallet-backend
//	    public_key: |
//	      -----BEGIN PUBLIC KEY-----
//	      MCowBQYDK2VwAyEA...
//	      -----END PUBLIC KEY-----
//	    client_ids: [svcA, ""]     # "" = the legacy subjects
//	    ops: [keygen, sign, reshare]
//	  - name: ops
//	    public_key: ...
//	    client_ids: [svcB]
//	    ops: [sign, reshare]
//	    wallet_grants:             # wallets of other owners svcB may use
//	      - {owner: svcA, wallets: [w1, w2]}
//
// A wallet belongs to the client ID that created it. Sign and reshare
// requests for it are allowed from that client ID, and from a client ID
// whose entry grants it the wallet by owner and wallet ID (MayUseWallet).
// A wallet created by a legacy client ("") is usable by legacy clients only
// and cannot be granted.
type Config struct {
	Clients []ClientConfig `yaml:"clients" json:"clients"`
	// Approvers are the keys that may approve requests (approvals.go).
	Approvers []ApproverConfig `yaml:"approvers,omitempty" json:"approvers,omitempty"`
	// Approvals are the M-of-K quorums requests must carry.
	Approvals []ApprovalRule `yaml:"approvals,omitempty" json:"approvals,omitempty"`
}

// ClientConfig is one client key and what it may do.
type ClientConfig struct {
	Name string `yaml:"name" json:"name"`
	// PublicKey: PEM "PUBLIC KEY" block, or base64 of the PKIX DER.
	// Ed25519 or ECDSA P-256.
	PublicKey string `yaml:"public_key" json:"public_key"`
	// ClientIDs the key may claim; the first is its primary ID, where
	// errors about spoofed IDs go. "" stands for the legacy subjects.
	ClientIDs []string `yaml:"client_ids" json:"client_ids"`
	// Ops the key may request: keygen, sign, reshare.
	Ops []string `yaml:"ops" json:"ops"`
	// WalletGrants lists wallets of other owners that every client ID of
	// this entry may use (sign, reshare, as its ops allow).
	WalletGrants []WalletGrant `yaml:"wallet_grants,omitempty" json:"wallet_grants,omitempty"`
}

// WalletGrant names wallets of one owner (the client ID that created them).
type WalletGrant struct {
	Owner   string   `yaml:"owner" json:"owner"`
	Wallets []string `yaml:"wallets" json:"wallets"`
}

// Policy binds client keys (by key ID) to client IDs and operations. It is
// immutable once built and safe for concurrent use.
type Policy struct {
	byKeyID map[string]*entry
	// approvers by ID, and the approval rules in file order.
	approvers map[string]*approver
	rules     []rule
	// grants: grantee client ID -> owner client ID -> wallet IDs.
	grants map[string]map[string][]string
}

type entry struct {
	name      string
	pub       crypto.PublicKey
	clientIDs []string
	ops       []string
}

// Parse parses a policy in JSON (input starting with '{') or YAML. Unknown
// fields are rejected. Errors wrap ErrInvalid.
func Parse(data []byte) (*Policy, error) {
	var cfg Config
	trimmed := bytes.TrimSpace(data)
	if len(trimmed) > 0 && trimmed[0] == '{' {
		dec := json.NewDecoder(bytes.NewReader(trimmed))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&cfg); err != nil {
			return nil, fmt.Errorf("%w: %v", ErrInvalid, err)
		}
	} else {
		dec := yaml.NewDecoder(bytes.NewReader(data))
		dec.KnownFields(true)
		if err := dec.Decode(&cfg); err != nil {
			return nil, fmt.Errorf("%w: %v", ErrInvalid, err)
		}
	}
	return New(cfg)
}

// LoadFile reads and parses a policy file. Errors wrap ErrInvalid.
func LoadFile(path string) (*Policy, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	p, err := Parse(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return p, nil
}

// New checks cfg and builds a Policy: every client has a name, a supported
// public key listed once, at least one valid client ID (or "") and at least
// one known op. Errors wrap ErrInvalid.
func New(cfg Config) (*Policy, error) {
	p := &Policy{byKeyID: map[string]*entry{}, grants: map[string]map[string][]string{}}
	for i, c := range cfg.Clients {
		where := fmt.Sprintf("clients[%d] (%s)", i, c.Name)
		if strings.TrimSpace(c.Name) == "" {
			return nil, fmt.Errorf("%w: %s: name missing", ErrInvalid, where)
		}
		pub, err := keyfile.ParsePublicKey(c.PublicKey)
		if err != nil {
			return nil, fmt.Errorf("%w: %s: public_key: %v", ErrInvalid, where, err)
		}
		keyID, err := protocol.KeyID(pub)
		if err != nil {
			return nil, fmt.Errorf("%w: %s: public_key: %v", ErrInvalid, where, err)
		}
		if prev, dup := p.byKeyID[keyID]; dup {
			return nil, fmt.Errorf("%w: %s: key %s already belongs to %s", ErrInvalid, where, keyID, prev.name)
		}
		if len(c.ClientIDs) == 0 {
			return nil, fmt.Errorf("%w: %s: client_ids empty (use \"\" for the legacy subjects)", ErrInvalid, where)
		}
		for _, id := range c.ClientIDs {
			if id == "" {
				continue // the legacy subjects
			}
			if err := protocol.ValidToken(id); err != nil {
				return nil, fmt.Errorf("%w: %s: client_ids: %v", ErrInvalid, where, err)
			}
		}
		if len(c.Ops) == 0 {
			return nil, fmt.Errorf("%w: %s: ops empty", ErrInvalid, where)
		}
		for _, op := range c.Ops {
			if !protocol.ValidOp(op) {
				return nil, fmt.Errorf("%w: %s: unknown op %q", ErrInvalid, where, op)
			}
		}
		for j, g := range c.WalletGrants {
			if err := protocol.ValidToken(g.Owner); err != nil {
				return nil, fmt.Errorf("%w: %s: wallet_grants[%d]: owner (a legacy owner \"\" cannot be granted): %v", ErrInvalid, where, j, err)
			}
			if len(g.Wallets) == 0 {
				return nil, fmt.Errorf("%w: %s: wallet_grants[%d]: wallets empty", ErrInvalid, where, j)
			}
			for _, w := range g.Wallets {
				if err := protocol.ValidToken(w); err != nil {
					return nil, fmt.Errorf("%w: %s: wallet_grants[%d]: wallets: %v", ErrInvalid, where, j, err)
				}
			}
			for _, id := range c.ClientIDs {
				if p.grants[id] == nil {
					p.grants[id] = map[string][]string{}
				}
				p.grants[id][g.Owner] = append(p.grants[id][g.Owner], g.Wallets...)
			}
		}
		p.byKeyID[keyID] = &entry{
			name:      c.Name,
			pub:       pub,
			clientIDs: slices.Clone(c.ClientIDs),
			ops:       slices.Clone(c.Ops),
		}
	}
	if err := p.addApprovals(cfg); err != nil {
		return nil, err
	}
	return p, nil
}

// Authorize looks up the client key keyID and checks that it may claim
// clientID and request op. Errors: ErrUnknownKey (pub is nil),
// protocol.ErrUnknownOp, ErrClientIDNotAllowed and ErrOpNotAllowed. For the
// last two pub is still returned, so the caller verifies the request's
// signature before it answers UNAUTHORIZED_CLIENT (on the claimed clientID's
// subject, where the requester listens; the result's key_id tells the
// client bound to that ID that the answer is not for one of its keys).
func (p *Policy) Authorize(keyID, clientID, op string) (crypto.PublicKey, error) {
	e, ok := p.byKeyID[keyID]
	if !ok {
		return nil, fmt.Errorf("%w: %q", ErrUnknownKey, keyID)
	}
	if !protocol.ValidOp(op) {
		return e.pub, fmt.Errorf("%w: %q", protocol.ErrUnknownOp, op)
	}
	if !slices.Contains(e.clientIDs, clientID) {
		return e.pub, fmt.Errorf("%w: key %s (%s) claimed %q", ErrClientIDNotAllowed, keyID, e.name, clientID)
	}
	if !slices.Contains(e.ops, op) {
		return e.pub, fmt.Errorf("%w: key %s (%s) may not %s", ErrOpNotAllowed, keyID, e.name, op)
	}
	return e.pub, nil
}

// MayUseWallet reports whether clientID may use (sign with, reshare) the
// wallet walletID that owner created: it is its own (the same client ID;
// legacy wallets, owner "", belong to the legacy client "" alone), or an
// entry listing clientID grants it owner's walletID.
func (p *Policy) MayUseWallet(clientID, owner, walletID string) bool {
	if clientID == owner {
		return true
	}
	if owner == "" {
		return false
	}
	return slices.Contains(p.grants[clientID][owner], walletID)
}

// PrimaryClientID returns the first client ID bound to keyID: the requester's
// own subject, where errors about a spoofed client_id are sent.
func (p *Policy) PrimaryClientID(keyID string) (string, bool) {
	e, ok := p.byKeyID[keyID]
	if !ok {
		return "", false
	}
	return e.clientIDs[0], true
}

// ClientName returns the configured name of the client with key keyID.
func (p *Policy) ClientName(keyID string) (string, bool) {
	e, ok := p.byKeyID[keyID]
	if !ok {
		return "", false
	}
	return e.name, true
}

// Len returns the number of client keys.
func (p *Policy) Len() int { return len(p.byKeyID) }
