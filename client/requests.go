package client

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"time"

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
	// one when retrying makes the retry idempotent.
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
// JetStream has stored it. The result arrives on OnWalletCreationResult.
func (c *Client) CreateWallet(ctx context.Context, walletID string, keyTypes ...string) (string, error) {
	return c.Keygen(ctx, KeygenParams{WalletID: walletID, KeyTypes: keyTypes})
}

// Keygen is CreateWallet with all parameters.
func (c *Client) Keygen(ctx context.Context, p KeygenParams) (string, error) {
	return c.send(ctx, p.request())
}

// Sign submits a signing request and returns its request_id once JetStream
// has stored it. The result arrives on OnSignResult.
func (c *Client) Sign(ctx context.Context, p SignParams) (string, error) {
	return c.send(ctx, p.request())
}

// Reshare submits a resharing request and returns its request_id once
// JetStream has stored it. The result arrives on OnReshareResult.
func (c *Client) Reshare(ctx context.Context, p ReshareParams) (string, error) {
	return c.send(ctx, p.request())
}

// CreateWalletAndWait submits a keygen request and waits for its result.
func (c *Client) CreateWalletAndWait(ctx context.Context, walletID string, keyTypes ...string) (*protocol.Result, error) {
	return c.KeygenAndWait(ctx, KeygenParams{WalletID: walletID, KeyTypes: keyTypes})
}

// KeygenAndWait is CreateWalletAndWait with all parameters.
func (c *Client) KeygenAndWait(ctx context.Context, p KeygenParams) (*protocol.Result, error) {
	return c.submitAndWait(ctx, p.request())
}

// SignAndWait submits a signing request and waits for its result.
func (c *Client) SignAndWait(ctx context.Context, p SignParams) (*protocol.Result, error) {
	return c.submitAndWait(ctx, p.request())
}

// ReshareAndWait submits a resharing request and waits for its result.
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

// send prepares and submits req.
func (c *Client) send(ctx context.Context, req protocol.Request) (string, error) {
	if err := c.prepare(req); err != nil {
		return "", err
	}
	return c.submit(ctx, req)
}

// submit signs and publishes a prepared req and waits for the PubAck.
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
		jetstream.WithMsgID(id), jetstream.WithExpectStream(routing.RequestStream))
	if err != nil {
		return "", fmt.Errorf("client: publishing %s request %s: %w", op, id, err)
	}
	if ack.Duplicate {
		c.log.Warn("request_id already published; the first request with this id stands", "op", op, "request_id", id)
	} else {
		c.log.Debug("request published", "op", op, "request_id", id, "subject", subject, "seq", ack.Sequence)
	}
	return id, nil
}

// submitAndWait registers a waiter for the request_id, submits and waits.
func (c *Client) submitAndWait(ctx context.Context, req protocol.Request) (*protocol.Result, error) {
	if err := c.prepare(req); err != nil {
		return nil, err
	}
	op, id := req.Operation(), req.Env().RequestID
	if err := c.ensureConsumer(ctx, op); err != nil {
		return nil, err
	}
	w, err := c.addWaiter(op, id)
	if err != nil {
		return nil, err
	}
	defer c.removeWaiter(id, w)
	if _, err := c.submit(ctx, req); err != nil {
		return nil, err
	}
	select {
	case res := <-w.ch:
		return res, resultError(res)
	case <-ctx.Done():
		return nil, fmt.Errorf("client: waiting for the %s result of request %s: %w", op, id, ctx.Err())
	case <-c.done:
		return nil, fmt.Errorf("client: waiting for the %s result of request %s: %w", op, id, ErrClosed)
	}
}
