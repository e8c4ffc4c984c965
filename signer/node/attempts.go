package node

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/hwsigner/signer/protocol"
	"github.com/hwsigner/signer/routing"
	"github.com/hwsigner/signer/signer/attempt"
	"github.com/hwsigner/signer/signer/ceremony"
	"github.com/hwsigner/signer/signer/committee"
	"github.com/hwsigner/signer/signer/store"
	"github.com/hwsigner/signer/signer/transport"
)

// Re-running a signing request, as one node does it (package attempt has
// the plan and its rules):
//
//  1. Attempt 0 is the first run: the t+1 signers chosen from the node's
//     readiness view (committee.Signers).
//  2. A signer whose attempt fails for want of a peer (a chosen signer did
//     not answer the handshake, the session stalled, a peer aborted, the
//     signer sets differed) does not publish its error: while the request
//     has time left and t+1 members are not excluded, it publishes a signed
//     plan of the next attempt on MPC_ATTEMPTS (the silent nodes excluded,
//     the signers chosen by committee.Rerun) and hands the request over.
//  3. Every node reads MPC_ATTEMPTS in stream order (watchAttempts) and
//     follows, per attempt, the first plan that verifies and fits the
//     wallet: the plan's signers run that attempt under a new session ID
//     (so a new nonce), whoever planned it; a node running an older attempt
//     stops it. Only a success, or an attempt that cannot be re-run, is
//     published: the client sees one outcome.
//
// A node learns of a request's plans before or after it checked the request
// itself: plans wait in the board until the request is open, and the board
// keeps open requests until they expire.

// Timing of re-runs.
const (
	// planPublishAttempt bounds one publish of a plan.
	planPublishAttempt = 5 * time.Second
	// planGrace is how long a node that cannot name a silent peer (a peer
	// aborted, the signer sets differed) waits for a plan from a node that
	// can, before it plans itself.
	planGrace = 2 * time.Second
	// maxUnopened bounds the requests the board holds plans for without
	// having seen the request (a node behind on its consumer, or plans of
	// requests it never gets); each holds at most attempt.MaxAttempts
	// plans of at most attempt.MaxSize bytes.
	maxUnopened = 1024
	// unopenedTTL is how long plans of an unseen request are kept.
	unopenedTTL = time.Hour
)

// board is the node's view of MPC_ATTEMPTS: the open sign requests and
// their plans.
type board struct {
	mu       sync.Mutex
	reqs     map[string]*openSign
	unopened int
}

func newBoard() *board { return &board{reqs: map[string]*openSign{}} }

func boardKey(clientID, requestID string) string { return clientID + "\x00" + requestID }

// openSign is one sign request on the board.
type openSign struct {
	// Set once the node has checked the request (open).
	opened  bool
	r       *protocol.SigningRequest
	sc      ceremony.Scheme
	meta    store.WalletMeta // of the share at the epoch signAs unseals (read again from the store: the board holds no share)
	deriv   *ceremony.Derivation
	expires time.Time

	plans    map[int]*attempt.Plan // the first fitting plan of each attempt
	early    []*attempt.Plan       // verified plans that came before the request was opened, in stream order
	current  int                   // the newest attempt known: 0, or the newest plan's
	started  int                   // the newest attempt this node started, -1 before any
	cancel   context.CancelFunc    // of the started attempt
	finished bool                  // a result is published, or will be: no later attempt runs here
}

// open puts a checked sign request on the board (or completes the entry
// its early plans made) and returns it; the plans that came first are
// checked against the wallet now, in stream order.
func (b *board) open(r *protocol.SigningRequest, sc ceremony.Scheme, meta store.WalletMeta, deriv *ceremony.Derivation) *openSign {
	b.mu.Lock()
	defer b.mu.Unlock()
	k := boardKey(r.ClientID, r.RequestID)
	o := b.reqs[k]
	if o == nil {
		o = &openSign{plans: map[int]*attempt.Plan{}, started: -1}
		b.reqs[k] = o
	} else if !o.opened {
		b.unopened--
	}
	if o.opened {
		return o
	}
	o.opened, o.r, o.sc, o.meta, o.deriv = true, r, sc, meta, deriv
	o.expires = r.Expires()
	for _, p := range o.early {
		o.take(p)
	}
	o.early = nil
	return o
}

// take records p if it is the first fitting plan of its attempt (o.mu is
// b.mu, held). It reports whether p is now the current attempt.
func (o *openSign) take(p *attempt.Plan) bool {
	if p.Check(o.r.ClientID, o.r.RequestID, o.meta.Committee, o.meta.Threshold) != nil || o.plans[p.Attempt] != nil {
		return false
	}
	o.plans[p.Attempt] = p
	if p.Attempt <= o.current {
		return false
	}
	o.current = p.Attempt
	return true
}

// offer hands a verified plan to the board. When it makes a new current
// attempt of an open request, the attempt this node runs for it (older) is
// stopped, and the plan is returned if this node is one of its signers and
// must start it.
func (b *board) offer(p *attempt.Plan, self string) (o *openSign, start bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	k := boardKey(p.ClientID, p.RequestID)
	o = b.reqs[k]
	if o == nil {
		if b.unopened >= maxUnopened {
			return nil, false
		}
		o = &openSign{plans: map[int]*attempt.Plan{}, started: -1, expires: time.Now().Add(unopenedTTL)}
		b.reqs[k] = o
		b.unopened++
	}
	if !o.opened {
		if len(o.early) < attempt.MaxAttempts {
			o.early = append(o.early, p)
		}
		return o, false
	}
	if !o.take(p) {
		return o, false
	}
	if o.cancel != nil && o.started < p.Attempt {
		o.cancel() // an older attempt of this node: its peers moved on
	}
	return o, !o.finished && slices.Contains(p.Signers, self)
}

// prune drops the requests that expired before cutoff.
func (b *board) prune(cutoff time.Time) int {
	b.mu.Lock()
	defer b.mu.Unlock()
	n := 0
	for k, o := range b.reqs {
		if o.expires.Before(cutoff) {
			if !o.opened {
				b.unopened--
			}
			delete(b.reqs, k)
			n++
		}
	}
	return n
}

// attemptSession is the session ID of a sign request's attempt: attempt 0
// keeps the ID of a first run.
func attemptSession(r *protocol.SigningRequest, k int) string {
	if k == 0 {
		return sessionID("sign", r.ClientID, r.RequestID)
	}
	return sessionID("sign", r.ClientID, r.RequestID, "attempt", strconv.Itoa(k))
}

// firstAttempt is the attempt a node that just checked the request joins:
// the newest planned one if a plan is in, else attempt 0 with the signers
// chosen from the readiness view.
func (n *Node) firstAttempt(ctx context.Context, o *openSign) (k int, signers []string, err error) {
	n.board.mu.Lock()
	k = o.current
	if p := o.plans[k]; p != nil {
		signers = p.Signers
	}
	n.board.mu.Unlock()
	if k > 0 {
		return k, signers, nil
	}
	ready := n.readyNodes(ctx)
	signers, err = committee.Signers(o.r.RequestID, o.meta.Committee, ready, o.meta.Threshold)
	n.log.Debug("signers chosen", "request_id", o.r.RequestID, "signers", signers, "ready", ready)
	return 0, signers, err
}

// runAttempt runs this node's side of attempt k of o with signers. Its
// outcome is a success or a final failure (the caller publishes it), or
// rerun: the attempt failed for want of a peer and a plan of the next one
// is on MPC_ATTEMPTS, or a newer attempt superseded it.
func (n *Node) runAttempt(ctx context.Context, o *openSign, k int, signers []string) outcome {
	b := n.board
	b.mu.Lock()
	if o.finished || o.started >= k || o.current > k {
		b.mu.Unlock()
		return rerun()
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	o.started, o.cancel = k, cancel
	b.mu.Unlock()
	if k > 0 {
		n.m.Rerun()
		n.log.Info("re-running a sign request", "request_id", o.r.RequestID, "client_id", o.r.ClientID, "attempt", k, "signers", signers)
	}

	res := protocol.NewResult(o.r)
	done := n.m.SessionStarted(protocol.OpSign, o.r.KeyType)
	out, err := n.signAs(ctx, o, res, signers, attemptSession(o.r, k))
	done(out.label())

	b.mu.Lock()
	superseded := o.current > k
	if out.kind == outcomeSucceeded {
		o.finished = true
	}
	b.mu.Unlock()
	switch {
	case out.kind == outcomeSucceeded:
		return out
	case superseded:
		n.log.Info("attempt superseded by a re-run", "request_id", o.r.RequestID, "attempt", k, "err", err)
		return rerun()
	}
	if culprits, ok := retryable(err); ok {
		if n.planNext(ctx, o, k, culprits, err) {
			return rerun()
		}
	}
	b.mu.Lock()
	o.finished = true
	b.mu.Unlock()
	return out
}

// retryable reports whether a failed attempt may be re-run on another
// committee, and the nodes it found silent.
func retryable(err error) (culprits []string, ok bool) {
	var nr *transport.NotReadyError
	var st *ceremony.StalledError
	switch {
	case err == nil:
		return nil, false
	case errors.As(err, &nr):
		return nr.Missing, true
	case errors.As(err, &st):
		return st.Waiting, true
	case errors.Is(err, ceremony.ErrEquivocation), errors.Is(err, ceremony.ErrBadShare), errors.Is(err, ceremony.ErrDerivation):
		return nil, false
	case errors.Is(err, transport.ErrPartiesDiffer), errors.Is(err, ceremony.ErrParty), errors.Is(err, transport.ErrNotReady):
		return nil, true
	}
	return nil, false
}

// planNext publishes this node's plan of attempt k+1 after attempt k failed
// with cause, unless a plan of it is already in. It reports whether the
// request was handed to a re-run: false when no re-run is possible (too
// few members left, too little time, the attempts used up), so that the
// caller publishes its failure.
func (n *Node) planNext(ctx context.Context, o *openSign, k int, culprits []string, cause error) bool {
	b := n.board
	next := k + 1
	if next > attempt.MaxAttempts || time.Until(o.expires) < n.cfg.HandshakeTimeout {
		return false
	}
	b.mu.Lock()
	var excluded []string
	if p := o.plans[k]; p != nil {
		excluded = slices.Clone(p.Excluded)
	}
	b.mu.Unlock()
	for _, c := range culprits {
		if c != n.cfg.NodeID && !slices.Contains(excluded, c) {
			excluded = append(excluded, c)
		}
	}
	slices.Sort(excluded)
	signers, err := committee.Rerun(o.r.RequestID, next, o.meta.Committee, excluded, n.readyNodes(ctx), o.meta.Threshold)
	if err != nil {
		n.log.Warn("sign request cannot be re-run", "request_id", o.r.RequestID, "attempt", k, "err", err)
		return false
	}
	planned := func() bool {
		b.mu.Lock()
		defer b.mu.Unlock()
		return o.current > k
	}
	if len(culprits) == 0 {
		// A node that saw who was silent plans better: give it a moment.
		for end := time.Now().Add(planGrace); !planned() && time.Now().Before(end) && ctx.Err() == nil; {
			time.Sleep(50 * time.Millisecond)
		}
	}
	if planned() {
		return true
	}
	raw, err := attempt.Sign(ctx, n.identity, attempt.Plan{
		ClientID: o.r.ClientID, RequestID: o.r.RequestID, Attempt: next, Signers: signers, Excluded: excluded,
		Reason: reasonOf(cause), From: n.cfg.NodeID,
	})
	if err != nil {
		if ctx.Err() == nil {
			n.log.Error("sign a re-run plan", "request_id", o.r.RequestID, "err", err)
		}
		return false
	}
	subj := routing.AttemptSubject(o.r.ClientID, o.r.RequestID)
	msgID := "plan." + strconv.Itoa(next) + "." + n.cfg.NodeID + "." + subj
	for backoff := 100 * time.Millisecond; ; backoff = min(2*backoff, maxPublishBackoff) {
		pctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), planPublishAttempt)
		_, err = n.js.Publish(pctx, subj, raw, jetstream.WithMsgID(msgID))
		cancel()
		if err == nil {
			n.m.Planned()
			n.log.Info("sign request handed to a re-run", "request_id", o.r.RequestID, "client_id", o.r.ClientID,
				"attempt", next, "signers", signers, "excluded", excluded, "reason", reasonOf(cause))
			return true
		}
		if planned() {
			return true
		}
		if time.Until(o.expires) < n.cfg.HandshakeTimeout+backoff || ctx.Err() != nil {
			n.log.Warn("re-run plan could not be published", "request_id", o.r.RequestID, "err", err)
			return false
		}
		time.Sleep(backoff)
	}
}

// reasonOf is the short reason of a plan: the cause's stable code and text,
// bounded.
func reasonOf(err error) string {
	code, reason := errorCode(context.Background(), err)
	s := code + ": " + reason
	if len(s) > 200 {
		s = s[:200]
	}
	return s
}

// watchAttempts reads MPC_ATTEMPTS in stream order until ctx ends: every
// plan that verifies goes to the board; a plan that makes this node a signer
// of a new attempt starts it (under work, the sessions' context).
func (n *Node) watchAttempts(ctx, work context.Context) error {
	cons, err := n.js.OrderedConsumer(ctx, routing.AttemptStream, jetstream.OrderedConsumerConfig{
		FilterSubjects: routing.AttemptStreamSubjects(), DeliverPolicy: jetstream.DeliverAllPolicy,
	})
	if err != nil {
		return fmt.Errorf("attempt plans: %w", err)
	}
	cc, err := cons.Consume(func(m jetstream.Msg) { n.onPlan(work, m.Data()) })
	if err != nil {
		return fmt.Errorf("attempt plans: %w", err)
	}
	go func() {
		<-ctx.Done()
		cc.Stop()
	}()
	return nil
}

// Drop reasons of plans (Stats().Drops).
const (
	dropPlanForged    = "plan_forged"
	dropPlanMalformed = "plan_malformed"
	dropPlanOverflow  = "plan_overflow"
)

// onPlan handles one message of MPC_ATTEMPTS.
func (n *Node) onPlan(work context.Context, raw []byte) {
	p, err := attempt.Decode(raw, n.cfg.Peers)
	if err != nil {
		reason := dropPlanMalformed
		if errors.Is(err, attempt.ErrForged) {
			reason = dropPlanForged
		}
		n.m.Dropped(reason)
		n.log.Warn("re-run plan dropped", "reason", reason, "err", err)
		return
	}
	o, start := n.board.offer(p, n.cfg.NodeID)
	if o == nil {
		n.m.Dropped(dropPlanOverflow)
		return
	}
	if !start {
		return
	}
	n.running.Add(1)
	go func() {
		defer n.running.Done()
		n.sessions.Add(1)
		defer n.sessions.Add(-1)
		out := n.runAttempt(work, o, p.Attempt, p.Signers)
		if out.kind == outcomeRerun || out.kind == outcomeNotParticipant || out.kind == outcomeFailed && n.stopping(work) {
			return // handed on, or cut by the node's stop: its peers go on without it
		}
		n.m.Finished(protocol.OpSign, out.label())
		state := "done"
		if out.kind == outcomeFailed {
			state = "failed"
		}
		if err := n.st.JournalFinish(o.r.ClientID, o.r.RequestID, state, out.res.ErrorCode); err != nil {
			n.log.Error("journal finish failed", "request_id", o.r.RequestID, "err", err)
		}
		n.publish(work, out.res, o.expires)
	}()
}
