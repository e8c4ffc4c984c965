package config_test

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/hwsigner/signer/signer/config"
)

const base = `node_id: node0
nats: {url: "nats://127.0.0.1:4222"}
key_uri: "pkcs11:token=node0?module-path=/usr/lib/softhsm/libsofthsm2.so&pin-source=cred:hsm-pin"
store_path: /var/lib/signerd/node0.db
policy_file: /etc/signerd/clients.yaml
threshold: 2
peers: {node0: a, node1: b, node2: c}
`

// without returns base without the line that starts with key.
func without(key string) string {
	var out []string
	for _, l := range strings.SplitAfter(base, "\n") {
		if !strings.HasPrefix(l, key+":") {
			out = append(out, l)
		}
	}
	return strings.Join(out, "")
}

func TestParseConfig(t *testing.T) {
	tests := []struct {
		name, yaml, wantErr string
	}{
		{"valid", base, ""},
		{"fixtures refused", base + "test_preparams: testdata/preparams.json\n", "refuses"},
		{"unknown field", base + "colour: blue\n", "colour"},
		{"missing store", strings.Replace(base, "store_path: /var/lib/signerd/node0.db\n", "", 1), "store_path"},
		{"pin in uri", strings.Replace(base, "pin-source=cred:hsm-pin", "pin-value=1234", 1), "pin-value"},
		{"threshold too high", strings.Replace(base, "threshold: 2", "threshold: 4", 1), "threshold"},
		{"self not in peers", strings.Replace(base, "node0: a, ", "", 1), "peers"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := config.Parse([]byte(tc.yaml))
			if tc.wantErr == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("want error containing %q, got %v", tc.wantErr, err)
			}
		})
	}
}

// TestParseErrors: every check of a full parse, with its exact message, and
// whether a partial parse makes the same one.
func TestParseErrors(t *testing.T) {
	tests := []struct {
		name, yaml, wantErr string
		partialToo          bool // a partial parse refuses it with the same message
	}{
		{"fixtures refused", base + "test_preparams: testdata/preparams.json\n",
			"config: test pre-params fixtures are public keys for tests only; a production node refuses them", true},
		{"fixture by another name", base + "fixtures: x\n",
			"config: test pre-params fixtures are public keys for tests only; a production node refuses them", true},
		{"unknown field", base + "colour: blue\n", "config: yaml: unmarshal errors:\n  line 8: field colour not found in type config.Config", true},
		{"not yaml", "node_id: [\n", "config: yaml: line 1: did not find expected node content", true},
		{"empty file", "", "config: EOF", true},
		{"bad duration", base + "sign_timeout: soon\n", "config: yaml: unmarshal errors:\n  line 8: cannot unmarshal !!str `soon` into time.Duration", true},
		{"missing store", without("store_path"), "config: missing store_path", false},
		{"missing node_id", without("node_id"), "config: missing node_id", false},
		{"missing nats.url", without("nats"), "config: missing nats.url", false},
		{"missing key_uri", without("key_uri"), "config: missing key_uri", false},
		{"missing policy_file", without("policy_file"), "config: missing policy_file", false},
		{"missing several, sorted", "threshold: 2\n", "config: missing key_uri, nats.url, node_id, policy_file, store_path", false},
		{"bad node_id", strings.Replace(base, "node_id: node0", "node_id: node.0", 1),
			`config: node_id: protocol: invalid token: character '.' at offset 4`, true},
		{"self not in peers", strings.Replace(base, "node0: a, ", "", 1),
			"config: peers must list this node (node0) with its identity key (signerctl init prints it)", false},
		{"no peers", without("peers"), "config: peers must list this node (node0) with its identity key (signerctl init prints it)", false},
		{"threshold too high", strings.Replace(base, "threshold: 2", "threshold: 4", 1),
			"config: threshold (nodes that must sign) must be between 2 and 3, got 4", false},
		{"threshold one", strings.Replace(base, "threshold: 2", "threshold: 1", 1),
			"config: threshold (nodes that must sign) must be between 2 and 3, got 1", false},
		{"threshold missing", without("threshold"), "config: threshold (nodes that must sign) must be between 2 and 3, got 0", false},
		{"pin in uri", strings.Replace(base, "pin-source=cred:hsm-pin", "pin-value=1234", 1),
			"config: key_uri must not contain pin-value; use pin-source=file:, env: or cred:", true},
		{"tls cert without key", strings.Replace(base, `nats: {url: "nats://127.0.0.1:4222"}`, `nats: {url: "nats://127.0.0.1:4222", tls: {cert_file: /c.pem}}`, 1),
			"config: nats.tls.cert_file and nats.tls.key_file go together", true},
		{"replicas 2", strings.Replace(base, `nats: {url: "nats://127.0.0.1:4222"}`, `nats: {url: "nats://127.0.0.1:4222", replicas: 2}`, 1),
			"config: nats.replicas must be 1, 3 or 5, got 2", true},
		{"tls key without cert", strings.Replace(base, `nats: {url: "nats://127.0.0.1:4222"}`, `nats: {url: "nats://127.0.0.1:4222", tls: {key_file: /k.pem}}`, 1),
			"config: nats.tls.cert_file and nats.tls.key_file go together", true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c, err := config.Parse([]byte(tc.yaml))
			if err == nil || err.Error() != tc.wantErr || c != nil {
				t.Fatalf("got %v, %v; want error %q", c, err, tc.wantErr)
			}
			c, err = config.ParseOptions{Partial: true}.Parse([]byte(tc.yaml))
			if tc.partialToo {
				if err == nil || err.Error() != tc.wantErr || c != nil {
					t.Fatalf("partial: got %v, %v; want error %q", c, err, tc.wantErr)
				}
			} else if err != nil {
				t.Fatalf("partial: %v", err)
			}
		})
	}
}

// TestParseValues: fields land where their YAML keys say, and the defaults
// fill only what the file leaves out.
func TestParseValues(t *testing.T) {
	tests := []struct {
		name, yaml string
		check      func(*config.Config) string
	}{
		{"listen default", base, func(c *config.Config) string {
			if c.HTTP.Listen != config.DefaultHTTPListen || config.DefaultHTTPListen != "127.0.0.1:9464" {
				return "http.listen " + c.HTTP.Listen
			}
			return ""
		}},
		{"listen off kept", base + "http: {listen: \"off\"}\n", func(c *config.Config) string {
			if c.HTTP.Listen != "off" {
				return "http.listen " + c.HTTP.Listen
			}
			return ""
		}},
		{"listen address kept", base + "http: {listen: \"0.0.0.0:1\"}\n", func(c *config.Config) string {
			if c.HTTP.Listen != "0.0.0.0:1" {
				return "http.listen " + c.HTTP.Listen
			}
			return ""
		}},
		{"unset durations and replicas stay zero (the node's defaults apply)", base, func(c *config.Config) string {
			if c.SignTimeout != 0 || c.KeygenTimeout != 0 || c.DrainTimeout != 0 || c.NATS.Replicas != 0 {
				return "a default was filled in"
			}
			return ""
		}},
		{"every field", `node_id: n-1
nats: {url: "tls://a:4222", creds_file: /c.creds, replicas: 3, tls: {ca_file: /ca.pem, cert_file: /c.pem, key_file: /k.pem}}
http: {listen: ":9"}
key_uri: "tpm:device=/dev/tpmrm0"
store_path: /s.db
threshold: 3
peers: {n-1: a, n-2: b, n-3: c}
policy_file: /p.yaml
sign_timeout: 90s
keygen_timeout: 5m
drain_timeout: 1h
`, func(c *config.Config) string {
			want := config.Config{
				NodeID: "n-1",
				NATS: config.NATS{URL: "tls://a:4222", CredsFile: "/c.creds", Replicas: 3,
					TLS: config.TLS{CAFile: "/ca.pem", CertFile: "/c.pem", KeyFile: "/k.pem"}},
				HTTP: config.HTTP{Listen: ":9"}, KeyURI: "tpm:device=/dev/tpmrm0", StorePath: "/s.db", Threshold: 3,
				Peers: map[string]string{"n-1": "a", "n-2": "b", "n-3": "c"}, PolicyFile: "/p.yaml",
				SignTimeout: 90 * time.Second, KeygenTimeout: 5 * time.Minute, DrainTimeout: time.Hour,
			}
			if !reflect.DeepEqual(*c, want) {
				return fmt.Sprintf("got %+v", *c)
			}
			return ""
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c, err := config.Parse([]byte(tc.yaml))
			if err != nil {
				t.Fatal(err)
			}
			if msg := tc.check(c); msg != "" {
				t.Fatal(msg)
			}
		})
	}
}

// TestParsePartial: what signerctl gives --config (a file with only the
// fields it uses) parses partially, with the same defaults.
func TestParsePartial(t *testing.T) {
	tests := []struct {
		name, yaml                string
		nodeID, keyURI, storePath string
	}{
		{"key and store only", "key_uri: \"software:dir=/k\"\nstore_path: /s.db\n", "", "software:dir=/k", "/s.db"},
		{"node id only", "node_id: node0\n", "node0", "", ""},
		{"before init: no peers yet", without("peers"), "node0", "pkcs11:token=node0?module-path=/usr/lib/softhsm/libsofthsm2.so&pin-source=cred:hsm-pin", "/var/lib/signerd/node0.db"},
		{"peers without this node", strings.Replace(base, "node0: a, ", "", 1), "node0", "pkcs11:token=node0?module-path=/usr/lib/softhsm/libsofthsm2.so&pin-source=cred:hsm-pin", "/var/lib/signerd/node0.db"},
		{"a complete file", base, "node0", "pkcs11:token=node0?module-path=/usr/lib/softhsm/libsofthsm2.so&pin-source=cred:hsm-pin", "/var/lib/signerd/node0.db"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c, err := config.ParseOptions{Partial: true}.Parse([]byte(tc.yaml))
			if err != nil {
				t.Fatal(err)
			}
			if c.NodeID != tc.nodeID || c.KeyURI != tc.keyURI || c.StorePath != tc.storePath || c.HTTP.Listen != config.DefaultHTTPListen {
				t.Fatalf("got node_id %q, key_uri %q, store_path %q, http.listen %q", c.NodeID, c.KeyURI, c.StorePath, c.HTTP.Listen)
			}
		})
	}
}

func TestLoad(t *testing.T) {
	dir := t.TempDir()
	full, part := filepath.Join(dir, "full.yaml"), filepath.Join(dir, "part.yaml")
	if err := os.WriteFile(full, []byte(base), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(part, []byte("node_id: node0\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		load    func(string) (*config.Config, error)
		path    string
		wantErr string
	}{
		{"full", config.Load, full, ""},
		{"full, partially", config.ParseOptions{Partial: true}.Load, full, ""},
		{"partial file, fully", config.Load, part, "config: missing key_uri, nats.url, policy_file, store_path"},
		{"partial file, partially", config.ParseOptions{Partial: true}.Load, part, ""},
		{"no file", config.Load, filepath.Join(dir, "none.yaml"), "no such file"},
		{"no file, partially", config.ParseOptions{Partial: true}.Load, filepath.Join(dir, "none.yaml"), "no such file"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c, err := tc.load(tc.path)
			if tc.wantErr == "" {
				if err != nil || c.NodeID != "node0" {
					t.Fatalf("got %v, %v", c, err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("want error containing %q, got %v", tc.wantErr, err)
			}
		})
	}
	if _, err := config.Load(filepath.Join(dir, "none.yaml")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("a missing file: %v, want os.ErrNotExist", err)
	}
}

func TestSigners(t *testing.T) {
	tests := []struct {
		signers config.Signers
		t       int
		fits    map[int]bool // nodes -> Fits
	}{
		{1, 0, map[int]bool{1: false, 2: false, 3: false}},
		{2, 1, map[int]bool{1: false, 2: true, 3: true}},
		{3, 2, map[int]bool{2: false, 3: true, 5: true}},
		{0, -1, map[int]bool{0: false, 3: false}},
	}
	for _, tc := range tests {
		if got := tc.signers.TSSThreshold(); got != tc.t {
			t.Errorf("Signers(%d).TSSThreshold() = %d, want %d", tc.signers, got, tc.t)
		}
		if got := config.SignersFromTSS(tc.t); got != tc.signers {
			t.Errorf("SignersFromTSS(%d) = %d, want %d", tc.t, got, tc.signers)
		}
		for nodes, want := range tc.fits {
			if got := tc.signers.Fits(nodes); got != want {
				t.Errorf("Signers(%d).Fits(%d) = %v, want %v", tc.signers, nodes, got, want)
			}
		}
	}
}
