package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestNodeFlagsConfig: --config is read with signerd's parser in its partial
// mode (strict, only the used fields needed), and flags win over it.
func TestNodeFlagsConfig(t *testing.T) {
	dir := t.TempDir()
	write := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	partial := write("partial.yaml", "node_id: node0\nkey_uri: \"software:dir=/k\"\nstore_path: /s.db\n")
	keyOnly := write("key.yaml", "key_uri: \"software:dir=/k\"\n")
	unknown := write("unknown.yaml", "key_uri: \"software:dir=/k\"\ncolour: blue\n")
	pin := write("pin.yaml", "key_uri: \"pkcs11:token=a?module-path=/m.so&pin-value=1234\"\nstore_path: /s.db\n")
	tests := []struct {
		name                      string
		flags                     nodeFlags
		needStore                 bool
		wantErr                   string
		keyURI, storePath, nodeID string
	}{
		{"from config", nodeFlags{config: partial}, true, "", "software:dir=/k", "/s.db", "node0"},
		{"flags win", nodeFlags{config: partial, keyURI: "tpm:device=/d", storePath: "/o.db", nodeID: "node1"}, true, "", "tpm:device=/d", "/o.db", "node1"},
		{"flags only", nodeFlags{keyURI: "tpm:device=/d"}, false, "", "tpm:device=/d", "", ""},
		{"key only, no store needed", nodeFlags{config: keyOnly}, false, "", "software:dir=/k", "", ""},
		{"key only, store needed", nodeFlags{config: keyOnly}, true, "no store: pass --store or --config", "", "", ""},
		{"nothing", nodeFlags{}, false, "no key backend: pass --key-uri or --config", "", "", ""},
		{"unknown field", nodeFlags{config: unknown}, false, unknown + ": config: yaml: unmarshal errors:\n  line 2: field colour not found in type config.Config", "", "", ""},
		{"pin in key_uri", nodeFlags{config: pin}, false, pin + ": config: key_uri must not contain pin-value", "", "", ""},
		{"no file", nodeFlags{config: filepath.Join(dir, "none.yaml")}, false, "no such file", "", "", ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			nf := tc.flags
			err := nf.resolve(tc.needStore)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("want error containing %q, got %v", tc.wantErr, err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if nf.keyURI != tc.keyURI || nf.storePath != tc.storePath || nf.nodeID != tc.nodeID {
				t.Fatalf("got key %q, store %q, node %q", nf.keyURI, nf.storePath, nf.nodeID)
			}
		})
	}
}

func TestResolveNodeID(t *testing.T) {
	dir := t.TempDir()
	withID := filepath.Join(dir, "id.yaml")
	noID := filepath.Join(dir, "noid.yaml")
	badID := filepath.Join(dir, "badid.yaml")
	for p, content := range map[string]string{withID: "node_id: node0\n", noID: "store_path: /s.db\n", badID: "node_id: \"a b\"\n"} {
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	tests := []struct {
		name    string
		flags   nodeFlags
		want    string
		wantErr string
	}{
		{"from config", nodeFlags{config: withID}, "node0", ""},
		{"--node-id wins", nodeFlags{config: withID, nodeID: "node2"}, "node2", ""},
		{"--node-id only", nodeFlags{nodeID: "node2"}, "node2", ""},
		{"config without node_id", nodeFlags{config: noID}, "", "no node ID: pass --node-id or a --config with node_id"},
		{"neither", nodeFlags{}, "", "no node ID: pass --node-id or a --config with node_id"},
		{"invalid node_id in config", nodeFlags{config: badID}, "", "config: node_id: "},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			nf := tc.flags
			got, err := nf.resolveNodeID()
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("want error containing %q, got %v", tc.wantErr, err)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("got %q, %v; want %q", got, err, tc.want)
			}
		})
	}
}
