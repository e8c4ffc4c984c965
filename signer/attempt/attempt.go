// Package attempt is how the nodes of a cluster agree to re-run a signing
// request on another committee when an attempt failed for want of a peer
// (a chosen signer that did not answer the handshake, died mid-session, or
// whose messages a NATS restart lost).
//
// A node whose attempt failed so publishes a Plan, signed with its identity
// key, on the request's subject of the MPC_ATTEMPTS stream
// (routing.AttemptSubject): the attempt number, the nodes excluded so far
// and the t+1 signers of the next attempt. Every node reads that stream in
// stream order and follows, for each attempt, the first plan that verifies
// and fits the wallet (Plan.Check): so all of them run the same attempt with
// the same signers, whoever planned it and whatever their readiness views.
// A plan only says who signs: each signer still checks the request itself,
// and a plan cannot make a node sign anything the client did not ask for.
//
// The package is pure: encoding, signatures and the rules. The node does
// the I/O.
package attempt

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/hwsigner/signer/protocol"
)

// Limits of a plan.
const (
	// MaxAttempts bounds the attempts of one request (attempt 0 is the
	// first run; plans number 1..MaxAttempts).
	MaxAttempts = 8
	// MaxSize bounds an encoded plan.
	MaxSize = 16 << 10
	// maxReason bounds Plan.Reason.
	maxReason = 512
	// domain prefixes the signed bytes.
	domain = "hwsigner/v1/attempt-plan\n"
	// version of the plan format.
	version = 1
)

// Errors of Decode and Check.
var (
	// ErrMalformed: the bytes are not a plan of this format.
	ErrMalformed = errors.New("attempt: malformed plan")
	// ErrForged: the plan's signature does not verify under the identity
	// key of the node it names.
	ErrForged = errors.New("attempt: plan not signed by the node it names")
	// ErrMisfit: the plan does not fit the request or the wallet.
	ErrMisfit = errors.New("attempt: plan does not fit the wallet")
)

// Plan is one node's plan of a request's next attempt.
type Plan struct {
	V         int    `json:"v"`
	ClientID  string `json:"client_id"`
	RequestID string `json:"request_id"`
	// Attempt is the attempt planned: 1 after the first run failed.
	Attempt int `json:"attempt"`
	// Signers are the t+1 nodes that sign in this attempt, sorted.
	Signers []string `json:"signers"`
	// Excluded are the nodes left out of this and every later attempt
	// (the silent ones found so far), sorted.
	Excluded []string `json:"excluded"`
	// Reason says why the previous attempt failed (no secret: a node ID,
	// a code).
	Reason string `json:"reason"`
	// From is the node that planned it; CreatedAt when (Unix ms).
	From      string `json:"from"`
	CreatedAt int64  `json:"created_at"`
}

// wire is a plan on the stream: the exact plan bytes that were signed, and
// the ASN.1 ECDSA P-256 signature over SHA-256(domain || plan).
type wire struct {
	Plan json.RawMessage `json:"plan"`
	Sig  []byte          `json:"sig"`
}

// Sign encodes p, signed by signer (the node's identity key).
func Sign(ctx context.Context, signer crypto.Signer, p Plan) ([]byte, error) {
	p.V = version
	if p.CreatedAt == 0 {
		p.CreatedAt = time.Now().UnixMilli()
	}
	if err := p.wellFormed(); err != nil {
		return nil, err
	}
	raw, err := json.Marshal(p)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	sum := sha256.Sum256(append([]byte(domain), raw...))
	sig, err := signer.Sign(nil, sum[:], crypto.SHA256)
	if err != nil {
		return nil, fmt.Errorf("attempt: sign plan: %w", err)
	}
	return json.Marshal(wire{Plan: raw, Sig: sig})
}

// Decode parses an encoded plan and verifies its signature under the key
// of the node it names in peers (node ID -> identity key).
func Decode(b []byte, peers map[string]*ecdsa.PublicKey) (*Plan, error) {
	if len(b) > MaxSize {
		return nil, fmt.Errorf("%w: %d bytes, at most %d", ErrMalformed, len(b), MaxSize)
	}
	var w wire
	if err := strict(b, &w); err != nil {
		return nil, err
	}
	var p Plan
	if err := strict(w.Plan, &p); err != nil {
		return nil, err
	}
	if err := p.wellFormed(); err != nil {
		return nil, err
	}
	pub := peers[p.From]
	if pub == nil {
		return nil, fmt.Errorf("%w: %q is not a known node", ErrForged, p.From)
	}
	sum := sha256.Sum256(append([]byte(domain), w.Plan...))
	if !ecdsa.VerifyASN1(pub, sum[:], w.Sig) {
		return nil, fmt.Errorf("%w: %s", ErrForged, p.From)
	}
	return &p, nil
}

func strict(b []byte, v any) error {
	d := json.NewDecoder(bytes.NewReader(b))
	d.DisallowUnknownFields()
	if err := d.Decode(v); err != nil {
		return fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	if d.More() {
		return fmt.Errorf("%w: trailing data", ErrMalformed)
	}
	return nil
}

// wellFormed checks what needs no wallet: the version, IDs that are valid
// tokens, an attempt in range, sorted distinct node lists, a short reason.
func (p *Plan) wellFormed() error {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%w: %s", ErrMalformed, fmt.Sprintf(format, args...))
	}
	switch {
	case p.V != version:
		return bad("version %d", p.V)
	case p.Attempt < 1 || p.Attempt > MaxAttempts:
		return bad("attempt %d not in 1..%d", p.Attempt, MaxAttempts)
	case len(p.Reason) > maxReason:
		return bad("reason of %d bytes", len(p.Reason))
	case protocol.ValidToken(p.From) != nil:
		return bad("from %q", p.From)
	case p.ClientID != "" && protocol.ValidToken(p.ClientID) != nil:
		return bad("client_id %q", p.ClientID)
	case p.RequestID == "" || len(p.RequestID) > 256:
		return bad("request_id")
	case len(p.Signers) == 0:
		return bad("no signers")
	}
	for _, list := range [][]string{p.Signers, p.Excluded} {
		for i, id := range list {
			if protocol.ValidToken(id) != nil {
				return bad("node id %q", id)
			}
			if i > 0 && list[i-1] >= id {
				return bad("node list not sorted and distinct")
			}
		}
	}
	for _, s := range p.Signers {
		if slices.Contains(p.Excluded, s) {
			return bad("signer %s is excluded", s)
		}
	}
	return nil
}

// Check reports whether p fits the request (clientID, requestID) of a
// wallet with the given committee and threshold t: the planner and every
// signer are members, there are exactly t+1 signers, and every excluded
// node is a member.
func (p *Plan) Check(clientID, requestID string, committee []string, t int) error {
	switch {
	case p.ClientID != clientID || p.RequestID != requestID:
		return fmt.Errorf("%w: plan of another request", ErrMisfit)
	case !slices.Contains(committee, p.From):
		return fmt.Errorf("%w: planner %s is not in the wallet's committee", ErrMisfit, p.From)
	case len(p.Signers) != t+1:
		return fmt.Errorf("%w: %d signers, the wallet needs %d", ErrMisfit, len(p.Signers), t+1)
	}
	for _, id := range append(slices.Clone(p.Signers), p.Excluded...) {
		if !slices.Contains(committee, id) {
			return fmt.Errorf("%w: %s is not in the wallet's committee", ErrMisfit, id)
		}
	}
	return nil
}
