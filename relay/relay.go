package relay

import (
	"context"
	"crypto"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/hwsigner/signer/attest"
	"github.com/hwsigner/signer/keyfile"
	"github.com/hwsigner/signer/protocol"
)

// Relay serves one or more clientIDs: HTTP in, results out. Build it with
// New, serve Handler, and call Run once.
type Relay struct {
	cfg     Config
	log     *slog.Logger
	tokens  tokenSet
	clients map[string]*clientState
	m       *Metrics

	// nodeKeys and rules attest every node result (cluster section).
	nodeKeys map[string]crypto.PublicKey
	rules    attest.Rules

	nc *nats.Conn // the relay's own connection (history, DLQ)
	js jetstream.JetStream
	// hjs publishes decisions into the history asynchronously, at most
	// historyWindow awaiting their PubAck, each for PublishTimeout.
	hjs jetstream.JetStream

	ready   atomic.Bool
	running atomic.Bool
}

// clientState is what the relay keeps per clientID.
type clientState struct {
	id      string
	keys    map[string]crypto.PublicKey // key_id -> public key
	nc      *nats.Conn                  // the client's NATS user
	js      jetstream.JetStream
	webhook *webhook // nil: no webhook delivery
	wcfg    *WebhookConfig
}

// New checks cfg, reads the tokens and webhook secrets from their sources
// and opens the NATS connections (which keep retrying in the background if
// NATS is down: the relay starts and answers 503 until NATS is back).
func New(cfg Config, log *slog.Logger) (*Relay, error) {
	if log == nil {
		log = slog.Default()
	}
	if err := cfg.Check(); err != nil {
		return nil, err
	}
	r := &Relay{cfg: cfg, log: log, clients: map[string]*clientState{}, m: NewMetrics()}
	var err error
	if r.nodeKeys, err = cfg.Cluster.NodeKeys(); err != nil {
		return nil, err
	}
	r.rules = attest.Rules{Nodes: slices.Sorted(maps.Keys(r.nodeKeys)), Signers: cfg.Cluster.Signers}
	ok := false
	defer func() {
		if !ok {
			r.close()
		}
	}()
	for _, id := range cfg.ClientIDs() {
		cc := cfg.Clients[id]
		if err := r.tokens.add(id, cc.TokenSource); err != nil {
			return nil, err
		}
		cs := &clientState{id: id, keys: map[string]crypto.PublicKey{}, wcfg: cc.Webhook}
		for _, k := range cc.PublicKeys {
			pub, err := keyfile.ParsePublicKey(k)
			if err != nil {
				return nil, fmt.Errorf("client %s: %w", id, err)
			}
			kid, err := protocol.KeyID(pub)
			if err != nil {
				return nil, fmt.Errorf("client %s: %w", id, err)
			}
			cs.keys[kid] = pub
		}
		if cc.Webhook != nil {
			wh, err := newWebhook(cc.Webhook)
			if err != nil {
				return nil, fmt.Errorf("client %s: %w", id, err)
			}
			cs.webhook = wh
		}
		r.clients[id] = cs
	}
	if r.nc, err = connect(cfg.NATS, "signer-relay", "_INBOX", log); err != nil {
		return nil, fmt.Errorf("relay: nats: %w", err)
	}
	if r.js, err = jetstream.New(r.nc); err != nil {
		return nil, err
	}
	if r.hjs, err = jetstream.New(r.nc, jetstream.WithPublishAsyncMaxPending(historyWindow),
		jetstream.WithPublishAsyncTimeout(cfg.PublishTimeout)); err != nil {
		return nil, err
	}
	for _, id := range cfg.ClientIDs() {
		cs := r.clients[id]
		ncfg := cfg.Clients[id].NATS
		if ncfg.URL == "" {
			ncfg = cfg.NATS
			ncfg.InboxPrefix = ""
		}
		if cs.nc, err = connect(ncfg, "signer-relay:"+id, "_INBOX_"+id, log); err != nil {
			return nil, fmt.Errorf("relay: client %s nats: %w", id, err)
		}
		if cs.js, err = jetstream.New(cs.nc); err != nil {
			return nil, err
		}
	}
	ok = true
	return r, nil
}

// connect dials NATS; a server that is down is retried in the background,
// and publishes fail at once while disconnected (no silent buffering).
// Failed attempts, disconnections and asynchronous errors are logged: the
// cause (a TLS or credentials error, a refused connection) is otherwise
// nowhere to be seen while the relay answers 503.
func connect(c NATSConfig, name, inbox string, log *slog.Logger) (*nats.Conn, error) {
	opts := append(natsOptions(c, name, inbox), nats.RetryOnFailedConnect(true))
	opts = append(opts, connLogging(log, name, redactURL(c.URL))...)
	return nats.Connect(c.URL, opts...)
}

// natsLogEvery: a failed connection attempt repeating the previous one's
// error is logged at most this often (attempts come every second).
const natsLogEvery = time.Minute

func connLogging(log *slog.Logger, name, url string) []nats.Option {
	var mu sync.Mutex
	var lastErr string
	var lastAt time.Time
	return []nats.Option{
		nats.ReconnectErrHandler(func(_ *nats.Conn, err error) {
			mu.Lock()
			same := err.Error() == lastErr && time.Since(lastAt) < natsLogEvery
			if !same {
				lastErr, lastAt = err.Error(), time.Now()
			}
			mu.Unlock()
			if !same {
				log.Warn("NATS connection attempt failed; retrying", "conn", name, "url", url, "err", err)
			}
		}),
		nats.DisconnectErrHandler(func(nc *nats.Conn, err error) {
			if !nc.IsClosed() { // closed by the relay itself: nothing to report
				log.Warn("NATS disconnected", "conn", name, "url", url, "err", err)
			}
		}),
		nats.ConnectHandler(func(*nats.Conn) {
			log.Info("NATS connected", "conn", name, "url", url)
		}),
		nats.ReconnectHandler(func(*nats.Conn) {
			mu.Lock()
			lastErr = ""
			mu.Unlock()
			log.Info("NATS reconnected", "conn", name, "url", url)
		}),
		nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
			log.Warn("NATS error", "conn", name, "err", err)
		}),
	}
}

// connected is nil when nc is connected, else an error with the cause of
// the last failed attempt.
func connected(nc *nats.Conn) error {
	if nc.IsConnected() {
		return nil
	}
	if err := nc.LastError(); err != nil {
		return fmt.Errorf("not connected to NATS: %w", err)
	}
	return errors.New("not connected to NATS")
}

func natsOptions(c NATSConfig, name, inbox string) []nats.Option {
	if c.InboxPrefix != "" {
		inbox = c.InboxPrefix
	}
	opts := []nats.Option{
		nats.Name(name),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(time.Second),
		nats.ReconnectBufSize(-1),
		nats.CustomInboxPrefix(inbox),
	}
	if c.CredsFile != "" {
		opts = append(opts, nats.UserCredentials(c.CredsFile))
	}
	if c.TLS.CAFile != "" {
		opts = append(opts, nats.RootCAs(c.TLS.CAFile))
	}
	if c.TLS.CertFile != "" {
		opts = append(opts, nats.ClientCert(c.TLS.CertFile, c.TLS.KeyFile))
	}
	return opts
}

// Metrics returns the relay's Prometheus metrics.
func (r *Relay) Metrics() *Metrics { return r.m }

// Run sets up the streams and consumers (retrying while NATS is down),
// forwards results and delivers webhooks until ctx ends. Then it stops
// consuming and closes its NATS connections at once, without draining:
// anything not yet acked is redelivered to the next run.
func (r *Relay) Run(ctx context.Context) error {
	if !r.running.CompareAndSwap(false, true) {
		return errors.New("relay: Run called twice")
	}
	defer r.close()
	var stops []func()
	defer func() {
		r.ready.Store(false)
		for _, s := range stops {
			s()
		}
	}()
	if err := retry(ctx, r.log, "streams", func() error {
		if err := connected(r.nc); err != nil {
			return err
		}
		return r.ensureStreams(ctx)
	}); err != nil {
		return err
	}
	var wg sync.WaitGroup
	for _, id := range r.cfg.ClientIDs() {
		cs := r.clients[id]
		var stop func()
		if err := retry(ctx, r.log, "result consumers of "+id, func() (err error) {
			if err := connected(cs.nc); err != nil {
				return err
			}
			stop, err = r.forward(ctx, cs)
			return err
		}); err != nil {
			return err
		}
		stops = append(stops, stop)
		if cs.webhook == nil {
			continue
		}
		if err := retry(ctx, r.log, "webhook consumer of "+id, func() (err error) {
			stop, err = r.deliverWebhooks(ctx, cs, &wg)
			return err
		}); err != nil {
			return err
		}
		stops = append(stops, stop)
	}
	r.ready.Store(true)
	r.log.Info("relay running", "clients", len(r.clients))
	<-ctx.Done()
	return nil
}

// retry runs f until it succeeds or ctx ends, waiting up to 5 s between
// attempts.
func retry(ctx context.Context, log *slog.Logger, what string, f func() error) error {
	wait := 200 * time.Millisecond
	for {
		err := f()
		if err == nil {
			return nil
		}
		if ctx.Err() != nil {
			return ctx.Err() // stopping: nothing to retry or report
		}
		log.Warn("relay setup failed; retrying", "what", what, "err", err, "retry_in", wait)
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(wait):
		}
		wait = min(wait*2, 5*time.Second)
	}
}

func (r *Relay) close() {
	for _, cs := range r.clients {
		if cs.nc != nil {
			cs.nc.Close()
		}
	}
	if r.nc != nil {
		r.nc.Close()
	}
}

// natsUp reports whether every NATS connection is connected.
func (r *Relay) natsUp() bool {
	if r.nc == nil || !r.nc.IsConnected() {
		return false
	}
	for _, cs := range r.clients {
		if !cs.nc.IsConnected() {
			return false
		}
	}
	return true
}
