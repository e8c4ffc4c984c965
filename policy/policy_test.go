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
