package ceremony_test

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/sha512"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"math/big"
	"testing"
	"time"

	tsscrypto "github.com/bnb-chain/tss-lib/v3/crypto"
	ecdsakeygen "github.com/bnb-chain/tss-lib/v3/ecdsa/keygen"
	eddsakeygen "github.com/bnb-chain/tss-lib/v3/eddsa/keygen"
	"github.com/bnb-chain/tss-lib/v3/tss"
	"github.com/decred/dcrd/dcrec/secp256k1/v4"

	"github.com/hwsigner/signer/protocol"
	"github.com/hwsigner/signer/protocol/hd"
	"github.com/hwsigner/signer/signer/ceremony"
)

func scheme(t testing.TB, kt string) ceremony.Scheme {
	t.Helper()
	sc, err := ceremony.SchemeFor(kt)
	if err != nil {
		t.Fatal(err)
	}
	return sc
}

func TestSchemeFor(t *testing.T) {
	for _, tc := range []struct {
		keyType   string
		known     bool
		preParams bool
	}{
		{protocol.KeyTypeSecp256k1, true, true},
		{protocol.KeyTypeEd25519, true, false},
		{"", false, false},
		{"SECP256K1", false, false},
		{"ed448", false, false},
		{"rsa", false, false},
	} {
		t.Run(fmt.Sprintf("%q", tc.keyType), func(t *testing.T) {
			sc, err := ceremony.SchemeFor(tc.keyType)
			if !tc.known {
				if !errors.Is(err, ceremony.ErrUnknownKeyType) || sc != nil {
					t.Fatalf("SchemeFor(%q) = %v, %v; want nil, ErrUnknownKeyType", tc.keyType, sc, err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if sc.KeyType() != tc.keyType {
				t.Fatalf("scheme for %q has key type %q", tc.keyType, sc.KeyType())
			}
			if sc.NeedsPreParams() != tc.preParams {
				t.Fatalf("NeedsPreParams() = %v, want %v", sc.NeedsPreParams(), tc.preParams)
			}
		})
	}
}

// TestEveryKeyTypeHasAScheme: a key type the protocol accepts without a
// scheme would fail only at the first ceremony.
func TestEveryKeyTypeHasAScheme(t *testing.T) {
	for _, kt := range protocol.DefaultKeyTypes() {
		if !protocol.ValidKeyType(kt) {
			t.Fatalf("default key type %q is not valid", kt)
		}
		if _, err := ceremony.SchemeFor(kt); err != nil {
			t.Errorf("%s: %v", kt, err)
		}
	}
}

// TestPublicKeyEncodings: the schemes' point encodings agree with decred
// secp256k1 and with crypto/ed25519, and FillPublicKey puts them into the
// key type's keygen result field.
func TestPublicKeyEncodings(t *testing.T) {
	seed := bytes.Repeat([]byte{0x5a}, ed25519.SeedSize)
	edPriv := ed25519.NewKeyFromSeed(seed)
	// The ed25519 secret scalar: SHA-512 of the seed, clamped; tss-lib's
	// points are the scalar times the base point.
	edScalar := edSecretScalar(seed)
	for _, tc := range []struct {
		name    string
		keyType string
		point   func() *tsscrypto.ECPoint
		want    []byte
		field   func(*protocol.Result) string
	}{
		{"secp256k1 k=1", protocol.KeyTypeSecp256k1,
			func() *tsscrypto.ECPoint { return tsscrypto.ScalarBaseMult(tss.S256(), big.NewInt(1)) },
			secpPub(1), func(r *protocol.Result) string { return r.ECDSAPubKey }},
		{"secp256k1 k=0xdeadbeef", protocol.KeyTypeSecp256k1,
			func() *tsscrypto.ECPoint { return tsscrypto.ScalarBaseMult(tss.S256(), big.NewInt(0xdeadbeef)) },
			secpPub(0xdeadbeef), func(r *protocol.Result) string { return r.ECDSAPubKey }},
		{"ed25519 from seed", protocol.KeyTypeEd25519,
			func() *tsscrypto.ECPoint { return tsscrypto.ScalarBaseMult(tss.Edwards(), edScalar) },
			[]byte(edPriv.Public().(ed25519.PublicKey)), func(r *protocol.Result) string { return r.EdDSAPubKey }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var got []byte
			if tc.keyType == protocol.KeyTypeSecp256k1 {
				got = ceremony.ECDSAPublicKey(tc.point())
			} else {
				got = ceremony.EdDSAPublicKey(tc.point())
			}
			if !bytes.Equal(got, tc.want) {
				t.Fatalf("encoding %x, want %x", got, tc.want)
			}
			var res protocol.Result
			scheme(t, tc.keyType).FillPublicKey(&res, got)
			if tc.field(&res) != hex.EncodeToString(tc.want) || res.ECDSAPubKey+res.EdDSAPubKey != hex.EncodeToString(tc.want) {
				t.Fatalf("FillPublicKey set ecdsa %q eddsa %q", res.ECDSAPubKey, res.EdDSAPubKey)
			}
		})
	}
}

func secpPub(k uint32) []byte {
	var s secp256k1.ModNScalar
	s.SetInt(k)
	return secp256k1.NewPrivateKey(&s).PubKey().SerializeCompressed()
}

// TestSchemeRefusesBadInput: share plaintext that does not decode is
// ErrBadShare, a share that cannot move to the child key ErrDerivation,
// both before any message is sent.
func TestSchemeRefusesBadInput(t *testing.T) {
	var edKey eddsakeygen.LocalPartySaveData
	edKey.Xi = big.NewInt(5)
	edKey.EDDSAPub = tsscrypto.ScalarBaseMult(tss.Edwards(), big.NewInt(5))
	edKey.BigXj = []*tsscrypto.ECPoint{edKey.EDDSAPub}
	edShare, _ := json.Marshal(&edKey)
	var ecKey ecdsakeygen.LocalPartySaveData
	ecKey.Xi = big.NewInt(5)
	ecKey.ECDSAPub = tsscrypto.ScalarBaseMult(tss.S256(), big.NewInt(5))
	ecKey.BigXj = []*tsscrypto.ECPoint{ecKey.ECDSAPub}
	ecShare, _ := json.Marshal(&ecKey)
	noShare, _ := json.Marshal(eddsakeygen.LocalPartySaveData{})
	otherChild := &ceremony.Derivation{ChainCode: make([]byte, 32), Path: []uint32{1},
		Child: &hd.Child{PubKey: make([]byte, 32), Delta: big.NewInt(1)}}
	s := ceremony.Session{ID: "x", Self: "node0", Parties: nodes(2), Threshold: 1}
	for _, tc := range []struct {
		name    string
		keyType string
		share   []byte
		d       *ceremony.Derivation
		want    error
	}{
		{"secp256k1 not JSON", protocol.KeyTypeSecp256k1, []byte("not json"), nil, ceremony.ErrBadShare},
		{"ed25519 not JSON", protocol.KeyTypeEd25519, []byte{0xff}, nil, ceremony.ErrBadShare},
		{"ed25519 wrong child key", protocol.KeyTypeEd25519, edShare, otherChild, ceremony.ErrDerivation},
		{"ed25519 share without secret", protocol.KeyTypeEd25519, noShare, otherChild, ceremony.ErrDerivation},
		{"secp256k1 short chain code", protocol.KeyTypeSecp256k1, ecShare,
			&ceremony.Derivation{ChainCode: []byte{1}, Path: []uint32{1}, Child: otherChild.Child}, ceremony.ErrDerivation},
		{"secp256k1 wrong child key", protocol.KeyTypeSecp256k1, ecShare, otherChild, ceremony.ErrDerivation},
	} {
		t.Run(tc.name, func(t *testing.T) {
			// A nil transport: a scheme that got as far as sending would panic.
			_, err := scheme(t, tc.keyType).Sign(context.Background(), s, tc.share, make([]byte, 32), tc.d, nil)
			if !errors.Is(err, tc.want) {
				t.Fatalf("Sign: %v, want %v", err, tc.want)
			}
		})
	}
	for _, kt := range []string{protocol.KeyTypeSecp256k1, protocol.KeyTypeEd25519} {
		rs := ceremony.ReshareSession{ID: "x", Self: "node0", Old: nodes(2), OldThreshold: 1, New: nodes(3), NewThreshold: 1}
		if _, err := scheme(t, kt).Reshare(context.Background(), rs, []byte("{"), ceremony.Options{}, nil); !errors.Is(err, ceremony.ErrBadShare) {
			t.Fatalf("%s Reshare from a bad share: %v, want ErrBadShare", kt, err)
		}
		for _, bad := range [][]byte{[]byte("{"), noShare} {
			if _, err := scheme(t, kt).ShareKey(bad); !errors.Is(err, ceremony.ErrBadShare) {
				t.Fatalf("%s ShareKey(%.20q): %v, want ErrBadShare", kt, bad, err)
			}
		}
	}
}

// TestDerive: ceremony.Derive is protocol/hd's derivation; an empty path
// means the wallet key.
func TestDerive(t *testing.T) {
	edPub := ed25519.NewKeyFromSeed(bytes.Repeat([]byte{1}, 32)).Public().(ed25519.PublicKey)
	for _, tc := range []struct {
		keyType string
		pub     []byte
		path    []uint32
	}{
		{protocol.KeyTypeSecp256k1, secpPub(7), nil},
		{protocol.KeyTypeSecp256k1, secpPub(7), []uint32{44, 60, 0}},
		{protocol.KeyTypeEd25519, edPub, []uint32{}},
		{protocol.KeyTypeEd25519, edPub, []uint32{0, 1<<31 - 1}},
	} {
		t.Run(fmt.Sprint(tc.keyType, tc.path), func(t *testing.T) {
			chain, err := hd.ChainCode(tc.keyType, tc.pub)
			if err != nil {
				t.Fatal(err)
			}
			d, err := ceremony.Derive(tc.keyType, tc.pub, chain, tc.path)
			if err != nil {
				t.Fatal(err)
			}
			if len(tc.path) == 0 {
				if d != nil {
					t.Fatalf("empty path gives %+v, want nil", d)
				}
				return
			}
			want, err := hd.Derive(tc.keyType, tc.pub, chain, tc.path)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(d.Child.PubKey, want.PubKey) || d.Child.Delta.Cmp(want.Delta) != 0 || !bytes.Equal(d.ChainCode, chain) {
				t.Fatalf("Derive gives %x, protocol/hd %x", d.Child.PubKey, want.PubKey)
			}
		})
	}
	if _, err := ceremony.Derive("rsa", edPub, make([]byte, 32), []uint32{1}); err == nil {
		t.Fatal("Derive accepted an unknown key type")
	}
}

// TestEd25519SchemeThroughBytes: keygen, signing (wallet and child key) and
// a reshare through the Scheme interface, shares as bytes only; the shares
// are the JSON of tss-lib's save data (the format stores and backups hold)
// and the results verify with crypto/ed25519.
func TestEd25519SchemeThroughBytes(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	sc := scheme(t, protocol.KeyTypeEd25519)
	ids := nodes(3)
	net := ceremony.NewMemNetwork(ids)
	type keyOut struct{ share, pub []byte }
	kg := each(t, ids, func(i int, id string) (keyOut, error) {
		share, pub, err := sc.Keygen(ctx, ceremony.Session{ID: "skg", Self: id, Parties: ids, Threshold: 1}, ceremony.Options{}, net.Transport(id))
		return keyOut{share, pub}, err
	})
	pub := kg[0].pub
	for i := range kg {
		var k eddsakeygen.LocalPartySaveData
		if err := json.Unmarshal(kg[i].share, &k); err != nil {
			t.Fatalf("share %d is not save-data JSON: %v", i, err)
		}
		again, _ := json.Marshal(&k)
		if !bytes.Equal(again, kg[i].share) || !bytes.Equal(edPub(&k), pub) || !bytes.Equal(kg[i].pub, pub) {
			t.Fatalf("share %d: not the sealed format, or another public key", i)
		}
	}
	chain, err := hd.ChainCode(protocol.KeyTypeEd25519, pub)
	if err != nil {
		t.Fatal(err)
	}
	sign := func(sid string, signers []string, t2 int, shares map[string][]byte, d *ceremony.Derivation, want []byte) {
		t.Helper()
		msg := []byte{0, 0, 1, 2, 3}
		net := ceremony.NewMemNetwork(signers)
		res := each(t, signers, func(i int, id string) (*protocol.Result, error) {
			sig, err := sc.Sign(ctx, ceremony.Session{ID: sid, Self: id, Parties: signers, Threshold: t2}, shares[id], msg, d, net.Transport(id))
			if err != nil {
				return nil, err
			}
			var r protocol.Result
			return &r, sig.Fill(&r)
		})
		raw, err := hex.DecodeString(res[0].Signature)
		if err != nil || !ed25519.Verify(want, msg, raw) || res[0].R != "" {
			t.Fatalf("%s: signature %q does not verify under %x", sid, res[0].Signature, want)
		}
	}
	shares := map[string][]byte{}
	for i, id := range ids {
		shares[id] = kg[i].share
	}
	sign("ss-wallet", []string{"node2", "node0"}, 1, shares, nil, pub)
	d, err := ceremony.Derive(protocol.KeyTypeEd25519, pub, chain, []uint32{44, 0, 7})
	if err != nil {
		t.Fatal(err)
	}
	sign("ss-child", []string{"node0", "node1"}, 1, shares, d, d.Child.PubKey)

	// 2-of-3 {0,1,2} -> 2-of-3 {1,2,3}: node0 leaves, node3 joins.
	keys := map[string]*big.Int{}
	for i, id := range ids {
		var k eddsakeygen.LocalPartySaveData
		_ = json.Unmarshal(kg[i].share, &k)
		got, err := sc.ShareKey(kg[i].share)
		if err != nil || got.Cmp(k.ShareID) != 0 || got.Cmp(ceremony.PartyKey(id)) != 0 {
			t.Fatalf("ShareKey of %s: %v %v, want its ShareID %v (its party key)", id, got, err, k.ShareID)
		}
		keys[id] = got
	}
	all := nodes(4)
	newC := all[1:]
	net = ceremony.NewMemNetwork(all)
	out := each(t, all, func(i int, id string) ([]byte, error) {
		s := reshareSession("srs", id, ids, keys, 1, newC, 1, pub)
		return sc.Reshare(ctx, s, shares[id], ceremony.Options{}, net.Transport(id))
	})
	next := map[string][]byte{}
	for i, id := range all {
		if (out[i] != nil) != (id != "node0") {
			t.Fatalf("%s: new share %v, want one iff in the new committee", id, out[i] != nil)
		}
		next[id] = out[i]
	}
	sign("ss-after", []string{"node3", "node1"}, 1, next, d, d.Child.PubKey)
	// Every member computes the same key digest, and the reshare's differs.
	if digests(t, sc, pub, shares) == digests(t, sc, pub, next) {
		t.Fatal("the reshare's key digest is the keygen's")
	}
}

// edSecretScalar is the ed25519 secret scalar of a seed (RFC 8032 5.1.5).
func edSecretScalar(seed []byte) *big.Int {
	h := sha512.Sum512(seed)
	h[0] &= 248
	h[31] &= 127
	h[31] |= 64
	le := h[:32]
	be := make([]byte, 32)
	for i := range le {
		be[31-i] = le[i]
	}
	return new(big.Int).SetBytes(be)
}

// TestKeyDigestFormat: KeyDigest is the documented hash (a known answer
// computed independently from its description), independent of the order
// of the shares, and PublicShares reads Ks and BigXj of both save-data
// formats and nothing it cannot decode.
func TestKeyDigestFormat(t *testing.T) {
	shares := []ceremony.PublicShare{
		{Key: big.NewInt(7), X: big.NewInt(0x1234), Y: big.NewInt(0x56)},
		{Key: big.NewInt(2), X: big.NewInt(300), Y: big.NewInt(1)},
	}
	d := ceremony.KeyDigest(protocol.KeyTypeEd25519, []byte{1, 2, 3}, shares)
	if got := hex.EncodeToString(d[:]); got != "ed4b529ab6c9a5d3f57cbae33de386985060860fde85ef263d6dcf229f42ffcb" {
		t.Fatalf("KeyDigest = %s", got)
	}
	if ceremony.KeyDigest(protocol.KeyTypeEd25519, []byte{1, 2, 3}, []ceremony.PublicShare{shares[1], shares[0]}) != d {
		t.Fatal("KeyDigest depends on the order of the shares")
	}
	moved := []ceremony.PublicShare{shares[0], {Key: big.NewInt(2), X: big.NewInt(300), Y: big.NewInt(2)}}
	if ceremony.KeyDigest(protocol.KeyTypeEd25519, []byte{1, 2, 3}, moved) == d ||
		ceremony.KeyDigest(protocol.KeyTypeSecp256k1, []byte{1, 2, 3}, shares) == d ||
		ceremony.KeyDigest(protocol.KeyTypeEd25519, []byte{1, 2, 4}, shares) == d {
		t.Fatal("KeyDigest ignores a share point, the key type or the public key")
	}

	var ecKey ecdsakeygen.LocalPartySaveData
	ecKey.Xi, ecKey.ShareID = big.NewInt(5), big.NewInt(11)
	ecKey.ECDSAPub = tsscrypto.ScalarBaseMult(tss.S256(), big.NewInt(5))
	ecKey.Ks = []*big.Int{big.NewInt(11), big.NewInt(12)}
	ecKey.BigXj = []*tsscrypto.ECPoint{ecKey.ECDSAPub, tsscrypto.ScalarBaseMult(tss.S256(), big.NewInt(6))}
	ecShare, _ := json.Marshal(&ecKey)
	got, err := scheme(t, protocol.KeyTypeSecp256k1).PublicShares(ecShare)
	if err != nil || len(got) != 2 || got[1].Key.Cmp(big.NewInt(12)) != 0 || got[1].X.Cmp(ecKey.BigXj[1].X()) != 0 || got[1].Y.Cmp(ecKey.BigXj[1].Y()) != 0 {
		t.Fatalf("secp256k1 PublicShares: %+v %v", got, err)
	}
	noShare, _ := json.Marshal(eddsakeygen.LocalPartySaveData{})
	short := ecKey
	short.Ks = short.Ks[:1]
	shortShare, _ := json.Marshal(&short)
	for _, kt := range []string{protocol.KeyTypeSecp256k1, protocol.KeyTypeEd25519} {
		for _, bad := range [][]byte{[]byte("{"), noShare, shortShare} {
			if _, err := scheme(t, kt).PublicShares(bad); !errors.Is(err, ceremony.ErrBadShare) {
				t.Fatalf("%s PublicShares(%.20q): %v, want ErrBadShare", kt, bad, err)
			}
		}
	}
}

// digests returns each node's KeyDigest of its share, failing when two
// differ or a share's own point is not x_i·G.
func digests(t *testing.T, sc ceremony.Scheme, pub []byte, shares map[string][]byte) [32]byte {
	t.Helper()
	var first [32]byte
	n := 0
	for id, share := range shares {
		if share == nil {
			continue
		}
		ps, err := sc.PublicShares(share)
		if err != nil {
			t.Fatalf("%s PublicShares: %v", id, err)
		}
		var k eddsakeygen.LocalPartySaveData
		_ = json.Unmarshal(share, &k)
		own := tsscrypto.ScalarBaseMult(tss.Edwards(), k.Xi)
		found := false
		for _, p := range ps {
			if p.Key.Cmp(k.ShareID) == 0 {
				found = p.X.Cmp(own.X()) == 0 && p.Y.Cmp(own.Y()) == 0
			}
		}
		if !found {
			t.Fatalf("%s: its public share point is not x_i·G at its share key", id)
		}
		d := ceremony.KeyDigest(sc.KeyType(), pub, ps)
		if n > 0 && d != first {
			t.Fatalf("%s computes another key digest", id)
		}
		first = d
		n++
	}
	return first
}
