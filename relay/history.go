package relay

import (
	"context"
	"errors"
	"strconv"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// historyEntry is one decision of a client's history with its cursor (the
// RELAY_RESULTS stream sequence). Attested is false for an entry stored by
// a relay before attestation (an unverified node result): it is skipped,
// only its cursor counts.
type historyEntry struct {
	Cursor   uint64
	Data     []byte
	Attested bool
}

// parseCursor reads a cursor: "" or "0" is the start of the history.
func parseCursor(s string) (uint64, error) {
	if s == "" {
		return 0, nil
	}
	n, err := strconv.ParseUint(s, 10, 64)
	if err != nil {
		return 0, errors.New("cursor must be a non-negative integer (a previous event id or next_cursor)")
	}
	return n, nil
}

// historyAfter returns an ordered consumer over the client's history (never
// the replay subject: SSE and polling see each result once) starting after
// cursor.
func (r *Relay) historyAfter(ctx context.Context, clientID string, cursor uint64) (jetstream.Consumer, error) {
	cfg := jetstream.OrderedConsumerConfig{
		FilterSubjects:    []string{HistorySubject(clientID)},
		DeliverPolicy:     jetstream.DeliverAllPolicy,
		InactiveThreshold: 30 * time.Second,
	}
	if cursor > 0 {
		cfg.DeliverPolicy, cfg.OptStartSeq = jetstream.DeliverByStartSequencePolicy, cursor+1
	}
	return r.js.OrderedConsumer(ctx, HistoryStream, cfg)
}

func entryOf(m jetstream.Msg) (historyEntry, error) {
	md, err := m.Metadata()
	if err != nil {
		return historyEntry{}, err
	}
	return historyEntry{Cursor: md.Sequence.Stream, Data: m.Data(), Attested: attested(m)}, nil
}

// attested reports whether a history (or dead-letter) message holds a
// Delivery.
func attested(m jetstream.Msg) bool {
	return m.Headers().Get(hdrPayload) == PayloadFormat
}
