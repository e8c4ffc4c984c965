package config_test

import (
	"reflect"
	"strings"
	"testing"

	"github.com/hwsigner/signer/protocol"
	"github.com/hwsigner/signer/signer/config"
)

// FuzzParseConfig feeds arbitrary bytes to Parse (strict YAML): it never
// panics, and a config it accepts has every required field, a valid node ID
// listed among the peers, a threshold in range and no PIN in the key URI. A
// partial parse never panics either, and accepts what a full parse accepts,
// with the same result. Seeds: testdata/fuzz/FuzzParseConfig.
func FuzzParseConfig(f *testing.F) {
	f.Add([]byte("node_id: node0\nnats: {url: \"nats://127.0.0.1:4222\"}\nkey_uri: \"pkcs11:token=node0?module-path=/m.so&pin-source=cred:hsm-pin\"\nstore_path: /s.db\npolicy_file: /p.yaml\nthreshold: 2\npeers: {node0: a, node1: b}\nsign_timeout: 60s\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		p, perr := config.ParseOptions{Partial: true}.Parse(data)
		if perr != nil && p != nil {
			t.Fatal("partial config returned with an error")
		}
		if perr == nil && strings.Contains(p.KeyURI, "pin-value") {
			t.Fatal("partial parse accepted a PIN in key_uri")
		}
		c, err := config.Parse(data)
		if err != nil {
			if c != nil {
				t.Fatal("config returned with an error")
			}
			return
		}
		if perr != nil || !reflect.DeepEqual(c, p) {
			t.Fatalf("a full parse accepted what a partial one refused or read differently: %v", perr)
		}
		if c.NodeID == "" || c.NATS.URL == "" || c.KeyURI == "" || c.StorePath == "" || c.PolicyFile == "" || c.HTTP.Listen == "" {
			t.Fatalf("accepted a config with a required field empty: %+v", c)
		}
		if protocol.ValidToken(c.NodeID) != nil {
			t.Fatalf("accepted node_id %q", c.NodeID)
		}
		if _, ok := c.Peers[c.NodeID]; !ok || c.Threshold < 2 || int(c.Threshold) > len(c.Peers) {
			t.Fatalf("accepted threshold %d of %d peers (self listed: %v)", c.Threshold, len(c.Peers), ok)
		}
		if strings.Contains(c.KeyURI, "pin-value") {
			t.Fatal("accepted a PIN in key_uri")
		}
		if (c.NATS.TLS.CertFile == "") != (c.NATS.TLS.KeyFile == "") {
			t.Fatal("accepted a TLS certificate without its key")
		}
	})
}
