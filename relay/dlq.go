package relay

import (
	"context"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// DeadLetter is one entry of RELAY_DLQ.
type DeadLetter struct {
	Seq        uint64 `json:"seq"`
	ClientID   string `json:"client_id"`
	WebhookID  string `json:"webhook_id"`
	HistorySeq string `json:"history_seq"`
	LastError  string `json:"last_error"`
	// Attested is false for a dead letter stored by a relay before
	// attestation (an unverified node result): replayed, the webhook
	// drops it.
	Attested bool      `json:"attested"`
	Stored   time.Time `json:"stored"`
	Size     int       `json:"size"`
	data     []byte
}

// ListDLQ returns the dead letters of clientID ("" for every client), oldest
// first.
func ListDLQ(ctx context.Context, js jetstream.JetStream, clientID string) ([]DeadLetter, error) {
	filter := dlqPrefix + "*"
	if clientID != "" {
		filter = DLQSubject(clientID)
	}
	s, err := js.Stream(ctx, DLQStream)
	if err != nil {
		return nil, fmt.Errorf("relay: %s: %w", DLQStream, err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		return nil, err
	}
	var out []DeadLetter
	if info.State.Msgs == 0 {
		return out, nil
	}
	cons, err := js.OrderedConsumer(ctx, DLQStream, jetstream.OrderedConsumerConfig{FilterSubjects: []string{filter}})
	if err != nil {
		return nil, err
	}
	for {
		batch, err := cons.FetchNoWait(256)
		if err != nil {
			return nil, err
		}
		n := 0
		for m := range batch.Messages() {
			n++
			md, err := m.Metadata()
			if err != nil {
				return nil, err
			}
			out = append(out, DeadLetter{
				Seq:        md.Sequence.Stream,
				ClientID:   m.Subject()[len(dlqPrefix):],
				WebhookID:  m.Headers().Get(hdrWebhookID),
				HistorySeq: m.Headers().Get(hdrHistorySeq),
				LastError:  m.Headers().Get(hdrLastError),
				Attested:   attested(m),
				Stored:     md.Timestamp,
				Size:       len(m.Data()),
				data:       m.Data(),
			})
			if md.NumPending == 0 {
				return out, batch.Error()
			}
		}
		if n == 0 {
			return out, batch.Error()
		}
	}
}

// ReplayDLQ sends dead letters of clientID back to its webhook (subject
// relay.replay.<clientID>, seen by the webhook consumer only, never by SSE
// or long polling) with their original webhook-id, then deletes them from
// RELAY_DLQ. seqs selects entries; none means all of the client's. It
// returns how many were replayed.
func ReplayDLQ(ctx context.Context, js jetstream.JetStream, clientID string, seqs ...uint64) (int, error) {
	if clientID == "" {
		return 0, fmt.Errorf("relay: replay needs a clientID")
	}
	dls, err := ListDLQ(ctx, js, clientID)
	if err != nil {
		return 0, err
	}
	want := map[uint64]bool{}
	for _, s := range seqs {
		want[s] = true
	}
	s, err := js.Stream(ctx, DLQStream)
	if err != nil {
		return 0, err
	}
	n := 0
	for _, d := range dls {
		if len(want) > 0 && !want[d.Seq] {
			continue
		}
		delete(want, d.Seq)
		msg := &nats.Msg{Subject: ReplaySubject(clientID), Data: d.data, Header: nats.Header{}}
		msg.Header.Set(hdrWebhookID, d.WebhookID)
		if d.Attested {
			msg.Header.Set(hdrPayload, PayloadFormat)
		}
		dedup := fmt.Sprintf("%s-replay-%d", d.WebhookID, d.Seq)
		if _, err := js.PublishMsg(ctx, msg, jetstream.WithMsgID(dedup), jetstream.WithExpectStream(HistoryStream)); err != nil {
			return n, fmt.Errorf("relay: replaying DLQ seq %d: %w", d.Seq, err)
		}
		if err := s.DeleteMsg(ctx, d.Seq); err != nil {
			return n, fmt.Errorf("relay: replayed DLQ seq %d but could not delete it: %w", d.Seq, err)
		}
		n++
	}
	for seq := range want {
		return n, fmt.Errorf("relay: no dead letter with seq %d for client %s", seq, clientID)
	}
	return n, nil
}

// Connect opens the relay's own NATS connection from cfg (for the dlq
// subcommands).
func Connect(cfg *Config) (*nats.Conn, jetstream.JetStream, error) {
	nc, err := nats.Connect(cfg.NATS.URL, natsOptions(cfg.NATS, "signer-relay-dlq", "_INBOX")...)
	if err != nil {
		return nil, nil, err
	}
	js, err := jetstream.New(nc)
	if err != nil {
		nc.Close()
		return nil, nil, err
	}
	return nc, js, nil
}
