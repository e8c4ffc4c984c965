package devcluster_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/hwsigner/signer/client"
	"github.com/hwsigner/signer/internal/fixtures"
	"github.com/hwsigner/signer/internal/testhsm"
	"github.com/hwsigner/signer/protocol"
	"github.com/hwsigner/signer/signer/config"
	"github.com/hwsigner/signer/signer/devcluster"
	"github.com/hwsigner/signer/signer/store"
)

func startReshareCluster(t *testing.T, n, th int, keys map[string]clientKey, keygenTimeout, drain time.Duration) *devcluster.Cluster {
	t.Helper()
	testhsm.Setup(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	uris := map[string]string{}
	c, err := devcluster.Start(ctx, devcluster.Options{
		Dir: t.TempDir(), Nodes: n, Signers: config.SignersFromTSS(th),
		TokenURI: func(id string) (string, error) {
			if uris[id] == "" {
				uris[id] = testhsm.Token(t, "node")
			}
			return uris[id], nil
		},
		Policy: policyFor(t, keys), TestPreParams: fixtures.PreParams(t),
		SignTimeout: time.Minute, KeygenTimeout: keygenTimeout, DrainTimeout: drain,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Stop)
	return c
}

// signAndVerify signs with the wallet's key type and checks the signature
// under pub, independently of tss-lib.
func signAndVerify(ctx context.Context, t *testing.T, cl *client.Client, wallet, kt string, pub []byte, what string) {
	t.Helper()
	tx := sha256.Sum256([]byte(what))
	res, err := cl.SignAndWait(ctx, client.SignParams{WalletID: wallet, KeyType: kt, TxID: "tx-" + kt, Tx: tx[:]})
	if err != nil {
		t.Fatalf("%s: sign %s: %v", what, kt, err)
	}
	if kt == protocol.KeyTypeSecp256k1 {
		err = client.VerifyECDSA(pub, tx[:], mustHex(t, res.R), mustHex(t, res.S), res.SignatureRecovery)
	} else {
		err = client.VerifyEd25519(pub, tx[:], mustHex(t, res.Signature))
	}
	if err != nil {
		t.Fatalf("%s: %s signature does not verify under the original key: %v", what, kt, err)
	}
}

// waitEpoch waits until every node shows the wallet key at epoch with the
// status it should have (active for members, retired for the others).
func waitEpoch(ctx context.Context, t *testing.T, c *devcluster.Cluster, wallet, kt string, epoch uint64, members []string) {
	t.Helper()
	for {
		ok := true
		for _, id := range c.NodeIDs {
			m, found := c.Node(id).WalletMeta(wallet, kt)
			want := store.StatusActive
			if !slices.Contains(members, id) {
				want = store.StatusRetired
			}
			if !found || m.Epoch != epoch || m.Status != want || !slices.Equal(m.Committee, members) {
				ok = false
			}
		}
		if ok {
			return
		}
		select {
		case <-ctx.Done():
			for _, id := range c.NodeIDs {
				m, _ := c.Node(id).WalletMeta(wallet, kt)
				t.Logf("%s: epoch %d status %s committee %v", id, m.Epoch, m.Status, m.Committee)
			}
			t.Fatalf("%s %s: not every node at epoch %d", wallet, kt, epoch)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// TestReshare2of3To3of4 moves a wallet from the 2-of-3 committee
// {node0,node1,node2} to the 3-of-4 committee {node1,node2,node3,node4}:
// node0 is replaced by node3, and node4 is added. The wallet starts on all
// five nodes (keygen runs on the whole cluster) and a first reshare gives it
// the 2-of-3 committee, so keygen needs no committee option.
func TestReshare2of3To3of4(t *testing.T) {
	keys := newKeys(t)
	c := startReshareCluster(t, 5, 1, keys, 3*time.Minute, 0)
	// The cluster's t+1 is 2, not a majority of 5: the client must know it
	// (two NODES_NOT_READY below are final).
	cl := newClient(t, c, keys["svcA"], client.WithSigners(2))
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	const wallet = "w-reshare"
	kg, err := cl.CreateWalletAndWait(ctx, wallet)
	if err != nil {
		t.Fatal(err)
	}
	pubs := map[string][]byte{protocol.KeyTypeSecp256k1: mustHex(t, kg.ECDSAPubKey), protocol.KeyTypeEd25519: mustHex(t, kg.EdDSAPubKey)}
	oldC, newC := c.NodeIDs[:3], c.NodeIDs[1:]
	for _, kt := range []string{protocol.KeyTypeSecp256k1, protocol.KeyTypeEd25519} {
		for step, to := range []struct {
			nodes []string
			t     int
		}{{oldC, 1}, {newC, 2}} {
			start := time.Now()
			sid := []string{"setup-", "move-"}[step] + kt
			res, err := cl.ReshareAndWait(ctx, client.ReshareParams{WalletID: wallet, KeyType: kt, SessionID: sid, NodeIDs: to.nodes, NewThreshold: to.t})
			if err != nil {
				t.Fatalf("reshare %s to %v: %v", kt, to.nodes, err)
			}
			t.Logf("reshare %s to %v (t=%d): %s", kt, to.nodes, to.t, time.Since(start).Round(time.Millisecond))
			if res.PubKey != hex.EncodeToString(pubs[kt]) || res.NewThreshold != to.t || res.SessionID != sid || res.KeyType != kt {
				t.Fatalf("reshare result %+v: want pub %x, new_threshold %d, session %s", res, pubs[kt], to.t, sid)
			}
			waitEpoch(ctx, t, c, wallet, kt, uint64(step+2), to.nodes)
		}
		m, _ := c.Node("node1").WalletMeta(wallet, kt)
		if m.Threshold != 2 {
			t.Fatalf("node1's %s threshold %d, want 2", kt, m.Threshold)
		}
		signAndVerify(ctx, t, cl, wallet, kt, pubs[kt], "new committee")
	}

	// node0 left: it holds no share, is never chosen and stays silent; the
	// old committee {node0,node1,node2} can no longer sign: with node3 and
	// node4 down, 2 of the new committee are ready and 3 are needed.
	c.StopNode("node3")
	c.StopNode("node4")
	tx := sha256.Sum256([]byte("old committee"))
	_, err = cl.SignAndWait(ctx, client.SignParams{WalletID: wallet, KeyType: protocol.KeyTypeSecp256k1, TxID: "tx-old", Tx: tx[:]})
	var re *client.ResultError
	if !errors.As(err, &re) || re.Code != protocol.CodeNodesNotReady {
		t.Fatalf("sign by the old committee: %v, want NODES_NOT_READY", err)
	}
	c.StopNode("node0")
	st, err := store.Open(c.StorePath("node0"), store.Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	all, err := st.Wallets()
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range all {
		if m.WalletID == wallet && m.Status != store.StatusRetired {
			t.Fatalf("node0 still holds %s epoch %d (%s)", m.KeyType, m.Epoch, m.Status)
		}
	}
}

// TestReshareInterruptedKeepsOldCommittee stops a node in the middle of an
// ECDSA reshare: the reshare fails and the old 2-of-3 committee still signs.
func TestReshareInterruptedKeepsOldCommittee(t *testing.T) {
	keys := newKeys(t)
	c := startReshareCluster(t, 3, 1, keys, 45*time.Second, 200*time.Millisecond)
	cl := newClient(t, c, keys["svcA"])
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	const wallet, kt = "w-interrupt", protocol.KeyTypeSecp256k1
	kg, err := cl.CreateWalletAndWait(ctx, wallet, kt)
	if err != nil {
		t.Fatal(err)
	}
	pub := mustHex(t, kg.ECDSAPubKey)
	type outcome struct {
		res *protocol.Result
		err error
	}
	done := make(chan outcome, 1)
	go func() {
		res, err := cl.ReshareAndWait(ctx, client.ReshareParams{WalletID: wallet, KeyType: kt, SessionID: "cut", NodeIDs: c.NodeIDs, NewThreshold: 2})
		done <- outcome{res, err}
	}()
	// An ECDSA reshare takes ~10 s here; stop node2 once it runs.
	deadline := time.Now().Add(20 * time.Second)
	for c.Node("node2").Stats().Accepted < 2 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	time.Sleep(1500 * time.Millisecond)
	c.StopNode("node2")
	o := <-done
	if o.err == nil {
		t.Fatalf("reshare succeeded although node2 stopped in the middle: %+v", o.res)
	}
	t.Logf("interrupted reshare: %v", o.err)
	for _, id := range []string{"node0", "node1"} {
		m, _ := c.Node(id).WalletMeta(wallet, kt)
		if m.Epoch != 1 && m.Status != store.StatusPending {
			t.Fatalf("%s: newest record epoch %d %s, want the old share or an unconfirmed pending one", id, m.Epoch, m.Status)
		}
	}
	signAndVerify(ctx, t, cl, wallet, kt, pub, "old committee after a failed reshare")
	if err := c.RestartNode(ctx, "node2"); err != nil {
		t.Fatal(err)
	}
	m, _ := c.Node("node2").WalletMeta(wallet, kt)
	if m.Epoch != 1 || m.Status != store.StatusActive {
		t.Fatalf("node2 after restart: epoch %d %s, want its active epoch-1 share", m.Epoch, m.Status)
	}
}
