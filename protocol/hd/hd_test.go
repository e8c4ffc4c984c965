package hd_test

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha512"
	"encoding/hex"
	"errors"
	"fmt"
	"math/big"
	mrand "math/rand/v2"
	"testing"

	"filippo.io/edwards25519"
	"github.com/btcsuite/btcd/btcutil/hdkeychain"
	"github.com/btcsuite/btcd/chaincfg"
	"github.com/decred/dcrd/dcrec/secp256k1/v4"

	"github.com/hwsigner/signer/protocol"
	"github.com/hwsigner/signer/protocol/hd"
)

func xpub(t *testing.T, s string) (pub, chain []byte) {
	t.Helper()
	k, err := hdkeychain.NewKeyFromString(s)
	if err != nil {
		t.Fatal(err)
	}
	pk, err := k.ECPubKey()
	if err != nil {
		t.Fatal(err)
	}
	return pk.SerializeCompressed(), k.ChainCode()
}

// TestDeriveBIP32Vectors walks the non-hardened steps of BIP32 test vectors
// 1 and 2, each starting from an extended public key the vectors give.
func TestDeriveBIP32Vectors(t *testing.T) {
	tests := []struct {
		name string
		from string
		path []uint32
		want string
	}{
		{"vector 1 m/0H -> m/0H/1", "xpub68Gmy5EdvgibQVfPdqkBBCHxA5htiqg55crXYuXoQRKfDBFA1WEjWgP6LHhwBZeNK1VTsfTFUHCdrfp1bgwQ9xv5ski8PX9rL2dZXvgGDnw",
			[]uint32{1}, "xpub6ASuArnXKPbfEwhqN6e3mwBcDTgzisQN1wXN9BJcM47sSikHjJf3UFHKkNAWbWMiGj7Wf5uMash7SyYq527Hqck2AxYysAA7xmALppuCkwQ"},
		{"vector 1 m/0H/1/2H -> m/0H/1/2H/2", "xpub6D4BDPcP2GT577Vvch3R8wDkScZWzQzMMUm3PWbmWvVJrZwQY4VUNgqFJPMM3No2dFDFGTsxxpG5uJh7n7epu4trkrX7x7DogT5Uv6fcLW5",
			[]uint32{2}, "xpub6FHa3pjLCk84BayeJxFW2SP4XRrFd1JYnxeLeU8EqN3vDfZmbqBqaGJAyiLjTAwm6ZLRQUMv1ZACTj37sR62cfN7fe5JnJ7dh8zL4fiyLHV"},
		{"vector 1 m/0H/1/2H -> m/0H/1/2H/2/1000000000", "xpub6D4BDPcP2GT577Vvch3R8wDkScZWzQzMMUm3PWbmWvVJrZwQY4VUNgqFJPMM3No2dFDFGTsxxpG5uJh7n7epu4trkrX7x7DogT5Uv6fcLW5",
			[]uint32{2, 1000000000}, "xpub6H1LXWLaKsWFhvm6RVpEL9P4KfRZSW7abD2ttkWP3SSQvnyA8FSVqNTEcYFgJS2UaFcxupHiYkro49S8yGasTvXEYBVPamhGW6cFJodrTHy"},
		{"vector 2 m -> m/0", "xpub661MyMwAqRbcFW31YEwpkMuc5THy2PSt5bDMsktWQcFF8syAmRUapSCGu8ED9W6oDMSgv6Zz8idoc4a6mr8BDzTJY47LJhkJ8UB7WEGuduB",
			[]uint32{0}, "xpub69H7F5d8KSRgmmdJg2KhpAK8SR3DjMwAdkxj3ZuxV27CprR9LgpeyGmXUbC6wb7ERfvrnKZjXoUmmDznezpbZb7ap6r1D3tgFxHmwMkQTPH"},
		{"vector 2 m/0/2147483647H -> /1", "xpub6ASAVgeehLbnwdqV6UKMHVzgqAG8Gr6riv3Fxxpj8ksbH9ebxaEyBLZ85ySDhKiLDBrQSARLq1uNRts8RuJiHjaDMBU4Zn9h8LZNnBC5y4a",
			[]uint32{1}, "xpub6DF8uhdarytz3FWdA8TvFSvvAh8dP3283MY7p2V4SeE2wyWmG5mg5EwVvmdMVCQcoNJxGoWaU9DCWh89LojfZ537wTfunKau47EL2dhHKon"},
		{"vector 2 m/0/2147483647H/1/2147483646H -> /2", "xpub6ERApfZwUNrhLCkDtcHTcxd75RbzS1ed54G1LkBUHQVHQKqhMkhgbmJbZRkrgZw4koxb5JaHWkY4ALHY2grBGRjaDMzQLcgJvLJuZZvRcEL",
			[]uint32{2}, "xpub6FnCn6nSzZAw5Tw7cgR9bi15UV96gLZhjDstkXXxvCLsUXBGXPdSnLFbdpq8p9HmGsApME5hQTZ3emM2rnY5agb9rXpVGyy3bdW6EEgAtqt"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			pub, chain := xpub(t, tc.from)
			wantPub, wantChain := xpub(t, tc.want)
			c, err := hd.Derive(protocol.KeyTypeSecp256k1, pub, chain, tc.path)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(c.PubKey, wantPub) || !bytes.Equal(c.ChainCode, wantChain) {
				t.Fatalf("got %x / %x, want %x / %x", c.PubKey, c.ChainCode, wantPub, wantChain)
			}
		})
	}
}

func randomPath(r *mrand.Rand, max int) []uint32 {
	p := make([]uint32, r.IntN(max+1))
	for i := range p {
		if r.IntN(3) == 0 {
			p[i] = uint32(r.IntN(10))
		} else {
			p[i] = r.Uint32N(protocol.HardenedOffset)
		}
	}
	return p
}

// TestDeriveSecp256k1AgainstHDKeychain compares random paths with btcutil's
// hdkeychain, and checks that the delta is the private-key difference.
func TestDeriveSecp256k1AgainstHDKeychain(t *testing.T) {
	r := mrand.New(mrand.NewPCG(1, 2))
	for n := 0; n < 40; n++ {
		seed := make([]byte, 32)
		rand.Read(seed)
		master, err := hdkeychain.NewMaster(seed, &chaincfg.MainNetParams)
		if err != nil {
			t.Fatal(err)
		}
		pubMaster, err := master.Neuter()
		if err != nil {
			t.Fatal(err)
		}
		path := randomPath(r, 8)
		wantPriv, wantPub := master, pubMaster
		for _, i := range path {
			if wantPub, err = wantPub.Derive(i); err != nil {
				t.Fatal(err)
			}
			if wantPriv, err = wantPriv.Derive(i); err != nil {
				t.Fatal(err)
			}
		}
		pk, _ := pubMaster.ECPubKey()
		c, err := hd.Derive(protocol.KeyTypeSecp256k1, pk.SerializeCompressed(), pubMaster.ChainCode(), path)
		if err != nil {
			t.Fatal(err)
		}
		want, _ := wantPub.ECPubKey()
		if !bytes.Equal(c.PubKey, want.SerializeCompressed()) || !bytes.Equal(c.ChainCode, wantPub.ChainCode()) {
			t.Fatalf("path %v: got %x, want %x", path, c.PubKey, want.SerializeCompressed())
		}
		// child private key = parent private key + delta (mod n)
		mp, _ := master.ECPrivKey()
		cp, _ := wantPriv.ECPrivKey()
		sum := new(big.Int).Add(new(big.Int).SetBytes(mp.Serialize()), c.Delta)
		sum.Mod(sum, secp256k1.S256().N)
		if sum.Cmp(new(big.Int).SetBytes(cp.Serialize())) != 0 {
			t.Fatalf("path %v: parent + delta is not the child private key", path)
		}
	}
}

var edL, _ = new(big.Int).SetString("7237005577332262213973186563042994240857116359379907606001950938285454250989", 10)

func bigToScalar(t *testing.T, v *big.Int) *edwards25519.Scalar {
	t.Helper()
	b := make([]byte, 32)
	new(big.Int).Mod(v, edL).FillBytes(b)
	for i, j := 0, 31; i < j; i, j = i+1, j-1 {
		b[i], b[j] = b[j], b[i]
	}
	s, err := edwards25519.NewScalar().SetCanonicalBytes(b)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// signWithScalar makes an Ed25519 signature with a bare secret scalar s
// (what the threshold signers compute together), so that crypto/ed25519
// can check it.
func signWithScalar(s *edwards25519.Scalar, pub, msg []byte) []byte {
	nb := make([]byte, 64)
	rand.Read(nb)
	r, _ := edwards25519.NewScalar().SetUniformBytes(nb)
	R := new(edwards25519.Point).ScalarBaseMult(r).Bytes()
	h := sha512.New()
	h.Write(R)
	h.Write(pub)
	h.Write(msg)
	k, _ := edwards25519.NewScalar().SetUniformBytes(h.Sum(nil))
	S := edwards25519.NewScalar().MultiplyAdd(k, s, r)
	return append(R, S.Bytes()...)
}

func randomEd25519(t *testing.T) (*edwards25519.Scalar, []byte) {
	t.Helper()
	b := make([]byte, 64)
	rand.Read(b)
	x, _ := edwards25519.NewScalar().SetUniformBytes(b)
	return x, new(edwards25519.Point).ScalarBaseMult(x).Bytes()
}

func TestDeriveEd25519Properties(t *testing.T) {
	r := mrand.New(mrand.NewPCG(3, 4))
	for n := 0; n < 40; n++ {
		x, pub := randomEd25519(t)
		chain, err := hd.ChainCode(protocol.KeyTypeEd25519, pub)
		if err != nil {
			t.Fatal(err)
		}
		path := randomPath(r, 8)
		c, err := hd.Derive(protocol.KeyTypeEd25519, pub, chain, path)
		if err != nil {
			t.Fatal(err)
		}
		// x + delta is the child's secret: its signature verifies under
		// the derived public key.
		child := edwards25519.NewScalar().Add(x, bigToScalar(t, c.Delta))
		if got := new(edwards25519.Point).ScalarBaseMult(child).Bytes(); !bytes.Equal(got, c.PubKey) {
			t.Fatalf("path %v: (x+delta)·B = %x, child key %x", path, got, c.PubKey)
		}
		msg := []byte{0, 0, 1, byte(n)}
		if !ed25519.Verify(c.PubKey, msg, signWithScalar(child, c.PubKey, msg)) {
			t.Fatalf("path %v: signature by the child scalar does not verify", path)
		}
		// child of child = derive along the whole path
		if len(path) > 0 {
			cut := r.IntN(len(path) + 1)
			mid, err := hd.Derive(protocol.KeyTypeEd25519, pub, chain, path[:cut])
			if err != nil {
				t.Fatal(err)
			}
			end, err := hd.Derive(protocol.KeyTypeEd25519, mid.PubKey, mid.ChainCode, path[cut:])
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(end.PubKey, c.PubKey) || !bytes.Equal(end.ChainCode, c.ChainCode) {
				t.Fatalf("path %v split at %d: stepwise derivation differs", path, cut)
			}
			sum := new(big.Int).Add(mid.Delta, end.Delta)
			if sum.Mod(sum, edL).Cmp(c.Delta) != 0 {
				t.Fatalf("path %v split at %d: deltas do not add up", path, cut)
			}
		}
	}
}

func TestDeriveSecp256k1ChildOfChild(t *testing.T) {
	priv, _ := secp256k1.GeneratePrivateKey()
	pub := priv.PubKey().SerializeCompressed()
	chain, _ := hd.ChainCode(protocol.KeyTypeSecp256k1, pub)
	path := []uint32{44, 60, 0, 0, 7}
	whole, err := hd.Derive(protocol.KeyTypeSecp256k1, pub, chain, path)
	if err != nil {
		t.Fatal(err)
	}
	k, c := pub, chain
	for _, i := range path {
		step, err := hd.Derive(protocol.KeyTypeSecp256k1, k, c, []uint32{i})
		if err != nil {
			t.Fatal(err)
		}
		k, c = step.PubKey, step.ChainCode
	}
	if !bytes.Equal(k, whole.PubKey) || !bytes.Equal(c, whole.ChainCode) {
		t.Fatal("stepwise derivation differs from derivation along the path")
	}
}

func TestDeriveDistinct(t *testing.T) {
	_, edPub := randomEd25519(t)
	priv, _ := secp256k1.GeneratePrivateKey()
	keys := map[string][]byte{
		protocol.KeyTypeEd25519:   edPub,
		protocol.KeyTypeSecp256k1: priv.PubKey().SerializeCompressed(),
	}
	paths := [][]uint32{{}, {0}, {1}, {0, 0}, {0, 1}, {1, 0}, {44, 60, 0, 0, 7}, {44, 60, 0, 0, 8}, {1<<31 - 1}}
	for kt, pub := range keys {
		chain, _ := hd.ChainCode(kt, pub)
		seen := map[string]string{}
		for _, p := range paths {
			c, err := hd.Derive(kt, pub, chain, p)
			if err != nil {
				t.Fatal(err)
			}
			k := hex.EncodeToString(c.PubKey)
			if prev, dup := seen[k]; dup {
				t.Fatalf("%s: paths %s and %v give the same key", kt, prev, p)
			}
			seen[k] = fmt.Sprint(p)
			if len(p) == 0 && (!bytes.Equal(c.PubKey, pub) || c.Delta.Sign() != 0) {
				t.Fatalf("%s: empty path must give the wallet key and delta 0", kt)
			}
		}
		// another chain code gives other children
		other := bytes.Clone(chain)
		other[0] ^= 1
		a, _ := hd.Derive(kt, pub, chain, []uint32{0})
		b, _ := hd.Derive(kt, pub, other, []uint32{0})
		if bytes.Equal(a.PubKey, b.PubKey) {
			t.Fatalf("%s: the chain code does not affect the child", kt)
		}
	}
}

// TestDeriveKnownAnswers pins both schemes (and the chain code) so that a
// change to any of them fails here; docs/hd-derivation.md quotes these.
func TestDeriveKnownAnswers(t *testing.T) {
	secpPub, _ := hex.DecodeString("0339a36013301597daef41fbe593a02cc513d0b55527ec2df1050e2e8ff49c85c2") // BIP32 vector 1 master
	edPub, _ := hex.DecodeString("d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a")     // RFC 8032 test 1
	tests := []struct {
		kt                      string
		pub                     []byte
		wantChain, wantChildPub string
	}{
		{protocol.KeyTypeSecp256k1, secpPub,
			"7148b6c9f5d62522ad41cb2c053d59ae76c721eeb71046d9b4aef92cf73b4ed6",
			"025bdc4dc9363267330c59481c4706fe1a0a2dd87e6371458768c8871a3d22ca84"},
		// also computed by an independent pure-Python Edwards implementation
		{protocol.KeyTypeEd25519, edPub,
			"eb9f262efc4c29bd52c252020a64e09019b6a233516ff2ddc2403f6f63e1ba3c",
			"cf3e9f5069ab042ac09ade5b69f6aeb148bc18e3408980e39cd14f7d0ef5ef9c"},
	}
	for _, tc := range tests {
		chain, err := hd.ChainCode(tc.kt, tc.pub)
		if err != nil {
			t.Fatal(err)
		}
		c, err := hd.Derive(tc.kt, tc.pub, chain, []uint32{44, 60, 0, 0, 7})
		if err != nil {
			t.Fatal(err)
		}
		if hex.EncodeToString(chain) != tc.wantChain || hex.EncodeToString(c.PubKey) != tc.wantChildPub {
			t.Errorf("%s: chain %x child %x, want %s %s", tc.kt, chain, c.PubKey, tc.wantChain, tc.wantChildPub)
		}
	}
}

func TestDeriveRejects(t *testing.T) {
	_, edPub := randomEd25519(t)
	priv, _ := secp256k1.GeneratePrivateKey()
	secpPub := priv.PubKey().SerializeCompressed()
	chain := make([]byte, 32)
	identity := edwards25519.NewIdentityPoint().Bytes()
	// y = p encodes y = 0 (the point (sqrt(-1), 0) of order 4) non-canonically
	nonCanonical := []byte{0xed, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
		0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f}
	tests := []struct {
		name  string
		kt    string
		pub   []byte
		chain []byte
		path  []uint32
	}{
		{"hardened", protocol.KeyTypeSecp256k1, secpPub, chain, []uint32{0, protocol.HardenedOffset}},
		{"hardened ed25519", protocol.KeyTypeEd25519, edPub, chain, []uint32{protocol.HardenedOffset + 5}},
		{"too deep", protocol.KeyTypeSecp256k1, secpPub, chain, make([]uint32, protocol.MaxDerivationDepth+1)},
		{"short chain code", protocol.KeyTypeEd25519, edPub, chain[:31], nil},
		{"bad secp256k1 key", protocol.KeyTypeSecp256k1, edPub, chain, []uint32{1}},
		{"bad ed25519 key length", protocol.KeyTypeEd25519, secpPub, chain, []uint32{1}},
		{"ed25519 identity", protocol.KeyTypeEd25519, identity, chain, []uint32{1}},
		{"ed25519 non-canonical", protocol.KeyTypeEd25519, nonCanonical, chain, []uint32{1}},
		{"unknown key type", "rsa", secpPub, chain, []uint32{1}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := hd.Derive(tc.kt, tc.pub, tc.chain, tc.path); !errors.Is(err, hd.ErrDerive) {
				t.Fatalf("got %v, want ErrDerive", err)
			}
		})
	}
	if _, err := hd.ChainCode(protocol.KeyTypeEd25519, identity); !errors.Is(err, hd.ErrDerive) {
		t.Fatalf("ChainCode of the identity: %v", err)
	}
}
