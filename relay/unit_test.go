package relay

import (
	"bytes"
	"crypto/ed25519"
	"encoding/base64"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"gopkg.in/yaml.v3"
)

// The Standard Webhooks specification's own test vector.
func TestSignWebhookSpecVector(t *testing.T) {
	key, err := parseWebhookSecret("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")
	if err != nil {
		t.Fatal(err)
	}
	got := signWebhook(key, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, []byte(`{"test": 2432232314}`))
	if want := "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="; got != want {
		t.Fatalf("got %s want %s", got, want)
	}
	if _, err := parseWebhookSecret(base64.StdEncoding.EncodeToString(key)); err == nil {
		t.Fatal("a secret without whsec_ accepted")
	}
}

func TestBackoffGrowsAndIsBounded(t *testing.T) {
	for attempt := uint64(1); attempt < 70; attempt++ {
		d := backoff(time.Second, time.Minute, attempt)
		want := min(time.Second<<min(attempt-1, 10), time.Minute)
		if d < want/2 || d > want {
			t.Fatalf("attempt %d: %s outside [%s, %s]", attempt, d, want/2, want)
		}
	}
}

func TestTokensHashedAndBoundToOneClient(t *testing.T) {
	dir := t.TempDir()
	write := func(name, s string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(s), 0o600); err != nil {
			t.Fatal(err)
		}
		return "file:" + p
	}
	var s tokenSet
	if err := s.add("svcA", write("a", "# svcA\ntoken-a-0123456789abcdef\ntoken-a2-0123456789abcdef\n")); err != nil {
		t.Fatal(err)
	}
	if err := s.add("svcB", write("b", "token-a-0123456789abcdef\n")); err == nil {
		t.Fatal("a token shared by two clients accepted")
	}
	if err := s.add("svcC", write("c", "short\n")); err == nil {
		t.Fatal("a short token accepted")
	}
	for _, e := range s.entries {
		if string(e.hash[:]) == "token-a-0123456789abcdef" {
			t.Fatal("token kept in clear")
		}
	}
	req, _ := http.NewRequest("GET", "/", nil)
	req.Header.Set("Authorization", "Bearer token-a2-0123456789abcdef")
	if id, err := s.authenticate(req); err != nil || id != "svcA" {
		t.Fatalf("got %q %v", id, err)
	}
	req.Header.Set("Authorization", "Bearer token-a2-0123456789abcdeX")
	if _, err := s.authenticate(req); err == nil {
		t.Fatal("wrong token accepted")
	}
}

func TestParseConfigStrict(t *testing.T) {
	if _, err := ParseConfig([]byte("nats: {url: nats://x}\nclients: {}\nwebhook_secret: whsec_x\n")); err == nil {
		t.Fatal("unknown key accepted")
	}
	raw, err := os.ReadFile("../docs/signer-relay.example.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ParseConfig(raw); err == nil || !strings.Contains(err.Error(), "public_keys") {
		// svcB's key in the example is elided on purpose; everything
		// before it parses.
		t.Fatalf("example config: %v", err)
	}
}

func TestClusterConfigChecked(t *testing.T) {
	dir := t.TempDir()
	tok := filepath.Join(dir, "tok")
	if err := os.WriteFile(tok, []byte("token-0123456789abcdef\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	raw, err := os.ReadFile("../docs/signer-relay.example.yaml")
	if err != nil {
		t.Fatal(err)
	}
	// The example's cluster section, with one client that parses.
	_, cluster, _ := strings.Cut(string(raw), "\ncluster:\n")
	cluster, _, _ = strings.Cut(cluster, "\nclients:")
	base := "nats: {url: nats://x}\nclients:\n  svcA:\n    token_source: file:" + tok +
		"\n    public_keys: [MCowBQYDK2VwAyEA11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo=]\n"
	example := "cluster:\n" + cluster + "\n"
	tests := []struct {
		name    string
		cluster string
		want    string // "" accepted
	}{
		{"example", example, ""},
		{"missing", "", "cluster.peers missing"},
		{"no signers", strings.Replace(example, "signers: 2", "signers: 0", 1), "cluster.signers"},
		{"one signer", strings.Replace(example, "signers: 2", "signers: 1", 1), "cluster.signers"},
		{"more signers than peers", strings.Replace(example, "signers: 2", "signers: 4", 1), "cluster.signers"},
		{"bad node id", strings.Replace(example, "node1:", "node.1:", 1), "node id"},
		{"bad key", strings.Replace(example, "MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEN98q", "MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEN98X", 1), "cluster.peers.node1"},
		{"hold beyond the dedup window", strings.Replace(example, "hold: 10m", "hold: 25h", 1), "cluster.hold"},
		{"unknown key", strings.Replace(example, "hold: 10m", "hold: 10m\n  threshold: 2", 1), "threshold"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c, err := ParseConfig([]byte(base + tc.cluster))
			switch {
			case tc.want == "" && err != nil:
				t.Fatal(err)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
				t.Fatalf("got %v, want an error with %q", err, tc.want)
			case tc.want == "":
				if c.Cluster.Hold != 10*time.Minute || c.Cluster.Signers != 2 {
					t.Fatalf("cluster %+v", c.Cluster)
				}
				keys, err := c.Cluster.NodeKeys()
				if err != nil || len(keys) != 3 {
					t.Fatalf("node keys %v %v", keys, err)
				}
			}
		})
	}
	// Hold defaults to 10m, bounded by a shorter dedup window.
	c, err := ParseConfig([]byte(base + strings.Replace(example, "hold: 10m", "", 1) + "streams: {history_duplicates: 5m}\n"))
	if err != nil || c.Cluster.Hold != 5*time.Minute {
		t.Fatalf("default hold: %v %v", c, err)
	}
}

func TestParseRetryAfter(t *testing.T) {
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	for in, want := range map[string]time.Duration{
		"":      0,
		"3":     3 * time.Second,
		" 0 ":   0,
		"-1":    0,
		"soon":  0,
		"99999": maxRetryAfter,
		now.Add(90 * time.Second).Format(http.TimeFormat): 90 * time.Second,
		now.Add(-time.Minute).Format(http.TimeFormat):     0,
	} {
		if got := parseRetryAfter(in, now); got != want {
			t.Errorf("Retry-After %q: %s, want %s", in, got, want)
		}
	}
}

func TestWebhookSigningKeyAndConfig(t *testing.T) {
	seed := bytes.Repeat([]byte{7}, ed25519.SeedSize)
	k := ed25519.NewKeyFromSeed(seed)
	for _, s := range []string{"whsk_" + base64.StdEncoding.EncodeToString(seed), "whsk_" + base64.StdEncoding.EncodeToString(k) + "\n"} {
		got, err := parseSigningKey(s)
		if err != nil || !got.Equal(k) {
			t.Fatalf("%v", err)
		}
	}
	bad := append([]byte(nil), k...)
	bad[40] ^= 1
	for _, s := range []string{"", "whsec_" + base64.StdEncoding.EncodeToString(seed), "whsk_!!", "whsk_" + base64.StdEncoding.EncodeToString(seed[:16]), "whsk_" + base64.StdEncoding.EncodeToString(bad)} {
		if _, err := parseSigningKey(s); err == nil {
			t.Fatalf("%q accepted", s)
		} else if strings.Contains(err.Error(), base64.StdEncoding.EncodeToString(seed)) {
			t.Fatalf("the error repeats the key: %v", err)
		}
	}
	w := WebhookConfig{URL: "https://x.example/h", PreviousSecretSource: "env:X"}
	if err := w.check("w"); err == nil {
		t.Fatal("previous_secret_source without secret_source or previous_secret_until accepted")
	}
	w = WebhookConfig{URL: "https://x.example/h", SigningKeySource: "env:K"}
	if err := w.check("w"); err != nil {
		t.Fatalf("a signing key alone: %v", err)
	}
}

// TestExampleWebhookOptions: the example's commented webhook options
// (rotation, signing key) and websocket section are real keys of the
// right types.
func TestExampleWebhookOptions(t *testing.T) {
	raw, err := os.ReadFile("../docs/signer-relay.example.yaml")
	if err != nil {
		t.Fatal(err)
	}
	s := string(raw)
	for _, k := range []string{"previous_secret_source:", "previous_secret_until:", "signing_key_source:"} {
		if !strings.Contains(s, "# "+k) {
			t.Fatalf("the example does not show %s", k)
		}
		s = strings.Replace(s, "# "+k, k, 1)
	}
	dec := yaml.NewDecoder(strings.NewReader(s))
	dec.KnownFields(true)
	var c Config
	if err := dec.Decode(&c); err != nil {
		t.Fatalf("example with the webhook options: %v", err)
	}
	w := c.Clients["svcA"].Webhook
	if w.PreviousSecretSource == "" || w.PreviousSecretUntil.IsZero() || w.SigningKeySource == "" {
		t.Fatalf("webhook options not read: %+v", w)
	}
	if err := w.check("svcA.webhook"); err != nil {
		t.Fatal(err)
	}
	if c.WebSocket.SendQueue != 256 || c.WebSocket.PingInterval != 20*time.Second || c.WebSocket.WriteTimeout != 10*time.Second {
		t.Fatalf("websocket section: %+v", c.WebSocket)
	}
}
