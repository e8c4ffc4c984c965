package transport

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"testing"
	"time"

	eddsakeygen "github.com/bnb-chain/tss-lib/v3/eddsa/keygen"

	"github.com/hwsigner/signer/signer/ceremony"
)

// waitDrops polls until node has counted at least n drops for reason.
func (c *testCluster) waitDrops(t testing.TB, node, reason string, n int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		c.drops[node].mu.Lock()
		got := c.drops[node].n[reason]
		c.drops[node].mu.Unlock()
		if got >= n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s counted %d %q drops, want at least %d", node, got, reason, n)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestNonSignerHelloCannotAbort (docs/hostile-input.md): node3, a committee
// member that was not chosen, opens each of six signing sessions with a
// participant set of its own (itself and two chosen signers) and keeps
// sending its hello to them, before, while and after they start. The chosen
// signers, who agree, still sign every time; they count its hellos
// (DropPartiesDiffer) and tell it their set, so its own session fails with
// an error naming a chosen signer.
func TestNonSignerHelloCannotAbort(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c := newTestCluster(t, 4)
	all := c.ids
	kgs := c.openAll(t, ctx, "kg-liar", all)
	keys := runEach(t, all, func(i int, id string) (*eddsakeygen.LocalPartySaveData, error) {
		return ceremony.KeygenEdDSA(ctx, ceremony.Session{ID: "kg-liar", Self: id, Parties: all, Threshold: 2}, kgs[id])
	})
	signers := all[:3]
	liarSet := []string{"node0", "node1", "node3"}
	for i := range 6 {
		sid := fmt.Sprintf("sign-liar-%d", i)
		// The liar opens first on even sessions, last on odd ones.
		var liar *Session
		if i%2 == 0 {
			liar = c.open(t, ctx, "node3", sid, liarSet)
		}
		sess := map[string]*Session{}
		for _, p := range signers {
			sess[p] = c.open(t, ctx, p, sid, signers)
		}
		if liar == nil {
			liar = c.open(t, ctx, "node3", sid, liarSet)
		}
		msg := sha256.Sum256([]byte(sid))
		runEach(t, signers, func(j int, id string) (any, error) {
			hctx, hcancel := context.WithTimeout(ctx, 20*time.Second)
			defer hcancel()
			if err := sess[id].WaitReady(hctx); err != nil {
				return nil, fmt.Errorf("session %s: %w", sid, err)
			}
			return ceremony.SignEdDSA(ctx, ceremony.Session{ID: sid, Self: id, Parties: signers, Threshold: 2}, *keys[j], msg[:], sess[id])
		})
		wctx, wcancel := context.WithTimeout(ctx, 10*time.Second)
		err := liar.WaitReady(wctx)
		wcancel()
		var pd *PartiesDifferError
		if !errors.As(err, &pd) || (pd.Node != "node0" && pd.Node != "node1") {
			t.Fatalf("session %s: the liar's session ended with %v, want a PartiesDifferError naming node0 or node1", sid, err)
		}
		liar.Close()
		for _, s := range sess {
			s.Close()
		}
	}
	c.waitDrops(t, "node0", DropPartiesDiffer, 6)
	c.waitDrops(t, "node1", DropPartiesDiffer, 6)
	t.Logf("drops: %v", c.totalDrops())
}

// TestChosenSignerDisagreementFailsFast: the fast failure stays for a
// participant, and the error names it. An observer: node0 chose {node0,
// node1, node3} (it thinks node2 is down); node3, not chosen in its own view
// {node0, node1, node2}, only observes and answers node0's hello with its
// set. A signer: node1 chose {node0, node1, node2}.
func TestChosenSignerDisagreementFailsFast(t *testing.T) {
	view := []string{"node0", "node1", "node2"}
	for _, tc := range []struct{ name, other string }{{"observer", "node3"}, {"signer", "node1"}} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			c := newTestCluster(t, 4)
			c.open(t, ctx, tc.other, "sess-differ", view)
			s0 := c.open(t, ctx, "node0", "sess-differ", []string{"node0", "node1", "node3"})
			wctx, wcancel := context.WithTimeout(ctx, 8*time.Second)
			defer wcancel()
			var pd *PartiesDifferError
			err := s0.WaitReady(wctx)
			if !errors.As(err, &pd) || !errors.Is(err, ErrPartiesDiffer) || pd.Node != tc.other {
				t.Fatalf("node0: %v, want a PartiesDifferError naming %s", err, tc.other)
			}
			if wctx.Err() != nil {
				t.Fatal("node0 waited for the deadline instead of failing fast")
			}
			t.Logf("node0: %v", err)
		})
	}
}
