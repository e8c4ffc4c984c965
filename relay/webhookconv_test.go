package relay_test

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	standardwebhooks "github.com/standard-webhooks/standard-webhooks/libraries/go"

	"github.com/hwsigner/signer/relay"
)

// hookCall is one request a test webhook received.
type hookCall struct {
	at     time.Time
	header http.Header
	body   []byte
}

// scriptedHook answers with the statuses of answer (by attempt, the last
// one repeating) and records every call.
type scriptedHook struct {
	srv    *httptest.Server
	mu     sync.Mutex
	calls  []hookCall
	answer func(n int, w http.ResponseWriter) // n: 0-based attempt
	got    chan struct{}
}

func newScriptedHook(t *testing.T, answer func(n int, w http.ResponseWriter)) *scriptedHook {
	h := &scriptedHook{answer: answer, got: make(chan struct{}, 64)}
	h.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		h.mu.Lock()
		n := len(h.calls)
		h.calls = append(h.calls, hookCall{time.Now(), r.Header.Clone(), body})
		h.mu.Unlock()
		h.answer(n, w)
		select {
		case h.got <- struct{}{}:
		default:
		}
	}))
	t.Cleanup(h.srv.Close)
	return h
}

// waitCalls waits for at least n calls and returns them.
func (h *scriptedHook) waitCalls(t *testing.T, n int) []hookCall {
	t.Helper()
	deadline := time.After(30 * time.Second)
	for {
		h.mu.Lock()
		calls := append([]hookCall(nil), h.calls...)
		h.mu.Unlock()
		if len(calls) >= n {
			return calls
		}
		select {
		case <-h.got:
		case <-time.After(50 * time.Millisecond):
		case <-deadline:
			t.Fatalf("%d of %d webhook calls", len(calls), n)
		}
	}
}

func newSecret() string {
	k := make([]byte, 32)
	_, _ = rand.Read(k)
	return "whsec_" + base64.StdEncoding.EncodeToString(k)
}

func hookConfig(t *testing.T, dir, name, url string) *relay.WebhookConfig {
	return &relay.WebhookConfig{URL: url, Timeout: 5 * time.Second, MaxAge: 10 * time.Minute,
		InitialBackoff: 50 * time.Millisecond, MaxBackoff: 100 * time.Millisecond, Concurrency: 4}
}

func getJSON(t *testing.T, url, token string, v any) int {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, url, nil)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if v != nil {
		_ = json.NewDecoder(resp.Body).Decode(v)
	}
	return resp.StatusCode
}

// TestWebhookAsymmetricAndRotation: with signing_key_source the relay adds
// a Standard Webhooks "v1a," Ed25519 signature that verifies with the key
// GET /v1/webhook-key publishes; during a secret rotation's overlap a
// delivery verifies under the old and the new secret alike, after it
// under the new one only.
func TestWebhookAsymmetricAndRotation(t *testing.T) {
	ok := func(_ int, w http.ResponseWriter) { w.WriteHeader(http.StatusNoContent) }
	ha, hb := newScriptedHook(t, ok), newScriptedHook(t, ok)
	seed := make([]byte, ed25519.SeedSize)
	_, _ = rand.Read(seed)
	newA, oldA, newB, oldB := newSecret(), newSecret(), newSecret(), newSecret()
	e := startSimEnv(t, relay.WebSocketConfig{}, func(dir string, cfg *relay.Config) {
		a := hookConfig(t, dir, "svcA", ha.srv.URL)
		a.SecretSource = "file:" + writeFile(t, dir, "a.whsec", newA)
		a.PreviousSecretSource = "file:" + writeFile(t, dir, "a.old.whsec", oldA)
		a.PreviousSecretUntil = time.Now().Add(time.Hour)
		a.SigningKeySource = "file:" + writeFile(t, dir, "a.whsk", "whsk_"+base64.StdEncoding.EncodeToString(seed))
		cfg.Clients["svcA"].Webhook = a
		b := hookConfig(t, dir, "svcB", hb.srv.URL)
		b.SecretSource = "file:" + writeFile(t, dir, "b.whsec", newB)
		b.PreviousSecretSource = "file:" + writeFile(t, dir, "b.old.whsec", oldB)
		b.PreviousSecretUntil = time.Now().Add(-time.Second) // the overlap is over
		cfg.Clients["svcB"].Webhook = b
	})
	base := e.run.srv.URL

	var key struct {
		ClientID  string `json:"client_id"`
		Algorithm string `json:"algorithm"`
		PublicKey string `json:"public_key"`
	}
	if st := getJSON(t, base+"/v1/webhook-key", e.tokens["svcA"], &key); st != 200 || key.ClientID != "svcA" || key.Algorithm != "ed25519" {
		t.Fatalf("webhook-key: %d %+v", st, key)
	}
	pub, err := base64.StdEncoding.DecodeString(strings.TrimPrefix(key.PublicKey, "whpk_"))
	if err != nil || !strings.HasPrefix(key.PublicKey, "whpk_") || !ed25519.PublicKey(pub).Equal(ed25519.NewKeyFromSeed(seed).Public()) {
		t.Fatalf("public key %q", key.PublicKey)
	}
	if st := getJSON(t, base+"/v1/webhook-key", "", nil); st != http.StatusUnauthorized {
		t.Fatalf("webhook-key without a token: %d", st)
	}
	var apiErr struct {
		Code string `json:"error_code"`
	}
	if st := getJSON(t, base+"/v1/webhook-key", e.tokens["svcB"], &apiErr); st != http.StatusNotFound || apiErr.Code != "NO_WEBHOOK_KEY" {
		t.Fatalf("webhook-key of a client without a signing key: %d %s", st, apiErr.Code)
	}

	verifies := func(secret string, c hookCall) bool {
		wh, err := standardwebhooks.NewWebhook(secret)
		if err != nil {
			t.Fatal(err)
		}
		return wh.Verify(c.body, c.header) == nil
	}
	e.decide(t, "svcA", "r-a")
	e.decide(t, "svcB", "r-b")
	ca, cb := ha.waitCalls(t, 1)[0], hb.waitCalls(t, 1)[0]

	sigs := strings.Fields(ca.header.Get("webhook-signature"))
	if len(sigs) != 3 {
		t.Fatalf("svcA signatures %q: want v1 (new), v1 (old), v1a", sigs)
	}
	if !verifies(newA, ca) || !verifies(oldA, ca) {
		t.Fatalf("during the overlap a delivery verifies under the new %v and the old %v secret", verifies(newA, ca), verifies(oldA, ca))
	}
	content := ca.header.Get("webhook-id") + "." + ca.header.Get("webhook-timestamp") + "." + string(ca.body)
	asym := 0
	for _, s := range sigs {
		if b64, ok := strings.CutPrefix(s, "v1a,"); ok {
			sig, _ := base64.StdEncoding.DecodeString(b64)
			if !ed25519.Verify(pub, []byte(content), sig) {
				t.Fatal("the v1a signature does not verify with the published key")
			}
			asym++
		}
	}
	if asym != 1 {
		t.Fatalf("%d v1a signatures", asym)
	}
	if _, _, err := e.verifyCall(ca); err != nil {
		t.Fatal(err)
	}

	if sigs := strings.Fields(cb.header.Get("webhook-signature")); len(sigs) != 1 || !strings.HasPrefix(sigs[0], "v1,") {
		t.Fatalf("svcB after the overlap: %q", sigs)
	}
	if !verifies(newB, cb) || verifies(oldB, cb) {
		t.Fatalf("after the overlap: new secret %v, old secret %v (want true, false)", verifies(newB, cb), verifies(oldB, cb))
	}
}

// verifyCall checks the attestations of a delivery a webhook received.
func (e *wsEnv) verifyCall(c hookCall) (string, string, error) {
	res, err := e.verify(c.body)
	if err != nil {
		return "", "", err
	}
	return res.ClientID, res.RequestID, nil
}

// TestWebhookRetryAfterAndGone: a 503 or 429 with Retry-After is retried
// no sooner than it asks (the backoff alone would be 100ms at most); a 410
// stops deliveries to the endpoint: that result and every later one go to
// the dead-letter stream at once, without another POST, and are counted.
func TestWebhookRetryAfterAndGone(t *testing.T) {
	ha := newScriptedHook(t, func(n int, w http.ResponseWriter) {
		switch n {
		case 0:
			w.Header().Set("Retry-After", "2")
			w.WriteHeader(http.StatusServiceUnavailable)
		case 1:
			w.Header().Set("Retry-After", "1")
			w.WriteHeader(http.StatusTooManyRequests)
		default:
			w.WriteHeader(http.StatusNoContent)
		}
	})
	hb := newScriptedHook(t, func(_ int, w http.ResponseWriter) { w.WriteHeader(http.StatusGone) })
	e := startSimEnv(t, relay.WebSocketConfig{}, func(dir string, cfg *relay.Config) {
		a := hookConfig(t, dir, "svcA", ha.srv.URL)
		a.SecretSource = "file:" + writeFile(t, dir, "a.whsec", newSecret())
		cfg.Clients["svcA"].Webhook = a
		b := hookConfig(t, dir, "svcB", hb.srv.URL)
		b.SecretSource = "file:" + writeFile(t, dir, "b.whsec", newSecret())
		cfg.Clients["svcB"].Webhook = b
	})
	base := e.run.srv.URL

	e.decide(t, "svcA", "r-retry")
	calls := ha.waitCalls(t, 3)
	if d := calls[1].at.Sub(calls[0].at); d < 1900*time.Millisecond {
		t.Fatalf("retried %s after a 503 with Retry-After: 2", d)
	}
	if d := calls[2].at.Sub(calls[1].at); d < 900*time.Millisecond {
		t.Fatalf("retried %s after a 429 with Retry-After: 1", d)
	}
	waitMetric(t, base, `signer_relay_webhook_deliveries_total{client_id="svcA",outcome="success"}`, 1)

	e.decide(t, "svcB", "r-gone1")
	hb.waitCalls(t, 1)
	waitMetric(t, base, `signer_relay_webhook_gone{client_id="svcB"}`, 1)
	e.decide(t, "svcB", "r-gone2")
	waitMetric(t, base, `signer_relay_webhook_dead_letters_total{client_id="svcB"}`, 2)
	if v := metric(t, base, `signer_relay_webhook_deliveries_total{client_id="svcB",outcome="gone"}`); v != 2 {
		t.Fatalf("gone deliveries %v, want 2", v)
	}
	if n := len(hb.waitCalls(t, 1)); n != 1 {
		t.Fatalf("%d POSTs to an endpoint that answered 410", n)
	}
	dls, err := relay.ListDLQ(context.Background(), e.sim.js, "svcB")
	if err != nil {
		t.Fatal(err)
	}
	if len(dls) != 2 {
		t.Fatalf("%d dead letters, want 2: %+v", len(dls), dls)
	}
	for _, d := range dls {
		if !strings.Contains(d.LastError, "410") {
			t.Fatalf("dead letter's last error %q", d.LastError)
		}
	}
	if v := metric(t, base, `signer_relay_webhook_gone{client_id="svcA"}`); v != 0 {
		t.Fatalf("svcA gone = %v", v)
	}
}
