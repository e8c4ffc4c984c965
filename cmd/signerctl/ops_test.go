package main

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hwsigner/signer/internal/fixtures"
	"github.com/hwsigner/signer/internal/testhsm"
	"github.com/hwsigner/signer/keyfile"
	"github.com/hwsigner/signer/policy"
	"github.com/hwsigner/signer/signer/devcluster"
)

// status, bench and store inspect against a real 3-node cluster (embedded
// NATS, SoftHSM2 tokens), through the built binary.
func TestStatusBenchInspect(t *testing.T) {
	bin := buildCLI(t)
	testhsm.Setup(t)
	dir := t.TempDir()
	_, priv, _ := ed25519.GenerateKey(rand.Reader)
	pubPEM, _ := keyfile.MarshalPublicKeyPEM(priv.Public())
	policy, err := policy.New(policy.Config{Clients: []policy.ClientConfig{
		{Name: "ops", PublicKey: pubPEM, ClientIDs: []string{"ops"}, Ops: []string{"keygen", "sign"}},
	}})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	c, err := devcluster.Start(ctx, devcluster.Options{
		Dir: dir, Nodes: 3, Signers: 2, Policy: policy, TestPreParams: fixtures.PreParams(t),
		TokenURI: func(string) (string, error) { return testhsm.Token(t, "ops"), nil },
	})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Stop()
	der, _ := x509.MarshalPKCS8PrivateKey(priv)
	keyFile := filepath.Join(dir, "client.key")
	writeTestFile(t, keyFile, string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})))
	cf := clusterFile{NATSURL: c.URL, ClientKey: keyFile, Peers: map[string]string{}}
	for id, k := range c.NodeKeys {
		cf.Peers[id], _ = keyfile.MarshalPublicKeyPEM(k)
	}
	b, _ := json.Marshal(cf)
	clusterPath := filepath.Join(dir, "cluster.json")
	writeTestFile(t, clusterPath, string(b))
	ctl := func(args ...string) (string, string, error) {
		return run(t, nil, bin, append([]string{"--cluster", clusterPath, "--client-id", "ops"}, args...)...)
	}

	// status: three ready nodes, with their heartbeat details.
	var peers []peerStatus
	deadline := time.Now().Add(20 * time.Second)
	for {
		out, stderr, err := ctl("status", "--json")
		if err != nil {
			t.Fatalf("status: %v %s", err, stderr)
		}
		peers = nil
		if err := json.Unmarshal([]byte(out), &peers); err != nil {
			t.Fatalf("status output %q: %v", out, err)
		}
		if len(peers) == 3 && peers[0].Status != nil && peers[1].Status != nil && peers[2].Status != nil || time.Now().After(deadline) {
			break
		}
		time.Sleep(time.Second) // the first heartbeat carries no details yet
	}
	for _, p := range peers {
		if !p.Ready || !p.Known || p.Status == nil || !p.Status.PoolTest {
			t.Fatalf("status of %s: %+v", p.NodeID, p)
		}
	}
	if out, _, err := ctl("status"); err != nil || !strings.Contains(out, "fixtures (INSECURE)") || !strings.Contains(out, "node2") {
		t.Fatalf("status table: %v\n%s", err, out)
	}

	// bench: 6 EdDSA signatures, 2 at a time, all succeed.
	out, stderr, err := ctl("bench", "--op", "sign-eddsa", "--n", "6", "--concurrency", "2", "--json")
	if err != nil {
		t.Fatalf("bench: %v %s", err, stderr)
	}
	var r benchReport
	if err := json.Unmarshal([]byte(out), &r); err != nil {
		t.Fatalf("bench output %q: %v", out, err)
	}
	if r.Succeeded != 6 || len(r.Errors) != 0 || r.P50ms <= 0 || r.P99ms < r.P50ms || r.OpsPerMin <= 0 {
		t.Fatalf("bench report %+v", r)
	}
	if _, _, err := ctl("bench", "--op", "nope"); err == nil {
		t.Fatal("bench accepted --op nope")
	}

	// store inspect: metadata of the bench wallet, and nothing sealed.
	c.StopNode("node0")
	out, stderr, err = run(t, nil, bin, "store", "inspect", "--store", c.StorePath("node0"), "--json")
	if err != nil {
		t.Fatalf("inspect: %v %s", err, stderr)
	}
	var rep struct {
		Stats struct {
			Shares int `json:"shares"`
		} `json:"stats"`
		Wallets []struct {
			WalletID string `json:"wallet_id"`
			KeyType  string `json:"key_type"`
			PubKey   []byte `json:"pub_key"`
		} `json:"wallets"`
	}
	if err := json.Unmarshal([]byte(out), &rep); err != nil {
		t.Fatalf("inspect output %q: %v", out, err)
	}
	if rep.Stats.Shares != 1 || len(rep.Wallets) != 1 || !strings.HasPrefix(rep.Wallets[0].WalletID, "bench-") || len(rep.Wallets[0].PubKey) != 32 {
		t.Fatalf("inspect report %s", out)
	}
	for _, secret := range []string{"ciphertext", "wrapped_key", "sealed"} {
		if strings.Contains(out, secret) {
			t.Fatalf("inspect printed %q", secret)
		}
	}
}

func writeTestFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
}
