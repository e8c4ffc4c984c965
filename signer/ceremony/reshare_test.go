package ceremony_test

import (
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"errors"
	"math/big"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/bnb-chain/tss-lib/v3/common"
	ecdsakeygen "github.com/bnb-chain/tss-lib/v3/ecdsa/keygen"
	eddsakeygen "github.com/bnb-chain/tss-lib/v3/eddsa/keygen"
	"github.com/decred/dcrd/dcrec/secp256k1/v4"
	decredecdsa "github.com/decred/dcrd/dcrec/secp256k1/v4/ecdsa"

	"github.com/hwsigner/signer/internal/fixtures"
	"github.com/hwsigner/signer/signer/ceremony"
)

func union(a, b []string) []string {
	out := slices.Clone(a)
	for _, x := range b {
		if !slices.Contains(out, x) {
			out = append(out, x)
		}
	}
	return out
}

// reshareSession describes old -> new; shareIDs are the old parties' share keys.
func reshareSession(id, self string, old []string, shareIDs map[string]*big.Int, oldT int, newC []string, newT int, pub []byte) ceremony.ReshareSession {
	return ceremony.ReshareSession{ID: id, Self: self, Old: old, OldKeys: shareIDs, OldThreshold: oldT, New: newC, NewThreshold: newT, PubKey: pub}
}

func TestReshareECDSA2of3To3of4(t *testing.T) {
	pre := fixtures.PreParams(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	all := nodes(5)
	oldC, newC := all[:3], all[1:]
	net := ceremony.NewMemNetwork(oldC)
	kg := each(t, oldC, func(i int, id string) (*ecdsakeygen.LocalPartySaveData, error) {
		return ceremony.KeygenECDSA(ctx, ceremony.Session{ID: "kg", Self: id, Parties: oldC, Threshold: 1}, pre[i], net.Transport(id))
	})
	pub := ceremony.ECDSAPublicKey(kg[0].ECDSAPub)
	share := map[string]*ecdsakeygen.LocalPartySaveData{}
	keys := map[string]*big.Int{}
	// Only t+1 = 2 of the old committee take part: node0 and node1.
	oldParties := oldC[:2]
	for i, id := range oldParties {
		share[id], keys[id] = kg[i], kg[i].ShareID
	}
	parts := union(oldParties, newC)
	net = ceremony.NewMemNetwork(parts)
	start := time.Now()
	out := each(t, parts, func(i int, id string) (*ecdsakeygen.LocalPartySaveData, error) {
		var p *ecdsakeygen.LocalPreParams
		if slices.Contains(newC, id) {
			p = pre[slices.Index(all, id)]
		}
		s := reshareSession("rs", id, oldParties, keys, 1, newC, 2, pub)
		return ceremony.ReshareECDSA(ctx, s, share[id], p, net.Transport(id))
	})
	t.Logf("ECDSA reshare 2 old -> 4 new: %s", time.Since(start).Round(time.Millisecond))
	newShares := map[string]ecdsakeygen.LocalPartySaveData{}
	for i, id := range parts {
		if slices.Contains(newC, id) != (out[i] != nil) {
			t.Fatalf("%s: new share %v, want one iff in the new committee", id, out[i] != nil)
		}
		if out[i] != nil {
			newShares[id] = *out[i]
		}
	}
	if kg[0].Xi == nil || kg[0].Xi.Sign() == 0 {
		t.Fatal("the caller's old share was zeroed")
	}
	// node1 is in both committees: its new share sits at its other key.
	if newShares["node1"].ShareID.Cmp(ceremony.AltPartyKey("node1")) != 0 {
		t.Fatal("node1's new share is not at its alternate key")
	}
	// Sign with 3 of the new committee (including node1 at its new key).
	signers := []string{"node1", "node3", "node4"}
	digest := sha256.Sum256([]byte("after reshare"))
	net = ceremony.NewMemNetwork(signers)
	sigs := each(t, signers, func(i int, id string) (*common.SignatureData, error) {
		s := ceremony.Session{ID: "sign-rs", Self: id, Parties: signers, Threshold: 2}
		return ceremony.SignECDSA(ctx, s, newShares[id], digest[:], nil, net.Transport(id))
	})
	pk, err := secp256k1.ParsePubKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	var r, s secp256k1.ModNScalar
	r.SetByteSlice(sigs[0].R)
	s.SetByteSlice(sigs[0].S)
	if !decredecdsa.NewSignature(&r, &s).Verify(digest[:], pk) {
		t.Fatal("signature of the new committee does not verify under the original key")
	}
}

func TestReshareEdDSAThereAndBack(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	all := nodes(5)
	oldC, newC := all[:3], all[1:]
	net := ceremony.NewMemNetwork(oldC)
	kg := each(t, oldC, func(i int, id string) (*eddsakeygen.LocalPartySaveData, error) {
		return ceremony.KeygenEdDSA(ctx, ceremony.Session{ID: "ekg", Self: id, Parties: oldC, Threshold: 1}, net.Transport(id))
	})
	pub := edPub(kg[0])
	shares := map[string]*eddsakeygen.LocalPartySaveData{}
	for i, id := range oldC {
		shares[id] = kg[i]
	}
	reshare := func(sid string, from []string, oldT int, to []string, newT int, want []byte) (map[string]*eddsakeygen.LocalPartySaveData, error) {
		keys := map[string]*big.Int{}
		for _, id := range from {
			keys[id] = shares[id].ShareID
		}
		parts := union(from, to)
		net := ceremony.NewMemNetwork(parts)
		out := map[string]*eddsakeygen.LocalPartySaveData{}
		var mu sync.Mutex
		var first error
		var wg sync.WaitGroup
		for _, id := range parts {
			wg.Add(1)
			go func() {
				defer wg.Done()
				cctx, ccancel := context.WithTimeout(ctx, 20*time.Second)
				defer ccancel()
				s := reshareSession(sid, id, from, keys, oldT, to, newT, want)
				res, err := ceremony.ReshareEdDSA(cctx, s, shares[id], net.Transport(id))
				mu.Lock()
				defer mu.Unlock()
				if err != nil && first == nil {
					first = err
				}
				if res != nil {
					out[id] = res
				}
			}()
		}
		wg.Wait()
		return out, first
	}
	sign := func(signers []string, t2 int, sh map[string]*eddsakeygen.LocalPartySaveData, msg []byte) {
		t.Helper()
		net := ceremony.NewMemNetwork(signers)
		sigs := each(t, signers, func(i int, id string) (*common.SignatureData, error) {
			s := ceremony.Session{ID: "es-" + signers[0], Self: id, Parties: signers, Threshold: t2}
			return ceremony.SignEdDSA(ctx, s, *sh[id], msg, net.Transport(id))
		})
		if !ed25519.Verify(pub, msg, sigs[0].Signature) {
			t.Fatalf("signature by %v does not verify under the original key", signers)
		}
	}

	// A wrong expected key makes every new party fail; nothing changes.
	wrong := make([]byte, 32)
	if _, err := reshare("rs-wrong", oldC, 1, newC, 2, wrong); !errors.Is(err, ceremony.ErrParty) {
		t.Fatalf("reshare to a different public key: %v, want ErrParty", err)
	}

	// 2-of-3 {0,1,2} -> 3-of-4 {1,2,3,4}, then sign with 3 of the new.
	next, err := reshare("rs-1", oldC, 1, newC, 2, pub)
	if err != nil {
		t.Fatal(err)
	}
	if len(next) != 4 {
		t.Fatalf("%d new shares, want 4", len(next))
	}
	msg := []byte{0, 0, 9, 8, 7}
	sign([]string{"node2", "node3", "node4"}, 2, next, msg)

	// And back to 2-of-3 {0,1,2} from 3 of the 4: node1 and node2 return to
	// their first key, node0 comes back as a new member.
	shares = next
	back, err := reshare("rs-2", []string{"node1", "node2", "node4"}, 2, oldC, 1, pub)
	if err != nil {
		t.Fatal(err)
	}
	if back["node1"].ShareID.Cmp(ceremony.PartyKey("node1")) != 0 {
		t.Fatal("node1 did not return to its first key")
	}
	sign([]string{"node0", "node1"}, 1, back, msg)
}

func TestReshareBadParameters(t *testing.T) {
	ctx := context.Background()
	keys := map[string]*big.Int{"node0": ceremony.PartyKey("node0"), "node1": ceremony.PartyKey("node1")}
	cases := map[string]ceremony.ReshareSession{
		"too few old parties": {ID: "x", Self: "node0", Old: []string{"node0"}, OldKeys: keys, OldThreshold: 1, New: nodes(3), NewThreshold: 1},
		"bad new threshold":   {ID: "x", Self: "node0", Old: []string{"node0", "node1"}, OldKeys: keys, OldThreshold: 1, New: nodes(3), NewThreshold: 3},
		"unknown share key":   {ID: "x", Self: "node0", Old: []string{"node0", "node2"}, OldKeys: keys, OldThreshold: 1, New: nodes(3), NewThreshold: 1},
		"not a participant":   {ID: "x", Self: "node9", Old: []string{"node0", "node1"}, OldKeys: keys, OldThreshold: 1, New: nodes(3), NewThreshold: 1},
	}
	for name, s := range cases {
		if _, err := ceremony.ReshareEdDSA(ctx, s, nil, nil); err == nil {
			t.Errorf("%s: no error", name)
		}
	}
}
