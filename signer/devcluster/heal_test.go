package devcluster_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/hwsigner/signer/attest"
	"github.com/hwsigner/signer/client"
	"github.com/hwsigner/signer/internal/fixtures"
	"github.com/hwsigner/signer/internal/testhsm"
	"github.com/hwsigner/signer/protocol"
	"github.com/hwsigner/signer/routing"
	"github.com/hwsigner/signer/signer/config"
	"github.com/hwsigner/signer/signer/devcluster"
	"github.com/hwsigner/signer/signer/node"
	"github.com/hwsigner/signer/signer/store"
)

// startHealCluster starts a 2-of-3 cluster whose nodes get their test
// faults from faults (nil: none). A stopped node lets its sessions run for
// a second at most.
func startHealCluster(t *testing.T, keys map[string]clientKey, faults func(nodeID string) *node.Faults) *devcluster.Cluster {
	t.Helper()
	testhsm.Setup(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var mu sync.Mutex
	uris := map[string]string{}
	c, err := devcluster.Start(ctx, devcluster.Options{
		Dir: t.TempDir(), Nodes: 3, Signers: config.SignersFromTSS(1),
		TokenURI: func(id string) (string, error) {
			mu.Lock()
			defer mu.Unlock()
			if uris[id] == "" {
				uris[id] = testhsm.Token(t, "node")
			}
			return uris[id], nil
		},
		Policy: policyFor(t, keys), TestPreParams: fixtures.PreParams(t),
		SignTimeout: time.Minute, KeygenTimeout: 2 * time.Minute, DrainTimeout: time.Second,
		Faults: faults,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Stop)
	return c
}

// records returns a stopped node's records of a wallet's key type, oldest
// epoch first, read from its store file.
func records(t *testing.T, c *devcluster.Cluster, id, wallet, kt string) []store.WalletMeta {
	t.Helper()
	st, err := store.Open(c.StorePath(id), store.Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	all, err := st.Wallets()
	if err != nil {
		t.Fatal(err)
	}
	return slices.DeleteFunc(all, func(m store.WalletMeta) bool { return m.WalletID != wallet || m.KeyType != kt })
}

// describe prints records as epoch:status pairs.
func describe(recs []store.WalletMeta) string {
	var parts []string
	for _, m := range recs {
		parts = append(parts, fmt.Sprintf("%d:%s%v", m.Epoch, m.Status, m.Committee))
	}
	return strings.Join(parts, " ")
}

// within returns a context that ends after d (a polling deadline).
func within(t *testing.T, parent context.Context, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(parent, d)
	t.Cleanup(cancel)
	return ctx
}

// TestHealPendingShareAfterMissedSealed: a new member that stops right
// after it announced "sealed" never sees the others' (they travel on the
// reshare's session only), so it is left with a pending share and no
// active one while its peers switched. After its restart it reads the
// committee's key confirmations, activates the share, and every signature
// succeeds, also those that need it.
func TestHealPendingShareAfterMissedSealed(t *testing.T) {
	keys := newKeys(t)
	const wallet, kt = "w-heal-pending", protocol.KeyTypeEd25519
	var armed atomic.Bool
	crashed := make(chan uint64, 1)
	c := startHealCluster(t, keys, func(id string) *node.Faults {
		if id != "node2" {
			return nil
		}
		return &node.Faults{Reshare: func(p node.FaultPoint, w, _ string, epoch uint64) node.FaultAction {
			if p == node.AfterAnnounceSealed && w == wallet && armed.CompareAndSwap(true, false) {
				crashed <- epoch
				return node.FaultCrash
			}
			return node.FaultContinue
		}}
	})
	cl := newClient(t, c, keys["svcA"])
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	kg, err := cl.CreateWalletAndWait(ctx, wallet, kt)
	if err != nil {
		t.Fatal(err)
	}
	pub := mustHex(t, kg.EdDSAPubKey)
	all, pair := c.NodeIDs, c.NodeIDs[:2]

	// node2 leaves the committee (epoch 2), then comes back as a new member
	// only (epoch 3) and stops right after it announced "sealed".
	if _, err := cl.ReshareAndWait(ctx, client.ReshareParams{WalletID: wallet, KeyType: kt, SessionID: "out", NodeIDs: pair, NewThreshold: 1}); err != nil {
		t.Fatal(err)
	}
	waitEpoch(within(t, ctx, 90*time.Second), t, c, wallet, kt, 2, pair)
	armed.Store(true)
	res, err := cl.ReshareAndWait(ctx, client.ReshareParams{WalletID: wallet, KeyType: kt, SessionID: "back", NodeIDs: all, NewThreshold: 1})
	if err != nil {
		t.Fatalf("reshare back to %v: %v", all, err)
	}
	if res.PubKey != hex.EncodeToString(pub) {
		t.Fatalf("reshare result %+v", res)
	}
	select {
	case e := <-crashed:
		if e != 3 {
			t.Fatalf("node2 crashed at epoch %d, want 3", e)
		}
	default:
		t.Fatal("node2's fault was never reached")
	}
	c.StopNode("node2")
	recs := records(t, c, "node2", wallet, kt)
	if len(recs) == 0 || recs[len(recs)-1].Epoch != 3 || recs[len(recs)-1].Status != store.StatusPending ||
		slices.ContainsFunc(recs, func(m store.WalletMeta) bool { return m.Status == store.StatusActive }) {
		t.Fatalf("node2 before its restart holds %s, want a pending share at epoch 3 and no active one", describe(recs))
	}
	t.Logf("node2 stopped holding %s; node0 and node1 switched to epoch 3", describe(recs))

	start := time.Now()
	if err := c.RestartNode(ctx, "node2"); err != nil {
		t.Fatal(err)
	}
	waitEpoch(within(t, ctx, 90*time.Second), t, c, wallet, kt, 3, all)
	t.Logf("node2 active at epoch 3 %s after its restart; healed %v", time.Since(start).Round(time.Millisecond), c.Node("node2").Stats().Healed)
	if got := c.Node("node2").Stats().Healed["activated"]; got != 1 {
		t.Fatalf("node2 healed %v, want one activation", c.Node("node2").Stats().Healed)
	}
	for i := 0; i < 8; i++ {
		signAndVerify(ctx, t, cl, wallet, kt, pub, fmt.Sprint("after heal ", i))
	}
	// With node0 down the signers are node1 and node2: node2's healed share
	// signs.
	c.StopNode("node0")
	for i := 0; i < 3; i++ {
		signAndVerify(ctx, t, cl, wallet, kt, pub, fmt.Sprint("node1 and node2 ", i))
	}
}

// TestHealStaleMemberRetires: node2 is offline while the key moves from
// {node0,node1,node2} to {node0,node1}, so it keeps its old active share.
// After its restart, at its first request for the wallet, it learns from
// the confirmations that its epoch is superseded, retires its share (a
// retired record at the new epoch, no share, older records deleted) and
// stays out: every signature succeeds and node2 answers none.
func TestHealStaleMemberRetires(t *testing.T) {
	keys := newKeys(t)
	const wallet, kt = "w-heal-stale", protocol.KeyTypeSecp256k1
	c := startHealCluster(t, keys, nil)
	cl := newClient(t, c, keys["svcA"])
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	kg, err := cl.CreateWalletAndWait(ctx, wallet, kt)
	if err != nil {
		t.Fatal(err)
	}
	pub := mustHex(t, kg.ECDSAPubKey)
	pair := c.NodeIDs[:2]
	c.StopNode("node2")
	moved, err := cl.ReshareAndWait(ctx, client.ReshareParams{WalletID: wallet, KeyType: kt, SessionID: "away", NodeIDs: pair, NewThreshold: 1})
	if err != nil {
		t.Fatal(err)
	}
	if recs := records(t, c, "node2", wallet, kt); len(recs) != 1 || recs[0].Epoch != 1 || recs[0].Status != store.StatusActive {
		t.Fatalf("node2 holds %s, want its old active share at epoch 1", describe(recs))
	}
	if err := c.RestartNode(ctx, "node2"); err != nil {
		t.Fatal(err)
	}
	n2 := c.Node("node2")
	const signs = 9
	var ids []string
	failures := 0
	for i := 0; i < signs; i++ {
		tx := sha256.Sum256([]byte(fmt.Sprint("stale ", i)))
		res, err := cl.SignAndWait(ctx, client.SignParams{WalletID: wallet, KeyType: kt, TxID: fmt.Sprint("tx-", i), Tx: tx[:]})
		if err != nil {
			failures++
			t.Errorf("sign %d: %v", i, err)
			continue
		}
		if err := client.VerifyECDSA(pub, tx[:], mustHex(t, res.R), mustHex(t, res.S), res.SignatureRecovery); err != nil {
			t.Fatalf("sign %d does not verify: %v", i, err)
		}
		ids = append(ids, res.RequestID)
	}
	if failures > 0 {
		t.Fatalf("%d of %d signatures failed", failures, signs)
	}
	// Stopping node2 lets its handlers finish: its counters and journal are
	// then final. It also consumed the reshare it missed, after its
	// restart: that reshare committed without it, so it stays out of it too.
	c.StopNode("node2")
	st := n2.Stats()
	if st.Accepted != signs+1 || st.Succeeded != 0 || st.Failed != 0 || st.Healed["retired"] != 1 {
		t.Fatalf("node2 after the missed reshare and %d signs: accepted %d, succeeded %d, failed %d, healed %v; want every request stayed out of and one retirement",
			signs, st.Accepted, st.Succeeded, st.Failed, st.Healed)
	}
	ids = append(ids, moved.RequestID)
	stor, err := store.Open(c.StorePath("node2"), store.Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer stor.Close()
	for _, id := range ids {
		e, err := stor.JournalEntryOf("svcA", id)
		if err != nil || e.State != "done" || e.ResultCode != "not_participant" {
			t.Fatalf("node2's journal of sign %s: %+v %v, want done, not_participant (nothing published)", id, e, err)
		}
	}
	all, _ := stor.Wallets()
	all = slices.DeleteFunc(all, func(m store.WalletMeta) bool { return m.WalletID != wallet || m.KeyType != kt })
	if len(all) != 1 || all[0].Epoch != 2 || all[0].Status != store.StatusRetired || !slices.Equal(all[0].Committee, pair) ||
		!slices.Equal(all[0].PubKey, pub) || all[0].CreatedBy != "svcA" || len(all[0].KeyDigest) != 0 {
		t.Fatalf("node2's records %s, want one retired record at epoch 2 for %v", describe(all), pair)
	}
	if _, _, err := stor.Share(wallet, kt); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("node2 still has an active share: %v", err)
	}
	_, sealed, err := stor.ShareAt(wallet, kt, 2)
	if err != nil || len(sealed) > 2048 {
		t.Fatalf("node2's retired record holds %d sealed bytes (%v): a marker, not a share, is kept", len(sealed), err)
	}
	t.Logf("node2 retired its share: %s, %d sealed bytes (a marker)", describe(all), len(sealed))
}

// TestReshareRightAfterKeygen: a reshare published right behind its
// wallet's keygen, after a node just restarted, waits on every node for
// the keygen it consumed first, so every holder announces its share: six
// tries, each after restarting another node, none fails.
func TestReshareRightAfterKeygen(t *testing.T) {
	keys := newKeys(t)
	c := startHealCluster(t, keys, nil)
	cl := newClient(t, c, keys["svcA"])
	ctx, cancel := context.WithTimeout(context.Background(), 6*time.Minute)
	defer cancel()
	var mu sync.Mutex
	keygens := map[string]chan attest.Decision{}
	waiter := func(id string) chan attest.Decision {
		mu.Lock()
		defer mu.Unlock()
		if keygens[id] == nil {
			keygens[id] = make(chan attest.Decision, 1)
		}
		return keygens[id]
	}
	if err := cl.OnWalletCreationDecision(func(d attest.Decision) { waiter(d.Result.RequestID) <- d }); err != nil {
		t.Fatal(err)
	}
	const kt, tries = protocol.KeyTypeEd25519, 6
	failures := 0
	for i := 0; i < tries; i++ {
		restarted := c.NodeIDs[i%len(c.NodeIDs)]
		c.StopNode(restarted)
		if err := c.RestartNode(ctx, restarted); err != nil {
			t.Fatal(err)
		}
		wallet := fmt.Sprint("w-after-keygen-", i)
		kgID, err := cl.Keygen(ctx, client.KeygenParams{WalletID: wallet, KeyTypes: []string{kt}})
		if err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		res, err := cl.ReshareAndWait(ctx, client.ReshareParams{WalletID: wallet, KeyType: kt, SessionID: "right-after", NodeIDs: c.NodeIDs, NewThreshold: 1})
		if err != nil {
			failures++
			t.Errorf("try %d (%s restarted): reshare: %v", i, restarted, err)
			continue
		}
		select {
		case d := <-waiter(kgID):
			if d.Err != nil || d.Result.EdDSAPubKey != res.PubKey {
				t.Fatalf("try %d: keygen %v, its key %s, reshared %s", i, d.Err, d.Result.EdDSAPubKey, res.PubKey)
			}
		case <-within(t, ctx, 90*time.Second).Done():
			t.Fatalf("try %d: no keygen decision", i)
		}
		waitEpoch(within(t, ctx, 90*time.Second), t, c, wallet, kt, 2, c.NodeIDs)
		t.Logf("try %d (%s restarted): keygen and reshare in %s", i, restarted, time.Since(start).Round(time.Millisecond))
	}
	if failures > 0 {
		t.Fatalf("%d of %d reshares right after their keygen failed", failures, tries)
	}
}

// forgeConfirmation signs c as nodeID with a key that is not that node's
// (a rogue with NATS credentials but no identity key).
func forgeConfirmation(t *testing.T, rogue *ecdsa.PrivateKey, nodeID string, c protocol.KeyConfirmation) []byte {
	t.Helper()
	raw, err := protocol.SignConfirmation(context.Background(), rogue, nodeID, &c)
	if err != nil {
		t.Fatal(err)
	}
	return raw
}

// ignoredTotal sums every running node's ignored confirmations by reason.
func ignoredTotal(c *devcluster.Cluster) map[string]int64 {
	out := map[string]int64{}
	for _, id := range c.NodeIDs {
		if n := c.Node(id); n != nil {
			for k, v := range n.Stats().ConfirmationsIgnored {
				out[k] += v
			}
		}
	}
	return out
}

// TestForgedKeyConfirmationsIgnored: a NATS client with the node
// credentials but no identity key writes key confirmations into the
// bucket. Forged ones that would retire every share of a wallet, and forged
// ones that would complete a reshare that failed (built from a real
// member's pending share, so that only the signature is wrong), are
// ignored and counted; nothing is activated or retired, and signing goes
// on with the shares the nodes hold.
func TestForgedKeyConfirmationsIgnored(t *testing.T) {
	keys := newKeys(t)
	const kt = protocol.KeyTypeEd25519
	const retireW, activateW = "w-forge-retire", "w-forge-activate"
	var armed atomic.Bool
	c := startHealCluster(t, keys, func(id string) *node.Faults {
		if id != "node0" {
			return nil
		}
		return &node.Faults{Reshare: func(p node.FaultPoint, w, _ string, _ uint64) node.FaultAction {
			if p == node.AfterSealPending && w == activateW && armed.CompareAndSwap(true, false) {
				return node.FaultFail
			}
			return node.FaultContinue
		}}
	})
	cl := newClient(t, c, keys["svcA"])
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	rogueNC, err := nats.Connect(c.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer rogueNC.Close()
	rogueJS, err := jetstream.New(rogueNC)
	if err != nil {
		t.Fatal(err)
	}
	bucket, err := rogueJS.KeyValue(ctx, routing.KeysBucket)
	if err != nil {
		t.Fatal(err)
	}
	rogue, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	put := func(w string, epoch uint64, slot string, raw []byte) {
		t.Helper()
		key, err := routing.ConfirmationKey(w, kt, epoch, slot)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := bucket.Put(ctx, key, raw); err != nil {
			t.Fatal(err)
		}
	}
	stored := func(w string, epoch uint64, slot string) protocol.KeyConfirmation {
		t.Helper()
		key, _ := routing.ConfirmationKey(w, kt, epoch, slot)
		e, err := bucket.Get(ctx, key)
		if err != nil {
			t.Fatalf("%s: %v", key, err)
		}
		var kc protocol.KeyConfirmation
		if err := json.Unmarshal(e.Value(), &kc); err != nil {
			t.Fatal(err)
		}
		return kc
	}
	sign := func(w string, pub []byte, n int) {
		for i := 0; i < n; i++ {
			signAndVerify(ctx, t, cl, w, kt, pub, fmt.Sprint(w, " under forged confirmations ", i))
		}
	}
	// unchanged checks that no node healed anything and that each node's
	// newest record of w is its active epoch-1 share or, when pending is
	// set, a pending share at epoch 2 (a member the failure stopped before
	// it sealed has none).
	unchanged := func(w string, pending bool) {
		t.Helper()
		for _, id := range c.NodeIDs {
			m, ok := c.Node(id).WalletMeta(w, kt)
			if !ok || !(m.Epoch == 1 && m.Status == store.StatusActive) && !(pending && m.Epoch == 2 && m.Status == store.StatusPending) {
				t.Fatalf("%s: %s newest record epoch %d %s", id, w, m.Epoch, m.Status)
			}
			if h := c.Node(id).Stats().Healed; len(h) != 0 {
				t.Fatalf("%s healed %v from forged confirmations", id, h)
			}
		}
	}

	// 1. Retirement: epoch 2 "confirmed" for {node0,node1} by forgeries
	// that would move the key away from node2 and leave node0 and node1
	// without a share of it; then entries that are genuine but out of
	// place, and entries naming nodes outside the committee or cluster.
	kg, err := cl.CreateWalletAndWait(ctx, retireW, kt)
	if err != nil {
		t.Fatal(err)
	}
	pub := mustHex(t, kg.EdDSAPubKey)
	genuine := stored(retireW, 1, "node1")
	moved := genuine
	moved.Epoch, moved.Committee, moved.KeyDigest, moved.Ceremony = 2, []string{"node0", "node1"}, strings.Repeat("ab", 32), "forged"
	put(retireW, 2, "node0", forgeConfirmation(t, rogue, "node0", moved)) // node0's name, rogue's key
	put(retireW, 2, "node1", forgeConfirmation(t, rogue, "node1", moved))
	sign(retireW, pub, 3)
	e1, err := bucket.Get(ctx, retireW+"."+kt+".1.node1")
	if err != nil {
		t.Fatal(err)
	}
	put(retireW, 2, "node1", e1.Value()) // node1's genuine epoch-1 confirmation, under epoch 2
	outside := moved
	outside.NodeID, outside.NodeSignature = "node2", base64Sig(t, rogue)
	raw, _ := json.Marshal(outside) // node2 confirming a committee without node2
	put(retireW, 2, "node2", raw)
	sign(retireW, pub, 2)
	unknown := moved
	unknown.Committee = []string{"node0", "node9"}
	put(retireW, 2, "node2", forgeConfirmation(t, rogue, "node9", unknown)) // a node outside the peer list
	sign(retireW, pub, 2)
	unchanged(retireW, false)
	got := ignoredTotal(c)
	t.Logf("retirement forgeries ignored: %v", got)
	for _, reason := range []string{"bad_signature", "key_mismatch", "not_in_committee", "unknown_node"} {
		if got[reason] == 0 {
			t.Fatalf("no %s confirmation counted: %v", reason, got)
		}
	}

	// 2. Activation: a reshare that fails (node0 gives up after sealing,
	// before confirming) leaves pending shares at epoch 2; the rogue
	// completes the set with node0's confirmation as node0 would have
	// written it, but under its own key.
	kg, err = cl.CreateWalletAndWait(ctx, activateW, kt)
	if err != nil {
		t.Fatal(err)
	}
	pub = mustHex(t, kg.EdDSAPubKey)
	armed.Store(true)
	if _, err := cl.ReshareAndWait(ctx, client.ReshareParams{WalletID: activateW, KeyType: kt, SessionID: "fails", NodeIDs: c.NodeIDs, NewThreshold: 1}); err == nil {
		t.Fatal("the reshare node0 gave up succeeded")
	}
	pending, ok := c.Node("node0").WalletMeta(activateW, kt)
	if !ok || pending.Status != store.StatusPending || pending.Epoch != 2 {
		t.Fatalf("node0 holds %+v, want a pending share at epoch 2", pending)
	}
	forged := protocol.KeyConfirmation{WalletID: activateW, KeyType: kt, Epoch: 2, Committee: pending.Committee,
		Threshold: pending.Threshold, PubKey: hex.EncodeToString(pending.PubKey), KeyDigest: hex.EncodeToString(pending.KeyDigest),
		Ceremony: pending.Ceremony, SealedAt: time.Now().UnixMilli()}
	put(activateW, 2, "node0", forgeConfirmation(t, rogue, "node0", forged))
	for _, id := range []string{"node1", "node2"} { // a member the failure stopped before it confirmed
		key, _ := routing.ConfirmationKey(activateW, kt, 2, id)
		if _, err := bucket.Get(ctx, key); errors.Is(err, jetstream.ErrKeyNotFound) {
			put(activateW, 2, id, forgeConfirmation(t, rogue, id, forged))
		}
	}
	before := ignoredTotal(c)["bad_signature"]
	sign(activateW, pub, 3)
	c.StopNode("node1")
	if err := c.RestartNode(ctx, "node1"); err != nil { // heals pending shares at start
		t.Fatal(err)
	}
	sign(activateW, pub, 2)
	unchanged(activateW, true)
	for _, id := range c.NodeIDs {
		if m, _ := c.Node(id).WalletMeta(activateW, kt); m.Status == store.StatusPending && m.Ceremony != pending.Ceremony {
			t.Fatalf("%s's pending share is of ceremony %s, want %s", id, m.Ceremony, pending.Ceremony)
		}
	}
	if after := ignoredTotal(c)["bad_signature"]; after <= before {
		t.Fatalf("forged confirmations of the failed reshare not counted (bad_signature %d -> %d)", before, after)
	}
	unchanged(retireW, false)
	t.Logf("activation forgeries ignored: %v", ignoredTotal(c))
}

// base64Sig returns a base64 signature by key over junk: a well-formed
// node_signature that verifies nothing.
func base64Sig(t *testing.T, key *ecdsa.PrivateKey) string {
	t.Helper()
	d := sha256.Sum256([]byte("junk"))
	sig, err := ecdsa.SignASN1(rand.Reader, key, d[:])
	if err != nil {
		t.Fatal(err)
	}
	return base64.StdEncoding.EncodeToString(sig)
}
