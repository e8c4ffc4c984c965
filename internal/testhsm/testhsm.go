// Package testhsm gives tests SoftHSM2 tokens.
//
// SoftHSM2 reads SOFTHSM2_CONF once, when the module is first initialised in a
// process, so every test process uses ONE private config and token directory
// (under os.TempDir, never the machine's global one) and each call creates a
// new token with its own label in it.
package testhsm

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/hwsigner/signer/hsm/pkcs11"
)

// Module is the SoftHSM2 PKCS#11 module path on Debian.
const Module = "/usr/lib/softhsm/libsofthsm2.so"

var (
	once    sync.Once
	confDir string
	confErr error
)

// Setup points this process at a private SoftHSM2 config (idempotent).
func Setup(t testing.TB) {
	t.Helper()
	if _, err := os.Stat(Module); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("SoftHSM2 is required in CI: %v (run softhsm-test/install-deps.sh)", err)
		}
		t.Skipf("SoftHSM2 not installed: %v", err)
	}
	once.Do(func() {
		confDir, confErr = os.MkdirTemp("", "softhsm-test-")
		if confErr != nil {
			return
		}
		tokens := filepath.Join(confDir, "tokens")
		if confErr = os.MkdirAll(tokens, 0o700); confErr != nil {
			return
		}
		conf := filepath.Join(confDir, "softhsm2.conf")
		confErr = os.WriteFile(conf, []byte("directories.tokendir = "+tokens+"\nobjectstore.backend = file\nlog.level = ERROR\n"), 0o600)
		if confErr == nil {
			confErr = os.Setenv("SOFTHSM2_CONF", conf)
		}
	})
	if confErr != nil {
		t.Fatal(confErr)
	}
}

// Token makes a new initialised token (label prefix plus a random suffix),
// writes its PIN to a 0600 file and returns the token's pkcs11: URI.
func Token(t testing.TB, prefix string) string {
	t.Helper()
	Setup(t)
	suffix := make([]byte, 4)
	_, _ = rand.Read(suffix)
	label := prefix + "-" + hex.EncodeToString(suffix)
	pin := []byte("test-pin-" + hex.EncodeToString(suffix))
	if err := pkcs11.InitToken(Module, label, []byte("so-"+string(pin)), pin); err != nil {
		t.Fatalf("init token: %v", err)
	}
	pinFile := filepath.Join(t.TempDir(), "pin")
	if err := os.WriteFile(pinFile, pin, 0o600); err != nil {
		t.Fatal(err)
	}
	return fmt.Sprintf("pkcs11:token=%s;object=share-kek?module-path=%s&pin-source=file:%s", label, Module, pinFile)
}
