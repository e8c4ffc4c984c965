package node

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// readiness is this node's view of the readiness bucket, kept by a watcher.
// Listing the bucket on every request (an ordered consumer per call) misses
// a key that is being rewritten at that moment, so nodes saw peers flap;
// a watcher sees every heartbeat and delete in order.
type readiness struct {
	ttl  time.Duration
	mu   sync.Mutex
	last map[string]time.Time
}

func watchReadiness(ctx context.Context, kv jetstream.KeyValue, ttl time.Duration, log *slog.Logger) (*readiness, error) {
	w, err := kv.WatchAll(ctx)
	if err != nil {
		return nil, err
	}
	r := &readiness{ttl: ttl, last: map[string]time.Time{}}
	initial := make(chan struct{})
	go func() {
		defer func() { _ = w.Stop() }()
		once := sync.Once{}
		for {
			select {
			case <-ctx.Done():
				return
			case e, ok := <-w.Updates():
				if !ok {
					log.Warn("readiness watcher ended")
					return
				}
				if e == nil { // end of the initial values
					once.Do(func() { close(initial) })
					continue
				}
				log.Debug("readiness update", "peer", e.Key(), "op", e.Operation().String(), "at", e.Created())
				r.mu.Lock()
				if e.Operation() == jetstream.KeyValuePut {
					r.last[e.Key()] = e.Created()
				} else {
					delete(r.last, e.Key())
				}
				r.mu.Unlock()
			}
		}
	}()
	select {
	case <-initial:
	case <-time.After(5 * time.Second):
	case <-ctx.Done():
	}
	return r, nil
}

func (r *readiness) view() map[string]bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := map[string]bool{}
	for k, t := range r.last {
		if time.Since(t) < r.ttl {
			out[k] = true
		}
	}
	return out
}
