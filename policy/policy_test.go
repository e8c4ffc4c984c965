package policy

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/hwsigner/signer/keyfile"
	"github.com/hwsigner/signer/protocol"
)

func newEd25519(t testing.TB) crypto.Signer {
	t.Helper()
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return priv
}

func newP256(t testing.TB) crypto.Signer {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func indentPEM(t *testing.T, pub crypto.PublicKey) string {
	t.Helper()
	p, err := keyfile.MarshalPublicKeyPEM(pub)
	if err != nil {
		t.Fatal(err)
	}
	return "      " + strings.ReplaceAll(strings.TrimSpace(p), "\n", "\n      ")
}

func TestPolicyYAMLAndJSON(t *testing.T) {
	a, b, legacy := newEd25519(t), newP256(t), newEd25519(t)
	der, _ := x509.MarshalPKIXPublicKey(b.Public())
	yamlDoc := fmt.Sprintf(`clients:
  - name: service A
    public_key: |
%s
    client_ids: [svcA, svcA-batch]
    ops: [keygen, sign, reshare]
  - name: service B
    public_key: %s
    client_ids: ["svcB"]
    ops: [sign]
  - name: old backend
    public_key: |
%s
    client_ids: [""]
    ops: [keygen, sign]
`, indentPEM(t, a.Public()), base64.StdEncoding.EncodeToString(der), indentPEM(t, legacy.Public()))

	pemA, _ := keyfile.MarshalPublicKeyPEM(a.Public())
	pemL, _ := keyfile.MarshalPublicKeyPEM(legacy.Public())
	jsonDoc, _ := json.MarshalIndent(Config{Clients: []ClientConfig{
		{Name: "service A", PublicKey: pemA, ClientIDs: []string{"svcA", "svcA-batch"}, Ops: []string{protocol.OpKeygen, protocol.OpSign, protocol.OpReshare}},
		{Name: "service B", PublicKey: base64.StdEncoding.EncodeToString(der), ClientIDs: []string{"svcB"}, Ops: []string{protocol.OpSign}},
		{Name: "old backend", PublicKey: pemL, ClientIDs: []string{""}, Ops: []string{protocol.OpKeygen, protocol.OpSign}},
	}}, "", "\t")

	idA, _ := protocol.KeyID(a.Public())
	idB, _ := protocol.KeyID(b.Public())
	idL, _ := protocol.KeyID(legacy.Public())
	for name, doc := range map[string]string{"yaml": yamlDoc, "json": string(jsonDoc)} {
		t.Run(name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "policy")
			if err := os.WriteFile(path, []byte(doc), 0o600); err != nil {
				t.Fatal(err)
			}
			p, err := LoadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			if p.Len() != 3 {
				t.Fatalf("Len = %d", p.Len())
			}
			tests := []struct {
				keyID, clientID, op string
				want                error
				wantPub             crypto.PublicKey
			}{
				{idA, "svcA", protocol.OpSign, nil, a.Public()},
				{idA, "svcA-batch", protocol.OpReshare, nil, a.Public()},
				{idA, "svcB", protocol.OpSign, ErrClientIDNotAllowed, a.Public()},
				{idA, "", protocol.OpSign, ErrClientIDNotAllowed, a.Public()},
				{idA, "svcA_batch", protocol.OpSign, ErrClientIDNotAllowed, a.Public()},
				{idB, "svcB", protocol.OpSign, nil, b.Public()},
				{idB, "svcB", protocol.OpKeygen, ErrOpNotAllowed, b.Public()},
				{idB, "svcA", protocol.OpSign, ErrClientIDNotAllowed, b.Public()},
				{idL, "", protocol.OpKeygen, nil, legacy.Public()},
				{idL, "", protocol.OpReshare, ErrOpNotAllowed, legacy.Public()},
				{idA, "svcA", "burn", protocol.ErrUnknownOp, a.Public()},
				{"00000000000000000000000000000000", "svcA", protocol.OpSign, ErrUnknownKey, nil},
			}
			for _, tt := range tests {
				pub, err := p.Authorize(tt.keyID, tt.clientID, tt.op)
				if tt.want == nil && err != nil || tt.want != nil && !errors.Is(err, tt.want) {
					t.Errorf("Authorize(%s, %q, %s) = %v, want %v", tt.keyID, tt.clientID, tt.op, err, tt.want)
				}
				if tt.wantPub == nil && pub != nil || tt.wantPub != nil && !pubEqual(pub, tt.wantPub) {
					t.Errorf("Authorize(%s, %q, %s): wrong public key", tt.keyID, tt.clientID, tt.op)
				}
			}
			for _, c := range []struct{ keyID, want string }{{idA, "svcA"}, {idB, "svcB"}, {idL, ""}} {
				got, ok := p.PrimaryClientID(c.keyID)
				if !ok || got != c.want {
					t.Errorf("PrimaryClientID(%s) = %q, %v", c.keyID, got, ok)
				}
			}
			if _, ok := p.PrimaryClientID("nope"); ok {
				t.Error("PrimaryClientID of unknown key")
			}
			if n, _ := p.ClientName(idB); n != "service B" {
				t.Errorf("ClientName = %q", n)
			}
		})
	}
}

func pubEqual(a, b crypto.PublicKey) bool {
	ia, err1 := protocol.KeyID(a)
	ib, err2 := protocol.KeyID(b)
	return err1 == nil && err2 == nil && ia == ib
}

func TestPolicyInvalid(t *testing.T) {
	pem, _ := keyfile.MarshalPublicKeyPEM(newEd25519(t).Public())
	ok := ClientConfig{Name: "a", PublicKey: pem, ClientIDs: []string{"a"}, Ops: []string{protocol.OpSign}}
	mod := func(f func(c *ClientConfig)) []ClientConfig { c := ok; f(&c); return []ClientConfig{c} }
	tests := []struct {
		name    string
		clients []ClientConfig
	}{
		{"no name", mod(func(c *ClientConfig) { c.Name = "" })},
		{"bad key", mod(func(c *ClientConfig) { c.PublicKey = "not a key" })},
		{"no key", mod(func(c *ClientConfig) { c.PublicKey = "" })},
		{"no client ids", mod(func(c *ClientConfig) { c.ClientIDs = nil })},
		{"bad client id", mod(func(c *ClientConfig) { c.ClientIDs = []string{"a.b"} })},
		{"no ops", mod(func(c *ClientConfig) { c.Ops = nil })},
		{"bad op", mod(func(c *ClientConfig) { c.Ops = []string{"*"} })},
		{"duplicate key", []ClientConfig{ok, ok}},
	}
	for _, tt := range tests {
		if _, err := New(Config{Clients: tt.clients}); !errors.Is(err, ErrInvalid) {
			t.Errorf("%s: got %v", tt.name, err)
		}
	}
	for _, doc := range []string{"clients:\n  - name: a\n    pubkey: x\n", `{"clients":[{"name":"a","extra":1}]}`, "clients: [", "\t{"} {
		if _, err := Parse([]byte(doc)); !errors.Is(err, ErrInvalid) {
			t.Errorf("%q: got %v", doc, err)
		}
	}
	if _, err := LoadFile(filepath.Join(t.TempDir(), "missing")); !errors.Is(err, ErrInvalid) {
		t.Errorf("missing file: %v", err)
	}
}

func TestMayUseWallet(t *testing.T) {
	pemA, _ := keyfile.MarshalPublicKeyPEM(newEd25519(t).Public())
	pemB, _ := keyfile.MarshalPublicKeyPEM(newP256(t).Public())
	pemL, _ := keyfile.MarshalPublicKeyPEM(newEd25519(t).Public())
	doc := fmt.Sprintf(`clients:
  - name: service A
    public_key: %q
    client_ids: [svcA]
    ops: [keygen, sign, reshare]
  - name: ops
    public_key: %q
    client_ids: [svcB, svcB-batch]
    ops: [sign, reshare]
    wallet_grants:
      - {owner: svcA, wallets: [w1, w2]}
      - owner: svcC
        wallets: [w9]
  - name: old backend
    public_key: %q
    client_ids: [""]
    ops: [sign]
    wallet_grants: [{owner: svcA, wallets: [w3]}]
`, pemA, pemB, pemL)
	p, err := Parse([]byte(doc))
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		client, owner, wallet string
		want                  bool
	}{
		{"svcA", "svcA", "w1", true},           // its own
		{"svcA", "svcA", "anything", true},     // its own, any wallet
		{"svcB", "svcA", "w1", true},           // granted
		{"svcB", "svcA", "w2", true},           // granted
		{"svcB-batch", "svcA", "w1", true},     // every client ID of the entry
		{"svcB", "svcA", "w3", false},          // not granted
		{"svcB", "svcC", "w9", true},           // second grant
		{"svcB", "svcC", "w1", false},          // w1 is granted of svcA, not svcC
		{"svcA", "svcB", "w1", false},          // grants are one way
		{"svcD", "svcA", "w1", false},          // unknown client
		{"", "", "w1", true},                   // legacy wallet, legacy client
		{"svcA", "", "w1", false},              // legacy wallet, scoped client
		{"svcB", "", "w1", false},              // legacy wallets cannot be granted
		{"", "svcA", "w3", true},               // a legacy client may be granted
		{"", "svcA", "w1", false},              // but only what it is granted
		{"svcB", "svcA", "", false},            // no wallet ID
		{"svcB", "svcA", "W1", false},          // IDs are exact
		{"svcb", "svcA", "w1", false},          // client IDs are exact
		{"svcB-batch", "svcC", "w9", true},     // second grant, second client ID
		{"svcB", "svcA-other", "w1", false},    // owner must match exactly
		{"svcB-batch", "svcB", "w-own", false}, // another ID of the same entry is another owner
	}
	for _, tt := range tests {
		if got := p.MayUseWallet(tt.client, tt.owner, tt.wallet); got != tt.want {
			t.Errorf("MayUseWallet(%q, %q, %q) = %v, want %v", tt.client, tt.owner, tt.wallet, got, tt.want)
		}
	}
	// JSON carries the same grants.
	js, _ := json.Marshal(Config{Clients: []ClientConfig{{Name: "ops", PublicKey: pemB, ClientIDs: []string{"svcB"}, Ops: []string{"sign"},
		WalletGrants: []WalletGrant{{Owner: "svcA", Wallets: []string{"w1"}}}}}})
	pj, err := Parse(js)
	if err != nil {
		t.Fatal(err)
	}
	if !pj.MayUseWallet("svcB", "svcA", "w1") || pj.MayUseWallet("svcB", "svcA", "w2") {
		t.Error("JSON grants not applied")
	}
}

func TestWalletGrantsInvalid(t *testing.T) {
	pem, _ := keyfile.MarshalPublicKeyPEM(newEd25519(t).Public())
	for name, g := range map[string]WalletGrant{
		"legacy owner":       {Owner: "", Wallets: []string{"w1"}},
		"bad owner":          {Owner: "svc.A", Wallets: []string{"w1"}},
		"no wallets":         {Owner: "svcA"},
		"bad wallet":         {Owner: "svcA", Wallets: []string{"w*"}},
		"empty wallet":       {Owner: "svcA", Wallets: []string{""}},
		"wildcard wallet":    {Owner: "svcA", Wallets: []string{">"}},
		"too long wallet id": {Owner: "svcA", Wallets: []string{strings.Repeat("w", 65)}},
	} {
		c := ClientConfig{Name: "a", PublicKey: pem, ClientIDs: []string{"svcB"}, Ops: []string{protocol.OpSign}, WalletGrants: []WalletGrant{g}}
		if _, err := New(Config{Clients: []ClientConfig{c}}); !errors.Is(err, ErrInvalid) {
			t.Errorf("%s: got %v", name, err)
		}
	}
	if _, err := Parse([]byte("clients:\n  - name: a\n    public_key: x\n    client_ids: [a]\n    ops: [sign]\n    wallet_grants: [{owner: b, wallet: [w]}]\n")); !errors.Is(err, ErrInvalid) {
		t.Errorf("unknown grant field: %v", err)
	}
}
