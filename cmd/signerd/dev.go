package main

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/hwsigner/signer/hsm/pkcs11"
	"github.com/hwsigner/signer/internal/secret"
	"github.com/hwsigner/signer/keyfile"
	"github.com/hwsigner/signer/policy"
	"github.com/hwsigner/signer/signer/config"
	"github.com/hwsigner/signer/signer/devcluster"
	"github.com/hwsigner/signer/signer/preparams"
)

const softhsmModule = "/usr/lib/softhsm/libsofthsm2.so"

// ClusterInfo is written to DIR/cluster.json for signerctl and the demo.
type ClusterInfo struct {
	NATSURL   string            `json:"nats_url"`
	ClientKey string            `json:"client_key"`
	ClientIDs []string          `json:"client_ids"`
	Peers     map[string]string `json:"peers"`     // node ID -> PEM public key
	Threshold config.Signers    `json:"threshold"` // nodes that must sign (t+1)
	Nodes     int               `json:"nodes"`
}

func devCmd(lv *slog.LevelVar) *cobra.Command {
	var (
		nodes, signers, port int
		dir, fixtures        string
		clientIDs            []string
		keygenTimeout        time.Duration
	)
	cmd := &cobra.Command{
		Use:   "dev",
		Short: "Run an embedded NATS server and a local cluster, each node on its own SoftHSM2 token",
		Long: `dev starts, in one process, an embedded NATS server with JetStream and --nodes
signer nodes. Each node gets its own SoftHSM2 token under DIR/tokens (a private
SoftHSM2 config in DIR; the machine's global one is never touched), its own
store DIR/nodeN.db, and an identity key generated inside its token.

It writes a client key (Ed25519, DIR/client.key) bound to --client-ids, and
DIR/cluster.json (NATS URL, client key path, node public keys) for signerctl.
Stop it with Ctrl-C; run it again on the same DIR and the wallets are still
there.

--threshold is the number of nodes that must sign (2 for 2-of-3).`,
		Example: "  signerd dev --nodes 3 --threshold 2 --dir ./.demo",
		RunE: func(cmd *cobra.Command, _ []string) error {
			log := newLogger(lv)
			need := config.Signers(signers)
			if !need.Fits(nodes) {
				return fmt.Errorf("--threshold must be between %d and --nodes (%d), got %d", config.MinSigners, nodes, signers)
			}
			abs, err := filepath.Abs(dir)
			if err != nil {
				return err
			}
			if err := os.MkdirAll(filepath.Join(abs, "tokens"), 0o700); err != nil {
				return err
			}
			if err := os.MkdirAll(filepath.Join(abs, "pins"), 0o700); err != nil {
				return err
			}
			conf := filepath.Join(abs, "softhsm2.conf")
			if err := os.WriteFile(conf, []byte("directories.tokendir = "+filepath.Join(abs, "tokens")+"\nobjectstore.backend = file\nlog.level = ERROR\n"), 0o600); err != nil {
				return err
			}
			// Must be set before the PKCS#11 module is first loaded.
			if err := os.Setenv("SOFTHSM2_CONF", conf); err != nil {
				return err
			}
			keyPath := filepath.Join(abs, "client.key")
			clientKey, err := loadOrCreateClientKey(keyPath)
			if err != nil {
				return err
			}
			pubPEM, err := keyfile.MarshalPublicKeyPEM(clientKey.Public())
			if err != nil {
				return err
			}
			ids := append([]string(nil), clientIDs...)
			pol, err := policy.New(policy.Config{Clients: []policy.ClientConfig{{
				Name: "dev-client", PublicKey: pubPEM, ClientIDs: ids, Ops: []string{"keygen", "sign", "reshare"},
			}}})
			if err != nil {
				return err
			}
			opts := devcluster.Options{
				Dir: abs, Nodes: nodes, Signers: need, Policy: pol, Logger: log, NATSPort: port,
				KeygenTimeout: keygenTimeout,
				TokenURI:      func(id string) (string, error) { return devToken(abs, id) },
			}
			if fixtures != "" {
				sets, err := preparams.LoadFixtures(fixtures)
				if err != nil {
					return err
				}
				log.Warn("using PUBLIC test pre-params fixtures: wallets made by this cluster are NOT secure; for demos and tests only", "file", fixtures)
				opts.TestPreParams = sets
			} else {
				log.Info("nodes generate their Paillier pre-params in the background; the first ECDSA keygen waits for them (minutes on a small machine)")
			}
			c, err := devcluster.Start(cmd.Context(), opts)
			if err != nil {
				return err
			}
			defer c.Stop()
			info := ClusterInfo{NATSURL: c.URL, ClientKey: keyPath, ClientIDs: ids, Peers: map[string]string{}, Threshold: need, Nodes: nodes}
			for id, pub := range c.NodeKeys {
				p, err := keyfile.MarshalPublicKeyPEM(pub)
				if err != nil {
					return err
				}
				info.Peers[id] = p
			}
			b, _ := json.MarshalIndent(info, "", "  ")
			if err := os.WriteFile(filepath.Join(abs, "cluster.json"), b, 0o644); err != nil {
				return err
			}
			fmt.Printf("dev cluster ready: %d nodes, %d-of-%d\n", nodes, signers, nodes)
			fmt.Printf("  NATS URL:     %s\n", c.URL)
			fmt.Printf("  client key:   %s (client IDs: %s)\n", keyPath, strings.Join(quoteIDs(ids), ", "))
			fmt.Printf("  cluster info: %s\n", filepath.Join(abs, "cluster.json"))
			<-cmd.Context().Done()
			fmt.Println("stopping")
			return nil
		},
	}
	cmd.Flags().IntVar(&nodes, "nodes", 3, "number of nodes")
	cmd.Flags().IntVar(&signers, "threshold", 2, "number of nodes that must sign (t+1)")
	cmd.Flags().StringVar(&dir, "dir", ".signerd-dev", "state directory (tokens, stores, keys)")
	cmd.Flags().IntVar(&port, "port", 0, "NATS port on 127.0.0.1 (0: a free port)")
	cmd.Flags().StringVar(&fixtures, "test-preparams", "", "INSECURE: load public Paillier pre-params from this fixture file instead of generating them (demos and tests only)")
	cmd.Flags().DurationVar(&keygenTimeout, "keygen-timeout", 10*time.Minute, "keygen session deadline (ECDSA keygen is CPU-heavy on small machines)")
	cmd.Flags().StringSliceVar(&clientIDs, "client-ids", []string{"demo", "svcA", "svcB", ""}, "client IDs the dev client key may use (\"\" is the legacy subjects)")
	return cmd
}

func quoteIDs(ids []string) []string {
	out := make([]string, len(ids))
	for i, id := range ids {
		if id == "" {
			id = `"" (legacy)`
		}
		out[i] = id
	}
	return out
}

// devToken creates node's SoftHSM2 token on first use, with a random PIN kept
// in a 0600 file (pin-source=file:), and returns its URI.
func devToken(dir, id string) (string, error) {
	pinFile := filepath.Join(dir, "pins", id+".pin")
	uri := fmt.Sprintf("pkcs11:token=%s;object=share-kek?module-path=%s&pin-source=file:%s", id, softhsmModule, pinFile)
	if _, err := os.Stat(pinFile); err == nil {
		return uri, nil
	}
	pin := make([]byte, 16)
	so := make([]byte, 16)
	_, _ = rand.Read(pin)
	_, _ = rand.Read(so)
	pinHex, soHex := []byte(hex.EncodeToString(pin)), []byte(hex.EncodeToString(so))
	defer secret.Zero(pinHex)
	defer secret.Zero(soHex)
	if err := pkcs11.InitToken(softhsmModule, id, soHex, pinHex); err != nil {
		return "", err
	}
	if err := os.WriteFile(pinFile, pinHex, 0o600); err != nil {
		return "", err
	}
	return uri, nil
}

func loadOrCreateClientKey(path string) (ed25519.PrivateKey, error) {
	b, err := os.ReadFile(path)
	if err == nil {
		k, err := keyfile.ParsePrivateKeyPEM(b)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		ek, ok := k.(ed25519.PrivateKey)
		if !ok {
			return nil, fmt.Errorf("%s: not an Ed25519 key", path)
		}
		return ek, nil
	}
	if !errors.Is(err, os.ErrNotExist) {
		return nil, err
	}
	_, k, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, err
	}
	der, err := x509.MarshalPKCS8PrivateKey(k)
	if err != nil {
		return nil, err
	}
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o600); err != nil {
		return nil, err
	}
	return k, nil
}
