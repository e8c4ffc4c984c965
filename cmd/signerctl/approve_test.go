package main

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hwsigner/signer/protocol"
)

func writeKey(t *testing.T, dir, name string, k crypto.Signer) string {
	t.Helper()
	der, err := x509.MarshalPKCS8PrivateKey(k)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, name)
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// TestApproveCommand runs `signerctl approve` in process: the printed
// approval verifies over the request file's digest under the approver key,
// expires with the request or --ttl, and bad input is refused.
func TestApproveCommand(t *testing.T) {
	dir := t.TempDir()
	_, clientKey, _ := ed25519.GenerateKey(rand.Reader)
	_, edKey, _ := ed25519.GenerateKey(rand.Reader)
	p256, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	edPath, p256Path := writeKey(t, dir, "ed.pem", edKey), writeKey(t, dir, "p256.pem", p256)
	req := &protocol.SigningRequest{Envelope: protocol.Envelope{ClientID: "svcA", RequestID: "r1"},
		WalletID: "w1", KeyType: protocol.KeyTypeEd25519, TxID: "tx-1", Tx: []byte("pay")}
	req.SetTimes(time.Now(), 10*time.Minute)
	raw, err := protocol.SignRequest(context.Background(), clientKey, protocol.OpSign, req)
	if err != nil {
		t.Fatal(err)
	}
	reqPath := filepath.Join(dir, "req.json")
	if err := os.WriteFile(reqPath, raw, 0o600); err != nil {
		t.Fatal(err)
	}
	old := *req
	old.RequestID = "r-old"
	old.SetTimes(time.Now().Add(-time.Hour), time.Minute)
	oldRaw, _ := protocol.SignRequest(context.Background(), clientKey, protocol.OpSign, &old)
	oldPath := filepath.Join(dir, "old.json")
	_ = os.WriteFile(oldPath, oldRaw, 0o600)
	junkPath := filepath.Join(dir, "junk.json")
	_ = os.WriteFile(junkPath, []byte(`{"op":"sign",`), 0o600)
	digest, _ := protocol.RequestDigest(raw)
	tests := []struct {
		name  string
		args  []string
		stdin string
		pub   crypto.PublicKey
		ttl   time.Duration // 0: expires with the request
		err   string
	}{
		{"ed25519", []string{"--request", reqPath, "--key", edPath, "--approver", "alice"}, "", edKey.Public(), 0, ""},
		{"p256 from stdin", []string{"--request", "-", "--key", p256Path, "--approver", "bob"}, string(raw), p256.Public(), 0, ""},
		{"ttl", []string{"--request", reqPath, "--key", edPath, "--approver", "alice", "--ttl", "2m"}, "", edKey.Public(), 2 * time.Minute, ""},
		{"ttl beyond the request", []string{"--request", reqPath, "--key", edPath, "--approver", "alice", "--ttl", "1h"}, "", edKey.Public(), 0, ""},
		{"no approver", []string{"--request", reqPath, "--key", edPath}, "", nil, 0, "required"},
		{"no key", []string{"--request", reqPath, "--approver", "alice"}, "", nil, 0, "required"},
		{"bad approver id", []string{"--request", reqPath, "--key", edPath, "--approver", "a.b"}, "", nil, 0, "approver_id"},
		{"expired request", []string{"--request", oldPath, "--key", edPath, "--approver", "alice"}, "", nil, 0, "expired"},
		{"not JSON", []string{"--request", junkPath, "--key", edPath, "--approver", "alice"}, "", nil, 0, "malformed"},
		{"key not a private key", []string{"--request", reqPath, "--key", reqPath, "--approver", "alice"}, "", nil, 0, "not PEM"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cmd := rootCmd()
			var out, errOut bytes.Buffer
			cmd.SetOut(&out)
			cmd.SetErr(&errOut)
			cmd.SetIn(strings.NewReader(tc.stdin))
			cmd.SetArgs(append([]string{"approve", "--cluster", filepath.Join(dir, "none.json")}, tc.args...))
			err := cmd.ExecuteContext(context.Background())
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("got %v, want an error saying %q", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			var a protocol.Approval
			if err := json.Unmarshal(out.Bytes(), &a); err != nil {
				t.Fatalf("output %q: %v", out.String(), err)
			}
			if err := protocol.VerifyApproval(digest, a, tc.pub); err != nil {
				t.Fatalf("approval does not verify: %v", err)
			}
			want := req.ExpiresAt
			if tc.ttl > 0 {
				want = time.Now().Add(tc.ttl).UnixMilli()
			}
			if d := a.ExpiresAt - want; d > 0 || d < -5000 {
				t.Fatalf("expires_at %d, want about %d", a.ExpiresAt, want)
			}
			if !strings.Contains(errOut.String(), "sign request r1 of client \"svcA\"") {
				t.Fatalf("stderr %q does not say what was approved", errOut.String())
			}
		})
	}
}
