package transport

import (
	"context"
	"crypto/sha256"
	"math/big"
	"slices"
	"sync"
	"testing"
	"time"

	ecdsakeygen "github.com/bnb-chain/tss-lib/v3/ecdsa/keygen"

	"github.com/hwsigner/signer/internal/fixtures"
	"github.com/hwsigner/signer/signer/ceremony"
)

// runEach runs f on every node concurrently and fails on the first error.
func runEach[T any](t testing.TB, ids []string, f func(i int, id string) (T, error)) []T {
	t.Helper()
	out := make([]T, len(ids))
	errs := make([]error, len(ids))
	var wg sync.WaitGroup
	for i, id := range ids {
		wg.Add(1)
		go func() {
			defer wg.Done()
			out[i], errs[i] = f(i, id)
		}()
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("%s: %v", ids[i], err)
		}
	}
	return out
}

// TestHonestRoundMessageSizes runs the largest honest ECDSA ceremonies the
// cluster runs (keygen of a 5-node committee with t=2, a 3-of-5 signature,
// a reshare from 3 old holders to 5 new members) over real NATS sessions and
// checks that every round message is well below the limits the transport
// drops at (see limits.go): honest sessions never hit them.
func TestHonestRoundMessageSizes(t *testing.T) {
	pre := fixtures.PreParams(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	c := newTestCluster(t, 5)
	sp := spySizes(t, c)
	ids := c.ids

	start := time.Now()
	sess := c.openAll(t, ctx, "kg-sizes", ids)
	keys := runEach(t, ids, func(i int, id string) (*ecdsakeygen.LocalPartySaveData, error) {
		return ceremony.KeygenECDSA(ctx, ceremony.Session{ID: "kg-sizes", Self: id, Parties: ids, Threshold: 2}, pre[i], sess[id])
	})
	t.Logf("keygen 5 nodes: %s", time.Since(start).Round(time.Millisecond))
	largest := sp.report(t, "ECDSA keygen 5 nodes t=2")

	signers := ids[1:4]
	start = time.Now()
	sess = c.openAll(t, ctx, "sign-sizes", signers)
	digest := sha256.Sum256([]byte("sizes"))
	runEach(t, signers, func(i int, id string) (any, error) {
		return ceremony.SignECDSA(ctx, ceremony.Session{ID: "sign-sizes", Self: id, Parties: signers, Threshold: 2}, *keys[i+1], digest[:], nil, sess[id])
	})
	t.Logf("sign 3-of-5: %s", time.Since(start).Round(time.Millisecond))
	largest = max(largest, sp.report(t, "ECDSA sign 3-of-5"))

	old := ids[:3]
	shareIDs := map[string]*big.Int{}
	for i, id := range old {
		shareIDs[id] = keys[i].ShareID
	}
	pub := ceremony.ECDSAPublicKey(keys[0].ECDSAPub)
	start = time.Now()
	sess = c.openAll(t, ctx, "rs-sizes", ids)
	runEach(t, ids, func(i int, id string) (any, error) {
		var own *ecdsakeygen.LocalPartySaveData
		if slices.Contains(old, id) {
			own = keys[i]
		}
		rs := ceremony.ReshareSession{ID: "rs-sizes", Self: id, Old: old, OldKeys: shareIDs, OldThreshold: 2, New: ids, NewThreshold: 2, PubKey: pub}
		return ceremony.ReshareECDSA(ctx, rs, own, pre[i], sess[id])
	})
	t.Logf("reshare 3 -> 5: %s", time.Since(start).Round(time.Millisecond))
	largest = max(largest, sp.report(t, "ECDSA reshare 3 old -> 5 new t=2"))
	lim := DefaultLimits()
	t.Logf("largest honest round message: %d bytes (MaxMessageBytes %d); drops %v", largest, lim.MaxMessageBytes, c.totalDrops())
	if largest*3/2 > lim.MaxMessageBytes {
		t.Errorf("largest honest message %d bytes is within 1.5x of MaxMessageBytes %d", largest, lim.MaxMessageBytes)
	}
	if largest*20 > lim.PendingBytes || largest*20 > lim.InboxBytes {
		t.Errorf("PendingBytes %d / InboxBytes %d hold fewer than 20 of the largest honest messages (%d bytes)", lim.PendingBytes, lim.InboxBytes, largest)
	}
	if d := c.totalDrops(); len(d) != 0 {
		t.Errorf("honest ceremonies had messages dropped: %v", d)
	}
}
