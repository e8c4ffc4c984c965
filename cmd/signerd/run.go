package main

import (
	"context"
	"crypto/ecdsa"
	"fmt"
	"log/slog"
	"sort"
	"time"

	"github.com/spf13/cobra"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	hsmuri "github.com/hwsigner/signer/hsm/uri"
	"github.com/hwsigner/signer/keyfile"
	"github.com/hwsigner/signer/policy"
	"github.com/hwsigner/signer/routing"
	"github.com/hwsigner/signer/signer/config"
	"github.com/hwsigner/signer/signer/health"
	"github.com/hwsigner/signer/signer/metrics"
	"github.com/hwsigner/signer/signer/node"
	"github.com/hwsigner/signer/signer/store"
)

func runCmd(lv *slog.LevelVar) *cobra.Command {
	var path string
	cmd := &cobra.Command{
		Use:   "run",
		Short: "Run one node against an external NATS server or cluster",
		Long: `run starts one node from a YAML config file (see docs/signerd.example.yaml):
its key backend (PKCS#11 URI; the PIN comes from pin-source, never the command
line), its store, its peers' identity keys and the client policy.

NATS may be down when the node starts, or go away later: the node connects
and reconnects in the background (every 2 s), retries its JetStream setup
with backoff and keeps running. Meanwhile /readyz answers 503 with the
reason, and under systemd (Type=notify) STATUS= says what the node waits
for. READY=1 is sent once the process is up (config, HSM, store, health
endpoint), not once NATS is: an outage longer than TimeoutStartSec must not
fail the unit. The watchdog is pinged for as long as the process runs,
ready or not. A configuration error, an HSM or store that does not open,
or a NATS connection closed for good (refused credentials) ends it.`,
		Example: "  signerd run --config /etc/signerd/node0.yaml",
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := config.Load(path)
			if err != nil {
				return err
			}
			log := newLogger(lv) // the node adds its "node" attribute
			ctx := cmd.Context()
			pol, err := policy.LoadFile(cfg.PolicyFile)
			if err != nil {
				return err
			}
			peers := map[string]*ecdsa.PublicKey{}
			var committee []string
			for id, p := range cfg.Peers {
				pub, err := keyfile.ParsePublicKey(p)
				if err != nil {
					return fmt.Errorf("peer %s: %w", id, err)
				}
				ek, ok := pub.(*ecdsa.PublicKey)
				if !ok {
					return fmt.Errorf("peer %s: identity keys are ECDSA P-256", id)
				}
				peers[id] = ek
				committee = append(committee, id)
			}
			sort.Strings(committee)
			// runCtx also ends when the NATS connection closes for good
			// (never for an outage: the connection retries forever).
			runCtx, stopRun := context.WithCancelCause(ctx)
			defer stopRun(nil)
			backend, err := hsmuri.Open(ctx, cfg.KeyURI, log)
			if err != nil {
				return err
			}
			defer backend.Close()
			st, err := store.Open(cfg.StorePath, store.Options{})
			if err != nil {
				return err
			}
			defer st.Close()
			conn := newNATSConn(cfg.NATS.URL, log, stopRun)
			nc, err := conn.connect(cfg)
			if err != nil {
				return err
			}
			defer conn.close(nc)
			reg := prometheus.NewRegistry()
			reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
			m, err := metrics.New(reg)
			if err != nil {
				return err
			}
			if err := m.PoolDepth(reg, st.PoolDepth); err != nil {
				return err
			}
			n, err := node.New(ctx, node.Config{
				NodeID: cfg.NodeID, Committee: committee, Signers: cfg.Threshold, Peers: peers, Policy: pol,
				SignTimeout: cfg.SignTimeout, StallTimeout: cfg.StallTimeout, KeygenTimeout: cfg.KeygenTimeout, DrainTimeout: cfg.DrainTimeout,
				Streams: routing.StreamOptions{Replicas: cfg.NATS.Replicas}, Ready: routing.ReadyOptions{Replicas: cfg.NATS.Replicas},
				Metrics: m, Logger: log,
			}, nc, backend, st)
			if err != nil {
				return err
			}
			checker := health.NewChecker(3*time.Second, readinessChecks(conn, nc, n, backend)...)
			if cfg.HTTP.Listen != "off" {
				addr, err := health.Serve(ctx, cfg.HTTP.Listen, health.Handler(checker, reg), log)
				if err != nil {
					return err
				}
				log.Info("serving /healthz, /readyz, /metrics", "addr", addr.String())
			}
			// READY=1 now that the process is up (config, HSM, store and
			// health endpoint): NATS may be down for longer than
			// TimeoutStartSec, and the node waits for it. Readiness to
			// sign is /readyz, and STATUS= (systemctl status) says what
			// the node waits for.
			health.NotifyReady("node " + cfg.NodeID + " started; waiting for NATS and the JetStream setup")
			// The watchdog loop pings for as long as the process runs,
			// draining included, ready or not.
			wdCtx, stopWatchdog := context.WithCancel(context.WithoutCancel(ctx))
			defer stopWatchdog()
			go health.Watchdog(wdCtx, health.WatchdogOptions{Ready: checker, Log: log, Status: func(results map[string]string, ok bool) string {
				if ok {
					return "node " + cfg.NodeID + " serving"
				}
				return "node " + cfg.NodeID + " not ready: " + health.Summary(results)
			}})
			stopping := make(chan struct{})
			go func() { <-runCtx.Done(); health.NotifyStopping(); close(stopping) }()
			err = n.Run(runCtx)
			if runCtx.Err() != nil {
				<-stopping // STOPPING=1 is sent before the process exits
			}
			if err == nil && ctx.Err() == nil {
				err = context.Cause(runCtx) // the NATS connection closed for good
			}
			return err
		},
	}
	cmd.Flags().StringVar(&path, "config", "/etc/signerd/signerd.yaml", "YAML config file")
	return cmd
}
