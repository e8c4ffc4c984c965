package relay

import (
	"context"
	"errors"
	"runtime"
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
	// verifyQueue bounds the node results received but not yet verified.
	verifyQueue = 256
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
	cp := newCopier()
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
	// Verification (a signature check per node result) runs on every
	// core: one consumer callback would verify a burst one at a time.
	type work struct {
		op string
		m  jetstream.Msg
	}
	wq := make(chan work, verifyQueue)
	for range max(2, runtime.GOMAXPROCS(0)) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-tctx.Done():
					return // what is queued is redelivered to the next run
				case w := <-wq:
					r.collect(tctx, cs, col, cp, w.op, w.m)
				}
			}
		}()
	}
	for op, c := range cons {
		cc, err := c.Consume(func(m jetstream.Msg) {
			select {
			case wq <- work{op, m}:
			case <-tctx.Done():
			}
		},
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
	wg.Add(2)
	go func() {
		defer wg.Done()
		r.tick(tctx, cs, col, cp)
	}()
	go func() {
		defer wg.Done()
		r.awaitPubAcks(tctx, cs, col, cp)
	}()
	return stop, nil
}

// collect verifies one node result and adds it to its request's collector.
func (r *Relay) collect(ctx context.Context, cs *clientState, col *collector, cp *copier, op string, m jetstream.Msg) {
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
		r.copyDecision(ctx, cs, col, cp, decided{k, d, g.msgs})
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

// historyWindow bounds the decisions being copied into the history at once:
// published asynchronously, their PubAcks awaited in order.
const historyWindow = 256

// decided is one decision on its way to the history, with the node results
// that led to it.
type decided struct {
	k    groupKey
	d    attest.Decision
	msgs []jetstream.Msg
}

// inflight is a decision published to the history, awaiting its PubAck.
type inflight struct {
	decided
	fut jetstream.PubAckFuture
}

// copier copies one client's decisions into the history: each is published
// asynchronously as soon as it is made (Nats-Msg-Id DecisionMsgID, so a
// decision made twice is stored once), at most historyWindow awaiting their
// PubAck; the node results of a decision are acked only after its PubAck.
// A burst of decisions thus costs about one round trip, not one per
// decision.
type copier struct {
	acks chan inflight
}

func newCopier() *copier {
	return &copier{acks: make(chan inflight, historyWindow)}
}

// copyDecision publishes d and queues it for its PubAck (waiting while
// historyWindow decisions are in flight: back pressure on the result
// consumers). Stopping, it is dropped: its node results are redelivered to
// the next run.
func (r *Relay) copyDecision(ctx context.Context, cs *clientState, col *collector, cp *copier, d decided) {
	fut, err := r.publishDecision(cs, d)
	if err != nil {
		r.storeFailed(ctx, cs, col, d, err)
		return
	}
	select {
	case cp.acks <- inflight{d, fut}:
	case <-ctx.Done():
	}
}

// awaitPubAcks acks the node results of each decision once the history has
// acknowledged it, in publication order.
func (r *Relay) awaitPubAcks(ctx context.Context, cs *clientState, col *collector, cp *copier) {
	for {
		var f inflight
		select {
		case <-ctx.Done():
			return
		case f = <-cp.acks:
		}
		select {
		case <-ctx.Done():
			return // stopping: the results are redelivered to the next run
		case err := <-f.fut.Err():
			r.storeFailed(ctx, cs, col, f.decided, err)
		case <-f.fut.Ok():
			r.stored(cs, f.decided)
		}
	}
}

// publishDecision publishes one decision to the history without waiting
// for its PubAck.
func (r *Relay) publishDecision(cs *clientState, d decided) (jetstream.PubAckFuture, error) {
	id := DecisionMsgID(cs.id, d.k.op, d.k.requestID, d.k.keyID)
	body, err := encodeDelivery(d.d, protocol.Result{Op: d.k.op, RequestID: d.k.requestID, ClientID: cs.id, KeyID: d.k.keyID})
	if err != nil {
		return nil, err
	}
	msg := &nats.Msg{Subject: HistorySubject(cs.id), Data: body, Header: nats.Header{}}
	msg.Header.Set(hdrWebhookID, id)
	msg.Header.Set(hdrPayload, PayloadFormat)
	return r.hjs.PublishMsgAsync(msg, jetstream.WithMsgID(id), jetstream.WithExpectStream(HistoryStream),
		jetstream.WithStallWait(r.cfg.PublishTimeout))
}

// storeFailed hands the node results of a decision the history did not
// store back to JetStream: they are redelivered and collected again.
func (r *Relay) storeFailed(ctx context.Context, cs *clientState, col *collector, d decided, err error) {
	if ctx.Err() != nil {
		return // stopping: the results are redelivered to the next run
	}
	r.log.Warn("history publish failed; the node results stay in MPC_RESULTS", "client_id", cs.id, "op", d.k.op, "request_id", d.k.requestID, "err", err)
	r.m.forwarded.WithLabelValues(cs.id, "retry").Inc()
	col.mu.Lock()
	delete(col.decided, d.k)
	col.mu.Unlock()
	for _, m := range d.msgs {
		_ = m.NakWithDelay(time.Second)
	}
}

// stored counts a decision the history acknowledged and acks its node
// results. The acks are not awaited: one that is lost only redelivers a
// result, which is then a straggler or, decided again after a restart,
// deduplicated by its Nats-Msg-Id.
func (r *Relay) stored(cs *clientState, d decided) {
	outcome := "success"
	var ae *attest.Error
	switch {
	case errors.As(d.d.Err, &ae) && ae.Code == protocol.CodeTimeout:
		outcome = "timeout"
	case d.d.Err != nil:
		outcome = "error"
	}
	r.m.decisions.WithLabelValues(cs.id, d.k.op, outcome).Inc()
	r.log.Debug("decision stored", "client_id", cs.id, "op", d.k.op, "request_id", d.k.requestID, "outcome", outcome, "attestations", len(d.d.Attestations))
	for _, m := range d.msgs {
		if err := m.Ack(); err != nil {
			r.log.Warn("ack of a decided node result failed", "client_id", cs.id, "request_id", d.k.requestID, "err", err)
		}
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
func (r *Relay) tick(ctx context.Context, cs *clientState, col *collector, cp *copier) {
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
				r.copyDecision(ctx, cs, col, cp, decided{e.k, e.d, e.msgs})
			}
		}
	}
}
