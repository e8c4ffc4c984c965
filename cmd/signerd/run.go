package main

import (
	"crypto/ecdsa"
	"fmt"
	"log/slog"
	"sort"
	"time"

	"github.com/nats-io/nats.go"
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
line), its store, its peers' identity keys and the client policy.`,
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
			nc, err := nats.Connect(cfg.NATS.URL, natsOptions(cfg, log)...)
			if err != nil {
				return fmt.Errorf("connect to NATS %s: %w", cfg.NATS.URL, err)
			}
			defer nc.Close()
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
			checker := health.NewChecker(3*time.Second, readinessChecks(nc, n, backend)...)
			if cfg.HTTP.Listen != "off" {
				addr, err := health.Serve(ctx, cfg.HTTP.Listen, health.Handler(checker, reg), log)
				if err != nil {
					return err
				}
				log.Info("serving /healthz, /readyz, /metrics", "addr", addr.String())
			}
			go func() {
				select {
				case <-n.Ready():
				case <-ctx.Done():
					return
				}
				health.NotifyReady("node " + cfg.NodeID + " serving")
				health.Watchdog(ctx, checker, log)
			}()
			stopping := make(chan struct{})
			go func() { <-ctx.Done(); health.NotifyStopping(); close(stopping) }()
			err = n.Run(ctx)
			if ctx.Err() != nil {
				<-stopping // STOPPING=1 is sent before the process exits
			}
			return err
		},
	}
	cmd.Flags().StringVar(&path, "config", "/etc/signerd/signerd.yaml", "YAML config file")
	return cmd
}
