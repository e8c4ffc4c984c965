package node

import (
	"context"
	"log/slog"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/hwsigner/signer/routing"
	"github.com/hwsigner/signer/routing/natstest"
)

// The readiness view follows puts and deletes within moments: a node that
// leaves (deletes its entry) is out of every other node's view at once, not
// after the TTL.
func TestReadinessViewFollowsDeletes(t *testing.T) {
	s := natstest.RunServer(t)
	_, js := natstest.JetStream(t, s)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	kv, err := routing.EnsureReadyBucket(ctx, js, routing.ReadyOptions{TTL: 15 * time.Second, Storage: jetstream.MemoryStorage})
	if err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{"node0", "node1", "node2"} {
		if err := routing.PutReady(ctx, kv, id, nil); err != nil {
			t.Fatal(err)
		}
	}
	r, err := watchReadiness(ctx, kv, 15*time.Second, slog.Default())
	if err != nil {
		t.Fatal(err)
	}
	wait := func(want int) {
		t.Helper()
		deadline := time.Now().Add(2 * time.Second)
		for len(r.view()) != want {
			if time.Now().After(deadline) {
				t.Fatalf("view %v, want %d nodes", r.view(), want)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	wait(3)
	for i := 0; i < 5; i++ { // heartbeats meanwhile
		if err := routing.PutReady(ctx, kv, "node0", nil); err != nil {
			t.Fatal(err)
		}
	}
	if err := kv.Delete(ctx, "node2"); err != nil {
		t.Fatal(err)
	}
	wait(2)
	if r.view()["node2"] {
		t.Fatal("node2 still ready")
	}
	if err := routing.PutReady(ctx, kv, "node2", nil); err != nil {
		t.Fatal(err)
	}
	wait(3)
}
