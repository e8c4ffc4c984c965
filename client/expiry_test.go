package client

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hwsigner/signer/attest"
	"github.com/hwsigner/signer/protocol"
	"github.com/hwsigner/signer/routing"
)

// The request TTL and grace of these tests: a request is decided TIMEOUT
// once tTTL+tGrace after it is sent, when nothing is attested by then.
const (
	tTTL   = 1500 * time.Millisecond
	tGrace = 500 * time.Millisecond
)

func (ce *clusterEnv) expiryClient(t *testing.T, opts ...Option) *Client {
	t.Helper()
	return ce.client(t, append([]Option{WithRequestTTL(tTTL), WithExpiryGrace(tGrace), WithResultAckWait(time.Second)}, opts...)...)
}

// decisionLog records callback decisions and when they came.
type decisionLog struct {
	mu sync.Mutex
	ds []timedDecision
}

type timedDecision struct {
	d  attest.Decision
	at time.Time
}

func (l *decisionLog) add(d attest.Decision) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.ds = append(l.ds, timedDecision{d, time.Now()})
}

func (l *decisionLog) snapshot() []timedDecision {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.ds)
}

// opRequest is the request of op with id that the tests send (wallet w1).
func opRequest(op, id string) protocol.Request {
	switch op {
	case protocol.OpKeygen:
		return KeygenParams{WalletID: "w1", RequestID: id}.request()
	case protocol.OpSign:
		return SignParams{WalletID: "w1", KeyType: protocol.KeyTypeEd25519, TxID: "t-" + id, Tx: []byte("m " + id), RequestID: id}.request()
	}
	return ReshareParams{WalletID: "w1", KeyType: protocol.KeyTypeEd25519, SessionID: "s-" + id, NodeIDs: all3, NewThreshold: 1,
		RequestID: id}.request()
}

// sendOp sends op's request with id for the callback.
func sendOp(ctx context.Context, c *Client, op, id string) error {
	var err error
	switch op {
	case protocol.OpKeygen:
		_, err = c.Keygen(ctx, KeygenParams{WalletID: "w1", RequestID: id})
	case protocol.OpSign:
		_, err = c.Sign(ctx, SignParams{WalletID: "w1", KeyType: protocol.KeyTypeEd25519, TxID: "t-" + id, Tx: []byte("m " + id), RequestID: id})
	default:
		_, err = c.Reshare(ctx, ReshareParams{WalletID: "w1", KeyType: protocol.KeyTypeEd25519, SessionID: "s-" + id, NodeIDs: all3,
			NewThreshold: 1, RequestID: id})
	}
	return err
}

// waitOp runs op's Wait helper for the request with id.
func waitOp(ctx context.Context, c *Client, op, id string) (*protocol.Result, error) {
	switch op {
	case protocol.OpKeygen:
		return c.KeygenAndWait(ctx, KeygenParams{WalletID: "w1", RequestID: id})
	case protocol.OpSign:
		return c.SignAndWait(ctx, SignParams{WalletID: "w1", KeyType: protocol.KeyTypeEd25519, TxID: "t-" + id, Tx: []byte("m " + id), RequestID: id})
	}
	return c.ReshareAndWait(ctx, ReshareParams{WalletID: "w1", KeyType: protocol.KeyTypeEd25519, SessionID: "s-" + id, NodeIDs: all3,
		NewThreshold: 1, RequestID: id})
}

func onDecision(c *Client, op string, f func(attest.Decision)) error {
	switch op {
	case protocol.OpKeygen:
		return c.OnWalletCreationDecision(f)
	case protocol.OpSign:
		return c.OnSignDecision(f)
	}
	return c.OnReshareDecision(f)
}

// publishLate publishes, as each of nodes, the honest success a fake node
// would have reported for op's request id: results that, but for the
// decision already made, would attest a success.
func (ce *clusterEnv) publishLate(t *testing.T, c *Client, op, id string, nodes ...string) {
	t.Helper()
	req := opRequest(op, id)
	env := req.Env()
	env.ClientID, env.KeyID = c.ClientID(), c.KeyID()
	for _, n := range nodes {
		res := protocol.NewResult(req)
		(&fakeNode{}).execute(req, res)
		ce.publishResult(t, ce.ids[n], n, res, "")
	}
}

// tracked reports how many requests c tracks: sent and undecided, and
// being collected.
func tracked(c *Client) (submitted, pending int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.submitted), len(c.pending)
}

// checkTimeoutResult checks a TIMEOUT decision the client made for its own
// request id of op: the request's ids (also when no node answered), no
// node_id, exactly the nodes want named, as evidence their signed results.
func checkTimeoutResult(c *Client, op, id string, d attest.Decision, want []string) error {
	var ae *attest.Error
	if !errors.As(d.Err, &ae) || ae.Code != protocol.CodeTimeout {
		return fmt.Errorf("decision %v, want TIMEOUT", d.Err)
	}
	r, w := d.Result, protocol.NewResult(opRequest(op, id))
	if r == nil || r.Succeeded() || !r.IsTimeout || r.ErrorCode != protocol.CodeTimeout || r.NodeID != "" || r.Op != op ||
		r.RequestID != id || r.ClientID != c.ClientID() || r.KeyID != c.KeyID() || r.WalletID != w.WalletID || r.TxID != w.TxID ||
		r.SessionID != w.SessionID || r.KeyType != w.KeyType || r.ErrorReason != ae.Reason {
		return fmt.Errorf("TIMEOUT result %+v", r)
	}
	if got := slices.Sorted(maps.Keys(ae.Nodes)); !slices.Equal(got, want) || len(d.Attestations) != len(want) {
		return fmt.Errorf("TIMEOUT names %v with %d attestations, want %v", ae.Nodes, len(d.Attestations), want)
	}
	if len(want) == 0 && !strings.Contains(ae.Reason, "no node answered") {
		return fmt.Errorf("reason %q", ae.Reason)
	}
	return nil
}

// A request sent for the callback is decided TIMEOUT once, at its
// expires_at plus the grace (never before), also when no node answers at
// all, with what was seen; results after that are acked as stragglers and
// never reach the callback, even when they would attest a success.
func TestCallbackDecidesTimeoutAtExpiry(t *testing.T) {
	tests := []struct {
		name   string
		op     string
		answer []string // fake nodes running: they answer at once
		late   []string // nodes whose success is published after the decision
	}{
		{"sign, no node answers", protocol.OpSign, nil, []string{"node0", "node1"}},
		{"sign, one of three answers", protocol.OpSign, []string{"node0"}, []string{"node1"}},
		{"keygen, no node answers", protocol.OpKeygen, nil, []string{"node0", "node1", "node2"}},
		{"keygen, two of three answer", protocol.OpKeygen, []string{"node0", "node1"}, []string{"node2"}},
		{"reshare, no node answers", protocol.OpReshare, nil, []string{"node0", "node2"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			ce := newClusterEnv(t, 3)
			ce.start(t, nil, tc.answer...)
			c := ce.expiryClient(t)
			log := &decisionLog{}
			if err := onDecision(c, tc.op, log.add); err != nil {
				t.Fatal(err)
			}
			id := "exp-" + tc.op
			sent := time.Now() // expires_at >= sent + tTTL - 1ms (milliseconds)
			if err := sendOp(ce.ctx, c, tc.op, id); err != nil {
				t.Fatal(err)
			}
			waitFor(t, 20*time.Second, func() bool { return len(log.snapshot()) > 0 })
			got := log.snapshot()[0]
			if early := sent.Add(tTTL + tGrace - time.Millisecond); got.at.Before(early) {
				t.Fatalf("decided %s after it was sent, before its expiry plus the grace (%s)", got.at.Sub(sent), tTTL+tGrace)
			}
			if err := checkTimeoutResult(c, tc.op, id, got.d, tc.answer); err != nil {
				t.Fatal(err)
			}

			ce.publishLate(t, c, tc.op, id, tc.late...)
			waitFor(t, 10*time.Second, func() bool { return c.Stats().Stragglers == uint64(len(tc.late)) })
			ce.streamEmpty(t) // every result acked
			if n := len(log.snapshot()); n != 1 {
				t.Fatalf("%d decisions, want 1: %+v", n, log.snapshot())
			}
			if s := c.Stats(); s.Delivered != 1 || s.Timeouts != 1 || s.Unclaimed != 0 || s.Dropped != 0 {
				t.Fatalf("stats %+v", s)
			}
			if sub, pend := tracked(c); sub != 0 || pend != 0 {
				t.Fatalf("still tracked: %d sent, %d pending", sub, pend)
			}
		})
	}
}

// A Wait helper's TIMEOUT, at the caller's deadline or at the request's
// expiry plus the grace, decides the request for this client: results
// that come after it (even t+1 identical successes) are acked as
// stragglers and never reach the callback registered for the op.
func TestWaitTimeoutDecidesForTheCallbackToo(t *testing.T) {
	tests := []struct {
		name     string
		op       string
		deadline time.Duration // of the caller's context; 0: none
		answer   []string
		late     []string
	}{
		{"sign, the caller's deadline", protocol.OpSign, 700 * time.Millisecond, nil, []string{"node0", "node1"}},
		{"sign, the request's expiry, one node answered", protocol.OpSign, 0, []string{"node2"}, []string{"node0", "node1"}},
		{"keygen, the caller's deadline", protocol.OpKeygen, 700 * time.Millisecond, []string{"node0"}, []string{"node1", "node2"}},
		{"reshare, the request's expiry", protocol.OpReshare, 0, nil, []string{"node1", "node2"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			ce := newClusterEnv(t, 3)
			ce.start(t, nil, tc.answer...)
			var c *Client
			if tc.deadline > 0 {
				c = ce.client(t, WithResultAckWait(time.Second)) // the request stays valid for the default 5 minutes
			} else {
				c = ce.expiryClient(t)
			}
			log := &decisionLog{}
			if err := onDecision(c, tc.op, log.add); err != nil {
				t.Fatal(err)
			}
			ctx := ce.ctx
			if tc.deadline > 0 {
				var cancel context.CancelFunc
				ctx, cancel = context.WithTimeout(ctx, tc.deadline)
				defer cancel()
			}
			id := "wait-" + tc.op
			sent := time.Now()
			res, err := waitOp(ctx, c, tc.op, id)
			var re *ResultError
			if !errors.As(err, &re) || re.Code != protocol.CodeTimeout || !re.IsTimeout || re.RequestID != id {
				t.Fatalf("got %+v, %v; want TIMEOUT", res, err)
			}
			if wrapped := errors.Is(err, context.DeadlineExceeded); wrapped != (tc.deadline > 0) {
				t.Fatalf("%v: wraps the context's error: %v", err, wrapped)
			}
			switch {
			case tc.deadline > 0 && (!re.ExpiresAt.After(time.Now()) || !strings.Contains(re.Reason, "a node may still take it")):
				t.Fatalf("a TIMEOUT before the expiry at %s: %q", re.ExpiresAt, re.Reason)
			case tc.deadline == 0 && (time.Since(sent) < tTTL+tGrace-time.Millisecond || !strings.Contains(re.Reason, "expired at")):
				t.Fatalf("TIMEOUT %s after it was sent, want its expiry plus the grace (%s): %q", time.Since(sent), tTTL+tGrace, re.Reason)
			}
			var ae *attest.Error
			if !errors.As(err, &ae) || len(ae.Nodes) != len(tc.answer) {
				t.Fatalf("evidence %v, want %v", re.Nodes, tc.answer)
			}

			ce.publishLate(t, c, tc.op, id, tc.late...)
			waitFor(t, 10*time.Second, func() bool { return c.Stats().Stragglers == uint64(len(tc.late)) })
			ce.streamEmpty(t)
			if ds := log.snapshot(); len(ds) != 0 {
				t.Fatalf("the callback got %d decisions for a request its Wait helper decided: %+v", len(ds), ds[0].d.Result)
			}
			if s := c.Stats(); s.Delivered != 1 || s.Timeouts != 1 || s.Unclaimed != 0 {
				t.Fatalf("stats %+v", s)
			}
			if sub, pend := tracked(c); sub != 0 || pend != 0 || pendingWaiters(c) != 0 {
				t.Fatalf("still tracked: %d sent, %d pending, %d waiters", sub, pend, pendingWaiters(c))
			}
		})
	}
}

// At most maxPending requests are sent and undecided at once: beyond it
// sending fails with ErrTooManyPending and publishes nothing. Requests
// without a callback to decide them are forgotten at their deadline, which
// makes room again.
func TestPendingRequestsAreBounded(t *testing.T) {
	t.Parallel()
	ce := newClusterEnv(t, 3)
	c := ce.expiryClient(t)
	c.cfg.maxPending = 2 // before the keeper starts
	for i := range 2 {
		if err := sendOp(ce.ctx, c, protocol.OpSign, fmt.Sprint("cap-", i)); err != nil {
			t.Fatal(err)
		}
	}
	if err := sendOp(ce.ctx, c, protocol.OpSign, "cap-2"); !errors.Is(err, ErrTooManyPending) {
		t.Fatalf("third Sign: %v", err)
	}
	if _, err := waitOp(ce.ctx, c, protocol.OpKeygen, "cap-3"); !errors.Is(err, ErrTooManyPending) {
		t.Fatalf("KeygenAndWait beyond the cap: %v", err)
	}
	st, err := ce.js.Stream(ce.ctx, routing.RequestStream)
	if err != nil {
		t.Fatal(err)
	}
	if info, err := st.Info(ce.ctx); err != nil || info.State.LastSeq != 2 {
		t.Fatalf("requests published: %+v %v, want 2", info.State, err)
	}
	waitFor(t, 20*time.Second, func() bool { sub, _ := tracked(c); return sub == 0 })
	if err := sendOp(ce.ctx, c, protocol.OpSign, "cap-4"); err != nil {
		t.Fatalf("after the deadlines: %v", err)
	}
	if s := c.Stats(); s.Delivered != 0 || s.Timeouts != 0 {
		t.Fatalf("decided without a callback: %+v", s)
	}
}

// A callback that panics on a TIMEOUT no node answered gets it again: the
// decision is not lost, and is counted once it is taken.
func TestPanickingCallbackGetsTheTimeoutAgain(t *testing.T) {
	t.Parallel()
	ce := newClusterEnv(t, 3)
	c := ce.expiryClient(t)
	c.cfg.redecideAfter = 100 * time.Millisecond // before the keeper starts
	var mu sync.Mutex
	var calls []attest.Decision
	if err := c.OnSignDecision(func(d attest.Decision) {
		mu.Lock()
		calls = append(calls, d)
		n := len(calls)
		mu.Unlock()
		if n == 1 {
			panic("boom")
		}
	}); err != nil {
		t.Fatal(err)
	}
	if err := sendOp(ce.ctx, c, protocol.OpSign, "panic-1"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 20*time.Second, func() bool { mu.Lock(); defer mu.Unlock(); return len(calls) == 2 })
	waitFor(t, 5*time.Second, func() bool { return c.Stats().Timeouts == 1 })
	mu.Lock()
	got := slices.Clone(calls)
	mu.Unlock()
	for i, d := range got {
		if err := checkTimeoutResult(c, protocol.OpSign, "panic-1", d, nil); err != nil {
			t.Fatalf("call %d: %v", i+1, err)
		}
	}
	c.mu.Lock()
	_, decided := c.decided.get(reqKey{op: protocol.OpSign, requestID: "panic-1", keyID: c.KeyID()})
	c.mu.Unlock()
	if sub, pend := tracked(c); sub != 0 || pend != 0 || !decided {
		t.Fatalf("after the second call: %d sent, %d pending, decided %v", sub, pend, decided)
	}
	if s := c.Stats(); s.Delivered != 1 {
		t.Fatalf("stats %+v", s)
	}
}
