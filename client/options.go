package client

import (
	"crypto"
	"fmt"
	"log/slog"
	"time"

	"github.com/hwsigner/signer/protocol"
)

// DefaultRequestTTL is expires_at - created_at of a request.
const DefaultRequestTTL = 5 * time.Minute

// DefaultExpiryGrace is how long after a request's expires_at the client
// still waits for its results before it decides TIMEOUT (WithExpiryGrace).
const DefaultExpiryGrace = 10 * time.Second

// MaxPendingRequests bounds the requests a Client has sent and not yet
// decided (for callbacks and Wait helpers together); beyond it Keygen, Sign,
// Reshare and the Wait helpers fail with ErrTooManyPending, publishing
// nothing.
const MaxPendingRequests = 1 << 16

// Option configures a Client.
type Option func(*config) error

type config struct {
	clientID      string
	nodeKeys      map[string]crypto.PublicKey
	logger        *slog.Logger
	ttl           time.Duration
	grace         time.Duration
	resultAckWait time.Duration
	maxPending    int           // MaxPendingRequests; tests lower it
	redecideAfter time.Duration // redecideAfter; tests lower it
	signers       int           // 0: a majority of nodeKeys
}

// WithClientID makes the client use its own result subjects and consumers.
// Without it the client uses the legacy subjects, shared by every legacy
// client. The ID must be bound to the client's key in the nodes' policy.
func WithClientID(id string) Option {
	return func(c *config) error {
		if err := protocol.ValidToken(id); err != nil {
			return fmt.Errorf("client: client ID: %w", err)
		}
		c.clientID = id
		return nil
	}
}

// WithNodeKeys sets the cluster's peer list: node ID -> identity public key
// (ECDSA P-256). Results signed by anything else are dropped. Required.
func WithNodeKeys(keys map[string]crypto.PublicKey) Option {
	return func(c *config) error {
		c.nodeKeys = make(map[string]crypto.PublicKey, len(keys))
		for id, pub := range keys {
			if err := protocol.ValidToken(id); err != nil {
				return fmt.Errorf("client: node ID: %w", err)
			}
			if _, err := protocol.KeyID(pub); err != nil {
				return fmt.Errorf("client: key of node %s: %w", id, err)
			}
			c.nodeKeys[id] = pub
		}
		return nil
	}
}

// WithLogger sets the logger (default slog.Default()).
func WithLogger(l *slog.Logger) Option {
	return func(c *config) error {
		if l != nil {
			c.logger = l
		}
		return nil
	}
}

// WithRequestTTL sets how long a request stays valid (expires_at -
// created_at), at most protocol.MaxRequestTTL. Default 5 minutes.
func WithRequestTTL(d time.Duration) Option {
	return func(c *config) error {
		if d <= 0 || d > protocol.MaxRequestTTL {
			return fmt.Errorf("client: request TTL %s, want (0, %s]", d, protocol.MaxRequestTTL)
		}
		c.ttl = d
		return nil
	}
}

// WithExpiryGrace sets how long after a request's expires_at the client
// still waits for its results before it decides TIMEOUT (default
// DefaultExpiryGrace, at most an hour; 0 decides at expires_at). Nodes take
// a request only until its expires_at (by their clocks), but a ceremony
// they started before may finish, and its results be published and
// delivered, after it: the grace is for those. A result that comes later
// still is a straggler: acked, counted, logged, never delivered. It applies
// to every request this client sends, for the callbacks and the Wait
// helpers alike.
func WithExpiryGrace(d time.Duration) Option {
	return func(c *config) error {
		if d < 0 || d > time.Hour {
			return fmt.Errorf("client: expiry grace %s, want [0, 1h]", d)
		}
		c.grace = d
		return nil
	}
}

// WithResultAckWait sets the AckWait of the result consumers (default
// routing.DefaultResultAckWait). Callbacks that run longer are kept alive
// with in-progress acks, so this only matters after a crash.
func WithResultAckWait(d time.Duration) Option {
	return func(c *config) error {
		if d < time.Second {
			return fmt.Errorf("client: result ack wait %s, want at least 1s", d)
		}
		c.resultAckWait = d
		return nil
	}
}

// WithSigners sets t+1: how many distinct nodes must report the same
// signing or resharing outcome (or an error) before the client accepts it
// (keygen always needs every node). It must be the cluster's threshold as
// configured on the nodes (`threshold:` in signerd's config, `signerd dev
// --threshold`), between 1 and the number of node keys.
//
// The default is a majority of the node keys (2 of 3, 3 of 5): the usual
// honest-majority setting, and no minority of nodes can then make the client
// accept anything. A cluster configured otherwise must set it: with fewer
// signers than a majority (2 of 4) only t+1 chosen nodes answer a signing
// request and the default would never be met (TIMEOUT); with more (4 of 5)
// the default would let fewer than t+1 nodes decide. The value applies to
// every wallet: for a wallet reshared to another threshold, use a Client
// made with that wallet's t+1.
func WithSigners(n int) Option {
	return func(c *config) error {
		if n < 1 {
			return fmt.Errorf("client: signers %d, want at least 1", n)
		}
		c.signers = n
		return nil
	}
}
