package config_test

import (
	"os"
	"strings"
	"testing"
	"time"

	"github.com/hwsigner/signer/signer/config"
)

// TestExampleConfig: docs/signerd.example.yaml parses with the strict parser,
// and its secrets come from the credentials that systemd/signerd@.service
// loads (pin-source=cred:hsm-pin, nats.creds in $CREDENTIALS_DIRECTORY).
func TestExampleConfig(t *testing.T) {
	raw, err := os.ReadFile("../../docs/signerd.example.yaml")
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Parse(raw)
	if err != nil {
		t.Fatalf("docs/signerd.example.yaml: %v", err)
	}
	unit, err := os.ReadFile("../../systemd/signerd@.service")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"\nLoadCredential=hsm-pin:/etc/signerd/%i.hsm-pin\n",
		"\nLoadCredential=nats.creds:/etc/signerd/%i.nats.creds\n",
		"\nStateDirectory=signerd/%i\n",
	} {
		if !strings.Contains(string(unit), want) {
			t.Errorf("systemd/signerd@.service lacks %q", strings.TrimSpace(want))
		}
	}
	if !strings.Contains(cfg.KeyURI, "pin-source=cred:hsm-pin") {
		t.Errorf("key_uri %q: want pin-source=cred:hsm-pin", cfg.KeyURI)
	}
	if want := "/run/credentials/signerd@" + cfg.NodeID + ".service/nats.creds"; cfg.NATS.CredsFile != want {
		t.Errorf("nats.creds_file %q, want %q", cfg.NATS.CredsFile, want)
	}
	if dir := "/var/lib/signerd/" + cfg.NodeID + "/"; !strings.HasPrefix(cfg.StorePath, dir) {
		t.Errorf("store_path %q is outside the unit's StateDirectory %s", cfg.StorePath, dir)
	}
	if len(cfg.Peers) != 3 || cfg.Threshold != 2 {
		t.Errorf("want a 2-of-3 example, got threshold %d of %d peers", cfg.Threshold, len(cfg.Peers))
	}
	if cfg.SignTimeout != time.Minute || cfg.KeygenTimeout != 3*time.Minute || cfg.DrainTimeout != time.Minute {
		t.Errorf("timeouts %v %v %v: the example should show the defaults", cfg.SignTimeout, cfg.KeygenTimeout, cfg.DrainTimeout)
	}
	if cfg.HTTP.Listen != "127.0.0.1:9464" {
		t.Errorf("http.listen %q", cfg.HTTP.Listen)
	}
}
