package main

import (
	"context"
	"crypto"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/hwsigner/signer/hsm"
	"github.com/hwsigner/signer/signer/health"
	"github.com/hwsigner/signer/signer/node"
)

// readinessChecks: NATS connected, the node consuming requests (not
// starting, not draining) and the hardware answering (an identity signature,
// at most every 10 s). A failing check says why: how long NATS has been
// unreachable and the last connection error, or what the node's start
// waits for.
func readinessChecks(conn *natsConn, nc *nats.Conn, n *node.Node, b hsm.Backend) []health.Check {
	js, jsErr := jetstream.New(nc)
	jetStream := cached(5*time.Second, func(ctx context.Context) error {
		if jsErr != nil {
			return jsErr
		}
		_, err := js.AccountInfo(ctx)
		return err
	})
	return []health.Check{
		{Name: "nats", Fn: conn.check(nc)},
		{Name: "node", Fn: func(ctx context.Context) error {
			select {
			case <-n.Ready():
			default:
				if !nc.IsConnected() {
					return errors.New("starting: waiting for NATS")
				}
				if err := jetStream(ctx); err != nil {
					return fmt.Errorf("starting: JetStream not available: %w", err)
				}
				return errors.New("starting: setting up the streams, the readiness bucket and the node's consumer")
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
