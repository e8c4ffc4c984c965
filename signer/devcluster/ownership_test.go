package devcluster_test

import (
	"context"
	"crypto"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/hwsigner/signer/client"
	"github.com/hwsigner/signer/internal/testhsm"
	"github.com/hwsigner/signer/keyfile"
	"github.com/hwsigner/signer/policy"
	"github.com/hwsigner/signer/protocol"
	"github.com/hwsigner/signer/routing"
	"github.com/hwsigner/signer/signer/devcluster"
	"github.com/hwsigner/signer/signer/store"
)

// These tests read every node's result of a request, not the decision the
// Go client returns: a core NATS subscription on a client's result subjects
// sees every node's publication (the client's own durable consumers still
// consume and decide), and collect keeps the verified ones by request ID.

// collected holds the verified results published on a client's subjects.
type collected struct {
	mu sync.Mutex
	by map[string][]protocol.Result // request ID -> results in arrival order
}

// collect subscribes to every result subject of cl's client ID (keygen,
// signing and reshare) and keeps each result whose node signature verifies
// under c's node keys. The client itself registers callbacks too, so that
// its consumers run as a backend's would.
func collect(t *testing.T, c *devcluster.Cluster, cl *client.Client) *collected {
	t.Helper()
	r := &collected{by: map[string][]protocol.Result{}}
	nc, err := nats.Connect(c.URL)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	id := cl.ClientID()
	last := func(subj string, err error) string { // the subject with its last token a wildcard
		if err != nil {
			t.Fatal(err)
		}
		return subj[:strings.LastIndex(subj, ".")+1] + "*"
	}
	signing, err := routing.SigningResultSubject(id)
	if err != nil {
		t.Fatal(err)
	}
	for _, subj := range []string{last(routing.KeygenResultSubject(id, "w")), signing, last(routing.ReshareResultSubject(id, "s"))} {
		if _, err := nc.Subscribe(subj, func(m *nats.Msg) {
			res, err := protocol.VerifyResult(m.Data, c.NodeKeys)
			if err != nil || res.ClientID != id {
				return
			}
			r.mu.Lock()
			r.by[res.RequestID] = append(r.by[res.RequestID], *res)
			r.mu.Unlock()
		}); err != nil {
			t.Fatal(err)
		}
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	ignore := func(protocol.Result) {}
	for _, on := range []func(func(protocol.Result)) error{cl.OnWalletCreationResult, cl.OnSignResult, cl.OnReshareResult} {
		if err := on(ignore); err != nil {
			t.Fatal(err)
		}
	}
	return r
}

// of returns a copy of the results of request id.
func (r *collected) of(id string) []protocol.Result {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.by[id])
}

// byNode returns the results of request id, the first of each node.
func (r *collected) byNode(id string) map[string]protocol.Result {
	out := map[string]protocol.Result{}
	for _, res := range r.of(id) {
		if _, dup := out[res.NodeID]; !dup {
			out[res.NodeID] = res
		}
	}
	return out
}

// await waits until n distinct nodes answered request id and returns their
// results by node.
func (r *collected) await(t *testing.T, id string, n int) map[string]protocol.Result {
	t.Helper()
	waitFor(t, func() bool { return len(r.byNode(id)) >= n })
	return r.byNode(id)
}

// rawRequests publishes signed requests the way a client does, with any
// request ID and client ID, without the Go client's own Nats-Msg-Id.
type rawRequests struct {
	t  *testing.T
	js jetstream.JetStream
}

func newRawRequests(t *testing.T, c *devcluster.Cluster) *rawRequests {
	t.Helper()
	nc, err := nats.Connect(c.URL)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	return &rawRequests{t: t, js: js}
}

// sign signs req (its envelope's client and request IDs set) with signer.
func (p *rawRequests) sign(ctx context.Context, signer crypto.Signer, clientID, requestID string, req protocol.Request) []byte {
	p.t.Helper()
	env := req.Env()
	env.ClientID, env.RequestID = clientID, requestID
	env.SetTimes(time.Now(), 5*time.Minute)
	raw, err := protocol.SignRequest(ctx, signer, req.Operation(), req)
	if err != nil {
		p.t.Fatal(err)
	}
	return raw
}

// publish publishes raw on subject with Nats-Msg-Id msgID.
func (p *rawRequests) publish(ctx context.Context, subject, msgID string, raw []byte) {
	p.t.Helper()
	if _, err := p.js.Publish(ctx, subject, raw, jetstream.WithMsgID(msgID)); err != nil {
		p.t.Fatal(err)
	}
}

// send signs req and publishes it on its own subject under
// routing.RequestMsgID, and returns the signed bytes.
func (p *rawRequests) send(ctx context.Context, signer crypto.Signer, clientID, requestID, wallet string, req protocol.Request) []byte {
	p.t.Helper()
	raw := p.sign(ctx, signer, clientID, requestID, req)
	subj, err := routing.RequestSubject(req.Operation(), wallet)
	if err != nil {
		p.t.Fatal(err)
	}
	p.publish(ctx, subj, routing.RequestMsgID(clientID, requestID, raw), raw)
	return raw
}

func edKeygen(wallet string) *protocol.KeygenRequest {
	return &protocol.KeygenRequest{WalletID: wallet, KeyTypes: []string{protocol.KeyTypeEd25519}}
}

func edSign(wallet, txID string, msg []byte) *protocol.SigningRequest {
	return &protocol.SigningRequest{WalletID: wallet, KeyType: protocol.KeyTypeEd25519, TxID: txID, Tx: msg}
}

// keyIDOf is the protocol key ID of a client key.
func keyIDOf(t *testing.T, k clientKey) string {
	t.Helper()
	id, err := protocol.KeyID(k.signer.Public())
	if err != nil {
		t.Fatal(err)
	}
	return id
}

// policyWithGrants is policyFor with wallet grants for some clients.
func policyWithGrants(t *testing.T, keys map[string]clientKey, grants map[string][]policy.WalletGrant) *policy.Policy {
	t.Helper()
	var cfg policy.Config
	for _, name := range slices.Sorted(maps.Keys(keys)) {
		k := keys[name]
		pem, err := keyfile.MarshalPublicKeyPEM(k.signer.Public())
		if err != nil {
			t.Fatal(err)
		}
		cfg.Clients = append(cfg.Clients, policy.ClientConfig{Name: name, PublicKey: pem, ClientIDs: k.ids,
			Ops: []string{"keygen", "sign", "reshare"}, WalletGrants: grants[name]})
	}
	p, err := policy.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// checkAll fails unless every result in got is an error with code.
func checkAll(t *testing.T, what string, got map[string]protocol.Result, code string) {
	t.Helper()
	for node, r := range got {
		if r.ResultType != protocol.ResultError || r.ErrorCode != code {
			t.Errorf("%s: %s answered %s %s (%s), want %s", what, node, r.ResultType, r.ErrorCode, r.ErrorReason, code)
		}
		if r.Signature != "" || r.R != "" {
			t.Errorf("%s: %s returned a signature", what, node)
		}
	}
}

// TestWalletOwnership: svcB may neither sign with nor reshare svcA's
// wallet; every node refuses on svcB's own subject, nothing is signed and
// svcA's wallet is unchanged and still signs for svcA. A client that the
// policy grants one of svcA's wallets signs with it and reshares it, and the
// reshared wallet stays svcA's. A legacy wallet is usable by legacy clients
// only.
func TestWalletOwnership(t *testing.T) {
	testhsm.Setup(t)
	keys := newKeys(t)
	_, edG, _ := ed25519.GenerateKey(rand.Reader)
	keys["svcG"] = clientKey{edG, []string{"svcG"}}
	pol := policyWithGrants(t, keys, map[string][]policy.WalletGrant{"svcG": {{Owner: "svcA", Wallets: []string{"w1-granted"}}}})
	c := startWithPolicy(t, 3, 1, pol, func(string) string { return testhsm.Token(t, "node") })
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	clA, clB, clG, clL := newClient(t, c, keys["svcA"]), newClient(t, c, keys["svcB"]), newClient(t, c, keys["svcG"]), newClient(t, c, keys["legacy"])
	resA, resB, resG, resL := collect(t, c, clA), collect(t, c, clB), collect(t, c, clG), collect(t, c, clL)
	const kt = protocol.KeyTypeEd25519

	pubs := map[string][]byte{}
	for _, w := range []struct {
		cl  *client.Client
		res *collected
		id  string
	}{{clA, resA, "w1-own"}, {clA, resA, "w1-granted"}, {clL, resL, "w1-legacy"}} {
		id, err := w.cl.Keygen(ctx, client.KeygenParams{WalletID: w.id, KeyTypes: []string{kt}})
		if err != nil {
			t.Fatal(err)
		}
		got := w.res.await(t, id, 3)
		for node, r := range got {
			if !r.Succeeded() {
				t.Fatalf("keygen %s: %s answered %s %s", w.id, node, r.ErrorCode, r.ErrorReason)
			}
			pubs[w.id] = mustHex(t, r.EdDSAPubKey)
		}
	}
	before := map[string]store.WalletMeta{}
	for _, id := range c.NodeIDs {
		m, ok := c.Node(id).WalletMeta("w1-own", kt)
		if !ok || m.CreatedBy != "svcA" {
			t.Fatalf("%s: w1-own %+v, want created by svcA", id, m)
		}
		before[id] = m
	}

	refusals := []struct {
		name string
		cl   *client.Client
		res  *collected
		send func(cl *client.Client) (string, error)
	}{
		{"svcB signs svcA's wallet", clB, resB, func(cl *client.Client) (string, error) {
			return cl.Sign(ctx, client.SignParams{WalletID: "w1-own", KeyType: kt, TxID: "steal", Tx: []byte("pay svcB")})
		}},
		{"svcB reshares svcA's wallet", clB, resB, func(cl *client.Client) (string, error) {
			return cl.Reshare(ctx, client.ReshareParams{WalletID: "w1-own", KeyType: kt, SessionID: "steal", NodeIDs: c.NodeIDs[:2], NewThreshold: 1})
		}},
		{"svcG signs an ungranted wallet of svcA", clG, resG, func(cl *client.Client) (string, error) {
			return cl.Sign(ctx, client.SignParams{WalletID: "w1-own", KeyType: kt, TxID: "steal", Tx: []byte("pay svcG")})
		}},
		{"svcA signs a legacy wallet", clA, resA, func(cl *client.Client) (string, error) {
			return cl.Sign(ctx, client.SignParams{WalletID: "w1-legacy", KeyType: kt, TxID: "steal", Tx: []byte("pay svcA")})
		}},
		{"a legacy client signs svcA's wallet", clL, resL, func(cl *client.Client) (string, error) {
			return cl.Sign(ctx, client.SignParams{WalletID: "w1-own", KeyType: kt, TxID: "steal", Tx: []byte("pay legacy")})
		}},
	}
	for _, rf := range refusals {
		start := time.Now()
		id, err := rf.send(rf.cl)
		if err != nil {
			t.Fatal(err)
		}
		got := rf.res.await(t, id, 3) // every holder refuses (all participants for the reshare)
		checkAll(t, rf.name, got, protocol.CodeUnauthorizedClient)
		t.Logf("%s: refused by %d nodes in %s: %s", rf.name, len(got), time.Since(start).Round(time.Millisecond), got["node0"].ErrorReason)
	}
	for _, id := range c.NodeIDs {
		m, ok := c.Node(id).WalletMeta("w1-own", kt)
		if !ok || m.Epoch != before[id].Epoch || m.Status != store.StatusActive || !slices.Equal(m.Committee, before[id].Committee) || m.CreatedBy != "svcA" {
			t.Fatalf("%s: w1-own after the refused reshare: %+v, want %+v", id, m, before[id])
		}
	}
	// svcA's wallet still signs for svcA, with pub_key the wallet key.
	msg := []byte("svcA pays")
	id, err := clA.Sign(ctx, client.SignParams{WalletID: "w1-own", KeyType: kt, TxID: "own", Tx: msg})
	if err != nil {
		t.Fatal(err)
	}
	for node, r := range resA.await(t, id, 2) {
		if !r.Succeeded() || r.PubKey != hex.EncodeToString(pubs["w1-own"]) || r.KeyID != keyIDOf(t, keys["svcA"]) {
			t.Fatalf("svcA sign: %s answered %+v", node, r)
		}
		if err := client.VerifyEd25519(pubs["w1-own"], msg, mustHex(t, r.Signature)); err != nil {
			t.Fatal(err)
		}
	}

	// The granted client signs with and reshares the granted wallet; the
	// wallet stays svcA's.
	msg = []byte("svcG pays for svcA")
	id, err = clG.Sign(ctx, client.SignParams{WalletID: "w1-granted", KeyType: kt, TxID: "granted", Tx: msg})
	if err != nil {
		t.Fatal(err)
	}
	for node, r := range resG.await(t, id, 2) {
		if !r.Succeeded() {
			t.Fatalf("granted sign: %s answered %s %s", node, r.ErrorCode, r.ErrorReason)
		}
		if err := client.VerifyEd25519(pubs["w1-granted"], msg, mustHex(t, r.Signature)); err != nil {
			t.Fatal(err)
		}
	}
	id, err = clG.Reshare(ctx, client.ReshareParams{WalletID: "w1-granted", KeyType: kt, SessionID: "granted", NodeIDs: c.NodeIDs, NewThreshold: 1})
	if err != nil {
		t.Fatal(err)
	}
	for node, r := range resG.await(t, id, 3) {
		if !r.Succeeded() {
			t.Fatalf("granted reshare: %s answered %s %s", node, r.ErrorCode, r.ErrorReason)
		}
	}
	for _, node := range c.NodeIDs {
		m, ok := c.Node(node).WalletMeta("w1-granted", kt)
		if !ok || m.Epoch != 2 || m.CreatedBy != "svcA" {
			t.Fatalf("%s: w1-granted after the granted reshare: %+v, want epoch 2, still svcA's", node, m)
		}
	}
	msg = []byte("svcA after the reshare")
	id, err = clA.Sign(ctx, client.SignParams{WalletID: "w1-granted", KeyType: kt, TxID: "own", Tx: msg})
	if err != nil {
		t.Fatal(err)
	}
	for node, r := range resA.await(t, id, 2) {
		if !r.Succeeded() {
			t.Fatalf("svcA sign after the granted reshare: %s answered %s %s", node, r.ErrorCode, r.ErrorReason)
		}
		if err := client.VerifyEd25519(pubs["w1-granted"], msg, mustHex(t, r.Signature)); err != nil {
			t.Fatal(err)
		}
	}
	// The legacy wallet signs for the legacy client.
	id, err = clL.Sign(ctx, client.SignParams{WalletID: "w1-legacy", KeyType: kt, TxID: "own", Tx: msg})
	if err != nil {
		t.Fatal(err)
	}
	for node, r := range resL.await(t, id, 2) {
		if !r.Succeeded() {
			t.Fatalf("legacy sign: %s answered %s %s", node, r.ErrorCode, r.ErrorReason)
		}
	}
}

// TestRefusalOnClaimedClientID: a known key that claims a client ID it is
// not bound to gets UNAUTHORIZED_CLIENT within seconds on the subject of the
// client ID it claimed, where it listens, from every node; the result names
// its key, so the client that owns the ID can tell it is not its own.
func TestRefusalOnClaimedClientID(t *testing.T) {
	keys := newKeys(t)
	c := start(t, 3, 1, keys)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	resA, resB := collect(t, c, newClient(t, c, keys["svcA"])), collect(t, c, newClient(t, c, keys["svcB"]))
	raw := newRawRequests(t, c)
	for _, tc := range []struct {
		name string
		req  protocol.Request
	}{
		{"keygen", edKeygen("w5")},
		{"sign", edSign("w5", "tx", []byte("m"))},
	} {
		id := "claim-" + tc.name
		start := time.Now()
		raw.send(ctx, keys["svcB"].signer, "svcA", id, "w5", tc.req)
		got := resA.await(t, id, 3)
		took := time.Since(start)
		checkAll(t, tc.name, got, protocol.CodeUnauthorizedClient)
		for node, r := range got {
			if r.KeyID != keyIDOf(t, keys["svcB"]) || r.ClientID != "svcA" {
				t.Errorf("%s: %s answered with key_id %q client_id %q, want svcB's key on svcA", tc.name, node, r.KeyID, r.ClientID)
			}
		}
		if took > 15*time.Second {
			t.Errorf("%s: the refusal took %s", tc.name, took)
		}
		if n := len(resB.of(id)); n != 0 {
			t.Errorf("%s: %d results went to the key's own client ID", tc.name, n)
		}
		t.Logf("%s: refused on the claimed client ID in %s", tc.name, took.Round(time.Millisecond))
	}
	for _, id := range c.NodeIDs {
		if _, ok := c.Node(id).WalletMeta("w5", protocol.KeyTypeEd25519); ok {
			t.Fatalf("%s created the wallet of a refused keygen", id)
		}
	}
}

// TestSameRequestIDTwoClients: svcA and svcB use the same request IDs at the
// same time, for a keygen and then a signature: both are served, each node
// publishing its own result to each client, and a replay is still refused
// for the client that sent it.
func TestSameRequestIDTwoClients(t *testing.T) {
	keys := newKeys(t)
	c := start(t, 3, 1, keys)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	clients := map[string]*collected{"svcA": collect(t, c, newClient(t, c, keys["svcA"])), "svcB": collect(t, c, newClient(t, c, keys["svcB"]))}
	raw := newRawRequests(t, c)
	names := []string{"svcA", "svcB"}
	send := func(build func(name string) (string, protocol.Request), requestID string) map[string][]byte {
		out := map[string][]byte{}
		var mu sync.Mutex
		var wg sync.WaitGroup
		for _, name := range names {
			wg.Add(1)
			go func() {
				defer wg.Done()
				wallet, req := build(name)
				b := raw.send(ctx, keys[name].signer, name, requestID, wallet, req)
				mu.Lock()
				out[name] = b
				mu.Unlock()
			}()
		}
		wg.Wait()
		return out
	}
	send(func(name string) (string, protocol.Request) { return "w6-" + name, edKeygen("w6-" + name) }, "same-1")
	pubs := map[string][]byte{}
	for _, name := range names {
		got := clients[name].await(t, "same-1", 3)
		for node, r := range got {
			if !r.Succeeded() || r.WalletID != "w6-"+name || r.KeyID != keyIDOf(t, keys[name]) {
				t.Fatalf("%s keygen: %s answered %+v", name, node, r)
			}
			if pubs[name] != nil && hex.EncodeToString(pubs[name]) != r.EdDSAPubKey {
				t.Fatalf("%s keygen: nodes report different keys", name)
			}
			pubs[name] = mustHex(t, r.EdDSAPubKey)
		}
	}
	if string(pubs["svcA"]) == string(pubs["svcB"]) {
		t.Fatal("both wallets got the same key")
	}
	msgs := map[string][]byte{"svcA": []byte("svcA's tx"), "svcB": []byte("svcB's tx")}
	sent := send(func(name string) (string, protocol.Request) {
		return "w6-" + name, edSign("w6-"+name, "tx", msgs[name])
	}, "same-2")
	for _, name := range names {
		got := clients[name].await(t, "same-2", 2)
		for node, r := range got {
			if !r.Succeeded() || r.PubKey != hex.EncodeToString(pubs[name]) {
				t.Fatalf("%s sign: %s answered %+v", name, node, r)
			}
			if err := client.VerifyEd25519(pubs[name], msgs[name], mustHex(t, r.Signature)); err != nil {
				t.Fatalf("%s sign by %s: %v", name, node, err)
			}
		}
	}
	// svcA replays its signed request (a new Nats-Msg-Id passes JetStream):
	// every node answers REPLAYED to svcA, and svcB hears nothing more.
	subj, _ := routing.SigningRequestSubject("w6-svcA")
	raw.publish(ctx, subj, "replay-same-2", sent["svcA"])
	waitFor(t, func() bool {
		n := 0
		for _, r := range clients["svcA"].of("same-2") {
			if r.ErrorCode == protocol.CodeReplayed {
				n++
			}
		}
		return n == 3
	})
	if n := len(clients["svcB"].of("same-2")); n != 2 {
		t.Fatalf("svcB has %d results for same-2, want its 2 signers' only", n)
	}
}

// TestConcurrentKeygenOneWallet: 20 times, svcA and svcB ask at the same
// moment for a keygen of one new wallet. Every node lets the same request
// create it: that one succeeds on every node with one key, the other is
// WALLET_EXISTS on every node, and every node holds the winner's key,
// owned by the winner.
func TestConcurrentKeygenOneWallet(t *testing.T) {
	keys := newKeys(t)
	c := start(t, 3, 1, keys)
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	clients := map[string]*collected{"svcA": collect(t, c, newClient(t, c, keys["svcA"])), "svcB": collect(t, c, newClient(t, c, keys["svcB"]))}
	raw := newRawRequests(t, c)
	wins := map[string]int{}
	for round := range 20 {
		wallet := fmt.Sprintf("w7-%02d", round)
		var wg sync.WaitGroup
		for _, name := range []string{"svcA", "svcB"} {
			wg.Add(1)
			go func() {
				defer wg.Done()
				raw.send(ctx, keys[name].signer, name, "kg-"+wallet+"-"+name, wallet, edKeygen(wallet))
			}()
		}
		wg.Wait()
		var winner string
		var pub string
		exists := 0
		for _, name := range []string{"svcA", "svcB"} {
			got := clients[name].await(t, "kg-"+wallet+"-"+name, 3)
			ok := 0
			for node, r := range got {
				switch {
				case r.Succeeded():
					ok++
					if pub != "" && r.EdDSAPubKey != pub {
						t.Fatalf("round %d: %s reports key %s, another node %s", round, node, r.EdDSAPubKey, pub)
					}
					pub = r.EdDSAPubKey
				case r.ErrorCode == protocol.CodeWalletExists:
				default:
					t.Fatalf("round %d: %s's keygen: %s answered %s %s", round, name, node, r.ErrorCode, r.ErrorReason)
				}
			}
			switch ok {
			case 3:
				if winner != "" {
					t.Fatalf("round %d: both keygens succeeded", round)
				}
				winner = name
			case 0:
				exists++
			default:
				t.Fatalf("round %d: %s's keygen succeeded on %d nodes and was WALLET_EXISTS on the others", round, name, ok)
			}
		}
		if winner == "" || exists != 1 {
			t.Fatalf("round %d: winner %q, %d requests WALLET_EXISTS", round, winner, exists)
		}
		wins[winner]++
		for _, id := range c.NodeIDs {
			m, ok := c.Node(id).WalletMeta(wallet, protocol.KeyTypeEd25519)
			if !ok || hex.EncodeToString(m.PubKey) != pub || m.CreatedBy != winner || m.Epoch != 1 {
				t.Fatalf("round %d: %s holds %+v, want the winner %s's key %s", round, id, m, winner, pub)
			}
		}
	}
	t.Logf("winners: %v", wins)
}

// TestSubjectWalletMismatch: a correctly signed request published on the
// subject of another wallet than its body names is dropped by every node as
// malformed and counted (dropped_subject_mismatch); nothing is signed or
// created and nobody is answered.
func TestSubjectWalletMismatch(t *testing.T) {
	keys := newKeys(t)
	c := start(t, 3, 1, keys)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cl := newClient(t, c, keys["svcA"])
	res := collect(t, c, cl)
	for _, w := range []string{"w8-a", "w8-b"} {
		if _, err := cl.KeygenAndWait(ctx, client.KeygenParams{WalletID: w, KeyTypes: []string{protocol.KeyTypeEd25519}}); err != nil {
			t.Fatal(err)
		}
	}
	raw := newRawRequests(t, c)
	mismatched := func() int64 {
		var n int64
		for _, id := range c.NodeIDs {
			n += c.Node(id).Stats().RequestDrops["dropped_subject_mismatch"]
		}
		return n
	}
	for i, tc := range []struct {
		name, subjWallet string
		req              protocol.Request
	}{
		{"sign", "w8-b", edSign("w8-a", "tx", []byte("m"))},
		{"keygen", "w8-b", edKeygen("w8-new")},
		{"reshare", "w8-b", &protocol.ReshareRequest{WalletID: "w8-a", KeyType: protocol.KeyTypeEd25519, SessionID: "s8", NodeIDs: c.NodeIDs, NewThreshold: 1}},
	} {
		id := "mismatch-" + tc.name
		b := raw.sign(ctx, keys["svcA"].signer, "svcA", id, tc.req)
		subj, _ := routing.RequestSubject(tc.req.Operation(), tc.subjWallet)
		raw.publish(ctx, subj, routing.RequestMsgID("svcA", id, b), b)
		want := int64(3 * (i + 1))
		waitFor(t, func() bool { return mismatched() >= want })
		if got := mismatched(); got != want {
			t.Fatalf("%s: %d drops counted, want one per node (%d in all)", tc.name, got, want)
		}
	}
	// Nothing happened: a request sent after them is answered, and by then
	// none of them has been.
	id, err := cl.Sign(ctx, client.SignParams{WalletID: "w8-a", KeyType: protocol.KeyTypeEd25519, TxID: "after", Tx: []byte("after")})
	if err != nil {
		t.Fatal(err)
	}
	res.await(t, id, 2)
	for _, name := range []string{"sign", "keygen", "reshare"} {
		if got := res.of("mismatch-" + name); len(got) != 0 {
			t.Fatalf("%s: answered %+v", name, got)
		}
	}
	for _, node := range c.NodeIDs {
		if _, ok := c.Node(node).WalletMeta("w8-new", protocol.KeyTypeEd25519); ok {
			t.Fatalf("%s created the wallet of a mismatched keygen", node)
		}
		if m, _ := c.Node(node).WalletMeta("w8-a", protocol.KeyTypeEd25519); m.Epoch != 1 {
			t.Fatalf("%s: w8-a at epoch %d after a mismatched reshare", node, m.Epoch)
		}
	}
}

// TestJournalPrunedAtStart: a node removes, when it starts, the journal
// entries of requests that expired more than the clock skew ago, and keeps
// the others.
func TestJournalPrunedAtStart(t *testing.T) {
	keys := newKeys(t)
	c := start(t, 3, 1, keys)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	c.StopNode("node0")
	st, err := store.Open(c.StorePath("node0"), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	entries := map[string]time.Time{
		"gone":    time.Now().Add(-time.Hour),   // long expired
		"skewed":  time.Now().Add(-time.Second), // expired, but within the clock skew
		"pending": time.Now().Add(time.Hour),    // not expired
	}
	for id, exp := range entries {
		if _, _, err := st.JournalBegin(store.JournalEntry{RequestID: id, ClientID: "svcA", Op: "sign", State: "done", ExpiresAt: exp}); err != nil {
			t.Fatal(err)
		}
	}
	_ = st.Close()
	if err := c.RestartNode(ctx, "node0"); err != nil {
		t.Fatal(err)
	}
	c.StopNode("node0")
	st, err = store.Open(c.StorePath("node0"), store.Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	for id, wantKept := range map[string]bool{"gone": false, "skewed": true, "pending": true} {
		_, err := st.JournalEntryOf("svcA", id)
		if kept := err == nil; kept != wantKept || (err != nil && !errors.Is(err, store.ErrNotFound)) {
			t.Errorf("%s: kept=%v (%v), want kept=%v", id, kept, err, wantKept)
		}
	}
}

// TestResultPublishedAfterOutage: the result stream is gone for longer than
// a minute (the old single publish window) while a signature is made. Each
// signer keeps publishing its result, every attempt with its own deadline,
// until the request expires, so both signers' results are stored once the
// stream is back. No Go client is involved: the test reads the results with
// consumers of its own.
func TestResultPublishedAfterOutage(t *testing.T) {
	keys := newKeys(t)
	c := start(t, 3, 1, keys)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	raw := newRawRequests(t, c)
	// fetch reads op results of svcA for request id until n nodes answered.
	fetch := func(op, id string, n int) map[string]*protocol.Result {
		t.Helper()
		cons, err := routing.ResultConsumer(ctx, raw.js, op, "svcA")
		if err != nil {
			t.Fatal(err)
		}
		got := map[string]*protocol.Result{}
		waitFor(t, func() bool {
			batch, err := cons.Fetch(10, jetstream.FetchMaxWait(time.Second))
			if err != nil {
				return false
			}
			for m := range batch.Messages() {
				res, err := protocol.VerifyResult(m.Data(), c.NodeKeys)
				if err != nil {
					t.Fatalf("%s result: %v", op, err)
				}
				if res.RequestID == id {
					got[res.NodeID] = res
				}
				_ = m.Ack()
			}
			return len(got) >= n
		})
		for node, r := range got {
			if !r.Succeeded() {
				t.Fatalf("%s: %s answered %s %s", op, node, r.ErrorCode, r.ErrorReason)
			}
		}
		return got
	}
	raw.send(ctx, keys["svcA"].signer, "svcA", "outage-kg", "w-outage", edKeygen("w-outage"))
	var edPub []byte
	for _, r := range fetch(protocol.OpKeygen, "outage-kg", 3) {
		edPub = mustHex(t, r.EdDSAPubKey)
	}

	if err := raw.js.DeleteStream(ctx, routing.ResultStream); err != nil {
		t.Fatal(err)
	}
	succeeded := func() (n int64) {
		for _, id := range c.NodeIDs {
			n += c.Node(id).Stats().Succeeded
		}
		return n
	}
	before := succeeded()
	msg := []byte("through an outage")
	raw.send(ctx, keys["svcA"].signer, "svcA", "outage-1", "w-outage", edSign("w-outage", "tx", msg))
	waitFor(t, func() bool { return succeeded() >= before+2 }) // both signers signed; their publishes fail
	// The outage itself: its length is the point of the test, not a wait
	// for a condition.
	const outage = 65 * time.Second
	select {
	case <-time.After(outage):
	case <-ctx.Done():
		t.Fatal(ctx.Err())
	}
	if err := routing.EnsureStreams(ctx, raw.js, routing.StreamOptions{}); err != nil {
		t.Fatal(err)
	}
	for node, r := range fetch(protocol.OpSign, "outage-1", 2) {
		if err := client.VerifyEd25519(edPub, msg, mustHex(t, r.Signature)); err != nil {
			t.Fatalf("%s: %v", node, err)
		}
	}
}
