package relay_test

import (
	"bytes"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"
)

// webhookN is the number of signing requests of the webhook outage test.
const webhookN = 50

// TestRelayEndToEnd runs the relay against a real cluster (embedded NATS
// JetStream, three nodes on SoftHSM2, ed25519 signing) and real HTTP
// receivers. The subtests share the cluster and run in order.
func TestRelayEndToEnd(t *testing.T) {
	e := startEnv(t)
	hooks := map[string]*receiver{"svcA": newReceiver(t, e, "svcA"), "svcB": newReceiver(t, e, "svcB")}
	cfg := e.config(t, hooks)
	run := startRelay(t, cfg)
	outer := t // relays started in subtests live on for the later ones
	base := func() string { return run.srv.URL }

	// One ed25519 wallet per client, created through the relay.
	for _, id := range []string{"svcA", "svcB"} {
		raw, rid := e.keygenRequest(t, id, "w-"+id)
		if a := post(t, base()+"/v1/wallets", e.tokens[id], raw); a.Status != http.StatusAccepted {
			t.Fatalf("keygen %s: %d %s", id, a.Status, a.Body)
		}
		if res := e.waitResult(t, base(), e.tokens[id], rid, 2*time.Minute); !res.Succeeded() || res.EdDSAPubKey == "" {
			t.Fatalf("keygen %s: %+v", id, res)
		}
	}

	t.Run("RefusesBadRequests", func(t *testing.T) {
		raw, _ := e.signRequest(t, "svcA", "w-svcA")
		cases := []struct {
			name, path, token string
			body              []byte
			status            int
			code              string
		}{
			{"no token", "/v1/sign", "", raw, 401, "UNAUTHENTICATED"},
			{"unknown token", "/v1/sign", "tok-nobody-0123456789abcdef", raw, 401, "UNAUTHENTICATED"},
			{"token of another client", "/v1/sign", e.tokens["svcB"], raw, 403, "CLIENT_ID_MISMATCH"},
			{"tampered envelope", "/v1/sign", e.tokens["svcA"], bytes.Replace(raw, []byte(`"w-svcA"`), []byte(`"w-svcB"`), 1), 403, "INVALID_SIGNATURE"},
			{"member added", "/v1/sign", e.tokens["svcA"], bytes.Replace(raw, []byte(`{`), []byte(`{"priority":"high",`), 1), 403, "INVALID_SIGNATURE"},
			{"oversized body", "/v1/sign", e.tokens["svcA"], append(bytes.Repeat([]byte(" "), 70<<10), raw...), 413, "TOO_LARGE"},
			{"not json", "/v1/sign", e.tokens["svcA"], []byte("sign this"), 400, "MALFORMED"},
			{"wrong endpoint", "/v1/reshare", e.tokens["svcA"], raw, 400, "MALFORMED"},
		}
		for _, c := range cases {
			a := post(t, base()+c.path, c.token, c.body)
			if a.Status != c.status || a.Code != c.code {
				t.Errorf("%s: got %d %q (%s), want %d %s", c.name, a.Status, a.Code, a.Body, c.status, c.code)
			}
			if strings.Contains(a.Body, e.tokens["svcA"]) || strings.Contains(a.Body, e.tokens["svcB"]) {
				t.Errorf("%s: a token is echoed in the answer", c.name)
			}
		}
		resp, err := http.Get(base() + "/v1/sign")
		if err != nil || resp.StatusCode != http.StatusMethodNotAllowed {
			t.Errorf("GET /v1/sign: %v %v", resp, err)
		}
		resp.Body.Close()
		// Still up, and the untampered request goes through.
		if a := post(t, base()+"/v1/sign", e.tokens["svcA"], raw); a.Status != http.StatusAccepted {
			t.Fatalf("valid request after the refusals: %d %s", a.Status, a.Body)
		}
	})

	t.Run("WebhookReceiverDownThenBack", func(t *testing.T) {
		h := hooks["svcA"]
		h.down.Store(true)
		start := time.Now()
		ids := e.submitSigns(t, base(), "svcA", "w-svcA", webhookN)
		// Keep the receiver down until results are waiting and retried.
		for {
			attempts, _ := h.stats()
			if attempts >= 20 || time.Since(start) > 30*time.Second {
				break
			}
			time.Sleep(100 * time.Millisecond)
		}
		time.Sleep(2 * time.Second)
		h.down.Store(false)
		h.waitFor(t, ids, 90*time.Second)
		checkMetrics(t, base(), `signer_relay_webhook_deliveries_total{client_id="svcA",outcome="http_error"}`,
			`signer_relay_webhook_retries_total{client_id="svcA"}`)
		attempts, dups := h.stats()
		t.Logf("%d results delivered after an outage of %s: %d attempts, %d duplicate deliveries (same webhook-id)", len(ids), time.Since(start).Round(time.Second), attempts, dups)
	})

	t.Run("RelayKilledMidDelivery", func(t *testing.T) {
		h := hooks["svcA"]
		h.delay.Store(int64(150 * time.Millisecond))
		before := e.endCursor(t, base(), e.tokens["svcA"])
		ids := e.submitSigns(t, base(), "svcA", "w-svcA", 12)
		// Kill once some results have reached the receiver, others not.
		deadline := time.Now().Add(60 * time.Second)
		for time.Now().Before(deadline) {
			h.mu.Lock()
			got := 0
			for _, id := range ids {
				if _, ok := h.byReq[id]; ok {
					got++
				}
			}
			h.mu.Unlock()
			if got >= 2 {
				break
			}
			time.Sleep(20 * time.Millisecond)
		}
		run.kill()
		time.Sleep(500 * time.Millisecond)
		run = startRelay(outer, cfg)
		h.delay.Store(0)
		h.waitFor(t, ids, 90*time.Second)
		// The history holds each result exactly once.
		seen := map[string]int{}
		c := before
		for len(seen) < len(ids) {
			rs, next := e.poll(t, base(), e.tokens["svcA"], c, "10s")
			if len(rs) == 0 {
				break
			}
			for _, r := range rs {
				seen[r.Res.RequestID]++
			}
			c = next
		}
		for _, id := range ids {
			if seen[id] != 1 {
				t.Errorf("request %s is %d times in the history", id, seen[id])
			}
		}
	})

	t.Run("SSEResumeWithLastEventID", func(t *testing.T) {
		tok := e.tokens["svcA"]
		start := e.endCursor(t, base(), tok)
		events, disconnect := openSSE(t, base(), tok, strconv.FormatUint(start, 10))
		ids := e.submitSigns(t, base(), "svcA", "w-svcA", 10)
		want := map[string]bool{}
		for _, id := range ids {
			want[id] = true
		}
		seen := map[string]int{}
		last := ""
		read := func(ch <-chan sseEvent, n int) {
			t.Helper()
			for i := 0; i < n; i++ {
				select {
				case ev, ok := <-ch:
					if !ok {
						t.Fatal("SSE stream ended")
					}
					res := e.decodeDelivery(t, []byte(ev.Data))
					if res.ClientID != "svcA" {
						t.Fatalf("SSE of svcA carried a result of %s", res.ClientID)
					}
					if cur, _ := strconv.ParseUint(ev.ID, 10, 64); cur <= start {
						t.Fatalf("event id %s not after the resume point %d", ev.ID, start)
					}
					seen[res.RequestID]++
					last = ev.ID
				case <-time.After(60 * time.Second):
					t.Fatalf("SSE: %d events missing", n-i)
				}
			}
		}
		read(events, 4)
		disconnect()
		time.Sleep(300 * time.Millisecond)
		events, disconnect = openSSE(t, base(), tok, last)
		defer disconnect()
		read(events, len(ids)-4)
		for _, id := range ids {
			if seen[id] != 1 {
				t.Errorf("request %s seen %d times over SSE", id, seen[id])
			}
		}
		select {
		case ev := <-events:
			t.Errorf("an extra event after all results: %s", ev.ID)
		case <-time.After(500 * time.Millisecond):
		}
	})

	t.Run("TwoClientsSeeOnlyTheirOwn", func(t *testing.T) {
		startA := e.endCursor(t, base(), e.tokens["svcA"])
		startB := e.endCursor(t, base(), e.tokens["svcB"])
		idsA := e.submitSigns(t, base(), "svcA", "w-svcA", 3)
		idsB := e.submitSigns(t, base(), "svcB", "w-svcB", 3)
		hooks["svcA"].waitFor(t, idsA, 60*time.Second)
		hooks["svcB"].waitFor(t, idsB, 60*time.Second) // the receivers fail on a foreign result
		for id, own := range map[string][]string{"svcA": idsA, "svcB": idsB} {
			start := startA
			if id == "svcB" {
				start = startB
			}
			// Long polling: only the caller's results.
			rs, _ := e.poll(t, base(), e.tokens[id], start, "0s")
			got := map[string]bool{}
			for _, r := range rs {
				if r.Res.ClientID != id {
					t.Errorf("long poll of %s returned a result of %s", id, r.Res.ClientID)
				}
				got[r.Res.RequestID] = true
			}
			for _, rid := range own {
				if !got[rid] {
					t.Errorf("long poll of %s misses %s", id, rid)
				}
			}
			// SSE from the start of the history: only the caller's.
			events, stop := openSSE(t, base(), e.tokens[id], "")
			need := len(own)
			for need > 0 {
				select {
				case ev := <-events:
					res := e.decodeDelivery(t, []byte(ev.Data))
					if res.ClientID != id {
						t.Fatalf("SSE of %s carried a result of %s", id, res.ClientID)
					}
					for _, rid := range own {
						if rid == res.RequestID {
							need--
						}
					}
				case <-time.After(30 * time.Second):
					t.Fatalf("SSE of %s: %d results missing", id, need)
				}
			}
			stop()
		}
	})

	t.Run("NATSDownIs503", func(t *testing.T) {
		e.c.NATS.Shutdown()
		e.c.NATS.WaitForShutdown()
		raw, _ := e.signRequest(t, "svcA", "w-svcA")
		a := post(t, base()+"/v1/sign", e.tokens["svcA"], raw)
		if a.Status != http.StatusServiceUnavailable || a.Code != "NATS_UNAVAILABLE" {
			t.Fatalf("with NATS down: %d %s", a.Status, a.Body)
		}
		resp, err := http.Get(base() + "/healthz")
		if err != nil || resp.StatusCode != 200 {
			t.Fatalf("healthz with NATS down: %v %v", resp, err)
		}
		resp.Body.Close()
		resp, err = http.Get(base() + "/readyz")
		if err != nil || resp.StatusCode != http.StatusServiceUnavailable {
			t.Fatalf("readyz with NATS down: %v %v", resp, err)
		}
		resp.Body.Close()
		checkMetrics(t, base(), `signer_relay_webhook_deliveries_total{client_id="svcA",outcome="success"}`,
			"signer_relay_webhook_delivery_latency_seconds_bucket", `code="NATS_UNAVAILABLE"`)
	})
}

func checkMetrics(t *testing.T, base string, names ...string) {
	t.Helper()
	resp, err := http.Get(base + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	_, _ = buf.ReadFrom(resp.Body)
	resp.Body.Close()
	for _, name := range names {
		if !strings.Contains(buf.String(), name) {
			t.Errorf("metrics miss %s", name)
		}
	}
}
