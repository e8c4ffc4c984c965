package policy

import (
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/hwsigner/signer/keyfile"
	"github.com/hwsigner/signer/protocol"
)

// The fuzz target below runs its committed seeds (testdata/fuzz/FuzzParsePolicy/)
// as ordinary tests under `go test`; `make fuzz` runs it as a fuzzer. Set
// WRITE_FUZZ_SEEDS=1 to regenerate the seeds made from the real code.

// fuzzKey is the Ed25519 key of RFC 8032 §7.1 TEST 1 (the client key of the
// worked example in docs/canonical-encoding.md), so that seeds are the same
// in every run.
var fuzzKey = ed25519.NewKeyFromSeed(mustHexBytes("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60"))

// fuzzP256 is a fixed P-256 key, so that seeds are the same in every run.
var fuzzP256 = func() *ecdsa.PrivateKey {
	d := big.NewInt(0x5eed)
	x, y := elliptic.P256().ScalarBaseMult(d.Bytes())
	return &ecdsa.PrivateKey{PublicKey: ecdsa.PublicKey{Curve: elliptic.P256(), X: x, Y: y}, D: d}
}()

func mustHexBytes(s string) []byte {
	b, err := hex.DecodeString(s)
	if err != nil {
		panic(err)
	}
	return b
}

// writeSeeds writes corpus files for target in the `go test fuzz v1` format
// when WRITE_FUZZ_SEEDS is set; every value is one []byte argument.
func writeSeeds(t testing.TB, target string, seeds map[string][]byte) {
	if os.Getenv("WRITE_FUZZ_SEEDS") == "" {
		return
	}
	dir := filepath.Join("testdata", "fuzz", target)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for name, b := range seeds {
		body := fmt.Sprintf("go test fuzz v1\n[]byte(%q)\n", b)
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// FuzzParsePolicy feeds arbitrary bytes to Parse (YAML and JSON) and
// keyfile.ParsePublicKey: no panic; an accepted policy only holds supported keys.
func FuzzParsePolicy(f *testing.F) {
	edPEM, _ := keyfile.MarshalPublicKeyPEM(fuzzKey.Public())
	p256PEM, _ := keyfile.MarshalPublicKeyPEM(fuzzP256.Public())
	yamlPolicy := "clients:\n  - name: a\n    public_key: |\n      " + strings.ReplaceAll(strings.TrimSpace(edPEM), "\n", "\n      ") + "\n    client_ids: [svcA, \"\"]\n    ops: [sign]\n"
	jsonPolicy, _ := json.Marshal(Config{Clients: []ClientConfig{{Name: "b", PublicKey: p256PEM, ClientIDs: []string{"svcB"}, Ops: []string{"keygen", "sign"}}}})
	grantsPolicy, _ := json.Marshal(Config{Clients: []ClientConfig{{Name: "g", PublicKey: p256PEM, ClientIDs: []string{"svcB"}, Ops: []string{"sign"},
		WalletGrants: []WalletGrant{{Owner: "svcA", Wallets: []string{"w1", "w2"}}}}}})
	approvalsPolicy, _ := json.Marshal(Config{
		Clients:   []ClientConfig{{Name: "b", PublicKey: edPEM, ClientIDs: []string{"svcB"}, Ops: []string{"sign"}}},
		Approvers: []ApproverConfig{{ID: "alice", PublicKey: p256PEM}},
		Approvals: []ApprovalRule{{ClientID: "svcB", Ops: []string{"sign"}, Wallets: []string{"w1"}, Required: 1, Approvers: []string{"alice"}}},
	})
	seeds := map[string][]byte{
		"approvals":    approvalsPolicy,
		"yaml":         []byte(yamlPolicy),
		"json":         jsonPolicy,
		"unknown-key":  []byte("clients: []\ncolour: blue\n"),
		"rsa-key":      []byte("clients:\n  - {name: r, public_key: MFwwDQYJKoZIhvcNAQEBBQADSwAwSAJBAKj34GkxFhD90vcNLYLInFEX6Ppy1tPf9Cnzj4p4WGeKLs1Pt8QuKUpRKfFLfRYC9AIKjbJTWit+CqvjWYzvQwECAwEAAQ==, client_ids: [x], ops: [sign]}\n"),
		"bad-op":       []byte("clients:\n  - {name: a, public_key: x, client_ids: [a], ops: [delete]}\n"),
		"yaml-aliases": []byte("a: &a [x, x]\nb: &b [*a, *a]\nclients: *b\n"),
		"grants":       grantsPolicy,
		"grant-legacy": []byte(yamlPolicy + "    wallet_grants: [{owner: \"\", wallets: [w3]}]\n"),
	}
	writeSeeds(f, "FuzzParsePolicy", seeds)
	for _, s := range seeds {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		_, _ = keyfile.ParsePublicKey(string(data))
		p, err := Parse(data)
		if err != nil {
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("policy error does not wrap ErrInvalid: %v", err)
			}
			return
		}
		for kid, e := range p.byKeyID {
			if got, err := protocol.KeyID(e.pub); err != nil || got != kid {
				t.Fatalf("policy entry %s holds key %v (%v)", kid, got, err)
			}
			if len(e.clientIDs) == 0 || len(e.ops) == 0 {
				t.Fatalf("policy entry %s without client IDs or ops", kid)
			}
		}
		for _, r := range p.rules {
			if r.required < 1 || r.required > len(r.approvers) || len(r.ops) == 0 {
				t.Fatalf("approval rule %s accepted", &r)
			}
			for _, id := range r.approvers {
				if a := p.approvers[id]; a == nil {
					t.Fatalf("approval rule %s names an unknown approver %q", &r, id)
				} else if _, err := protocol.KeyID(a.pub); err != nil {
					t.Fatalf("approver %s holds an unsupported key", id)
				}
			}
		}
	})
}
