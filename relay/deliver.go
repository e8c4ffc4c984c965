package relay

import (
	"context"
	"errors"
	"math/rand/v2"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// WebhookConsumerName returns the durable consumer on RELAY_RESULTS that
// feeds a client's webhook: relay_webhook_<clientID>.
func WebhookConsumerName(clientID string) string { return "relay_webhook_" + clientID }

// deliverWebhooks consumes the client's history (and replayed dead letters)
// with a durable consumer and posts each decision (a Delivery) to the
// webhook, at most Concurrency at a time.
func (r *Relay) deliverWebhooks(ctx context.Context, cs *clientState, wg *sync.WaitGroup) (stop func(), err error) {
	w := cs.wcfg
	c, err := r.js.CreateOrUpdateConsumer(ctx, HistoryStream, jetstream.ConsumerConfig{
		Durable:        WebhookConsumerName(cs.id),
		Description:    "webhook delivery for client " + cs.id,
		FilterSubjects: []string{HistorySubject(cs.id), ReplaySubject(cs.id)},
		DeliverPolicy:  jetstream.DeliverAllPolicy,
		AckPolicy:      jetstream.AckExplicitPolicy,
		AckWait:        2*w.Timeout + 5*time.Second, // a slot wait plus one attempt
		MaxAckPending:  10000,
	})
	if err != nil {
		return nil, err
	}
	sem := make(chan struct{}, w.Concurrency)
	cc, err := c.Consume(func(m jetstream.Msg) {
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
			return // not acked: redelivered to the next run
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			var once sync.Once
			release := func() { once.Do(func() { <-sem }) }
			defer release()
			r.deliverOne(ctx, cs, m, release)
		}()
	}, jetstream.PullMaxMessages(w.Concurrency), jetstream.ConsumeErrHandler(func(_ jetstream.ConsumeContext, err error) {
		r.log.Debug("webhook consumer", "client_id", cs.id, "err", err)
	}))
	if err != nil {
		return nil, err
	}
	return cc.Stop, nil
}

// webhookID is stable per request: the decision's Relay-Webhook-Id
// (DecisionMsgID), kept by dead letters and replays.
func webhookID(m jetstream.Msg, md *jetstream.MsgMetadata) string {
	if id := m.Headers().Get(hdrWebhookID); id != "" {
		return id
	}
	return "relay-seq-" + strconv.FormatUint(md.Sequence.Stream, 10)
}

// deliverOne makes one delivery attempt of m. release frees its
// concurrency slot: called once the POST is answered, so the ack's round
// trip does not hold back the next delivery.
func (r *Relay) deliverOne(ctx context.Context, cs *clientState, m jetstream.Msg, release func()) {
	md, err := m.Metadata()
	if err != nil {
		r.log.Error("webhook: message without metadata", "client_id", cs.id, "err", err)
		return
	}
	id := webhookID(m, md)
	if !attested(m) {
		// Stored by a relay before attestation: an unverified node result
		// is never posted.
		r.log.Warn("webhook: history entry without attestation dropped", "client_id", cs.id, "webhook_id", id, "seq", md.Sequence.Stream)
		r.m.deliveries.WithLabelValues(cs.id, "unattested_dropped").Inc()
		_ = m.Term()
		return
	}
	if cs.webhook.gone.Load() {
		// The endpoint answered 410 Gone: nothing more is posted to it
		// until the relay restarts; each delivery is dead-lettered at once
		// (signer-relay dlq replay sends them once the URL is fixed).
		release()
		r.m.deliveries.WithLabelValues(cs.id, "gone").Inc()
		r.deadLetter(ctx, cs, m, md, id, errGone)
		return
	}
	start := time.Now()
	err = cs.webhook.post(ctx, id, m.Data())
	release()
	if ctx.Err() != nil {
		return // stopping: the message is redelivered to the next run
	}
	if err == nil {
		actx, cancel := context.WithTimeout(ctx, r.cfg.PublishTimeout)
		defer cancel()
		if aerr := m.DoubleAck(actx); aerr != nil {
			// Redelivered with the same webhook-id: the receiver dedups.
			r.log.Warn("webhook delivered but the ack failed", "client_id", cs.id, "webhook_id", id, "err", aerr)
		}
		r.m.deliveries.WithLabelValues(cs.id, "success").Inc()
		r.m.latency.WithLabelValues(cs.id).Observe(time.Since(md.Timestamp).Seconds())
		r.m.attempt.WithLabelValues(cs.id).Observe(time.Since(start).Seconds())
		return
	}
	outcome := "network_error"
	var st errStatus
	if errors.As(err, &st) {
		outcome = "http_error"
	}
	if st.code == http.StatusGone {
		if cs.webhook.gone.CompareAndSwap(false, true) {
			r.m.webhookGone.WithLabelValues(cs.id).Set(1)
			r.log.Error("webhook endpoint answered 410 Gone: deliveries stopped, each result is dead-lettered until the relay restarts", "client_id", cs.id, "webhook_id", id)
		}
		r.m.deliveries.WithLabelValues(cs.id, "gone").Inc()
		r.deadLetter(ctx, cs, m, md, id, errGone)
		return
	}
	r.m.deliveries.WithLabelValues(cs.id, outcome).Inc()
	age := time.Since(md.Timestamp)
	if age >= cs.wcfg.MaxAge {
		r.deadLetter(ctx, cs, m, md, id, err)
		return
	}
	delay := backoff(cs.wcfg.InitialBackoff, cs.wcfg.MaxBackoff, md.NumDelivered)
	if st.retryAfter > delay { // 429 or 503 with Retry-After: no earlier
		delay = st.retryAfter
	}
	r.m.retries.WithLabelValues(cs.id).Inc()
	r.log.Info("webhook delivery failed; will retry", "client_id", cs.id, "webhook_id", id, "attempt", md.NumDelivered, "retry_in", delay, "err", err)
	_ = m.NakWithDelay(delay)
}

// errGone is the last error of a delivery dead-lettered after a 410.
var errGone = errors.New("webhook endpoint gone (HTTP 410)")

// backoff returns initial*2^(attempt-1), at most max, with "equal jitter":
// half the delay fixed, half random.
func backoff(initial, max time.Duration, attempt uint64) time.Duration {
	d := initial
	for i := uint64(1); i < attempt && d < max; i++ {
		d *= 2
	}
	d = min(d, max)
	half := d / 2
	return half + rand.N(half+1)
}

// deadLetter moves a result whose deliveries failed for longer than max_age
// to RELAY_DLQ, then acks it. If the DLQ publish fails the message is
// retried instead: it is never dropped.
func (r *Relay) deadLetter(ctx context.Context, cs *clientState, m jetstream.Msg, md *jetstream.MsgMetadata, id string, cause error) {
	msg := &nats.Msg{Subject: DLQSubject(cs.id), Data: m.Data(), Header: nats.Header{}}
	msg.Header.Set(hdrWebhookID, id)
	msg.Header.Set(hdrHistorySeq, strconv.FormatUint(md.Sequence.Stream, 10))
	msg.Header.Set(hdrPayload, m.Headers().Get(hdrPayload))
	msg.Header.Set(hdrLastError, cause.Error())
	pctx, cancel := context.WithTimeout(ctx, r.cfg.PublishTimeout)
	defer cancel()
	dedup := id + "-dlq-" + strconv.FormatUint(md.Sequence.Stream, 10)
	if _, err := r.js.PublishMsg(pctx, msg, jetstream.WithMsgID(dedup), jetstream.WithExpectStream(DLQStream)); err != nil {
		r.log.Error("dead-letter publish failed; retrying the delivery", "client_id", cs.id, "webhook_id", id, "err", err)
		_ = m.NakWithDelay(cs.wcfg.MaxBackoff)
		return
	}
	if err := m.DoubleAck(pctx); err != nil {
		r.log.Warn("ack of a dead letter failed", "client_id", cs.id, "webhook_id", id, "err", err)
	}
	r.m.deadLetters.WithLabelValues(cs.id).Inc()
	r.m.deliveries.WithLabelValues(cs.id, "dead_letter").Inc()
	r.log.Warn("webhook delivery moved to the dead-letter stream", "client_id", cs.id, "webhook_id", id, "attempts", md.NumDelivered, "err", cause)
}
