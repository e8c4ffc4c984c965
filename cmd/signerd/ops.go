package main

import (
	"context"
	"crypto"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/hwsigner/signer/hsm"
	"github.com/hwsigner/signer/signer/config"
	"github.com/hwsigner/signer/signer/health"
	"github.com/hwsigner/signer/signer/node"
)

// natsOptions: reconnect forever, credentials and TLS from the config (files
// only: nothing secret on the command line), and connection events logged.
func natsOptions(cfg *config.Config, log *slog.Logger) []nats.Option {
	opts := []nats.Option{
		nats.Name("signerd-" + cfg.NodeID),
		nats.MaxReconnects(-1),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) { log.Warn("NATS disconnected", "err", err) }),
		nats.ReconnectHandler(func(nc *nats.Conn) { log.Info("NATS reconnected", "url", nc.ConnectedUrlRedacted()) }),
	}
	if cfg.NATS.CredsFile != "" {
		opts = append(opts, nats.UserCredentials(cfg.NATS.CredsFile))
	}
	if t := cfg.NATS.TLS; t.CAFile != "" {
		opts = append(opts, nats.RootCAs(t.CAFile))
	}
	if t := cfg.NATS.TLS; t.CertFile != "" {
		opts = append(opts, nats.ClientCert(t.CertFile, t.KeyFile))
	}
	return opts
}

// readinessChecks: NATS connected, the node consuming requests (not
// starting, not draining) and the hardware answering (an identity signature,
// at most every 10 s).
func readinessChecks(nc *nats.Conn, n *node.Node, b hsm.Backend) []health.Check {
	return []health.Check{
		{Name: "nats", Fn: func(context.Context) error {
			if s := nc.Status(); s != nats.CONNECTED {
				return fmt.Errorf("NATS connection %s", s)
			}
			return nil
		}},
		{Name: "node", Fn: func(context.Context) error {
			select {
			case <-n.Ready():
			default:
				return errors.New("starting")
			}
			if n.Draining() {
				return errors.New("draining: stopping")
			}
			return nil
		}},
		{Name: "hsm", Fn: cached(10*time.Second, func(ctx context.Context) error {
			id, err := b.Identity(ctx)
			if err != nil {
				return err
			}
			d := sha256.Sum256([]byte("signerd readiness probe"))
			_, err = id.Sign(rand.Reader, d[:], crypto.SHA256)
			return err
		})},
	}
}

// cached runs fn at most once per ttl and returns its last result between.
func cached(ttl time.Duration, fn func(context.Context) error) func(context.Context) error {
	var mu sync.Mutex
	var at time.Time
	var last error
	return func(ctx context.Context) error {
		mu.Lock()
		defer mu.Unlock()
		if time.Since(at) < ttl && !at.IsZero() {
			return last
		}
		last, at = fn(ctx), time.Now()
		return last
	}
}
