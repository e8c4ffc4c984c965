package routing

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/hwsigner/signer/protocol"
	"github.com/hwsigner/signer/routing/natstest"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// The shipped example configuration works, and its permissions isolate
// clients.
func TestServerConfigExample(t *testing.T) {
	users := map[string]string{
		"NODE0_PASSWORD": "n0", "NODE1_PASSWORD": "n1", "NODE2_PASSWORD": "n2",
		"SVCA_PASSWORD": "pa", "SVCB_PASSWORD": "pb", "LEGACY_PASSWORD": "pl",
	}
	for k, v := range users {
		t.Setenv(k, v)
	}
	src, err := os.ReadFile("../docs/nats-server.conf.example")
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "nats.conf")
	if err := os.WriteFile(path, src, 0o600); err != nil {
		t.Fatal(err)
	}
	opts, err := server.ProcessConfigFile(path)
	if err != nil {
		t.Fatalf("example config: %v", err)
	}
	opts.Host, opts.Port, opts.StoreDir = "127.0.0.1", -1, t.TempDir()
	s := natstest.RunServerWithOptions(t, opts)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	connect := func(user, pw, inbox string) (*nats.Conn, jetstream.JetStream) {
		o := []nats.Option{nats.UserInfo(user, pw), nats.ErrorHandler(func(*nats.Conn, *nats.Subscription, error) {})}
		if inbox != "" {
			o = append(o, nats.CustomInboxPrefix(inbox))
		}
		return natstest.JetStream(t, s, o...)
	}
	denied := func(what string, err error) {
		t.Helper()
		if err == nil {
			t.Errorf("%s: allowed, want denied", what)
		}
	}

	// A node sets everything up.
	_, nodeJS := connect("node0", "n0", "")
	if err := EnsureStreams(ctx, nodeJS, StreamOptions{}); err != nil {
		t.Fatal(err)
	}
	nodeCons, err := NodeConsumer(ctx, nodeJS, "node0")
	if err != nil {
		t.Fatal(err)
	}
	kv, err := EnsureReadyBucket(ctx, nodeJS, ReadyOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if err := PutReady(ctx, kv, "node0", nil); err != nil {
		t.Fatal(err)
	}
	if nodes, err := ReadyNodes(ctx, kv); err != nil || len(nodes) != 1 {
		t.Fatalf("ReadyNodes %v %v", nodes, err)
	}
	keys, err := EnsureKeysBucket(ctx, nodeJS, StreamOptions{})
	if err != nil {
		t.Fatal(err)
	}
	confKey, _ := ConfirmationKey("w1", protocol.KeyTypeEd25519, 1, "node0")
	if _, err := keys.Put(ctx, confKey, []byte("{}")); err != nil {
		t.Fatalf("node0 putting a key confirmation: %v", err)
	}
	if e, err := keys.Get(ctx, confKey); err != nil || string(e.Value()) != "{}" {
		t.Fatalf("node0 reading a key confirmation: %v", err)
	}

	// svcA: requests and its own consumers work.
	_, aJS := connect("svcA", "pa", "_INBOX_svcA")
	aCons, err := ResultConsumers(ctx, aJS, "svcA")
	if err != nil {
		t.Fatalf("svcA creating its consumers: %v", err)
	}
	subj, _ := SigningRequestSubject("w1")
	if _, err := aJS.Publish(ctx, subj, []byte("{}"), jetstream.WithMsgID("r1")); err != nil {
		t.Fatalf("svcA publishing a request: %v", err)
	}
	if got := fetchAll(t, nodeCons, 1); len(got) != 1 {
		t.Fatalf("node received %v", got)
	}
	// Legacy and svcB consumers exist too (created by their own users).
	_, bJS := connect("svcB", "pb", "_INBOX_svcB")
	bCons, err := ResultConsumers(ctx, bJS, "svcB")
	if err != nil {
		t.Fatal(err)
	}
	_, lJS := connect("legacy", "pl", "_INBOX_legacy")
	if _, err := ResultConsumers(ctx, lJS, ""); err != nil {
		t.Fatalf("legacy consumers: %v", err)
	}

	for _, c := range []string{"svcA", "svcB"} {
		publishResult(t, ctx, nodeJS, &protocol.Result{Op: protocol.OpSign, ClientID: c, RequestID: "res-" + c}, "res-"+c)
	}
	if got := fetchAll(t, aCons[protocol.OpSign], 1); len(got) != 1 || got[0] != "res-svcA" {
		t.Fatalf("svcA results %v", got)
	}

	short := func() context.Context {
		c, cancel := context.WithTimeout(ctx, 500*time.Millisecond)
		t.Cleanup(cancel)
		return c
	}
	// svcA may not create, bind to or pull from svcB's consumers.
	_, err = ResultConsumer(short(), aJS, protocol.OpSign, "svcB")
	denied("svcA creating svcB's consumer", err)
	_, err = aJS.Consumer(short(), ResultStream, "mpc_signing_result_svcB")
	denied("svcA binding svcB's consumer", err)
	// nor a consumer of its own name with another filter
	_, err = aJS.CreateOrUpdateConsumer(short(), ResultStream, jetstream.ConsumerConfig{
		Durable: "mpc_signing_result_svcA", FilterSubject: "mpc.mpc_signing_result.svcB.complete", AckPolicy: jetstream.AckExplicitPolicy,
	})
	denied("svcA re-filtering its consumer to svcB", err)
	// nor read svcB's results on core NATS, nor forge results.
	nc, _ := connect("svcA", "pa", "_INBOX_svcA")
	errs := make(chan error, 4)
	nc.SetErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) { errs <- err })
	if _, err := nc.SubscribeSync("mpc.mpc_signing_result.svcB.complete"); err != nil {
		t.Fatal(err)
	}
	waitPermErr(t, errs, "svcA subscribing to svcB's result subject")
	if err := nc.Publish("mpc.mpc_signing_result.svcA.complete", []byte("forged")); err != nil {
		t.Fatal(err)
	}
	waitPermErr(t, errs, "svcA publishing a result")
	if err := nc.Publish(AttemptSubject("svcA", "r1"), []byte("forged plan")); err != nil {
		t.Fatal(err)
	}
	waitPermErr(t, errs, "svcA publishing a re-run plan")
	if _, err := nc.SubscribeSync("_INBOX.>"); err != nil {
		t.Fatal(err)
	}
	waitPermErr(t, errs, "svcA subscribing to all inboxes")
	// nor write key confirmations.
	_, aKV := connect("svcA", "pa", "_INBOX_svcA")
	if _, err := aKV.Publish(short(), "$KV."+KeysBucket+"."+confKey, []byte("forged")); err == nil {
		t.Error("svcA putting a key confirmation: allowed, want denied")
	}

	// svcB's result is still there for svcB.
	if got := fetchAll(t, bCons[protocol.OpSign], 1); len(got) != 1 || got[0] != "res-svcB" {
		t.Fatalf("svcB results %v", got)
	}
}

func waitPermErr(t *testing.T, errs <-chan error, what string) {
	t.Helper()
	select {
	case err := <-errs:
		if !errors.Is(err, nats.ErrPermissionViolation) {
			t.Errorf("%s: %v", what, err)
		}
	case <-time.After(2 * time.Second):
		t.Errorf("%s: allowed, want a permissions violation", what)
	}
}
