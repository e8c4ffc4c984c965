package routing

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"time"

	"github.com/hwsigner/signer/protocol"
	"github.com/nats-io/nats.go/jetstream"
)

// DefaultReadyTTL is how long a heartbeat keeps a node ready.
const DefaultReadyTTL = 15 * time.Second

// ReadyOptions tunes the readiness bucket.
type ReadyOptions struct {
	// TTL after which a node that stopped heartbeating is no longer ready.
	// Default 15 s.
	TTL      time.Duration
	Replicas int
	Storage  jetstream.StorageType
}

// EnsureReadyBucket creates (or updates) the KV bucket mpc_ready, whose
// entries expire TTL after their last put.
func EnsureReadyBucket(ctx context.Context, js jetstream.JetStream, o ReadyOptions) (jetstream.KeyValue, error) {
	if o.TTL <= 0 {
		o.TTL = DefaultReadyTTL
	}
	if o.Replicas <= 0 {
		o.Replicas = 1
	}
	cfg := jetstream.KeyValueConfig{
		Bucket:      ReadyBucket,
		Description: "signer node heartbeats",
		History:     1,
		TTL:         o.TTL,
		Storage:     o.Storage,
		Replicas:    o.Replicas,
	}
	// Create it when missing; an existing bucket is used as it is (changing
	// the TTL or replicas of a live bucket is an operator's job: nats kv).
	// Each step has a short deadline and is retried, as in EnsureStream:
	// against a NATS cluster a create racing another node's got no answer.
	var kv jetstream.KeyValue
	var err error
	for {
		sctx, cancel := context.WithTimeout(ctx, 3*time.Second)
		kv, err = js.KeyValue(sctx, ReadyBucket)
		if errors.Is(err, jetstream.ErrBucketNotFound) {
			kv, err = js.CreateKeyValue(sctx, cfg)
			if errors.Is(err, jetstream.ErrBucketExists) {
				err = context.DeadlineExceeded // another node made it: look again
			}
		}
		cancel()
		if err == nil || ctx.Err() != nil || !errors.Is(err, context.DeadlineExceeded) {
			break
		}
	}
	if err != nil {
		return nil, fmt.Errorf("routing: kv bucket %s: %w", ReadyBucket, err)
	}
	return kv, nil
}

// PutReady records one heartbeat of nodeID with info (opaque to routing,
// e.g. JSON with the node's version and pre-params pool size).
func PutReady(ctx context.Context, kv jetstream.KeyValue, nodeID string, info []byte) error {
	if err := protocol.ValidToken(nodeID); err != nil {
		return tokenErr("nodeID", nodeID, err)
	}
	if _, err := kv.Put(ctx, nodeID, info); err != nil {
		return fmt.Errorf("routing: heartbeat %s: %w", nodeID, err)
	}
	return nil
}

// HeartbeatOption tunes Heartbeat.
type HeartbeatOption func(*heartbeatOptions)

type heartbeatOptions struct {
	interval time.Duration
	logger   *slog.Logger
	infoFunc func() []byte
}

// WithInterval sets the period between puts (default: the bucket's TTL / 3).
func WithInterval(d time.Duration) HeartbeatOption {
	return func(o *heartbeatOptions) { o.interval = d }
}

// WithHeartbeatLogger logs failed puts (default slog.Default()).
func WithHeartbeatLogger(l *slog.Logger) HeartbeatOption {
	return func(o *heartbeatOptions) { o.logger = l }
}

// WithInfoFunc computes the info at every beat (overrides the static info).
func WithInfoFunc(f func() []byte) HeartbeatOption {
	return func(o *heartbeatOptions) { o.infoFunc = f }
}

// Heartbeat puts nodeID's entry now and then periodically until ctx is done;
// then it deletes the entry (the node leaves at once instead of after the
// TTL) and returns nil. Failed puts are logged and retried at the next beat.
// It returns an error only for an invalid nodeID.
func Heartbeat(ctx context.Context, kv jetstream.KeyValue, nodeID string, info []byte, opts ...HeartbeatOption) error {
	if err := protocol.ValidToken(nodeID); err != nil {
		return tokenErr("nodeID", nodeID, err)
	}
	o := heartbeatOptions{logger: slog.Default()}
	for _, f := range opts {
		f(&o)
	}
	if o.interval <= 0 {
		o.interval = DefaultReadyTTL / 3
		if st, err := kv.Status(ctx); err == nil && st.TTL() > 0 {
			o.interval = st.TTL() / 3
		}
	}
	beat := func() {
		data := info
		if o.infoFunc != nil {
			data = o.infoFunc()
		}
		if err := PutReady(ctx, kv, nodeID, data); err != nil && ctx.Err() == nil {
			o.logger.Warn("readiness heartbeat failed", "node", nodeID, "err", err)
		}
	}
	beat()
	t := time.NewTicker(o.interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
			defer cancel()
			if err := kv.Delete(dctx, nodeID); err != nil {
				o.logger.Debug("readiness entry not deleted", "node", nodeID, "err", err)
			}
			return nil
		case <-t.C:
			beat()
		}
	}
}

// ReadyNodes returns the IDs of the nodes with a live heartbeat, sorted.
func ReadyNodes(ctx context.Context, kv jetstream.KeyValue) ([]string, error) {
	lister, err := kv.ListKeys(ctx)
	if err != nil {
		if errors.Is(err, jetstream.ErrNoKeysFound) {
			return []string{}, nil
		}
		return nil, fmt.Errorf("routing: list %s: %w", ReadyBucket, err)
	}
	defer lister.Stop()
	seen := map[string]bool{}
	nodes := []string{}
	for {
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case k, ok := <-lister.Keys():
			if !ok {
				if err := ctx.Err(); err != nil {
					return nil, err
				}
				sort.Strings(nodes)
				return nodes, nil
			}
			if !seen[k] { // the lister may repeat a key written meanwhile
				seen[k] = true
				nodes = append(nodes, k)
			}
		}
	}
}
