package devcluster_test

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/hwsigner/signer/client"
	"github.com/hwsigner/signer/internal/fixtures"
	"github.com/hwsigner/signer/internal/testhsm"
	"github.com/hwsigner/signer/internal/testtpm"
	"github.com/hwsigner/signer/keyfile"
	"github.com/hwsigner/signer/policy"
	"github.com/hwsigner/signer/protocol"
	"github.com/hwsigner/signer/routing"
	"github.com/hwsigner/signer/signer/config"
	"github.com/hwsigner/signer/signer/devcluster"
)

type clientKey struct {
	signer crypto.Signer
	ids    []string
}

func newKeys(t *testing.T) map[string]clientKey {
	t.Helper()
	_, edA, _ := ed25519.GenerateKey(rand.Reader)
	p256, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	_, legacy, _ := ed25519.GenerateKey(rand.Reader)
	return map[string]clientKey{
		"svcA":   {edA, []string{"svcA"}},
		"svcB":   {p256, []string{"svcB"}},
		"legacy": {legacy, []string{""}},
	}
}

func policyFor(t *testing.T, keys map[string]clientKey) *policy.Policy {
	t.Helper()
	var cfg policy.Config
	for name, k := range keys {
		pem, err := keyfile.MarshalPublicKeyPEM(k.signer.Public())
		if err != nil {
			t.Fatal(err)
		}
		cfg.Clients = append(cfg.Clients, policy.ClientConfig{Name: name, PublicKey: pem, ClientIDs: k.ids, Ops: []string{"keygen", "sign", "reshare"}})
	}
	p, err := policy.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func start(t *testing.T, n, th int, keys map[string]clientKey) *devcluster.Cluster {
	t.Helper()
	testhsm.Setup(t)
	return startWith(t, n, th, keys, func(string) string { return testhsm.Token(t, "node") })
}

// startWith starts a cluster whose node backends come from uriFor (called
// once per node).
func startWith(t *testing.T, n, th int, keys map[string]clientKey, uriFor func(nodeID string) string) *devcluster.Cluster {
	t.Helper()
	return startWithPolicy(t, n, th, policyFor(t, keys), uriFor)
}

// startWithPolicy is startWith with a client policy of the caller's.
func startWithPolicy(t *testing.T, n, th int, pol *policy.Policy, uriFor func(nodeID string) string) *devcluster.Cluster {
	t.Helper()
	return startWithOptions(t, n, th, pol, uriFor, nil)
}

// startWithOptions is startWithPolicy with the cluster options adjusted by
// adjust (when not nil) before the cluster starts.
func startWithOptions(t *testing.T, n, th int, pol *policy.Policy, uriFor func(nodeID string) string, adjust func(*devcluster.Options)) *devcluster.Cluster {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var mu sync.Mutex
	uris := map[string]string{}
	o := devcluster.Options{
		Dir: t.TempDir(), Nodes: n, Signers: config.SignersFromTSS(th),
		TokenURI: func(id string) (string, error) {
			mu.Lock()
			defer mu.Unlock()
			if uris[id] == "" {
				uris[id] = uriFor(id)
			}
			return uris[id], nil
		},
		Policy:        pol,
		TestPreParams: fixtures.PreParams(t),
		SignTimeout:   90 * time.Second,
		KeygenTimeout: 4 * time.Minute,
	}
	if adjust != nil {
		adjust(&o)
	}
	c, err := devcluster.Start(ctx, o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Stop)
	return c
}

// newClient connects a client with key k; extra options (WithSigners when
// the cluster's t+1 is not a majority) come after the defaults.
func newClient(t *testing.T, c *devcluster.Cluster, k clientKey, extra ...client.Option) *client.Client {
	t.Helper()
	id := k.ids[0]
	prefix := "_INBOX_legacy"
	if id != "" {
		prefix = "_INBOX_" + id
	}
	nc, err := nats.Connect(c.URL, nats.CustomInboxPrefix(prefix))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	opts := []client.Option{client.WithNodeKeys(c.NodeKeys)}
	if id != "" {
		opts = append(opts, client.WithClientID(id))
	}
	cl, err := client.New(nc, k.signer, append(opts, extra...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cl.Close() })
	return cl
}

func mustHex(t *testing.T, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(s)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func testCeremonies(t *testing.T, n, th int, keyTypes ...string) {
	keys := newKeys(t)
	runCeremonies(t, start(t, n, th, keys), keys, keyTypes...)
}

func runCeremonies(t *testing.T, c *devcluster.Cluster, keys map[string]clientKey, keyTypes ...string) {
	cl := newClient(t, c, keys["svcA"])
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	res, err := cl.KeygenAndWait(ctx, client.KeygenParams{WalletID: "wallet-1", KeyTypes: keyTypes})
	if err != nil {
		t.Fatalf("keygen: %v", err)
	}
	edPub := mustHex(t, res.EdDSAPubKey)
	if len(edPub) != 32 {
		t.Fatalf("ed25519 public key: %d bytes", len(edPub))
	}
	msg := []byte{0, 0, 0, 'h', 'i'} // leading zero bytes must be kept
	eres, err := cl.SignAndWait(ctx, client.SignParams{WalletID: "wallet-1", KeyType: "ed25519", TxID: "tx-2", Tx: msg})
	if err != nil {
		t.Fatalf("eddsa sign: %v", err)
	}
	if err := client.VerifyEd25519(edPub, msg, mustHex(t, eres.Signature)); err != nil {
		t.Fatalf("eddsa signature: %v", err)
	}
	if len(keyTypes) == 1 {
		return
	}
	ecPub := mustHex(t, res.ECDSAPubKey)
	if len(ecPub) != 33 {
		t.Fatalf("secp256k1 public key: %d bytes", len(ecPub))
	}
	digest := sha256.Sum256([]byte("transfer 1 BTC"))
	sres, err := cl.SignAndWait(ctx, client.SignParams{WalletID: "wallet-1", KeyType: "secp256k1", TxID: "tx-1", Tx: digest[:]})
	if err != nil {
		t.Fatalf("ecdsa sign: %v", err)
	}
	if err := client.VerifyECDSA(ecPub, digest[:], mustHex(t, sres.R), mustHex(t, sres.S), sres.SignatureRecovery); err != nil {
		t.Fatalf("ecdsa signature: %v", err)
	}
}

func TestCeremonies2of3(t *testing.T) { testCeremonies(t, 3, 1) }

// TestCeremoniesMixedHardware: node0 and node2 seal under TPMs (swtpm, node0
// bound to PCR 16), node1 under SoftHSM2. Keygen and both signatures work,
// and every node's round messages are signed by its hardware identity key.
func TestCeremoniesMixedHardware(t *testing.T) {
	testhsm.Setup(t)
	keys := newKeys(t)
	c := startWith(t, 3, 1, keys, func(id string) string {
		switch id {
		case "node0":
			return testtpm.Start(t).URI("pcrs=16")
		case "node2":
			return testtpm.Start(t).URI("")
		}
		return testhsm.Token(t, "node")
	})
	runCeremonies(t, c, keys)
}

// TestCeremonies3of5: keygen of both key types among five nodes, then 3-of-5
// ECDSA and EdDSA signing.
func TestCeremonies3of5(t *testing.T) { testCeremonies(t, 5, 2) }

// TestHostileRequests: forged, expired, replayed, spoofed clientID and unknown
// wallet each get the documented outcome and the nodes stay up.
func TestHostileRequests(t *testing.T) {
	keys := newKeys(t)
	c := start(t, 3, 1, keys)
	cl := newClient(t, c, keys["svcA"])
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	if _, err := cl.KeygenAndWait(ctx, client.KeygenParams{WalletID: "w-ed", KeyTypes: []string{"ed25519"}}); err != nil {
		t.Fatal(err)
	}
	// got: the client's decisions, one per request. seen: every node result
	// published on svcA's subject (a core NATS subscription sees each
	// publication without consuming it): request -> node -> error code.
	var mu sync.Mutex
	got := map[string][]protocol.Result{}
	if err := cl.OnSignResult(func(r protocol.Result) {
		mu.Lock()
		got[r.RequestID] = append(got[r.RequestID], r)
		mu.Unlock()
	}); err != nil {
		t.Fatal(err)
	}
	nc, _ := nats.Connect(c.URL)
	defer nc.Close()
	seen := map[string]map[string]map[string]protocol.Result{}
	resSubj, _ := routing.SigningResultSubject("svcA")
	if _, err := nc.Subscribe(resSubj, func(m *nats.Msg) {
		r, err := protocol.VerifyResult(m.Data, c.NodeKeys)
		if err != nil {
			return
		}
		mu.Lock()
		defer mu.Unlock()
		if seen[r.RequestID] == nil {
			seen[r.RequestID] = map[string]map[string]protocol.Result{}
		}
		if seen[r.RequestID][r.ErrorCode] == nil {
			seen[r.RequestID][r.ErrorCode] = map[string]protocol.Result{}
		}
		seen[r.RequestID][r.ErrorCode][r.NodeID] = *r
	}); err != nil {
		t.Fatal(err)
	}
	nodes := func(id, code string) int { // distinct nodes that published code ("" : success) for id
		mu.Lock()
		defer mu.Unlock()
		return len(seen[id][code])
	}
	decisions := func(id string) []protocol.Result {
		mu.Lock()
		defer mu.Unlock()
		return append([]protocol.Result(nil), got[id]...)
	}
	js, _ := jetstream.New(nc)
	subj, _ := routing.SigningRequestSubject("w-ed")
	publishOn := func(subj string, raw []byte, msgID string) {
		t.Helper()
		if _, err := js.Publish(ctx, subj, raw, jetstream.WithMsgID(msgID)); err != nil {
			t.Fatal(err)
		}
	}
	publish := func(raw []byte, msgID string) { t.Helper(); publishOn(subj, raw, msgID) }
	build := func(signer crypto.Signer, clientID, reqID, wallet string, created time.Time) []byte {
		t.Helper()
		r := &protocol.SigningRequest{WalletID: wallet, KeyType: "ed25519", TxID: "t-" + reqID, Tx: []byte("msg")}
		r.Op, r.ClientID, r.RequestID = protocol.OpSign, clientID, reqID
		r.SetTimes(created, 5*time.Minute)
		raw, err := protocol.SignRequest(ctx, signer, protocol.OpSign, r)
		if err != nil {
			t.Fatal(err)
		}
		return raw
	}
	_, stranger, _ := ed25519.GenerateKey(rand.Reader)
	now := time.Now()
	// Forged: an unknown key. No result; counted.
	publish(build(stranger, "svcA", "forged-1", "w-ed", now), "forged-1")
	// Expired.
	publish(build(keys["svcA"].signer, "svcA", "expired-1", "w-ed", now.Add(-10*time.Minute)), "expired-1")
	// Unknown wallet (on its own subject: a body naming another wallet than
	// the subject is dropped).
	unknownSubj, _ := routing.SigningRequestSubject("no-such-wallet")
	publishOn(unknownSubj, build(keys["svcA"].signer, "svcA", "unknown-1", "no-such-wallet", now), "unknown-1")
	// Spoofed clientID: svcB's key claims svcA; every node refuses on the
	// claimed svcA's subject with svcB's key_id. svcA's client drops those
	// (another key's), svcB gets nothing.
	clB := newClient(t, c, keys["svcB"])
	var bmu sync.Mutex
	var bgot []protocol.Result
	_ = clB.OnSignResult(func(r protocol.Result) { bmu.Lock(); bgot = append(bgot, r); bmu.Unlock() })
	publish(build(keys["svcB"].signer, "svcA", "spoof-1", "w-ed", now), "spoof-1")
	// Replayed: the same signed request twice (a fresh Nats-Msg-Id defeats
	// JetStream's dedupe; the nodes' journal catches it). Each node answers
	// the replay REPLAYED; the client decided the request with the two
	// signers' successes and never hands a REPLAYED to the callback.
	good := build(keys["svcA"].signer, "svcA", "replay-1", "w-ed", now)
	publish(good, "replay-1a")
	waitFor(t, func() bool { return len(decisions("replay-1")) == 1 && nodes("replay-1", "") == 2 })
	publish(good, "replay-1b")

	waitFor(t, func() bool {
		return nodes("expired-1", protocol.CodeExpired) == 3 && nodes("unknown-1", protocol.CodeUnknownWallet) == 3 &&
			nodes("replay-1", protocol.CodeReplayed) == 3 && nodes("spoof-1", protocol.CodeUnauthorizedClient) == 3
	})
	// The client has taken all of them: the refusals of svcB's key dropped,
	// the REPLAYED answers acked as results of a decided request.
	waitFor(t, func() bool { s := cl.Stats(); return s.Misrouted == 3 && s.Stragglers >= 3+2 })
	checks := []struct{ id, code string }{{"expired-1", protocol.CodeExpired}, {"unknown-1", protocol.CodeUnknownWallet}, {"replay-1", ""}}
	for _, ch := range checks {
		if d := decisions(ch.id); len(d) != 1 || d[0].ErrorCode != ch.code {
			t.Errorf("%s: decisions %+v, want one with code %q", ch.id, d, ch.code)
		}
	}
	keyB, _ := protocol.KeyID(keys["svcB"].signer.Public())
	mu.Lock()
	for node, r := range seen["spoof-1"][protocol.CodeUnauthorizedClient] {
		if r.KeyID != keyB || r.ClientID != "svcA" {
			t.Errorf("spoof: %s's UNAUTHORIZED_CLIENT has key_id %q client_id %q, want svcB's key %q on svcA", node, r.KeyID, r.ClientID, keyB)
		}
	}
	mu.Unlock()
	if d := decisions("spoof-1"); len(d) != 0 {
		t.Errorf("svcA's callback got the refusal of svcB's key: %+v", d)
	}
	if d := decisions("forged-1"); len(d) != 0 || nodes("forged-1", "") != 0 {
		t.Errorf("results for the forged request: %+v", d)
	}
	bmu.Lock()
	if len(bgot) != 0 {
		t.Errorf("svcB received results: %+v", bgot)
	}
	bmu.Unlock()
	var forged int64
	for _, id := range c.NodeIDs {
		forged += c.Node(id).Stats().InvalidSignature
	}
	if forged < 3 {
		t.Errorf("forged request counted %d times, want once per node", forged)
	}
	// The nodes are still up: a normal request succeeds.
	if _, err := cl.SignAndWait(ctx, client.SignParams{WalletID: "w-ed", KeyType: "ed25519", TxID: "after", Tx: []byte("ok")}); err != nil {
		t.Fatalf("after hostile input: %v", err)
	}
}

// TestOneNodeDown: 2-of-3 signing works with a node stopped; keygen fails
// fast with NODES_NOT_READY.
func TestOneNodeDown(t *testing.T) {
	keys := newKeys(t)
	c := start(t, 3, 1, keys)
	cl := newClient(t, c, keys["legacy"])
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	// ed25519 keeps this test short; ECDSA signing with t+1 of n is covered
	// by TestCeremonies2of3, and signer selection is the same for both.
	res, err := cl.KeygenAndWait(ctx, client.KeygenParams{WalletID: "w-down", KeyTypes: []string{"ed25519"}})
	if err != nil {
		t.Fatal(err)
	}
	c.StopNode("node1")
	waitFor(t, func() bool {
		return c.WaitReady(ctx, "node1") != nil
	})
	for i := 0; i < 3; i++ { // several requests: the chosen signers vary with the request
		msg := []byte(fmt.Sprint("with one node down ", i))
		sres, err := cl.SignAndWait(ctx, client.SignParams{WalletID: "w-down", KeyType: "ed25519", TxID: "tx", Tx: msg})
		if err != nil {
			t.Fatalf("sign with one node down: %v", err)
		}
		if err := client.VerifyEd25519(mustHex(t, res.EdDSAPubKey), msg, mustHex(t, sres.Signature)); err != nil {
			t.Fatal(err)
		}
	}
	start := time.Now()
	_, err = cl.CreateWalletAndWait(ctx, "w-down-2")
	var re *client.ResultError
	if !errors.As(err, &re) || re.Code != protocol.CodeNodesNotReady {
		t.Fatalf("keygen with a node down: %v", err)
	}
	t.Logf("keygen refused in %s", time.Since(start).Round(time.Millisecond))
	// The node comes back and catches up from its durable consumer.
	if err := c.RestartNode(ctx, "node1"); err != nil {
		t.Fatal(err)
	}
}

// TestRouting: svcA, svcB and a legacy client each send 30 concurrent
// requests; every result reaches its requester and no one else.
func TestRouting(t *testing.T) {
	keys := newKeys(t)
	c := start(t, 3, 1, keys)
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	var wg sync.WaitGroup
	errs := make(chan error, 100)
	for _, name := range []string{"svcA", "svcB", "legacy"} {
		cl := newClient(t, c, keys[name])
		wallet := "w-" + name
		if _, err := cl.KeygenAndWait(ctx, client.KeygenParams{WalletID: wallet, KeyTypes: []string{"ed25519"}}); err != nil {
			t.Fatal(err)
		}
		for i := 0; i < 30; i++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				var res *protocol.Result
				var err error
				if i%10 == 0 {
					res, err = cl.KeygenAndWait(ctx, client.KeygenParams{WalletID: fmt.Sprintf("%s-k%d", wallet, i), KeyTypes: []string{"ed25519"}})
				} else {
					res, err = cl.SignAndWait(ctx, client.SignParams{WalletID: wallet, KeyType: "ed25519", TxID: fmt.Sprint("tx", i), Tx: []byte(fmt.Sprint(name, i))})
				}
				if err != nil {
					errs <- fmt.Errorf("%s #%d: %w", name, i, err)
					return
				}
				if res.ClientID != keys[name].ids[0] {
					errs <- fmt.Errorf("%s got a result for client %q", name, res.ClientID)
				}
			}()
		}
		t.Cleanup(func() {
			if s := cl.Stats(); s.Misrouted != 0 {
				t.Errorf("%s: %d misrouted results", name, s.Misrouted)
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(2 * time.Minute)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met in time")
		}
		time.Sleep(50 * time.Millisecond)
	}
}
