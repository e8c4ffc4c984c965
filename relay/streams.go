package relay

import (
	"context"
	"fmt"
	"github.com/hwsigner/signer/routing"

	"github.com/nats-io/nats.go/jetstream"
)

// The relay's own JetStream resources.
const (
	// HistoryStream keeps every result the relay took from MPC_RESULTS,
	// per client: the source of webhooks, SSE and long polling. Its
	// sequence numbers are the cursors.
	HistoryStream = "RELAY_RESULTS"
	// DLQStream keeps webhook deliveries that failed for longer than the
	// client's max_age.
	DLQStream = "RELAY_DLQ"

	historyPrefix = "relay.results."
	replayPrefix  = "relay.replay."
	dlqPrefix     = "relay.dlq."
)

// Headers the relay sets on its own messages.
const (
	// hdrWebhookID carries the stable webhook-id of a result (replays and
	// dead letters keep it).
	hdrWebhookID = "Relay-Webhook-Id"
	// hdrLastError is the last delivery error of a dead letter.
	hdrLastError = "Relay-Last-Error"
	// hdrHistorySeq is the history sequence of a dead letter's result.
	hdrHistorySeq = "Relay-History-Seq"
)

// HistorySubject returns relay.results.<clientID>.
func HistorySubject(clientID string) string { return historyPrefix + clientID }

// ReplaySubject returns relay.replay.<clientID>: dead letters sent back to
// the webhook only (SSE and long polling never see them twice).
func ReplaySubject(clientID string) string { return replayPrefix + clientID }

// DLQSubject returns relay.dlq.<clientID>.
func DLQSubject(clientID string) string { return dlqPrefix + clientID }

func (r *Relay) storage() jetstream.StorageType {
	if r.cfg.Streams.Storage == "memory" {
		return jetstream.MemoryStorage
	}
	return jetstream.FileStorage
}

// ensureStreams creates or updates RELAY_RESULTS and RELAY_DLQ.
func (r *Relay) ensureStreams(ctx context.Context) error {
	s := r.cfg.Streams
	cfgs := []jetstream.StreamConfig{{
		Name:        HistoryStream,
		Description: "results delivered through signer-relay (cursor = sequence)",
		Subjects:    []string{historyPrefix + "*", replayPrefix + "*"},
		Retention:   jetstream.LimitsPolicy,
		Storage:     r.storage(),
		Replicas:    s.Replicas,
		MaxAge:      s.HistoryMaxAge,
		Duplicates:  s.HistoryDuplicates,
		Discard:     jetstream.DiscardOld,
	}, {
		Name:        DLQStream,
		Description: "webhook deliveries of signer-relay that failed for too long",
		Subjects:    []string{dlqPrefix + "*"},
		Retention:   jetstream.LimitsPolicy,
		Storage:     r.storage(),
		Replicas:    s.Replicas,
		MaxAge:      s.DLQMaxAge,
		Discard:     jetstream.DiscardOld,
	}}
	for _, c := range cfgs {
		if err := routing.EnsureStream(ctx, r.js, c); err != nil {
			return fmt.Errorf("relay: stream %s: %w", c.Name, err)
		}
	}
	return nil
}
