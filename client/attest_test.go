package client

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hwsigner/signer/attest"
	"github.com/hwsigner/signer/policy"
	"github.com/hwsigner/signer/protocol"
	"github.com/hwsigner/signer/routing"
	"github.com/nats-io/nats.go"
)

// clusterEnv is an env whose client knows n node keys (node0..); the tests
// start fake nodes for some or all of them.
type clusterEnv struct {
	*env
	ids    map[string]*ecdsa.PrivateKey
	key    crypto.Signer // the client key, bound to svcA
	policy *policy.Policy
}

func newClusterEnv(t *testing.T, n int) *clusterEnv {
	t.Helper()
	e := newEnv(t)
	ce := &clusterEnv{env: e, ids: map[string]*ecdsa.PrivateKey{}, key: edSigner(t)}
	e.nodeKeys = map[string]crypto.PublicKey{}
	for i := range n {
		id := fmt.Sprintf("node%d", i)
		ce.ids[id] = newIdentity(t)
		e.nodeKeys[id] = ce.ids[id].Public()
	}
	e.identity = ce.ids["node0"]
	ce.policy = policyFor(t, binding{ce.key, []string{"svcA"}})
	return ce
}

// start starts fake nodes; tamper[id] makes node id dishonest.
func (ce *clusterEnv) start(t *testing.T, tamper map[string]func(protocol.Request, *protocol.Result), ids ...string) {
	t.Helper()
	for _, id := range ids {
		startTamperingNode(t, ce.ctx, ce.js, id, ce.ids[id], ce.policy, tamper[id])
	}
}

func (ce *clusterEnv) client(t *testing.T, opts ...Option) *Client {
	t.Helper()
	return ce.newClient(t, ce.key, append([]Option{WithClientID("svcA")}, opts...)...)
}

func (ce *clusterEnv) streamEmpty(t *testing.T) {
	t.Helper()
	st, err := ce.js.Stream(ce.ctx, routing.ResultStream)
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, func() bool { info, _ := st.Info(ce.ctx); return info != nil && info.State.Msgs == 0 })
}

var all3 = []string{"node0", "node1", "node2"}

// Honest committee of three (t+1 = 2): keygen takes all three, sign and
// reshare two; the third's result is a straggler, acked.
func TestAttestedResults(t *testing.T) {
	ce := newClusterEnv(t, 3)
	ce.start(t, nil, all3...)
	c := ce.client(t)
	if r := c.Rules(); r.Signers != 2 || len(r.Nodes) != 3 {
		t.Fatalf("rules %+v", r)
	}
	res, err := c.KeygenAndWait(ce.ctx, KeygenParams{WalletID: "w1", RequestID: "k1"})
	if err == nil {
		err = checkResult(protocol.OpKeygen, "svcA", "k1", "w1", "", nil, res)
	}
	if err != nil {
		t.Fatal(err)
	}
	for i, kt := range []string{protocol.KeyTypeSecp256k1, protocol.KeyTypeEd25519} {
		id := fmt.Sprintf("s%d", i)
		tx := digest(id)
		res, err := c.SignAndWait(ce.ctx, SignParams{WalletID: "w1", KeyType: kt, TxID: "t", Tx: tx, RequestID: id})
		if err == nil {
			res.NodeID = "node0" // checkResult's; any two nodes attest
			err = checkResult(protocol.OpSign, "svcA", id, "w1", kt, tx, res)
		}
		if err != nil {
			t.Fatalf("%s: %v", kt, err)
		}
	}
	if _, err := c.ReshareAndWait(ce.ctx, ReshareParams{WalletID: "w1", KeyType: protocol.KeyTypeEd25519, SessionID: "sess",
		NodeIDs: all3, NewThreshold: 1}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, func() bool { return c.Stats().Stragglers == 3 })
	if s := c.Stats(); s.Delivered != 4 || s.Dropped != 0 || s.Unclaimed != 0 {
		t.Fatalf("stats %+v", s)
	}
	ce.streamEmpty(t)
}

// Dishonest nodes, one at a time (t = 1) or t+1 colluding: the Wait helpers
// return the honest outcome or RESULT_MISMATCH naming the node, never what
// the forgers said.
func TestDishonestNodes(t *testing.T) {
	forgedEC, forgedED := walletKeys("forged")
	forgedECPub := hex.EncodeToString(forgedEC.PubKey().SerializeCompressed())
	forgeKey := func(_ protocol.Request, r *protocol.Result) {
		if r.Op == protocol.OpKeygen {
			r.ECDSAPubKey = forgedECPub
		}
	}
	forgeSig := func(req protocol.Request, r *protocol.Result) {
		if s, ok := req.(*protocol.SigningRequest); ok && r.Succeeded() {
			_ = r.SetEdDSASignature(ed25519.Sign(forgedED, s.Tx)) // valid, under another key
			r.PubKey = hex.EncodeToString(forgedED.Public().(ed25519.PublicKey))
		}
	}
	garbageSig := func(_ protocol.Request, r *protocol.Result) {
		if r.Op == protocol.OpSign && r.Succeeded() {
			r.Signature = strings.Repeat("ab", 64)
		}
	}
	forgeShare := func(_ protocol.Request, r *protocol.Result) {
		if r.Op == protocol.OpReshare {
			r.PubKey = forgedECPub
		}
	}
	forgeError := func(_ protocol.Request, r *protocol.Result) { r.SetError(protocol.CodeUnknownWallet, "forged") }

	type tamper = map[string]func(protocol.Request, *protocol.Result)
	_, wantED := walletKeys("w1")
	wantEDPub := hex.EncodeToString(wantED.Public().(ed25519.PublicKey))
	tests := []struct {
		name   string
		tamper tamper
		op     string
		code   string // "" : the honest success
		named  string // a node the error must name
	}{
		{"keygen: one node reports another key", tamper{"node2": forgeKey}, protocol.OpKeygen, protocol.CodeResultMismatch, "node2"},
		{"keygen: one node's error", tamper{"node1": forgeError}, protocol.OpKeygen, protocol.CodeUnknownWallet, "node1"},
		{"sign: one node's valid signature under another key", tamper{"node2": forgeSig}, protocol.OpSign, "", ""},
		{"sign: one node's garbage signature", tamper{"node0": garbageSig}, protocol.OpSign, "", ""},
		{"sign: one node's error", tamper{"node0": forgeError}, protocol.OpSign, "", ""},
		{"sign: t+1 nodes agree on a garbage signature", tamper{"node0": garbageSig, "node1": garbageSig}, protocol.OpSign, protocol.CodeResultMismatch, ""},
		{"reshare: one node reports another key", tamper{"node1": forgeShare}, protocol.OpReshare, "", ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ce := newClusterEnv(t, 3)
			ce.start(t, tc.tamper, all3...)
			c := ce.client(t)
			var res *protocol.Result
			var err error
			msg := []byte("pay 1")
			switch tc.op {
			case protocol.OpKeygen:
				res, err = c.KeygenAndWait(ce.ctx, KeygenParams{WalletID: "w1"})
			case protocol.OpSign:
				res, err = c.SignAndWait(ce.ctx, SignParams{WalletID: "w1", KeyType: protocol.KeyTypeEd25519, TxID: "t", Tx: msg})
			case protocol.OpReshare:
				res, err = c.ReshareAndWait(ce.ctx, ReshareParams{WalletID: "w1", KeyType: protocol.KeyTypeEd25519, SessionID: "s",
					NodeIDs: all3, NewThreshold: 1})
			}
			if res != nil && (res.ECDSAPubKey == forgedECPub || res.PubKey == forgedECPub ||
				res.PubKey == hex.EncodeToString(forgedED.Public().(ed25519.PublicKey))) {
				t.Fatalf("a forged value was returned: %+v", res)
			}
			if tc.code == "" {
				if err != nil {
					t.Fatal(err)
				}
				switch tc.op {
				case protocol.OpSign:
					if err := VerifySignResult(res, wantED.Public().(ed25519.PublicKey), msg); err != nil {
						t.Fatal(err)
					}
				case protocol.OpReshare:
					if res.PubKey != wantEDPub {
						t.Fatalf("reshare pub_key %s", res.PubKey)
					}
				}
				return
			}
			var re *ResultError
			var ae *attest.Error
			if !errors.As(err, &re) || re.Code != tc.code || !errors.As(err, &ae) || ae.Code != tc.code || res == nil || res.Succeeded() {
				t.Fatalf("want %s, got %+v %v", tc.code, res, err)
			}
			if tc.named != "" && (re.Nodes[tc.named] == "" || !strings.Contains(re.Reason, tc.named)) {
				t.Fatalf("%s not named: %v %q", tc.named, re.Nodes, re.Reason)
			}
			if tc.code == protocol.CodeResultMismatch && tc.op == protocol.OpKeygen && !strings.Contains(re.Nodes[tc.named], forgedECPub) {
				t.Fatalf("the forger's report is not shown: %q", re.Nodes[tc.named])
			}
		})
	}
}

// Junk published first under the Nats-Msg-Ids of the old scheme
// (request_id, result-<request_id>) and under guesses of the new ones
// suppresses neither the request nor any node's result.
func TestJunkUnderGuessedMsgIDs(t *testing.T) {
	ce := newClusterEnv(t, 3)
	ce.start(t, nil, all3...)
	c := ce.client(t)
	const reqID, wallet = "junk-1", "w-junk"
	junk := []byte(`{"op":"keygen","request_id":"junk-1","client_id":"svcA","result_type":"success","ecdsa_pub_key":"00"}`)
	reqSubject, _ := routing.KeygenRequestSubject(wallet)
	resSubject, _ := routing.KeygenResultSubject("svcA", wallet)
	ids := map[string][]string{
		reqSubject: {reqID, routing.RequestMsgID("svcA", reqID, junk), routing.RequestMsgID("", reqID, junk)},
		resSubject: {"result-" + reqID},
	}
	for _, n := range all3 {
		ids[resSubject] = append(ids[resSubject], routing.ResultMsgID("svcA", reqID, n, junk), routing.ResultMsgID("", reqID, n, junk))
	}
	published := 0
	for subject, list := range ids {
		for _, id := range list {
			if _, err := ce.js.PublishMsg(ce.ctx, &nats.Msg{Subject: subject, Data: junk, Header: nats.Header{"Nats-Msg-Id": {id}}}); err != nil {
				t.Fatal(err)
			}
			published++
		}
	}
	res, err := c.KeygenAndWait(ce.ctx, KeygenParams{WalletID: wallet, RequestID: reqID})
	if err == nil {
		err = checkResult(protocol.OpKeygen, "svcA", reqID, wallet, "", nil, res)
	}
	if err != nil {
		t.Fatal(err)
	}
	if s := c.Stats(); s.Dropped != uint64(len(ids[resSubject])) {
		t.Fatalf("stats %+v, want the %d junk results dropped", s, len(ids[resSubject]))
	}
}

// A callback gets one attested result per request, exactly once, and every
// node's result is acked.
func TestCallbackOncePerRequest(t *testing.T) {
	ce := newClusterEnv(t, 3)
	ce.start(t, nil, all3...)
	c := ce.client(t)
	rec := &recorder{}
	if err := c.OnSignResult(rec.add); err != nil {
		t.Fatal(err)
	}
	const n = 10
	sent := map[string]bool{}
	for i := range n {
		id, err := c.Sign(ce.ctx, SignParams{WalletID: "w1", KeyType: protocol.KeyTypeSecp256k1, TxID: "t", Tx: digest(fmt.Sprint(i))})
		if err != nil {
			t.Fatal(err)
		}
		sent[id] = true
	}
	waitFor(t, 20*time.Second, func() bool { return c.Stats().Stragglers == n })
	ce.streamEmpty(t)
	got := rec.snapshot()
	if len(got) != n {
		t.Fatalf("%d callback results, want %d", len(got), n)
	}
	for _, r := range got {
		if !sent[r.RequestID] || !r.Succeeded() {
			t.Fatalf("unexpected %+v", r)
		}
		delete(sent, r.RequestID)
	}
}

// A callback request that never gets t+1 results is decided TIMEOUT, once,
// saying what was seen, and its result is acked: a request this client
// sent at its expiry plus the grace; the results of one it did not send
// (another process of the client sent it) the request TTL after the first.
func TestCallbackHoldTimeout(t *testing.T) {
	tests := []struct {
		name   string
		ours   bool
		ttl    time.Duration
		grace  time.Duration
		within [2]time.Duration // the decision, after the request is sent (ours) or its first result published
	}{
		{"sent by this client", true, 1500 * time.Millisecond, 500 * time.Millisecond, [2]time.Duration{2 * time.Second, 12 * time.Second}},
		{"sent by another process", false, 1500 * time.Millisecond, time.Hour, [2]time.Duration{1500 * time.Millisecond, 11 * time.Second}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			ce := newClusterEnv(t, 3)
			c := ce.client(t, WithRequestTTL(tc.ttl), WithExpiryGrace(tc.grace), WithResultAckWait(time.Second))
			var mu sync.Mutex
			var got []attest.Decision
			if err := c.OnSignDecision(func(d attest.Decision) { mu.Lock(); got = append(got, d); mu.Unlock() }); err != nil {
				t.Fatal(err)
			}
			start := time.Now()
			id := "hold-1"
			if tc.ours {
				ce.start(t, nil, "node0") // node1 and node2 are down
				if err := sendOp(ce.ctx, c, protocol.OpSign, id); err != nil {
					t.Fatal(err)
				}
			} else {
				ce.publishLate(t, c, protocol.OpSign, id, "node0")
			}
			waitFor(t, 20*time.Second, func() bool { mu.Lock(); defer mu.Unlock(); return len(got) == 1 })
			if at := time.Since(start); at < tc.within[0]-time.Millisecond || at > tc.within[1] {
				t.Fatalf("decided after %s, want within %v", at, tc.within)
			}
			mu.Lock()
			d := got[0]
			mu.Unlock()
			var ae *attest.Error
			if !errors.As(d.Err, &ae) || ae.Code != protocol.CodeTimeout || d.Result.RequestID != id || !d.Result.IsTimeout ||
				!strings.HasPrefix(ae.Nodes["node0"], "success") || len(ae.Nodes) != 1 || len(d.Attestations) != 1 {
				t.Fatalf("decision %+v / %v", d.Result, d.Err)
			}
			ce.streamEmpty(t)
			if s := c.Stats(); s.Delivered != 1 || s.Timeouts != 1 {
				t.Fatalf("stats %+v", s)
			}
		})
	}
}

// A Wait helper's deadline gives TIMEOUT with what was seen, wrapping the
// context's error.
func TestWaitTimeoutSaysWhatItSaw(t *testing.T) {
	ce := newClusterEnv(t, 3)
	ce.start(t, nil, "node0")
	c := ce.client(t)
	ctx, cancel := context.WithTimeout(ce.ctx, 2*time.Second)
	defer cancel()
	_, err := c.SignAndWait(ctx, SignParams{WalletID: "w1", KeyType: protocol.KeyTypeEd25519, TxID: "t", Tx: []byte("m")})
	var re *ResultError
	if !errors.Is(err, context.DeadlineExceeded) || !errors.As(err, &re) || re.Code != protocol.CodeTimeout || !re.IsTimeout ||
		!strings.HasPrefix(re.Nodes["node0"], "success") || !strings.Contains(err.Error(), "node0: success") {
		t.Fatalf("%v", err)
	}
}

// Results of an undecided request stay in the stream: a client that stops
// before the decision loses nothing, the next one decides it.
func TestUndecidedResultsSurviveAClientRestart(t *testing.T) {
	ce := newClusterEnv(t, 3)
	ce.start(t, nil, "node0")
	if _, err := routing.NodeConsumer(ce.ctx, ce.js, "node1"); err != nil { // node1 is down, its durable consumer exists
		t.Fatal(err)
	}
	c1 := ce.client(t)
	if err := c1.OnSignResult(func(protocol.Result) { t.Error("decided with one result") }); err != nil {
		t.Fatal(err)
	}
	id, err := c1.Sign(ce.ctx, SignParams{WalletID: "w1", KeyType: protocol.KeyTypeEd25519, TxID: "t", Tx: []byte("m")})
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, func() bool {
		c1.mu.Lock()
		defer c1.mu.Unlock()
		return len(c1.pending) == 1
	})
	if err := c1.Close(); err != nil {
		t.Fatal(err)
	}
	ce.start(t, nil, "node1")
	c2 := ce.client(t)
	rec := &recorder{}
	if err := c2.OnSignResult(rec.add); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 20*time.Second, func() bool { return len(rec.snapshot()) == 1 })
	if r := rec.snapshot()[0]; r.RequestID != id || !r.Succeeded() {
		t.Fatalf("%+v", r)
	}
	ce.streamEmpty(t)
}

func TestSignersOption(t *testing.T) {
	ce := newClusterEnv(t, 4)
	tests := []struct {
		name string
		opts []Option
		want int // 0: New fails
	}{
		{"default majority of 4", nil, 3},
		{"set", []Option{WithSigners(2)}, 2},
		{"all", []Option{WithSigners(4)}, 4},
		{"more than the nodes", []Option{WithSigners(5)}, 0},
		{"zero", []Option{WithSigners(0)}, 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			nc, err := nats.Connect(ce.srv.ClientURL())
			if err != nil {
				t.Fatal(err)
			}
			defer nc.Close()
			c, err := New(nc, ce.key, append([]Option{WithNodeKeys(ce.nodeKeys)}, tc.opts...)...)
			if tc.want == 0 {
				if err == nil {
					t.Fatal("accepted")
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			if r := c.Rules(); r.Signers != tc.want || len(r.Nodes) != 4 || r.Nodes[0] != "node0" {
				t.Fatalf("rules %+v", r)
			}
		})
	}
}

// REPLAYED answers (a retry under the same request_id, or someone re-sending
// a request's bytes) decide nothing: the retry gets the original outcome;
// replays of a request handled before reach no callback and are acked.
func TestReplayedAnswers(t *testing.T) {
	ce := newClusterEnv(t, 3)
	c := ce.client(t, WithRequestTTL(2*time.Second), WithResultAckWait(time.Second))
	replayed := func(reqID string) *protocol.Result {
		r := &protocol.Result{Op: protocol.OpSign, RequestID: reqID, ClientID: "svcA", KeyID: c.KeyID(), WalletID: "w1", TxID: "t",
			KeyType: protocol.KeyTypeEd25519}
		r.SetError(protocol.CodeReplayed, "already taken")
		return r
	}

	// A waiter: REPLAYED from every node first, then the original successes.
	_, ed := walletKeys("w1")
	msg := []byte("m")
	done := make(chan error, 1)
	go func() {
		res, err := c.SignAndWait(ce.ctx, SignParams{WalletID: "w1", KeyType: protocol.KeyTypeEd25519, TxID: "t", Tx: msg, RequestID: "rp-1"})
		if err == nil && !res.Succeeded() {
			err = fmt.Errorf("result %+v", res)
		}
		done <- err
	}()
	waitFor(t, 5*time.Second, func() bool { return pendingWaiters(c) == 1 })
	for _, n := range all3 {
		ce.publishResult(t, ce.ids[n], n, replayed("rp-1"), "")
	}
	for _, n := range []string{"node0", "node1"} {
		ok := &protocol.Result{Op: protocol.OpSign, ResultType: protocol.ResultSuccess, RequestID: "rp-1", ClientID: "svcA", KeyID: c.KeyID(),
			WalletID: "w1", TxID: "t", KeyType: protocol.KeyTypeEd25519, PubKey: hex.EncodeToString(ed.Public().(ed25519.PublicKey))}
		_ = ok.SetEdDSASignature(ed25519.Sign(ed, msg))
		ce.publishResult(t, ce.ids[n], n, ok, "")
	}
	if err := <-done; err != nil {
		t.Fatalf("retry: %v", err)
	}

	// A callback: replays of a request decided long ago.
	called := make(chan protocol.Result, 1)
	if err := c.OnSignResult(func(r protocol.Result) { called <- r }); err != nil {
		t.Fatal(err)
	}
	for _, n := range all3 {
		ce.publishResult(t, ce.ids[n], n, replayed("rp-old"), "")
	}
	waitFor(t, 15*time.Second, func() bool { return c.Stats().Stragglers == 3 }) // rp-old's three, acked after the hold
	ce.streamEmpty(t)
	select {
	case r := <-called:
		t.Fatalf("a replay reached the callback: %+v", r)
	default:
	}
}

// A correctly signed result for our client ID but another client key (a
// refusal of a key that claimed our ID) never reaches the callback.
func TestResultForAnotherKeyIsDropped(t *testing.T) {
	ce := newClusterEnv(t, 1)
	c := ce.client(t)
	rec := &recorder{}
	if err := c.OnSignResult(rec.add); err != nil {
		t.Fatal(err)
	}
	r := &protocol.Result{Op: protocol.OpSign, RequestID: "mine-1", ClientID: "svcA", KeyID: "0123456789abcdef0123456789abcdef"}
	r.SetError(protocol.CodeUnauthorizedClient, "key may not use svcA")
	ce.publishResult(t, ce.ids["node0"], "node0", r, "")
	waitFor(t, 5*time.Second, func() bool { return c.Stats().Misrouted == 1 })
	ce.streamEmpty(t)
	if got := rec.snapshot(); len(got) != 0 {
		t.Fatalf("callback got %+v", got)
	}
}
