package main

import (
	"strings"
	"testing"
)

func TestParseConfig(t *testing.T) {
	base := `node_id: node0
nats: {url: "nats://127.0.0.1:4222"}
key_uri: "pkcs11:token=node0?module-path=/usr/lib/softhsm/libsofthsm2.so&pin-source=cred:hsm-pin"
store_path: /var/lib/signerd/node0.db
policy_file: /etc/signerd/clients.yaml
threshold: 2
peers: {node0: a, node1: b, node2: c}
`
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
			_, err := ParseConfig([]byte(tc.yaml))
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
