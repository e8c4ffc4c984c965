package health

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

func TestEndpoints(t *testing.T) {
	natsUp := true
	reg := prometheus.NewRegistry()
	c := prometheus.NewCounter(prometheus.CounterOpts{Name: "probe_total", Help: "x"})
	reg.MustRegister(c)
	c.Inc()
	checker := NewChecker(time.Second,
		Check{Name: "nats", Fn: func(context.Context) error {
			if !natsUp {
				return errors.New("NATS connection RECONNECTING")
			}
			return nil
		}},
		Check{Name: "slow", Fn: func(ctx context.Context) error { <-ctx.Done(); return nil }}, // bounded by the timeout
	)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	addr, err := Serve(ctx, "127.0.0.1:0", Handler(checker, reg), nil)
	if err != nil {
		t.Fatal(err)
	}
	base := "http://" + addr.String()
	get := func(path string) (int, string) {
		resp, err := http.Get(base + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	tests := []struct {
		name, path string
		natsUp     bool
		code       int
		check      func(body string) bool
	}{
		{"liveness", "/healthz", false, 200, func(b string) bool { return b == "ok\n" }},
		{"ready", "/readyz", true, 200, func(b string) bool { return readyBody(t, b).Checks["nats"] == "ok" }},
		{"not ready", "/readyz", false, 503, func(b string) bool {
			r := readyBody(t, b)
			return !r.Ready && r.Checks["nats"] == "NATS connection RECONNECTING"
		}},
		{"metrics", "/metrics", true, 200, func(b string) bool { return contains(b, "probe_total 1") }},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			natsUp = tc.natsUp
			code, body := get(tc.path)
			if code != tc.code || !tc.check(body) {
				t.Fatalf("%s: %d %q", tc.path, code, body)
			}
		})
	}
	if code, _ := get("/nope"); code != 404 {
		t.Fatalf("unknown path: %d", code)
	}
	// Stopping the context shuts the listener down.
	cancel()
	time.Sleep(200 * time.Millisecond)
	if _, err := http.Get(base + "/healthz"); err == nil {
		t.Fatal("still serving after shutdown")
	}
}

type ready struct {
	Ready  bool              `json:"ready"`
	Checks map[string]string `json:"checks"`
}

func readyBody(t *testing.T, b string) ready {
	var r ready
	if err := json.Unmarshal([]byte(b), &r); err != nil {
		t.Fatalf("readyz body %q: %v", b, err)
	}
	return r
}

func contains(s, sub string) bool { return strings.Contains(s, sub) }
