package relay

import (
	"encoding/base64"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
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
