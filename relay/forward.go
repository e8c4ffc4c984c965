package relay

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/hwsigner/signer/protocol"
	"github.com/hwsigner/signer/routing"
)

// forward consumes the client's three durable result consumers on
// MPC_RESULTS and copies every result, bytes unchanged, into RELAY_RESULTS
// (relay.results.<clientID>); the MPC_RESULTS message is acked only after
// the history stream has acked the copy. The copy's Nats-Msg-Id is the
// result's own (result-<request_id>), so a result redelivered after a crash
// between the two acks is stored once (within the history dedup window).
func (r *Relay) forward(ctx context.Context, cs *clientState) (stop func(), err error) {
	cons, err := routing.ResultConsumers(ctx, cs.js, cs.id)
	if err != nil {
		return nil, err
	}
	var ccs []jetstream.ConsumeContext
	stop = func() {
		for _, cc := range ccs {
			cc.Stop()
		}
	}
	for op, c := range cons {
		cc, err := c.Consume(func(m jetstream.Msg) { r.copyResult(ctx, cs, m) },
			jetstream.ConsumeErrHandler(func(_ jetstream.ConsumeContext, err error) {
				r.log.Debug("result consumer", "client_id", cs.id, "op", op, "err", err)
			}))
		if err != nil {
			stop()
			return nil, err
		}
		ccs = append(ccs, cc)
	}
	return stop, nil
}

// resultMsgID returns the result's Nats-Msg-Id, or a hash of its bytes.
func resultMsgID(m jetstream.Msg) string {
	if id := m.Headers().Get(jetstream.MsgIDHeader); id != "" {
		return id
	}
	sum := sha256.Sum256(m.Data())
	return "sha256-" + hex.EncodeToString(sum[:16])
}

func (r *Relay) copyResult(ctx context.Context, cs *clientState, m jetstream.Msg) {
	res, err := protocol.DecodeResult(m.Data())
	if err != nil || res.ClientID != cs.id {
		// The filter makes this impossible for honest nodes; never pass
		// another client's (or a garbled) message on.
		r.log.Error("dropping a result that is malformed or for another client", "client_id", cs.id, "subject", m.Subject(), "err", err)
		r.m.forwarded.WithLabelValues(cs.id, "dropped").Inc()
		_ = m.TermWithReason("signer-relay: malformed or misrouted result")
		return
	}
	id := resultMsgID(m)
	msg := &nats.Msg{Subject: HistorySubject(cs.id), Data: m.Data(), Header: nats.Header{}}
	msg.Header.Set(hdrWebhookID, id)
	pctx, cancel := context.WithTimeout(ctx, r.cfg.PublishTimeout)
	defer cancel()
	if _, err := r.js.PublishMsg(pctx, msg, jetstream.WithMsgID(id), jetstream.WithExpectStream(HistoryStream)); err != nil {
		r.log.Warn("history publish failed; the result stays in MPC_RESULTS", "client_id", cs.id, "request_id", res.RequestID, "err", err)
		r.m.forwarded.WithLabelValues(cs.id, "retry").Inc()
		_ = m.NakWithDelay(time.Second)
		return
	}
	if err := m.DoubleAck(pctx); err != nil {
		// Redelivered later; the history dedups it by Nats-Msg-Id.
		r.log.Warn("ack of a forwarded result failed", "client_id", cs.id, "request_id", res.RequestID, "err", err)
		return
	}
	r.m.forwarded.WithLabelValues(cs.id, "stored").Inc()
}
