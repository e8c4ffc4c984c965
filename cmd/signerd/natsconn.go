package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	neturl "net/url"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/hwsigner/signer/signer/config"
)

// natsReconnectWait is the pause between two connection attempts to the
// same NATS server (nats.go adds up to 1 s of jitter, 2 s with TLS).
const natsReconnectWait = 2 * time.Second

// natsConn follows the node's NATS connection. signerd connects with
// RetryOnFailedConnect and reconnects forever, so that neither NATS being
// down at start nor an outage ends the process: natsConn logs each state
// change once (connected, disconnected, reconnected, closed, and the first
// failed attempt of an outage rather than every retry), answers the "nats"
// readiness check with how long the node has been without NATS and why,
// and reports a connection that closed for good (nats.go gives up after
// the same authorization error twice) to onClosed.
type natsConn struct {
	log      *slog.Logger
	url      string // cfg.NATS.URL without passwords or tokens
	onClosed func(error)

	mu        sync.Mutex
	up        bool
	since     time.Time // of the last change between up and down
	lastErr   error     // the latest failed attempt while down
	errLogged bool      // the outage's first failed attempt was logged
	closing   bool      // signerd closes the connection itself
}

func newNATSConn(url string, log *slog.Logger, onClosed func(error)) *natsConn {
	return &natsConn{log: log, url: redactURLs(url), onClosed: onClosed, since: time.Now()}
}

// options: reconnect forever (also when the first attempt fails),
// credentials and TLS from the config (files only: nothing secret on the
// command line), and the state handlers.
func (c *natsConn) options(cfg *config.Config) []nats.Option {
	opts := []nats.Option{
		nats.Name("signerd-" + cfg.NodeID),
		nats.RetryOnFailedConnect(true),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(natsReconnectWait),
		nats.ConnectHandler(c.connected),
		nats.DisconnectErrHandler(c.disconnected),
		nats.ReconnectErrHandler(c.attemptFailed),
		nats.ReconnectHandler(c.reconnected),
		nats.ClosedHandler(c.closed),
	}
	if cfg.NATS.CredsFile != "" {
		opts = append(opts, nats.UserCredentials(cfg.NATS.CredsFile))
	}
	if t := cfg.NATS.TLS; t.CAFile != "" {
		opts = append(opts, nats.RootCAs(t.CAFile))
	}
	if t := cfg.NATS.TLS; t.CertFile != "" {
		opts = append(opts, nats.ClientCert(t.CertFile, t.KeyFile))
	}
	return opts
}

// connect connects to cfg's NATS. Only a configuration error (a bad URL,
// an unreadable credentials or TLS file) fails: an unreachable server is
// retried in the background, and the node waits for it.
func (c *natsConn) connect(cfg *config.Config) (*nats.Conn, error) {
	nc, err := nats.Connect(cfg.NATS.URL, c.options(cfg)...)
	var ue *neturl.Error
	switch {
	case errors.As(err, &ue) && strings.Contains(cfg.NATS.URL, "@"):
		// url.Error quotes the whole URL, and its cause may quote a
		// piece of the password.
		return nil, fmt.Errorf("connect to NATS %s: nats.url does not parse (details not shown: the URL holds credentials)", c.url)
	case errors.As(err, &ue):
		return nil, fmt.Errorf("connect to NATS: nats.url does not parse: %w", err)
	case err != nil:
		return nil, fmt.Errorf("connect to NATS %s: %w", c.url, err)
	}
	if !nc.IsConnected() {
		c.log.Warn("NATS not connected at start; the node waits for it and retries in the background",
			"url", c.url, "retry_every", natsReconnectWait.String())
	}
	return nc, nil
}

// close closes nc as part of signerd's own stop (not reported to onClosed).
func (c *natsConn) close(nc *nats.Conn) {
	c.mu.Lock()
	c.closing = true
	c.mu.Unlock()
	nc.Close()
}

func (c *natsConn) connected(nc *nats.Conn) {
	c.mu.Lock()
	waited := time.Since(c.since)
	c.up, c.since, c.lastErr, c.errLogged = true, time.Now(), nil, false
	c.mu.Unlock()
	c.log.Info("NATS connected", "url", nc.ConnectedUrlRedacted(), "after", waited.Round(time.Millisecond).String())
}

func (c *natsConn) disconnected(nc *nats.Conn, err error) {
	c.mu.Lock()
	if c.closing || nc.IsClosed() {
		c.mu.Unlock()
		return // closed: c.closed reports it
	}
	c.up, c.since, c.lastErr, c.errLogged = false, time.Now(), err, false
	c.mu.Unlock()
	c.log.Warn("NATS disconnected; reconnecting in the background", "err", errText(err))
}

func (c *natsConn) attemptFailed(_ *nats.Conn, err error) {
	c.mu.Lock()
	c.lastErr = err
	first := !c.errLogged
	c.errLogged = true
	c.mu.Unlock()
	if first {
		c.log.Warn("NATS connection attempt failed; retrying until it succeeds (further failures are logged at debug level)",
			"url", c.url, "err", errText(err))
		return
	}
	c.log.Debug("NATS connection attempt failed", "err", errText(err))
}

func (c *natsConn) reconnected(nc *nats.Conn) {
	c.mu.Lock()
	down := time.Since(c.since)
	c.up, c.since, c.lastErr, c.errLogged = true, time.Now(), nil, false
	c.mu.Unlock()
	c.log.Info("NATS reconnected", "url", nc.ConnectedUrlRedacted(), "down_for", down.Round(time.Millisecond).String())
}

func (c *natsConn) closed(nc *nats.Conn) {
	c.mu.Lock()
	ours := c.closing
	c.up, c.since = false, time.Now()
	c.mu.Unlock()
	if ours {
		c.log.Debug("NATS connection closed")
		return
	}
	err := nc.LastError()
	if err == nil {
		err = errors.New("no error reported")
	}
	c.log.Error("NATS connection closed for good; stopping", "err", err.Error())
	if c.onClosed != nil {
		c.onClosed(fmt.Errorf("NATS connection closed: %w", err))
	}
}

// check is the "nats" readiness check.
func (c *natsConn) check(nc *nats.Conn) func(context.Context) error {
	return func(context.Context) error {
		if s := nc.Status(); s != nats.CONNECTED {
			c.mu.Lock()
			since, err := c.since, c.lastErr
			c.mu.Unlock()
			msg := fmt.Sprintf("not connected (%s) since %s", s, since.UTC().Format(time.RFC3339))
			if err != nil {
				msg += ": " + err.Error()
			}
			return errors.New(msg)
		}
		return nil
	}
}

func errText(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

// redactURLs returns the comma-separated NATS URLs without their
// passwords or tokens (nats://user:secret@host -> nats://user:xxxxx@host).
func redactURLs(urls string) string {
	parts := strings.Split(urls, ",")
	for i, p := range parts {
		p = strings.TrimSpace(p)
		u, err := neturl.Parse(p)
		switch {
		case err != nil:
			parts[i] = "(unparsable URL)"
		case u.User != nil:
			if _, hasPassword := u.User.Password(); !hasPassword {
				u.User = neturl.User("xxxxx") // a bare token
			}
			parts[i] = u.Redacted()
		default:
			parts[i] = p
		}
	}
	return strings.Join(parts, ",")
}
