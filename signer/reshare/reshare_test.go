package reshare

import (
	"bytes"
	"context"
	"errors"
	"maps"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hwsigner/signer/signer/ceremony"
	"github.com/hwsigner/signer/signer/committee"
)

// quiet is how long a test waits for something that must not arrive.
const quiet = 150 * time.Millisecond

// net builds an in-memory network of ids with a Mux for each of muxed; the
// others are raw ends that tests write payloads with.
type net struct {
	mem  *ceremony.MemNetwork
	muxs map[string]*Mux
}

func newNet(t *testing.T, ids []string, muxed ...string) *net {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	n := &net{mem: ceremony.NewMemNetwork(ids), muxs: map[string]*Mux{}}
	for _, id := range muxed {
		n.muxs[id] = New(ctx, n.mem.Transport(id), id, nil)
	}
	return n
}

// raw sends payload from node from, as a broadcast or to the nodes to.
func (n *net) raw(t *testing.T, from string, broadcast bool, payload string, to ...string) {
	t.Helper()
	err := n.mem.Transport(from).Send(context.Background(), ceremony.Outbound{To: to, Broadcast: broadcast, Round: Round, Wire: []byte(payload)})
	if err != nil {
		t.Fatal(err)
	}
}

func deadline(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

func holdingOf(id string) committee.Holding {
	switch id {
	case "a", "b":
		return committee.Holding{Holds: true, Epoch: 2, Committee: []string{"a", "b"}, Threshold: 1, PubKey: "02ab", ShareKey: id + "1", Owner: "svcA"}
	default:
		return committee.Holding{}
	}
}

func TestExchangeAmongThree(t *testing.T) {
	ids := []string{"a", "b", "c"}
	n := newNet(t, ids, ids...)
	ctx := deadline(t, 5*time.Second)
	want := map[string]committee.Holding{}
	for _, id := range ids {
		want[id] = holdingOf(id)
	}
	var wg sync.WaitGroup
	got := make([]map[string]committee.Holding, len(ids))
	errs := make([]error, len(ids))
	for i, id := range ids {
		wg.Go(func() { got[i], errs[i] = n.muxs[id].Exchange(ctx, holdingOf(id), ids) })
	}
	wg.Wait()
	for i, id := range ids {
		if errs[i] != nil {
			t.Fatalf("%s: %v", id, errs[i])
		}
		if !maps.EqualFunc(got[i], want, equalHolding) {
			t.Fatalf("%s: holdings %+v, want %+v", id, got[i], want)
		}
	}
	// Then every new member seals, and everyone sees all "sealed".
	newCommittee := []string{"b", "c"}
	for _, id := range newCommittee {
		if err := n.muxs[id].AnnounceSealed(ctx, []byte{2, 0xab}); err != nil {
			t.Fatal(err)
		}
	}
	for _, id := range ids {
		wg.Go(func() {
			if err := n.muxs[id].AwaitSealed(ctx, newCommittee); err != nil {
				t.Errorf("%s: %v", id, err)
			}
		})
	}
	wg.Wait()
}

func equalHolding(a, b committee.Holding) bool {
	return a.Holds == b.Holds && a.Epoch == b.Epoch && slices.Equal(a.Committee, b.Committee) &&
		a.Threshold == b.Threshold && a.PubKey == b.PubKey && a.ShareKey == b.ShareKey && a.Owner == b.Owner
}

func TestPeerFailedEndsCollect(t *testing.T) {
	for _, tc := range []struct {
		name string
		wait func(ctx context.Context, m *Mux) error
	}{
		{"exchange", func(ctx context.Context, m *Mux) error {
			_, err := m.Exchange(ctx, holdingOf("a"), []string{"a", "b", "c"})
			return err
		}},
		{"await sealed", func(ctx context.Context, m *Mux) error { return m.AwaitSealed(ctx, []string{"a", "b", "c"}) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			n := newNet(t, []string{"a", "b", "c"}, "a", "c")
			if err := n.muxs["c"].GiveUp(context.Background(), "no pre-params"); err != nil {
				t.Fatal(err)
			}
			err := tc.wait(deadline(t, 5*time.Second), n.muxs["a"])
			if !errors.Is(err, ErrPeerFailed) {
				t.Fatalf("got %v, want ErrPeerFailed", err)
			}
			if want := "node: a reshare participant failed: c gave up: no pre-params"; err.Error() != want {
				t.Fatalf("message %q, want %q", err, want)
			}
		})
	}
}

// TestExchangeOutlivesAGiveUp: a peer that announced and then gave up
// (it refused the request after its own exchange) does not end the
// exchange of a node still waiting for another peer's announcement; the
// failure stays queued for the next step.
func TestExchangeOutlivesAGiveUp(t *testing.T) {
	n := newNet(t, []string{"a", "b", "c"}, "a")
	n.raw(t, "c", true, "\x01"+`{"kind":"meta"}`)
	n.raw(t, "c", true, "\x01"+`{"kind":"failed","reason":"the requester may not use this wallet"}`)
	ctx := deadline(t, 5*time.Second)
	done := make(chan error, 1)
	go func() {
		_, err := n.muxs["a"].Exchange(ctx, holdingOf("a"), []string{"a", "b", "c"})
		done <- err
	}()
	time.Sleep(quiet) // b announces after c gave up
	n.raw(t, "b", true, "\x01"+`{"kind":"meta","holds":true,"epoch":2,"committee":["a","b"],"threshold":1,"pub_key":"02ab","share_key":"b1","owner":"svcA"}`)
	if err := <-done; err != nil {
		t.Fatalf("exchange: %v", err)
	}
	if err := n.muxs["a"].AwaitSealed(ctx, []string{"a", "b", "c"}); !errors.Is(err, ErrPeerFailed) {
		t.Fatalf("after the exchange: got %v, want ErrPeerFailed", err)
	}
}

func TestGiveUpAfterContextEnded(t *testing.T) {
	n := newNet(t, []string{"a", "b"}, "a", "b")
	ended, cancel := context.WithCancel(context.Background())
	cancel()
	if err := n.muxs["b"].GiveUp(ended, "cancelled"); err != nil {
		t.Fatal(err)
	}
	if err := n.muxs["a"].AwaitSealed(deadline(t, 5*time.Second), []string{"b"}); !errors.Is(err, ErrPeerFailed) {
		t.Fatalf("got %v, want ErrPeerFailed", err)
	}
}

func TestWatchEndsCeremonyAndKeepsFailure(t *testing.T) {
	n := newNet(t, []string{"a", "b"}, "a", "b")
	ctx := deadline(t, 5*time.Second)
	cctx, cancel := n.muxs["a"].Watch(ctx)
	defer cancel()
	if cctx.Err() != nil {
		t.Fatal("watch ended before any peer gave up")
	}
	if err := n.muxs["b"].GiveUp(ctx, "ceremony failed"); err != nil {
		t.Fatal(err)
	}
	select {
	case <-cctx.Done():
	case <-ctx.Done():
		t.Fatal("a peer's failure did not end the watched context")
	}
	if ctx.Err() != nil {
		t.Fatal("the parent context ended")
	}
	if err := n.muxs["a"].AwaitSealed(ctx, []string{"b"}); !errors.Is(err, ErrPeerFailed) {
		t.Fatalf("after the watch: got %v, want ErrPeerFailed", err)
	}
}

func TestEarlyMessagesRequeued(t *testing.T) {
	n := newNet(t, []string{"a", "b"}, "a")
	// b is quick: its "sealed" arrives before its "meta".
	n.raw(t, "b", true, "\x01"+`{"kind":"sealed","pub_key":"02ab"}`)
	n.raw(t, "b", true, "\x01"+`{"kind":"meta","holds":true,"epoch":2,"committee":["a","b"],"threshold":1,"pub_key":"02ab","share_key":"b1","owner":"svcA"}`)
	ctx := deadline(t, 5*time.Second)
	got, err := n.muxs["a"].Exchange(ctx, holdingOf("a"), []string{"a", "b"})
	if err != nil {
		t.Fatal(err)
	}
	if !equalHolding(got["b"], holdingOf("b")) {
		t.Fatalf("b's holding %+v", got["b"])
	}
	if err := n.muxs["a"].AwaitSealed(ctx, []string{"a", "b"}); err != nil {
		t.Fatalf("the early sealed was lost: %v", err)
	}
}

func TestIgnoredPayloads(t *testing.T) {
	for _, tc := range []struct {
		name      string
		from      string
		broadcast bool
		payload   string
	}{
		{"control message not broadcast", "b", false, "\x01" + `{"kind":"meta","holds":true,"epoch":9}`},
		{"control message not JSON", "b", true, "\x01{meta"},
		{"empty payload", "b", true, ""},
		{"unknown first byte", "b", true, "\x02" + `{"kind":"meta","holds":true,"epoch":9}`},
		{"announcement from a non-participant", "d", true, "\x01" + `{"kind":"meta","holds":true,"epoch":9}`},
		{"failed not broadcast", "b", false, "\x01" + `{"kind":"failed","reason":"x"}`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			n := newNet(t, []string{"a", "b", "d"}, "a")
			var to []string
			if !tc.broadcast {
				to = []string{"a"}
			}
			n.raw(t, tc.from, tc.broadcast, tc.payload, to...)
			_, err := n.muxs["a"].Exchange(deadline(t, quiet), holdingOf("a"), []string{"a", "b"})
			if !errors.Is(err, context.DeadlineExceeded) {
				t.Fatalf("got %v, want a timeout", err)
			}
			// The announcement that counts still does.
			n.raw(t, "b", true, "\x01"+`{"kind":"meta"}`)
			got, err := n.muxs["a"].Exchange(deadline(t, 5*time.Second), holdingOf("a"), []string{"a", "b"})
			if err != nil {
				t.Fatal(err)
			}
			if got["b"].Holds || got["b"].Epoch != 0 {
				t.Fatalf("an ignored payload was taken: %+v", got["b"])
			}
			select {
			case in := <-n.muxs["a"].Recv():
				t.Fatalf("ignored payload reached the ceremony: %+v", in)
			default:
			}
		})
	}
}

func TestTimeoutNamesMissingPeers(t *testing.T) {
	n := newNet(t, []string{"a", "b", "c", "d"}, "a", "c")
	if err := n.muxs["c"].AnnounceSealed(context.Background(), []byte{1}); err != nil {
		t.Fatal(err)
	}
	err := n.muxs["a"].AwaitSealed(deadline(t, quiet), []string{"d", "c", "b", "a"})
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("got %v, want a timeout", err)
	}
	if want := "no sealed announcement from [b d]: context deadline exceeded"; err.Error() != want {
		t.Fatalf("message %q, want %q", err, want)
	}
}

func TestTSSMessagesPassThrough(t *testing.T) {
	n := newNet(t, []string{"a", "b"}, "a", "b")
	ctx := deadline(t, 5*time.Second)
	if err := n.muxs["a"].AnnounceSealed(ctx, []byte{1}); err != nil {
		t.Fatal(err)
	}
	if err := n.muxs["a"].Send(ctx, ceremony.Outbound{To: []string{"b"}, Round: "KGRound1Message", Wire: []byte("tss")}); err != nil {
		t.Fatal(err)
	}
	select {
	case in := <-n.muxs["b"].Recv():
		if in.From != "a" || in.Broadcast || string(in.Wire) != "tss" {
			t.Fatalf("got %+v", in)
		}
	case <-ctx.Done():
		t.Fatal("tss message not delivered")
	}
	// The control message is not the ceremony's.
	if err := n.muxs["b"].AwaitSealed(ctx, []string{"a"}); err != nil {
		t.Fatal(err)
	}
}

// recorder is a Conn that keeps what is sent.
type recorder struct {
	mu   sync.Mutex
	sent []ceremony.Outbound
}

func (r *recorder) Send(_ context.Context, o ceremony.Outbound) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.sent = append(r.sent, o)
	return nil
}

func (r *recorder) Recv() <-chan ceremony.Inbound { return nil }

// TestWireFormat pins the bytes of every message: nodes of different
// versions share reshare sessions.
func TestWireFormat(t *testing.T) {
	ctx := deadline(t, 5*time.Second)
	rec := &recorder{}
	m := New(ctx, rec, "a", nil)
	_ = m.Send(ctx, ceremony.Outbound{To: []string{"b"}, Round: "r1", Wire: []byte("tss")})
	_ = m.send(ctx, metaOf(committee.Holding{Holds: true, Epoch: 3, Committee: []string{"a", "b"}, Threshold: 1, PubKey: "02ab", ShareKey: "ff"}))
	_ = m.send(ctx, metaOf(committee.Holding{}))
	_ = m.AnnounceSealed(ctx, []byte{2, 0xab})
	_ = m.GiveUp(ctx, "store: full")
	want := []string{
		"\x00tss",
		"\x01" + `{"kind":"meta","holds":true,"epoch":3,"committee":["a","b"],"threshold":1,"pub_key":"02ab","share_key":"ff"}`,
		"\x01" + `{"kind":"meta"}`,
		"\x01" + `{"kind":"sealed","pub_key":"02ab"}`,
		"\x01" + `{"kind":"failed","reason":"store: full"}`,
	}
	if len(rec.sent) != len(want) {
		t.Fatalf("%d messages sent, want %d", len(rec.sent), len(want))
	}
	for i, o := range rec.sent {
		if !bytes.Equal(o.Wire, []byte(want[i])) {
			t.Errorf("message %d\n got %q\nwant %q", i, o.Wire, want[i])
		}
		control := strings.HasPrefix(want[i], "\x01")
		if control && (!o.Broadcast || o.Round != Round || len(o.To) != 0) {
			t.Errorf("control message %d sent as %+v", i, o)
		}
		if !control && (o.Round != "r1" || !slices.Equal(o.To, []string{"b"})) {
			t.Errorf("tss message sent as %+v", o)
		}
	}
}
