// Package node is one signer node: it consumes requests from JetStream,
// verifies and authorizes them, runs the ceremonies with its peers over NATS,
// keeps its shares sealed in the store and publishes signed results to the
// requesting client's subjects.
package node

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/hwsigner/signer/hsm"
	"github.com/hwsigner/signer/policy"
	"github.com/hwsigner/signer/protocol"
	"github.com/hwsigner/signer/routing"
	"github.com/hwsigner/signer/signer/ceremony"
	"github.com/hwsigner/signer/signer/config"
	"github.com/hwsigner/signer/signer/metrics"
	"github.com/hwsigner/signer/signer/store"
	"github.com/hwsigner/signer/signer/transport"
)

// Config of one node.
type Config struct {
	NodeID    string
	Committee []string // every node of the cluster (keygen runs on all of them)
	Peers     map[string]*ecdsa.PublicKey
	Policy    *policy.Policy

	// Signers is how many committee members must sign with a key the node
	// generates (t+1; 2 <= Signers <= len(Committee)). tss-lib and the store
	// count t: the node converts with Signers.TSSThreshold().
	Signers config.Signers

	KeygenTimeout time.Duration // default 3 min
	SignTimeout   time.Duration // default 1 min
	ClockSkew     time.Duration // default 30 s
	Streams       routing.StreamOptions
	Ready         routing.ReadyOptions
	PoolTarget    int // pre-params sets kept ready; default 2

	// TestPreParams, when set, replaces the sealed pre-params pool with a
	// public fixture set. Only tests and `signerd dev --test-preparams` set
	// it; the config file cannot.
	TestPreParams []*ceremony.PreParams

	// HandshakeTimeout bounds a session's start: every chosen peer must
	// answer within it, or the request fails with NODES_NOT_READY (a peer
	// died before the readiness TTL noticed). Default 10 s.
	HandshakeTimeout time.Duration

	// StallTimeout ends a signing attempt in which no message arrived for
	// this long while the node waited for peers (one died mid-session, or
	// a NATS restart lost messages); the request is then re-run on another
	// committee. Default: HandshakeTimeout.
	StallTimeout time.Duration

	// DrainTimeout bounds a graceful stop: when Run's context ends the node
	// takes no new request, and sessions still running get this long to
	// finish before they are cancelled. Default 60 s.
	DrainTimeout time.Duration

	// Faults injects failures at chosen points of a ceremony: tests only
	// (nil in production; the config file cannot set it).
	Faults *Faults

	Metrics *metrics.Metrics // nil: no metrics
	Logger  *slog.Logger
}

// Node is a running signer node.
type Node struct {
	cfg      Config
	nc       *nats.Conn
	js       jetstream.JetStream
	st       *store.Store
	sealer   *hsm.Sealer
	identity crypto.Signer
	log      *slog.Logger
	kv       jetstream.KeyValue // readiness bucket
	keys     jetstream.KeyValue // key confirmations bucket (heal.go)
	peerKeys map[string]crypto.PublicKey
	ready    *readiness

	fixtureNext atomic.Uint64
	poolMu      sync.Mutex

	m        *metrics.Metrics // never nil: counts without Prometheus when cfg.Metrics is nil
	isReady  chan struct{}    // closed once requests are being consumed
	draining atomic.Bool
	started  time.Time
	sessions atomic.Int64 // requests being handled
	inflight sync.Map     // walletID -> *keygenClaim: the newest keygen of the wallet not finished yet
	board    *board       // open sign requests and their re-run plans
	handling sync.Map     // clientID\x00requestID -> struct{}: requests being handled
	healMu   sync.Map     // walletID\x00keyType -> *sync.Mutex (walletLock)
	running  sync.WaitGroup
}

// New builds a node. The backend must hold the node's wrapping and identity
// keys; st is the node's open store.
func New(ctx context.Context, cfg Config, nc *nats.Conn, backend hsm.Backend, st *store.Store) (*Node, error) {
	if err := protocol.ValidToken(cfg.NodeID); err != nil {
		return nil, fmt.Errorf("node id: %w", err)
	}
	if !cfg.Signers.Fits(len(cfg.Committee)) {
		return nil, fmt.Errorf("node: %d signers do not fit a committee of %d (need %d to %d)", cfg.Signers, len(cfg.Committee), config.MinSigners, len(cfg.Committee))
	}
	if cfg.Policy == nil {
		return nil, errors.New("node: a client policy is required")
	}
	for _, p := range cfg.Committee {
		if cfg.Peers[p] == nil {
			return nil, fmt.Errorf("node: no identity key for committee member %s in the peer list", p)
		}
	}
	if cfg.KeygenTimeout <= 0 {
		cfg.KeygenTimeout = 3 * time.Minute
	}
	if cfg.SignTimeout <= 0 {
		cfg.SignTimeout = time.Minute
	}
	if cfg.ClockSkew <= 0 {
		cfg.ClockSkew = 30 * time.Second
	}
	if cfg.PoolTarget <= 0 {
		cfg.PoolTarget = 2
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.DrainTimeout <= 0 {
		cfg.DrainTimeout = time.Minute
	}
	if cfg.HandshakeTimeout <= 0 {
		cfg.HandshakeTimeout = 10 * time.Second
	}
	if cfg.StallTimeout <= 0 {
		cfg.StallTimeout = cfg.HandshakeTimeout
	}
	backend = cfg.Metrics.InstrumentBackend(backend)
	id, err := backend.Identity(ctx)
	if err != nil {
		return nil, fmt.Errorf("node identity: %w", err)
	}
	if pub, ok := id.Public().(*ecdsa.PublicKey); !ok || !pub.Equal(cfg.Peers[cfg.NodeID]) {
		return nil, fmt.Errorf("node: the identity key in the HSM does not match the peer list entry for %s", cfg.NodeID)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, fmt.Errorf("jetstream: %w", err)
	}
	m := cfg.Metrics
	if m == nil {
		m = metrics.NewCounters()
	}
	peerKeys := make(map[string]crypto.PublicKey, len(cfg.Peers))
	for id, k := range cfg.Peers {
		peerKeys[id] = k
	}
	return &Node{
		cfg: cfg, nc: nc, js: js, st: st, sealer: hsm.NewSealer(backend), identity: id, peerKeys: peerKeys,
		log: cfg.Logger.With("node", cfg.NodeID), m: m, isReady: make(chan struct{}), started: time.Now().UTC(),
		board: newBoard(),
	}, nil
}

// Stats returns a snapshot of the node's counters: requests by outcome (as
// its heartbeat status shows them) and dropped round messages by reason.
func (n *Node) Stats() metrics.Snapshot { return n.m.Snapshot() }

// Dropped implements transport.Counters.
func (n *Node) Dropped(reason string) { n.m.Dropped(reason) }

// statusInfo is the JSON routing.NodeStatus of each readiness heartbeat.
func (n *Node) statusInfo() []byte {
	depth, err := n.st.PoolDepth()
	if err != nil {
		depth = -1
	}
	c := n.m.Snapshot()
	b, _ := json.Marshal(routing.NodeStatus{
		NodeID: n.cfg.NodeID, StartedAt: n.started, PoolDepth: depth, PoolTest: n.cfg.TestPreParams != nil,
		Sessions: n.sessions.Load(), Accepted: c.Accepted, Succeeded: c.Succeeded,
		Failed: c.Failed, Rejected: c.Rejected,
	})
	return b
}

// Ready is closed once the node consumes requests (streams, readiness
// bucket and consumer are set up).
func (n *Node) Ready() <-chan struct{} { return n.isReady }

// Draining reports whether the node is stopping: it takes no new request.
func (n *Node) Draining() bool { return n.draining.Load() }

// Drops returns dropped round messages by reason.
func (n *Node) Drops() map[string]int64 { return n.m.Snapshot().Drops }

// Run creates streams and the node's consumer, heartbeats readiness, keeps
// the pre-params pool filled and handles requests until ctx ends. It waits
// for running sessions to finish before it returns. While NATS or
// JetStream is unavailable it retries that setup, with backoff, instead of
// returning an error.
func (n *Node) Run(ctx context.Context) error {
	// Setup needs NATS and JetStream, which may be down or not ready yet (a
	// NATS cluster still electing its leaders): each attempt has a minute,
	// and a failed one is retried with backoff (at once when NATS
	// reconnects) until it succeeds or ctx ends. The node is not Ready
	// meanwhile; a stop during setup returns nil.
	var (
		kv   jetstream.KeyValue
		cons jetstream.Consumer
	)
	errNATSDown := errors.New("NATS not connected")
	// Sessions run under workCtx, not ctx: a stop lets them finish (up to
	// DrainTimeout) instead of cutting every ceremony at once.
	workCtx, cancelWork := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelWork()
	setUp := func() (err error) {
		if s := n.nc.Status(); s != nats.CONNECTED {
			return fmt.Errorf("%w (%s)", errNATSDown, s)
		}
		setup, cancelSetup := context.WithTimeout(ctx, time.Minute)
		defer cancelSetup()
		if err := routing.EnsureStreams(setup, n.js, n.cfg.Streams); err != nil {
			return fmt.Errorf("streams (is JetStream enabled, and are nats.replicas servers up?): %w", err)
		}
		if kv, err = routing.EnsureReadyBucket(setup, n.js, n.cfg.Ready); err != nil {
			return fmt.Errorf("readiness bucket: %w", err)
		}
		if n.keys, err = routing.EnsureKeysBucket(setup, n.js, n.cfg.Streams); err != nil {
			return fmt.Errorf("key confirmations bucket: %w", err)
		}
		ttl := n.cfg.Ready.TTL
		if ttl <= 0 {
			ttl = routing.DefaultReadyTTL
		}
		watchCtx, stopWatch := context.WithCancel(ctx)
		defer func() {
			if err != nil {
				stopWatch() // a later step failed: the next attempt watches anew
			}
		}()
		if n.ready, err = watchReadiness(watchCtx, kv, ttl, n.log); err != nil {
			return fmt.Errorf("readiness watch: %w", err)
		}
		if cons, err = routing.NodeConsumer(setup, n.js, n.cfg.NodeID); err != nil {
			return fmt.Errorf("node consumer: %w", err)
		}
		if err := n.watchAttempts(watchCtx, workCtx); err != nil {
			return err
		}
		n.pruneJournalOnce()
		// Pending shares of reshares whose last "sealed" this node missed:
		// activated now if the committee confirmed them, before the node is
		// ready and can be chosen to sign.
		n.healAtStart(setup)
		if err := routing.PutReady(setup, kv, n.cfg.NodeID, nil); err != nil {
			return fmt.Errorf("readiness: %w", err)
		}
		return nil
	}
	t0 := time.Now()
	for attempt, wait := 1, time.Second; ; attempt++ {
		err := setUp()
		if err == nil {
			if attempt > 1 {
				n.log.Info("node setup done", "attempts", attempt, "after", time.Since(t0).Round(time.Second).String())
			}
			break
		}
		if ctx.Err() != nil {
			n.log.Info("node stopped before its setup finished", "attempts", attempt)
			return nil
		}
		connected := n.nc.StatusChanged(nats.CONNECTED)
		pause := wait
		if errors.Is(err, errNATSDown) && n.nc.IsConnected() {
			pause = 0 // connected meanwhile
		}
		wait = min(2*wait, 30*time.Second)
		n.log.Warn("node setup failed; retrying", "attempt", attempt, "since", time.Since(t0).Round(time.Second).String(),
			"retry_in", pause.String(), "err", err)
		select {
		case <-ctx.Done():
		case <-connected:
			wait = time.Second // NATS is back: a fresh backoff
		case <-time.After(pause):
		}
		n.nc.RemoveStatusListener(connected)
	}
	n.kv = kv
	go n.pruneJournal(ctx)
	go func() {
		_ = routing.Heartbeat(ctx, kv, n.cfg.NodeID, nil, routing.WithHeartbeatLogger(n.log), routing.WithInfoFunc(n.statusInfo))
	}()
	if n.cfg.TestPreParams == nil {
		go n.fillPool(ctx)
	}
	n.resume(ctx, workCtx)
	cc, err := cons.Consume(func(m jetstream.Msg) {
		// Messages arrive here in stream order, the same on every node: a
		// verified keygen takes its place in its wallet's keygen order
		// before its goroutine starts, so that every node lets the same
		// keygen of a wallet run first, and a later sign request for the
		// wallet waits for it instead of answering UNKNOWN_WALLET.
		in := inboundOf(m)
		n.start(workCtx, in, func() { _ = m.Ack() })
	})
	if err != nil {
		return fmt.Errorf("consume: %w", err)
	}
	n.log.Info("node running", "committee", n.cfg.Committee, "signers", n.cfg.Signers)
	close(n.isReady)
	<-ctx.Done()

	// Graceful stop: no new requests (undelivered ones stay in the durable
	// consumer for the next start), leave the ready set so that peers stop
	// choosing this node, let running sessions finish.
	n.draining.Store(true)
	cc.Stop()
	_ = kv.Delete(context.WithoutCancel(ctx), n.cfg.NodeID)
	drained := make(chan struct{})
	go func() { n.running.Wait(); close(drained) }()
	select {
	case <-drained:
		n.log.Info("node stopped; every running session finished")
	case <-time.After(n.cfg.DrainTimeout):
		n.log.Warn("drain timeout: cancelling the sessions still running", "timeout", n.cfg.DrainTimeout)
		cancelWork()
		<-drained
	}
	return nil
}

// start claims in's place in its wallet's keygen order (in the caller's
// goroutine: stream order) and handles it in a goroutine of its own, then
// calls done (the ack) unless the node's stop cut it.
func (n *Node) start(work context.Context, in inbound, done func()) {
	n.running.Add(1)
	claim := n.claimKeygen(in)
	go func() {
		defer n.running.Done()
		defer claim.release()
		n.sessions.Add(1)
		defer n.sessions.Add(-1)
		if n.handle(work, in, claim) {
			done()
		}
	}()
}

// resume runs again, before new requests are consumed, the requests this
// node was handling when it stopped (journal entries still "accepted" that
// have not expired): each is read back from MPC_REQUESTS by its sequence (it
// is still there: this node's consumer never acked it). The server later
// redelivers the same message; handle then recognises it (same sequence)
// and leaves it alone.
func (n *Node) resume(ctx, work context.Context) {
	entries, err := n.st.JournalAccepted(time.Now())
	if err != nil {
		n.log.Warn("journal: unfinished requests not resumed", "err", err)
		return
	}
	if len(entries) == 0 {
		return
	}
	st, err := n.js.Stream(ctx, routing.RequestStream)
	if err != nil {
		n.log.Warn("unfinished requests not resumed (they run when redelivered)", "count", len(entries), "err", err)
		return
	}
	resumed := 0
	for _, e := range entries {
		if e.Seq == 0 {
			continue // an entry from before sequences were journalled: redelivery runs it
		}
		gctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		msg, err := st.GetMsg(gctx, e.Seq)
		cancel()
		if err != nil {
			n.log.Warn("unfinished request not read back (it runs when redelivered)", "request_id", e.RequestID, "client_id", e.ClientID, "seq", e.Seq, "err", err)
			continue
		}
		n.log.Info("resuming a request this node was handling when it stopped", "request_id", e.RequestID, "client_id", e.ClientID, "op", e.Op)
		n.start(work, inbound{subject: msg.Subject, data: msg.Data, seq: msg.Sequence}, func() {})
		resumed++
	}
	if resumed > 0 {
		n.log.Info("unfinished requests resumed", "count", resumed)
	}
}

// keygenClaim is a verified keygen request's place in the order of its
// wallet's keygens on this node (the request stream's order, the same on
// every node). A keygen runs only once the one before it has finished, and
// answers WALLET_EXISTS if that one (or any earlier one) stored the wallet.
type keygenClaim struct {
	n      *Node
	wallet string
	prev   *keygenClaim // the keygen of the wallet consumed before, if it was still running
	done   chan struct{}
	once   sync.Once
}

// claimKeygen returns the place of m in its wallet's keygen order when m is
// a keygen request that decodes, whose subject names its wallet, and whose
// key may request keygens under its client ID and signed it; nil otherwise
// (a forged or unauthorized request claims nothing: handle answers or drops
// it). It runs in the consumer's callback, in stream order: the checks are
// the cheap ones handle repeats.
func (n *Node) claimKeygen(m inbound) *keygenClaim {
	op, wallet, err := routing.ParseRequestSubject(m.subject)
	if err != nil || op != protocol.OpKeygen {
		return nil
	}
	req, err := protocol.DecodeRequest(op, m.data)
	if err != nil {
		return nil
	}
	r, ok := req.(*protocol.KeygenRequest)
	if !ok || r.WalletID != wallet {
		return nil
	}
	pub, err := n.cfg.Policy.Authorize(r.KeyID, r.ClientID, op)
	if err != nil || protocol.VerifyRequest(m.data, pub) != nil {
		return nil
	}
	c := &keygenClaim{n: n, wallet: wallet, done: make(chan struct{})}
	if prev, loaded := n.inflight.Swap(wallet, c); loaded {
		c.prev = prev.(*keygenClaim)
	}
	return c
}

// release ends the claim once its keygen's outcome is stored (handle
// releases it before publishing the result, so that a slow publish holds up
// no later request of the wallet), or else once its request is handled.
// Safe on nil and more than once.
func (c *keygenClaim) release() {
	if c == nil {
		return
	}
	c.once.Do(func() {
		close(c.done)
		c.n.inflight.CompareAndDelete(c.wallet, c)
	})
}

// wait returns once every keygen of the wallet consumed before c has
// finished, or ctx ends (false).
func (c *keygenClaim) wait(ctx context.Context) bool {
	if c == nil || c.prev == nil {
		return true
	}
	select {
	case <-c.prev.done:
		return true
	case <-ctx.Done():
		return false
	}
}

// awaitKeygen waits for the keygens of wallet that this node is still
// running (the newest waits for every earlier one).
func (n *Node) awaitKeygen(ctx context.Context, wallet string) bool {
	v, ok := n.inflight.Load(wallet)
	if !ok {
		return false
	}
	select {
	case <-v.(*keygenClaim).done:
		return true
	case <-ctx.Done():
		return false
	}
}

// journalPruneEvery is how often the node removes journal entries of
// requests that can no longer be accepted.
const journalPruneEvery = time.Minute

// pruneJournal removes, every journalPruneEvery until ctx ends, the
// journal entries that pruneJournalOnce removes; Run prunes once before the
// node announces itself ready.
func (n *Node) pruneJournal(ctx context.Context) {
	t := time.NewTicker(journalPruneEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			n.pruneJournalOnce()
			n.board.prune(time.Now().Add(-n.cfg.ClockSkew))
		}
	}
}

// pruneJournalOnce removes the journal entries whose request expired more
// than the clock skew ago: CheckTime refuses such a request (EXPIRED)
// before the journal is consulted, so its entry is no longer needed to
// refuse a replay.
func (n *Node) pruneJournalOnce() {
	removed, err := n.st.JournalPrune(time.Now().Add(-n.cfg.ClockSkew))
	switch {
	case err != nil:
		n.log.Warn("journal prune failed", "err", err)
	case removed > 0:
		n.log.Debug("journal pruned", "removed", removed)
	}
}

func (n *Node) readyNodes(context.Context) map[string]bool {
	return n.ready.view()
}

func sessionID(parts ...string) string {
	h := sha256.New()
	for _, p := range parts {
		h.Write([]byte(p))
		h.Write([]byte{0})
	}
	return hex.EncodeToString(h.Sum(nil)[:16])
}

func (n *Node) openSession(ctx context.Context, sid string, parties []string) (*transport.Session, error) {
	// Every committee member's key, not only the participants': a member
	// that chose another signer set is then recognised, and the session
	// fails fast (ErrPartiesDiffer) instead of waiting for its deadline.
	s, err := transport.Open(ctx, n.nc, transport.Config{
		SessionID: sid, Self: transport.Identity{NodeID: n.cfg.NodeID, Signer: n.identity},
		Participants: parties, Peers: n.cfg.Peers, Counters: n, Logger: n.log,
	})
	if err != nil {
		return nil, err
	}
	hctx, cancel := context.WithTimeout(ctx, n.cfg.HandshakeTimeout)
	defer cancel()
	if err := s.WaitReady(hctx); err != nil {
		s.Close()
		return nil, err
	}
	return s, nil
}
