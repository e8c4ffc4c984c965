package client_test

import (
	"bytes"
	"encoding/hex"
	"fmt"
	"strings"
	"testing"

	"github.com/decred/dcrd/dcrec/secp256k1/v4"

	"github.com/hwsigner/signer/client"
	"github.com/hwsigner/signer/protocol"
	"github.com/hwsigner/signer/protocol/hd"
)

func TestWalletKeyAndDeriveChildPublicKey(t *testing.T) {
	priv, _ := secp256k1.GeneratePrivateKey()
	secpPub := priv.PubKey().SerializeCompressed()
	edPub, _ := hex.DecodeString("d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a")
	res := &protocol.Result{Op: protocol.OpKeygen, ResultType: protocol.ResultSuccess,
		ECDSAPubKey: hex.EncodeToString(secpPub), EdDSAPubKey: hex.EncodeToString(edPub)}
	path := []uint32{44, 60, 0, 0, 7}
	for _, tc := range []struct {
		kt  string
		pub []byte
	}{{protocol.KeyTypeSecp256k1, secpPub}, {protocol.KeyTypeEd25519, edPub}} {
		pub, chain, err := client.WalletKey(res, tc.kt)
		if err != nil {
			t.Fatal(err)
		}
		want, _ := hd.ChainCode(tc.kt, tc.pub)
		if !bytes.Equal(pub, tc.pub) || !bytes.Equal(chain, want) {
			t.Fatalf("%s: WalletKey = %x %x", tc.kt, pub, chain)
		}
		child, err := client.DeriveChildPublicKey(tc.kt, pub, chain, path)
		if err != nil {
			t.Fatal(err)
		}
		c, _ := hd.Derive(tc.kt, pub, chain, path)
		if !bytes.Equal(child, c.PubKey) || bytes.Equal(child, pub) {
			t.Fatalf("%s: child %x", tc.kt, child)
		}
		if _, err := client.DeriveChildPublicKey(tc.kt, pub, chain, []uint32{protocol.HardenedOffset}); err == nil {
			t.Fatalf("%s: hardened index accepted", tc.kt)
		}
	}
	if _, _, err := client.WalletKey(&protocol.Result{ResultType: protocol.ResultSuccess}, protocol.KeyTypeEd25519); err == nil {
		t.Fatal("a result without the key accepted")
	}
	if _, _, err := client.WalletKey(res, "rsa"); err == nil {
		t.Fatal("unknown key type accepted")
	}
}

func TestParseDerivationPath(t *testing.T) {
	tests := []struct {
		in   string
		want []uint32
		ok   bool
	}{
		{"m/44/60/0/0/7", []uint32{44, 60, 0, 0, 7}, true},
		{"44/60/0", []uint32{44, 60, 0}, true},
		{"m", nil, true},
		{"", nil, true},
		{"m/2147483647", []uint32{1<<31 - 1}, true},
		{"m/2147483648", nil, false},
		{"m/44'/60", nil, false},
		{"m/44h", nil, false},
		{"m/44H", nil, false},
		{"m//1", nil, false},
		{"m/-1", nil, false},
		{"m/0x10", nil, false},
		{"m/1/", nil, false},
	}
	for _, tc := range tests {
		got, err := client.ParseDerivationPath(tc.in)
		if (err == nil) != tc.ok {
			t.Errorf("%q: err %v", tc.in, err)
			continue
		}
		if tc.ok && fmt.Sprint(got) != fmt.Sprint(tc.want) {
			t.Errorf("%q: got %v, want %v", tc.in, got, tc.want)
		}
		if tc.ok && len(tc.want) > 0 && client.FormatDerivationPath(got) != "m/"+strings.TrimPrefix(tc.in, "m/") {
			t.Errorf("%q: formats as %q", tc.in, client.FormatDerivationPath(got))
		}
	}
}
