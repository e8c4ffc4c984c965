package ceremony_test

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
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
	"github.com/hwsigner/signer/protocol"
	"github.com/hwsigner/signer/signer/ceremony"
)

func nodes(n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("node%d", i)
	}
	return out
}

// each runs f for every node concurrently and collects results.
func each[T any](t testing.TB, ids []string, f func(i int, id string) (T, error)) []T {
	t.Helper()
	res := make([]T, len(ids))
	errs := make([]error, len(ids))
	var wg sync.WaitGroup
	for i, id := range ids {
		wg.Add(1)
		go func() {
			defer wg.Done()
			res[i], errs[i] = f(i, id)
		}()
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("%s: %v", ids[i], err)
		}
	}
	return res
}

func TestECDSAKeygenAndSign(t *testing.T) {
	pre := fixtures.PreParams(t)
	for _, tc := range []struct{ n, th int }{{3, 1}} {
		t.Run(fmt.Sprintf("%d-of-%d", tc.th+1, tc.n), func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
			defer cancel()
			ids := nodes(tc.n)
			net := ceremony.NewMemNetwork(ids)
			keys := each(t, ids, func(i int, id string) (*ecdsakeygen.LocalPartySaveData, error) {
				s := ceremony.Session{ID: "kg-1", Self: id, Parties: ids, Threshold: tc.th}
				return ceremony.KeygenECDSA(ctx, s, pre[i%len(pre)], net.Transport(id))
			})
			pub := keys[0].ECDSAPub
			pk, err := secp256k1.ParsePubKey(append([]byte{4}, append(pad32(pub.X().Bytes()), pad32(pub.Y().Bytes())...)...))
			if err != nil {
				t.Fatal(err)
			}
			signers := ids[:tc.th+1]
			digest := sha256.Sum256([]byte("hello"))
			net = ceremony.NewMemNetwork(signers)
			sigs := each(t, signers, func(i int, id string) (*common.SignatureData, error) {
				s := ceremony.Session{ID: "sign-1", Self: id, Parties: signers, Threshold: tc.th}
				return ceremony.SignECDSA(ctx, s, *keys[i], digest[:], nil, net.Transport(id))
			})
			sig := sigs[0]
			var r, s secp256k1.ModNScalar
			r.SetByteSlice(sig.R)
			s.SetByteSlice(sig.S)
			if !decredecdsa.NewSignature(&r, &s).Verify(digest[:], pk) {
				t.Fatal("signature does not verify with decred secp256k1")
			}
			compact := append([]byte{27 + sig.SignatureRecovery[0] + 4}, append(pad32(sig.R), pad32(sig.S)...)...)
			rec, _, err := decredecdsa.RecoverCompact(compact, digest[:])
			if err != nil || !rec.IsEqual(pk) {
				t.Fatalf("recovery id does not recover the wallet key: %v", err)
			}

			// The same shares, as the node seals them (JSON), sign through
			// the secp256k1 scheme; the result carries a signature that
			// verifies and recovers the wallet key.
			sc, err := ceremony.SchemeFor(protocol.KeyTypeSecp256k1)
			if err != nil {
				t.Fatal(err)
			}
			net = ceremony.NewMemNetwork(signers)
			results := each(t, signers, func(i int, id string) (*protocol.Result, error) {
				share, err := json.Marshal(keys[i])
				if err != nil {
					return nil, err
				}
				s := ceremony.Session{ID: "sign-scheme", Self: id, Parties: signers, Threshold: tc.th}
				sig, err := sc.Sign(ctx, s, share, digest[:], nil, net.Transport(id))
				if err != nil {
					return nil, err
				}
				var res protocol.Result
				return &res, sig.Fill(&res)
			})
			res := results[0]
			rb, _ := hex.DecodeString(res.R)
			sb, _ := hex.DecodeString(res.S)
			if len(rb) != 32 || len(sb) != 32 || res.Signature != res.R+res.S {
				t.Fatalf("result r %q s %q signature %q: want 32-byte r and s, signature r||s", res.R, res.S, res.Signature)
			}
			r.SetByteSlice(rb)
			s.SetByteSlice(sb)
			if !decredecdsa.NewSignature(&r, &s).Verify(digest[:], pk) {
				t.Fatal("scheme signature does not verify with decred secp256k1")
			}
			compact = append([]byte{27 + byte(res.SignatureRecovery) + 4}, append(rb, sb...)...)
			if rec, _, err := decredecdsa.RecoverCompact(compact, digest[:]); err != nil || !rec.IsEqual(pk) {
				t.Fatalf("scheme recovery id does not recover the wallet key: %v", err)
			}
		})
	}
}

func TestEdDSAKeygenAndSignLeadingZeros(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	ids := nodes(3)
	net := ceremony.NewMemNetwork(ids)
	keys := each(t, ids, func(i int, id string) (*eddsakeygen.LocalPartySaveData, error) {
		return ceremony.KeygenEdDSA(ctx, ceremony.Session{ID: "ekg", Self: id, Parties: ids, Threshold: 1}, net.Transport(id))
	})
	pub := edPub(keys[0])
	for _, msg := range [][]byte{{0, 0, 1, 2, 3}, bytes.Repeat([]byte{7}, 100), randBytes(32)} {
		signers := []string{"node2", "node0"}
		net := ceremony.NewMemNetwork(signers)
		sigs := each(t, signers, func(i int, id string) (*common.SignatureData, error) {
			k := keys[0]
			if id == "node2" {
				k = keys[2]
			}
			return ceremony.SignEdDSA(ctx, ceremony.Session{ID: "es", Self: id, Parties: signers, Threshold: 1}, *k, msg, net.Transport(id))
		})
		if !ed25519.Verify(pub, msg, sigs[0].Signature) {
			t.Fatalf("ed25519 signature of %x does not verify", msg[:4])
		}
	}
}

func TestNotParticipant(t *testing.T) {
	_, err := ceremony.KeygenEdDSA(context.Background(), ceremony.Session{ID: "x", Self: "nodeX", Parties: nodes(3), Threshold: 1}, nil)
	if err == nil {
		t.Fatal("expected error")
	}
}

func TestDeadlineAborts(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	ids := nodes(3)
	net := ceremony.NewMemNetwork(ids)
	// Only node0 runs: the others never answer, so the deadline must end it.
	_, err := ceremony.KeygenEdDSA(ctx, ceremony.Session{ID: "d", Self: "node0", Parties: ids, Threshold: 1}, net.Transport("node0"))
	if err == nil || ctx.Err() == nil {
		t.Fatalf("expected deadline error, got %v", err)
	}
}

func edPub(k *eddsakeygen.LocalPartySaveData) ed25519.PublicKey {
	return ceremony.EdDSAPublicKey(k.EDDSAPub)
}

func pad32(b []byte) []byte {
	if len(b) >= 32 {
		return b
	}
	return append(make([]byte, 32-len(b)), b...)
}

func randBytes(n int) []byte {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return b
}

// A signer that never answers stalls the session: with Session.Stall set,
// the ceremony ends long before its deadline with a *StalledError naming
// the silent node; without it, only the deadline ends it.
func TestStallNamesTheSilentSigner(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	ids := nodes(3)
	net := ceremony.NewMemNetwork(ids)
	keys := each(t, ids, func(i int, id string) (*eddsakeygen.LocalPartySaveData, error) {
		return ceremony.KeygenEdDSA(ctx, ceremony.Session{ID: "stall-kg", Self: id, Parties: ids, Threshold: 1}, net.Transport(id))
	})
	signers := []string{"node0", "node1"}
	for _, tc := range []struct {
		name  string
		stall time.Duration
		want  error
	}{
		{"stall set", 300 * time.Millisecond, ceremony.ErrStalled},
		{"no stall", 0, context.DeadlineExceeded},
	} {
		t.Run(tc.name, func(t *testing.T) {
			sctx, scancel := context.WithTimeout(ctx, 3*time.Second)
			defer scancel()
			net := ceremony.NewMemNetwork(signers)
			start := time.Now()
			// Only node0 runs: node1 is silent.
			_, err := ceremony.SignEdDSA(sctx, ceremony.Session{ID: "stall-" + tc.name, Self: "node0", Parties: signers, Threshold: 1, Stall: tc.stall},
				*keys[0], []byte("msg"), net.Transport("node0"))
			if !errors.Is(err, tc.want) {
				t.Fatalf("err = %v, want %v", err, tc.want)
			}
			var se *ceremony.StalledError
			if tc.stall > 0 {
				if !errors.As(err, &se) || !slices.Equal(se.Waiting, []string{"node1"}) {
					t.Fatalf("stalled error %v does not name node1 alone", err)
				}
				if d := time.Since(start); d > 2*time.Second {
					t.Fatalf("stall noticed after %s, want about %s", d, tc.stall)
				}
			}
		})
	}
}
