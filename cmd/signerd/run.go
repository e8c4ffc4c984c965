package main

import (
	"bytes"
	"crypto/ecdsa"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sort"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/spf13/cobra"
	"gopkg.in/yaml.v3"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	hsmuri "github.com/hwsigner/signer/hsm/uri"
	"github.com/hwsigner/signer/keyfile"
	"github.com/hwsigner/signer/policy"
	"github.com/hwsigner/signer/protocol"
	"github.com/hwsigner/signer/routing"
	"github.com/hwsigner/signer/signer/health"
	"github.com/hwsigner/signer/signer/metrics"
	"github.com/hwsigner/signer/signer/node"
	"github.com/hwsigner/signer/signer/store"
)

// Config is signerd's YAML configuration file (docs/signerd.example.yaml).
type Config struct {
	NodeID string `yaml:"node_id"`
	NATS   struct {
		URL       string `yaml:"url"`
		CredsFile string `yaml:"creds_file"`
		// Replicas of the streams and buckets signerd creates: 3 (or 5) in a
		// NATS cluster, so that losing one server loses nothing. Default 1.
		Replicas int `yaml:"replicas"`
		TLS      struct {
			CAFile   string `yaml:"ca_file"`
			CertFile string `yaml:"cert_file"`
			KeyFile  string `yaml:"key_file"`
		} `yaml:"tls"`
	} `yaml:"nats"`
	HTTP struct {
		// Listen is where /healthz, /readyz and /metrics are served
		// (default 127.0.0.1:9464; "off" disables them).
		Listen string `yaml:"listen"`
	} `yaml:"http"`
	KeyURI        string            `yaml:"key_uri"`
	StorePath     string            `yaml:"store_path"`
	Threshold     int               `yaml:"threshold"` // nodes that must sign (t+1)
	Peers         map[string]string `yaml:"peers"`     // node ID -> PEM identity public key
	PolicyFile    string            `yaml:"policy_file"`
	SignTimeout   time.Duration     `yaml:"sign_timeout"`
	KeygenTimeout time.Duration     `yaml:"keygen_timeout"`
	DrainTimeout  time.Duration     `yaml:"drain_timeout"` // graceful stop: how long running sessions may take
}

// ParseConfig decodes and checks a config file. Unknown fields are errors;
// test-only settings (fixture pre-params) are refused by name.
func ParseConfig(data []byte) (*Config, error) {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	var c Config
	if err := dec.Decode(&c); err != nil {
		if strings.Contains(err.Error(), "test_preparams") || strings.Contains(err.Error(), "fixture") {
			return nil, errors.New("config: test pre-params fixtures are public keys for tests only; a production node refuses them")
		}
		return nil, fmt.Errorf("config: %w", err)
	}
	var missing []string
	for name, v := range map[string]string{"node_id": c.NodeID, "nats.url": c.NATS.URL, "key_uri": c.KeyURI, "store_path": c.StorePath, "policy_file": c.PolicyFile} {
		if v == "" {
			missing = append(missing, name)
		}
	}
	sort.Strings(missing)
	if len(missing) > 0 {
		return nil, fmt.Errorf("config: missing %s", strings.Join(missing, ", "))
	}
	if err := protocol.ValidToken(c.NodeID); err != nil {
		return nil, fmt.Errorf("config: node_id: %w", err)
	}
	if _, ok := c.Peers[c.NodeID]; !ok {
		return nil, fmt.Errorf("config: peers must list this node (%s) with its identity key (signerctl init prints it)", c.NodeID)
	}
	if c.Threshold < 2 || c.Threshold > len(c.Peers) {
		return nil, fmt.Errorf("config: threshold (nodes that must sign) must be between 2 and %d, got %d", len(c.Peers), c.Threshold)
	}
	if strings.Contains(c.KeyURI, "pin-value") {
		return nil, errors.New("config: key_uri must not contain pin-value; use pin-source=file:, env: or cred:")
	}
	if (c.NATS.TLS.CertFile == "") != (c.NATS.TLS.KeyFile == "") {
		return nil, errors.New("config: nats.tls.cert_file and nats.tls.key_file go together")
	}
	if r := c.NATS.Replicas; r != 0 && r != 1 && r != 3 && r != 5 {
		return nil, fmt.Errorf("config: nats.replicas must be 1, 3 or 5, got %d", r)
	}
	if c.HTTP.Listen == "" {
		c.HTTP.Listen = "127.0.0.1:9464"
	}
	return &c, nil
}

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
			raw, err := os.ReadFile(path)
			if err != nil {
				return err
			}
			cfg, err := ParseConfig(raw)
			if err != nil {
				return err
			}
			log := newLogger(lv) // the node adds its "node" attribute
			ctx := cmd.Context()
			policy, err := policy.LoadFile(cfg.PolicyFile)
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
				NodeID: cfg.NodeID, Committee: committee, Threshold: cfg.Threshold - 1, Peers: peers, Policy: policy,
				SignTimeout: cfg.SignTimeout, KeygenTimeout: cfg.KeygenTimeout, DrainTimeout: cfg.DrainTimeout,
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
