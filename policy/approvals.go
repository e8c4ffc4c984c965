package policy

import (
	"crypto"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/hwsigner/signer/keyfile"
	"github.com/hwsigner/signer/protocol"
)

// Approval errors; a node answers them with protocol.CodeApprovalRequired
// and protocol.CodeApprovalInvalid.
var (
	// ErrApprovalRequired: a rule applies and the request carries fewer
	// valid approvals from distinct eligible approvers than it requires.
	ErrApprovalRequired = errors.New("policy: approval required")
	// ErrApprovalInvalid: an approval in the request is unacceptable
	// (unknown or ineligible approver, expired, outlives the request, or
	// its signature does not verify over this request).
	ErrApprovalInvalid = errors.New("policy: approval invalid")
)

// ApproverConfig is a key that may approve requests:
//
//	approvers:
//	  - id: alice                  # a token; approvals name it in approver_id
//	    public_key: |              # Ed25519 or ECDSA P-256
//	      -----BEGIN PUBLIC KEY-----
//	      ...
type ApproverConfig struct {
	ID        string `yaml:"id" json:"id"`
	PublicKey string `yaml:"public_key" json:"public_key"`
}

// ApprovalRule requires Required of Approvers to approve every request of
// ClientID for one of Ops (and, when Wallets is not empty, for one of those
// wallets):
//
//	approvals:
//	  - client_id: svcA
//	    ops: [sign]
//	    wallets: [treasury]        # optional; empty = every wallet
//	    required: 2
//	    approvers: [alice, bob, carol]
//
// A request must satisfy every rule that applies to it.
type ApprovalRule struct {
	ClientID  string   `yaml:"client_id" json:"client_id"`
	Ops       []string `yaml:"ops" json:"ops"`
	Wallets   []string `yaml:"wallets,omitempty" json:"wallets,omitempty"`
	Required  int      `yaml:"required" json:"required"`
	Approvers []string `yaml:"approvers" json:"approvers"`
}

type approver struct {
	id  string
	pub crypto.PublicKey
}

type rule struct {
	index     int
	clientID  string
	ops       []string
	wallets   []string
	required  int
	approvers []string
}

func (r *rule) applies(clientID, op, wallet string) bool {
	return r.clientID == clientID && slices.Contains(r.ops, op) &&
		(len(r.wallets) == 0 || slices.Contains(r.wallets, wallet))
}

func (r *rule) String() string {
	return fmt.Sprintf("approvals[%d] (%d of [%s])", r.index, r.required, strings.Join(r.approvers, " "))
}

// addApprovals checks and adds cfg's approvers and approval rules: approver
// IDs are tokens listed once, keys supported, listed once and no client's
// key; a rule names a client ID ("" for legacy) at least one op, valid
// wallet IDs, 1..K distinct known approvers and 1 <= required <= K.
func (p *Policy) addApprovals(cfg Config) error {
	p.approvers = map[string]*approver{}
	keys := map[string]string{} // key ID -> approver ID
	for i, a := range cfg.Approvers {
		where := fmt.Sprintf("approvers[%d] (%s)", i, a.ID)
		if err := protocol.ValidToken(a.ID); err != nil {
			return fmt.Errorf("%w: %s: id: %w", ErrInvalid, where, err)
		}
		if _, dup := p.approvers[a.ID]; dup {
			return fmt.Errorf("%w: %s: id listed twice", ErrInvalid, where)
		}
		pub, err := keyfile.ParsePublicKey(a.PublicKey)
		if err != nil {
			return fmt.Errorf("%w: %s: public_key: %w", ErrInvalid, where, err)
		}
		keyID, err := protocol.KeyID(pub)
		if err != nil {
			return fmt.Errorf("%w: %s: public_key: %w", ErrInvalid, where, err)
		}
		if prev, dup := keys[keyID]; dup {
			return fmt.Errorf("%w: %s: key %s already belongs to approver %s", ErrInvalid, where, keyID, prev)
		}
		if c, isClient := p.byKeyID[keyID]; isClient {
			return fmt.Errorf("%w: %s: key %s is the key of client %s (a client cannot approve its own requests)", ErrInvalid, where, keyID, c.name)
		}
		keys[keyID] = a.ID
		p.approvers[a.ID] = &approver{id: a.ID, pub: pub}
	}
	for i, r := range cfg.Approvals {
		where := fmt.Sprintf("approvals[%d] (%s)", i, r.ClientID)
		if r.ClientID != "" {
			if err := protocol.ValidToken(r.ClientID); err != nil {
				return fmt.Errorf("%w: %s: client_id: %w", ErrInvalid, where, err)
			}
		}
		if len(r.Ops) == 0 {
			return fmt.Errorf("%w: %s: ops empty", ErrInvalid, where)
		}
		for _, op := range r.Ops {
			if !protocol.ValidOp(op) {
				return fmt.Errorf("%w: %s: unknown op %q", ErrInvalid, where, op)
			}
		}
		for _, w := range r.Wallets {
			if err := protocol.ValidToken(w); err != nil {
				return fmt.Errorf("%w: %s: wallets: %w", ErrInvalid, where, err)
			}
		}
		if len(r.Approvers) == 0 {
			return fmt.Errorf("%w: %s: approvers empty", ErrInvalid, where)
		}
		for j, id := range r.Approvers {
			if _, ok := p.approvers[id]; !ok {
				return fmt.Errorf("%w: %s: approvers: %q is not in approvers", ErrInvalid, where, id)
			}
			if slices.Contains(r.Approvers[:j], id) {
				return fmt.Errorf("%w: %s: approvers: %q listed twice", ErrInvalid, where, id)
			}
		}
		if r.Required < 1 || r.Required > len(r.Approvers) {
			return fmt.Errorf("%w: %s: required %d, want 1..%d", ErrInvalid, where, r.Required, len(r.Approvers))
		}
		p.rules = append(p.rules, rule{
			index: i, clientID: r.ClientID, ops: slices.Clone(r.Ops), wallets: slices.Clone(r.Wallets),
			required: r.Required, approvers: slices.Clone(r.Approvers),
		})
	}
	return nil
}

// RequiresApproval reports whether an approval rule applies to a request of
// clientID for op on wallet.
func (p *Policy) RequiresApproval(clientID, op, wallet string) bool {
	for i := range p.rules {
		if p.rules[i].applies(clientID, op, wallet) {
			return true
		}
	}
	return false
}

// CheckApprovals checks the approvals of req, whose received bytes are raw
// (its signature already verified), at time now. When no rule applies it
// returns nil and the approvals are not looked at. Otherwise, in this order:
//
//  1. no approvals at all: ErrApprovalRequired;
//  2. each approval, in order: its approver must be known and eligible
//     under a rule that applies, its expires_at no later than the
//     request's, now before its expires_at, and its signature must verify
//     under the approver's key over protocol.RequestDigest(raw); the first
//     that fails is ErrApprovalInvalid;
//  3. each rule that applies must count at least its required number of
//     distinct approvers among its own (an approver approving twice counts
//     once): else ErrApprovalRequired.
//
// It returns the approvers counted (sorted, distinct); the error's text
// names them too, and the rule, never a key or a signature.
func (p *Policy) CheckApprovals(req protocol.Request, raw []byte, now time.Time) ([]string, error) {
	env := req.Env()
	op, wallet := req.Operation(), walletOf(req)
	var rules []*rule
	for i := range p.rules {
		if p.rules[i].applies(env.ClientID, op, wallet) {
			rules = append(rules, &p.rules[i])
		}
	}
	if len(rules) == 0 {
		return nil, nil
	}
	what := fmt.Sprintf("%s %s of wallet %s", clientLabel(env.ClientID), op, wallet)
	if len(env.Approvals) == 0 {
		return nil, fmt.Errorf("%w: %s needs %s; the request carries no approvals; counted: none", ErrApprovalRequired, what, rules[0])
	}
	digest, err := protocol.RequestDigest(raw)
	if err != nil {
		return nil, fmt.Errorf("%w: request digest: %w", ErrApprovalInvalid, err)
	}
	var counted []string
	for i, a := range env.Approvals {
		if err := p.checkApproval(rules, digest, env, a, now); err != nil {
			return nil, fmt.Errorf("%w: approvals[%d] (%s): %w; counted before it: %s", ErrApprovalInvalid, i, a.ApproverID, err, list(counted))
		}
		if !slices.Contains(counted, a.ApproverID) {
			counted = append(counted, a.ApproverID)
		}
	}
	slices.Sort(counted)
	for _, r := range rules {
		n := 0
		for _, id := range counted {
			if slices.Contains(r.approvers, id) {
				n++
			}
		}
		if n < r.required {
			return counted, fmt.Errorf("%w: %s needs %s; %d distinct approvers counted: %s", ErrApprovalRequired, what, r, n, list(counted))
		}
	}
	return counted, nil
}

func (p *Policy) checkApproval(rules []*rule, digest [32]byte, env *protocol.Envelope, a protocol.Approval, now time.Time) error {
	ap, known := p.approvers[a.ApproverID]
	if !known {
		return errors.New("unknown approver")
	}
	eligible := false
	for _, r := range rules {
		eligible = eligible || slices.Contains(r.approvers, a.ApproverID)
	}
	if !eligible {
		return errors.New("not an approver of this client, op and wallet")
	}
	if a.ExpiresAt > env.ExpiresAt {
		return fmt.Errorf("expires at %s, after the request (%s)", a.Expires().Format(time.RFC3339Nano), env.Expires().Format(time.RFC3339Nano))
	}
	if now.UnixMilli() >= a.ExpiresAt {
		return fmt.Errorf("expired at %s", a.Expires().Format(time.RFC3339Nano))
	}
	if err := protocol.VerifyApproval(digest, a, ap.pub); err != nil {
		return fmt.Errorf("not an approval of this request (made for another request, or forged): %w", err)
	}
	return nil
}

func walletOf(req protocol.Request) string {
	switch r := req.(type) {
	case *protocol.KeygenRequest:
		return r.WalletID
	case *protocol.SigningRequest:
		return r.WalletID
	case *protocol.ReshareRequest:
		return r.WalletID
	}
	return ""
}

func clientLabel(id string) string {
	if id == "" {
		return "legacy client"
	}
	return "client " + id
}

func list(ids []string) string {
	if len(ids) == 0 {
		return "none"
	}
	return "[" + strings.Join(ids, " ") + "]"
}
