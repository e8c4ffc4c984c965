package client

import (
	"crypto"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hwsigner/signer/attest"
	"github.com/hwsigner/signer/protocol"
	"github.com/hwsigner/signer/routing"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Client submits signed requests and receives attested results. It is
// safe for concurrent use.
type Client struct {
	js       jetstream.JetStream
	signer   crypto.Signer
	keyID    string
	clientID string
	nodeKeys map[string]crypto.PublicKey
	rules    attest.Rules
	log      *slog.Logger
	cfg      config

	startMu sync.Mutex // serialises consumer start-up

	mu        sync.Mutex
	closed    bool
	handlers  map[string]func(attest.Decision)    // op -> callback
	waiters   map[string]*waiter                  // request_id -> waiter
	pending   map[reqKey]*pending                 // requests being collected
	decided   decidedSet                          // requests decided lately: their stragglers are acked
	submitted map[reqKey]*submitted               // sent by Keygen, Sign, Reshare and undecided: decided by their deadline, results or not
	running   map[string]jetstream.ConsumeContext // op -> consumer
	keeping   bool                                // the keeper goroutine runs
	inflight  sync.WaitGroup                      // message handlers and the keeper's callbacks running
	bg        sync.WaitGroup                      // the keeper goroutine
	done      chan struct{}                       // closed by Close

	cbMu map[string]*sync.Mutex // op -> held while its callback runs: one at a time per op

	delivered  atomic.Uint64
	dropped    atomic.Uint64
	misrouted  atomic.Uint64
	unclaimed  atomic.Uint64
	stragglers atomic.Uint64
	timeouts   atomic.Uint64
}

// reqKey names one request's results: a Collector gathers those of one key.
type reqKey struct{ op, requestID, keyID string }

// waiter is a Wait helper's request.
type waiter struct {
	op string
	ch chan attest.Decision // buffered 1; the one who takes p from c.pending sends
	p  *pending
}

// pending collects the results of one request; its messages stay un-acked
// until the request is decided.
type pending struct {
	key      reqKey
	coll     *attest.Collector
	msgs     map[uint64]jetstream.Msg // by stream sequence
	w        *waiter                  // nil: for the callback
	deadline time.Time                // decided TIMEOUT then, if still undecided
	sub      *submitted               // nil: a request this client did not send (or sent before a restart)
	real     bool                     // a result other than REPLAYED came
	expired  bool                     // decided TIMEOUT by the keeper
}

// submitted is what the client keeps of a request it sent, to decide it by
// expires_at plus the grace and to name it in a TIMEOUT no node answered.
type submitted struct {
	expires, deadline                  time.Time
	walletID, txID, keyType, sessionID string
}

// Stats counts what happened to results.
type Stats struct {
	// Delivered: decisions handed to a waiter or a callback, one per request.
	Delivered uint64
	// Dropped: malformed, from an unknown node, or with a bad node signature.
	Dropped uint64
	// Misrouted: correctly signed but for another client, operation or
	// client key (key_id; e.g. the refusal of a key that claimed our
	// client ID).
	Misrouted uint64
	// Unclaimed: returned to the stream because neither a waiter nor a
	// callback wanted it (counted per delivery).
	Unclaimed uint64
	// Stragglers: results of a request already decided, acked.
	Stragglers uint64
	// Timeouts: TIMEOUT decisions the client made (counted in Delivered
	// too): a Wait helper's context ended, or nothing was attested by the
	// request's expires_at plus the grace (for results of a request this
	// client did not send: within the request TTL of the first).
	Timeouts uint64
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
	cfg := config{logger: slog.Default(), ttl: DefaultRequestTTL, grace: DefaultExpiryGrace,
		resultAckWait: routing.DefaultResultAckWait, maxPending: MaxPendingRequests, redecideAfter: redecideAfter}
	for _, o := range opts {
		if err := o(&cfg); err != nil {
			return nil, err
		}
	}
	if len(cfg.nodeKeys) == 0 {
		return nil, ErrNoNodeKeys
	}
	if cfg.signers > len(cfg.nodeKeys) {
		return nil, fmt.Errorf("client: signers %d, but only %d node keys", cfg.signers, len(cfg.nodeKeys))
	}
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, fmt.Errorf("client: jetstream: %w", err)
	}
	rules := attest.Rules{Nodes: slices.Sorted(maps.Keys(cfg.nodeKeys)), Signers: cfg.signers}
	if rules.Signers == 0 {
		rules.Signers = len(rules.Nodes)/2 + 1
	}
	return &Client{
		js:        js,
		signer:    signer,
		keyID:     keyID,
		clientID:  cfg.clientID,
		nodeKeys:  cfg.nodeKeys,
		rules:     rules,
		log:       cfg.logger.With("client_id", cfg.clientID, "key_id", keyID),
		cfg:       cfg,
		handlers:  map[string]func(attest.Decision){},
		waiters:   map[string]*waiter{},
		pending:   map[reqKey]*pending{},
		submitted: map[reqKey]*submitted{},
		decided:   newDecidedSet(max(minDecidedFor, 2*cfg.ttl+cfg.grace), maxDecided),
		running:   map[string]jetstream.ConsumeContext{},
		done:      make(chan struct{}),
		cbMu: map[string]*sync.Mutex{
			protocol.OpKeygen: {}, protocol.OpSign: {}, protocol.OpReshare: {},
		},
	}, nil
}

// ClientID returns the client ID ("" for a legacy client).
func (c *Client) ClientID() string { return c.clientID }

// KeyID returns the key ID of the client's signing key.
func (c *Client) KeyID() string { return c.keyID }

// Rules returns what the client requires the committee to attest: the node
// IDs of WithNodeKeys and t+1 (WithSigners, or a majority of the nodes).
func (c *Client) Rules() attest.Rules {
	return attest.Rules{Nodes: slices.Clone(c.rules.Nodes), Signers: c.rules.Signers}
}

// Stats returns the result counters.
func (c *Client) Stats() Stats {
	return Stats{
		Delivered:  c.delivered.Load(),
		Dropped:    c.dropped.Load(),
		Misrouted:  c.misrouted.Load(),
		Unclaimed:  c.unclaimed.Load(),
		Stragglers: c.stragglers.Load(),
		Timeouts:   c.timeouts.Load(),
	}
}

// Close stops the result consumers, waits for running callbacks, and makes
// pending Wait helpers return ErrClosed. Results not yet acked (those of
// requests not yet decided) are returned to the stream for the next Client.
// Do not call Close from a callback.
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
	c.bg.Wait()
	c.mu.Lock()
	var held []jetstream.Msg
	for _, p := range c.pending {
		held = append(held, p.held()...)
	}
	c.pending = map[reqKey]*pending{}
	c.mu.Unlock()
	for _, m := range held {
		_ = m.Nak()
	}
	return nil
}
