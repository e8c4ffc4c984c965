package client

import (
	"crypto"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"

	"github.com/hwsigner/signer/protocol"
	"github.com/hwsigner/signer/routing"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Client submits signed requests and receives verified results. It is safe
// for concurrent use.
type Client struct {
	js       jetstream.JetStream
	signer   crypto.Signer
	keyID    string
	clientID string
	nodeKeys map[string]crypto.PublicKey
	log      *slog.Logger
	cfg      config

	startMu sync.Mutex // serialises consumer start-up

	mu       sync.Mutex
	closed   bool
	handlers map[string]func(protocol.Result)    // op -> callback
	waiters  map[string]*waiter                  // request_id -> waiter
	running  map[string]jetstream.ConsumeContext // op -> consumer
	inflight sync.WaitGroup                      // message handlers running
	done     chan struct{}                       // closed by Close

	delivered atomic.Uint64
	dropped   atomic.Uint64
	misrouted atomic.Uint64
	unclaimed atomic.Uint64
}

type waiter struct {
	op string
	ch chan *protocol.Result // buffered 1; only the taker sends
}

// Stats counts what happened to results.
type Stats struct {
	// Delivered to a waiter or a callback.
	Delivered uint64
	// Dropped: malformed, from an unknown node, or with a bad node signature.
	Dropped uint64
	// Misrouted: correctly signed but for another client or operation.
	Misrouted uint64
	// Unclaimed: returned to the stream because neither a waiter nor a
	// callback wanted it (counted per delivery).
	Unclaimed uint64
}

// New returns a Client that publishes requests on nc, signed by signer
// (Ed25519 or ECDSA P-256). WithNodeKeys is required. New does no network
// I/O: the result consumers are created when a callback is registered or a
// Wait helper is first used. Close stops them; nc stays open.
func New(nc *nats.Conn, signer crypto.Signer, opts ...Option) (*Client, error) {
	if nc == nil {
		return nil, errors.New("client: nil NATS connection")
	}
	if signer == nil {
		return nil, errors.New("client: nil signer")
	}
	keyID, err := protocol.KeyID(signer.Public())
	if err != nil {
		return nil, fmt.Errorf("client: signer: %w", err)
	}
	cfg := config{logger: slog.Default(), ttl: DefaultRequestTTL, resultAckWait: routing.DefaultResultAckWait}
	for _, o := range opts {
		if err := o(&cfg); err != nil {
			return nil, err
		}
	}
	if len(cfg.nodeKeys) == 0 {
		return nil, ErrNoNodeKeys
	}
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, fmt.Errorf("client: jetstream: %w", err)
	}
	return &Client{
		js:       js,
		signer:   signer,
		keyID:    keyID,
		clientID: cfg.clientID,
		nodeKeys: cfg.nodeKeys,
		log:      cfg.logger.With("client_id", cfg.clientID, "key_id", keyID),
		cfg:      cfg,
		handlers: map[string]func(protocol.Result){},
		waiters:  map[string]*waiter{},
		running:  map[string]jetstream.ConsumeContext{},
		done:     make(chan struct{}),
	}, nil
}

// ClientID returns the client ID ("" for a legacy client).
func (c *Client) ClientID() string { return c.clientID }

// KeyID returns the key ID of the client's signing key.
func (c *Client) KeyID() string { return c.keyID }

// Stats returns the result counters.
func (c *Client) Stats() Stats {
	return Stats{
		Delivered: c.delivered.Load(),
		Dropped:   c.dropped.Load(),
		Misrouted: c.misrouted.Load(),
		Unclaimed: c.unclaimed.Load(),
	}
}

// Close stops the result consumers, waits for running callbacks, and makes
// pending Wait helpers return ErrClosed. Results not yet acked stay in the
// stream for the next Client. Do not call Close from a callback.
func (c *Client) Close() error {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return nil
	}
	c.closed = true
	close(c.done)
	running := c.running
	c.running = map[string]jetstream.ConsumeContext{}
	c.mu.Unlock()

	for _, cc := range running {
		cc.Stop()
	}
	for _, cc := range running {
		<-cc.Closed()
	}
	c.inflight.Wait()
	return nil
}
