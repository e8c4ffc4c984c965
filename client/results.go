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

// The keeper looks for requests past their deadline every decideEvery. A
// request whose TIMEOUT its callback did not take (it panicked) is decided
// again redecideAfter later at the earliest, so that its results, returned
// to the stream, come back first.
const (
	decideEvery   = 250 * time.Millisecond
	redecideAfter = 5 * time.Second
)

// OnWalletCreationResult registers the callback for keygen results without a
// waiter (replacing any earlier one) and starts the keygen result consumer.
// It returns an error when the consumer cannot be created (within the
// JetStream API timeout).
//
// The callback gets one attested result per request: the keygen success
// every node reported identically, the first member's error, a
// RESULT_MISMATCH error result when members disagree, or a TIMEOUT error
// result when nothing is attested in time. For a request this Client sent,
// in time means by its expires_at plus the grace (WithExpiryGrace), also
// when no node answers at all; for results of a request it did not send
// (another process's, or sent before a restart), within the request TTL
// (WithRequestTTL) after the first result. The node results stay un-acked
// until the decision and are acked after the callback returns, so a crash
// loses nothing (they are redelivered and decided again). Results that
// come after the decision are acked and counted as stragglers, never
// delivered. Error results made by the client (RESULT_MISMATCH, TIMEOUT)
// have no node_id. Use OnWalletCreationDecision to see the attesting node
// results too.
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
	c.startKeeper()
	return nil
}

// startKeeper starts the keeper goroutine, once (under mu, not closed).
func (c *Client) startKeeper() {
	if !c.keeping {
		c.keeping = true
		c.bg.Add(1)
		go c.keep()
	}
}

// newPending returns the pending of key (under mu). A request this client
// sent is decided by its deadline (expires_at plus the grace); for one it
// did not send the hold runs the request TTL from now, its first result.
func (c *Client) newPending(key reqKey, now time.Time) *pending {
	p := &pending{key: key, coll: attest.NewCollector(key.op, c.rules), msgs: map[uint64]jetstream.Msg{}, deadline: now.Add(c.cfg.ttl)}
	if s := c.submitted[key]; s != nil {
		p.sub, p.deadline = s, s.deadline
	}
	return p
}

// track records a request about to be published for the callback (under
// mu): it is decided by its deadline even when no node answers.
func (c *Client) track(req protocol.Request) (reqKey, *submitted, error) {
	key, s := c.sentRequest(req)
	if c.closed {
		return key, nil, ErrClosed
	}
	if err := c.roomForOne(); err != nil {
		return key, nil, err
	}
	c.decided.remove(key) // a new request under a reused id is decided anew
	c.submitted[key] = s
	if p := c.pending[key]; p != nil && p.w == nil { // results of a reused id came first: they count
		p.sub, p.deadline = s, s.deadline
	}
	c.startKeeper()
	return key, s, nil
}

// untrack forgets a request whose publication failed (the caller got the
// error and owns the retry), unless its decision is under way.
func (c *Client) untrack(key reqKey, s *submitted) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.submitted[key] == s && c.pending[key] == nil {
		delete(c.submitted, key)
	}
}

// roomForOne refuses one more undecided request beyond the cap (under mu).
func (c *Client) roomForOne() error {
	if n := len(c.submitted) + len(c.waiters); n >= c.cfg.maxPending {
		return fmt.Errorf("%w: %d undecided requests", ErrTooManyPending, n)
	}
	return nil
}

// sentRequest returns the key and the tracking record of a prepared
// request of this client.
func (c *Client) sentRequest(req protocol.Request) (reqKey, *submitted) {
	env := req.Env()
	key := reqKey{op: req.Operation(), requestID: env.RequestID, keyID: c.keyID}
	r := protocol.NewResult(req)
	exp := env.Expires()
	return key, &submitted{expires: exp, deadline: exp.Add(c.cfg.grace), walletID: r.WalletID, txID: r.TxID,
		keyType: r.KeyType, sessionID: r.SessionID}
}

// held returns the pending's messages.
func (p *pending) held() []jetstream.Msg {
	out := make([]jetstream.Msg, 0, len(p.msgs))
	for _, m := range p.msgs {
		out = append(out, m)
	}
	return out
}

// addWaiter registers a Wait helper for a prepared request of this client
// and the pending that collects its results, decided by the request's
// deadline (expires_at plus the grace) at the latest.
func (c *Client) addWaiter(req protocol.Request) (*waiter, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return nil, ErrClosed
	}
	key, s := c.sentRequest(req)
	if _, dup := c.waiters[key.requestID]; dup {
		return nil, fmt.Errorf("%w: %s", ErrPendingRequestID, key.requestID)
	}
	if err := c.roomForOne(); err != nil {
		return nil, err
	}
	p := c.pending[key]
	if p == nil { // else results came before the waiter (a reused request_id): they count
		p = c.newPending(key, time.Now())
		c.pending[key] = p
	}
	p.sub, p.deadline = s, s.deadline
	delete(c.submitted, key)
	c.decided.remove(key) // a new request under a reused id is decided anew
	w := &waiter{op: key.op, ch: make(chan attest.Decision, 1), p: p}
	p.w = w
	c.waiters[key.requestID] = w
	c.startKeeper()
	return w, nil
}

// releaseWaiter removes the waiter of a request whose publication failed:
// the caller got the error and owns the retry, so its pending (results of a
// reused request_id) goes back to the stream, undecided.
func (c *Client) releaseWaiter(w *waiter) {
	c.mu.Lock()
	if c.waiters[w.p.key.requestID] == w {
		delete(c.waiters, w.p.key.requestID)
	}
	var held []jetstream.Msg
	if c.pending[w.p.key] == w.p {
		delete(c.pending, w.p.key)
		held = w.p.held()
	}
	c.mu.Unlock()
	for _, m := range held {
		_ = m.NakWithDelay(unclaimedDelay)
	}
}

// giveUp ends a waiter whose context ended. When its request is still
// undecided it decides it TIMEOUT for this client (owned=true; d says what
// was seen): the request is remembered as decided, so its later results
// are acked as stragglers and reach no callback, and the results held are
// acked. owned=false: a handler or the keeper took the pending and sends
// the decision on w.ch, or Close released it.
func (c *Client) giveUp(w *waiter) (d attest.Decision, owned bool) {
	now := time.Now()
	c.mu.Lock()
	if c.waiters[w.p.key.requestID] == w {
		delete(c.waiters, w.p.key.requestID)
	}
	if c.pending[w.p.key] == w.p {
		c.take(w.p, true)
		owned = true
		d = c.expire(w.p, now)
	}
	c.mu.Unlock()
	if owned {
		for _, m := range w.p.msgs {
			_ = m.Ack()
		}
		c.delivered.Add(1)
		c.timeouts.Add(1)
	}
	return d, owned
}

// take removes a decided pending (under mu) and remembers its key;
// timeout: the client decided it TIMEOUT.
func (c *Client) take(p *pending, timeout bool) {
	delete(c.pending, p.key)
	if p.w != nil && c.waiters[p.key.requestID] == p.w {
		delete(c.waiters, p.key.requestID)
	}
	delete(c.submitted, p.key)
	c.decided.add(p.key, time.Now(), timeout)
}

// expire is the TIMEOUT decision at now of an undecided pending just taken:
// attest's Expire (what was seen, possibly nothing), for a request this
// client sent completed from the request (its ids, even when no node
// answered) and saying when it expires.
func (c *Client) expire(p *pending, now time.Time) attest.Decision {
	d := p.coll.Expire()
	ae, ok := d.Err.(*attest.Error)
	if d.Result == nil || !ok {
		return d
	}
	res := *d.Result
	if res.RequestID == "" {
		res.RequestID = p.key.requestID
	}
	s := p.sub
	if s == nil {
		d.Result = &res
		return d
	}
	if res.ClientID == "" && res.KeyID == "" { // no node answered
		res.ClientID, res.KeyID = c.clientID, p.key.keyID
	}
	if res.WalletID == "" && res.TxID == "" && res.SessionID == "" && res.KeyType == "" {
		res.WalletID, res.TxID, res.SessionID, res.KeyType = s.walletID, s.txID, s.sessionID, s.keyType
	}
	exp := s.expires.UTC().Format(time.RFC3339Nano)
	switch {
	case now.Before(s.expires):
		ae = &attest.Error{Code: ae.Code, Nodes: ae.Nodes,
			Reason: ae.Reason + " (the wait ended before the request expires at " + exp + ": a node may still take it)"}
	default:
		ae = &attest.Error{Code: ae.Code, Nodes: ae.Nodes,
			Reason: ae.Reason + fmt.Sprintf(" (the request expired at %s; results were awaited %s longer)", exp, c.cfg.grace)}
	}
	res.SetError(ae.Code, ae.Reason)
	d.Result, d.Err = &res, ae
	return d
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
	if dec, ok := c.decided.get(key); ok {
		c.mu.Unlock()
		c.stragglers.Add(1)
		if dec.timeout && res.Succeeded() {
			// A ceremony that finished after the TIMEOUT: one node's word,
			// not an attested outcome, but worth an operator's look.
			c.log.Warn("result of a request already decided", "op", op, "request_id", res.RequestID, "node", res.NodeID,
				"note", "a success after this client decided TIMEOUT; acked, not delivered")
		} else {
			c.log.Debug("result of a request already decided", "op", op, "request_id", res.RequestID, "node", res.NodeID)
		}
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
		p = c.newPending(key, time.Now())
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
	c.take(p, false)
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
	if p.expired {
		c.timeouts.Add(1)
	}
	c.delivered.Add(1)
	p.w.ch <- d
}

// runCallback runs op's callback (one at a time per op) with the decision,
// keeping the request's messages alive with in-progress acks while it
// runs, and acks them after. When the callback panics, or there is none
// any more, the messages go back to the stream and the request is decided
// again when they return (a request this client sent: by its deadline, at
// the earliest redecideAfter from now, also when no result came).
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
		if p.sub != nil && c.submitted[p.key] == nil && !c.closed {
			s := *p.sub
			s.deadline = later(s.deadline, time.Now().Add(max(c.cfg.grace, c.cfg.redecideAfter)))
			c.submitted[p.key] = &s
		}
		c.mu.Unlock()
		for _, m := range p.msgs {
			_ = m.NakWithDelay(unclaimedDelay)
		}
		return
	}
	if p.expired {
		c.timeouts.Add(1)
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

// keep runs until Close: every decideEvery it decides the requests past
// their deadline (decideExpired), every half AckWait it sends in-progress
// acks for the messages of undecided requests, so that they are not
// redelivered while held.
func (c *Client) keep() {
	defer c.bg.Done()
	alive := time.NewTicker(c.cfg.resultAckWait / 2)
	defer alive.Stop()
	decide := time.NewTicker(decideEvery)
	defer decide.Stop()
	for {
		select {
		case <-c.done:
			return
		case <-alive.C:
			c.keepAlive()
		case now := <-decide.C:
			c.decideExpired(now)
		}
	}
}

// keepAlive sends in-progress acks for the messages held.
func (c *Client) keepAlive() {
	var held []jetstream.Msg
	c.mu.Lock()
	for _, p := range c.pending {
		held = append(held, p.held()...)
	}
	c.mu.Unlock()
	for _, m := range held {
		_ = m.InProgress()
	}
}

// decideExpired decides TIMEOUT, once, every request undecided at its
// deadline: a request this client sent (a waiter's, or one for the
// callback, even when no node answered) at its expires_at plus the grace;
// the results of one it did not send the request TTL after the first. Such
// a request with only REPLAYED answers is acked without a callback
// (someone re-sent a request handled before). A request this client sent
// for which no callback is registered at its deadline is forgotten: no one
// here would take its decision (its results, if any, stay in the stream for
// the callback that takes them). Old decided requests are forgotten too.
func (c *Client) decideExpired(now time.Time) {
	var expired []*pending
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return
	}
	for _, p := range c.pending {
		if !now.Before(p.deadline) {
			expired = append(expired, p)
		}
	}
	for _, p := range expired {
		c.take(p, true)
	}
	for key, s := range c.submitted {
		switch {
		case now.Before(s.deadline):
			continue
		case c.pending[key] != nil: // its results are held: that pending's deadline decides
			continue
		case c.handlers[key.op] == nil:
			delete(c.submitted, key)
			c.log.Debug("forgetting an undecided request: no callback to decide it for", "op", key.op, "request_id", key.requestID)
			continue
		}
		p := c.newPending(key, now) // no result came
		c.take(p, true)
		expired = append(expired, p)
	}
	c.decided.prune(now)
	c.inflight.Add(1) // under mu: never concurrent with Close's Wait
	c.mu.Unlock()
	defer c.inflight.Done()
	for _, p := range expired {
		if !p.real && p.w == nil && p.sub == nil && len(p.msgs) > 0 { // only REPLAYED answers: a replay of a request handled before
			c.log.Info("acking REPLAYED answers to a request decided before", "op", p.key.op, "request_id", p.key.requestID)
			c.stragglers.Add(uint64(len(p.msgs)))
			for _, m := range p.msgs {
				_ = m.Ack()
			}
			continue
		}
		d := c.expire(p, now)
		p.expired = true
		attrs := []any{"op", p.key.op, "request_id", p.key.requestID, "err", d.Err}
		if p.sub != nil {
			attrs = append(attrs, "expires_at", p.sub.expires)
		}
		c.log.Warn("request undecided after the hold; delivering TIMEOUT", attrs...)
		c.finish(p, d)
	}
}

func later(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

// decidedSet remembers decided requests for a bounded time and number.
type decidedSet struct {
	at    map[reqKey]decision
	order []decidedEntry // oldest first; entries whose time no longer matches at are stale
	keep  time.Duration
	max   int
}

// decision is when a request was decided and whether the client decided
// it TIMEOUT.
type decision struct {
	at      time.Time
	timeout bool
}

type decidedEntry struct {
	key reqKey
	at  time.Time
}

func newDecidedSet(keep time.Duration, max int) decidedSet {
	return decidedSet{at: map[reqKey]decision{}, keep: keep, max: max}
}

func (s *decidedSet) get(k reqKey) (decision, bool) { d, ok := s.at[k]; return d, ok }

func (s *decidedSet) add(k reqKey, now time.Time, timeout bool) {
	s.at[k] = decision{at: now, timeout: timeout}
	s.order = append(s.order, decidedEntry{k, now})
	s.prune(now)
}

func (s *decidedSet) remove(k reqKey) { delete(s.at, k) }

func (s *decidedSet) prune(now time.Time) {
	for len(s.order) > 0 {
		e := s.order[0]
		d, ok := s.at[e.key]
		live := ok && d.at.Equal(e.at)
		if live && len(s.at) <= s.max && now.Sub(e.at) < s.keep {
			return
		}
		if live {
			delete(s.at, e.key)
		}
		s.order = s.order[1:]
	}
}
