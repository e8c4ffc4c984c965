package relay

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/hwsigner/signer/attest"
	"github.com/hwsigner/signer/protocol"
	"github.com/hwsigner/signer/routing"
)

// Result consumer settings of the relay. Messages stay unacked while their
// request is being collected, so the relay keeps more of them in flight
// than the Go client does, and extends their ack deadline with InProgress
// while it holds them: a relay that dies loses nothing, JetStream
// redelivers within resultAckWait and the next run collects them again.
const (
	resultAckWait       = routing.DefaultResultAckWait
	resultMaxAckPending = 4096
)

// hdrPayload names the format of a history entry (PayloadFormat).
const hdrPayload = "Relay-Payload"

// DecisionMsgID is the Nats-Msg-Id of the decision for one request in
// RELAY_RESULTS, and its webhook-id: decision.<clientID>.<op>.<request_id>.<key_id>.
// It depends only on the request, so a decision made again (after a relay
// restart, or a TIMEOUT for a straggler) is stored once within the
// history's duplicate window.
func DecisionMsgID(clientID, op, requestID, keyID string) string {
	return "decision." + clientID + "." + op + "." + requestID + "." + keyID
}

// groupKey is one request of a client: the scope of one attest.Collector.
type groupKey struct{ op, requestID, keyID string }

// group collects the verified node results of one request.
type group struct {
	col      *attest.Collector
	msgs     []jetstream.Msg // acked once the decision is stored
	deadline time.Time       // decided as TIMEOUT then
	touched  time.Time       // last ack-deadline extension
}

// collector is the relay's attestation state of one client: the requests
// being collected and those decided recently (stragglers are dropped).
type collector struct {
	mu      sync.Mutex
	open    map[groupKey]*group
	decided map[groupKey]time.Time // -> forget after
}

// release hands the results of undecided requests back to JetStream at
// once (the next run collects them again) instead of at their ack deadline.
func (col *collector) release() {
	col.mu.Lock()
	defer col.mu.Unlock()
	for k, g := range col.open {
		for _, m := range g.msgs {
			_ = m.Nak()
		}
		delete(col.open, k)
	}
}

// forward consumes the client's three durable result consumers on
// MPC_RESULTS and decides each request exactly like the Go client: every
// node result is verified against the cluster's node keys, then collected
// per (op, request_id, key_id) with attest.Collector under the cluster's
// rules. Only the decision goes to RELAY_RESULTS (relay.results.<clientID>,
// Nats-Msg-Id DecisionMsgID), once; the node results are acked after the
// history has stored it. Undecided requests are decided as TIMEOUT after
// cluster.hold; results after a decision are acked and dropped.
func (r *Relay) forward(ctx context.Context, cs *clientState) (stop func(), err error) {
	cons, err := routing.ResultConsumers(ctx, cs.js, cs.id,
		routing.WithAckWait(resultAckWait), routing.WithMaxAckPending(resultMaxAckPending))
	if err != nil {
		return nil, err
	}
	col := &collector{open: map[groupKey]*group{}, decided: map[groupKey]time.Time{}}
	var ccs []jetstream.ConsumeContext
	tctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	stop = func() {
		for _, cc := range ccs {
			cc.Stop()
		}
		cancel()
		wg.Wait()
		col.release()
	}
	for op, c := range cons {
		cc, err := c.Consume(func(m jetstream.Msg) { r.collect(tctx, cs, col, op, m) },
			jetstream.PullMaxMessages(256),
			jetstream.ConsumeErrHandler(func(_ jetstream.ConsumeContext, err error) {
				r.log.Debug("result consumer", "client_id", cs.id, "op", op, "err", err)
			}))
		if err != nil {
			stop()
			return nil, err
		}
		ccs = append(ccs, cc)
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		r.tick(tctx, cs, col)
	}()
	return stop, nil
}

// collect verifies one node result and adds it to its request's collector.
func (r *Relay) collect(ctx context.Context, cs *clientState, col *collector, op string, m jetstream.Msg) {
	res, err := protocol.VerifyResult(m.Data(), r.nodeKeys)
	if err == nil {
		err = cs.check(op, res)
	}
	if err != nil {
		// Never passed on: not signed by a cluster node, or not an answer
		// to a request of this client's keys.
		r.log.Warn("dropping a node result that fails verification", "client_id", cs.id, "op", op, "subject", m.Subject(), "err", err)
		r.m.forwarded.WithLabelValues(cs.id, "rejected").Inc()
		_ = m.TermWithReason("signer-relay: result fails verification")
		return
	}
	k := groupKey{op: op, requestID: res.RequestID, keyID: res.KeyID}
	now := time.Now()
	col.mu.Lock()
	if _, ok := col.decided[k]; ok {
		col.mu.Unlock()
		r.m.forwarded.WithLabelValues(cs.id, "straggler").Inc()
		r.log.Debug("node result after the decision dropped", "client_id", cs.id, "op", op, "request_id", res.RequestID, "node", res.NodeID)
		_ = m.Ack()
		return
	}
	g := col.open[k]
	if g == nil {
		g = &group{col: attest.NewCollector(op, r.rules), deadline: now.Add(r.cfg.Cluster.Hold), touched: now}
		col.open[k] = g
	}
	g.msgs = append(g.msgs, m)
	d, done := g.col.Add(res, m.Data())
	if done {
		delete(col.open, k)
		col.decided[k] = now.Add(r.cfg.Cluster.Hold)
	}
	col.mu.Unlock()
	r.m.forwarded.WithLabelValues(cs.id, "collected").Inc()
	if done {
		go r.store(ctx, cs, col, k, d, g.msgs)
	}
}

// check refuses a verified result that is not an answer to this client's
// consumer for op: another client or op, or a key the relay does not serve
// for the client (which therefore never submitted the request).
func (cs *clientState) check(op string, res *protocol.Result) error {
	switch {
	case res.ClientID != cs.id:
		return errors.New("result for another client")
	case res.Op != op:
		return errors.New("result of another op")
	case protocol.ValidToken(res.RequestID) != nil:
		return errors.New("request_id is not a valid token")
	}
	if _, ok := cs.keys[res.KeyID]; !ok {
		return errors.New("key_id is not a key configured for this client")
	}
	return nil
}

// store writes one decision to the history and then acks the node results
// that led to it. If the history does not ack, the results are redelivered
// and collected again.
func (r *Relay) store(ctx context.Context, cs *clientState, col *collector, k groupKey, d attest.Decision, msgs []jetstream.Msg) {
	outcome := "success"
	var ae *attest.Error
	switch {
	case errors.As(d.Err, &ae) && ae.Code == protocol.CodeTimeout:
		outcome = "timeout"
	case d.Err != nil:
		outcome = "error"
	}
	id := DecisionMsgID(cs.id, k.op, k.requestID, k.keyID)
	body, err := encodeDelivery(d, protocol.Result{Op: k.op, RequestID: k.requestID, ClientID: cs.id, KeyID: k.keyID})
	if err == nil {
		msg := &nats.Msg{Subject: HistorySubject(cs.id), Data: body, Header: nats.Header{}}
		msg.Header.Set(hdrWebhookID, id)
		msg.Header.Set(hdrPayload, PayloadFormat)
		pctx, cancel := context.WithTimeout(ctx, r.cfg.PublishTimeout)
		_, err = r.js.PublishMsg(pctx, msg, jetstream.WithMsgID(id), jetstream.WithExpectStream(HistoryStream))
		cancel()
	}
	if err != nil {
		if ctx.Err() != nil {
			return // stopping: the results are redelivered to the next run
		}
		r.log.Warn("history publish failed; the node results stay in MPC_RESULTS", "client_id", cs.id, "op", k.op, "request_id", k.requestID, "err", err)
		r.m.forwarded.WithLabelValues(cs.id, "retry").Inc()
		col.mu.Lock()
		delete(col.decided, k)
		col.mu.Unlock()
		for _, m := range msgs {
			_ = m.NakWithDelay(time.Second)
		}
		return
	}
	r.m.decisions.WithLabelValues(cs.id, k.op, outcome).Inc()
	r.log.Debug("decision stored", "client_id", cs.id, "op", k.op, "request_id", k.requestID, "outcome", outcome, "attestations", len(d.Attestations))
	for _, m := range msgs {
		actx, cancel := context.WithTimeout(ctx, r.cfg.PublishTimeout)
		if err := m.DoubleAck(actx); err != nil && ctx.Err() == nil {
			// Redelivered later: a straggler (or, after a restart, a
			// TIMEOUT decision deduplicated by its Nats-Msg-Id).
			r.log.Warn("ack of a decided node result failed", "client_id", cs.id, "request_id", k.requestID, "err", err)
		}
		cancel()
	}
}

// tickEvery returns how often the collector is swept: a tenth of the hold,
// within [50ms, 1s].
func tickEvery(hold time.Duration) time.Duration {
	return min(max(hold/10, 50*time.Millisecond), time.Second)
}

// tick decides undecided requests as TIMEOUT once their hold has passed,
// extends the ack deadline of the node results held longer than a third of
// AckWait, and forgets old decisions.
func (r *Relay) tick(ctx context.Context, cs *clientState, col *collector) {
	t := time.NewTicker(tickEvery(r.cfg.Cluster.Hold))
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			var progress []jetstream.Msg
			type expired struct {
				k    groupKey
				d    attest.Decision
				msgs []jetstream.Msg
			}
			var due []expired
			col.mu.Lock()
			for k, g := range col.open {
				switch {
				case !now.Before(g.deadline):
					due = append(due, expired{k, g.col.Expire(), g.msgs})
					delete(col.open, k)
					col.decided[k] = now.Add(r.cfg.Cluster.Hold)
				case now.Sub(g.touched) >= resultAckWait/3:
					progress = append(progress, g.msgs...)
					g.touched = now
				}
			}
			for k, until := range col.decided {
				if now.After(until) {
					delete(col.decided, k)
				}
			}
			col.mu.Unlock()
			for _, m := range progress {
				_ = m.InProgress()
			}
			for _, e := range due {
				r.log.Info("request undecided after the hold; deciding TIMEOUT", "client_id", cs.id, "op", e.k.op, "request_id", e.k.requestID, "results", len(e.msgs))
				go r.store(ctx, cs, col, e.k, e.d, e.msgs)
			}
		}
	}
}
