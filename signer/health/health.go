// Package health serves a daemon's operational endpoints: /healthz
// (liveness: the process answers), /readyz (readiness: every named check
// passes) and /metrics (Prometheus), and ties readiness to systemd's
// Type=notify protocol and watchdog.
package health

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/coreos/go-systemd/v22/daemon"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Check is one readiness condition.
type Check struct {
	Name string
	// Fn returns nil when the condition holds. It must respect ctx.
	Fn func(ctx context.Context) error
}

// Checker runs checks, each bounded by a timeout.
type Checker struct {
	checks  []Check
	timeout time.Duration
}

// NewChecker returns a checker over checks; each gets timeout (default 2 s).
func NewChecker(timeout time.Duration, checks ...Check) *Checker {
	if timeout <= 0 {
		timeout = 2 * time.Second
	}
	return &Checker{checks: checks, timeout: timeout}
}

// Run runs every check and returns each one's result ("ok" or the error)
// and whether all passed.
func (c *Checker) Run(ctx context.Context) (map[string]string, bool) {
	out := make(map[string]string, len(c.checks))
	ok := true
	var mu sync.Mutex
	var wg sync.WaitGroup
	for _, ch := range c.checks {
		wg.Add(1)
		go func() {
			defer wg.Done()
			cctx, cancel := context.WithTimeout(ctx, c.timeout)
			defer cancel()
			err := ch.Fn(cctx)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				out[ch.Name] = err.Error()
				ok = false
			} else {
				out[ch.Name] = "ok"
			}
		}()
	}
	wg.Wait()
	return out, ok
}

// Handler serves /healthz, /readyz and /metrics (from gatherer).
func Handler(c *Checker, gatherer prometheus.Gatherer) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		_, _ = w.Write([]byte("ok\n"))
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		results, ok := c.Run(r.Context())
		w.Header().Set("Content-Type", "application/json")
		if !ok {
			w.WriteHeader(http.StatusServiceUnavailable)
		}
		_ = json.NewEncoder(w).Encode(struct {
			Ready  bool              `json:"ready"`
			Checks map[string]string `json:"checks"`
		}{ok, results})
	})
	mux.Handle("GET /metrics", promhttp.HandlerFor(gatherer, promhttp.HandlerOpts{}))
	return mux
}

// Serve listens on addr and serves h until ctx ends, then shuts down
// gracefully. It returns once the listener is up (or failed to come up);
// errors after that are logged.
func Serve(ctx context.Context, addr string, h http.Handler, log *slog.Logger) (net.Addr, error) {
	if log == nil {
		log = slog.Default()
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("listen on %s for /healthz, /readyz, /metrics: %w", addr, err)
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 5 * time.Second}
	go func() {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("health endpoint stopped", "err", err)
		}
	}()
	go func() {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
	}()
	return ln.Addr(), nil
}

// NotifyReady tells systemd (Type=notify) the service is ready. Outside
// systemd (no NOTIFY_SOCKET) it does nothing.
func NotifyReady(status string) {
	_, _ = daemon.SdNotify(false, daemon.SdNotifyReady+"\nSTATUS="+status)
}

// NotifyStopping tells systemd the service is stopping.
func NotifyStopping() {
	_, _ = daemon.SdNotify(false, daemon.SdNotifyStopping+"\nSTATUS=draining running sessions")
}

// Watchdog pings systemd's watchdog at half its interval for as long as
// ctx lasts, but only while c's checks pass: a node that lost NATS or its
// HSM stops pinging and systemd restarts it. Without WatchdogSec it returns
// at once.
func Watchdog(ctx context.Context, c *Checker, log *slog.Logger) {
	interval, err := daemon.SdWatchdogEnabled(false)
	if err != nil || interval <= 0 {
		return
	}
	t := time.NewTicker(interval / 2)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if results, ok := c.Run(ctx); ok {
				_, _ = daemon.SdNotify(false, daemon.SdNotifyWatchdog)
			} else {
				log.Warn("not ready: withholding the systemd watchdog ping", "checks", results)
			}
		}
	}
}
