package protocol

import (
	"crypto"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func indentPEM(t *testing.T, pub crypto.PublicKey) string {
	t.Helper()
	p, err := MarshalPublicKeyPEM(pub)
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

	pemA, _ := MarshalPublicKeyPEM(a.Public())
	pemL, _ := MarshalPublicKeyPEM(legacy.Public())
	jsonDoc, _ := json.MarshalIndent(PolicyConfig{Clients: []ClientConfig{
		{Name: "service A", PublicKey: pemA, ClientIDs: []string{"svcA", "svcA-batch"}, Ops: []string{OpKeygen, OpSign, OpReshare}},
		{Name: "service B", PublicKey: base64.StdEncoding.EncodeToString(der), ClientIDs: []string{"svcB"}, Ops: []string{OpSign}},
		{Name: "old backend", PublicKey: pemL, ClientIDs: []string{""}, Ops: []string{OpKeygen, OpSign}},
	}}, "", "\t")

	idA, _ := KeyID(a.Public())
	idB, _ := KeyID(b.Public())
	idL, _ := KeyID(legacy.Public())
	for name, doc := range map[string]string{"yaml": yamlDoc, "json": string(jsonDoc)} {
		t.Run(name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "policy")
			if err := os.WriteFile(path, []byte(doc), 0o600); err != nil {
				t.Fatal(err)
			}
			p, err := LoadPolicyFile(path)
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
				{idA, "svcA", OpSign, nil, a.Public()},
				{idA, "svcA-batch", OpReshare, nil, a.Public()},
				{idA, "svcB", OpSign, ErrClientIDNotAllowed, a.Public()},
				{idA, "", OpSign, ErrClientIDNotAllowed, a.Public()},
				{idA, "svcA_batch", OpSign, ErrClientIDNotAllowed, a.Public()},
				{idB, "svcB", OpSign, nil, b.Public()},
				{idB, "svcB", OpKeygen, ErrOpNotAllowed, b.Public()},
				{idB, "svcA", OpSign, ErrClientIDNotAllowed, b.Public()},
				{idL, "", OpKeygen, nil, legacy.Public()},
				{idL, "", OpReshare, ErrOpNotAllowed, legacy.Public()},
				{idA, "svcA", "burn", ErrUnknownOp, a.Public()},
				{"00000000000000000000000000000000", "svcA", OpSign, ErrUnknownKey, nil},
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
	ia, err1 := KeyID(a)
	ib, err2 := KeyID(b)
	return err1 == nil && err2 == nil && ia == ib
}

func TestPolicyInvalid(t *testing.T) {
	pem, _ := MarshalPublicKeyPEM(newEd25519(t).Public())
	ok := ClientConfig{Name: "a", PublicKey: pem, ClientIDs: []string{"a"}, Ops: []string{OpSign}}
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
		if _, err := NewPolicy(PolicyConfig{Clients: tt.clients}); !errors.Is(err, ErrInvalidPolicy) {
			t.Errorf("%s: got %v", tt.name, err)
		}
	}
	for _, doc := range []string{"clients:\n  - name: a\n    pubkey: x\n", `{"clients":[{"name":"a","extra":1}]}`, "clients: [", "\t{"} {
		if _, err := ParsePolicy([]byte(doc)); !errors.Is(err, ErrInvalidPolicy) {
			t.Errorf("%q: got %v", doc, err)
		}
	}
	if _, err := LoadPolicyFile(filepath.Join(t.TempDir(), "missing")); !errors.Is(err, ErrInvalidPolicy) {
		t.Errorf("missing file: %v", err)
	}
}

func TestParsePrivateKeyPEM(t *testing.T) {
	_, ed, _ := ed25519.GenerateKey(rand.Reader)
	der, _ := x509.MarshalPKCS8PrivateKey(ed)
	good := pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})
	tests := []struct {
		name string
		in   []byte
		want string
	}{
		{"ed25519", good, ""},
		{"not PEM", []byte("hello"), "not PEM"},
		{"garbage DER", pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: []byte{1, 2, 3}}), "not a PKCS#8"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s, err := ParsePrivateKeyPEM(tc.in)
			if tc.want == "" {
				if err != nil || !s.Public().(ed25519.PublicKey).Equal(ed.Public()) {
					t.Fatalf("%v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err %v, want %q", err, tc.want)
			}
		})
	}
}
