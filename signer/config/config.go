// Package config is a signer node's configuration file, the YAML file that
// `signerd run --config` starts from and that signerctl's operator commands
// take their node from (docs/signerd.example.yaml): its type, its one strict
// parser and its validation, and Signers, the number of nodes that must sign.
package config

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/hwsigner/signer/protocol"
)

// DefaultHTTPListen is http.listen when the file leaves it out.
const DefaultHTTPListen = "127.0.0.1:9464"

// Config is one node's configuration file. The YAML key of each field is in
// its tag.
type Config struct {
	NodeID        string            `yaml:"node_id"`
	NATS          NATS              `yaml:"nats"`
	HTTP          HTTP              `yaml:"http"`
	KeyURI        string            `yaml:"key_uri"`
	StorePath     string            `yaml:"store_path"`
	Threshold     Signers           `yaml:"threshold"` // nodes that must sign (t+1), not tss-lib's t
	Peers         map[string]string `yaml:"peers"`     // node ID -> PEM identity public key
	PolicyFile    string            `yaml:"policy_file"`
	SignTimeout   time.Duration     `yaml:"sign_timeout"`
	StallTimeout  time.Duration     `yaml:"stall_timeout"` // a signing attempt without a message this long is re-run elsewhere
	KeygenTimeout time.Duration     `yaml:"keygen_timeout"`
	DrainTimeout  time.Duration     `yaml:"drain_timeout"` // graceful stop: how long running sessions may take
}

// NATS is the connection to the NATS server or cluster.
type NATS struct {
	URL       string `yaml:"url"`
	CredsFile string `yaml:"creds_file"`
	// Replicas of the streams and buckets signerd creates: 3 (or 5) in a
	// NATS cluster, so that losing one server loses nothing. 0 leaves the
	// choice to the node, which uses 1.
	Replicas int `yaml:"replicas"`
	TLS      TLS `yaml:"tls"`
}

// TLS names the files of the TLS connection to NATS. CertFile and KeyFile
// are both set (mutual TLS) or both empty.
type TLS struct {
	CAFile   string `yaml:"ca_file"`
	CertFile string `yaml:"cert_file"`
	KeyFile  string `yaml:"key_file"`
}

// HTTP is the health and metrics listener.
type HTTP struct {
	// Listen is where /healthz, /readyz and /metrics are served
	// (DefaultHTTPListen when empty in the file; "off" disables them).
	Listen string `yaml:"listen"`
}

// ParseOptions choose how much of a config Parse and Load require.
type ParseOptions struct {
	// Partial accepts a file that names only part of a node, for a command
	// that needs only some fields of it (signerctl takes key_uri,
	// store_path and node_id): no field is required, and peers and
	// threshold are not checked (before `signerctl init` the node's own
	// identity key is not known yet). Decoding stays strict (unknown keys
	// and test fixtures are refused), and every field that is set is
	// checked as in a full parse. The caller checks that the fields it uses
	// are set.
	Partial bool
}

// Parse decodes and checks a complete node config (what `signerd run`
// needs): ParseOptions{}.Parse.
func Parse(data []byte) (*Config, error) { return ParseOptions{}.Parse(data) }

// Load reads the file at path and parses it with Parse.
func Load(path string) (*Config, error) { return ParseOptions{}.Load(path) }

// Load reads the file at path and parses it with o.Parse. A read error is
// returned as os.ReadFile gives it (it names the path).
func (o ParseOptions) Load(path string) (*Config, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	return o.Parse(raw)
}

// Parse decodes data, the first YAML document in it, strictly: an unknown
// field is an error, and test-only settings (fixture pre-params) are refused
// by name. It then checks the config (see ParseOptions.Partial for what a
// partial parse leaves out) and fills in the defaults: DefaultHTTPListen.
// Every error starts with "config: ".
func (o ParseOptions) Parse(data []byte) (*Config, error) {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	var c Config
	if err := dec.Decode(&c); err != nil {
		if strings.Contains(err.Error(), "test_preparams") || strings.Contains(err.Error(), "fixture") {
			return nil, errors.New("config: test pre-params fixtures are public keys for tests only; a production node refuses them")
		}
		return nil, fmt.Errorf("config: %w", err)
	}
	if err := c.check(o.Partial); err != nil {
		return nil, err
	}
	if c.HTTP.Listen == "" {
		c.HTTP.Listen = DefaultHTTPListen
	}
	return &c, nil
}

// check validates c, in this order: required fields (all missing ones named
// at once), node_id, peers, threshold, key_uri, TLS files, replicas. A
// partial check skips the required fields, peers and threshold, and checks
// node_id only when it is set.
func (c *Config) check(partial bool) error {
	if !partial {
		var missing []string
		for name, v := range map[string]string{"node_id": c.NodeID, "nats.url": c.NATS.URL, "key_uri": c.KeyURI, "store_path": c.StorePath, "policy_file": c.PolicyFile} {
			if v == "" {
				missing = append(missing, name)
			}
		}
		slices.Sort(missing)
		if len(missing) > 0 {
			return fmt.Errorf("config: missing %s", strings.Join(missing, ", "))
		}
	}
	if !partial || c.NodeID != "" {
		if err := protocol.ValidToken(c.NodeID); err != nil {
			return fmt.Errorf("config: node_id: %w", err)
		}
	}
	if !partial {
		if _, ok := c.Peers[c.NodeID]; !ok {
			return fmt.Errorf("config: peers must list this node (%s) with its identity key (signerctl init prints it)", c.NodeID)
		}
		if !c.Threshold.Fits(len(c.Peers)) {
			return fmt.Errorf("config: threshold (nodes that must sign) must be between %d and %d, got %d", MinSigners, len(c.Peers), c.Threshold)
		}
	}
	if strings.Contains(c.KeyURI, "pin-value") {
		return errors.New("config: key_uri must not contain pin-value; use pin-source=file:, env: or cred:")
	}
	if (c.NATS.TLS.CertFile == "") != (c.NATS.TLS.KeyFile == "") {
		return errors.New("config: nats.tls.cert_file and nats.tls.key_file go together")
	}
	if r := c.NATS.Replicas; r != 0 && r != 1 && r != 3 && r != 5 {
		return fmt.Errorf("config: nats.replicas must be 1, 3 or 5, got %d", r)
	}
	return nil
}
