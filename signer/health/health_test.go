package health

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
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

// notifySocket listens on a unixgram socket as systemd's NOTIFY_SOCKET (with
// a watchdog of every) and returns the datagrams received so far.
func notifySocket(t *testing.T, every time.Duration) func() []string {
	t.Helper()
	dir, err := os.MkdirTemp("", "notify") // short: a socket path has at most 107 bytes
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	sock := filepath.Join(dir, "notify")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: sock, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	t.Setenv("NOTIFY_SOCKET", sock)
	t.Setenv("WATCHDOG_USEC", strconv.FormatInt(every.Microseconds(), 10))
	var mu sync.Mutex
	var msgs []string
	go func() {
		buf := make([]byte, 4096)
		for {
			k, err := conn.Read(buf)
			if err != nil {
				return
			}
			mu.Lock()
			msgs = append(msgs, string(buf[:k]))
			mu.Unlock()
		}
	}()
	return func() []string {
		mu.Lock()
		defer mu.Unlock()
		return append([]string(nil), msgs...)
	}
}

func countOf(msgs []string, want string) int {
	k := 0
	for _, m := range msgs {
		if m == want {
			k++
		}
	}
	return k
}

func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// recorder is a slog handler that keeps the messages logged at warn and info.
type recorder struct {
	mu   sync.Mutex
	msgs []string
}

func (r *recorder) Enabled(_ context.Context, l slog.Level) bool { return l >= slog.LevelInfo }
func (r *recorder) Handle(_ context.Context, rec slog.Record) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.msgs = append(r.msgs, rec.Level.String()+" "+rec.Message)
	return nil
}
func (r *recorder) WithAttrs([]slog.Attr) slog.Handler { return r }
func (r *recorder) WithGroup(string) slog.Handler      { return r }
func (r *recorder) count(msg string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return countOf(r.msgs, msg)
}

// TestWatchdogPingsWhileNotReady: the watchdog is pinged whether the checks
// pass or not (a NATS outage must not get the service restarted); STATUS=
// follows the checks' result, and each change between ready and not ready
// is logged once. A check that hangs past its timeout stalls the loop: the
// pings stop until it returns.
func TestWatchdogPingsWhileNotReady(t *testing.T) {
	msgs := notifySocket(t, 100*time.Millisecond) // a ping every 50 ms
	var natsUp atomic.Bool
	hang, entered := make(chan struct{}), make(chan struct{})
	var hanging atomic.Bool
	var enteredOnce sync.Once
	checker := NewChecker(50*time.Millisecond,
		Check{Name: "nats", Fn: func(context.Context) error {
			if !natsUp.Load() {
				return errors.New("not connected (RECONNECTING)")
			}
			return nil
		}},
		Check{Name: "hsm", Fn: func(context.Context) error {
			if hanging.Load() {
				enteredOnce.Do(func() { close(entered) })
				<-hang // ignores ctx
			}
			return nil
		}},
	)
	rec := &recorder{}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		Watchdog(ctx, WatchdogOptions{Ready: checker, Log: slog.New(rec)})
	}()
	defer func() { cancel(); <-done }()

	const notReady = "STATUS=not ready: nats: not connected (RECONNECTING)"
	eventually(t, "10 pings while not ready", func() bool { return countOf(msgs(), "WATCHDOG=1") >= 10 })
	if m := msgs(); countOf(m, notReady) != 1 || m[0] != notReady {
		t.Fatalf("notify messages while not ready: %q", m)
	}
	if k := rec.count("INFO not ready yet"); k != 1 {
		t.Fatalf("%q logged %d times, want once", "not ready yet", k)
	}

	natsUp.Store(true)
	eventually(t, "STATUS=ready", func() bool { return countOf(msgs(), "STATUS=ready") == 1 })
	pings := countOf(msgs(), "WATCHDOG=1")
	eventually(t, "pings while ready", func() bool { return countOf(msgs(), "WATCHDOG=1") >= pings+5 })
	if m := msgs(); countOf(m, "STATUS=ready") != 1 || countOf(m, notReady) != 1 {
		t.Fatalf("STATUS= sent again without a change: %q", m)
	}
	if rec.count("INFO ready") != 1 || rec.count("INFO not ready yet") != 1 || rec.count("WARN not ready") != 0 {
		t.Fatalf("log: %q", rec.msgs)
	}

	// A wedged check: no ping while it hangs (well past the checker's
	// timeout and the watchdog interval), pings again once it returns.
	hanging.Store(true)
	<-entered
	stalled := countOf(msgs(), "WATCHDOG=1")
	time.Sleep(500 * time.Millisecond) // ten watchdog periods
	// At most one: the previous iteration's ping may not have been read yet.
	if k := countOf(msgs(), "WATCHDOG=1"); k > stalled+1 {
		t.Fatalf("%d pings while a check hung", k-stalled)
	}
	hanging.Store(false)
	close(hang)
	eventually(t, "pings after the hung check returned", func() bool { return countOf(msgs(), "WATCHDOG=1") >= stalled+3 })
}

// TestWatchdogWithoutSystemd: without NOTIFY_SOCKET and WATCHDOG_USEC the
// loop still logs readiness changes, and returns when ctx ends.
func TestWatchdogWithoutSystemd(t *testing.T) {
	t.Setenv("NOTIFY_SOCKET", "")
	t.Setenv("WATCHDOG_USEC", "")
	var up atomic.Bool
	checker := NewChecker(time.Second, Check{Name: "nats", Fn: func(context.Context) error {
		if !up.Load() {
			return errors.New("down")
		}
		return nil
	}})
	rec := &recorder{}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		Watchdog(ctx, WatchdogOptions{Ready: checker, Log: slog.New(rec), Every: 10 * time.Millisecond})
	}()
	eventually(t, "not ready logged", func() bool { return rec.count("INFO not ready yet") == 1 })
	up.Store(true)
	eventually(t, "ready logged", func() bool { return rec.count("INFO ready") == 1 })
	up.Store(false)
	eventually(t, "not ready again logged", func() bool { return rec.count("WARN not ready") == 1 })
	cancel()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("Watchdog did not return after ctx ended")
	}
	if rec.count("WARN not ready") != 1 || rec.count("INFO not ready yet") != 1 || rec.count("INFO ready") != 1 {
		t.Fatalf("log: %q", rec.msgs)
	}
}

func TestSummary(t *testing.T) {
	got := Summary(map[string]string{"nats": "not connected", "hsm": "ok", "node": "starting: waiting for NATS"})
	if want := "nats: not connected; node: starting: waiting for NATS"; got != want {
		t.Fatalf("Summary = %q, want %q", got, want)
	}
	if got := Summary(map[string]string{"nats": "ok"}); got != "" {
		t.Fatalf("Summary of passing checks = %q", got)
	}
}
