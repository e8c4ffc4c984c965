package ceremony_test

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"fmt"
	"math/big"
	mrand "math/rand/v2"
	"testing"
	"time"

	"github.com/bnb-chain/tss-lib/v3/common"
	tsscrypto "github.com/bnb-chain/tss-lib/v3/crypto"
	ecdsakeygen "github.com/bnb-chain/tss-lib/v3/ecdsa/keygen"
	eddsakeygen "github.com/bnb-chain/tss-lib/v3/eddsa/keygen"
	"github.com/bnb-chain/tss-lib/v3/tss"
	"github.com/decred/dcrd/dcrec/secp256k1/v4"
	decredecdsa "github.com/decred/dcrd/dcrec/secp256k1/v4/ecdsa"

	"github.com/hwsigner/signer/internal/fixtures"
	"github.com/hwsigner/signer/protocol"
	"github.com/hwsigner/signer/protocol/hd"
	"github.com/hwsigner/signer/signer/ceremony"
)

// TestHDChildECDSAKeyMatchesClient: the nodes' derivation (tss-lib's
// crypto/ckd) and the clients' (protocol/hd) agree on random keys and paths,
// and the delta is the one the client computes.
func TestHDChildECDSAKeyMatchesClient(t *testing.T) {
	r := mrand.New(mrand.NewPCG(5, 6))
	for n := 0; n < 30; n++ {
		priv, _ := secp256k1.GeneratePrivateKey()
		pk := priv.PubKey()
		pt, err := tsscrypto.NewECPoint(tss.S256(), pk.X(), pk.Y())
		if err != nil {
			t.Fatal(err)
		}
		xj, _ := tsscrypto.NewECPoint(tss.S256(), pk.X(), pk.Y())
		key := ecdsakeygen.LocalPartySaveData{ECDSAPub: pt, BigXj: []*tsscrypto.ECPoint{xj}}
		chain, _ := hd.ChainCode(protocol.KeyTypeSecp256k1, pk.SerializeCompressed())
		path := make([]uint32, r.IntN(7))
		for i := range path {
			path[i] = r.Uint32N(protocol.HardenedOffset)
		}
		child, delta, err := ceremony.ChildECDSAKey(key, chain, path)
		if err != nil {
			t.Fatal(err)
		}
		want, err := hd.Derive(protocol.KeyTypeSecp256k1, pk.SerializeCompressed(), chain, path)
		if err != nil {
			t.Fatal(err)
		}
		if got := ceremony.ECDSAPublicKey(child.ECDSAPub); !bytes.Equal(got, want.PubKey) {
			t.Fatalf("path %v: nodes derive %x, clients %x", path, got, want.PubKey)
		}
		if delta.Cmp(want.Delta) != 0 {
			t.Fatalf("path %v: delta %x, client delta %x", path, delta, want.Delta)
		}
		if len(path) > 0 && !key.BigXj[0].Equals(xj) {
			t.Fatal("ChildECDSAKey modified the caller's BigXj")
		}
		if len(path) > 0 && child.BigXj[0].Equals(xj) {
			t.Fatal("child BigXj not adjusted")
		}
	}
}

func ecdsaVerifies(t *testing.T, pub []byte, digest []byte, sig *common.SignatureData) bool {
	t.Helper()
	pk, err := secp256k1.ParsePubKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	var r, s secp256k1.ModNScalar
	r.SetByteSlice(sig.R)
	s.SetByteSlice(sig.S)
	if !decredecdsa.NewSignature(&r, &s).Verify(digest, pk) {
		return false
	}
	compact := append([]byte{27 + sig.SignatureRecovery[0] + 4}, append(pad32(sig.R), pad32(sig.S)...)...)
	rec, _, err := decredecdsa.RecoverCompact(compact, digest)
	return err == nil && rec.IsEqual(pk)
}

// TestHDSignECDSAWithDelta: a 2-of-3 key signs under its child along a path
// (two different signer sets); the signature verifies, with public key
// recovery, under the child key the client computes, and not under the
// wallet key.
func TestHDSignECDSAWithDelta(t *testing.T) {
	pre := fixtures.PreParams(t)
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	ids := nodes(3)
	net := ceremony.NewMemNetwork(ids)
	keys := each(t, ids, func(i int, id string) (*ecdsakeygen.LocalPartySaveData, error) {
		s := ceremony.Session{ID: "hd-kg", Self: id, Parties: ids, Threshold: 1}
		return ceremony.KeygenECDSA(ctx, s, pre[i%len(pre)], net.Transport(id))
	})
	walletPub := ceremony.ECDSAPublicKey(keys[0].ECDSAPub)
	chain, err := hd.ChainCode(protocol.KeyTypeSecp256k1, walletPub)
	if err != nil {
		t.Fatal(err)
	}
	for n, tc := range []struct {
		signers []int
		path    []uint32
	}{
		{[]int{0, 1}, []uint32{44, 60, 0, 0, 7}},
		{[]int{2, 0}, []uint32{1<<31 - 1, 3}},
	} {
		child, err := hd.Derive(protocol.KeyTypeSecp256k1, walletPub, chain, tc.path)
		if err != nil {
			t.Fatal(err)
		}
		signers := make([]string, len(tc.signers))
		for i, k := range tc.signers {
			signers[i] = ids[k]
		}
		digest := sha256.Sum256([]byte(fmt.Sprint("hd ", n)))
		net := ceremony.NewMemNetwork(signers)
		sigs := each(t, signers, func(i int, id string) (*common.SignatureData, error) {
			key, kdd, err := ceremony.ChildECDSAKey(*keys[tc.signers[i]], chain, tc.path)
			if err != nil {
				return nil, err
			}
			s := ceremony.Session{ID: fmt.Sprint("hd-sign-", n), Self: id, Parties: signers, Threshold: 1}
			return ceremony.SignECDSA(ctx, s, key, digest[:], kdd, net.Transport(id))
		})
		if !ecdsaVerifies(t, child.PubKey, digest[:], sigs[0]) {
			t.Fatalf("path %v: signature does not verify under the child key", tc.path)
		}
		if ecdsaVerifies(t, walletPub, digest[:], sigs[0]) {
			t.Fatalf("path %v: signature verifies under the wallet key", tc.path)
		}
	}
	// the shares were not changed: the wallet key still signs
	signers := ids[1:]
	digest := sha256.Sum256([]byte("wallet key"))
	net = ceremony.NewMemNetwork(signers)
	sigs := each(t, signers, func(i int, id string) (*common.SignatureData, error) {
		s := ceremony.Session{ID: "hd-sign-wallet", Self: id, Parties: signers, Threshold: 1}
		return ceremony.SignECDSA(ctx, s, *keys[i+1], digest[:], nil, net.Transport(id))
	})
	if !ecdsaVerifies(t, walletPub, digest[:], sigs[0]) {
		t.Fatal("wallet key signature does not verify after child signing")
	}
}

// TestHDSignEdDSAWithDelta: ed25519 shares shifted by the path's delta sign
// under the child key the client computes (crypto/ed25519), for several
// paths and signer sets, and the original shares are untouched.
func TestHDSignEdDSAWithDelta(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	ids := nodes(3)
	net := ceremony.NewMemNetwork(ids)
	keys := each(t, ids, func(i int, id string) (*eddsakeygen.LocalPartySaveData, error) {
		return ceremony.KeygenEdDSA(ctx, ceremony.Session{ID: "hd-ekg", Self: id, Parties: ids, Threshold: 1}, net.Transport(id))
	})
	walletPub := []byte(edPub(keys[0]))
	xi0 := new(big.Int).Set(keys[0].Xi)
	chain, err := hd.ChainCode(protocol.KeyTypeEd25519, walletPub)
	if err != nil {
		t.Fatal(err)
	}
	for n, tc := range []struct {
		signers []int
		path    []uint32
		msg     []byte
	}{
		{[]int{0, 1}, []uint32{44, 60, 0, 0, 7}, []byte{0, 0, 1, 2}},
		{[]int{2, 0}, []uint32{44, 60, 0, 0, 7}, []byte("same path, other signers")},
		{[]int{1, 2}, []uint32{0}, randBytes(100)},
		{[]int{0, 2}, nil, []byte("empty path: the wallet key")},
	} {
		child, err := hd.Derive(protocol.KeyTypeEd25519, walletPub, chain, tc.path)
		if err != nil {
			t.Fatal(err)
		}
		signers := make([]string, len(tc.signers))
		for i, k := range tc.signers {
			signers[i] = ids[k]
		}
		net := ceremony.NewMemNetwork(signers)
		sigs := each(t, signers, func(i int, id string) (*common.SignatureData, error) {
			key, err := ceremony.ChildEdDSAKey(*keys[tc.signers[i]], child.Delta)
			if err != nil {
				return nil, err
			}
			if got := ceremony.EdDSAPublicKey(key.EDDSAPub); !bytes.Equal(got, child.PubKey) {
				return nil, fmt.Errorf("adjusted share has public key %x, client computes %x", got, child.PubKey)
			}
			s := ceremony.Session{ID: fmt.Sprint("hd-es-", n), Self: id, Parties: signers, Threshold: 1}
			return ceremony.SignEdDSA(ctx, s, key, tc.msg, net.Transport(id))
		})
		if !ed25519.Verify(child.PubKey, tc.msg, sigs[0].Signature) {
			t.Fatalf("path %v: signature does not verify under the child key", tc.path)
		}
		if len(tc.path) > 0 && ed25519.Verify(walletPub, tc.msg, sigs[0].Signature) {
			t.Fatalf("path %v: signature verifies under the wallet key", tc.path)
		}
	}
	if keys[0].Xi.Cmp(xi0) != 0 || !bytes.Equal(edPub(keys[0]), walletPub) {
		t.Fatal("ChildEdDSAKey modified the caller's share")
	}
}

func TestHDChildEdDSAKeyRejects(t *testing.T) {
	n := tss.Edwards().Params().N
	key := eddsakeygen.LocalPartySaveData{}
	key.Xi = big.NewInt(5)
	key.EDDSAPub = tsscrypto.ScalarBaseMult(tss.Edwards(), big.NewInt(7))
	for _, d := range []*big.Int{nil, big.NewInt(-1), n} {
		if _, err := ceremony.ChildEdDSAKey(key, d); err == nil {
			t.Fatalf("delta %v accepted", d)
		}
	}
	if _, err := ceremony.ChildEdDSAKey(eddsakeygen.LocalPartySaveData{}, big.NewInt(1)); err == nil {
		t.Fatal("empty share accepted")
	}
	if _, _, err := ceremony.ChildECDSAKey(ecdsakeygen.LocalPartySaveData{}, make([]byte, 32), []uint32{1}); err == nil {
		t.Fatal("empty ECDSA share accepted")
	}
}
