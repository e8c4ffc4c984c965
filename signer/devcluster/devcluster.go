// Package devcluster starts a local cluster in one process: an embedded NATS
// server with JetStream and N nodes, each with its own key backend (a
// SoftHSM2 token in `signerd dev` and the tests) and its own store. It is the
// engine of `signerd dev`, `make demo` and the end-to-end tests; production
// runs each node as its own `signerd run` process.
package devcluster

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"time"

	ecdsakeygen "github.com/bnb-chain/tss-lib/v3/ecdsa/keygen"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"

	"github.com/hwsigner/signer/hsm"
	hsmuri "github.com/hwsigner/signer/hsm/uri"
	"github.com/hwsigner/signer/policy"
	"github.com/hwsigner/signer/routing"
	"github.com/hwsigner/signer/signer/config"
	"github.com/hwsigner/signer/signer/node"
	"github.com/hwsigner/signer/signer/store"
)

// Options for Start.
type Options struct {
	Dir   string
	Nodes int
	// Signers is how many nodes must sign (t+1, as signerd dev --threshold),
	// 2..Nodes; every node gets it as node.Config.Signers.
	Signers config.Signers
	// TokenURI returns the key backend URI of a node, creating its token if
	// needed (SoftHSM2 in dev and tests).
	TokenURI func(nodeID string) (string, error)
	// Policy binds client keys to client IDs.
	Policy *policy.Policy
	// TestPreParams: public fixture pre-params (tests and demo only).
	TestPreParams []*ecdsakeygen.LocalPreParams
	SignTimeout   time.Duration
	KeygenTimeout time.Duration
	// DrainTimeout: how long a stopped node lets its running sessions go
	// on (0: the node's default). Tests that stop a node mid-ceremony set
	// it short, so that StopNode interrupts the ceremony like a crash.
	DrainTimeout time.Duration
	Logger       *slog.Logger
	// NATSPort: 0 picks a free port.
	NATSPort int
	// Faults, when set, gives each node its test faults
	// (node.Config.Faults; nil for none). Tests only.
	Faults func(nodeID string) *node.Faults
}

// Cluster is a running local cluster.
type Cluster struct {
	NATS     *server.Server
	URL      string
	NodeIDs  []string
	NodeKeys map[string]crypto.PublicKey

	mu      sync.Mutex
	members map[string]*member
	opts    Options
	peers   map[string]*ecdsa.PublicKey
}

type member struct {
	node    *node.Node
	backend hsm.Backend
	store   *store.Store
	nc      *nats.Conn
	cancel  context.CancelFunc
	done    chan error
}

// Start launches NATS and every node and waits until all are ready.
func Start(ctx context.Context, o Options) (*Cluster, error) {
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if !o.Signers.Fits(o.Nodes) {
		return nil, fmt.Errorf("devcluster: need %d <= signers <= nodes, got %d of %d", config.MinSigners, o.Signers, o.Nodes)
	}
	if err := os.MkdirAll(o.Dir, 0o700); err != nil {
		return nil, err
	}
	port := o.NATSPort
	if port == 0 {
		port = -1
	}
	ns, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: port, JetStream: true, StoreDir: filepath.Join(o.Dir, "jetstream"), NoSigs: true})
	if err != nil {
		return nil, fmt.Errorf("embedded NATS: %w", err)
	}
	go ns.Start()
	if !ns.ReadyForConnections(10 * time.Second) {
		ns.Shutdown()
		return nil, errors.New("embedded NATS did not start")
	}
	c := &Cluster{NATS: ns, URL: ns.ClientURL(), NodeKeys: map[string]crypto.PublicKey{}, members: map[string]*member{}, opts: o, peers: map[string]*ecdsa.PublicKey{}}
	for i := 0; i < o.Nodes; i++ {
		c.NodeIDs = append(c.NodeIDs, fmt.Sprintf("node%d", i))
	}
	// Identity keys first: every node needs the whole peer list.
	for _, id := range c.NodeIDs {
		uri, err := o.TokenURI(id)
		if err != nil {
			c.Stop()
			return nil, fmt.Errorf("%s token: %w", id, err)
		}
		if err := hsmuri.Init(ctx, uri, o.Logger); err != nil && !errors.Is(err, hsm.ErrKeyExists) {
			c.Stop()
			return nil, fmt.Errorf("%s init keys: %w", id, err)
		}
		b, err := hsmuri.Open(ctx, uri, o.Logger)
		if err != nil {
			c.Stop()
			return nil, fmt.Errorf("%s open keys: %w", id, err)
		}
		signer, err := b.Identity(ctx)
		if err != nil {
			_ = b.Close()
			c.Stop()
			return nil, err
		}
		pub := signer.Public().(*ecdsa.PublicKey)
		c.peers[id], c.NodeKeys[id] = pub, pub
		c.members[id] = &member{backend: b}
	}
	for _, id := range c.NodeIDs {
		if err := c.startNode(ctx, id); err != nil {
			c.Stop()
			return nil, err
		}
	}
	if err := c.WaitReady(ctx, c.NodeIDs...); err != nil {
		c.Stop()
		return nil, err
	}
	return c, nil
}

func (c *Cluster) startNode(ctx context.Context, id string) error {
	c.mu.Lock()
	m, peers := c.members[id], c.peers
	c.mu.Unlock()
	if m.backend == nil {
		uri, err := c.opts.TokenURI(id)
		if err != nil {
			return err
		}
		if m.backend, err = hsmuri.Open(ctx, uri, c.opts.Logger); err != nil {
			return err
		}
	}
	st, err := store.Open(c.StorePath(id), store.Options{})
	if err != nil {
		return err
	}
	nc, err := nats.Connect(c.URL, nats.Name(id), nats.MaxReconnects(-1))
	if err != nil {
		_ = st.Close()
		return err
	}
	var faults *node.Faults
	if c.opts.Faults != nil {
		faults = c.opts.Faults(id)
	}
	n, err := node.New(ctx, node.Config{
		NodeID: id, Committee: c.NodeIDs, Signers: c.opts.Signers, Peers: peers, Policy: c.opts.Policy,
		TestPreParams: c.opts.TestPreParams, SignTimeout: c.opts.SignTimeout, KeygenTimeout: c.opts.KeygenTimeout,
		DrainTimeout: c.opts.DrainTimeout, Faults: faults,
		Streams: routing.StreamOptions{}, Ready: routing.ReadyOptions{},
		Logger: c.opts.Logger,
	}, nc, m.backend, st)
	if err != nil {
		nc.Close()
		_ = st.Close()
		return err
	}
	nctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	m.node, m.store, m.nc, m.cancel, m.done = n, st, nc, cancel, make(chan error, 1)
	go func() { m.done <- n.Run(nctx) }()
	return nil
}

// WaitReady waits until the given nodes show in the readiness bucket.
func (c *Cluster) WaitReady(ctx context.Context, ids ...string) error {
	nc, err := nats.Connect(c.URL)
	if err != nil {
		return err
	}
	defer nc.Close()
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		if ok, _ := readyAll(ctx, nc, ids); ok {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
	return fmt.Errorf("devcluster: nodes %v not ready in time", ids)
}

// Node returns a running node (nil when stopped).
func (c *Cluster) Node(id string) *node.Node {
	c.mu.Lock()
	defer c.mu.Unlock()
	if m := c.members[id]; m != nil {
		return m.node
	}
	return nil
}

// Subscriptions is the number of NATS subscriptions a running node holds
// (-1 when stopped): sessions subscribe while they run and must leave none
// behind.
func (c *Cluster) Subscriptions(id string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	if m := c.members[id]; m != nil && m.node != nil {
		return m.nc.NumSubscriptions()
	}
	return -1
}

// StopNode stops one node (its readiness entry goes with it) and closes its
// store; the key backend stays open for a later RestartNode.
func (c *Cluster) StopNode(id string) {
	c.mu.Lock()
	m := c.members[id]
	c.mu.Unlock()
	if m == nil || m.node == nil {
		return
	}
	m.cancel()
	<-m.done
	m.nc.Close()
	_ = m.store.Close()
	m.node = nil
}

// CrashNode stops one node as a crash (SIGKILL) would: its NATS connection
// drops first, so it publishes nothing more and its readiness entry stays
// until the TTL expires (peers keep choosing it until then); then its
// sessions are cancelled at once and its store closed. RestartNode starts
// it again.
func (c *Cluster) CrashNode(id string) {
	c.mu.Lock()
	m := c.members[id]
	c.mu.Unlock()
	if m == nil || m.node == nil {
		return
	}
	m.nc.Close()
	m.cancel()
	<-m.done
	_ = m.store.Close()
	m.node = nil
}

// RestartNode starts a stopped node again and waits until it is ready in
// the readiness bucket and in the view of every running node (a request
// sent at once then finds the same ready set on every node).
func (c *Cluster) RestartNode(ctx context.Context, id string) error {
	if err := c.startNode(ctx, id); err != nil {
		return err
	}
	if err := c.WaitReady(ctx, id); err != nil {
		return err
	}
	return c.waitSeen(ctx, id)
}

// waitSeen waits until every running node's readiness view holds id.
func (c *Cluster) waitSeen(ctx context.Context, id string) error {
	deadline := time.Now().Add(30 * time.Second)
	for {
		seen := true
		for _, other := range c.NodeIDs {
			if n := c.Node(other); n != nil && !slices.Contains(n.ReadyPeers(), id) {
				seen = false
			}
		}
		if seen {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("devcluster: %s is not in every running node's readiness view", id)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// StorePath is the file of a node's store.
func (c *Cluster) StorePath(id string) string { return filepath.Join(c.opts.Dir, id+".db") }

// DetachHardware closes a stopped node's key backend, as when its HSM is
// unplugged or lost. RestartNode reopens it through TokenURI;
// ReplaceHardware gives the node a new one.
func (c *Cluster) DetachHardware(id string) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	m := c.members[id]
	switch {
	case m == nil:
		return fmt.Errorf("devcluster: no node %s", id)
	case m.node != nil:
		return fmt.Errorf("devcluster: stop %s before detaching its hardware", id)
	case m.backend == nil:
		return nil
	}
	err := m.backend.Close()
	m.backend = nil
	return err
}

// ReplaceHardware starts a stopped node on a new key backend (uri, whose
// keys must exist), as after a restore onto a new token or TPM. The node's
// identity key is the new backend's, so every member must learn it: the
// other running nodes are restarted with the new peer list, and NodeKeys is
// replaced by a new map (not changed in place), which clients made from it
// afterwards use.
func (c *Cluster) ReplaceHardware(ctx context.Context, id, uri string) error {
	if err := c.DetachHardware(id); err != nil {
		return err
	}
	b, err := hsmuri.Open(ctx, uri, c.opts.Logger)
	if err != nil {
		return fmt.Errorf("devcluster: %s new hardware: %w", id, err)
	}
	signer, err := b.Identity(ctx)
	if err != nil {
		_ = b.Close()
		return fmt.Errorf("devcluster: %s new hardware: %w", id, err)
	}
	pub, ok := signer.Public().(*ecdsa.PublicKey)
	if !ok {
		_ = b.Close()
		return fmt.Errorf("devcluster: %s identity key is %T, want ECDSA P-256", id, signer.Public())
	}
	c.mu.Lock()
	c.members[id].backend = b
	c.peers = maps.Clone(c.peers)
	c.peers[id] = pub
	keys := maps.Clone(c.NodeKeys)
	keys[id] = pub
	c.NodeKeys = keys
	c.mu.Unlock()
	// A running node keeps the peer list it started with.
	var restarted []string
	for _, other := range c.NodeIDs {
		if other != id && c.Node(other) != nil {
			c.StopNode(other)
			if err := c.startNode(ctx, other); err != nil {
				return fmt.Errorf("devcluster: restart %s with %s's new key: %w", other, id, err)
			}
			restarted = append(restarted, other)
		}
	}
	if err := c.startNode(ctx, id); err != nil {
		return err
	}
	return c.WaitReady(ctx, append(restarted, id)...)
}

// Stop stops every node and the NATS server.
func (c *Cluster) Stop() {
	for _, id := range c.NodeIDs {
		c.StopNode(id)
		c.mu.Lock()
		if m := c.members[id]; m != nil && m.backend != nil {
			_ = m.backend.Close()
			m.backend = nil
		}
		c.mu.Unlock()
	}
	if c.NATS != nil {
		c.NATS.Shutdown()
		c.NATS.WaitForShutdown()
	}
}
