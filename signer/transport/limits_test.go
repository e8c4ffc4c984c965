package transport

import (
	"context"
	"crypto/ecdsa"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
)

// limitedSession is node0 of the fuzz harness's session with small limits.
func limitedSession(t *testing.T, lim Limits) (*Session, *dropCounter) {
	t.Helper()
	peers := map[string]*ecdsa.PublicKey{}
	for _, n := range []string{"node0", "node1", "node2", "node3"} {
		peers[n] = &fuzzIdentity(n).PublicKey
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel() // no replies: there is no NATS connection
	dc := &dropCounter{n: map[string]int{}}
	s, err := newSession(ctx, nil, Config{
		SessionID: fuzzSession, Self: Identity{NodeID: "node0", Signer: fuzzIdentity("node0")},
		Participants: fuzzParticipants, Peers: peers, Counters: dc, Limits: lim,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	if err != nil {
		t.Fatal(err)
	}
	return s, dc
}

// node1Msg is an authentic message from node1 to node0 with a payload of
// size bytes.
func node1Msg(t *testing.T, seq uint64, bc bool, size int) []byte {
	return signWire(t, &wireMsg{Session: fuzzSession, From: "node1", To: "node0", Kind: "msg", Round: "r", Seq: seq, BC: bc,
		Payload: make([]byte, size)}, fuzzIdentity("node1"))
}

// TestSessionBuffersBounded (docs/hostile-input.md) fills each of a
// session's buffers past its limit, with messages that pass every other
// check, and checks that the excess is dropped and counted and that the
// buffer stays within its limits in messages and in bytes.
func TestSessionBuffersBounded(t *testing.T) {
	t.Run("oversized message dropped unread", func(t *testing.T) {
		s, dc := limitedSession(t, Limits{MaxMessageBytes: 1024})
		s.receive(&nats.Msg{Data: make([]byte, 1025)}) // not even JSON: never decoded
		s.onMsg(&nats.Msg{Data: node1Msg(t, 1, true, 2048)})
		if dc.n[DropTooLarge] != 2 || len(s.raw) != 0 || len(drain(s)) != 0 {
			t.Fatalf("drops %v, queued %d", dc.n, len(s.raw))
		}
	})
	t.Run("queue of undecoded messages", func(t *testing.T) {
		s, dc := limitedSession(t, Limits{QueueMsgs: 5, QueueBytes: 10_000})
		for range 8 {
			s.receive(&nats.Msg{Data: make([]byte, 100)})
		}
		if len(s.raw) != 5 || dc.n[DropOverflow] != 3 {
			t.Fatalf("queued %d, drops %v; want 5 queued, 3 dropped", len(s.raw), dc.n)
		}
		s, dc = limitedSession(t, Limits{QueueMsgs: 100, QueueBytes: 1000})
		for range 8 {
			s.receive(&nats.Msg{Data: make([]byte, 300)})
		}
		if s.rawBytes > 1000 || len(s.raw) != 3 || dc.n[DropOverflow] != 5 {
			t.Fatalf("queued %d (%d bytes), drops %v; want 3 queued", len(s.raw), s.rawBytes, dc.n)
		}
	})
	t.Run("ceremony inbox", func(t *testing.T) {
		s, dc := limitedSession(t, Limits{InboxMsgs: 4, InboxBytes: 1 << 20})
		for i := range 6 {
			s.onMsg(&nats.Msg{Data: node1Msg(t, uint64(i+1), true, 10)})
		}
		if len(s.inq) != 4 || dc.n[DropOverflow] != 2 {
			t.Fatalf("inbox %d, drops %v; want 4 and 2 dropped", len(s.inq), dc.n)
		}
		s, dc = limitedSession(t, Limits{InboxMsgs: 100, InboxBytes: 2000})
		for i := range 6 {
			s.onMsg(&nats.Msg{Data: node1Msg(t, uint64(i+1), true, 1000)})
		}
		if s.inBytes > 2000 || len(s.inq) != 2 || dc.n[DropOverflow] != 4 {
			t.Fatalf("inbox %d (%d bytes), drops %v; want 2", len(s.inq), s.inBytes, dc.n)
		}
		// A full inbox refuses before decoding.
		s.receive(&nats.Msg{Data: []byte("not json")})
		if dc.n[DropMalformed] != 0 || dc.n[DropOverflow] != 5 {
			t.Fatalf("drops %v: a full inbox must drop before decoding", dc.n)
		}
	})
	t.Run("P2P messages waiting for a hello", func(t *testing.T) {
		s, dc := limitedSession(t, Limits{EarlyMsgs: 3, EarlyBytes: 1 << 20})
		for i := range 5 {
			s.onMsg(&nats.Msg{Data: node1Msg(t, uint64(i+1), false, 40)})
		}
		if len(s.pending) != 3 || dc.n[DropOverflow] != 2 {
			t.Fatalf("waiting %d, drops %v; want 3 and 2 dropped", len(s.pending), dc.n)
		}
		s, dc = limitedSession(t, Limits{EarlyMsgs: 100, EarlyBytes: 1000})
		for i := range 5 {
			s.onMsg(&nats.Msg{Data: node1Msg(t, uint64(i+1), false, 400)})
		}
		if s.pendingBytes > 1000 || len(s.pending) != 2 || dc.n[DropOverflow] != 3 {
			t.Fatalf("waiting %d (%d bytes), drops %v; want 2", len(s.pending), s.pendingBytes, dc.n)
		}
		// The hello releases them (they do not open: the harness's
		// ciphertexts are zeros) and their bytes.
		s.onMsg(&nats.Msg{Data: node1Hello(t, 1<<40)})
		if len(s.pending) != 0 || s.pendingBytes != 0 || dc.n[DropDecrypt] != 2 {
			t.Fatalf("after the hello: waiting %d (%d bytes), drops %v", len(s.pending), s.pendingBytes, dc.n)
		}
	})
	t.Run("one peer's allowance", func(t *testing.T) {
		s, dc := limitedSession(t, Limits{PerPeerMsgs: 3})
		for i := range 5 {
			s.onMsg(&nats.Msg{Data: node1Msg(t, uint64(i+1), true, 1)})
		}
		if len(drain(s)) != 3 || dc.n[DropOverflow] != 2 || len(s.seenSeq["node1"]) != 3 {
			t.Fatalf("drops %v, seen %d; want 3 accepted", dc.n, len(s.seenSeq["node1"]))
		}
	})
}

// TestSessionLimitsOnNATS: a session's subscription has finite pending
// limits, and the messages nats.go drops for them are counted.
func TestSessionLimitsOnNATS(t *testing.T) {
	c := newTestCluster(t, 2)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	s := c.open(t, ctx, "node0", "sess-limits", c.ids)
	msgs, bytes, err := s.sub.PendingLimits()
	lim := DefaultLimits()
	if err != nil || msgs != lim.PendingMsgs || bytes != lim.PendingBytes {
		t.Fatalf("pending limits %d msgs, %d bytes (%v); want %d, %d", msgs, bytes, err, lim.PendingMsgs, lim.PendingBytes)
	}
	// A subscription whose callback cannot keep up (a 1-message pending
	// limit): the drops nats.go makes are counted as overflow.
	tight := c.open(t, ctx, "node1", "sess-tight", c.ids)
	if err := tight.sub.SetPendingLimits(1, 1<<20); err != nil {
		t.Fatal(err)
	}
	pub := c.connect(t)
	dropped := func() bool {
		tight.mu.Lock() // stalls its callback (receive checks the inbox under it)
		defer tight.mu.Unlock()
		for range 50 {
			if err := pub.Publish("mpc.round.sess-tight.node1", []byte("junk")); err != nil {
				return false
			}
		}
		if pub.Flush() != nil {
			return false
		}
		for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
			if n, _ := tight.sub.Dropped(); n > 0 {
				return true
			}
		}
		return false
	}
	if !dropped() {
		t.Fatal("nats.go dropped nothing")
	}
	// Once unblocked, the callback takes what is still pending; wait until
	// each of the 50 messages is delivered or dropped before comparing.
	var n int
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(5 * time.Millisecond) {
		d, _ := tight.sub.Delivered()
		n, _ = tight.sub.Dropped()
		if d+int64(n) >= 50 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after 10 s, %d delivered and %d dropped of 50", d, n)
		}
	}
	tight.Close()
	c.drops["node1"].mu.Lock()
	got := c.drops["node1"].n[DropOverflow]
	c.drops["node1"].mu.Unlock()
	if got != n {
		t.Fatalf("nats.go dropped %d, the session counted %d overflow drops", n, got)
	}
}
