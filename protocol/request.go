package protocol

import (
	"fmt"
	"time"
)

// Envelope holds the members every request carries. Times are integer Unix
// milliseconds (UTC by definition), which keeps the canonical encoding free of
// formatting choices.
type Envelope struct {
	// Op is "keygen", "sign" or "reshare". It is signed, binds the request
	// to its operation and selects the signature's domain string.
	Op string `json:"op"`
	// ClientID selects the result subjects; "" is a legacy client.
	ClientID string `json:"client_id"`
	// KeyID identifies the client's key: KeyID(pub).
	KeyID string `json:"key_id"`
	// RequestID is unique per request (Nats-Msg-Id, replay protection).
	RequestID string `json:"request_id"`
	// CreatedAt and ExpiresAt are Unix milliseconds.
	CreatedAt int64 `json:"created_at"`
	ExpiresAt int64 `json:"expires_at"`
	// Approvals are approvers' consents to this exact request (see
	// Approval and docs/canonical-encoding.md §9). The client's signature
	// covers them; RequestDigest, which they sign, leaves them out.
	Approvals []Approval `json:"approvals,omitempty"`
	// Signature is base64 (standard, padded) over the canonical encoding
	// of every other member.
	Signature string `json:"signature,omitempty"`
}

// Env returns e; it lets the request types share the Request interface.
func (e *Envelope) Env() *Envelope { return e }

// Created returns created_at as a time.
func (e *Envelope) Created() time.Time { return time.UnixMilli(e.CreatedAt).UTC() }

// Expires returns expires_at as a time.
func (e *Envelope) Expires() time.Time { return time.UnixMilli(e.ExpiresAt).UTC() }

// SetTimes sets created_at to now (truncated to milliseconds) and expires_at
// to now+ttl.
func (e *Envelope) SetTimes(now time.Time, ttl time.Duration) {
	e.CreatedAt = now.UnixMilli()
	e.ExpiresAt = now.Add(ttl).UnixMilli()
}

// CheckTime reports ErrExpired when now is at or after expires_at, and
// ErrNotYetValid when created_at is more than skew ahead of now.
func (e *Envelope) CheckTime(now time.Time, skew time.Duration) error {
	ms := now.UnixMilli()
	if ms >= e.ExpiresAt {
		return fmt.Errorf("%w: expired at %s", ErrExpired, e.Expires().Format(time.RFC3339Nano))
	}
	if e.CreatedAt > now.Add(skew).UnixMilli() {
		return fmt.Errorf("%w: created at %s", ErrNotYetValid, e.Created().Format(time.RFC3339Nano))
	}
	return nil
}

func (e *Envelope) validate(op string) error {
	if e.Op != op {
		return fieldErr("op", fmt.Sprintf("%q, want %q", e.Op, op), ErrUnknownOp)
	}
	if err := validClientID(e.ClientID); err != nil {
		return fieldErr("client_id", "invalid", err)
	}
	if !validKeyID(e.KeyID) {
		return fieldErr("key_id", "not 32 lowercase hex digits", nil)
	}
	if err := ValidToken(e.RequestID); err != nil {
		return fieldErr("request_id", "invalid", err)
	}
	if e.CreatedAt <= 0 {
		return fieldErr("created_at", "missing", nil)
	}
	if e.ExpiresAt <= e.CreatedAt {
		return fieldErr("expires_at", "not after created_at", nil)
	}
	if time.Duration(e.ExpiresAt-e.CreatedAt)*time.Millisecond > MaxRequestTTL {
		return fieldErr("expires_at", fmt.Sprintf("more than %s after created_at", MaxRequestTTL), nil)
	}
	if len(e.Approvals) > MaxApprovals {
		return fieldErr("approvals", fmt.Sprintf("%d approvals, at most %d", len(e.Approvals), MaxApprovals), nil)
	}
	for i, a := range e.Approvals {
		if err := ValidToken(a.ApproverID); err != nil {
			return fieldErr(fmt.Sprintf("approvals[%d].approver_id", i), "invalid", err)
		}
		if a.ExpiresAt <= 0 {
			return fieldErr(fmt.Sprintf("approvals[%d].expires_at", i), "missing", nil)
		}
		if a.Signature == "" {
			return fieldErr(fmt.Sprintf("approvals[%d].signature", i), "missing", nil)
		}
	}
	return nil
}

func validKeyID(s string) bool {
	if len(s) != 32 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return false
		}
	}
	return true
}

// Request is implemented by *KeygenRequest, *SigningRequest and
// *ReshareRequest.
type Request interface {
	Env() *Envelope
	// Operation returns the op this request type belongs to.
	Operation() string
	// Validate checks every field except the signature and the clock.
	Validate() error
}

// KeygenRequest asks for a new wallet (one key per key type).
type KeygenRequest struct {
	Envelope
	WalletID string `json:"wallet_id"`
	// KeyTypes defaults to both key types when empty.
	KeyTypes []string `json:"key_types,omitempty"`
}

// Operation returns OpKeygen.
func (*KeygenRequest) Operation() string { return OpKeygen }

// EffectiveKeyTypes returns KeyTypes, or DefaultKeyTypes when empty.
func (r *KeygenRequest) EffectiveKeyTypes() []string {
	if len(r.KeyTypes) == 0 {
		return DefaultKeyTypes()
	}
	return r.KeyTypes
}

// Validate checks the request's fields.
func (r *KeygenRequest) Validate() error {
	if err := r.Envelope.validate(OpKeygen); err != nil {
		return err
	}
	if err := ValidToken(r.WalletID); err != nil {
		return fieldErr("wallet_id", "invalid", err)
	}
	seen := map[string]bool{}
	for i, kt := range r.KeyTypes {
		field := fmt.Sprintf("key_types[%d]", i)
		if !ValidKeyType(kt) {
			return fieldErr(field, fmt.Sprintf("unknown key type %q", kt), nil)
		}
		if seen[kt] {
			return fieldErr(field, fmt.Sprintf("duplicate key type %q", kt), nil)
		}
		seen[kt] = true
	}
	return nil
}

// SigningRequest asks the wallet's committee to sign Tx.
type SigningRequest struct {
	Envelope
	WalletID string `json:"wallet_id"`
	KeyType  string `json:"key_type"`
	TxID     string `json:"tx_id"`
	// Tx is the 32-byte digest (secp256k1) or the full message (ed25519,
	// leading zero bytes kept). JSON: base64, standard alphabet, padded.
	Tx []byte `json:"tx"`
	// DerivationPath holds non-hardened BIP32 child indices (< 2^31).
	DerivationPath      []uint32 `json:"derivation_path,omitempty"`
	NetworkInternalCode string   `json:"network_internal_code,omitempty"`
}

// Operation returns OpSign.
func (*SigningRequest) Operation() string { return OpSign }

// Validate checks the request's fields.
func (r *SigningRequest) Validate() error {
	if err := r.Envelope.validate(OpSign); err != nil {
		return err
	}
	if err := ValidToken(r.WalletID); err != nil {
		return fieldErr("wallet_id", "invalid", err)
	}
	if err := ValidToken(r.TxID); err != nil {
		return fieldErr("tx_id", "invalid", err)
	}
	switch r.KeyType {
	case KeyTypeSecp256k1:
		if len(r.Tx) != DigestSize {
			return fieldErr("tx", fmt.Sprintf("secp256k1 takes a %d-byte digest, got %d bytes", DigestSize, len(r.Tx)), nil)
		}
	case KeyTypeEd25519:
		if len(r.Tx) == 0 || len(r.Tx) > MaxTxSize {
			return fieldErr("tx", fmt.Sprintf("ed25519 message of %d bytes, want 1..%d", len(r.Tx), MaxTxSize), nil)
		}
	default:
		return fieldErr("key_type", fmt.Sprintf("unknown key type %q", r.KeyType), nil)
	}
	if len(r.DerivationPath) > MaxDerivationDepth {
		return fieldErr("derivation_path", fmt.Sprintf("%d levels, at most %d", len(r.DerivationPath), MaxDerivationDepth), nil)
	}
	for i, idx := range r.DerivationPath {
		if idx >= HardenedOffset {
			return fieldErr(fmt.Sprintf("derivation_path[%d]", i), "hardened index not supported", nil)
		}
	}
	if len(r.NetworkInternalCode) > MaxNetworkCodeLen {
		return fieldErr("network_internal_code", fmt.Sprintf("longer than %d bytes", MaxNetworkCodeLen), nil)
	}
	return nil
}

// ReshareRequest moves a wallet key to a new committee and/or threshold.
type ReshareRequest struct {
	Envelope
	WalletID  string `json:"wallet_id"`
	KeyType   string `json:"key_type"`
	SessionID string `json:"session_id"`
	// NodeIDs is the new committee.
	NodeIDs []string `json:"node_ids"`
	// NewThreshold t: t+1 of the new committee sign. 1 <= t < len(NodeIDs).
	NewThreshold int `json:"new_threshold"`
}

// Operation returns OpReshare.
func (*ReshareRequest) Operation() string { return OpReshare }

// Validate checks the request's fields.
func (r *ReshareRequest) Validate() error {
	if err := r.Envelope.validate(OpReshare); err != nil {
		return err
	}
	if err := ValidToken(r.WalletID); err != nil {
		return fieldErr("wallet_id", "invalid", err)
	}
	if !ValidKeyType(r.KeyType) {
		return fieldErr("key_type", fmt.Sprintf("unknown key type %q", r.KeyType), nil)
	}
	if err := ValidToken(r.SessionID); err != nil {
		return fieldErr("session_id", "invalid", err)
	}
	if len(r.NodeIDs) == 0 || len(r.NodeIDs) > MaxNodeIDs {
		return fieldErr("node_ids", fmt.Sprintf("%d nodes, want 1..%d", len(r.NodeIDs), MaxNodeIDs), nil)
	}
	seen := map[string]bool{}
	for i, id := range r.NodeIDs {
		field := fmt.Sprintf("node_ids[%d]", i)
		if err := ValidToken(id); err != nil {
			return fieldErr(field, "invalid", err)
		}
		if seen[id] {
			return fieldErr(field, fmt.Sprintf("duplicate node %q", id), nil)
		}
		seen[id] = true
	}
	if r.NewThreshold < 1 || r.NewThreshold >= len(r.NodeIDs) {
		return fieldErr("new_threshold", fmt.Sprintf("%d, want 1..%d for %d nodes", r.NewThreshold, len(r.NodeIDs)-1, len(r.NodeIDs)), nil)
	}
	return nil
}

// NewRequest returns an empty request of op's type.
func NewRequest(op string) (Request, error) {
	switch op {
	case OpKeygen:
		return &KeygenRequest{}, nil
	case OpSign:
		return &SigningRequest{}, nil
	case OpReshare:
		return &ReshareRequest{}, nil
	}
	return nil, fmt.Errorf("%w: %q", ErrUnknownOp, op)
}
