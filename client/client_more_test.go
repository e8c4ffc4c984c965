package client

import (
	"context"
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"errors"
	"testing"
	"time"

	"github.com/hwsigner/signer/protocol"
	"github.com/hwsigner/signer/routing/natstest"
)

func TestErrorResults(t *testing.T) {
	e := newEnv(t)
	keyA, keyB := edSigner(t), edSigner(t)
	policy := policyFor(t, binding{keyA, []string{"svcA"}}, binding{keyB, []string{"svcB"}})
	startFakeNode(t, e.ctx, e.js, "node0", e.identity, policy)
	a := e.newClient(t, keyA, WithClientID("svcA"))

	res, err := a.SignAndWait(e.ctx, SignParams{WalletID: "unknown", KeyType: protocol.KeyTypeSecp256k1, TxID: "t", Tx: digest("x")})
	var re *ResultError
	if !errors.As(err, &re) || re.Code != protocol.CodeUnknownWallet || res == nil || res.Succeeded() || re.Retryable() {
		t.Fatalf("unknown wallet: %+v %v", res, err)
	}
	res, err = a.CreateWalletAndWait(e.ctx, "exists", protocol.KeyTypeEd25519)
	if !errors.As(err, &re) || re.Code != protocol.CodeWalletExists || res.RequestID != re.RequestID {
		t.Fatalf("wallet exists: %+v %v", res, err)
	}

	// Key A claims svcB: the node answers UNAUTHORIZED_CLIENT on svcA's
	// subject (A's own), never on svcB's.
	spoof := e.newClient(t, keyA, WithClientID("svcB"))
	b := e.newClient(t, keyB, WithClientID("svcB"))
	bRec, aRec := &recorder{}, &recorder{}
	if err := b.OnSignResult(bRec.add); err != nil {
		t.Fatal(err)
	}
	if err := a.OnSignResult(aRec.add); err != nil {
		t.Fatal(err)
	}
	id, err := spoof.Sign(e.ctx, SignParams{WalletID: "w", KeyType: protocol.KeyTypeSecp256k1, TxID: "t", Tx: digest("y")})
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, func() bool { return len(aRec.snapshot()) == 1 })
	got := aRec.snapshot()[0]
	if got.RequestID != id || got.ErrorCode != protocol.CodeUnauthorizedClient || got.ClientID != "svcA" {
		t.Fatalf("svcA got %+v", got)
	}
	time.Sleep(200 * time.Millisecond)
	if n := len(bRec.snapshot()); n != 0 {
		t.Fatalf("svcB received %d results", n)
	}
}

func TestInvalidRequestNotPublished(t *testing.T) {
	e := newEnv(t)
	c := e.newClient(t, edSigner(t), WithClientID("svcA"))
	tests := []struct {
		name string
		call func() error
		want error
	}{
		{"short digest", func() error {
			_, err := c.Sign(e.ctx, SignParams{WalletID: "w", KeyType: protocol.KeyTypeSecp256k1, TxID: "t", Tx: make([]byte, 31)})
			return err
		}, protocol.ErrInvalidRequest},
		{"hardened path", func() error {
			_, err := c.Sign(e.ctx, SignParams{WalletID: "w", KeyType: protocol.KeyTypeSecp256k1, TxID: "t", Tx: digest("x"),
				DerivationPath: []uint32{1 << 31}})
			return err
		}, protocol.ErrInvalidRequest},
		{"bad wallet id", func() error { _, err := c.CreateWallet(e.ctx, "a.b"); return err }, protocol.ErrInvalidToken},
		{"bad key type", func() error { _, err := c.CreateWallet(e.ctx, "w", "rsa"); return err }, protocol.ErrInvalidRequest},
		{"bad request id", func() error {
			_, err := c.Keygen(e.ctx, KeygenParams{WalletID: "w", RequestID: "a b"})
			return err
		}, protocol.ErrInvalidRequest},
		{"bad threshold", func() error {
			_, err := c.Reshare(e.ctx, ReshareParams{WalletID: "w", KeyType: protocol.KeyTypeEd25519, SessionID: "s",
				NodeIDs: []string{"a", "b"}, NewThreshold: 2})
			return err
		}, protocol.ErrInvalidRequest},
	}
	for _, tt := range tests {
		if err := tt.call(); !errors.Is(err, tt.want) {
			t.Errorf("%s: %v, want %v", tt.name, err, tt.want)
		}
	}
	st, _ := e.js.Stream(e.ctx, "MPC_REQUESTS")
	info, _ := st.Info(e.ctx)
	if info.State.FirstSeq > 1 || info.State.LastSeq != 0 {
		t.Fatalf("invalid requests were published: %+v", info.State)
	}
}

func TestPublishWithoutStreamFails(t *testing.T) {
	srv := natstest.RunServer(t) // no streams: no PubAck
	nc := natstest.Connect(t, srv)
	id := newIdentity(t)
	c, err := New(nc, edSigner(t), WithNodeKeys(map[string]crypto.PublicKey{"node0": id.Public()}), WithLogger(quietLogger()))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := c.CreateWallet(ctx, "w1"); err == nil {
		t.Fatal("publish without a stream succeeded")
	}
}

func TestDuplicateRequestID(t *testing.T) {
	e := newEnv(t)
	c := e.newClient(t, edSigner(t), WithClientID("svcA"))
	p := KeygenParams{WalletID: "w1", RequestID: "same-id"}
	id1, err := c.Keygen(e.ctx, p)
	if err != nil {
		t.Fatal(err)
	}
	id2, err := c.Keygen(e.ctx, p) // a retry: JetStream keeps the first
	if err != nil || id1 != id2 {
		t.Fatalf("retry: %s %s %v", id1, id2, err)
	}
	ctx, cancel := context.WithTimeout(e.ctx, 2*time.Second)
	defer cancel()
	go func() { _, _ = c.KeygenAndWait(ctx, KeygenParams{WalletID: "w2", RequestID: "waited"}) }()
	waitFor(t, 5*time.Second, func() bool { return pendingWaiters(c) == 1 })
	if _, err := c.KeygenAndWait(ctx, KeygenParams{WalletID: "w2", RequestID: "waited"}); !errors.Is(err, ErrPendingRequestID) {
		t.Fatalf("second waiter for one request id: %v", err)
	}
}

func TestClose(t *testing.T) {
	e := newEnv(t)
	c := e.newClient(t, edSigner(t), WithClientID("svcA"))
	errc := make(chan error, 1)
	go func() {
		_, err := c.SignAndWait(e.ctx, SignParams{WalletID: "w", KeyType: protocol.KeyTypeEd25519, TxID: "t", Tx: []byte("m")})
		errc <- err
	}()
	waitFor(t, 5*time.Second, func() bool { return pendingWaiters(c) == 1 })
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-errc:
		if !errors.Is(err, ErrClosed) {
			t.Fatalf("pending wait: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("pending wait not released by Close")
	}
	if _, err := c.CreateWallet(e.ctx, "w"); !errors.Is(err, ErrClosed) {
		t.Fatalf("after Close: %v", err)
	}
	if err := c.OnSignResult(func(protocol.Result) {}); !errors.Is(err, ErrClosed) {
		t.Fatalf("OnSignResult after Close: %v", err)
	}
	if err := c.Close(); err != nil {
		t.Fatal("second Close:", err)
	}
}

// A result that arrives while only a Wait helper for another request is
// running stays in the stream and reaches the callback registered later.
func TestUnclaimedResultReachesLaterCallback(t *testing.T) {
	e := newEnv(t)
	c := e.newClient(t, edSigner(t), WithClientID("svcA"))
	ctx, cancel := context.WithCancel(e.ctx)
	go func() {
		_, _ = c.SignAndWait(ctx, SignParams{WalletID: "w", KeyType: protocol.KeyTypeEd25519, TxID: "t", Tx: []byte("m")})
	}()
	defer cancel()
	waitFor(t, 5*time.Second, func() bool { return pendingWaiters(c) == 1 })
	e.publishResult(t, e.identity, "node0", &protocol.Result{Op: protocol.OpSign, ResultType: protocol.ResultSuccess,
		RequestID: "earlier", ClientID: "svcA", KeyID: c.KeyID()}, "")
	waitFor(t, 5*time.Second, func() bool { return c.Stats().Unclaimed >= 1 })
	rec := &recorder{}
	if err := c.OnSignResult(rec.add); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, func() bool { return len(rec.snapshot()) == 1 })
	if got := rec.snapshot()[0]; got.RequestID != "earlier" {
		t.Fatalf("callback got %+v", got)
	}
}

// A callback that panics does not lose the result: it is redelivered.
func TestPanickingCallback(t *testing.T) {
	e := newEnv(t)
	c := e.newClient(t, edSigner(t), WithClientID("svcA"))
	calls := make(chan protocol.Result, 4)
	first := true
	if err := c.OnWalletCreationResult(func(r protocol.Result) {
		calls <- r
		if first {
			first = false
			panic("boom")
		}
	}); err != nil {
		t.Fatal(err)
	}
	e.publishResult(t, e.identity, "node0", &protocol.Result{Op: protocol.OpKeygen, ResultType: protocol.ResultSuccess,
		RequestID: "k1", ClientID: "svcA", KeyID: c.KeyID(), WalletID: "w1"}, "")
	for i := 0; i < 2; i++ {
		select {
		case r := <-calls:
			if r.RequestID != "k1" {
				t.Fatalf("%+v", r)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("call %d missing", i+1)
		}
	}
}

func TestNewOptions(t *testing.T) {
	srv := natstest.RunServer(t)
	nc := natstest.Connect(t, srv)
	keys := map[string]crypto.PublicKey{"node0": newIdentity(t).Public()}
	rsaKey, _ := rsa.GenerateKey(rand.Reader, 1024)
	tests := []struct {
		name   string
		signer crypto.Signer
		opts   []Option
		want   error
	}{
		{"ok legacy", edSigner(t), []Option{WithNodeKeys(keys)}, nil},
		{"ok scoped p256", newIdentity(t), []Option{WithNodeKeys(keys), WithClientID("a-b"), WithRequestTTL(time.Hour)}, nil},
		{"no node keys", edSigner(t), nil, ErrNoNodeKeys},
		{"bad client id", edSigner(t), []Option{WithNodeKeys(keys), WithClientID("a.b")}, protocol.ErrInvalidToken},
		{"empty client id", edSigner(t), []Option{WithNodeKeys(keys), WithClientID("")}, protocol.ErrInvalidToken},
		{"rsa signer", rsaKey, []Option{WithNodeKeys(keys)}, protocol.ErrUnsupportedKey},
		{"rsa node key", edSigner(t), []Option{WithNodeKeys(map[string]crypto.PublicKey{"n": &rsaKey.PublicKey})}, protocol.ErrUnsupportedKey},
		{"bad node id", edSigner(t), []Option{WithNodeKeys(map[string]crypto.PublicKey{"n.1": keys["node0"]})}, protocol.ErrInvalidToken},
	}
	for _, tt := range tests {
		c, err := New(nc, tt.signer, tt.opts...)
		if tt.want == nil && err != nil || tt.want != nil && !errors.Is(err, tt.want) {
			t.Errorf("%s: %v, want %v", tt.name, err, tt.want)
		}
		if c != nil {
			_ = c.Close()
		}
	}
	for _, d := range []time.Duration{0, -time.Second, protocol.MaxRequestTTL + time.Second} {
		if _, err := New(nc, edSigner(t), WithNodeKeys(keys), WithRequestTTL(d)); err == nil {
			t.Errorf("TTL %s accepted", d)
		}
	}
	if _, err := New(nil, edSigner(t), WithNodeKeys(keys)); err == nil {
		t.Error("nil conn accepted")
	}
	if _, err := New(nc, nil, WithNodeKeys(keys)); err == nil {
		t.Error("nil signer accepted")
	}
}
