package routing

import (
	"errors"
	"testing"

	"github.com/nats-io/nats.go/jetstream"
)

func TestEnsureKeysBucket(t *testing.T) {
	_, js, ctx := setup(t)
	var kv jetstream.KeyValue
	for i := 0; i < 2; i++ {
		var err error
		if kv, err = EnsureKeysBucket(ctx, js, StreamOptions{}); err != nil {
			t.Fatalf("EnsureKeysBucket #%d: %v", i+1, err)
		}
	}
	st, err := kv.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	info := st.(*jetstream.KeyValueBucketStatus).StreamInfo()
	if st.History() != 1 || st.TTL() != 0 || info.Config.Storage != jetstream.FileStorage || info.Config.Replicas != 1 ||
		info.Config.MaxMsgSize != MaxConfirmationSize {
		t.Fatalf("bucket %s: history %d, ttl %s, config %+v", KeysBucket, st.History(), st.TTL(), info.Config)
	}
	key, err := ConfirmationKey("w-1", "ed25519", 3, "node2")
	if err != nil || key != "w-1.ed25519.3.node2" {
		t.Fatalf("ConfirmationKey: %q %v", key, err)
	}
	if _, err := kv.Put(ctx, key, []byte("{}")); err != nil {
		t.Fatal(err)
	}
	w, kt, e, n, err := ParseConfirmationKey(key)
	if err != nil || w != "w-1" || kt != "ed25519" || e != 3 || n != "node2" {
		t.Fatalf("ParseConfirmationKey: %s %s %d %s %v", w, kt, e, n, err)
	}
	if f, err := ConfirmationsFilter("w-1", "ed25519"); err != nil || f != "w-1.ed25519.>" {
		t.Fatalf("ConfirmationsFilter: %q %v", f, err)
	}
	for _, bad := range [][4]any{{"w.1", "ed25519", uint64(1), "node0"}, {"w", "rsa", uint64(1), "node0"}, {"w", "ed25519", uint64(0), "node0"}, {"w", "ed25519", uint64(1), "n*"}} {
		if _, err := ConfirmationKey(bad[0].(string), bad[1].(string), bad[2].(uint64), bad[3].(string)); !errors.Is(err, ErrInvalidSubject) {
			t.Errorf("ConfirmationKey%v: %v", bad, err)
		}
	}
	for _, bad := range []string{"w.ed25519.1", "w.ed25519.01.node0", "w.ed25519.x.node0", "w.rsa.1.node0", "w.ed25519.1.node0.x"} {
		if _, _, _, _, err := ParseConfirmationKey(bad); !errors.Is(err, ErrInvalidSubject) {
			t.Errorf("ParseConfirmationKey(%q): %v", bad, err)
		}
	}
}
