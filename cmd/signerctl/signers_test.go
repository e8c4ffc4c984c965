package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hwsigner/signer/keyfile"
	"github.com/hwsigner/signer/routing/natstest"
)

// TestSignersFromClusterFile: the t+1 the client requires comes from
// --signers, else the cluster file's threshold (signerd dev writes it), else
// a majority of the peers.
func TestSignersFromClusterFile(t *testing.T) {
	srv := natstest.RunServer(t)
	dir := t.TempDir()
	_, priv, _ := ed25519.GenerateKey(rand.Reader)
	der, _ := x509.MarshalPKCS8PrivateKey(priv)
	keyPath := filepath.Join(dir, "client.key")
	writeTestFile(t, keyPath, string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})))
	peers := map[string]string{}
	for i := range 3 {
		k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		peers[fmt.Sprintf("node%d", i)], _ = keyfile.MarshalPublicKeyPEM(k.Public())
	}
	tests := []struct {
		name          string
		threshold     int // in the cluster file; 0: absent
		flag          int
		want          int
		wantErrSubstr string
	}{
		{"majority by default", 0, 0, 2, ""},
		{"cluster file threshold", 3, 0, 3, ""},
		{"--signers wins", 3, 2, 2, ""},
		{"--signers beyond the peers", 0, 4, 0, "signers 4, but only 3 node keys"},
		{"--signers below 1", 0, -1, 0, "want at least 1"},
	}
	for i, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			b, _ := json.Marshal(clusterFile{NATSURL: srv.ClientURL(), ClientKey: keyPath, Peers: peers, Threshold: tc.threshold})
			path := filepath.Join(dir, fmt.Sprintf("cluster%d.json", i))
			writeTestFile(t, path, string(b))
			g := &globals{clusterFile: path, signers: tc.flag, timeout: time.Minute}
			cl, done, err := g.connect(context.Background())
			if tc.wantErrSubstr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErrSubstr) {
					t.Fatalf("want error containing %q, got %v", tc.wantErrSubstr, err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			defer done()
			if r := cl.Rules(); r.Signers != tc.want || len(r.Nodes) != 3 {
				t.Fatalf("rules %+v, want signers %d", r, tc.want)
			}
		})
	}
}
