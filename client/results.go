package client

import (
	"context"
	"fmt"
	"time"

	"github.com/hwsigner/signer/attest"
	"github.com/hwsigner/signer/protocol"
	"github.com/hwsigner/signer/routing"
	"github.com/nats-io/nats.go/jetstream"
)

// Redelivery of a result nobody claimed: NumDelivered * unclaimedDelay, at
// most maxUnclaimedDelay.
const (
	unclaimedDelay    = time.Second
	maxUnclaimedDelay = 30 * time.Second
)

// Decided requests are remembered (to ack their stragglers) for at least
// minDecidedFor (twice the request TTL if longer), at most maxDecided.
const (
	minDecidedFor = 10 * time.Minute
	maxDecided    = 1 << 16
)

// OnWalletCreationResult registers the callback for keygen results without a
// waiter (replacing any earlier one) and starts the keygen result consumer.
// It returns an error when the consumer cannot be created (within the
// JetStream API timeout).
//
// The callback gets one attested result per request: the keygen success
// every node reported identically, the first member's error, a
// RESULT_MISMATCH error result when members disagree, or a TIMEOUT error
// result when the request stays undecided for the request TTL (see
// WithRequestTTL) after its first result. The node results stay un-acked
// until then and are acked after the callback returns, so a crash loses
// nothing (they are redelivered and decided again). Error results made by
// the client (RESULT_MISMATCH, TIMEOUT) have no node_id. Use
// OnWalletCreationDecision to see the attesting node results too.
func (c *Client) OnWalletCreationResult(f func(protocol.Result)) error {
	return c.on(protocol.OpKeygen, resultFunc(f))
}

// OnSignResult registers the callback for signing results (t+1 identical
// successes, or t+1 errors); see OnWalletCreationResult. The callback's
// signature is not checked over the tx (the client does not know it; a
// SignAndWait does check it): use VerifySignResult or attest.VerifySignature.
func (c *Client) OnSignResult(f func(protocol.Result)) error {
	return c.on(protocol.OpSign, resultFunc(f))
}

// OnReshareResult registers the callback for resharing results (t+1
// identical successes, or t+1 errors); see OnWalletCreationResult.
func (c *Client) OnReshareResult(f func(protocol.Result)) error {
	return c.on(protocol.OpReshare, resultFunc(f))
}

// OnWalletCreationDecision is OnWalletCreationResult with the whole
// decision: the attested result, the raw signed node results that attest it
// (sorted by node id; kept as evidence) and, unless a success, the
// *attest.Error naming what each node reported. It replaces the callback
// OnWalletCreationResult registered, and the other way round.
func (c *Client) OnWalletCreationDecision(f func(attest.Decision)) error {
	return c.on(protocol.OpKeygen, f)
}

// OnSignDecision is OnSignResult with the whole decision; see
// OnWalletCreationDecision.
func (c *Client) OnSignDecision(f func(attest.Decision)) error {
	return c.on(protocol.OpSign, f)
}

// OnReshareDecision is OnReshareResult with the whole decision; see
// OnWalletCreationDecision.
func (c *Client) OnReshareDecision(f func(attest.Decision)) error {
	return c.on(protocol.OpReshare, f)
}

func resultFunc(f func(protocol.Result)) func(attest.Decision) {
	if f == nil {
		return nil
	}
	return func(d attest.Decision) { f(*d.Result) }
}

func (c *Client) on(op string, f func(attest.Decision)) error {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return ErrClosed
	}
	c.handlers[op] = f
	c.mu.Unlock()
	// No deadline: the JetStream API's default timeout bounds the call.
	return c.ensureConsumer(context.Background(), op)
}

func (c *Client) isClosed() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.closed
}

// ensureConsumer creates the client's durable consumer for op and starts
// consuming, once; and the keeper.
func (c *Client) ensureConsumer(ctx context.Context, op string) error {
	c.startMu.Lock()
	defer c.startMu.Unlock()
	c.mu.Lock()
	_, ok := c.running[op]
	closed := c.closed
	c.mu.Unlock()
	if closed {
		return ErrClosed
	}
	if ok {
		return nil
	}
	cons, err := routing.ResultConsumer(ctx, c.js, op, c.clientID, routing.WithAckWait(c.cfg.resultAckWait))
	if err != nil {
		return fmt.Errorf("client: %w", err)
	}
	cc, err := cons.Consume(func(m jetstream.Msg) { c.handle(op, m) },
		jetstream.ConsumeErrHandler(func(_ jetstream.ConsumeContext, err error) {
			c.log.Warn("result consumer", "op", op, "err", err)
		}))
	if err != nil {
		return fmt.Errorf("client: consuming %s results: %w", op, err)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		cc.Stop()
		return ErrClosed
	}
	c.running[op] = cc
	if !c.keeping {
		c.keeping = true
		c.bg.Add(1)
		go c.keep()
	}
	return nil
}

func newPending(key reqKey, rules attest.Rules) *pending {
	return &pending{key: key, coll: attest.NewCollector(key.op, rules), msgs: map[uint64]jetstream.Msg{}, since: time.Now()}
}

// held returns the pending's messages.
func (p *pending) held() []jetstream.Msg {
	out := make([]jetstream.Msg, 0, len(p.msgs))
	for _, m := range p.msgs {
		out = append(out, m)
	}
	return out
}

// addWaiter registers a Wait helper for requestID (this client's key) and
// the pending that collects its results.
func (c *Client) addWaiter(op, requestID string) (*waiter, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return nil, ErrClosed
	}
	if _, dup := c.waiters[requestID]; dup {
		return nil, fmt.Errorf("%w: %s", ErrPendingRequestID, requestID)
	}
	key := reqKey{op: op, requestID: requestID, keyID: c.keyID}
	p := c.pending[key]
	if p == nil { // else results came before the waiter (a reused request_id): they count
		p = newPending(key, c.rules)
		c.pending[key] = p
	}
	c.decided.remove(key) // a new request under a reused id is decided anew
	w := &waiter{op: op, ch: make(chan attest.Decision, 1), p: p}
	p.w = w
	c.waiters[requestID] = w
	return w, nil
}

// dropWaiter removes a waiter. When its request is still undecided it also
// takes the pending (owned=true): its messages go back to the stream, and
// d is what was seen (attest's Expire). owned=false: a handler took the
// pending and sends the decision on w.ch, or Close released it.
func (c *Client) dropWaiter(requestID string, w *waiter) (d attest.Decision, owned bool) {
	c.mu.Lock()
	if c.waiters[requestID] == w {
		delete(c.waiters, requestID)
	}
	var held []jetstream.Msg
	if c.pending[w.p.key] == w.p {
		delete(c.pending, w.p.key)
		held, owned = w.p.held(), true
		d = w.p.coll.Expire()
	}
	c.mu.Unlock()
	for _, m := range held {
		_ = m.NakWithDelay(unclaimedDelay) // for a callback or another process
	}
	return d, owned
}

// take removes a decided pending (under mu) and remembers its key.
func (c *Client) take(p *pending) {
	delete(c.pending, p.key)
	if p.w != nil && c.waiters[p.key.requestID] == p.w {
		delete(c.waiters, p.key.requestID)
	}
	c.decided.add(p.key, time.Now())
}

// handle verifies one result message and gives it to its request's
// collector; the message stays un-acked until the request is decided.
func (c *Client) handle(op string, m jetstream.Msg) {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		_ = m.Nak() // for the next Client
		return
	}
	c.inflight.Add(1) // under mu: never concurrent with Close's Wait
	c.mu.Unlock()
	defer c.inflight.Done()

	res, err := protocol.VerifyResult(m.Data(), c.nodeKeys)
	if err != nil {
		c.dropped.Add(1)
		c.log.Warn("dropping a result that fails verification", "op", op, "subject", m.Subject(), "err", err)
		_ = m.TermWithReason("result verification failed")
		return
	}
	if res.ClientID != c.clientID || res.Op != op {
		c.misrouted.Add(1)
		c.log.Error("dropping a result meant for another client or operation", "op", op,
			"result_op", res.Op, "result_client_id", res.ClientID, "request_id", res.RequestID, "node", res.NodeID)
		_ = m.TermWithReason("misrouted result")
		return
	}
	if res.KeyID != c.keyID {
		// Our client ID, another key: a refusal of someone claiming our ID
		// (nodes answer UNAUTHORIZED_CLIENT on the claimed ID's subject),
		// never a result of ours, so it must not reach a callback.
		c.misrouted.Add(1)
		c.log.Warn("dropping a result for another client key", "op", op, "result_key_id", res.KeyID,
			"request_id", res.RequestID, "node", res.NodeID, "error_code", res.ErrorCode)
		_ = m.TermWithReason("result for another client key")
		return
	}
	key := reqKey{op: op, requestID: res.RequestID, keyID: res.KeyID}
	seq := streamSeq(m)

	c.mu.Lock()
	if c.decided.has(key) {
		c.mu.Unlock()
		c.stragglers.Add(1)
		c.log.Debug("result of a request already decided", "op", op, "request_id", res.RequestID, "node", res.NodeID)
		_ = m.Ack()
		return
	}
	p := c.pending[key]
	if p == nil {
		if c.handlers[op] == nil {
			c.mu.Unlock()
			c.unclaimed.Add(1)
			delay := unclaimedDelay
			if md, err := m.Metadata(); err == nil {
				delay = min(time.Duration(md.NumDelivered)*unclaimedDelay, maxUnclaimedDelay)
			}
			c.log.Debug("result without waiter or callback returned to the stream", "op", op, "request_id", res.RequestID, "retry_in", delay)
			_ = m.NakWithDelay(delay)
			return
		}
		p = newPending(key, c.rules)
		c.pending[key] = p
	}
	if _, again := p.msgs[seq]; again { // redelivered while held: keep the newest handle
		p.msgs[seq] = m
		c.mu.Unlock()
		return
	}
	p.msgs[seq] = m
	p.real = p.real || res.ErrorCode != protocol.CodeReplayed
	d, done := p.coll.Add(res, m.Data())
	if !done {
		c.mu.Unlock()
		return
	}
	c.take(p)
	c.mu.Unlock()
	c.finish(p, d)
}

// streamSeq is a message's stream sequence (unique per stored result).
func streamSeq(m jetstream.Msg) uint64 {
	if md, err := m.Metadata(); err == nil {
		return md.Sequence.Stream
	}
	return 0
}

// finish hands a decided request to its waiter or to the callback and acks
// its messages.
func (c *Client) finish(p *pending, d attest.Decision) {
	if d.Result != nil && d.Result.RequestID == "" {
		d.Result.RequestID = p.key.requestID
	}
	if p.w == nil {
		c.runCallback(p, d)
		return
	}
	for _, m := range p.msgs {
		_ = m.Ack()
	}
	c.delivered.Add(1)
	p.w.ch <- d
}

// runCallback runs op's callback (one at a time per op) with the decision,
// keeping the request's messages alive with in-progress acks while it
// runs, and acks them after. When the callback panics, or there is none
// any more, the messages go back to the stream and the request is decided
// again when they return.
func (c *Client) runCallback(p *pending, d attest.Decision) {
	mu := c.cbMu[p.key.op]
	mu.Lock()
	defer mu.Unlock()
	c.mu.Lock()
	f := c.handlers[p.key.op]
	c.mu.Unlock()
	if f == nil || !c.callSafely(f, p, d) {
		c.mu.Lock()
		c.decided.remove(p.key)
		c.mu.Unlock()
		for _, m := range p.msgs {
			_ = m.NakWithDelay(unclaimedDelay)
		}
		return
	}
	c.delivered.Add(1)
	for _, m := range p.msgs {
		_ = m.Ack()
	}
}

// callSafely runs f, sending in-progress acks for p's messages while it
// runs. It reports false when f panicked.
func (c *Client) callSafely(f func(attest.Decision), p *pending, d attest.Decision) (ok bool) {
	stop := make(chan struct{})
	defer close(stop)
	go func() {
		t := time.NewTicker(c.cfg.resultAckWait / 2)
		defer t.Stop()
		for {
			select {
			case <-stop:
				return
			case <-t.C:
				for _, m := range p.msgs {
					_ = m.InProgress()
				}
			}
		}
	}()
	defer func() {
		if r := recover(); r != nil {
			c.log.Error("result callback panicked; the result will be redelivered", "op", p.key.op, "request_id", p.key.requestID, "panic", r)
			ok = false
		}
	}()
	f(d)
	return true
}

// keep runs until Close: every half AckWait it sends in-progress acks for
// the messages of undecided requests (so that they are not redelivered
// while held), forgets old decided requests, and decides callback requests
// undecided for longer than the request TTL as TIMEOUT (or, when only
// REPLAYED answers came, acks them without a callback: someone re-sent a
// request handled before).
func (c *Client) keep() {
	defer c.bg.Done()
	t := time.NewTicker(c.cfg.resultAckWait / 2)
	defer t.Stop()
	for {
		select {
		case <-c.done:
			return
		case <-t.C:
		}
		now := time.Now()
		var held []jetstream.Msg
		var expired []*pending
		c.mu.Lock()
		if c.closed {
			c.mu.Unlock()
			return
		}
		for _, p := range c.pending {
			if p.w == nil && now.Sub(p.since) >= c.cfg.ttl {
				expired = append(expired, p)
				continue
			}
			held = append(held, p.held()...)
		}
		for _, p := range expired {
			c.take(p)
		}
		c.decided.prune(now)
		c.inflight.Add(1) // under mu: never concurrent with Close's Wait
		c.mu.Unlock()
		for _, m := range held {
			_ = m.InProgress()
		}
		for _, p := range expired {
			if !p.real { // only REPLAYED answers: a replay of a request handled before
				c.log.Info("acking REPLAYED answers to a request decided before", "op", p.key.op, "request_id", p.key.requestID)
				c.stragglers.Add(uint64(len(p.msgs)))
				for _, m := range p.msgs {
					_ = m.Ack()
				}
				continue
			}
			d := p.coll.Expire()
			c.log.Warn("request undecided after the hold; delivering TIMEOUT", "op", p.key.op, "request_id", p.key.requestID, "err", d.Err)
			c.finish(p, d)
		}
		c.inflight.Done()
	}
}

// decidedSet remembers decided requests for a bounded time and number.
type decidedSet struct {
	at    map[reqKey]time.Time
	order []decidedEntry // oldest first; entries whose time no longer matches at are stale
	keep  time.Duration
	max   int
}

type decidedEntry struct {
	key reqKey
	at  time.Time
}

func newDecidedSet(keep time.Duration, max int) decidedSet {
	return decidedSet{at: map[reqKey]time.Time{}, keep: keep, max: max}
}

func (s *decidedSet) has(k reqKey) bool { _, ok := s.at[k]; return ok }

func (s *decidedSet) add(k reqKey, now time.Time) {
	s.at[k] = now
	s.order = append(s.order, decidedEntry{k, now})
	s.prune(now)
}

func (s *decidedSet) remove(k reqKey) { delete(s.at, k) }

func (s *decidedSet) prune(now time.Time) {
	for len(s.order) > 0 {
		e := s.order[0]
		live := s.at[e.key] == e.at
		if live && len(s.at) <= s.max && now.Sub(e.at) < s.keep {
			return
		}
		if live {
			delete(s.at, e.key)
		}
		s.order = s.order[1:]
	}
}
