package client

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"time"

	"github.com/hwsigner/signer/attest"
	"github.com/hwsigner/signer/protocol"
	"github.com/hwsigner/signer/routing"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// KeygenParams describes a wallet to create.
type KeygenParams struct {
	WalletID string
	// KeyTypes: protocol.KeyTypeSecp256k1 and/or protocol.KeyTypeEd25519;
	// empty means both.
	KeyTypes []string
	// RequestID is generated (128 random bits, hex) when empty. Reusing
	// one when retrying makes the retry idempotent: a node that already
	// took the request answers REPLAYED and never runs it twice.
	RequestID string
}

// SignParams describes a signature to make.
type SignParams struct {
	WalletID string
	KeyType  string
	TxID     string
	// Tx: the 32-byte digest (secp256k1) or the whole message (ed25519).
	Tx []byte
	// DerivationPath: non-hardened BIP32 child indices.
	DerivationPath      []uint32
	NetworkInternalCode string
	RequestID           string
}

// ReshareParams describes a move to a new committee and/or threshold.
type ReshareParams struct {
	WalletID     string
	KeyType      string
	SessionID    string
	NodeIDs      []string
	NewThreshold int
	RequestID    string
}

func (p KeygenParams) request() protocol.Request {
	return &protocol.KeygenRequest{
		Envelope: protocol.Envelope{RequestID: p.RequestID},
		WalletID: p.WalletID,
		KeyTypes: p.KeyTypes,
	}
}

func (p SignParams) request() protocol.Request {
	return &protocol.SigningRequest{
		Envelope:            protocol.Envelope{RequestID: p.RequestID},
		WalletID:            p.WalletID,
		KeyType:             p.KeyType,
		TxID:                p.TxID,
		Tx:                  p.Tx,
		DerivationPath:      p.DerivationPath,
		NetworkInternalCode: p.NetworkInternalCode,
	}
}

func (p ReshareParams) request() protocol.Request {
	return &protocol.ReshareRequest{
		Envelope:     protocol.Envelope{RequestID: p.RequestID},
		WalletID:     p.WalletID,
		KeyType:      p.KeyType,
		SessionID:    p.SessionID,
		NodeIDs:      p.NodeIDs,
		NewThreshold: p.NewThreshold,
	}
}

// CreateWallet submits a keygen request and returns its request_id once
// JetStream has stored it. The result arrives on OnWalletCreationResult: a
// TIMEOUT when nothing is attested by the request's expires_at plus the
// grace (see WithExpiryGrace), even when no node answers.
func (c *Client) CreateWallet(ctx context.Context, walletID string, keyTypes ...string) (string, error) {
	return c.Keygen(ctx, KeygenParams{WalletID: walletID, KeyTypes: keyTypes})
}

// Keygen is CreateWallet with all parameters.
func (c *Client) Keygen(ctx context.Context, p KeygenParams) (string, error) {
	return c.send(ctx, p.request())
}

// Sign submits a signing request and returns its request_id once JetStream
// has stored it. The result arrives on OnSignResult (a TIMEOUT at the
// latest at the request's expires_at plus the grace).
func (c *Client) Sign(ctx context.Context, p SignParams) (string, error) {
	return c.send(ctx, p.request())
}

// Reshare submits a resharing request and returns its request_id once
// JetStream has stored it. The result arrives on OnReshareResult (a TIMEOUT
// at the latest at the request's expires_at plus the grace).
func (c *Client) Reshare(ctx context.Context, p ReshareParams) (string, error) {
	return c.send(ctx, p.request())
}

// CreateWalletAndWait submits a keygen request and waits for its result:
// the public keys every node reported identically.
func (c *Client) CreateWalletAndWait(ctx context.Context, walletID string, keyTypes ...string) (*protocol.Result, error) {
	return c.KeygenAndWait(ctx, KeygenParams{WalletID: walletID, KeyTypes: keyTypes})
}

// KeygenAndWait is CreateWalletAndWait with all parameters.
func (c *Client) KeygenAndWait(ctx context.Context, p KeygenParams) (*protocol.Result, error) {
	return c.submitAndWait(ctx, p.request())
}

// SignAndWait submits a signing request and waits for its result: t+1
// identical successes whose signature verifies over p.Tx under the result's
// pub_key (the wallet key, or the child key of p.DerivationPath). Like every
// Wait helper it returns TIMEOUT when nothing is attested by the request's
// expires_at plus the grace, or when ctx ends first; either way the request
// is then decided for this Client (its later results are stragglers).
func (c *Client) SignAndWait(ctx context.Context, p SignParams) (*protocol.Result, error) {
	return c.submitAndWait(ctx, p.request())
}

// ReshareAndWait submits a resharing request and waits for its result (t+1
// identical successes).
func (c *Client) ReshareAndWait(ctx context.Context, p ReshareParams) (*protocol.Result, error) {
	return c.submitAndWait(ctx, p.request())
}

func newRequestID() (string, error) {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", fmt.Errorf("client: request id: %w", err)
	}
	return hex.EncodeToString(b[:]), nil
}

// prepare fills the envelope's client_id, request_id and times.
func (c *Client) prepare(req protocol.Request) error {
	env := req.Env()
	env.ClientID = c.clientID
	if env.RequestID == "" {
		id, err := newRequestID()
		if err != nil {
			return err
		}
		env.RequestID = id
	}
	env.SetTimes(time.Now(), c.cfg.ttl)
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

// send prepares, tracks and submits req: the callback gets its decision
// by its expires_at plus the grace, even when no node answers. A request
// that could not be published is not tracked (the caller has the error).
func (c *Client) send(ctx context.Context, req protocol.Request) (string, error) {
	if err := c.prepare(req); err != nil {
		return "", err
	}
	return c.trackAndSubmit(ctx, req)
}

// trackAndSubmit is send of a prepared request.
func (c *Client) trackAndSubmit(ctx context.Context, req protocol.Request) (string, error) {
	c.mu.Lock()
	key, s, err := c.track(req)
	c.mu.Unlock()
	if err != nil {
		return "", err
	}
	id, err := c.submit(ctx, req)
	if err != nil {
		c.untrack(key, s)
	}
	return id, err
}

// submit signs and publishes a prepared req and waits for the PubAck. The
// Nats-Msg-Id is routing.RequestMsgID: scoped by client and bound to the
// signed bytes, so that nothing published under a guessed id suppresses it.
func (c *Client) submit(ctx context.Context, req protocol.Request) (string, error) {
	if c.isClosed() {
		return "", ErrClosed
	}
	op, id := req.Operation(), req.Env().RequestID
	subject, err := routing.RequestSubject(op, walletOf(req))
	if err != nil {
		return "", fmt.Errorf("client: %s request %s: %w", op, id, err)
	}
	raw, err := protocol.SignRequest(ctx, c.signer, op, req)
	if err != nil {
		return "", fmt.Errorf("client: %s request %s: %w", op, id, err)
	}
	ack, err := c.js.PublishMsg(ctx, &nats.Msg{Subject: subject, Data: raw},
		jetstream.WithMsgID(routing.RequestMsgID(c.clientID, id, raw)), jetstream.WithExpectStream(routing.RequestStream))
	if err != nil {
		return "", fmt.Errorf("client: publishing %s request %s: %w", op, id, err)
	}
	if ack.Duplicate {
		c.log.Warn("these request bytes were already published; the first copy stands", "op", op, "request_id", id)
	} else {
		c.log.Debug("request published", "op", op, "request_id", id, "subject", subject, "seq", ack.Sequence)
	}
	return id, nil
}

// submitAndWait registers a waiter for the request_id, submits and waits
// for the committee's decision.
func (c *Client) submitAndWait(ctx context.Context, req protocol.Request) (*protocol.Result, error) {
	if err := c.prepare(req); err != nil {
		return nil, err
	}
	return c.awaitSubmit(ctx, req)
}

// awaitSubmit is submitAndWait of a prepared request.
func (c *Client) awaitSubmit(ctx context.Context, req protocol.Request) (*protocol.Result, error) {
	op, id := req.Operation(), req.Env().RequestID
	if err := c.ensureConsumer(ctx, op); err != nil {
		return nil, err
	}
	w, err := c.addWaiter(req)
	if err != nil {
		return nil, err
	}
	if _, err := c.submit(ctx, req); err != nil {
		c.releaseWaiter(w)
		return nil, err
	}
	select {
	case d := <-w.ch: // the committee's decision, or TIMEOUT at the request's expiry plus the grace
		return c.waited(req, d)
	case <-ctx.Done():
		d, owned := c.giveUp(w)
		if !owned { // decided just now
			select {
			case d := <-w.ch:
				return c.waited(req, d)
			case <-c.done:
				return nil, fmt.Errorf("client: waiting for the %s result of request %s: %w", op, id, ErrClosed)
			}
		}
		return nil, fmt.Errorf("client: waiting for the %s result of request %s: %w: %w", op, id, ctx.Err(), requestError(req, d))
	case <-c.done:
		c.releaseWaiter(w)
		return nil, fmt.Errorf("client: waiting for the %s result of request %s: %w", op, id, ErrClosed)
	}
}

// waited turns a waiter's decision into the Wait helpers' return values.
// A success must also match the request (wallet_id, tx_id, key_type,
// session_id) and, for signing, its signature must verify over the
// request's tx under its pub_key; otherwise it is refused as
// RESULT_MISMATCH.
func (c *Client) waited(req protocol.Request, d attest.Decision) (*protocol.Result, error) {
	id := req.Env().RequestID
	if d.Err != nil {
		return d.Result, requestError(req, d)
	}
	if err := matches(req, d.Result); err != nil {
		res := &protocol.Result{Op: d.Result.Op, RequestID: id, ClientID: d.Result.ClientID, KeyID: d.Result.KeyID,
			WalletID: d.Result.WalletID, TxID: d.Result.TxID, SessionID: d.Result.SessionID, KeyType: d.Result.KeyType}
		reason := fmt.Sprintf("the attested success (%d nodes) does not fit the request: %v", len(d.Attestations), err)
		res.SetError(protocol.CodeResultMismatch, reason)
		c.log.Error("refusing an attested result that does not fit the request", "op", res.Op, "request_id", id, "err", err)
		return res, requestError(req, attest.Decision{Result: res, Err: &attest.Error{Code: protocol.CodeResultMismatch, Reason: reason}})
	}
	return d.Result, nil
}

func matches(req protocol.Request, res *protocol.Result) error {
	want := protocol.NewResult(req)
	switch {
	case res.WalletID != want.WalletID:
		return fmt.Errorf("wallet_id %q, want %q", res.WalletID, want.WalletID)
	case res.TxID != want.TxID || res.KeyType != want.KeyType || res.SessionID != want.SessionID:
		return fmt.Errorf("tx_id/key_type/session_id %q/%q/%q, want %q/%q/%q", res.TxID, res.KeyType, res.SessionID,
			want.TxID, want.KeyType, want.SessionID)
	}
	if r, ok := req.(*protocol.SigningRequest); ok {
		return attest.VerifySignature(res, r.Tx)
	}
	return nil
}
