package node

import (
	"context"
	"log/slog"
	"maps"
	"slices"
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

// watchReadiness keeps r up to date from a KV watcher. This node's own
// heartbeat arrives every TTL/3, so a watcher silent for TTL/2 has stalled
// (seen after a NATS server restart: no error, no update, and every peer
// expiring from the view); it is then replaced by a new one, which starts
// with the bucket's current values.
func watchReadiness(ctx context.Context, kv jetstream.KeyValue, ttl time.Duration, log *slog.Logger) (*readiness, error) {
	w, err := kv.WatchAll(ctx)
	if err != nil {
		return nil, err
	}
	r := &readiness{ttl: ttl, last: map[string]time.Time{}}
	initial := make(chan struct{})
	go func() {
		once := sync.Once{}
		stall := time.NewTicker(ttl / 4)
		defer stall.Stop()
		lastEvent := time.Now()
		defer func() {
			if w != nil {
				_ = w.Stop()
			}
		}()
		for {
			var updates <-chan jetstream.KeyValueEntry
			if w != nil {
				updates = w.Updates()
			}
			select {
			case <-ctx.Done():
				return
			case <-stall.C:
				if time.Since(lastEvent) < ttl/2 {
					continue
				}
				log.Warn("readiness watcher silent; starting a new one", "silent_for", time.Since(lastEvent).Round(time.Second).String())
				if w != nil {
					_ = w.Stop()
				}
				if w, err = kv.WatchAll(ctx); err != nil {
					log.Warn("readiness watcher", "err", err)
					w = nil
				}
				lastEvent = time.Now()
			case e, ok := <-updates:
				if !ok {
					log.Warn("readiness watcher ended; starting a new one")
					w, lastEvent = nil, time.Time{} // replaced at the next tick
					continue
				}
				lastEvent = time.Now()
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

// ReadyPeers returns the nodes this node sees as ready now (its readiness
// view, which the signer choice uses), sorted; nil until the node consumes
// requests (Ready).
func (n *Node) ReadyPeers() []string {
	select {
	case <-n.isReady:
		return slices.Sorted(maps.Keys(n.ready.view()))
	default:
		return nil
	}
}
