package main

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/spf13/cobra"

	"github.com/hwsigner/signer/relay"
)

func runCmd() *cobra.Command {
	var path string
	cmd := &cobra.Command{
		Use:   "run",
		Short: "Run the relay",
		Long: `run serves the relay's HTTP API from a YAML config file (strict: unknown
keys are errors). Bearer tokens and webhook secrets come from file:, env: or
cred: sources, never from the config or the command line.

Endpoints: POST /v1/wallets, /v1/sign, /v1/reshare (signed envelopes);
results by webhook, GET /v1/events (SSE, Last-Event-ID resumes), GET
/v1/results (long polling, ?after=), GET /v1/ws (WebSocket, ?after=
resumes; pings every websocket.ping_interval, a reader that leaves
websocket.send_queue full for websocket.write_timeout is disconnected with
close code 1008); GET /v1/webhook-key (the Ed25519 key of "v1a,"
webhook signatures, with webhook.signing_key_source); GET /healthz,
/readyz, /metrics. Webhooks are signed per Standard Webhooks ("v1," HMAC,
under webhook.previous_secret_source too until previous_secret_until);
429 and 503 are retried no sooner than their Retry-After; a 410 stops a
client's deliveries (dead-lettered) until the relay restarts.`,
		Example: "  signer-relay run --config /etc/signer-relay/relay.yaml",
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := loadConfig(path)
			if err != nil {
				return err
			}
			// The certificate is read before anything starts: a bad file
			// is a config error, not a listener dying after "listening".
			var tlsConfig *tls.Config
			if cfg.TLS.CertFile != "" {
				cert, err := tls.LoadX509KeyPair(cfg.TLS.CertFile, cfg.TLS.KeyFile)
				if err != nil {
					return fmt.Errorf("config: tls.cert_file/key_file: %w", err)
				}
				tlsConfig = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
			}
			log := newLogger(cmd.ErrOrStderr())
			r, err := relay.New(*cfg, log)
			if err != nil {
				return err
			}
			ctx, cancel := context.WithCancel(cmd.Context())
			defer cancel()
			// Requests' contexts end when the server shuts down: SSE
			// streams and long polls return at once instead of holding
			// Shutdown until its timeout (their clients resume from their
			// cursor elsewhere).
			reqCtx, endRequests := context.WithCancel(context.Background())
			defer endRequests()
			srv := &http.Server{
				Handler:           r.Handler(),
				TLSConfig:         tlsConfig,
				ReadHeaderTimeout: 10 * time.Second,
				IdleTimeout:       2 * time.Minute,
				// The server's own errors (TLS handshakes, panics) go to
				// the relay's structured log, not to a plain-text stderr.
				ErrorLog:    slog.NewLogLogger(log.Handler(), slog.LevelWarn),
				BaseContext: func(net.Listener) context.Context { return reqCtx },
			}
			srv.RegisterOnShutdown(endRequests)
			ln, err := net.Listen("tcp", cfg.Listen)
			if err != nil {
				return err
			}
			serveErr := make(chan error, 1)
			go func() {
				if tlsConfig != nil {
					serveErr <- srv.ServeTLS(ln, "", "") // tlsConfig's certificate
				} else {
					serveErr <- srv.Serve(ln)
				}
			}()
			log.Info("signer-relay listening", "addr", ln.Addr().String(), "tls", tlsConfig != nil, "clients", len(cfg.Clients))
			runErr := make(chan error, 1)
			go func() { runErr <- r.Run(ctx) }()
			select {
			case err = <-serveErr:
				cancel()
				<-runErr
				return err
			case err = <-runErr:
			case <-ctx.Done():
				err = <-runErr
			}
			sctx, scancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer scancel()
			if err := srv.Shutdown(sctx); err != nil {
				log.Warn("HTTP shutdown incomplete; closing the remaining connections", "err", err)
				_ = srv.Close()
			}
			if errors.Is(err, context.Canceled) {
				return nil
			}
			return err
		},
	}
	cmd.Flags().StringVar(&path, "config", "/etc/signer-relay/relay.yaml", "YAML config file")
	return cmd
}
