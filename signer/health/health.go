// Package health serves a daemon's operational endpoints: /healthz
// (liveness: the process answers), /readyz (readiness: every named check
// passes) and /metrics (Prometheus), and speaks systemd's Type=notify
// protocol: READY=1, STATUS= with the readiness checks' result, and
// watchdog pings for as long as the process is alive (ready or not).
package health

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sort"
	"strings"
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

// NotifyStatus sets the service's STATUS= line (systemctl status).
func NotifyStatus(status string) {
	_, _ = daemon.SdNotify(false, "STATUS="+status)
}

// Summary is the failing checks of a Checker.Run result, "name: error",
// sorted by name and joined by "; " ("" when all passed).
func Summary(results map[string]string) string {
	var failing []string
	for name, r := range results {
		if r != "ok" {
			failing = append(failing, name+": "+r)
		}
	}
	sort.Strings(failing)
	return strings.Join(failing, "; ")
}

// WatchdogOptions configures Watchdog.
type WatchdogOptions struct {
	// Ready is the readiness checker (the one /readyz runs). Its result
	// goes to STATUS= and to the log, never into the watchdog ping.
	Ready *Checker
	// Status returns the STATUS= text for a readiness result. Default:
	// "ready", or "not ready: " and the Summary. Keep it free of counters
	// and clocks: a change of the text is what gets reported.
	Status func(results map[string]string, ok bool) string
	// Every is the loop's period when systemd set no watchdog
	// (WatchdogSec=); default 5 s. With a watchdog it is half the
	// watchdog interval.
	Every time.Duration
	Log   *slog.Logger
}

// Watchdog is a daemon's supervision loop. Until ctx ends it runs, at once
// and then every period, the readiness checks; it sends systemd the
// STATUS= text of their result whenever that text changes, logs once each
// change between ready and not ready (the state at start at info level,
// other changes of the text at debug level), then pings systemd's watchdog
// (WATCHDOG=1).
//
// The ping says that the process is alive (this loop runs, and its checks
// return within their timeouts), not that it is ready: an outage of a
// dependency such as NATS shows in /readyz, STATUS= and the log, and does
// not get the service killed and restarted until StartLimitBurst leaves it
// failed. A check that hangs beyond its timeout (one ignoring ctx: a wedged
// HSM call) stalls the loop, the pings stop, and systemd restarts the
// service. Keep the checker's timeout well below half of WatchdogSec.
func Watchdog(ctx context.Context, o WatchdogOptions) {
	if o.Log == nil {
		o.Log = slog.Default()
	}
	if o.Status == nil {
		o.Status = func(results map[string]string, ok bool) string {
			if ok {
				return "ready"
			}
			return "not ready: " + Summary(results)
		}
	}
	period := o.Every
	if period <= 0 {
		period = 5 * time.Second
	}
	interval, err := daemon.SdWatchdogEnabled(false)
	if err != nil {
		o.Log.Warn("systemd watchdog settings unusable; not pinging", "err", err)
	}
	ping := err == nil && interval > 0
	if ping {
		period = interval / 2
	}
	t := time.NewTicker(period)
	defer t.Stop()
	last, lastOK := "", false
	for first := true; ; first = false {
		if !first {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
		}
		results, ok := o.Ready.Run(ctx)
		if ctx.Err() != nil {
			return
		}
		if status := o.Status(results, ok); first || status != last {
			switch {
			case ok && (first || !lastOK):
				o.Log.Info("ready", "status", status)
			case !ok && first: // starting
				o.Log.Info("not ready yet", "status", status)
			case !ok && lastOK:
				o.Log.Warn("not ready", "status", status)
			default: // the same state, another reason
				o.Log.Debug("readiness status", "status", status)
			}
			NotifyStatus(status)
			last, lastOK = status, ok
		}
		if ping {
			_, _ = daemon.SdNotify(false, daemon.SdNotifyWatchdog)
		}
	}
}
