package client

import (
	"context"
	"crypto"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"testing"
	"time"

	decredecdsa "github.com/decred/dcrd/dcrec/secp256k1/v4/ecdsa"
	"github.com/hwsigner/signer/protocol"
	"github.com/hwsigner/signer/routing"
	"github.com/hwsigner/signer/routing/natstest"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

type env struct {
	srv      *server.Server
	js       jetstream.JetStream
	ctx      context.Context
	identity crypto.Signer // node0's identity key
	nodeKeys map[string]crypto.PublicKey
}

func quietLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func newEnv(t *testing.T) *env {
	t.Helper()
	srv := natstest.RunServer(t)
	_, js := natstest.JetStream(t, srv)
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	t.Cleanup(cancel)
	if err := routing.EnsureStreams(ctx, js, routing.StreamOptions{}); err != nil {
		t.Fatal(err)
	}
	id := newIdentity(t)
	return &env{srv: srv, js: js, ctx: ctx, identity: id, nodeKeys: map[string]crypto.PublicKey{"node0": id.Public()}}
}

func (e *env) newClient(t *testing.T, signer crypto.Signer, opts ...Option) *Client {
	t.Helper()
	nc := natstest.Connect(t, e.srv)
	opts = append([]Option{WithNodeKeys(e.nodeKeys), WithLogger(quietLogger())}, opts...)
	c, err := New(nc, signer, opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// publishResult signs res with signer as nodeID and publishes it on subject
// (the routing subject when empty).
func (e *env) publishResult(t *testing.T, signer crypto.Signer, nodeID string, res *protocol.Result, subject string) {
	t.Helper()
	raw, err := protocol.SignResult(e.ctx, signer, nodeID, res)
	if err != nil {
		t.Fatal(err)
	}
	if subject == "" {
		if subject, err = routing.ResultSubject(res); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := e.js.PublishMsg(e.ctx, &nats.Msg{Subject: subject, Data: raw}); err != nil {
		t.Fatal(err)
	}
}

func edSigner(t testing.TB) crypto.Signer {
	t.Helper()
	_, k, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func digest(s string) []byte { d := sha256.Sum256([]byte(s)); return d[:] }

// recorder collects callback results.
type recorder struct {
	mu  sync.Mutex
	got []protocol.Result
}

func (r *recorder) add(res protocol.Result) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.got = append(r.got, res)
}

func (r *recorder) snapshot() []protocol.Result {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]protocol.Result(nil), r.got...)
}

func waitFor(t *testing.T, d time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not reached in time")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// checkResult verifies a successful result against what was requested.
func checkResult(op, clientID, requestID, walletID, keyType string, tx []byte, res *protocol.Result) error {
	if res.RequestID != requestID || res.ClientID != clientID || res.Op != op || res.WalletID != walletID {
		return fmt.Errorf("result %s/%q/%s/%s for request %s/%q/%s/%s", res.Op, res.ClientID, res.RequestID, res.WalletID, op, clientID, requestID, walletID)
	}
	if !res.Succeeded() || res.NodeID != "node0" {
		return fmt.Errorf("result %+v", res)
	}
	ec, ed := walletKeys(walletID)
	switch op {
	case protocol.OpKeygen:
		if res.ECDSAPubKey != hex.EncodeToString(ec.PubKey().SerializeCompressed()) {
			return fmt.Errorf("keygen ecdsa key %s", res.ECDSAPubKey)
		}
	case protocol.OpSign:
		pub := ec.PubKey().SerializeUncompressed()
		if keyType == protocol.KeyTypeEd25519 {
			pub = ed.Public().(ed25519.PublicKey)
		}
		return VerifySignResult(res, pub, tx)
	case protocol.OpReshare:
		if res.PubKey == "" || res.NewThreshold != 1 {
			return fmt.Errorf("reshare result %+v", res)
		}
	}
	return nil
}

func TestClientsGetOnlyTheirOwnResults(t *testing.T) {
	e := newEnv(t)
	keyA, keyB, keyL := edSigner(t), newIdentity(t), edSigner(t) // Ed25519 and P-256 client keys
	policy := policyFor(t, binding{keyA, []string{"svcA"}}, binding{keyB, []string{"svcB"}}, binding{keyL, []string{""}})
	node := startFakeNode(t, e.ctx, e.js, "node0", e.identity, policy)

	const n = 30
	type tc struct {
		name, clientID string
		c              *Client
		rec            *recorder
	}
	clients := []*tc{{name: "svcA", clientID: "svcA"}, {name: "svcB", clientID: "svcB"}, {name: "legacy"}}
	for _, cl := range clients {
		signer := keyL
		switch cl.name {
		case "svcA":
			signer = keyA
		case "svcB":
			signer = keyB
		}
		var opts []Option
		if cl.clientID != "" {
			opts = append(opts, WithClientID(cl.clientID))
		}
		cl.c = e.newClient(t, signer, opts...)
		cl.rec = &recorder{}
		for _, on := range []func(func(protocol.Result)) error{cl.c.OnWalletCreationResult, cl.c.OnSignResult, cl.c.OnReshareResult} {
			if err := on(cl.rec.add); err != nil {
				t.Fatal(err)
			}
		}
	}

	// Phase 1: 30 concurrent Wait calls per client, all three ops.
	var wg sync.WaitGroup
	errs := make(chan error, 3*n)
	for _, cl := range clients {
		for i := 0; i < n; i++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				reqID := fmt.Sprintf("%s-wait-%d", cl.name, i)
				wallet := fmt.Sprintf("%s-w%d", cl.name, i)
				var res *protocol.Result
				var err error
				var op, keyType string
				var tx []byte
				switch i % 3 {
				case 0:
					op = protocol.OpKeygen
					res, err = cl.c.KeygenAndWait(e.ctx, KeygenParams{WalletID: wallet, RequestID: reqID})
				case 1:
					op, keyType, tx = protocol.OpSign, protocol.KeyTypeSecp256k1, digest(reqID)
					if i%2 == 0 {
						keyType, tx = protocol.KeyTypeEd25519, append([]byte{0, 0}, reqID...)
					}
					res, err = cl.c.SignAndWait(e.ctx, SignParams{WalletID: wallet, KeyType: keyType, TxID: "tx" + reqID,
						Tx: tx, DerivationPath: []uint32{44, 0, uint32(i)}, RequestID: reqID})
				case 2:
					op, keyType = protocol.OpReshare, protocol.KeyTypeSecp256k1
					res, err = cl.c.ReshareAndWait(e.ctx, ReshareParams{WalletID: wallet, KeyType: keyType,
						SessionID: "sess-" + reqID, NodeIDs: []string{"node0", "node1"}, NewThreshold: 1, RequestID: reqID})
				}
				if err == nil {
					err = checkResult(op, cl.clientID, reqID, wallet, keyType, tx, res)
				}
				if err != nil {
					errs <- fmt.Errorf("%s request %d: %w", cl.name, i, err)
				}
			}()
		}
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if t.Failed() {
		t.FailNow()
	}
	for _, cl := range clients {
		if got := cl.rec.snapshot(); len(got) != 0 {
			t.Fatalf("%s: %d results went to callbacks instead of waiters", cl.name, len(got))
		}
	}

	// Phase 2: 30 concurrent fire-and-forget Sign calls per client; the
	// callbacks get exactly these.
	sent := map[string]map[string]bool{}
	var mu sync.Mutex
	for _, cl := range clients {
		sent[cl.name] = map[string]bool{}
		for i := 0; i < n; i++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				id, err := cl.c.Sign(e.ctx, SignParams{WalletID: "w" + cl.name, KeyType: protocol.KeyTypeSecp256k1,
					TxID: fmt.Sprintf("t%d", i), Tx: digest(fmt.Sprint(i))})
				if err != nil {
					t.Error(err)
					return
				}
				mu.Lock()
				sent[cl.name][id] = true
				mu.Unlock()
			}()
		}
	}
	wg.Wait()
	for _, cl := range clients {
		waitFor(t, 30*time.Second, func() bool { return len(cl.rec.snapshot()) >= n })
	}
	time.Sleep(300 * time.Millisecond) // anything extra would show up now
	for _, cl := range clients {
		got := cl.rec.snapshot()
		if len(got) != n {
			t.Errorf("%s: %d callback results, want %d", cl.name, len(got), n)
		}
		seen := map[string]bool{}
		for _, res := range got {
			if !sent[cl.name][res.RequestID] || res.ClientID != cl.clientID || seen[res.RequestID] {
				t.Errorf("%s: unexpected result %s (client %q)", cl.name, res.RequestID, res.ClientID)
			}
			seen[res.RequestID] = true
		}
		st := cl.c.Stats()
		if st.Delivered != 2*n || st.Dropped != 0 || st.Misrouted != 0 {
			t.Errorf("%s: stats %+v", cl.name, st)
		}
	}
	if node.rejected.Load() != 0 || node.handled.Load() != 6*n {
		t.Errorf("node handled %d, rejected %d", node.handled.Load(), node.rejected.Load())
	}
	st, _ := e.js.Stream(e.ctx, routing.ResultStream)
	waitFor(t, 5*time.Second, func() bool { info, _ := st.Info(e.ctx); return info.State.Msgs == 0 })
}

func pendingWaiters(c *Client) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.waiters)
}

func TestForgedAndMisroutedResultsAreDropped(t *testing.T) {
	e := newEnv(t)
	c := e.newClient(t, edSigner(t), WithClientID("svcA"))
	type outcome struct {
		res *protocol.Result
		err error
	}
	done := make(chan outcome, 1)
	go func() {
		res, err := c.SignAndWait(e.ctx, SignParams{WalletID: "w1", KeyType: protocol.KeyTypeSecp256k1, TxID: "t1",
			Tx: digest("x"), RequestID: "r-forged"})
		done <- outcome{res, err}
	}()
	waitFor(t, 5*time.Second, func() bool { return pendingWaiters(c) == 1 })

	res := &protocol.Result{Op: protocol.OpSign, ResultType: protocol.ResultSuccess, RequestID: "r-forged",
		ClientID: "svcA", KeyID: c.KeyID(), WalletID: "w1", TxID: "t1", KeyType: protocol.KeyTypeSecp256k1}
	ec, _ := walletKeys("w1")
	compact := decredecdsa.SignCompact(ec, digest("x"), true)
	if err := res.SetECDSASignature(compact[1:33], compact[33:], int(compact[0]-31)); err != nil {
		t.Fatal(err)
	}
	res.PubKey = hex.EncodeToString(ec.PubKey().SerializeCompressed())
	forger := newIdentity(t)
	e.publishResult(t, forger, "node0", res, "") // claims node0, signed by another key
	e.publishResult(t, forger, "node9", res, "") // a node not in the peer list
	// Correctly signed, but for svcB, published on svcA's subject.
	other := *res
	other.ClientID = "svcB"
	e.publishResult(t, e.identity, "node0", &other, "mpc.mpc_signing_result.svcA.complete")
	// Unsigned JSON.
	if _, err := e.js.Publish(e.ctx, "mpc.mpc_signing_result.svcA.complete", []byte(`{"request_id":"r-forged"}`)); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, func() bool { s := c.Stats(); return s.Dropped == 3 && s.Misrouted == 1 })
	select {
	case o := <-done:
		t.Fatalf("a forged result was delivered: %+v %v", o.res, o.err)
	case <-time.After(200 * time.Millisecond):
	}
	e.publishResult(t, e.identity, "node0", res, "")
	o := <-done
	if o.err != nil || o.res.NodeID != "node0" || o.res.RequestID != "r-forged" {
		t.Fatalf("genuine result: %+v %v", o.res, o.err)
	}
	if s := c.Stats(); s.Delivered != 1 {
		t.Fatalf("stats %+v", s)
	}
}

func TestWaitHonoursContext(t *testing.T) {
	e := newEnv(t) // no node: results never come
	c := e.newClient(t, edSigner(t), WithClientID("svcA"))
	params := SignParams{WalletID: "w1", KeyType: protocol.KeyTypeEd25519, TxID: "t1", Tx: []byte("m")}

	ctx, cancel := context.WithCancel(e.ctx)
	time.AfterFunc(200*time.Millisecond, cancel)
	start := time.Now()
	_, err := c.SignAndWait(ctx, params)
	if !errors.Is(err, context.Canceled) || time.Since(start) > 5*time.Second {
		t.Fatalf("cancel: %v after %s", err, time.Since(start))
	}
	ctx, cancel = context.WithTimeout(e.ctx, 300*time.Millisecond)
	defer cancel()
	if _, err := c.CreateWalletAndWait(ctx, "w2"); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("deadline: %v", err)
	}
	done, cancel2 := context.WithCancel(e.ctx)
	cancel2()
	if _, err := c.ReshareAndWait(done, ReshareParams{WalletID: "w", KeyType: protocol.KeyTypeEd25519, SessionID: "s",
		NodeIDs: []string{"a", "b"}, NewThreshold: 1}); !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled before the call: %v", err)
	}
	if n := pendingWaiters(c); n != 0 {
		t.Fatalf("%d waiters left behind", n)
	}
}
