package routing

import (
	"context"
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/hwsigner/signer/protocol"
	"github.com/hwsigner/signer/routing/natstest"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

func setup(t *testing.T) (*nats.Conn, jetstream.JetStream, context.Context) {
	t.Helper()
	s := natstest.RunServer(t)
	nc, js := natstest.JetStream(t, s)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	if err := EnsureStreams(ctx, js, StreamOptions{}); err != nil {
		t.Fatal(err)
	}
	return nc, js, ctx
}

func TestEnsureStreamsIdempotent(t *testing.T) {
	_, js, ctx := setup(t)
	for i := 0; i < 2; i++ {
		if err := EnsureStreams(ctx, js, StreamOptions{}); err != nil {
			t.Fatalf("EnsureStreams #%d: %v", i+2, err)
		}
	}
	req, err := js.Stream(ctx, RequestStream)
	if err != nil {
		t.Fatal(err)
	}
	ri, _ := req.Info(ctx)
	if ri.Config.Retention != jetstream.InterestPolicy || ri.Config.Storage != jetstream.FileStorage ||
		ri.Config.MaxAge != DefaultRequestMaxAge || ri.Config.Duplicates != DefaultDuplicates || len(ri.Config.Subjects) != 3 {
		t.Fatalf("MPC_REQUESTS config %+v", ri.Config)
	}
	res, err := js.Stream(ctx, ResultStream)
	if err != nil {
		t.Fatal(err)
	}
	si, _ := res.Info(ctx)
	if si.Config.Retention != jetstream.WorkQueuePolicy || si.Config.Storage != jetstream.FileStorage ||
		si.Config.Duplicates != DefaultDuplicates || len(si.Config.Subjects) != 3 {
		t.Fatalf("MPC_RESULTS config %+v", si.Config)
	}
	// Consumers are idempotent too.
	for i := 0; i < 2; i++ {
		if _, err := NodeConsumer(ctx, js, "node0"); err != nil {
			t.Fatal(err)
		}
		if _, err := ResultConsumers(ctx, js, "svcA"); err != nil {
			t.Fatal(err)
		}
	}
	if err := EnsureStreams(ctx, js, StreamOptions{Duplicates: 48 * time.Hour}); err == nil {
		t.Fatal("duplicate window longer than max age accepted")
	}
}

func publishResult(t *testing.T, ctx context.Context, js jetstream.JetStream, res *protocol.Result, msgID string) *jetstream.PubAck {
	t.Helper()
	subj, err := ResultSubject(res)
	if err != nil {
		t.Fatal(err)
	}
	ack, err := js.Publish(ctx, subj, []byte(res.RequestID), jetstream.WithMsgID(msgID), jetstream.WithExpectStream(ResultStream))
	if err != nil {
		t.Fatalf("publish %s: %v", subj, err)
	}
	return ack
}

// fetchAll drains a consumer that should deliver want messages: it waits up
// to 10 s for them (a consumer sees a publish asynchronously), then 200 ms
// more for any extra, and returns every payload it got, acked.
func fetchAll(t *testing.T, c jetstream.Consumer, want int) []string {
	t.Helper()
	var out []string
	deadline := time.Now().Add(10 * time.Second)
	for {
		var batch jetstream.MessageBatch
		var err error
		if missing := want - len(out); missing > 0 {
			// Fetch returns once it has this many, or at the deadline.
			batch, err = c.Fetch(missing, jetstream.FetchMaxWait(max(time.Until(deadline), time.Millisecond)))
		} else {
			time.Sleep(200 * time.Millisecond) // room for an unwanted extra to show up
			batch, err = c.FetchNoWait(100)
		}
		if err != nil {
			t.Fatal(err)
		}
		n := 0
		for m := range batch.Messages() {
			n++
			out = append(out, string(m.Data()))
			if err := m.Ack(); err != nil {
				t.Fatal(err)
			}
		}
		if err := batch.Error(); err != nil && !errors.Is(err, nats.ErrTimeout) {
			t.Fatal(err)
		}
		if (n == 0 && len(out) >= want) || time.Now().After(deadline) {
			return out
		}
	}
}

func TestResultConsumersIsolation(t *testing.T) {
	_, js, ctx := setup(t)
	clients := []string{"", "svcA", "svcB", "a-b", "a_b"}
	consumers := map[string]map[string]jetstream.Consumer{}
	for _, c := range clients {
		cs, err := ResultConsumers(ctx, js, c)
		if err != nil {
			t.Fatalf("consumers for %q: %v", c, err)
		}
		consumers[c] = cs
	}
	// Distinct names for a-b and a_b, all on the same work-queue stream.
	names := map[string]bool{}
	rs, err := js.Stream(ctx, ResultStream)
	if err != nil {
		t.Fatal(err)
	}
	lister := rs.ConsumerNames(ctx)
	for n := range lister.Name() {
		names[n] = true
	}
	if len(names) != 15 || !names["mpc_signing_result_a-b"] || !names["mpc_signing_result_a_b"] || !names["mpc_signing_result"] {
		t.Fatalf("consumer names %v", names)
	}

	// Each client gets one result per op, addressed to it.
	for _, c := range clients {
		for _, op := range []string{protocol.OpKeygen, protocol.OpSign, protocol.OpReshare} {
			id := op + "/" + c
			publishResult(t, ctx, js, &protocol.Result{Op: op, ClientID: c, RequestID: id, WalletID: "w1", SessionID: "s1"}, id)
		}
	}
	for _, c := range clients {
		for op, cons := range consumers[c] {
			got := fetchAll(t, cons, 1)
			if want := op + "/" + c; len(got) != 1 || got[0] != want {
				t.Errorf("consumer %s/%q received %v, want [%s]", op, c, got, want)
			}
		}
	}
	// Work queue: everything was acked, nothing is left.
	st, _ := js.Stream(ctx, ResultStream)
	info, _ := st.Info(ctx)
	if info.State.Msgs != 0 {
		t.Fatalf("%d results left in the work queue", info.State.Msgs)
	}
}

func TestResultOnlyToOwnConsumer(t *testing.T) {
	_, js, ctx := setup(t)
	a, err := ResultConsumer(ctx, js, protocol.OpSign, "svcA")
	if err != nil {
		t.Fatal(err)
	}
	b, err := ResultConsumer(ctx, js, protocol.OpSign, "svcB")
	if err != nil {
		t.Fatal(err)
	}
	legacy, err := ResultConsumer(ctx, js, protocol.OpSign, "")
	if err != nil {
		t.Fatal(err)
	}
	publishResult(t, ctx, js, &protocol.Result{Op: protocol.OpSign, ClientID: "svcA", RequestID: "r1"}, "r1")
	if got := fetchAll(t, b, 0); len(got) != 0 {
		t.Fatalf("svcB received %v", got)
	}
	if got := fetchAll(t, legacy, 0); len(got) != 0 {
		t.Fatalf("legacy received %v", got)
	}
	if got := fetchAll(t, a, 1); len(got) != 1 || got[0] != "r1" {
		t.Fatalf("svcA received %v", got)
	}
}

func TestResultDedupe(t *testing.T) {
	_, js, ctx := setup(t)
	cons, err := ResultConsumer(ctx, js, protocol.OpSign, "svcA")
	if err != nil {
		t.Fatal(err)
	}
	res := &protocol.Result{Op: protocol.OpSign, ClientID: "svcA", RequestID: "req-7"}
	dups := 0
	for node := 0; node < 3; node++ { // three participants publish the same result
		if ack := publishResult(t, ctx, js, res, "result-req-7"); ack.Duplicate {
			dups++
		}
	}
	if dups != 2 {
		t.Fatalf("%d duplicates reported, want 2", dups)
	}
	if got := fetchAll(t, cons, 1); len(got) != 1 {
		t.Fatalf("client received %d copies", len(got))
	}
}

func TestNodeConsumersEachSeeEveryRequest(t *testing.T) {
	_, js, ctx := setup(t)
	nodes := []string{"node0", "node1", "node2"}
	cons := map[string]jetstream.Consumer{}
	for _, n := range nodes {
		c, err := NodeConsumer(ctx, js, n, WithAckWait(time.Minute))
		if err != nil {
			t.Fatal(err)
		}
		cons[n] = c
	}
	for i, op := range []string{protocol.OpKeygen, protocol.OpSign, protocol.OpReshare} {
		subj, _ := RequestSubject(op, "w1")
		id := string(rune('a' + i))
		if _, err := js.Publish(ctx, subj, []byte(op), jetstream.WithMsgID(id), jetstream.WithExpectStream(RequestStream)); err != nil {
			t.Fatal(err)
		}
		// A retried publish with the same request id is deduplicated.
		if ack, err := js.Publish(ctx, subj, []byte(op), jetstream.WithMsgID(id)); err != nil || !ack.Duplicate {
			t.Fatalf("retry: %v %+v", err, ack)
		}
	}
	st, _ := js.Stream(ctx, RequestStream)
	for i, n := range nodes {
		got := fetchAll(t, cons[n], 3)
		if len(got) != 3 {
			t.Fatalf("%s received %v", n, got)
		}
		info, _ := st.Info(ctx)
		// Interest retention: a request stays until the last node acked it.
		if want := uint64(3); i < len(nodes)-1 && info.State.Msgs != want {
			t.Fatalf("after %s acked: %d requests in stream, want %d", n, info.State.Msgs, want)
		}
	}
	waitFor(t, func() bool { info, _ := st.Info(ctx); return info.State.Msgs == 0 })
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not reached")
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// waitReady waits until ReadyNodes is exactly want (sorted) and fails with
// the last listing if it never is.
func waitReady(t *testing.T, ctx context.Context, kv jetstream.KeyValue, want ...string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	var last []string
	for {
		nodes, err := ReadyNodes(ctx, kv)
		if err == nil && slices.Equal(nodes, want) {
			return
		}
		last = nodes
		if time.Now().After(deadline) {
			t.Fatalf("ReadyNodes = %v (err %v), want %v", last, err, want)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func TestReadiness(t *testing.T) {
	_, js, ctx := setup(t)
	kv, err := EnsureReadyBucket(ctx, js, ReadyOptions{TTL: time.Second, Storage: jetstream.MemoryStorage})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := EnsureReadyBucket(ctx, js, ReadyOptions{TTL: time.Second, Storage: jetstream.MemoryStorage}); err != nil {
		t.Fatalf("second EnsureReadyBucket: %v", err)
	}
	if nodes, err := ReadyNodes(ctx, kv); err != nil || len(nodes) != 0 {
		t.Fatalf("empty bucket: %v %v", nodes, err)
	}
	hctx, stop := context.WithCancel(ctx)
	done := make(chan error, 2)
	go func() { done <- Heartbeat(hctx, kv, "node1", []byte(`{"v":1}`), WithInterval(200*time.Millisecond)) }()
	go func() { done <- Heartbeat(hctx, kv, "node0", nil, WithInfoFunc(func() []byte { return []byte("x") })) }()
	if err := PutReady(ctx, kv, "node2", nil); err != nil { // one beat, then silence
		t.Fatal(err)
	}
	// A key listing taken while another node rewrites its entry can be
	// momentarily short, so each state is awaited, not sampled once.
	waitReady(t, ctx, kv, "node0", "node1", "node2")
	// node2 stops beating: its entry expires after the TTL; the others stay.
	waitReady(t, ctx, kv, "node0", "node1")
	stop()
	for i := 0; i < 2; i++ {
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	}
	// Stopped heartbeats delete their entries.
	waitReady(t, ctx, kv)
	if err := PutReady(ctx, kv, "bad.node", nil); !errors.Is(err, ErrInvalidSubject) {
		t.Fatalf("bad node id: %v", err)
	}
}
