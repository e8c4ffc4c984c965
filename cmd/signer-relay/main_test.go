package main

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestRunRefusesAConfigWithoutCluster: without the cluster's node keys the
// relay could not attest a single result, so it does not start.
func TestRunRefusesAConfigWithoutCluster(t *testing.T) {
	dir := t.TempDir()
	tok := filepath.Join(dir, "tok")
	if err := os.WriteFile(tok, []byte("token-0123456789abcdef\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	example, err := os.ReadFile("../../docs/signer-relay.example.yaml")
	if err != nil {
		t.Fatal(err)
	}
	_, cluster, _ := strings.Cut(string(example), "\ncluster:\n")
	cluster, _, _ = strings.Cut(cluster, "\nclients:")
	clients := "nats: {url: \"nats://127.0.0.1:1\"}\nlisten: \"127.0.0.1:0\"\nclients:\n  svcA:\n    token_source: file:" + tok +
		"\n    public_keys: [MCowBQYDK2VwAyEA11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo=]\n"
	tests := []struct {
		name, config, want string
	}{
		{"no cluster section", clients, "cluster.peers missing"},
		{"no signers", clients + "cluster:\n" + strings.Replace(cluster, "  signers: 2 ", "  # signers: 2 ", 1) + "\n", "cluster.signers"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(dir, strings.ReplaceAll(tc.name, " ", "_")+".yaml")
			if err := os.WriteFile(path, []byte(tc.config), 0o600); err != nil {
				t.Fatal(err)
			}
			cmd := rootCmd()
			cmd.SetArgs([]string{"run", "--config", path})
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			err := cmd.ExecuteContext(ctx)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("signer-relay run: %v, want an error with %q", err, tc.want)
			}
		})
	}
}
